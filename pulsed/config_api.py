"""Config management through the API: show, validate, plan, apply, roll back, history.

``pulsed config ...`` and the status page's editor both call these, so they
do the same. Every call needs the admin token (the config may hold secrets);
apply and rollback also need ``[api] config_write = true``.

- validate: the same validation as check-config, each problem with its line;
- plan: what the new config would change in the IPVS table (the wanted table
  of the new config, with the servers' current health and the admin
  overrides, against the kernel's table) and in VRRP, before anything is written;
- apply: refused (409, with the difference) when the file on disk is not the
  one the running config was loaded from, or when the client's ``base`` is
  not the running config; else validated, written atomically, reloaded. A
  refused reload puts the old file back. The applied text joins the history
  (pulsed.config_store) and every outcome goes to the audit log.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from pathlib import Path
from typing import Any

import msgspec

from pulsed.aioweb import web
from pulsed.api_base import DAEMON, ApiError, authorize, read_json_body
from pulsed.config import Config, ConfigError, parse_config
from pulsed.config_lines import issue_line, line_index
from pulsed.config_store import (
    HISTORY_DIR,
    ConfigHistory,
    read_source,
    unified_diff,
    write_atomically,
)
from pulsed.desired import wanted_table
from pulsed.readmodel import Snapshot
from pulsed.reconcile import diff

# A config body is JSON: its text, escaped. 10,000 real servers make ~1 MB of TOML.
MAX_CONFIG_BODY = 16 * 1024 * 1024
APPLY_LOCK = web.AppKey("config_apply_lock", asyncio.Lock)
EXAMPLE = '{"text": "<the config file>"}'


def validate_text(text: str, filename: str) -> tuple[Config | None, list[dict[str, Any]]]:
    """The config, or the problems check-config would list, each with its line.

    Its includes may name files under the config file's directory only: the
    sender holds a token, and the errors of a file it names would show parts
    of that file."""
    try:
        return parse_config(text, filename, include_root=os.path.dirname(filename) or "."), []
    except ConfigError as exc:
        index = line_index(text)
        problems = []
        for issue in exc.issues:
            problem = issue.as_dict()
            problem["value"] = None if problem["value"] is None else str(problem["value"])
            problem["line"] = issue_line(text, issue.path, issue.message, index)
            problem["text"] = str(issue)
            problems.append(problem)
        return None, problems


def plan_for(snap: Snapshot, new: Config) -> dict[str, Any]:
    """What ``new`` would change: IPVS operations and VRRP instances."""
    wanted = wanted_table(new, health=snap.health, overrides=snap.overrides, actual=snap.kernel)
    owned = set(snap.last_pass.owned) | {s.key for s in snap.config.service}
    owned |= {s.key for s in new.service}
    ops = diff(wanted.table, snap.kernel, owned)
    old_names = {s.name for s in snap.config.service}
    new_names = {s.name for s in new.service}
    return {
        "operations": [str(op) for op in ops],
        "deletions": [str(op) for op in ops if op.kind.value.startswith("del-")],
        "services_added": sorted(new_names - old_names),
        "services_removed": sorted(old_names - new_names),
        "vrrp": vrrp_changes(snap.config, new),
        "changed": new != snap.config,
    }


def vrrp_changes(old: Config, new: Config) -> list[str]:
    """One line per VRRP instance added, removed, or changed (with the fields)."""
    before = {v.name: v for v in old.vrrp}
    after = {v.name: v for v in new.vrrp}
    lines = []
    for name in before.keys() - after.keys():
        lines.append(f"remove instance {name or '(unnamed)'}: its VIPs are released")
    for name, v in after.items():
        was = before.get(name)
        if was is None:
            lines.append(
                f"add instance {name or '(unnamed)'} (vrid {v.vrid} on {v.interface},"
                f" priority {v.priority}, {len(v.virtual_addresses)} VIP(s))"
            )
            continue
        old_fields, new_fields = msgspec.structs.asdict(was), msgspec.structs.asdict(v)
        for key, value in new_fields.items():
            if value != old_fields[key]:
                lines.append(
                    f"{name or '(unnamed)'}: {key} {_short(old_fields[key])} -> {_short(value)}"
                )
    return sorted(lines)


def _short(value: Any) -> str:
    text = repr(value) if not isinstance(value, str) else value
    return text if len(text) <= 80 else text[:77] + "..."


def who(request: web.Request) -> str:
    """The token's name (its file's name) and the client's address."""
    token_file = request.app[DAEMON].config.api.token_file
    return f"{Path(token_file).name or 'token'}@{request.remote or '?'}"


async def _text_from_body(request: web.Request) -> tuple[str, dict[str, Any]]:
    body = await read_json_body(request, MAX_CONFIG_BODY, EXAMPLE)
    text = body.get("text") if isinstance(body, dict) else None
    if not isinstance(text, str):
        raise ApiError(400, f"body must be JSON like {EXAMPLE} (a string)")
    return text, body


def _history(request: web.Request) -> ConfigHistory:
    config = request.app[DAEMON].config
    return ConfigHistory(Path(config.daemon.state_dir) / HISTORY_DIR, config.api.config_history)


# Routes --------------------------------------------------------------------------


async def show(request: web.Request) -> web.Response:
    await authorize(request)
    snap = request.app[DAEMON].snapshot()
    return web.json_response(
        {
            "path": snap.config_path,
            "generation": snap.reload.generation,
            "digest": snap.source.digest or None,
            "text": snap.source.text if snap.source.digest else None,
            "writable": snap.config.api.config_write,
        }
    )


