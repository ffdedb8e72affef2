"""The fleet's report files with and without the HTML page: does the page hold the tables back?

``python -m benchmarks.fleet_page [--models 100000] [--changes 8]``

Fills a throwaway PostgreSQL (fsync on) with ``models`` results of two hosts (a tenth of the
models on both), then runs ``watcher central publish`` twice, with the report formats csv,json
and with csv,json,html. Each change is what a host's shipped batch does (one row replaced and a
notification, in one transaction); printed: from the commit to the CSV file showing it, for
both runs (median / max), the publisher's own seconds per write of the table files (from its
log: what the rest of that latency is not: the settle wait, the notification, the polling), and
to the page showing it. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

from benchmarks.fleet import print_figures
from benchmarks.run import wait_for
from testing.pgserver import PgServer
from watcher.fleet import central, shipper


def _fill(conn: psycopg.Connection[Any], models: int) -> None:
    rows: dict[str, list[list[Any]]] = {"gpu-01": [], "gpu-02": []}
    for i in range(models):
        model = str(uuid.UUID(int=i))
        rows["gpu-01" if i % 2 else "gpu-02"].append(_row(f"runs/{i // 1000}/m{i}.json", model, "2024-05-01"))
        if i % 10 == 0:
            rows["gpu-01"].append(_row(f"old/m{i}.json", model, "2024-04-01"))
    for host, batch in rows.items():
        with conn.transaction():
            conn.execute(shipper._INSERT_RESULTS, (host, json.dumps(batch)))


def _row(path: str, model: str, day: str) -> list[Any]:
    at = f"{day}T12:00:00.000Z"
    return [path, model, "ana@example.com", at, at, 0.5, 0.85, 0.0, 1, 0.85, 5, "ab" * 32, 3, at]


def _change(conn: psycopg.Connection[Any], k: int) -> str:
    """A new model on gpu-01, as its shipper would commit it; its path."""
    path = f"new/n{k}-{uuid.uuid4().hex[:8]}.json"
    with conn.transaction():
        conn.execute(shipper._INSERT_RESULTS, ("gpu-01", json.dumps([_row(path, str(uuid.uuid4()), "2024-06-01")])))
        conn.execute("SELECT pg_notify(%s, 'gpu-01')", (central.CHANNEL,))
    return path


def _shows(path: Path, since: int, needle: str) -> bool:
    try:
        if path.stat().st_mtime_ns <= since:
            return False
        return needle in path.read_text()
    except FileNotFoundError:
        return False


def run(url: str, work: Path, conn: psycopg.Connection[Any], formats: str, changes: int) -> tuple[list[float], ...]:
    out = work / formats.replace(",", "-")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATCHER_")}
    env.update({"WATCHER_REPORT_FORMATS": formats, "WATCHER_REPORT_INTERVAL": "1.0"})
    log = (work / f"{formats}.log").open("w")
    command = ["central", "publish", "--url", url, "--out", str(out), "--log-format", "json"]
    pub = subprocess.Popen([sys.executable, "-m", "watcher", *command], stdout=subprocess.DEVNULL, stderr=log, env=env)
    tables: list[float] = []
    pages: list[float] = []
    try:
        csv, html = out / "report.csv", out / "report.html"
        wait_for(csv.exists, timeout=300, poll=0.05)
        if "html" in formats:
            wait_for(html.exists, timeout=300, poll=0.05)
        for k in range(changes):
            time.sleep(3.0)  # an isolated change: the page of the last one is done
            before_csv = csv.stat().st_mtime_ns
            before_html = html.stat().st_mtime_ns if html.exists() else 0
            t0 = time.perf_counter()
            path = _change(conn, k)
            name = path.rsplit("/", 1)[1].removesuffix(".json")
            wait_for(functools.partial(_shows, csv, before_csv, path), timeout=60, poll=0.005)
            tables.append(time.perf_counter() - t0)
            if "html" in formats:
                wait_for(functools.partial(_shows, html, before_html, f'"{name}"'), timeout=60, poll=0.02)
                pages.append(time.perf_counter() - t0)
    finally:
        pub.terminate()
        pub.wait(60)
        log.close()
    return tables, pages, _write_seconds(work / f"{formats}.log")


def _write_seconds(log: Path) -> list[float]:
    """The publisher's own seconds per write of the table files after a change (its log)."""
    events = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    return [e["seconds"] for e in events if e.get("event") == "fleet_reports_written" and e.get("why") == "changed"]


def bench(models: int, changes: int) -> list[tuple[str, str]]:
    work = Path(tempfile.mkdtemp(prefix="watcher-fleet-page-"))
    server = PgServer(fsync=True)
    try:
        server.start()
        db = server.create_database()
        with server.admin(db) as conn:
            central.ensure_schema(conn)
            _fill(conn, models)
            conn.execute("VACUUM ANALYZE watcher.results")
            rows = []
            for formats in ("csv,json", "csv,json,html"):
                tables, pages, writes = run(server.url(db), work, conn, formats, changes)
                rows.append((f"change -> CSV file, formats {formats}, {models:,} models (median / max s)",
                             f"{statistics.median(tables):.2f} / {max(tables):.2f}"))  # fmt: skip
                rows.append(("  the publisher writing all the table files, per change (median / max s)",
                             f"{statistics.median(writes):.3f} / {max(writes):.3f}"))  # fmt: skip
                if pages:
                    rows.append((f"change -> fleet page, {models:,} models (median / max s)",
                                 f"{statistics.median(pages):.2f} / {max(pages):.2f}"))  # fmt: skip
        return rows
    finally:
        server.destroy()
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--models", type=int, default=100_000)
    parser.add_argument("--changes", type=int, default=8)
    args = parser.parse_args(argv)
    rows = bench(args.models, args.changes)
    print_figures(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
