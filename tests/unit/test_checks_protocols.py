"""Validation of the udp, dns, smtp, grpc and send_expect check keys, and the
message codecs and checksums the probes write by hand."""

from __future__ import annotations

import msgspec
import pytest

from pulsed.checks.config import CheckConfig, Step, check_problems, uses_tls


def problems(**fields: object) -> list[str]:
    return [key for key, _, _ in check_problems(msgspec.convert(fields, CheckConfig))]


def test_udp_keys() -> None:
    assert problems(type="udp") == []
    assert problems(type="udp", payload="a", payload_hex="61") == ["payload_hex"]
    assert problems(type="udp", payload_hex="zz") == ["payload_hex"]
    assert problems(type="udp", payload="x" * 70000) == ["payload"]
    assert problems(type="udp", expect="(", expect_hex="0") == [
        "expect_hex",
        "expect_hex",
        "expect",
    ]


def test_dns_keys() -> None:
    assert problems(type="dns", query_name="example.org", query_type="mx") == []
    assert problems(type="dns") == ["query_name"]
    assert problems(type="dns", query_name="a..b") == ["query_name"]
    assert problems(type="dns", query_name="x.", expect_rcode="NXDOMAIN") == []


def test_smtp_keys() -> None:
    assert problems(type="smtp", helo_name="lvs1.example.org") == []
    assert problems(type="smtp", helo_name="[10.0.0.1]") == []
    assert problems(type="smtp", helo_name="bad name\r\nRCPT") == ["helo_name"]
    assert problems(type="smtp", starttls=True, host="a b") == ["host"]


def test_grpc_keys() -> None:
    assert problems(type="grpc", grpc_service="pkg.Service") == []
    assert problems(type="grpc", grpc_service="bad\n") == ["grpc_service"]


def test_send_expect_keys() -> None:
    assert problems(type="send_expect", steps=[{"send": "PING\r\n", "expect": "PONG"}]) == []
    assert problems(type="send_expect") == ["steps"]
    assert problems(type="send_expect", steps=[{}]) == ["steps[0]"]
    assert problems(type="send_expect", steps=[{"send": "a", "send_hex": "61"}]) == [
        "steps[0].send_hex"
    ]
    assert problems(type="send_expect", steps=[{"expect": "("}]) == ["steps[0].expect"]
    assert problems(type="send_expect", steps=[{"send": "x"}] * 33) == ["steps"]
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"type": "send_expect", "steps": [{"sned": "x"}]}, CheckConfig)


def test_step_payload() -> None:
    assert Step(send="PING\r\n").payload() == b"PING\r\n"
    assert Step(send_hex="00 ff").payload() == b"\x00\xff"


def test_tls_files_checked_for_every_tls_type(tmp_path) -> None:
    missing = str(tmp_path / "missing.pem")
    for fields in (
        {"type": "smtp", "starttls": True},
        {"type": "grpc", "tls": True},
        {"type": "send_expect", "tls": True, "steps": [{"send": "x"}]},
    ):
        cfg = msgspec.convert({**fields, "ca_file": missing}, CheckConfig)
        assert uses_tls(cfg)
        assert [key for key, _, _ in check_problems(cfg)] == ["ca_file"]
    assert not uses_tls(msgspec.convert({"type": "grpc", "ca_file": missing}, CheckConfig))


def test_icmp_checksum() -> None:
    from pulsed.checks.icmp import checksum

    # RFC 1071's example, and a message whose checksum field is filled sums to 0.
    data = bytes.fromhex("0001f203f4f5f6f7")
    assert checksum(data) == 0x220D
    message = bytes.fromhex("0800") + (0x220D).to_bytes(2, "big") + data
    assert checksum(bytes.fromhex("08000000") + data) == checksum(b"\x08\x00" + b"\0\0" + data)
    assert (
        checksum(
            message[:2]
            + checksum(message[:2] + b"\0\0" + message[4:]).to_bytes(2, "big")
            + message[4:]
        )
        == 0
    )
