"""Short fuzz runs of the parsers that read untrusted bytes: zero crashes.

A parser either returns a value or raises its documented error (netlink:
wire.DecodeError, a BackendError the reconcile loop logs as one line;
/proc/net/ip_vs: ValueError, on which refresh falls back to a netlink read;
config: ConfigError; HTTP: no exception at all, a failed probe with a
reason). Anything else, or an input that runs past fuzz_targets.HANG_SECONDS,
is a crash. Seeds are real: replies and /proc text recorded from a 6.1
kernel in the IPVS VM (tests/fixtures/capture_ipvs.py).

Derandomized and short (a few seconds a target) so they run in `make test`;
benchmarks/fuzz.py runs the same targets a million inputs each.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pulsed.checks.base import Target
from pulsed.checks.config import CheckConfig
from pulsed.checks.http import HttpProbe, dechunk, parse_weight_pct
from pulsed.config import ConfigError, parse_config
from pulsed.ipvs import netlink, procfs, syncd, wire
from pulsed.model import Forwarding, ServiceKey
from tests.fixtures.fuzz_targets import (
    HTTP_SEEDS,
    MUTATIONS,
    TARGETS,
    TOKENS,
    check_one,
    config_seeds,
    mutate,
    netlink_seeds,
    procfs_seeds,
    run_http,
    time_limit,
)

FIXTURES = Path(__file__).parent.parent / "fixtures"
FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=400,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

edits = st.lists(
    st.tuples(
        st.integers(0, MUTATIONS - 1), st.integers(0, (1 << 16) - 1), st.integers(0, (1 << 32) - 1)
    ),
    min_size=1,
    max_size=6,
)


def assert_no_crash(target: str, data: bytes) -> None:
    crash = check_one(TARGETS[target], data)
    if crash is not None:
        raise AssertionError(f"{target} parser crashed on {data!r}") from crash


# netlink ---------------------------------------------------------------------

NETLINK_SEEDS = netlink_seeds()


def test_recorded_replies_decode_to_what_ipvsadm_showed() -> None:
    """The fixture is a real table: every service, real server and counter decodes."""
    services = {}
    dests = []
    for datagram in NETLINK_SEEDS:
        for mtype, _f, _s, start, end in wire.iter_messages(datagram, len(datagram)):
            if mtype == wire.NLMSG_ERROR:
                continue
            message = datagram[start:end]
            if message[16] == wire.CMD_NEW_SERVICE:  # the kernel answers GET with NEW
                parsed = wire.parse_service(message, 0, len(message))
                if parsed is not None:
                    services[parsed[0].key] = parsed
        if datagram[16] == wire.CMD_NEW_DEST:
            dests += netlink._parse_dests(datagram)
    web = services[ServiceKey.for_address("tcp", "10.9.9.9", 80)]
    assert (web[0].scheduler, web[0].timeout, web[0].netmask) == ("sh", 300, 24)
    assert web[1]["connections"] > 0 and web[1]["bytes_in"] > 0
    assert ServiceKey.for_fwmark(8, wire.AF_INET6) in services
    assert ServiceKey.for_address("udp", "2001:db8::1", 53) in services
    assert {d.forwarding for d in dests} == {Forwarding.NAT, Forwarding.DR, Forwarding.TUNNEL}
    assert any(d.stats and d.stats.connections > 0 for d in dests)
    assert len(services) == 8 and len(dests) == 15


@FUZZ
@given(st.sampled_from(NETLINK_SEEDS), edits)
def test_netlink_mutated_real_replies(seed: bytes, changes) -> None:
    assert_no_crash("netlink", mutate(seed, changes, binary=True))


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(NETLINK_SEEDS), edits), min_size=2, max_size=3))
def test_netlink_mutated_datagrams_read_together(parts) -> None:
    # a destination dump is read as its datagrams joined (NetlinkBackend._dump_dests_raw)
    assert_no_crash("netlink", b"".join(mutate(seed, changes) for seed, changes in parts))


def _dest_reply() -> bytes:
    return next(d for d in NETLINK_SEEDS if d[16] == wire.CMD_NEW_DEST)


def _first_message(datagram: bytes) -> bytes:
    _t, _f, _s, start, end = next(wire.iter_messages(datagram, len(datagram)))
    return datagram[start:end]


@pytest.mark.parametrize(
    "garble",
    [
        pytest.param(lambda m: m[:30], id="truncated-message"),
        pytest.param(lambda m: m[:20] + b"\xff\x00" + m[22:], id="attribute-longer-than-message"),
        pytest.param(lambda m: m[:24] + b"\x05\x00" + m[26:], id="attribute-shorter-than-a-field"),
        pytest.param(lambda m: m[:16], id="no-generic-header"),
    ],
)
def test_garbled_dest_reply_is_a_decode_error(garble) -> None:
    message = garble(_first_message(_dest_reply()))
    with pytest.raises(wire.DecodeError):
        list(wire.iter_messages(message, len(message)))
        wire.parse_dest(message, 0, len(message))
        netlink._parse_dests(message)


def test_decode_error_is_a_backend_error_with_one_line() -> None:
    message = _first_message(_dest_reply())
    with pytest.raises(netlink.BackendError) as caught:
        wire.iter_messages(message[:-3], len(message) - 3).__next__()
    assert "\n" not in str(caught.value) and "malformed IPVS netlink reply" in str(caught.value)


def test_service_without_address_or_port_is_a_decode_error() -> None:
    key = ServiceKey.for_address("tcp", "10.0.0.1", 80)
    attrs = wire.nla(wire.SVC_ATTR_AF, b"\x02\x00") + wire.nla(wire.SVC_ATTR_PROTOCOL, b"\x06\x00")
    message = wire.message(16, 0, 1, wire.CMD_NEW_SERVICE, wire.nest(wire.CMD_ATTR_SERVICE, attrs))
    with pytest.raises(wire.DecodeError, match="service address absent"):
        wire.parse_service(message, 0, len(message))
    full = wire.message(16, 0, 1, wire.CMD_NEW_SERVICE, wire.service_key_nest(key))
    assert wire.parse_service(full, 0, len(full))[0].key == key


def test_unknown_family_and_non_ascii_names_are_decode_errors() -> None:
    odd_family = wire.nla(wire.SVC_ATTR_AF, b"\x07\x00") + wire.nla(
        wire.SVC_ATTR_FWMARK, b"\1\0\0\0"
    )
    sched = wire.nla(wire.SVC_ATTR_AF, b"\x02\x00") + wire.nla(wire.SVC_ATTR_FWMARK, b"\1\0\0\0")
    sched += wire.nla(wire.SVC_ATTR_SCHED_NAME, b"r\xffr\0")
    for attrs in (odd_family, sched):
        msg = wire.message(16, 0, 1, wire.CMD_NEW_SERVICE, wire.nest(wire.CMD_ATTR_SERVICE, attrs))
        with pytest.raises(wire.DecodeError):
            wire.parse_service(msg, 0, len(msg))
    daemon = wire.nest(wire.CMD_ATTR_DAEMON, wire.nla(wire.DAEMON_ATTR_MCAST_IFN, b"\x80eth\0"))
    msg = wire.message(16, 0, 1, wire.CMD_NEW_DAEMON, daemon)
    with pytest.raises(wire.DecodeError):
        syncd._parse_daemon(msg)


def test_error_message_without_its_code_is_a_decode_error() -> None:
    with pytest.raises(wire.DecodeError):
        wire.error_code(b"\x10\0\0\0\x02\0\0\0\1\0\0\0\0\0\0\0", 0)


# /proc/net/ip_vs ---------------------------------------------------------------

PROC_TEXT = procfs_seeds()[0]


def test_recorded_proc_text_parses() -> None:
    blocks = procfs.blocks(PROC_TEXT)
    assert len(blocks) == 8
    keys = [k for b in blocks for k in procfs.service_keys(procfs.head(b))]
    assert ServiceKey.for_address("udp", "2001:db8::1", 53) in keys
    counts = {}
    for block in blocks:
        counts.update(procfs.connections(block))
    assert counts[("10.1.1.3", 80)][0] > 0  # the tunnel server took the traffic


@FUZZ
@given(edits)
def test_procfs_mutated_real_text(changes) -> None:
    assert_no_crash("procfs", mutate(PROC_TEXT, changes, binary=False))


proc_hex = st.one_of(
    st.sampled_from([b"0A010107", b"0202", b"FFFFFFFF", b"1FFFFFFFF", b"10202", b"+A0", b"0_1"]),
    st.sampled_from(TOKENS),
    st.binary(max_size=10),
)
proc_v6 = st.sampled_from(
    [b"[2001:0db8:0000:0000:0000:0000:0000:0001]", b"[::1]", b"[zz::1]", b"[", b"[]", b"]"]
)
proc_count = st.one_of(
    st.integers(-(2**31), 2**32).map(lambda n: str(n).encode()), st.sampled_from(TOKENS)
)


@st.composite
def proc_texts(draw) -> bytes:
    """/proc/net/ip_vs text in the kernel's layout, with fields the kernel never prints."""
    text = b"".join(PROC_TEXT.splitlines(keepends=True)[:3])
    for _ in range(draw(st.integers(0, 3))):
        proto = draw(st.sampled_from([b"TCP", b"UDP", b"SCTP", b"FWM", b"ICMP", b""]))
        address = draw(st.one_of(proc_hex, proc_v6))
        where = address if proto == b"FWM" else address + b":" + draw(proc_hex)
        text += proto + b"  " + where + b" " + draw(st.sampled_from([b"rr", b"", b"sh"])) + b" \n"
        for _ in range(draw(st.integers(0, 3))):
            endpoint = draw(st.one_of(proc_hex, proc_v6)) + b":" + draw(proc_hex)
            counts = b"%-10s %-10s" % (draw(proc_count), draw(proc_count))
            text += b"  -> " + endpoint + b"      Masq    1      " + counts + b"\n"
    return text


