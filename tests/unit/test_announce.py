"""Route health injection: the pure decision, the [bgp] config, the FRR output
parsers, the canonical mh order and the pool digest."""

from __future__ import annotations

import itertools
import time

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pulsed.announce.decide import VipService, decide, decide_vip, services_by_vip
from pulsed.announce.frr import parse_bfd, parse_summary
from pulsed.config import ConfigError, parse_config
from pulsed.durations import Duration
from pulsed.ipvs.memory import MemoryBackend
from pulsed.model import Dest, Service, ServiceKey, Table
from pulsed.pool_digest import pool_digest
from pulsed.reconcile import diff

WEB = VipService("web", ServiceKey.for_address("tcp", "192.0.2.10", 80))
TLS = VipService("tls", ServiceKey.for_address("tcp", "192.0.2.10", 443))
KERNEL = {WEB.key, TLS.key}

# --- decision -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("healthy", "kernel", "ready", "drained", "announce", "reason"),
    [
        ({"web": 1.0, "tls": 1.0}, KERNEL, True, False, True, "all 2 services can serve"),
        ({"web": 0.5, "tls": 1.0}, KERNEL, True, False, True, "lowest 50%"),
        ({"web": 0.4, "tls": 1.0}, KERNEL, True, False, False, "40% healthy, below 50%"),
        ({"web": 0.0, "tls": 1.0}, KERNEL, True, False, False, "no healthy real server"),
        ({"tls": 1.0}, KERNEL, True, False, False, "web: no real servers"),
        ({"web": 1.0, "tls": 1.0}, {WEB.key}, True, False, False, "tls: not in the kernel"),
        ({"web": 1.0, "tls": 1.0}, KERNEL, False, False, False, "starting"),
        ({"web": 1.0, "tls": 1.0}, KERNEL, True, True, False, "drained"),
    ],
)
def test_decide_vip(healthy, kernel, ready, drained, announce, reason):
    d = decide_vip("192.0.2.10", [WEB, TLS], 0.5, healthy, kernel, ready=ready, drained=drained)
    assert d.announce is announce
    assert reason in d.reason


def test_a_vip_without_services_is_never_announced():
    assert not decide_vip("192.0.2.10", [], 0.5, {}, KERNEL).announce


shares = st.one_of(st.none(), st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]))


@given(
    web=shares,
    tls=shares,
    in_kernel=st.sets(st.sampled_from([WEB.key, TLS.key])),
    threshold=st.sampled_from([0.01, 0.25, 0.5, 1.0]),
    ready=st.booleans(),
    drained=st.booleans(),
)
def test_announced_exactly_when_every_service_can_serve(
    web, tls, in_kernel, threshold, ready, drained
):
    healthy = {n: v for n, v in (("web", web), ("tls", tls)) if v is not None}
    d = decide_vip("v", [WEB, TLS], threshold, healthy, in_kernel, ready=ready, drained=drained)
    can_serve = all(
        svc.key in in_kernel and share is not None and share > 0 and share >= threshold
        for svc, share in ((WEB, web), (TLS, tls))
    )
    assert d.announce is (can_serve and ready and not drained)
    assert d.reason and "\n" not in d.reason


def test_decide_keeps_config_order_and_per_vip_thresholds():
    other = VipService("dns", ServiceKey.for_address("udp", "192.0.2.11", 53))
    by_vip = services_by_vip(
        [(s.name, s.key, s.key.address) for s in (WEB, TLS, other)]
        + [("mark", ServiceKey.for_fwmark(1), None)]
    )
    out = decide(
        {"192.0.2.11": 1.0, "192.0.2.10": 0.5},
        by_vip,
        {"web": 0.5, "tls": 0.5, "dns": 0.5},
        KERNEL | {other.key},
    )
    assert [(d.vip, d.announce) for d in out] == [("192.0.2.11", False), ("192.0.2.10", True)]


# --- config ---------------------------------------------------------------------------

BASE = """
[[service]]
name = "web"
vip = "192.0.2.10"
port = 80
[[service.real]]
address = "10.0.0.1"
"""


def problems(text: str) -> list[str]:
    try:
        parse_config(text, "t.toml")
    except ConfigError as exc:
        return [str(i) for i in exc.issues]
    return []


def test_bgp_config_accepted_and_absent_by_default():
    assert parse_config(BASE).bgp is None
    cfg = parse_config('[bgp]\nvips = ["192.0.2.10"]\n' + BASE)
    assert cfg.bgp is not None and cfg.bgp.vip_thresholds() == {"192.0.2.10": 0.5}


