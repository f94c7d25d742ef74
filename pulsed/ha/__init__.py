"""High availability: VRRP routers (RFC 5798 v3 and RFC 3768 v2), wire-compatible with keepalived.

Pure cores: ``vrrp`` (packet codec), ``receive`` (validation, drop reasons), ``auth``
(optional HMAC-SHA256 with clock-free replay protection, pulsed-to-pulsed only), ``fsm``
(state machine), ``groups`` (sync-group rules). I/O edges: ``transport`` (raw protocol-112
sockets), ``sockets`` (one per interface and family, shared by VRID), ``vip`` (addresses via
pyroute2, gratuitous ARP / unsolicited NA), ``router`` (one running instance), ``node``
(VrrpNode: every instance on one heartbeat loop, what the daemon embeds). ``prepare`` builds
what can fail before anything is swapped; ``status`` holds what readers see. ``config`` holds
the [[vrrp]] tables; ``python -m pulsed.ha CONFIG`` runs the node alone; the namespace lab
used by the tests and benchmarks/failover.py is lab/ha_pair.py.

The daemon embeds it as::

    prepared = [await prepare_vrrp_async(v, scripts=cfg.vrrp_script) for v in cfg.vrrp]
    node = VrrpNode(prepared, groups=cfg.vrrp_sync_group, healthy_fraction=...,
                    track_value=..., on_event=lambda kind, name, old, new, prio, why: ...)
    await node.start()                     # or start(adopt={"VI_1": "master"}) after an upgrade
    await node.reconfigure(new_prepared, new_groups)   # a reload: in place, no transition
    node.status()          # one VrrpStatus per instance; node.group_status() per sync group
    await node.stop(graceful=True)         # priority 0; stop(keep_vips=True) for a hand-off
"""
