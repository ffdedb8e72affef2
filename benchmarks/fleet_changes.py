"""What the fleet's change log costs: shipping with the change-log triggers on and off (A/B in
the same run, alternating), and what one ``watcher follow --central`` read costs.

``python -m benchmarks.fleet_changes [--rows 100000] [--batch 5000] [--rounds 3]``

Ships ``rows`` result rows as a host role, in the shipper's own statements (delete the batch's
paths, insert their rows from one JSON array), into two databases of one throwaway PostgreSQL
(fsync on): one with the triggers of central migration 2 enabled, one with them disabled. Each
round ships every row anew into both (the rows exist, as when files change), alternating which
goes first. Prints the rows shipped per CPU second of the server's backend (wall time on a shared
machine says more about the neighbours) for each, and the difference; then the time of one follower read of a
window holding one batch, and of an idle read. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

from benchmarks.fleet import print_figures
from testing.pgserver import PgServer
from watcher.fleet import central, shipper
from watcher.fleet.follow import FleetFollower

HOST = "bench-01"
CLK = os.sysconf("SC_CLK_TCK")


def _rows(n: int, stamp: str) -> list[list[Any]]:
    return [
        [f"runs/{i // 1000}/m{i}.json", str(uuid.UUID(int=i)), "ana@example.com", "2024-05-01T12:00:00Z",
         "2024-05-01T12:00:00.000Z", 0.5, 0.85, 0.0, 1, 0.85, 5, "ab" * 32, 3, stamp]
        for i in range(n)
    ]  # fmt: skip


def _cpu(pid: int) -> float:
    """CPU seconds of a server process (its backend for one connection)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def _ship(conn: psycopg.Connection[Any], rows: list[list[Any]], batch: int) -> float:
    """Ship ``rows`` in batches, one transaction each; the server's CPU seconds for it."""
    backend = conn.info.backend_pid
    started = _cpu(backend)
    for k in range(0, len(rows), batch):
        chunk = rows[k : k + batch]
        with conn.transaction():
            paths = json.dumps([r[0] for r in chunk])
            for table in ("results", "rejections"):
                conn.execute(shipper._DELETE[table], (HOST, paths))
            conn.execute(shipper._INSERT_RESULTS, (HOST, json.dumps(chunk)))
    return _cpu(backend) - started


def bench(n: int, batch: int, rounds: int) -> list[tuple[str, str]]:
    server = PgServer(fsync=True)
    try:
        server.start()
        urls, dbs = {}, {}
        for triggers in (True, False):
            db = dbs[triggers] = server.create_database()
            with server.admin(db) as conn:
                central.ensure_schema(conn)
                central.add_host(conn, HOST, "bench_host")
                for table in ("results", "rejections"):
                    conn.execute(f"ALTER TABLE watcher.{table} {'ENABLE' if triggers else 'DISABLE'} TRIGGER USER")
            urls[triggers] = server.url(db, "bench_host")
        server.set_password("bench_host")
        env_pass = server.env()["PGPASSFILE"]
        conns = {t: psycopg.connect(f"{u}&passfile={env_pass}", autocommit=True) for t, u in urls.items()}
        seconds: dict[bool, list[float]] = {True: [], False: []}
        for t in (True, False):  # the first load (inserts into empty tables), not counted
            _ship(conns[t], _rows(n, "0"), batch)
        for r in range(rounds):
            rows = _rows(n, f"2026-01-01T00:00:{r:02}.000Z")
            for t in (True, False) if r % 2 == 0 else (False, True):
                seconds[t].append(_ship(conns[t], rows, batch))
        on, off = (n / statistics.median(seconds[t]) for t in (True, False))
        out = [
            (
                f"shipping {n:,} changed rows, change log on (rows per server CPU second, median of {rounds})",
                f"{on:,.0f}",
            ),
            (
                f"shipping {n:,} changed rows, change log off (rows per server CPU second, median of {rounds})",
                f"{off:,.0f}",
            ),
            ("cost of the change log on shipping (%)", f"{100 * (off / on - 1):.1f}"),
        ]
        follower = FleetFollower(server.url(dbs[True]))
        _ship(conns[True], _rows(batch, "later"), batch)
        t0 = time.perf_counter()
        shown = len(follower.poll())
        out.append((f"follow --central: one read of a window of {shown:,} changed rows (ms)",
                    f"{1000 * (time.perf_counter() - t0):.1f}"))  # fmt: skip
        idle = []
        for _ in range(20):
            t0 = time.perf_counter()
            follower.poll()
            idle.append(1000 * (time.perf_counter() - t0))
        out.append(("follow --central: one read with nothing new (ms, median of 20)", f"{statistics.median(idle):.2f}"))
        follower.close()
        for c in conns.values():
            c.close()
        return out
    finally:
        server.destroy()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=shipper.BATCH)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    rows = bench(args.rows, args.batch, args.rounds)
    print_figures(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
