"""The director's drain survives a restart; an unusable record starts drained."""

from __future__ import annotations

import os

from pulsed.announce.drain_state import FILE_NAME, load_drained, save_drained


def test_no_record_is_not_drained(tmp_path):
    assert load_drained(tmp_path) is False


def test_drain_and_undrain_round_trip(tmp_path):
    save_drained(tmp_path, True)
    assert load_drained(tmp_path) is True
    save_drained(tmp_path, False)
    assert load_drained(tmp_path) is False


def test_unusable_records_start_drained_and_are_moved_aside(tmp_path):
    for content in (b"", b"{", b'{"version": 1}', b'{"version": 9, "drained": false}',
                    b'{"version": 1, "drained": "no"}', b"\xff\xfe"):  # fmt: skip
        path = tmp_path / FILE_NAME
        path.write_bytes(content)
        assert load_drained(tmp_path) is True, content
        assert not path.exists()  # moved aside, never read again
    assert len([p for p in os.listdir(tmp_path) if ".corrupt-" in p]) == 6


def test_a_directory_in_its_place_starts_drained(tmp_path):
    (tmp_path / FILE_NAME).mkdir()
    assert load_drained(tmp_path) is True
