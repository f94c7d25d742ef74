"""Admin overrides: stable keys, atomic persistence, damaged files kept aside."""

from __future__ import annotations

import json

import pytest

from pulsed.model import AF_INET6, DestKey, ServiceKey
from pulsed.overrides import OverrideStore, parse_real_key, parse_service_key, real_key_text

KEY = (ServiceKey.for_address("tcp", "192.0.2.1", 80), DestKey("10.0.0.2", 80))


@pytest.mark.parametrize(
    "text",
    [
        "tcp:192.0.2.1:80/10.0.0.2:80",
        "udp:[2001:db8::1]:53/[fd00::2]:53",
        "fwmark:7/10.0.0.2:80",
        "fwmark:7/ipv6/[fd00::2]:80",
    ],
)
def test_real_keys_round_trip(text):
    assert real_key_text(parse_real_key(text)) == text


def test_fwmark_family_is_kept():
    assert parse_service_key("fwmark:7/ipv6") == ServiceKey.for_fwmark(7, AF_INET6)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("10.0.0.2:80", "expected SERVICE/REAL"),
        ("icmp:192.0.2.1:80/10.0.0.2:80", "protocol must be tcp, udp, sctp or fwmark"),
        ("tcp:192.0.2.1:80/10.0.0.300:80", "is not an IPv4 or IPv6 address"),
        ("fwmark:x/10.0.0.2:80", "fwmark must be a number"),
    ],
)
def test_bad_keys_say_what_is_wrong(text, message):
    with pytest.raises(ValueError, match=message):
        parse_real_key(text)


def test_overrides_persist_and_reload(tmp_path):
    store = OverrideStore(tmp_path)
    store.set_mode(KEY, "drain")
    store.set_weight(KEY, 7)
    again = OverrideStore(tmp_path)
    again.load()
    override = again.get(KEY)
    assert (override.mode, override.weight) == ("drain", 7)
    # Back to defaults: the entry disappears from the file.
    again.set_mode(KEY, "enabled")
    again.set_weight(KEY, None)
    assert json.loads((tmp_path / "overrides.json").read_text())["overrides"] == {}
    assert not list(tmp_path.glob(".overrides.*"))  # no temporary file left behind


def test_damaged_file_is_moved_aside_not_trusted(tmp_path):
    (tmp_path / "overrides.json").write_text("{not json")
    store = OverrideStore(tmp_path)
    store.load()
    assert store.all() == {}
    assert list(tmp_path.glob("overrides.damaged.*"))


def test_failed_write_changes_nothing(tmp_path):
    store = OverrideStore(tmp_path / "missing-parent" / "x")
    (tmp_path / "missing-parent").write_text("a file where a folder should be")
    with pytest.raises(OSError):
        store.set_mode(KEY, "drain")
    assert store.get(KEY).mode == "enabled"
