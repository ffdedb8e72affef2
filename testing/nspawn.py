"""A booted Debian bookworm under systemd-nspawn, to test the service under a real systemd.

The OS tree is built once with debootstrap and cached outside the repository
(``$WATCHER_TEST_TREE``, default ``${XDG_CACHE_HOME:-~/.cache}/watcher-tests/bookworm``); it is
rebuilt when the package list below changes. Every container boots it with
``--volatile=overlay``: all writes land in a tmpfs that vanishes with the container, so the cached
tree is never changed and no two runs see each other's state. Commands run inside through
``nsenter`` into the container's namespaces, so the host needs no systemd-machined (it may not run
systemd at all). The container is powered off, or killed, when the context manager exits, even
on failure; its mounts live in its own mount namespace and die with it.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType

SUITE = "bookworm"
#: What the tree holds besides Debian's minimal base: systemd as init, the system Python with
#: venv (docs/service.md's interpreter), jq (docs/following.md's log recipe), sudo (the install's commands).
PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "python3.11",
    "python3.11-venv",
    "python3-distutils",
    "python3-lib2to3",
    "jq",
    "sudo",
)
RECIPE = f"{SUITE} minbase {','.join(PACKAGES)}\n"
STAMP = ".watcher-test-tree"
MIRROR_ENV = "WATCHER_TEST_MIRROR"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class ContainerError(RuntimeError):
    """The container could not be built, booted or reached."""


def cache_dir() -> Path:
    """Where built trees and wheels are kept between runs."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "watcher-tests"


def tree_path() -> Path:
    """The cached bookworm tree (``$WATCHER_TEST_TREE`` overrides the default location)."""
    return Path(os.environ.get("WATCHER_TEST_TREE") or cache_dir() / SUITE)


