"""The SQLite database: opening, migrating, transactions, checkpoints and the daemon's status row.

A :class:`Store` is one connection; what it does with the tables comes from two mixins, each a job
of its own: :class:`~watcher.mirror.Mirror` (the folder's mirror: stat keys, hashes, applying
outcomes) and :class:`~watcher.queries.Queries` (what readers ask: the report, the page, the
rejections, the history). The schema itself is in :mod:`watcher.schema`.

One writer owns a :class:`Store` (a connection belongs to the thread that opened it); readers in
other processes see only committed states thanks to WAL.

SQLite's errors do not leave a :class:`Store`: its public methods (the mixins' too) and its
transactions raise them as :class:`StoreError` (:func:`store_error`), with SQLite's message, and as
:class:`TransientStoreError` when the disk fails or fills up (:func:`transient`), so that callers
tell a disk worth waiting for from a database they may not use without knowing SQLite.
"""

from __future__ import annotations

import contextlib
import functools
import grp
import inspect
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import sqlite_utils

from watcher.errors import TRANSIENT_ERRNOS, DatabaseAccessError, StoreError, TransientStoreError
from watcher.mirror import Mirror
from watcher.queries import Queries
from watcher.regression import Rules
from watcher.resultfile import RULES_VERSION
from watcher.schema import DEFERRABLE_INDEXES, MIGRATIONS, SCHEMA_VERSION, statements

if TYPE_CHECKING:
    from watcher.config import Settings


class Store(Mirror, Queries):
    """The database of one watch dir. Open with :meth:`open`; use from one thread."""

    def __init__(
        self,
        db: sqlite_utils.Database,
        path: Path,
        rules_version: int,
        target_recall: float | None,
        regression_rules: Rules | None = None,
    ) -> None:
        self.db = db
        self.regression_rules = regression_rules
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
    def open(
        cls,
        path: Path,
        target_recall: float = 0.85,
        rules_version: int = RULES_VERSION,
        durable: bool = False,
        regression_rules: Rules | None = None,
    ) -> Store:
        """Open (creating and migrating as needed) the database at ``path``, in WAL mode, for
        outcomes judged for ``target_recall`` under ``rules_version`` (stored outcomes made
        otherwise are judged again). ``durable``: every commit synced (``synchronous=FULL``), not
        only the checkpoints. ``regression_rules``: regressions are judged by them (every stored
        verdict brought in line with them now, see :meth:`~watcher.mirror.Mirror.refresh_regressions`);
        ``None``: not judged, and any stored flag cleared.

        New files get no world access. Raises :class:`StoreError`, or its
        :class:`~watcher.errors.TransientStoreError` when the disk fails or is full (see :func:`transient`).
        """
        conn: sqlite3.Connection | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
            if not path.exists():
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o640))
            conn = sqlite3.connect(path, timeout=30.0, isolation_level=None)
            db = sqlite_utils.Database(conn)
            db.execute("PRAGMA busy_timeout = 30000")
            if db.journal_mode != "wal":
                db.enable_wal()
            # WAL + NORMAL: a power cut loses the commits since the last checkpoint, never
            # consistency (and the reconcile judges again what was lost). FULL syncs each commit
            # too: for a fleet host, whose commits are shipped at once and whose rollback costs a
            # resync of the central rows. Checkpoint less often than the default 1,000 pages: with
            # random UUID keys each commit dirties many pages.
            db.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
            db.execute("PRAGMA wal_autocheckpoint = 10000")
            db.execute("PRAGMA journal_size_limit = 67108864")
            # A 32 MiB page cache (default 2 MiB): the model_id index takes inserts at random places,
            # which a small cache would read again from the OS.
            db.execute("PRAGMA cache_size = -32768")
            store = cls(db, path, rules_version, target_recall, regression_rules)
            store._migrate()
            store._probe_writable()
            store._build_missing_indexes()
            store.refresh_regressions()
        except BaseException as exc:
            if conn is not None:  # a daemon waiting out a failing disk opens again and again
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            if isinstance(exc, sqlite3.Error):
                kind = TransientStoreError if transient(exc) else StoreError
                raise kind(f"{path}: cannot open the database: {exc}") from None
            if isinstance(exc, OSError):
                kind = TransientStoreError if transient(exc) else StoreError
                raise kind(f"{path}: cannot create the database: {exc.strerror}") from None
            raise
        return store

    @classmethod
    def from_settings(cls, settings: Settings) -> Store:
        """:meth:`open` the configured database for the configured target; a fleet host's
        (``central_url`` set) durable: its commits are shipped as soon as they are made, and one
        that a power cut takes back would leave the central database ahead of it (measured on a
        burst of 10,000 files: a few fsyncs more, within the noise; docs/scaling.md)."""
        from watcher.judge import JudgeOptions  # the rules are part of the stored rules version

        rules = JudgeOptions.from_settings(settings).rules_version
        return cls.open(
            settings.db_path,
            settings.target_recall,
            rules,
            durable=settings.central_url is not None,
            regression_rules=settings.regression_rules,
        )

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

    def _build_missing_indexes(self) -> None:
        # Only a cold scan stopped midway leaves one out; a look at the catalogue otherwise.
        names = list(DEFERRABLE_INDEXES)
        sql = f"SELECT name FROM sqlite_master WHERE type = 'index' AND name IN ({', '.join('?' * len(names))})"
        present = {name for (name,) in self.db.execute(sql, names).fetchall()}
        if len(present) < len(names):
            with self.writing():
                for name in names:
                    if name not in present:
                        self.db.execute(DEFERRABLE_INDEXES[name])

    @contextlib.contextmanager
    def indexes_deferred(self) -> Iterator[None]:
        """Leave out :data:`~watcher.schema.DEFERRABLE_INDEXES` while the block fills the
        database, and build them at its end (whatever ends it; a process killed meanwhile has
        them built by the next :meth:`open`).

        Each row of a cold scan would otherwise go into each of them (``results_recent`` at a
        random place, by experiment instant), and each commit write most of their pages again;
        built once from the table, they cost a sort (docs/performance.md). Readers meanwhile see
        the rows committed so far, and sort what they would have read along them.
        """
        with self.writing():
            for name in DEFERRABLE_INDEXES:
                self.db.execute(f"DROP INDEX IF EXISTS {name}")
        try:
            yield
        except BaseException:
            # Built now if the database lets us (a daemon goes on with this connection); if not,
            # the block's error is the one to see, and the next open builds them.
            with contextlib.suppress(StoreError), as_store_errors():
                self._build_missing_indexes()
            raise
        with as_store_errors():
            self._build_missing_indexes()

    def _probe_writable(self) -> None:
        # Writable now, or one clear error now (a read-only file or place). A write lock that
        # another connection holds says nothing either way; the writes themselves wait for it.
        self.db.execute("PRAGMA busy_timeout = 0")
        try:
            with self._writing():
                pass
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:
                raise
        finally:
            self.db.execute("PRAGMA busy_timeout = 30000")

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

    def checkpoint(self, wait: float = 0.1) -> bool:
        """Copy the write-ahead log into the database file and empty it, if no reader holds an
        older state (waiting at most ``wait`` seconds for one): then the main file alone is current
        (a plain copy of it is a consistent backup of that moment) and the log takes no space.
        True when the log was emptied; otherwise the next try will do it."""
        self.db.execute(f"PRAGMA busy_timeout = {max(1, int(wait * 1000))}")
        try:
            busy, _, _ = self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            self.db.execute("PRAGMA busy_timeout = 30000")
        return not busy

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """One write transaction that holds the write lock from its first statement on
        (``BEGIN IMMEDIATE``), committed at the end or rolled back on an exception. SQLite's
        errors, the block's own statements' too, leave it as :class:`StoreError`.

        A deferred ``BEGIN`` that reads first and writes later fails at once with
        SQLITE_BUSY_SNAPSHOT when another connection commits in between (the busy timeout
        does not apply to that case); taking the lock up front makes the statement wait for it.
        """
        with as_store_errors(), self._writing():
            yield

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
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
        with as_store_errors():
            self.db.execute("BEGIN")
            try:
                yield
            finally:
                self.db.execute("COMMIT")

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


