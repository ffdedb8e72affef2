"""The SQLite database: opening, migrating, and every SQL statement watcher runs (the schema
itself is in :mod:`watcher.schema`).

One writer owns a :class:`Store` (a connection belongs to the thread that opened it); readers in
other processes see only committed states thanks to WAL. :meth:`Store.apply` writes a batch of
outcomes in one transaction, so a crash leaves either all of a batch or none of it.
"""

from __future__ import annotations

import contextlib
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

from watcher.errors import StoreError
from watcher.outcomes import FileStat, Outcome, Rejected, Removed, Scored, StatKey, Unchanged, stored_path
from watcher.resultfile import RULES_VERSION
from watcher.schema import MIGRATIONS, REPORT_COLUMNS, SCHEMA_VERSION, statements

if TYPE_CHECKING:
    from watcher.config import Settings


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
        if not path.is_file():
            raise StoreError(f"{path}: no database here yet; run 'watcher scan' or 'watcher run' first")
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
            with self.db.atomic():
                for statement in statements(MIGRATIONS[version]):
                    self.db.execute(statement)
                self.db.execute(f"PRAGMA user_version = {version + 1}")

    # -- reading ---------------------------------------------------------------------------

    def size_hint(self) -> int:
        """About how many paths are stored (at least as many as there are): read from the end
        of the two tables' rowid trees, without counting them."""
        row = self.db.execute(
            "SELECT coalesce((SELECT max(rowid) FROM results), 0) + coalesce((SELECT max(rowid) FROM rejections), 0)"
        ).fetchone()
        return int(row[0])

    def stat_keys(
        self, under: str = "", outside: Sequence[str] = (), direct: bool = False
    ) -> dict[str, StatKey | None]:
        """Every stored path at or below ``under``: its stat key ``(size, mtime_ns, inode)`` when
        its outcome was made under the current target and rules, else ``None`` (judge it again).
        With ``outside`` (folders directly below the watch dir), only the paths in none of them;
        with ``direct``, only the files directly in ``under`` (what one folder's listing shows).

        What a reconcile compares each listed file with; the hashes are fetched (with
        :meth:`known_paths`) only for the few paths that turn out changed.
        """
        where, params = _under(stored_path(under))
        args: dict[str, Any] = {**params, "rules": self.rules_version, "target": self.target_recall}
        if outside:
            # The path's first folder ('' for a file at the top), looked up in the given ones.
            where += " AND substr(path, 1, instr(path, '/')) NOT IN (SELECT value FROM json_each(:outside))"
            args["outside"] = json.dumps([f"{stored_path(folder)}/" for folder in outside])
        if direct:
            prefix = len(stored_path(under)) + 1 if under else 0
            where += f" AND instr(substr(path, {prefix + 1}), '/') = 0"
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

    def report_rows(self, issuer: str | None = None, model: str | None = None) -> Iterator[tuple[Any, ...]]:
        """The ``report`` view sorted by model_id (tuples in REPORT_COLUMNS order), optionally
        filtered by issuer or model_id prefix. A cursor: rows stream, they are not all in memory."""
        sql = f"SELECT {', '.join(REPORT_COLUMNS)} FROM report WHERE 1"
        args: dict[str, Any] = {}
        if issuer:
            sql += " AND issuer = :issuer COLLATE NOCASE"
            args["issuer"] = issuer
        if model:
            sql += " AND model_id LIKE :model ESCAPE '\\'"
            args["model"] = model.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        return iter(self.db.execute(sql + " ORDER BY model_id", args))

    def report_details(self, limit: int | None = None) -> Iterator[tuple[Any, ...]]:
        """The report's rows with what the HTML page draws: ``REPORT_COLUMNS`` then target_recall,
        target_met, n_points, curve (bytes), by model_id. With ``limit``, only that many models:
        those with the most recent experiments."""
        columns = f"{', '.join('r.' + c for c in REPORT_COLUMNS)}, r.target_recall, r.target_met, r.n_points, r.curve"
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
        with self.db.atomic():
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
        with self.db.atomic():
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
