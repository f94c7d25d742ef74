"""pulsed import: keepalived, ldirectord and piranha configs into TOML that passes check-config."""

from __future__ import annotations

import subprocess
import sys
import typing
from pathlib import Path

import pytest
import tomli

from pulsed.checks.config import CheckType
from pulsed.config import Config, parse_config
from pulsed.importers.emit import Table, render, string_text
from pulsed.importers.run import import_config

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "import"
SAMPLES = Path("/usr/share/doc/keepalived/samples")
LDIRECTORD_EXAMPLE = Path("/usr/share/doc/ldirectord/examples/ldirectord.cf")

# The probe types and placement keys of issue 17 (docs in /work/wt/PROBES.md): until they
# land, check-config refuses them and the import leaves them out (and says so).
NEW_PROBES = "dns" in typing.get_args(CheckType)
needs_new_probes = pytest.mark.skipif(
    not NEW_PROBES, reason="needs the dns/smtp/udp/icmp probes and placement keys (issue 17)"
)
needs_checks_table = pytest.mark.skipif(
    "checks" not in Config.__struct_fields__,
    reason="needs [checks] maintenance_dir (issue 17, placement)",
)


def imported(kind: str, path: Path, config_id: str = "lb1") -> tuple[dict, list[str]]:
    result = import_config(kind, str(path), config_id)
    parse_config(result.text, "<test>")  # what the import writes always passes check-config
    return tomli.loads(result.text), result.report.lines()


def service(doc: dict, name: str) -> dict:
    return next(s for s in doc["service"] if s["name"] == name)


# -- keepalived ---------------------------------------------------------------------------


def test_keepalived_services_and_real_servers() -> None:
    doc, _lines = imported("keepalived", FIXTURES / "keepalived.conf")
    web = service(doc, "192.0.2.100:80")
    assert web["scheduler"] == "wrr"
    assert web["persistence"] == "300s" and web["persistence_netmask"] == 24
    assert web["sorry_server"] == "10.0.0.250:80"
    assert web["on_failure"] == "quiesce"  # every real server has inhibit_on_failure
    assert web["check"]["initial_state"] == "down"  # alpha
    assert web["check"]["interval"] == "3s" and web["check"]["timeout"] == "2s"
    http, tcp = web["real"]
    assert http["weight"] == 3
    assert http["check"]["type"] == "http" and http["check"]["path"] == "/health"
    assert http["check"]["expect_status"] == ["200", "204"]
    assert http["check"]["fall"] == 3  # retry 2: down after the third failure
    assert tcp["check"] == {"type": "tcp", "port": 8080, "fall": 2}


def test_keepalived_lowercase_lb_kind_stays_nat_like_keepalived_and_warns() -> None:
    doc, lines = imported("keepalived", FIXTURES / "keepalived.conf")
    assert service(doc, "192.0.2.100:80")["forwarding"] == "nat"
    assert service(doc, "192.0.2.100:80")["sorry_forwarding"] == "nat"
    (warning,) = [line for line in lines if "lb_kind dr" in line]
    assert warning.startswith(f"{FIXTURES / 'keepalived.conf'}:53: ")
    assert "probably meant DR" in warning
    (algo,) = [line for line in lines if "lb_algo RR" in line]
    assert "keeps wlc" in algo and "probably meant rr" in algo
    assert service(doc, "192.0.2.53:53")["scheduler"] == "wlc"


def test_keepalived_include_macros_and_conditional_lines() -> None:
    doc, _ = imported("keepalived", FIXTURES / "keepalived.conf", config_id="lb1")
    assert service(doc, "192.0.2.53:53")["protocol"] == "udp"  # from conf.d/dns.conf
    (vrrp,) = doc["vrrp"]
    assert vrrp["priority"] == 150
    other, _ = imported("keepalived", FIXTURES / "keepalived.conf", config_id="lb2")
    assert other["vrrp"][0]["priority"] == 90


