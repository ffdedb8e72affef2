"""``watcher run``: filesystem events -> a bounded queue -> one writer thread that owns the database.

The watchdog handler only enqueues (an exception there would kill the observer thread). The
writer thread (:mod:`watcher.writer`) judges and stores; the report thread
(:mod:`watcher.reporter`) rewrites report files. The main thread supervises: signals only set an
event; it pings the systemd watchdog while both threads live, and re-watches the watch dir if it
is recreated.
"""

from __future__ import annotations

import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from watchdog.events import FileSystemEventHandler
from watchdog.observers.api import BaseObserver

from watcher.config import Settings
from watcher.dblock import acquire, daemon_running, holder, keep, lock_path
from watcher.errors import AlreadyRunningError, CentralError, StoreError
from watcher.lifecycle import Lifecycle
from watcher.lifeline import start_quiet_resource_tracker
from watcher.logs import get_logger
from watcher.metrics import Vitals
from watcher.notify import notify, watchdog_period
from watcher.observe import (
    QUEUE_MAX,
    Event,
    FolderPollingEmitter,
    FolderPollingObserver,
    QueueHandler,
    RootWatch,
    start_observer,
)
from watcher.reporter import Reporter
from watcher.store import Store
from watcher.writer import Writer

if TYPE_CHECKING:
    from watcher.shipper import Shipper

__all__ = ["daemon_running", "lock_path", "run"]

log = get_logger("watcher.daemon")

#: Recursion limit for the daemon: room for os.walk over the deepest tree a path can name.
WALK_RECURSION_LIMIT = 10_000

ObserverFactory = Callable[[Settings, FileSystemEventHandler], tuple[BaseObserver, str]]


def run(
    settings: Settings,
    stop: threading.Event | None = None,
    observer_factory: ObserverFactory = start_observer,
    reload: Callable[[], Settings] | None = None,
) -> int:
    """Run the daemon until SIGTERM/SIGINT (or ``stop``). Returns the process exit code.

    Order matters: the observer starts before the first reconcile, so nothing written during
    start-up is missed. A watch dir missing at start is reported once (``watch_dir_missing``) and
    waited for, like one that vanishes while running; a running ``watcher scan`` is waited for.
    Raises :class:`~watcher.errors.AlreadyRunningError` for a second daemon on the same database,
    :class:`~watcher.errors.StoreError` for a database (or lock file) it cannot write. SIGHUP
    reads the settings again with ``reload`` (see :mod:`watcher.lifecycle`).
    """
    stop = stop or threading.Event()
    # Only a fleet host needs the PostgreSQL driver: its absence is one line now, not a dead thread.
    shipping = _shipper_class() if settings.central_url else None
    if holder(settings.db_path) == "scan":
        log.info("waiting_for_scan", db=str(settings.db_path), hint="a 'watcher scan' holds the database")
    lock_fd = acquire(settings.db_path, "run", wait_for_scan=True)
    try:
        # Opened (created, migrated) here once, so an unusable database is one line and an exit
        # code now rather than a failed writer thread later.
        Store.from_settings(settings).close()
    except BaseException:
        os.close(lock_fd)
        raise
    start_quiet_resource_tracker()  # the pools' tracker, its stderr on /dev/null (see watcher.lifeline)
    # watchdog walks the tree with the recursive os.walk, one level of recursion per folder: at
    # the default limit (1,000) a runaway job's deep tree would kill the observer at start. Allow
    # any depth a path can have (PATH_MAX is 4,096 bytes: at most 2,048 levels); folders beyond
    # that cannot be named, so neither watched nor listed (the walk reports them).
    sys.setrecursionlimit(max(sys.getrecursionlimit(), WALK_RECURSION_LIMIT))
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())  # only set a flag; the loop below does the rest
    hangup = threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGHUP, lambda *_: hangup.set())  # systemctl reload: the loop reloads
    events: queue.Queue[Event] = queue.Queue(maxsize=QUEUE_MAX)
    overflow = threading.Event()
    rewatched = threading.Event()
    handler = QueueHandler(events, overflow)
    observer, kind = observer_factory(settings, handler)
    reporter = Reporter(settings, lambda: writer.idle(), threading.Event())
    shipper: Shipper | None = None

    def changed() -> None:  # after each commit that changed something
        reporter.mark()
        if shipper is not None:
            shipper.nudge()

    polling = observer if isinstance(observer, FolderPollingObserver) else None
    writer = Writer(
        settings, events, threading.Event(), kind, overflow=overflow, rewatched=rewatched, on_change=changed,
        observer_status=polling.status if polling is not None else dict,
    )  # fmt: skip
    if shipping is not None:
        # Ships to the fleet's central database once the first reconcile is done.
        shipper = shipping(settings, after=writer.ready)
        shipper.start()
    reporter.on_written = writer.stats.report_written
    vitals = Vitals(settings, writer.stats, writer, events, reporter, shipper)
    writer.start()
    log.info(
        "daemon_starting", watch_dir=str(settings.watch_dir), db=str(settings.db_path), observer=kind, pid=os.getpid()
    )
    vitals.start_from()
    root = RootWatch(settings, observer, handler, rewatched)
    life = Lifecycle(settings, writer, reporter, vitals, hangup, reload)
    code, lock_fd = _supervise(settings, stop, observer, writer, reporter, root, lock_fd, life)
    notify("STOPPING=1")
    log.info("daemon_stopping")
    observer.stop()
    writer.stop_event.set()
    writer.join(timeout=30)
    if shipper is not None:  # after the writer: the last batch gets shipped (for a few seconds at most)
        shipper.stop()
        shipper.join(timeout=15)
    reporter.stop()  # after the writer: the last batch's change gets written out, and its page
    vitals.stop()
    vitals.join(timeout=10)
    if reporter.is_alive():
        reporter.join(timeout=30)
    observer.join(timeout=5)
    os.close(lock_fd)
    log.info("daemon_stopped", exit_code=code)
    return code


