"""Run an imported document through pulsed's own validation; leave out what it refuses.

The validation is the one behind check-config, start-up and reload
(pulsed.config.parse_config), so what ``settle`` returns passes check-config
on this machine: a value pulsed refuses, a program that does not exist here,
a key this pulsed does not know yet. Each part left out is reported at its
source line, with pulsed's reason, and noted in the TOML where it was.
"""

from __future__ import annotations

import re
from typing import Any

from pulsed.config import ConfigError, parse_config
from pulsed.importers.emit import Table, is_tables, render, value_text
from pulsed.importers.report import Report, Where

# Keys without which a table means nothing: a problem there leaves out the whole table.
_REQUIRED = {
    "service": {"name", "vip", "port", "fwmark", "family"},
    "real": {"address"},
    "vrrp": {"name", "virtual_addresses", "interface", "vrid", "version"},
    "vrrp_script": {"name", "command"},
    "vrrp_sync_group": {"name", "instances"},
}
# Arrays that are one value (an argv): a problem in one element leaves out the whole key.
_WHOLE = {"command", "notify_up", "notify_down", "notify_master", "notify_backup"}
_WHOLE |= {"notify_fault", "notify_stop", "notify", "headers", "expect_status", "steps"}
MAX_ROUNDS = 100
_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def settle(root: Table, report: Report, header: list[str], fallback: Where) -> str:
    """The TOML text of ``root``, after leaving out every part that does not validate."""
    for _ in range(MAX_ROUNDS):
        text = render(root, header)
        try:
            parse_config(text, "<imported>")
        except ConfigError as exc:
            if not _leave_out(root, exc, report, fallback):
                break
        else:
            return text
    # Not reached with the importers' own output; kept so that no input can end
    # in a file that fails check-config.
    report.untranslated(fallback, "the translation did not validate; wrote no services")
    return render(Table(values={"service": []}), header)


_DEAD = object()  # a list element left out in this round (indices stay put until compact)


def _compact(table: Table) -> None:
    """Remove what this round left out, now that no issue path points at it any more."""
    for key, value in list(table.values.items()):
        if isinstance(value, list):
            kept = [v for v in value if v is not _DEAD and not (isinstance(v, Table) and v.dead)]
            if len(kept) != len(value):
                table.values[key] = kept
            for item in kept:
                if isinstance(item, Table):
                    _compact(item)
        elif isinstance(value, Table):
            _compact(value)


def _leave_out(root: Table, exc: ConfigError, report: Report, fallback: Where) -> bool:
    progressed = False
    for issue in exc.issues:
        parts = [int(i) if i else k for k, i in _PART.findall(issue.path)]
        reason = issue.message
        if issue.value is not None and not isinstance(issue.value, type(exc)):
            shown = _value(issue.value)
            if shown:
                reason = f"{shown}: {reason}"
        if _drop(root, parts, f"{issue.path}: {reason}", report, fallback):
            progressed = True
    _compact(root)
    return progressed


def _value(value: Any) -> str:
    if type(value).__name__ == "Missing":
        return ""
    try:
        text = value_text(value)
    except TypeError:
        text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _drop(root: Table, parts: list[Any], reason: str, report: Report, fallback: Where) -> bool:
    """Leave out the part of ``root`` that ``parts`` names (or what holds it)."""
    # The chain of tables down the path: (table, its array name or key, index or None).
    chain: list[tuple[Table, list[Table] | None, int | None, str]] = [(root, None, None, "")]
    node: Any = root
    i = 0
    while i < len(parts):
        part = parts[i]
        if not isinstance(node, Table) or not isinstance(part, str):
            break
        if node.dead:  # already left out this round, with a reason
            return True
        value = node.values.get(part)
        nxt = parts[i + 1] if i + 1 < len(parts) else None
        if (
            isinstance(value, list)
            and is_tables(value)
            and isinstance(nxt, int)
            and nxt < len(value)
        ):
            chain.append((value[nxt], value, nxt, part))
            node = value[nxt]
            i += 2
        elif isinstance(value, Table):
            chain.append((value, None, None, part))
            node = value
            i += 1
        else:
            break
    table, _, _, name = chain[-1]
    if table.dead:
        return True
    rest = parts[i:]
    if not rest:  # the path names a whole table
        if chain[-1][1] is None and len(chain) > 1:  # a plain table such as [checks]
            return _drop_key(chain[-2][0], name, reason, report, fallback)
        return _drop_element(chain, reason, report, fallback)
    key = rest[0]
    if not isinstance(key, str):
        return _drop_element(chain, reason, report, fallback)
    if key not in table.values:
        # A real server's check is merged over its service's: the key may be there.
        if name == "check" and len(chain) >= 4 and chain[-2][3] == "real":
            service = chain[-3][0]
            base = service.values.get("check")
            if isinstance(base, Table) and key in base.values:
                return _drop_key(base, key, reason, report, fallback)
        if name in _REQUIRED or name == "":
            return _drop_element(chain, reason, report, fallback)
        return False
    if key in _REQUIRED.get(name, ()):
        return _drop_element(chain, reason, report, fallback)
    value = table.values[key]
    if name == "check" and key == "command":
        # An exec check without a usable command: the check falls back to pulsed's default.
        table.drop("type")
        return _drop_key(
            table, key, reason + " (the check falls back to a TCP connect)", report, fallback
        )
    if len(rest) > 1 and isinstance(rest[1], int) and isinstance(value, list) and key not in _WHOLE:
        index = rest[1]
        if index < len(value):
            where = table.sources.get(key) or table.where or fallback
            if value[index] is _DEAD:
                return True
            value[index] = _DEAD
            table.notes.append(f"left out {key}[{index}]: {reason}")
            report.untranslated(where, f"left out: {reason}")
            return True
    return _drop_key(table, key, reason, report, fallback)


def _drop_key(table: Table, key: str, reason: str, report: Report, fallback: Where) -> bool:
    where = table.sources.get(key) or table.where or fallback
    table.drop(key)
    table.notes.append(f"left out {key}: {reason}")
    report.untranslated(where, f"left out: {reason}")
    return True


def _drop_element(chain: list, reason: str, report: Report, fallback: Where) -> bool:
    """Leave out the innermost array element of the chain (a service, a real server...)."""
    for table, array, index, name in reversed(chain):
        if array is None or index is None:
            continue
        where = table.where or fallback
        table.dead = True
        parent = chain[chain.index((table, array, index, name)) - 1][0]
        parent.notes.append(f"left out a {name} table ({where}): {reason}")
        report.untranslated(where, f"left out this {name}: {reason}")
        return True
    return False
