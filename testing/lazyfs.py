"""A power cut for one folder: a FUSE passthrough that keeps every write not yet fsynced in its
own memory (the semantics of LazyFS, in one file).

``mount(backing, mountpoint)`` mounts ``backing`` at ``mountpoint`` and returns a :class:`Mount`;
``Mount.cut()`` is the power cut: the FUSE process is killed (``kill -9``), the mount detached
(``umount -l``) and a fresh FUSE process mounted over the same backing folder, so everything that
was written and not fsynced is gone; ``Mount.unmount()`` ends it. Kill the processes using the
mount (the daemon and its helpers) *before* the cut, as a power cut stops them too.

The model, and what it leaves out:

* Data is lazy. A write or a truncation (``truncate``, ``ftruncate``, ``O_TRUNC``) changes an
  in-memory copy of the file's changed pages; reads (through any handle, the kernel's page cache
  and mmaps included) see that copy. ``fsync``/``fdatasync`` of a file writes its changed pages
  (and its size) to the backing file and fsyncs it. Closing a file makes nothing durable.
* Metadata is not: create, mkdir, rename, unlink, rmdir, link, symlink, chmod, chown and utimens
  pass through to the backing folder at once. This is a model of lost data, not of lost renames
  or lost directory entries (a file created and never fsynced survives a cut, empty or as it was
  last fsynced).
* A file is opened read-write underneath even when the client opens it write-only: the kernel
  reads through any open handle (to fill its page cache, or for SQLite's ``-shm`` mmap), and an
  ``EBADF`` there is a ``SIGBUS`` in the client.
* POSIX and ``flock`` locks are the kernel's own (no ``lock`` operation): enough for one host.
* A file unlinked (or renamed over) while open lives on as ``.fuse_hidden…`` (libfuse's way, so
  that ``fstat`` of it works) until it is closed; a cut leaves those behind, and the next mount
  deletes them, as ``fsck`` deletes orphaned inodes.

The FUSE side runs under the system Python with Debian's ``python3-fusepy`` (libfuse2):
``/usr/bin/python3 tests/lazyfs.py BACKING MOUNTPOINT``, single-threaded. It dies with the
thread that started it (``PR_SET_PDEATHSIG``: mount from the main thread); :func:`mount`'s caller
unmounts in a ``finally`` (:func:`mounted` does), which kills it and detaches the mount.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import importlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PAGE = 4096
SYSTEM_PYTHON = "/usr/bin/python3"
_PR_SET_PDEATHSIG = 1


def missing() -> str | None:
    """Why a mount cannot be made here (no ``/dev/fuse``, no fusepy, not root), or None."""
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse"
    if os.geteuid() != 0:
        return "the lazy file system mounts as root"
    if not os.path.exists(SYSTEM_PYTHON):
        return f"no {SYSTEM_PYTHON}"
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import fusepy"], capture_output=True, timeout=30)
    if probe.returncode != 0:
        return "python3-fusepy is not installed (apt-get install fuse3 python3-fusepy)"
    return None


# The client side: start, cut and stop the FUSE process.


class Mount:
    """One lazy mount of ``backing`` at ``mountpoint``; :meth:`cut` and :meth:`unmount`."""

    def __init__(self, backing: Path, mountpoint: Path, log: Path | None = None) -> None:
        self.backing, self.mountpoint = backing, mountpoint
        self.log = log or mountpoint.with_name(mountpoint.name + ".lazyfs.log")
        self.proc: subprocess.Popen[bytes] | None = None
        self.cuts = 0

    def _start(self, timeout: float = 20.0) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [SYSTEM_PYTHON, __file__, str(self.backing), str(self.mountpoint)],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        gate = threading.Event()
        while not os.path.ismount(self.mountpoint):
            if self.proc.poll() is not None:
                raise RuntimeError(f"the lazy file system exited with {self.proc.returncode}: {self._tail()}")
            if time.monotonic() > deadline:
                self._kill()
                raise RuntimeError(f"the lazy file system was not mounted in {timeout} s: {self._tail()}")
            gate.wait(0.02)

    def _tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def _detach(self) -> None:
        if os.path.ismount(self.mountpoint) or _listed(self.mountpoint):
            done = subprocess.run(["umount", "-l", str(self.mountpoint)], capture_output=True, timeout=30)
            if done.returncode != 0 and shutil.which("fusermount"):
                subprocess.run(["fusermount", "-uz", str(self.mountpoint)], capture_output=True, timeout=30)

    def cut(self) -> None:
        """The power cut: what was not fsynced is lost; the folder is mounted again, as it is on disk."""
        self._kill()
        self._detach()
        self.cuts += 1
        self._start()

    def unmount(self) -> None:
        """Stop the FUSE process and detach the mount (unsynced writes are lost, as in a cut)."""
        self._kill()
        self._detach()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def _listed(mountpoint: Path) -> bool:
    """The mount is still in the mount table (``ismount`` fails on a dead FUSE mount: ENOTCONN)."""
    target = os.fsencode(os.path.abspath(mountpoint))
    with open("/proc/self/mounts", "rb") as fh:
        return any(line.split()[1] == target for line in fh if len(line.split()) > 1)


def mount(backing: Path, mountpoint: Path, log: Path | None = None) -> Mount:
    """Mount ``backing`` lazily at ``mountpoint`` (both folders are created); unmount it in a ``finally``."""
    backing.mkdir(parents=True, exist_ok=True)
    mountpoint.mkdir(parents=True, exist_ok=True)
    handle = Mount(backing, mountpoint, log)
    handle._start()
    return handle


@contextlib.contextmanager
def mounted(backing: Path, mountpoint: Path, log: Path | None = None) -> Iterator[Mount]:
    handle = mount(backing, mountpoint, log)
    try:
        yield handle
    finally:
        handle.unmount()


# The FUSE side, run under the system Python.


class _Node:
    """One file's unsynced state: its changed pages and its size, over the backing file's ``fd``."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.pages: dict[int, bytearray] = {}
        self.size = os.fstat(fd).st_size
        self.zero_from = self.size  # pages at or past this offset read as zeros unless changed
        self.handles = 0

    @property
    def dirty(self) -> bool:
        return bool(self.pages) or self.size != os.fstat(self.fd).st_size or self.zero_from < self.size

    def _page(self, index: int) -> bytearray:
        """Page ``index`` as the client sees it (a copy made dirty by the caller)."""
        if index in self.pages:
            return self.pages[index]
        start = index * PAGE
        data = os.pread(self.fd, PAGE, start) if start < self.zero_from else b""
        data = data[: max(0, min(PAGE, self.zero_from - start))]
        return bytearray(data.ljust(PAGE, b"\0"))

    def read(self, size: int, offset: int) -> bytes:
        end = min(offset + size, self.size)
        out = bytearray()
        pos = offset
        while pos < end:
            index, skip = divmod(pos, PAGE)
            take = min(PAGE - skip, end - pos)
            out += self._page(index)[skip : skip + take]
            pos += take
        return bytes(out)

    def write(self, data: bytes, offset: int) -> int:
        pos, view = offset, memoryview(data)
        while view:
            index, skip = divmod(pos, PAGE)
            take = min(PAGE - skip, len(view))
            page = self._page(index)
            page[skip : skip + take] = view[:take]
            self.pages[index] = page
            pos += take
            view = view[take:]
        self.size = max(self.size, offset + len(data))
        return len(data)

    def truncate(self, length: int) -> None:
        if length < self.size:
            index, keep = divmod(length, PAGE)
            if keep:
                page = self._page(index)
                page[keep:] = bytes(PAGE - keep)
                self.pages[index] = page
            for i in [i for i in self.pages if i * PAGE >= length]:
                del self.pages[i]
            self.zero_from = min(self.zero_from, length)
        self.size = length

    def sync(self) -> None:
        if self.zero_from < os.fstat(self.fd).st_size:
            os.ftruncate(self.fd, self.zero_from)
        for index, page in sorted(self.pages.items()):
            start = index * PAGE
            os.pwrite(self.fd, bytes(page[: max(0, min(PAGE, self.size - start))]), start)
        os.ftruncate(self.fd, self.size)
        os.fsync(self.fd)
        self.pages.clear()
        self.zero_from = self.size