def unavailable() -> str | None:
    """Why a container cannot be booted here, or None when it can."""
    if os.geteuid() != 0:
        return "booting a container needs root"
    missing = [tool for tool in ("systemd-nspawn", "debootstrap", "nsenter") if shutil.which(tool) is None]
    if missing:
        return f"not installed: {', '.join(missing)} (apt-get install systemd-container debootstrap util-linux)"
    return None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path``, so two test runs never build the same cache at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def ensure_tree(path: Path | None = None) -> Path:
    """Build the tree with debootstrap unless a complete one for this recipe is cached."""
    path = path or tree_path()
    with _locked(path.with_name(path.name + ".lock")):
        stamp = path / STAMP
        if stamp.is_file() and stamp.read_text() == RECIPE:
            return path
        building = path.with_name(path.name + ".building")
        shutil.rmtree(building, ignore_errors=True)
        mirror = os.environ.get(MIRROR_ENV) or DEFAULT_MIRROR
        proc = subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(building), mirror],
            capture_output=True,
            text=True,
            timeout=1800,
        )
        if proc.returncode != 0:
            raise ContainerError(f"debootstrap failed ({proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
        (building / STAMP).write_text(RECIPE)
        shutil.rmtree(path, ignore_errors=True)
        building.rename(path)  # complete trees only ever appear under the final name
    return path


def ensure_wheelhouse(project: Path) -> Path:
    """Wheels of every pinned dependency and of the build backend, built on the host once per lock.

    The container has no package index to reach (this host's pip may be configured with local
    indexes the container cannot see); docs/service.md's ``pip install`` runs inside against this
    folder instead. The project's own wheel is left out: the page's command builds it.
    """
    lock = project / "requirements.lock"
    key = hashlib.sha256(lock.read_bytes() + (project / "pyproject.toml").read_bytes()).hexdigest()[:16]
    path = cache_dir() / f"wheels-{key}"
    with _locked(path.with_name(path.name + ".lock")):
        if (path / ".complete").is_file():
            return path
        building = path.with_name(path.name + ".building")
        shutil.rmtree(building, ignore_errors=True)
        pip = [sys.executable, "-m", "pip", "wheel", "-q", "-c", str(lock), "-w", str(building)]
        proc = subprocess.run(
            [*pip, str(project), "setuptools"],
            capture_output=True,
            text=True,
            timeout=900,
        )
        if proc.returncode != 0:
            raise ContainerError(f"pip wheel failed ({proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
        for own in building.glob("watcher-*.whl"):
            own.unlink()
        (building / ".complete").touch()
        shutil.rmtree(path, ignore_errors=True)
        building.rename(path)
    return path


def _terminate_with_parent() -> None:
    """In the child before exec: SIGTERM when the parent dies (prctl PR_SET_PDEATHSIG)."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)


def _nspid(pid: int) -> list[str]:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("NSpid:"):
                return line.split()[1:]
    except OSError:
        pass
    return []


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def _descends_from(pid: int, ancestor: int) -> bool:
    for _ in range(64):
        pid = _ppid(pid)
        if pid == ancestor:
            return True
        if pid <= 1:
            return False
    return False


class Container:
    """``systemd-nspawn --boot`` of ``tree`` with ``binds`` (host path, container path, read-only)."""

    def __init__(self, tree: Path, name: str, log: Path, binds: Sequence[tuple[Path, str, bool]] = ()):
        self.tree, self.name, self.log_path, self.binds = tree, name, log, list(binds)
        self.proc: subprocess.Popen[bytes] | None = None
        self.init_pid = 0

    def __enter__(self) -> Container:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def start(self, timeout: float = 120.0) -> None:
        """Boot, and return once systemd reports the boot finished (running or degraded)."""
        cmd = [
            "systemd-nspawn",
            "--quiet",
            f"--directory={self.tree}",
            "--boot",
            "--volatile=overlay",
            "--register=no",
            "--keep-unit",
            f"--machine={self.name}",
            "--console=read-only",
        ]
        cmd += [f"--bind{'-ro' if ro else ''}={host}:{inside}" for host, inside, ro in self.binds]
        with self.log_path.open("wb") as log:
            # A session of its own: the teardown can signal nspawn without touching pytest. Should
            # the test process die without a teardown, nspawn gets SIGTERM and powers the container off.
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                preexec_fn=_terminate_with_parent,
            )
        deadline = time.monotonic() + timeout
        gate = threading.Event()
        while not self.init_pid:
            if self.proc.poll() is not None:
                raise ContainerError(f"systemd-nspawn exited {self.proc.returncode}:\n{self.boot_log()}")
            self.init_pid = self._find_init()
            if time.monotonic() > deadline:
                raise ContainerError(f"no init process in the container after {timeout}s:\n{self.boot_log()}")
            gate.wait(0.05)
        state = ""
        while state not in ("running", "degraded"):
            if self.proc.poll() is not None:
                raise ContainerError(f"systemd-nspawn exited {self.proc.returncode}:\n{self.boot_log()}")
            if time.monotonic() > deadline:
                raise ContainerError(f"boot did not finish in {timeout}s (state {state!r}):\n{self.boot_log()}")
            left = max(deadline - time.monotonic(), 1.0)
            proc = self.run("systemctl is-system-running --wait", check=False, timeout=left)
            state = proc.stdout.strip()
            if state not in ("running", "degraded"):
                gate.wait(0.1)

    def _find_init(self) -> int:
        """The container's PID 1, seen from the host: a descendant of nspawn that is pid 1 inside."""
        assert self.proc is not None
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                pid = int(entry.name)
                nspid = _nspid(pid)
                if len(nspid) >= 2 and nspid[-1] == "1" and _descends_from(pid, self.proc.pid):
                    return pid
        return 0

    def boot_log(self) -> str:
        """The container's console output so far (the end of it)."""
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def command(self, script: str) -> list[str]:
        """The host command line that runs ``script`` with bash as root inside the container."""
        return [
            "nsenter",
            f"--target={self.init_pid}",
            "--mount",
            "--uts",
            "--ipc",
            "--net",
            "--pid",
            "--root",
            "--wd",
            "--",
            "/usr/bin/env",
            "-i",
            f"PATH={PATH}",
            "LANG=C.UTF-8",
            "HOME=/root",
            "/bin/bash",
            "-o",
            "pipefail",
            "-c",
            script,
        ]

    def run(
        self, script: str, *, check: bool = True, timeout: float = 60.0, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``script`` inside; with ``check``, a non-zero exit raises with its output."""
        proc = subprocess.run(
            self.command(script), input=input, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and proc.returncode != 0:
            raise ContainerError(
                f"exit {proc.returncode} from inside the container: {script}\n"
                f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"
            )
        return proc

    def stop(self, timeout: float = 30.0) -> None:
        """Power off (nspawn turns SIGTERM into a clean shutdown); kill it all past the deadline."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                # Killing the container's PID 1 kills every process in its PID namespace.
                if self.init_pid:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(self.init_pid, signal.SIGKILL)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        self.proc = None