@FUZZ
@given(proc_texts())
def test_procfs_generated_text(text: bytes) -> None:
    assert_no_crash("procfs", text)


_DEST = b"  -> 0A010107:0202      Masq    4      0          0         \n"


@pytest.mark.parametrize(
    "line",
    [
        pytest.param(
            b"  ->                                                \n", id="empty-real-line"
        ),
        pytest.param(_DEST.replace(b"4      0  ", b"4      -7 "), id="negative-count"),
        pytest.param(_DEST.replace(b":0202", b":10202"), id="port-past-16-bits"),
        pytest.param(_DEST.replace(b"0A010107", b"+A01_107"), id="signed-address"),
    ],
)
def test_bad_real_server_line_is_a_value_error(line: bytes) -> None:
    header = b"".join(PROC_TEXT.splitlines(keepends=True)[:3])
    text = header + b"UDP  0A090908:0202 rr ops  \n" + line
    (block,) = procfs.blocks(text)
    with pytest.raises(ValueError):
        procfs.connections(block)


def test_fwmark_past_32_bits_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        procfs.service_keys(b"FWM  1FFFFFFFF rr ")


# HTTP responses --------------------------------------------------------------

http_token = st.one_of(st.sampled_from(TOKENS), st.binary(max_size=12))
http_status = st.one_of(
    st.sampled_from([b"200", b"204", b"100", b"304", b"503", b"20", b"2000", b"+200"]), http_token
)
http_header = st.tuples(
    st.sampled_from(
        [b"Content-Length", b"Transfer-Encoding", b"X-Weight", b"Server", b"content-length"]
    ),
    st.one_of(st.sampled_from([b"chunked", b"2", b"0", b"75%", b"100"]), http_token),
)
http_chunk = st.tuples(
    st.one_of(st.sampled_from([b"0", b"2", b"a", b"ff;x=1", b"-6", b"-0007"]), http_token),
    st.binary(max_size=20),
)


