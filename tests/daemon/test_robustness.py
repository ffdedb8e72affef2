"""The daemon and the CLI at the edges an operator meets in the first week: its own files in the
watch dir, stray environment variables, a second database, missing folders, concurrent scans."""

from __future__ import annotations

import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from testing.daemon import OBSERVERS, Daemon, settle
from testing.helpers import doc, wait_until, write, write_atomically
from watcher.dblock import acquire

pytestmark = pytest.mark.slow  # real daemon processes


def mid(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATCHER_")}
    return subprocess.run(
        [sys.executable, "-m", "watcher", *args, "--log-format", "json"],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.fixture
def daemon(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Daemon]:
    d = Daemon(tmp_path, env=OBSERVERS[getattr(request, "param", "inotify")])
    yield d
    d.stop()


def test_unknown_watcher_variable_is_warned_about_once_and_the_daemon_goes_on(tmp_path: Path) -> None:
    d = Daemon(tmp_path, env={"WATCHER_UNRELATED_JOB_ID": "42"})
    try:
        d.start()
        write(d.inbox / "a.json", doc(model_id=mid(1)))
        d.wait_results({"a.json": mid(1)})
        warnings = [e for e in d.events() if e["event"] == "unknown_environment_variable"]
        assert [(e["level"], e["variable"]) for e in warnings] == [("warning", "WATCHER_UNRELATED_JOB_ID")]
    finally:
        assert d.stop() == 0


@pytest.mark.parametrize("observer", list(OBSERVERS))
def test_own_database_and_reports_inside_the_watch_dir_are_never_judged(tmp_path: Path, observer: str) -> None:
    # Everything in one folder: the database (with its -wal, -shm and .lock) and the reports
    # (report.json is a *.json file) live inside the watch dir.
    d = Daemon(tmp_path, db=tmp_path / "inbox" / "state" / "watcher.db", env=OBSERVERS[observer])
    try:
        d.start()
        write(d.inbox / "a.json", doc(model_id=mid(1)))
        d.wait_results({"a.json": mid(1)})
        wait_until(lambda: (d.inbox / "state" / "reports" / "report.json").exists(), what="report.json")
        write(d.inbox / "b.json", doc(model_id=mid(2)))  # reports rewritten while the daemon watches
        d.wait_results({"a.json": mid(1), "b.json": mid(2)})
        wait_until(lambda: mid(2) in (d.inbox / "state" / "reports" / "report.json").read_text(), what="report")
        d.wait_event("reports_written", writes=2)
        settle(d)
    finally:
        assert d.stop() == 0
    assert d.rejections() == set()
    assert not [e for e in d.events() if e["event"] == "file_rejected"]
    # A scan with the same layout (its own reports, its own database) agrees.
    config = write(tmp_path / "c.toml", "patterns = ['*']\n")  # the database's files match too
    proc = run_cli("scan", "--watch-dir", str(d.inbox), "--db", str(d.db), "--config", str(config))
    assert proc.returncode == 0, proc.stderr
    assert d.rejections() == set() and d.results() == {"a.json": mid(1), "b.json": mid(2)}


def test_a_second_database_in_the_same_folder_never_overwrites_the_first_ones_reports(tmp_path: Path) -> None:
    write(tmp_path / "a" / "x.json", doc(model_id=mid(1)))
    write(tmp_path / "b" / "y.json", doc(model_id=mid(2)))
    first = run_cli("scan", "--watch-dir", "a", "--db", "var/watcher.db", cwd=tmp_path)
    second = run_cli("scan", "--watch-dir", "b", "--db", "var/other.db", cwd=tmp_path)
    assert (first.returncode, second.returncode) == (0, 0), first.stderr + second.stderr
    assert mid(1) in (tmp_path / "var" / "reports" / "report.csv").read_text()
    assert mid(2) not in (tmp_path / "var" / "reports" / "report.csv").read_text()
    assert mid(2) in (tmp_path / "var" / "other-reports" / "report.csv").read_text()


def churn(inbox: Path, stop: threading.Event, seed: int) -> int:
    """Write, rewrite (valid or not) and delete a few dozen files until ``stop``; returns the count."""
    rng = random.Random(seed)
    done = 0
    while not stop.is_set():
        name = inbox / f"sub{rng.randrange(3)}" / f"f{rng.randrange(40)}.json"
        roll = rng.random()
        if roll < 0.15:
            name.unlink(missing_ok=True)
        elif roll < 0.3:
            write(name, b"{")
        else:
            write_atomically(name, doc(model_id=mid(rng.randrange(60)), issuer=f"u{rng.randrange(9)}@example.com"))
        done += 1
        stop.wait(0.005)
    return done


def test_scans_beside_a_churning_daemon_never_commit_conflicting_verdicts(daemon: Daemon) -> None:
    daemon.start()
    stop = threading.Event()
    counted: list[int] = []
    writer = threading.Thread(target=lambda: counted.append(churn(daemon.inbox, stop, 7)))
    writer.start()
    outcomes = []
    try:
        for _ in range(5):  # each scan is a new process: a few seconds of churn in all
            proc = run_cli("scan", "--watch-dir", str(daemon.inbox), "--db", str(daemon.db))
            outcomes.append((proc.returncode, proc.stderr))
    finally:
        stop.set()
        writer.join()
    refused = f"watcher: {daemon.db}: a watcher daemon is running on this database and keeps it current\n"
    assert outcomes == [(3, refused)] * 5
    assert counted[0] > 100
    settle(daemon)
    assert not [e for e in daemon.events() if e["event"] in ("database_error", "writer_failed")]


def test_a_daemon_started_during_a_scan_waits_for_it_and_a_second_scan_is_refused(daemon: Daemon) -> None:
    write(daemon.inbox / "a.json", doc(model_id=mid(1)))
    held = acquire(daemon.db, "scan")  # as a long 'watcher scan' would hold it
    try:
        second = run_cli("scan", "--watch-dir", str(daemon.inbox), "--db", str(daemon.db))
        assert (second.returncode, second.stderr) == (
            3, f"watcher: {daemon.db}: a 'watcher scan' is running on this database\n",
        )  # fmt: skip
        daemon.start(wait=False)
        daemon.wait_event("waiting_for_scan")
        daemon.assert_alive()
    finally:
        os.close(held)
    daemon.wait_event("daemon_ready")
    daemon.wait_results({"a.json": mid(1)})


def test_bulk_reconciles_log_scored_files_at_debug_and_rejections_always(daemon: Daemon, tmp_path: Path) -> None:
    for n in range(5):
        write(daemon.inbox / f"ok{n}.json", doc(model_id=mid(n)))
    write(daemon.inbox / "bad.json", b"{")
    scan = run_cli("scan", "--watch-dir", str(daemon.inbox), "--db", str(tmp_path / "scan" / "w.db"))
    assert scan.returncode == 0, scan.stderr
    names = [json.loads(line)["event"] for line in scan.stderr.splitlines()]
    assert sorted(names) == ["file_rejected", "scan_done"]  # not a line per scored file at info

    daemon.start()  # start-up reconcile: bulk as well
    daemon.wait_results({f"ok{n}.json": mid(n) for n in range(5)})
    write(daemon.inbox / "live.json", doc(model_id=mid(9)))  # a live event: one line at info
    write(daemon.inbox / "live-bad.json", b"[")
    daemon.wait_event("file_scored", path="live.json")
    daemon.wait_event("file_rejected", path="live-bad.json")
    events = daemon.events()
    assert [e["path"] for e in events if e["event"] == "file_scored"] == ["live.json"]
    assert sorted(e["path"] for e in events if e["event"] == "file_rejected") == ["bad.json", "live-bad.json"]
    assert [e["seen"] for e in events if e["event"] == "reconcile_done"][:1] == [6]


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (children of all its threads, recursively)."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        for task in Path(f"/proc/{todo.pop()}/task").glob("*"):
            try:
                children = {int(c) for c in (task / "children").read_text().split()}
            except OSError:
                continue
            todo += children - found
            found |= children
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # a zombie is dead; reaping it is its new parent's business


def test_kill_9_of_the_daemon_takes_its_workers_forkserver_and_tracker_along(tmp_path: Path) -> None:
    d = Daemon(tmp_path, env={"WATCHER_WORKERS": "2"})
    d.start()
    assert d.proc is not None
    expected = {f"f{n}.json": mid(n) for n in range(120)}
    for name, model in expected.items():  # a burst: judged in the worker processes
        write(d.inbox / name, doc(model_id=model))
    d.wait_results(expected, timeout=60)
    helpers = descendants(d.proc.pid)
    # the resource tracker, the forkserver, its two workers, the report page's process
    assert len(helpers) >= 4, helpers
    d.proc.kill()  # the daemon alone (Daemon.kill would kill its helpers itself)
    d.proc.wait(10)
    wait_until(lambda: not any(alive(p) for p in helpers), timeout=20, what=f"the daemon's helpers {helpers} to die")
    wait_until(lambda: d.log_path.read_bytes().endswith(b"\n"), what="the log to end")  # nothing half-written
    assert d.events()  # every line of the log is JSON, including anything the helpers printed


def test_idle_checkpoint_keeps_the_main_file_current_and_a_backup_restores(daemon: Daemon, tmp_path: Path) -> None:
    daemon.start()
    expected = {f"f{n}.json": mid(n) for n in range(30)}
    for name, model in expected.items():
        write(daemon.inbox / name, doc(model_id=model))
    daemon.wait_results(expected)
    # The burst is over: the log is emptied into the main file, which alone is now current.
    wal = daemon.db.with_name("watcher.db-wal")
    wait_until(lambda: wal.stat().st_size == 0, what="an empty write-ahead log")
    copy = tmp_path / "plain-copy.db"
    shutil.copyfile(daemon.db, copy)  # the main file only, as 'cp watcher.db' would
    assert sqlite3.connect(copy).execute("SELECT count(*) FROM results").fetchone()[0] == 30

    if shutil.which("sqlite3") is None:
        pytest.skip("the sqlite3 command (Debian package sqlite3; .ci/run installs it) is not installed")
    backup = tmp_path / "backup.db"  # docs/how-it-works.md's online backup, taken while the daemon runs
    subprocess.run(["sqlite3", str(daemon.db), f".backup '{backup}'"], check=True, timeout=30)
    (daemon.inbox / "f0.json").unlink()  # changes after the backup
    write(daemon.inbox / "late.json", doc(model_id=mid(99)))
    del expected["f0.json"]
    expected["late.json"] = mid(99)
    daemon.wait_results(expected)
    assert daemon.stop() == 0

    for f in daemon.db.parent.glob("watcher.db*"):  # docs/how-it-works.md's restore
        if not f.name.endswith(".lock"):
            f.unlink()
    shutil.copyfile(backup, daemon.db)
    assert sqlite3.connect(daemon.db).execute("PRAGMA integrity_check").fetchone() == ("ok",)
    daemon.start()
    daemon.wait_results(expected)
    settle(daemon)


@pytest.mark.parametrize("daemon", list(OBSERVERS), indirect=True)
def test_database_removed_while_running_is_noticed_and_rebuilt_from_the_folder(daemon: Daemon) -> None:
    expected = {f"f{n}.json": mid(n) for n in range(10)}
    for name, model in expected.items():
        write(daemon.inbox / name, doc(model_id=model))
    write(daemon.inbox / "bad.json", b"{")
    daemon.start()
    daemon.wait_results(expected)
    report = daemon.db.parent / "reports" / "report.csv"
    # An operator's rm of the file, of the file and its companions, and a clean-up of the folder.
    for removed in (["watcher.db"], ["watcher.db", "watcher.db-wal", "watcher.db-shm"], None):
        if removed is None:
            # The daemon writes its reports in there meanwhile (temporary files come and go):
            # an operator's rm -rf, which ignores what is gone already, until the folder is gone.
            while daemon.db.parent.exists():
                shutil.rmtree(daemon.db.parent, ignore_errors=True)
        for name in removed or ():
            (daemon.db.parent / name).unlink(missing_ok=True)
        daemon.wait_event("database_gone")
        daemon.wait_results(expected)  # readers find a database again, rebuilt from the folder
        assert daemon.rejections() == {"bad.json"}
        n = len(expected)
        expected[f"after{n}.json"] = mid(100 + n)  # and it is the live one
        write(daemon.inbox / f"after{n}.json", doc(model_id=mid(100 + n)))
        daemon.wait_results(expected)
        newest = mid(100 + n)
        wait_until(lambda: report.exists() and newest in report.read_text(), what="the report")
        daemon._log_offset = daemon.log_path.stat().st_size  # the next round's events only
    settle(daemon)
    # The lock is in force again: a scan beside the daemon is still refused.
    wait_until(lambda: daemon.db.with_name("watcher.db.lock").exists(), what="the lock file")
    scan = run_cli("scan", "--watch-dir", str(daemon.inbox), "--db", str(daemon.db))
    assert scan.returncode == 3 and "a watcher daemon is running" in scan.stderr, scan.stderr


def make_deep(top: Path, levels: int) -> Path:
    """``top/d/d/.../d`` ``levels`` deep, made relative to each folder (as a runaway job would)."""
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(levels):
            os.mkdir("d", dir_fd=fd)
            inner = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = inner
    finally:
        os.close(fd)
    return top.joinpath(*["d"] * levels)


@pytest.fixture
def deep_tmp() -> Iterator[Path]:
    """A temporary folder for trees too deep for shutil.rmtree (pytest's clean-up of its own
    temporary folders recurses once per level and would fail, there and in later sessions)."""
    base = Path(tempfile.mkdtemp(prefix="watcher-deep-"))
    try:
        yield base
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=True, timeout=120)  # rm walks without recursion


@pytest.mark.parametrize("observer", list(OBSERVERS))
def test_a_folder_nested_1000_levels_deep_does_not_kill_the_daemon(deep_tmp: Path, observer: str) -> None:
    daemon = Daemon(deep_tmp, env=OBSERVERS[observer])
    deep = make_deep(daemon.inbox, 1000)
    rel = "d/" * 1000
    try:
        write(deep / "deep.json", doc(model_id=mid(1)))
        write(daemon.inbox / "top.json", doc(model_id=mid(2)))
        daemon.start()
        daemon.wait_results({f"{rel}deep.json": mid(1), "top.json": mid(2)})
        write(deep / "later.json", doc(model_id=mid(3)))  # and the deep folder is watched
        daemon.wait_results({f"{rel}deep.json": mid(1), "top.json": mid(2), f"{rel}later.json": mid(3)})
        settle(daemon)
    finally:
        assert daemon.stop() == 0


def test_folders_too_deep_for_a_path_are_reported_not_skipped(deep_tmp: Path) -> None:
    inbox = deep_tmp / "inbox"
    inbox.mkdir()
    levels = (4096 - len(str(inbox))) // 2 + 5  # beyond PATH_MAX: those folders cannot be named
    make_deep(inbox, levels)
    write(inbox / "top.json", doc(model_id=mid(1)))
    proc = run_cli("scan", "--watch-dir", str(inbox), "--db", str(deep_tmp / "w.db"))
    assert proc.returncode == 0, proc.stderr
    first = next(k for k in range(1, levels + 1) if len(str(inbox)) + 2 * k >= 4096)  # "/d" per level
    rows = sqlite3.connect(deep_tmp / "w.db").execute("SELECT path, errors FROM rejections").fetchall()
    assert [(p, json.loads(e)[0]["message"]) for p, e in rows] == [
        ("/".join(["d"] * first), "folder cannot be read: File name too long")
    ]
