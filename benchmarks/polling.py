"""Idle cost and detection latency, polling against inotify: ``python -m benchmarks.polling``
(part of ``make bench``).

On one tree (100,000 files in 1,000 folders, already in the database): each mode's daemon idling
(CPU as a share of one core over ``--idle`` seconds, RSS of the daemon, PSS of its whole process
tree, the way systemd's memory accounting sees it), the latency of a new file (written and
closed) to the database over ``--latency`` files written one at a time, and a burst of new files
into an empty tree (median of ``--repeats``, a fresh daemon, folder and database each). Default
settings (polling every 1 s, settle 2 s, 1% of a core), except ``worker_idle_seconds = 5`` so the
idle figures need not wait 30 s for the workers to go. The machine is shared and noisy: figures
move between runs. ``--quick`` runs tiny sizes (the smoke test); its figures mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks import run
from testing import corpus
from testing.helpers import descendants

PY = sys.executable
CLK = os.sysconf("SC_CLK_TCK")
#: Figures the issue measured on main before this mode (watchdog's polling observer, 20,000 files).
BEFORE = "14.6% CPU, 113 MiB RSS at 20,000 files (watchdog's snapshot poller, measured on fb5e046)"


def tree_pids(pid: int) -> list[int]:
    """``pid`` and every live process below it."""
    return [pid, *descendants(pid)]


def pss_mib(pid: int) -> float:
    """Proportional set size of the whole process tree (shared pages split between sharers)."""
    total = 0
    for p in tree_pids(pid):
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


class Daemon(run.Daemon):
    """``watcher run`` with the given observer, observed through its log and a read-only connection."""

    def __init__(self, tree: Path, db: Path, log: Path, observer: str, checkout: Path | None = None) -> None:
        self.db = db
        env = {k: v for k, v in os.environ.items() if not k.startswith("WATCHER_")}
        env.update({"WATCHER_OBSERVER": observer, "WATCHER_WORKER_IDLE_SECONDS": "5"})
        if checkout is not None:  # that checkout's watcher, whichever is installed
            env["PYTHONPATH"] = os.pathsep.join([str(checkout), *filter(None, [env.get("PYTHONPATH")])])
        super().__init__(tree, db, log, env)

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")


def wait_for(predicate: Any, timeout: float, poll: float = 0.01) -> float:
    start = time.perf_counter()
    while not predicate():
        if time.perf_counter() - start > timeout:
            raise TimeoutError("benchmark condition not reached")
        time.sleep(poll)
    return time.perf_counter() - start


def idle(d: Daemon, seconds: float) -> dict[str, float]:
    """Wait for the helpers to go (one process left), then measure an idle stretch."""
    wait_for(lambda: len(tree_pids(d.proc.pid)) == 1, 120, 0.2)
    before, t0 = d.cpu_seconds(), time.perf_counter()
    time.sleep(seconds)  # measuring idle: nothing happens on purpose
    cpu = (d.cpu_seconds() - before) / (time.perf_counter() - t0) * 100
    return {"cpu": cpu, "rss": d.rss_mib(), "pss": pss_mib(d.proc.pid), "procs": len(tree_pids(d.proc.pid))}


def latencies(d: Daemon, tree: Path, n: int, gap: float, name: str, into: Path | None = None) -> list[float]:
    """Seconds from each of ``n`` new files written and closed (one every ``gap`` s, into the
    folders of the tree in turn, or of ``into``, a folder inside it) to its row in the database."""
    written: dict[str, float] = {}
    seen: dict[str, float] = {}
    done = threading.Event()

    def watch() -> None:
        conn = sqlite3.connect(f"{d.db.as_uri()}?mode=ro", uri=True, timeout=30)
        try:
            while not done.is_set():
                now = time.perf_counter()
                waiting = [p for p in written if p not in seen]
                for (p,) in (
                    conn.execute(f"SELECT path FROM results WHERE path IN ({','.join('?' * len(waiting))})", waiting)
                    if waiting
                    else []
                ):
                    seen[p] = now
                time.sleep(0.005)
        finally:
            conn.close()

    watcher = threading.Thread(target=watch)
    watcher.start()
    parent = into or tree
    folders = sorted(p.relative_to(tree).as_posix() for p in parent.iterdir() if p.is_dir())
    try:
        for i in range(n):
            rel = f"{folders[i % len(folders)]}/{name}{i:05}.json"
            (tree / rel).write_text(json.dumps(corpus.document(90_000_000 + i, 101, random.Random(i))))
            written[rel] = time.perf_counter()
            time.sleep(gap)
        wait_for(lambda: len(seen) == n, 120, 0.05)
    finally:
        done.set()
        watcher.join()
    return sorted(seen[p] - written[p] for p in written)


def burst(work: Path, payload: list[tuple[Path, bytes]], observer: str) -> float:
    """Seconds from the first of ``payload``'s files written into a running daemon's empty tree
    until the database holds a result for each (the writing included)."""
    tree = work / "tree"
    tree.mkdir(parents=True)
    d = Daemon(tree, work / "burst.db", work / "burst.log", observer)
    try:
        start = time.perf_counter()
        for rel, data in payload:
            (tree / rel).parent.mkdir(exist_ok=True)
            (tree / rel).write_bytes(data)
        wait_for(lambda: d.count() == len(payload), 900, 0.02)
        return time.perf_counter() - start
    finally:
        d.stop()


def met(ok: bool) -> str:
    return "yes" if ok else "NO"


def pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def bench(files: int, folders: int, idle_s: float, n_latency: int, n_burst: int, repeats: int, work: Path) -> str:
    tree, db = work / "tree", work / "w.db"
    corpus.generate(tree, files, per_folder=files // folders)
    subprocess.run([PY, "-m", "watcher", "scan", "--watch-dir", str(tree), "--db", str(db), "--log-format", "json"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    rows = []
    figures: dict[str, dict[str, Any]] = {}
    for observer in ("inotify", "polling"):
        d = Daemon(tree, db, work / f"{observer}.log", observer)
        try:
            f = figures[observer] = idle(d, idle_s)
            lat = latencies(d, tree, n_latency, gap=0.35, name=f"new-{observer}-")
            f["p50"], f["p99"] = statistics.median(lat), pct(lat, 0.99)
            f.update({f"after_{k}": v for k, v in idle(d, min(idle_s, 10)).items()})  # after the new files
        finally:
            d.stop()
    staged = corpus.generate(work / "staged", n_burst)
    payload = [(p.relative_to(work / "staged"), p.read_bytes()) for p in staged]
    for observer in ("inotify", "polling"):
        runs = [burst(work / f"burst-{observer}{r}", payload, observer) for r in range(repeats)]
        figures[observer]["burst"] = statistics.median(runs)
    ino, pol = figures["inotify"], figures["polling"]
    limit = 2 * 1.0 + 2.0  # 2 x polling_interval + settle_seconds
    rows = [
        ("idle CPU (% of one core)", f"{ino['cpu']:.2f}", f"{pol['cpu']:.2f}", "polling <= 1%", met(pol["cpu"] <= 1)),
        ("idle RSS of the daemon (MiB)", f"{ino['rss']:.0f}", f"{pol['rss']:.0f}", "polling <= inotify + 20",
         met(pol["rss"] <= ino["rss"] + 20)),
        ("idle PSS, whole process tree (MiB; processes)", f"{ino['pss']:.0f} ({ino['procs']})",
         f"{pol['pss']:.0f} ({pol['procs']})", "<= 120 either mode", met(max(ino["pss"], pol["pss"]) <= 120)),
        (f"new file to database, p50 / p99 over {n_latency} (s)", f"{ino['p50']:.3f} / {ino['p99']:.3f}",
         f"{pol['p50']:.2f} / {pol['p99']:.2f}", f"polling <= {limit:.0f} s (2 x interval + settle)",
         met(pol["p99"] <= limit)),
        ("idle again after those files: CPU % / PSS MiB", f"{ino['after_cpu']:.2f} / {ino['after_pss']:.0f}",
         f"{pol['after_cpu']:.2f} / {pol['after_pss']:.0f}", "", ""),
        (f"burst of {n_burst:,} new files, all ingested (s, median of {repeats})", f"{ino['burst']:.2f}",
         f"{pol['burst']:.2f} ({pol['burst'] / ino['burst']:.2f}x)", "polling <= 2x inotify",
         met(pol["burst"] <= 2 * ino["burst"])),
    ]  # fmt: skip
    head = f"| {files:,} files in {folders:,} folders | inotify | polling | target | met |\n|---|---|---|---|---|\n"
    return head + "\n".join(f"| {' | '.join(r)} |" for r in rows) + f"\n\nbefore this mode: {BEFORE}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the code, not the figures")
    args = parser.parse_args(argv)
    if args.quick:
        params = {"files": 400, "folders": 4, "idle_s": 1.0, "n_latency": 2, "n_burst": 50, "repeats": 1}
    else:
        params = {"files": 100_000, "folders": 1_000, "idle_s": 60.0, "n_latency": 100, "n_burst": 10_000,
                  "repeats": 3}  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="watcher-polling-bench-"))
    try:
        started = time.perf_counter()
        print(bench(work=work, **params))  # type: ignore[arg-type]
        print(f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, {time.perf_counter() - started:.0f} s in all")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
