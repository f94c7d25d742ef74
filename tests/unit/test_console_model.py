"""Pure parts behind the console: config lines, config history, rates, health history."""

from __future__ import annotations

import json
import os

from pulsed.checks.state import RealHealth
from pulsed.config_lines import issue_line, line_index
from pulsed.config_store import ConfigHistory, digest, write_atomically
from pulsed.health_history import HealthHistory
from pulsed.model import Dest, DestKey, RealKey, Service, ServiceKey, Stats, Table
from pulsed.rates import RateTracker, dest_rates, service_rates

CONFIG = """[api]
listen = "127.0.0.1:9480"
bogus = 1

[[service]]
name = "web"
vip = "192.0.2.1"
port = 80
[service.check]
type = "tcp"
[[service.real]]
address = "10.0.0.1:80"
[[service.real]]
address = "10.0.0.2:80"
weight = -3
headers = [
  "[not a header]",
]

[[service]]
name = "x"
port = 70000
"""


def test_issue_lines_follow_tables_and_arrays_of_tables():
    index = line_index(CONFIG)
    assert issue_line(CONFIG, "api.bogus", index=index) == 3
    assert issue_line(CONFIG, "service[0].check.type", index=index) == 10
    assert issue_line(CONFIG, "service[0].real[1].weight", index=index) == 15
    assert issue_line(CONFIG, "service[1].port", index=index) == 22
    # Not in the file (a default): the nearest enclosing table.
    assert issue_line(CONFIG, "service[1].real[0].weight", index=index) == 20
    assert issue_line(CONFIG, "", "invalid TOML: Expected '=' (at line 7, column 3)") == 7
    assert issue_line(CONFIG, "") is None


def test_history_keeps_the_last_n_and_audits(tmp_path):
    history = ConfigHistory(tmp_path / "h", keep=2)
    for n in range(3):
        history.save(f"# {n}\n", "apply", "token@127.0.0.1")
    entries = history.entries()
    assert [e.id for e in entries] == [3, 2]
    assert history.text(1) is None and history.text(3) == "# 2\n"
    assert entries[0].digest == digest(b"# 2\n")
    history.audit({"action": "apply", "who": "token@127.0.0.1", "diff": "-a\n+b\n"})
    (record,) = history.audit_records()
    assert record["diff"] == "-a\n+b\n" and record["time"] > 0
    assert oct((tmp_path / "h" / "audit.log").stat().st_mode & 0o777) == "0o600"


def test_atomic_write_keeps_the_mode(tmp_path):
    path = tmp_path / "pulsed.toml"
    path.write_text("old")
    os.chmod(path, 0o640)
    write_atomically(path, "new")
    assert path.read_text() == "new"
    assert path.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["pulsed.toml"]  # no temporary left


def _table(conns: int, nbytes: int) -> Table:
    key = ServiceKey(2, "tcp", "192.0.2.1", 80)
    dest = Dest("10.0.0.1", 80, stats=Stats(connections=conns, bytes_in=nbytes))
    return Table.of([Service(key, dests=(dest,), stats=Stats(connections=conns, bytes_in=nbytes))])


def test_rates_come_from_two_readings_with_different_counters():
    tracker = RateTracker()
    key = ServiceKey(2, "tcp", "192.0.2.1", 80)
    tracker.update(_table(100, 1000), 10.0)
    assert service_rates(tracker.samples, key) is None  # one reading only
    tracker.update(_table(100, 1000), 11.0)  # same counters: not a new reading
    tracker.update(_table(150, 3000), 12.0)
    rates = service_rates(tracker.samples, key)
    assert rates is not None and (rates.connections, rates.bytes_in) == (25.0, 1000.0)
    dest = dest_rates(tracker.samples, key)[DestKey("10.0.0.1", 80)]
    assert dest is not None and dest.connections == 25.0
    tracker.update(_table(5, 10), 13.0)  # counters reset (service re-added): no rate
    assert service_rates(tracker.samples, key) is None


def test_health_history_records_state_changes_newest_first():
    key: RealKey = (ServiceKey(2, "tcp", "192.0.2.1", 80), DestKey("10.0.0.1", 80))
    history = HealthHistory(keep=2)
    pending = RealHealth(up=False)
    down = RealHealth(up=False, last_ok=False, reason="connect refused", last_check=5.0)
    up = RealHealth(up=True, last_ok=True, reason="connected", last_transition=9.0)
    assert history.view({key: pending}, 1.0) == {}
    assert [t.state for t in history.view({key: down}, 6.0)[key]] == ["down"]
    history.record(key, up, 9.0)
    history.record(key, up, 10.0)  # no change of state: not a transition
    history.record(key, down, 11.0)
    got = history.view({key: down}, 12.0)[key]
    assert [(t.state, t.reason) for t in got] == [("down", "connect refused"), ("up", "connected")]
    assert json.dumps([t.at for t in got])


def test_a_history_view_does_not_change_under_its_reader():
    key: RealKey = (ServiceKey(2, "tcp", "192.0.2.1", 80), DestKey("10.0.0.1", 80))
    history = HealthHistory()
    up = RealHealth(up=True, last_ok=True, reason="connected", last_transition=9.0)
    down = RealHealth(up=False, last_ok=False, reason="connect refused", last_transition=11.0)
    before = history.view({key: up}, 10.0)
    history.record(key, down, 11.0)
    assert [t.state for t in before[key]] == ["up"]  # the snapshot taken before the change
    assert [t.state for t in history.view({key: down}, 12.0)[key]] == ["down", "up"]
    again = history.view({key: down}, 13.0)
    assert dict(again) == dict(history.view({key: down}, 14.0))  # no change, the same map
