"""Run only the VRRP node from a TOML file with [[vrrp]] tables (tests, benchmarks, debugging).

    python -m pulsed.ha CONFIG.toml [--events] [--status-file PATH]

--events prints one JSON line per transition on stdout ({"event": "role", "instance": ...} for
an instance, {"event": "group", ...} for a sync group) and {"event": "ready"} once started.
SIGTERM/SIGINT stop gracefully (priority 0 is sent); SIGHUP reloads the file in place
({"event": "reloaded"} or {"event": "reload_failed", "error": ...}).
The status file holds the first instance's status at the top level (what single-instance
tools read), every instance under "instances" and the sync groups under "groups".
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import signal
import sys
import time

from pulsed.config import Config, ConfigError, load_config
from pulsed.ha.config import VrrpConfig
from pulsed.ha.node import PreparedVrrp, VrrpNode, prepare_vrrp
from pulsed.logs import configure_logging
from pulsed.statefile import write_atomic


def load_ha_config(path: str) -> Config:
    """The config of ``path`` with at least one VRRP instance; ValueError naming every
    problem on failure."""
    try:
        config = load_config(path, services_required=False)
    except ConfigError as e:
        raise ValueError("; ".join(str(issue) for issue in e.issues)) from None
    if not config.vrrp:
        raise ValueError(f"{path}: no [vrrp] table")
    return config


def load_vrrp_config(path: str) -> VrrpConfig:
    """The (first) VRRP instance of ``path``; ValueError naming every problem on failure."""
    return load_ha_config(path).vrrp[0]


def prepare_all(config: Config) -> list[PreparedVrrp]:
    return [prepare_vrrp(v, scripts=config.vrrp_script) for v in config.vrrp]


def _emit(obj: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _dump_status(node: VrrpNode, path: str, last: str | None) -> str | None:
    """Write the status if it changed (ignoring the timestamps); returns the new key."""
    states = node.status()
    if not states:
        return last
    instances = [dataclasses.asdict(s) for s in states]
    doc = {
        **instances[0],
        "instances": instances,
        "groups": [dataclasses.asdict(g) for g in node.group_status()],
    }
    stable = [{k: v for k, v in i.items() if k != "last_transition"} for i in instances]
    key = json.dumps([stable, doc["groups"]], sort_keys=True)
    if key != last:
        write_atomic(path, json.dumps(doc).encode())
    return key


async def _write_status(node: VrrpNode, path: str, last: str | None) -> None:
    # Off the loop: an fsync must not hold up the role events this loop relays.
    while True:
        await asyncio.sleep(0.02)
        last = await asyncio.to_thread(_dump_status, node, path, last)


async def _main(args: argparse.Namespace, config: Config, prepared: list[PreparedVrrp]) -> int:
    def on_event(kind: str, name: str, old: str, new: str, prio: int, reason: str) -> None:
        if args.events:
            what = "role" if kind == "INSTANCE" else "group"
            key = "instance" if kind == "INSTANCE" else "group"
            _emit({"event": what, key: name, "old": old, "new": new, "priority": prio,
                   "reason": reason, "t": time.time()})  # fmt: skip

    def on_applied(name: str, role: str, held: bool) -> None:
        if args.events:
            _emit({"event": "applied", "instance": name, "role": role, "vips_held": held,
                   "t": time.time()})  # fmt: skip

    node = VrrpNode(
        prepared, groups=config.vrrp_sync_group, on_event=on_event, on_applied=on_applied
    )
    stop = asyncio.Event()
    reload = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload.set)
    await node.start()
    writer = None
    if args.status_file:
        last = _dump_status(node, args.status_file, None)  # written before "ready"
        writer = asyncio.create_task(_write_status(node, args.status_file, last))
    if args.events:
        _emit({"event": "ready", "pid": os.getpid()})
    while not stop.is_set():
        waiters = [asyncio.create_task(stop.wait()), asyncio.create_task(reload.wait())]
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for w in waiters:
            w.cancel()
        if reload.is_set() and not stop.is_set():
            reload.clear()
            await _reload(args, node)
    await node.stop(graceful=True)
    if writer is not None:
        writer.cancel()
    if args.events:
        _emit({"event": "stopped"})
    return 0


async def _reload(args: argparse.Namespace, node: VrrpNode) -> None:
    try:
        config = await asyncio.to_thread(load_ha_config, args.config)
        prepared = await asyncio.to_thread(prepare_all, config)
        await node.reconfigure(prepared, config.vrrp_sync_group)
    except (ValueError, OSError) as e:
        if args.events:
            _emit({"event": "reload_failed", "error": str(e)})
        return
    if args.events:
        _emit({"event": "reloaded", "t": time.time()})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pulsed.ha", description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("--events", action="store_true", help="JSON lines on stdout per transition")
    ap.add_argument("--status-file", help="keep this file updated with the JSON status")
    args = ap.parse_args(argv)
    try:
        config = load_ha_config(args.config)
        prepared = prepare_all(config)  # every check before anything is touched
        configure_logging("json", config.vrrp[0].log_level)
        return asyncio.run(_main(args, config, prepared))
    except (ValueError, OSError) as e:  # VrrpSetupError is a ValueError
        print(f"pulsed.ha: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
