"""`pulsed status` as text: every VRRP instance's role, and a version mismatch in plain sight."""

from __future__ import annotations

import json
from dataclasses import replace

from pulsed.admin_cli import format_status
from pulsed.readmodel import HaView
from pulsed.status_view import status_chunks
from tests.unit.standin import stand_in, vrrp_status


def doc(snap) -> dict:
    return json.loads(b"".join(status_chunks(snap)))


def test_standalone(tmp_path):
    assert "role: standalone (no VRRP)" in format_status(doc(stand_in(tmp_path).snapshot()))


def test_every_instance_and_the_mismatch_warning(tmp_path):
    warning = "peer 192.0.2.2 sends VRRPv2 adverts on VRID 52: set version = 2 here"
    one = vrrp_status(state="MASTER", effective_priority=150)
    two = vrrp_status(name="VI_2", vrid=52, version_mismatch=warning)
    snap = replace(stand_in(tmp_path).snapshot(), ha=HaView(("VI_1", "VI_2"), (one, two)))
    text = format_status(doc(snap))
    assert "role: VI_1 master (priority 150), VI_2 backup (priority 100)" in text
    assert f"WARNING VI_2: {warning}" in text
