"""Make the database mirror the directory: the one-shot scan, also run by the daemon at start-up,
periodically, and for folders that appear or move.

Only what changed is read: a file whose (size, mtime_ns, inode) matches the stored outcome made
under the current target and rules is not opened, and one whose content hash is unchanged is not
parsed. Bulk work is parsed and validated in worker processes; the single caller thread writes
batches, one transaction each.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, wait
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import partial
from itertools import chain, islice
from pathlib import Path
from typing import Any, TextIO

from watcher import logs
from watcher.config import Settings
from watcher.errors import WatchDirError
from watcher.html import render_html
from watcher.logs import get_logger
from watcher.models import RULES_VERSION
from watcher.pipeline import Job, JudgeOptions, Outcome, Removed, judge_many
from watcher.report import FILE_NAMES, write_atomic, write_reports
from watcher.store import Applied, Store, now_iso
from watcher.tree import Diff, Matcher, diff_listing, listed

log = get_logger("watcher.reconcile")

#: Below this many files to read, worker processes cost more to start than they save.
POOL_MIN_FILES = 200
#: With a pool kept for every burst (the daemon's), a batch this big is worth sending to it: judging
#: it in the writer thread would take the core (and the GIL) the observer needs during a burst.
WARM_POOL_MIN_FILES = 16
#: From about this many stored files, a full reconcile has the workers walk and stat the tree.
PARALLEL_WALK_MIN = 20_000
#: Worker processes run this much nicer than the writer (see ``_init_worker``).
WORKER_NICE = 5

Progress = Callable[[int, int], None]


@dataclass(slots=True)
class Summary:
    """Counts from one reconcile."""

    seen: int = 0
    read: int = 0
    scored: int = 0
    rejected: int = 0
    removed: int = 0
    seconds: float = 0.0

    @property
    def changed(self) -> bool:
        """True when the report or rejections may have changed."""
        return bool(self.scored or self.rejected or self.removed)

    def add(self, applied: Applied) -> None:
        """Count one applied batch."""
        self.scored += len(applied.scored)
        self.rejected += len(applied.rejected)
        self.removed += len(applied.removed)


def judge_options(settings: Settings) -> JudgeOptions:
    """The part of the settings that judging a file needs."""
    return JudgeOptions(
        root=settings.watch_dir,
        target_recall=settings.target_recall,
        max_file_bytes=settings.max_file_bytes,
        max_errors=settings.max_errors_per_file,
        follow_symlinks=settings.follow_symlinks,
    )


def matcher_for(settings: Settings) -> Matcher:
    """The path filter the settings describe."""
    return Matcher(settings.patterns, settings.ignore_patterns, settings.recursive)


def open_store(settings: Settings) -> Store:
    """Open the configured database with the current rules version and target."""
    return Store.open(settings.db_path, RULES_VERSION, settings.target_recall)


def log_applied(applied: Applied, store: Store) -> None:
    """One log event per changed file, and which file wins for each model_id held by several."""
    # Bound once per batch: the module-level proxy looks the configuration up on every call,
    # which was half the cost of a log line in a bulk scan.
    blog = log.bind()
    with logs.held():  # the batch's lines leave in one flush
        for s in applied.scored:
            blog.info(
                "file_scored", path=s.path, model_id=s.model_id, optimal_threshold=s.optimal_threshold,
                closest_recall_value=s.closest_recall_value, target_met=s.target_met,
            )  # fmt: skip
        for r in applied.rejected:
            blog.warning("file_rejected", path=r.path, errors=[p.as_dict() for p in r.errors])
        for path in applied.removed:
            blog.info("file_removed", path=path)
        for model_id, paths in store.duplicates(applied.models).items():
            blog.info("model_duplicate", model_id=model_id, winner=paths[0], others=paths[1:])


def refresh_reports(
    store: Store,
    settings: Settings,
    changed: bool,
    html_in: Executor | None = None,
    meanwhile: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext,
) -> bool:
    """Rewrite the report files when something changed or one is missing; True if written.

    The table formats come from one pass over the report, in one read transaction. With
    ``html_in`` (an executor of other processes) the HTML page is rendered there meanwhile, on
    the other core, from its own read-only connection: the page then shows a committed state
    that may be a commit newer than the tables'. Errors from either side are raised here.
    ``meanwhile()`` is entered around the tables, once the page's process has started (a fork
    must not copy the locks of a thread ``meanwhile`` may start).
    """
    missing = any(not (settings.reports / FILE_NAMES[f]).exists() for f in settings.report_formats)
    if not (changed or missing):
        return False
    tables = [f for f in settings.report_formats if f != "html"]
    html = "html" in settings.report_formats
    page = html_in.submit(write_html_file, settings) if html and html_in is not None else None
    try:
        with meanwhile(), store.snapshot():  # all table formats from the same committed state
            paths = write_reports(store.report_rows, settings.reports, tables)
            if html and page is None:
                paths.append(write_html(store, settings))
    finally:
        if page is not None:
            wait([page])  # never return (or raise) while the page is still being written
    if page is not None:
        paths.append(page.result())
    log.debug("reports_written", paths=[str(p) for p in paths])
    return True


def write_html_file(settings: Settings) -> Path:
    """:func:`write_html` from a read-only connection of its own (runs in another process)."""
    store = Store.open_readonly(settings.db_path)
    try:
        return write_html(store, settings)
    finally:
        store.close()


def report_process() -> ProcessPoolExecutor:
    """One worker process for :func:`refresh_reports`'s HTML page (started on first use)."""
    return ProcessPoolExecutor(max_workers=1, mp_context=_pool_context())


