"""Long-run fuzzing of the VRRP receive path (validate + decode), see tests/unit/test_fuzz_vrrp.py.

    nice .venv/bin/python benchmarks/fuzz_vrrp.py --inputs 1000000 --seed 1
    nice .venv/bin/python benchmarks/fuzz_vrrp.py --engine hypothesis --inputs 20000 --seed 1

Two engines build the same kinds of input (genuine IPv4/IPv6 VRRPv3 adverts and probes, with
and without an authentication trailer, and VRRPv2 adverts with or without a PASS password,
mutated; random bytes; random source, destination, TTL, expected version)
and check the same property (``check`` in the unit test: an Advert or a Rejected, never an
exception; a mutated authenticated packet is never accepted):

* ``random`` (default): a seeded mutational generator on ``random.Random``, about a hundred
  times faster than hypothesis, for the million-input runs;
* ``hypothesis``: the unit test's strategy in chunks of ``--chunk`` examples, each chunk with
  its own seed (generation phase only: no database, no shrinking).

A failing input is counted and the first few are printed (repr); the run goes on. Progress on
stderr every ``--progress`` inputs; a JSON summary on stdout. Exit 1 if anything crashed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
import traceback

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from pulsed.ha.vrrp import MCAST_V4, MCAST_V6, Advert, encode
from tests.unit.test_fuzz_vrrp import (
    PASSWORDS,
    Case,
    Expect,
    _addr,
    _introduced,
    check,
    mutate,
)


def _mutation(rnd: random.Random) -> tuple:
    kind = rnd.choice(("flip", "set", "cut", "insert", "delete", "append"))
    i = rnd.randrange(401)
    if kind == "flip":
        return (kind, i, rnd.randrange(8))
    if kind == "set":
        return (kind, i, rnd.randrange(256))
    if kind == "cut":
        return (kind, i)
    if kind == "insert":
        return (kind, i, rnd.randbytes(rnd.randint(1, 24)))
    if kind == "delete":
        return (kind, i, rnd.randint(1, 40))
    return (kind, rnd.randbytes(rnd.randint(1, 200)))


def random_case(rnd: random.Random) -> Case:
    """One input, drawn like tests/unit/test_fuzz_vrrp.py's ``cases`` strategy."""
    if rnd.random() < 0.25:
        return random_case_v2(rnd)
    family = rnd.choice((4, 6))
    bits = 32 if family == 4 else 128
    src = _addr(family, rnd.randrange(1, 1 << bits))
    mcast = MCAST_V4 if family == 4 else MCAST_V6
    dst = mcast if rnd.random() < 0.5 else _addr(family, rnd.getrandbits(bits))
    vips = tuple(_addr(family, rnd.getrandbits(bits)) for _ in range(rnd.randint(0, 6)))
    vrid = rnd.randint(1, 255)
    tx = rx = None
    if rnd.random() < 0.5:
        tx, rx, *_ = _introduced(rnd.getrandbits(32))
        if rnd.random() < 0.5:  # introduce them: the sender's epoch is then verified
            me = _addr(family, int(src) ^ 1)
            n = 8 + (4 if family == 4 else 16) * len(vips)
            probe = tx.sign(me, encode(Advert(vrid, 100, 100, vips), me, mcast), probe=True)
            answer = rx.sign(me, encode(Advert(vrid, 100, 100, vips), me, mcast), probe=True)
            tx.verify(me, answer[:n], answer[n:])
            rx.verify(src, probe[:n], probe[n:])
    expect = Expect(
        vrid=rnd.choice((vrid, 1 + vrid % 255)),
        family=rnd.choice((family, 10 - family)),
        addresses=frozenset(vips),
        adver_int=100,
        strict_interval=rnd.random() < 0.5,
        peers=frozenset() if rnd.random() < 0.5 else frozenset({src}),
    )
    if rnd.random() < 0.25:
        return Case(rnd.randbytes(rnd.randint(0, 300)), src, dst, _ttl(rnd), expect, rx, None)
    adv = Advert(vrid, rnd.randrange(256), rnd.randrange(0x1000), vips)
    genuine = encode(adv, src, dst)
    if tx is not None:
        for _ in range(rnd.randint(0, 2)):
            tx.sign(src, genuine)
        genuine = tx.sign(src, genuine, probe=rnd.random() < 0.5)
    data = mutate(genuine, [_mutation(rnd) for _ in range(rnd.randint(0, 4))])
    return Case(data, src, dst, _ttl(rnd), expect, rx, genuine)


