"""High availability: a VRRPv3 router (RFC 5798), wire-compatible with keepalived.

Pure cores: ``vrrp`` (packet codec), ``receive`` (validation, drop reasons), ``auth``
(optional HMAC-SHA256 with clock-free replay protection, pulsed-to-pulsed only), ``fsm``
(state machine). I/O edges: ``transport`` (raw protocol-112 sockets), ``vip`` (addresses via
pyroute2, gratuitous ARP / unsolicited NA), ``node`` (VrrpNode, what the daemon embeds).
``config`` holds the [vrrp] table; ``python -m pulsed.ha CONFIG`` runs the node alone; the
namespace lab used by the tests and benchmarks/failover.py is lab/ha_pair.py.

The [vrrp] table is validated once, when the config is loaded (pulsed.config). The daemon
embeds it as::

    prepared = await prepare_vrrp_async(cfg.vrrp)   # VrrpSetupError (one line): nothing touched
    node = VrrpNode(prepared, healthy_fraction=store.healthy_fraction,
                    on_role_change=lambda old, new, reason: ...)
    await node.start()
    ...
    node.status()          # VrrpStatus: interface, VRID, state, priorities, master, counters
    await node.stop(graceful=True)   # priority 0: the peer takes over after skew time
"""
