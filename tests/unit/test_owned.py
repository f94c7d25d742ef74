"""The owned-services file: atomic, fsynced, and never trusted when broken.

Attacks the class "a bad owned-services.json crashes the daemon at start":
every bad file gives an empty set, is moved aside as
``owned-services.json.corrupt-<time>``, and gives one error line, with no
exception. A state directory that refuses the write gives one line too.
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

from pulsed.keys import parse_service_key
from pulsed.model import AF_INET, AF_INET6, ServiceKey
from pulsed.owned import OwnedServices
from pulsed.statefile import MAX_STATE_BYTES

WEB = ServiceKey.for_address("tcp", "192.0.2.1", 80)
DNS = ServiceKey.for_address("udp", "2001:db8::1", 53)
MARK = ServiceKey.for_fwmark(7, AF_INET6)


def test_saved_services_load_back(tmp_path):
    owned = OwnedServices(tmp_path)
    assert owned.load() == set()  # no file yet
    assert owned.save({WEB, DNS, MARK})
    assert OwnedServices(tmp_path).load() == {WEB, DNS, MARK}
    path = tmp_path / "owned-services.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text())["version"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["owned-services.json"]


def test_a_file_written_by_the_previous_release_still_loads(tmp_path):
    # Before the version field: json.dumps({"services": sorted(str(k) ...)}).
    (tmp_path / "owned-services.json").write_text(
        '{"services": ["fwmark:7/ipv6", "tcp:192.0.2.1:80", "udp:[2001:db8::1]:53"]}'
    )
    assert OwnedServices(tmp_path).load() == {WEB, DNS, MARK}


def test_a_crash_before_the_rename_keeps_the_old_file(tmp_path, monkeypatch):
    owned = OwnedServices(tmp_path)
    owned.save({WEB})
    before = (tmp_path / "owned-services.json").read_bytes()

    def crash(src, dst):
        raise OSError(errno.EIO, "simulated crash before the rename")

    monkeypatch.setattr(os, "replace", crash)
    with capture_logs() as logs:
        assert owned.save({WEB, DNS}) is False
    [line] = logs
    assert (line["log_level"], line["event"]) == ("error", "state.write_failed")
    assert (tmp_path / "owned-services.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["owned-services.json"]


def test_every_save_is_fsynced_file_then_directory(tmp_path, monkeypatch):
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    OwnedServices(tmp_path).save({WEB})
    assert synced == ["file", "dir"]


def test_a_state_directory_that_refuses_the_write_gives_one_line(tmp_path):
    (tmp_path / "state").write_text("a file where the directory should be")
    with capture_logs() as logs:
        assert OwnedServices(tmp_path / "state").save({WEB}) is False
    [line] = logs
    assert line["log_level"] == "error"
    assert line["file"] == str(tmp_path / "state" / "owned-services.json")
    assert "\n" not in line["error"]


# Loading bad files -----------------------------------------------------------

BAD_FILES = {
    "null": b"null",
    "list": b"[]",
    "empty object": b"{}",
    "string": b'"tcp:192.0.2.1:80"',
    "empty file": b"",
    "services null": b'{"services": null}',
    "services a string": b'{"services": "tcp:192.0.2.1:80"}',
    "services an object": b'{"services": {"tcp:192.0.2.1:80": true}}',
    "a number in the list": b'{"services": [5]}',
    "null in the list": b'{"services": [null]}',
    "a list in the list": b'{"services": [["tcp", "192.0.2.1", 80]]}',
    "bad protocol": b'{"services": ["icmp:192.0.2.1:80"]}',
    "bad address": b'{"services": ["tcp:192.0.2.300:80"]}',
    "port 0": b'{"services": ["tcp:192.0.2.1:0"]}',
    "port 70000": b'{"services": ["tcp:192.0.2.1:70000"]}',
    "no port": b'{"services": ["tcp:192.0.2.1"]}',
    "fwmark 0": b'{"services": ["fwmark:0"]}',
    "fwmark too big": b'{"services": ["fwmark:4294967296"]}',
    "fwmark family unknown": b'{"services": ["fwmark:7/ipx"]}',
    "scoped address": b'{"services": ["tcp:[fe80::1%lo]:80"]}',
    "unknown version": b'{"version": 2, "services": []}',
    "version as text": b'{"version": "1", "services": []}',
    "unknown field": b'{"version": 1, "services": [], "extra": 1}',
    "truncated": b'{"version": 1, "services": ["tcp:192.0.2.1:80"',
    "not UTF-8": b'{"services": ["tcp:192.0.2.1:80\xff"]}',
    "binary": b"\x00\xff\xfe",
    "deep nesting": b"[" * 100_000 + b"]" * 100_000,
    "deep nesting in the list": b'{"services": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}",
    "deep nesting in an unknown field": b'{"x": ' + b'{"a": ' * 100_000 + b"1" + b"}" * 100_001,
}


def _judge(state_dir: Path, content: bytes | None = None) -> tuple[set[ServiceKey], bool]:
    """Load owned-services.json; check the rules every load obeys; say whether it was used."""
    path = state_dir / "owned-services.json"
    with capture_logs() as logs:
        loaded = OwnedServices(state_dir).load()  # no exception may escape
    aside = list(state_dir.glob("owned-services.json.corrupt-*"))
    if os.path.lexists(path):
        assert aside == [] and logs == []
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
        assert loaded == set()
        used = False
    for key in loaded:  # only keys the kernel could hold
        assert parse_service_key(str(key)) == key
    if content is not None:
        assert used == (_expected(content) is not None)
        assert loaded == (_expected(content) or set())
    return loaded, used


def _expected(content: bytes) -> set[ServiceKey] | None:
    """The schema, written out independently: what a file must hold to be used."""
    try:
        doc = json.loads(content)
        if not isinstance(doc, dict) or not set(doc) <= {"version", "services"}:
            return None
        if doc.get("version", 1) != 1 or type(doc.get("version", 1)) is not int:
            return None
        services = doc["services"]
        if not isinstance(services, list) or not all(isinstance(s, str) for s in services):
            return None
        return {parse_service_key(s) for s in services}
    except (ValueError, KeyError, RecursionError):
        return None


@pytest.mark.parametrize("content", BAD_FILES.values(), ids=BAD_FILES.keys())
def test_a_bad_file_is_moved_aside_and_nothing_is_owned(tmp_path, content):
    (tmp_path / "owned-services.json").write_bytes(content)
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
    make(tmp_path / "owned-services.json")
    _, used = _judge(tmp_path)
    assert not used


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=16,
)
SERVICE_KEYS = st.one_of(
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
NEAR_FILES = st.fixed_dictionaries(
    {"services": st.lists(SERVICE_KEYS.map(str) | st.text(max_size=30) | JSON, max_size=4) | JSON},
    optional={"version": st.sampled_from([1, 1, 1, 0, 2, "1", None, 1.0]), "extra": JSON},
)


def _in_fresh_dir(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "owned-services.json").write_bytes(content)
        _, used = _judge(Path(tmp), content)
        event("used" if used else "moved aside")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(JSON)
def test_any_json_value_either_loads_or_is_moved_aside(value):
    _in_fresh_dir(json.dumps(value).encode())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(NEAR_FILES)
def test_hand_written_files_either_load_or_are_moved_aside(doc):
    _in_fresh_dir(json.dumps(doc).encode())


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_either_load_or_are_moved_aside(content):
    _in_fresh_dir(content)


@settings(max_examples=50, deadline=None)  # each example writes and fsyncs
@given(st.sets(SERVICE_KEYS, max_size=8))
def test_what_is_saved_is_read_back(services):
    with tempfile.TemporaryDirectory() as tmp:
        assert OwnedServices(tmp).save(services)
        loaded, used = _judge(Path(tmp))
        assert used and loaded == services
