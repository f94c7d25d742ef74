"""pulsed import on hostile input: one clear line per problem, never a traceback, a bounded
run, an output that passes check-config, and no file clobbered that should not be.

Each test stands for a class of input an adversarial pass found breaking the import:
numbers Python reads but keepalived does not, include cycles, bytes that are not
text, floods of findings, line counting, and the ``-o`` target.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from pulsed.cli import main
from pulsed.config import parse_config
from pulsed.importers.common import number
from pulsed.importers.report import MAX_FINDINGS, Report, Where
from pulsed.importers.run import import_config

SERVICE = (
    "virtual_server 10.0.0.1 80 {{\n lb_kind NAT\n"
    " real_server 10.0.0.2 {port} {{\n  weight {weight}\n }}\n}}\n"
)


def run_import(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["import", *argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


@pytest.mark.parametrize(
    "text", ["inf", "-inf", "nan", "1e400", "1_0", "٣", "²", "0x10", " 1", "+", "1e", ""]
)
def test_only_ascii_decimal_text_is_a_number(text: str) -> None:
    report = Report()
    assert number(text, Where("f", 1), report, "weight", 0, 65535) is None
    assert not report.complete and len(report.lines()) == 1


def test_numbers_that_are_numbers() -> None:
    report = Report()
    assert number("10", Where("f"), report, "w", 0, 100) == 10
    assert number("1e1", Where("f"), report, "w", 0, 100) == 10
    assert number("0.5", Where("f"), report, "t", 0, 1, whole=False) == 0.5
    assert number("9007199254740993", Where("f"), report, "w", 0, 2**64) == 9007199254740993
    assert report.complete


@pytest.mark.parametrize("weight", ["inf", "1e400", "nan", "٣", "1_0"])
def test_keepalived_odd_weights_are_reported_not_raised(
    tmp_path: Path, capsys, weight: str
) -> None:
    src = tmp_path / "k.conf"
    src.write_text(SERVICE.format(port=80, weight=weight))
    code, out, err = run_import(capsys, "keepalived", str(src))
    assert code == 1
    assert f"{src}:4: weight" in err
    parse_config(out, "<out>")


def test_unicode_digits_in_ldirectord_and_a_mask_are_reported(tmp_path: Path, capsys) -> None:
    src = tmp_path / "l.cf"
    src.write_text(
        "virtual=10.0.0.1:80\n\treal=10.0.0.2:80 gate 1\n\tfallback=10.0.0.9:²\n\tnetmask=²\n"
    )
    code, out, err = run_import(capsys, "ldirectord", str(src))
    assert code == 1
    assert f"{src}:3: fallback" in err and f"{src}:4: netmask" in err
    parse_config(out, "<out>")


def test_a_keepalived_range_end_is_plain_digits(tmp_path: Path) -> None:
    src = tmp_path / "k.conf"
    src.write_text(
        "virtual_server_group G {\n 10.0.0.1-1_0 80\n 10.0.0.1-٣ 80\n}\n"
        "virtual_server group G {\n real_server 10.0.0.2 80 {\n }\n}\n"
    )
    result = import_config("keepalived", str(src), "lb1")
    lines = result.report.lines()
    assert f"{src}:2: 10.0.0.1-1_0: not an address range" in lines
    assert f"{src}:3: 10.0.0.1-٣: not an address range" in lines


def test_include_cycles_end_and_are_reported(tmp_path: Path, capsys) -> None:
    (tmp_path / "self.conf").write_text("include self.conf\n")
    code, _, err = run_import(capsys, "keepalived", str(tmp_path / "self.conf"))
    assert code == 1 and "include loop" in err and err.count("\n") == 1
    # Files including each other by glob: without the loop check, 8 files are
    # 8^16 reads; with it, each file is read a bounded number of times.
    ring = tmp_path / "ring"
    ring.mkdir()
    for n in range(8):
        (ring / f"{n}.conf").write_text(
            f"include *.conf\nvirtual_server 10.0.0.1 {8000 + n} {{\n"
            " real_server 10.0.0.2 80 {\n }\n}\n"
        )
    result = import_config("keepalived", str(ring / "0.conf"), "lb1")
    assert not result.report.complete
    assert any("include loop" in line for line in result.report.lines())
    assert len(result.report.lines()) <= MAX_FINDINGS + 1
    parse_config(result.text, "<out>")


def test_nul_and_non_utf8_bytes_are_one_warning_and_stderr_stays_printable(
    tmp_path: Path, capsys
) -> None:
    src = tmp_path / "k.conf"
    src.write_bytes(
        SERVICE.format(port=80, weight=1).encode()
        + b"\x00evil\x1b[31m\n"
        + b"bad \xff\xfe\n"
        + b"\x1b]0;title\x07 x\n"
    )
    code, out, err = run_import(capsys, "keepalived", str(src))
    assert code == 1
    assert f"{src}:7: a NUL character: read as a space" in err
    assert f"{src}:8: not UTF-8 text (byte" in err
    assert all(line.isprintable() for line in err.splitlines())
    parse_config(out, "<out>")


def test_a_flood_of_the_same_finding_is_one_line(tmp_path: Path, capsys) -> None:
    src = tmp_path / "k.conf"
    src.write_text("{" * 100_000 + "\n" + "}" * 3 + "\n")
    code, out, err = run_import(capsys, "keepalived", str(src))
    assert code == 1 and len(err.splitlines()) < 10
    parse_config(out, "<out>")


def test_findings_stop_at_a_cap_but_the_exit_code_still_counts(tmp_path: Path) -> None:
    report = Report()
    for n in range(MAX_FINDINGS + 5):
        report.warn(Where("f", n + 1), "odd")
    report.untranslated(Where("f", 1), "left out")  # past the cap: not listed
    assert len(report.findings) == MAX_FINDINGS
    assert report.lines()[-1] == "... and 6 more finding(s) not listed"
    assert not report.complete


@pytest.mark.parametrize("kind", ["keepalived", "ldirectord", "piranha"])
def test_line_numbers_count_newlines_only(tmp_path: Path, kind: str) -> None:
    """A form feed or U+2028 is not a line break for keepalived, ldirectord or an editor."""
    src = tmp_path / "x.conf"
    src.write_text("# a\x0cb\u2028c\x1c\nnot_a_keyword_here 1\n", encoding="utf-8")
    lines = import_config(kind, str(src), "lb1").report.lines()
    assert any(line.startswith(f"{src}:2: ") for line in lines), lines


@pytest.mark.parametrize("kind", ["keepalived", "ldirectord", "piranha"])
def test_an_empty_file_says_nothing_was_found(tmp_path: Path, capsys, kind: str) -> None:
    src = tmp_path / "empty"
    src.write_text("")
    code, out, err = run_import(capsys, kind, str(src))
    assert code == 0
    assert err == f"{src}: no virtual server or VRRP instance found in this {kind} file\n"
    parse_config(out, "<out>")


@pytest.mark.parametrize("kind", ["keepalived", "ldirectord", "piranha"])
def test_inputs_that_are_not_files(tmp_path: Path, capsys, kind: str) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # opened without blocking: refused at once, not waited on
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    for path in (tmp_path, fifo, loop, tmp_path / "missing"):
        code, out, err = run_import(capsys, kind, str(path))
        assert code == 2 and out == "" and err.count("\n") == 1, err
        assert err.startswith(f"pulsed import: file {path}: ")


def test_output_targets(tmp_path: Path, capsys) -> None:
    src = tmp_path / "k.conf"
    body = SERVICE.format(port=80, weight=1)
    src.write_text(body)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for target, why in (
        (tmp_path / "no" / "out.toml", "cannot write: No such file or directory"),
        (tmp_path, "is a directory; name a file"),
        (fifo, "is a FIFO that no one reads"),
        (src, "is the input file; name another file"),
    ):
        code, _, err = run_import(capsys, "keepalived", str(src), "-o", str(target))
        assert (code, err) == (2, f"pulsed import: output {target}: {why}\n")
    assert src.read_text() == body  # the input survives -o onto itself
    assert stat.S_ISFIFO(fifo.lstat().st_mode)  # never replaced by a regular file

    new = tmp_path / "new.toml"
    assert run_import(capsys, "keepalived", str(src), "-o", str(new))[0] == 0
    assert stat.S_IMODE(new.stat().st_mode) == 0o600  # an auth_pass may be in it
    parse_config(new.read_text(), str(new))

    target = tmp_path / "target.toml"
    target.write_text("old\n")
    target.chmod(0o640)
    link = tmp_path / "link.toml"
    link.symlink_to(target)
    assert run_import(capsys, "keepalived", str(src), "-o", str(link))[0] == 0
    assert link.is_symlink() and "real_server" in target.read_text()
    assert stat.S_IMODE(target.stat().st_mode) == 0o640


def test_output_into_a_device_writes_into_it(capsys, tmp_path: Path) -> None:
    """``-o /dev/null`` (or /dev/stdout) writes into the device: renaming a file over it
    would replace the device node itself."""
    src = tmp_path / "k.conf"
    src.write_text(SERVICE.format(port=80, weight=1))
    before = os.stat("/dev/null")
    assert run_import(capsys, "keepalived", str(src), "-o", "/dev/null")[0] == 0
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev
