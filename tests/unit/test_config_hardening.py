"""What check-config accepts must run: each class of value that passed before
and then broke ``run`` or a reload is refused here, in one line, with its key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pulsed.config import ConfigError, load_config, parse_config

REPO = Path(__file__).resolve().parents[2]

SERVICE = """
[[service]]
name = "web"
vip = "192.0.2.100"
port = 80
[service.check]
type = "none"
[[service.real]]
address = "10.0.0.2:80"
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        parse_config(text, "t.toml")
    return [str(issue) for issue in exc.value.issues]


def one_problem(text: str) -> str:
    found = problems(text)
    assert len(found) == 1, found
    assert "\n" not in found[0]
    return found[0]


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pulsed.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=timeout,
    )


# Numbers and durations ------------------------------------------------------------


NINES = "9" * 400


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ("daemon", "resync_interval"),
        ("daemon", "full_resync_interval"),
        ("daemon", "retry_interval"),
        ("daemon", "probe_tick_max"),
        ("api", "status_refresh"),
    ],
)
def test_a_duration_too_long_to_be_a_float_is_one_line(section, key):
    text = f'[{section}]\n{key} = "{NINES}s"\n' + SERVICE
    assert f"{section}.{key}" in one_problem(text)


@pytest.mark.parametrize("key", ["interval", "timeout", "jitter"])
def test_a_check_duration_of_400_nines_is_one_line(key):
    text = SERVICE.replace('type = "none"', f'type = "tcp"\n{key} = "{NINES}ms"')
    assert f"service[0].check.{key}" in one_problem(text)


@pytest.mark.parametrize("key", ["persistence", "drain_timeout", "slow_start"])
def test_a_service_duration_of_400_nines_is_one_line(key):
    text = SERVICE.replace("port = 80\n", f'port = 80\n{key} = "{NINES}h"\n')
    assert f"service[0].{key}" in one_problem(text)


@pytest.mark.parametrize(
    ("line", "path"),
    [
        ('resync_interval = "0s"', "daemon.resync_interval"),
        ('retry_interval = "0s"', "daemon.retry_interval"),
        ('full_resync_interval = "0s"', "daemon.full_resync_interval"),
        ('probe_tick_max = "2s"', "daemon.probe_tick_max"),
    ],
)
def test_a_daemon_timer_that_would_spin_or_stall_is_refused(line, path):
    assert path in one_problem(f"[daemon]\n{line}\n" + SERVICE)


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ('interval = "1ms"', "interval"),
        ('interval = "2d"', "interval"),
        ("rise = 1001", "rise"),
        ("fall = 9223372036854775807", "fall"),
        ("max_bytes = 9223372036854775807", "max_bytes"),
    ],
)
def test_check_numbers_have_ranges(line, key):
    text = SERVICE.replace('type = "none"', f'type = "http"\n{line}')
    assert f"service[0].check.{key}" in " ".join(problems(text))


def test_min_healthy_count_has_a_range():
    text = SERVICE.replace("port = 80\n", "port = 80\nmin_healthy = 9223372036854775807\n")
    assert "service[0].min_healthy" in one_problem(text)


# Addresses ------------------------------------------------------------------------------


@pytest.mark.parametrize("vip", ["fe80::1%lo", "fe80::1%1", "2001:db8::1%eth0"])
def test_a_scoped_vip_is_refused(vip):
    text = SERVICE.replace('vip = "192.0.2.100"', f'vip = "{vip}"')
    assert "service[0].vip" in one_problem(text)


@pytest.mark.parametrize("address", ["[fe80::2%lo]:80", "fe80::2%lo"])
def test_a_scoped_real_server_is_refused(address):
    text = SERVICE.replace('address = "10.0.0.2:80"', f'address = "{address}"')
    assert "service[0].real[0].address" in one_problem(text)


@pytest.mark.parametrize(
    "listen", ["127.0.0.1:\u00b2", "127.0.0.1:\u0668\u0660", "[fe80::1%lo]:80"]
)
def test_a_listen_address_int_cannot_read_is_refused(listen):
    assert "api.listen" in one_problem(f'[api]\nlisten = "{listen}"\n' + SERVICE)


@pytest.mark.parametrize(
    "address",
    [
        "0.0.0.0:80",
        "0.1.2.3:80",
        "224.0.0.1:80",
        "255.255.255.255:80",
        "[::]:80",
        "[ff02::1]:80",
        "[fe80::2]:80",
        "[::ffff:10.0.0.2]:80",
    ],
)
def test_a_real_server_the_kernel_would_refuse_is_refused(address):
    text = SERVICE.replace('address = "10.0.0.2:80"', f'address = "{address}"')
    assert "service[0].real[0].address" in one_problem(text)
    sorry = SERVICE.replace("port = 80\n", f'port = 80\nsorry_server = "{address}"\n', 1)
    assert "service[0].sorry_server" in one_problem(sorry)


@pytest.mark.parametrize("name", ["", " web", "web ", "a/b", "x" * 65, "tab\there", "nl\nhere"])
def test_a_service_name_that_cannot_be_a_path_or_label_is_refused(name):
    text = SERVICE.replace('name = "web"', f"name = {json.dumps(name)}")
    assert "service[0].name" in one_problem(text)


# References -----------------------------------------------------------------------------


def test_track_services_must_name_a_service():
    text = (
        '[vrrp]\nvirtual_addresses = ["192.0.2.10/24"]\n'
        '[[vrrp.track_services]]\nservice = "nosuch"\n' + SERVICE
    )
    line = one_problem(text)
    assert "vrrp.track_services[0].service" in line and "web" in line


# Files -----------------------------------------------------------------------------------


