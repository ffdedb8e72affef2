"""Migrations: a database of any earlier version is brought up to date; a newer one is refused."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from watcher.errors import StoreError
from watcher.schema import DEFERRABLE_INDEXES, MIGRATIONS, REPORT_COLUMNS, SCHEMA_VERSION, statements
from watcher.store import Store


def test_older_database_is_migrated_on_open(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "w.db")
    conn.executescript(MIGRATIONS[0] + "\nPRAGMA user_version = 1;")
    conn.execute("INSERT INTO history (at, path, outcome) VALUES ('t', 'a.json', 'removed')")
    conn.commit()
    conn.close()
    with Store.open(tmp_path / "w.db") as s:
        assert s.version == SCHEMA_VERSION == 9
        assert "point_sets" in s.db.table_names() and {"operating_points", "report_points"} <= set(s.db.view_names())
        assert "regressed" in s.db["results"].columns_dict
        assert {"poll_period", "sweep_seconds", "last_sweep_at"} <= set(s.db["daemon_status"].columns_dict)
        assert "daemon_status" in s.db.table_names()
        assert "curve" in s.db["results"].columns_dict
        assert {"results_latest", "results_recent"} <= {i.name for i in s.db.table("results").indexes}
        assert s.db.execute("SELECT outcome, path FROM history").fetchall() == [("removed", "a.json")]


def test_deferrable_indexes_are_built_as_the_migrations_build_them(tmp_path: Path) -> None:
    # What a cold scan builds at its end (or the next open after a stopped one) is the same index.
    conn = sqlite3.connect(tmp_path / "w.db")
    for script in MIGRATIONS:
        for statement in statements(script):
            conn.execute(statement)
    migrated = dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index'").fetchall())
    conn.close()
    assert {name: migrated.get(name) for name in DEFERRABLE_INDEXES} == DEFERRABLE_INDEXES


def test_a_missing_deferrable_index_is_built_on_open(tmp_path: Path) -> None:
    # A cold scan killed before its end leaves them out: the next writer builds them.
    Store.open(tmp_path / "w.db").close()
    conn = sqlite3.connect(tmp_path / "w.db")
    conn.execute("DROP INDEX results_recent")
    conn.execute("DROP INDEX history_path")
    conn.close()
    with Store.open(tmp_path / "w.db") as s:
        indexes = {name for (name,) in s.db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert set(DEFERRABLE_INDEXES) <= indexes


def test_newer_database_is_refused(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "w.db")
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(StoreError, match="schema version 99 is newer than this watcher"):
        Store.open(tmp_path / "w.db")


def test_statements_splits_a_script_into_whole_statements() -> None:
    assert statements("CREATE TABLE a (x);\n-- why\nCREATE INDEX b ON a (x);\n") == [
        "CREATE TABLE a (x)",
        "-- why\nCREATE INDEX b ON a (x)",
    ]


def test_version_5_shows_the_target_in_the_report_and_rounds_stored_distances(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "w.db")
    conn.executescript(";\n".join(MIGRATIONS[:4]) + "\nPRAGMA user_version = 4;")
    conn.execute(
        "INSERT INTO results VALUES ('a.json', 'm1', 'a@x.org', 'd', 'd', 0.5, 0.8, 0.04999999999999993, 0, 0.85,"
        " 3, 1, 1, 1, 'h', 3, 't', '')"
    )
    conn.commit()
    conn.close()
    s = Store.open(tmp_path / "w.db")
    assert s.db.execute("SELECT * FROM report").fetchall() == [("m1", "a@x.org", 0.5, 0.8, 0.85, 0, "d", "a.json")]
    assert [c.name for c in s.db["report"].columns] == list(REPORT_COLUMNS)
    assert s.db.execute("SELECT distance FROM results").fetchall() == [(0.05,)]
    # The report is still read from the covering index alone, in model_id order.
    plan = " ".join(row[-1] for row in s.db.execute("EXPLAIN QUERY PLAN SELECT * FROM report ORDER BY model_id"))
    assert "COVERING INDEX results_latest" in plan and "TEMP B-TREE" not in plan, plan