@st.composite
def http_responses(draw) -> bytes:
    head = b"HTTP/1." + draw(st.sampled_from([b"1", b"0", b"x"])) + b" " + draw(http_status)
    head += b" " + draw(st.sampled_from([b"OK", b"", b"\xff"]))
    for name, value in draw(st.lists(http_header, max_size=5)):
        head += b"\r\n" + name + b": " + value
    if draw(st.booleans()):
        body = b"".join(
            size + b"\r\n" + data + b"\r\n" for size, data in draw(st.lists(http_chunk))
        )
    else:
        body = draw(st.binary(max_size=100))
    return head + b"\r\n\r\n" + body


@FUZZ
@given(http_responses(), st.lists(st.integers(0, 1 << 16), max_size=3), st.integers(0, 127))
def test_http_generated_responses(response: bytes, cuts: list[int], mode: int) -> None:
    assert_no_crash("http", bytes([mode]) + _cuts(cuts) + response)


@FUZZ
@given(st.sampled_from(HTTP_SEEDS), edits, st.integers(0, 127))
def test_http_mutated_responses(seed: bytes, changes, mode: int) -> None:
    assert_no_crash("http", bytes([mode]) + b"\x10\0\x30\0" + mutate(seed, changes, binary=False))


def _cuts(cuts: list[int]) -> bytes:
    cuts = [*cuts, 0, 0][:2]
    return b"".join(c.to_bytes(3, "little")[:2] for c in cuts)