def test_token_file_must_exist(tmp_path):
    line = one_problem(f'[api]\ntoken_file = "{tmp_path / "nope"}"\n' + SERVICE)
    assert "api.token_file" in line and "No such file" in line


def test_a_token_file_open_to_others_is_refused_like_ssh(tmp_path):
    token = tmp_path / "token"
    token.write_text("secret-token-0123456789\n")
    token.chmod(0o644)
    line = one_problem(f'[api]\ntoken_file = "{token}"\n' + SERVICE)
    assert "open to others" in line and "chmod 600" in line
    token.chmod(0o600)
    assert parse_config(f'[api]\ntoken_file = "{token}"\n' + SERVICE).api.token_file


def test_a_fifo_as_token_file_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "token"
    os.mkfifo(fifo, 0o600)
    line = one_problem(f'[api]\ntoken_file = "{fifo}"\n' + SERVICE)
    assert "FIFO" in line


def test_a_directory_as_token_file_is_refused(tmp_path):
    line = one_problem(f'[api]\ntoken_file = "{tmp_path}"\n' + SERVICE)
    assert "a directory" in line


def test_a_ca_file_of_garbage_is_refused(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("not a certificate\n")
    text = SERVICE.replace('type = "none"', f'type = "https"\nca_file = "{ca}"')
    assert "service[0].check.ca_file" in one_problem(text)


def test_a_client_key_open_to_others_is_refused(tmp_path):
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("client.example")
    cert_file, key_file = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    key_file.chmod(0o644)
    check = f'type = "https"\nclient_cert = "{cert_file}"\nclient_key = "{key_file}"'
    line = one_problem(SERVICE.replace('type = "none"', check))
    assert "client_key" in line and "open to others" in line
    key_file.chmod(0o600)
    assert parse_config(SERVICE.replace('type = "none"', check)).service


@pytest.mark.parametrize("command", ["/nonexistent/check", "no-such-command-here", "/etc"])
def test_an_exec_command_that_cannot_run_is_refused(command):
    text = SERVICE.replace('type = "none"', f'type = "exec"\ncommand = ["{command}"]')
    assert "service[0].check.command[0]" in one_problem(text)


def test_a_file_gone_since_the_last_reload_is_found_in_an_unchanged_service(tmp_path):
    from pulsed.config import ParseCache

    ca = tmp_path / "ca.pem"
    import trustme

    trustme.CA().cert_pem.write_to_path(str(ca))
    text = SERVICE.replace('type = "none"', f'type = "https"\nca_file = "{ca}"')
    cache = ParseCache()
    parse_config(text, "a", cache)
    ca.unlink()
    with pytest.raises(ConfigError) as exc:
        parse_config(text, "a", cache)
    assert "ca_file" in str(exc.value)


def test_a_file_turned_to_garbage_or_a_command_gone_is_found_in_an_unchanged_service(tmp_path):
    import trustme

    from pulsed.config import ParseCache

    ca, prog = tmp_path / "ca.pem", tmp_path / "check"
    trustme.CA().cert_pem.write_to_path(str(ca))
    prog.write_text("#!/bin/sh\nexit 0\n")
    prog.chmod(0o755)
    https = SERVICE.replace('type = "none"', f'type = "https"\nca_file = "{ca}"')
    exec_ = SERVICE.replace('type = "none"', f'type = "exec"\ncommand = ["{prog}"]')
    for text, spoil, key in (
        (https, lambda: ca.write_text("garbage\n"), "ca_file"),
        (exec_, prog.unlink, "command[0]"),
    ):
        cache = ParseCache()
        parse_config(text, "a", cache)
        spoil()
        with pytest.raises(ConfigError) as exc:
            parse_config(text, "a", cache)
        assert [i.path for i in exc.value.issues] == [f"service[0].check.{key}"]


# The file itself ---------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "   \n\t\n", "# only a comment\n", "[daemon]\n"])
def test_an_empty_file_or_one_without_services_is_refused(text):
    assert "service = []" in one_problem(text)


def test_a_config_with_no_services_says_so():
    assert parse_config("service = []\n").service == ()


def test_toml_nested_500_deep_is_one_line():
    text = "x = " + "[" * 500 + "]" * 500 + "\n" + SERVICE
    assert "nested deeper" in one_problem(text)


def test_tables_nested_deep_by_dotted_keys_are_one_line():
    text = "a." * 200 + "b = 1\n" + SERVICE
    assert "nested deeper" in one_problem(text)


def test_an_integer_of_5000_digits_is_one_line():
    assert "4300 digits" in one_problem("x = " + "9" * 5000 + "\n" + SERVICE)


def test_check_config_of_a_deep_file_has_no_traceback(tmp_path):
    path = tmp_path / "deep.toml"
    path.write_text("x = " + "{a = " * 500 + "1" + "}" * 500 + "\n" + SERVICE)
    result = run_cli("check-config", str(path))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "nested deeper" in result.stderr


def test_check_config_of_a_fifo_does_not_hang(tmp_path):
    fifo = tmp_path / "pulsed.toml"
    os.mkfifo(fifo)
    result = run_cli("check-config", str(fifo))  # a hang fails on the timeout
    assert result.returncode == 2
    assert "FIFO" in result.stderr and "Traceback" not in result.stderr


def test_load_config_of_a_fifo_does_not_block(tmp_path):
    fifo = tmp_path / "pulsed.toml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError) as exc:
        load_config(fifo)
    assert "FIFO" in str(exc.value)


def test_a_config_file_too_large_is_refused(tmp_path, monkeypatch):
    import pulsed.config as config_module

    monkeypatch.setattr(config_module, "MAX_CONFIG_BYTES", 100)
    path = tmp_path / "big.toml"
    path.write_text(SERVICE * 3)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert "more than 100" in str(exc.value)
