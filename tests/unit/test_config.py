"""Config validation: every problem named with file, key path and value."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pulsed.config import ConfigError, load_config, parse_config
from pulsed.model import AF_INET6, ServiceKey

REPO = Path(__file__).resolve().parents[2]

GOOD = """
[[service]]
name = "web"
vip = "192.0.2.100"
port = 80
scheduler = "wrr"
persistence = "5m"
[[service.real]]
address = "10.0.0.2:80"
weight = 100
[[service.real]]
address = "10.0.0.3"
forwarding = "dr"

[[service]]
name = "marked"
fwmark = 7
family = "ipv6"
[[service.real]]
address = "[fd00::2]:443"
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "test.toml")
    return [str(i) for i in info.value.issues]


def test_valid_config_parses_into_immutable_values():
    config = parse_config(GOOD)
    web, marked = config.service
    assert web.key == ServiceKey.for_address("tcp", "192.0.2.100", 80)
    assert web.persistence == 300
    assert [web.real_endpoint(r) for r in web.real] == [("10.0.0.2", 80), ("10.0.0.3", 80)]
    assert marked.key == ServiceKey.for_fwmark(7, AF_INET6)
    with pytest.raises(AttributeError):
        web.name = "other"


def test_example_config_is_valid():
    config = load_config(REPO / "etc" / "pulsed.toml")
    assert config.service


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ("weight = -5", "test.toml: service[0].real[0].weight = -5: expected int >= 0"),
        (
            'weight = "heavy"',
            'test.toml: service[0].real[0].weight = "heavy": expected int, got str',
        ),
        ("wieght = 3", "test.toml: service[0].real[0].wieght = 3: unknown key"),
        (
            'forwarding = "magic"',
            'test.toml: service[0].real[0].forwarding = "magic": expected one of: nat, dr, tunnel',
        ),
    ],
)
def test_real_server_errors_name_path_and_value(snippet, expected):
    head = '[[service]]\nname="a"\nvip="192.0.2.1"\nport=80\n'
    text = f'{head}[[service.real]]\naddress="10.0.0.1"\n{snippet}\n'
    assert problems(text) == [expected]


def test_all_errors_are_listed_not_just_the_first():
    text = """
bogus = 1
[daemon]
resync_interval = "10x"
[[service]]
name = "web"
vip = "192.0.2.100"
port = 80
scheduler = "fast"
forwarding = "magic"
[[service.real]]
address = "10.0.0.2:80"
[[service.real]]
address = "10.0.0.2:80"
[[service]]
name = "web"
vip = "192.0.2.100"
port = 80
"""
    found = problems(text)
    assert found == [
        "test.toml: bogus: unknown section or key (expected one of: api, bgp, checks, daemon,"
        " hooks, service, vrrp, vrrp_script, vrrp_sync_group)",
        "test.toml: daemon.resync_interval = \"10x\": invalid duration '10x': use a number and a"
        " unit (us ms s m h d), e.g. '250ms', '2s', '1m'",
        'test.toml: service[0].forwarding = "magic": expected one of: nat, dr, tunnel',
        'test.toml: service[0].scheduler = "fast": unknown scheduler (the kernel has: rr wrr lc'
        " wlc lblc lblcr dh sh sed nq mh fo ovf twos)",
        'test.toml: service[0].real[1].address = "10.0.0.2:80": duplicate real server (also'
        " service[0].real[0])",
        'test.toml: service[1].name = "web": duplicate service name (also service[0])',
        'test.toml: service[1] = "web": duplicate service: tcp:192.0.2.100:80 is also service[0]',
    ]


def test_duplicate_fwmark_and_family_mix():
    text = """
[[service]]
name = "a"
fwmark = 3
[[service]]
name = "b"
fwmark = 3
[[service.real]]
address = "[fd00::1]:80"
"""
    assert problems(text) == [
        'test.toml: service[1].real[0].address = "[fd00::1]:80": address family differs from'
        ' the service\'s; the kernel allows that only with forwarding = "tunnel"',
        'test.toml: service[1] = "b": duplicate service: fwmark:3 is also service[0]',
    ]


def test_mixed_family_is_allowed_for_tunnels():
    text = """
[[service]]
name = "a"
vip = "192.0.2.1"
port = 80
forwarding = "tunnel"
[[service.real]]
address = "[fd00::1]:80"
"""
    assert parse_config(text).service[0].real[0].address == "[fd00::1]:80"


def test_invalid_toml_names_line():
    [line] = problems("[[service]\nname=1")
    assert line.startswith("test.toml: invalid TOML:") and "line 1" in line


def test_vip_and_fwmark_are_exclusive_and_vip_needs_port():
    found = problems(
        '[[service]]\nname="a"\nvip="192.0.2.1"\nfwmark=2\n[[service]]\nname="b"\nvip="x"\n'
    )
    assert found == [
        'test.toml: service[0] = "a": give either fwmark, or vip and port, not both',
        'test.toml: service[1].vip = "x": not an IPv4 or IPv6 address',
        "test.toml: service[1].port: required with vip",
    ]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pulsed.cli", *args], capture_output=True, text=True, check=False
    )


def test_check_config_cli_exit_codes_and_json(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text(GOOD)
    bad = tmp_path / "bad.toml"
    bad.write_text('[[service]]\nname="a"\nvip="192.0.2.1"\nport=0\n')
    ok = run_cli("check-config", str(good))
    assert ok.returncode == 0 and "valid (2 services, 3 real servers)" in ok.stdout
    failed = run_cli("check-config", str(bad))
    assert failed.returncode == 2
    assert f"{bad}: service[0].port = 0: expected int >= 1" in failed.stderr
    assert "Traceback" not in failed.stderr
    as_json = json.loads(run_cli("check-config", "--json", str(bad)).stdout)
    assert as_json["errors"] == [
        {"file": str(bad), "path": "service[0].port", "value": 0, "message": "expected int >= 1"}
    ]


def test_missing_file_is_one_clear_line(tmp_path):
    result = run_cli("check-config", str(tmp_path / "nope.toml"))
    assert result.returncode == 2
    assert (
        result.stderr.splitlines()[0]
        == f"{tmp_path / 'nope.toml'}: cannot read: No such file or directory"
    )


def test_reload_cache_reuses_unchanged_services_and_still_checks_across_them():
    from pulsed.config import ParseCache

    cache = ParseCache()
    first = parse_config(GOOD, "test.toml", cache)
    changed = GOOD.replace("weight = 100", "weight = 5")
    second = parse_config(changed, "test.toml", cache)
    assert second.service[1] is first.service[1]  # unchanged: reused as is
    assert second.service[0] is not first.service[0]
    assert second.service[0].real[0].weight == 5
    duplicate = changed + '\n[[service]]\nname = "web"\nvip = "192.0.2.9"\nport = 1\n'
    with pytest.raises(ConfigError, match="duplicate service name"):
        parse_config(duplicate, "test.toml", cache)
    assert parse_config(changed, "test.toml", cache).service[1] is first.service[1]
