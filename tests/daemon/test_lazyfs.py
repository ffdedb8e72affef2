"""The power-cut file system (:mod:`testing.lazyfs`) itself: what a cut keeps and what it takes."""

from __future__ import annotations

import mmap
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from testing import lazyfs
from testing.helpers import wait_until
from testing.lazyfs import require_fuse

pytestmark = pytest.mark.slow  # a FUSE file system in a process of its own


@pytest.fixture
def lazy(tmp_path: Path) -> Iterator[lazyfs.Mount]:
    require_fuse()
    with lazyfs.mounted(tmp_path / "backing", tmp_path / "mnt") as handle:
        yield handle


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def test_fuse_is_there_under_ci() -> None:
    require_fuse()  # fails, not skips, under CI=true when FUSE or fusepy is missing


def test_what_was_fsynced_survives_a_cut_and_nothing_else(lazy: lazyfs.Mount) -> None:
    mnt = lazy.mountpoint
    (mnt / "synced").write_bytes(b"kept")
    _fsync(mnt / "synced")
    (mnt / "rewritten").write_bytes(b"first")
    _fsync(mnt / "rewritten")
    (mnt / "rewritten").write_bytes(b"second, never synced")
    (mnt / "new").write_bytes(b"never synced")
    fd = os.open(mnt / "write-only", os.O_WRONLY | os.O_CREAT, 0o600)  # read-write underneath
    os.write(fd, b"w" * 10_000)
    os.fdatasync(fd)
    os.write(fd, b"more")
    os.close(fd)
    # Reads see the unsynced writes, as through a page cache; the backing files do not hold them yet.
    assert (mnt / "rewritten").read_bytes() == b"second, never synced"
    assert (mnt / "new").read_bytes() == b"never synced"
    assert os.stat(mnt / "write-only").st_size == 10_004
    assert (lazy.backing / "rewritten").read_bytes() == b"first"
    lazy.cut()
    assert (mnt / "synced").read_bytes() == b"kept"
    assert (mnt / "rewritten").read_bytes() == b"first"
    assert (mnt / "new").read_bytes() == b""  # the name passed through, its data did not
    assert (mnt / "write-only").read_bytes() == b"w" * 10_000


def test_a_truncation_not_synced_is_undone(lazy: lazyfs.Mount) -> None:
    mnt = lazy.mountpoint
    for name in ("ftruncate", "truncate", "o_trunc"):
        (mnt / name).write_bytes(bytes(range(256)) * 40)
        _fsync(mnt / name)
    with (mnt / "ftruncate").open("r+b") as fh:
        fh.truncate(100)
        fh.seek(5000)
        fh.write(b"tail")  # the hole between reads as zeros, not as the old bytes
    os.truncate(mnt / "truncate", 0)
    (mnt / "o_trunc").write_bytes(b"short")
    assert (mnt / "ftruncate").read_bytes() == (bytes(range(256)) * 40)[:100] + bytes(4900) + b"tail"
    assert (mnt / "truncate").read_bytes() == b""
    assert (mnt / "o_trunc").read_bytes() == b"short"
    lazy.cut()
    for name in ("ftruncate", "truncate", "o_trunc"):
        assert (mnt / name).read_bytes() == bytes(range(256)) * 40, name
    # A truncation that was synced stays.
    with (mnt / "ftruncate").open("r+b") as fh:
        fh.truncate(10)
        os.fsync(fh.fileno())
    lazy.cut()
    assert (mnt / "ftruncate").read_bytes() == bytes(range(10))


def test_mmap_reads_and_writes_go_through_it(lazy: lazyfs.Mount) -> None:
    mnt = lazy.mountpoint
    (mnt / "m").write_bytes(b"a" * 8192)
    _fsync(mnt / "m")
    with (mnt / "m").open("r+b") as fh:
        fh.seek(4096)
        fh.write(b"unsynced")
        fh.flush()
        with mmap.mmap(fh.fileno(), 8192) as view:
            assert view[4096:4104] == b"unsynced"
            view[0:6] = b"mapped"  # no msync: that would be an fsync
    assert (mnt / "m").read_bytes()[:6] == b"mapped"
    lazy.cut()
    assert (mnt / "m").read_bytes() == b"a" * 8192


def test_an_open_file_renamed_over_or_unlinked_reads_on(lazy: lazyfs.Mount) -> None:
    mnt = lazy.mountpoint
    (mnt / "report").write_bytes(b"old")
    (mnt / "gone").write_bytes(b"unlinked")
    with (mnt / "report").open("rb") as old, (mnt / "gone").open("rb") as gone:
        (mnt / "new").write_bytes(b"new")
        os.replace(mnt / "new", mnt / "report")
        (mnt / "gone").unlink()
        assert (os.fstat(old.fileno()).st_size, old.read()) == (3, b"old")
        assert gone.read() == b"unlinked"
    assert (mnt / "report").read_bytes() == b"new"
    assert sorted(p.name for p in mnt.iterdir()) == ["report"]


_SQLITE_CHILD = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA journal_mode=WAL")
conn.execute("PRAGMA synchronous=NORMAL")
conn.execute("PRAGMA wal_autocheckpoint=0")
conn.execute("CREATE TABLE t (x INTEGER)")
for i in range(50):
    conn.execute("INSERT INTO t VALUES (?)", (i,))
conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the first 50 rows made durable
for i in range(50, 100):
    conn.execute("INSERT INTO t VALUES (?)", (i,))  # committed, in a WAL never fsynced
print(conn.execute("SELECT count(*) FROM t").fetchone()[0], flush=True)
sys.stdin.read()
"""


def test_a_wal_database_cut_after_commits_it_never_synced_is_whole_and_older(lazy: lazyfs.Mount) -> None:
    db = lazy.mountpoint / "t.db"
    child = subprocess.Popen(
        [sys.executable, "-c", _SQLITE_CHILD, str(db)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )  # fmt: skip
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == b"100\n"  # every commit visible to its own process (through the -shm mmap)
        conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (100,)  # and to another
        conn.close()
    finally:
        child.kill()
        child.wait(10)
        for pipe in (child.stdin, child.stdout):
            if pipe is not None:
                pipe.close()
    lazy.cut()
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (50,)
    finally:
        conn.close()


def test_the_fuse_process_dies_with_the_mount_and_the_cut(tmp_path: Path) -> None:
    require_fuse()
    handle = lazyfs.mount(tmp_path / "backing", tmp_path / "mnt")
    try:
        first = handle.proc
        assert first is not None and os.path.ismount(handle.mountpoint)
        handle.cut()
        assert first.poll() is not None and handle.alive() and os.path.ismount(handle.mountpoint)
    finally:
        handle.unmount()
    assert not handle.alive()
    wait_until(lambda: not os.path.ismount(handle.mountpoint), 10, what="the mount gone")
