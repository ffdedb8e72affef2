"""A fleet for the tests and the benchmarks: one central database on a throwaway PostgreSQL
(:mod:`testing.pgserver`), real ``watcher run`` daemons shipping to it, ``watcher central
publish`` as its reader; and the fleet's table files as the publisher wrote them before it
spliced them, to compare against."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg

from testing import fleet_invariant, invariant
from testing.daemon import Daemon
from testing.helpers import wait_until
from watcher.config import Settings
from watcher.fleet import central
from watcher.fleet.shipper import Shipper
from watcher.reconcile import scan
from watcher.reports.formats import render_csv, render_markdown


def watcher(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the ``watcher`` command as a user would."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("WATCHER_")}
    full.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "watcher", *args], capture_output=True, text=True, env=full, timeout=60
    )  # fmt: skip


class Fleet:
    """One central database and the processes around it; everything stopped by :meth:`close`."""

    def __init__(self, server: Any, tmp: Path) -> None:
        self.server, self.tmp = server, tmp
        self.db = server.create_database()
        self.admin_url = server.url(self.db)
        self.tag = uuid.uuid4().hex[:6]
        self.env = server.env()
        self.daemons: dict[str, Daemon] = {}
        self.publisher: subprocess.Popen[bytes] | None = None
        done = watcher("central", "init", "--url", self.admin_url)
        assert done.returncode == 0, done.stderr
        assert f"central schema at version {central.SCHEMA_VERSION}" in done.stdout

    def role(self, name: str) -> str:
        return f"{name.replace('-', '_')}_{self.tag}"

    def url(self, role: str) -> str:
        return str(self.server.url(self.db, role))

    def add_host(self, name: str, host_name: str | None = None, start: bool = True) -> Daemon:
        """Register the host with its own role and password, and start its daemon (configured with
        ``host_name``, if given, instead of its registered name)."""
        role = self.role(name)
        done = watcher("central", "add-host", name, "--role", role, "--url", self.admin_url)
        assert done.returncode == 0, done.stderr
        self.server.set_password(role)
        env = {**self.env, "WATCHER_CENTRAL_URL": self.url(role), "WATCHER_HOST_NAME": host_name or name}
        daemon = Daemon(self.tmp / name, env=env)
        self.daemons[name] = daemon
        return daemon.start() if start else daemon

    def add_reader(self) -> str:
        role = self.role("reader")
        done = watcher("central", "add-reader", role, "--url", self.admin_url)
        assert done.returncode == 0, done.stderr
        self.server.set_password(role)
        return self.url(role)

    def publish(self, out: Path) -> Path:
        """Start ``watcher central publish`` as the reader."""
        url = self.add_reader()
        log = (self.tmp / "publish.log").open("ab")
        env = {k: v for k, v in os.environ.items() if not k.startswith("WATCHER_")}
        env.update({**self.env, "WATCHER_REPORT_INTERVAL": "0.2"})
        self.publisher = subprocess.Popen(
            [sys.executable, "-m", "watcher", "central", "publish", "--url", url, "--out", str(out),
             "--log-format", "json"],
            stdout=log, stderr=log, env=env,
        )  # fmt: skip
        log.close()
        return out / "report.csv"

    def settled(self) -> bool:
        """Every host's database matches its folder (the local invariant), it has shipped all it
        has, and its central rows equal its local tables."""
        return all(
            invariant.holds(d.inbox, d.db)
            and fleet_invariant.shipped_id(self.admin_url, d.env["WATCHER_HOST_NAME"])
            == fleet_invariant.local_max_id(d.db)
            and not fleet_invariant.violations(d.db, self.admin_url, d.env["WATCHER_HOST_NAME"])
            for d in self.daemons.values()
        )

    def check(self, timeout: float = 30.0) -> None:
        """Wait for the fleet to settle, then state the central invariant (with its differences)."""
        try:
            wait_until(self.settled, timeout, what="the fleet to settle")
        except AssertionError:
            problems = [
                v
                for d in self.daemons.values()
                for v in invariant.violations(d.inbox, d.db)
                + fleet_invariant.violations(d.db, self.admin_url, d.env["WATCHER_HOST_NAME"])
            ]
            raise AssertionError(f"the fleet did not settle in {timeout} s: {problems}") from None

    def close(self) -> None:
        for d in self.daemons.values():
            if d.proc is not None and d.proc.poll() is None:
                try:
                    d.stop()
                except subprocess.TimeoutExpired:
                    kill_9(d)
        if self.publisher is not None and self.publisher.poll() is None:
            self.publisher.terminate()
            self.publisher.wait(10)


def scan_and_ship(settings: Settings) -> None:
    """``watcher scan`` of the host's folder, then its shipper stepped in this process until the
    central database holds everything (no daemon, no thread: for tests that build a fleet's state)."""
    scan(settings)
    shipper = Shipper(settings)
    try:
        while shipper.step():
            pass
    finally:
        shipper._close()


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        children.setdefault(ppid, []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        found = children.get(todo.pop(), [])
        out += found
        todo += found
    return out


def kill_9(daemon: Daemon) -> None:
    """``kill -9`` of the daemon, as a crash; then of what it leaves behind (its worker pool's
    forkserver and workers outlive it), so that no process of the test survives it."""
    assert daemon.proc is not None
    family = _descendants(daemon.proc.pid)
    daemon.kill()
    for pid in family:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def running_fleet(pg_cluster: Any, tmp_path: Path) -> Iterator[Fleet]:
    """A :class:`Fleet` on the session's PostgreSQL (started if a test left it stopped), closed
    at the end, and the server running again for the next test (the fleet fixtures' body)."""
    if not pg_cluster.running():
        pg_cluster.start()
    f = Fleet(pg_cluster, tmp_path)
    try:
        yield f
    finally:
        f.close()
        if not pg_cluster.running():
            pg_cluster.start()


def reference_files(conn: psycopg.Connection[Any], out: Path) -> dict[str, bytes]:
    """The files as the docs promise them: the CSV and Markdown that ``watcher report --central``
    prints (formula cells neutralised, as a host's), string_agg of row_to_json."""
    select = f"SELECT {', '.join(central.FLEET_COLUMNS)} FROM watcher.report"
    row = conn.execute(
        f"SELECT string_agg(row_to_json(r)::text, E',\\n' ORDER BY r.model_id) FROM ({select}) r"
    ).fetchone()
    body = row[0] if row else None
    rows = conn.execute(f"{select} ORDER BY model_id").fetchall()
    md, csv = out / "ref.md", out / "ref.csv"
    with md.open("w", encoding="utf-8", newline="") as fh:
        render_markdown(rows, fh, central.FLEET_COLUMNS)
    with csv.open("w", encoding="utf-8", newline="") as fh:
        render_csv(rows, fh, central.FLEET_COLUMNS)
    js = f"[\n{body}\n]\n" if body else "[]\n"
    return {"csv": csv.read_bytes(), "json": js.encode(), "markdown": md.read_bytes()}
