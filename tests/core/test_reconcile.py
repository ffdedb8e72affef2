"""Reconcile: the database mirrors the directory, reading only what changed."""

from __future__ import annotations

import io
import json
import os
import shutil
from typing import Any

import pytest

from testing.helpers import doc, write
from watcher import logs
from watcher import reconcile as reconcile_module
from watcher.config import Settings
from watcher.errors import WatchDirError
from watcher.judge import JudgeOptions
from watcher.pools import WorkerPool
from watcher.reconcile import reconcile, scan
from watcher.schema import DEFERRABLE_INDEXES
from watcher.store import Store


def state(settings: Settings) -> tuple[dict[str, str], list[str]]:
    store = Store.from_settings(settings)
    try:
        results = {r["path"]: r["model_id"] for r in store.db.query("SELECT path, model_id FROM results")}
        return results, sorted(r["path"] for r in store.db.query("SELECT path FROM rejections"))
    finally:
        store.close()


def run(settings: Settings, **kw: Any):
    """One reconcile as ``watcher scan`` makes it: with a pool of forked workers."""
    store = Store.from_settings(settings)
    try:
        with WorkerPool(JudgeOptions.from_settings(settings), settings.worker_count, "fork") as pool:
            return reconcile(store, settings, pool=pool, **kw)
    finally:
        store.close()


@pytest.fixture
def s(make_settings: Any) -> Settings:
    settings: Settings = make_settings()
    return settings


def _indexes(settings: Settings) -> set[str]:
    with Store.open_readonly(settings.db_path) as store:
        return {name for (name,) in store.db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}


def test_a_cold_scan_builds_the_deferrable_indexes_at_its_end(make_settings: Any) -> None:
    s = make_settings(batch_size=2)
    for i in range(5):
        write(s.watch_dir / f"m{i}.json", doc(model_id=f"00000000-0000-0000-0000-00000000000{i}"))
    seen: list[set[str]] = []
    summary = run(s, progress=lambda done, total: seen.append(_indexes(s)), alone=True)
    assert summary.scored == 5
    # Left out while the batches went in (each committed, seen by another connection) ...
    assert len(seen) == 3 and all(not set(DEFERRABLE_INDEXES) & names for names in seen)
    assert all("results_latest" in names for names in seen)  # the report's lookups stay indexed
    # ... and there once the scan is over; the next reconcile (not cold) keeps them throughout.
    assert set(DEFERRABLE_INDEXES) <= _indexes(s)
    write(s.watch_dir / "m9.json", doc(model_id="00000000-0000-0000-0000-000000000009"))
    seen.clear()
    assert run(s, progress=lambda done, total: seen.append(_indexes(s)), alone=True).scored == 1
    assert seen and all(set(DEFERRABLE_INDEXES) <= names for names in seen)


def test_the_daemons_cold_scan_keeps_every_index(make_settings: Any) -> None:
    # Its report thread looks up each changed path's history while the scan goes on: without
    # history_path each lookup would walk the whole history (every batch slower than the last).
    s = make_settings(batch_size=2)
    for i in range(5):
        write(s.watch_dir / f"m{i}.json", doc(model_id=f"00000000-0000-0000-0000-00000000000{i}"))
    seen: list[set[str]] = []
    assert run(s, progress=lambda done, total: seen.append(_indexes(s))).scored == 5
    assert len(seen) == 3 and all(set(DEFERRABLE_INDEXES) <= names for names in seen)


def test_a_cold_scan_that_fails_midway_still_builds_its_indexes(make_settings: Any, monkeypatch: Any) -> None:
    s = make_settings(batch_size=1)
    for i in range(3):
        write(s.watch_dir / f"m{i}.json", doc(model_id=f"00000000-0000-0000-0000-00000000000{i}"))

    def stop(done: int, total: int) -> None:
        raise RuntimeError("stopped")

    with pytest.raises(RuntimeError, match="stopped"):
        run(s, progress=stop, alone=True)
    assert set(DEFERRABLE_INDEXES) <= _indexes(s)
    assert len(state(s)[0]) == 1  # the batch before the stop stays committed