def test_keepalived_vrrp() -> None:
    doc, lines = imported("keepalived", FIXTURES / "keepalived.conf")
    (vrrp,) = doc["vrrp"]
    assert vrrp["version"] == 3 and vrrp["vrid"] == 51
    assert vrrp["initial_state"] == "master" and vrrp["preempt"] is False
    assert vrrp["virtual_addresses"] == [
        {"address": "192.0.2.100/24", "interface": "eth0"},
        "198.51.100.7/32",
    ]
    assert vrrp["unicast_peers"] == ["10.0.0.2"] and vrrp["unicast_source"] == "10.0.0.1"
    assert vrrp["track_interfaces"] == [{"interface": "eth1", "decrement": 30}]
    assert vrrp["notify_master"] == ["/bin/echo", "master"]
    assert doc["vrrp_script"][0]["command"] == ["/bin/true", "--quiet"]
    assert doc["vrrp_sync_group"][0]["instances"] == ["VI_1"]
    assert any(":28: label eth0:vip" in line for line in lines)


def test_keepalived_untranslated_parts_are_listed_with_their_lines() -> None:
    result = import_config("keepalived", str(FIXTURES / "keepalived.conf"), "lb1")
    assert not result.report.complete
    where = str(FIXTURES / "keepalived.conf")
    lines = result.report.lines()
    assert f"{where}:67: digest: not translated" in "\n".join(lines)
    assert any(line.startswith(f"{where}:59: quorum") for line in lines)
    assert any(line.startswith(f"{where}:69: url") for line in lines)
    # ... and noted in the TOML as comments
    assert "# Not translated" in result.text and "digest" in result.text


@needs_new_probes
def test_keepalived_dns_check_and_placement() -> None:
    doc, _ = imported("keepalived", FIXTURES / "keepalived.conf")
    check = service(doc, "192.0.2.53:53")["check"]
    assert check["type"] == "dns"
    assert check["query_name"] == "example.org." and check["query_type"] == "A"
    assert check["address"] == "10.0.1.20" and check["bind_address"] == "10.0.0.1"
    assert check["retry_interval"] == "1s"


def test_keepalived_state_in_lower_case_is_ignored_as_keepalived_does(tmp_path: Path) -> None:
    conf = tmp_path / "k.conf"
    conf.write_text(
        "vrrp_instance A {\n state master\n interface eth0\n virtual_router_id 9\n"
        " virtual_ipaddress {\n 192.0.2.9\n }\n}\n"
    )
    doc, lines = imported("keepalived", conf)
    assert "initial_state" not in doc["vrrp"][0]
    assert any("probably meant MASTER" in line for line in lines)
    assert doc["vrrp"][0]["version"] == 2  # keepalived's default


@pytest.mark.skipif(not SAMPLES.is_dir(), reason="Debian's keepalived samples are not installed")
@pytest.mark.parametrize(
    "name", sorted(p.name for p in SAMPLES.glob("keepalived.conf.*")) if SAMPLES.is_dir() else []
)
def test_every_debian_sample_imports_into_a_valid_config(name: str) -> None:
    imported("keepalived", SAMPLES / name)


# -- ldirectord ---------------------------------------------------------------------------


def test_ldirectord_virtual_blocks() -> None:
    doc, lines = imported("ldirectord", FIXTURES / "ldirectord.cf")
    web = service(doc, "192.0.2.10:80")
    assert web["scheduler"] == "wlc" and web["persistence"] == "600s"
    assert web["persistence_netmask"] == 24 and web["on_failure"] == "quiesce"
    assert web["sorry_server"] == "127.0.0.1:80" and web["sorry_forwarding"] == "dr"
    assert [r["address"] for r in web["real"]] == ["10.0.0.2:80", "10.0.0.3:80", "10.0.0.4:80"]
    assert web["forwarding"] == "nat"  # two of three real servers are masq
    assert web["real"][0]["forwarding"] == "dr" and web["real"][0]["weight"] == 5
    check = web["check"]
    assert check["type"] == "http" and check["path"] == "/health"
    assert check["body_regex"] == "OK" and check["port"] == 8080
    assert check["interval"] == "5s" and check["timeout"] == "3s" and check["fall"] == 3
    assert any(":6: autoreload: not translated" in line for line in lines)


@needs_new_probes
def test_ldirectord_dns_negotiate() -> None:
    doc, _ = imported("ldirectord", FIXTURES / "ldirectord.cf")
    check = service(doc, "192.0.2.10:53")["check"]
    assert check["type"] == "dns" and check["query_name"] == "example.org"


@needs_checks_table
def test_ldirectord_maintenancedir(tmp_path: Path) -> None:
    # check-config wants the directory to exist, as it does on the router being migrated.
    (tmp_path / "maintenance").mkdir()
    source = (FIXTURES / "ldirectord.cf").read_text()
    copy = tmp_path / "ldirectord.cf"
    copy.write_text(source.replace("/etc/ha.d/maintenance", str(tmp_path / "maintenance")))
    doc, _ = imported("ldirectord", copy)
    assert doc["checks"]["maintenance_dir"] == str(tmp_path / "maintenance")


