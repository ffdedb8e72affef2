"""Worker pools: judging in other processes gives what judging here gives, in order."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import pytest

from testing.helpers import doc, wait_until, write
from watcher.config import Settings
from watcher.judge import JudgeOptions
from watcher.outcomes import Job
from watcher.pools import (
    MAX_BREAKS,
    PAGE_NICE,
    POOL_MIN_FILES,
    WARM_POOL_MIN_FILES,
    WORKER_NICE,
    WorkerPool,
    _judge_in_worker,
    judge_all,
    release_helpers,
    report_process,
)


@pytest.fixture
def s(make_settings: Any) -> Settings:
    settings: Settings = make_settings()
    return settings


class CountingPool(WorkerPool):
    """A real pool that counts how often its processes were asked for."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.asked = 0

    def executor(self) -> ProcessPoolExecutor:
        self.asked += 1
        return super().executor()


def test_a_kept_pool_takes_small_batches_and_outcomes_keep_their_order(s: Settings) -> None:
    opts = JudgeOptions.from_settings(s)
    for i in range(WARM_POOL_MIN_FILES):
        write(s.watch_dir / f"{i:02}.json", doc() if i % 3 else "{bad")
    jobs: list[Job] = [(f"{i:02}.json", None, True) for i in range(WARM_POOL_MIN_FILES)]
    with CountingPool(opts, 2, "fork", kept=True) as pool:
        from_pool = list(judge_all(jobs, opts, pool))
        assert pool.asked == 1  # the batch went to the workers
        assert list(judge_all(jobs[:-1], opts, pool)) == from_pool[:-1]
        assert pool.asked == 1  # one file fewer: judged in this thread
    assert from_pool == list(judge_all(jobs, opts))
    assert [type(o).__name__ for o in from_pool[:4]] == ["Rejected", "Scored", "Scored", "Rejected"]


def test_a_one_shot_pool_starts_only_for_a_big_batch(s: Settings) -> None:
    opts = JudgeOptions.from_settings(s)
    with CountingPool(opts, 2, "fork") as pool:
        assert not pool.pays(POOL_MIN_FILES - 1) and pool.pays(POOL_MIN_FILES)
        list(judge_all([("absent.json", None, False)] * WARM_POOL_MIN_FILES, opts, pool))
        assert (pool.asked, pool.started) == (0, False)
    assert not WorkerPool(opts, 1, "fork", kept=True).pays(10**6)  # one worker: never worth it


def test_workers_run_nicer_than_the_writer(s: Settings) -> None:
    with WorkerPool(JudgeOptions.from_settings(s), 1, "fork") as pool:
        assert pool.executor().submit(os.nice, 0).result() == min(19, os.nice(0) + WORKER_NICE)


def test_a_discarded_pool_starts_anew_on_next_use(s: Settings) -> None:
    with WorkerPool(JudgeOptions.from_settings(s), 1, "fork") as pool:
        first = pool.executor()
        pool.discard()
        assert not pool.started and pool.executor() is not first


def test_a_worker_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    # A scan forks its workers; killed with -9, it cannot stop them, the kernel must.
    code = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from watcher.judge import JudgeOptions\n"
        "from watcher.pools import WorkerPool\n"
        "pool = WorkerPool(JudgeOptions(Path(sys.argv[1]), 0.85, 1000), 2, 'fork')\n"
        "pids = pool.executor().submit(os.getpid).result(), pool.executor().submit(os.getpid).result()\n"
        "print(*pids, flush=True)\n"
        "os.kill(os.getpid(), 9)\n"
    )
    with (tmp_path / "out").open("w") as out:  # a file, not a pipe: workers left alive would hold a pipe open
        proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], stdout=out, timeout=60)
    assert proc.returncode == -9
    workers = [int(p) for p in (tmp_path / "out").read_text().split()]
    wait_until(lambda: not any(running(p) for p in workers), timeout=20, what=f"workers {workers} to die")


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@pytest.mark.slow
def test_helpers_stop_only_once_no_pool_is_open(s: Settings) -> None:
    from multiprocessing import forkserver, resource_tracker

    write(s.watch_dir / "a.json", doc())
    pool = WorkerPool(JudgeOptions.from_settings(s), 2, "forkserver", kept=True)
    other = report_process("forkserver")
    try:
        list(pool.executor().map(_judge_in_worker, [[("a.json", None, True)]]))
        assert forkserver._forkserver._forkserver_pid is not None  # type: ignore[attr-defined]
        pool.close()
        assert release_helpers() is False  # the report's process is still open
        assert forkserver._forkserver._forkserver_pid is not None  # type: ignore[attr-defined]
    finally:
        other.shutdown()
    assert release_helpers() is True
    assert forkserver._forkserver._forkserver_pid is None  # type: ignore[attr-defined]
    assert resource_tracker._resource_tracker._pid is None  # type: ignore[attr-defined]
    # and they come back with the next pool
    assert [type(o).__name__ for o in judge_all([("a.json", None, True)] * 20, pool.opts, pool)] == ["Scored"] * 20
    pool.close()
    assert release_helpers() is True


def test_the_page_process_runs_below_the_daemons_priority() -> None:
    """The HTML page's process is the big background job: niced, so that on a small machine the
    writer and the table files get a core before it does."""
    pool = report_process("forkserver")
    try:
        assert pool.submit(os.nice, 0).result(timeout=60) == min(19, os.nice(0) + PAGE_NICE)
    finally:
        pool.shutdown()
    assert release_helpers() is True


def test_the_resource_tracker_outlives_every_semaphore_of_a_pool() -> None:
    """A tracker stopped while a pool's semaphore still exists unlinks it as leaked; the
    semaphore's own finalizer then fails on stderr (``Exception ignored in: <Finalize object,
    dead>`` ... ``FileNotFoundError``). A pool shut down without waiting keeps its queues for a while."""
    from multiprocessing import resource_tracker

    pool = report_process("forkserver")
    assert pool.submit(os.getpid).result(timeout=60) != os.getpid()
    queue = pool._call_queue  # type: ignore[attr-defined]  # what its last thread holds meanwhile
    pool.shutdown()
    assert release_helpers() is False  # the queue's semaphores are still there
    assert resource_tracker._resource_tracker._pid is not None  # type: ignore[attr-defined]
    unraisable: list[Any] = []
    saved, sys.unraisablehook = sys.unraisablehook, unraisable.append
    try:
        del queue
        gc.collect()
        assert release_helpers() is True
    finally:
        sys.unraisablehook = saved
    assert unraisable == []
    assert resource_tracker._resource_tracker._pid is None  # type: ignore[attr-defined]


def test_a_pool_whose_workers_keep_dying_is_given_up_and_work_goes_on_here(
    s: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(WARM_POOL_MIN_FILES):
        write(s.watch_dir / f"{i:02}.json", doc())
    jobs: list[Job] = [(f"{i:02}.json", None, True) for i in range(WARM_POOL_MIN_FILES)]
    opts = JudgeOptions.from_settings(s)
    monkeypatch.setattr("watcher.pools._init_worker", lambda _: os._exit(1))  # a sandbox killing workers
    with WorkerPool(opts, 2, "fork", kept=True) as pool:
        for attempt in range(1, MAX_BREAKS + 1):
            with pytest.raises(BrokenProcessPool):
                list(judge_all(jobs, opts, pool))
            assert pool.discard() == (attempt == MAX_BREAKS)
        assert not pool.usable and not pool.pays(len(jobs))
        assert [type(o).__name__ for o in judge_all(jobs, opts, pool)] == ["Scored"] * len(jobs)  # judged here
        assert not pool.started
