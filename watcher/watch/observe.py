"""Watching the folder: the watchdog observer, the handler that only enqueues, and noticing the
watch dir vanish and come back.

A watchdog handler that raises kills the observer thread, so :class:`QueueHandler` never does: it
puts each event on a bounded queue as a small tuple and flags an overflow when the queue is full.
"""

from __future__ import annotations

import errno
import os
import queue
import stat
import threading
from typing import Any

from watchdog.events import (
    DirAttribEvent,
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileClosedNoWriteEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileOpenedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import BaseObserver, EventEmitter, EventQueue, ObservedWatch

from watcher.config import Settings
from watcher.errors import StoreError
from watcher.judge import JudgeOptions
from watcher.logs import get_logger
from watcher.outcomes import StatKey
from watcher.store import Store
from watcher.tree import Matcher
from watcher.watch.poller import Poller

log = get_logger("watcher.observe")

#: Events held between the observer and the writer; beyond this, a reconcile replaces them.
QUEUE_MAX = 100_000
#: Every event the writer uses. A folder's own "modified" (watchdog sends one with every file
#: created, closed, moved or deleted in it) is not among them: the file's event says more, and
#: filtered at the observer it never costs the dispatch thread anything. Opens and no-write closes
#: are for the tracker's count of writers; a read of a file (an open and its no-write close, nothing
#: between) is left out where the kernel's events come in (:mod:`watcher.watch.inotify`).
EVENTS: list[type[FileSystemEvent]] = [
    FileCreatedEvent, DirCreatedEvent, FileModifiedEvent, FileAttribEvent, DirAttribEvent, FileDeletedEvent,
    DirDeletedEvent, FileMovedEvent, DirMovedEvent, FileOpenedEvent, FileClosedEvent, FileClosedNoWriteEvent,
]  # fmt: skip
_WANTED = frozenset(EVENTS)


def start_observer(settings: Settings, handler: FileSystemEventHandler) -> tuple[BaseObserver, str]:
    """Start an inotify observer (or the folder poller, :mod:`watcher.watch.poller`, when configured or
    when inotify is out of watches). With polling, the folders are recorded before this returns.

    A watch dir missing now is not watched yet: :class:`RootWatch` schedules it once it is there.
    """
    path = str(settings.watch_dir)
    present = os.path.isdir(path)
    if settings.observer == "inotify":
        try:
            from watcher.watch.inotify import PairingInotifyObserver

            # It leaves out reads of files (see there). Events the kernel dropped (its queue
            # overflowed) are repaired as those dropped from the handler's queue: by a reconcile.
            lost = handler.overflow.set if isinstance(handler, QueueHandler) else lambda: None
            inotify = PairingInotifyObserver(on_overflow=lost)
            if present:
                inotify.schedule(handler, path, recursive=settings.recursive, event_filter=EVENTS)
            inotify.start()
            return inotify, "inotify"
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EMFILE):
                raise
            sysctl = "fs.inotify.max_user_watches" if exc.errno == errno.ENOSPC else "fs.inotify.max_user_instances"
            log.error(
                "inotify_limit_reached", error=str(exc), fallback="polling",
                hint=f"raise it: sysctl -w {sysctl}=<larger> (and persist it in /etc/sysctl.d/)",
            )  # fmt: skip
    polling = FolderPollingObserver(settings)
    if present:
        polling.schedule(handler, path, recursive=settings.recursive, event_filter=EVENTS)
    polling.start()
    return polling, "polling"


#: One event as the writer takes it: (event_type, src_path, dest_path, is_directory).
Event = tuple[str, str, str, bool]


class QueueHandler(FileSystemEventHandler):
    """Puts each event on the queue, as a small tuple. Never blocks, never raises."""

    def __init__(self, events: queue.Queue[Event], overflow: threading.Event) -> None:
        self.events = events
        self.overflow = overflow

    def on_any_event(self, event: FileSystemEvent) -> None:
        """Enqueue; on a full queue, flag an overflow so the writer reconciles instead."""
        if type(event) not in _WANTED:  # whoever scheduled the observer, only EVENTS go through
            return
        item = (event.event_type, os.fsdecode(event.src_path), os.fsdecode(event.dest_path), event.is_directory)
        try:
            self.events.put_nowait(item)
        except queue.Full:
            self.overflow.set()