class LazyFS:
    """The FUSE operations (fusepy, ``raw_fi=False``): metadata passes through, data waits for fsync."""

    use_ns = True
    # Operations on an open file go by its handle alone.
    flag_nullpath_ok = True

    def __init__(self, root: str) -> None:
        self.root = root
        self.nodes: dict[str, _Node] = {}  # path -> the node of a file open or with unsynced changes
        self.handles: dict[int, _Node] = {}
        self.next_fh = 1

    def __call__(self, op: str, *args: Any) -> Any:
        method = getattr(self, op, None)
        if method is None:
            raise OSError(errno.ENOSYS, op)
        return method(*args)

    def _real(self, path: str) -> str:
        return os.path.join(self.root, path.lstrip("/"))

    def _node(self, path: str) -> _Node:
        node = self.nodes.get(path)
        if node is None:
            node = self.nodes[path] = _Node(os.open(self._real(path), os.O_RDWR))
        return node

    def _forget(self, path: str, node: _Node) -> None:
        """Close a node that is clean and not open."""
        if node.handles == 0 and not node.dirty:
            if self.nodes.get(path) is node:
                del self.nodes[path]
            os.close(node.fd)

    # files

    def open(self, path: str, flags: int) -> int:
        node = self._node(path)
        if flags & os.O_TRUNC:
            node.truncate(0)
        node.handles += 1
        fh, self.next_fh = self.next_fh, self.next_fh + 1
        self.handles[fh] = node
        return fh

    def create(self, path: str, mode: int) -> int:
        os.close(os.open(self._real(path), os.O_CREAT | os.O_RDWR, mode))
        return self.open(path, os.O_RDWR)

    def read(self, path: str | None, size: int, offset: int, fh: int) -> bytes:
        return self.handles[fh].read(size, offset)

    def write(self, path: str | None, data: bytes, offset: int, fh: int) -> int:
        return self.handles[fh].write(data, offset)

    def truncate(self, path: str | None, length: int, fh: int | None = None) -> None:
        if fh is not None and fh in self.handles:
            self.handles[fh].truncate(length)
        elif path is not None:
            node = self._node(path)
            node.truncate(length)
            self._forget(path, node)

    def fsync(self, path: str | None, datasync: int, fh: int) -> None:
        self.handles[fh].sync()

    def flush(self, path: str | None, fh: int) -> None:
        return None

    def release(self, path: str | None, fh: int) -> None:
        node = self.handles.pop(fh)
        node.handles -= 1
        owner = next((p for p, n in self.nodes.items() if n is node), None)
        if owner is None:  # unlinked meanwhile: nobody can reach its data again
            if node.handles == 0:
                os.close(node.fd)
        else:
            self._forget(owner, node)

    def getattr(self, path: str | None, fh: int | None = None) -> dict[str, Any]:
        node = self.handles.get(fh) if fh is not None else None
        if node is not None:
            st = os.fstat(node.fd)
        else:
            assert path is not None
            st = os.lstat(self._real(path))
            node = self.nodes.get(path)
        attrs = {k: getattr(st, k) for k in ("st_mode", "st_nlink", "st_uid", "st_gid", "st_size")}
        attrs.update({k: getattr(st, k + "_ns") for k in ("st_atime", "st_mtime", "st_ctime")})
        if node is not None:
            attrs["st_size"] = node.size
        attrs["st_blocks"] = (attrs["st_size"] + 511) // 512
        return attrs

    # metadata: passed through at once

    def access(self, path: str, amode: int) -> None:
        if not os.access(self._real(path), amode):
            raise OSError(errno.EACCES, path)

    def readdir(self, path: str, fh: int) -> list[str]:
        return [".", "..", *os.listdir(self._real(path))]

    def mkdir(self, path: str, mode: int) -> None:
        os.mkdir(self._real(path), mode)

    def rmdir(self, path: str) -> None:
        os.rmdir(self._real(path))

    def unlink(self, path: str) -> None:
        os.unlink(self._real(path))
        node = self.nodes.pop(path, None)
        if node is not None and node.handles == 0:
            os.close(node.fd)

    def rename(self, old: str, new: str) -> None:
        os.rename(self._real(old), self._real(new))
        replaced = self.nodes.pop(new, None)
        if replaced is not None and replaced.handles == 0:
            os.close(replaced.fd)
        for path in [p for p in self.nodes if p == old or p.startswith(old.rstrip("/") + "/")]:
            self.nodes[new + path[len(old) :]] = self.nodes.pop(path)

    def link(self, target: str, source: str) -> None:
        os.link(self._real(source), self._real(target))

    def symlink(self, target: str, source: str) -> None:
        os.symlink(source, self._real(target))

    def readlink(self, path: str) -> str:
        return os.readlink(self._real(path))

    def chmod(self, path: str, mode: int) -> None:
        os.chmod(self._real(path), mode)

    def chown(self, path: str, uid: int, gid: int) -> None:
        os.chown(self._real(path), uid, gid)

    def utimens(self, path: str, times: tuple[int, int] | None = None) -> None:
        os.utime(self._real(path), ns=times) if times else os.utime(self._real(path))

    def statfs(self, path: str) -> dict[str, int]:
        st = os.statvfs(self._real(path))
        keys = ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree", "f_files", "f_flag", "f_frsize")
        return {k: getattr(st, k) for k in keys} | {"f_namemax": st.f_namemax}

    def fsyncdir(self, path: str, datasync: int, fh: int) -> None:
        return None


def _serve(backing: str, mountpoint: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:  # the parent died before the line above
        sys.exit(1)
    fusepy = importlib.import_module("fusepy")  # Debian's python3-fusepy, under the system Python
    root = os.path.abspath(backing)
    for folder, _, files in os.walk(root):  # what a cut left of files unlinked while open (as fsck does)
        for name in files:
            if name.startswith(".fuse_hidden"):
                os.unlink(os.path.join(folder, name))
    fusepy.FUSE(LazyFS(root), mountpoint, foreground=True, nothreads=True)


if __name__ == "__main__":
    _serve(sys.argv[1], sys.argv[2])


def require_fuse() -> None:
    """Skip where the lazy file system cannot run; under CI (whose .ci/run installs it) fail.
    (For tests only: this module also runs as the file system's process, under the system
    Python, where pytest is not installed.)"""
    import pytest

    why = missing()
    if why is not None:
        if os.environ.get("CI"):
            pytest.fail(f"the power-cut tests need FUSE: {why}")
        pytest.skip(f"the power-cut tests need FUSE: {why}")