@pytest.mark.parametrize(
    ("bgp", "message"),
    [
        ('vips = ["192.0.2.99"]', 'bgp.vips[0] = "192.0.2.99": no service has this VIP'),
        ('vips = ["192.0.2.10/32"]', "not an IPv4 or IPv6 address"),
        ('vips = ["192.0.2.10", "192.0.2.10"]', "listed twice"),
        ("vips = []", "name the VIPs"),
        ('vips = ["192.0.2.10"]\nmin_healthy = 0.0', "bgp.min_healthy = 0.0: must be more"),
        ('vips = ["192.0.2.10"]\nmin_healthy = 1.5', "bgp.min_healthy"),
        ('vips = [{address = "192.0.2.10", min_healthy = -1.0}]', "bgp.vips[0].min_healthy"),
        ('vips = ["192.0.2.10"]\npoll_interval = "10ms"', "bgp.poll_interval"),
        ('vips = ["192.0.2.10"]\ncommand_timeout = "2m"', "bgp.command_timeout"),
        ('vips = ["192.0.2.10"]\ninterface = "a/b"', "bgp.interface"),
        ('vips = ["192.0.2.10"]\nvtysh = "vtysh"', "bgp.vtysh"),
        ('vips = ["192.0.2.10"]\ndaemon = "bird"', "bgp.daemon"),
        ('vips = ["192.0.2.10"]\nbogus = 1', "bgp.bogus"),
    ],
)
def test_bgp_config_problems(bgp, message):
    found = problems(f"[bgp]\n{bgp}\n" + BASE)
    assert any(message in line for line in found), found


def test_a_vip_held_by_vrrp_and_bgp_is_refused():
    text = (
        '[bgp]\nvips = ["192.0.2.10"]\n'
        '[vrrp]\ninterface = "lo"\nvirtual_addresses = ["192.0.2.10/32"]\n' + BASE
    )
    found = problems(text)
    assert any("also a VIP of vrrp" in line and "not both" in line for line in found), found


# --- FRR output -----------------------------------------------------------------------


def test_parse_frr_summary_and_bfd():
    summary = {
        "ipv4Unicast": {
            "peers": {
                "10.0.0.1": {"state": "Established", "peerUptimeMsec": 5000, "pfxSnt": 2},
                "10.0.0.2": {"state": "Active"},
            }
        },
        "ipv6Unicast": {"peers": {"10.0.0.1": {"state": "Established"}}},
    }
    bfd = parse_bfd([{"peer": "10.0.0.1", "status": "up"}, {"bogus": 1}])
    peers = parse_summary(summary, bfd)
    assert [(p.address, p.state, p.bfd) for p in peers] == [
        ("10.0.0.1", "Established", "up"),
        ("10.0.0.2", "Active", ""),
    ]
    assert peers[0].prefixes_sent == 2 and peers[1].uptime_ms is None
    assert parse_summary({}, {}) == () and parse_summary([1], {}) == ()
    assert parse_bfd({"not": "a list"}) == {}


# --- mh order and digests -------------------------------------------------------------

KEY = ServiceKey.for_address("tcp", "192.0.2.10", 80)


def mh(*addresses: str, weight: int = 1) -> Service:
    return Service(KEY, "mh", dests=tuple(Dest(a, 80, weight=weight) for a in addresses))


class ListOrder(MemoryBackend):
    """The memory backend, also keeping each service's destination list in the
    kernel's order (the model's Service sorts its own)."""

    def __init__(self) -> None:
        super().__init__()
        self.order: list[str] = []

    async def apply(self, ops):
        results = await super().apply(ops)
        for op, error in zip(ops, results, strict=True):
            if error is None and op.kind.name == "ADD_DEST":
                self.order.insert(0, op.dest.address)  # list_add: at the head
            elif error is None and op.kind.name == "DEL_DEST":
                self.order.remove(op.dest.address)
        return results


async def programmed(*steps: Service) -> tuple[Service, list[str]]:
    backend = ListOrder()
    for want in steps:
        await backend.apply(diff(Table.of([want]), await backend.dump(), {KEY}))
    return (await backend.dump()).services[KEY], backend.order


@pytest.mark.parametrize(
    "order", list(itertools.permutations(["10.0.0.3", "10.0.0.1", "10.0.0.20", "10.0.0.2"]))
)
async def test_mh_pools_are_programmed_in_canonical_order(order):
    first, listed = await programmed(mh(*order))
    assert listed == ["10.0.0.1", "10.0.0.2", "10.0.0.20", "10.0.0.3"]
    # Grown one server at a time, in any order: the kernel's list is the same.
    steps = [mh(*order[: i + 1]) for i in range(len(order))]
    grown, grown_list = await programmed(*steps)
    assert grown_list == listed
    # And shrunk again: deletions keep the order.
    _, shrunk = await programmed(*steps, mh(*order[1:]))
    assert shrunk == [a for a in listed if a != order[0]]
    assert pool_digest(grown) == pool_digest(first)