async def validate(request: web.Request) -> web.Response:
    await authorize(request)
    text, _ = await _text_from_body(request)
    path = request.app[DAEMON].snapshot().config_path
    config, problems = await asyncio.to_thread(validate_text, text, path)
    body: dict[str, Any] = {"valid": config is not None, "errors": problems}
    if config is not None:
        body["services"] = len(config.service)
        body["reals"] = sum(len(s.real) for s in config.service)
    return web.json_response(body)


async def plan(request: web.Request) -> web.Response:
    await authorize(request)
    text, _ = await _text_from_body(request)
    snap = request.app[DAEMON].snapshot()
    config, problems = await asyncio.to_thread(validate_text, text, snap.config_path)
    if config is None:
        return web.json_response(
            {"error": f"the config is not valid: {len(problems)} problem(s)", "errors": problems},
            status=422,
        )
    body = await asyncio.to_thread(plan_for, snap, config)
    return web.json_response({"generation": snap.reload.generation, **body})


async def history(request: web.Request) -> web.Response:
    await authorize(request)
    store = _history(request)
    entries, audit = await asyncio.to_thread(lambda: (store.entries(), store.audit_records()))
    return web.json_response(
        {
            "keep": store.keep,
            "entries": [dataclasses.asdict(e) for e in entries],
            "audit": audit,
        }
    )


async def apply(request: web.Request) -> web.Response:
    await authorize(request)
    _writes_on(request)
    text, body = await _text_from_body(request)
    base = body.get("base")
    if base is not None and not isinstance(base, str):
        raise ApiError(
            400, 'base must be the digest the edit started from, e.g. {"base": "3f2a..."}'
        )
    return await _write(request, text, "apply", base)


async def rollback(request: web.Request) -> web.Response:
    await authorize(request)
    _writes_on(request)
    body = await read_json_body(request, 4096, '{"id": 3}')
    entry_id = body.get("id") if isinstance(body, dict) else None
    if isinstance(entry_id, bool) or not isinstance(entry_id, int):
        raise ApiError(400, 'body must be JSON like {"id": 3} (a history entry\'s id)')
    text = await asyncio.to_thread(_history(request).text, entry_id)
    if text is None:
        raise ApiError(404, f"no config {entry_id} in the history (pulsed config history)")
    return await _write(request, text, f"rollback to {entry_id}", None)


def _writes_on(request: web.Request) -> None:
    if not request.app[DAEMON].config.api.config_write:
        raise ApiError(403, "config writes are off: set [api] config_write = true")


async def _write(request: web.Request, text: str, action: str, base: str | None) -> web.Response:
    daemon = request.app[DAEMON]
    async with request.app[APPLY_LOCK]:
        snap = daemon.snapshot()
        path = Path(snap.config_path)
        running = snap.source
        if base is not None and base != running.digest:
            raise ApiError(
                409,
                f"the running config changed since this edit started (now generation"
                f" {snap.reload.generation}): load it again",
            )
        on_disk = await asyncio.to_thread(read_source, path)
        if not running.digest or on_disk.digest != running.digest:
            difference = unified_diff(running.text, on_disk.text, "running", "on disk")
            return web.json_response(
                {
                    "error": f"{path} changed on disk since it was loaded: reload it or"
                    " merge the change first",
                    "diff": difference,
                },
                status=409,
            )
        config, problems = await asyncio.to_thread(validate_text, text, str(path))
        if config is None:
            return web.json_response(
                {
                    "error": f"the config is not valid: {len(problems)} problem(s)",
                    "errors": problems,
                },
                status=422,
            )
        store = _history(request)
        change = unified_diff(running.text, text, f"generation {snap.reload.generation}", action)
        record = {"action": action, "who": who(request), "path": str(path), "diff": change}
        try:
            await asyncio.to_thread(_keep_running, store, running.text, running.digest)
            await asyncio.to_thread(write_atomically, path, text)
        except OSError as exc:
            raise ApiError(500, f"cannot write {path}: {exc.strerror or exc}") from None
        # Shielded, like POST /api/v1/reload: a client that leaves must not cut it in half.
        reloading = asyncio.ensure_future(daemon.reload())
        reloading.add_done_callback(lambda f: f.cancelled() or f.exception())
        ok = await asyncio.shield(reloading)
        after = daemon.snapshot()
        if not ok:
            error = after.reload.last_error
            await asyncio.to_thread(write_atomically, path, running.text)
            await asyncio.to_thread(store.audit, {**record, "outcome": f"refused: {error}"})
            raise ApiError(422, f"reload refused, the old file is back: {error}")
        entry = await asyncio.to_thread(store.save, text, action, record["who"])
        await asyncio.to_thread(
            store.audit,
            {
                **record,
                "outcome": "applied",
                "generation": after.reload.generation,
                "history_id": entry.id,
            },
        )
        return web.json_response(
            {
                "generation": after.reload.generation,
                "changed": after.reload.last_changed,
                "digest": after.source.digest or None,
                "history_id": entry.id,
                "diff": change,
            }
        )


def _keep_running(store: ConfigHistory, text: str, running_digest: str) -> None:
    """Before the first write, the running config joins the history (to roll back to)."""
    entries = store.entries()
    if not entries or entries[0].digest != running_digest:
        store.save(text, "loaded", "pulsed")


def add_config_routes(app: web.Application) -> None:
    app[APPLY_LOCK] = asyncio.Lock()
    app.router.add_get("/api/v1/config", show)
    app.router.add_get("/api/v1/config/history", history)
    app.router.add_post("/api/v1/config/validate", validate)
    app.router.add_post("/api/v1/config/plan", plan)
    app.router.add_post("/api/v1/config/apply", apply)
    app.router.add_post("/api/v1/config/rollback", rollback)
