"""The daemon's vital signs, kept in memory and written out: a Prometheus text file, a health file, STATUS=.

One thread (:class:`Vitals`) wakes after each batch the writer commits (coalesced) and at least
every :data:`PERIOD` seconds, and then:

* writes ``metrics_file`` (when set) in node_exporter's textfile format, atomically (a temporary
  file in the same folder, renamed), with prometheus-client's own writer and a registry of its own;
* writes the health file beside the database (``<db>.health``, JSON) that ``watcher status --check``
  reads (:mod:`watcher.health`);
* sends ``STATUS=`` to systemd when the line changed, at most once a second.

Counters come from the writer's outcomes and the reporter's failures (plain integers in
:class:`Stats`, bumped where they happen). The gauges of what the database holds (files, models,
models below target) are counted once at start and again only after a commit changed something,
at most every :data:`RECOUNT_SECONDS`, and no more often than keeps counting within
:data:`RECOUNT_SHARE` of a core (a count reads every row: about half a second of CPU at a million
files, which every five seconds would take a tenth of a core from the writer while changes keep
coming); an idle daemon counts nothing, whatever the size of its tree; its idle cost is one small
file written every :data:`PERIOD` seconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, write_to_textfile
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from watcher import __version__
from watcher.logs import get_logger
from watcher.notify import notify

if TYPE_CHECKING:
    from watcher.config import Settings
    from watcher.fleet.shipper import Shipper
    from watcher.reports.reporter import Reporter
    from watcher.writer import Writer

log = get_logger("watcher.metrics")

#: Seconds between writes of the files when nothing happens.
PERIOD = 15.0
#: Least seconds between two writes while changes keep coming (a burst's batches coalesce).
COALESCE = 1.0
#: Least seconds between two counts of the database's rows.
RECOUNT_SECONDS = 5.0
#: At most this share of a core goes to counting while changes keep coming: after a count that
#: took ``c`` seconds of CPU, the next waits ``c / RECOUNT_SHARE`` seconds if that is longer.
RECOUNT_SHARE = 0.02
#: Least seconds between two STATUS= messages.
STATUS_SECONDS = 1.0


def health_path(db_path: Path) -> Path:
    """The health file a daemon keeps beside its database (``watcher.db`` -> ``watcher.db.health``)."""
    return Path(f"{db_path}.health")


@dataclass
class Stats:
    """Counters bumped by the threads where things happen (integers: no lock needed under the GIL)."""

    scored: int = 0
    rejected: int = 0
    removed: int = 0
    overflows: int = 0
    reconciles: int = 0
    reconcile_seconds: float = 0.0
    last_reconcile_seconds: float | None = None
    last_reconcile_at: float | None = None  # time.time() of the last full reconcile's end
    changed_at: float | None = None  # time.time() of the last commit that changed something
    report_failures: int = 0
    report_failing_since: float | None = None  # time.time() of the first failure since the last success
    database_errors: int = 0
    database_failing_since: float | None = None
    changed: threading.Event = field(default_factory=threading.Event)

    def outcomes(self, scored: int, rejected: int, removed: int) -> None:
        """A commit applied these outcomes."""
        self.scored += scored
        self.rejected += rejected
        self.removed += removed
        if scored or rejected or removed:
            self.changed_at = time.time()
            self.changed.set()

    def reconciled(self, seconds: float, full: bool) -> None:
        """A reconcile ended (``full``: of the whole tree)."""
        self.reconciles += 1
        self.reconcile_seconds += seconds
        if full:
            self.last_reconcile_seconds = seconds
            self.last_reconcile_at = time.time()
        self.database_failing_since = None

    def report_written(self, ok: bool) -> None:
        """The report thread wrote its files (``ok``) or failed to."""
        if ok:
            self.report_failing_since = None
            return
        self.report_failures += 1
        if self.report_failing_since is None:
            self.report_failing_since = time.time()
        self.changed.set()

    def database_error(self) -> None:
        """A write to the database failed (it is retried)."""
        self.database_errors += 1
        if self.database_failing_since is None:
            self.database_failing_since = time.time()

    def database_ok(self) -> None:
        """A write to the database succeeded."""
        self.database_failing_since = None


@dataclass
class Counts:
    """What the database holds, as last counted."""

    results: int = 0
    rejections: int = 0
    models: int = 0
    below_target: int = 0


def count(db_path: Path) -> Counts:
    """Count the database's files and models (a read-only connection, closed at once)."""
    conn = sqlite3.connect(f"{db_path.as_uri()}?mode=ro", uri=True, timeout=5)
    try:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM results), (SELECT count(*) FROM rejections),"
            " (SELECT count(DISTINCT model_id) FROM results), (SELECT count(*) FROM report WHERE NOT target_met)"
        ).fetchone()
    finally:
        conn.close()
    return Counts(*row)


