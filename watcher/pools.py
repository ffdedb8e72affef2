"""Worker processes: judging files and walking folders on every core.

A :class:`WorkerPool` starts its processes on first use. How they start is the caller's choice:
``fork`` from a process with a single thread (``watcher scan``), where workers start at once, or
``forkserver`` from a process with threads (the daemon), where forking is unsafe and workers come
from a server process that imported this module once.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import partial
from itertools import chain
from multiprocessing import forkserver, resource_tracker, synchronize, util
from pathlib import Path
from typing import Any, Literal, Self, TypeVar

from watcher.judge import JudgeOptions, judge_many
from watcher.lifeline import die_with_parent, signals_held, start_quiet_resource_tracker
from watcher.outcomes import Job, Outcome
from watcher.store import Store
from watcher.tree import Diff, Matcher, diff_listing, listed

StartMethod = Literal["fork", "forkserver"]
T = TypeVar("T")

#: Below this many files to read, worker processes cost more to start than they save.
POOL_MIN_FILES = 200
#: With a pool kept for every burst (the daemon's), a batch this big is worth sending to it: judging
#: it in the writer thread would take the core (and the GIL) the observer needs during a burst.
WARM_POOL_MIN_FILES = 16
#: Worker processes run this much nicer than the writer (see ``_init_worker``).
WORKER_NICE = 5


class CountedExecutor(ProcessPoolExecutor):
    """A process pool that counts itself open from creation to shutdown, so that
    :func:`release_helpers` knows when no pool needs the fork server and the resource tracker.

    A helper that cannot be started is a broken pool, like a helper that died: ``submit`` (which
    starts the processes, from a fork server) raises :class:`BrokenProcessPool` when the fork
    server is gone (killed: a control-group stop signals every process at once) instead of the
    ``EOFError`` or ``OSError`` it met, and every caller already replaces a broken pool.
    """

    _lock = threading.Lock()
    open_count = 0

    def __init__(self, **kwargs: Any) -> None:
        with CountedExecutor._lock:  # creating one starts the helpers: never while they are stopped
            context = kwargs.get("mp_context")
            if context is None or context.get_start_method() != "fork":
                start_quiet_resource_tracker()  # its queues register with the tracker: a quiet one
            super().__init__(**kwargs)
            CountedExecutor.open_count += 1
        self._counted = True

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Schedule ``fn``; :class:`BrokenProcessPool` when its process cannot be started."""
        try:
            with signals_held():  # it may start the fork server, or a process (see signals_held)
                return super().submit(fn, *args, **kwargs)
        except (EOFError, OSError) as exc:  # the fork server died under us (see the class doc)
            with contextlib.suppress(Exception):
                self.shutdown(wait=False, cancel_futures=True)
            raise BrokenProcessPool(f"a helper process could not be started: {exc!r}") from None

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop the processes; the first call counts the pool closed."""
        super().shutdown(wait=wait, cancel_futures=cancel_futures)
        with CountedExecutor._lock:
            if self._counted:
                self._counted = False
                CountedExecutor.open_count -= 1


def _semaphores_open() -> bool:
    """True while a semaphore of a pool (its queues' locks) still exists in this process."""
    cleanup = synchronize.SemLock._cleanup  # type: ignore[attr-defined]
    return any(getattr(f, "_callback", None) is cleanup for f in list(util._finalizer_registry.values()))  # type: ignore[attr-defined]


def release_helpers() -> bool:
    """Stop the fork server and the resource tracker (processes of their own, started with the
    first ``forkserver`` pool) when no pool is open; the next pool starts them again. True when
    nothing is left running; False when something still needs them (call again later).

    The tracker is stopped only once no pool's semaphore is left in this process: a tracker
    stopped with some still listed unlinks them as leaked, and their owner's own clean-up then
    fails (``Exception ignored in: <Finalize object, dead>`` ... ``FileNotFoundError`` on stderr).
    A pool shut down without waiting keeps its queues until its last thread is done."""
    with CountedExecutor._lock:
        if CountedExecutor.open_count:
            return False
        stop = getattr(forkserver._forkserver, "_stop", None)  # private, in every CPython since 3.8
        if stop is not None:
            with contextlib.suppress(OSError, ChildProcessError):
                stop()
        gc.collect()  # a closed pool's semaphores go (and leave the tracker's list) when freed
        if _semaphores_open():
            return False
        stop = getattr(resource_tracker._resource_tracker, "_stop", None)
        if stop is not None:
            with contextlib.suppress(OSError, ChildProcessError):
                stop()
    return True


def _context(start_method: StartMethod) -> multiprocessing.context.BaseContext:
    ctx = multiprocessing.get_context(start_method)
    if start_method == "forkserver":
        # The judge and its imports, once, in the server; and the server dies with its parent.
        ctx.set_forkserver_preload(["watcher.forkserver_init", __name__])
    return ctx


#: After this many pools in a row broke before finishing a batch, work stays in the caller's thread.
MAX_BREAKS = 3


class WorkerPool:
    """Processes that judge files (and walk folders) with ``opts``, started on first use.

    ``kept``: the pool lives on for later batches (the daemon's), so smaller batches are worth
    sending to it (:data:`WARM_POOL_MIN_FILES` instead of :data:`POOL_MIN_FILES`). A pool whose
    workers keep dying (a sandbox that kills them, memory that cannot hold them) is given up
    after :data:`MAX_BREAKS` breaks in a row: work then goes on in the caller's thread rather
    than never being done. Use from one thread.
    """

    def __init__(self, opts: JudgeOptions, workers: int, start_method: StartMethod, kept: bool = False) -> None:
        self.opts = opts
        self.workers = workers
        self.start_method: StartMethod = start_method
        self.min_files = WARM_POOL_MIN_FILES if kept else POOL_MIN_FILES
        self.breaks = 0  #: pools broken in a row, with no batch finished since
        self._executor: ProcessPoolExecutor | None = None

    @property
    def usable(self) -> bool:
        """True while there are workers to use: more than one, and not given up."""
        return self.workers > 1 and self.breaks < MAX_BREAKS

    def pays(self, n_jobs: int) -> bool:
        """True when ``n_jobs`` files are worth sending to the workers."""
        return self.usable and n_jobs >= self.min_files

    @property
    def started(self) -> bool:
        """True once the processes exist."""
        return self._executor is not None

    def executor(self) -> ProcessPoolExecutor:
        """The processes, started now if they are not yet."""
        if self._executor is None:
            self._executor = CountedExecutor(
                max_workers=self.workers,
                mp_context=_context(self.start_method),
                initializer=_init_worker,
                initargs=(self.opts,),
            )
        return self._executor

    def discard(self) -> bool:
        """Forget a broken pool (a worker was killed); the next use starts a new one. True when
        this break gives the pool up (:data:`MAX_BREAKS` in a row)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        self._executor = None
        self.breaks += 1
        return self.breaks == MAX_BREAKS

    def close(self, wait: bool = True) -> None:
        """Stop the processes (if any)."""
        if self._executor is not None:
            self._executor.shutdown(wait=wait, cancel_futures=True)
        self._executor = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


_worker_opts: JudgeOptions | None = None


def _init_worker(opts: JudgeOptions) -> None:
    # The options travel once per worker, not once per file.
    global _worker_opts
    _worker_opts = opts
    die_with_parent()  # never outlive the daemon or the scan (see watcher.lifeline)
    # Below the writer: with the workers and the writer sharing the cores, equal shares would
    # starve the one writer (the scan's bottleneck) while finished outcomes queue up; and a
    # daemon's observer thread stays ahead of a burst's parsing.
    os.nice(WORKER_NICE)


def _judge_in_worker(jobs: Sequence[Job]) -> list[Outcome]:
    assert _worker_opts is not None
    return judge_many(jobs, _worker_opts)


def judge_all(jobs: Sequence[Job], opts: JudgeOptions, pool: WorkerPool | None = None) -> Iterator[Outcome]:
    """Judge every job (see :data:`watcher.outcomes.Job`), outcomes in order: in ``pool``'s
    processes when it pays (:meth:`WorkerPool.pays`), else in this thread."""
    if pool is None or not pool.pays(len(jobs)):
        for start in range(0, len(jobs), 256):
            yield from judge_many(jobs[start : start + 256], opts)
        return
    size = min(256, max(8, len(jobs) // (pool.workers * 8)))  # a few chunks per worker, never tiny ones
    chunks = [jobs[start : start + size] for start in range(0, len(jobs), size)]
    yield from chain.from_iterable(pool.executor().map(_judge_in_worker, chunks))
    pool.breaks = 0  # a batch came back whole: the workers work


def diff_folders(pool: WorkerPool, root: Path, matcher: Matcher, store: Store, folders: list[str]) -> Iterator[Diff]:
    """Each folder's walk compared with its stored stat keys (:func:`watcher.tree.diff_listing`),
    in the workers; only the differences come back."""
    job = partial(_diff_folder, root, matcher, store.path, store.rules_version, store.target_recall)
    return pool.executor().map(job, folders)


_worker_stores: dict[tuple[Path, int, float | None], Store] = {}


def _diff_folder(
    root: Path, matcher: Matcher, db: Path, rules_version: int, target_recall: float | None, folder: str
) -> Diff:
    # In a worker process: one read-only connection per database, kept for the next folders.
    key = (db, rules_version, target_recall)
    store = _worker_stores.get(key)
    if store is None:
        store = _worker_stores[key] = Store.open_readonly(db, target_recall, rules_version)
    unreadable: list[tuple[str, str]] = []
    return diff_listing(store.stat_keys(folder), listed(root, matcher, folder, unreadable=unreadable), unreadable)


#: The HTML page's process runs this much nicer than the daemon: the page is the one big background
#: job (at a million models tens of seconds of CPU for each rewrite, 140 MB), and on a small
#: machine it must not take a core from the writer (change -> database), the workers or the table
#: files, which come first; it still has any core they leave idle.
PAGE_NICE = 10


def _page_process_start() -> None:
    die_with_parent()
    os.nice(PAGE_NICE)


def report_process(start_method: StartMethod) -> ProcessPoolExecutor:
    """One process for rendering the HTML page beside the other report files (started on first
    use), :data:`PAGE_NICE` below the daemon's priority."""
    return CountedExecutor(max_workers=1, mp_context=_context(start_method), initializer=_page_process_start)
