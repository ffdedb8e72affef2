"""Compare the scan of this checkout with another checkout's, interleaved, in CPU seconds.

``python -m benchmarks.compare OTHER_CHECKOUT [--files N] [--rounds R]`` (make one with
``git worktree add --detach /tmp/old REV``). Each round runs a cold scan into a fresh database,
then an unchanged re-scan, for each checkout in turn, and measures the CPU time of the whole
process tree (``getrusage`` of the children): on a shared machine that moves far less than wall
time does. Prints the median and every figure.

``--page N`` compares writing ``report.html`` instead: one database of N generated models
(``benchmarks.page``), the page written from it by each checkout in turn, the CPU time of the
write alone (imports left out) measured in its process.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
# Runs scan_timer with the given checkout first on sys.path, whichever watcher is installed.
_TIMED = (
    "import sys; root = sys.argv[1]; sys.path.insert(0, root); import watcher;"
    "assert watcher.__file__.startswith(root), watcher.__file__;"
    "from benchmarks.scan_timer import main; main(sys.argv[2], sys.argv[3])"
)


def cpu_seconds(checkout: Path, tree: Path, db: Path) -> float:
    """CPU time (user + system) of one scan of ``tree`` into ``db`` with ``checkout``'s code."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-c", _TIMED, str(checkout), str(tree), str(db)], cwd=checkout, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


# Writes the page with the given checkout first on sys.path; prints the write's CPU seconds.
_PAGE = (
    "import sys, time; root = sys.argv[1]; sys.path.insert(0, root); import watcher;"
    "assert watcher.__file__.startswith(root), watcher.__file__;"
    "from pathlib import Path; from watcher.config import Settings; from watcher.publish import write_html_file;"
    "db = Path(sys.argv[2]); s = Settings(watch_dir=db.parent, db_path=db, report_dir=Path(sys.argv[3]));"
    "cpu = time.process_time(); write_html_file(s); print(time.process_time() - cpu)"
)


def page_cpu_seconds(checkout: Path, db: Path, reports: Path) -> float:
    """CPU time of one write of report.html from ``db`` with ``checkout``'s code."""
    out = subprocess.run([sys.executable, "-c", _PAGE, str(checkout), str(db), str(reports)], cwd=checkout,
                         check=True, capture_output=True, text=True).stdout  # fmt: skip
    return float(out)


def compare_pages(checkouts: dict[str, Path], models: int, rounds: int) -> None:
    from benchmarks.page import database

    figures: dict[str, list[float]] = {k: [] for k in checkouts}
    with tempfile.TemporaryDirectory() as work:
        settings = database(Path(work), models)
        for _ in range(rounds):
            for name, checkout in checkouts.items():
                figures[name].append(page_cpu_seconds(checkout, settings.db_path, settings.reports))
    print(f"CPU seconds to write report.html, {models:,} models, {rounds} interleaved rounds (median; every run)")
    for name, runs in figures.items():
        print(f"  {name:5}  {statistics.median(runs):.3f} ({' '.join(f'{x:.3f}' for x in runs)})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("other", type=Path, help="the other checkout (a git worktree)")
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--page", type=int, metavar="N", help="compare writing report.html at N models instead")
    args = parser.parse_args(argv)
    checkouts = {"this": HERE, "other": args.other.resolve()}
    if args.page:
        compare_pages(checkouts, args.page, args.rounds)
        return 0
    figures: dict[str, dict[str, list[float]]] = {k: {"cold": [], "rescan": []} for k in checkouts}
    with tempfile.TemporaryDirectory() as work:
        tree = Path(work) / "tree"
        subprocess.run([sys.executable, "-m", "benchmarks.corpus", str(tree), str(args.files)], cwd=HERE, check=True)
        for round_ in range(args.rounds):
            for name, checkout in checkouts.items():
                db = Path(work) / f"{name}-{round_}.db"
                figures[name]["cold"].append(cpu_seconds(checkout, tree, db))
                figures[name]["rescan"].append(cpu_seconds(checkout, tree, db))
    print(f"CPU seconds, {args.files:,} files, {args.rounds} interleaved rounds (median; every run)")
    for name, kinds in figures.items():
        cells = ", ".join(
            f"{k} {statistics.median(v):.2f} ({' '.join(f'{x:.2f}' for x in v)})" for k, v in kinds.items()
        )
        print(f"  {name:5}  {cells}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
