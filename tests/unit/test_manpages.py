"""The generated man pages cover every subcommand and every config key.

The keys come from the config's own types (msgspec structs), not from the
example file the page is rendered from, so a key added to the code but not
documented in etc/pulsed.toml fails here.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from pulsed import __version__
from pulsed.cli import _parser
from pulsed.config import Config

REPO = Path(__file__).resolve().parents[2]


def _manpages():
    spec = importlib.util.spec_from_file_location("manpages", REPO / "scripts" / "manpages.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["manpages"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


manpages = _manpages()


def _structs_in(t) -> list[msgspec.inspect.StructType]:
    """The struct types a field holds: itself, or inside an optional, union or array."""
    if isinstance(t, msgspec.inspect.StructType):
        return [t]
    if isinstance(t, msgspec.inspect.UnionType):
        return [s for member in t.types for s in _structs_in(member)]
    if isinstance(t, msgspec.inspect.ListType | msgspec.inspect.VarTupleType):
        return _structs_in(t.item_type)
    return []


# Arrays the example writes as inline tables ({script = "chk_web", weight = -20}):
# the key itself is documented, and its items' field names appear in its text.
INLINE_ARRAYS = {
    "vrrp.virtual_addresses",
    "vrrp.track_scripts",
    "vrrp.track_files",
    "service.check.steps",
}


def config_keys() -> tuple[set[str], set[str]]:
    """(dotted keys the file may set, field names of the inline tables' items).

    A struct type reached twice (a real server's check is the service's check
    type) is documented once, where it is first reached.
    """
    keys: set[str] = set()
    inline: set[str] = set()
    seen: set[type] = set()

    def walk(struct: msgspec.inspect.StructType, prefix: str) -> None:
        if struct.cls in seen:
            return
        seen.add(struct.cls)
        for f in struct.fields:
            path = f"{prefix}{f.encode_name}"
            inner = _structs_in(f.type)
            if path in INLINE_ARRAYS:
                keys.add(path)
                inline.update(g.encode_name for s in inner for g in s.fields)
            elif not inner:
                keys.add(path)
            for s in inner if path not in INLINE_ARRAYS else ():
                walk(s, path + ".")

    walk(msgspec.inspect.type_info(Config), "")
    return keys, inline


@pytest.fixture(scope="module")
def pages() -> tuple[str, str]:
    example = (REPO / "etc" / "pulsed.toml").read_text()
    return manpages.render_pulsed8(_parser(), __version__), manpages.render_toml5(
        example, __version__
    )


def test_pulsed8_has_every_subcommand(pages):
    page, _ = pages
    names = list(manpages.subcommands(_parser()))
    assert {"run", "check-config", "plan", "status", "reload"} <= set(names)
    for name in names:
        assert f".SS {manpages.escape(name)}\n" in page, name
        usage = f"pulsed {manpages.escape(name)} "
        assert usage in page, f"no usage line for {name}"


def test_pulsed_toml5_has_every_config_key(pages):
    _, page = pages
    tables, inline = config_keys()
    assert "service.check.timeout" in tables and "vrrp.auth.key_file" in tables
    missing = sorted(k for k in tables if f"\\fB{manpages.escape(k)}\\fR = " not in page)
    assert not missing, f"keys the config accepts but pulsed.toml(5) does not document: {missing}"
    for name in inline:
        assert manpages.escape(name) in page, name


def test_pages_render_without_troff_warnings(pages, tmp_path):
    man = subprocess.run(["which", "man"], capture_output=True, text=True).stdout.strip()
    if not man:
        pytest.skip("man is not installed")
    for name, text in zip(("pulsed.8", "pulsed.toml.5"), pages, strict=True):
        (tmp_path / name).write_text(text)
        out = subprocess.run(
            [man, "--warnings", "-l", str(tmp_path / name)],
            capture_output=True,
            text=True,
            env={"MANWIDTH": "80", "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        )
        assert out.returncode == 0 and out.stderr == "", out.stderr