def random_case_v2(rnd: random.Random) -> Case:
    """A VRRPv2 input, drawn like the unit test's ``cases_v2`` strategy."""
    src = _addr(4, rnd.randrange(1, 1 << 32))
    dst = MCAST_V4 if rnd.random() < 0.5 else _addr(4, rnd.getrandbits(32))
    vips = tuple(_addr(4, rnd.getrandbits(32)) for _ in range(rnd.randint(0, 6)))
    vrid = rnd.randint(1, 255)
    password = rnd.choice(PASSWORDS)
    expect = Expect(
        vrid=rnd.choice((vrid, 1 + vrid % 255)),
        family=rnd.choice((4, 4, 6)),
        addresses=frozenset(vips),
        adver_int=100,
        strict_interval=rnd.random() < 0.5,
        peers=frozenset() if rnd.random() < 0.5 else frozenset({src}),
        version=rnd.choice((2, 2, 3)),
        password=rnd.choice((password, *PASSWORDS)),
    )
    if rnd.random() < 0.25:
        return Case(rnd.randbytes(rnd.randint(0, 300)), src, dst, _ttl(rnd), expect, None, None)
    interval = 100 * rnd.choice((0, 1, 1, 2, 255))
    adv = Advert(vrid, rnd.randrange(256), interval, vips, version=2, password=password)
    genuine = encode(adv, src, dst)
    data = mutate(genuine, [_mutation(rnd) for _ in range(rnd.randint(0, 4))])
    return Case(data, src, dst, _ttl(rnd), expect, None, genuine)


def _ttl(rnd: random.Random) -> int:
    return rnd.choice((255, 255, 254, 64, 1, 0))


class Run:
    def __init__(self, progress: int) -> None:
        self.inputs = 0
        self.crashes = 0
        self.accepted = 0
        self.samples: list[str] = []
        self.progress = progress
        self.t0 = time.monotonic()

    def one(self, case: Case) -> None:
        self.inputs += 1
        try:
            from pulsed.ha.vrrp import Advert as _A

            if isinstance(check(case), _A):
                self.accepted += 1
        except Exception:
            self.crashes += 1
            if len(self.samples) < 5:
                self.samples.append(f"{case!r}\n{traceback.format_exc()}")
        if self.inputs % self.progress == 0:
            rate = self.inputs / (time.monotonic() - self.t0)
            print(
                f"{self.inputs} inputs, {self.crashes} crashes, {rate:.0f}/s",
                file=sys.stderr,
                flush=True,
            )


def run_random(args: argparse.Namespace, run: Run) -> None:
    rnd = random.Random(args.seed)
    for _ in range(args.inputs):
        run.one(random_case(rnd))


def run_hypothesis(args: argparse.Namespace, run: Run) -> None:
    from hypothesis import HealthCheck, Phase, given, seed, settings

    from tests.unit.test_fuzz_vrrp import cases

    chunk = 0
    while run.inputs < args.inputs:
        n = min(args.chunk, args.inputs - run.inputs)

        @seed(args.seed * 1_000_003 + chunk)
        @settings(
            max_examples=n,
            deadline=None,
            database=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(cases())
        def target(case: Case) -> None:
            run.one(case)

        before = run.inputs
        target()
        chunk += 1
        if run.inputs == before:
            break  # hypothesis found nothing more to generate


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inputs", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--engine", choices=("random", "hypothesis"), default="random")
    ap.add_argument("--chunk", type=int, default=5000, help="hypothesis examples per seed")
    ap.add_argument("--progress", type=int, default=50_000)
    args = ap.parse_args()
    run = Run(args.progress)
    (run_random if args.engine == "random" else run_hypothesis)(args, run)
    elapsed = time.monotonic() - run.t0
    summary = {
        "engine": args.engine,
        "seed": args.seed,
        "inputs": run.inputs,
        "crashes": run.crashes,
        "accepted_as_advert": run.accepted,
        "seconds": round(elapsed, 1),
        "inputs_per_second": round(run.inputs / elapsed) if elapsed else None,
    }
    print(json.dumps(summary))
    for s in run.samples:
        print(s, file=sys.stderr)
    return 1 if run.crashes else 0


if __name__ == "__main__":
    sys.exit(main())
