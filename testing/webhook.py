"""``watcher notify``'s test harness: a local webhook receiver (a real HTTP server on 127.0.0.1, in a
thread, that records every request it acknowledges, headers and JSON body, and can answer with an
error (``status``) or stop listening and come back on the same port), and ``watcher notify`` as a
real process."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from testing.daemon import Daemon
from testing.helpers import doc, wait_until, write


class Receiver:
    """Records posts; answers ``status`` (200 by default; the post is recorded only on a 2xx)."""

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.status = 200
        self.posts: list[dict[str, Any]] = []  # {"headers": {...}, "body": {...}}
        self.refused = 0  # requests answered with an error status
        self.lock = threading.Lock()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> Receiver:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.lock:
                    status = receiver.status
                    if 200 <= status < 300:
                        receiver.posts.append({"headers": dict(self.headers), "body": json.loads(body)})
                    else:
                        receiver.refused += 1
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening (connections are refused until :meth:`start` again, on the same port)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def bodies(self) -> list[dict[str, Any]]:
        with self.lock:
            return [p["body"] for p in self.posts]

    def ids(self) -> list[int]:
        """The history ids of the plain-format bodies received, in arrival order."""
        return [int(b["id"]) for b in self.bodies() if "id" in b]


class NotifyProcess:
    """``watcher notify`` as a real process on a database, with a config file naming its webhooks;
    its JSON log lines go to ``log_path`` (appended across restarts)."""

    def __init__(self, root: Path, db: Path, webhooks: list[dict[str, str]], **settings: float) -> None:
        self.root = root
        self.db = db
        self.config = root / "notify.toml"
        self.log_path = root / "notify.log"
        lines = [f"webhooks = [{', '.join(_table(w) for w in webhooks)}]"]
        lines += [f"{k} = {v}" for k, v in {"notify_max_backoff": 0.5, **settings}.items()]
        self.config.write_text("\n".join(lines) + "\n")
        # No proxy between the process and the local receiver; no setting from the environment.
        self.env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        self.env = {k: v for k, v in self.env.items() if not k.startswith("WATCHER_")}
        self.proc: subprocess.Popen[bytes] | None = None
        self._offset = 0

    def start(self, wait: bool = True) -> NotifyProcess:
        """Start it; by default wait until every webhook follows the history (its cursor saved)."""
        self._offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "watcher", "notify", "--config", str(self.config), "--db", str(self.db),
                 "--log-format", "json"],
                cwd=self.root, env=self.env, stdout=log, stderr=log,
            )  # fmt: skip
        if wait:
            count = self.config.read_text().count("url =")
            wait_until(lambda: len(self.events("webhook_following")) >= count, 30, what="notify following")
        return self

    def events(self, name: str | None = None, since_start: bool = True) -> list[dict[str, Any]]:
        """Log lines of this run (or every run) as JSON (each must be JSON), optionally one event's."""
        raw = self.log_path.read_bytes()[self._offset if since_start else 0 :]
        lines = [json.loads(line) for line in raw[: raw.rfind(b"\n") + 1].decode().splitlines() if line.strip()]
        return [e for e in lines if name is None or e.get("event") == name]

    def kill(self) -> None:
        """SIGKILL, and reap it."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM; its exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def cleanup(self) -> None:
        """After a test, whatever it did: kill the process if it still runs."""
        if self.proc is not None and self.proc.poll() is None:
            self.kill()


def _table(webhook: dict[str, str]) -> str:
    return "{" + ", ".join(f'{k} = "{v}"' for k, v in webhook.items()) + "}"


def rejected_ids(db: Path) -> list[int]:
    """The history ids of the rejections in ``db``, in order (read-only)."""
    with contextlib.closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)) as conn:
        return [i for (i,) in conn.execute("SELECT id FROM history WHERE outcome = 'rejected' ORDER BY id")]


def kill_loop(
    daemon: Daemon, notify: NotifyProcess, receiver: Receiver, kills: int, seed: int = 29, every: float = 0.03
) -> dict[str, float]:
    """Kill ``notify`` (running) with SIGKILL ``kills`` times, each at a random instant of its work
    (0 to 0.5 s after it started following: the backlog its start-up let grow is being posted),
    and start it again at once, while a thread writes a file into
    the daemon's folder every ``every`` seconds (two of three rejected); then wait until every
    rejection has reached ``receiver``, leaving ``notify`` running. Figures: files written,
    rejections, posts received, duplicates among them, kills, seconds from the last kill until the
    backlog was delivered, and restarts that resumed from a cursor another one had moved."""
    done = threading.Event()
    written: list[Path] = []

    def produce() -> None:
        while not done.wait(every):
            i = len(written)
            written.append(write(daemon.inbox / f"r{i}.json", "[1]" if i % 3 else doc()))

    producer = threading.Thread(target=produce)
    producer.start()
    rng = random.Random(seed)
    try:
        for _ in range(kills):
            threading.Event().wait(rng.uniform(0.0, 0.5))  # the random instant (no synchronisation)
            notify.kill()
            notify.start()
    finally:
        done.set()
        producer.join()
    last_kill = time.monotonic()
    wait_until(lambda: len(daemon.rejections()) + len(daemon.results()) == len(written), 60, what="all judged")
    expected = rejected_ids(daemon.db)
    wait_until(lambda: set(receiver.ids()) >= set(expected), 120, what="every rejection posted")
    got = receiver.ids()
    resumed = {e["after"] for e in notify.events("webhook_following", since_start=False)}
    return {
        "written": len(written),
        "rejections": len(expected),
        "posts": len(got),
        "duplicates": len(got) - len(set(got)),
        "kills": kills,
        "catch_up_seconds": round(time.monotonic() - last_kill, 2),
        "resumed_from": len(resumed),
    }
