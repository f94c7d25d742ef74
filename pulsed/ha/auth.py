"""Optional HMAC-SHA256 authentication of adverts, for pulsed-to-pulsed pairs only.

Replay protection does not read any clock: each router draws a random *epoch* when it starts
and numbers its packets with a counter; a receiver accepts a new epoch from a peer only when
the packet carrying it echoes a random *challenge* that the receiver itself sent out after its
last change of trust. Pure code: no clock, no I/O (randomness is injectable for tests).

Trailer appended after the VRRP message (keepalived drops such adverts as too long, so this
mode does not interoperate with keepalived; the VRRP checksum never covers the trailer)::

    0  version    1 byte   2 (version 1 was an 8-byte wall-clock sequence, no version byte)
    1  flags      1 byte   bit 0: PROBE, a challenge/answer that is not an advert (never fed
                           to the state machine); other bits 0
    2  n_ok       1 byte   echoes of peers this sender has verified
    3  n_need     1 byte   echoes of peers it heard but has not verified yet (asks them to answer)
    4  epoch      8 bytes  random per start of the sender, never 0
    12 counter    8 bytes  1, 2, 3 ... per epoch, over every packet the sender signs
    20 challenge  8 bytes  random, never 0; replaced each time the sender verifies a new epoch
    28 echoes     8 bytes x (n_ok + n_need), at most 16: challenges heard from peers
    .. mac        32 bytes HMAC-SHA256(key, source address + VRRP message + trailer before mac)

Receiving, per source address (the MAC binds it):

* the source's accepted epoch: accepted if the counter is greater than the last one, else
  REPLAY;
* an epoch this source used before (retired): REPLAY;
* any other epoch: accepted (it replaces the old one, which is retired) only if one of the
  echoes is our *current* challenge; we then draw a new challenge. Otherwise UNVERIFIED: we
  remember the packet's challenge to echo it, and we answer (see below).

Answers. A router that has just seen an UNVERIFIED packet, or a packet whose need-echoes hold
one of its own challenges, sends a packet soon (an advert when master, else a PROBE) carrying
the echoes; a router that is not master also probes while it has unverified peers. A restarted
peer is verified in one or two round trips (milliseconds), well inside the master-down
interval, so a restarted backup never takes over and a live master is never lost.

Why it is safe (the receiver R, a genuine sender S, an attacker A who records and replays
packets but has no key):

* A cannot forge or alter a packet (HMAC over source, message and trailer), so every packet R
  accepts was once sent by S; what A can do is replay.
* Within S's accepted epoch, a replay carries a counter R has already seen.
* A packet of a new epoch is accepted only if it echoes R's current challenge c. R drew c at
  random (64 bits) after it last accepted a new epoch, or at its own start; S can only have
  echoed c after hearing it, i.e. after that moment. So the packet is younger than R's last
  change of trust: it is not from a boot of S that R had already retired, and it is not from
  before R's restart (R's challenges are new at each start). Having accepted it, R draws a new
  challenge, so older recordings that echo c become useless too. Retired epochs are refused
  outright.
* Nothing depends on the routers' clocks: a step of either clock (1 s, 1 day, backwards) does
  not change any check. Timers use the monotonic clock only.

Cases: a restarted peer (new epoch: verified through the echo); a restarted receiver (new
challenge; it probes, and the master's answer echoes it); both restarting (each probe carries
a challenge, each answer echoes it); a router alone (probes go unanswered; it becomes master
on its master-down timer, as without authentication); unicast and multicast (the same logic,
per source address; a multicast packet carries the echoes for every peer).

What it does not stop: an on-link attacker can delay the first verification of a restarted
peer by flooding replays that crowd the bounded lists of unverified challenges (a denial of
service, like any on-link flood), and one that can drop packets can always force a failover.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from pulsed.ha.vrrp import Drop, IPAddr

VERSION = 2
FLAG_PROBE = 0x01
_HEAD = struct.Struct("!BBBBQQQ")
HEAD_LEN = _HEAD.size  # 28
MAC_LEN = 32
MAX_ECHOES = 16
MIN_TRAILER_LEN = HEAD_LEN + MAC_LEN
MAX_TRAILER_LEN = MIN_TRAILER_LEN + 8 * MAX_ECHOES
MIN_KEY_LEN = 16
MAX_KEY_LEN = 4096
# Bounds on what a receiver remembers (a flood of replays cannot grow it).
MAX_SOURCES = 32
MAX_CANDIDATES = 4  # unverified epochs remembered per source
MAX_RETIRED = 16  # epochs per source that are never accepted again


def parse_key(data: bytes, path: str) -> bytes:
    """The key in ``data`` read from ``path`` (surrounding whitespace stripped)."""
    key = data.strip()
    if len(key) < MIN_KEY_LEN:
        raise ValueError(f"VRRP auth key in {path} is {len(key)} bytes; use at least {MIN_KEY_LEN}")
    if len(key) > MAX_KEY_LEN:
        raise ValueError(f"VRRP auth key in {path} is {len(key)} bytes; use at most {MAX_KEY_LEN}")
    return key


def load_key(path: str) -> bytes:
    """The key in ``path``; ValueError (one line) names the problem. Secret-file rules apply."""
    from pulsed.files import read_file

    return parse_key(read_file(path, what="VRRP auth key file", secret=True), path)


@dataclass
class _Peer:
    epoch: int = 0  # accepted epoch; 0: none yet
    counter: int = 0  # last counter accepted in it
    challenge: int = 0  # its challenge, from its newest accepted packet
    # Unverified epochs: epoch -> (counter, challenge) of its newest packet, oldest first.
    candidates: OrderedDict[int, tuple[int, int]] = field(default_factory=OrderedDict)
    retired: deque[int] = field(default_factory=lambda: deque(maxlen=MAX_RETIRED))


@dataclass(frozen=True, slots=True)
class Trailer:
    """A parsed trailer (MAC not included)."""

    probe: bool
    epoch: int
    counter: int
    challenge: int
    ok: tuple[int, ...]
    need: tuple[int, ...]


def parse_trailer(trailer: bytes) -> Trailer | None:
    """The fields of a well-formed trailer (MAC unchecked), or None."""
    if not MIN_TRAILER_LEN <= len(trailer) <= MAX_TRAILER_LEN:
        return None
    version, flags, n_ok, n_need, epoch, counter, challenge = _HEAD.unpack_from(trailer)
    n = n_ok + n_need
    if (
        version != VERSION
        or flags & ~FLAG_PROBE
        or n > MAX_ECHOES
        or len(trailer) != MIN_TRAILER_LEN + 8 * n
        or not (epoch and counter and challenge)
    ):
        return None
    echoes = struct.unpack_from(f"!{n}Q", trailer, HEAD_LEN)
    return Trailer(
        probe=bool(flags & FLAG_PROBE),
        epoch=epoch,
        counter=counter,
        challenge=challenge,
        ok=echoes[:n_ok],
        need=echoes[n_ok:],
    )


class Authenticator:
    """Signs our packets and verifies our peers'. One per start of the VRRP node."""

    def __init__(self, key: bytes, *, randbytes: Callable[[int], bytes] = os.urandom) -> None:
        self._key = key
        self._randbytes = randbytes
        self.epoch = self._nonce()
        self.challenge = self._nonce()
        # Our last few challenges: a peer that still lists one of them as unverified is owed an
        # answer (never used to verify anything).
        self._recent: deque[int] = deque(maxlen=4)
        self._counter = 0
        self._peers: OrderedDict[IPAddr, _Peer] = OrderedDict()
        self._answer_due = False

    def _nonce(self) -> int:
        while True:
            n = int.from_bytes(self._randbytes(8), "big")
            if n:
                return n

    def _mac(self, src: IPAddr, msg: bytes, head: bytes) -> bytes:
        return hmac.new(self._key, src.packed + msg + head, hashlib.sha256).digest()

    # ---- sending
    def sign(self, src: IPAddr, msg: bytes, *, probe: bool = False) -> bytes:
        """``msg`` followed by its trailer."""
        self._counter += 1
        ok = [p.challenge for p in reversed(self._peers.values()) if p.epoch][:MAX_ECHOES]
        need: list[int] = []
        for p in reversed(self._peers.values()):
            need.extend(ch for _, ch in reversed(p.candidates.values()))
        need = need[: MAX_ECHOES - len(ok)]
        head = _HEAD.pack(
            VERSION,
            FLAG_PROBE if probe else 0,
            len(ok),
            len(need),
            self.epoch,
            self._counter,
            self.challenge,
        ) + struct.pack(f"!{len(ok) + len(need)}Q", *ok, *need)
        return msg + head + self._mac(src, msg, head)

    # ---- receiving
    def verify(self, src: IPAddr, msg: bytes, trailer: bytes) -> Drop | None:
        """None for a genuine, fresh advert; Drop.PROBE for a genuine, fresh probe; else why not.

        Remembers what it learnt (sequence, challenges) and whether an answer is due.
        """
        t = parse_trailer(trailer)
        if t is None:
            return Drop.AUTH
        mac = trailer[len(trailer) - MAC_LEN :]
        if not hmac.compare_digest(self._mac(src, msg, trailer[: len(trailer) - MAC_LEN]), mac):
            return Drop.AUTH
        peer = self._peer(src)
        if t.epoch == peer.epoch:
            if t.counter <= peer.counter:
                return Drop.REPLAY
        elif t.epoch in peer.retired:
            return Drop.REPLAY
        elif self.challenge in t.ok or self.challenge in t.need:
            if peer.epoch:
                peer.retired.append(peer.epoch)
            peer.epoch = t.epoch
            peer.candidates.clear()
            # Recordings that echo the challenge just used must not verify anything later.
            self._recent.append(self.challenge)
            self.challenge = self._nonce()
        else:
            self._remember_candidate(peer, t)
            self._answer_due = True
            return Drop.UNVERIFIED
        peer.counter = t.counter
        peer.challenge = t.challenge
        if any(c == self.challenge or c in self._recent for c in t.need):
            self._answer_due = True  # it heard us but cannot verify us yet
        return Drop.PROBE if t.probe else None

    def _peer(self, src: IPAddr) -> _Peer:
        peer = self._peers.get(src)
        if peer is None:
            peer = self._peers[src] = _Peer()
            if len(self._peers) > MAX_SOURCES:
                self._peers.popitem(last=False)
        else:
            self._peers.move_to_end(src)
        return peer

    @staticmethod
    def _remember_candidate(peer: _Peer, t: Trailer) -> None:
        old = peer.candidates.pop(t.epoch, None)
        if old is not None and old[0] >= t.counter:
            peer.candidates[t.epoch] = old  # an older packet of it: keep the newer challenge
            return
        peer.candidates[t.epoch] = (t.counter, t.challenge)
        while len(peer.candidates) > MAX_CANDIDATES:
            peer.candidates.popitem(last=False)

    # ---- what the node should send
    def take_answer(self) -> bool:
        """True (once) when a packet received since the last call asked for an answer."""
        due, self._answer_due = self._answer_due, False
        return due

    def has_unverified(self) -> bool:
        """True while some peer was heard whose epoch is not verified yet (keep probing)."""
        return any(p.candidates for p in self._peers.values())

    def verified(self, src: IPAddr) -> bool:
        peer = self._peers.get(src)
        return peer is not None and peer.epoch != 0
