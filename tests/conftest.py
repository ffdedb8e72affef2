from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from watcher import logs
from watcher.config import Settings


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test on the session's PostgreSQL server is marked ``fleet`` (``-m "not fleet"``
    leaves the server unstarted)."""
    for item in items:
        if "pg_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.fleet)


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    yield
    logs.reset()


@pytest.fixture
def make_settings(tmp_path: Path) -> Any:
    """Settings on temporary folders: ``make_settings(target_recall=0.9)``."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "watch_dir": tmp_path / "inbox",
            "db_path": tmp_path / "var" / "watcher.db",
            "workers": 1,
        }
        values.update(overrides)
        Path(values["watch_dir"]).mkdir(parents=True, exist_ok=True)
        return Settings(**values)

    return make


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Any]:
    """One throwaway PostgreSQL server for the session's fleet tests (skipped where PostgreSQL's
    server binaries are not installed; .ci/run installs them)."""
    from testing.pgserver import PgServer, pg_bin

    if pg_bin() is None:
        if os.environ.get("CI"):  # .ci/run installs it: its absence there is a failure
            pytest.fail("PostgreSQL server not installed")
        pytest.skip("PostgreSQL server not installed (apt-get install postgresql-15)")
    server = PgServer()
    try:
        server.start()
        yield server
    finally:
        server.destroy()


@pytest.fixture
def central_db(pg_cluster: Any) -> Any:
    """A fresh database on the session's server, with the central schema: ``(server, dbname)``."""
    from watcher.fleet import central

    name = pg_cluster.create_database()
    with pg_cluster.admin(name) as conn:
        central.ensure_schema(conn)
    return pg_cluster, name
