"""pulsed.checks.dns_wire against dnspython, the reference it stands in for."""

from __future__ import annotations

import contextlib
import random

import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pulsed.checks import dns_wire
from pulsed.checks.dns_wire import DnsWireError


def test_type_and_rcode_names_are_dnspythons():
    for name, code in dns_wire.TYPES.items():
        assert dns.rdatatype.from_text(name) == code
        assert dns_wire.type_code(name.lower()) == code
    for name, code in dns_wire.RCODES.items():
        assert dns.rcode.from_text(name) == code
        assert dns_wire.rcode_text(code) == name
    assert dns_wire.type_code("TYPE65280") == 65280
    assert dns_wire.type_text(65280) == "TYPE65280"
    for bad in ("BOGUS", "TYPE0", "TYPE70000", "", "A B"):
        with pytest.raises(DnsWireError):
            dns_wire.type_code(bad)
    for bad in ("MAYBE", "16", "-1"):
        with pytest.raises(DnsWireError):
            dns_wire.rcode_code(bad)


@pytest.mark.parametrize(
    "name",
    ["www.test", "www.test.", "Example.ORG", ".", "a-b.c_d.example", "xn--bcher-kva.example"],
)
def test_a_query_is_the_one_dnspython_builds(name):
    ours = dns_wire.make_query(name, 15, query_id=0x1234)
    theirs = dns.message.make_query(name, "MX")
    theirs.id = 0x1234
    assert ours == theirs.to_wire()


@pytest.mark.parametrize("name", ["bücher.example", "Bücher.example", "straße.example"])
def test_a_non_ascii_name_is_sent_as_dnspython_sends_it(name):
    assert dns_wire.encode_name(name) == dns.name.from_text(name).to_wire()


def test_a_label_idna_refuses_is_a_clear_error():
    with pytest.raises(DnsWireError, match="cannot be encoded"):
        dns_wire.encode_name("a\u0300b.example".encode().decode("unicode_escape"))


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("a..b", "empty label"),
        ("", "empty"),
        ("a" * 64 + ".test", "longer than 63"),
        (".".join(["abcdefgh"] * 30), "longer than 255"),
        ("a\\.b", "escapes"),
    ],
)
def test_names_that_cannot_be_asked(name, why):
    with pytest.raises(DnsWireError, match=why):
        dns_wire.encode_name(name)


# Replies: every type with a text form here, as dnspython writes and reads them.
RDATA = {
    "A": ["192.0.2.10", "0.0.0.0"],
    "AAAA": ["2001:db8::1", "::1", "::", "::ffff:192.0.2.1", "::192.0.2.1", "fe80::1:2:3:4"],
    "NS": ["ns1.example.", "."],
    "CNAME": ["www.example.org."],
    "PTR": ["host.in-addr.example."],
    "DNAME": ["target.example."],
    "MX": ["10 mail.test.", "0 ."],
    "TXT": ['"v=spf1 -all"', '"two" "strings"', '"quote\\" and \\\\ and \\255"', '""'],
    "SPF": ['"v=spf1 -all"'],
    "SRV": ["10 60 5060 sip.example."],
    "SOA": ["ns.example. admin.example. 2024010101 3600 600 86400 60"],
    "CAA": ['0 issue "letsencrypt.org"', '128 iodef "mailto:x@example.org"'],
    "TYPE65280": ["\\# 4 0a000001", "\\# 0"],
}


def reply_with(records: list[tuple[str, str]], **extra) -> bytes:
    query = dns.message.make_query("www.test", "A")
    reply = dns.message.make_response(query)
    for rdtype, text in records:
        rrset = dns.rrset.from_text("www.test.", 300, "IN", rdtype, text)
        reply.answer.append(rrset)
    for key, value in extra.items():
        setattr(reply, key, value)
    return reply.to_wire()


def dnspython_texts(wire: bytes) -> list[str]:
    return [rdata.to_text() for rrset in dns.message.from_wire(wire).answer for rdata in rrset]


