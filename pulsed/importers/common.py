"""Small helpers the three importers share: numbers, addresses, names, commands."""

from __future__ import annotations

import ipaddress
import math
import re
import shlex

from pulsed.files import MAX_CONFIG_BYTES, read_file
from pulsed.importers.report import Report, Where

_NAME_BAD = re.compile(r"[^A-Za-z0-9_.:-]")
_SERVICE_NAME_BAD = re.compile(r"[/\x00-\x1f\x7f]")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def read_source(path: str, report: Report) -> str:
    """The text of ``path``. Raises pulsed.files.FileProblem (one line) when it cannot
    be read. Bytes that are not UTF-8 are read as U+FFFD and a NUL as a space
    (the old programs' readers do not choke on them either), with one warning
    naming the first line that holds them."""
    data = read_file(path, what="file", max_bytes=MAX_CONFIG_BYTES)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        report.warn(
            Where(path, line), f"not UTF-8 text (byte {exc.start}): such bytes are read as U+FFFD"
        )
        text = data.decode("utf-8", errors="replace")
    if "\0" in text:
        line = text.count("\n", 0, text.index("\0")) + 1
        report.warn(Where(path, line), "a NUL character: read as a space")
        text = text.replace("\0", " ")
    return text


def source_lines(text: str) -> list[str]:
    """The lines of ``text``, ending at "\\n" only (a "\\r" before it dropped), as
    keepalived, ldirectord and editors count them: str.splitlines() would also
    split at form feeds and U+2028, and every line number after one would be wrong."""
    lines = text.split("\n")
    if not lines[-1]:
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def number(
    text: str | None,
    where: Where,
    report: Report,
    what: str,
    low: float,
    high: float,
    *,
    whole: bool = True,
) -> float | int | None:
    """``text`` as a number in [low, high], or None after reporting why not.

    Only ASCII decimal forms are numbers, as for keepalived's and ldirectord's
    C and Perl readers: Python's int() and float() would also take "1_0",
    Arabic-Indic digits, "inf" and "nan", which those programs refuse.
    """
    if text is None:
        report.untranslated(where, f"{what}: a value is missing")
        return None
    if not _DECIMAL.fullmatch(text):
        report.untranslated(where, f"{what} {text[:40]!r}: not a number")
        return None
    value: float | int = float(text)
    if not math.isfinite(value):  # 1e400
        report.untranslated(where, f"{what} {text[:40]!r}: must be {low:g}..{high:g}")
        return None
    if whole:
        if value != int(value):
            report.untranslated(where, f"{what} {text[:40]!r}: not a whole number")
            return None
        # int(text) when it can be: float() loses digits past 2**53
        value = int(text) if text.lstrip("+-").isdigit() else int(value)
    if not low <= value <= high:
        report.untranslated(where, f"{what} {text[:40]!r}: must be {low:g}..{high:g}")
        return None
    return value


def digits(text: str) -> bool:
    """Whether ``text`` is ASCII decimal digits (str.isdigit also takes "²" and "٣")."""
    return text.isascii() and text.isdigit()


def seconds(value: float) -> str:
    """A pulsed duration for a number of seconds: "6s", "500ms"."""
    if value == int(value):
        return f"{int(value)}s"
    millis = round(value * 1000)
    return f"{millis}ms" if millis else "1ms"


def address(text: str) -> str | None:
    """The normalised IP address, or None."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def host_port(host: str, port: int | None) -> str:
    """``10.0.0.2:80`` / ``[2001:db8::2]:80``; the bare address when port is None."""
    if port is None:
        return host
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def prefix_of_mask(text: str) -> int | None:
    """A prefix length from a dotted netmask ("255.255.255.0") or a number."""
    if digits(text):
        return int(text) if int(text) <= 128 else None
    try:
        return ipaddress.ip_network(f"0.0.0.0/{text}").prefixlen
    except ValueError:
        return None


def instance_name(text: str) -> str:
    """A name pulsed takes for a VRRP instance, script or group (A-Z a-z 0-9 _ . : -)."""
    name = _NAME_BAD.sub("_", text)[:64]
    return name or "unnamed"


def service_name(text: str, taken: set[str]) -> str:
    """A unique service name (no '/', no control characters, 1-64 characters)."""
    base = _SERVICE_NAME_BAD.sub("_", text).strip()[:60] or "service"
    name, n = base, 2
    while name in taken:
        name = f"{base}-{n}"
        n += 1
    taken.add(name)
    return name


def argv(text: str, where: Where, report: Report, what: str) -> list[str] | None:
    """A command line as an argv (no shell), or None after reporting why not."""
    try:
        words = shlex.split(text)
    except ValueError as exc:
        report.untranslated(where, f"{what} {text[:60]!r}: cannot split into arguments ({exc})")
        return None
    if not words:
        report.untranslated(where, f"{what}: no command given")
        return None
    if words[0] in ("sh", "bash", "/bin/sh", "/bin/bash") or any(
        c in text for c in ("|", ";", "&&", ">", "<", "`", "$(")
    ):
        report.warn(
            where,
            f"{what}: pulsed runs commands without a shell; shell syntax in {text[:60]!r}"
            " needs a script of its own",
        )
    return words
