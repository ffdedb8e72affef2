"""Run ``watcher run`` as a real subprocess and observe it through its database and its log."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from testing.helpers import descendants, wait_until
from testing.invariant import holds, violations

#: The two observers every fault and hostile-input scenario runs under (``[inotify]``, ``[polling]``);
#: a short polling interval keeps the poller's scenarios fast.
OBSERVERS: dict[str, dict[str, str]] = {
    "inotify": {},
    "polling": {"WATCHER_OBSERVER": "polling", "WATCHER_POLLING_INTERVAL": "0.2"},
}


class Daemon:
    """One daemon process on ``root/inbox`` with its database under ``root/var``."""

    def __init__(self, root: Path, *extra: str, env: dict[str, str] | None = None, db: Path | None = None) -> None:
        self.root = root
        self.inbox = root / "inbox"
        self.db = db or root / "var" / "watcher.db"
        self.log_path = root / "daemon.log"
        self.inbox.mkdir(parents=True, exist_ok=True)
        self.extra = extra
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("WATCHER_", "NOTIFY_", "WATCHDOG_"))}
        # Short timings keep the suite fast; the rules are the same at any scale.
        self.env.update({"WATCHER_SETTLE_SECONDS": "0.5", "WATCHER_REPORT_INTERVAL": "0.2", "WATCHER_WORKERS": "1"})
        self.env.update(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0
        self.python = sys.executable  # another interpreter, and user (popen_args), for permission tests
        self.entry = ["-m", "watcher"]  # or ["-c", code] that sets something up, then runs the CLI
        self.wrapper: list[str] = []  # a command that runs the interpreter (e.g. fiu-run: disk faults)
        self.popen_args: dict[str, Any] = {}

    def start(self, wait: bool = True) -> Daemon:
        """Start the process (appending to the same log), and by default wait until it is ready."""
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [*self.wrapper, self.python, *self.entry, "run", "--watch-dir", str(self.inbox), "--db", str(self.db),
             "--log-format", "json", *self.extra],
            cwd=self.root, env=self.env, stdout=log, stderr=log, **self.popen_args,
        )  # fmt: skip
        log.close()
        if wait:
            self.wait_event("daemon_ready")
        return self

    def events(self, since_start: bool = True) -> list[dict[str, Any]]:
        """Log events of this run (or of every run), parsed; every line must be valid JSON."""
        raw = self.log_path.read_bytes()[self._log_offset if since_start else 0 :]
        complete = raw[: raw.rfind(b"\n") + 1]  # the daemon may be midway through writing a line
        return [json.loads(line) for line in complete.decode().splitlines() if line.strip()]

    def wait_event(self, name: str, timeout: float = 30.0, **fields: Any) -> dict[str, Any]:
        """Wait until the log holds an event ``name`` with the given field values."""

        def find() -> dict[str, Any] | None:
            self.assert_alive(allow_exit=name == "daemon_stopped")
            for e in self.events():
                if e["event"] == name and all(e.get(k) == v for k, v in fields.items()):
                    return e
            return None

        return wait_until(find, timeout, what=f"log event {name} {fields}")

    def assert_alive(self, allow_exit: bool = False) -> None:
        if self.proc is not None and self.proc.poll() is not None and not allow_exit:
            raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{self.log_path.read_text()[-3000:]}")

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """Read the live database the way a user's script would (a separate read-only connection)."""
        if not self.db.exists():
            return []
        conn = sqlite3.connect(f"{self.db.as_uri()}?mode=ro", uri=True, timeout=10)
        try:
            return conn.execute(sql, args).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):  # a database being created: no schema yet
                return []
            raise
        finally:
            conn.close()

    def results(self) -> dict[str, str]:
        return {path: model for path, model in self.query("SELECT path, model_id FROM results")}

    def rejections(self) -> set[str]:
        return {r[0] for r in self.query("SELECT path FROM rejections")}

    def wait_results(self, expected: dict[str, str], timeout: float = 30.0) -> None:
        def done() -> bool:
            self.assert_alive()
            return self.results() == expected

        wait_until(done, timeout, what=f"results {expected}")

    def assert_invariant(self, timeout: float = 30.0) -> None:
        """Wait until the database agrees with the tree (:mod:`testing.invariant`); fail with every
        disagreement otherwise."""

        def holds() -> bool:
            self.assert_alive()
            return not violations(self.inbox, self.db)

        try:
            wait_until(holds, timeout, what="the invariant")
        except AssertionError:
            raise AssertionError("\n".join(violations(self.inbox, self.db))) from None

    @property
    def polling(self) -> bool:
        return self.env.get("WATCHER_OBSERVER") == "polling"

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, then wait for the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """``kill -9``, to the whole process tree as systemd does to the service's cgroup (the fork
        server, resource tracker and workers of a killed daemon would otherwise live on)."""
        assert self.proc is not None
        below = descendants(self.proc.pid)
        self.proc.kill()
        self.proc.wait(10)
        for pid in below:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def settle(d: Daemon, timeout: float = 30.0) -> None:
    """Wait until the invariant holds; on timeout, say what is still wrong."""

    def ok() -> bool:
        d.assert_alive()
        return holds(d.inbox, d.db)

    try:
        wait_until(ok, timeout, what="the invariant")
    except AssertionError:
        raise AssertionError("\n".join(violations(d.inbox, d.db))) from None
