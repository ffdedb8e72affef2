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


def _backup(db: Path, to: Path) -> None:
    """A copy of one committed state, as ``sqlite3 watcher.db ".backup ..."`` takes it."""
    src, dst = sqlite3.connect(db), sqlite3.connect(to)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


def _restore(backup: Path, db: Path) -> None:
    """The README's restore: the copy in place of the database, its -wal and -shm deleted."""
    for suffix in ("-wal", "-shm"):
        db.with_name(db.name + suffix).unlink(missing_ok=True)
    db.write_bytes(backup.read_bytes())


def _resyncs(out: io.StringIO) -> list[dict[str, Any]]:
    return [e for e in map(json.loads, out.getvalue().splitlines()) if e["event"] == "central_resync"]


def test_a_restored_backup_whose_history_grew_past_the_mark_is_resynced(
    host: Any, central_db: Any, tmp_path: Path
) -> None:
    # The scenario: the backup's history ends before the central mark, and the changes
    # made while the host was down make it grow past the mark again, with the same first entry.
    server, db = central_db
    out = io.StringIO()
    logs.configure("info", "json", stream=out)
    inbox: Path = host.watch_dir
    for i in range(10):
        write(inbox / f"old{i}.json", doc())
    scan(host)
    shipper = Shipper(host)
    try:
        _ship_all(shipper)
        _backup(host.db_path, tmp_path / "backup.db")
        for i in range(15):  # shipped after the backup
            write(inbox / f"new{i}.json", doc())
        scan(host)
        _ship_all(shipper)
        mark = fleet_invariant.shipped_id(server.url(db), "gpu-01")
        shipper._close()
        # While the daemon is down: files rewritten, deleted and added; then the restore.
        for i in range(0, 15, 3):
            write(inbox / f"new{i}.json", doc())
        for i in range(3):
            (inbox / f"old{i}.json").unlink()
        write(inbox / "old5.json", "{not json")
        for i in range(3):
            write(inbox / f"added{i}.json", doc())
        _restore(tmp_path / "backup.db", host.db_path)
        scan(host)
        assert fleet_invariant.local_max_id(host.db_path) > mark  # ids the mark has passed, reused
        _ship_all(shipper)
        _check(host, server.url(db))
        assert [e["reason"] for e in _resyncs(out)] == [
            "the local entry at the central mark is not the one shipped (restored from a backup or rolled back)"
        ]
        _ship_all(shipper)  # converged: nothing more to do, no second resync
        assert len(_resyncs(out)) == 1
    finally:
        shipper._close()


def test_a_history_rolled_back_and_regrown_to_the_same_length_is_resynced(
    host: Any, central_db: Any, tmp_path: Path
) -> None:
    # A power cut in WAL with synchronous=NORMAL: the last commits are gone after the reboot, and
    # the entries written then take exactly the ids the central database had been told about.
    server, db = central_db
    inbox: Path = host.watch_dir
    for i in range(8):
        write(inbox / f"m{i}.json", doc())
    scan(host)
    _backup(host.db_path, tmp_path / "before-cut.db")
    write(inbox / "lost-a.json", doc())
    write(inbox / "lost-b.json", "[]")
    scan(host)  # two commits that the cut will take back, shipped before it
    shipper = Shipper(host)
    try:
        _ship_all(shipper)
        mark = fleet_invariant.shipped_id(server.url(db), "gpu-01")
        shipper._close()
        _restore(tmp_path / "before-cut.db", host.db_path)  # the cut
        (inbox / "lost-a.json").unlink()  # their files changed meanwhile, differently
        (inbox / "lost-b.json").unlink()
        write(inbox / "m1.json", doc())
        write(inbox / "other.json", doc())
        scan(host)
        assert fleet_invariant.local_max_id(host.db_path) == mark  # nothing new by the ids alone
        _ship_all(shipper)
        _check(host, server.url(db))
    finally:
        shipper._close()


def test_a_backup_taken_after_the_mark_ships_on_without_a_resync(host: Any, central_db: Any, tmp_path: Path) -> None:
    # The exact check must not cry wolf: a restored history that still holds the very entry at
    # the mark is the one shipped, and only what came after is sent.
    server, db = central_db
    out = io.StringIO()
    logs.configure("info", "json", stream=out)
    for i in range(6):
        write(host.watch_dir / f"m{i}.json", doc())
    scan(host)
    shipper = Shipper(host)
    try:
        _ship_all(shipper)
        _backup(host.db_path, tmp_path / "backup.db")
        shipper._close()
        _restore(tmp_path / "backup.db", host.db_path)
        write(host.watch_dir / "m7.json", doc())
        scan(host)
        _ship_all(shipper)
        _check(host, server.url(db))
        assert _resyncs(out) == []
    finally:
        shipper._close()


def test_a_mark_left_by_an_older_watcher_is_resynced_once(host: Any, central_db: Any) -> None:
    server, db = central_db
    out = io.StringIO()
    logs.configure("info", "json", stream=out)
    for i in range(5):
        write(host.watch_dir / f"m{i}.json", doc())
    scan(host)
    shipper = Shipper(host)
    try:
        _ship_all(shipper)
        with server.admin(db) as conn:  # as a host of the previous schema leaves it
            conn.execute("UPDATE watcher.hosts SET shipped_entry = NULL")
        write(host.watch_dir / "m9.json", doc())
        scan(host)
        _ship_all(shipper)
        _ship_all(shipper)
        _check(host, server.url(db))
        assert len(_resyncs(out)) == 1
        assert "older watcher" in _resyncs(out)[0]["reason"]
    finally:
        shipper._close()
