"""Soak: drive a real daemon with a sustained mix of create/modify/rename/delete for a while, then
check the invariant. ``python -m benchmarks.soak --minutes 10`` (or ``make soak``); the long mode,
``make soak-long``: two hours at 100 changes a second with history kept 0.01 days (14.4 minutes),
so that trimming starts within the run and the sizes must go flat.

A ``watcher follow`` reads beside the daemon's own report thread all along (readers are what keep
SQLite's own checkpoints from starting the write-ahead log again). Each sample prints the daemon's
RSS, the database's and its log's sizes, the history's entries, and the latency of a probe file
(written, then polled for in ``results``). The summary: operations and their rate, time to settle,
the invariant (testing/invariant.py), ``PRAGMA integrity_check``, each figure first/peak/last, the
probes' p50/p99/max, and the exit code on SIGTERM. Exit status 1 if the invariant or the integrity
check fails.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from testing import corpus
from testing.invariant import violations


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def wait_for(predicate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("the daemon did not become ready")
        threading.Event().wait(0.1)


def storage(db: Path) -> tuple[float, float, int]:
    """The database's and its write-ahead log's sizes (MiB), and the history's entries."""
    wal = Path(f"{db}-wal")
    conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=30)
    try:
        history = conn.execute("SELECT count(*) FROM history").fetchone()[0]
    finally:
        conn.close()
    mib = 1024 * 1024
    return db.stat().st_size / mib, (wal.stat().st_size if wal.exists() else 0) / mib, history


def probe(inbox: Path, db: Path, n: int) -> float:
    """Seconds from a new file renamed into place to its row in ``results`` (polled every 5 ms)."""
    name = f"probe-{n}.json"
    doc = corpus.document(n, 101, random.Random(n))
    tmp = inbox / f".{name}.tmp"
    tmp.write_text(json.dumps(doc))
    started = time.monotonic()
    os.replace(tmp, inbox / name)
    conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=30)
    try:
        while not conn.execute("SELECT 1 FROM results WHERE path = ?", (name,)).fetchone():
            if time.monotonic() - started > 60:
                return float("inf")
            threading.Event().wait(0.005)
    finally:
        conn.close()
    return time.monotonic() - started