@pytest.mark.parametrize(("rdtype", "text"), [(t, x) for t, xs in RDATA.items() for x in xs])
def test_each_type_reads_as_dnspython_writes_it(rdtype, text):
    wire = reply_with([(rdtype, text)])
    reply = dns_wire.parse_reply(wire)
    assert list(reply.answers) == dnspython_texts(wire)
    assert reply.question == dns_wire.question_of(dns_wire.make_query("WWW.test", 1))


def test_compressed_names_and_the_header():
    records = [("CNAME", "www.example.org."), ("MX", "5 www.test."), ("NS", "www.example.org.")]
    wire = reply_with(records, id=4242)
    reply = dns_wire.parse_reply(wire)
    assert b"\xc0" in wire  # dnspython compressed the names: the pointers are followed
    assert reply.id == 4242 and reply.flags & dns_wire.FLAG_QR
    assert list(reply.answers) == dnspython_texts(wire)


def test_rcodes():
    query = dns.message.make_query("www.test", "A")
    for code in (dns.rcode.NXDOMAIN, dns.rcode.SERVFAIL, dns.rcode.REFUSED):
        reply = dns.message.make_response(query)
        reply.set_rcode(code)
        assert dns_wire.parse_reply(reply.to_wire()).rcode == code


answer_types = st.sampled_from([t for t in RDATA if not t.startswith("TYPE")])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(answer_types, st.integers(0, 10**6)), min_size=0, max_size=6))
def test_random_replies_read_as_dnspython_reads_them(picks):
    # Distinct records, compared in any order: dnspython merges the records of
    # one name and type into one set; here each record on the wire is an answer.
    records = list(dict.fromkeys((t, RDATA[t][seed % len(RDATA[t])]) for t, seed in picks))
    wire = reply_with(records)
    assert sorted(dns_wire.parse_reply(wire).answers) == sorted(dnspython_texts(wire))


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300), st.integers(0, 2**32))
def test_damaged_replies_give_dnswireerror_only(noise, seed):
    """Cut, flipped or random bytes: a reply parses or raises DnsWireError, nothing else."""
    base = reply_with([("MX", "10 mail.test."), ("TXT", '"x"'), ("A", "192.0.2.1")])
    rng = random.Random(seed)
    damaged = bytearray(base)
    for _ in range(rng.randint(1, 4)):
        damaged[rng.randrange(len(damaged))] = rng.randrange(256)
    for wire in (noise, bytes(damaged), base[: rng.randrange(len(base))]):
        with contextlib.suppress(DnsWireError):
            dns_wire.parse_reply(wire)


def test_pointer_loops_and_overruns():
    header = bytes.fromhex("1234 8180 0001 0000 0000 0000".replace(" ", ""))
    with pytest.raises(DnsWireError, match="loops or points forward"):
        dns_wire.parse_reply(header + b"\xc0\x0c" + b"\x00\x01\x00\x01")  # points at itself
    with pytest.raises(DnsWireError, match="ends early"):
        dns_wire.parse_reply(header + b"\x03www")
    with pytest.raises(DnsWireError, match="left over"):
        dns_wire.parse_reply(reply_with([("A", "192.0.2.1")]) + b"junk")
    with pytest.raises(DnsWireError, match="shorter than a DNS header"):
        dns_wire.parse_reply(b"\x12\x34")


def test_a_question_is_compared_label_by_label():
    """A reply whose one label holds a dot ("www.test" as one label) is another name."""
    ours = dns_wire.question_of(dns_wire.make_query("www.test", 1))
    header = bytes.fromhex("000081800001000000000000")
    glued = header + b"\x08www.test\x00" + b"\x00\x01\x00\x01"
    assert dns_wire.parse_reply(glued).question != ours
    assert dns_wire.parse_reply(header + b"\x03WwW\x04TEST\x00\x00\x01\x00\x01").question == ours
