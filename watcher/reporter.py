"""The daemon's report thread: regenerates report files off the writer thread, coalesced.

Rendering 100,000 rows takes a good part of a second; on the writer thread it would delay every
file that arrives meanwhile. Here it runs on its own read-only connection: WAL gives it a committed
snapshot while the writer goes on; the HTML page is rendered meanwhile in a process of its own.
Timing: a change is written out once the burst is over (the writer is idle), or
``report_interval`` after the first unreported change while changes keep coming, and never more
often than once per ``report_interval``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import BrokenExecutor, ProcessPoolExecutor

from watcher.config import Settings
from watcher.errors import StoreError
from watcher.logs import get_logger
from watcher.pools import release_helpers, report_process
from watcher.publish import refresh_reports
from watcher.store import Store

log = get_logger("watcher.reporter")


class Reporter(threading.Thread):
    """Call :meth:`mark` after each commit that changed something; set ``stop`` to end (with a
    last write if a change is still unreported)."""

    def __init__(self, settings: Settings, writer_idle: Callable[[], bool], stop: threading.Event) -> None:
        super().__init__(name="watcher-reporter", daemon=True)
        self.settings = settings
        self.writer_idle = writer_idle
        self.stop_event = stop
        self.pending = threading.Event()
        self.first_change = 0.0
        self.last_written = -float("inf")
        self.writes = 0
        self.store: Store | None = None  # opened by the thread
        # The HTML page is rendered in a process of its own while this thread writes the tables:
        # at 100,000 models that is what keeps every report file within a second of a change.
        # It starts with a write and stops after worker_idle_seconds without one.
        self.html_in: ProcessPoolExecutor | None = None

    def mark(self) -> None:
        """Note that the report is out of date (thread-safe, cheap)."""
        if not self.pending.is_set():
            self.first_change = time.monotonic()
            self.pending.set()

    def run(self) -> None:
        """Thread body: never raises; a failed write is logged and retried after ``report_interval``."""
        try:
            self.store = Store.open_readonly(self.settings.db_path)
        except StoreError as exc:
            log.error("report_thread_failed", error=str(exc))
            return
        try:
            # Changes made by the first reconcile, or report files missing: write them now.
            self._write(changed=self.pending.is_set())
            while not self.stop_event.is_set():
                if self.pending.wait(0.5):
                    if self._due():
                        self._write(changed=True)
                elif time.monotonic() - self.last_written >= self.settings.worker_idle_seconds:
                    self._close_process()
            if self.pending.is_set():
                self._write(changed=True)
        finally:
            self._close_process()
            if self.store is not None:
                self.store.close()

    def _close_process(self) -> None:
        if self.html_in is not None:
            self.html_in.shutdown(wait=True, cancel_futures=True)
            self.html_in = None
            log.debug("report_process_stopped", helpers_stopped=release_helpers())

    def _due(self) -> bool:
        interval = self.settings.report_interval
        now = time.monotonic()
        if now - self.last_written < interval:
            self.stop_event.wait(interval - (now - self.last_written))
            return False
        if self.writer_idle() or now - self.first_change >= interval:
            return True
        self.stop_event.wait(min(0.05, interval))  # the burst goes on: look again shortly
        return False

    def _write(self, changed: bool) -> None:
        started, since = time.monotonic(), self.first_change
        self.pending.clear()
        if self.html_in is None and "html" in self.settings.report_formats:
            self.html_in = report_process("forkserver")  # this process has threads
        try:
            if self.store is None or self.store.moved_away():
                # Removed or replaced (the writer rebuilds it): follow the path to the new file.
                if self.store is not None:
                    self.store.close()
                    self.store = None
                self.store = Store.open_readonly(self.settings.db_path)
                changed = True
            if refresh_reports(self.store, self.settings, changed, self.html_in):
                self.writes += 1
                now = time.monotonic()
                log.info(
                    "reports_written", report_dir=str(self.settings.reports), writes=self.writes,
                    seconds=round(now - started, 3), after_change=round(now - since, 3) if changed else None,
                )  # fmt: skip
        except (OSError, StoreError) as exc:
            log.error("report_write_failed", error=str(exc), report_dir=str(self.settings.reports))
            self.mark()
        except BrokenExecutor:
            # The page's process died (killed, out of memory): a new one, and write again.
            log.error("report_process_broken")
            if self.html_in is not None:
                self.html_in.shutdown(wait=False, cancel_futures=True)
            self.html_in = None  # a new one with the next write
            self.mark()
        self.last_written = time.monotonic()
