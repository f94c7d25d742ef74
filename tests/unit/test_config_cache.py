"""The reload cache: parsing one [[service]] table at a time gives exactly the whole parse."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pulsed.config import ConfigError, ParseCache, parse_config

HEAD = '[daemon]\nstate_dir = "/tmp"\n[api]\nenabled = false\n'


def service(i: int, weight: int = 1, extra: str = "") -> str:
    return (
        f'[[service]]\nname = "s{i}"\nvip = "192.0.2.{i + 1}"\nport = 80\n{extra}'
        f'[[service.real]]\naddress = "10.0.0.{i + 1}:80"\nweight = {weight}\n'
    )


def outcome(text: str, cache: ParseCache | None):
    try:
        return parse_config(text, "f.toml", cache)
    except ConfigError as exc:
        return [str(issue) for issue in exc.issues]


def same_as_whole(text: str, cache: ParseCache) -> None:
    assert outcome(text, cache) == outcome(text, None)


def test_a_reload_parses_only_the_tables_whose_text_changed():
    cache = ParseCache()
    first = HEAD + "".join(service(i) for i in range(50))
    parse_config(first, "f.toml", cache)
    assert len(cache.texts) == 50
    second = first.replace(service(7), service(7, weight=9))
    config = parse_config(second, "f.toml", cache)
    assert config == parse_config(second, "f.toml")
    assert config.service[7].real[0].weight == 9
    assert len(cache.texts) == 50


@pytest.mark.parametrize(
    "tail",
    [
        "",
        '[vrrp]\ninterface = "eth0"\nvirtual_addresses = ["192.0.2.200/24"]\n',
        '[daemon]\nlog_level = "debug"\n',  # a second [daemon]: an error, as in the whole file
        'note = """\n[[service]]\nname = "x"\n"""\n',  # the header inside a string
        "[[service]] # a comment on the header line\nname = 's9'\n",
        "[[ service ]]\nname = 'late'\nvip = '192.0.2.90'\nport = 80\n",
        "[[service]]\nname = \n",  # does not parse
        "[service.check]\ntype = 'tcp'\n",
    ],
)
def test_awkward_documents_give_what_the_whole_parse_gives(tail):
    cache = ParseCache()
    body = HEAD + service(0) + service(1)
    parse_config(body, "f.toml", cache)
    same_as_whole(body + tail, cache)
    same_as_whole(tail + body, cache)
    same_as_whole(service(0) + tail + HEAD + service(1), cache)


def test_a_head_that_names_service_is_parsed_whole():
    cache = ParseCache()
    parse_config(HEAD + service(0), "f.toml", cache)
    same_as_whole("service = []\n" + HEAD + service(0), cache)


PIECES = st.sampled_from(
    [
        service(0),
        service(1),
        service(1, weight=5),
        service(2, extra='[service.check]\ntype = "tcp"\n'),
        service(0, extra="# comment\n"),
        "[api]\nenabled = false\n",
        '[daemon]\nstate_dir = "/tmp"\n',
        'x = """\n[[service]]\n"""\n',
        "[[service]]\n",
        "service = []\n",
        "\n",
        "[[service.real]]\naddress = '10.0.0.9:80'\n",
        '[vrrp]\ninterface = "eth0"\nvirtual_addresses = ["192.0.2.200/24"]\n',
        "[[ service ]]\nname = 's7'\nvip = '192.0.2.77'\nport = 81\n",
    ]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(PIECES, max_size=6), min_size=1, max_size=4))
def test_any_sequence_of_reloads_matches_the_whole_parse(documents):
    cache = ParseCache()
    for pieces in documents:
        same_as_whole("".join(pieces), cache)
