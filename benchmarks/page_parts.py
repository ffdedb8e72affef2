"""The report page in parts at 100,000 and a million models: ``python -m benchmarks.page_parts
[--models N ...]`` (outside ``make bench``: a million models take minutes to generate).

For each size, a database of N generated models (rows written straight through the store, no
files; kept in ``--keep DIR`` and reused by the next run when given), the page written from it in
parts by the function the daemon's page process runs (wall and CPU seconds, sizes; beside it the
same models written as one whole page, what a change cost the page process before), then opened in
headless Chromium from ``file://`` (a fresh browser each time, median of ``--repeats`` loads): the
first screen (navigation start to the task after its first frame, as ``benchmarks.page``), the
time until every part is in (the page's ``window.partsAt``), the browser's CPU seconds (user +
system of its whole process tree) to each, its JavaScript heap after, and with every part in a
sort by threshold and a model_id prefix filter over all the models. Beside it, the baseline:
today's whole page (one file, every model inline) of ``--baseline`` models, the same way.
``--quick`` runs tiny sizes (the smoke test), whose figures mean nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.metrics_idle import cpu_seconds
from benchmarks.page import print_table, timed_js
from testing.cdp import CHROMIUM, Browser
from testing.models import database
from watcher.config import Settings
from watcher.reports.files import write_html_file
from watcher.reports.page import PART_FOLDER


def settings_for(work: Path, n: int) -> Settings:
    """A database of ``n`` generated models in ``work``: the one there if it holds them all (not
    one a stopped run left half written), else a new one."""
    db = work / f"page{n}.db"
    if db.exists():
        if models_in(db) == n:
            values: dict[str, Any] = {"watch_dir": work, "db_path": db, "report_dir": work / f"reports{n}"}
            return Settings(**values)
        for stale in work.glob(f"page{n}.db*"):
            stale.unlink()
    return database(work, n)


def models_in(db: Path) -> int:
    """How many models the database holds."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return int(conn.execute("SELECT count(DISTINCT model_id) FROM results").fetchone()[0])


def write_page(settings: Settings) -> tuple[float, float]:
    """Write the page as the daemon's page process does: wall and CPU seconds."""
    start, cpu = time.perf_counter(), time.process_time()
    write_html_file(settings)
    return time.perf_counter() - start, time.process_time() - cpu


def load(url: str) -> dict[str, float]:
    """One fresh load: first screen and every part in (ms), the browser's CPU seconds to each, the
    heap (MiB), and a sort and a filter with every part in (ms to the frame after)."""
    with Browser() as b:
        pid = b.proc.pid
        cpu0 = cpu_seconds(pid)
        b.open(url, timeout=600)
        out = {"first screen (ms)": float(b.eval("window.readyAt")), "browser CPU to the first screen (s)": 0.0}
        out["browser CPU to the first screen (s)"] = cpu_seconds(pid) - cpu0
        b.wait_for("document.body.dataset.parts === 'all' || !window.watcherPart", timeout=600)
        every = b.eval("window.partsAt")
        out["every part in (ms)"] = float(every if every is not None else out["first screen (ms)"])
        out["browser CPU to every part in (s)"] = cpu_seconds(pid) - cpu0
        out["JS heap after (MiB)"] = float(b.call("Runtime.getHeapUsage")["usedSize"]) / 2**20
        out["models shown"] = float(b.eval("report.count()"))
        out["sort by threshold, every part in (ms)"] = timed_js(
            b, "document.querySelector('.head button[data-key=optimal_threshold]').click()"
        )[0]
        out["filter: a model_id prefix, every part in (ms)"] = timed_js(
            b, "const s = document.getElementById('search'); s.value = 'a1'; s.dispatchEvent(new Event('input'))"
        )[0]
        errors = b.errors()
        if errors:
            raise SystemExit(f"console errors: {errors}")
    return out


def measure(settings: Settings, repeats: int, label: str) -> tuple[list[tuple[str, str]], float]:
    """Write the page (as the page process does) and load it ``repeats`` times: the table's lines,
    and the median first screen (ms)."""
    report_dir = settings.report_dir
    lines = []
    if models_in(settings.db_path) > settings.html_part_models:  # what the same page costs to write whole
        wall, cpu = write_page(settings.model_copy(update={"html_part_models": 10**9}))
        lines.append((f"{label}: the same models written as a whole page (s; CPU s)", f"{wall:.2f}; {cpu:.2f}"))
    shutil.rmtree(report_dir / PART_FOLDER, ignore_errors=True)
    wall, cpu = write_page(settings)
    html = report_dir / "report.html"
    parts = sorted((report_dir / PART_FOLDER).glob("*.js")) if (report_dir / PART_FOLDER).exists() else []
    lines += [
        (f"{label}: written from the database (s; CPU s)", f"{wall:.2f}; {cpu:.2f}"),
        (f"{label}: report.html (MB); part files (number; MB)",
         f"{html.stat().st_size / 1e6:.1f}; {len(parts)}; {sum(p.stat().st_size for p in parts) / 1e6:.1f}"),
    ]  # fmt: skip
    runs = [load(html.as_uri()) for _ in range(repeats)]
    for name in runs[0]:
        value = statistics.median(r[name] for r in runs)
        whole = "(ms)" in name or name == "models shown"
        lines.append((f"{label}: {name}", f"{value:,.0f}" if whole else f"{value:.2f}"))
    return lines, statistics.median(r["first screen (ms)"] for r in runs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", type=int, nargs="+", default=[100_000, 1_000_000], help="pages in parts")
    parser.add_argument("--baseline", type=int, default=100_000, help="size of the whole page to compare (0: none)")
    parser.add_argument("--repeats", type=int, default=3, help="loads of each page (the median is shown)")
    parser.add_argument("--keep", type=Path, help="a folder to keep the databases in (and reuse them from)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the code, not the speed")
    args = parser.parse_args(argv)
    if CHROMIUM is None:
        print("chromium is not installed: no page figures", file=sys.stderr)
        return 1
    parts: int = Settings.model_fields["html_part_models"].default
    sizes, baseline, repeats = args.models, args.baseline, args.repeats
    if args.quick:
        sizes, baseline, repeats, parts = [600], 600, 1, 100
    work = args.keep or Path(tempfile.mkdtemp(prefix="watcher-parts-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        started = time.perf_counter()
        lines: list[tuple[str, str]] = []
        whole = None
        if baseline:
            one_file = settings_for(work, baseline).model_copy(update={"html_part_models": 10**9})
            got, whole = measure(one_file, repeats, f"{baseline:,} models, whole page")
            lines += got
        for n in sizes:
            in_parts = settings_for(work, n).model_copy(update={"html_part_models": parts})
            got, first = measure(in_parts, repeats, f"{n:,} models, in parts of {parts:,}")
            lines += got
            if whole is not None:
                lines.append((f"{n:,} models in parts: first screen against the whole page of {baseline:,} (ratio)",
                              f"{first / whole:.2f}"))  # fmt: skip
        print_table(lines, f"headless {CHROMIUM}, median of {repeats} fresh loads", started)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
