"""The cost of several targets: cold scans with one target recall and with three, in one run.

``python -m benchmarks.targets [--files N] [--rounds R] [--tree DIR]``: generates N files
(:mod:`testing.corpus`, 100,000 by default; kept in DIR when given, and reused if it holds them
already), then, R times in turn, a cold scan into a fresh database with ``target_recall`` alone
and one with ``extra_targets = [0.80, 0.90]`` besides (``WATCHER_EXTRA_TARGETS``), back to back
(which goes first alternates from round to round), each twice:
with no report file (``report_formats = []``: judging and storing alone) and with the default
report files (``report.csv``, ``.json``, ``.html``, and with three targets ``points.csv`` and
``.json``). For each it measures the CPU time of the whole process tree (user + system,
``getrusage`` of the children: the worker processes are waited for, so they count) and the wall
time. Prints the medians, the ratio three/one of the medians and the median of each round's own
ratio (a round's pair shares the load of its moment: on a shared machine the steadier figure),
and every figure.

``--instructions``: the same scans under valgrind's callgrind, counting instructions, for
``--files`` files (2,000 by default) and twice as many: the instructions a file adds with one
target and with three, and their ratio. Minutes, not hours (valgrind runs a program about fifty
times slower), and the same figures on a quiet machine or a loaded one.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from testing.corpus import generate

HERE = Path(__file__).resolve().parent.parent
#: The extra targets of the three-target scan (besides the default target_recall, 0.85).
EXTRA = "0.80,0.90"


def _scan(tree: Path, db: Path, extra: str | None, reports: bool, prefix: Sequence[str] = ()) -> None:
    """``watcher scan`` of ``tree`` into a fresh ``db`` (run under ``prefix``, a tool and its flags)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATCHER_")}
    if extra:
        env["WATCHER_EXTRA_TARGETS"] = extra
    if not reports:
        env["WATCHER_REPORT_FORMATS"] = ""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    command = [*prefix, sys.executable, "-m", "watcher", "scan", "--watch-dir", str(tree), "--db", str(db)]
    subprocess.run(command, cwd=HERE, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def cold_scan(tree: Path, db: Path, extra: str | None, reports: bool) -> tuple[float, float]:
    """CPU seconds (the process tree's user + system) and wall seconds of ``watcher scan``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    _scan(tree, db, extra, reports)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    with sqlite3.connect(db) as conn:  # the scan did score every target of every file
        ((rows, files),) = conn.execute(
            "SELECT (SELECT count(*) FROM operating_points), (SELECT count(*) FROM results)"
        )
    targets = 1 + (len(extra.split(",")) if extra else 0)
    if rows != files * targets:
        raise SystemExit(f"{rows} operating points for {files} files and {targets} targets")
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), wall


def instructions(tree: Path, db: Path, extra: str | None, reports: bool, out: Path) -> int:
    """User-space instructions of ``watcher scan`` and of every process it starts (workers, the
    page's process), counted by valgrind's callgrind: each process's total summed."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    _scan(tree, db, extra, reports, ["valgrind", "--tool=callgrind", "--trace-children=yes",
                                     f"--callgrind-out-file={out}/cg.%p"])  # fmt: skip
    total = 0
    for dump in out.iterdir():
        with dump.open() as fh:
            total += next(int(line.split()[1]) for line in fh if line.startswith("summary:"))
    return total


def count_instructions(files: int, work: Path) -> None:
    """Instructions per file, one target and three, with and without report files: what a file
    adds between a scan of ``files`` files and one of twice as many (fixed costs, the start of
    the processes and the imports, cancel out). Deterministic where CPU time is not: a
    shared machine's load moves a scan's CPU by a quarter, not its instructions (nor does it
    count the kernel's work, or the time memory makes each instruction wait)."""
    small, large = work / "small", work / "large"
    generate(small, files)
    generate(large, 2 * files)  # its first ``files`` files are the small tree's
    print(f"instructions a file adds, {files} -> {2 * files} files (valgrind callgrind, user space)")
    for reports, what in ((False, "no report files"), (True, "default report files")):
        per_file = {}
        for name, extra in (("one", None), ("three", EXTRA)):
            counts = [instructions(t, work / "bench.db", extra, reports, work / "callgrind") for t in (small, large)]
            per_file[name] = (counts[1] - counts[0]) / files
            print(f"  {name:5} target(s), {what}: {per_file[name]:,.0f} instructions a file")
        print(f"  three / one, {what}: {per_file['three'] / per_file['one']:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=None, help="100,000 by default (2,000 with --instructions)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tree", type=Path, default=None)
    parser.add_argument(
        "--instructions", action="store_true",
        help="count instructions under valgrind instead (--files files and twice as many; 2,000 by default)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.instructions:
        with tempfile.TemporaryDirectory(prefix="watcher-targets-") as tmp:
            count_instructions(args.files or 2_000, Path(tmp))
        return
    files = args.files or 100_000
    with tempfile.TemporaryDirectory(prefix="watcher-targets-") as tmp:
        tree = args.tree or Path(tmp) / "tree"
        if not (tree / "run0000").is_dir():
            generate(tree, files)
        db = Path(tmp) / "bench.db"
        figures: dict[tuple[str, bool], list[tuple[float, float]]] = {}
        for round_ in range(args.rounds):
            for reports in (False, True):
                # One and three back to back, the first of the pair alternating from round to
                # round: a pair shares the machine's load of its moment, and neither goes first
                # more often than the other.
                pair = (("one", None), ("three", EXTRA))
                for name, extra in pair if round_ % 2 == 0 else reversed(pair):
                    figures.setdefault((name, reports), []).append(cold_scan(tree, db, extra, reports))
    medians = {k: (statistics.median(c for c, _ in v), statistics.median(w for _, w in v)) for k, v in figures.items()}
    print(f"{files} files, {args.rounds} rounds, cold scans (CPU = user + sys of the process tree)")
    for reports, what in ((False, "no report files"), (True, "default report files")):
        for name in ("one", "three"):
            cpu, wall = medians[name, reports]
            print(f"  {name:5} target(s), {what}: CPU {cpu:.2f} s, wall {wall:.2f} s (median)")
        cpu, wall = (medians["three", reports][i] / medians["one", reports][i] for i in (0, 1))
        print(f"  three / one, {what}: CPU {cpu:.3f}, wall {wall:.3f} (ratio of the medians)")
        pairs = list(zip(figures["one", reports], figures["three", reports], strict=True))
        cpu, wall = (statistics.median(b[i] / a[i] for a, b in pairs) for i in (0, 1))
        print(f"  three / one, {what}: CPU {cpu:.3f}, wall {wall:.3f} (median of the rounds' ratios)")
    for (name, reports), values in figures.items():
        print(
            f"  {name}, {'reports' if reports else 'no reports'}: " + ", ".join(f"{c:.2f}/{w:.2f}" for c, w in values)
        )


if __name__ == "__main__":
    main()
