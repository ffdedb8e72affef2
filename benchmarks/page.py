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
import hashlib
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import corpus
from testing.cdp import CHROMIUM, Browser
from watcher.config import Settings
from watcher.outcomes import FileStat, Scored
from watcher.reports.files import write_html_file
from watcher.scoring import curve_bytes, drawn_curve, optimal_point
from watcher.store import Store

SORTS = ["model_id", "issuer", "optimal_threshold", "closest_recall_value", "target_met", "experiment_date", "path"]
OFFSETS = ["Z", "+02:00", "-05:30", ".250Z", ".123456+09:00", "z"]


def report_rows(n: int, seed: int = 1, superseded: float = 0.01) -> Iterator[tuple[Any, ...]]:
    """``n`` models' rows as :meth:`watcher.store.Store.report_details` gives them, unsorted, and for
    a share of the models a superseded older file: ``(model_id, issuer, threshold, recall,
    experiment_date, path, target_recall, target_met, n_points, curve, distance, experiment_at)``.
    Realistic curves (a few hundred, reused), 37 issuers, and dates written with assorted offsets
    so that text order and instant order differ."""
    rng = random.Random(seed)
    shapes = []
    for k in range(400):
        thresholds, recalls = corpus.curve(101, random.Random(k))
        score = optimal_point(thresholds, recalls, 0.85)
        xs, ys = drawn_curve(thresholds, recalls, score.index)
        shapes.append((score, curve_bytes(xs, ys)))
    dates = []
    for _ in range(5000):
        day, sec = 1 + rng.randrange(28), rng.randrange(86400)
        date = f"2024-{1 + rng.randrange(12):02}-{day:02}T{sec // 3600:02}:{sec // 60 % 60:02}:{sec % 60:02}"
        offset = OFFSETS[rng.randrange(len(OFFSETS))]
        date += offset.upper() if offset == "z" else offset
        dates.append((date, _utc(date)))
    older = ("2023-01-01T00:00:00Z", _utc("2023-01-01T00:00:00Z"))
    for i in range(n):
        h = f"{rng.getrandbits(128):032x}"
        model = f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) % 4]}{h[17:20]}-{h[20:]}"
        for v in range(2 if rng.random() < superseded else 1):
            score, curve = shapes[rng.randrange(len(shapes))]
            date, at = older if v else dates[rng.randrange(len(dates))]
            path = f"old/{corpus.relpath(i)}" if v else corpus.relpath(i)
            yield (model, f"user{i % 37}@example.com", score.threshold, score.recall, date, path, 0.85,
                   score.target_met, 101, curve, score.distance, at)  # fmt: skip


def outcomes(n: int, seed: int = 1, superseded: float = 0.01) -> Iterator[Scored]:
    """:func:`report_rows` as the outcomes of scored files, for :meth:`watcher.store.Store.apply`."""
    for i, (model, issuer, thr, rec, date, path, target, met, points, curve, distance, at) in enumerate(
        report_rows(n, seed, superseded)
    ):
        yield Scored(
            path=path, stat=FileStat(1000, 1, i), sha256=hashlib.sha256(path.encode()).hexdigest(), model_id=model,
            issuer=issuer, experiment_date=date, experiment_at=at, optimal_threshold=thr, closest_recall_value=rec,
            distance=distance, target_met=met, target_recall=target, n_points=points, curve=curve,
        )  # fmt: skip


def _utc(date: str) -> str:
    return datetime.fromisoformat(date.upper()).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def database(work: Path, n: int) -> Settings:
    """A database of ``n`` generated models (and settings pointing at it)."""
    values: dict[str, Any] = {"watch_dir": work, "db_path": work / f"page{n}.db", "report_dir": work / f"reports{n}"}
    settings = Settings(**values)
    store = Store.open(settings.db_path)
    try:
        batch: list[Any] = []
        for o in outcomes(n):
            batch.append(o)
            if len(batch) == 5000:
                store.apply(batch)
                batch = []
        store.apply(batch)
    finally:
        store.close()
    settings.reports.mkdir(exist_ok=True)
    return settings


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