def _probe(weight: bool = False) -> HttpProbe:
    check = CheckConfig(type="http", weight_header="X-Weight" if weight else "")
    return HttpProbe(Target("127.0.0.1", 8080, check))


def test_negative_chunk_size_ends_instead_of_looping() -> None:
    # int("-6", 16) is -6: the old decoder stepped back to the same line forever
    with time_limit():
        assert dechunk(b"-6\r\nxx") == (b"", False)
        assert dechunk(b"-0007\r\n") == (b"", False)
        # mode 8: a check with a body regex, so the chunked body is decoded
        body = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-6\r\nxx"
        result = run_http(body, [], 8)
    assert (result.ok, result.reason) == (False, "body did not match")


def test_non_ascii_digit_weight_is_ignored() -> None:
    assert parse_weight_pct(b"\xb2") is None  # '²' in latin-1: isdigit() but not int()
    assert parse_weight_pct("\u0663") is None
    assert parse_weight_pct(b"9" * 5000) == 100
    assert parse_weight_pct(b"0075%") == 75
    parser = _probe(weight=True)._parser()
    parser.feed(b"HTTP/1.1 200 OK\r\nX-Weight: \xb2\r\nContent-Length: 0\r\n\r\n")
    result = parser.result(0.0)
    assert result.ok and result.weight_pct is None and "ignored bad weight" in result.reason


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        (b"HTTP/1.1 " + b"2" * 5000 + b" OK\r\n\r\n", "bad status line"),
        (b"HTTP/1.1 +200 OK\r\n\r\n", "bad status line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n", "bad content-length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "bad content-length"),
    ],
)
def test_numbers_int_would_refuse_or_misread_are_protocol_errors(response, reason) -> None:
    check = CheckConfig(type="http", body_regex="ok")
    parser = HttpProbe(Target("127.0.0.1", 8080, check))._parser()
    parser.feed(response)
    result = parser.result(0.0)
    assert (result.ok, result.reason, result.category) == (False, reason, "protocol")


# config ------------------------------------------------------------------------

# Two crash classes of the config loader were found here and fixed in
# pulsed/config.py: TOML nested deeper than tomli's limit (RecursionError) and
# an integer literal of more than 4,300 digits (int()'s ValueError). The tests
# at the end hold both, and the fuzz properties use every token.
CONFIG_TOKENS = TOKENS

