"""The fleet's table files spliced from the change log (watcher.fleet.tables), on a real PostgreSQL:
the same bytes as a whole write, and as ``COPY ... CSV HEADER`` and ``row_to_json`` give (what the
publisher wrote before), after random changes by several hosts; whole writes wherever the log
cannot be trusted."""

from __future__ import annotations

import io
import json
import os
import random
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from testing.fleet import reference_files
from watcher.cli import main
from watcher.fleet import central, shipper
from watcher.fleet.tables import FleetTables
from watcher.regression import Rules

pytestmark = pytest.mark.timeout(120)

FORMATS = ("csv", "json", "markdown")
HOSTS = ("gpu-01", "gpu-02", "gpu-03")
# Texts CSV quotes (comma, quote, LF), some it leaves alone (empty, CR, spaces, backslash, \.), and
# the ones a spreadsheet would evaluate (neutralised with a leading ').
AWKWARD = (
    "", "a,b", 'say "hi"', "two\nlines", "cr\rhere", " lead", "back\\slash", "\\.", "ünï ☃", "=1+1", "plain",
    "+cmd", "-2", "@SUM(A1)", "\tTab", "\rCR", '=HYPERLINK("x")', "=2+3@example.com",
)  # fmt: skip


def _row(rng: random.Random, path: str, model: str) -> list[Any]:
    at = f"2024-{rng.randint(1, 12):02}-{rng.randint(1, 28):02}T12:00:00.000Z"
    thr = rng.choice([0.5, 0.1, 1e-300, 1 / 3, 123456.789, 0.0, 1e16, 2.5e-7])
    issuer = rng.choice(AWKWARD)
    return [path, model, issuer, rng.choice(AWKWARD), at, thr, rng.random(), 0.0, True, 0.85, 5, "ab" * 32, 3, at]


def _ship(conn: psycopg.Connection[Any], host: str, rows: list[list[Any]], gone: list[str]) -> None:
    """What a host's shipped batch does: its paths deleted, their current rows inserted."""
    paths = gone + [r[0] for r in rows]
    with conn.transaction():
        conn.execute(shipper._DELETE["results"], (host, json.dumps(paths)))
        if rows:
            conn.execute(shipper._INSERT_RESULTS, (host, json.dumps(rows)))


def _files(tables: FleetTables) -> dict[str, bytes]:
    return {fmt: path.read_bytes() for fmt, path in tables.targets.items()}


def _check(tables: FleetTables, conn: psycopg.Connection[Any], tmp: Path) -> None:
    """The files written equal a fresh whole write's and the reference's."""
    whole = FleetTables(tmp / "whole", FORMATS)
    whole.write(conn)
    assert whole.full_reads == 1
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        reference = reference_files(conn, tmp)
    assert _files(tables) == _files(whole) == reference


@pytest.fixture
def conn(central_db: Any) -> Any:
    server, name = central_db
    with psycopg.connect(server.url(name)) as c:
        yield c


