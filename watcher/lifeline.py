"""Helper processes die with the process that started them, and print nothing of their own.

A ``kill -9`` of the daemon gives it no chance to stop its worker pool: the workers hold both
ends of their task queue, so they would wait for work forever, and multiprocessing's resource
tracker lives as long as any of them. Each helper therefore asks the kernel to kill it when its
parent dies (``PR_SET_PDEATHSIG``): the forkserver when the daemon dies, the workers when the
forkserver (or, forked directly, the scan) dies; the resource tracker then sees its pipe close
and exits.

Nothing a helper could print reaches the daemon's output, which is JSON lines only:

* a helper that gets SIGTERM or SIGINT (a control-group stop, Ctrl-C in a terminal, which signals
  the whole process group) ends at once, by the signal's default action: no ``KeyboardInterrupt``
  traceback from a worker waiting for work (the forkserver keeps multiprocessing's own choice:
  SIGINT ignored, SIGTERM ends it; the daemon notices a dead helper and starts another);
* the resource tracker, every time it is started (at the daemon's start, and again after an idle
  stretch stopped it), gets ``/dev/null`` for its stderr: its "leaked semaphore" warning after a
  helper was killed is not a JSON line.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Iterator
from multiprocessing import resource_tracker, spawn, util
from typing import Any

_PR_SET_PDEATHSIG = 1
#: Signals that end a helper by their default action (the kernel's: nothing printed).
HELPER_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def die_with_parent() -> None:
    """Have the kernel kill this process (SIGKILL) when its parent dies (Linux; elsewhere a no-op),
    and let SIGTERM and SIGINT end it without a word (see the module's doc).

    The death signal follows the parent *thread* that forked this process; watcher forks its
    helpers from threads that live as long as the daemon. If the parent is already gone, exit now.
    """
    for sig in HELPER_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, HELPER_SIGNALS)  # blocked while it started: see signals_held
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return  # not allowed here (some sandboxes): the pipes still end the helpers, later
    if parent == 1 or os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """SIGTERM and SIGINT blocked in this thread while helpers are started from it: a helper
    inherits the mask, so a signal that comes while its interpreter starts (before
    :func:`die_with_parent` can set its handlers) waits for it, and then ends it silently, instead
    of a ``KeyboardInterrupt`` traceback from an import. Signals still reach the daemon's other
    threads (Python runs its handlers in the main thread)."""
    before = signal.pthread_sigmask(signal.SIG_BLOCK, HELPER_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def start_quiet_resource_tracker() -> None:
    """Make sure multiprocessing's resource tracker runs, started (if it is not) with its stderr
    on ``/dev/null``. Safe from any thread, at any time: the tracker is spawned with its own file
    actions, and this process's stderr is never touched.

    What :func:`multiprocessing.resource_tracker.ensure_running` does, but for the stderr: the same
    command, interpreter flags and blocked signals (the tracker ignores SIGINT and SIGTERM once it
    runs, and exits when every holder of its pipe has closed it).
    """
    tracker: Any = resource_tracker._resource_tracker  # private, in every CPython since 3.8
    spawn_quietly = getattr(os, "posix_spawn", None)
    if spawn_quietly is None:  # not on this platform: the tracker as multiprocessing starts it
        resource_tracker.ensure_running()
        return
    with tracker._lock:
        if tracker._fd is not None:
            if tracker._check_alive():
                return
            os.close(tracker._fd)  # died (killed): reap it, start another
            with contextlib.suppress(ChildProcessError):
                if tracker._pid is not None:
                    os.waitpid(tracker._pid, 0)
            tracker._fd = tracker._pid = None
        r, w = os.pipe()
        try:
            fd = 3 if r != 3 else 4  # where the tracker reads its pipe (dup2 onto itself would keep it CLOEXEC)
            exe = spawn.get_executable()
            args = [exe, *util._args_from_interpreter_flags(), "-c"]  # type: ignore[attr-defined]
            args.append(f"from multiprocessing.resource_tracker import main;main({fd})")
            actions = [(os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0), (os.POSIX_SPAWN_DUP2, r, fd)]
            pid = spawn_quietly(exe, args, os.environ, file_actions=actions, setsigmask=HELPER_SIGNALS)
        except BaseException:
            os.close(w)
            raise
        else:
            tracker._fd, tracker._pid = w, pid
        finally:
            os.close(r)
