"""State files: written whole and durably, moved aside (never trusted) when unusable.

Attacks the class "a state file on disk crashes or misleads the daemon": the
load path for every kind of bad file, the atomic write against a crash between
write and rename, the fsyncs, the start-up check of the state directory, and a
whole daemon starting over corrupt files.
"""

from __future__ import annotations

import asyncio
import errno
import os
import stat
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from pulsed import statefile
from pulsed.config import load_config
from pulsed.daemon import Daemon
from pulsed.ipvs.memory import MemoryBackend
from pulsed.model import Dest, DestKey, Service, ServiceKey, Table
from pulsed.statefile import (
    MAX_STATE_BYTES,
    check_state_dir,
    load_json_state,
    move_aside,
    write_atomic,
)


def _decode_text(data: bytes) -> str:
    text = data.decode()
    if text != "good":
        raise ValueError(f"not good: {text!r}")
    return text


def _errors(logs: list[dict]) -> list[dict]:
    return [e for e in logs if e["log_level"] in ("error", "critical", "exception")]


# Writing ----------------------------------------------------------------


def test_write_replaces_the_file_whole_with_mode_0600(tmp_path):
    path = tmp_path / "state.json"
    path.write_bytes(b"old")
    old_umask = os.umask(0)  # mode 0600 must not depend on the umask
    try:
        write_atomic(path, b"new")
    finally:
        os.umask(old_umask)
    assert path.read_bytes() == b"new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temporary left


def test_write_creates_the_state_directory(tmp_path):
    path = tmp_path / "a" / "b" / "state.json"
    write_atomic(path, b"x")
    assert path.read_bytes() == b"x"


def test_a_crash_between_write_and_rename_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "state.json"
    path.write_bytes(b"old")

    def crash(src, dst):
        raise OSError(errno.EIO, "simulated crash before the rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated"):
        write_atomic(path, b"new")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_the_file_is_fsynced_before_the_rename_and_the_directory_after(tmp_path, monkeypatch):
    path = tmp_path / "state.json"
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        st = os.fstat(fd)
        kind = "dir" if stat.S_ISDIR(st.st_mode) else "file"
        if kind == "dir":
            assert st.st_ino == tmp_path.stat().st_ino
        events.append(("fsync", kind))
        real_fsync(fd)

    def replace(src, dst):
        # The data reached the disk before the name points at it.
        assert Path(src).read_bytes() == b"payload"
        events.append(("replace", Path(dst).name))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    write_atomic(path, b"payload")
    assert events == [("fsync", "file"), ("replace", "state.json"), ("fsync", "dir")]


def test_a_failed_write_raises_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "state.json"

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError):
        write_atomic(path, b"x")
    assert list(tmp_path.iterdir()) == []


# Loading ----------------------------------------------------------------


def test_a_missing_file_is_empty_state_and_nothing_is_logged(tmp_path):
    with capture_logs() as logs:
        assert load_json_state(tmp_path / "state.json", _decode_text) is None
    assert logs == []
    assert list(tmp_path.iterdir()) == []


def test_a_good_file_is_read_and_left_in_place(tmp_path):
    path = tmp_path / "state.json"
    path.write_bytes(b"good")
    assert load_json_state(path, _decode_text) == "good"
    assert path.exists()


def _bad_bytes(path: Path) -> None:
    path.write_bytes(b"bad")


def _non_utf8(path: Path) -> None:
    path.write_bytes(b"\xff\xfe\x00")


def _directory(path: Path) -> None:
    path.mkdir()
    (path / "inside").write_text("kept")


def _fifo(path: Path) -> None:
    os.mkfifo(path)  # opened without O_NONBLOCK this would hang the load


def _huge(path: Path) -> None:
    with open(path, "wb") as f:  # sparse: costs no disk
        f.truncate(MAX_STATE_BYTES + 1)


def _dangling_symlink(path: Path) -> None:
    path.symlink_to(path.parent / "nowhere")


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (_bad_bytes, "not good"),
        (_non_utf8, "can't decode"),
        (_directory, "is a directory, not a regular file"),
        (_fifo, "is a FIFO, not a regular file"),
        (_huge, f"more than {MAX_STATE_BYTES}"),
        (_dangling_symlink, "no such file"),
    ],
)
def test_an_unusable_file_is_moved_aside_with_one_error_line(tmp_path, make, problem):
    path = tmp_path / "state.json"
    make(path)
    with capture_logs() as logs:
        assert load_json_state(path, _decode_text, what="test state") is None
    assert not os.path.lexists(path)
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("state.json.corrupt-")]
    assert len(aside) == 1
    [line] = _errors(logs)
    assert logs == [line]
    assert line["event"] == "state.corrupt"
    assert line["file"] == str(path)
    assert problem.lower() in line["problem"].lower()
    assert "\n" not in line["problem"]
    assert line["moved_to"] == str(aside[0])


