"""Tracking's arithmetic (pulsed.ha.router.tracked_priority) and the version-mismatch line."""

import ipaddress

import msgspec

from pulsed.ha.config import TrackScript, VrrpScript
from pulsed.ha.prepare import script_weights
from pulsed.ha.router import tracked_priority, version_warning
from tests.support.vrrp_config import vrrp_config


def prio(cfg, values, weights=None, up=lambda _: True, healthy=None):
    return tracked_priority(
        cfg,
        weights if weights is not None else script_weights(cfg),
        link_up=up,
        healthy_fraction=healthy,
        track_value=lambda kind, name: values.get((kind, name)),
    )


def cfg(track_scripts=(), **kw):
    c = vrrp_config(virtual_addresses=["192.0.2.10/24"], priority=100, **kw)
    # Scripts must name a [[vrrp_script]] of the whole config: attach them to the instance.
    tracks = [TrackScript(**t) for t in track_scripts]
    return msgspec.structs.replace(c, track_scripts=tracks)


def test_script_weights():
    c = cfg(
        track_scripts=[
            {"script": "up", "weight": 20},
            {"script": "down", "weight": -30},
            {"script": "must", "weight": 0},
        ]
    )
    w = {"up": 20, "down": -30, "must": 0}
    # Unknown values change nothing.
    assert prio(c, {}, w) == (100, [])
    ok = {("script", "up"): True, ("script", "down"): True, ("script", "must"): True}
    assert prio(c, ok, w) == (120, [])
    bad = {("script", "up"): False, ("script", "down"): False, ("script", "must"): False}
    assert prio(c, bad, w) == (70, ["script must failing"])


def test_file_weights_and_fault():
    c = cfg(track_files=[{"file": "/run/a", "weight": 2}, {"file": "/run/b", "weight": 0}])
    assert prio(c, {("file", "/run/a"): 5, ("file", "/run/b"): 0}) == (110, [])
    assert prio(c, {("file", "/run/a"): -60, ("file", "/run/b"): 3}) == (
        1,  # clamped to 1..254
        ["file /run/b holds 3"],
    )
    assert prio(c, {("file", "/run/a"): 100}) == (254, [])


def test_interfaces_and_services_as_before():
    c = cfg(
        track_interfaces=[{"interface": "t1", "decrement": 30}, {"interface": "t2"}],
        track_services=[{"service": "web", "min_healthy": 0.5}],
    )
    down = {"t1", "t2"}
    p, faults = prio(c, {}, up=lambda i: i not in down, healthy={"web": 0.25}.get)
    assert p == 70
    assert faults == ["interface t2 down", "service web 25% healthy"]


def test_default_weight_from_vrrp_script():
    c = cfg(track_scripts=[{"script": "chk"}, {"script": "own", "weight": 5}])
    scripts = [VrrpScript(name="chk", command=["/bin/true"], weight=-10)]
    assert script_weights(c, scripts) == {"chk": -10, "own": 5}


def test_version_warning_says_what_to_do_both_ways():
    src = ipaddress.IPv4Address("10.0.0.2")
    assert version_warning(src, 3, 51, "VI_1", 2) == (
        "peer 10.0.0.2 sends VRRPv3 adverts on VRID 51 (instance VI_1 is version 2):"
        " set version = 3 here, or vrrp_version 2 on the keepalived side"
    )
    assert version_warning(src, 2, 51, "VI_1", 3) == (
        "peer 10.0.0.2 sends VRRPv2 adverts on VRID 51 (instance VI_1 is version 3):"
        " set version = 2 here, or vrrp_version 3 on the keepalived side"
    )
