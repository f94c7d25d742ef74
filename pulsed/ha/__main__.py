"""Run only the VRRP node from a TOML file with a [vrrp] table (tests, benchmarks, debugging).

    python -m pulsed.ha CONFIG.toml [--events] [--status-file PATH]

--events prints one JSON line per role change on stdout ({"event": "role", ...}) and
{"event": "ready"} once started. SIGTERM/SIGINT stop gracefully (priority 0 is sent).
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

from pulsed.config import ConfigError, load_config
from pulsed.ha.config import VrrpConfig
from pulsed.ha.node import PreparedVrrp, VrrpNode, prepare_vrrp
from pulsed.logs import configure_logging
from pulsed.statefile import write_atomic


def load_vrrp_config(path: str) -> VrrpConfig:
    """The (first) VRRP instance of ``path``; ValueError naming every problem on failure."""
    try:
        config = load_config(path, services_required=False)
    except ConfigError as e:
        raise ValueError("; ".join(str(issue) for issue in e.issues)) from None
    if not config.vrrp:
        raise ValueError(f"{path}: no [vrrp] table")
    return config.vrrp[0]


def _emit(obj: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _dump_status(node: VrrpNode, path: str, last: str | None) -> str | None:
    """Write the status if it changed (ignoring the timestamp); returns the new key."""
    st = node.status()
    if st is None:
        return last
    doc = dataclasses.asdict(st)
    key = json.dumps({k: v for k, v in doc.items() if k != "last_transition"}, sort_keys=True)
    if key != last:
        write_atomic(path, json.dumps(doc).encode())
    return key


async def _write_status(node: VrrpNode, path: str, last: str | None) -> None:
    # Off the loop: an fsync must not hold up the role events this loop relays.
    while True:
        await asyncio.sleep(0.02)
        last = await asyncio.to_thread(_dump_status, node, path, last)


async def _main(args: argparse.Namespace, prepared: PreparedVrrp) -> int:
    def on_role(old: str, new: str, reason: str) -> None:
        if args.events:
            _emit({"event": "role", "old": old, "new": new, "reason": reason, "t": time.time()})

    def on_applied(role: str, held: bool) -> None:
        if args.events:
            _emit({"event": "applied", "role": role, "vips_held": held, "t": time.time()})

    node = VrrpNode(prepared, on_role_change=on_role, on_applied=on_applied)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await node.start()
    writer = None
    if args.status_file:
        last = _dump_status(node, args.status_file, None)  # written before "ready"
        writer = asyncio.create_task(_write_status(node, args.status_file, last))
    if args.events:
        _emit({"event": "ready", "pid": os.getpid()})
    await stop.wait()
    await node.stop(graceful=True)
    if writer is not None:
        writer.cancel()
    if args.events:
        _emit({"event": "stopped"})
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pulsed.ha", description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("--events", action="store_true", help="JSON lines on stdout per role change")
    ap.add_argument("--status-file", help="keep this file updated with the JSON status")
    args = ap.parse_args(argv)
    try:
        cfg = load_vrrp_config(args.config)
        prepared = prepare_vrrp(cfg)  # every check before anything is touched
        configure_logging("json", cfg.log_level)
        return asyncio.run(_main(args, prepared))
    except (ValueError, OSError) as e:  # VrrpSetupError is a ValueError
        print(f"pulsed.ha: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
