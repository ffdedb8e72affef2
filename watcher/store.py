"""The SQLite database: opening, migrating, and every SQL statement watcher runs (the schema
itself is in :mod:`watcher.schema`).

One writer owns a :class:`Store` (a connection belongs to the thread that opened it); readers in
other processes see only committed states thanks to WAL. :meth:`Store.apply` writes a batch of
outcomes in one transaction, so a crash leaves either all of a batch or none of it.
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import sqlite_utils

from watcher.errors import DatabaseAccessError, StoreError
from watcher.outcomes import FileStat, Outcome, Rejected, Removed, Scored, StatKey, Unchanged, stored_path
from watcher.resultfile import RULES_VERSION
from watcher.schema import MIGRATIONS, REPORT_COLUMNS, SCHEMA_VERSION, statements

if TYPE_CHECKING:
    from watcher.config import Settings


_DETAIL_COLUMNS = (
    "model_id", "issuer", "optimal_threshold", "closest_recall_value", "experiment_date", "path",
    "target_recall", "target_met", "n_points", "curve",
)  # fmt: skip


def now_iso(at: float | None = None) -> str:
    """The current UTC time (or the ``time.time()`` value ``at``), ISO 8601 with milliseconds."""
    moment = datetime.now(UTC) if at is None else datetime.fromtimestamp(at, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Known(NamedTuple):
    """What the database holds for one path: its stat key ``(size, mtime_ns, inode)``, its hash,
    and whether it was judged under the current target and rules."""

    stat: StatKey | None
    sha256: str | None
    current: bool

    @property
    def reusable_sha(self) -> str | None:
        """The hash a re-read file may match to skip parsing: only an outcome judged under the
        current target and rules can be reused."""
        return self.sha256 if self.current else None


@dataclass(slots=True)
class Applied:
    """What one :meth:`Store.apply` changed."""

    scored: list[Scored] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    models: set[str] = field(default_factory=set)

    @property
    def changed(self) -> bool:
        """True when the report or the rejections may differ."""
        return bool(self.scored or self.rejected or self.removed)


class Store:
    """The database of one watch dir. Open with :meth:`open`; use from one thread."""

    def __init__(self, db: sqlite_utils.Database, path: Path, rules_version: int, target_recall: float | None) -> None:
        self.db = db
        self.path = path
        self.rules_version = rules_version
        self.target_recall = target_recall
        #: (st_dev, st_ino) of the database file and of its -wal and -shm as opened (None: absent).
        self.identity = {suffix: _identity(Path(f"{path}{suffix}")) for suffix in ("", "-wal", "-shm")}

    def moved_away(self) -> bool:
        """True when the path no longer names the file this connection has open (removed, or
        replaced by another file): what is written here is then lost to every reader."""
        return _identity(self.path) != self.identity[""]

    def forget_companions(self) -> None:
        """After :meth:`close` of a store whose file was removed: delete its -wal and -shm if
        they are still the ones it used. A new database at the same path must not start from
        another file's write-ahead log."""
        for suffix in ("-wal", "-shm"):
            companion = Path(f"{self.path}{suffix}")
            if self.identity[suffix] is not None and _identity(companion) == self.identity[suffix]:
                with contextlib.suppress(FileNotFoundError):
                    companion.unlink()

    @classmethod
    def open(cls, path: Path, target_recall: float = 0.85, rules_version: int = RULES_VERSION) -> Store:
        """Open (creating and migrating as needed) the database at ``path``, in WAL mode, for
        outcomes judged for ``target_recall`` under ``rules_version`` (stored outcomes made
        otherwise are judged again).

        New files get no world access. Raises :class:`StoreError`.
        """
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
            if not path.exists():
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o640))
            conn = sqlite3.connect(path, timeout=30.0, isolation_level=None)
            db = sqlite_utils.Database(conn)
            db.execute("PRAGMA busy_timeout = 30000")
            if db.journal_mode != "wal":
                db.enable_wal()
            # WAL + NORMAL: a crash loses at most the last commits, never consistency (and reconcile
            # redoes what was lost). Checkpoint less often than the default 1,000 pages: with
            # random UUID keys each commit dirties many pages.
            db.execute("PRAGMA synchronous = NORMAL")
            db.execute("PRAGMA wal_autocheckpoint = 10000")
            db.execute("PRAGMA journal_size_limit = 67108864")
            # A 32 MiB page cache (default 2 MiB): the model_id index takes inserts at random places,
            # which a small cache would read again from the OS.
            db.execute("PRAGMA cache_size = -32768")
            store = cls(db, path, rules_version, target_recall)
            store._migrate()
            store._probe_writable()
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: cannot open the database: {exc}") from None
        except OSError as exc:
            raise StoreError(f"{path}: cannot create the database: {exc.strerror}") from None
        return store

    @classmethod
    def from_settings(cls, settings: Settings) -> Store:
        """:meth:`open` the configured database for the configured target."""
        return cls.open(settings.db_path, settings.target_recall)

    @classmethod
    def open_readonly(cls, path: Path, target_recall: float | None = None, rules_version: int = RULES_VERSION) -> Store:
        """Open an existing database for reading only (``watcher report``/``status``, a worker
        comparing stat keys): no writes, no migration, so a user with read access only can use
        it while the daemon writes. ``target_recall`` and ``rules_version`` are those
        :meth:`stat_keys` compares with; without a target, no stored result counts as current.
        """
        _check_readable(path)
        try:
            conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True, timeout=30.0)
            store = cls(sqlite_utils.Database(conn), path, rules_version, target_recall)
            if store.version != SCHEMA_VERSION:
                raise StoreError(
                    f"{path}: schema version {store.version}, expected {SCHEMA_VERSION}; run 'watcher scan'"
                )
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: cannot read the database: {exc}") from None
        return store

    def close(self) -> None:
        """Close the connection."""
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @property
    def version(self) -> int:
        """The schema version of the open database."""
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        current = self.version
        if current > SCHEMA_VERSION:
            raise StoreError(f"{self.path}: schema version {current} is newer than this watcher ({SCHEMA_VERSION})")
        for version in range(current, SCHEMA_VERSION):
            with self.writing():
                for statement in statements(MIGRATIONS[version]):
                    self.db.execute(statement)
                self.db.execute(f"PRAGMA user_version = {version + 1}")

    def _probe_writable(self) -> None:
        # Writable now, or one clear error now (a read-only file or place). A write lock that
        # another connection holds says nothing either way; the writes themselves wait for it.
        self.db.execute("PRAGMA busy_timeout = 0")
        try:
            with self.writing():
                pass
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:
                raise
        finally:
            self.db.execute("PRAGMA busy_timeout = 30000")

    # -- reading ---------------------------------------------------------------------------

    def size_hint(self) -> int:
        """About how many paths are stored (at least as many as there are): read from the end
        of the two tables' rowid trees, without counting them."""
        row = self.db.execute(
            "SELECT coalesce((SELECT max(rowid) FROM results), 0) + coalesce((SELECT max(rowid) FROM rejections), 0)"
        ).fetchone()
        return int(row[0])

    def stat_keys(self, under: str = "", outside: Sequence[str] = ()) -> dict[str, StatKey | None]:
        """Every stored path at or below ``under``: its stat key ``(size, mtime_ns, inode)`` when
        its outcome was made under the current target and rules, else ``None`` (judge it again).
        With ``outside`` (folders directly below the watch dir), only the paths in none of them.

        What a reconcile compares each listed file with; the hashes are fetched (with
        :meth:`known_paths`) only for the few paths that turn out changed.
        """
        where, params = _under(stored_path(under))
        args: dict[str, Any] = {**params, "rules": self.rules_version, "target": self.target_recall}
        if outside:
            # The path's first folder ('' for a file at the top), looked up in the given ones.
            where += " AND substr(path, 1, instr(path, '/')) NOT IN (SELECT value FROM json_each(:outside))"
            args["outside"] = json.dumps([f"{stored_path(folder)}/" for folder in outside])
        out: dict[str, StatKey | None] = {}
        for table in ("results", "rejections"):
            # A result is current only if scored for today's target; a rejection does not depend on it.
            extra = " AND target_recall = :target" if table == "results" else ""
            sql = f"SELECT path, size, mtime_ns, inode, rules_version = :rules{extra} FROM {table} WHERE {where}"
            # One row per stored file in every reconcile: fetched at once, no object per row
            # beyond the key (a rejection read without a stat has a key of NULLs: never equal).
            rows = self.db.execute(sql, args).fetchall()
            out.update({p: (size, mtime_ns, inode) if current else None for p, size, mtime_ns, inode, current in rows})
        return out

    def known_paths(self, paths: Sequence[str]) -> dict[str, Known]:
        """What is stored for each of ``paths`` (absent paths are left out), keyed as given: a
        path that is not valid UTF-8 is looked up in its :func:`~watcher.outcomes.stored_path` form."""
        out: dict[str, Known] = {}
        for chunk in _chunks(paths, 500):
            shown = [stored_path(p) for p in chunk]
            params = {f"p{i}": s for i, s in enumerate(shown)}
            found = self._known(f"path IN ({', '.join(':' + k for k in params)})", params)
            if shown != chunk:  # keyed as given
                found = {p: found[s] for p, s in zip(chunk, shown, strict=True) if s in found}
            out.update(found)
        return out

    def _known(self, where: str, params: dict[str, str]) -> dict[str, Known]:
        out: dict[str, Known] = {}
        args = {**params, "rules": self.rules_version, "target": self.target_recall}
        for table in ("results", "rejections"):
            # A result is current only if scored for today's target; a rejection does not depend on it.
            extra = " AND target_recall = :target" if table == "results" else ""
            sql = (
                f"SELECT path, size, mtime_ns, inode, sha256, rules_version = :rules{extra} FROM {table} WHERE {where}"
            )
            make = Known._make  # once per stored file in every reconcile: the cheapest constructor
            for path, size, mtime_ns, inode, sha, current in self.db.execute(sql, args):
                out[path] = make(((size, mtime_ns, inode) if size is not None else None, sha, current == 1))
        return out

    def report_rows(
        self,
        issuer: str | None = None,
        model: str | None = None,
        below_target: bool = False,
        sort: str | None = None,
        desc: bool = False,
    ) -> Iterator[tuple[Any, ...]]:
        """The ``report`` view (tuples in REPORT_COLUMNS order), optionally filtered by issuer,
        model_id prefix, or to the models whose best point misses the target; sorted by ``sort``
        (one of REPORT_COLUMNS; descending with ``desc``), then by model_id. A cursor: rows stream,
        they are not all in memory."""
        sql = f"SELECT {', '.join(REPORT_COLUMNS)} FROM report WHERE 1"
        args: dict[str, Any] = {}
        if issuer:
            sql += " AND issuer = :issuer COLLATE NOCASE"
            args["issuer"] = issuer
        if model:
            sql += " AND model_id LIKE :model ESCAPE '\\'"
            args["model"] = model.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        if below_target:
            sql += " AND target_met = 0"
        order = "model_id"
        if sort is not None and sort != "model_id":
            if sort not in REPORT_COLUMNS:
                raise ValueError(f"not a report column: {sort!r}")
            order = f"{sort}{' DESC' if desc else ''}, model_id"
        elif desc:
            order = "model_id DESC"
        return iter(self.db.execute(f"{sql} ORDER BY {order}", args))

    def report_details(self, limit: int | None = None) -> Iterator[tuple[Any, ...]]:
        """The report's rows with what the HTML page draws: model_id, issuer, optimal_threshold,
        closest_recall_value, experiment_date, path, target_recall, target_met, n_points, curve
        (bytes), by model_id. With ``limit``, only that many models: those with the most recent
        experiments."""
        columns = ", ".join(f"r.{c}" for c in _DETAIL_COLUMNS)
        if limit is None:
            sql = f"SELECT {columns} FROM report v JOIN results r ON r.path = v.path"
        else:
            # Newest first along results_recent, keeping a row only if it is its model's report row
            # (the same rule as the view, looked up in results_latest): reads about ``limit`` rows
            # instead of materialising the whole report to sort it.
            sql = (
                f"SELECT * FROM (SELECT {columns} FROM results r WHERE r.path = ("
                "SELECT l.path FROM results l WHERE l.model_id = r.model_id ORDER BY l.experiment_at DESC, l.path DESC"
                f" LIMIT 1) ORDER BY r.experiment_at DESC, r.path DESC LIMIT {int(limit)})"
            )
        return iter(self.db.execute(sql + " ORDER BY 1"))  # model_id

    def page_columns(self) -> dict[str, Any]:
        """Every current result for the HTML page as columns that SQLite builds in one pass over
        the table (JSON arrays and strings, no Python object per row), in table order: reading
        100,000 rows along an index would cost a random page lookup each.

        Keys: ``ids``, ``issuers``, ``thr``, ``rec``, ``dates``, ``paths`` (JSON arrays), ``met``
        (a ``0``/``1`` string), ``curves`` (the curves' bytes, concatenated); ``npts``,
        ``targets`` and ``lengths`` (of the curves, in bytes) as one number when every row has the
        same, else a JSON array; and ``order``: the rows' positions by model_id, each model's
        report row first (the report view's rule: latest experiment instant, on a tie the greatest
        path), then its superseded files, read from the covering index ``results_latest`` alone
        (its entries carry the rowid); ``by_path`` and ``by_date``: the positions by path, and by
        experiment instant then path (from the path index and ``results_recent``).
        """
        keys = ("rowids", "ids", "issuers", "thr", "rec", "met", "dates", "paths", "curves", "curve_bytes")
        same = ("npts", "targets", "lengths")
        sql_of = {"npts": "n_points", "targets": "target_recall", "lengths": f"length({_CURVE})"}
        row = self.db.execute(
            "SELECT json_group_array(rowid), json_group_array(model_id), json_group_array(issuer),"
            " json_group_array(optimal_threshold), json_group_array(closest_recall_value),"
            " coalesce(group_concat(target_met, ''), ''), json_group_array(experiment_date), json_group_array(path),"
            f" CAST(coalesce(group_concat({_CURVE}, ''), '') AS BLOB), coalesce(sum(length({_CURVE})), 0), "
            + ", ".join(f"min({sql_of[k]}), max({sql_of[k]})" for k in same)
            + " FROM results"  # a table scan: rowid order
        ).fetchone()
        out: dict[str, Any] = dict(zip(keys, row, strict=False))
        if len(out["curves"]) != out.pop("curve_bytes"):  # the blobs as text lost bytes: fetch them as hex
            (text,) = self.db.execute(f"SELECT coalesce(group_concat(hex({_CURVE}), ''), '') FROM results").fetchone()
            out["curves"] = bytes.fromhex(text)
        for k, (low, high) in zip(same, zip(row[len(keys) :: 2], row[len(keys) + 1 :: 2], strict=True), strict=True):
            everywhere = low is not None and low == high  # one value in every row (None: no rows)
            out[k] = (
                low
                if everywhere
                else self.db.execute(f"SELECT json_group_array({sql_of[k]}) FROM results").fetchone()[0]
            )
        orders = self.db.execute(
            "SELECT (SELECT json_group_array(rowid) FROM"
            " (SELECT rowid FROM results ORDER BY model_id, experiment_at DESC, path DESC)),"
            " (SELECT json_group_array(rowid) FROM (SELECT rowid FROM results ORDER BY path)),"
            " (SELECT json_group_array(rowid) FROM (SELECT rowid FROM results ORDER BY experiment_at, path))"
        ).fetchone()
        rowids = json.loads(out.pop("rowids"))
        if rowids and rowids[-1] - rowids[0] == len(rowids) - 1:  # no gaps: positions are offsets
            first = rowids[0]
            positions = [[r - first for r in json.loads(x)] for x in orders]
        else:
            position = {rowid: i for i, rowid in enumerate(rowids)}
            positions = [[position[r] for r in json.loads(x)] for x in orders]
        out["order"], out["by_path"], out["by_date"] = positions
        return out

    def earlier_outcomes(self, limit: int) -> list[tuple[Any, ...]]:
        """Of the newest ``limit`` history entries, those naming a model_id that no current result
        file accounts for (content since replaced, files removed), newest first:
        ``(model_id, at, path, outcome, sha256)``. Such an entry always has a later one for its
        path, so only paths with two entries or more are looked at (found along ``history_path``
        without sorting)."""
        (top,) = self.db.execute("SELECT coalesce(max(id), 0) FROM history").fetchone()
        sql = (
            "SELECT model_id, at, path, outcome, sha256 FROM history h"
            " WHERE path IN (SELECT path FROM history GROUP BY path HAVING count(*) > 1)"
            " AND id > :floor AND model_id IS NOT NULL AND NOT EXISTS"
            " (SELECT 1 FROM results r WHERE r.path = h.path AND r.sha256 IS h.sha256) ORDER BY id DESC"
        )
        return self.db.execute(sql, {"floor": top - int(limit)}).fetchall()

    @contextlib.contextmanager
    def checkpointing(self) -> Iterator[None]:
        """Copy the write-ahead log into the database file while the block runs, in a thread on a
        connection of its own.

        Closing the last connection makes that copy (and its fsync) itself: at the end of a bulk
        scan, tens of MiB that the caller would wait for. Done meanwhile, the copy overlaps the
        caller's work (sqlite3 releases the GIL). A checkpoint that cannot run now is left to
        the close.
        """

        def copy_wal() -> None:
            with contextlib.suppress(sqlite3.Error):
                conn = sqlite3.connect(self.path, timeout=1.0)
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                finally:
                    conn.close()

        thread = threading.Thread(target=copy_wal, name="watcher-checkpoint", daemon=True)
        thread.start()
        try:
            yield
        finally:
            thread.join()

    def checkpoint(self) -> bool:
        """Copy the write-ahead log into the database file and empty it, if no reader holds an
        older state (waiting at most a moment for one): then the main file alone is current (a
        plain copy of it is a consistent backup of that moment) and the log takes no space.
        True when the log was emptied; otherwise the next try will do it."""
        self.db.execute("PRAGMA busy_timeout = 100")
        try:
            busy, _, _ = self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            self.db.execute("PRAGMA busy_timeout = 30000")
        return not busy

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """One write transaction that holds the write lock from its first statement on
        (``BEGIN IMMEDIATE``), committed at the end or rolled back on an exception.

        A deferred ``BEGIN`` that reads first and writes later fails at once with
        SQLITE_BUSY_SNAPSHOT when another connection commits in between (the busy timeout
        does not apply to that case); taking the lock up front makes the statement wait for it.
        """
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """One read transaction: every query inside sees the same committed state."""
        self.db.execute("BEGIN")
        try:
            yield
        finally:
            self.db.execute("COMMIT")

    def rejection_rows(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Current rejections, newest first, with ``errors`` decoded."""
        sql = "SELECT path, errors, rejected_at FROM rejections ORDER BY rejected_at DESC, path"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [{**row, "errors": json.loads(row["errors"])} for row in self.db.query(sql)]

    def counts(self) -> dict[str, int]:
        """Numbers of models in the report, current results, rejections and history entries."""
        row = self.db.execute(
            "SELECT (SELECT count(DISTINCT model_id) FROM results), (SELECT count(*) FROM results),"
            " (SELECT count(*) FROM rejections), (SELECT count(*) FROM history)"
        ).fetchone()
        return dict(zip(("models", "results", "rejections", "history"), row, strict=True))

    def last_change(self) -> str | None:
        """When the newest outcome in ``history`` was recorded (by a daemon or a scan), or ``None``."""
        row = self.db.execute("SELECT at FROM history ORDER BY id DESC LIMIT 1").fetchone()
        return None if row is None else str(row[0])

    def history_after(self, after: int, rejected_only: bool = False, limit: int = 1000) -> list[tuple[Any, ...]]:
        """Up to ``limit`` history entries with an id above ``after``, oldest first: id, at, path,
        outcome, sha256, model_id, detail (a rejection's errors as JSON), then, for a scored
        entry whose file is still stored with that content, optimal_threshold,
        closest_recall_value and target_met (else NULLs)."""
        where = " AND h.outcome = 'rejected'" if rejected_only else ""
        sql = (
            "SELECT h.id, h.at, h.path, h.outcome, h.sha256, h.model_id, h.detail,"
            " r.optimal_threshold, r.closest_recall_value, r.target_met"
            " FROM history h LEFT JOIN results r ON h.outcome = 'scored' AND r.path = h.path AND r.sha256 = h.sha256"
            f" WHERE h.id > ?{where} ORDER BY h.id LIMIT ?"
        )
        return self.db.execute(sql, [after, limit]).fetchall()

    def history_start(self, back: int = 0, rejected_only: bool = False) -> int:
        """The id to follow the history from: the newest entry's, or the one before the ``back``
        newest (rejections only with ``rejected_only``); 0 for an empty history."""
        where = "WHERE outcome = 'rejected'" if rejected_only else ""
        if back <= 0:
            row = self.db.execute("SELECT coalesce(max(id), 0) FROM history").fetchone()
        else:
            sql = f"SELECT coalesce(min(id) - 1, 0) FROM (SELECT id FROM history {where} ORDER BY id DESC LIMIT ?)"
            row = self.db.execute(sql, [back]).fetchone()
        return int(row[0])

    def duplicates(self, models: Iterable[str]) -> dict[str, list[str]]:
        """For each given model_id held by several files, its paths, the winner first.

        Looks up only the given model_ids (through the ``results_latest`` index), so the cost
        follows the batch, not the table.
        """
        out: dict[str, list[str]] = {}
        for chunk in _chunks(sorted(models), 500):
            sql = (
                f"SELECT model_id, path FROM results WHERE model_id IN ({','.join('?' * len(chunk))}) "
                "ORDER BY model_id, experiment_at DESC, path DESC"
            )
            for model_id, path in self.db.execute(sql, list(chunk)):
                out.setdefault(model_id, []).append(path)
        return {model_id: paths for model_id, paths in out.items() if len(paths) > 1}

    # -- writing ---------------------------------------------------------------------------

    def apply(self, outcomes: Sequence[Outcome]) -> Applied:
        """Write a batch of outcomes in one transaction and return what changed.

        Scored/Rejected replace the path's row in the other table too; Unchanged refreshes the
        stat key only; Removed deletes the path. Every real change appends to ``history``. If a
        path occurs more than once, its last outcome counts. Statements are batched
        (``executemany``): per-row round trips dominate a bulk scan otherwise.
        """
        latest = {o.path: o for o in outcomes}
        applied = Applied()
        at = now_iso()
        scored = [o for o in latest.values() if isinstance(o, Scored)]
        rejected = [o for o in latest.values() if isinstance(o, Rejected)]
        unchanged = [o for o in latest.values() if isinstance(o, Unchanged)]
        removed = [o.path for o in latest.values() if isinstance(o, Removed)]
        ex = self.db.conn.executemany
        with self.writing():
            old_models = self._column("results", "model_id", [*latest])
            old_rejections = self._rejection_keys([o.path for o in rejected])
            # A rejection identical to the stored one (same content, same reasons) is not news.
            restat = [(*_stat_tuple(o.stat), o.path) for o in unchanged]
            fresh: list[tuple[Rejected, str]] = []
            for o in rejected:
                errors = json.dumps([p.as_dict() for p in o.errors], ensure_ascii=False)
                if old_rejections.get(o.path) == (errors, o.sha256):
                    restat.append((*_stat_tuple(o.stat), o.path))
                else:
                    fresh.append((o, errors))
            gone = self._column("rejections", "sha256", removed)
            ex("DELETE FROM rejections WHERE path = ?", [(o.path,) for o in scored])
            ex(
                "INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        o.path, o.model_id, o.issuer, o.experiment_date, o.experiment_at, o.optimal_threshold,
                        o.closest_recall_value, o.distance, int(o.target_met), o.target_recall, o.n_points,
                        o.stat.size, o.stat.mtime_ns, o.stat.inode, o.sha256, self.rules_version, at, o.curve,
                    )
                    for o in scored
                ],
            )  # fmt: skip
            ex("DELETE FROM results WHERE path = ?", [(o.path,) for o, _ in fresh])
            ex(
                "INSERT OR REPLACE INTO rejections VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(o.path, e, *_stat_tuple(o.stat), o.sha256, self.rules_version, at) for o, e in fresh],
            )
            for table in ("results", "rejections"):
                ex(f"UPDATE {table} SET size = ?, mtime_ns = ?, inode = ? WHERE path = ?", restat)
            ex("DELETE FROM results WHERE path = ?", [(p,) for p in removed])
            ex("DELETE FROM rejections WHERE path = ?", [(p,) for p in removed])
            real_removals = [p for p in removed if p in old_models or p in gone]
            history: list[tuple[Any, ...]] = [(at, o.path, "scored", o.sha256, o.model_id, None) for o in scored]
            history += [(at, o.path, "rejected", o.sha256, None, e) for o, e in fresh]
            history += [(at, p, "removed", gone.get(p), old_models.get(p), None) for p in real_removals]
            ex("INSERT INTO history (at, path, outcome, sha256, model_id, detail) VALUES (?, ?, ?, ?, ?, ?)", history)
        applied.scored, applied.rejected, applied.removed = scored, [o for o, _ in fresh], real_removals
        applied.models = {o.model_id for o in scored}
        applied.models.update(m for p, m in old_models.items() if not isinstance(latest[p], Unchanged))
        return applied

    def _column(self, table: str, column: str, paths: Sequence[str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for chunk in _chunks(paths, 500):
            sql = f"SELECT path, {column} FROM {table} WHERE path IN ({','.join('?' * len(chunk))})"
            out.update(self.db.execute(sql, list(chunk)).fetchall())
        return out

    def _rejection_keys(self, paths: Sequence[str]) -> dict[str, tuple[str, str | None]]:
        out: dict[str, tuple[str, str | None]] = {}
        for chunk in _chunks(paths, 500):
            sql = (
                f"SELECT path, errors, sha256 FROM rejections WHERE rules_version = ? "
                f"AND path IN ({','.join('?' * len(chunk))})"
            )
            out.update((p, (e, h)) for p, e, h in self.db.execute(sql, [self.rules_version, *chunk]))
        return out

    # -- daemon status ---------------------------------------------------------------------

    def status(self) -> dict[str, Any] | None:
        """The daemon's last recorded status row, or ``None`` if no daemon ever ran on this database."""
        rows = list(self.db.query("SELECT * FROM daemon_status WHERE id = 1"))
        return rows[0] if rows else None

    def set_status(self, **values: Any) -> None:
        """Set columns of the daemon status row (created on first use)."""
        with self.writing():
            self.db.execute("INSERT OR IGNORE INTO daemon_status (id) VALUES (1)")
            if values:
                assigns = ", ".join(f"{key} = :{key}" for key in values)
                self.db.execute(f"UPDATE daemon_status SET {assigns} WHERE id = 1", values)

    def add_counts(self, scored: int, rejected: int, removed: int, **values: Any) -> None:
        """Add to the status counters, and set any other status columns, in one statement."""
        assigns = "".join(f", {key} = :{key}" for key in values)
        self.db.execute(
            "UPDATE daemon_status SET files_scored = files_scored + :s, files_rejected = files_rejected + :r,"
            f" files_removed = files_removed + :d{assigns} WHERE id = 1",
            {"s": scored, "r": rejected, "d": removed, **values},
        )


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _check_readable(path: Path) -> None:
    """Raise :class:`StoreError` unless ``path`` is a database file this user may read: a missing
    one says how to create it, an unreadable one which group to join."""
    try:
        if path.is_file() and os.access(path, os.R_OK):
            return
        exists = path.is_file()
    except PermissionError:  # a folder on the way is closed to this user
        exists = True
    if not exists:
        raise StoreError(f"{path}: no database here yet; run 'watcher scan' or 'watcher run' first")
    raise DatabaseAccessError(f"permission denied: {path}; {_access_hint(path)}")


def _access_hint(path: Path) -> str:
    # The service creates its folder 0750 and its files 0640, group-readable: readers join that
    # group. Name the group of the nearest folder or file on the way that this user can stat.
    for candidate in (path, *path.absolute().parents):
        try:
            gid = candidate.stat().st_gid
        except OSError:
            continue
        try:
            group = grp.getgrgid(gid).gr_name
        except KeyError:
            group = str(gid)
        return f"join the group that owns it (e.g. `sudo usermod -aG {group} $USER`, then log in again)"
    return "ask its owner for read access"


# The drawn curve's bytes; rows stored before rules version 3 hold none (text then) until re-judged.
_CURVE = "iif(typeof(curve) = 'blob', curve, x'')"


def _stat_tuple(stat: FileStat | None) -> tuple[int | None, int | None, int | None]:
    return (stat.size, stat.mtime_ns, stat.inode) if stat is not None else (None, None, None)


def _under(under: str) -> tuple[str, dict[str, str]]:
    if not under:
        return "1", {}
    # Paths below a folder: 'dir/' prefix, compared as a range so the primary key index is used.
    return "path >= :lo AND path < :hi", {"lo": under + "/", "hi": under + "0"}


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
