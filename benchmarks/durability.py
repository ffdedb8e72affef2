"""What local durability costs: a burst of new files into a running daemon whose database runs
with ``PRAGMA synchronous = NORMAL`` (the default: in WAL mode, fsync only at checkpoints, so a
power cut may take back the commits since the last one) against ``FULL`` (the log fsynced at
every commit: a committed batch survives a power cut).

``python -m benchmarks.durability [--files 10000] [--repeats 3] [--dir DIR] [--syncs]``

Each run is a fresh daemon, tree and database, on a disk (``--dir``; not tmpfs: fsync must
reach a device), the two settings alternating (NORMAL first in even rounds, FULL first in odd
ones), shipping off. Printed: the median over ``repeats`` of the seconds from the first file
written until all are in the database, the daemon process's CPU seconds (workers excluded), and
the CPU seconds of the daemon and its workers together; with ``--syncs``, the fsync calls one
more burst of each makes (under ``strace``, untimed). The default is not changed by this: the
setting is made by a wrapper around ``Store.open`` (:func:`entry_code`), which
``benchmarks.powercut --synchronous FULL`` also uses to show what FULL keeps through a cut.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.run import CLK, PY, wait_for
from testing import corpus
from testing.powercut import entry_code


def _cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0  # gone meanwhile
    return (int(fields[11]) + int(fields[12])) / CLK


def _family(pid: int) -> list[int]:
    from benchmarks.polling import tree_pids

    return tree_pids(pid)


def burst(work: Path, payload: list[tuple[Path, bytes]], mode: str, prefix: tuple[str, ...] = ()) -> dict[str, float]:
    """One burst into a fresh daemon (``synchronous = mode``) on an empty tree; ``prefix``: a
    command the daemon runs under (strace)."""
    tree, db, log = work / "tree", work / "watcher.db", work / "daemon.log"
    tree.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATCHER_")}
    with log.open("w") as out:
        proc = subprocess.Popen(
            [*prefix, PY, "-c", entry_code(mode), "run", "--watch-dir", str(tree), "--db", str(db),
             "--log-format", "json"],
            stdout=out, stderr=out, env=env,
        )  # fmt: skip
    try:
        wait_for(lambda: "daemon_ready" in log.read_text(), timeout=120, poll=0.05)
        conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=30)
        try:
            before = {pid: _cpu(pid) for pid in _family(proc.pid)}
            start = time.perf_counter()
            for rel, data in payload:
                (tree / rel).parent.mkdir(exist_ok=True)
                (tree / rel).write_bytes(data)

            def done() -> bool:
                return int(conn.execute("SELECT count(*) FROM results").fetchone()[0]) == len(payload)

            wait_for(done, timeout=900, poll=0.02)
            seconds = time.perf_counter() - start
            family = _family(proc.pid)  # the workers are let go when idle: read them now
            total = sum(_cpu(pid) - before.get(pid, 0.0) for pid in family)
            own = _cpu(proc.pid) - before[proc.pid]
        finally:
            conn.close()
    finally:
        # Under strace, stop the daemon (strace's child); strace ends with it.
        for pid in _family(proc.pid)[1:2] if prefix else [proc.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        proc.wait(60)
    return {"seconds": seconds, "cpu": own, "cpu_all": total}


def syncs(work: Path, payload: list[tuple[Path, bytes]], mode: str) -> int:
    """fsync and fdatasync calls of the daemon's processes over a burst and its stop (under
    ``strace -f -c``: slower, so not timed)."""
    summary = work / "strace.txt"
    work.mkdir(parents=True)
    prefix = ("strace", "-f", "-c", "--seccomp-bpf", "-e", "trace=fsync,fdatasync", "-o", str(summary))
    burst(work, payload, mode, prefix)
    calls = 0
    for line in summary.read_text().splitlines():
        fields = line.split()
        if fields and fields[-1] in ("fsync", "fdatasync"):
            calls += int(fields[3])  # % time, seconds, usecs/call, calls, [errors], syscall
    return calls


def bench(files: int, repeats: int, where: Path, count_syncs: bool = False) -> list[tuple[str, str]]:
    work = Path(tempfile.mkdtemp(prefix="watcher-durability-", dir=where))
    try:
        staged = corpus.generate(work / "staged", files)
        payload = [(p.relative_to(work / "staged"), p.read_bytes()) for p in staged]
        runs: dict[str, list[dict[str, float]]] = {"NORMAL": [], "FULL": []}
        for r in range(repeats):
            for mode in ("NORMAL", "FULL") if r % 2 == 0 else ("FULL", "NORMAL"):
                runs[mode].append(burst(work / f"burst-{r}-{mode}", payload, mode))
                print(f"  round {r + 1} {mode}: {runs[mode][-1]}", flush=True)

        def med(mode: str, key: str) -> float:
            return statistics.median(run[key] for run in runs[mode])

        n = f"{files:,}"
        rows = [
            (f"burst of {n} new files to all in the database, NORMAL / FULL (s, median of {repeats})",
             f"{med('NORMAL', 'seconds'):.2f} / {med('FULL', 'seconds'):.2f}"),
            ("daemon process CPU (workers excluded), NORMAL / FULL (s)",
             f"{med('NORMAL', 'cpu'):.2f} / {med('FULL', 'cpu'):.2f}"),
            ("daemon and workers CPU, NORMAL / FULL (s)",
             f"{med('NORMAL', 'cpu_all'):.2f} / {med('FULL', 'cpu_all'):.2f}"),
            ("FULL against NORMAL, wall (%)", f"{100 * (med('FULL', 'seconds') / med('NORMAL', 'seconds') - 1):+.0f}"),
        ]  # fmt: skip
        if count_syncs and shutil.which("strace"):
            counted = {mode: syncs(work / f"strace-{mode}", payload, mode) for mode in ("NORMAL", "FULL")}
            rows.append(("fsync + fdatasync calls over the burst and the stop, NORMAL / FULL (strace)",
                         f"{counted['NORMAL']} / {counted['FULL']}"))  # fmt: skip
        return rows
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument(
        "--syncs", action="store_true", help="also count the fsync calls (one more burst each, under strace)"
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    rows: list[tuple[str, Any]] = list(bench(args.files, args.repeats, args.dir, args.syncs))
    print("\n| measure | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    print(f"\n{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, {time.perf_counter() - started:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