def churn(inbox: Path, keys: int, rate: float, stop: threading.Event, counts: dict[str, int], seed: int) -> None:
    """``rate`` operations per second (paced to a clock, so the operations' own time does not
    slow it; behind, it catches up) until ``stop`` is set."""
    rng = random.Random(seed)
    models = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(keys // 2)]
    present: list[Path] = []  # renames and deletes pick from the files this churn wrote
    known: set[Path] = set()

    def keep(path: Path) -> None:
        if path not in known:
            known.add(path)
            present.append(path)

    started, n = time.monotonic(), 0
    while not stop.is_set():
        roll = rng.random()
        if roll >= 0.6 and present:
            path = present.pop(rng.randrange(len(present)))
            known.discard(path)
        else:
            path = inbox / f"d{rng.randrange(10)}" / f"f{rng.randrange(keys)}.json"
            path.parent.mkdir(exist_ok=True)
        try:
            if roll < 0.45:
                doc = corpus.document(rng.randrange(10**6), 101, rng)
                doc["model_id"] = rng.choice(models)
                tmp = path.with_name(f".{path.name}.tmp")
                tmp.write_text(json.dumps(doc))
                os.replace(tmp, path)
                keep(path)
                kind = "create_or_modify"
            elif roll < 0.6:
                path.write_text('{"model_id": "broken')
                keep(path)
                kind = "invalid"
            elif roll < 0.8:
                target = inbox / f"d{rng.randrange(10)}" / f"f{rng.randrange(keys)}.json"
                target.parent.mkdir(exist_ok=True)
                path.rename(target)
                keep(target)
                kind = "rename"
            else:
                path.unlink()
                kind = "delete"
        except FileNotFoundError:
            kind = "missed"
        counts[kind] = counts.get(kind, 0) + 1
        n += 1
        stop.wait(max(0.0, started + n / rate - time.monotonic()))


def watch_wal(db: Path, stop: threading.Event, peak: list[float]) -> None:
    """The write-ahead log's largest size (MiB), looked at every second: the samples alone could
    miss a swing between two of them."""
    wal = Path(f"{db}-wal")
    while not stop.wait(1.0):
        with contextlib.suppress(OSError):
            peak[0] = max(peak[0], wal.stat().st_size / (1024 * 1024))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--keys", type=int, default=2000, help="distinct file names in play")
    parser.add_argument("--rate", type=float, default=200.0, help="operations per second")
    parser.add_argument("--sample", type=float, default=30.0, help="seconds between samples")
    parser.add_argument("--keep-days", type=float, default=None, help="the daemon's history_keep_days")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="watcher-soak-"))
    inbox, db = work / "inbox", work / "var" / "watcher.db"
    inbox.mkdir()
    log = (work / "daemon.log").open("w")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATCHER_")}
    if args.keep_days is not None:
        env["WATCHER_HISTORY_KEEP_DAYS"] = str(args.keep_days)
    proc = subprocess.Popen(
        [sys.executable, "-m", "watcher", "run", "--watch-dir", str(inbox), "--db", str(db), "--log-format", "json"],
        stderr=log, stdout=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    wait_for(lambda: db.exists() and b'"daemon_ready"' in (work / "daemon.log").read_bytes(), 120)
    reader = subprocess.Popen(
        [sys.executable, "-m", "watcher", "follow", "--db", str(db), "--format", "json"],
        stdout=subprocess.DEVNULL, stderr=log, env=env,
    )  # fmt: skip
    stop, counts = threading.Event(), dict[str, int]()
    worker = threading.Thread(target=churn, args=(inbox, args.keys, args.rate, stop, counts, 1))
    wal_peak = [0.0]
    wal_watch = threading.Thread(target=watch_wal, args=(db, stop, wal_peak), daemon=True)
    started = time.monotonic()
    worker.start()
    wal_watch.start()
    samples: list[float] = []
    sizes: list[tuple[float, float, int]] = []  # database MiB, log MiB, history entries
    latencies: list[float] = []
    try:
        while (elapsed := time.monotonic() - started) < args.minutes * 60:
            samples.append(rss_mib(proc.pid))
            sizes.append(storage(db))
            latencies.append(probe(inbox, db, len(latencies)))
            print(
                f"t={elapsed:6.0f}s  ops={sum(counts.values()):8d}  rss={samples[-1]:6.1f} MiB"
                f"  db={sizes[-1][0]:7.1f} MiB  wal={sizes[-1][1]:7.1f} MiB  history={sizes[-1][2]:9d}"
                f"  probe={latencies[-1]:6.3f} s",
                flush=True,
            )
            stop.wait(min(args.sample, args.minutes * 60 - elapsed))
    finally:
        stop.set()
        worker.join()
        reader.terminate()
        reader.wait(30)
    ops, duration = sum(counts.values()), time.monotonic() - started
    settle_start = time.monotonic()
    problems = violations(inbox, db)
    while problems and time.monotonic() - settle_start < 120:
        threading.Event().wait(0.5)
        problems = violations(inbox, db)
    settled = time.monotonic() - settle_start
    samples.append(rss_mib(proc.pid))
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(60)
    conn = sqlite3.connect(db)
    integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
    history = conn.execute("SELECT count(*) FROM history").fetchone()[0]
    conn.close()
    changes = ops - counts.get("missed", 0)
    print(f"\noperations: {ops} in {duration:.0f} s ({ops / duration:.0f}/s): {dict(sorted(counts.items()))}")
    print(f"changes (operations that changed the folder): {changes}, {changes / duration:.1f}/s")
    print(f"settled after the churn stopped in {settled:.1f} s; invariant: {'holds' if not problems else problems[:5]}")
    print(f"integrity_check: {integrity}; history entries: {history}; exit code on SIGTERM: {code}")
    print(f"RSS MiB: first {samples[0]:.1f}, peak {max(samples):.1f}, last {samples[-1]:.1f}")
    for i, name in enumerate(("database MiB", "write-ahead log MiB", "history entries")):
        column = [s[i] for s in sizes]
        print(f"{name}: first {column[0]:.1f}, peak {max(column):.1f}, last {column[-1]:.1f}")
    print(f"write-ahead log MiB, looked at every second: peak {wal_peak[0]:.1f}")
    ordered = sorted(latencies)
    print(
        f"probe file -> database (s, {len(ordered)} probes): p50 {ordered[len(ordered) // 2]:.3f},"
        f" p99 {ordered[min(len(ordered) - 1, len(ordered) * 99 // 100)]:.3f}, max {ordered[-1]:.3f}"
    )
    shutil.rmtree(work, ignore_errors=True)
    return 0 if not problems and integrity == "ok" and code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
