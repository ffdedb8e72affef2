"""Which paths are tracked, and the stat-only walk."""

from __future__ import annotations

import os
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import pytest

from testing.helpers import write
from watcher.config import DEFAULT_IGNORE
from watcher.tree import Diff, Matcher, diff_listing, entry_stat_key, listed, relpath, walk

M = Matcher(("*.json",), DEFAULT_IGNORE)


@pytest.mark.parametrize(
    ("rel", "tracked"),
    [
        ("a.json", True),
        ("sub/deeper/a.json", True),
        ("a.JSON", False),
        ("a.txt", False),
        (".a.json", False),
        (".hidden/a.json", False),
        (".x.json.swp", False),
        ("x.json.tmp", False),
        ("x.part", False),
        ("x.json~", False),
        ("sub/.git/x.json", False),
        ("", False),
    ],
)
def test_tracks(rel: str, tracked: bool) -> None:
    assert M.tracks(rel) is tracked


@pytest.mark.parametrize(
    "matcher",
    [M, Matcher(("*.json", "r_*.txt"), ()), Matcher(("*.json",), ("tmp*", "*.bak.json")), Matcher(("*",), ("*",))],
)
def test_tracks_name_is_wanted_and_not_ignored(matcher: Matcher) -> None:
    # The one-regex rule against the glob rules it combines, as fnmatch reads them.
    names = ["a.json", ".a.json", "a.json~", "r_1.txt", "r_1.txt.tmp", "tmp.json", "x.bak.json", "a\njson", "a.json\n"]
    for name in names:
        wanted = any(fnmatchcase(name, p) for p in matcher.patterns)
        expected = wanted and not any(fnmatchcase(name, p) for p in matcher.ignore_patterns)
        assert matcher.tracks_name(name) is expected, name
        assert matcher.tracks(f"sub/{name}") is expected, name


def test_non_recursive_tracks_top_level_only() -> None:
    flat = Matcher(("*.json",), DEFAULT_IGNORE, recursive=False)
    assert flat.tracks("a.json") and not flat.tracks("sub/a.json")


def test_relpath(tmp_path: Path) -> None:
    assert relpath(tmp_path, tmp_path / "a" / "b.json") == "a/b.json"
    assert relpath(tmp_path, tmp_path) == ""
    assert relpath(tmp_path / "a", tmp_path / "b.json") is None


@pytest.mark.parametrize(
    "tail", ["x.json", "..x.json", ".x.json", "a/../b.json", "a/./b.json", "a//b.json", "../b.json", "..", "a/"]
)
def test_relpath_shortcut_agrees_with_os_relpath(tmp_path: Path, tail: str) -> None:
    full = f"{tmp_path}/{tail}"
    rel = os.path.relpath(full, tmp_path)
    expected = None if rel == ".." or rel.startswith("../") else ("" if rel == "." else rel)
    assert relpath(tmp_path, full) == expected


def test_walk_lists_tracked_files_and_skips_the_rest(tmp_path: Path) -> None:
    for rel in ("a.json", "sub/b.json", "sub/deep/c.json", ".hidden/d.json", "e.txt", "f.json.tmp", "dir.json/g.json"):
        write(tmp_path / rel, "{}")
    os.symlink(tmp_path / "sub", tmp_path / "linked-dir")  # never descended into
    os.mkfifo(tmp_path / "pipe.json")  # listed (to be rejected), never opened
    found = dict(walk(tmp_path, M))
    assert sorted(found) == ["a.json", "dir.json/g.json", "pipe.json", "sub/b.json", "sub/deep/c.json"]
    st = os.stat(tmp_path / "a.json")
    assert entry_stat_key(found["a.json"]) == (2, st.st_mtime_ns, st.st_ino)  # the stat key: size, mtime_ns, inode
    assert found["a.json"].is_file(follow_symlinks=False) and not found["pipe.json"].is_file()
    assert sorted(rel for rel, _ in walk(tmp_path, M, under="sub")) == ["sub/b.json", "sub/deep/c.json"]
    os.unlink(tmp_path / "sub" / "b.json")
    assert entry_stat_key(found["sub/b.json"]) is None  # gone since the listing


