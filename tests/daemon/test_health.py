"""``watcher status --check``: each exit code from a scenario that causes it, with real daemons."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from testing.daemon import Daemon
from testing.helpers import doc, wait_until, write

pytestmark = pytest.mark.slow  # real daemon processes


def check(d: Daemon, **env: str) -> tuple[int, str]:
    """Run the check as an operator's monitoring would: a process of its own, one line on stdout."""
    extra = {f"WATCHER_{k.upper()}": v for k, v in env.items()}
    proc = subprocess.run(
        [sys.executable, "-m", "watcher", "status", "--check", "--db", str(d.db)],
        capture_output=True, text=True, timeout=30, env={**d.env, **extra}, cwd=d.root,
    )  # fmt: skip
    assert proc.stderr == ""
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, proc.stdout
    return proc.returncode, lines[0]


def until(d: Daemon, code: int, timeout: float = 30.0, **env: str) -> str:
    """Wait until the check exits ``code``; its line."""
    found: list[str] = []

    def done() -> bool:
        got, line = check(d, **env)
        found[:] = [line]
        return got == code

    wait_until(done, timeout, what=f"exit {code} from the check")
    return found[0]


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon(tmp_path)
    yield d
    if d.proc is not None and d.proc.poll() is None:
        d.proc.send_signal(signal.SIGCONT)
    d.stop()


def test_ok_then_rejections_rising_then_down(daemon: Daemon) -> None:
    daemon.start()
    write(daemon.inbox / "good.json", doc())
    wait_until(lambda: "good.json" in daemon.results(), what="the result")
    out = until(daemon, 0)
    assert out.startswith("WATCHER OK - daemon running (pid ")

    write(daemon.inbox / "bad.json", "{")
    wait_until(lambda: daemon.rejections() == {"bad.json"}, what="the rejection")
    assert check(daemon)[0] == 0  # one rejection is within the default limit (10 an hour)
    code, out = check(daemon, check_rejections="0")
    assert code == 1, out
    assert out == "WATCHER WARNING - rejections rising: 1 files rejected in 3600 s (limit 0)"

    assert daemon.stop() == 0
    code, out = check(daemon)
    assert code == 2, out
    assert out.startswith("WATCHER CRITICAL - daemon down (stopped at ")


def test_a_hung_daemon_is_critical(daemon: Daemon) -> None:
    daemon.start()
    assert daemon.proc is not None
    until(daemon, 0)
    os.kill(daemon.proc.pid, signal.SIGSTOP)  # hung: no heartbeat, no health file
    out = until(daemon, 2, check_heartbeat_seconds="1")
    assert "heartbeat late" in out or "watchdog late" in out, out
    os.kill(daemon.proc.pid, signal.SIGCONT)
    until(daemon, 0, check_heartbeat_seconds="8")


def test_failing_report_writes_are_critical(daemon: Daemon) -> None:
    daemon.start()
    reports = daemon.db.parent / "reports"
    wait_until(reports.is_dir, what="the reports")
    shutil.rmtree(reports)
    reports.write_text("a file where the report folder was\n")  # every write there fails, even as root
    write(daemon.inbox / "a.json", doc())
    daemon.wait_event("report_write_failed")
    out = until(daemon, 2)
    assert "report writes failing for" in out, out
    reports.unlink()
    until(daemon, 0)  # once the reports are written again


def test_an_unreachable_central_database_warns_after_the_limit(daemon: Daemon) -> None:
    pytest.importorskip("psycopg")
    daemon.env["WATCHER_CENTRAL_URL"] = "postgresql://watcher@127.0.0.1:1/watcher?connect_timeout=1"
    daemon.start()
    daemon.wait_event("central_unreachable")
    out = until(daemon, 1, check_central_seconds="1")
    assert out.startswith("WATCHER WARNING - central database unreachable for "), out
    assert check(daemon)[0] == 0  # within the default limit (10 minutes)


def test_unknown_when_nothing_can_be_read(tmp_path: Path) -> None:
    d = Daemon(tmp_path)
    code, out = check(d)
    assert code == 3, out
    assert out.startswith("WATCHER UNKNOWN - cannot read the database: ")
    code, out = check(d, target_recall="2")
    assert (code, out.split(" - ")[0]) == (3, "WATCHER UNKNOWN")
