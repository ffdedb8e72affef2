"""A local webhook receiver for ``watcher notify``'s tests: a real HTTP server on 127.0.0.1, in a
thread, that records every request it acknowledges (headers and JSON body), and can answer with an
error (``status``) or stop listening and come back on the same port."""

from __future__ import annotations

import http.server
import json
import threading
from typing import Any


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
