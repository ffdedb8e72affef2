"""The daemon's report thread: regenerates report files off the writer thread, coalesced.

Rendering 100,000 rows takes a good part of a second; on the writer thread it would delay every
file that arrives meanwhile. Here it runs on its own read-only connection: WAL gives it a committed
snapshot while the writer goes on. Timing: a change is written out once the burst is over (the
writer is idle), or ``report_interval`` after the first unreported change while changes keep
coming, and never more often than once per ``report_interval``.

The table formats (CSV, JSON, Markdown) never wait for the HTML page: the page is rendered in a
process of its own and follows. At most one page is in flight; changes that arrive while it is
rendered are covered by exactly one more page after it, so the page always ends up showing the
last change however long it takes (``reports_written`` logs the tables, ``report_page_written``
the page, each with its delay after the change).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import BrokenExecutor, wait
from pathlib import Path

from watcher.config import Settings
from watcher.errors import StoreError
from watcher.logs import get_logger
from watcher.pools import release_helpers, report_process
from watcher.reports.files import page_missing, tables_missing, write_html_file, write_points
from watcher.reports.inflight import PageInFlight
from watcher.reports.tables import ReportTables
from watcher.store import Store

log = get_logger("watcher.reporter")

#: On stop, the page in flight (and the one that follows it) is waited for this long at most.
PAGE_STOP_SECONDS = 20.0

#: While the helper processes cannot be stopped yet (another pool is open), try again this often.
HELPERS_RETRY_SECONDS = 5.0

PageWriter = Callable[[Settings], Path]


def render_page(page_writer: PageWriter, settings: Settings) -> float:
    """In the page's process: write the page; the monotonic clock (system-wide) when it is written."""
    page_writer(settings)
    return time.monotonic()


