"""[[vrrp]] instances, [[vrrp_script]], [[vrrp_sync_group]] and [hooks]: one validation."""

from __future__ import annotations

import pytest

from pulsed.config import ConfigError, parse_config

TRUE = "/bin/true"


def instance(name: str, vrid: int, extra: str = "", vip: str = "192.0.2.10/24") -> str:
    return (
        f'[[vrrp]]\nname = "{name}"\ninterface = "eth0"\nvrid = {vrid}\n'
        f'virtual_addresses = ["{vip}"]\n{extra}'
    )


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config("service = []\n" + text)
    return [f"{i.path}: {i.message}" for i in info.value.issues]


def test_several_instances_with_their_own_settings():
    config = parse_config(
        "service = []\n"
        + instance("VI_1", 51, "priority = 150\n")
        + instance("VI_2", 52, 'version = 2\nauth = {password = "1234"}\n', "192.0.2.20/24")
        + instance("VI_6", 51, "", "2001:db8::10/64")  # dual stack: the same VRID per family
    )
    assert [v.name for v in config.vrrp] == ["VI_1", "VI_2", "VI_6"]
    assert config.vrrp[0].priority == 150 and config.vrrp[1].version == 2
    assert config.vrrp[1].identity() != config.vrrp[0].identity()


def test_a_lone_vrrp_table_is_one_instance_named_vi_1():
    config = parse_config(
        'service = []\n[vrrp]\ninterface = "eth0"\nvirtual_addresses = ["192.0.2.10/24"]\n'
    )
    assert [v.name for v in config.vrrp] == ["VI_1"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (instance("A", 51) + instance("A", 52), "vrrp[1].name: also the name of vrrp[0]"),
        (instance("A", 51) + instance("B", 51), "vrrp[1].vrid: vrrp[0] has VRID 51 on eth0"),
        (instance("A", 51, 'advert_interval = "1500ms"\nversion = 2\n'), "whole seconds"),
        (instance("A", 51, "version = 2\n", "2001:db8::1/64"), "VRRPv2 is IPv4 only"),
        (instance("A", 51, 'version = 2\nauth = {password = "123456789"}\n'), "at most 8"),
        (instance("A", 51, 'auth = {password = "x"}\n'), "PASS passwords are VRRPv2 only"),
        (instance("A", 51, 'track_scripts = [{script = "nope"}]\n'), "no [[vrrp_script]]"),
        (instance("A", 51, 'notify_master = ["true"]\n'), "absolute path"),
        (instance("A", 51, 'notify = ["/nonexistent/x"]\n'), "/nonexistent/x"),
        (instance("A", 51, 'name = "bad name"\n').replace('name = "A"\n', ""), "letters"),
        (
            instance("A", 51, "sync_daemon = {enabled = true}\n")
            + instance("B", 52, "sync_daemon = {enabled = true}\n"),
            "only one instance may run it",
        ),
        (
            instance("A", 51) + '[[vrrp_sync_group]]\nname = "G"\ninstances = ["A", "Z"]\n',
            "vrrp_sync_group[0].instances[1]: no [[vrrp]] instance of that name",
        ),
        (
            instance("A", 51)
            + '[[vrrp_script]]\nname = "s"\ncommand = ["/bin/true"]\ninterval = "0s"\n',
            "vrrp_script[0].interval",
        ),
        ("[hooks]\nmax_running = 0\n", "hooks.max_running: must be between 1 and 256"),
        ('[hooks]\nfifo = "/nonexistent-dir/fifo"\n', "does not exist"),
    ],
)
def test_what_cannot_run_is_refused_in_one_line(text, expected):
    found = problems(text)
    assert any(expected in line for line in found), found
    assert all("\n" not in line for line in found)


def test_scripts_groups_hooks_and_real_notify_commands_load():
    config = parse_config(
        instance("A", 51, 'track_scripts = [{script = "chk", weight = -20}]\n')
        + instance("B", 52, 'notify = ["/bin/true"]\n')
        + '[[vrrp_script]]\nname = "chk"\ncommand = ["/bin/true"]\ninterval = "2s"\n'
        + '[[vrrp_sync_group]]\nname = "G"\ninstances = ["A", "B"]\nnotify = ["/bin/true"]\n'
        + '[hooks]\ntimeout = "5s"\nmax_running = 4\n'
        + '[[service]]\nname = "web"\nvip = "192.0.2.100"\nport = 80\n'
        + f'[[service.real]]\naddress = "10.0.0.2:80"\nnotify_up = ["{TRUE}", "up"]\n'
    )
    assert config.vrrp_script[0].name == "chk" and config.vrrp_sync_group[0].instances == ["A", "B"]
    assert config.hooks.max_running == 4
    assert config.service[0].real[0].notify_up == (TRUE, "up")


def test_a_real_notify_command_gone_since_the_last_load_is_found(tmp_path):
    from pulsed.config import ParseCache

    program = tmp_path / "hook"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    text = (
        '[[service]]\nname = "web"\nvip = "192.0.2.100"\nport = 80\n'
        f'[[service.real]]\naddress = "10.0.0.2:80"\nnotify_down = ["{program}"]\n'
    )
    cache = ParseCache()
    parse_config(text, "f", cache)
    program.unlink()
    with pytest.raises(ConfigError, match="notify_down"):
        parse_config(text, "f", cache)
