"""What the service does with what it may not write or read, run as an unprivileged user (as
the service runs): one line and an exit code, never a traceback."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from testing.daemon import OBSERVERS, Daemon
from testing.helpers import doc, wait_until, write
from testing.invariant import violations
from testing.unprivileged import Unprivileged, nobody, shared_tmp

pytestmark = pytest.mark.slow  # real daemon processes

__all__ = ["nobody", "shared_tmp"]  # fixtures


def mid(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


def test_run_with_an_unwritable_database_location_is_one_line_and_exit_3(
    nobody: Unprivileged, shared_tmp: Path
) -> None:
    inbox = shared_tmp / "inbox"
    write(inbox / "a.json", doc())
    state = shared_tmp / "state"  # root's, 0755: the user can read it but not create the lock there
    state.mkdir()
    proc = nobody.watcher("run", "--watch-dir", str(inbox), "--db", str(state / "w.db"), cwd=shared_tmp)
    assert (proc.returncode, proc.stderr) == (
        3, f"watcher: {state / 'w.db.lock'}: cannot create the database's lock file: Permission denied\n",
    )  # fmt: skip

    # The folder is the user's, but the database file in it is root's and read-only to the user.
    mine = shared_tmp / "mine"
    mine.mkdir()
    nobody.give(mine)
    sqlite3.connect(mine / "w.db").close()
    (mine / "w.db").chmod(0o644)
    for command in ("run", "scan"):
        proc = nobody.watcher(command, "--watch-dir", str(inbox), "--db", str(mine / "w.db"), cwd=shared_tmp)
        assert proc.returncode == 3, proc.stderr
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
        assert proc.stderr.startswith(f"watcher: {mine / 'w.db'}: cannot open the database: "), proc.stderr


def as_user(user: Unprivileged, fn: Callable[[], list[str]]) -> list[str]:
    """``fn()`` in a forked child running as ``user`` (what that user can list decides)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            if user.uid is not None:
                os.setgroups([])
                os.setgid(user.gid if user.gid is not None else user.uid)
                os.setuid(user.uid)
            message = json.dumps(fn())
        except BaseException as exc:
            message = json.dumps([repr(exc)])
        os.write(write_end, message.encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as fh:
        result: list[str] = json.loads(fh.read().decode())
    os.waitpid(pid, 0)
    return result


@pytest.mark.parametrize("observer", list(OBSERVERS))
def test_a_folder_the_service_cannot_read_is_accounted_for_until_it_can(
    nobody: Unprivileged, shared_tmp: Path, observer: str
) -> None:
    # Periodic reconciles: logged once still.
    d = Daemon(shared_tmp, env={**OBSERVERS[observer], "WATCHER_RECONCILE_INTERVAL": "1"})
    d.python, d.popen_args = nobody.python, nobody.popen_args()
    write(d.inbox / "ok.json", doc(model_id=mid(1)))
    write(d.inbox / "run7" / "a.json", doc(model_id=mid(2)))
    (d.inbox / "run7").chmod(0o700)  # another owner's (root's) folder
    (d.root / "var").mkdir()
    nobody.give(d.inbox, d.root / "var")
    try:
        d.start()
        d.wait_results({"ok.json": mid(1)})
        wait_until(lambda: d.rejections() == {"run7"}, what="a rejection for the folder")
        (reason,) = [json.loads(e)[0]["message"] for (e,) in d.query("SELECT errors FROM rejections")]
        assert reason == "folder cannot be read: Permission denied"
        if d.polling:  # no periodic reconcile: the poller's sweeps list the folder again and again
            for n in (3, 4):  # a file found by a sweep, twice, then gone: two sweeps after the first
                write(d.inbox / "sweep.json", doc(model_id=mid(n)))
                d.wait_results({"ok.json": mid(1), "sweep.json": mid(n)})
            (d.inbox / "sweep.json").unlink()
            d.wait_results({"ok.json": mid(1)})
        else:
            d.wait_event("reconcile_done", under=".")  # a periodic one after the first: same story, not news
            wait_until(lambda: [e["event"] for e in d.events()].count("reconcile_done") >= 3, what="reconciles")
        assert [e["path"] for e in d.events() if e["event"] == "file_rejected"] == ["run7"]
        assert as_user(nobody, lambda: violations(d.inbox, d.db)) == []
        status = nobody.watcher("status", "--db", str(d.db), "--json", cwd=shared_tmp)
        assert json.loads(status.stdout)["counts"]["rejections"] == 1
        assert [r["path"] for r in json.loads(status.stdout)["recent_rejections"]] == ["run7"]

        (d.inbox / "run7").chmod(0o755)  # readable now: its file is judged, the folder's row goes
        d.wait_results({"ok.json": mid(1), "run7/a.json": mid(2)})
        wait_until(lambda: d.rejections() == set(), what="the folder's rejection cleared")
        assert as_user(nobody, lambda: violations(d.inbox, d.db)) == []
    finally:
        assert d.stop() == 0


def test_scan_counts_a_folder_it_cannot_read(nobody: Unprivileged, shared_tmp: Path) -> None:
    write(shared_tmp / "inbox" / "ok.json", doc(model_id=mid(1)))
    write(shared_tmp / "inbox" / "run7" / "a.json", doc(model_id=mid(2)))
    (shared_tmp / "inbox" / "run7").chmod(0o700)
    (shared_tmp / "var").mkdir()
    nobody.give(shared_tmp / "var")
    proc = nobody.watcher("scan", "--watch-dir", "inbox", "--db", "var/w.db", "--log-format", "json", cwd=shared_tmp)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "1 files: 1 read, 1 scored, 1 rejected, 0 removed; 1 models, 1 rejections in total\n"
    rejected = [json.loads(line) for line in proc.stderr.splitlines() if "file_rejected" in line]
    assert [(e["path"], e["errors"][0]["message"]) for e in rejected] == [
        ("run7", "folder cannot be read: Permission denied")
    ]