class Reporter(threading.Thread):
    """Call :meth:`mark` after each commit that changed something; :meth:`stop` to end (with a
    last write if a change is still unreported, and the page finished, for
    :data:`PAGE_STOP_SECONDS` at most).

    ``page_writer`` renders ``report.html`` in the page's process (a module-level function, so
    that it can be sent there); :func:`watcher.reports.files.write_html_file` unless a test holds it.
    """

    def __init__(
        self,
        settings: Settings,
        writer_idle: Callable[[], bool],
        stop: threading.Event,
        page_writer: PageWriter = write_html_file,
    ) -> None:
        super().__init__(name="watcher-reporter", daemon=True)
        self.settings = settings
        self.writer_idle = writer_idle
        self.stop_event = stop
        self.page_writer = page_writer
        self.pending = threading.Event()
        self.wake = threading.Event()  # a change, a finished page, or stop
        self.first_change = 0.0
        self.last_written = -float("inf")
        self.writes = 0
        self.pages = 0
        self.store: Store | None = None  # opened by the thread
        # Each model's row text is kept from one write to the next: a change re-renders only the
        # models it touched (what keeps the tables within a second of a change at 100,000 models).
        self.tables = ReportTables(settings.report_dir, settings.report_formats, settings.regressions)
        # The HTML page is rendered in a process of its own while this thread writes the tables:
        # at 100,000 models that is what keeps the tables within a second of a change. It starts
        # with a page and stops after worker_idle_seconds without one.
        self.html = PageInFlight(
            lambda: report_process("forkserver"),  # this process has threads
            render_page, done=self.wake.set,
        )  # fmt: skip
        self.page_covers: float | None = None  # the first change the page in flight shows
        self.page_since: float | None = None  # the first change no page shows yet
        self.last_page = -float("inf")
        self.helpers_held = True  # the fork server and resource tracker may run for us
        self.helpers_retry_at = 0.0  # when to try stopping them again, if they could not be
        self.on_written: Callable[[bool], None] = lambda ok: None  # each write's result (watcher.metrics)

    def reload(self, settings: Settings) -> None:
        """New settings from a reload: report files (folder, formats) from the next write on."""

        def files(s: Settings) -> tuple[object, ...]:
            return s.report_dir, s.report_formats, s.regressions

        if files(settings) != files(self.settings):
            self.tables = ReportTables(settings.report_dir, settings.report_formats, settings.regressions)
        self.settings = settings
        self.mark()

    def mark(self) -> None:
        """Note that the report is out of date (thread-safe, cheap)."""
        if not self.pending.is_set():
            self.first_change = time.monotonic()
            self.pending.set()
            self.wake.set()

    def stop(self) -> None:
        """Ask the thread to end (thread-safe); join it to wait."""
        self.stop_event.set()
        self.wake.set()

    def run(self) -> None:
        """Thread body: never raises; a failed write is logged and retried after ``report_interval``,
        and so is anything unforeseen (``report_thread_error``): the thread goes on."""
        try:
            self.store = Store.open_readonly(self.settings.db_path)
        except StoreError as exc:
            log.error("report_thread_failed", error=str(exc))
            return
        try:
            # Changes made by the first reconcile, or report files missing: write them now.
            self._guarded(lambda: self._write(changed=self.pending.is_set()))
            while not self.stop_event.is_set():
                self._guarded(self._turn)
            if self.pending.is_set():
                self._guarded(lambda: self._write(changed=True))
            self._guarded(self._finish_pages)
        finally:
            self._guarded(self._close_process)
            if self.store is not None:
                self.store.close()

    def _turn(self) -> None:
        if not self.pending.is_set():
            self.wake.wait(0.5)
        self.wake.clear()
        self._follow_page()
        if self.pending.is_set():
            if self._due():
                self._write(changed=True)
        elif self.html.running is None and time.monotonic() - max(self.last_written, self.last_page) >= (
            self.settings.worker_idle_seconds
        ):
            self._close_process()

    def _guarded(self, step: Callable[[], None]) -> None:
        """Run ``step``; what no branch foresaw (a bug, a helper process failing in a new way) is
        logged, the page's process let go, and the report written again after ``report_interval``."""
        try:
            step()
        except Exception as exc:  # noqa: BLE001 - the thread must outlive it: the reports stay current
            log.error("report_thread_error", error=repr(exc), report_dir=str(self.settings.report_dir))
            self.html.discard()
            self.page_since = self.first_change if self.page_since is None else self.page_since
            self.mark()
            self.stop_event.wait(self.settings.report_interval)

    def _close_process(self) -> None:
        if self.html.close(wait=self.html.running is None):
            self.helpers_held = True
        if self.helpers_held and time.monotonic() >= self.helpers_retry_at:
            # Once per idle stretch, even when no page was needed: the daemon started the
            # resource tracker before this thread, and nothing else may be left to stop it. Again
            # a little later while something still needs them (a pool open, or winding down).
            stopped = release_helpers()
            self.helpers_held = not stopped
            self.helpers_retry_at = time.monotonic() + HELPERS_RETRY_SECONDS
            log.debug("report_process_stopped", helpers_stopped=stopped)

    def _due(self) -> bool:
        interval = self.settings.report_interval
        now = time.monotonic()
        if now - self.last_written < interval:
            self.wake.wait(interval - (now - self.last_written))  # a finished page is followed meanwhile
            return False
        if self.writer_idle() or now - self.first_change >= interval:
            return True
        self.wake.wait(min(0.05, interval))  # the burst goes on: look again shortly
        return False

    def _write(self, changed: bool) -> None:
        started, since = time.monotonic(), self.first_change
        self.pending.clear()
        try:
            if self.store is None or self.store.moved_away():
                # Removed or replaced (the writer rebuilds it): follow the path to the new file.
                if self.store is not None:
                    self.store.close()
                    self.store = None
                self.store = Store.open_readonly(self.settings.db_path)
                self.tables.reset()
                changed = True
            if changed or page_missing(self.settings):
                self._want_page(since if changed else None)  # first: it renders on the other core meanwhile
            if changed or tables_missing(self.settings):
                whole = self.tables.full_reads
                self.tables.write(self.store)
                write_points(self.store, self.settings)  # whole: not spliced like the report
                self.writes += 1
                now = time.monotonic()
                log.info(
                    "reports_written", report_dir=str(self.settings.report_dir), writes=self.writes,
                    seconds=round(now - started, 3), after_change=round(now - since, 3) if changed else None,
                    read="all" if self.tables.full_reads > whole else "changes",
                )  # fmt: skip
                self.on_written(True)
        except (OSError, StoreError) as exc:
            log.error("report_write_failed", error=str(exc), report_dir=str(self.settings.report_dir))
            self.on_written(False)
            self.mark()
        self.last_written = time.monotonic()

    def _want_page(self, since: float | None) -> None:
        """A page is due, showing changes since ``since`` (None: it is only missing): now, or
        after the one in flight (all such requests meanwhile make one page)."""
        if "html" not in self.settings.report_formats:
            return
        self.html.want()
        if since is not None and (self.page_since is None or since < self.page_since):
            self.page_since = since
        if self.html.running is None:
            self._submit_page()

    def _submit_page(self) -> None:
        covers, self.page_since = self.page_since, None
        if self.html.submit(self.page_writer, self.settings):
            self.page_covers = covers
        else:
            self._page_process_broken(covers)

    def _follow_page(self) -> None:
        """Once the page in flight is done: log it (or its failure), and start the next if due."""
        page = self.html.finished()
        if page is None:
            return
        covers = self.page_covers
        try:
            finished = page.result()
        except BrokenExecutor:
            self._page_process_broken(covers)
            return
        except (OSError, StoreError) as exc:
            log.error("report_write_failed", error=str(exc), report_dir=str(self.settings.report_dir), page=True)
            self.on_written(False)
            self._page_again(covers)
        except Exception as exc:  # noqa: BLE001 - a bug in rendering: logged, never the end of the tables
            log.error("report_page_failed", error=repr(exc), report_dir=str(self.settings.report_dir))
        else:
            self.pages += 1
            self.last_page = finished
            log.info(
                "report_page_written", report_dir=str(self.settings.report_dir), pages=self.pages,
                seconds=round(finished - self.html.started, 3),
                after_change=round(finished - covers, 3) if covers is not None else None,
            )  # fmt: skip
        if self.html.wanted:
            self._submit_page()

    def _page_process_broken(self, covers: float | None) -> None:
        # The page's process died, or could not be started (killed, out of memory; its fork
        # server killed): a new one with the next write.
        log.error("report_process_broken")
        self.html.discard()
        self._page_again(covers)

    def _page_again(self, covers: float | None) -> None:
        """The page failed: it is written again with the next write, after ``report_interval``."""
        if covers is not None and (self.page_since is None or covers < self.page_since):
            self.page_since = covers
        self.mark()

    def _finish_pages(self) -> None:
        """On stop: the page in flight and the one due after it, for PAGE_STOP_SECONDS at most."""
        deadline = time.monotonic() + PAGE_STOP_SECONDS
        while (page := self.html.running) is not None:
            wait([page], timeout=max(0.0, deadline - time.monotonic()))
            if not page.done():
                log.warning("report_page_unfinished", waited_seconds=PAGE_STOP_SECONDS)
                return
            self._follow_page()
