"""Bounded storage (watcher.retention): old history entries trimmed by the rules, against an oracle
that states them over random histories; and a running daemon whose history and write-ahead log stay
bounded under sustained changes, with readers, while the database still mirrors the folder."""

from __future__ import annotations

import io
import os
import random
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from testing import invariant
from testing.helpers import doc, wait_until, write
from watcher import daemon, logs, retention, writer
from watcher.reconcile import scan
from watcher.retention import HistoryTrimmer
from watcher.store import Store
from watcher.timestamps import now_iso


def _history(db: Path) -> list[tuple[int, str, str, str]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT id, at, path, outcome FROM history ORDER BY id").fetchall()
    finally:
        conn.close()


def _last_id(db: Path) -> int:
    history = _history(db)
    return history[-1][0] if history else 0


def _current(db: Path) -> set[str]:
    conn = sqlite3.connect(db)
    try:
        return {p for (p,) in conn.execute("SELECT path FROM results UNION SELECT path FROM rejections")}
    finally:
        conn.close()


def _kept(history: list[tuple[int, str, str, str]], current: set[str], cutoff: str, floor: int | None, newest: int):
    """The oracle: the ids the module's rules keep, stated plainly."""
    if not history:
        return set()
    first, last = history[0][0], history[-1][0]
    latest: dict[str, int] = {}
    latest_scored: dict[str, int] = {}
    for i, _at, path, outcome in history:
        latest[path] = i
        if outcome == "scored":
            latest_scored[path] = i
    keep = set()
    for i, at, path, _outcome in history:
        if (
            i in (first, last)
            or i > last - newest
            or (floor is not None and i >= floor)
            or at >= cutoff
            or (path in current and i in (latest[path], latest_scored.get(path)))
        ):
            keep.add(i)
    return keep


@pytest.mark.parametrize("seed", range(6))
def test_trimming_keeps_exactly_what_the_rules_keep(
    seed: int, make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(seed)
    newest = rng.choice([0, 3, 10])
    monkeypatch.setattr(retention, "KEEP_NEWEST", newest)
    monkeypatch.setattr(retention, "SLICE", rng.choice([1, 7, 1000]))
    settings = make_settings()
    names = [f"f{i}.json" for i in range(12)]
    for _ in range(25):  # random histories: files written, rewritten, broken, deleted, rescanned
        for name in rng.sample(names, rng.randint(1, 5)):
            path = settings.watch_dir / name
            roll = rng.random()
            if roll < 0.5:
                write(path, doc())
            elif roll < 0.7:
                write(path, "{broken")
            elif path.exists():
                path.unlink()
        scan(settings)
    db = settings.db_path
    # Ages along the ids: the first two thirds are 100 days old, the rest from today.
    history = _history(db)
    old = len(history) * 2 // 3
    conn = sqlite3.connect(db)
    with conn:
        for n, (i, *_) in enumerate(history):
            conn.execute("UPDATE history SET at = ? WHERE id = ?", (now_iso(1e9 + n) if n < old else now_iso(), i))
    conn.close()
    history = _history(db)
    current = _current(db)
    floor = rng.choice([None, history[len(history) // 2][0], history[-1][0] + 5])
    trimmer = HistoryTrimmer(keep_days=30)
    cutoff = now_iso(__import__("time").time() - 30 * 86400)
    store = Store.open(db)
    try:
        for _ in range(10_000):  # one whole walk, to where it starts again
            done = trimmer.step(store, floor)
            if done is None or done.wrapped:
                break
    finally:
        store.close()
    expected = _kept(history, current, cutoff, floor, newest)
    assert {i for i, *_ in _history(db)} == expected
    assert len(expected) < len(history) or floor is not None or newest  # something was trimmed
    # Still a mirror of the folder, and the report tables' and the shipper's reads still work.
    assert invariant.violations(settings.watch_dir, db) == []


def test_a_walk_costs_steps_per_entry_not_per_id_ever_written(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ids trimmed long ago leave stretches with no entry: a walk by id slices stepped through
    # each of them (a step a second in the daemon), so a walk's length, and how far the history
    # grew between two walks, grew with every id ever written (the two-hour soak's history
    # swung by 30,000 entries at its end). By entries, the walk's steps follow what is there.
    monkeypatch.setattr(retention, "KEEP_NEWEST", 0)
    monkeypatch.setattr(retention, "SLICE", 10)
    settings = make_settings()
    write(settings.watch_dir / "a.json", doc())
    scan(settings)
    gone = [(100 + i * 1000, now_iso(1e9 + i), f"gone{i}.json", "removed") for i in range(50)]
    conn = sqlite3.connect(settings.db_path)
    with conn:  # 50 entries of files long removed, one per 1,000 ids; a recent last entry
        conn.executemany("INSERT INTO history (id, at, path, outcome) VALUES (?, ?, ?, ?)", gone)
        conn.execute(
            "INSERT INTO history (id, at, path, outcome) VALUES (?, ?, 'x.json', 'removed')", (60_000, now_iso())
        )
    conn.close()
    trimmer, steps = HistoryTrimmer(keep_days=30), 0
    store = Store.open(settings.db_path)
    try:
        while (done := trimmer.step(store, None)) is not None and not done.wrapped:
            steps += 1
    finally:
        store.close()
    assert steps <= 7  # 53 entries, 10 a step (by ids: 6,000 steps)
    assert not {p for _, _, p, _ in _history(settings.db_path)} & {g[2] for g in gone}


def test_a_history_younger_than_keep_days_costs_no_write(make_settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # The daemon steps the trimmer every minute when idle: with nothing old enough to trim, the
    # step looks at one entry and ends the walk, with no slice read and no write transaction
    # (here another connection holds the write lock, and the step does not need it).
    monkeypatch.setattr(retention, "KEEP_NEWEST", 0)
    settings = make_settings()
    for i in range(3):
        write(settings.watch_dir / f"f{i}.json", doc())
        scan(settings)
    other = sqlite3.connect(settings.db_path)
    store = Store.open(settings.db_path)
    try:
        store.db.execute("PRAGMA busy_timeout = 0")  # the lock held elsewhere fails a write at once
        other.execute("BEGIN IMMEDIATE")
        done = HistoryTrimmer(keep_days=30).step(store, None)
        assert done is not None and done.wrapped and done.deleted == 0
    finally:
        other.rollback()
        other.close()
        store.close()


def test_keep_days_zero_keeps_everything(make_settings: Any) -> None:
    settings = make_settings()
    for i in range(5):
        write(settings.watch_dir / f"f{i}.json", doc())
        scan(settings)
    before = _history(settings.db_path)
    store = Store.open(settings.db_path)
    try:
        assert HistoryTrimmer(keep_days=0).step(store, None) is None
    finally:
        store.close()
    assert _history(settings.db_path) == before


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_running_daemon_keeps_history_and_log_bounded_under_sustained_changes(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small bounds, the same rules: the newest 50 entries kept, anything older than ~1 s trimmable,
    # the log truncated past 256 KiB; a reader reading all the while (as the report thread,
    # `watcher follow` and the shipper do), which keeps SQLite's own checkpoints from restarting
    # the log.
    monkeypatch.setattr(retention, "KEEP_NEWEST", 50)
    monkeypatch.setattr(retention, "WAL_LIMIT", 256 * 1024)
    monkeypatch.setattr(writer, "WAL_LIMIT", 256 * 1024)
    monkeypatch.setattr(writer, "TRIM_FIRST", 0.5)
    monkeypatch.setattr(writer, "TRIM_PAUSE", 0.5)
    settings = make_settings(history_keep_days=1 / 86400, settle_seconds=0.05, report_interval=0.2)
    out = io.StringIO()
    logs.configure("debug", "json", out)
    stop, quit_churn = threading.Event(), threading.Event()
    codes: list[int] = []
    runner = threading.Thread(target=lambda: codes.append(daemon.run(settings, stop)), daemon=True)
    runner.start()
    db, wal = settings.db_path, Path(f"{settings.db_path}-wal")
    wait_until(lambda: '"daemon_ready"' in out.getvalue(), 30, what="daemon_ready")
    rng = random.Random(3)
    sizes: list[int] = []
    counts: list[int] = []

    def churn() -> None:
        while not quit_churn.is_set():
            name = settings.watch_dir / f"f{rng.randrange(40)}.json"
            write(name, doc() if rng.random() < 0.85 else "{broken")
            quit_churn.wait(0.005)

    def read() -> None:
        conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)
        try:
            while not quit_churn.is_set():
                counts.append(conn.execute("SELECT count(*) FROM history").fetchone()[0])
                if wal.exists():
                    sizes.append(wal.stat().st_size)
                quit_churn.wait(0.02)
        finally:
            conn.close()

    threads = [threading.Thread(target=churn), threading.Thread(target=read)]
    for t in threads:
        t.start()
    try:
        # Many times the bounds go through; trimming has begun and the history stops growing.
        wait_until(lambda: _last_id(db) > 3000, 90, what="3,000 changes")
    finally:
        quit_churn.set()
        for t in threads:
            t.join(10)
    try:
        assert '"history_trimmed"' in out.getvalue()
        total = _last_id(db)
        assert counts[-1] < total / 2, (counts[-1], total)  # trimmed while it ran
        # The log, sampled all the while: never far past its limit (one second of changes at most).
        assert max(sizes) < 4 * 256 * 1024, max(sizes)
        wait_until(lambda: invariant.holds(settings.watch_dir, db), 30, what="the invariant")
    finally:
        stop.set()
        runner.join(30)
    assert codes == [0]
    assert "Traceback" not in out.getvalue()
    assert os.path.exists(db)
