"""The little of the DNS wire format (RFC 1035) a health check needs.

Building one query (a name, a type, class IN, recursion desired, no EDNS),
and reading a reply: its ID, flags and rcode, its question, and the text of
each answer record (the presentation format of RFC 1035 and its successors:
"192.0.2.10", "10 mail.example.org.", '"v=spf1 -all"'; a type without a text
form here is shown as RFC 3597's generic "\\# LENGTH HEX").

Why not dnspython, the reference DNS library for Python: importing it (with
importlib.metadata, which it uses to look for optional packages, and the
rdata machinery) costs the daemon 2.6 MiB of resident memory, against a
budget of 64 MiB at 10,000 real servers (docs/benchmarks.md). The tests
check this module's reading of replies against dnspython's.

Every reading is bounds-checked: a reply that is short, loops its name
pointers, or leaves bytes over raises DnsWireError with a short reason.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

CLASS_IN = 1
FLAG_QR = 0x8000
FLAG_TC = 0x0200
FLAG_RD = 0x0100
HEADER = 12
MAX_NAME = 255  # octets on the wire, length bytes included
MAX_LABEL = 63
_MAX_POINTERS = 64  # a name compressed further than this is taken for a loop

TYPES = {
    "A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "HINFO": 13, "MX": 15, "TXT": 16,
    "RP": 17, "AFSDB": 18, "AAAA": 28, "LOC": 29, "SRV": 33, "NAPTR": 35, "DNAME": 39,
    "DS": 43, "SSHFP": 44, "RRSIG": 46, "NSEC": 47, "DNSKEY": 48, "NSEC3": 50,
    "TLSA": 52, "SVCB": 64, "HTTPS": 65, "SPF": 99, "ANY": 255, "CAA": 257,
}  # fmt: skip
_TYPE_NAMES = {code: name for name, code in TYPES.items()}

RCODES = {
    "NOERROR": 0, "FORMERR": 1, "SERVFAIL": 2, "NXDOMAIN": 3, "NOTIMP": 4, "REFUSED": 5,
    "YXDOMAIN": 6, "YXRRSET": 7, "NXRRSET": 8, "NOTAUTH": 9, "NOTZONE": 10,
}  # fmt: skip
_RCODE_NAMES = {code: name for name, code in RCODES.items()}


class DnsWireError(ValueError):
    """A name, type or reply that cannot be used; the text says why."""


def type_code(text: str) -> int:
    """A record type by its mnemonic ("MX", any case), as TYPEnnn, or as a number."""
    upper = text.strip().upper()
    if upper in TYPES:
        return TYPES[upper]
    digits = upper[4:] if upper.startswith("TYPE") else upper
    if digits.isascii() and digits.isdigit() and 0 < int(digits) <= 0xFFFF:
        return int(digits)
    raise DnsWireError(f"unknown DNS record type {text!r}")


def type_text(code: int) -> str:
    return _TYPE_NAMES.get(code, f"TYPE{code}")


def rcode_code(text: str) -> int:
    """An rcode by its name ("NXDOMAIN", any case) or as a number 0-15."""
    upper = text.strip().upper()
    if upper in RCODES:
        return RCODES[upper]
    if upper.isascii() and upper.isdigit() and int(upper) <= 15:
        return int(upper)
    raise DnsWireError(f"unknown DNS rcode {text!r}")


def rcode_text(code: int) -> str:
    return _RCODE_NAMES.get(code, str(code))


def encode_name(text: str) -> bytes:
    """A domain name in wire form (absolute: a final dot is implied). Non-ASCII
    labels are encoded with IDNA 2008; backslash escapes are not accepted."""
    if "\\" in text:
        raise DnsWireError("backslash escapes are not supported in a name to query")
    stripped = text[:-1] if text.endswith(".") else text
    if not stripped:
        if text == ".":
            return b"\0"
        raise DnsWireError("the name is empty")
    wire = bytearray()
    for label in stripped.split("."):
        if not label:
            raise DnsWireError("the name has an empty label (two dots in a row)")
        raw = label.encode("ascii") if label.isascii() else _idna(label)
        if len(raw) > MAX_LABEL:
            raise DnsWireError(f"a label is longer than {MAX_LABEL} octets")
        wire += bytes((len(raw),)) + raw
    wire += b"\0"
    if len(wire) > MAX_NAME:
        raise DnsWireError(f"the name is longer than {MAX_NAME} octets")
    return bytes(wire)


def _idna(label: str) -> bytes:
    """A non-ASCII label as IDNA 2008 with UTS 46 mapping, as dnspython encodes it
    ("Straße" -> xn--strae-oqa). The idna package (a dependency of aiohttp's yarl)
    is imported here only: its mapping tables are half a megabyte."""
    import idna

    try:
        return bytes(idna.alabel(idna.uts46_remap(label, std3_rules=False)))
    except (idna.IDNAError, UnicodeError, ValueError) as exc:
        raise DnsWireError(f"the label {label!r} cannot be encoded (IDNA: {exc})") from None


def make_query(name: str, qtype: int, query_id: int = 0) -> bytes:
    """A standard query for ``name`` (class IN) with recursion desired."""
    question = encode_name(name) + struct.pack("!HH", qtype, CLASS_IN)
    return struct.pack("!HHHHHH", query_id, FLAG_RD, 1, 0, 0, 0) + question


@dataclass(frozen=True, slots=True)
class Reply:
    id: int
    flags: int
    rcode: int
    question: tuple[tuple[bytes, ...], int, int] | None  # (labels lowered, type, class)
    answers: tuple[str, ...]  # each answer record's text


def question_of(wire: bytes) -> tuple[tuple[bytes, ...], int, int]:
    """The first question of a message (ours, as built by make_query)."""
    name, end = _read_name(wire, HEADER)
    qtype, qclass = struct.unpack_from("!HH", wire, end)
    return _lower(name), qtype, qclass


def parse_reply(wire: bytes) -> Reply:
    """The parts of a reply a check judges; DnsWireError when it does not parse."""
    try:
        return _parse(wire)
    except (struct.error, IndexError):
        raise DnsWireError("the reply ends early") from None


def _parse(wire: bytes) -> Reply:
    if len(wire) < HEADER:
        raise DnsWireError(f"{len(wire)} bytes, shorter than a DNS header")
    query_id, flags, qdcount, ancount, nscount, arcount = struct.unpack_from("!6H", wire)
    if qdcount > 1:
        raise DnsWireError(f"{qdcount} questions")
    at = HEADER
    question = None
    if qdcount:
        name, at = _read_name(wire, at)
        qtype, qclass = struct.unpack_from("!HH", wire, at)
        at += 4
        question = (_lower(name), qtype, qclass)
    answers = []
    for index in range(ancount + nscount + arcount):
        _, at = _read_name(wire, at)
        rtype, _rclass, _ttl, length = struct.unpack_from("!HHIH", wire, at)
        at += 10
        end = at + length
        if end > len(wire):
            raise DnsWireError("a record runs past the end of the reply")
        if index < ancount:
            answers.append(_rdata_text(wire, rtype, at, end))
        at = end
    if at != len(wire):
        raise DnsWireError(f"{len(wire) - at} bytes left over after the records")
    return Reply(query_id, flags, flags & 0xF, question, tuple(answers))


def _lower(name: tuple[bytes, ...]) -> tuple[bytes, ...]:
    # Label by label: a label may hold a "." byte, so joined names could collide.
    return tuple(label.lower() for label in name)


def _read_name(wire: bytes, at: int) -> tuple[tuple[bytes, ...], int]:
    """The labels of the name at ``at``, and where the name ends in the message."""
    labels: list[bytes] = []
    end = -1  # where the name ends: after its first pointer, or its root label
    size = 1
    pointers = 0
    while True:
        length = wire[at]
        if length >= 0xC0:
            target = ((length & 0x3F) << 8) | wire[at + 1]
            if end < 0:
                end = at + 2
            pointers += 1
            if target >= at or pointers > _MAX_POINTERS:
                raise DnsWireError("a name pointer loops or points forward")
            at = target
            continue
        if length > MAX_LABEL:
            raise DnsWireError(f"a label length byte of {length:#x}")
        if length == 0:
            return tuple(labels), end if end >= 0 else at + 1
        label = wire[at + 1 : at + 1 + length]
        if len(label) < length:
            raise DnsWireError("a name runs past the end of the reply")
        size += length + 1
        if size > MAX_NAME:
            raise DnsWireError(f"a name longer than {MAX_NAME} octets")
        labels.append(label)
        at += 1 + length


# Presentation format ----------------------------------------------------------

_NAME_SPECIAL = frozenset(b'"().;\\@$')


def _name_text(labels: tuple[bytes, ...]) -> str:
    if not labels:
        return "."
    return "".join(_label_text(label) + "." for label in labels)


def _label_text(label: bytes) -> str:
    out = []
    for byte in label:
        if byte in _NAME_SPECIAL:
            out.append("\\" + chr(byte))
        elif 0x20 < byte < 0x7F:
            out.append(chr(byte))
        else:
            out.append(f"\\{byte:03d}")
    return "".join(out)


def _quoted(data: bytes) -> str:
    out = []
    for byte in data:
        if byte in (0x22, 0x5C):  # " and \
            out.append("\\" + chr(byte))
        elif 0x20 <= byte < 0x7F:
            out.append(chr(byte))
        else:
            out.append(f"\\{byte:03d}")
    return '"' + "".join(out) + '"'


def _strings(wire: bytes, at: int, end: int) -> list[bytes]:
    """RFC 1035 <character-string>s filling wire[at:end]."""
    out = []
    while at < end:
        length = wire[at]
        if at + 1 + length > end:
            raise DnsWireError("a character-string runs past its record")
        out.append(wire[at + 1 : at + 1 + length])
        at += 1 + length
    return out


def _name_in(wire: bytes, at: int, end: int) -> tuple[str, int]:
    labels, after = _read_name(wire, at)
    if after > end:
        raise DnsWireError("a name runs past its record")
    return _name_text(labels), after


def _exact(at: int, end: int, what: str) -> None:
    if at != end:
        raise DnsWireError(f"a {what} record of the wrong length")


def _rdata_text(wire: bytes, rtype: int, at: int, end: int) -> str:
    data = wire[at:end]
    if rtype == 1:  # A
        _exact(at + 4, end, "A")
        return str(ipaddress.IPv4Address(data))
    if rtype == 28:  # AAAA
        _exact(at + 16, end, "AAAA")
        # An IPv4 address inside is written dotted (::ffff:192.0.2.1, ::192.0.2.1).
        if data[:10] == bytes(10) and data[10:12] == b"\xff\xff":
            return f"::ffff:{ipaddress.IPv4Address(data[12:])}"
        if data[:12] == bytes(12) and data[12:14] != bytes(2):
            return f"::{ipaddress.IPv4Address(data[12:])}"
        return ipaddress.IPv6Address(data).compressed
    if rtype in (2, 5, 12, 39):  # NS, CNAME, PTR, DNAME
        name, after = _name_in(wire, at, end)
        _exact(after, end, type_text(rtype))
        return name
    if rtype == 15:  # MX
        (preference,) = struct.unpack_from("!H", wire, at)
        name, after = _name_in(wire, at + 2, end)
        _exact(after, end, "MX")
        return f"{preference} {name}"
    if rtype in (16, 99):  # TXT, SPF
        return " ".join(_quoted(s) for s in _strings(wire, at, end))
    if rtype == 33:  # SRV
        priority, weight, port = struct.unpack_from("!HHH", wire, at)
        name, after = _name_in(wire, at + 6, end)
        _exact(after, end, "SRV")
        return f"{priority} {weight} {port} {name}"
    if rtype == 6:  # SOA
        mname, after = _name_in(wire, at, end)
        rname, after = _name_in(wire, after, end)
        _exact(after + 20, end, "SOA")
        numbers = " ".join(map(str, struct.unpack_from("!5I", wire, after)))
        return f"{mname} {rname} {numbers}"
    if rtype == 257 and len(data) >= 2 and 2 + data[1] <= len(data):  # CAA
        tag = _quoted(data[2 : 2 + data[1]])[1:-1]
        return f"{data[0]} {tag} {_quoted(data[2 + data[1] :])}"
    # RFC 3597's generic form (the hex in chunks, as dnspython writes it).
    digits = data.hex()
    chunks = " ".join(digits[i : i + 128] for i in range(0, len(digits), 128))
    return f"\\# {len(data)} {chunks}"
