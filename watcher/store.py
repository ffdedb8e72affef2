"""The SQLite database: schema, migrations, and every SQL statement watcher runs.

One writer owns a :class:`Store` (a connection belongs to the thread that opened it); readers in
other processes see only committed states thanks to WAL. :meth:`Store.apply` writes a batch of
outcomes in one transaction, so a crash leaves either all of a batch or none of it.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlite_utils

from watcher.errors import StoreError
from watcher.pipeline import FileStat, Outcome, Rejected, Removed, Scored, Unchanged

REPORT_COLUMNS = ("model_id", "issuer", "optimal_threshold", "closest_recall_value", "experiment_date", "path")

_V1 = """
CREATE TABLE results (
    path TEXT PRIMARY KEY,
    model_id TEXT NOT NULL,
    issuer TEXT NOT NULL,
    experiment_date TEXT NOT NULL,
    experiment_at TEXT NOT NULL,
    optimal_threshold REAL NOT NULL,
    closest_recall_value REAL NOT NULL,
    distance REAL NOT NULL,
    target_met INTEGER NOT NULL,
    target_recall REAL NOT NULL,
    n_points INTEGER NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    inode INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    rules_version INTEGER NOT NULL,
    scored_at TEXT NOT NULL
);
CREATE INDEX results_latest ON results (model_id, experiment_at DESC, path DESC);
CREATE TABLE rejections (
    path TEXT PRIMARY KEY,
    errors TEXT NOT NULL,
    size INTEGER,
    mtime_ns INTEGER,
    inode INTEGER,
    sha256 TEXT,
    rules_version INTEGER NOT NULL,
    rejected_at TEXT NOT NULL
);
CREATE TABLE history (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    path TEXT NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN ('scored', 'rejected', 'removed')),
    sha256 TEXT,
    model_id TEXT,
    detail TEXT
);
CREATE INDEX history_path ON history (path, id);
CREATE INDEX history_model ON history (model_id, id);
CREATE VIEW report AS
SELECT model_id, issuer, optimal_threshold, closest_recall_value, experiment_date, path
FROM (
    SELECT *, row_number() OVER (
        PARTITION BY model_id ORDER BY experiment_at DESC, path DESC
    ) AS rank_in_model
    FROM results
)
WHERE rank_in_model = 1;
"""

_V2 = """
CREATE TABLE daemon_status (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    pid INTEGER,
    host TEXT,
    observer TEXT,
    started_at TEXT,
    stopped_at TEXT,
    heartbeat_at TEXT,
    last_event_at TEXT,
    last_reconcile_at TEXT,
    files_scored INTEGER NOT NULL DEFAULT 0,
    files_rejected INTEGER NOT NULL DEFAULT 0,
    files_removed INTEGER NOT NULL DEFAULT 0
);
"""

#: Migration ``i`` takes a database from ``user_version`` i to i + 1.
MIGRATIONS: tuple[str, ...] = (_V1, _V2)
SCHEMA_VERSION = len(MIGRATIONS)


def now_iso() -> str:
    """The current UTC time, ISO 8601 with milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Known:
    """What the database holds for one path: its stat key, its hash, and whether it is current."""

    stat: FileStat | None
    sha256: str | None
    current: bool
    rejected: bool


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

    def __init__(self, db: sqlite_utils.Database, path: Path, rules_version: int, target_recall: float) -> None:
        self.db = db
        self.path = path
        self.rules_version = rules_version
        self.target_recall = target_recall

    @classmethod
    def open(cls, path: Path, rules_version: int = 1, target_recall: float = 0.85) -> Store:
        """Open (creating and migrating as needed) the database at ``path``, in WAL mode.

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
            db.execute("PRAGMA synchronous = NORMAL")
            store = cls(db, path, rules_version, target_recall)
            store._migrate()
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: cannot open the database: {exc}") from None
        except OSError as exc:
            raise StoreError(f"{path}: cannot create the database: {exc.strerror}") from None
        return store

    @classmethod
    def open_readonly(cls, path: Path) -> Store:
        """Open an existing database for reading only (``watcher report``/``status``): no writes,
        no migration, so a user with read access only can use it while the daemon writes.
        """
        if not path.is_file():
            raise StoreError(f"{path}: no database here yet; run 'watcher scan' or 'watcher run' first")
        try:
            conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True, timeout=30.0)
            store = cls(sqlite_utils.Database(conn), path, 0, 0.0)
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
                for statement in _statements(MIGRATIONS[version]):
                    self.db.execute(statement)
                self.db.execute(f"PRAGMA user_version = {version + 1}")

    # -- reading ---------------------------------------------------------------------------

    def known(self, under: str = "") -> dict[str, Known]:
        """Every stored path at or below ``under`` with what identifies its stored version."""
        where, params = _under(under)
        return self._known(where, params)

    def known_paths(self, paths: Sequence[str]) -> dict[str, Known]:
        """What is stored for each of ``paths`` (absent paths are left out)."""
        out: dict[str, Known] = {}
        for chunk in _chunks(paths, 500):
            params = {f"p{i}": p for i, p in enumerate(chunk)}
            out.update(self._known(f"path IN ({', '.join(':' + k for k in params)})", params))
        return out

    def _known(self, where: str, params: dict[str, str]) -> dict[str, Known]:
        out: dict[str, Known] = {}
        args = {**params, "rules": self.rules_version, "target": self.target_recall}
        for table, rejected in (("results", False), ("rejections", True)):
            extra = "" if rejected else " AND target_recall = :target"
            sql = (
                f"SELECT path, size, mtime_ns, inode, sha256, rules_version = :rules{extra} FROM {table} WHERE {where}"
            )
            for path, size, mtime_ns, inode, sha, current in self.db.execute(sql, args):
                stat = FileStat(size, mtime_ns, inode) if size is not None else None
                out[path] = Known(stat, sha, bool(current), rejected)
        return out

    def report_rows(self, issuer: str | None = None, model: str | None = None) -> list[dict[str, Any]]:
        """The ``report`` view sorted by model_id, optionally filtered by issuer or model_id prefix."""
        sql = f"SELECT {', '.join(REPORT_COLUMNS)} FROM report WHERE 1"
        args: dict[str, Any] = {}
        if issuer:
            sql += " AND issuer = :issuer COLLATE NOCASE"
            args["issuer"] = issuer
        if model:
            sql += " AND model_id LIKE :model ESCAPE '\\'"
            args["model"] = model.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        return list(self.db.query(sql + " ORDER BY model_id", args))

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
        """For each given model_id held by several files, its paths, the winner first."""
        out: dict[str, list[str]] = {}
        for chunk in _chunks(sorted(models), 500):
            marks = ",".join("?" * len(chunk))
            sql = (
                f"SELECT model_id, path FROM results WHERE model_id IN ({marks}) "
                "AND model_id IN (SELECT model_id FROM results GROUP BY model_id HAVING count(*) > 1) "
                "ORDER BY model_id, experiment_at DESC, path DESC"
            )
            for model_id, path in self.db.execute(sql, chunk):
                out.setdefault(model_id, []).append(path)
        return out

    # -- writing ---------------------------------------------------------------------------

    def apply(self, outcomes: Sequence[Outcome]) -> Applied:
        """Write a batch of outcomes in one transaction and return what changed.

        Scored/Rejected replace the path's row in the other table too; Unchanged refreshes the
        stat key only; Removed deletes the path. Every real change appends to ``history``.
        """
        applied = Applied()
        at = now_iso()
        with self.db.atomic():
            for outcome in outcomes:
                if isinstance(outcome, Scored):
                    self._scored(outcome, at, applied)
                elif isinstance(outcome, Rejected):
                    self._rejected(outcome, at, applied)
                elif isinstance(outcome, Unchanged):
                    self._unchanged(outcome)
                else:
                    self._removed(outcome, at, applied)
        return applied

    def _scored(self, o: Scored, at: str, applied: Applied) -> None:
        old = self.db.execute("SELECT model_id FROM results WHERE path = ?", [o.path]).fetchone()
        self.db.execute("DELETE FROM rejections WHERE path = ?", [o.path])
        self.db.execute(
            "INSERT OR REPLACE INTO results VALUES "
            "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                o.path, o.model_id, o.issuer, o.experiment_date, o.experiment_at, o.optimal_threshold,
                o.closest_recall_value, o.distance, int(o.target_met), o.target_recall, o.n_points,
                o.stat.size, o.stat.mtime_ns, o.stat.inode, o.sha256, self.rules_version, at,
            ],
        )  # fmt: skip
        self._history(at, o.path, "scored", o.sha256, o.model_id, None)
        applied.scored.append(o)
        applied.models.add(o.model_id)
        if old:
            applied.models.add(old[0])

    def _rejected(self, o: Rejected, at: str, applied: Applied) -> None:
        errors = json.dumps([p.as_dict() for p in o.errors], ensure_ascii=False)
        stat = o.stat or FileStat(None, None, None)  # type: ignore[arg-type]
        same = self.db.execute(
            "SELECT 1 FROM rejections WHERE path = ? AND errors = ? AND sha256 IS ? AND rules_version = ?",
            [o.path, errors, o.sha256, self.rules_version],
        ).fetchone()
        if same:  # the same verdict on the same content: refresh the stat key, record nothing new
            self.db.execute(
                "UPDATE rejections SET size = ?, mtime_ns = ?, inode = ? WHERE path = ?",
                [stat.size, stat.mtime_ns, stat.inode, o.path],
            )
            return
        old = self.db.execute("DELETE FROM results WHERE path = ? RETURNING model_id", [o.path]).fetchone()
        if old:
            applied.models.add(old[0])
        self.db.execute(
            "INSERT OR REPLACE INTO rejections VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [o.path, errors, stat.size, stat.mtime_ns, stat.inode, o.sha256, self.rules_version, at],
        )
        self._history(at, o.path, "rejected", o.sha256, None, errors)
        applied.rejected.append(o)

    def _unchanged(self, o: Unchanged) -> None:
        for table in ("results", "rejections"):
            self.db.execute(
                f"UPDATE {table} SET size = ?, mtime_ns = ?, inode = ? WHERE path = ?",
                [o.stat.size, o.stat.mtime_ns, o.stat.inode, o.path],
            )

    def _removed(self, o: Removed, at: str, applied: Applied) -> None:
        old = self.db.execute("DELETE FROM results WHERE path = ? RETURNING model_id, sha256", [o.path]).fetchone()
        rej = self.db.execute("DELETE FROM rejections WHERE path = ? RETURNING sha256", [o.path]).fetchone()
        if old or rej:
            self._history(at, o.path, "removed", (old or rej)[-1], old[0] if old else None, None)
            applied.removed.append(o.path)
            if old:
                applied.models.add(old[0])

    def _history(
        self, at: str, path: str, outcome: str, sha: str | None, model: str | None, detail: str | None
    ) -> None:
        self.db.execute(
            "INSERT INTO history (at, path, outcome, sha256, model_id, detail) VALUES (?, ?, ?, ?, ?, ?)",
            [at, path, outcome, sha, model, detail],
        )

    # -- daemon status ---------------------------------------------------------------------

    def status(self) -> dict[str, Any] | None:
        """The daemon's last recorded status row, or ``None`` if no daemon ever ran on this database."""
        rows = list(self.db.query("SELECT * FROM daemon_status WHERE id = 1"))
        return rows[0] if rows else None

    def set_status(self, **values: Any) -> None:
        """Update the daemon status row (created on first use); counts passed as ``+n`` deltas via
        :meth:`add_counts`."""
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


def _under(under: str) -> tuple[str, dict[str, str]]:
    if not under:
        return "1", {}
    # Paths below a folder: 'dir/' prefix, compared as a range so the primary key index is used.
    return "path >= :lo AND path < :hi", {"lo": under + "/", "hi": under + "0"}


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _statements(script: str) -> list[str]:
    # Split on complete statements (the view body contains no ';').
    return [s.strip() for s in script.split(";\n") if s.strip()]
