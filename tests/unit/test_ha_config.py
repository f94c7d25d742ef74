"""The [vrrp] table: defaults, decoding, semantic problems with key paths, one-line errors."""

import pytest

from pulsed.ha.__main__ import load_vrrp_config, main
from pulsed.ha.config import (
    TrackInterface,
    TrackService,
    VirtualAddress,
    VrrpAuth,
    VrrpConfig,
    vrrp_problems,
)
from tests.support.vrrp_config import vrrp_config


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


# ---- what check-config accepts must run (issue 12): files, addresses, ranges


def keyfile(tmp_path, data=b"0123456789abcdef0123456789abcdef\n", mode=0o600):
    f = tmp_path / "vrrp.key"
    f.write_bytes(data)
    f.chmod(mode)
    return str(f)


def key_problem(path):
    return [
        m for p, _, m in vrrp_problems(cfg(auth=VrrpAuth(key_file=path))) if p == "auth.key_file"
    ]


def test_good_key_file_passes(tmp_path):
    assert key_problem(keyfile(tmp_path)) == []


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: str(d / "missing"), "No such file"),
        (lambda d: str(d), "is a directory"),
        (lambda d: keyfile(d, mode=0o644), "open to others"),
        (lambda d: keyfile(d, mode=0o640), "open to others"),
        (lambda d: keyfile(d, data=b"short\n"), "at least 16"),
        (lambda d: keyfile(d, data=b"   \n"), "at least 16"),
        (lambda d: keyfile(d, data=b"x" * 5000), "at most"),
        (lambda d: keyfile(d, mode=0o000), "permission denied"),
    ],
)
def test_bad_key_file_is_one_line_problem(tmp_path, make, message):
    import os

    path = make(tmp_path)
    if message == "permission denied" and os.geteuid() == 0:
        pytest.skip("root reads any file")
    (problem,) = key_problem(path)
    assert message in problem and "\n" not in problem


def test_fifo_key_file_is_refused_without_blocking(tmp_path):
    import os

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    (problem,) = key_problem(str(fifo))
    assert "FIFO" in problem


@pytest.mark.parametrize(
    ("kw", "path"),
    [
        ({"virtual_addresses": ["fe80::1%lo/64"]}, "virtual_addresses[0]"),
        (
            {"virtual_addresses": [VirtualAddress(address="fe80::1%eth0/64")]},
            "virtual_addresses[0].address",
        ),
        ({"virtual_addresses": ["224.0.0.5/24"]}, "virtual_addresses[0]"),
        ({"virtual_addresses": ["0.0.0.0/24"]}, "virtual_addresses[0]"),
        ({"virtual_addresses": ["127.0.0.5/8"]}, "virtual_addresses[0]"),
        (
            {"virtual_addresses": ["2001:db8::1/64"], "unicast_peers": ["fe80::2%eth0"]},
            "unicast_peers[0]",
        ),
        (
            {"virtual_addresses": ["2001:db8::1/64"], "unicast_source": "fe80::1%eth0"},
            "unicast_source",
        ),
        ({"unicast_peers": ["224.0.0.18"]}, "unicast_peers[0]"),
        ({"unicast_peers": ["0.0.0.0"]}, "unicast_peers[0]"),
        ({"unicast_peers": ["10.0.0.2", "10.0.0.2"]}, "unicast_peers[1]"),
        (
            {"unicast_peers": [f"10.0.{i // 250}.{i % 250 + 1}" for i in range(256)]},
            "unicast_peers",
        ),
        ({"unicast_source": " 10.0.0.1"}, "unicast_source"),
        ({"track_interfaces": [TrackInterface(interface="eth1")] * 256}, "track_interfaces"),
        ({"advert_interval": float("inf")}, "advert_interval"),
        ({"preempt_delay": float("inf")}, "preempt_delay"),
        ({"garp_interval": float("inf")}, "garp_interval"),
        ({"garp_refresh": float("inf")}, "garp_refresh"),
        ({"garp_refresh": 86401.0}, "garp_refresh"),
        ({"track_interval": float("inf")}, "track_interval"),
        (
            {"track_services": [TrackService(service="web", min_healthy=float("nan"))]},
            "track_services[0].min_healthy",
        ),
    ],
)
def test_addresses_and_ranges_the_code_cannot_live_with(kw, path):
    assert path in paths(cfg(**kw))


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ("advert_interval = '" + "9" * 400 + "s'", "vrrp.advert_interval"),
        ("preempt_delay = '" + "9" * 400 + "ms'", "vrrp.preempt_delay"),
        ("garp_interval = '" + "9" * 400 + "ms'", "vrrp.garp_interval"),
        ("garp_refresh = '" + "9" * 400 + "h'", "vrrp.garp_refresh"),
        ("track_interval = '" + "9" * 400 + "us'", "vrrp.track_interval"),
        ("virtual_addresses = ['fe80::1%lo/64']", "vrrp.virtual_addresses[0]"),
    ],
)
def test_overflowing_values_give_one_line(tmp_path, line, key):
    f = tmp_path / "c.toml"
    text = "[vrrp]\nvirtual_addresses = ['192.0.2.1/24']\n"
    if line.startswith("virtual_addresses"):
        text = "[vrrp]\n"
    f.write_text(text + line + "\n")
    with pytest.raises(ValueError) as e:
        load_vrrp_config(str(f))
    assert key in str(e.value) and "\n" not in str(e.value)


