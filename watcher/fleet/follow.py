"""``watcher follow --central``: the fleet's outcomes as they land in the central database.

The central tables hold only each (host, path)'s current row; what changed is read from
``watcher.changes`` (migration 2 of :mod:`watcher.fleet.central`), where every statement that deletes
or inserts central rows logs the paths it took away or put in, with its transaction id. A
shipped batch deletes its paths and inserts their current rows, so in each transaction a path
put back with the same local timestamp is a re-shipped row (not shown), one put in anew is
scored or rejected (shown from its current row), and one taken away and not put back is removed.

Transactions commit in another order than their ids, so the follower reads in windows of
transaction ids below the oldest one still running (``pg_snapshot_xmin``), from one snapshot:
every change below that bound is committed or aborted, none can appear there later, and each
window starts where the last one ended. A window is read when a shipped batch notifies
:data:`watcher.fleet.central.CHANNEL`, and every :data:`POLL` seconds otherwise (a transaction that
does not notify may hold the bound back). Within a window a path is shown once, in its latest
state; a row changed again by a transaction beyond the window is left to the next window.

With the follower's regression ``rules`` (its ``regressions`` setting on), a scored file is judged
(:mod:`watcher.regression`) against the fleet's experiment before it, on any host (the
``experiments`` view, read in the same snapshot as the row), and carries the reasons when it
regressed, as a host's history entry does; ``regressions_only`` keeps only those (with
``rejections_only`` too: those and the rejections, as ``watcher follow`` on a host).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, NamedTuple

import psycopg

from watcher import regression
from watcher.errors import CentralError
from watcher.fleet import central
from watcher.fleet.outage import UNREACHABLE, Outage
from watcher.follow import Entry
from watcher.logs import get_logger
from watcher.regression import Point, Rules
from watcher.timestamps import iso

log = get_logger("watcher.fleetfollow")

#: Without a notification, read the next window this often (seconds); also how long a stop
#: request may wait to be seen.
POLL = 0.5


class FleetEntry(NamedTuple):
    """One outcome on one host: :class:`watcher.follow.Entry` with the host. ``id`` is the
    central transaction that shipped it (a batch's lines share it); ``at`` is when the host
    recorded a scored or rejected file, and when the central database learnt of a removal."""

    host: str
    entry: Entry

    def as_json(self) -> str:
        """One JSON object on one line: the local follow's fields (``regression`` only on a scored
        file that regressed), with ``host`` after ``at``."""
        fields = self.entry._asdict()
        if self.entry.regression is None:
            del fields["regression"]
        ordered = {"id": fields.pop("id"), "at": fields.pop("at"), "host": self.host, **fields}
        return json.dumps(ordered, ensure_ascii=False)

    def as_text(self) -> str:
        """Time, host, outcome, path, then the model and point or the reasons."""
        e = self.entry
        return f"{e.at}  {self.host}  {e.outcome:<8}  {e.path}{e.detail()}"


class _Event(NamedTuple):
    tx: int
    host: str
    path: str
    kind: str  # results, rejections, or removed
    stamp: str  # the row's local timestamp; for a removal, the central one
    model_id: str | None


class FleetFollower:
    """Reads the changes committed after it opened (or the ``last`` outcomes before that).
    Raises :class:`CentralError` when the server cannot be reached or its schema is not this
    watcher's. :meth:`poll` returns each outcome once; it raises psycopg's errors when the
    connection is lost, and :meth:`reconnect` resumes where it was."""

    def __init__(
        self,
        url: str,
        rejections_only: bool = False,
        last: int = 0,
        rules: Rules | None = None,
        regressions_only: bool = False,
    ) -> None:
        self.url = url
        self.rejections_only = rejections_only
        self.rules = rules
        self.regressions_only = regressions_only
        self.conn: psycopg.Connection[Any] | None = None
        self.listener: psycopg.Connection[Any] | None = None
        self._open_reader()
        self.after, self.backlog = self._start(max(last, 0))
        self._listen()  # once listening, the start is fixed (what a caller may wait for)

    def reconnect(self) -> None:
        """(Re)open the reading and the listening connections."""
        self._open_reader()
        self._listen()

    def _open_reader(self) -> None:
        self.close()
        self.conn = central.connect(self.url, "watcher follow", autocommit=True)
        central.require_schema(self.conn)

    def _listen(self) -> None:
        self.listener = central.connect(self.url, "watcher follow", autocommit=True)
        self.listener.execute(f"LISTEN {central.CHANNEL}")

    def poll(self) -> list[FleetEntry]:
        """The outcomes of the next window, oldest first; empty when none is new."""
        if self.backlog:
            out, self.backlog = self.backlog, []
            return out
        with self._snapshot() as conn:
            high = _horizon(conn)
            if high == self.after:
                return []
            entries = self._entries(conn, self.after, high)
        self.after = high
        return self._filter(entries)

    def wait(self, timeout: float) -> None:
        """Until a batch is shipped (any host) or ``timeout`` seconds pass."""
        assert self.listener is not None
        if any(True for _ in self.listener.notifies(timeout=timeout, stop_after=1)):
            for _ in self.listener.notifies(timeout=0.01):  # the rest of a burst: one read for all
                pass

    def close(self) -> None:
        """Close both connections."""
        for conn in (self.conn, self.listener):
            if conn is not None:
                with contextlib.suppress(psycopg.Error):  # a broken connection: nothing more to do
                    conn.close()
        self.conn = self.listener = None

    def _start(self, last: int) -> tuple[int, list[FleetEntry]]:
        with self._snapshot() as conn:
            high = _horizon(conn)
            if last == 0:
                return high, []
            limit = 64
            while True:  # whole transactions back from the bound, until they hold ``last`` outcomes
                rows = conn.execute(
                    "SELECT tx::text FROM watcher.changes WHERE tx < %s::text::xid8 ORDER BY tx DESC LIMIT %s",
                    (str(high), limit),
                ).fetchall()
                low = int(rows[-1][0]) if len(rows) == limit else 0
                entries = self._filter(self._entries(conn, low, high))
                if len(entries) >= last or low == 0:
                    return high, entries[-last:]
                limit *= 4

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[psycopg.Connection[Any]]:
        """One read-only transaction with one snapshot: the bound and the rows agree."""
        assert self.conn is not None
        with self.conn.transaction():
            self.conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield self.conn

    def _filter(self, entries: list[FleetEntry]) -> list[FleetEntry]:
        if not (self.rejections_only or self.regressions_only):
            return entries
        rejections, regressions = self.rejections_only, self.regressions_only
        return [
            e for e in entries if (rejections and e.entry.outcome == "rejected") or (regressions and e.entry.regression)
        ]

    def _entries(self, conn: psycopg.Connection[Any], low: int, high: int) -> list[FleetEntry]:
        rows = conn.execute(
            "SELECT tx::text, at, host, kind, op, paths, stamps, models FROM watcher.changes"
            " WHERE tx >= %s::text::xid8 AND tx < %s::text::xid8 ORDER BY tx, host, op",
            (str(low), str(high)),
        ).fetchall()
        events = _events(rows)
        return _resolve(conn, events, self.rules)


def _horizon(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text").fetchone()
    assert row is not None
    return int(row[0])


def _events(rows: list[tuple[Any, ...]]) -> list[_Event]:
    """Per transaction and host, what each path became; then each path's latest event only."""
    latest: dict[tuple[str, str], _Event] = {}
    groups: dict[tuple[int, str], tuple[dict[str, Any], dict[str, Any], datetime]] = {}
    for tx, at, host, kind, op, paths, stamps, models in rows:
        gone, new, _ = groups.setdefault((int(tx), host), ({}, {}, at))
        side = gone if op == "gone" else new
        for path, stamp, model_id in zip(paths, stamps, models or [None] * len(paths), strict=True):
            side[path] = (kind, stamp, model_id)
    for (tx, host), (gone, new, at) in groups.items():
        for path, (kind, stamp, _) in new.items():
            before = gone.get(path)
            if before is not None and before[:2] == (kind, stamp):
                continue  # the same row shipped again
            latest.pop((host, path), None)  # re-inserted below: the order is the latest event's
            latest[(host, path)] = _Event(tx, host, path, kind, stamp, None)
        for path, (_, _, model_id) in gone.items():
            if path not in new:
                latest.pop((host, path), None)
                latest[(host, path)] = _Event(tx, host, path, "removed", iso(at), model_id)
    return list(latest.values())


