"""Helper processes die with the process that started them, and print nothing of their own.

A ``kill -9`` of the daemon gives it no chance to stop its worker pool: the workers hold both
ends of their task queue, so they would wait for work forever, and multiprocessing's resource
tracker lives as long as any of them. Each helper therefore asks the kernel to kill it when its
parent dies (``PR_SET_PDEATHSIG``): the forkserver when the daemon dies, the workers when the
forkserver (or, forked directly, the scan) dies; the resource tracker then sees its pipe close
and exits. The tracker's own stderr is discarded: its "leaked semaphore" warning after such a
kill is not a JSON line and would break "the daemon's output is JSON lines only".
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from multiprocessing import resource_tracker

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Have the kernel kill this process (SIGKILL) when its parent dies (Linux; elsewhere a no-op).

    The death signal follows the parent *thread* that forked this process; watcher forks its
    helpers from threads that live as long as the daemon. If the parent is already gone, exit now.
    """
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return  # not allowed here (some sandboxes): the pipes still end the helpers, later
    if parent == 1 or os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)


def start_quiet_resource_tracker() -> None:
    """Start multiprocessing's resource tracker now, with its stderr on ``/dev/null``.

    Call it before any other thread runs (nothing else may write to stderr meanwhile): fd 2 is
    pointed at ``/dev/null`` while the tracker is spawned, then restored.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        resource_tracker.ensure_running()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
