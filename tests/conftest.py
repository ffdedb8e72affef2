from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from watcher import logs
from watcher.config import Settings


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Under ``CI`` (``.ci/run`` exports ``CI=true``) a skipped test is a failed one: CI installs
    everything the suite needs (Chromium, LibreOffice, systemd, PostgreSQL, ...), so a skip there
    means a check that was never made while the run looks green. Elsewhere a skip stays a skip."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.skipped and os.environ.get("CI") and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under CI, where every test must run: {reason}"


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
