"""include = [...]: one config split over files; errors name the file at fault."""

from __future__ import annotations

from pathlib import Path

import pytest

from pulsed.config import ConfigError, ParseCache, load_config

SERVICE = """
[[service]]
name = "{name}"
vip = "192.0.2.{n}"
port = 80
[[service.real]]
address = "10.0.0.{n}:80"
weight = {weight}
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_services_from_included_files_are_appended_in_sorted_order(tmp_path: Path) -> None:
    main = write(
        tmp_path / "pulsed.toml",
        'include = ["conf.d/*.toml"]\n' + SERVICE.format(name="a", n=1, weight=1),
    )
    write(tmp_path / "conf.d/20-c.toml", SERVICE.format(name="c", n=3, weight=1))
    write(
        tmp_path / "conf.d/10-b.toml",
        SERVICE.format(name="b", n=2, weight=1) + '[daemon]\nretry_interval = "2s"\n',
    )
    config = load_config(main)
    assert [s.name for s in config.service] == ["a", "b", "c"]
    assert config.daemon.retry_interval == 2.0


def test_error_names_the_included_file_and_its_own_element(tmp_path: Path) -> None:
    main = write(
        tmp_path / "pulsed.toml",
        'include = ["conf.d/*.toml"]\n' + SERVICE.format(name="a", n=1, weight=1),
    )
    bad = write(tmp_path / "conf.d/b.toml", SERVICE.format(name="b", n=2, weight=-5))
    with pytest.raises(ConfigError) as err:
        load_config(main)
    (issue,) = err.value.issues
    assert issue.file == str(bad)
    assert issue.path == "service[0].real[0].weight"


def test_a_table_set_in_two_files_is_refused_naming_both(tmp_path: Path) -> None:
    main = write(
        tmp_path / "pulsed.toml",
        'include = ["d/*.toml"]\nservice = []\n[daemon]\nretry_interval = "1s"\n',
    )
    other = write(tmp_path / "d/x.toml", '[daemon]\nretry_interval = "2s"\n')
    with pytest.raises(ConfigError) as err:
        load_config(main)
    (issue,) = err.value.issues
    assert issue.file == str(other) and str(main) in issue.message


def test_invalid_toml_in_an_included_file_names_it(tmp_path: Path) -> None:
    main = write(tmp_path / "pulsed.toml", 'include = ["d/*.toml"]\nservice = []\n')
    broken = write(tmp_path / "d/x.toml", "[[service]\n")
    with pytest.raises(ConfigError) as err:
        load_config(main)
    assert err.value.issues[0].file == str(broken)
    assert "invalid TOML" in err.value.issues[0].message


def test_missing_plain_file_is_an_error_but_an_empty_glob_is_not(tmp_path: Path) -> None:
    main = write(tmp_path / "pulsed.toml", 'include = ["conf.d/*.toml"]\nservice = []\n')
    assert load_config(main).service == ()
    write(main, 'include = ["extra.toml"]\nservice = []\n')
    with pytest.raises(ConfigError, match="no such file"):
        load_config(main)


def test_services_may_live_only_in_included_files(tmp_path: Path) -> None:
    main = write(tmp_path / "pulsed.toml", 'include = ["d/*.toml"]\n')
    with pytest.raises(ConfigError, match="included files"):
        load_config(main)
    write(tmp_path / "d/a.toml", SERVICE.format(name="a", n=1, weight=1))
    assert [s.name for s in load_config(main).service] == ["a"]


def test_included_files_do_not_include(tmp_path: Path) -> None:
    main = write(tmp_path / "pulsed.toml", 'include = ["d/*.toml"]\nservice = []\n')
    inner = write(tmp_path / "d/a.toml", 'include = ["more/*.toml"]\n')
    with pytest.raises(ConfigError) as err:
        load_config(main)
    assert err.value.issues[0].file == str(inner)


def test_a_reload_reads_the_included_files_again(tmp_path: Path) -> None:
    """The parse cache is keyed by the main file's service texts: a change in an
    included file must still be seen (the daemon reloads through load_config)."""
    cache = ParseCache()
    main = write(
        tmp_path / "pulsed.toml",
        'include = ["d/*.toml"]\n' + SERVICE.format(name="a", n=1, weight=1),
    )
    part = write(tmp_path / "d/b.toml", SERVICE.format(name="b", n=2, weight=1))
    first = load_config(main, cache)
    assert first.service_named("b").real[0].weight == 1
    write(part, SERVICE.format(name="b", n=2, weight=7))
    second = load_config(main, cache)
    assert second.service_named("b").real[0].weight == 7
    assert second.service_named("a") is first.service_named("a")  # the cache still works


def test_the_main_file_is_not_one_of_its_own_parts(tmp_path: Path) -> None:
    """Named, it is an error; matched by a glob beside it, it is skipped. Without this,
    the API validated `include = ["pulsed.toml"]` against the *old* file on disk."""
    main = tmp_path / "pulsed.toml"
    link = tmp_path / "link.toml"
    link.symlink_to(main)
    for named in ("pulsed.toml", "link.toml", str(main)):
        write(main, f'include = ["{named}"]\n' + SERVICE.format(name="a", n=1, weight=1))
        with pytest.raises(ConfigError) as err:
            load_config(main)
        assert [str(i) for i in err.value.issues] == [
            f'{main}: include[0] = "{named}": names this file itself'
        ]
    link.unlink()
    write(main, 'include = ["*.toml"]\n' + SERVICE.format(name="a", n=1, weight=1))
    write(tmp_path / "b.toml", SERVICE.format(name="b", n=2, weight=1))
    assert [s.name for s in load_config(main).service] == ["a", "b"]


def test_a_duplicate_names_the_file_of_the_first(tmp_path: Path) -> None:
    main = write(
        tmp_path / "pulsed.toml",
        'include = ["conf.d/*.toml"]\n' + SERVICE.format(name="a", n=1, weight=1),
    )
    part = write(
        tmp_path / "conf.d/b.toml",
        SERVICE.format(name="b", n=2, weight=1) + SERVICE.format(name="a", n=3, weight=1),
    )
    with pytest.raises(ConfigError) as err:
        load_config(main)
    (issue,) = err.value.issues
    assert (issue.file, issue.path) == (str(part), "service[1].name")
    assert issue.message == f"duplicate service name (also service[0] of {main})"


def test_through_the_api_includes_stay_under_the_config_directory(tmp_path: Path) -> None:
    """A config sent with a token (validate, plan, apply) names files under its own
    directory only, and learns nothing of any other path, not even that it exists."""
    from pulsed.config_api import validate_text

    etc = tmp_path / "etc"
    write(etc / "conf.d/10-b.toml", SERVICE.format(name="b", n=2, weight=1))
    secret = write(tmp_path / "secret.toml", SERVICE.format(name="leaked", n=3, weight=1))
    (etc / "conf.d/20-link.toml").symlink_to(secret)
    main = str(etc / "pulsed.toml")
    head = SERVICE.format(name="a", n=1, weight=1)

    config, problems = validate_text('include = ["conf.d/10-*.toml"]\n' + head, main)
    assert problems == [] and config is not None
    assert [s.name for s in config.service] == ["a", "b"]

    for pattern in [str(secret), "../secret.toml", str(tmp_path / "nonexistent.toml"), "../*"]:
        config, problems = validate_text(f'include = ["{pattern}"]\n' + head, main)
        assert config is None
        assert [p["message"] for p in problems] == [
            f"is outside {etc}: a config sent through the API includes files there only"
        ], pattern
    config, problems = validate_text('include = ["conf.d/*.toml"]\n' + head, main)
    assert config is None
    assert [p["message"] for p in problems] == [f"leads outside {etc}"]
    assert "leaked" not in str(problems)

    # The file itself, read by the daemon or check-config, may include anything.
    write(etc / "pulsed.toml", f'include = ["{secret}"]\n' + head)
    assert [s.name for s in load_config(etc / "pulsed.toml").service] == ["a", "leaked"]
