"""Admin overrides: stable keys, atomic persistence, a hand-broken file never trusted.

The load tests attack the class "a bad overrides.json crashes the daemon or
puts a value the kernel refuses into the table": every bad file must leave the
store empty, be moved aside as ``overrides.json.corrupt-<time>``, and give one
error line, with no exception.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from pulsed.keys import parse_real_key, parse_service_key, real_key_text
from pulsed.model import AF_INET, AF_INET6, DestKey, ServiceKey
from pulsed.overrides import MAX_WEIGHT, MODES, Override, OverrideStore
from pulsed.statefile import MAX_STATE_BYTES

KEY = (ServiceKey.for_address("tcp", "192.0.2.1", 80), DestKey("10.0.0.2", 80))
KEY_TEXT = "tcp:192.0.2.1:80/10.0.0.2:80"


@pytest.mark.parametrize(
    "text",
    [
        "tcp:192.0.2.1:80/10.0.0.2:80",
        "udp:[2001:db8::1]:53/[fd00::2]:53",
        "fwmark:7/10.0.0.2:80",
        "fwmark:7/ipv6/[fd00::2]:80",
        "fwmark:4294967295/10.0.0.2:80",
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
        ("tcp:192.0.2.1:0/10.0.0.2:80", "is not between 1 and 65535"),
        ("tcp:192.0.2.1:80/10.0.0.2:65536", "is not between 1 and 65535"),
        ("fwmark:x/10.0.0.2:80", "fwmark must be a number"),
        ("fwmark:\u0663/10.0.0.2:80", "fwmark must be a number"),  # an Arabic-Indic 3
        ("fwmark:0/10.0.0.2:80", "fwmark must be between 1 and 4294967295"),
        ("fwmark:4294967296/10.0.0.2:80", "fwmark must be between 1 and 4294967295"),
        ("fwmark:7/ipv4/10.0.0.2:80", "expected fwmark:N or fwmark:N/ipv6"),
        ("tcp:[fe80::1%lo]:80/10.0.0.2:80", "scope"),
        ("tcp:192.0.2.1:80/[fe80::2%eth0]:80", "scope"),
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
    assert stat.S_IMODE((tmp_path / "overrides.json").stat().st_mode) == 0o600
    # Back to defaults: the entry disappears from the file.
    again.set_mode(KEY, "enabled")
    again.set_weight(KEY, None)
    assert json.loads((tmp_path / "overrides.json").read_text())["overrides"] == {}
    assert not list(tmp_path.glob(".overrides.*"))  # no temporary file left behind


def test_a_file_written_by_the_previous_release_still_loads(tmp_path):
    # json.dump(sort_keys=True) of {"version": 1, "overrides": {key: asdict(Override)}}
    (tmp_path / "overrides.json").write_text(
        '{\n  "overrides": {\n    "tcp:192.0.2.1:80/10.0.0.2:80": {\n      "mode": "drain",\n'
        '      "updated_at": 1790000000.5,\n      "weight": 3\n    }\n  },\n  "version": 1\n}'
    )
    store = OverrideStore(tmp_path)
    store.load()
    assert store.all() == {KEY: Override("drain", 3, 1790000000.5)}


def test_failed_write_changes_nothing(tmp_path):
    store = OverrideStore(tmp_path / "missing-parent" / "x")
    (tmp_path / "missing-parent").write_text("a file where a folder should be")
    with pytest.raises(OSError):
        store.set_mode(KEY, "drain")
    assert store.get(KEY).mode == "enabled"


def test_a_crash_before_the_rename_keeps_the_old_file_and_the_old_override(tmp_path, monkeypatch):
    store = OverrideStore(tmp_path)
    store.set_weight(KEY, 5)
    before = (tmp_path / "overrides.json").read_bytes()

    def crash(src, dst):
        raise OSError(errno.EIO, "simulated crash before the rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        store.set_weight(KEY, 9)
    assert store.get(KEY).weight == 5
    assert (tmp_path / "overrides.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["overrides.json"]


def test_every_write_is_fsynced_file_then_directory(tmp_path, monkeypatch):
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    OverrideStore(tmp_path).set_mode(KEY, "disable")
    assert synced == ["file", "dir"]


@pytest.mark.parametrize("weight", [-1, MAX_WEIGHT + 1, 10**12, 1.5, "5", True])
def test_a_weight_the_kernel_would_refuse_is_never_stored(tmp_path, weight):
    store = OverrideStore(tmp_path)
    with pytest.raises(ValueError, match="between 0 and 65535"):
        store.set_weight(KEY, weight)
    assert store.all() == {}
    assert not (tmp_path / "overrides.json").exists()


# Loading bad files -----------------------------------------------------------


def _doc(entry: object, key: str = KEY_TEXT, **top: object) -> bytes:
    return json.dumps({"version": 1, "overrides": {key: entry}, **top}).encode()


BAD_FILES = {
    "null": b"null",
    "list": b"[]",
    "empty object": b"{}",
    "string": b'"overrides"',
    "number": b"5",
    "empty file": b"",
    "whitespace": b"  \n",
    "no overrides": b'{"version": 1}',
    "overrides is a list": b'{"version": 1, "overrides": []}',
    "overrides is null": b'{"version": 1, "overrides": null}',
    "no version": json.dumps({"overrides": {}}).encode(),
    "unknown version": b'{"version": 2, "overrides": {}}',
    "version as text": b'{"version": "1", "overrides": {}}',
    "version as float": b'{"version": 1.0, "overrides": {}}',
    "unknown top field": _doc({"mode": "drain"}, extra=1),
    "entry is null": _doc(None),
    "entry is a list": _doc(["drain"]),
    "entry is text": _doc("drain"),
    "unknown entry field": _doc({"mode": "drain", "colour": "red"}),
    "string weight": _doc({"weight": "5"}),
    "float weight": _doc({"weight": 5.5}),
    "negative weight": _doc({"weight": -1}),
    "weight above the kernel's range": _doc({"weight": 65536}),
    "weight 1e12": _doc({"weight": 1e12}),
    "integer weight 10**12": _doc({"weight": 10**12}),
    "huge integer weight": _doc({"weight": 10**40}),
    "boolean weight": _doc({"weight": True}),
    "unknown mode": _doc({"mode": "up"}),
    "mode in capitals": _doc({"mode": "DRAIN"}),
    "mode null": _doc({"mode": None}),
    "negative time": _doc({"mode": "drain", "updated_at": -1}),
    "time too far": _doc({"mode": "drain", "updated_at": 1e300}),
    "time as text": _doc({"mode": "drain", "updated_at": "now"}),
    "key without a real": _doc({"mode": "drain"}, key="tcp:192.0.2.1:80"),
    "key with a bad address": _doc({"mode": "drain"}, key="tcp:192.0.2.1:80/10.0.0.300:80"),
    "key with a bad protocol": _doc({"mode": "drain"}, key="icmp:192.0.2.1:80/10.0.0.2:80"),
    "key with fwmark 0": _doc({"mode": "drain"}, key="fwmark:0/10.0.0.2:80"),
    "empty key": _doc({"mode": "drain"}, key=""),
    "two spellings of one key": (
        b'{"version": 1, "overrides": {"tcp:[2001:db8::1]:80/[fd00::2]:80": {"mode": "drain"},'
        b' "tcp:[2001:DB8::1]:80/[fd00::2]:80": {"mode": "disable"}}}'
    ),
    "truncated": _doc({"mode": "drain", "weight": 3})[:-7],
    "not UTF-8": b'{"version": 1, "overrides": {"tcp:192.0.2.1:80/10.0.0.2:80\xff": {}}}',
    "binary": b"\x00\x01\x02\xff\xfe",
    "NaN": b'{"version": 1, "overrides": {"' + KEY_TEXT.encode() + b'": {"updated_at": NaN}}}',
    "deep nesting": b"[" * 100_000 + b"]" * 100_000,
    # msgspec raises RecursionError here, even for a value it only skips.
    "deep nesting in an entry": (
        b'{"version": 1, "overrides": {"k": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}"
    ),
    "deep nesting in an unknown field": b'{"x": ' + b'{"a": ' * 100_000 + b"1" + b"}" * 100_001,
    "trailing garbage": _doc({"mode": "drain"}) + b"}",
}


def _judge(state_dir: Path, content: bytes | None = None) -> tuple[OverrideStore, bool]:
    """Load overrides.json; check the rules every load obeys; say whether it was used."""
    path = state_dir / "overrides.json"
    earlier = set(state_dir.glob("overrides.json.corrupt-*"))
    with capture_logs() as logs:
        store = OverrideStore(state_dir)
        store.load()  # no exception may escape, whatever the file
    aside = list(set(state_dir.glob("overrides.json.corrupt-*")) - earlier)
    assert earlier <= set(state_dir.glob("overrides.json.corrupt-*"))  # none replaced
    if os.path.lexists(path):
        assert aside == []
        assert logs == []
        used = True
    else:
        assert len(aside) == 1
        if content is not None:
            assert aside[0].read_bytes() == content
        [line] = logs
        assert (line["log_level"], line["event"]) == ("error", "state.corrupt")
        assert line["file"] == str(path)
        assert line["moved_to"] == str(aside[0])
        assert line["problem"] and "\n" not in line["problem"]
        assert store.all() == {}
        used = False
    # Whatever was loaded is something the kernel and the API accept.
    for key, override in store.all().items():
        assert real_key_text(parse_real_key(real_key_text(key))) == real_key_text(key)
        assert override.mode in MODES
        assert override.weight is None or (
            type(override.weight) is int and 0 <= override.weight <= MAX_WEIGHT
        )
        assert not override.is_default
    if content is not None:
        assert used == (_expected(content) is not None)
        assert store.all() == (_expected(content) or {})
    return store, used


def _number(value: object, low: float, high: float) -> bool:
    return type(value) in (int, float) and low <= value <= high


def _expected(content: bytes) -> dict | None:
    """The schema, written out independently: what a file must hold to be used."""
    try:
        doc = json.loads(content)
        if not isinstance(doc, dict) or set(doc) != {"version", "overrides"}:
            return None
        if type(doc["version"]) is not int or doc["version"] != 1:
            return None
        if not isinstance(doc["overrides"], dict):
            return None
        loaded: dict = {}
        for text, entry in doc["overrides"].items():
            key = parse_real_key(text)
            if not isinstance(entry, dict) or not set(entry) <= {"mode", "weight", "updated_at"}:
                return None
            mode = entry.get("mode", "enabled")
            weight = entry.get("weight")
            updated_at = entry.get("updated_at", 0.0)
            if mode not in MODES or key in loaded:
                return None
            if weight is not None and not (type(weight) is int and 0 <= weight <= MAX_WEIGHT):
                return None
            if not _number(updated_at, 0, 2.0**53):
                return None
            loaded[key] = Override(mode, weight, float(updated_at))
        return {k: v for k, v in loaded.items() if not v.is_default}
    except (ValueError, RecursionError):
        return None


@pytest.mark.parametrize("content", BAD_FILES.values(), ids=BAD_FILES.keys())
def test_a_bad_file_is_moved_aside_and_the_store_starts_empty(tmp_path, content):
    (tmp_path / "overrides.json").write_bytes(content)
    _, used = _judge(tmp_path, content)
    assert not used


@pytest.mark.parametrize(
    "make",
    [
        lambda p: p.mkdir(),
        lambda p: os.mkfifo(p),
        lambda p: (p.touch(), os.truncate(p, MAX_STATE_BYTES + 1)),  # sparse
    ],
    ids=["directory", "FIFO", "huge"],
)
def test_something_that_is_not_a_small_file_is_moved_aside(tmp_path, make):
    make(tmp_path / "overrides.json")
    _, used = _judge(tmp_path)
    assert not used


def test_after_a_bad_file_the_store_works_and_the_next_write_is_valid(tmp_path):
    (tmp_path / "overrides.json").write_bytes(BAD_FILES["weight 1e12"])
    store, _ = _judge(tmp_path)
    store.set_mode(KEY, "drain")
    again, used = _judge(tmp_path)
    assert used and again.get(KEY).mode == "drain"


# Properties ------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=16,
)

VALID_SERVICE_KEYS = st.one_of(
    st.builds(
        lambda proto, ip, port: ServiceKey.for_address(proto, str(ip), port),
        st.sampled_from(["tcp", "udp", "sctp"]),
        st.ip_addresses(),
        st.integers(1, 65535),
    ),
    st.builds(
        ServiceKey.for_fwmark, st.integers(1, 2**32 - 1), st.sampled_from([AF_INET, AF_INET6])
    ),
)
VALID_REAL_KEYS = st.tuples(
    VALID_SERVICE_KEYS,
    st.builds(lambda ip, port: DestKey(str(ip), port), st.ip_addresses(), st.integers(1, 65535)),
)
VALID_OVERRIDES = st.builds(
    Override,
    st.sampled_from(MODES),
    st.none() | st.integers(0, MAX_WEIGHT),
    st.floats(0, 2e9),
).filter(lambda o: not o.is_default)

# Files an operator might write by hand: close to valid, with anything wrong.
NEAR_KEYS = VALID_REAL_KEYS.map(real_key_text) | st.text(max_size=40) | JSON.map(str)
NEAR_ENTRIES = st.fixed_dictionaries(
    {},
    optional={
        "mode": st.sampled_from([*MODES, *MODES, "up", "", "Drain", None, 1]),
        "weight": st.integers(0, MAX_WEIGHT)
        | st.none()
        | st.integers()
        | st.floats()
        | st.sampled_from([1e12, 65535, 65536, -1, "5", True]),
        "updated_at": st.floats(0, 2e9)
        | st.floats()
        | st.integers(min_value=-(2**70), max_value=2**70),
    },
)
NEAR_FILES = st.fixed_dictionaries(
    {
        "version": st.sampled_from([1, 1, 1, 1, 1, 0, 2, "1", None, 1.0, -1]),
        "overrides": st.dictionaries(NEAR_KEYS, NEAR_ENTRIES, max_size=3) | JSON,
    },
    optional={"extra": JSON},
)


def _in_fresh_dir(content: bytes) -> tuple[dict, bool]:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "overrides.json").write_bytes(content)
        store, used = _judge(Path(tmp), content)
        event("used" if used else "moved aside")
        return store.all(), used


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(JSON)
def test_any_json_value_either_loads_within_range_or_is_moved_aside(value):
    _in_fresh_dir(json.dumps(value).encode())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(NEAR_FILES)
def test_hand_written_files_either_load_within_range_or_are_moved_aside(doc):
    _in_fresh_dir(json.dumps(doc).encode())


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_either_load_within_range_or_are_moved_aside(content):
    _in_fresh_dir(content)


@settings(max_examples=50, deadline=None)  # each example writes and fsyncs
@given(st.dictionaries(VALID_REAL_KEYS, VALID_OVERRIDES, max_size=8))
def test_what_the_store_writes_it_reads_back(overrides):
    with tempfile.TemporaryDirectory() as tmp:
        OverrideStore(tmp)._write(overrides)
        store, used = _judge(Path(tmp))
        assert used
        assert store.all() == overrides


def test_a_read_only_load_leaves_a_damaged_file_where_it_is(tmp_path):
    path = tmp_path / "overrides.json"
    path.write_bytes(b"{not json")
    store = OverrideStore(tmp_path)
    with capture_logs() as logs:
        store.load(read_only=True)
    assert store.all() == {}
    assert path.read_bytes() == b"{not json"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["overrides.json"]
    assert [entry["event"] for entry in logs] == ["state.corrupt"]
