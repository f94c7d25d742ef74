"""The three importers on mutated configs: never a traceback, always a TOML that validates.

A short seeded run (a few hundred inputs per format); the long coverage-guided
run is ``benchmarks/fuzz.py keepalived|ldirectord|piranha``.
"""

from __future__ import annotations

import random

import pytest

from tests.fixtures.fuzz_targets import TARGETS, TOKENS, check_one, mutate, random_edits

# Words that steer each parser into its branches: block keywords, includes, macros,
# conditionals, ranges, odd numbers.
WORDS = (
    b" {\n",
    b"}\n",
    b"include *\n",
    b"include nothing/*.conf\n",
    b"$M=1\n",
    b"$M",
    b"${NOPE}",
    b"@lb1 ",
    b"@^lb1 ",
    b"virtual_server group G 80 {\n",
    b"virtual_server_group G {\n 10.0.0.1-300 80\n fwmark 0\n}\n",
    b"real_server 10.0.0.9 {\n",
    b"lb_kind tun type gue\n",
    b"HTTP_GET {\n url {\n path x\n status_code 999\n }\n}\n",
    b"virtual=1\n",
    b"\treal=10.0.0.1->10.0.9.9:80 gate 99999\n",
    b"\tchecktype=7\n",
    b"virtual x {\n",
    b"server y {\n",
    b"fwmark = 4294967296\n",
    b"-1",
    b"255.255.255.256",
    b"ae00::1-ffff",
    # Numbers Python reads and keepalived does not (float("inf") once crashed int()).
    b"weight inf\n",
    b"nan",
    b"1e400",
    "\u0663".encode(),  # an Arabic-Indic 3
    "\u00b2".encode(),  # a superscript 2: str.isdigit() says yes, int() says no
    b"1_0",
    b"\x00",
    b"\xff\xfe",
)
INPUTS = 250


@pytest.mark.parametrize("kind", ["keepalived", "ldirectord", "piranha"])
def test_import_never_crashes(kind: str) -> None:
    target = TARGETS[kind]
    seeds = target.seeds()
    assert seeds
    rng = random.Random(f"import-{kind}")
    tokens = (*TOKENS, *WORDS)
    crashes = []
    for _ in range(INPUTS):
        data = mutate(rng.choice(seeds), random_edits(rng), binary=False, tokens=tokens)
        crash = check_one(target, data)
        if crash is not None:
            crashes.append((type(crash).__name__, str(crash)[:200], data[:300]))
    assert not crashes, crashes[:3]


def test_a_nul_character_in_a_file_name_is_one_line_not_a_traceback() -> None:
    """Found by the import fuzz: os.stat and os.open raise ValueError on a NUL."""
    from pulsed.config import ConfigError, parse_config

    text = 'service = []\n[[vrrp_script]]\nname = "a"\ncommand = ["/bin/tr\\u0000ue"]\n'
    with pytest.raises(ConfigError) as err:
        parse_config(text, "x.toml")
    assert "NUL" in str(err.value)