def test_spliced_files_equal_whole_ones_after_random_changes(conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    rng = random.Random(7)
    paths: dict[str, dict[str, str]] = {h: {} for h in HOSTS}  # host -> path -> model
    models = [f"m-{i:03}" for i in range(120)] + ["Zed", "a,comma", 'q"uote', "ünï"]
    for host in HOSTS:
        batch = [_row(rng, f"runs/{host}/{i}.json", rng.choice(models)) for i in range(60)]
        paths[host] = {r[0]: r[1] for r in batch}
        _ship(conn, host, batch, [])
    tables = FleetTables(tmp_path / "out", FORMATS)
    tables.write(conn)
    _check(tables, conn, tmp_path)
    for step in range(40):
        host = rng.choice(HOSTS)
        kind = rng.random()
        if kind < 0.5:  # new files and rewritten ones, some moving to another model
            batch = [
                _row(rng, rng.choice([*paths[host], f"new/{step}-{i}.json"]), rng.choice(models)) for i in range(3)
            ]
            batch = list({r[0]: r for r in batch}.values())
            _ship(conn, host, batch, [])
            paths[host].update({r[0]: r[1] for r in batch})
        elif kind < 0.8 and paths[host]:  # removals
            gone = rng.sample(sorted(paths[host]), min(3, len(paths[host])))
            _ship(conn, host, [], gone)
            for p in gone:
                del paths[host][p]
        elif kind < 0.9:  # a host starting over: all its rows deleted
            with conn.transaction():
                conn.execute("DELETE FROM watcher.results WHERE host = %s", (host,))
            paths[host] = {}
        else:  # a rejection only: no report row changes
            with conn.transaction():
                conn.execute(
                    shipper._INSERT_REJECTIONS,
                    (host, json.dumps([[f"bad/{step}.json", "[]", None, 3, "2024-01-01T00:00:00.000Z"]])),
                )
        conn.commit()
        tables.write(conn)
        _check(tables, conn, tmp_path)
    # Spliced mostly; whole where a host's rows all went (a quarter of the models or more).
    assert tables.partial_reads >= 20


def test_a_transaction_running_across_a_write_is_picked_up_after_its_commit(
    central_db: Any, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    server, name = central_db
    rng = random.Random(3)
    _ship(conn, "gpu-01", [_row(rng, f"a/{i}.json", f"m{i:02}") for i in range(40)], [])
    tables = FleetTables(tmp_path / "out", FORMATS)
    with psycopg.connect(server.url(name)) as slow:
        late = _row(rng, "b/late.json", "m05")
        late[4] = "2030-01-01T00:00:00.000Z"  # the newest experiment: the model's report row
        with slow.transaction():  # begun (and its xid taken) before the first write's snapshot
            slow.execute(shipper._INSERT_RESULTS, ("gpu-02", json.dumps([late])))
            tables.write(conn)
            _ship(conn, "gpu-01", [_row(rng, "a/7.json", "m99")], [])
            tables.write(conn)
        assert "b/late.json" not in (tmp_path / "out" / "report.csv").read_text()
        tables.write(conn)
    assert tables.partial_reads == 2
    assert "b/late.json" in (tmp_path / "out" / "report.csv").read_text()
    _check(tables, conn, tmp_path)


def test_whole_writes_where_the_log_cannot_be_trusted(conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    rng = random.Random(5)
    _ship(conn, "gpu-01", [_row(rng, f"a/{i}.json", f"m{i:02}") for i in range(40)], [])
    tables = FleetTables(tmp_path / "out", FORMATS)
    tables.write(conn)
    assert (tables.full_reads, tables.partial_reads) == (1, 0)

    # TRUNCATE fires no trigger: the table's new file node says so.
    with conn.transaction():
        conn.execute("TRUNCATE watcher.results")
    _ship(conn, "gpu-02", [_row(rng, "b/1.json", "m01")], [])
    tables.write(conn)
    assert tables.full_reads == 2
    _check(tables, conn, tmp_path)

    # A file not the one written last (someone replaced it): written whole again.
    csv = tables.targets["csv"]
    csv.write_text("model_id\n")
    _ship(conn, "gpu-02", [_row(rng, "b/2.json", "m02")], [])
    tables.write(conn)
    assert tables.full_reads == 3
    _check(tables, conn, tmp_path)

    # A new connection (reset): whole, since a notification may have been missed meanwhile.
    tables.reset()
    tables.write(conn)
    assert tables.full_reads == 4
    # Nothing changed since: the files are left alone.
    before = os.stat(csv).st_mtime_ns
    tables.write(conn)
    assert (tables.full_reads, os.stat(csv).st_mtime_ns) == (4, before)

    # Most models touched at once: whole (cheaper than splicing).
    _ship(conn, "gpu-02", [_row(rng, f"c/{i}.json", f"m{i:02}") for i in range(30)], [])
    tables.write(conn)
    assert tables.full_reads == 5
    _check(tables, conn, tmp_path)


def test_a_reader_without_the_change_log_gets_whole_writes(central_db: Any, tmp_path: Path) -> None:
    server, name = central_db
    rng = random.Random(9)
    role = f"plain_reader_{uuid.uuid4().hex[:6]}"
    with server.admin(name) as admin:
        _ship(admin, "gpu-01", [_row(rng, f"a/{i}.json", f"m{i:02}") for i in range(40)], [])
        admin.execute(f"CREATE ROLE {role} LOGIN".encode())
        admin.execute(f"GRANT USAGE ON SCHEMA watcher TO {role}".encode())
        admin.execute(f"GRANT SELECT ON watcher.results, watcher.report TO {role}".encode())
    password = server.set_password(role)
    tables = FleetTables(tmp_path / "out", FORMATS)
    with psycopg.connect(server.url(name, role), password=password) as reader:
        tables.write(reader)
        with server.admin(name) as admin:
            _ship(admin, "gpu-01", [_row(rng, "a/3.json", "m77")], [])
        tables.write(reader)
    assert (tables.full_reads, tables.partial_reads) == (2, 0)
    with psycopg.connect(server.url(name)) as c:
        _check(tables, c, tmp_path)


def _command(url: str, fmt: str) -> bytes:
    out = io.StringIO()
    assert main(["report", "--central", url, "--format", fmt], stdout=out) == 0
    return out.getvalue().encode()


def test_with_regression_checks_the_files_carry_the_verdicts_as_the_command_prints_them(
    central_db: Any, conn: psycopg.Connection[Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, name = central_db
    for key in [k for k in os.environ if k.startswith("WATCHER_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("PGPASSFILE", str(server.passfile))
    monkeypatch.setenv("WATCHER_REGRESSIONS", "true")
    rules = Rules(0.02, 0.1)  # the defaults, which the command reads too
    rng = random.Random(11)
    models = ["m-1", "m-2", "=cmd", "a,comma", 'q"uote', "ünï"]

    def row(path: str) -> list[Any]:
        r = _row(rng, path, rng.choice(models))
        r[5], r[6] = rng.choice([0.5, 0.55, 0.8]), rng.choice([0.9, 0.91, 0.8])  # near enough, or not
        r[8] = rng.random() < 0.6  # target_met: sometimes lost
        return r

    for host in HOSTS:
        _ship(conn, host, [row(f"runs/{host}/{i}.json") for i in range(8)], [])
    tables = FleetTables(tmp_path / "out", FORMATS, rules)
    tables.write(conn)
    seen: set[bool] = set()
    for step in range(12):
        host = rng.choice(HOSTS)
        if step % 3 == 2:  # a removal: the model's row goes back to an older experiment
            _ship(conn, host, [], [f"runs/{host}/{rng.randrange(8)}.json"])
        else:
            _ship(conn, host, [row(f"new/{host}/{step}.json")], [])
        conn.commit()
        tables.write(conn)
        whole = FleetTables(tmp_path / "whole", FORMATS, rules)
        whole.write(conn)
        files = _files(tables)
        assert files == _files(whole)
        assert files == {fmt: _command(server.url(name), fmt) for fmt in FORMATS}
        seen.update(r["regressed"] for r in json.loads(files["json"]))
        assert files["csv"].startswith(",".join(central.FLEET_REGRESSION_COLUMNS).encode() + b"\n")
    assert seen == {True, False}  # both verdicts were written
    assert tables.partial_reads >= 6
    # Off again: the files as they always were (CSV by the server, the JSON as row_to_json).
    off = FleetTables(tmp_path / "off", FORMATS)
    off.write(conn)
    _check(off, conn, tmp_path)
