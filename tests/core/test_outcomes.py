"""The shared shapes: stat keys and the stored form of a path."""

from __future__ import annotations

import os

import pytest

from watcher.outcomes import FileStat, stored_path


def test_a_file_stat_equals_the_plain_key_the_database_returns(tmp_path) -> None:
    path = tmp_path / "a.json"
    path.write_bytes(b"{}")
    s = os.stat(path)
    assert FileStat.of(s) == (2, s.st_mtime_ns, s.st_ino)


@pytest.mark.parametrize(
    ("rel", "stored"),
    [
        ("sub/a.json", "sub/a.json"),
        ("caf\u00e9/\u6a21\u578b.json", "caf\u00e9/\u6a21\u578b.json"),  # valid UTF-8: as it is
        (os.fsdecode(b"d\xfe/a\xff.json"), "d\\xfe/a\\xff.json"),  # bytes the OS could not decode
        ("x\ud800.json", "x\\ud800.json"),  # a surrogate no name on disk decodes to: escaped too
    ],
)
def test_stored_path_is_text_any_database_or_log_can_hold(rel: str, stored: str) -> None:
    assert stored_path(rel) == stored
    stored.encode("utf-8")
