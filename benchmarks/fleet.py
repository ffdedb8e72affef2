"""Fleet benchmark: one host shipping to a throwaway PostgreSQL on this machine (Unix socket,
fsync on), with the issue's figures printed as a table.

``python -m benchmarks.fleet [--models 100000] [--changes 100] [--idle 10] [--burst 10000] [--repeats 3]
[--part all|shipping|host]``

* cold scan of ``models`` files by ``watcher run``, shipping off and on: seconds to ready, and
  with shipping on, seconds until the last row is in PostgreSQL;
* outage: the server down while the daemon ingests ``models`` files, then started: seconds from
  the server's start until the host has caught up, and the rows per second that makes;
* latency of one change (a new file renamed into place) until its row is in PostgreSQL, p50/p99
  over ``changes`` changes, and until the fleet report file (``watcher central publish``) shows it;
* the daemon's idle CPU with shipping on;
* what shipping costs the host itself: a burst of ``burst`` new files into a running daemon
  (as in ``benchmarks.run``), shipping off and on, alternately: seconds until all are in the
  local database and the daemon's CPU seconds for it; then, on those daemons, the latency of one
  change to the local database and the idle CPU, shipping off and on.

Needs PostgreSQL's server binaries (Debian: postgresql-15). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from benchmarks.run import CLK, publish, wait_for
from testing import corpus
from testing.pgserver import PgServer
from watcher.fleet import central

PY = sys.executable
HOST = "bench-01"


class Host:
    """``watcher run`` on a tree and database, shipping to ``url`` when given."""

    def __init__(self, tree: Path, db: Path, log: Path, url: str | None, env: dict[str, str], host: str = HOST) -> None:
        self.tree, self.db, self.log = tree, db, log
        full = {k: v for k, v in os.environ.items() if not k.startswith("WATCHER_")}
        full.update(env)
        full["WATCHER_HOST_NAME"] = host
        if url:
            full["WATCHER_CENTRAL_URL"] = url
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [PY, "-m", "watcher", "run", "--watch-dir", str(tree), "--db", str(db), "--log-format", "json"],
            stderr=log.open("w"), stdout=subprocess.DEVNULL, env=full,
        )  # fmt: skip

    def ready_seconds(self) -> float:
        wait_for(lambda: "daemon_ready" in self.log.read_text(), timeout=900, poll=0.02)
        return time.perf_counter() - self.started

    def local_max(self) -> int:
        conn = sqlite3.connect(f"{self.db.as_uri()}?mode=ro", uri=True, timeout=30)
        try:
            return int(conn.execute("SELECT coalesce(max(id), 0) FROM history").fetchone()[0])
        finally:
            conn.close()

    def has(self, rel: str) -> bool:
        conn = sqlite3.connect(f"{self.db.as_uri()}?mode=ro", uri=True, timeout=30)
        try:
            return conn.execute("SELECT 1 FROM results WHERE path = ?", (rel,)).fetchone() is not None
        finally:
            conn.close()

    def count(self) -> int:
        conn = sqlite3.connect(f"{self.db.as_uri()}?mode=ro", uri=True, timeout=30)
        try:
            return int(conn.execute("SELECT count(*) FROM results").fetchone()[0])
        finally:
            conn.close()

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)


def shipped(admin: psycopg.Connection[Any], host: str = HOST) -> int:
    row = admin.execute("SELECT shipped_id FROM watcher.hosts WHERE host = %s", (host,)).fetchone()
    return int(row[0]) if row else 0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def bench(models: int, changes: int, idle: float, burst: int, repeats: int, part: str = "all") -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    work = Path(tempfile.mkdtemp(prefix="watcher-fleet-bench-"))
    server = PgServer(fsync=True)
    try:
        server.start()
        db = server.create_database()
        role = "bench_host"
        with server.admin(db) as conn:
            central.ensure_schema(conn)
            central.add_host(conn, HOST, role)
        server.set_password(role)
        env = {**server.env(), "WATCHER_REPORT_FORMATS": "csv"}
        url = server.url(db, role)
        if part != "host":
            admin = server.admin(db)
            tree = work / "tree"
            corpus.generate(tree, models)

            def cold(shipping: bool) -> float:
                d = Host(
                    tree, work / f"cold-{shipping}.db", work / f"cold-{shipping}.log", url if shipping else None, env
                )
                try:
                    ready = d.ready_seconds()
                    if shipping:
                        target = d.local_max()
                        wait_for(lambda: shipped(admin) >= target, timeout=900, poll=0.01)
                        total = time.perf_counter() - d.started
                        name = f"cold scan of {models:,} files, shipping on: last row in PostgreSQL (s)"
                        rows.append((name, f"{total:.2f}"))
                    return ready
                finally:
                    d.stop()

            off = cold(False)
            on = cold(True)
            rows.append((f"cold scan of {models:,} files to ready, shipping off / on (s)", f"{off:.2f} / {on:.2f}"))
            rows.append(("cold scan held back by shipping (%)", f"{100 * (on / off - 1):.0f}"))

            # Outage: the host ingests everything while the server is down, then the server returns.
            admin.execute("DELETE FROM watcher.results")
            admin.execute("UPDATE watcher.hosts SET shipped_id = 0, origin = NULL")
            admin.close()
            server.stop("fast")
            d = Host(tree, work / "outage.db", work / "outage.log", url, env)
            try:
                d.ready_seconds()
                wait_for(lambda: '"central_unreachable"' in d.log.read_text(), timeout=60, poll=0.05)
                time.sleep(5)  # the backoff reaches its longest interval, as in a long outage
                target = d.local_max()
                server.start()
                start = time.perf_counter()
                admin = server.admin(db)
                wait_for(lambda: shipped(admin) >= target, timeout=900, poll=0.01)
                catch_up = time.perf_counter() - start
                rows.append((f"catch-up after an outage, {target:,} changes queued (s)", f"{catch_up:.2f}"))
                rows.append(("rows/s during that catch-up, reconnection included", f"{target / catch_up:,.0f}"))

                # Shipping alone: the central rows dropped and the mark reset in one transaction, a
                # change to wake the shipper, then everything shipped again (no reconnection waits).
                with admin.transaction():
                    admin.execute("DELETE FROM watcher.results")
                    admin.execute("UPDATE watcher.hosts SET shipped_id = 0")
                start = time.perf_counter()
                publish(tree, 99_999)
                wait_for(lambda: shipped(admin) > target, timeout=900, poll=0.01)
                again = time.perf_counter() - start
                rows.append(
                    (f"shipping throughput, {target + 1:,} rows shipped again (rows/s)", f"{(target + 1) / again:,.0f}")
                )

                # Latency of one change, with every model shipped already.
                probe = psycopg.connect(server.url(db), autocommit=True)
                lat = []
                for i in range(changes):
                    t0 = time.perf_counter()
                    rel = publish(tree, i)
                    wait_for(functools.partial(_has, probe, rel), timeout=30, poll=0.001)
                    lat.append(1000 * (time.perf_counter() - t0))
                rows.append(
                    (f"change -> row in PostgreSQL, {models:,} models (p50 / p99 ms)",
                     f"{statistics.median(lat):.1f} / {percentile(lat, 0.99):.1f}")
                )  # fmt: skip

                # ... and to the fleet report file.
                out = work / "fleet"
                pub = _publisher(server.url(db), out, env)
                try:
                    report = out / "report.csv"
                    wait_for(report.exists, timeout=120, poll=0.05)
                    to_file = []
                    for i in range(changes, changes + 10):
                        time.sleep(1.2)  # an isolated change: past the publisher's once-per-interval limit
                        before = report.stat().st_mtime_ns
                        t0 = time.perf_counter()
                        rel = publish(tree, i)
                        wait_for(_rewritten_with(report, before, rel), timeout=60, poll=0.005)
                        to_file.append(time.perf_counter() - t0)
                    rows.append(
                        (f"change -> fleet report file (csv; json and html on), {models:,} models (median / max s)",
                         f"{statistics.median(to_file):.2f} / {max(to_file):.2f}")
                    )  # fmt: skip
                finally:
                    pub.terminate()
                    pub.wait(30)

                cpu0, t0 = d.cpu_seconds(), time.perf_counter()
                time.sleep(idle)
                cpu = 100 * (d.cpu_seconds() - cpu0) / (time.perf_counter() - t0)
                rows.append((f"daemon idle CPU with shipping on, {models:,} models (%)", f"{cpu:.2f}"))
                probe.close()
            finally:
                d.stop()
            admin.close()
        if part != "shipping":
            rows += host_cost(server, db, env, work, burst, changes, idle, repeats)
    finally:
        server.destroy()
        shutil.rmtree(work, ignore_errors=True)
    return rows


def host_cost(
    server: PgServer, db: str, env: dict[str, str], work: Path, burst: int, changes: int, idle: float, repeats: int
) -> list[tuple[str, str]]:
    """What shipping costs the host: bursts into fresh daemons, shipping off and on alternately
    (each shipping daemon a newly registered host, so the server only inserts), then the
    latency of a change to the local database and the idle CPU on the first pair."""
    staged = corpus.generate(work / "staged", burst)
    payload = [(p.relative_to(work / "staged"), p.read_bytes()) for p in staged]
    runs: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
    admin = server.admin(db)
    try:
        for r in range(repeats):
            for shipping in (False, True) if r % 2 == 0 else (True, False):
                run = _burst(server, db, admin, env, work / f"burst-{r}-{int(shipping)}", payload, shipping)
                runs[shipping].append(run)
                d = run.pop("daemon")
                try:
                    if r == 0:  # on these two daemons, with the burst's models: a change, and idling
                        run["latency"] = _local_latency(d, d.tree, changes)
                        time.sleep(3)  # the last change's reports written (and shipped): idle from here
                        cpu1, t1 = d.cpu_seconds(), time.perf_counter()
                        time.sleep(idle)
                        run["idle"] = 100 * (d.cpu_seconds() - cpu1) / (time.perf_counter() - t1)
                finally:
                    d.stop()
    finally:
        admin.close()

    def med(shipping: bool, key: str) -> float:
        return float(statistics.median(run[key] for run in runs[shipping]))

    off, on = runs[False][0], runs[True][0]
    n = f"{burst:,}"
    return [
        (f"burst of {n} new files to all ingested locally, shipping off / on (s, median of {repeats})",
         f"{med(False, 'seconds'):.2f} / {med(True, 'seconds'):.2f}"),
        (f"burst of {n}: daemon process CPU (workers excluded), shipping off / on (s)",
         f"{med(False, 'cpu'):.2f} / {med(True, 'cpu'):.2f}"),
        ("burst held back by shipping (%)", f"{100 * (med(True, 'seconds') / med(False, 'seconds') - 1):.0f}"),
        (f"burst of {n}, shipping on: last row in PostgreSQL (s)", f"{med(True, 'central'):.2f}"),
        (f"change -> local database, {n} models, shipping off (p50 / p99 ms)",
         f"{statistics.median(off['latency']):.1f} / {percentile(off['latency'], 0.99):.1f}"),
        (f"change -> local database, {n} models, shipping on (p50 / p99 ms)",
         f"{statistics.median(on['latency']):.1f} / {percentile(on['latency'], 0.99):.1f}"),
        (f"daemon idle CPU, {n} models, shipping off / on (%)", f"{off['idle']:.2f} / {on['idle']:.2f}"),
    ]  # fmt: skip


def _burst(
    server: PgServer,
    db: str,
    admin: psycopg.Connection[Any],
    env: dict[str, str],
    work: Path,
    payload: list[tuple[Path, bytes]],
    shipping: bool,
) -> dict[str, Any]:
    """One burst into a fresh daemon on an empty tree: seconds and daemon CPU until every file is
    in the local database (and with shipping, seconds until the last row is in PostgreSQL). The
    daemon is left running, under ``daemon``."""
    name = work.name
    url = None
    if shipping:
        role = "bench_" + name.replace("-", "_")
        central.add_host(admin, name, role)
        server.set_password(role)
        url = server.url(db, role)
    tree = work / "tree"
    tree.mkdir(parents=True)
    d = Host(tree, work / "watcher.db", work / "daemon.log", url, env, host=name)
    try:
        d.ready_seconds()
        cpu0, start = d.cpu_seconds(), time.perf_counter()
        for rel, data in payload:
            (tree / rel).parent.mkdir(exist_ok=True)
            (tree / rel).write_bytes(data)
        wait_for(lambda: d.count() == len(payload), timeout=900, poll=0.02)
        run: dict[str, Any] = {"seconds": time.perf_counter() - start, "cpu": d.cpu_seconds() - cpu0}
        if shipping:
            target = d.local_max()
            wait_for(lambda: shipped(admin, name) >= target, timeout=900, poll=0.01)
            run["central"] = time.perf_counter() - start
    except BaseException:
        d.stop()
        raise
    run["daemon"] = d
    return run


def _local_latency(d: Host, tree: Path, changes: int) -> list[float]:
    lat = []
    for i in range(changes):
        t0 = time.perf_counter()
        rel = publish(tree, i)
        wait_for(functools.partial(d.has, rel), timeout=30, poll=0.001)
        lat.append(1000 * (time.perf_counter() - t0))
    return lat


def _has(conn: psycopg.Connection[Any], rel: str) -> bool:
    found = conn.execute("SELECT 1 FROM watcher.results WHERE host = %s AND path = %s", (HOST, rel)).fetchone()
    return found is not None


def _rewritten_with(report: Path, before: int, rel: str) -> Callable[[], bool]:
    def check() -> bool:
        return report.stat().st_mtime_ns > before and f",{rel}\n" in report.read_text()

    return check


def _publisher(url: str, out: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("WATCHER_")}
    full.update(env)
    full["WATCHER_REPORT_FORMATS"] = "csv,json,html"  # the page is rendered beside the tables
    return subprocess.Popen(
        [PY, "-m", "watcher", "central", "publish", "--url", url, "--out", str(out), "--log-format", "json"],
        stdout=subprocess.DEVNULL, stderr=(out.parent / "publish.log").open("w"), env=full,
    )  # fmt: skip


def print_figures(rows: list[tuple[str, str]]) -> None:
    """The figures as a two-column table on stdout (names padded to the longest)."""
    width = max(len(name) for name, _ in rows)
    print(f"{'figure':<{width}}  value")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--models", type=int, default=100_000)
    parser.add_argument("--changes", type=int, default=100)
    parser.add_argument("--idle", type=float, default=10.0)
    parser.add_argument("--burst", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--part", choices=("all", "shipping", "host"), default="all",
        help="shipping: the central figures only; host: what shipping costs the host only",
    )  # fmt: skip
    args = parser.parse_args(argv)
    started = time.perf_counter()
    rows = bench(args.models, args.changes, args.idle, args.burst, args.repeats, args.part)
    print_figures(rows)
    print(f"\n{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, {time.perf_counter() - started:.0f} s in all")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