#: SQLite's primary result codes for the same: any failed read, write or sync (SQLITE_IOERR_*),
#: and a full disk (SQLITE_FULL).
TRANSIENT_SQLITE = frozenset({sqlite3.SQLITE_IOERR, sqlite3.SQLITE_FULL})
_TRANSIENT_MESSAGES = ("disk I/O error", "database or disk is full")


def transient(exc: BaseException) -> bool:
    """True for an error of the disk under the database that may pass (an I/O error, a full disk
    or quota), as opposed to one of configuration (permissions, a read-only place, a file that is
    no database, a schema from a newer watcher), which waiting does not mend."""
    if isinstance(exc, TransientStoreError):
        return True
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if isinstance(code, int) and code & 0xFF in TRANSIENT_SQLITE:
            return True
        return any(message in str(exc) for message in _TRANSIENT_MESSAGES)
    if isinstance(exc, OSError):
        return exc.errno in TRANSIENT_ERRNOS
    return False


def store_error(exc: sqlite3.Error) -> StoreError:
    """SQLite's error as the store raises it: :class:`TransientStoreError` when the disk fails or
    is full, else :class:`StoreError`; SQLite's message, and the error as its ``__cause__``."""
    error = (TransientStoreError if transient(exc) else StoreError)(str(exc))
    error.__cause__ = exc
    return error


@contextlib.contextmanager
def as_store_errors() -> Iterator[None]:
    """Raise SQLite's errors in the block as :func:`store_error` says."""
    try:
        yield
    except sqlite3.Error as exc:
        raise store_error(exc) from exc


P = ParamSpec("P")
R = TypeVar("R")


def guarded(fn: Callable[P, R]) -> Callable[P, R]:
    """``fn``, raising SQLite's errors as :func:`store_error` says (a generator's while it runs)."""
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def generator(*args: P.args, **kwargs: P.kwargs) -> Any:
            with as_store_errors():
                return (yield from fn(*args, **kwargs))

        return generator

    @functools.wraps(fn)
    def plain(*args: P.args, **kwargs: P.kwargs) -> R:
        with as_store_errors():
            return fn(*args, **kwargs)

    return plain


def _guard_public(cls: type) -> None:
    """Guard every public method and property of ``cls`` and its bases (the mixins); the
    transactions guard themselves (their blocks run in the caller)."""
    for name in dir(cls):
        if name.startswith("_") or name in ("writing", "snapshot", "checkpointing", "indexes_deferred"):
            continue
        attr = inspect.getattr_static(cls, name)
        if isinstance(attr, property) and attr.fget is not None:
            setattr(cls, name, property(guarded(attr.fget), doc=attr.__doc__))
        elif isinstance(attr, classmethod):
            setattr(cls, name, classmethod(guarded(attr.__func__)))
        elif inspect.isfunction(attr):
            setattr(cls, name, guarded(attr))


_guard_public(Store)


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
