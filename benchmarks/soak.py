"""Soak: drive a real daemon with a sustained mix of create/modify/rename/delete for a while, then
check the invariant. ``python -m benchmarks.soak --minutes 10`` (or ``make soak``).

Prints RSS samples as it goes and a summary at the end: operations and their rate, time for the
daemon to settle, the invariant (testing/invariant.py), ``PRAGMA integrity_check``, RSS first/peak/
last, and the exit code on SIGTERM. Exit status 1 if the invariant or the integrity check fails.
"""

from __future__ import annotations

import argparse
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


def churn(inbox: Path, keys: int, rate: float, stop: threading.Event, counts: dict[str, int], seed: int) -> None:
    """Bounded in rate and time: at most ``rate`` operations per second until ``stop`` is set."""
    rng = random.Random(seed)
    models = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(keys // 2)]
    pace = threading.Event()
    present: list[Path] = []  # renames and deletes pick from files this churn wrote
    while not stop.is_set():
        roll = rng.random()
        if roll >= 0.6 and present:
            path = present.pop(rng.randrange(len(present)))
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
                present.append(path)
                kind = "create_or_modify"
            elif roll < 0.6:
                path.write_text('{"model_id": "broken')
                present.append(path)
                kind = "invalid"
            elif roll < 0.8:
                target = inbox / f"d{rng.randrange(10)}" / f"f{rng.randrange(keys)}.json"
                path.rename(target)
                present.append(target)
                kind = "rename"
            else:
                path.unlink()
                kind = "delete"
        except FileNotFoundError:
            kind = "missed"
        counts[kind] = counts.get(kind, 0) + 1
        pace.wait(1 / rate)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--keys", type=int, default=2000, help="distinct file names in play")
    parser.add_argument("--rate", type=float, default=200.0, help="operations per second, at most")
    parser.add_argument("--sample", type=float, default=30.0, help="seconds between RSS samples")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="watcher-soak-"))
    inbox, db = work / "inbox", work / "var" / "watcher.db"
    inbox.mkdir()
    log = (work / "daemon.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "watcher", "run", "--watch-dir", str(inbox), "--db", str(db), "--log-format", "json"],
        stderr=log, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    stop, counts = threading.Event(), dict[str, int]()
    worker = threading.Thread(target=churn, args=(inbox, args.keys, args.rate, stop, counts, 1))
    started = time.monotonic()
    worker.start()
    samples: list[float] = []
    try:
        while (elapsed := time.monotonic() - started) < args.minutes * 60:
            samples.append(rss_mib(proc.pid))
            print(f"t={elapsed:6.0f}s  ops={sum(counts.values()):8d}  rss={samples[-1]:6.1f} MiB", flush=True)
            stop.wait(min(args.sample, args.minutes * 60 - elapsed))
    finally:
        stop.set()
        worker.join()
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
    print(f"\noperations: {ops} in {duration:.0f} s ({ops / duration:.0f}/s): {dict(sorted(counts.items()))}")
    print(f"settled after the churn stopped in {settled:.1f} s; invariant: {'holds' if not problems else problems[:5]}")
    print(f"integrity_check: {integrity}; history entries: {history}; exit code on SIGTERM: {code}")
    print(f"RSS MiB: first {samples[0]:.1f}, peak {max(samples):.1f}, last {samples[-1]:.1f}")
    shutil.rmtree(work, ignore_errors=True)
    return 0 if not problems and integrity == "ok" and code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
