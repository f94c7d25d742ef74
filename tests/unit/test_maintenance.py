"""Which real servers a maintenance directory's names hold, and how the table drains them."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from pulsed.config import ConfigError, parse_config
from pulsed.desired import wanted_table
from pulsed.keys import KeyIndex
from pulsed.maintenance import MaintenanceDir, servers_in_maintenance

TEXT = """
[[service]]
name = "web"
vip = "192.0.2.1"
port = 80
[[service.real]]
address = "10.0.0.1:80"
name = "alpha"
[[service.real]]
address = "10.0.0.2:80"
[[service.real]]
address = "[2001:db8::5]:80"
forwarding = "tunnel"

[[service]]
name = "tls"
vip = "192.0.2.1"
port = 443
[[service.real]]
address = "10.0.0.2:443"
"""


@pytest.fixture(scope="module")
def index() -> KeyIndex:
    return KeyIndex(parse_config(TEXT, "t.toml"))


def held(names: set[str], index: KeyIndex) -> list[str]:
    found = servers_in_maintenance(frozenset(names), index, "/m")
    return sorted(f"{k[0].port}/{k[1].address}:{k[1].port}" for k in found)


def test_an_address_and_port_holds_that_endpoint_only(index) -> None:
    assert held({"10.0.0.2:443"}, index) == ["443/10.0.0.2:443"]


def test_an_address_holds_every_port(index) -> None:
    assert held({"10.0.0.2"}, index) == ["443/10.0.0.2:443", "80/10.0.0.2:80"]


def test_ipv6_in_any_spelling(index) -> None:
    assert held({"2001:db8:0:0::5"}, index) == ["80/2001:db8::5:80"]
    assert held({"[2001:db8::5]:80"}, index) == ["80/2001:db8::5:80"]


def test_a_name_holds_the_servers_of_that_name(index) -> None:
    assert held({"alpha"}, index) == ["80/10.0.0.1:80"]
    assert held({"beta", "10.0.0.9"}, index) == []


def test_the_reason_names_the_file(index) -> None:
    found = servers_in_maintenance(frozenset({"alpha"}), index, "/etc/pulsed/maintenance")
    assert list(found.values()) == ["maintenance file /etc/pulsed/maintenance/alpha"]


def test_a_server_in_maintenance_is_drained_not_removed(index) -> None:
    config = index.config
    key = index.services[0].reals[1]
    wanted = wanted_table(config, assume_healthy=True, index=index, maintenance={key: "file"})
    weights = {(d.address, d.port): d.weight for s in wanted.table for d in s.dests}
    assert weights[("10.0.0.2", 80)] == 0  # in the table, no new connections
    assert weights[("10.0.0.1", 80)] == 1 and weights[("10.0.0.2", 443)] == 1
    again = wanted_table(config, assume_healthy=True, index=index)
    assert {d.weight for s in again.table for d in s.dests} == {1}


def test_an_unreadable_directory_keeps_the_last_names_with_one_warning(tmp_path, index) -> None:
    directory = tmp_path / "m"
    directory.mkdir()
    (directory / "alpha").touch()
    (directory / ".alpha.swp").touch()
    maintenance = MaintenanceDir(str(directory))
    assert maintenance.read() == {"alpha"}
    directory.rename(tmp_path / "gone")
    with capture_logs() as logs:
        assert maintenance.read() == {"alpha"}
        assert len(maintenance.held(index)) == 1
    assert [e["event"] for e in logs] == ["maintenance.unreadable"]
    (tmp_path / "gone").rename(directory)
    (directory / "alpha").unlink()
    with capture_logs() as logs:
        assert maintenance.held(index) == {}
    assert [e["event"] for e in logs] == ["maintenance.readable"]


@pytest.mark.parametrize(
    ("value", "message"),
    [("relative/dir", "give an absolute path"), ("/nonexistent/m", "does not exist")],
)
def test_check_config_wants_an_existing_absolute_directory(value, message) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(f'[checks]\nmaintenance_dir = "{value}"\n' + TEXT, "t.toml")
    assert [str(i) for i in info.value.issues] == [
        f't.toml: checks.maintenance_dir = "{value}": {message}'
    ]


def test_check_config_refuses_a_file_for_a_directory(tmp_path) -> None:
    path = tmp_path / "file"
    path.touch()
    with pytest.raises(ConfigError, match="is not a directory"):
        parse_config(f'[checks]\nmaintenance_dir = "{path}"\n' + TEXT, "t.toml")
