"""Which notify commands and FIFO lines an event calls for (keepalived's conventions)."""

from __future__ import annotations

from pulsed.config import parse_config
from pulsed.event_hooks import real_event, role_event
from pulsed.model import DestKey


class Recorder:
    def __init__(self) -> None:
        self.runs: list[tuple[list[str], tuple[str, ...]]] = []
        self.lines: list[str] = []

    def run(self, argv, extra=()) -> None:
        self.runs.append((list(argv), tuple(extra)))

    def event_line(self, line: str) -> None:
        self.lines.append(line)


CONFIG = parse_config(
    '[[vrrp]]\nname = "VI_1"\ninterface = "eth0"\nvirtual_addresses = ["192.0.2.1/24"]\n'
    'notify_master = ["/bin/true", "m"]\nnotify = ["/bin/echo"]\n'
    '[[vrrp_sync_group]]\nname = "G1"\ninstances = ["VI_1"]\nnotify_fault = ["/bin/true"]\n'
    '[[service]]\nname = "web"\nvip = "192.0.2.100"\nport = 80\n'
    '[[service.real]]\naddress = "10.0.0.2:80"\nnotify_down = ["/bin/true", "d"]\n'
)


def test_an_instance_becoming_master_runs_its_commands_and_writes_a_line():
    r = Recorder()
    role_event(r, "INSTANCE", "VI_1", CONFIG.vrrp[0], "master", 150)
    assert r.runs == [
        (["/bin/true", "m"], ()),
        (["/bin/echo"], ("INSTANCE", "VI_1", "MASTER", "150")),
    ]
    assert r.lines == ['INSTANCE "VI_1" MASTER 150']


def test_a_group_in_fault_and_a_stop():
    r = Recorder()
    role_event(r, "GROUP", "G1", CONFIG.vrrp_sync_group[0], "fault", None)
    role_event(r, "INSTANCE", "VI_1", CONFIG.vrrp[0], "stop", 0)
    role_event(r, "INSTANCE", "VI_1", CONFIG.vrrp[0], "init", 0)  # not an event
    assert r.runs == [(["/bin/true"], ()), (["/bin/echo"], ("INSTANCE", "VI_1", "STOP", "0"))]
    assert r.lines == ['GROUP "G1" FAULT', 'INSTANCE "VI_1" STOP 0']


def test_a_real_server_going_down_runs_notify_down_with_its_names():
    r = Recorder()
    real = CONFIG.service[0].real[0]
    real_event(r, "web", real, DestKey("10.0.0.2", 80), up=False)
    real_event(r, "web", real, DestKey("10.0.0.2", 80), up=True)  # no notify_up: a line only
    assert r.runs == [(["/bin/true", "d"], ("web", "10.0.0.2:80"))]
    assert r.lines == ['RS "web" 10.0.0.2:80 DOWN', 'RS "web" 10.0.0.2:80 UP']
