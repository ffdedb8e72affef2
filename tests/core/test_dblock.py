"""The database's lock: one writer at a time, and who holds it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from watcher.dblock import acquire, daemon_running, holder, keep, lock_path
from watcher.errors import AlreadyRunningError


def test_roles_are_told_apart_and_a_second_writer_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "var" / "w.db"
    assert holder(db) is None and not daemon_running(db)
    scan = acquire(db, "scan")
    assert holder(db) == "scan" and not daemon_running(db)  # a scan is not a running daemon
    with pytest.raises(AlreadyRunningError, match="a 'watcher scan' is running on this database"):
        acquire(db, "run")
    os.close(scan)
    run = acquire(db, "run")
    assert holder(db) == "run" and daemon_running(db)
    with pytest.raises(AlreadyRunningError, match="a watcher daemon is running on this database"):
        acquire(db, "scan")
    with pytest.raises(AlreadyRunningError, match="another watcher is already running"):
        acquire(db, "run")
    os.close(run)
    assert holder(db) is None


def test_keep_renews_a_removed_lock_file(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    fd = acquire(db, "run")
    assert keep(fd, db, "run") == fd
    lock_path(db).unlink()  # a clean-up of the folder
    assert holder(db) is None  # nobody holds the new name yet: a scan could start
    renewed = keep(fd, db, "run")
    assert renewed != fd and holder(db) == "run"
    os.close(renewed)
