"""``watcher run``: filesystem events -> a bounded queue -> one writer thread that owns the database.

The watchdog handler only enqueues (an exception there would kill the observer thread). The
writer thread (:mod:`watcher.writer`) judges and stores; the report thread
(:mod:`watcher.reports.reporter`) rewrites report files. The main thread supervises: signals only set an
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
from watcher.dblock import acquire, holder, keep, lock_path
from watcher.errors import AlreadyRunningError, CentralError, StoreError, TransientStoreError
from watcher.lifecycle import Lifecycle
from watcher.lifeline import start_quiet_resource_tracker
from watcher.logs import get_logger
from watcher.metrics import Vitals
from watcher.notify import notify, watchdog_period
from watcher.reports.reporter import Reporter
from watcher.store import Store
from watcher.watch.observe import (
    QUEUE_MAX,
    Event,
    FolderPollingEmitter,
    FolderPollingObserver,
    QueueHandler,
    RootWatch,
    start_observer,
)
from watcher.writer import RETRY_FIRST, RETRY_MAX, Trouble, Writer

if TYPE_CHECKING:
    from watcher.fleet.shipper import Shipper

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
    A disk that fails or is full under the database (:func:`watcher.store.transient`) is waited
    out the same way: logged once (``database_error``), READY once the database works, exit 0 on
    a stop meanwhile. Raises :class:`~watcher.errors.AlreadyRunningError` for a second daemon on
    the same database, :class:`~watcher.errors.StoreError` for a database (or lock file) it may
    not write at all. SIGHUP reads the settings
    again with ``reload`` (see :mod:`watcher.lifecycle`).
    """
    stop = stop or threading.Event()
    # Only a fleet host needs the PostgreSQL driver: its absence is one line now, not a dead thread.
    shipping = _shipper_class() if settings.central_url else None
    if holder(settings.db_path) == "scan":
        log.info("waiting_for_scan", db=str(settings.db_path), hint="a 'watcher scan' holds the database")
    trouble = Trouble(str(settings.db_path))
    lock_fd = _lock(settings, stop, trouble)
    if lock_fd is None:  # stopped while the disk failed
        return 0
    try:
        # Opened (created, migrated) here once, so an unusable database is one line and an exit
        # code now rather than a failed writer thread later. A failing or full disk is not
        # unusable: the writer waits it out, and READY follows once the database works.
        Store.from_settings(settings).close()
    except TransientStoreError as exc:
        log.debug("database_not_ready", error=str(exc))
    except BaseException:
        os.close(lock_fd)
        raise
    start_quiet_resource_tracker()  # the pools' tracker, its stderr on /dev/null (see watcher.lifeline)
    # watchdog walks the tree with the recursive os.walk, one level of recursion per folder: at
    # the default limit (1,000) a runaway job's deep tree would kill the observer at start. Allow
    # any depth a path can have (PATH_MAX is 4,096 bytes: at most 2,048 levels); folders beyond
    # that cannot be named, so neither watched nor listed (the walk reports them).
    sys.setrecursionlimit(max(sys.getrecursionlimit(), WALK_RECURSION_LIMIT))
    _on_signals(stop)
    hangup = threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGHUP, lambda *_: hangup.set())  # systemctl reload: the loop reloads
    events: queue.Queue[Event] = queue.Queue(maxsize=QUEUE_MAX)
    overflow = threading.Event()
    rewatched = threading.Event()
    handler = QueueHandler(events, overflow)
    observer, kind = observer_factory(settings, handler)
    shipper: Shipper | None = None

    def changed() -> None:  # after each commit that changed something
        reporter.mark()
        if shipper is not None:
            shipper.nudge()

    polling = observer if isinstance(observer, FolderPollingObserver) else None
    writer = Writer(
        settings, events, threading.Event(), kind, overflow=overflow, rewatched=rewatched, on_change=changed,
        observer_status=polling.status if polling is not None else dict, trouble=trouble,
        # A fleet host trims no history entry at or past what the central database holds.
        history_floor=lambda: None if shipper is None else shipper.shipped_id,
    )  # fmt: skip
    reporter = Reporter(settings, writer.idle, threading.Event())  # before the writer's first change
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


def _on_signals(stop: threading.Event) -> None:
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())  # only set a flag; the loop below does the rest


def _lock(settings: Settings, stop: threading.Event, trouble: Trouble) -> int | None:
    """The database's lock, once its file can be written: a full or failing disk is waited out
    (``None`` when stopped meanwhile). Raises what :func:`acquire` raises for anything else."""
    delay = RETRY_FIRST
    while True:
        try:
            return acquire(settings.db_path, "run", wait_for_scan=True)
        except TransientStoreError as exc:
            _on_signals(stop)  # the blocking wait for a scan is over: a stop may come now
            if trouble.since is None:
                notify(f"STATUS=waiting for the database: {exc}")  # systemctl status says why
            trouble.failed(exc, retry_in=delay)
        if stop.wait(delay):
            return None
        delay = min(delay * 2, RETRY_MAX)


def _shipper_class() -> type[Shipper]:
    try:
        from watcher.fleet.shipper import Shipper  # only a fleet host needs the PostgreSQL driver
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
    ready_sent = waiting_told = False
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
        if not ready_sent and not waiting_told and writer.trouble.since is not None:
            notify(f"STATUS=waiting for the database: {writer.trouble.error}")  # systemctl status says why
            waiting_told = True
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