_worker_opts: JudgeOptions | None = None


def _init_worker(opts: JudgeOptions) -> None:
    # The options travel once per worker, not once per file.
    global _worker_opts
    _worker_opts = opts
    # Below the writer: with the workers and the writer sharing the cores, equal shares would
    # starve the one writer (the scan's bottleneck) while finished outcomes queue up; and a
    # daemon's observer thread stays ahead of a burst's parsing.
    os.nice(WORKER_NICE)


def write_html(store: Store, settings: Settings) -> Path:
    """Regenerate ``report.html`` (at most ``html_max_models`` models, the most recent ones)."""
    target = settings.reports / FILE_NAMES["html"]
    omitted = max(0, store.counts()["models"] - settings.html_max_models)

    def produce(fh: TextIO) -> None:
        details = store.report_details(limit=settings.html_max_models if omitted else None)
        render_html(details, store.rejection_rows(limit=1000), fh, now_iso(), omitted)

    write_atomic(target, produce)
    return target


def _judge_in_worker(jobs: Sequence[Job]) -> list[Outcome]:
    assert _worker_opts is not None
    return judge_many(jobs, _worker_opts)


def _pool_context() -> multiprocessing.context.BaseContext:
    """``fork`` when this process has a single thread (``watcher scan``): workers start at once.
    Forking a process with other threads (the daemon) is unsafe, so there workers come from a
    fork server that has imported the pipeline once; a fresh interpreter per worker would cost
    more than a small burst takes."""
    if threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["watcher.pipeline"])
    return ctx


def make_pool(opts: JudgeOptions, workers: int) -> ProcessPoolExecutor:
    """Worker processes for :func:`judge_all`, each given ``opts`` once."""
    return ProcessPoolExecutor(
        max_workers=workers, mp_context=_pool_context(), initializer=_init_worker, initargs=(opts,)
    )


PoolProvider = Callable[[], ProcessPoolExecutor]


