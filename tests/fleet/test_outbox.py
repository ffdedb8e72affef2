"""Reading the shipper's outbox: a batch is the history entries after a mark and the current
local rows of the paths they name, read in one snapshot."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from testing.helpers import doc, write
from watcher.fleet import outbox
from watcher.reconcile import scan


def test_a_batch_names_every_path_and_carries_their_current_rows(make_settings: Any) -> None:
    settings = make_settings()
    inbox = settings.watch_dir
    write(inbox / "a.json", doc())
    write(inbox / "b.json", doc())
    write(inbox / "bad.json", "[]")
    scan(settings)
    (inbox / "b.json").unlink()
    write(inbox / "a.json", doc(model_id="3f2b8c1e-7d4a-4e0b-9a6f-1c2d3e4f5a6b"))
    scan(settings)
    local = outbox.connect(settings.db_path)
    try:
        whole = outbox.read(local, 0, 100)
        assert (whole.start, whole.end, whole.local_max) == (0, 5, 5)
        first = local.execute("SELECT id, at FROM history ORDER BY id LIMIT 1").fetchone()
        assert whole.origin == f"{first[0]}:{first[1]}"
        assert sorted(json.loads(whole.paths)) == ["a.json", "b.json", "bad.json"] and whole.n_paths == 3
        assert whole.results is not None and whole.rejections is not None
        results = json.loads(whole.results)
        assert [r[0] for r in results] == ["a.json"]  # b.json was removed: in neither table
        assert results[0][1] == "3f2b8c1e-7d4a-4e0b-9a6f-1c2d3e4f5a6b"  # the current row, not the first
        assert [r[0] for r in json.loads(whole.rejections)] == ["bad.json"]
        assert whole.counts == (1, 1)

        part = outbox.read(local, 3, 1)
        assert (part.start, part.end, part.counts) == (3, 4, None)  # counted only with the last entry
        assert part.n_paths == 1
        beyond = outbox.read(local, 5, 100)
        assert beyond.empty and beyond.results is None and beyond.local_max == 5
    finally:
        local.close()


def test_floats_travel_exactly(make_settings: Any) -> None:
    settings = make_settings()
    write(settings.watch_dir / "a.json", doc())
    scan(settings)
    local = outbox.connect(settings.db_path)
    try:
        batch = outbox.read(local, 0, 10)
    finally:
        local.close()
    assert batch.results is not None
    shipped = json.loads(batch.results)[0]
    conn = sqlite3.connect(settings.db_path)
    try:
        row = conn.execute(f"SELECT {', '.join(outbox.RESULT_COLUMNS)} FROM results").fetchone()
    finally:
        conn.close()
    assert tuple(shipped) == tuple(row)
    floats = [v for v in row if isinstance(v, float)]
    assert floats and all(type(v) is float for v in shipped[5:8])
