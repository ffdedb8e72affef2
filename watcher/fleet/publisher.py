"""Reading the fleet from the central database: the fleet-wide report, the hosts' status, and
the long-running :class:`Publisher` that keeps the fleet's report files current (the HTML page
rendered after the tables, in a process of its own: :mod:`watcher.fleet.page`).

The publisher LISTENs on :data:`watcher.fleet.central.CHANNEL`, which every shipped batch notifies (on
its commit), and brings the table files up to date from one read-only snapshot of the ``report``
view: once a burst of notifications pauses, and at most once per ``interval`` while they keep
coming. Only the rows of the models the batches touched are read and rendered again, the rest
copied from the files written last (:mod:`watcher.fleet.tables`, CSV first). It writes them whole
on every (re)connection, since a notification sent while it was not listening is not delivered
later. A lost server is logged once per outage (``central_unreachable``, then ``central_back``)
and retried with a short backoff, a refusal (``central_refused``) once per reason and retried
slowly (:mod:`watcher.fleet.outage`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg

from watcher import regression
from watcher.errors import CentralError
from watcher.fleet import central
from watcher.fleet.outage import UNREACHABLE, Outage
from watcher.fleet.page import PageProcess
from watcher.fleet.tables import JUDGED_SOURCE, FleetTables, judged
from watcher.logs import get_logger
from watcher.regression import Rules

log = get_logger("watcher.fleet")

#: After the first notification of a burst, wait this long for more before writing (seconds).
SETTLE = 0.05


def report_rows(
    conn: psycopg.Connection[Any],
    issuer: str | None = None,
    model: str | None = None,
    below_target: bool = False,
    sort: str | None = None,
    desc: bool = False,
    regressions: Rules | None = None,
) -> list[Any]:
    """The fleet report (tuples in :data:`~watcher.fleet.central.FLEET_COLUMNS` order), optionally only
    one issuer's (any case), the model_ids starting with ``model``, or the models whose chosen
    point misses its target; sorted by ``sort`` (one of FLEET_COLUMNS; descending with ``desc``),
    then by model_id, as ``watcher report`` sorts a host's. Text is ordered byte-wise (as SQLite
    does), whatever the server's locale. Raises :class:`ValueError` for another ``sort``.

    With ``regressions`` (rules), in :data:`~watcher.fleet.central.FLEET_REGRESSION_COLUMNS` order:
    each model's newest experiment judged against the fleet's one before it, on any host; ``sort``
    may then be ``regressed`` or ``regression`` too (sorted here, after the judging: a stable sort
    of the rows in model_id order keeps that order within ties, as the host's report does)."""
    columns = central.FLEET_COLUMNS if regressions is None else central.FLEET_REGRESSION_COLUMNS
    if sort is not None and sort not in columns:
        raise ValueError(f"not a column of the fleet report: {sort!r}")
    verdict = sort if sort in regression.REGRESSION_COLUMNS else None
    if regressions is None:
        query = f"SELECT {', '.join('r.' + c for c in central.FLEET_COLUMNS)} FROM watcher.report r"
    else:
        query = JUDGED_SOURCE
    args: list[Any] = []
    if below_target:
        query += " JOIN watcher.results x ON x.host = r.host AND x.path = r.path AND NOT x.target_met"
    query += " WHERE true"
    if issuer:
        query += " AND lower(r.issuer) = lower(%s)"
        args.append(issuer)
    if model:
        query += " AND starts_with(r.model_id, %s)"
        args.append(model.lower())
    order = 'r.model_id COLLATE "C"'
    if sort is not None and sort != "model_id" and verdict is None:
        text = ' COLLATE "C"' if sort in ("issuer", "experiment_date", "host", "path") else ""
        order = f"r.{sort}{text}{' DESC' if desc else ''}, {order}"
    elif desc and verdict is None:
        order += " DESC"
    rows = conn.execute(f"{query} ORDER BY {order}".encode(), args).fetchall()
    if regressions is None:
        return rows
    out = [judged(row, regressions) for row in rows]
    if verdict is not None:
        at = columns.index(verdict)
        out.sort(key=lambda row: row[at], reverse=desc)  # stable, so model_id ascending within ties
    return out


def host_rows(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    """Each host's status: last contact, lag (history entries not shipped yet), counts, version."""
    cur = conn.execute(
        "SELECT host, role, version, last_seen, last_shipped, results, rejections, shipped_id, lag,"
        " extract(epoch FROM now() - last_seen) AS seconds_since FROM watcher.host_status ORDER BY host"
    )
    names = [d.name for d in cur.description or ()]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def fleet_counts(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """Numbers of models (fleet-wide), results and rejections."""
    row = conn.execute(
        "SELECT (SELECT count(DISTINCT model_id) FROM watcher.results), (SELECT count(*) FROM watcher.results),"
        " (SELECT count(*) FROM watcher.rejections)"
    ).fetchone()
    assert row is not None
    return dict(zip(("models", "results", "rejections"), (int(v) for v in row), strict=True))


class Publisher:
    """``watcher central publish``: keep the fleet report files in ``out_dir`` current until
    ``stop`` is set."""

    def __init__(
        self,
        url: str,
        out_dir: Path,
        formats: Sequence[str],
        interval: float,
        stop: threading.Event | None = None,
        target: float = 0.85,
        max_models: int = 1_000_000,
        rules: Rules | None = None,
    ) -> None:
        self.url = url
        self.out_dir = out_dir
        self.tables = FleetTables(out_dir, formats, rules)
        # The page after the tables, in a process of its own: the tables never wait for it.
        self.page = PageProcess(url, out_dir, target, max_models, rules) if "html" in formats else None
        self.interval = interval
        self.stop = stop or threading.Event()
        self.writes = 0
        self.last_written = -float("inf")
        self.outage = Outage(log)

    def run(self) -> None:
        """Until ``stop``: (re)connect, write, then write again after each burst of changes."""
        try:
            self._run()
        finally:
            if self.page is not None:
                self.page.close()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                self._serve()
            except (psycopg.OperationalError, psycopg.InterfaceError, CentralError) as exc:
                self.stop.wait(self.outage.trouble(UNREACHABLE, central.one_line(exc)))
            except psycopg.Error as exc:  # the server answers but refuses (privilege, schema)
                self.stop.wait(self.outage.failed(exc))
            except OSError as exc:  # the report folder: logged, tried again
                log.error("report_write_failed", error=str(exc), report_dir=str(self.out_dir))
                self.stop.wait(1.0)

    def _serve(self) -> None:
        app = "watcher publish"
        with central.connect(self.url, app, autocommit=True) as listener, central.connect(self.url, app) as reader:
            central.require_schema(reader)
            self.tables.reset()  # anything may have changed while nobody listened: all read again
            listener.execute(f"LISTEN {central.CHANNEL}")
            self._write(reader, "connected")  # whatever changed while nobody listened
            self.outage.back()
            while not self.stop.is_set():
                if self.page is not None:
                    self.page.tend()
                wait = 0.1 if self.page is not None and self.page.busy else 0.5
                if not any(True for _ in listener.notifies(timeout=wait, stop_after=1)):
                    continue
                first = time.monotonic()
                # Coalesce: wait for the burst to pause (and no sooner than `interval` after the
                # last write), taking whatever else arrives meanwhile.
                until = max(first + SETTLE, self.last_written + self.interval)
                while (left := until - time.monotonic()) > 0:
                    for _ in listener.notifies(timeout=left):
                        pass
                self._write(reader, "changed", since=first)

    def _write(self, reader: psycopg.Connection[Any], why: str, since: float | None = None) -> None:
        started, whole = time.monotonic(), self.tables.full_reads
        self.tables.write(reader)
        if self.page is not None:
            self.page.request()
        self.writes += 1
        self.last_written = now = time.monotonic()
        log.info(
            "fleet_reports_written", report_dir=str(self.out_dir), why=why, writes=self.writes,
            whole=self.tables.full_reads > whole, seconds=round(now - started, 3),
            after_change=round(now - since, 3) if since is not None else None,
        )  # fmt: skip


def age(seconds: float | None) -> str:
    """'12 s ago', '3 min ago', or 'never'."""
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"
