"""``watcher run``: filesystem events -> a bounded queue -> one writer thread that owns the database.

The watchdog handler only enqueues (an exception there would kill the observer thread). The
writer thread (:mod:`watcher.writer`) judges and stores; the report thread
(:mod:`watcher.reporter`) rewrites report files. The main thread supervises: signals only set an
event; it pings the systemd watchdog while both threads live, and re-watches the watch dir if it
is recreated.
"""

from __future__ import annotations

import fcntl
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

from watchdog.events import FileSystemEventHandler
from watchdog.observers.api import BaseObserver

from watcher.config import Settings
from watcher.errors import AlreadyRunningError, WatchDirError
from watcher.logs import get_logger
from watcher.notify import notify, watchdog_period
from watcher.observe import QUEUE_MAX, Event, QueueHandler, RootWatch, start_observer
from watcher.poller import FolderPollingEmitter, FolderPollingObserver
from watcher.reporter import Reporter
from watcher.writer import Writer

log = get_logger("watcher.daemon")

ObserverFactory = Callable[[Settings, FileSystemEventHandler], tuple[BaseObserver, str]]


def lock_path(db_path: Path) -> Path:
    """The file a running daemon holds an exclusive ``flock`` on."""
    return db_path.with_name(db_path.name + ".lock")


def daemon_running(db_path: Path) -> bool:
    """True when a daemon holds the lock of this database."""
    try:
        fd = os.open(lock_path(db_path), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def _acquire_lock(db_path: Path) -> int:
    db_path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
    fd = os.open(lock_path(db_path), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise AlreadyRunningError(f"{db_path}: another watcher is already running on this database") from None
    return fd


def run(
    settings: Settings, stop: threading.Event | None = None, observer_factory: ObserverFactory = start_observer
) -> int:
    """Run the daemon until SIGTERM/SIGINT (or ``stop``). Returns the process exit code.

    Order matters: the observer starts before the first reconcile, so nothing written during
    start-up is missed. Raises :class:`WatchDirError` for a missing watch dir, :class:`AlreadyRunningError` for a
    second daemon on the same database.
    """
    stop = stop or threading.Event()
    if not settings.watch_dir.is_dir():
        raise WatchDirError(f"{settings.watch_dir}: watch directory does not exist or is not a directory")
    lock_fd = _acquire_lock(settings.db_path)
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())  # only set a flag; the loop below does the rest
    events: queue.Queue[Event] = queue.Queue(maxsize=QUEUE_MAX)
    overflow = threading.Event()
    rewatched = threading.Event()
    handler = QueueHandler(events, overflow)
    observer, kind = observer_factory(settings, handler)
    reporter = Reporter(settings, lambda: writer.idle(), threading.Event())
    polling = observer if isinstance(observer, FolderPollingObserver) else None
    writer = Writer(
        settings, events, threading.Event(), kind, overflow=overflow, rewatched=rewatched, on_change=reporter.mark,
        observer_status=polling.status if polling is not None else dict,
    )  # fmt: skip
    writer.start()
    log.info(
        "daemon_starting", watch_dir=str(settings.watch_dir), db=str(settings.db_path), observer=kind, pid=os.getpid()
    )
    root = RootWatch(settings, observer, handler, rewatched)
    code = _supervise(settings, stop, observer, writer, reporter, root)
    notify("STOPPING=1")
    log.info("daemon_stopping")
    observer.stop()
    writer.stop_event.set()
    writer.join(timeout=30)
    reporter.stop_event.set()  # after the writer: the last batch's change gets written out
    if reporter.is_alive():
        reporter.join(timeout=30)
    observer.join(timeout=5)
    os.close(lock_fd)
    log.info("daemon_stopped", exit_code=code)
    return code


def _supervise(
    settings: Settings,
    stop: threading.Event,
    observer: BaseObserver,
    writer: Writer,
    reporter: Reporter,
    root: RootWatch,
) -> int:
    period = watchdog_period()
    interval = min(period or 1.0, 1.0)
    ready_sent = False
    while not stop.wait(interval if ready_sent else 0.05):
        if not writer.is_alive():
            log.error("writer_died", error=repr(writer.failed))
            return 1
        if not observer.is_alive() or not _pollers_alive(observer):
            log.error("observer_died")
            return 1
        if writer.ready.is_set() and not ready_sent:
            reporter.start()  # the database exists and is migrated by now
            if isinstance(observer, FolderPollingObserver):
                observer.start_sweeping()  # the database describes the tree now
            notify(f"READY=1\nSTATUS=watching {settings.watch_dir}")
            log.info("daemon_ready")
            ready_sent = True
        root.check()
        if period is not None and time.monotonic() - writer.tick < 4 * period:
            notify("WATCHDOG=1")
    return 0


def _pollers_alive(observer: BaseObserver) -> bool:
    # A poller's thread that died would leave the observer alive and blind.
    return all(e.is_alive() for e in list(observer.emitters) if isinstance(e, FolderPollingEmitter))
