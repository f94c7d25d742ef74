"""Command line: run | check-config | plan | import | status | drain | disable | enable | weight."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Sequence

from pulsed import __version__
from pulsed.admin_cli import add_admin_commands
from pulsed.config import Config, ConfigError, ParseCache, load_config
from pulsed.importers.command import add_import_command
from pulsed.logs import FORMATS as LOG_FORMATS
from pulsed.logs import LEVELS as LOG_LEVELS

DEFAULT_CONFIG = "/etc/pulsed/pulsed.toml"
EXIT_OK, EXIT_ERROR, EXIT_INVALID, EXIT_PENDING = 0, 1, 2, 3


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_INVALID
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pulsed", description=__doc__)
    parser.add_argument("--version", action="version", version=f"pulsed {__version__}")
    sub = parser.add_subparsers(metavar="COMMAND")

    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("-c", "--config", default=DEFAULT_CONFIG)
    run.add_argument(
        "--backend",
        choices=("netlink", "memory"),
        default="netlink",
        help="memory: an in-process fake table, for trying pulsed without IPVS",
    )
    run.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        help="overrides [daemon] log_level and $PULSED_LOG_LEVEL",
    )
    run.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        help="json, console, journal (<N> priority prefixes for journald), or auto;"
        " overrides [daemon] log_format and $PULSED_LOG_FORMAT",
    )
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check-config", help="validate a config file (exit 0 valid, 2 not)")
    check.add_argument("file", nargs="?", default=DEFAULT_CONFIG)
    check.add_argument("--json", action="store_true", help="print problems as JSON")
    check.set_defaults(func=cmd_check_config)

    plan = sub.add_parser(
        "plan", help="print what would change (exit 0 in sync, 3 pending, 2 error)"
    )
    plan.add_argument("-c", "--config", default=DEFAULT_CONFIG)
    plan.add_argument("--url", help="the daemon's API, e.g. http://127.0.0.1:9480")
    plan.add_argument(
        "--local",
        action="store_true",
        help="compute the plan here (every real server assumed healthy), not ask the daemon",
    )
    plan.set_defaults(func=cmd_plan)

    add_import_command(sub)
    add_admin_commands(sub)
    _add_upgrade_commands(sub)
    return parser


def _load_or_report(path: str, cache: ParseCache | None = None) -> Config | None:
    try:
        return load_config(path, cache)
    except ConfigError as exc:
        for issue in exc.issues:
            print(issue, file=sys.stderr)
        return None


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.file)
    except ConfigError as exc:
        if args.json:
            print(
                json.dumps(
                    {"valid": False, "errors": [i.as_dict() for i in exc.issues]}, default=str
                )
            )
        else:
            for issue in exc.issues:
                print(issue, file=sys.stderr)
            print(f"{args.file}: {len(exc.issues)} problem(s)", file=sys.stderr)
        return EXIT_INVALID
    reals = sum(len(s.real) for s in config.service)
    if args.json:
        print(
            json.dumps(
                {"valid": True, "errors": [], "services": len(config.service), "reals": reals}
            )
        )
    else:
        print(f"{args.file}: valid ({len(config.service)} services, {reals} real servers)")
    return EXIT_OK


def cmd_plan(args: argparse.Namespace) -> int:
    """The running daemon's plan (its wanted table against the kernel's, with real
    health); computed here only when no daemon answers (or with --local)."""
    if not args.local:
        from pulsed.admin_cli import (
            Client,
            ClientError,
            api_settings,
            connectable,
            unexpected_answer,
        )

        listen, token_file = api_settings(args.config)
        client = Client(args.url or f"http://{connectable(listen)}", token_file)
        try:
            doc = client.call("GET", "/api/v1/plan")
        except ClientError as exc:
            print(
                f"pulsed: no plan from a running daemon ({exc});"
                " computed here instead, with every real server assumed healthy",
                file=sys.stderr,
            )
        else:
            try:
                return _print_daemon_plan(doc, client.url)
            except (KeyError, TypeError, AttributeError, IndexError) as exc:
                print(f"pulsed: {unexpected_answer(client.url, exc)}", file=sys.stderr)
                return EXIT_ERROR
    config = _load_or_report(args.config)
    if config is None:
        return EXIT_INVALID
    return asyncio.run(_plan(config))


def _print_daemon_plan(doc: dict, url: str) -> int:
    reals = doc["reals"]
    print(
        f"plan of the running daemon at {url} (config generation {doc['generation']}):"
        f" real servers {reals['up']} up, {reals['down']} down, {reals['unknown']} not checked",
        file=sys.stderr,
    )
    for op in doc["operations"]:
        print(op)
    if doc["pending"]:
        print("a change waits for the daemon's next pass", file=sys.stderr)
    if not doc["operations"] and not doc["pending"]:
        print("in sync: no changes")
        return EXIT_OK
    print(f"{len(doc['operations'])} change(s) pending", file=sys.stderr)
    return EXIT_PENDING


async def _plan(config: Config) -> int:
    from pulsed.desired import wanted_table
    from pulsed.ipvs.base import IPVSUnavailable
    from pulsed.ipvs.netlink import NetlinkBackend
    from pulsed.overrides import OverrideStore
    from pulsed.reconcile import diff

    try:
        backend = await NetlinkBackend.open()
    except IPVSUnavailable as exc:
        print(f"pulsed: {exc}", file=sys.stderr)
        return EXIT_INVALID
    try:
        actual = await backend.dump()
    finally:
        await backend.close()
    overrides = OverrideStore(config.daemon.state_dir)
    overrides.load(read_only=True)  # the daemon's file: plan only reads it
    # Without the daemon's probe results, plan shows the table with every
    # real server healthy: what pulsed would program once checks pass.
    wanted = wanted_table(
        config, health=None, overrides=overrides.all(), actual=actual, assume_healthy=True
    )
    owned = {s.key for s in config.service}
    ops = diff(wanted.table, actual, owned)
    for op in ops:
        print(op)
    if not ops:
        print("in sync: no changes")
        return EXIT_OK
    print(f"{len(ops)} change(s) pending", file=sys.stderr)
    return EXIT_PENDING


def cmd_run(args: argparse.Namespace) -> int:
    args.successor = _successor()
    if args.successor is False:
        return EXIT_ERROR
    args.parse_cache = ParseCache()  # lets the first reload skip unchanged services
    from pulsed.config_store import load_with_source

    try:
        config, args.source = load_with_source(args.config, args.parse_cache)
    except ConfigError as exc:
        for issue in exc.issues:
            print(issue, file=sys.stderr)
        config = None
    if config is None:
        if args.successor:
            args.successor.fail(f"{args.config}: the config is not valid")
        return EXIT_INVALID
    from pulsed.logs import ENV_FORMAT, ENV_LEVEL, choose, configure_logging

    configure_logging(
        choose(config.daemon.log_format, args.log_format, ENV_FORMAT, LOG_FORMATS),
        choose(config.daemon.log_level, args.log_level, ENV_LEVEL, LOG_LEVELS),
    )
    _raise_descriptor_limit(config)
    if config.api.enabled:
        import pulsed.aioweb  # noqa: F401  # while no other thread runs: see its docstring
    return _loop_runner(config)(_run(args, config))


def _raise_descriptor_limit(config: Config) -> None:
    """The soft RLIMIT_NOFILE up to the hard one, and a warning when even that
    leaves the probes short (docs/operations.md, the descriptor budget)."""
    import structlog

    from pulsed.limits import budget_problem, raise_nofile_limit

    log = structlog.get_logger("pulsed")
    nofile = raise_nofile_limit()
    if nofile.raised_from is not None:
        log.info("daemon.nofile_raised", soft=nofile.soft, was=nofile.raised_from)
    if nofile.problem:
        log.warning("daemon.nofile", problem=nofile.problem)
    if problem := budget_problem(nofile.soft, sum(len(s.real) for s in config.service)):
        log.warning("daemon.descriptor_budget", problem=problem)


def _loop_runner(config: Config):
    """asyncio.run, or uvloop.run when chosen (or "auto" and installed)."""
    choice = config.daemon.event_loop
    if choice == "auto" and any(not v.dedicated_thread for v in config.vrrp):
        # VIPs are managed with pyroute2's asyncio sockets, which uvloop
        # cannot host; on its own thread the heartbeat has its own loop.
        choice = "asyncio"
    if choice == "asyncio":
        return asyncio.run
    try:
        import uvloop  # optional speed-up
    except ImportError:
        if choice == "uvloop":
            print('pulsed: event_loop = "uvloop" but uvloop is not installed', file=sys.stderr)
        return asyncio.run
    return uvloop.run


async def _run(args: argparse.Namespace, config: Config) -> int:
    import structlog

    from pulsed.daemon import Daemon, StartupError
    from pulsed.ipvs.base import Backend, IPVSUnavailable
    from pulsed.sdnotify import Notifier

    log = structlog.get_logger("pulsed")
    backend: Backend
    if args.backend == "memory":
        from pulsed.ipvs.memory import MemoryBackend

        backend = MemoryBackend()
    else:
        from pulsed.ipvs.netlink import NetlinkBackend

        try:
            backend = await NetlinkBackend.open()
        except IPVSUnavailable as exc:
            log.error("daemon.no_ipvs", error=str(exc))
            print(f"pulsed: {exc}", file=sys.stderr)
            return EXIT_INVALID
    notify = Notifier.from_environment()
    send: Callable[[str], object] | None = notify.send if notify else None
    successor = args.successor
    if successor:  # an upgrade started us: systemd hears from us once the old process left
        send = successor.wrap_notify(send or (lambda _msg: None))
        log.info("upgrade.adopting", old_pid=os.getppid(), roles=successor.adopt)
    daemon = Daemon(
        args.config,
        backend,
        config,
        notify=send,
        parse_cache=args.parse_cache,
        source=args.source,
    )
    daemon.successor = successor or None
    if notify is not None:
        if successor:
            successor.when_released(lambda: notify.attach(daemon))
        else:
            notify.attach(daemon)
    if successor:
        released = asyncio.create_task(successor.wait_released(), name="upgrade-hold")
    # A process-wide setting, so made here and not by the Daemon: orphans of
    # exec checks come back to pulsed and are killed (pulsed.checks.reaper).
    # pulsed starts no other child, so every other child is such an orphan.
    from pulsed.checks.reaper import reaper

    reaper.enable()
    try:
        await daemon.run()
    except StartupError as exc:
        log.error("daemon.start_failed", error=str(exc))
        print(f"pulsed: cannot start: {exc}", file=sys.stderr)
        if successor:
            successor.fail(f"cannot start: {exc}")
        await backend.close()
        return EXIT_ERROR
    finally:
        if successor:
            released.cancel()
            successor.close()
    return EXIT_OK


# Upgrades and crashes (pulsed.upgrade, pulsed.vip_release) -------------------------------


def _add_upgrade_commands(sub) -> None:
    upgrade = sub.add_parser(
        "upgrade",
        help="replace the running daemon by the pulsed now installed, moving no VIP"
        " (exit 0 handed over, 1 not: the old one keeps running)",
    )
    upgrade.add_argument("-c", "--config", default=DEFAULT_CONFIG)
    upgrade.set_defaults(func=cmd_upgrade)
    release = sub.add_parser(
        "release-vips",
        help="remove every configured VIP from this router (after pulsed stopped or died)",
    )
    release.add_argument("-c", "--config", default=DEFAULT_CONFIG)
    release.set_defaults(func=cmd_release_vips)


def _successor():
    """None; the upgrade that started this process, its hand-off taken; or False when it
    cannot be used (the old process is told, and keeps running)."""
    from pulsed.upgrade import Successor, UpgradeFailed

    try:
        successor = Successor.from_environment()
        if successor is not None:
            successor.take_handoff()
    except UpgradeFailed as exc:
        print(f"pulsed: cannot take over: {exc}", file=sys.stderr)
        return False
    return successor


def cmd_upgrade(args: argparse.Namespace) -> int:
    from pulsed.upgrade import request_upgrade

    config = _load_or_report(args.config)
    if config is None:
        return EXIT_INVALID
    ok, line = request_upgrade(config.daemon.state_dir)
    print(line, file=sys.stdout if ok else sys.stderr)
    return EXIT_OK if ok else EXIT_ERROR


def cmd_release_vips(args: argparse.Namespace) -> int:
    from pulsed.vip_release import release_vips

    config = _load_or_report(args.config)
    if config is None:
        return EXIT_INVALID
    removed, ok = asyncio.run(release_vips(config.vrrp))
    for line in removed:
        print(line)
    return EXIT_OK if ok else EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