def test_a_state_directory_that_is_a_file_gives_one_line(tmp_path):
    (tmp_path / "state").write_text("")
    with capture_logs() as logs:
        assert load_json_state(tmp_path / "state" / "x.json", _decode_text) is None
    [line] = logs
    assert (line["log_level"], line["event"]) == ("error", "state.unreadable")
    assert line["problem"] == "not a directory"


def test_a_decoder_type_error_is_a_bad_file_too(tmp_path):
    path = tmp_path / "state.json"
    path.write_bytes(b"x")

    def decode(data: bytes):
        raise TypeError("wrong shape")

    with capture_logs() as logs:
        assert load_json_state(path, decode) is None
    assert len(_errors(logs)) == 1


def test_moving_aside_never_replaces_an_earlier_corrupt_file(tmp_path):
    path = tmp_path / "state.json"
    now = 1_800_000_000.0
    names = []
    for content in (b"first", b"second", b"third"):
        path.write_bytes(content)
        names.append(move_aside(path, now).name)
    assert names == [
        "state.json.corrupt-20270115T080000Z",
        "state.json.corrupt-20270115T080000Z.1",
        "state.json.corrupt-20270115T080000Z.2",
    ]
    assert [(tmp_path / n).read_bytes() for n in names] == [b"first", b"second", b"third"]


def test_a_directory_is_moved_aside_without_replacing_an_earlier_one(tmp_path):
    path = tmp_path / "state.json"
    now = 1_800_000_000.0
    (tmp_path / "state.json.corrupt-20270115T080000Z").mkdir()
    path.mkdir()
    (path / "inside").write_text("kept")
    aside = move_aside(path, now)
    assert aside.name == "state.json.corrupt-20270115T080000Z.1"
    assert (aside / "inside").read_text() == "kept"


def test_a_file_that_cannot_be_moved_aside_gives_one_line(tmp_path, monkeypatch):
    path = tmp_path / "state.json"
    path.write_bytes(b"bad")

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", refuse)
    monkeypatch.setattr(os, "rename", refuse)
    with capture_logs() as logs:
        assert load_json_state(path, _decode_text) is None
    [line] = logs
    assert line["log_level"] == "error"
    assert line["moved_to"] is None
    assert line["move_error"] == "operation not permitted"
    assert path.read_bytes() == b"bad"


def test_without_hard_links_the_file_is_renamed(tmp_path, monkeypatch):
    path = tmp_path / "state.json"
    path.write_bytes(b"bad")

    def no_links(*args, **kwargs):
        raise PermissionError(errno.EPERM, "Operation not permitted")  # protected_hardlinks

    monkeypatch.setattr(os, "link", no_links)
    aside = move_aside(path)
    assert aside.read_bytes() == b"bad"
    assert not path.exists()


# The start-up check -------------------------------------------------------


def test_a_missing_state_directory_is_created_private(tmp_path):
    path = tmp_path / "var" / "lib" / "pulsed"
    assert check_state_dir(path) is None
    assert path.is_dir()
    assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0
    assert list(path.iterdir()) == []  # the write check leaves nothing behind


def test_a_usable_state_directory_passes(tmp_path):
    assert check_state_dir(tmp_path) is None
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("mode", [0o777, 0o775, 0o1777])
def test_a_state_directory_others_can_write_to_is_refused(tmp_path, mode):
    path = tmp_path / "state"
    path.mkdir()
    path.chmod(mode)
    assert check_state_dir(path) == (
        f"state directory {path} is writable by others (mode {mode:04o}); run: chmod 700 {path}"
    )


def test_a_state_directory_others_can_read_is_accepted(tmp_path):
    (tmp_path / "state").mkdir(mode=0o755)
    assert check_state_dir(tmp_path / "state") is None


def test_a_file_in_place_of_the_state_directory_is_refused(tmp_path):
    (tmp_path / "state").write_text("")
    assert check_state_dir(tmp_path / "state") == (
        f"state directory {tmp_path / 'state'} exists and is not a directory"
    )


