"""A failing or full disk under the database, injected into the real daemon with libfiu.

``fiu-run -x`` preloads libfiu's POSIX wrappers into the daemon (and so into every process it
starts); ``fiu-ctrl`` turns failure points on and off in the running processes. SQLite syncs with
``fdatasync`` (``fsync`` too, where built so) and writes with ``pwrite``: failing those hits the
database alone, never the log on stderr. Without ``failinfo`` libfiu picks a random errno among the
function's documented ones; the tests name it (5: EIO, 28: ENOSPC).

Debian's ``fiu-utils`` provides both commands; ``.ci/run`` installs it, so under CI its absence
is a failure, elsewhere a skip.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testing.daemon import OBSERVERS, Daemon
from testing.helpers import descendants, doc, wait_until, write

pytestmark = pytest.mark.slow  # real daemon processes

EIO, ENOSPC = 5, 28
#: Every failure point the tests use, known to every process from its start but failing never:
#: a ``disable`` sent to a process that never had the point enabled makes libfiu print an error
#: line on that process's stderr (the daemon's log).
ARMED = [f"enable_random name=posix/io/{p},probability=0" for p in ("sync/fsync", "sync/fdatasync", "rw/pwrite")]
SYNC_FAILS = [f"enable name=posix/io/sync/{call},failinfo={EIO}" for call in ("fsync", "fdatasync")]
SYNC_WORKS = [f"disable name=posix/io/sync/{call}" for call in ("fsync", "fdatasync")]


@pytest.fixture
def fiu() -> None:
    if shutil.which("fiu-run") is None or shutil.which("fiu-ctrl") is None:
        if os.environ.get("CI"):  # .ci/run installs it: its absence there is a failure
            pytest.fail("fiu-run not installed (apt-get install fiu-utils)")
        pytest.skip("fiu-run not installed (apt-get install fiu-utils)")


class FaultyDaemon(Daemon):
    """A daemon started under ``fiu-run -x`` with ``faults`` on from its first instruction."""

    def __init__(self, root: Path, *faults: str, env: dict[str, str] | None = None) -> None:
        # Debug: each retry is a line, so the tests see the daemon wait instead of sleeping on it.
        super().__init__(root, "--log-level", "debug", env=env)
        self.ctrl = root / "fiu" / "ctrl"  # fiu's control FIFOs: <ctrl>-<pid>.in/.out per process
        self.ctrl.parent.mkdir()
        self.wrapper = ["fiu-run", "-x", "-f", str(self.ctrl), *_commands([*ARMED, *faults])]

    def faults(self, *commands: str) -> None:
        """Run fiu commands in the daemon and in every process below it that has libfiu loaded."""
        assert self.proc is not None
        pids = [p for p in (self.proc.pid, *descendants(self.proc.pid)) if Path(f"{self.ctrl}-{p}.in").exists()]
        assert self.proc.pid in pids
        subprocess.run(
            ["fiu-ctrl", "-f", str(self.ctrl), *_commands(commands), *map(str, pids)],
            check=True, timeout=30, capture_output=True,
        )  # fmt: skip

    def named(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events() if e["event"] == event]

    def wait_tries(self, n: int, timeout: float = 60.0) -> None:
        """Wait until the database has failed ``n`` times (the first ``database_error``, then each
        retry's line, at debug), the daemon alive all along."""

        def enough() -> bool:
            self.assert_alive()
            return len([e for e in self.events() if e["event"] in ("database_error", "database_retry")]) >= n

        wait_until(enough, timeout, what=f"{n} failures of the database")

    def assert_clean_log(self) -> None:
        """Every line of stderr is one JSON object (``events`` parses each), and no traceback."""
        events = self.events(since_start=False)
        assert "Traceback" not in self.log_path.read_text()
        assert not [e for e in events if "exception" in e or "exc_info" in e]


def _commands(commands: tuple[str, ...] | list[str]) -> list[str]:
    return [arg for command in commands for arg in ("-c", command)]


@pytest.fixture
def faulty(tmp_path: Path, fiu: None) -> Iterator[Any]:
    made: list[FaultyDaemon] = []

    def make(*faults: str, env: dict[str, str] | None = None) -> FaultyDaemon:
        made.append(FaultyDaemon(tmp_path, *faults, env=env))
        return made[-1]

    yield make
    for d in made:  # every process started here dies with the test
        if d.proc is not None and d.proc.poll() is None:
            try:
                d.stop()
            except subprocess.TimeoutExpired:
                d.kill()
            with contextlib.suppress(AssertionError):
                d.kill()


def _at(event: dict[str, Any]) -> float:
    from datetime import datetime

    return datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()


@pytest.fixture
def notifications(tmp_path: Path) -> Iterator[socket.socket]:
    """systemd's end of sd_notify: the daemon's ``NOTIFY_SOCKET`` is ``tmp_path/notify.sock``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(tmp_path / "notify.sock"))
        sock.settimeout(30)
        yield sock


def _told(sock: socket.socket, prefix: str) -> str:
    """The next notification starting with ``prefix`` (others, such as the start timeout's
    ``EXTEND_TIMEOUT_USEC``, passed over); the socket's timeout bounds each wait."""
    while True:
        message = sock.recv(4096).decode()
        if message.startswith(prefix):
            return message


def test_an_io_error_at_start_is_waited_out_and_ready_follows_once_the_disk_works(
    faulty: Any, notifications: socket.socket
) -> None:
    # Every sync fails from the start: creating the database cannot succeed.
    d = faulty(*SYNC_FAILS, env={"NOTIFY_SOCKET": notifications.getsockname()})
    for i in range(30):
        write(d.inbox / f"run{i}" / f"m{i}.json", doc() if i % 5 else b"{")
    d.start(wait=False)
    d.wait_event("database_error")
    d.wait_tries(4)  # it waits (three retries gone by), it does not exit
    assert len(d.named("database_error")) == 1  # one line, not one per retry
    assert not d.named("daemon_ready")
    told = _told(notifications, "STATUS=")  # what systemctl status shows meanwhile
    assert told.startswith("STATUS=waiting for the database: ") and "disk I/O error" in told, told
    write(d.inbox / "meanwhile.json", doc())  # written while it waits: found by the first reconcile

    lifted = time.time()
    d.faults(*SYNC_WORKS)
    ready = d.wait_event("daemon_ready", timeout=30)
    print(f"\nREADY {_at(ready) - lifted:.2f} s after the fault was lifted")
    assert _told(notifications, "READY=1").startswith("READY=1")
    d.assert_invariant()
    assert len(d.named("database_error")) == 1 and len(d.named("database_back")) == 1
    status = subprocess.run(
        [sys.executable, "-m", "watcher", "status", "--db", str(d.db), "--json"], capture_output=True, env=d.env
    )
    assert status.returncode == 0, status.stderr  # a daemon runs on this database
    assert d.stop() == 0
    d.assert_clean_log()


def test_a_stop_while_the_database_fails_at_start_exits_0_at_once(faulty: Any) -> None:
    d = faulty(*SYNC_FAILS)
    write(d.inbox / "a.json", doc())
    d.start(wait=False)
    d.wait_event("database_error")
    assert d.proc is not None
    started = time.monotonic()
    assert d.stop(timeout=10) == 0
    assert time.monotonic() - started < 5
    d.assert_clean_log()


@pytest.mark.parametrize("observer", list(OBSERVERS))
def test_io_errors_during_a_burst_lose_nothing_once_lifted(faulty: Any, observer: str) -> None:
    d = faulty(env=OBSERVERS[observer]).start()  # healthy until READY
    d.faults(*SYNC_FAILS, f"enable_random name=posix/io/rw/pwrite,probability=0.3,failinfo={EIO}")
    for i in range(200):
        write(d.inbox / f"b{i % 10}" / f"m{i}.json", doc() if i % 7 else b"[1,")
    d.wait_event("database_error")
    d.wait_tries(3)
    d.faults(*SYNC_WORKS, "disable name=posix/io/rw/pwrite")
    d.assert_invariant(timeout=60)
    events = [e["event"] for e in d.events()]
    assert events.count("database_error") == 1
    # The connection that failed was not trusted again: the database was opened anew and the
    # whole tree reconciled into it before it counted as working.
    after = events[events.index("database_error") :]
    assert "reconcile_done" in after and after.index("reconcile_done") < after.index("database_back")
    assert d.stop() == 0
    d.assert_clean_log()


@pytest.mark.parametrize("observer", list(OBSERVERS))
def test_a_full_disk_keeps_the_work_and_everything_is_accounted_once_space_returns(faulty: Any, observer: str) -> None:
    d = faulty(env=OBSERVERS[observer]).start()
    write(d.inbox / "before.json", doc())
    wait_until(lambda: "before.json" in d.results(), what="before.json stored")
    d.faults(f"enable name=posix/io/rw/pwrite,failinfo={ENOSPC}")  # no write into the database succeeds
    for i in range(50):
        write(d.inbox / f"full{i}.json", doc())
    error = d.wait_event("database_error")
    assert "database or disk is full" in error["error"]
    d.wait_tries(4)  # still up, still trying, quietly
    assert len(d.named("database_error")) == 1
    assert set(d.results()) == {"before.json"}
    d.faults("disable name=posix/io/rw/pwrite")
    d.assert_invariant(timeout=60)
    assert len(d.results()) == 51
    assert len(d.named("database_error")) == 1
    assert d.stop() == 0
    d.assert_clean_log()


def test_a_disk_full_at_start_is_waited_out_from_the_lock_file_on(faulty: Any) -> None:
    d = faulty(f"enable name=posix/io/rw/pwrite,failinfo={ENOSPC}")  # not even the lock file's pid fits
    write(d.inbox / "a.json", doc())
    d.start(wait=False)
    d.wait_event("database_error")
    d.wait_tries(3)
    assert len(d.named("database_error")) == 1 and not d.named("daemon_ready")
    d.faults("disable name=posix/io/rw/pwrite")
    d.wait_event("daemon_ready", timeout=30)
    d.assert_invariant()
    assert d.stop() == 0
    d.assert_clean_log()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 3 MiB tmpfs for the database's folder: a disk that really fills up (root only)."""
    var = tmp_path / "var"
    var.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m,mode=0750", "tmpfs", str(var)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield var
    finally:
        subprocess.run(["umount", "--lazy", str(var)], check=True)


@pytest.mark.parametrize("observer", list(OBSERVERS))
def test_a_disk_that_really_fills_up_keeps_the_work_until_space_returns(
    small_disk: Path, tmp_path: Path, observer: str
) -> None:
    d = Daemon(tmp_path, "--log-level", "debug", env=OBSERVERS[observer])
    try:
        d.start()
        filler = small_disk / "filler"
        with filler.open("wb") as fh, contextlib.suppress(OSError):  # ENOSPC ends it
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        curve = {"threshold_arr": [i / 100 for i in range(101)], "recall_arr": [1 - i / 100 for i in range(101)]}
        for i in range(300):
            write(d.inbox / f"f{i}.json", doc(**curve))
        error = d.wait_event("database_error")
        assert "database or disk is full" in error["error"]
        wait_until(lambda: [e for e in d.events() if e["event"] == "database_retry"], what="a retry")
        filler.unlink()
        d.assert_invariant(timeout=60)
        assert len(d.results()) == 300
        assert [e["event"] for e in d.events()].count("database_error") == 1
        assert d.stop() == 0
    finally:
        if d.proc is not None and d.proc.poll() is None:
            d.kill()
    assert "Traceback" not in d.log_path.read_text()


class Ext4Disk:
    """A small ext4 file system on a loop device, mounted over ``mountpoint`` with
    ``errors=remount-ro`` (Debian's default for its root file system)."""

    def __init__(self, image: Path, mountpoint: Path) -> None:
        self.image = image
        self.mountpoint = mountpoint
        self.mounts = 0  # mounted over the folder, stacked: each one unmounted at the end

    def mount(self, image: Path, *options: str) -> None:
        opts = ",".join(("loop", *options))
        subprocess.run(["mount", "-o", opts, str(image), str(self.mountpoint)], check=True, capture_output=True)
        self.mounts += 1

    def go_read_only(self) -> None:
        """The kernel's own reaction to an error of the file system: read-only at once, the files
        opened for writing included (``mount -o remount,ro`` refuses while any is: "busy")."""
        device = subprocess.run(
            ["findmnt", "-n", "-o", "SOURCE", "--target", str(self.mountpoint)],
            check=True, capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip
        Path(f"/sys/fs/ext4/{Path(device).name}/trigger_fs_error").write_text("watcher test\n")

    def writable_again(self) -> None:
        """What an administrator does: check the file system and mount it again. A file system the
        kernel made read-only stays so until unmounted, and the daemon holds it open: a checked copy
        of it is mounted over the same folder (what is already open stays on the old one)."""
        fixed = self.image.with_name("repaired.img")
        shutil.copyfile(self.image, fixed)
        checked = subprocess.run(["e2fsck", "-f", "-y", str(fixed)], capture_output=True)
        assert checked.returncode < 4, checked.stdout.decode() + checked.stderr.decode()
        self.mount(fixed)

    def unmount_all(self) -> None:
        for _ in range(self.mounts):
            subprocess.run(["umount", "--lazy", str(self.mountpoint)], check=True)
        self.mounts = 0


@pytest.fixture
def ext4_disk(tmp_path: Path) -> Iterator[Ext4Disk]:
    """The database's folder on its own ext4 file system (root only)."""
    var = tmp_path / "var"
    var.mkdir()
    needed = ("mount", "findmnt", "mkfs.ext4", "e2fsck", "losetup")
    if os.geteuid() != 0 or any(shutil.which(c) is None for c in needed):
        pytest.skip("a loop-mounted ext4 needs root, util-linux and e2fsprogs")
    image = tmp_path / "disk.img"
    with image.open("wb") as fh:
        fh.truncate(32 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-O", "^has_journal", str(image)], check=True, capture_output=True)
    disk = Ext4Disk(image, var)
    try:
        disk.mount(image, "errors=remount-ro")
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot mount a loop device here: {exc.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        disk.unmount_all()


@pytest.mark.parametrize("observer", list(OBSERVERS))
def test_a_database_folder_that_turns_read_only_keeps_the_work_until_writable_again(
    ext4_disk: Ext4Disk, tmp_path: Path, observer: str
) -> None:
    d = Daemon(tmp_path, "--log-level", "debug", env=OBSERVERS[observer])
    try:
        d.start()
        for i in range(20):
            write(d.inbox / f"before{i}.json", doc())
        d.assert_invariant()
        os.sync()  # what was committed is on the disk: this test is about read-only, not a power cut
        ext4_disk.go_read_only()
        with pytest.raises(OSError, match="Read-only file system"):
            (d.db.parent / "probe").write_bytes(b"")
        for i in range(30):
            write(d.inbox / f"during{i}.json", doc() if i % 10 else b"{")
        for i in range(5):
            (d.inbox / f"before{i}.json").unlink()
        error = d.wait_event("database_error")
        print(f"\nread-only: database_error {error['error']!r}")
        wait_until(lambda: [e for e in d.events() if e["event"] == "database_retry"], 30, what="a retry")
        d.assert_alive()
        ext4_disk.writable_again()
        d.assert_invariant(timeout=60)
        assert len(d.results()) == 15 + 27 and len(d.rejections()) == 3
        events = [e["event"] for e in d.events()]
        assert events.count("database_error") == 1, error
        assert "database_back" in events
        assert d.stop() == 0
    finally:
        if d.proc is not None and d.proc.poll() is None:
            d.kill()
    assert "Traceback" not in d.log_path.read_text()
    assert all("exception" not in e and "exc_info" not in e for e in d.events(since_start=False))
