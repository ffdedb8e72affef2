"""Compare the scan of this checkout with another checkout's, interleaved, in CPU seconds.

``python -m benchmarks.compare OTHER_CHECKOUT [--files N | --tree DIR] [--rounds R] [--naive]`` (make
one with ``git worktree add --detach /tmp/old REV``). Each round runs a cold scan into a fresh
database, then an unchanged re-scan, for each checkout in turn, and measures the CPU time of the
whole process tree (``getrusage`` of the children): on a shared machine that moves far less than
wall time does. Prints the median and every figure, and the cold scans' wall seconds; with
``--naive``, the naive script (``benchmarks.baseline``) runs in each round too, and each wall
figure is given as a ratio to its. ``--tree`` scans a tree already made (``testing.corpus``).

``--page N`` compares writing ``report.html`` instead: one database of N generated models
(``benchmarks.page``), the page written from it by each checkout in turn, the CPU time of the
write alone (imports left out) measured in its process.

``--daemon N`` compares the daemon's cold start instead: ``watcher run`` (inotify observer, default
settings) on one tree of N generated files, a fresh database each time, each checkout in turn:
seconds from the process's start to ``daemon_ready`` in its log, the CPU time of the daemon's
process until then (its worker processes not included), and whether its event queue overflowed
in the 3 s after.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
# Runs scan_timer with the given checkout first on sys.path, whichever watcher is installed.
_TIMED = (
    "import sys; root = sys.argv[1]; sys.path.insert(0, root); import watcher;"
    "assert watcher.__file__.startswith(root), watcher.__file__;"
    "from benchmarks.scan_timer import main; main(sys.argv[2], sys.argv[3])"
)


def measured(args: list[str], cwd: Path) -> tuple[float, float]:
    """CPU time (user + system, of the whole process tree) and wall seconds of one command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(args, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), wall


def scan_measured(checkout: Path, tree: Path, db: Path) -> tuple[float, float]:
    """CPU and wall seconds of one scan of ``tree`` into ``db`` with ``checkout``'s code."""
    return measured([sys.executable, "-c", _TIMED, str(checkout), str(tree), str(db)], checkout)


# Writes the page with the given checkout first on sys.path; prints the write's CPU seconds.
_PAGE = (
    "import sys, time; root = sys.argv[1]; sys.path.insert(0, root); import watcher;"
    "assert watcher.__file__.startswith(root), watcher.__file__;"
    "from pathlib import Path; from watcher.config import Settings\n"
    "try: from watcher.reports.files import write_html_file\n"
    "except ImportError: from watcher.publish import write_html_file\n"  # a checkout from before the move
    "db = Path(sys.argv[2]); s = Settings(watch_dir=db.parent, db_path=db, report_dir=Path(sys.argv[3]));"
    "cpu = time.process_time(); write_html_file(s); print(time.process_time() - cpu)"
)


def page_cpu_seconds(checkout: Path, db: Path, reports: Path) -> float:
    """CPU time of one write of report.html from ``db`` with ``checkout``'s code."""
    out = subprocess.run([sys.executable, "-c", _PAGE, str(checkout), str(db), str(reports)], cwd=checkout,
                         check=True, capture_output=True, text=True).stdout  # fmt: skip
    return float(out)


def compare_pages(checkouts: dict[str, Path], models: int, rounds: int) -> None:
    from testing.models import database

    figures: dict[str, list[float]] = {k: [] for k in checkouts}
    with tempfile.TemporaryDirectory() as work:
        settings = database(Path(work), models)
        for _ in range(rounds):
            for name, checkout in checkouts.items():
                figures[name].append(page_cpu_seconds(checkout, settings.db_path, settings.report_dir))
    print(f"CPU seconds to write report.html, {models:,} models, {rounds} interleaved rounds (median; every run)")
    for name, runs in figures.items():
        print(f"  {name:5}  {statistics.median(runs):.3f} ({' '.join(f'{x:.3f}' for x in runs)})")


# Runs the CLI with the given checkout first on sys.path (PYTHONPATH carries it to the workers).
_RUN = (
    "import sys; root = sys.argv.pop(1); sys.path.insert(0, root); import watcher;"
    "assert watcher.__file__.startswith(root), watcher.__file__;"
    "from watcher.cli import entry; sys.exit(entry())"
)


