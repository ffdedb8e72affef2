"""Hostile input, faults and crashes against the real daemon; the invariant is checked after each."""

from __future__ import annotations

import json
import os
import random
import shutil
import sqlite3
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from testing.daemon import OBSERVERS, Daemon, settle
from testing.helpers import doc, wait_until, write, write_atomically
from watcher.outcomes import BAD_NAME

pytestmark = pytest.mark.slow  # real daemon processes


#: A scenario of hostile input or a fault runs under both observers: ``daemon`` parametrized so.
BOTH_OBSERVERS = pytest.mark.parametrize("daemon", list(OBSERVERS), indirect=True)


@pytest.fixture
def daemon(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Daemon]:
    d = Daemon(tmp_path, env=OBSERVERS[getattr(request, "param", "inotify")])
    yield d
    d.stop()


def mid(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


def reasons(d: Daemon) -> dict[str, str]:
    rows = d.query("SELECT path, errors FROM rejections")
    return {path: json.loads(errors)[0]["message"] for path, errors in rows}


@BOTH_OBSERVERS
def test_hostile_input_is_accounted_for_and_the_service_keeps_running(daemon: Daemon, tmp_path: Path) -> None:
    daemon.start()
    inbox = daemon.inbox
    valid = json.dumps(doc()).encode()
    write(inbox / "empty.json", b"")
    write(inbox / "truncated.json", valid[: len(valid) // 2])
    write(inbox / "binary.json", bytes(range(256)) * 4)
    write(inbox / "latin1.json", '{"issuer": "é"}'.encode("latin-1"))
    write(inbox / "bom.json", b"\xef\xbb\xbf" + valid)  # decided: tolerated, so scored
    write(inbox / "nested.json", b"[" * 200_000 + b"]" * 200_000)
    with (inbox / "huge.json").open("wb") as fh:  # sparse: 70 MiB that are never read into memory
        fh.truncate(70 * 1024 * 1024)
    n = 1_000_000
    write(
        inbox / "million.json", doc(threshold_arr=[i / n for i in range(n)], recall_arr=[1 - i / n for i in range(n)])
    )
    write(inbox / "with space.json", doc())
    write(inbox / "ünïcode-名前.json", doc())
    write(inbox / "new\nline.json", b"{")
    write(Path(os.fsdecode(os.fsencode(inbox) + b"/latin1-\xe9.json")), doc())  # a name that is not UTF-8
    write(inbox / "dir.json" / "inside.json", doc())  # a folder named x.json is a folder
    os.mkfifo(inbox / "pipe.json")
    outside = write(tmp_path / "outside.json", doc())
    os.symlink(outside, inbox / "link-out.json")
    os.symlink("nowhere.json", inbox / "dangling.json")
    os.symlink("with space.json", inbox / "link-in.json")
    settle(daemon, timeout=60)

    got = reasons(daemon)
    assert got["empty.json"] == "file is empty"
    assert got["truncated.json"].startswith("not valid JSON")
    assert got["binary.json"].startswith("not UTF-8 text")
    assert got["latin1.json"].startswith("not UTF-8 text")
    assert got["nested.json"] == "not valid JSON: nested too deeply"
    assert got["huge.json"] == f"file is {70 * 1024 * 1024} bytes, over max_file_bytes ({64 * 1024 * 1024})"
    assert got["new\nline.json"].startswith("not valid JSON")
    assert got["latin1-\\xe9.json"] == BAD_NAME
    assert got["pipe.json"] == "not a regular file (a FIFO); not read"
    assert got["link-out.json"] == "symbolic link points outside the watch directory; not followed"
    assert got["dangling.json"] == "dangling symbolic link: its target does not exist"
    assert set(daemon.results()) == {
        "bom.json", "million.json", "with space.json", "ünïcode-名前.json", "dir.json/inside.json", "link-in.json",
    }  # fmt: skip
    events = daemon.events()  # every line parses as one JSON object (the newline in a name is escaped)
    rejected = [e["path"] for e in events if e["event"] == "file_rejected"]
    assert sorted(rejected) == sorted(got)  # exactly one file_rejected per rejected file
    assert daemon.stop() == 0


@BOTH_OBSERVERS
def test_a_link_inside_the_tree_follows_its_target(daemon: Daemon) -> None:
    # A link that stays inside the watch dir is followed: its row is its target's content, and a
    # link whose target is gone is dangling.
    write(daemon.inbox / "a.json", doc(model_id=mid(1)))
    write(daemon.inbox / "sub" / "t.json", doc(model_id=mid(2)))
    os.symlink("a.json", daemon.inbox / "link.json")
    os.symlink("sub/t.json", daemon.inbox / "gone.json")
    daemon.start()
    settle(daemon)
    write(daemon.inbox / "a.json", doc(model_id=mid(3)))  # rewritten in place
    (daemon.inbox / "sub" / "t.json").unlink()
    settle(daemon, timeout=15)
    assert daemon.results() == {"a.json": mid(3), "link.json": mid(3)}
    assert reasons(daemon) == {"gone.json": "dangling symbolic link: its target does not exist"}


@BOTH_OBSERVERS
def test_file_that_vanishes_right_away_leaves_no_trace(daemon: Daemon) -> None:
    daemon.start()
    for i in range(50):
        write(daemon.inbox / f"brief{i}.json", doc()).unlink()
    write(daemon.inbox / "stays.json", doc())
    settle(daemon)
    assert list(daemon.results()) == ["stays.json"] and daemon.rejections() == set()


@BOTH_OBSERVERS
def test_a_watch_dir_that_goes_away_keeps_its_stored_results(daemon: Daemon) -> None:
    # Gone as a whole, as an unmount would do, and back, ten times: the race with a poll is lost
    # at least once.
    write(daemon.inbox / "a.json", doc())
    daemon.start()
    settle(daemon)
    moved = daemon.root / "inbox.old"

    def count(name: str) -> int:
        daemon.assert_alive()
        return [e["event"] for e in daemon.events()].count(name)

    for n in range(1, 11):
        daemon.inbox.rename(moved)
        wait_until(lambda: count("watch_dir_missing") == n, what="watch_dir_missing")
        assert list(daemon.results()) == ["a.json"], f"round {n}"
        moved.rename(daemon.inbox)
        wait_until(lambda: count("watch_dir_back") == n, what="watch_dir_back")
        settle(daemon)
    assert daemon.stop() == 0


def test_watch_dir_deleted_and_recreated(daemon: Daemon) -> None:
    write(daemon.inbox / "a.json", doc())
    daemon.start()
    settle(daemon)
    moved = daemon.root / "inbox.old"
    daemon.inbox.rename(moved)  # gone as a whole, as an unmount would do: results are kept meanwhile
    daemon.wait_event("watch_dir_missing")
    assert list(daemon.results()) == ["a.json"]
    daemon.inbox.mkdir()
    write(daemon.inbox / "b.json", doc())
    daemon.wait_event("watch_dir_back")
    settle(daemon)
    assert list(daemon.results()) == ["b.json"]
    write(daemon.inbox / "c.json", doc())  # and it is watched again
    wait_until(lambda: "c.json" in daemon.results(), what="c.json")
    shutil.rmtree(moved)
    assert daemon.stop() == 0


@pytest.mark.parametrize("observer", list(OBSERVERS))
def test_missing_watch_dir_at_start_is_reported_once_and_waited_for(tmp_path: Path, observer: str) -> None:
    d = Daemon(tmp_path, env=OBSERVERS[observer])
    d.inbox.rmdir()  # not there yet (e.g. a mount that comes later): no exit 3 and restart loop
    try:
        d.start()
        d.wait_event("watch_dir_missing")
        d.inbox.mkdir()
        write(d.inbox / "a.json", doc())
        d.wait_event("watch_dir_back")
        settle(d)
        write(d.inbox / "b.json", doc())  # watched from now on
        wait_until(lambda: sorted(d.results()) == ["a.json", "b.json"], what="b.json")
        assert [e["event"] for e in d.events()].count("watch_dir_missing") == 1
    finally:
        assert d.stop() == 0


def test_scan_with_a_missing_watch_dir_leaves_no_database_behind(tmp_path: Path) -> None:
    args = ["scan", "--watch-dir", str(tmp_path / "nope"), "--db", str(tmp_path / "v" / "w.db")]
    proc = subprocess.run([sys.executable, "-m", "watcher", *args], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 3
    assert proc.stderr == f"watcher: {tmp_path / 'nope'}: watch directory does not exist or is not a directory\n"
    assert not (tmp_path / "v").exists()


@BOTH_OBSERVERS
def test_database_write_locked_by_another_process(daemon: Daemon) -> None:
    daemon.start()
    locker = sqlite3.connect(daemon.db, timeout=30, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")  # another writer holds the lock while files arrive
    write(daemon.inbox / "a.json", doc())
    write(daemon.inbox / "b.json", b"{")
    threading.Event().wait(1.5)  # the scenario: the lock is held for a while
    daemon.assert_alive()
    assert daemon.results() == {}  # the writer waits for the lock (busy timeout), it does not fail
    locker.execute("COMMIT")
    locker.close()
    settle(daemon)
    assert list(daemon.results()) == ["a.json"] and daemon.rejections() == {"b.json"}


@BOTH_OBSERVERS
def test_long_reader_does_not_block_the_writer(daemon: Daemon) -> None:
    write(daemon.inbox / "a.json", doc())
    daemon.start()
    settle(daemon)
    reader = sqlite3.connect(f"{daemon.db.as_uri()}?mode=ro", uri=True, isolation_level=None)
    reader.execute("BEGIN")
    assert reader.execute("SELECT count(*) FROM results").fetchone() == (1,)  # holds a snapshot open
    write(daemon.inbox / "b.json", doc())
    settle(daemon)  # the writer went on
    assert reader.execute("SELECT count(*) FROM results").fetchone() == (1,)  # the reader's snapshot is stable
    reader.execute("COMMIT")
    reader.close()


@pytest.mark.parametrize("observer", list(OBSERVERS))
def test_unwritable_report_dir_is_logged_and_recovers(tmp_path: Path, observer: str) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the report folder should be")
    d = Daemon(tmp_path, env={**OBSERVERS[observer], "WATCHER_REPORT_DIR": str(blocker / "reports")})
    try:
        d.start()
        write(d.inbox / "a.json", doc())
        d.wait_event("report_write_failed")
        settle(d)  # the database is unaffected
        blocker.unlink()
        blocker.mkdir()
        wait_until(lambda: (blocker / "reports" / "report.csv").exists(), what="report after recovery")
    finally:
        assert d.stop() == 0


@BOTH_OBSERVERS
def test_kill_9_at_random_points_then_restart(daemon: Daemon) -> None:
    rng = random.Random(5)
    stop = threading.Event()

    def churn() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            name = daemon.inbox / f"f{rng.randrange(40)}.json"
            action = rng.random()
            if action < 0.5:
                write_atomically(name, doc(model_id=f"00000000-0000-4000-8000-{rng.randrange(20):012d}"))
            elif action < 0.7:
                write(name, b"{broken")
            elif action < 0.85 and name.exists():
                name.rename(daemon.inbox / f"f{rng.randrange(40)}.json")
            elif name.exists():
                name.unlink()

    worker = threading.Thread(target=churn)
    worker.start()
    try:
        for _ in range(6):
            daemon.start()
            threading.Event().wait(rng.uniform(0.05, 0.8))  # the scenario: die at a random moment
            daemon.kill()
    finally:
        stop.set()
        worker.join()
    daemon.start()
    settle(daemon, timeout=60)
    assert daemon.query("PRAGMA integrity_check") == [("ok",)]
    assert daemon.stop() == 0


def test_files_are_created_without_world_access(daemon: Daemon) -> None:
    write(daemon.inbox / "a.json", doc())
    daemon.start()
    settle(daemon)
    reports = daemon.root / "var" / "reports"
    wait_until(lambda: (reports / "report.csv").exists(), what="reports")
    state = daemon.root / "var"
    made = [state, reports, *state.glob("watcher.db*"), *reports.iterdir()]
    assert {p.name for p in made} >= {"watcher.db", "watcher.db-wal", "watcher.db-shm", "watcher.db.lock"}
    for path in made:
        assert stat.S_IMODE(path.stat().st_mode) & 0o007 == 0, f"{path} is world-accessible"
