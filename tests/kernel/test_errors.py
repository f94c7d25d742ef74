"""Kernel refusals come back as BackendError errnos, and the fake refuses alike."""

from __future__ import annotations

import errno

from pulsed.ipvs.memory import MemoryBackend
from pulsed.model import Dest, Forwarding, Op, OpKind, Service, ServiceKey, Table

WEB = Service(ServiceKey.for_address("tcp", "192.0.2.40", 80), "wlc")
V6 = Service(ServiceKey.for_address("tcp", "2001:db8::40", 80), "rr")
GONE = Service(ServiceKey.for_address("tcp", "192.0.2.41", 80), "wlc")
MARK = Service(ServiceKey.for_fwmark(40), "rr")
RS1 = Dest("10.5.0.1", 80, 1, Forwarding.NAT)
RS2 = Dest("10.5.0.2", 80, 1, Forwarding.NAT)


def op(kind: OpKind, svc: Service, dest: Dest | None = None) -> Op:
    return Op(kind, svc, dest)


# (op, the kernel's answer) in order; each op runs on the table the previous left.
SEQUENCE: list[tuple[Op, int]] = [
    (op(OpKind.ADD_SERVICE, WEB), 0),
    (op(OpKind.ADD_SERVICE, WEB), errno.EEXIST),
    (op(OpKind.SET_SERVICE, GONE), errno.ESRCH),
    (op(OpKind.DEL_SERVICE, GONE), errno.ESRCH),
    (op(OpKind.ADD_SERVICE, Service(GONE.key, "nosuch")), errno.ENOENT),
    (op(OpKind.SET_SERVICE, Service(WEB.key, "nosuch")), errno.ENOENT),
    # IP_VS_SCHEDNAME_MAXLEN is 16 with the NUL: a longer name fails validation.
    (op(OpKind.ADD_SERVICE, Service(GONE.key, "a-scheduler-name-too-long")), errno.EINVAL),
    (op(OpKind.ADD_DEST, WEB, RS1), 0),
    (op(OpKind.ADD_DEST, WEB, RS1), errno.EEXIST),
    (op(OpKind.ADD_DEST, GONE, RS1), errno.ESRCH),
    (op(OpKind.SET_DEST, WEB, RS2), errno.ENOENT),
    (op(OpKind.DEL_DEST, WEB, RS2), errno.ENOENT),
    (op(OpKind.DEL_DEST, GONE, RS1), errno.ESRCH),
    (op(OpKind.ADD_DEST, WEB, Dest("10.5.0.3", 80, 1, Forwarding.NAT, 5, 10)), errno.ERANGE),
    (op(OpKind.ADD_DEST, WEB, Dest("10.5.0.4", 80, -1, Forwarding.NAT)), errno.ERANGE),
    (op(OpKind.ADD_DEST, WEB, Dest("2001:db8::5", 80, 1, Forwarding.NAT)), errno.EINVAL),
    (op(OpKind.ADD_DEST, WEB, Dest("2001:db8::5", 80, 1, Forwarding.TUNNEL)), 0),
    (op(OpKind.ADD_SERVICE, V6), 0),
    (op(OpKind.ADD_DEST, V6, Dest("10.5.0.6", 80, 1, Forwarding.DR)), errno.EINVAL),
    (op(OpKind.ADD_SERVICE, MARK), 0),
    (op(OpKind.ADD_SERVICE, MARK), errno.EEXIST),
    (op(OpKind.SET_DEST, WEB, Dest("10.5.0.1", 80, 9, Forwarding.DR)), 0),
    (op(OpKind.DEL_DEST, WEB, RS1), 0),
    (op(OpKind.DEL_SERVICE, WEB), 0),
    (op(OpKind.DEL_SERVICE, WEB), errno.ESRCH),
]


def codes(results) -> list[int]:
    return [0 if r is None else r.errno for r in results]


async def test_kernel_errnos(backend):
    ops = [o for o, _ in SEQUENCE]
    results = await backend.apply(ops)
    got = [(str(o), c) for o, c in zip(ops, codes(results), strict=True)]
    assert got == [(str(o), c) for o, c in SEQUENCE]
    assert backend.writes == len(ops)


async def test_one_op_at_a_time_gives_the_same_errnos(backend):
    """Batching must not change outcomes: one apply per op agrees."""
    for o, code in SEQUENCE:
        assert codes(await backend.apply([o])) == [code], str(o)


async def test_memory_fake_refuses_like_the_kernel(backend):
    ops = [o for o, _ in SEQUENCE]
    kernel = codes(await backend.apply(ops))
    fake = codes(await MemoryBackend().apply(ops))
    differ = [(str(o), k, f) for o, k, f in zip(ops, kernel, fake, strict=True) if k != f]
    assert differ == [], "(op, kernel errno, fake errno) where the fake is not honest"
    fake_backend = MemoryBackend()
    await fake_backend.apply(ops)
    assert await fake_backend.dump() == await backend.dump()


async def test_a_refused_op_does_not_stop_the_rest(backend):
    ops = [
        op(OpKind.ADD_SERVICE, WEB),
        op(OpKind.ADD_DEST, GONE, RS1),  # refused: no such service
        op(OpKind.ADD_DEST, WEB, RS1),
        op(OpKind.ADD_DEST, WEB, RS2),
    ]
    assert codes(await backend.apply(ops)) == [0, errno.ESRCH, 0, 0]
    assert await backend.dump() == Table.of([Service(WEB.key, "wlc", dests=(RS1, RS2))])


async def test_big_batch_reports_each_refusal(backend):
    """Thousands of ops split over several batches; refusals land on the right ops."""
    services = [
        Service(ServiceKey.for_address("tcp", "192.0.2.50", 1 + i), "rr") for i in range(3000)
    ]
    ops = [op(OpKind.ADD_SERVICE, s) for s in services]
    ops[1234] = op(OpKind.DEL_SERVICE, GONE)
    ops.append(op(OpKind.ADD_SERVICE, services[0]))
    results = codes(await backend.apply(ops))
    assert [i for i, c in enumerate(results) if c] == [1234, 3000]
    assert results[1234] == errno.ESRCH and results[3000] == errno.EEXIST
    assert len(await backend.dump()) == 2999
