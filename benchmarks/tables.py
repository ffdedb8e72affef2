"""What the daemon's table files cost after a change: kept and spliced (:mod:`watcher.reports.tables`)
against a whole render of the report view (the baseline, :func:`watcher.reports.files.write_reports`),
in one process, on a database of generated models.

    python -m benchmarks.tables [--models 100000] [--formats csv,json] [--rounds 5]

Each figure is the median wall time of ``--rounds`` writes of every table file, files made
durable (fsync) and renamed into place, as the daemon writes them. A change of N models is made
by writing N new files of as many models into the database, then undoing them before the next
round. Every spliced file is checked against a whole render of the same state: a figure is
printed only for output that is byte-identical.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from benchmarks.page import print_table
from testing.models import database, outcomes
from watcher.outcomes import Removed, Scored
from watcher.reports.files import write_reports
from watcher.reports.tables import ReportTables
from watcher.store import Store


def whole_render(store: Store, folder: Path, formats: list[str]) -> dict[str, bytes]:
    """The baseline: every file rendered from the whole view, in one read transaction."""
    with store.snapshot():
        return {p.name: p.read_bytes() for p in write_reports(store.report_rows, folder, formats)}


def changed_models(n: int, round_: int) -> list[Scored]:
    """``n`` new result files of ``n`` new models (their ids unlike any generated one's)."""
    fresh = list(outcomes(n, seed=1000 + round_, superseded=0.0))
    return [o._replace(path=f"bench/{round_}/{i}.json") for i, o in enumerate(fresh)]


def bench(models: int, formats: list[str], rounds: int, work: Path) -> list[tuple[str, str]]:
    settings = database(work, models)
    lines: list[tuple[str, str]] = []
    store = Store.open(settings.db_path)
    try:
        kept_dir, whole_dir = work / "kept", work / "whole"
        whole_dir.mkdir()
        base = []
        for _ in range(rounds):
            start = time.perf_counter()
            whole_render(store, whole_dir, formats)
            base.append(time.perf_counter() - start)
        baseline = statistics.median(base)
        lines.append((f"whole render of {models:,} models ({'+'.join(formats)}), the baseline (s)", f"{baseline:.3f}"))
        tracemalloc.start()
        tables = ReportTables(kept_dir, formats)
        tables.write(store)
        kept_bytes, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        for n in (1, 100, 1_000, 10_000):
            times = []
            for r in range(rounds):
                batch = changed_models(n, r)
                store.apply(batch)
                start = time.perf_counter()
                tables.write(store)
                times.append(time.perf_counter() - start)
                kept = {p.name: p.read_bytes() for p in kept_dir.iterdir() if p.name.startswith("report")}
                if kept != whole_render(store, whole_dir, formats):
                    raise SystemExit(f"spliced files differ from a whole render after {n} changes")
                store.apply([Removed(o.path) for o in batch])
                tables.write(store)
            t = statistics.median(times)
            lines.append(
                (
                    f"a change of {n:,} model{'s' * (n > 1)}: files written (s; baseline/this)",
                    f"{t:.3f} ({baseline / t:.1f}x)",
                )
            )
        reads = f"{tables.partial_reads} of {tables.partial_reads + tables.full_reads}"
        lines.append(("writes that read only the changed models", reads))
        lines.append(("kept between writes (MiB, traced)", f"{kept_bytes / 2**20:.1f}"))
    finally:
        store.close()
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=100_000)
    parser.add_argument("--formats", default="csv,json", help="table formats, comma-separated")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="watcher-tables-bench-"))
    try:
        started = time.perf_counter()
        lines = bench(args.models, args.formats.split(","), args.rounds, work)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print_table(lines, f"median of {args.rounds}; max RSS of this runner {rss:.0f} MiB", started)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
