"""Long-run parser fuzzing: a million inputs or more per target, coverage-guided.

    nice .venv/bin/python benchmarks/fuzz.py netlink --inputs 1000000 --seed 1
    nice .venv/bin/python benchmarks/fuzz.py http --inputs 1000000 --seed 1 --progress 100000

Targets (tests/fixtures/fuzz_targets.py): ``http`` (the probe's response
readers and chunked decoding), ``netlink`` (IPVS reply decoding, seeded with
replies recorded from a real kernel), ``procfs`` (/proc/net/ip_vs, recorded
text), ``config`` (parse_config on TOML text, seeded with etc/*.toml), and
``keepalived``, ``ldirectord``, ``piranha`` (``pulsed import`` on a file of the input's
bytes, whose TOML must then pass check-config; seeded with tests/fixtures/import and the
Debian samples).
The short hypothesis runs of the same targets are in tests/unit
(test_fuzz_parsers.py); this is the long run recorded in docs/benchmarks.md.

Engine: atheris (libFuzzer driving Python, with coverage feedback from the
instrumented pulsed modules). Why not hypothesis here: on the netlink target
hypothesis ran 678 inputs per CPU-second and this harness 11,055
(``--engine hypothesis`` runs the same seeds and edits through @given; see
docs/benchmarks.md, "Fuzzing"), so a million inputs cost about 25
CPU-minutes per target under hypothesis against under 2 here, on 2 cores
shared by several jobs; and libFuzzer keeps the inputs that reach new
branches, which hypothesis's generation does not aim at. Half of the
mutations are libFuzzer's own byte-level ones, half the structure-aware edits
of ``fuzz_targets.mutate`` (length and type fields, nesting, truncation; for
text, tokens such as long digit runs, also given to libFuzzer as a dictionary).

A crash (an exception the parser does not document, or an input running past
fuzz_targets.HANG_SECONDS) does not stop the run: it is counted by its place
(exception type, file and line), its first input is written to --crash-dir,
and the run goes on. The last line printed is a JSON summary; the exit status
is 1 when anything crashed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# tests/fixtures/fuzz_targets.TARGETS
TARGET_NAMES = ("config", "http", "netlink", "procfs", "keepalived", "ldirectord", "piranha")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target", choices=TARGET_NAMES)
    parser.add_argument("--inputs", type=int, default=1_000_000, help="inputs to run")
    parser.add_argument("--seed", type=int, default=1, help="libFuzzer and mutation seed")
    parser.add_argument("--progress", type=int, default=100_000, help="report every N inputs")
    parser.add_argument("--crash-dir", default=".cache/fuzz-crashes", help="first input per crash")
    parser.add_argument("--max-len", type=int, default=0, help="input size cap (default: 2x seeds)")
    parser.add_argument(
        "--engine",
        choices=["atheris", "hypothesis"],
        default="atheris",
        help="hypothesis: the same seeds and edits through @given, to compare the cost",
    )
    parser.add_argument(
        "--compare-decode",
        metavar="OLD_WIRE_PY",
        help="netlink only: time this wire.py's decoders against pulsed's on the recorded replies",
    )
    args = parser.parse_args()
    # The pulsed modules are imported only now: instrumented for atheris alone,
    # so the other modes time plain code.
    if args.compare_decode:
        return compare_decode(args.compare_decode)
    if args.engine == "hypothesis":
        return run_hypothesis(args)
    return run_atheris(args)


def run_atheris(args: argparse.Namespace) -> int:
    import atheris

    with atheris.instrument_imports(include=["pulsed"]):
        from tests.fixtures.fuzz_targets import TARGETS, TOKENS, check_one, mutate, random_edits

    target = TARGETS[args.target]
    seeds = target.seeds()
    crash_dir = Path(args.crash_dir) / args.target
    corpus = Path(tempfile.mkdtemp(prefix=f"pulsed-fuzz-{args.target}-"))
    for i, seed in enumerate(seeds):
        (corpus / f"seed-{i}").write_bytes(seed)
    # room for numbers past int()'s 4,300-digit limit, and nesting past tomli's 400
    max_len = args.max_len or max(2 * max(len(s) for s in seeds), 8192)
    dictionary = corpus.with_suffix(".dict")  # tokens libFuzzer splices into text inputs
    dictionary.write_text(
        "".join(
            '"' + "".join(f"\\x{b:02x}" for b in token) + '"\n'
            for token in TOKENS
            if len(token) <= 64
        )
    )

    count = 0
    crashes: dict[str, int] = {}
    started = time.monotonic()
    cpu_started = time.process_time()

    def summary() -> dict:
        elapsed = time.monotonic() - started
        cpu = time.process_time() - cpu_started
        return {
            "target": args.target,
            "inputs": count,
            "seconds": round(elapsed, 1),
            "inputs_per_s": round(count / elapsed) if elapsed else 0,
            "inputs_per_cpu_s": round(count / cpu) if cpu else 0,
            "crash_places": len(crashes),
            "crashing_inputs": sum(crashes.values()),
            "crashes": crashes,
            "seed": args.seed,
        }

    def one_input(data: bytes) -> None:
        nonlocal count
        count += 1
        exc = check_one(target, data)
        if exc is not None:
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            place = f"{type(exc).__name__} at {Path(frame.filename).name}:{frame.lineno}"
            if place not in crashes:
                crash_dir.mkdir(parents=True, exist_ok=True)
                name = f"crash-{len(crashes)}"
                (crash_dir / name).write_bytes(data)
                print(f"fuzz: new crash {place}: {exc!r:.200} (input in {crash_dir / name})")
            crashes[place] = crashes.get(place, 0) + 1
        if count % args.progress == 0 or count == args.inputs:
            s = summary()
            print(
                f"fuzz: {args.target} {count} inputs, {s['seconds']} s, "
                f"{s['inputs_per_s']}/s, {s['crashing_inputs']} crashing "
                f"({s['crash_places']} places)",
                flush=True,
            )
        if count >= args.inputs:
            print(json.dumps(summary()), flush=True)
            os._exit(1 if crashes else 0)  # libFuzzer's loop never returns

    def mutator(data: bytes, size_cap: int, seed: int) -> bytes:
        rng = random.Random(seed)
        if rng.random() < 0.5:
            out = atheris.Mutate(data, size_cap)
        else:
            out = mutate(data, random_edits(rng), target.binary)
        return out[:size_cap]

    libfuzzer_args = [
        sys.argv[0],
        f"-seed={args.seed}",
        f"-max_len={max_len}",
        f"-runs={args.inputs * 2}",  # the count above ends the run first
        "-print_final_stats=0",
        "-print_pcs=0",
        "-reduce_inputs=0",
        *([] if target.binary else [f"-dict={dictionary}"]),
        str(corpus),
    ]
    atheris.Setup(libfuzzer_args, one_input, custom_mutator=mutator)
    atheris.Fuzz()
    return 0


def run_hypothesis(args: argparse.Namespace) -> int:
    """The same target under hypothesis (seed + structure-aware edits), CPU-timed."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from tests.fixtures.fuzz_targets import TARGETS, check_one, mutate

    target = TARGETS[args.target]
    edits = st.lists(
        st.tuples(st.integers(0, 11), st.integers(0, 1 << 16), st.integers(0, (1 << 32) - 1)),
        min_size=1,
        max_size=6,
    )
    count = 0
    crashes = 0

    @settings(
        derandomize=True,
        database=None,
        deadline=None,
        max_examples=args.inputs,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.sampled_from(target.seeds()), edits)
    def one(seed: bytes, changes) -> None:
        nonlocal count, crashes
        count += 1
        crashes += check_one(target, mutate(seed, changes, target.binary)) is not None

    started = time.process_time()
    one()
    cpu = time.process_time() - started
    result = {"target": args.target, "engine": "hypothesis", "inputs": count}
    result |= {"cpu_seconds": round(cpu, 2), "inputs_per_cpu_s": round(count / cpu)}
    print(json.dumps(result | {"crashing_inputs": crashes}), flush=True)
    return 1 if crashes else 0


