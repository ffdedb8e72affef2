"""The oracle of testing/invariant.py: it agrees with ``watcher validate --format json``, and it
sees a wrong stored column, a wrong history and a file the walk should not have taken."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from testing import invariant
from testing.helpers import doc, write
from watcher.reconcile import scan


def _corpus(inbox: Path, outside: Path) -> None:
    valid = json.dumps(doc()).encode()
    write(inbox / "ok.json", doc(threshold_arr=[0.1, 0.5, 0.9], recall_arr=[0.9, 0.8, 0.1]))  # 0.80/0.90 tie
    write(inbox / "upper.json", doc(model_id="3F2B8C1E-7D4A-4E0B-9A6F-1C2D3E4F5A6B"))
    write(inbox / "offset.json", doc(experiment_date="2024-05-01T23:30:00.5+05:30"))
    write(
        inbox / "long.json",
        doc(threshold_arr=[i / 99 for i in range(100)], recall_arr=[1 - i / 99 for i in range(100)]),
    )
    write(inbox / "bom.json", b"\xef\xbb\xbf" + valid)
    write(inbox / "empty.json", b"")
    write(inbox / "truncated.json", valid[:20])
    write(inbox / "many.json", doc(recall_arr=[2.0] * 80, threshold_arr=[0.5] * 80))  # more than 50 problems
    write(inbox / "sub" / "deep.json", doc())
    write(inbox / ".hidden" / "skipped.json", b"{")
    write(inbox / "skipped.json.tmp", b"{")
    write(inbox / "skipped.json~", b"{")
    write(inbox / "notes.txt", b"{")
    os.mkfifo(inbox / "pipe.json")
    os.symlink(write(outside, doc()), inbox / "link-out.json")
    os.symlink("nowhere.json", inbox / "dangling.json")
    os.symlink("ok.json", inbox / "link-in.json")
    (inbox / "dir.json").mkdir()


def test_the_oracle_gives_the_errors_and_the_point_watcher_validate_gives(make_settings: Any, tmp_path: Path) -> None:
    settings = make_settings()
    _corpus(settings.watch_dir, tmp_path / "outside.json")
    files, unreadable = invariant.list_tree(
        settings.watch_dir, invariant.PATTERNS, invariant.IGNORE_PATTERNS, True, frozenset()
    )
    assert unreadable == []
    assert sorted(files) == sorted(
        ["ok.json", "upper.json", "offset.json", "long.json", "bom.json", "empty.json", "truncated.json",
         "many.json", "sub/deep.json", "pipe.json", "link-out.json", "dangling.json", "link-in.json"]
    )  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "watcher", "validate", "--format", "json", str(settings.watch_dir)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    told = {
        Path(r["path"]).relative_to(settings.watch_dir).as_posix(): r for r in map(json.loads, proc.stdout.splitlines())
    }
    assert set(told) == set(files)
    for rel in files:
        exp = invariant.expected(settings.watch_dir, rel, invariant.MAX_FILE_BYTES, invariant.TARGET_RECALL)
        assert exp is not None
        assert exp.valid == told[rel]["valid"], rel
        if exp.valid:
            got = {k: told[rel][k] for k in ("model_id", "issuer", "experiment_date", "optimal_threshold",
                                            "closest_recall_value", "target_recall", "target_met")}  # fmt: skip
            assert got == {**{k: exp.row[k] for k in got}, "target_met": bool(exp.row["target_met"])}, rel
        else:
            assert exp.row["errors"] == told[rel]["errors"], rel
    ok = invariant.expected(settings.watch_dir, "ok.json", invariant.MAX_FILE_BYTES, 0.85)
    assert ok is not None and (ok.row["optimal_threshold"], ok.row["distance"]) == (0.1, 0.05)
    offset = invariant.expected(settings.watch_dir, "offset.json", invariant.MAX_FILE_BYTES, 0.85)
    assert offset is not None and offset.row["experiment_at"] == "2024-05-01T18:00:00.500000Z"


@pytest.mark.parametrize(
    ("sql", "found"),
    [
        ("UPDATE results SET distance = distance + 1e-6 WHERE path = 'ok.json'", "ok.json: results.distance"),
        ("UPDATE results SET experiment_at = '2024-05-01T23:30:00.500000Z' WHERE path = 'offset.json'",
         "offset.json: results.experiment_at"),
        ("UPDATE results SET model_id = upper(model_id) WHERE path = 'upper.json'", "upper.json: results.model_id"),
        ("UPDATE results SET target_met = 1 - target_met WHERE path = 'long.json'", "long.json: results.target_met"),
        ("UPDATE results SET curve = x'00' WHERE path = 'long.json'", "long.json: results.curve"),
        ("UPDATE results SET n_points = 3 WHERE path = 'long.json'", "long.json: results.n_points"),
        ("UPDATE rejections SET errors = '[]' WHERE path = 'many.json'", "many.json: rejections.errors"),
        ("INSERT INTO rejections (path, errors, rules_version, rejected_at) VALUES ('skipped.json.tmp', '[]', 1, '')",
         "skipped.json.tmp: stored but not on disk"),
        ("INSERT INTO history (at, path, outcome) VALUES ('', 'ok.json', 'rejected')", "ok.json: history's latest"),
        ("INSERT INTO history (at, path, outcome, sha256) VALUES ('', 'gone.json', 'scored', 'x')",
         "gone.json: no longer on disk"),
    ],
)  # fmt: skip
def test_the_oracle_sees_a_wrong_column_history_or_walk(
    make_settings: Any, tmp_path: Path, sql: str, found: str
) -> None:
    settings = make_settings()
    _corpus(settings.watch_dir, tmp_path / "outside.json")
    scan(settings)
    assert invariant.violations(settings.watch_dir, settings.db_path) == []
    with sqlite3.connect(settings.db_path) as conn:
        conn.execute(sql)
    conn.close()
    problems = invariant.violations(settings.watch_dir, settings.db_path)
    assert any(p.startswith(found) for p in problems), problems
