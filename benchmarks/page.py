"""The report page in a real headless Chromium: ``python -m benchmarks.page`` (part of ``make bench``;
alone: ``make bench-page``).

For 10,000 and 100,000 generated models (rows written straight into a database, not files): the
time to write ``report.html`` from the database (what the daemon's page process does after a
change), the file's size, and in the browser, each the median of 3 fresh loads: page loaded and
first screen drawn, sorting by each column (the first click; the page computes the ascending orders
while idle after its first screen, so a click after that finds them ready), filtering
(an issuer; a model_id prefix), and opening a model's detail. Browser times are taken in the
page (``performance.now()`` from the action, on a page left alone for :data:`SETTLE` ms, to the
task after the frame it causes; the first screen from the navigation's start to the task after
its frame). ``--quick`` runs tiny sizes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from testing.cdp import CHROMIUM, Browser
from testing.models import database
from watcher.reports.files import write_html_file

SORTS = ["model_id", "issuer", "optimal_threshold", "closest_recall_value", "target_met", "experiment_date", "path"]


FRAME = "await new Promise(r => requestAnimationFrame(() => setTimeout(r, 0)))"
#: Each action starts from a page left alone this long (ms), as a person's next click would: the
#: previous action's trailing work (its frame's raster and display, the address written a moment
#: later and the browser's own handling of it) is then not billed to the next action.
SETTLE = 600


def timed_js(browser: Browser, action: str, settle: int = SETTLE) -> tuple[float, float]:
    """Milliseconds from running ``action`` in the page (left alone for ``settle`` ms first)
    to the frame after it, and of those the script's own (the action's synchronous part)."""
    took = browser.eval(f"(async () => {{ await new Promise(r => setTimeout(r, {settle}));"
                        f" const t0 = performance.now(); {{ {action}; }} const t1 = performance.now();"
                        f" {FRAME}; return [performance.now() - t0, t1 - t0]; }})()")  # fmt: skip
    return float(took[0]), float(took[1])


def measure(url: str, settle: int = SETTLE) -> dict[str, tuple[float, float]]:
    """One fresh load and each action once (each after ``settle`` ms of quiet): milliseconds by
    name (to the next frame; the script's own part)."""
    out: dict[str, tuple[float, float]] = {}
    with Browser() as b:

        def timed(action: str) -> tuple[float, float]:
            return timed_js(b, action, settle)

        b.open(url, timeout=120)
        ready = float(b.eval("window.readyAt"))
        out["load and first screen"] = (ready, ready)
        for key in SORTS[1:] + SORTS[:1]:
            out[f"sort by {key}"] = timed(f"document.querySelector('.head button[data-key={key}]').click()")
        # The ascending orders are computed while the page is idle after its first screen; a
        # descending order is computed on its first click: that is the cost without the head start.
        for key in ("optimal_threshold", "experiment_date"):
            b.eval(f"document.querySelector('.head button[data-key={key}]').click()")
            out[f"sort by {key}, descending (computed on the click)"] = timed(
                f"document.querySelector('.head button[data-key={key}]').click()"
            )
        b.eval("document.querySelector('.head button[data-key=model_id]').click()")
        out["filter: issuer"] = timed("const s = document.getElementById('issuer'); s.value = "
                                      "'user5@example.com'; s.dispatchEvent(new Event('change'))")  # fmt: skip
        out["filter: model_id prefix"] = timed("const s = document.getElementById('search'); s.value = 'a1';"
                                               " s.dispatchEvent(new Event('input'))")  # fmt: skip
        out["filter: cleared"] = timed("for (const id of ['issuer', 'search']) { const s = "
                                       "document.getElementById(id); s.value = ''; s.dispatchEvent(new "
                                       "Event(id === 'issuer' ? 'change' : 'input')); }")  # fmt: skip
        out["open a model's detail"] = timed("document.querySelector('#rows .row .id').click()")
        errors = b.errors()
        if errors:
            raise SystemExit(f"console errors: {errors}")
    return out


def bench(sizes: list[int], repeats: int, work: Path, settle: int = SETTLE) -> list[tuple[str, str]]:
    lines: list[tuple[str, str]] = []
    for n in sizes:
        settings = database(work, n)
        write_times, cpu_times = [], []
        for _ in range(repeats):
            start, cpu = time.perf_counter(), time.process_time()
            page = write_html_file(settings)
            write_times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu)
        wall, cpu = statistics.median(write_times), statistics.median(cpu_times)
        lines.append((f"{n:,} models: report.html written from the database (s; CPU s in brackets)",
                      f"{wall:.2f} ({cpu:.2f})"))  # fmt: skip
        lines.append((f"{n:,} models: report.html size (MB)", f"{page.stat().st_size / 1e6:.1f}"))
        runs = [measure(page.as_uri(), settle) for _ in range(repeats)]
        for name in runs[0]:
            total, script = (statistics.median(r[name][k] for r in runs) for k in (0, 1))
            value = f"{total:.0f}" if name.startswith("load") else f"{total:.0f} ({script:.0f})"
            lines.append(
                (f"{n:,} models: {name} (ms{'' if name.startswith('load') else ', script in brackets'})", value)
            )
    return lines


def print_table(lines: list[tuple[str, str]], how: str, started: float) -> None:
    """The figures as a Markdown table, then ``how`` they were taken, the time since ``started``
    (a ``time.perf_counter()`` value) and the load average at the end."""
    print("| figure | value |\n|---|---|")
    for name, value in lines:
        print(f"| {name} | {value} |")
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    took = time.perf_counter() - started
    print(f"\n{how}; {took:.0f} s in all; load average at the end {load} on {os.cpu_count()} CPUs")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the code, not the speed")
    args = parser.parse_args(argv)
    if CHROMIUM is None:
        print("chromium is not installed: no page figures", file=sys.stderr)
        return 1
    sizes, repeats = ([500], 1) if args.quick else ([10_000, 100_000], 3)
    work = Path(tempfile.mkdtemp(prefix="watcher-page-bench-"))
    try:
        started = time.perf_counter()
        lines = bench(sizes, repeats, work, 0 if args.quick else SETTLE)
        print_table(lines, f"headless {CHROMIUM}, median of {repeats}", started)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
