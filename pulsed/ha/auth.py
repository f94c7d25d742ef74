"""Optional HMAC-SHA256 authentication of adverts, for pulsed-to-pulsed pairs only.

Trailer appended after the VRRP message (keepalived drops such adverts as too long, so this
mode does not interoperate with keepalived)::

    sequence: 8 bytes, big-endian, the sender's wall clock in nanoseconds since the epoch,
              strictly increasing per sender
    mac:      32 bytes, HMAC-SHA256(key, source address bytes + VRRP message + sequence)

Replay protection: a receiver keeps the last sequence seen from each source and drops any
sequence not greater than it; it also drops sequences further than ``max_clock_skew`` from
its own clock, so an advert recorded earlier cannot be replayed after the receiver restarts.
The two routers' clocks must therefore agree within ``max_clock_skew`` (run NTP).
"""

from __future__ import annotations

import hashlib
import hmac
import struct

from pulsed.ha.vrrp import Drop, IPAddr

SEQ_LEN = 8
MAC_LEN = 32
TRAILER_LEN = SEQ_LEN + MAC_LEN
MIN_KEY_LEN = 16


def load_key(path: str) -> bytes:
    """The key in ``path`` (surrounding whitespace stripped); ValueError names the problem."""
    try:
        with open(path, "rb") as f:
            key = f.read().strip()
    except OSError as e:
        raise ValueError(f"cannot read VRRP auth key file {path}: {e.strerror}") from None
    if len(key) < MIN_KEY_LEN:
        raise ValueError(f"VRRP auth key in {path} is {len(key)} bytes; use at least {MIN_KEY_LEN}")
    return key


class Authenticator:
    def __init__(self, key: bytes, max_clock_skew: float) -> None:
        self._key = key
        self._skew_ns = int(max_clock_skew * 1e9)
        self._last_sent = 0
        self._last_seen: dict[IPAddr, int] = {}

    def _mac(self, src: IPAddr, msg: bytes, seq: bytes) -> bytes:
        return hmac.new(self._key, src.packed + msg + seq, hashlib.sha256).digest()

    def sign(self, src: IPAddr, msg: bytes, now_wall: float) -> bytes:
        """``msg`` followed by its trailer."""
        seq_n = max(int(now_wall * 1e9), self._last_sent + 1)
        self._last_sent = seq_n
        seq = struct.pack("!Q", seq_n)
        return msg + seq + self._mac(src, msg, seq)

    def verify(self, src: IPAddr, msg: bytes, trailer: bytes, now_wall: float) -> Drop | None:
        """None when genuine and fresh (and then remembers its sequence), else why not."""
        if len(trailer) != TRAILER_LEN:
            return Drop.AUTH
        seq = trailer[:SEQ_LEN]
        if not hmac.compare_digest(self._mac(src, msg, seq), trailer[SEQ_LEN:]):
            return Drop.AUTH
        (seq_n,) = struct.unpack("!Q", seq)
        if seq_n <= self._last_seen.get(src, 0) or abs(seq_n - int(now_wall * 1e9)) > self._skew_ns:
            return Drop.REPLAY
        self._last_seen[src] = seq_n
        return None
