"""The central schema on a real PostgreSQL: migration under concurrency, row-level security per
host role, the reader role, and the fleet-wide report view's rule."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import psycopg
import pytest

from watcher.errors import CentralError
from watcher.fleet import central


def _role() -> str:
    return "r_" + uuid.uuid4().hex[:10]


def _login(server: Any, db: str, role: str, monkeypatch: pytest.MonkeyPatch) -> psycopg.Connection[Any]:
    server.set_password(role)
    monkeypatch.setenv("PGPASSFILE", str(server.passfile))
    return central.connect(server.url(db, role), autocommit=True)


def _result(host: str, path: str, model: str, at: str) -> tuple[Any, ...]:
    return (host, path, model, "ana@example.com", at, at, 0.5, 0.85, 0.0, True, 0.85, 5, "sha", 3, at)


_INSERT = (
    "INSERT INTO watcher.results (host, path, model_id, issuer, experiment_date, experiment_at, optimal_threshold,"
    " closest_recall_value, distance, target_met, target_recall, n_points, sha256, rules_version, scored_at)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)


def test_schema_is_created_once_when_many_start_together(pg_cluster: Any) -> None:
    name = pg_cluster.create_database()
    applied: list[int] = []
    errors: list[BaseException] = []
    gate = threading.Barrier(6)

    def init() -> None:
        try:
            with pg_cluster.admin(name) as conn:
                gate.wait()
                applied.append(central.ensure_schema(conn))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=init) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert sorted(applied) == [0] * 5 + [central.SCHEMA_VERSION]
    with pg_cluster.admin(name) as conn:
        assert central.schema_version(conn) == central.SCHEMA_VERSION


def test_a_host_role_cannot_create_the_schema(pg_cluster: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    name = pg_cluster.create_database()
    role = _role()
    with pg_cluster.admin() as conn:
        conn.execute(f'CREATE ROLE "{role}" LOGIN')
    with pg_cluster.admin(name) as conn:
        conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        conn.execute(f'REVOKE CREATE ON DATABASE "{name}" FROM PUBLIC')
    with _login(pg_cluster, name, role, monkeypatch) as conn, pytest.raises(CentralError, match="watcher central init"):
        conn.autocommit = False
        central.ensure_schema(conn)


def test_each_host_role_writes_only_its_own_rows(central_db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    server, db = central_db
    role_a, role_b, reader = _role(), _role(), _role()
    with server.admin(db) as conn:
        assert central.add_host(conn, "host-a", role_a)
        assert central.add_host(conn, "host-b", role_b)
        assert not central.add_host(conn, "host-a", role_a)  # again: nothing new
        with pytest.raises(CentralError, match="already bound"):
            central.add_host(conn, "host-a", role_b)
        central.grant_reader(conn, reader)
    with (
        _login(server, db, role_a, monkeypatch) as a,
        _login(server, db, role_b, monkeypatch) as b,
        _login(server, db, reader, monkeypatch) as r,
    ):
        _own_rows_only(a, b, r, role_a)
    with server.admin(db) as conn:
        assert conn.execute("SELECT host, issuer FROM watcher.results ORDER BY host").fetchall() == [
            ("host-a", "ana@example.com"),
            ("host-b", "ana@example.com"),
        ]


def _own_rows_only(
    a: psycopg.Connection[Any], b: psycopg.Connection[Any], r: psycopg.Connection[Any], role_a: str
) -> None:
    a.execute(_INSERT, _result("host-a", "x.json", "m1", "2024-01-01T00:00:00.000000Z"))
    b.execute(_INSERT, _result("host-b", "x.json", "m1", "2024-01-02T00:00:00.000000Z"))
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        a.execute(_INSERT, _result("host-b", "y.json", "m2", "2024-01-01T00:00:00.000000Z"))
    # Another host's rows are visible but untouchable: updates and deletes match nothing.
    assert a.execute("UPDATE watcher.results SET issuer = 'evil@example.com' WHERE host = 'host-b'").rowcount == 0
    assert a.execute("DELETE FROM watcher.results WHERE host = 'host-b'").rowcount == 0
    assert a.execute("UPDATE watcher.hosts SET shipped_id = 99 WHERE host = 'host-b'").rowcount == 0
    with pytest.raises(psycopg.errors.InsufficientPrivilege):  # moving a row to another host
        a.execute("UPDATE watcher.results SET host = 'host-b' WHERE host = 'host-a'")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):  # re-binding a host to another role
        a.execute("UPDATE watcher.hosts SET role = %s WHERE host = 'host-a'", (role_a,))
    assert a.execute("UPDATE watcher.hosts SET shipped_id = 1 WHERE host = 'host-a'").rowcount == 1
    assert r.execute("SELECT count(*) FROM watcher.results").fetchone() == (2,)
    for statement in ("DELETE FROM watcher.results", "UPDATE watcher.hosts SET shipped_id = 0"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            r.execute(statement)


def test_report_view_takes_the_latest_experiment_across_hosts(central_db: Any) -> None:
    server, db = central_db
    with server.admin(db) as conn:
        central.add_host(conn, "h1", _role())
        central.add_host(conn, "h2", _role())
        same = "2024-03-01T00:00:00.000000Z"
        rows = [
            _result("h1", "a.json", "m1", "2024-01-01T00:00:00.000000Z"),
            _result("h2", "a.json", "m1", "2024-02-01T00:00:00.000000Z"),  # later: wins
            _result("h1", "z.json", "m2", same),
            _result("h2", "b.json", "m2", same),  # tie: the greater host wins, whatever the path
            _result("h1", "b.json", "m3", same),
            _result("h1", "c.json", "m3", same),  # tie on one host: the greater path
        ]
        for row in rows:
            conn.execute(_INSERT, row)
        report = conn.execute("SELECT model_id, host, path FROM watcher.report ORDER BY model_id").fetchall()
    assert report == [("m1", "h2", "a.json"), ("m2", "h2", "b.json"), ("m3", "h1", "c.json")]


def test_a_host_a_schema_behind_is_refused_with_one_line_that_names_the_fix(
    central_db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A newer `watcher central init` migrated the central schema past what this host's watcher
    # knows: the host must not write into a schema it does not understand, and says what to do.
    server, db = central_db
    monkeypatch.setattr(central, "SCHEMA_VERSION", central.SCHEMA_VERSION - 1)
    with server.admin(db) as conn, pytest.raises(CentralError) as refused:
        central.ensure_schema(conn)
    message = str(refused.value)
    assert "\n" not in message
    assert message == (
        f"central schema version {central.SCHEMA_VERSION + 1} is newer than this watcher's "
        f"({central.SCHEMA_VERSION}); upgrade watcher on this machine"
    )
