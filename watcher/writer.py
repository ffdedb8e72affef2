"""The writer thread: the one thread that opens, writes and closes the database.

It takes filesystem events from a bounded queue (filled by :class:`watcher.watch.observe.QueueHandler`),
decides with :mod:`watcher.tracker` when each file is finished, judges ready files with the same
code as ``watcher scan``, writes outcomes in batches (one transaction each), and runs
reconciles: at start, periodically, after a queue overflow, and for folders that appear or move.
When the database fails (an I/O error, a full disk), the connection is dropped and the database
opened anew, with the whole tree reconciled into it, before anything else is judged.
"""

from __future__ import annotations

import contextlib
import math
import os
import queue
import socket
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from watcher.apply import apply_in_batches
from watcher.config import Settings
from watcher.errors import StoreError, WatchDirError
from watcher.judge import JudgeOptions
from watcher.links import Links
from watcher.logs import get_logger
from watcher.metrics import Stats
from watcher.mirror import Applied
from watcher.outcomes import stored_path
from watcher.pools import WorkerPool, judge_all, release_helpers
from watcher.reconcile import reconcile
from watcher.retention import WAL_LIMIT, HistoryTrimmer
from watcher.store import Store, transient
from watcher.timestamps import now_iso
from watcher.tracker import Kind, Tracker, settle_key
from watcher.tree import Matcher, relpath
from watcher.watch.observe import Event

log = get_logger("watcher.writer")

#: Trimming old history (watcher.retention): the first slice this long after the start, then one
#: slice a second while the walk goes on, and a new walk a minute after one ends.
TRIM_FIRST, TRIM_STEP, TRIM_PAUSE = 10.0, 1.0, 60.0
#: The longest the writer waits for readers when the log is past its limit (seconds): longer than
#: the longest read seen in the soak (the report page's, 1-2 s at 200,000 history entries under
#: load), since a read begun after the log was copied in no longer holds it.
WAL_WAIT_MAX = 3.0
#: Seconds without a change (and with nothing in flight) after which the log is checkpointed.
IDLE_CHECKPOINT = 1.0
#: How often the database path is compared with the file the writer has open.
DB_CHECK_INTERVAL = 2.0
#: While the database fails (an I/O error, a full disk), it is opened again after this many
#: seconds, doubling up to RETRY_MAX; back to RETRY_FIRST once a checkpoint (a sync) succeeds.
RETRY_FIRST = 0.5
RETRY_MAX = 5.0
#: Within this many seconds of the last ``database_error`` line, a new failure is logged at debug
#: only: a disk that fails now and then gives a line a minute at most, not one per retry.
ERROR_LOG_INTERVAL = 60.0

_KINDS: dict[str, Kind] = {
    "created": "created",
    "modified": "modified",
    "attrib": "attrib",
    "opened": "opened",
    "closed": "closed",
    "closed_no_write": "closed_nowrite",
    "deleted": "deleted",
}


class Trouble:
    """The database failing, as the log tells it: one ``database_error`` line when it starts to
    fail (at most one per ``ERROR_LOG_INTERVAL``), ``database_back`` when it works again."""

    def __init__(self, db: str) -> None:
        self.db = db
        self.since: float | None = None  # monotonic time of the first failure of this spell
        self.logged = False  # this spell's database_error went out at error level
        self.last_logged = -math.inf
        self.error = ""  # the last failure's message

    def failed(self, exc: BaseException, **fields: Any) -> None:
        """A failure: logged at error level once per spell, at debug afterwards."""
        now = time.monotonic()
        self.error = str(exc)
        if self.since is None:
            self.since = now
            self.logged = now - self.last_logged >= ERROR_LOG_INTERVAL
            if self.logged:
                self.last_logged = now
                log.error(
                    "database_error", db=self.db, error=str(exc), **fields,
                    hint="the work is kept; opening the database again until it works",
                )  # fmt: skip
                return
        log.debug("database_retry", error=str(exc), **fields)

    def ok(self) -> None:
        """The database works again (opened, written, the tree reconciled into it)."""
        if self.since is None:
            return
        seconds = round(time.monotonic() - self.since, 3)
        (log.warning if self.logged else log.debug)("database_back", db=self.db, after_seconds=seconds)
        self.since = None


