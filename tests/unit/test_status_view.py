"""The /status document built from a daemon snapshot."""

from __future__ import annotations

from pulsed.desired import wanted_table
from tests.unit.standin import set_health, stand_in, vrrp_status
from tests.unit.standin import status as build_status


def test_every_entity_has_times_and_reason(tmp_path):
    doc = build_status(stand_in(tmp_path, services=2, reals=2))
    entities = [doc["config"], doc["reconcile"]]
    for svc in doc["services"]:
        entities.append(svc)
        entities.extend(svc["reals"])
    for entity in entities:
        assert {"last_check", "last_transition", "reason"} <= entity.keys()
        assert entity["reason"]


def test_reals_show_health_reason_and_weights(tmp_path):
    daemon = stand_in(tmp_path, services=1, reals=2)
    first, second = build_status(daemon)["services"][0]["reals"]
    assert (first["health"], first["reason"], first["effective_weight"]) == ("up", "ok", 1)
    assert (second["health"], second["reason"]) == ("down", "connect refused")
    assert first["stats"]["bytes_out"] == 500
    assert first["key"] == "tcp:192.0.2.1:8000/10.0.0.1:80"


def test_admin_modes_show_in_reason(tmp_path):
    daemon = stand_in(tmp_path, services=1, reals=2)
    key = next(iter(daemon.monitor.health()))
    daemon.overrides.set_mode(key, "disable")
    daemon.wanted = wanted_table(daemon.config, daemon.monitor.health(), daemon.overrides.all())
    real = build_status(daemon)["services"][0]["reals"][0]
    assert real["mode"] == "disable" and real["effective_weight"] is None
    assert real["reason"].startswith("disabled by admin; health: ok")


def test_service_state_follows_health(tmp_path):
    daemon = stand_in(tmp_path, services=1, reals=2)
    keys = list(daemon.monitor.health())
    set_health(daemon, keys[1], True, "ok")
    assert build_status(daemon)["services"][0]["state"] == "ok"
    for key in keys:
        set_health(daemon, key, False, "timeout after 1.0s")
    svc = build_status(daemon)["services"][0]
    assert svc["state"] == "down" and svc["reason"].startswith("0 of 2 real servers up")


def test_orphan_overrides_are_listed(tmp_path):
    daemon = stand_in(tmp_path, services=2, reals=1)
    key = list(daemon.monitor.health())[-1]
    daemon.overrides.set_mode(key, "drain")
    daemon.config = type(daemon.config)(
        daemon=daemon.config.daemon, api=daemon.config.api, service=daemon.config.service[:1]
    )
    doc = build_status(daemon)
    assert [o["mode"] for o in doc["orphan_overrides"]] == ["drain"]


def test_ha_view_from_a_node(tmp_path):
    daemon = stand_in(tmp_path)
    daemon.vrrp_status = vrrp_status(state="MASTER", priority=150, last_transition=5.0)
    ha = build_status(daemon)["ha"]
    assert ha["role"] == "master" and ha["priority"] == 150 and ha["last_transition"] == 5.0


def test_every_vrrp_instance_and_a_version_mismatch_are_shown(tmp_path):
    from pulsed.ha.status import SyncGroupStatus
    from pulsed.readmodel import HaView

    daemon = stand_in(tmp_path)
    warning = "peer 192.0.2.2 sends VRRPv2 adverts on VRID 52: set version = 2 here"
    first = vrrp_status(state="MASTER")
    second = vrrp_status(name="VI_2", vrid=52, version_mismatches=3, version_mismatch=warning)
    snap = daemon.snapshot()
    ha = HaView(
        ("VI_1", "VI_2", "VI_3"), (first, second), (SyncGroupStatus("G", "master", ("VI_1",)),)
    )
    import json
    from dataclasses import replace

    from pulsed.status_view import status_chunks

    doc = json.loads(b"".join(status_chunks(replace(snap, ha=ha))))
    assert [v["name"] for v in doc["vrrp"]] == ["VI_1", "VI_2", "VI_3"]
    assert [v["role"] for v in doc["vrrp"]] == ["master", "backup", "init"]
    assert doc["vrrp"][1]["reason"] == warning and doc["vrrp"][1]["version_mismatches"] == 3
    assert doc["ha"]["name"] == "VI_1"  # the first instance, as a lone [vrrp] showed it
    assert doc["sync_groups"][0]["state"] == "master"


def test_a_shared_probe_shows_the_servers_it_also_feeds(tmp_path):
    from dataclasses import replace

    import msgspec

    from pulsed.status_view import status_chunks

    daemon = stand_in(tmp_path, services=12, reals=1)
    keys = tuple(daemon.monitor.health())
    snap = replace(daemon.snapshot(), shared_probes=dict.fromkeys(keys, keys))
    doc = msgspec.json.decode(b"".join(status_chunks(snap)))
    one, two = (svc["reals"][0] for svc in doc["services"][:2])
    assert one["probe_shared_count"] == two["probe_shared_count"] == 11
    assert len(one["probe_shared_with"]) == 4  # the first few: 11 x 11 would not scale
    assert one["probe_shared_with"][0] == "tcp:192.0.2.2:8000/10.0.0.2:80"
    assert two["probe_shared_with"][0] == "tcp:192.0.2.1:8000/10.0.0.1:80"
    alone = build_status(stand_in(tmp_path, services=1, reals=1))["services"][0]["reals"][0]
    assert (alone["probe_shared_with"], alone["probe_shared_count"]) == ([], 0)


def test_kernel_counters_show_every_field_of_stats():
    """stats_view writes the fields out (for speed): none may be left behind."""
    import dataclasses

    from pulsed.model import Stats
    from pulsed.status_view import stats_view

    stats = Stats(*range(1, len(dataclasses.fields(Stats)) + 1))
    assert stats_view(stats) == dataclasses.asdict(stats)
    assert stats_view(None) is None


def test_a_real_server_shows_its_kernel_counters(tmp_path):
    doc = build_status(stand_in(tmp_path))
    real = doc["services"][0]["reals"][0]
    assert real["stats"]["bytes_in"] == 400 and real["kernel_weight"] is not None
