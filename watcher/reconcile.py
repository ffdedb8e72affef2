"""Make the database mirror the directory: the one-shot scan, also run by the daemon at start-up,
periodically, and for folders that appear or move.

Only what changed is read: a file whose (size, mtime_ns, inode) matches the stored outcome made
under the current target and rules is not opened, and one whose content hash is unchanged is not
parsed. Bulk work is parsed and validated in worker processes; the single caller thread writes
batches, one transaction each.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import chain
from typing import Any

from watcher.apply import apply_in_batches
from watcher.config import Settings
from watcher.dblock import acquire
from watcher.errors import WatchDirError
from watcher.judge import JudgeOptions
from watcher.logs import get_logger
from watcher.mirror import Applied
from watcher.outcomes import Job, Outcome, Rejected, Removed, stored_path
from watcher.pools import WorkerPool, diff_folders, judge_all, report_process
from watcher.reports.files import refresh_reports
from watcher.resultfile import Problem
from watcher.store import Store
from watcher.tree import Diff, Matcher, diff_listing, listed

log = get_logger("watcher.reconcile")

#: From about this many stored files, a full reconcile has the workers walk and stat the tree.
PARALLEL_WALK_MIN = 20_000
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
    links: tuple[str, ...] = ()  #: the symbolic links listed (:attr:`watcher.tree.Diff.links`)

    @property
    def changed(self) -> bool:
        """True when the report or rejections may have changed."""
        return bool(self.scored or self.rejected or self.removed)

    def add(self, applied: Applied) -> None:
        """Count one applied batch."""
        self.scored += len(applied.scored)
        self.rejected += len(applied.rejected)
        self.removed += len(applied.removed)


def reconcile(
    store: Store,
    settings: Settings,
    under: str = "",
    progress: Progress | None = None,
    skip: Callable[[str], bool] | None = None,
    pool: WorkerPool | None = None,
    alone: bool = False,
) -> Summary:
    """Bring the stored state of ``under`` (a relative folder; '' for the whole tree) in line with disk.

    Files are read only when their stat key or the scoring rules changed; vanished files are
    removed. Paths for which ``skip(path)`` is true are left alone (the daemon's tracker has them
    in hand: a writer may still hold them open). With ``pool``, files are judged and a big tree
    walked in its processes when that pays; without, everything runs in this thread. Report
    files are not touched here (see :func:`watcher.reports.files.refresh_reports`).

    ``alone``: nothing reads the database meanwhile that needs its history by path (``watcher
    scan``, whose reports follow the scan; not the daemon, whose report thread looks up each
    changed path's history as the scan goes): a cold scan then builds some indexes at its end.
    """
    if not settings.watch_dir.is_dir():
        # Never mirror a missing (e.g. unmounted) folder: that would remove every stored result.
        raise WatchDirError(f"{settings.watch_dir}: watch directory does not exist or is not a directory")
    started = time.monotonic()
    summary = Summary()
    matcher = Matcher.from_settings(settings)
    stored = store.size_hint()
    if not under and pool is not None and pool.usable and stored >= PARALLEL_WALK_MIN:
        diff = _diff_in_workers(store, settings, matcher, pool)
    else:
        unreadable: list[tuple[str, str]] = []
        diff = diff_listing(
            store.stat_keys(under), listed(settings.watch_dir, matcher, under, unreadable=unreadable), unreadable
        )
    if not under and any(folder == "" for folder, _ in diff.unreadable):
        # Never mirror a folder we cannot see: that would remove every stored result.
        raise WatchDirError(f"{settings.watch_dir}: cannot read the watch directory: {diff.unreadable[0][1]}")
    jobs, gone = _jobs(store, diff, skip)
    gone += _folders_readable_again(store, settings, under, diff)
    summary.seen, summary.links = diff.seen, diff.links
    summary.read = len(jobs)
    done = 0

    def on_batch(applied: Applied, n: int) -> None:
        nonlocal done
        summary.add(applied)
        done += n
        if progress is not None:
            progress(done, len(jobs) + len(gone))

    outcomes = judge_all(jobs, JudgeOptions.from_settings(settings), pool)
    folders = [_unreadable_folder(folder, reason) for folder, reason in diff.unreadable]
    # A cold scan (nothing stored yet) builds some indexes once at its end.
    cold = alone and not under and stored == 0 and bool(jobs)
    with store.indexes_deferred() if cold else contextlib.nullcontext():
        apply_in_batches(store, chain(folders, outcomes, gone), settings.batch_size, on_batch, bulk=not under)
    summary.seconds = time.monotonic() - started
    return summary


def _unreadable_folder(folder: str, reason: str) -> Rejected:
    # Recorded where users look, like an unreadable file: a rejection of the folder's path, kept
    # (unchanged, so not logged again) while it stays unreadable, removed once it can be listed.
    # What is stored below it stays as it was: out of sight is not deleted.
    return Rejected(stored_path(folder), None, None, (Problem(None, f"folder cannot be read: {reason}"),))


def _folders_readable_again(store: Store, settings: Settings, under: str, diff: Diff) -> list[Outcome]:
    # A reconcile of a folder lists what is below it; the rejection recorded for the folder
    # itself (when it could not be listed) is the one stored path at its own name.
    if not under or any(folder == under for folder, _ in diff.unreadable):
        return []
    if under in store.known_paths([under]) and os.path.isdir(settings.watch_dir / under):
        return [Removed(stored_path(under))]
    return []


def _diff_in_workers(store: Store, settings: Settings, matcher: Matcher, pool: WorkerPool) -> Diff:
    # The top folder is listed here; each folder below it is walked, stat'ed and compared with
    # its stored keys by a worker meanwhile (a re-scan of a big tree is a stat and a stored key
    # per file: split between the cores, and only the differences come back). This thread
    # compares the top folder's files and whatever is stored outside the folders listed.
    folders: list[str] = []
    unreadable: list[tuple[str, str]] = []
    here = list(listed(settings.watch_dir, matcher, "", folders, unreadable))
    below = diff_folders(pool, settings.watch_dir, matcher, store, folders)
    seen, changed, gone, _, links = diff_listing(store.stat_keys(outside=folders), here, unreadable)
    for part in below:
        seen += part.seen
        changed += part.changed
        gone += part.gone
        unreadable += part.unreadable
        links += part.links
    return Diff(seen, changed, gone, tuple(unreadable), links)


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

    Returns the summary and the database counts afterwards. Raises :class:`WatchDirError` for a
    missing watch dir before creating anything, and :class:`~watcher.errors.AlreadyRunningError`
    while a daemon (or another scan) holds the database: two writers judging the same paths
    could commit an older verdict over a newer one, and the daemon keeps the database current.
    """
    if not settings.watch_dir.is_dir():
        raise WatchDirError(f"{settings.watch_dir}: watch directory does not exist or is not a directory")
    lock_fd = acquire(settings.db_path, "scan")
    try:
        summary, counts = _scan_locked(settings, progress)
    finally:
        os.close(lock_fd)
    log.info(
        "scan_done", seen=summary.seen, read=summary.read, scored=summary.scored, rejected=summary.rejected,
        removed=summary.removed, seconds=round(summary.seconds, 3), **counts,
    )  # fmt: skip
    return summary, counts


def _scan_locked(settings: Settings, progress: Progress | None) -> tuple[Summary, dict[str, Any]]:
    store = Store.from_settings(settings)
    try:
        # This process has a single thread here: workers may be forked directly.
        with WorkerPool(JudgeOptions.from_settings(settings), settings.worker_count, "fork") as pool:
            summary = reconcile(store, settings, progress=progress, pool=pool, alone=True)
        with report_process("fork") as html_in:
            refresh_reports(store, settings, summary.changed, html_in, meanwhile=store.checkpointing)
        counts = store.counts()
    finally:
        store.close()
    return summary, counts