def compare_decode(old_path: str, rounds: int = 2000) -> int:
    """The cost of bounds checking: another wire.py's decoders against pulsed's own,
    on the recorded kernel replies, best of 5, alternating in one process."""
    import importlib.util

    from pulsed.ipvs import wire as new
    from tests.fixtures.fuzz_targets import netlink_seeds

    spec = importlib.util.spec_from_file_location("old_wire", old_path)
    assert spec is not None and spec.loader is not None
    old = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(old)
    datagrams = netlink_seeds()
    for name, cmd, fn in (
        ("dest", new.CMD_NEW_DEST, "parse_dest"),
        ("service", new.CMD_NEW_SERVICE, "parse_service"),
    ):
        work = [
            (d, m[3], m[4])
            for d in datagrams
            if d[16] == cmd
            for m in new.iter_messages(d, len(d))
            if m[0] > new.NLMSG_DONE
        ]
        best: dict[str, float] = {}
        for _ in range(5):
            for label, module in (("old", old), ("new", new)):
                decode = getattr(module, fn)
                started = time.perf_counter()
                for _ in range(rounds):
                    for d, start, end in work:
                        decode(d, start, end)
                best[label] = min(best.get(label, 1e9), time.perf_counter() - started)
        seconds = {k: round(v, 3) for k, v in best.items()}
        print(json.dumps({"messages": name, "count": len(work), "rounds": rounds} | seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