_LOOKUP = {
    "results": "SELECT host, path, scored_at, sha256, model_id, optimal_threshold, closest_recall_value, target_met"
    " FROM watcher.results JOIN unnest(%s::text[], %s::text[]) AS k(host, path) USING (host, path)",
    "rejections": "SELECT host, path, rejected_at, sha256, errors"
    " FROM watcher.rejections JOIN unnest(%s::text[], %s::text[]) AS k(host, path) USING (host, path)",
}


_PREVIOUS = (
    "SELECT host, path, previous_met, previous_recall, previous_threshold FROM watcher.experiments"
    " WHERE model_id = ANY(%s::text[]) AND previous_met IS NOT NULL"
)


def _resolve(conn: psycopg.Connection[Any], events: list[_Event], rules: Rules | None = None) -> list[FleetEntry]:
    """The events as entries, each scored or rejected one from its current row (dropped when
    that row changed since: a later window has it); with ``rules``, a scored one judged against
    the fleet's experiment before it."""
    current: dict[tuple[str, str, str], tuple[Any, ...]] = {}
    for kind, sql in _LOOKUP.items():
        keys = [(e.host, e.path) for e in events if e.kind == kind]
        if keys:
            hosts, paths = [k[0] for k in keys], [k[1] for k in keys]
            for row in conn.execute(sql.encode(), (hosts, paths)):
                current[(kind, row[0], row[1])] = row
    previous: dict[tuple[str, str], Point] = {}
    models = sorted({row[4] for (kind, _, _), row in current.items() if kind == "results"})
    if rules is not None and models:  # by model_id: the view's window runs over those models only
        for host, path, met, recall, threshold in conn.execute(_PREVIOUS.encode(), (models,)):
            previous[(host, path)] = Point(met, recall, threshold)
    out: list[FleetEntry] = []
    for e in events:
        if e.kind == "removed":
            entry = Entry(e.tx, e.stamp, e.path, "removed", None, e.model_id, None, None, None, None)
        else:
            row = current.get((e.kind, e.host, e.path))
            if row is None or row[2] != e.stamp:
                continue
            if e.kind == "results":
                _, _, at, sha, model_id, thr, rec, met = row
                before = previous.get((e.host, e.path))
                found = (
                    []
                    if before is None or rules is None
                    else regression.reasons(before, Point(bool(met), rec, thr), rules)
                )
                entry = Entry(e.tx, at, e.path, "scored", sha, model_id, None, thr, rec, bool(met), found or None)
            else:
                _, _, at, sha, errors = row
                entry = Entry(e.tx, at, e.path, "rejected", sha, None, errors, None, None, None)
        out.append(FleetEntry(e.host, entry))
    return out


def follow_fleet(
    follower: FleetFollower, stopped: Callable[[], bool], wait: Callable[[float], object]
) -> Iterator[list[FleetEntry]]:
    """Yield each non-empty batch of new outcomes until ``stopped()``. A lost server is logged
    once per outage (``central_unreachable``, then ``central_back``) and reconnected to with a
    short backoff (``wait``, an ``Event.wait``); following resumes where it stopped."""
    outage = Outage(log)
    while not stopped():
        try:
            if outage.down:
                follower.reconnect()
                outage.back()
            batch = follower.poll()
            if batch:
                yield batch
                continue
            follower.wait(POLL)
        except (psycopg.OperationalError, psycopg.InterfaceError, CentralError) as exc:
            follower.close()
            wait(outage.trouble(UNREACHABLE, central.one_line(exc)))