def _shipper_class() -> type[Shipper]:
    try:
        from watcher.shipper import Shipper  # only a fleet host needs the PostgreSQL driver
    except ImportError as exc:
        raise CentralError(f"central_url is set but the PostgreSQL driver is missing ({exc}): "
                           "pip install 'watcher[postgres]'") from None  # fmt: skip
    return Shipper


def _supervise(
    settings: Settings,
    stop: threading.Event,
    observer: BaseObserver,
    writer: Writer,
    reporter: Reporter,
    root: RootWatch,
    lock_fd: int,
    life: Lifecycle,
) -> tuple[int, int]:
    """Watch the threads, the watch dir and the lock until ``stop``; returns the exit code and
    the lock's (possibly renewed) descriptor."""
    period = watchdog_period()
    interval = min(period or 1.0, 1.0)
    ready_sent = False
    while not stop.wait(interval if ready_sent else 0.05):
        if not writer.is_alive():
            log.error("writer_died", error=repr(writer.failed))
            return 1, lock_fd
        if not observer.is_alive() or not _pollers_alive(observer):
            log.error("observer_died")
            return 1, lock_fd
        try:
            renewed = keep(lock_fd, settings.db_path, "run")
        except (AlreadyRunningError, StoreError) as exc:  # e.g. its folder is gone: the writer rebuilds it
            log.debug("lock_not_renewed", error=str(exc))
            renewed = lock_fd
        if renewed != lock_fd:
            log.warning("lock_file_recreated", lock=str(lock_path(settings.db_path)))
            lock_fd = renewed
        if writer.ready.is_set() and not ready_sent:
            reporter.start()  # the database exists and is migrated by now
            if isinstance(observer, FolderPollingObserver):
                observer.start_sweeping()  # the database describes the tree now
            life.ready()
            log.info("daemon_ready")
            ready_sent = True
        elif not ready_sent:
            life.starting()  # EXTEND_TIMEOUT_USEC= while the start-up reconcile makes progress
        else:
            life.check_reload()
        root.check()
        if period is not None and time.monotonic() - writer.tick < 4 * period:
            notify("WATCHDOG=1")
    return 0, lock_fd


def _pollers_alive(observer: BaseObserver) -> bool:
    # A poller's thread that died would leave the observer alive and blind.
    return all(e.is_alive() for e in list(observer.emitters) if isinstance(e, FolderPollingEmitter))