class RootWatch:
    """Notices the watch dir vanishing and coming back (deleted and recreated, unmounted and
    remounted). inotify stops watching a deleted directory, so when one is back, it is watched
    anew and ``rewatched`` is set (the writer then reconciles). While it is missing, stored
    results are kept: a vanished mount point is no evidence that the files were deleted. One
    missing from the start is reported at once, and watched once it appears."""

    def __init__(
        self, settings: Settings, observer: BaseObserver, handler: FileSystemEventHandler, rewatched: threading.Event
    ) -> None:
        self.settings, self.observer, self.handler, self.rewatched = settings, observer, handler, rewatched
        self.identity = self._identity()
        if self.identity is None:
            self._missing()

    def _identity(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.settings.watch_dir)
        except OSError:
            return None
        return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None

    def check(self) -> None:
        """Compare with the last look; re-watch and reconcile when a (new) directory is there."""
        now = self._identity()
        if now == self.identity:
            return
        self.identity = now
        if now is None:
            self._missing()
            return
        self.observer.unschedule_all()
        try:
            self.observer.schedule(
                self.handler, str(self.settings.watch_dir), recursive=self.settings.recursive, event_filter=EVENTS
            )
        except OSError as exc:  # gone again, or not readable: the next check tries again
            log.error("watch_dir_unwatchable", watch_dir=str(self.settings.watch_dir), error=str(exc))
            self.identity = None
            return
        self.rewatched.set()
        log.warning("watch_dir_back", watch_dir=str(self.settings.watch_dir))

    def _missing(self) -> None:
        log.error(
            "watch_dir_missing", watch_dir=str(self.settings.watch_dir),
            hint="stored results are kept; watching it once it is there",
        )  # fmt: skip


class FolderPollingEmitter(EventEmitter):
    """The watchdog emitter around a :class:`watcher.watch.poller.Poller` (one per watch), reading the database's
    stat keys from a read-only connection of its own."""

    def __init__(
        self,
        event_queue: EventQueue,
        watch: ObservedWatch,
        *,
        timeout: float = 1.0,
        event_filter: list[type[FileSystemEvent]] | None = None,
        settings: Settings,
        sweeping: threading.Event,
    ) -> None:
        super().__init__(event_queue, watch, timeout=timeout, event_filter=event_filter)
        self.settings = settings
        self.sweeping = sweeping  # the observer's: set once the start-up reconcile is done
        self.store: Store | None = None
        self.poller = Poller(
            os.fsdecode(watch.path), Matcher.from_settings(settings), self._stored, self.queue_event,
            settings.polling_interval, settings.polling_cpu_share,
        )  # fmt: skip

    def on_thread_start(self) -> None:
        """Runs in the thread that starts the observer, before it returns: the folders as they are
        now are the baseline, so nothing made after the start is missed. A watch scheduled anew
        (the watch dir came back) sweeps at once if sweeps have begun."""
        self.poller.discover()
        if self.sweeping.is_set():
            self.poller.start_sweeping()

    def _stored(self, folder: str) -> dict[str, StatKey | None] | None:
        if self.store is None:
            try:
                rules = JudgeOptions.from_settings(self.settings).rules_version
                self.store = Store.open_readonly(self.settings.db_path, self.settings.target_recall, rules)
            except StoreError:
                return None  # not created or migrated yet: the writer is starting
            # A read that finds the database busy (other readers opening and closing around a
            # checkpoint) gives up soon and is tried again at the next poll: never a stalled poller.
            self.store.db.execute("PRAGMA busy_timeout = 200")
        try:
            return self.store.stat_keys(folder, direct=True)
        except StoreError as exc:  # busy beyond the timeout, disk trouble: look again next time
            log.warning("poller_database_error", error=str(exc))
            return None

    def queue_events(self, timeout: float) -> None:
        """One step of the poller, then its wait (cut short by a stop)."""
        self.stopped_event.wait(self.poller.step())

    def run(self) -> None:
        """Thread body: poll until stopped; the connection closes with the thread."""
        try:
            super().run()
        except Exception:
            log.exception("poller_failed")  # the thread ends; the supervisor sees it and exits non-zero
        finally:
            if self.store is not None:
                self.store.close()


class FolderPollingObserver(BaseObserver):
    """A watchdog observer whose emitters poll folders (:class:`watcher.watch.poller.Poller`)."""

    def __init__(self, settings: Settings) -> None:
        self.sweeping = threading.Event()
        super().__init__(
            FolderPollingEmitter, timeout=settings.polling_interval, settings=settings, sweeping=self.sweeping
        )

    def start_sweeping(self) -> None:
        """The start-up reconcile is done: sweeps may begin (for every watch, present and future:
        an emitter started later sees :attr:`sweeping` set)."""
        with self._lock:  # schedule()'s: an emitter is made, started and listed under it
            self.sweeping.set()
            for emitter in list(self.emitters):
                if isinstance(emitter, FolderPollingEmitter):
                    emitter.poller.start_sweeping()

    def status(self) -> dict[str, Any]:
        """:meth:`Poller.status` of the current watch (empty before there is one). Only reads."""
        for emitter in list(self.emitters):
            if isinstance(emitter, FolderPollingEmitter):
                return emitter.poller.status()
        return {}