def test_a_state_directory_that_cannot_be_created_is_refused(tmp_path):
    (tmp_path / "file").write_text("")
    path = tmp_path / "file" / "state"
    assert check_state_dir(path) == f"cannot create state directory {path}: not a directory"


@pytest.mark.parametrize(
    ("err", "text"),
    [(errno.EROFS, "read-only file system"), (errno.EACCES, "permission denied")],
)
def test_a_state_directory_we_cannot_write_is_refused(tmp_path, monkeypatch, err, text):
    # The tests run as root, whom a chmod does not stop: the refusal is injected
    # where a read-only mount or a sandbox would give it.
    def refuse(*args, **kwargs):
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(statefile.tempfile, "mkstemp", refuse)
    assert check_state_dir(tmp_path) == f"state directory {tmp_path} is not writable: {text}"


# A whole daemon over corrupt state files ------------------------------------

CONFIG = """
[daemon]
state_dir = "{state}"
[api]
enabled = false
[[service]]
name = "web"
vip = "192.0.2.100"
port = 80
[service.check]
type = "none"
[[service.real]]
address = "10.0.0.2:80"
weight = 100
[[service.real]]
address = "10.0.0.3:80"
"""
SVC = ServiceKey.for_address("tcp", "192.0.2.100", 80)
GONE = ServiceKey.for_address("tcp", "192.0.2.200", 80)  # pulsed's, dropped from the config
A, B = DestKey("10.0.0.2", 80), DestKey("10.0.0.3", 80)


async def _start_and_dump(base: Path, overrides: bytes | None, owned: bytes | None) -> Table:
    """The kernel table after the first pass of a daemon started over these files."""
    state = base / "state"
    state.mkdir(parents=True)
    if overrides is not None:
        (state / "overrides.json").write_bytes(overrides)
    if owned is not None:
        (state / "owned-services.json").write_bytes(owned)
    path = base / "pulsed.toml"
    path.write_text(CONFIG.format(state=state))
    kernel = Table({GONE: Service(GONE, dests=(Dest("10.0.0.9", 80),))})
    backend = MemoryBackend(kernel)
    daemon = Daemon(path, backend, load_config(path))
    passes: asyncio.Queue = asyncio.Queue()
    daemon.pass_observers.append(lambda result, _elapsed: passes.put_nowait(result))
    task = asyncio.create_task(daemon.run())
    while not (await asyncio.wait_for(passes.get(), 30)).ops:
        pass
    daemon.request_stop()
    await asyncio.wait_for(task, 30)
    return backend.table()


def _weights(table: Table, key: ServiceKey) -> dict[DestKey, int]:
    return {d.key: d.weight for d in table.get(key).dests}


GOOD_OVERRIDES = (
    b'{"version": 1, "overrides": {"tcp:192.0.2.100:80/10.0.0.2:80": {"mode": "drain"}}}'
)
GOOD_OWNED = b'{"version": 1, "services": ["tcp:192.0.2.100:80", "tcp:192.0.2.200:80"]}'


async def test_good_state_files_are_used(tmp_path):
    table = await _start_and_dump(tmp_path, GOOD_OVERRIDES, GOOD_OWNED)
    assert _weights(table, SVC) == {A: 0, B: 1}  # drained
    assert table.get(GONE) is None  # owned, no longer configured: removed


async def test_a_daemon_over_corrupt_state_files_programs_the_config_alone(tmp_path):
    bad_overrides = (
        b'{"version": 1, "overrides": {"tcp:192.0.2.100:80/10.0.0.2:80": {"weight": 1e12}}}'
    )
    with capture_logs() as logs:
        table = await _start_and_dump(tmp_path, bad_overrides, b"null")
    # As if no state existed: configured weights, and the service the
    # (unreadable) owned file named is not touched.
    assert table == await _start_and_dump(tmp_path / "clean", None, None)
    assert _weights(table, SVC) == {A: 100, B: 1}
    assert _weights(table, GONE) == {DestKey("10.0.0.9", 80): 1}
    corrupt = [e for e in logs if e["event"] == "state.corrupt"]
    assert sorted(Path(e["file"]).name for e in corrupt) == [
        "overrides.json",
        "owned-services.json",
    ]
    assert all(e["log_level"] == "error" and Path(e["moved_to"]).exists() for e in corrupt)
    assert not any(e["log_level"] == "exception" or "exc_info" in e for e in logs)
    # The daemon wrote a fresh owned-services file next to the corrupt one.
    state = tmp_path / "state"
    assert b'"tcp:192.0.2.100:80"' in (state / "owned-services.json").read_bytes()