def test_max_clock_skew_is_deprecated_but_still_loads(tmp_path):
    f = tmp_path / "c.toml"
    key = keyfile(tmp_path)
    f.write_text(
        f"[vrrp]\nvirtual_addresses = ['192.0.2.1/24']\n"
        f"[vrrp.auth]\nkey_file = '{key}'\nmax_clock_skew = '30s'\n"
    )
    c = load_vrrp_config(str(f))
    assert vrrp_problems(c) == []


def test_prepare_reads_the_key_before_anything_runs(tmp_path):
    from pulsed.ha.node import PreparedVrrp, VrrpSetupError, prepare_vrrp

    good = vrrp_config(virtual_addresses=["192.0.2.10/24"], auth={"key_file": keyfile(tmp_path)})
    prepared = prepare_vrrp(good, check_socket=False)
    assert isinstance(prepared, PreparedVrrp) and prepared.auth is not None
    plain = vrrp_config(virtual_addresses=["192.0.2.10/24"])
    assert prepare_vrrp(plain, check_socket=False).auth is None
    # The key went bad between check-config and the swap: one line, nothing started.
    (tmp_path / "vrrp.key").chmod(0o644)
    with pytest.raises(VrrpSetupError) as e:
        prepare_vrrp(good, check_socket=False)
    assert "vrrp.auth.key_file" in str(e.value) and "\n" not in str(e.value)


async def test_prepare_async_is_off_the_loop(tmp_path):
    from pulsed.ha.node import VrrpSetupError, prepare_vrrp_async

    good = vrrp_config(virtual_addresses=["192.0.2.10/24"], auth={"key_file": keyfile(tmp_path)})
    prepared = await prepare_vrrp_async(good, check_socket=False)
    assert prepared.auth is not None
    # The key is gone by the time the node is prepared (it was there when the config loaded).
    (tmp_path / "vrrp.key").unlink()
    with pytest.raises(VrrpSetupError, match="No such file"):
        await prepare_vrrp_async(good, check_socket=False)


def test_cli_refuses_a_missing_key_in_one_line(tmp_path, capsys):
    f = tmp_path / "c.toml"
    f.write_text(
        f"[vrrp]\nvirtual_addresses = ['192.0.2.1/24']\n[vrrp.auth]\nkey_file = '{tmp_path}/none'\n"
    )
    assert main([str(f)]) == 2
    err = capsys.readouterr().err.strip()
    assert "vrrp.auth.key_file" in err and "No such file" in err and "\n" not in err