class Writer(threading.Thread):
    """The one thread that opens, writes and closes the database.

    ``events`` come from the observer; ``overflow`` is set when some were dropped (a full
    reconcile follows), ``rewatched`` when the watch dir is watched anew; ``on_change()`` is
    called after each commit that changed the report or the rejections; ``stop`` ends the loop;
    ``observer_status()`` gives columns of the status row the observer keeps (the poller's pace).

    The worker processes start when a batch is worth them and stop once the writer has had nothing
    to do for ``worker_idle_seconds`` (with the fork server and resource tracker, when the report
    thread's process is closed too): an idle daemon is one process.
    """

    def __init__(
        self,
        settings: Settings,
        events: queue.Queue[Event],
        stop: threading.Event,
        observer: str,
        overflow: threading.Event | None = None,
        rewatched: threading.Event | None = None,
        on_change: Callable[[], None] = lambda: None,
        observer_status: Callable[[], dict[str, Any]] = dict,
        trouble: Trouble | None = None,
        history_floor: Callable[[], int | None] = lambda: None,
    ) -> None:
        super().__init__(name="watcher-writer", daemon=True)
        self.settings = settings
        self.events = events
        self.stop_event = stop
        self.overflow = overflow or threading.Event()
        self.rewatched = rewatched or threading.Event()
        self.on_change = on_change
        self.observer_status = observer_status
        self.ready = threading.Event()
        self.observer_name = observer
        self.tick = time.monotonic()
        self.failed: BaseException | None = None
        self.tracker = Tracker(settings.settle_seconds, settings.max_write_seconds)
        self.matcher = Matcher.from_settings(settings)
        self.opts = JudgeOptions.from_settings(settings)
        self.root = settings.watch_dir
        #: Links inside the tree by target: an event on a file is an event on the links to it too.
        self.links = Links(self.root)
        self.subtrees: dict[str, float] = {}
        self.next_reconcile = 0.0
        self.last_status = 0.0
        self.last_event_at: float | None = None  # time.time(): formatted only when the status is written
        self.last_change: float | None = None  # monotonic time of a commit not yet checkpointed
        self.next_db_check = 0.0
        self.watch_dir_unreadable = False
        self.last_work = time.monotonic()
        self.store: Store | None = None
        self.trouble = trouble or Trouble(str(settings.db_path))
        #: A write, commit or sync failed on this connection: it is not trusted again. The
        #: database is opened anew and the whole tree reconciled into it first (a sync that
        #: failed once and then "succeeds" may have dropped the pages it was to write).
        self.suspect = False
        self.retry_at = 0.0
        self.retry_delay = RETRY_FIRST
        self.fresh_status = True  # the status row is written whole at the next open
        self.last_error: BaseException | None = None
        # Bounded storage (watcher.retention): history trimmed a slice at a time, never at or past
        # the fleet shipper's mark; the write-ahead log truncated once it passes WAL_LIMIT.
        self.history_floor = history_floor
        self.trimmer = HistoryTrimmer(settings.history_keep_days)
        self.next_trim = time.monotonic() + TRIM_FIRST
        self.wal_wait = 0.1  # how long the log's truncation waits for readers (see step)
        self.stats = Stats()  # what watcher.metrics reports, counted where it happens
        self.new_settings: Settings | None = None  # from a reload (watcher.lifecycle), taken in step()
        # Kept for every burst; forked from a server, since this process has threads.
        self.pool = WorkerPool(self.opts, settings.worker_count, "forkserver", kept=True)

    def run(self) -> None:
        """Thread body: any unexpected exception ends the thread; the supervisor then exits non-zero."""
        try:
            self._run()
        except StoreError as exc:  # a database it may not use at all (found before the daemon's check)
            self.failed = exc
            log.error("writer_failed", error=str(exc))
        except BaseException as exc:
            self.failed = exc
            log.exception("writer_failed")

    def _run(self) -> None:
        try:
            # The first open, status and reconcile: a failing or full disk is waited out (READY
            # comes once the database works); a database it may not use at all ends the thread.
            self.suspect = True
            while self.suspect and not self.stop_event.is_set():
                self.tick = time.monotonic()
                if time.monotonic() >= self.retry_at:
                    self._recover(starting=True)
                elif self.stop_event.wait(self.retry_at - time.monotonic()):
                    return
            if self.stop_event.is_set():
                return
            self.ready.set()
            while not self.stop_event.is_set():
                self.step()
            self._stopped()
        finally:
            self._close()
            self.pool.close(wait=False)

    def _stopped(self) -> None:
        if self.store is None or self.suspect:
            return  # the database does not work now: its status row says when the heartbeat stopped
        try:
            self.store.set_status(stopped_at=now_iso(), heartbeat_at=now_iso())
        except StoreError as exc:
            log.debug("status_not_written", error=str(exc))

    def _open(self) -> None:
        self.store = Store.from_settings(self.settings)
        if not self.fresh_status:  # opened again after a failure: the same run goes on
            self.store.set_status(pid=os.getpid(), heartbeat_at=now_iso())
            return
        self.store.set_status(
            pid=os.getpid(), host=socket.gethostname(), observer=self.observer_name, started_at=now_iso(),
            watch_dir=str(self.settings.watch_dir), stopped_at=None, heartbeat_at=now_iso(), files_scored=0,
            files_rejected=0, files_removed=0,
        )  # fmt: skip
        self.fresh_status = False

    def _close(self) -> None:
        store, self.store = self.store, None
        if store is not None:
            with contextlib.suppress(StoreError):  # its last checkpoint may fail on a failing disk
                store.close()

    def _write_failed(self, exc: BaseException, **fields: Any) -> None:
        """A read, write, commit or sync of the database failed: logged (once per spell), and this
        connection is not trusted again (see ``suspect``)."""
        self.trouble.failed(exc, retry_in=self.retry_delay, **fields)
        self.stats.database_error()
        self.last_error = exc
        if not self.suspect:
            self.suspect = True
            self.retry_at = time.monotonic() + self.retry_delay
            self.retry_delay = min(self.retry_delay * 2, RETRY_MAX)

    def _recover(self, starting: bool = False) -> None:
        """Open the database anew and reconcile the whole tree into it; on a failure, try again
        after a while (the work is kept: the tracker holds the pending files, the reconcile finds
        the rest). At start, an error that waiting does not mend is raised."""
        self._close()
        self.suspect = False  # until it fails again: a failure then schedules the next try
        try:
            self._open()
            done = self._reconcile("")
        except StoreError as exc:
            self._write_failed(exc)
            done = False
        if not done:
            self._close()
            error = self.last_error
            if starting and error is not None and not transient(error):
                if isinstance(error.__cause__, sqlite3.Error):  # SQLite's message alone: name the database
                    raise StoreError(f"{self.settings.db_path}: {error}") from None
                raise error
            return
        self.trouble.ok()

    def _rebuild(self) -> None:
        # The database file was removed (or replaced) under the daemon: what it wrote went into a
        # file no reader can find. The folder is the source of truth: open the database anew
        # (created when missing) and reconcile the whole tree into it.
        assert self.store is not None
        log.error("database_gone", db=str(self.settings.db_path), hint="rebuilding it from the watch dir")
        old, self.store = self.store, None
        with contextlib.suppress(StoreError):
            old.close()
        old.forget_companions()
        self.pool.discard()  # its workers may hold read-only connections to the old file
        self.fresh_status = True
        self._recover()
        self.on_change()  # the reports follow the new database

    # -- one turn of the loop ------------------------------------------------------------------

    def step(self) -> None:
        """Take the events that are there (waiting until the next deadline), judge what is ready,
        run due reconciles, and write the status when due."""
        now = time.monotonic()
        self.tick = now
        if self.new_settings is not None:
            self._take_settings(self.new_settings)
        batch = self._drain(self._timeout(now))
        now = time.monotonic()
        for event in batch:
            self._feed(event, now)
        if self.suspect:
            # The database failed: nothing is judged until it is opened anew and reconciled.
            # Events still go to the tracker, which keeps the files in flight meanwhile.
            if now >= self.retry_at:
                self._recover()
            if self.suspect:
                return
            self.on_change()
            self.last_change = now  # the recovered database is checkpointed (a sync) once idle
        if self.overflow.is_set():
            self.overflow.clear()
            log.warning("event_queue_overflow", hint="events were dropped; reconciling the whole tree")
            self.stats.overflows += 1
            self.next_reconcile = now
        if self.rewatched.is_set():
            # The watch dir is watched anew: events from around the switch are half a story (an
            # open whose close went to the old watch would hold a file back for max_write_seconds).
            # Start the tracker afresh and let a full reconcile look at every file.
            self.rewatched.clear()
            self.tracker = Tracker(self.settings.settle_seconds, self.settings.max_write_seconds)
            self.next_reconcile = now
        ready = self.tracker.ready(now, lambda rel: settle_key(os.path.join(self.root, rel)), time.time())
        if ready:
            self._judge(ready)
        for sub, due in list(self.subtrees.items()):
            if due <= now and not self.suspect:
                del self.subtrees[sub]
                self._reconcile(sub)
        if now >= self.next_reconcile and not self.suspect:
            self._reconcile("")
        if now - self.last_status >= 5.0 and not self.suspect:
            self._status()
        idle_since = self.last_change
        if idle_since is not None and now - idle_since >= IDLE_CHECKPOINT and self.idle() and not self.suspect:
            self._checkpoint()
        elif idle_since is not None and not self.suspect and self._wal_bytes() > WAL_LIMIT:
            # Changes keep coming: the log is not emptied at the end of a burst, and readers keep
            # SQLite's own checkpoints from starting it again. Past its limit, truncate it now
            # (a stat per turn: microseconds beside the turn's commit), waiting longer for the
            # readers each time they held on (0.1 s, doubling to WAL_WAIT_MAX): under load a
            # reader is nearly always in the middle of a read, and the log would only grow (the
            # two-hour soak's log reached 526 MiB against a 64 MiB limit with a 0.1 s wait).
            if self._checkpoint(self.wal_wait):
                self.wal_wait = 0.1
            else:
                self.wal_wait = min(self.wal_wait * 2, WAL_WAIT_MAX)
        if now >= self.next_trim and not self.suspect:
            self._trim(now)
        if now >= self.next_db_check:
            self.next_db_check = now + DB_CHECK_INTERVAL
            if self.store is not None and self.store.moved_away():
                self._rebuild()
        if self.pool.started and now - self.last_work >= self.settings.worker_idle_seconds and self.idle():
            self.pool.close()
            stopped = release_helpers()
            log.info("workers_stopped", idle_seconds=self.settings.worker_idle_seconds, helpers_stopped=stopped)

    def _take_settings(self, new: Settings) -> None:
        # A reload: the new filters and judging options, and a full reconcile now, which judges
        # again every file stored under another target (or other extra targets or pickers: another
        # rules version) and finds what the new patterns select.
        opts = JudgeOptions.from_settings(new)
        rescore = new.target_recall != self.settings.target_recall or opts.rules_version != self.opts.rules_version
        if opts != self.opts:
            self.pool.close(wait=False)
            self.pool = WorkerPool(opts, new.worker_count, "forkserver", kept=True)
        self.settings, self.opts, self.matcher = new, opts, Matcher.from_settings(new)
        if self.store is not None:
            self.store.target_recall = new.target_recall
            self.store.rules_version = opts.rules_version
        self.next_reconcile = time.monotonic()
        self.new_settings = None
        log.info("settings_taken", rescore=rescore)

    def _timeout(self, now: float) -> float:
        if self.suspect:
            return max(0.0, min(self.retry_at, now + 1.0) - now)
        deadlines = [self.next_reconcile, now + 1.0, *self.subtrees.values()]
        tracked = self.tracker.next_deadline(now)
        if tracked is not None:
            deadlines.append(tracked)
        return max(0.0, min(deadlines) - now)

    def _drain(self, timeout: float) -> list[Event]:
        try:
            first = self.events.get(timeout=timeout) if timeout > 0 else self.events.get_nowait()
        except queue.Empty:
            return []
        batch = [first]
        # Take what is already there, but a bounded amount, so a burst is judged as it goes.
        while len(batch) < 20 * self.settings.batch_size:
            try:
                batch.append(self.events.get_nowait())
            except queue.Empty:
                break
        return batch

    def _feed(self, event: Event, now: float) -> None:
        kind, src, dest, is_dir = event
        rel_src = relpath(self.root, src)
        rel_dest = relpath(self.root, dest) if dest else None
        if self.matcher.own and rel_src is not None and rel_dest is None and self.matcher.owned(rel_src):
            return  # the database's or the reports' own writes (inside the watch dir): not an event
        self.last_event_at = time.time()
        if is_dir:
            # A folder created, moved or deleted: look at its whole subtree rather than trust
            # per-file events (files may land in it before its watch is added).
            for rel, delay in ((rel_src, 0.0 if kind != "created" else 0.05), (rel_dest, 0.05)):
                if rel is not None and (rel == "" or self.matcher.descends(rel)):
                    self.subtrees[rel] = min(self.subtrees.get(rel, now + delay), now + delay)
            return
        if kind == "moved":
            if rel_src is not None:
                self._feed_path("deleted", rel_src, now)
            if rel_dest is not None:
                self._feed_path("moved_in", rel_dest, now)
            return
        mapped = _KINDS.get(kind)
        if mapped is not None and rel_src is not None:
            self._feed_path(mapped, rel_src, now)

    def _feed_path(self, kind: Kind, rel: str, now: float) -> None:
        # The links to a file follow it: its writes, closes and deletion are theirs too (the
        # kernel names only the file). A link's target need not be a tracked name.
        if self.matcher.tracks(rel):
            self.tracker.feed(kind, rel, now)
        for link in self.links.to(rel):
            self.tracker.feed(kind, link, now)

    # -- work ------------------------------------------------------------------------------------

    def _judge(self, paths: list[str]) -> None:
        assert self.store is not None
        self.last_work = time.monotonic()
        try:
            known = self.store.known_paths(paths)
            jobs = [(rel, k.reusable_sha if (k := known.get(rel)) is not None else None, False) for rel in paths]
            outcomes = judge_all(jobs, self.opts, self.pool)
            apply_in_batches(self.store, outcomes, self.settings.batch_size, self._applied)
            for rel in paths:  # a link made, removed or pointed elsewhere since the last look
                self.links.note(rel)
        except BrokenProcessPool:
            # A worker died (killed, out of memory): start a new pool and judge these again.
            log.error("worker_pool_broken", pending=len(paths))
            self._discard_pool()
            now = time.monotonic()
            for rel in paths:
                self.tracker.feed("moved_in", rel, now)
        except StoreError as exc:
            # Disk full or failing, read-only, locked for longer than the busy timeout: keep the
            # work, and retry on a connection opened anew.
            now = time.monotonic()
            for rel in paths:
                self.tracker.feed("moved_in", rel, now)
            self._write_failed(exc, pending=len(paths))

    def _applied(self, applied: Applied, n: int) -> None:
        self.tick = time.monotonic()
        if applied.changed:
            self.last_change = self.tick
            self.on_change()
        assert self.store is not None
        self.store.add_counts(len(applied.scored), len(applied.rejected), len(applied.removed))
        self.stats.database_ok()
        self.stats.outcomes(len(applied.scored), len(applied.rejected), len(applied.removed))

    def _reconcile(self, under: str) -> bool:
        """Reconcile ``under`` ('' for the whole tree); False when the database failed meanwhile."""
        assert self.store is not None
        now = self.last_work = time.monotonic()
        if not under:
            # With polling, the sweep compares every folder with the database all the time, at
            # its own pace: a periodic full reconcile would only repeat it at full speed.
            periodic = math.inf if self.observer_name == "polling" else self.settings.reconcile_interval
            self.next_reconcile = now + periodic
        try:
            # A new folder's files may have been written before its watch existed: they get only a
            # synthetic 'created', and would wait settle_seconds. Its reconcile judges them now,
            # deferring only to files a writer is known to hold open. The full reconcile leaves every
            # file with pending events to the tracker.
            skip = self._writing_or_just_created if under else self.tracker.busy
            summary = reconcile(self.store, self.settings, under, progress=self._progress, skip=skip, pool=self.pool)
        except WatchDirError as exc:
            # A missing one is reported once by the supervisor (observe.RootWatch), which has it
            # reconciled once back; one that is there but cannot be read is reported here, once.
            unreadable = self.settings.watch_dir.is_dir()
            if unreadable and not self.watch_dir_unreadable:
                log.error("watch_dir_unreadable", error=str(exc), hint="stored results are kept")
            self.watch_dir_unreadable = unreadable
            log.debug("reconcile_skipped", under=stored_path(under) or ".", error=str(exc))
            return True
        except StoreError as exc:
            # What was not applied is found by the reconcile that follows the database's reopening.
            self._write_failed(exc, under=stored_path(under) or ".")
            return False
        except BrokenProcessPool:
            # A worker died while walking or judging (killed, out of memory): a new pool, and
            # the whole tree again soon (what this reconcile did not apply is still to do).
            log.error("worker_pool_broken", under=stored_path(under) or ".", retry_in=5.0)
            self._discard_pool()
            self.next_reconcile = min(self.next_reconcile, now + 5.0)
            return True
        self.watch_dir_unreadable = False
        self.links.listed(under, summary.links)
        if under:
            # A folder that appeared, moved or went: the links into it from elsewhere are judged
            # again (their targets need not be tracked names: what changed is not in the summary).
            for link in self.links.into(under):
                self.tracker.feed("moved_in", link, now)
        self.stats.reconciled(summary.seconds, full=not under)
        self.stats.outcomes(summary.scored, summary.rejected, summary.removed)
        if summary.changed:
            self.last_change = time.monotonic()
            # Outcomes applied by a reconcile (the start-up one above all) are events too: without
            # this, status showed no last event while counting the files just scored.
            self.last_event_at = time.time()
            self.on_change()
        log.info(
            "reconcile_done", under=stored_path(under) or ".", seen=summary.seen, read=summary.read,
            scored=summary.scored, rejected=summary.rejected, removed=summary.removed,
            seconds=round(summary.seconds, 3),
        )  # fmt: skip
        if not under:
            try:
                self.store.set_status(last_reconcile_at=now_iso())
            except StoreError as exc:
                self._write_failed(exc)
                return False
        return True

    def _discard_pool(self) -> None:
        if self.pool.discard():
            log.error(
                "worker_pool_given_up", breaks=self.pool.breaks,
                hint="worker processes keep dying (killed by a sandbox or out of memory?); judging in this process",
            )  # fmt: skip

    def _writing_or_just_created(self, rel: str) -> bool:
        # For a new folder's reconcile: besides files a writer holds open, an empty file modified
        # within settle_seconds is most likely created but not yet written, its events still in
        # the queue. Judged now it would be logged and stored as a rejection ("file is empty")
        # moments before its close event has it scored. The tracker takes it instead: judged on
        # that close, or once it stayed unchanged for settle_seconds (an empty file is rejected then).
        if self.tracker.writing(rel):
            return True
        try:
            st = os.stat(os.path.join(self.root, rel))
        except OSError:
            return False
        recent = time.time() - st.st_mtime < self.settings.settle_seconds
        # With polling no close event ever comes: any file written within settle_seconds may still
        # be open, and is left to the settle rule like every other file the poller finds.
        if recent and (st.st_size == 0 or self.observer_name == "polling"):
            self.tracker.feed("created", rel, time.monotonic())
            return True
        return False

    def _progress(self, done: int, total: int) -> None:
        self.tick = time.monotonic()

    def idle(self) -> bool:
        """True when no event waits and no file is in flight: a burst is over (any thread may ask)."""
        return self.events.empty() and not self.tracker.states

    def _checkpoint(self, wait: float = 0.1) -> bool:
        # A burst is over: bring the main database file up to date and empty the log (otherwise
        # that happens only every wal_autocheckpoint pages, and a copy of the main file, or a
        # reader of it alone, would lag behind for long stretches).
        assert self.store is not None
        try:
            done = self.store.checkpoint(wait)
        except StoreError as exc:
            # A failed sync above all: what it was to write may be lost whatever a retry says.
            self._write_failed(exc)
            return False
        if done:
            self.last_change = None
            self.retry_delay = RETRY_FIRST  # the disk syncs again
            log.debug("wal_checkpointed")
        else:
            self.last_change = time.monotonic()  # a reader held an older state: later
        return done

    def _wal_bytes(self) -> int:
        try:
            return os.stat(f"{self.settings.db_path}-wal").st_size
        except OSError:
            return 0

    def _trim(self, now: float) -> None:
        """One slice of old history entries trimmed (watcher.retention); the next one in a second
        while the walk goes on, else in a minute."""
        assert self.store is not None
        try:
            done = self.trimmer.step(self.store, self.history_floor())
        except StoreError as exc:
            self._write_failed(exc)
            return
        self.next_trim = now + (TRIM_PAUSE if done is None or done.wrapped else TRIM_STEP)
        if done is not None and done.deleted:
            log.debug("history_trimmed", deleted=done.deleted, ids=f"{done.start}-{done.end - 1}")

    def _status(self) -> None:
        assert self.store is not None
        self.last_status = time.monotonic()
        try:
            last = None if self.last_event_at is None else now_iso(self.last_event_at)
            self.store.set_status(heartbeat_at=now_iso(), last_event_at=last, **self.observer_status())
        except StoreError as exc:
            self._write_failed(exc)
            return
        self.stats.database_ok()
