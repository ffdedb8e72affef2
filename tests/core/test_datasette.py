"""The shipped Datasette metadata matches the real schema, and its canned queries run."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from testing.helpers import doc, write
from watcher.config import Settings
from watcher.reconcile import scan

META = json.loads((Path(__file__).resolve().parents[2] / "datasette" / "metadata.json").read_text())
DB = META["databases"]["watcher"]


def test_every_table_and_column_named_exists(make_settings: Any, request: pytest.FixtureRequest) -> None:
    settings: Settings = make_settings()
    scan(settings)
    conn = sqlite3.connect(settings.db_path)
    request.addfinalizer(conn.close)
    names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")}
    assert set(DB["tables"]) <= names
    assert DB["tables"]["daemon_status"] == {"hidden": True}
    for table, meta in DB["tables"].items():
        columns = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        assert set(meta.get("columns", {})) <= columns, table
        assert set(meta.get("facets", [])) <= columns, table


def test_canned_queries_answer(make_settings: Any, request: pytest.FixtureRequest) -> None:
    settings: Settings = make_settings()
    model = "3f2b8c1e-7d4a-4e0b-9a6f-1c2d3e4f5a6b"
    write(settings.watch_dir / "low.json", doc(model_id=model, recall_arr=[0.5, 0.4, 0.3, 0.2, 0.1]))
    write(settings.watch_dir / "bad1.json", doc(issuer="x"))
    write(settings.watch_dir / "bad2.json", doc(issuer="y"))
    scan(settings)
    conn = sqlite3.connect(settings.db_path)
    request.addfinalizer(conn.close)
    queries = DB["queries"]

    def run(name: str, **params: str) -> list[tuple[Any, ...]]:
        sql = queries[name]["sql"]
        assert set(re.findall(r":(\w+)", sql)) == set(params)
        return conn.execute(sql, params).fetchall()

    assert [r[0] for r in run("models_missing_target")] == [model]
    assert run("rejections_by_reason")[0][0] == "issuer" and run("rejections_by_reason")[0][2] == 2
    assert [r[3] for r in run("history_of_model", model_id=model.upper())] == ["scored"]


def test_distance_reads_as_the_decimal_difference(make_settings: Any) -> None:
    settings: Settings = make_settings()
    write(settings.watch_dir / "a.json", doc(recall_arr=[1.0, 0.9, 0.8, 0.5, 0.0]))  # 0.9 vs 0.85, 0.8 vs 0.85
    scan(settings)
    conn = sqlite3.connect(settings.db_path)
    assert conn.execute("SELECT closest_recall_value, distance, target_met FROM results").fetchall() == [(0.9, 0.05, 1)]
    assert conn.execute("SELECT CAST(distance AS TEXT) FROM results").fetchall() == [("0.05",)]
