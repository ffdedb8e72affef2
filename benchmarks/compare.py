"""Compare the scan of this checkout with another checkout's, interleaved, in CPU seconds.

``python -m benchmarks.compare OTHER_CHECKOUT [--files N] [--rounds R]`` (make one with
``git worktree add --detach /tmp/old REV``). Each round runs a cold scan into a fresh database,
then an unchanged re-scan, for each checkout in turn, and measures the CPU time of the whole
process tree (``getrusage`` of the children): on a shared machine that moves far less than wall
time does. Prints the median and every figure.
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("other", type=Path, help="the other checkout (a git worktree)")
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    checkouts = {"this": HERE, "other": args.other.resolve()}
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
