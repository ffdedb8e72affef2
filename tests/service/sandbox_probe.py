"""Tries what the service's sandbox should forbid, from inside it; one JSON line per attempt.

Run by the service test as an ``ExecStartPost=`` of the unit, so it gets exactly the unit's user,
namespaces, mounts, capabilities and seccomp filters. Every attempt runs in a forked child: a
system call the filter denies kills the caller with SIGSYS. Standard library only.
Usage: ``sandbox_probe.py WATCH_DIR STATE_DIR``.
"""

from __future__ import annotations

import ctypes
import json
import mmap
import os
import signal
import socket
import stat
import sys
import time
from collections.abc import Callable

LIBC = ctypes.CDLL(None, use_errno=True)
CLONE_NEWUSER = 0x10000000
PER_LINUX32 = 0x0008


def libc_call(result: int) -> None:
    """Raise the errno of a failed libc call."""
    if result == -1:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def write_file(path: str) -> Callable[[], None]:
    def attempt() -> None:
        with open(path, "w") as handle:
            handle.write("probe")
        os.unlink(path)

    return attempt


def setuid_bit(state_dir: str) -> None:
    path = os.path.join(state_dir, ".probe-suid")
    with open(path, "w"):
        pass
    try:
        os.chmod(path, 0o4640)
    finally:
        os.unlink(path)


def see_pid_1() -> None:
    if "1" not in os.listdir("/proc"):
        raise FileNotFoundError(2, "pid 1 not in /proc")


def open_block_device() -> None:
    devices = [e.path for e in os.scandir("/dev") if stat.S_ISBLK(e.stat(follow_symlinks=False).st_mode)]
    if not devices:
        raise FileNotFoundError(2, "no block device in /dev")
    open(devices[0], "rb").close()


def probes(watch_dir: str, state_dir: str) -> dict[str, Callable[[], object]]:
    return {
        "socket AF_UNIX": lambda: socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).close(),
        "socket AF_INET": lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM).close(),
        "socket AF_NETLINK": lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW).close(),
        "unshare user namespace": lambda: libc_call(LIBC.unshare(CLONE_NEWUSER)),
        "mmap write+execute": lambda: mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC),
        "mmap write": lambda: mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE),
        "realtime scheduling": lambda: os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1)),
        "personality change": lambda: libc_call(LIBC.personality(PER_LINUX32)),
        "setuid bit on own file": lambda: setuid_bit(state_dir),
        "chroot (@privileged)": lambda: os.chroot("/"),
        "sched_setaffinity (@resources)": lambda: os.sched_setaffinity(0, os.sched_getaffinity(0)),
        "nice +1 (setpriority)": lambda: os.nice(1),
        "set clock": lambda: time.clock_settime(time.CLOCK_REALTIME, time.time()),
        "set hostname": lambda: socket.sethostname("probe"),
        "open /dev/kmsg": lambda: open("/dev/kmsg", "rb").close(),
        "open a block device": open_block_device,
        "write /usr": write_file("/usr/.probe"),
        "write /etc": write_file("/etc/.probe"),
        "write watch dir": write_file(os.path.join(watch_dir, ".probe")),
        "write state dir": write_file(os.path.join(state_dir, ".probe")),
        "read watch dir": lambda: os.listdir(watch_dir),
        "write /sys": write_file("/sys/kernel/mm/transparent_hugepage/enabled"),
        "write /sys/fs/cgroup": write_file("/sys/fs/cgroup/systemd/probe"),
        "read /proc/sys": lambda: open("/proc/sys/kernel/hostname").close(),
        "see pid 1 in /proc": see_pid_1,
        "see the host's /tmp marker": lambda: open("/tmp/watcher-probe-marker").close(),
    }


def run(attempt: Callable[[], object]) -> str:
    """'allowed', 'denied: <error>' or 'killed: <signal>', from a forked child."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            attempt()
            message = "allowed"
        except OSError as exc:
            message = f"denied: {type(exc).__name__}: {exc.strerror or exc}"
        os.write(write, message.encode())
        os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    with os.fdopen(read) as pipe:
        message = pipe.read()
    if os.WIFSIGNALED(status):
        return f"killed: {signal.Signals(os.WTERMSIG(status)).name}"
    return message or f"exit {os.waitstatus_to_exitcode(status)}"


def main() -> int:
    watch_dir, state_dir = sys.argv[1], sys.argv[2]
    for name, attempt in probes(watch_dir, state_dir).items():
        print(json.dumps({"probe": name, "result": run(attempt)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