def test_add_modify_touch_delete(s: Settings) -> None:
    a = write(s.watch_dir / "a.json", doc(model_id="00000000-0000-0000-0000-00000000000a"))
    summary = run(s)
    assert (summary.seen, summary.read, summary.scored) == (1, 1, 1)
    write(a, doc(model_id="00000000-0000-0000-0000-0000000000aa"))
    assert run(s).scored == 1
    assert state(s)[0] == {"a.json": "00000000-0000-0000-0000-0000000000aa"}
    os.utime(a, ns=(1, 1))  # touched, content unchanged: read and hashed, not re-scored
    summary = run(s)
    assert (summary.read, summary.scored, summary.changed) == (1, 0, False)
    a.unlink()
    assert run(s).removed == 1
    assert state(s) == ({}, [])


def test_second_scan_of_unchanged_tree_reads_nothing(s: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(5):
        write(s.watch_dir / f"sub{i % 2}" / f"{i}.json", doc())
    write(s.watch_dir / "bad.json", "{")
    assert run(s).read == 6

    def no_reads(*_: object) -> None:
        raise AssertionError("a file was read")

    monkeypatch.setattr("watcher.pools.judge_many", no_reads)
    summary = run(s)
    assert (summary.seen, summary.read, summary.changed) == (6, 0, False)


def test_valid_invalid_valid(s: Settings) -> None:
    f = write(s.watch_dir / "a.json", doc())
    run(s)
    write(f, doc(recall_arr=[2.0]))
    run(s)
    assert state(s) == ({}, ["a.json"])
    write(f, doc())
    run(s)
    assert list(state(s)[0]) == ["a.json"] and state(s)[1] == []


def test_duplicates_latest_experiment_wins_and_is_logged(s: Settings) -> None:
    model = "3f2b8c1e-7d4a-4e0b-9a6f-1c2d3e4f5a6b"
    write(s.watch_dir / "old.json", doc(model_id=model, experiment_date="2024-05-01T12:00:00+00:00"))
    write(s.watch_dir / "new.json", doc(model_id=model.upper(), experiment_date="2024-05-01T14:00:00+01:00"))
    stream = io.StringIO()
    logs.configure("info", "json", stream)
    run(s)
    with Store.from_settings(s) as store:
        assert [r[-1] for r in store.report_rows()] == ["new.json"]
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    dup = [e for e in events if e["event"] == "model_duplicate"]
    assert dup == [dup[0]] and (dup[0]["winner"], dup[0]["others"]) == ("new.json", ["old.json"])


def test_target_change_rescores_everything(make_settings: Any) -> None:
    s = make_settings()
    write(s.watch_dir / "a.json", doc())
    run(s)
    higher = make_settings(target_recall=0.95)
    summary = run(higher)
    assert (summary.read, summary.scored) == (1, 1)
    with Store.open(higher.db_path, target_recall=0.95) as store:
        assert next(store.report_rows())[3] == 0.95


def test_missing_watch_dir_is_an_error_not_a_mass_removal(s: Settings) -> None:
    write(s.watch_dir / "a.json", doc())
    run(s)
    s.watch_dir.joinpath("a.json").unlink()
    s.watch_dir.rmdir()
    with pytest.raises(WatchDirError, match="watch directory does not exist"):
        run(s)
    assert list(state(s)[0]) == ["a.json"]


def test_scan_writes_reports_only_when_something_changed(s: Settings) -> None:
    write(s.watch_dir / "a.json", doc())
    scan(s)
    report = s.report_dir / "report.csv"
    assert report.read_text().count("\n") == 2
    mtime = report.stat().st_mtime_ns
    os.utime(report, ns=(1, 1))
    scan(s)
    assert report.stat().st_mtime_ns == 1  # untouched
    report.unlink()
    scan(s)
    assert report.exists() and report.stat().st_mtime_ns >= mtime


def test_worker_processes_give_the_same_outcome(make_settings: Any) -> None:
    s = make_settings(workers=2)
    for i in range(250):  # above the pool threshold
        write(s.watch_dir / f"{i:03}.json", doc() if i % 10 else "{bad")
    summary = run(s)
    assert (summary.scored, summary.rejected) == (225, 25)


def test_skip_leaves_busy_paths_alone(s: Settings) -> None:
    write(s.watch_dir / "busy.json", "{half")
    write(s.watch_dir / "done.json", doc())
    summary = run(s, skip=lambda rel: rel == "busy.json")
    assert (summary.read, state(s)) == (1, ({"done.json": state(s)[0]["done.json"]}, []))


def test_workers_walking_the_tree_agree_with_the_walk_here(make_settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    here = make_settings(workers=2)
    there = make_settings(workers=2, db_path=here.db_path.with_name("there.db"))
    tree = here.watch_dir
    for rel in ["top.json", "a/1.json", "a/b/2.json", "a/b/c/3.json", "d/4.json", "d/bad.json", ".hidden/5.json"]:
        write(tree / rel, "{bad" if "bad" in rel else doc())
    (tree / "e").mkdir()
    (tree / "link").symlink_to(tree / "a")  # never descended into

    def both(target: float = here.target_recall, **kw: Any) -> list[tuple[Any, ...]]:
        monkeypatch.setattr(reconcile_module, "PARALLEL_WALK_MIN", 10**9)
        a = run(here.model_copy(update={"target_recall": target}), **kw)
        monkeypatch.setattr(reconcile_module, "PARALLEL_WALK_MIN", 0)
        b = run(there.model_copy(update={"target_recall": target}), **kw)
        assert state(here) == state(there)
        return [(s.seen, s.read, s.scored, s.rejected, s.removed) for s in (a, b)]

    assert both() == [(6, 6, 5, 1, 0)] * 2
    assert both() == [(6, 0, 0, 0, 0)] * 2  # unchanged: nothing read
    write(tree / "a/b/2.json", doc())  # changed
    os.utime(tree / "top.json", ns=(1, 1))  # touched: read, same content
    shutil.rmtree(tree / "d")  # a folder gone
    write(tree / "e/new.json", doc())
    write(tree / "a/skipped.json", doc())
    assert both(skip=lambda rel: rel == "a/skipped.json") == [(6, 3, 2, 0, 2)] * 2
    os.unlink(tree / "top.json")  # a file at the top gone
    assert both() == [(5, 1, 1, 0, 1)] * 2  # and the skipped one read now
    assert both(target=0.5) == [(5, 5, 5, 0, 0)] * 2  # another target: every result judged again


def test_names_that_are_not_utf8_are_rejected_and_stay_put_in_both_walks(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    here = make_settings(workers=2)
    there = make_settings(workers=2, db_path=here.db_path.with_name("there.db"))
    tree = os.fsencode(here.watch_dir)
    for name in (b"top\xff.json", b"d\xfe/in.json", b"ok/x\xff.json"):
        os.makedirs(os.path.dirname(os.path.join(tree, name)), exist_ok=True)
        with open(os.path.join(tree, name), "wb") as fh:
            fh.write(json.dumps(doc()).encode())
    write(here.watch_dir / "ok" / "fine.json", doc(model_id="00000000-0000-0000-0000-00000000000f"))
    shown = ["d\\xfe/in.json", "ok/x\\xff.json", "top\\xff.json"]
    for walk_min, settings in ((10**9, here), (0, there)):  # this process walks; workers walk
        monkeypatch.setattr(reconcile_module, "PARALLEL_WALK_MIN", walk_min)
        first, again = run(settings), run(settings)
        assert (first.seen, first.read, first.scored, first.rejected) == (4, 4, 1, 3)
        assert (again.seen, again.read, again.changed) == (4, 0, False)  # unchanged: not judged again
        assert state(settings) == ({"ok/fine.json": "00000000-0000-0000-0000-00000000000f"}, shown)
    os.unlink(os.path.join(tree, b"top\xff.json"))
    os.unlink(os.path.join(tree, b"d\xfe/in.json"))
    for walk_min, settings in ((10**9, here), (0, there)):
        monkeypatch.setattr(reconcile_module, "PARALLEL_WALK_MIN", walk_min)
        assert run(settings).removed == 2
        assert state(settings)[1] == ["ok/x\\xff.json"]