def daemon_cold_start(checkout: Path, tree: Path, work: Path) -> tuple[float, float, bool]:
    """Seconds to ready, the daemon process's CPU seconds until then, and whether its event queue
    overflowed (within 3 s of ready), for one cold start of ``watcher run`` from ``checkout``."""
    db, log = work / "cold.db", work / "cold.log"
    for old in (*work.glob("cold.db*"), log):
        old.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATCHER_")}
    env.update({"PYTHONPATH": str(checkout), "WATCHER_OBSERVER": "inotify"})
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", _RUN, str(checkout), "run", "--watch-dir", str(tree), "--db", str(db),
         "--log-format", "json"],
        cwd=checkout, env=env, stdout=subprocess.DEVNULL, stderr=log.open("w"),
    )  # fmt: skip
    try:
        while "daemon_ready" not in log.read_text():
            if proc.poll() is not None or time.perf_counter() - started > 900:
                raise RuntimeError(f"no daemon_ready: {log.read_text()[-2000:]}")
            time.sleep(0.02)
        ready = time.perf_counter() - started
        fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        time.sleep(3)  # measuring: the overflow, if any, is logged by the writer's first turn after ready
        overflowed = '"event_queue_overflow"' in log.read_text()
    finally:
        proc.terminate()
        proc.wait(60)
    shutil.rmtree(work / "cold-reports", ignore_errors=True)
    return ready, cpu, overflowed


def compare_daemons(checkouts: dict[str, Path], files: int, rounds: int) -> None:
    figures: dict[str, list[tuple[float, float, bool]]] = {k: [] for k in checkouts}
    with tempfile.TemporaryDirectory() as work:
        tree = Path(work) / "tree"
        subprocess.run([sys.executable, "-m", "testing.corpus", str(tree), str(files)], cwd=HERE, check=True)
        for _ in range(rounds):
            for name, checkout in checkouts.items():
                figures[name].append(daemon_cold_start(checkout, tree, Path(work)))
    print(f"watcher run (inotify) cold start, {files:,} files, {rounds} interleaved rounds (median; every run)")
    for name, runs in figures.items():
        ready, cpu = [r[0] for r in runs], [r[1] for r in runs]
        print(f"  {name:5}  to ready {statistics.median(ready):.2f} s ({' '.join(f'{x:.2f}' for x in ready)}), "
              f"daemon CPU {statistics.median(cpu):.2f} s ({' '.join(f'{x:.2f}' for x in cpu)}), "
              f"queue overflowed {sum(r[2] for r in runs)} of {len(runs)}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("other", type=Path, help="the other checkout (a git worktree)")
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tree", type=Path, help="scan this tree (from testing.corpus) instead of generating one")
    parser.add_argument("--naive", action="store_true", help="run the naive script (benchmarks.baseline) each round")
    parser.add_argument("--page", type=int, metavar="N", help="compare writing report.html at N models instead")
    parser.add_argument("--daemon", type=int, metavar="N", help="compare the daemon's cold start on N files instead")
    args = parser.parse_args(argv)
    checkouts = {"this": HERE, "other": args.other.resolve()}
    if args.page:
        compare_pages(checkouts, args.page, args.rounds)
        return 0
    if args.daemon:
        compare_daemons(checkouts, args.daemon, args.rounds)
        return 0
    figures: dict[str, dict[str, list[float]]] = {k: {"cold": [], "rescan": []} for k in checkouts}
    walls: dict[str, list[float]] = {k: [] for k in (*checkouts, "naive")}
    naive_cpu: list[float] = []
    with tempfile.TemporaryDirectory() as work:
        tree = args.tree or Path(work) / "tree"
        if args.tree is None:
            subprocess.run([sys.executable, "-m", "testing.corpus", str(tree), str(args.files)], cwd=HERE, check=True)
        files = sum(1 for _ in tree.rglob("*.json"))
        for round_ in range(args.rounds):
            for name, checkout in checkouts.items():
                db = Path(work) / f"{name}-{round_}.db"
                cpu, wall = scan_measured(checkout, tree, db)
                figures[name]["cold"].append(cpu)
                walls[name].append(wall)
                figures[name]["rescan"].append(scan_measured(checkout, tree, db)[0])
            if args.naive:
                naive = [sys.executable, "-m", "benchmarks.baseline", str(tree), f"{work}/naive.csv"]
                cpu, wall = measured(naive, HERE)
                naive_cpu.append(cpu)
                walls["naive"].append(wall)
    print(f"CPU seconds, {files:,} files, {args.rounds} interleaved rounds (median; every run)")
    for name, kinds in figures.items():
        cells = ", ".join(
            f"{k} {statistics.median(v):.2f} ({' '.join(f'{x:.2f}' for x in v)})" for k, v in kinds.items()
        )
        print(f"  {name:5}  {cells}")
    if args.naive:
        print(f"  naive  {statistics.median(naive_cpu):.2f} ({' '.join(f'{x:.2f}' for x in naive_cpu)})")
    print("Wall seconds of the cold scan, start-up included (median; every run; the naive script's / this)")
    for name, runs in walls.items():
        if runs:
            ratio = f", x{statistics.median(walls['naive']) / statistics.median(runs):.2f}" if walls["naive"] else ""
            print(f"  {name:5}  {statistics.median(runs):.2f} ({' '.join(f'{x:.2f}' for x in runs)}){ratio}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