def judge_all(
    jobs: Sequence[Job], opts: JudgeOptions, workers: int, pool: PoolProvider | None = None
) -> Iterator[Outcome]:
    """Judge every job (see :data:`watcher.pipeline.Job`), in worker processes when it pays;
    outcomes in order.

    ``pool()`` (a pool made by :func:`make_pool` with the same ``opts``) is asked for only when
    workers pay, so a daemon keeps one pool for every burst; without it, one is made for this call.
    """
    if workers <= 1 or len(jobs) < (POOL_MIN_FILES if pool is None else WARM_POOL_MIN_FILES):
        for start in range(0, len(jobs), 256):
            yield from judge_many(jobs[start : start + 256], opts)
        return
    size = min(256, max(8, len(jobs) // (workers * 8)))  # a few chunks per worker, never tiny ones
    chunks = [jobs[start : start + size] for start in range(0, len(jobs), size)]
    if pool is not None:
        yield from chain.from_iterable(pool().map(_judge_in_worker, chunks))
        return
    with make_pool(opts, workers) as own:
        yield from chain.from_iterable(own.map(_judge_in_worker, chunks))


def apply_in_batches(
    store: Store, outcomes: Iterable[Outcome], batch_size: int, on_batch: Callable[[Applied, int], None]
) -> None:
    """Apply outcomes ``batch_size`` at a time, one transaction each, calling ``on_batch`` after each."""
    it = iter(outcomes)
    while batch := list(islice(it, batch_size)):
        applied = store.apply(batch)
        log_applied(applied, store)
        on_batch(applied, len(batch))


def reconcile(
    store: Store,
    settings: Settings,
    under: str = "",
    progress: Progress | None = None,
    skip: Callable[[str], bool] | None = None,
    pool: PoolProvider | None = None,
) -> Summary:
    """Bring the stored state of ``under`` (a relative folder; '' for the whole tree) in line with disk.

    Files are read only when their stat key or the scoring rules changed; vanished files are
    removed. Paths for which ``skip(path)`` is true are left alone (the daemon's tracker has them
    in hand: a writer may still hold them open). Report files are not touched here (see
    :func:`refresh_reports`).
    """
    if not settings.watch_dir.is_dir():
        # Never mirror a missing (e.g. unmounted) folder: that would remove every stored result.
        raise WatchDirError(f"{settings.watch_dir}: watch directory does not exist or is not a directory")
    started = time.monotonic()
    summary = Summary()
    matcher, workers = matcher_for(settings), settings.worker_count
    own: ProcessPoolExecutor | None = None
    try:
        if not under and workers > 1 and store.size_hint() >= PARALLEL_WALK_MIN:
            if pool is None:
                own = make_pool(judge_options(settings), workers)
                pool = partial(_given, own)
            diff = _diff_in_workers(store, settings, matcher, pool())
        else:
            diff = diff_listing(store.stat_keys(under), listed(settings.watch_dir, matcher, under))
        jobs, gone = _jobs(store, diff, skip)
        summary.seen = diff.seen
        summary.read = len(jobs)
        done = 0

        def on_batch(applied: Applied, n: int) -> None:
            nonlocal done
            summary.add(applied)
            done += n
            if progress is not None:
                progress(done, len(jobs) + len(gone))

        outcomes = judge_all(jobs, judge_options(settings), workers, pool)
        apply_in_batches(store, chain(outcomes, gone), settings.batch_size, on_batch)
    finally:
        if own is not None:
            own.shutdown(cancel_futures=True)
    summary.seconds = time.monotonic() - started
    return summary


def _given(pool: ProcessPoolExecutor) -> ProcessPoolExecutor:
    return pool


def _diff_in_workers(store: Store, settings: Settings, matcher: Matcher, pool: Executor) -> Diff:
    # The top folder is listed here; each folder below it is walked, stat'ed and compared with
    # its stored keys by a worker meanwhile (a re-scan of a big tree is a stat and a stored key
    # per file: split between the cores, and only the differences come back). This thread
    # compares the top folder's files and whatever is stored outside the folders listed.
    folders: list[str] = []
    here = list(listed(settings.watch_dir, matcher, "", folders))
    below = pool.map(
        partial(_diff_folder, settings.watch_dir, matcher, store.path, store.rules_version, store.target_recall),
        folders,
    )
    seen, changed, gone = diff_listing(store.stat_keys(outside=folders), here)
    for part in below:
        seen += part.seen
        changed += part.changed
        gone += part.gone
    return Diff(seen, changed, gone)


_worker_stores: dict[tuple[Path, int, float], Store] = {}


def _diff_folder(root: Path, matcher: Matcher, db: Path, rules_version: int, target_recall: float, folder: str) -> Diff:
    # In a worker process: one read-only connection per database, kept for the next folders.
    key = (db, rules_version, target_recall)
    store = _worker_stores.get(key)
    if store is None:
        store = _worker_stores[key] = Store.open_readonly(db, rules_version, target_recall)
    return diff_listing(store.stat_keys(folder), listed(root, matcher, folder))


def _jobs(store: Store, diff: Diff, skip: Callable[[str], bool] | None) -> tuple[list[Job], list[Outcome]]:
    """The jobs for the changed files and the removals, leaving out the paths ``skip`` names.
    A changed file the database holds is given its stored hash, when reusable."""
    changed = diff.changed if skip is None else [c for c in diff.changed if not skip(c[0])]
    known = store.known_paths([rel for rel, _, stored in changed if stored])
    jobs: list[Job] = []
    for rel, regular, stored in changed:
        k = known.get(rel) if stored else None
        jobs.append((rel, k.reusable_sha if k is not None else None, regular))
    gone: list[Outcome] = [Removed(p) for p in diff.gone if not (skip is not None and skip(p))]
    return jobs, gone


def scan(settings: Settings, progress: Progress | None = None) -> tuple[Summary, dict[str, Any]]:
    """``watcher scan``: open the store, reconcile the whole tree, refresh reports, close.

    Returns the summary and the database counts afterwards.
    """
    store = open_store(settings)
    try:
        summary = reconcile(store, settings, progress=progress)
        with report_process() as html_in:
            refresh_reports(store, settings, summary.changed, html_in, meanwhile=store.checkpointing)
        counts = store.counts()
    finally:
        store.close()
    log.info(
        "scan_done", seen=summary.seen, read=summary.read, scored=summary.scored, rejected=summary.rejected,
        removed=summary.removed, seconds=round(summary.seconds, 3), **counts,
    )  # fmt: skip
    return summary, counts
