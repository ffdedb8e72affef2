"""The daemon's shipper thread: this host's state, shipped to the fleet's central PostgreSQL.

The local ``history`` table is the outbox: append-only, each committed change one entry with a
growing id. The shipper reads the entries after the last one shipped, looks up the current
local row of each path they name (``results``, ``rejections``, or neither: removed), and writes
those rows for (host, path) centrally, replacing what was there. The last shipped history id is
kept IN PostgreSQL (``watcher.hosts.shipped_id``), updated in the same transaction as the rows and
read under a row lock at the start of each batch: progress advances exactly with the central
commit, so a crash at any moment (of this host or of the server) leaves either the batch and its
mark, or neither, and the batch is shipped again; shipping a path again writes the same row.

Local reads (:mod:`watcher.fleet.outbox`) take one read transaction per batch on a read-only
connection (WAL: the writer never waits for them). While the server writes one batch, the next is
read on a helper thread with a connection of its own, so the host's reading and the server's
writing overlap; that batch is used only if the mark read under the lock is where it starts.

Failures never reach the daemon: an unreachable server is logged once per outage as
``central_unreachable`` (``central_back`` when it answers again), retried with a short backoff,
and the backlog caught up in full batches; a refusal (no privilege, unregistered host, old
schema) is logged as ``central_refused`` once per distinct reason and retried slowly.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import psycopg

from watcher import __version__
from watcher.config import Settings
from watcher.errors import CentralError
from watcher.fleet import central, outbox
from watcher.fleet.outage import BACKOFF, Outage
from watcher.logs import get_logger

log = get_logger("watcher.shipper")

#: History entries per central transaction.
BATCH = 10000
#: Without a nudge, look for new history entries this often (seconds).
POLL = 1.0
#: Refresh this host's ``last_seen`` this often while nothing changes (seconds).
HEARTBEAT = 10.0


def _insert(table: str, columns: tuple[str, ...], types: tuple[str, ...]) -> bytes:
    # The batch's rows arrive as one JSON array of row arrays (see watcher.fleet.outbox), taken apart by
    # the server. (COPY is not allowed into a table with row-level security.)
    values = ", ".join(f"(e->>{i})::{t}" for i, t in enumerate(types))
    rows = "jsonb_array_elements(%s::jsonb) e"
    return f"INSERT INTO watcher.{table} (host, {', '.join(columns)}) SELECT %s, {values} FROM {rows}".encode()


_INSERT_RESULTS = _insert("results", outbox.RESULT_COLUMNS, outbox.RESULT_TYPES)
_INSERT_REJECTIONS = _insert("rejections", outbox.REJECTION_COLUMNS, outbox.REJECTION_TYPES)
_DELETE = {
    t: f"DELETE FROM watcher.{t} WHERE host = %s AND path IN (SELECT json_array_elements_text(%s::json))".encode()
    for t in ("results", "rejections")
}
_MARK = (
    "UPDATE watcher.hosts SET shipped_id = %s, shipped_entry = %s, local_max_id = %s, origin = %s,"
    " results = coalesce(%s, results), rejections = coalesce(%s, rejections), version = %s, last_seen = now(),"
    " last_shipped = now(),"
    " first_seen = coalesce(first_seen, now()) WHERE host = %s"
)


def diverged(shipped: int, origin: str | None, mark: str | None, batch: outbox.Batch) -> str | None:
    """Why the local history that ``batch`` was read from is not the one shipped up to the central
    mark ``shipped`` (with the ``origin`` and the entry identity ``mark`` recorded with it), or
    None if it is: the same first entry, and the very entry at the mark (id, time, outcome, path,
    sha256). An entry id alone proves nothing: a history restored from a backup or rolled back by
    a power cut grows again from an older id, with other entries under the same ids."""
    if origin != batch.origin and not (origin is None and shipped == 0):
        return "another local database (recreated or replaced)"
    if shipped == 0:
        return None  # nothing shipped from it yet: shipping starts at its beginning anyway
    if shipped > batch.local_max:
        return "the local history ends before the central mark (restored from a backup or rolled back)"
    if mark is None:
        return "the central mark was recorded without its entry (by an older watcher) and cannot be checked"
    if batch.start_entry != mark:
        return "the local entry at the central mark is not the one shipped (restored from a backup or rolled back)"
    return None


class Shipper(threading.Thread):
    """Ships this host's changes to ``settings.central_url`` until :attr:`stop_event` is set.
    Call :meth:`nudge` after each local commit for low latency (otherwise it polls)."""

    def __init__(
        self, settings: Settings, stop: threading.Event | None = None, after: threading.Event | None = None
    ) -> None:
        super().__init__(name="watcher-shipper", daemon=True)
        assert settings.central_url is not None
        self.url = settings.central_url
        self.host = settings.host_name
        self.db_path = settings.db_path
        self.stop_event = stop or threading.Event()
        self.nudged = threading.Event()
        self.after = after  # start shipping once this is set (the daemon's first reconcile done)
        self.conn: psycopg.Connection[Any] | None = None
        self.local: sqlite3.Connection | None = None
        self.ahead_local: sqlite3.Connection | None = None  # the read-ahead thread's own
        self.pool: ThreadPoolExecutor | None = None
        self.ahead: Future[outbox.Batch] | None = None
        self.outage = Outage(log, name_after=True, host=self.host)
        self.last_seen = -float("inf")
        self.shipped_id = 0  # as read from the central database in the last batch
        self.batches = 0

    @property
    def failures(self) -> int:
        """Failed tries in a row (0 while shipping works)."""
        return self.outage.failures

    def nudge(self) -> None:
        """Something was committed locally: ship it now (thread-safe, cheap)."""
        self.nudged.set()

    def stop(self) -> None:
        """Ask the thread to end (after shipping what is left, for a few seconds at most)."""
        self.stop_event.set()
        self.nudged.set()

    def run(self) -> None:
        """Thread body; never raises."""
        try:
            while self.after is not None and not self.after.wait(0.5):
                if self.stop_event.is_set():
                    return
            while not self.stop_event.is_set():
                self.nudged.clear()  # before the batch: a commit made meanwhile nudges again
                delay = self._turn()
                if delay is None:
                    continue  # more to ship: at once
                if not self.outage.down:
                    self.nudged.wait(delay)
                else:  # in trouble: local commits do not hasten the next try, only time does
                    self.stop_event.wait(delay)
            if not self.outage.down and self.conn is not None:
                self._drain_before_exit()
        finally:
            self._close()

    def _turn(self) -> float | None:
        """Ship one batch; return None if more is waiting, else how long to wait."""
        try:
            more = self.step()
        except Exception as exc:  # noqa: BLE001 - every failure is logged and retried (see _failed)
            self._close_central()
            return self._failed(exc)
        self.outage.back()
        return None if more else POLL

    def _failed(self, exc: Exception) -> float:
        """Log the failure once per distinct trouble (:class:`Outage`); how long to wait."""
        if isinstance(exc, psycopg.Error):
            return self.outage.failed(exc)
        if isinstance(exc, CentralError):
            return self.outage.trouble("central_refused", str(exc))
        if isinstance(exc, sqlite3.Error):
            return self.outage.trouble("central_local_read_failed", str(exc), BACKOFF)
        # A bug must not end shipping silently: logged with its traceback, retried.
        log.exception("central_shipper_error", host=self.host)
        return self.outage.trouble("central_shipper_error", repr(exc))

    def _drain_before_exit(self, budget: float = 5.0) -> None:
        """On shutdown, ship what the last commits left, for a few seconds at most (the next
        start ships whatever remains)."""
        deadline = time.monotonic() + budget
        try:
            while time.monotonic() < deadline and self.step():
                pass
        except (psycopg.Error, CentralError, sqlite3.Error) as exc:
            log.warning("central_ship_interrupted", host=self.host, error=str(exc).splitlines()[0])

    # -- one batch ---------------------------------------------------------------------------

    def step(self) -> bool:
        """Ship the next batch of history entries in one central transaction. True if more wait.

        While the server writes a batch, the next one is read locally on a helper thread (see
        :mod:`watcher.fleet.outbox`: any batch may be shipped at any later time); it is used only if the
        central mark, read under its row lock, is where that batch starts.

        Raises psycopg errors, :class:`CentralError` and ``sqlite3.Error``.
        """
        local = self._local()
        # Idle (nothing new locally since the last batch) and no heartbeat due: not a word to the
        # server (a row lock per host per second would be a write on the primary).
        if (
            self.conn is not None
            and not self.conn.closed
            and time.monotonic() - self.last_seen < HEARTBEAT
            and outbox.last_id(local) == self.shipped_id
        ):
            return False
        conn = self._central()
        with conn.transaction():
            row = conn.execute(
                "SELECT shipped_id, origin, shipped_entry FROM watcher.hosts WHERE host = %s FOR UPDATE", (self.host,)
            ).fetchone()
            if row is None:
                raise CentralError(self._why_not(conn))
            shipped, origin, mark = int(row[0]), row[1], row[2]
            batch = self._take_ahead(shipped, origin) or outbox.read(local, shipped, BATCH)
            why = diverged(shipped, origin, mark, batch)
            if why is not None:
                self._start_over(conn, why, origin, batch.origin)
                shipped = 0
                batch = outbox.read(local, 0, BATCH)
            if batch.empty:
                self._heartbeat(conn, batch.local_max, batch.origin)
                self.shipped_id = shipped
                return False
            if batch.end < batch.local_max:
                self._read_ahead(batch.end)
            for table in ("results", "rejections"):
                conn.execute(_DELETE[table], (self.host, batch.paths))
            if batch.results:
                conn.execute(_INSERT_RESULTS, (self.host, batch.results))
            if batch.rejections:
                conn.execute(_INSERT_REJECTIONS, (self.host, batch.rejections))
            n_results, n_rejections = batch.counts or (None, None)
            marked = conn.execute(
                _MARK,
                (batch.end, batch.end_entry, batch.local_max, batch.origin, n_results, n_rejections, __version__,
                 self.host),
            )  # fmt: skip
            if marked.rowcount != 1:
                raise CentralError(self._not_ours())
            conn.execute("SELECT pg_notify(%s, %s)", (central.CHANNEL, self.host))
        self.shipped_id = batch.end
        self.batches += 1
        self.last_seen = time.monotonic()
        log.debug(
            "central_shipped", host=self.host, entries=batch.end - shipped, paths=batch.n_paths, shipped_id=batch.end
        )
        return batch.end < batch.local_max

    def _read_ahead(self, start: int) -> None:
        """Read the batch after ``start`` on the helper thread, with a connection of its own."""
        if self.pool is None:
            self.pool = ThreadPoolExecutor(1, thread_name_prefix="watcher-shipper-read")
        if self.ahead_local is None:
            self.ahead_local = outbox.connect(self.db_path)
        self.ahead = self.pool.submit(outbox.read, self.ahead_local, start, BATCH)

    def _take_ahead(self, shipped: int, origin: str | None) -> outbox.Batch | None:
        """The batch read ahead, if it starts at the central mark and comes from the history that
        was shipped so far; None otherwise. Waits for the read to finish either way (the helper's
        connection is then free again); its ``sqlite3.Error`` is raised only if it is used."""
        ahead, self.ahead = self.ahead, None
        if ahead is None:
            return None
        try:
            batch = ahead.result()
        except sqlite3.Error:
            return None  # read again now, in this thread: a lasting problem is reported from there
        return batch if batch.start == shipped and batch.origin == origin else None

    def _start_over(
        self, conn: psycopg.Connection[Any], why: str, origin: str | None, local_origin: str | None
    ) -> None:
        # The local history is not the one shipped so far (recreated, restored from a backup,
        # rolled back): its ids mean something else. Replace this host's rows from the beginning,
        # starting in the transaction of the first batch.
        log.warning("central_resync", host=self.host, reason=why, shipped_origin=origin, local_origin=local_origin)
        conn.execute("DELETE FROM watcher.results WHERE host = %s", (self.host,))
        conn.execute("DELETE FROM watcher.rejections WHERE host = %s", (self.host,))
        conn.execute(
            "UPDATE watcher.hosts SET shipped_id = 0, shipped_entry = NULL, origin = NULL WHERE host = %s", (self.host,)
        )

    def _heartbeat(self, conn: psycopg.Connection[Any], local_max: int, local_origin: str | None) -> None:
        if time.monotonic() - self.last_seen < HEARTBEAT:
            return
        conn.execute(
            "UPDATE watcher.hosts SET last_seen = now(), local_max_id = %s, version = %s,"
            " origin = coalesce(origin, %s), first_seen = coalesce(first_seen, now()) WHERE host = %s",
            (local_max, __version__, local_origin, self.host),
        )
        self.last_seen = time.monotonic()

    def _why_not(self, conn: psycopg.Connection[Any]) -> str:
        # The row lock sees only the hosts this role may update: is the host unknown, or another's?
        if conn.execute("SELECT 1 FROM watcher.hosts WHERE host = %s", (self.host,)).fetchone():
            return self._not_ours()
        return (
            f"host {self.host!r} is not registered in the central database: as its owner, run "
            f"'watcher central add-host {self.host} --role ROLE'"
        )

    def _not_ours(self) -> str:
        return f"this role may not write host {self.host!r}'s rows (the host is bound to another role)"

    # -- connections ---------------------------------------------------------------------------

    def _central(self) -> psycopg.Connection[Any]:
        if self.conn is None or self.conn.closed:
            # Not central.connect(): its CentralError would hide that this is the server unreachable.
            conn = psycopg.connect(self.url, connect_timeout=5, application_name=f"watcher {self.host}")
            try:
                central.ensure_schema(conn)  # migrates only if this role owns the database
            except BaseException:
                conn.close()
                raise
            self.conn = conn
        return self.conn

    def _local(self) -> sqlite3.Connection:
        if self.local is None:
            self.local = outbox.connect(self.db_path)
        return self.local

    def _close_central(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(psycopg.Error):  # closing a broken connection: nothing more to do
                self.conn.close()
            self.conn = None

    def _close(self) -> None:
        self._close_central()
        if self.pool is not None:
            self.pool.shutdown(wait=True)  # a read ahead ends within its batch
            self.pool, self.ahead = None, None
        for local in (self.local, self.ahead_local):
            if local is not None:
                local.close()
        self.local = self.ahead_local = None