toml_scalar = st.one_of(
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, -1, 65535, 65536, 2**31, 2**32, 2**63, 10**400]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.sampled_from(
        [
            "0s",
            "1ms",
            "10s",
            "9" * 400 + "s",
            "1e400s",
            "-1s",
            "nan s",
            "fe80::1%lo",
            "10.0.0.1:80",
            "[::1]:80",
            "192.0.2.1/24",
            "",
            "/dev/zero",
            "rr",
            "sh-port",
            "2xx",
            "http",
            "exec",
        ]
    ),
    st.text(max_size=12),
)
toml_values = st.recursive(
    toml_scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(
            st.sampled_from(["a", "name", "weight", "check", "port"]), inner, max_size=3
        ),
    ),
    max_leaves=8,
)
SECTION_KEYS = {
    "daemon": [
        "state_dir",
        "resync_interval",
        "full_resync_interval",
        "retry_interval",
        "probe_tick_max",
        "remove_on_shutdown",
        "log_level",
        "event_loop",
    ],
    "api": ["enabled", "listen", "token_file", "status_refresh"],
    "vrrp": [
        "interface",
        "vrid",
        "priority",
        "advert_interval",
        "virtual_addresses",
        "unicast_peers",
        "track_services",
        "garp_count",
        "preempt_delay",
        "auth",
    ],
    "service": [
        "name",
        "vip",
        "port",
        "protocol",
        "fwmark",
        "family",
        "scheduler",
        "scheduler_flags",
        "persistence",
        "persistence_netmask",
        "min_healthy",
        "real",
        "check",
        "drain_timeout",
        "slow_start",
        "sorry_server",
    ],
    "real": ["address", "weight", "forwarding", "upper_threshold", "check"],
    "check": [
        "type",
        "interval",
        "timeout",
        "rise",
        "fall",
        "path",
        "expect_status",
        "max_bytes",
        "body_regex",
        "command",
        "port",
        "host",
        "headers",
    ],
}


def toml_value(value) -> str:
    """TOML text of a value (inline tables and arrays), floats included."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value:
            return "nan"
        if value in (float("inf"), float("-inf")):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return (
            '"'
            + "".join(c if c.isalnum() or c in " .:/%[]-_" else f"\\u{ord(c):04x}" for c in value)
            + '"'
        )
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"


@st.composite
def toml_configs(draw) -> str:
    lines = []
    for section in draw(st.lists(st.sampled_from(["daemon", "api", "vrrp"]), unique=True)):
        lines.append(f"[{section}]")
        for key in draw(st.lists(st.sampled_from(SECTION_KEYS[section]), unique=True)):
            lines.append(f"{key} = {toml_value(draw(toml_values))}")
    for _ in range(draw(st.integers(0, 2))):
        lines.append("[[service]]")
        keys = draw(st.lists(st.sampled_from(SECTION_KEYS["service"]), unique=True))
        for key in keys:
            value = draw(toml_values)
            if key == "check":
                value = {
                    k: draw(toml_values)
                    for k in draw(st.lists(st.sampled_from(SECTION_KEYS["check"]), unique=True))
                }
            lines.append(f"{key} = {toml_value(value)}")
    return "\n".join(lines) + "\n"


@settings(FUZZ, max_examples=200)
@given(toml_configs())
def test_config_generated_tables(text: str) -> None:
    assert_no_crash("config", text.encode())


@FUZZ
@given(st.sampled_from(config_seeds()), edits)
def test_config_mutated_shipped_files(seed: bytes, changes) -> None:
    assert_no_crash("config", mutate(seed, changes, binary=False, tokens=CONFIG_TOKENS))


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("x = " + "[" * 500 + "]" * 500, id="array-500-deep"),
        pytest.param("x = " + "{a=" * 500 + "1" + "}" * 500, id="inline-table-500-deep"),
        pytest.param("x = " + "9" * 5000, id="integer-of-5000-digits"),
        pytest.param("[daemon]\nresync_interval = " + "1" * 4301, id="interval-of-4301-digits"),
        # the inputs benchmarks/fuzz.py found, as it found them
        *(
            pytest.param(p.read_bytes().decode(), id=p.name)
            for p in sorted((FIXTURES / "config_crashes").iterdir())
        ),
    ],
)
def test_config_crashers_are_one_config_error(text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "deep.toml")
    assert len(str(caught.value).splitlines()) == 1
