"""``watcher follow``: the history read as it grows; and end to end, a real daemon and a real
``watcher follow`` process in a pipe, stopped with SIGINT."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any

import pytest

from testing.daemon import Daemon
from testing.helpers import doc, wait_until, write
from watcher.follow import Entry, Follower, follow
from watcher.reconcile import scan

MODEL = "3f2b8c1e-7d4a-4e0b-9a6f-1c2d3e4f5a6b"


def test_poll_returns_each_new_entry_once_oldest_first(make_settings: Any) -> None:
    settings = make_settings()
    write(settings.watch_dir / "old.json", "{")
    scan(settings)
    follower = Follower(settings.db_path)
    assert follower.poll() == []  # what was there before is not news
    write(settings.watch_dir / "a.json", doc(model_id=MODEL))
    write(settings.watch_dir / "low.json", doc(recall_arr=[0.5, 0.4, 0.3, 0.2, 0.0]))
    (settings.watch_dir / "old.json").unlink()
    scan(settings)
    entries = follower.poll()
    assert sorted((e.outcome, e.path) for e in entries) == [
        ("removed", "old.json"), ("scored", "a.json"), ("scored", "low.json"),
    ]  # fmt: skip
    assert [e.id for e in entries] == sorted(e.id for e in entries)
    assert follower.poll() == []
    a = next(e for e in entries if e.path == "a.json")
    assert (a.model_id, a.optimal_threshold, a.closest_recall_value, a.target_met) == (MODEL, 0.5, 0.85, True)
    follower.close()


def test_rejections_only_and_the_last_n_first(make_settings: Any) -> None:
    settings = make_settings()
    for i in range(3):
        write(settings.watch_dir / f"bad{i}.json", "[1]")
        write(settings.watch_dir / f"ok{i}.json", doc())
    scan(settings)
    follower = Follower(settings.db_path, rejections_only=True, last=2)
    entries = follower.poll()
    assert [e.outcome for e in entries] == ["rejected", "rejected"]
    assert entries[0].errors == [{"field": None, "message": "top level must be a JSON object, not an array"}]
    write(settings.watch_dir / "ok9.json", doc())
    write(settings.watch_dir / "bad9.json", doc(issuer="x"))
    scan(settings)
    assert [e.path for e in follower.poll()] == ["bad9.json"]
    assert len(Follower(settings.db_path, last=100).poll()) == 8  # the whole history, fewer than asked


def test_text_and_json_lines() -> None:
    errors: list[dict[str, Any]] = [{"field": "issuer", "message": "bad"}, {"field": None, "message": "worse"}]
    rejected = Entry(7, "2026-01-01T00:00:00.000Z", "r/a.json", "rejected", "h", None, errors, None, None, None)
    scored = Entry(8, "2026-01-01T00:00:01.000Z", "b.json", "scored", "h", MODEL, None, 0.25, 0.8, False)
    removed = Entry(9, "2026-01-01T00:00:02.000Z", "b.json", "removed", "h", MODEL, None, None, None, None)
    assert rejected.as_text() == "2026-01-01T00:00:00.000Z  rejected  r/a.json  issuer: bad; worse"
    assert scored.as_text() == (
        f"2026-01-01T00:00:01.000Z  scored    b.json  model_id {MODEL}  threshold 0.25  recall 0.8  (below target)"
    )
    assert removed.as_text() == f"2026-01-01T00:00:02.000Z  removed   b.json  model_id {MODEL}"
    assert json.loads(rejected.as_json()) == {
        "id": 7, "at": "2026-01-01T00:00:00.000Z", "path": "r/a.json", "outcome": "rejected", "sha256": "h",
        "model_id": None, "errors": errors, "optimal_threshold": None, "closest_recall_value": None,
        "target_met": None,
    }  # fmt: skip


def test_a_replaced_database_is_followed_from_its_start(make_settings: Any) -> None:
    settings = make_settings()
    write(settings.watch_dir / "a.json", doc())
    scan(settings)
    follower = Follower(settings.db_path)
    for f in settings.db_path.parent.glob(settings.db_path.name + "*"):
        f.unlink()  # an operator's rm; the next scan (or the daemon) builds a new one
    assert follower.poll() == []
    scan(settings)
    assert [(e.id, e.path) for e in follower.poll()] == [(1, "a.json")]


def test_follow_waits_between_looks_and_stops_when_asked(make_settings: Any) -> None:
    settings = make_settings()
    scan(settings)
    waits: list[float] = []
    stop = threading.Event()

    def wait(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 3:
            write(settings.watch_dir / "a.json", doc())
            scan(settings)
        if len(waits) == 5:
            stop.set()

    batches = list(follow(Follower(settings.db_path), stop.is_set, wait, interval=0.25))
    assert [[e.path for e in b] for b in batches] == [["a.json"]]
    assert waits == [0.25] * 5  # an empty look is always followed by a wait


class Lines:
    """The lines a process writes to a pipe, collected by a thread (reading never blocks the test)."""

    def __init__(self, pipe: IO[str]) -> None:
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self.thread.start()

    def _read(self, pipe: IO[str]) -> None:
        for line in pipe:
            self.lines.append(line)


@pytest.mark.slow
def test_follow_a_running_daemon_in_a_pipe_then_ctrl_c(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path)
    write(daemon.inbox / "before.json", "{")
    daemon.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATCHER_")}

    def start_follow(*extra: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "watcher", "follow", "--db", str(daemon.db), *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip

    # --last 1: each prints before.json's rejection first, which shows it is following.
    every, rejected = start_follow("--last", "1"), start_follow("--rejections", "--last", "1")
    procs = [every, rejected]
    seen_every = seen_rejected = None
    try:
        assert every.stdout is not None and rejected.stdout is not None
        seen_every, seen_rejected = Lines(every.stdout), Lines(rejected.stdout)
        for seen in (seen_every, seen_rejected):
            wait_until(lambda seen=seen: seen.lines, timeout=30, what="follow's first line")  # type: ignore[misc]
            assert json.loads(seen.lines[0])["path"] == "before.json"
        write(daemon.inbox / "good.json", doc(model_id=MODEL))
        write(daemon.inbox / "bad.json", doc(issuer="nobody"))
        wait_until(lambda: len(seen_every.lines) >= 3, timeout=30, what="two more lines from follow")
        wait_until(lambda: len(seen_rejected.lines) >= 2, timeout=30, what="a line from follow --rejections")
        lines = [json.loads(line) for line in seen_every.lines[1:]]  # a pipe: JSON lines
        assert sorted((e["outcome"], e["path"]) for e in lines) == [("rejected", "bad.json"), ("scored", "good.json")]
        good = next(e for e in lines if e["path"] == "good.json")
        assert (good["model_id"], good["optimal_threshold"], good["target_met"]) == (MODEL, 0.5, True)
        only = json.loads(seen_rejected.lines[1])
        assert (only["path"], only["errors"][0]["field"], len(seen_rejected.lines)) == ("bad.json", "issuer", 2)
        for proc in procs:  # Ctrl-C
            proc.send_signal(signal.SIGINT)
        for proc in procs:
            assert proc.wait(timeout=10) == 0
            assert proc.stderr is not None and proc.stderr.read() == ""  # no traceback, nothing at all
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            readers = [r for r in (seen_every, seen_rejected) if r is not None]
            for reader in readers:
                reader.thread.join(timeout=10)  # EOF once the process is gone
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
        assert daemon.stop() == 0


def test_follow_of_no_database_is_one_line_and_exit_3(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "watcher", "follow", "--db", str(tmp_path / "none.db")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 3
    db = tmp_path / "none.db"
    assert proc.stderr == f"watcher: {db}: no database here yet; run 'watcher scan' or 'watcher run' first\n"
