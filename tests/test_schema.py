"""Migrations: a database of any earlier version is brought up to date; a newer one is refused."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from watcher.errors import StoreError
from watcher.schema import MIGRATIONS, SCHEMA_VERSION, statements
from watcher.store import Store


def test_older_database_is_migrated_on_open(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "w.db")
    conn.executescript(MIGRATIONS[0] + "\nPRAGMA user_version = 1;")
    conn.execute("INSERT INTO history (at, path, outcome) VALUES ('t', 'a.json', 'removed')")
    conn.commit()
    conn.close()
    with Store.open(tmp_path / "w.db") as s:
        assert s.version == SCHEMA_VERSION == 5
        assert {"poll_period", "sweep_seconds", "last_sweep_at"} <= set(s.db["daemon_status"].columns_dict)
        assert "daemon_status" in s.db.table_names()
        assert "curve" in s.db["results"].columns_dict
        assert {"results_latest", "results_recent"} <= {i.name for i in s.db.table("results").indexes}
        assert s.db.execute("SELECT outcome, path FROM history").fetchall() == [("removed", "a.json")]


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
