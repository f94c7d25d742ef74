"""`pulsed config|status|...` against hostile input: every failure is one line, exit 1 or 2,
never a traceback, never a hang (a FIFO is refused, not read)."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from pathlib import Path

import pytest

from pulsed.cli import main


def run(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    _, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, err


@pytest.fixture
def not_http():
    """A loopback peer that answers like an SSH server."""
    server = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def serve() -> None:
        server.settimeout(5)
        while not done.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(b"SSH-2.0-OpenSSH_9\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    done.set()
    with contextlib.suppress(OSError):
        server.shutdown(socket.SHUT_RDWR)  # wakes the accept
    server.close()
    thread.join()


def test_options_before_the_verb_are_kept(tmp_path: Path, capsys) -> None:
    """`pulsed config -c FILE show` once read /etc/pulsed/pulsed.toml instead of FILE."""
    config = tmp_path / "pulsed.toml"
    config.write_text(f'[api]\nlisten = "127.0.0.1:1"\ntoken_file = "{tmp_path}/tok"\n')
    for argv in (["config", "-c", str(config), "show"], ["config", "show", "-c", str(config)]):
        code, err = run(capsys, *argv)
        assert code == 1 and err == (
            f"pulsed: cannot read the API token file {tmp_path}/tok: cannot read:"
            " No such file or directory (use --token-file, or run as a user who can read it)\n"
        )


@pytest.mark.parametrize("entry", ["-1", "0", "abc", "1.5", "٣", "99999999999999999999"])
def test_rollback_takes_a_history_id(capsys, entry: str) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["config", "rollback", "--", entry])
    assert stop.value.code == 2
    assert "a history id is a whole number from 1" in capsys.readouterr().err


def test_new_config_files_that_cannot_be_read(tmp_path: Path, capsys) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    binary = tmp_path / "bin"
    binary.write_bytes(b"a = 1\n\xff\xfe\n")
    url = ["--url", "http://127.0.0.1:1", "--token-file", str(tmp_path / "tok")]
    for path, why in (
        (fifo, f"config file {fifo}: is a FIFO, not a regular file"),
        (tmp_path, f"config file {tmp_path}: is a directory, not a regular file"),
        (tmp_path / "nope", f"config file {tmp_path}/nope: cannot read: No such file or directory"),
        (binary, f"{binary}:2: not UTF-8 text (byte 6); a config is UTF-8 TOML"),
    ):
        for verb in ("check", "plan", "apply"):
            assert run(capsys, "config", verb, str(path), *url) == (1, f"pulsed: {why}\n")


def test_token_files_that_cannot_be_used(tmp_path: Path, capsys) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    control = tmp_path / "control"
    control.write_bytes(b"abc\r\nInjected: header\n")
    empty = tmp_path / "empty"
    empty.write_text("\n")
    for token, why in (
        (fifo, f"cannot read the API token file {fifo}: is a FIFO, not a regular file"),
        (control, f"the API token file {control} holds a control character"),
        (empty, f"the API token file {empty} is empty"),
    ):
        code, err = run(
            capsys, "config", "show", "--url", "http://127.0.0.1:1", "--token-file", str(token)
        )
        assert code == 1 and err.startswith(f"pulsed: {why}") and err.count("\n") == 1


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://[::1", "not an http:// URL"),
        ("nonsense", "not an http:// URL"),
        ("http://127.0.0.1:abc", "nonnumeric port"),
        ("http://127.0.0.1:1", "cannot reach the daemon"),
    ],
)
def test_urls_that_cannot_be_used(capsys, tmp_path: Path, url: str, words: str) -> None:
    token = tmp_path / "tok"
    token.write_text("t")
    for argv in (["status"], ["config", "history"], ["drain", "web/10.0.0.1:80"]):
        code, err = run(capsys, *argv, "--url", url, "--token-file", str(token))
        assert code == 1 and words in err and err.count("\n") == 1, err


def test_a_peer_that_is_not_pulsed(capsys, not_http: str, tmp_path: Path) -> None:
    token = tmp_path / "tok"
    token.write_text("t")
    for argv in (["status"], ["config", "show"], ["reload"]):
        code, err = run(capsys, *argv, "--url", not_http, "--token-file", str(token))
        assert code == 1 and err.startswith("pulsed: ") and err.count("\n") == 1, err