def iso_to_unix(stamp: str | None) -> float | None:
    """``2024-05-01T12:00:00.000000Z`` (the database's timestamps) as unix seconds."""
    if not stamp:
        return None
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class Vitals(threading.Thread):
    """The thread that writes the metrics file, the health file and STATUS= (see the module)."""

    def __init__(
        self,
        settings: Settings,
        stats: Stats,
        writer: Writer,
        events: queue.Queue[Any],
        reporter: Reporter | None = None,
        shipper: Shipper | None = None,
        send: Callable[[str], bool] = notify,
    ) -> None:
        super().__init__(name="watcher-vitals", daemon=True)
        self.settings = settings
        self.stats = stats
        self.writer = writer
        self.events = events
        self.reporter = reporter
        self.shipper = shipper
        self.send = send
        self.stop_event = threading.Event()
        self.counts = Counts()
        self.counted = -float("inf")
        self.counted_wall = -float("inf")
        self.next_count = -float("inf")  # the earliest monotonic time of the next count
        self.started_at = time.time()
        self.status_line = ""
        self.status_sent = -float("inf")
        self.central_down_since: float | None = None
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))
        self.failed_path: str | None = None

    def stop(self) -> None:
        """Write once more, then end the thread."""
        self.stop_event.set()
        self.stats.changed.set()

    def start_from(self) -> None:
        """Read the totals (and the last change) from the database once, then start the thread."""
        with contextlib.suppress(sqlite3.Error):
            conn = sqlite3.connect(f"{self.settings.db_path.as_uri()}?mode=ro", uri=True, timeout=5)
            try:
                row = conn.execute("SELECT at FROM history ORDER BY id DESC LIMIT 1").fetchone()
            finally:
                conn.close()
            if self.stats.changed_at is None and row is not None:
                self.stats.changed_at = iso_to_unix(str(row[0]))
        self._recount(force=True)
        self.start()

    def run(self) -> None:
        """Thread body: wake on a change or every PERIOD seconds; write; never die of an error."""
        last = -float("inf")
        self.once()  # the health file at once: `watcher status --check` looks for it
        while True:
            self.stats.changed.wait(PERIOD)
            if self.stop_event.is_set():
                break
            wait = last + COALESCE - time.monotonic()
            if wait > 0 and self.stop_event.wait(wait):
                break
            self.stats.changed.clear()
            last = time.monotonic()
            self.once()
        self.once()

    def once(self) -> None:
        """Count if due, then write the files and the status line; errors are logged, not raised."""
        try:
            self._recount()
            self._central()
            if self.settings.metrics_file is not None:
                self._write_metrics(self.settings.metrics_file)
            self._write_health()
            self._status()
        except Exception as exc:  # noqa: BLE001 - a monitoring aid must not end the daemon
            log.error("vitals_error", error=repr(exc))

    def _recount(self, force: bool = False) -> None:
        changed = self.stats.changed_at or 0.0
        if not force and changed <= self.counted_wall:
            return  # nothing changed since the last count: an idle daemon counts nothing
        if not force and time.monotonic() < self.next_count:
            self.stats.changed.set()  # counted a moment ago: again at a later turn
            return
        before, cpu = time.time(), time.thread_time()  # a change landing while counting is counted next time
        try:
            self.counts = count(self.settings.db_path)
        except sqlite3.Error as exc:
            log.debug("vitals_count_failed", error=str(exc))
            return
        self.counted, self.counted_wall = time.monotonic(), before
        self.next_count = self.counted + max(RECOUNT_SECONDS, (time.thread_time() - cpu) / RECOUNT_SHARE)

    def _central(self) -> None:
        shipper = self.shipper
        if shipper is None:
            return
        if not shipper.outage.down:
            self.central_down_since = None
        elif self.central_down_since is None:
            self.central_down_since = time.time() - (time.monotonic() - shipper.outage.since)

    def _write_metrics(self, path: Path) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_to_textfile(str(path), self.registry)
        except OSError as exc:
            if self.failed_path != str(exc):
                log.error("metrics_write_failed", metrics_file=str(path), error=str(exc))
            self.failed_path = str(exc)
            return
        if self.failed_path is not None:
            log.info("metrics_write_recovered", metrics_file=str(path))
        self.failed_path = None

    def health(self) -> dict[str, Any]:
        """The health file's content: when it was written, by whom, and what is failing since when."""
        s = self.stats
        return {
            "pid": os.getpid(),
            "written_at": time.time(),
            "period": PERIOD,
            "report_failing_since": s.report_failing_since,
            "database_failing_since": s.database_failing_since,
            "central": self.shipper is not None,
            "central_unreachable_since": self.central_down_since,
            "rejected_total": s.rejected,
        }

    def _write_health(self) -> None:
        path = health_path(self.settings.db_path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        with contextlib.suppress(OSError):  # the database's folder is the writer's to report on
            # No world access, as the database beside it (0640, whatever the umask allows more).
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                os.fchmod(fh.fileno(), 0o640)
                fh.write(json.dumps(self.health()) + "\n")
            os.replace(tmp, path)

    def status_text(self) -> str:
        """The one line ``systemctl status`` shows: counts and the last change."""
        c = self.counts
        changed = self.stats.changed_at
        when = "-" if changed is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(changed))
        pending = self.events.qsize() + len(self.writer.tracker.states)
        text = (
            f"watching {self.settings.watch_dir}; {c.models} models, {c.results} results, {c.rejections} rejections;"
            f" last change {when}"
        )
        return text + (f"; {pending} pending" if pending else "")

    def _status(self) -> None:
        if not self.writer.ready.is_set():
            return
        line = self.status_text()
        now = time.monotonic()
        if line != self.status_line and now - self.status_sent >= STATUS_SECONDS:
            self.send(f"STATUS={line}")
            self.status_line, self.status_sent = line, now
        elif line != self.status_line:
            self.stats.changed.set()  # sent at the next turn

    def families(self) -> Iterator[Metric]:
        """Every series (read by the registry at each write)."""
        s, c, w = self.stats, self.counts, self.writer
        outcomes = CounterMetricFamily(
            "watcher_outcomes", "Outcomes the daemon recorded since it started, by kind.", labels=["outcome"]
        )
        for kind, n in (("scored", s.scored), ("rejected", s.rejected), ("removed", s.removed)):
            outcomes.add_metric([kind], n)
        yield outcomes
        files = GaugeMetricFamily("watcher_files", "Results files in the database, by state.", labels=["state"])
        files.add_metric(["scored"], c.results)
        files.add_metric(["rejected"], c.rejections)
        yield files
        yield GaugeMetricFamily("watcher_models", "Models in the report.", value=c.models)
        yield GaugeMetricFamily(
            "watcher_models_below_target", "Models whose best point misses the target.", value=c.below_target
        )
        yield GaugeMetricFamily(
            "watcher_queue_events", "Filesystem events waiting for the writer.", value=self.events.qsize()
        )
        yield GaugeMetricFamily(
            "watcher_pending_files", "Files seen changing and not yet judged.", value=len(w.tracker.states)
        )
        for name, help_text, value in (
            ("watcher_last_event_timestamp_seconds", "When the last file event came.", w.last_event_at),
            ("watcher_last_reconcile_timestamp_seconds", "When the last full reconcile ended.", s.last_reconcile_at),
            ("watcher_last_change_timestamp_seconds", "When the database last changed.", s.changed_at),
            ("watcher_last_reconcile_duration_seconds", "The last full reconcile's length.", s.last_reconcile_seconds),
        ):
            if value is not None:
                yield GaugeMetricFamily(name, help_text, value=value)
        yield CounterMetricFamily("watcher_reconciles", "Reconciles run (whole tree and folders).", value=s.reconciles)
        yield CounterMetricFamily(
            "watcher_reconcile_seconds", "Seconds spent reconciling, in total.", value=s.reconcile_seconds
        )
        yield CounterMetricFamily(
            "watcher_event_queue_overflows", "Times the event queue overflowed (a full reconcile followed).",
            value=s.overflows,
        )  # fmt: skip
        yield CounterMetricFamily(
            "watcher_report_write_failures", "Report writes that failed.", value=s.report_failures
        )
        yield CounterMetricFamily(
            "watcher_database_errors", "Database writes that failed (and were retried).", value=s.database_errors
        )
        yield GaugeMetricFamily("watcher_start_time_seconds", "When the daemon started.", value=self.started_at)
        info = GaugeMetricFamily("watcher_info", "The daemon's version and observer.", labels=["version", "observer"])
        info.add_metric([__version__, w.observer_name], 1)
        yield info
        shipper = self.shipper
        if shipper is not None:
            yield GaugeMetricFamily(
                "watcher_central_reachable", "1 when the last contact with the central database worked.",
                value=0 if shipper.outage.down else 1,
            )  # fmt: skip
            seen = shipper.last_seen
            contact = None if seen == -float("inf") else time.time() - (time.monotonic() - seen)
            if contact is not None:
                yield GaugeMetricFamily(
                    "watcher_central_last_contact_timestamp_seconds", "When the central database last answered.",
                    value=contact,
                )  # fmt: skip
            lag = 0.0 if s.changed_at is None or (contact is not None and contact >= s.changed_at) else (
                time.time() - s.changed_at
            )  # fmt: skip
            yield GaugeMetricFamily(
                "watcher_central_lag_seconds", "How long the newest local change has waited to be shipped.", value=lag
            )


class _Collector(Collector):
    def __init__(self, vitals: Vitals) -> None:
        self.vitals = vitals

    def collect(self) -> Iterator[Metric]:
        return self.vitals.families()
