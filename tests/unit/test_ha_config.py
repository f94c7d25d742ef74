"""The [vrrp] table: defaults, decoding, semantic problems with key paths, one-line errors."""

import pytest

from pulsed.ha.__main__ import load_vrrp_config, main
from pulsed.ha.config import VrrpConfig, vrrp_problems


def cfg(**kw):
    kw.setdefault("virtual_addresses", ["192.0.2.10/24"])
    return VrrpConfig(**kw)


def paths(c):
    return [p for p, _, _ in vrrp_problems(c)]


def test_defaults_with_a_vip_are_valid():
    c = cfg()
    assert vrrp_problems(c) == []
    assert c.advert_centiseconds() == 100 and c.family() == 4
    assert [(str(a), i) for a, i in c.vips()] == [("192.0.2.10/24", "eth0")]


def test_example_file_has_no_problems():
    c = load_vrrp_config("etc/pulsed.toml")
    assert vrrp_problems(c) == []


@pytest.mark.parametrize(
    ("kw", "path"),
    [
        ({"vrid": 0}, "vrid"),
        ({"vrid": 256}, "vrid"),
        ({"priority": 0}, "priority"),
        ({"priority": 256}, "priority"),
        ({"advert_interval": 0.005}, "advert_interval"),
        ({"advert_interval": 41.0}, "advert_interval"),
        ({"advert_interval": 0.015}, "advert_interval"),
        ({"preempt": False, "preempt_delay": 5.0}, "preempt_delay"),
        ({"virtual_addresses": []}, "virtual_addresses"),
        ({"virtual_addresses": ["192.0.2.300/24"]}, "virtual_addresses[0]"),
        ({"virtual_addresses": ["192.0.2.1/24", "192.0.2.1/24"]}, "virtual_addresses[1]"),
        ({"virtual_addresses": ["192.0.2.1/24", "2001:db8::1/64"]}, "virtual_addresses"),
        ({"unicast_peers": ["nope"]}, "unicast_peers[0]"),
        ({"unicast_peers": ["2001:db8::2"]}, "unicast_peers[0]"),
        ({"unicast_source": "10.0.0.300"}, "unicast_source"),
        ({"garp_count": 101}, "garp_count"),
        ({"garp_refresh": 0.5}, "garp_refresh"),
        ({"interface": "a/b"}, "interface"),
        ({"track_interval": 0.0}, "track_interval"),
    ],
)
def test_problems_name_the_key(kw, path):
    assert path in paths(cfg(**kw))


def test_nested_problems(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text(
        """
[vrrp]
virtual_addresses = [{address = "2001:db8::1/64", interface = "eth1"}]
[vrrp.sync_daemon]
syncid = 300
[[vrrp.track_services]]
service = "web"
min_healthy = 1.5
decrement = 300
[[vrrp.track_interfaces]]
interface = "eth2"
decrement = -1
"""
    )
    with pytest.raises(ValueError) as e:
        load_vrrp_config(str(f))
    assert [part.split(": ")[1].split(" = ")[0] for part in str(e.value).split("; ")] == [
        "vrrp.track_interfaces[0].decrement",
        "vrrp.track_services[0].min_healthy",
        "vrrp.track_services[0].decrement",
        "vrrp.sync_daemon.syncid",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[vrrp]\nadvert_interval = '1 sec'\n", "invalid duration"),
        ("[vrrp]\nprio = 5\n", "vrrp.prio = 5: unknown key"),
        ("[vrrp]\npriority = 'high'\n", 'vrrp.priority = "high": expected int, got str'),
        ("[daemon]\n", "no [vrrp] table"),
        ("[vrrp\n", "invalid TOML"),
    ],
)
def test_load_errors_are_one_line(tmp_path, text, message):
    f = tmp_path / "c.toml"
    f.write_text(text)
    with pytest.raises(ValueError) as e:
        load_vrrp_config(str(f))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_cli_reports_problem_without_traceback(tmp_path, capsys):
    f = tmp_path / "c.toml"
    f.write_text("[vrrp]\nvrid = 0\nvirtual_addresses = ['192.0.2.1/24']\n")
    assert main([str(f)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"pulsed.ha: {f}: vrrp.vrid = 0: must be 1-255"


def test_ipv6_vip_on_its_own_interface(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[vrrp]\nvirtual_addresses = [{address = "2001:db8::1/64", interface = "eth1"}]\n')
    c = load_vrrp_config(str(f))
    assert c.family() == 6
    assert c.vips()[0][1] == "eth1"
