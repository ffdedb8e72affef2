"""The shipper against a real PostgreSQL: what it ships, replaying is harmless, a recreated local
database starts over, refusals and outages are logged once and survived."""

from __future__ import annotations

import io
import json
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from testing import fleet_invariant
from testing.helpers import doc, wait_until, write
from watcher import logs
from watcher.errors import CentralError
from watcher.fleet import central
from watcher.fleet.shipper import Shipper
from watcher.reconcile import scan


@pytest.fixture
def host(central_db: Any, make_settings: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Settings of one registered host, logging in with its own role and password."""
    server, db = central_db
    role = "r_" + uuid.uuid4().hex[:10]
    with server.admin(db) as conn:
        central.add_host(conn, "gpu-01", role)
    server.set_password(role)
    monkeypatch.setenv("PGPASSFILE", str(server.passfile))
    settings = make_settings(central_url=server.url(db, role), host_name="gpu-01", report_formats=("csv",))
    settings.watch_dir.mkdir(parents=True, exist_ok=True)
    return settings


def _ship_all(shipper: Shipper) -> int:
    batches = 1
    while shipper.step():
        batches += 1
    return batches


def _check(settings: Any, admin_url: str) -> None:
    assert fleet_invariant.violations(settings.db_path, admin_url, settings.host_name) == []


def test_ships_results_rejections_and_removals(host: Any, central_db: Any) -> None:
    server, db = central_db
    admin = server.url(db)
    inbox: Path = host.watch_dir
    write(inbox / "a.json", doc(model_id="3f2b8c1e-7d4a-4e0b-9a6f-1c2d3e4f5a6b"))
    write(inbox / "sub" / "b.json", doc())
    write(inbox / "bad.json", "{not json")
    scan(host)
    shipper = Shipper(host)
    try:
        _ship_all(shipper)
        _check(host, admin)
        # Change everything: a result becomes a rejection, a rejection a result, one file goes.
        write(inbox / "a.json", doc(model_id=...))
        write(inbox / "bad.json", doc())
        (inbox / "sub" / "b.json").unlink()
        scan(host)
        _ship_all(shipper)
        _check(host, admin)
        assert fleet_invariant.shipped_id(admin, "gpu-01") == fleet_invariant.local_max_id(host.db_path)
        with server.admin(db) as conn:
            status = conn.execute("SELECT results, rejections, lag, version FROM watcher.host_status").fetchone()
        assert status == (1, 1, 0, "0.1.0")
    finally:
        shipper._close()


def test_shipping_again_from_the_start_changes_nothing(host: Any, central_db: Any) -> None:
    server, db = central_db
    for i in range(30):
        write(host.watch_dir / f"m{i}.json", doc() if i % 3 else "[]")
    scan(host)
    shipper = Shipper(host)
    try:
        _ship_all(shipper)
    finally:
        shipper._close()
    with server.admin(db) as conn:
        before = conn.execute("SELECT path, sha256, shipped_at FROM watcher.results ORDER BY path").fetchall()
        conn.execute("UPDATE watcher.hosts SET shipped_id = 0")  # as if every mark had been lost
    shipper = Shipper(host)  # a restarted daemon
    try:
        assert _ship_all(shipper) == 1
    finally:
        shipper._close()
    with server.admin(db) as conn:
        after = conn.execute("SELECT path, sha256, shipped_at FROM watcher.results ORDER BY path").fetchall()
    assert [r[:2] for r in after] == [r[:2] for r in before] and len(after) == 20
    assert all(a[2] > b[2] for a, b in zip(after, before, strict=True))  # really written again
    assert fleet_invariant.shipped_id(server.url(db), "gpu-01") == fleet_invariant.local_max_id(host.db_path)
    _check(host, server.url(db))


def test_an_idle_shipper_leaves_the_server_alone_until_its_heartbeat(host: Any, central_db: Any) -> None:
    server, db = central_db
    write(host.watch_dir / "a.json", doc())
    scan(host)
    shipper = Shipper(host)
    try:
        _ship_all(shipper)
        with server.admin(db) as conn:
            conn.execute("UPDATE watcher.hosts SET last_seen = '2000-01-01'")
        assert not shipper.step()
        with server.admin(db) as conn:
            assert conn.execute("SELECT last_seen < '2001-01-01' FROM watcher.hosts").fetchone() == (True,)
        shipper.last_seen -= 60  # the heartbeat is due
        assert not shipper.step()
        with server.admin(db) as conn:
            assert conn.execute("SELECT last_seen > now() - interval '1 minute' FROM watcher.hosts").fetchone() == (
                True,
            )
    finally:
        shipper._close()


def test_small_batches_each_carry_their_mark(host: Any, central_db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    server, db = central_db
    monkeypatch.setattr("watcher.fleet.shipper.BATCH", 7)
    for i in range(40):
        write(host.watch_dir / f"m{i}.json", doc())
    scan(host)
    shipper = Shipper(host)
    try:
        assert shipper.step()
        assert fleet_invariant.shipped_id(server.url(db), "gpu-01") == 7
        assert _ship_all(shipper) == 5  # 33 more entries, 7 at a time
        _check(host, server.url(db))
    finally:
        shipper._close()


def test_a_recreated_local_database_replaces_the_hosts_rows(host: Any, central_db: Any) -> None:
    server, db = central_db
    for name in ("a", "b", "c"):
        write(host.watch_dir / f"{name}.json", doc())
    scan(host)
    shipper = Shipper(host)
    try:
        _ship_all(shipper)
        shipper._close()
        host.db_path.unlink()
        (host.watch_dir / "a.json").unlink()
        scan(host)  # a new database: its history starts again at 1
        _ship_all(shipper)
        _check(host, server.url(db))
    finally:
        shipper._close()


def test_an_unregistered_host_is_refused_with_the_fix(host: Any) -> None:
    settings = host.model_copy(update={"host_name": "not-registered"})
    write(settings.watch_dir / "a.json", doc())
    scan(settings)
    shipper = Shipper(settings)
    try:
        with pytest.raises(CentralError, match="watcher central add-host not-registered"):
            shipper.step()
    finally:
        shipper._close()


def test_outage_is_logged_once_and_the_backlog_arrives(host: Any, central_db: Any) -> None:
    server, db = central_db
    out = io.StringIO()
    logs.configure("info", "json", stream=out)
    write(host.watch_dir / "first.json", doc())
    scan(host)
    shipper = Shipper(host)
    shipper.start()
    try:
        wait_until(lambda: shipper.shipped_id == fleet_invariant.local_max_id(host.db_path) > 0, 20)
        # Point the shipper at a server that is not there: the outage.
        good = shipper.url
        shipper.url = server.url(db).replace(f"host={server.dir}", f"host={server.dir}/nowhere")
        shipper._close_central()
        for i in range(20):
            write(host.watch_dir / f"m{i}.json", doc())
        scan(host)
        shipper.nudge()

        def events(name: str) -> list[dict[str, Any]]:
            return [e for e in map(json.loads, out.getvalue().splitlines()) if e["event"] == name]

        wait_until(lambda: shipper.failures >= 3, 20)
        assert len(events("central_unreachable")) == 1
        shipper.url = good
        wait_until(lambda: events("central_back"), 20)
        wait_until(lambda: not fleet_invariant.violations(host.db_path, server.url(db), "gpu-01"), 20)
        assert len(events("central_unreachable")) == 1
    finally:
        shipper.stop()
        shipper.join(10)
    assert not shipper.is_alive()


def test_stop_while_the_server_is_down_is_prompt(host: Any) -> None:
    settings = host.model_copy(update={"central_url": host.central_url.replace("host=", "host=/nonexistent")})
    write(settings.watch_dir / "a.json", doc())
    scan(settings)
    shipper = Shipper(settings)
    shipper.start()
    wait_until(lambda: shipper.failures >= 1, 20)
    shipper.stop()
    shipper.join(10)
    assert not shipper.is_alive()


def test_a_refused_login_is_told_apart_from_an_outage(host: Any, central_db: Any) -> None:
    out = io.StringIO()
    logs.configure("info", "json", stream=out)
    server, db = central_db
    write(host.watch_dir / "a.json", doc())
    scan(host)
    shipper = Shipper(host.model_copy(update={"central_url": server.url(db, "no_such_role_" + uuid.uuid4().hex[:6])}))
    shipper.start()
    try:
        wait_until(lambda: '"central_refused"' in out.getvalue(), 20, what="central_refused")
    finally:
        shipper.stop()
        shipper.join(10)
    assert '"central_unreachable"' not in out.getvalue()


def test_a_batch_read_ahead_is_dropped_when_the_mark_is_elsewhere(
    host: Any, central_db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, db = central_db
    monkeypatch.setattr("watcher.fleet.shipper.BATCH", 7)
    for i in range(20):
        write(host.watch_dir / f"m{i}.json", doc())
    scan(host)
    shipper = Shipper(host)
    try:
        assert shipper.step()  # entries 1-7 shipped, 8-14 read ahead meanwhile
        assert shipper.ahead is not None
        with server.admin(db) as conn:  # someone else's idea of the mark: from the start
            conn.execute("UPDATE watcher.hosts SET shipped_id = 0")
        assert shipper.step()
        assert fleet_invariant.shipped_id(server.url(db), "gpu-01") == 7  # 1-7 again, not 8-14
        _ship_all(shipper)
        _check(host, server.url(db))
    finally:
        shipper._close()


def test_a_batch_that_fails_half_way_leaves_nothing_and_is_shipped_again(
    host: Any, central_db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, db = central_db
    monkeypatch.setattr("watcher.fleet.shipper.BATCH", 10)
    for i in range(25):
        write(host.watch_dir / f"m{i:02}.json", doc())
    write(host.watch_dir / "bad.json", "[]")
    scan(host)
    shipper = Shipper(host)
    try:
        assert shipper.step()
        local = sqlite3.connect(host.db_path)
        second = [p for (p,) in local.execute("SELECT path FROM history WHERE id > 10 AND id <= 20 ORDER BY id")]
        local.close()
        victim = [p for p in second if p != "bad.json"][5]
        with server.admin(db) as conn:
            before = conn.execute("SELECT path, shipped_at FROM watcher.results ORDER BY path").fetchall()
            # The server fails on one row of the second batch, after that batch's deletes and
            # while its insert is half done.
            conn.execute(
                "CREATE FUNCTION watcher.fail() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN"
                f" IF NEW.path = '{victim}' THEN RAISE EXCEPTION 'disk on fire'; END IF; RETURN NEW; END$$"
            )
            conn.execute(
                "CREATE TRIGGER fail BEFORE INSERT ON watcher.results FOR EACH ROW EXECUTE FUNCTION watcher.fail()"
            )
        with pytest.raises(psycopg.errors.RaiseException, match="disk on fire"):
            shipper.step()
        shipper._close_central()
        with server.admin(db) as conn:
            assert conn.execute("SELECT path, shipped_at FROM watcher.results ORDER BY path").fetchall() == before
            assert conn.execute("SELECT shipped_id FROM watcher.hosts").fetchone() == (10,)
            conn.execute("DROP TRIGGER fail ON watcher.results")
        _ship_all(shipper)
        _check(host, server.url(db))
        assert fleet_invariant.shipped_id(server.url(db), "gpu-01") == fleet_invariant.local_max_id(host.db_path)
    finally:
        shipper._close()