def test_a_walk_can_leave_the_folders_below_to_others(tmp_path: Path) -> None:
    for rel in ("a.json", "sub/b.json", "sub/deep/c.json", "dir.json/g.json", ".hidden/d.json"):
        write(tmp_path / rel, "{}")
    os.symlink(tmp_path / "sub", tmp_path / "linked-dir")
    folders: list[str] = []
    assert [rel for rel, _ in walk(tmp_path, M, subfolders=folders)] == ["a.json"]
    assert sorted(folders) == ["dir.json", "sub"]  # not hidden ones, not links
    below = [rel for folder in folders for rel, _ in walk(tmp_path, M, under=folder)]
    assert sorted(below) == sorted(rel for rel, _ in walk(tmp_path, M) if rel != "a.json")


def test_a_listing_compared_with_the_stored_keys(tmp_path: Path) -> None:
    for name in ("same.json", "touched.json", "rejudge.json", "new.json"):
        write(tmp_path / name, "{}")
    keys = {rel: entry_stat_key(e) for rel, e in walk(tmp_path, M)}
    os.utime(tmp_path / "touched.json", ns=(1, 1))
    stored = {
        "same.json": keys["same.json"],
        "touched.json": keys["touched.json"],
        "rejudge.json": None,  # stored under other rules or another target
        "gone.json": (1, 2, 3),
    }
    diff = diff_listing(stored, sorted(listed(tmp_path, M, "")))
    changed = [("new.json", True, False), ("rejudge.json", True, True), ("touched.json", True, True)]
    assert diff == Diff(4, changed, ["gone.json"])


def test_a_listing_names_the_links_it_found_for_the_daemons_index(tmp_path: Path) -> None:
    write(tmp_path / "a.json", "{}")
    os.symlink("a.json", tmp_path / "link.json")
    (tmp_path / "sub").mkdir()
    os.symlink("nowhere.json", tmp_path / "sub" / "dangling.json")
    os.mkfifo(tmp_path / "pipe.json")  # not regular, not a link
    stored = {"link.json": entry_stat_key(next(e for rel, e in walk(tmp_path, M) if rel == "link.json"))}
    diff = diff_listing(stored, sorted(listed(tmp_path, M, "")))
    assert sorted(diff.links) == ["link.json", "sub/dangling.json"]  # unchanged ones too


def test_a_name_that_is_not_utf8_is_compared_with_its_stored_form(tmp_path: Path) -> None:
    for name in (b"a\xff.json", b"new\xff.json"):
        with open(os.path.join(os.fsencode(tmp_path), name), "wb") as fh:
            fh.write(b"{}")
    listing = sorted(listed(tmp_path, M, ""))
    key = entry_stat_key(next(e for rel, e, _ in listing if rel == os.fsdecode(b"a\xff.json")))
    stored = {"a\\xff.json": key, "gone\\xff.json": (1, 2, 3)}
    # Listed paths stay as the OS gave them (they are opened by that name); stored ones as stored.
    assert diff_listing(stored, listing) == Diff(2, [(os.fsdecode(b"new\xff.json"), True, False)], ["gone\\xff.json"])


def test_own_outputs_inside_the_watch_dir_are_never_tracked_nor_walked(make_settings: Any, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    s = make_settings(db_path=inbox / "state" / "w.db", report_dir=inbox, patterns=("*",))
    m = Matcher.from_settings(s)
    assert m.own == {
        "state/w.db", "state/w.db-wal", "state/w.db-shm", "state/w.db-journal", "state/w.db.lock",
        "state/w.db.health", "report.csv", "report.json", "report.md", "report.html",
        "points.csv", "points.json", "points.md",
    }  # fmt: skip
    for name in (*m.own, "a.json", "state/b.json"):
        write(inbox / name, "x")
    assert sorted(rel for rel, _ in walk(inbox, m)) == ["a.json", "state/b.json"]
    assert not m.tracks("report.json") and not m.tracks("state/w.db-wal") and m.tracks("state/b.json")
    beside = Matcher.from_settings(make_settings(db_path=inbox / "state" / "watcher.db"))  # reports: state/reports
    assert not beside.descends("state/reports") and not beside.tracks("state/reports/report.json")
    assert beside.descends("state") and beside.tracks("state/reports.json")
    assert Matcher.from_settings(make_settings()).own == frozenset()  # the usual case: all outside
