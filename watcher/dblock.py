"""The database's lock file: who may write the database now.

One process at a time writes a database: the daemon for as long as it runs, or a one-shot
``watcher scan``. Each holds an exclusive ``flock`` on ``<db>.lock`` and writes its role and pid
into it, so the others can say who holds it. Two writers racing on the same paths could commit
an older verdict over a newer one; with the lock, a scan beside a running daemon refuses (the
daemon keeps the database current), and a daemon started during a scan waits for it to end.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Literal

from watcher.errors import TRANSIENT_ERRNOS, AlreadyRunningError, StoreError, TransientStoreError

Role = Literal["run", "scan"]


def lock_path(db_path: Path) -> Path:
    """The file a writer of ``db_path`` holds an exclusive ``flock`` on."""
    return db_path.with_name(db_path.name + ".lock")


def holder(db_path: Path) -> str | None:
    """The role (``"run"``, ``"scan"``, or ``""`` when not written yet) of the process holding
    the lock of ``db_path``; ``None`` when nobody holds it (or the lock file cannot be read)."""
    try:
        fd = os.open(lock_path(db_path), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return os.pread(fd, 64, 0).decode(errors="replace").split(" ")[0].strip()
        return None
    finally:
        os.close(fd)


def daemon_running(db_path: Path) -> bool:
    """True when a daemon (not a scan) holds the lock of this database."""
    role = holder(db_path)
    return role is not None and role != "scan"


def acquire(db_path: Path, role: Role, wait_for_scan: bool = False) -> int:
    """Take the lock of ``db_path`` for ``role`` and return its file descriptor (closing it
    releases the lock; so does the process's death).

    Raises :class:`AlreadyRunningError` when another process holds it (with ``wait_for_scan``,
    a scan's lock is waited for instead), :class:`StoreError` when the lock file cannot be
    created (a read-only or unwritable location).
    """
    path = lock_path(db_path)
    try:
        db_path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
    except OSError as exc:
        raise _lock_error(path, exc) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            other = holder(db_path)
            if other == "scan" and wait_for_scan:
                fcntl.flock(fd, fcntl.LOCK_EX)  # a scan ends by itself
            elif other == "scan":
                raise AlreadyRunningError(f"{db_path}: a 'watcher scan' is running on this database") from None
            elif role == "run":
                raise AlreadyRunningError(f"{db_path}: another watcher is already running on this database") from None
            else:
                raise AlreadyRunningError(
                    f"{db_path}: a watcher daemon is running on this database and keeps it current"
                ) from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{role} {os.getpid()}\n".encode(), 0)
        except OSError as exc:  # a full or failing disk
            raise _lock_error(path, exc) from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _lock_error(path: Path, exc: OSError) -> StoreError:
    # A full or failing disk may pass (the daemon waits for it); a place it may not write will not.
    kind = TransientStoreError if exc.errno in TRANSIENT_ERRNOS else StoreError
    return kind(f"{path}: cannot create the database's lock file: {exc.strerror}")


def keep(fd: int, db_path: Path, role: Role) -> int:
    """The lock held through ``fd``, still in force: when its file was removed (a clean-up of
    the database's folder), a new lock file is made and locked, and its descriptor returned
    (the old one closed); otherwise ``fd`` itself. Without this, a scan could take the new file's
    lock beside the running daemon. Raises what :func:`acquire` raises (the old lock is then kept).
    """
    try:
        st = os.stat(lock_path(db_path))
        if (st.st_dev, st.st_ino) == (os.fstat(fd).st_dev, os.fstat(fd).st_ino):
            return fd
    except FileNotFoundError:
        pass
    new = acquire(db_path, role)
    os.close(fd)
    return new
