"""Placement keys: validation, and where each probe type takes its address from.

Their effect on real sockets is tested in tests/netns/test_probe_placement.py.
"""

from __future__ import annotations

import errno
import socket

import pytest

from pulsed.checks.base import Target
from pulsed.checks.config import CheckConfig, check_problems
from pulsed.checks.exec import ExecProbe
from pulsed.checks.http import HttpProbe, HttpsProbe
from pulsed.checks.placement import PlacementError, placement_failure, prepare_socket
from pulsed.checks.tcp import TcpProbe
from pulsed.config import ConfigError, parse_config
from pulsed.durations import Duration


def problems(check: CheckConfig) -> list[tuple[str, str]]:
    return [(key, message) for key, _, message in check_problems(check)]


@pytest.mark.parametrize("name", ["eth0", "bond0.100", "wg-site_2", "x" * 15])
def test_interface_names_the_kernel_takes_pass(name) -> None:
    assert problems(CheckConfig(bind_interface=name)) == []


@pytest.mark.parametrize("name", ["", "x" * 16, "eth 0", "eth0\n", "a/b", "eth0:1", ".", "..", "é"])
def test_interface_names_the_kernel_refuses_fail(name) -> None:
    assert [key for key, _ in problems(CheckConfig(bind_interface=name))] == ["bind_interface"]


def test_retry_interval_must_fit_within_interval() -> None:
    base = {"interval": Duration(2.0), "timeout": Duration(0.5)}
    assert problems(CheckConfig(retry_interval=Duration(0.5), **base)) == []
    assert [k for k, _ in problems(CheckConfig(retry_interval=Duration(3.0), **base))] == [
        "retry_interval"
    ]
    assert [k for k, _ in problems(CheckConfig(retry_interval=Duration(0.005), **base))] == [
        "retry_interval"
    ]
    # Shorter than the timeout is allowed: a retry after a timeout starts at once.
    assert problems(CheckConfig(retry_interval=Duration(0.2), **base)) == []


SERVICE = """
[[service]]
name = "web"
vip = "192.0.2.1"
port = 80
[service.check]
bind_address = "10.0.0.1"
[[service.real]]
address = "{real}"
"""


def test_a_source_address_of_the_real_servers_family_passes() -> None:
    parse_config(SERVICE.format(real="10.0.0.2"), "t.toml")


def test_a_source_address_of_another_family_than_the_real_server_is_refused() -> None:
    text = SERVICE.format(real="[2001:db8::2]:80") + '\nforwarding = "tunnel"\n'
    with pytest.raises(ConfigError) as info:
        parse_config(text, "t.toml")
    assert [str(i) for i in info.value.issues] == [
        't.toml: service[0].check.bind_address = "10.0.0.1": is IPv4 but the real server'
        " 2001:db8::2 is IPv6"
    ]


def test_probes_go_to_the_checks_address_and_port() -> None:
    check = CheckConfig(type="http", address="10.9.9.9", port=8080)
    target = Target("10.0.0.2", 80, check)
    assert (TcpProbe(target).address, TcpProbe(target).port) == ("10.9.9.9", 8080)
    http = HttpProbe(target)
    assert (http.address, http.port) == ("10.9.9.9", 8080)
    assert b"\r\nHost: 10.9.9.9:8080\r\n" in http.request  # the probed address, by default
    assert (
        HttpsProbe(
            Target("10.0.0.2", 80, CheckConfig(type="https", address="10.9.9.9"))
        ).server_hostname
        == "10.9.9.9"
    )
    v6 = HttpProbe(Target("10.0.0.2", 80, CheckConfig(type="http", address="2001:db8::9")))
    assert (v6.family, b"\r\nHost: [2001:db8::9]\r\n" in v6.request) == (socket.AF_INET6, True)


def test_exec_substitutes_the_probed_address_and_passes_the_source() -> None:
    check = CheckConfig(
        type="exec",
        command=("/bin/true", "{address}", "{port}"),
        address="10.9.9.9",
        port=8080,
        bind_address="10.0.0.1",
        bind_interface="eth1",
    )
    probe = ExecProbe(Target("10.0.0.2", 80, check))
    assert probe.argv == ["/bin/true", "10.9.9.9", "8080"]
    env = probe.env
    assert (env["PULSED_ADDRESS"], env["PULSED_PORT"]) == ("10.9.9.9", "8080")
    assert (env["PULSED_BIND_ADDRESS"], env["PULSED_BIND_INTERFACE"]) == ("10.0.0.1", "eth1")
    assert (
        "PULSED_BIND_ADDRESS"
        not in ExecProbe(
            Target("10.0.0.2", 80, CheckConfig(type="exec", command=("/bin/true",)))
        ).env
    )


def test_a_source_of_the_wrong_family_is_refused_before_the_kernel_sees_it() -> None:
    with (
        socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock,
        pytest.raises(PlacementError) as info,
    ):
        prepare_socket(sock, CheckConfig(bind_address="127.0.0.1"), socket.AF_INET6)
    assert info.value.errno == errno.EAFNOSUPPORT
    result = placement_failure(info.value, 0.0)
    assert result is not None and (result.category, result.fault) == ("local", "socket")
    assert result.reason == (
        "local error: cannot use source address 127.0.0.1:"
        " not of the probed address's family (EAFNOSUPPORT)"
    )
    assert placement_failure(OSError(errno.ENODEV, "x"), 0.0) is None  # only placement's own