def test_ldirectord_missing_maintenancedir_is_left_out_with_its_line() -> None:
    doc, lines = imported("ldirectord", FIXTURES / "ldirectord.cf")
    assert "maintenance_dir" not in doc.get("checks", {})
    assert any("maintenance_dir" in line for line in lines), lines


@pytest.mark.skipif(not LDIRECTORD_EXAMPLE.exists(), reason="ldirectord is not installed")
def test_ldirectord_debian_example() -> None:
    doc, _ = imported("ldirectord", LDIRECTORD_EXAMPLE)
    (web,) = doc["service"]
    assert web["forwarding"] == "dr" and web["scheduler"] == "rr"
    assert web["check"]["host"] == "www.x.y.z" and web["check"]["path"] == "/index.html"


# -- piranha ------------------------------------------------------------------------------


def test_piranha_lvs_cf() -> None:
    doc, lines = imported("piranha", FIXTURES / "lvs.cf")
    (web,) = doc["service"]  # "off" has active = 0
    assert web["vip"] == "192.0.2.80" and web["port"] == 80
    assert web["forwarding"] == "dr" and web["scheduler"] == "wrr"
    assert web["persistence"] == "60s"
    assert [r["address"] for r in web["real"]] == ["10.0.0.11:80"]  # web2 is inactive
    assert web["real"][0]["weight"] == 2
    assert web["check"]["interval"] == "2s" and web["check"]["fall"] == 3
    assert web["check"]["rise"] == 5
    (vrrp,) = doc["vrrp"]
    assert vrrp["unicast_peers"] == ["10.0.0.2"] and vrrp["unicast_source"] == "10.0.0.1"
    assert vrrp["virtual_addresses"] == [{"address": "192.0.2.80/24", "interface": "eth0"}]
    assert any(":7: heartbeat_port" in line for line in lines)


@pytest.mark.skipif(
    "send_expect" not in typing.get_args(CheckType), reason="needs the send_expect probe (issue 17)"
)
def test_piranha_send_expect() -> None:
    doc, _ = imported("piranha", FIXTURES / "lvs.cf")
    assert doc["service"][0]["check"]["steps"] == [
        {"send": "GET / HTTP/1.0\r\n\r\n", "expect": "^HTTP"}
    ]


# -- the command --------------------------------------------------------------------------


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pulsed.cli", "import", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )


def test_exit_codes_and_output_file(tmp_path: Path) -> None:
    out = tmp_path / "out.toml"
    partial = run("keepalived", str(FIXTURES / "keepalived.conf"), "-o", str(out))
    assert partial.returncode == 1, partial.stderr
    assert "Traceback" not in partial.stderr and partial.stdout == ""
    assert all(line.startswith(str(FIXTURES)) for line in partial.stderr.splitlines())
    check = subprocess.run(
        [sys.executable, "-m", "pulsed.cli", "check-config", str(out)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert check.returncode == 0, check.stderr
    complete = tmp_path / "complete.conf"
    complete.write_text(
        "virtual_server 192.0.2.1 80 {\n lb_algo rr\n lb_kind NAT\n protocol TCP\n"
        " real_server 10.0.0.2 80 {\n  weight 1\n }\n}\n"
    )
    ok = run("keepalived", str(complete))
    assert ok.returncode == 0, ok.stderr
    assert ok.stderr == "" and 'type = "none"' in ok.stdout
    missing = run("ldirectord", str(tmp_path / "nope.cf"))
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
    assert "Traceback" not in missing.stderr


# -- the writer ---------------------------------------------------------------------------


def test_strings_round_trip_through_tomli() -> None:
    for text in ['a"b\\c', "tab\there\nnl", "\x00\x1f\x7f", "é ☃ 𝄞", "\ud800"]:
        parsed = tomli.loads(f"k = {string_text(text)}\n")["k"]
        assert parsed == text.replace("\ud800", "\ufffd")


def test_comments_cannot_break_the_document() -> None:
    root = Table(values={"service": []}, notes=["line\nbreak\r[[service]]"])
    assert tomli.loads(render(root, header=["x\ny"])) == {"service": []}
