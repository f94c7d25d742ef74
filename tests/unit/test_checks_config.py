"""CheckConfig defaults, conversion from TOML values, and semantic problems."""

from __future__ import annotations

import msgspec
import pytest

from pulsed.checks.config import CheckConfig, check_problems, parse_status_spec
from pulsed.durations import Duration, parse_duration


def convert(fields: dict) -> CheckConfig:
    def dec_hook(tp: type, obj: object) -> object:
        if tp is Duration:
            return Duration(parse_duration(obj))  # type: ignore[arg-type]
        raise NotImplementedError

    return msgspec.convert(fields, CheckConfig, dec_hook=dec_hook)


def keys(check: CheckConfig) -> list[str]:
    return [key for key, _, _ in check_problems(check)]


def test_defaults_are_a_valid_tcp_check() -> None:
    check = CheckConfig()
    assert (check.type, check.interval, check.timeout, check.rise, check.fall) == (
        "tcp",
        2.0,
        1.0,
        2,
        3,
    )
    assert check.initial_state == "down"
    assert check_problems(check) == []


def test_service_table_merged_with_a_real_override_converts() -> None:
    service = {"type": "http", "path": "/health", "interval": "5s", "timeout": "2s"}
    real = {"port": 8081, "timeout": "500ms"}
    check = convert(service | real)
    assert (check.type, check.path, check.port, check.interval, check.timeout) == (
        "http",
        "/health",
        8081,
        5.0,
        0.5,
    )
    assert check_problems(check) == []


def test_unknown_key_is_rejected_with_its_name() -> None:
    with pytest.raises(msgspec.ValidationError, match="timout"):
        convert({"timout": "1s"})


def test_bad_type_is_rejected() -> None:
    with pytest.raises(msgspec.ValidationError, match="type"):
        convert({"type": "ping"})


def test_timeout_longer_than_interval() -> None:
    problems = check_problems(convert({"interval": "1s", "timeout": "2s"}))
    assert problems == [("timeout", Duration(2.0), "must not exceed interval (1s)")]


@pytest.mark.parametrize(
    ("fields", "key"),
    [
        ({"rise": 0}, "rise"),
        ({"fall": -1}, "fall"),
        ({"port": 70000}, "port"),
        ({"interval": "0"}, "interval"),
        ({"jitter": "-1s"}, None),  # negative durations do not parse at all
        ({"type": "http", "body_regex": "(unclosed"}, "body_regex"),
        ({"type": "http", "expect_status": ["2yy"]}, "expect_status"),
        ({"type": "http", "expect_status": ["299-200"]}, "expect_status"),
        ({"type": "http", "path": "health"}, "path"),
        ({"type": "http", "method": "GE T"}, "method"),
        ({"type": "http", "headers": {"X-A": "1\r\nEvil: 1"}}, "headers.X-A"),
        ({"type": "http", "headers": {"X-A": "snowman \u2603"}}, "headers.X-A"),
        ({"type": "http", "path": "/caf\u00e9"}, "path"),
        ({"type": "https", "host": "b\u00fccher.example"}, "host"),
        ({"type": "http", "max_bytes": 10}, "max_bytes"),
        ({"type": "http", "weight_header": "X Weight"}, "weight_header"),
        ({"type": "https", "ca_file": "/nonexistent/ca.pem"}, "ca_file"),
        ({"type": "https", "client_key": "/etc/hostname"}, "client_key"),
        ({"type": "exec"}, "command"),
    ],
)
def test_semantic_problems_name_their_key(fields: dict, key: str | None) -> None:
    if key is None:
        with pytest.raises(msgspec.ValidationError):
            convert(fields)
        return
    assert key in keys(convert(fields))


def test_every_problem_has_a_message() -> None:
    check = convert({"type": "http", "rise": 0, "body_regex": "("})
    for key, _value, message in check_problems(check):
        assert key and message and "\n" not in message


def test_status_spec_forms() -> None:
    assert parse_status_spec((200, "204", "301-302", "5xx")) == frozenset(
        {200, 204, 301, 302, *range(500, 600)}
    )
    with pytest.raises(ValueError, match="between 100 and 599"):
        parse_status_spec((99,))