async def test_mh_reorder_keeps_the_tail_and_digest_sees_order():
    have, _ = await programmed(mh("10.0.0.1", "10.0.0.3"))
    ops = diff(Table.of([mh("10.0.0.1", "10.0.0.2", "10.0.0.3")]), Table.of([have]), {KEY})
    # 10.0.0.3 stays; 10.0.0.1 goes and comes back after the newcomer.
    assert [(op.kind.name, op.dest.address) for op in ops if op.dest] == [
        ("DEL_DEST", "10.0.0.1"),
        ("ADD_DEST", "10.0.0.2"),
        ("ADD_DEST", "10.0.0.1"),
    ]
    wlc = Service(KEY, "wlc", dests=have.dests)
    assert pool_digest(wlc) == pool_digest(Service(KEY, "wlc", dests=tuple(reversed(have.dests))))
    assert pool_digest(mh("10.0.0.1", weight=2)) != pool_digest(mh("10.0.0.1"))
    assert pool_digest(None) == ""


async def test_a_vtysh_that_does_not_answer_is_a_timeout_not_a_spawn_failure(tmp_path):
    from pulsed.announce.config import BgpConfig
    from pulsed.announce.frr import FrrAnnouncer, VtyshError

    slow = tmp_path / "vtysh"
    slow.write_text("#!/bin/sh\nexec sleep 5\n")
    slow.chmod(0o755)
    announcer = FrrAnnouncer(BgpConfig(vips=["192.0.2.1"], vtysh=str(slow)))
    announcer.config = msgspec.structs.replace(announcer.config, command_timeout=Duration(0.2))
    with pytest.raises(VtyshError) as caught:
        await announcer.vtysh("show bgp summary json")
    assert "did not answer 'show bgp summary json' within 0.2s" in str(caught.value)
    assert "None" not in str(caught.value)


async def test_vtysh_warnings_before_the_json_are_skipped_and_garbage_is_one_line(tmp_path):
    """vtysh without read access to vtysh.conf warns (on the same pipe), then answers."""
    from pulsed.announce.config import BgpConfig
    from pulsed.announce.frr import FrrAnnouncer, VtyshError

    vtysh = tmp_path / "vtysh"
    vtysh.write_text(
        "#!/bin/sh\necho \"% Can't open configuration file /etc/frr/vtysh.conf due to"
        " 'Permission denied'.\" >&2\nprintf '{\\n  \"ipv4Unicast\": {}\\n}\\n'\n"
    )
    vtysh.chmod(0o755)
    announcer = FrrAnnouncer(BgpConfig(vips=["192.0.2.1"], vtysh=str(vtysh)))
    assert await announcer.vtysh("show bgp summary json") == {"ipv4Unicast": {}}
    vtysh.write_text("#!/bin/sh\necho 'not json at all'\necho '{ broken'\n")
    with pytest.raises(VtyshError) as caught:
        await announcer.vtysh("show bgp summary json")
    assert str(caught.value) == "bgp: vtysh 'show bgp summary json' gave no JSON: not json at all"


async def test_frr_is_asked_about_a_vip_only_once_settled_and_still_announced():
    """No false "FRR does not carry" line for a VIP just announced or withdrawn meanwhile."""
    from pulsed.announce.config import BgpConfig
    from pulsed.announce.frr import FrrAnnouncer

    announcer = FrrAnnouncer(BgpConfig(vips=["192.0.2.1"], poll_interval=Duration(1.0)))
    asked: list[str] = []

    async def vtysh(command: str):
        asked.append(command)
        if command.startswith("show bgp summary"):
            return {"ipv4Unicast": {"peers": {}}}
        if command.startswith("show bfd"):
            return []
        announcer._announced = ()  # withdrawn while FRR was asked
        return {}

    announcer.vtysh = vtysh  # type: ignore[method-assign]
    now = time.monotonic()
    announcer._announced, announcer._since = ("192.0.2.1",), {"192.0.2.1": now}
    view = await announcer.read_daemon()
    assert view.ok and not any("unicast 192.0.2.1" in c for c in asked)  # too fresh to ask
    announcer._since = {"192.0.2.1": now - 5}
    view = await announcer.read_daemon()
    assert any("unicast 192.0.2.1" in c for c in asked)
    assert view.ok and view.problem == ""  # withdrawn meanwhile: not FRR's problem
    announcer._announced, announcer._since = ("192.0.2.1",), {"192.0.2.1": now - 5}
    announcer.vtysh = _not_carried  # type: ignore[method-assign]
    view = await announcer.read_daemon()
    assert not view.ok and "does not carry 192.0.2.1/32" in view.problem


async def _not_carried(command: str):
    if command.startswith("show bgp summary"):
        return {"ipv4Unicast": {"peers": {}}}
    return [] if command.startswith("show bfd") else {}
