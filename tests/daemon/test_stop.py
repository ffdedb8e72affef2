"""A stop that signals every process of the daemon at once, as systemd's control-group stop does.

``KillMode=control-group`` (systemd's default) sends SIGTERM to the daemon and to each of its
helpers at the same moment; Ctrl-C in a terminal sends SIGINT to the whole process group. Right
after a change the report thread is starting the page's process from the fork server, which the
signal has just killed. Whatever the timing, the daemon's output stays JSON lines (no traceback
from a thread, a helper or a finalizer) and it exits 0. Real processes, a real process group,
real signals; each run's processes are killed whatever happens.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testing.helpers import descendants, doc, wait_until, write

pytestmark = pytest.mark.slow  # real daemon processes

#: Runs per signal: the fork server is caught starting in nearly every one (see _forkserver_up).
RUNS = 3
#: The whole loop, per signal, at most (a loaded machine: each run is a few seconds).
BUDGET_SECONDS = 150.0


def _forkserver_up(pid: int) -> bool:
    """True once a fork server runs below ``pid``: the report thread is waiting on it for the
    page's process (it was stopped after the last idle stretch)."""
    for child in descendants(pid):
        with contextlib.suppress(OSError):
            if b"multiprocessing.forkserver" in Path(f"/proc/{child}/cmdline").read_bytes():
                return True
    return False


def _lines(log: Path) -> list[str]:
    return [line for line in log.read_text(errors="replace").splitlines() if line.strip()]


def _events(log: Path) -> list[str]:
    out = []
    for line in _lines(log):
        with contextlib.suppress(ValueError):
            out.append(json.loads(line)["event"])
    return out


def _one_stop(root: Path, sig: signal.Signals) -> tuple[int, list[str], list[str]]:
    """Start a daemon in a process group of its own, make a change, and signal the whole group
    while the page's process is being started. Returns the exit code, the non-JSON lines of its
    output, and its events."""
    inbox, log = root / "inbox", root / "daemon.log"
    inbox.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WATCHER_", "NOTIFY_", "WATCHDOG_"))}
    # Helpers stop after a fifth of a second without work: the change below starts them again.
    env.update({"WATCHER_SETTLE_SECONDS": "0.1", "WATCHER_REPORT_INTERVAL": "0.05", "WATCHER_WORKERS": "2",
                "WATCHER_WORKER_IDLE_SECONDS": "0.2"})  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "watcher", "run", "--watch-dir", str(inbox), "--db", str(root / "var" / "w.db"),
             "--log-format", "json"],
            cwd=root, env=env, stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    try:
        wait_until(lambda: "report_page_written" in _events(log), timeout=60, what="the first page")
        wait_until(lambda: not descendants(proc.pid), timeout=60, what="the helpers stopped once idle")
        write(inbox / "change.json", doc())
        # Signalled as soon as the fork server shows (or, if the whole page went by first, after it).
        wait_until(
            lambda: _forkserver_up(proc.pid) or _events(log).count("report_page_written") > 1,
            timeout=60, interval=0.002, what="the report thread starting the page's process",
        )  # fmt: skip
        os.killpg(proc.pid, sig)  # the daemon and every helper at once: a control-group stop
        code = proc.wait(60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of the group (none should be)
        proc.wait(10)
    bad = []
    for line in _lines(log):
        try:
            json.loads(line)
        except ValueError:
            bad.append(line)
    return code, bad, _events(log)


@pytest.mark.timeout(int(BUDGET_SECONDS) + 60)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_to_every_process_right_after_a_change_leaves_only_json_and_exit_0(
    tmp_path: Path, sig: signal.Signals
) -> None:
    deadline = time.monotonic() + BUDGET_SECONDS
    for run in range(RUNS):
        if run and time.monotonic() > deadline:
            break  # a slow machine: fewer runs rather than a timeout
        code, bad, events = _one_stop(tmp_path / f"run{run}", sig)
        assert bad == [], f"run {run}: non-JSON output:\n" + "\n".join(bad[:40])
        assert code == 0, f"run {run}: exit {code}"
        assert events[-1] == "daemon_stopped", events[-5:]
        # A helper killed under the daemon is a logged event at most, never a dead thread.
        assert "report_thread_error" not in events
