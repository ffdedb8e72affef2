"""Posting an event until its receiver acknowledges it, and remembering, durably, what was.

:class:`Poster` posts one JSON body with urllib (a timeout per try; any 2xx answer is an
acknowledgement); every failure is one ``webhook_failed`` log line and a wait that doubles from
:data:`FIRST_DELAY` up to a cap (a ``Retry-After`` the receiver sends counts, within the cap), and
the same event is tried again: nothing is skipped, so events reach a receiver in history order.

:class:`Cursor` is a webhook's progress: the id of the last history entry it has been given (or
that needed no post), written to a file of its own (temporary file, fsync, rename, fsync of the
folder) only after the receiver acknowledged. A process killed at any instant restarts from it, so
an event is delivered at least once; a second delivery carries the same idempotency key.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from watcher import __version__, logs
from watcher.alerts.events import Event
from watcher.config import Webhook
from watcher.errors import NotifyError

log = logs.get_logger("watcher.notify")

#: The wait after a first failure (seconds); it doubles after each further one, up to the cap.
FIRST_DELAY = 0.5
#: How much of a receiver's error answer goes into the log line.
_ANSWER_CHARS = 200


class Saved(NamedTuple):
    """A cursor's content: the last history id done, and the database's inode it belongs to."""

    after: int
    database: int | None


class Cursor:
    """One webhook's durable progress, in ``folder`` (a file named after a hash of its URL: the
    URL, often a secret, is not written anywhere)."""

    def __init__(self, folder: Path, url: str) -> None:
        self.path = folder / f"{url_digest(url)}.cursor"
        self.saved: Saved | None = None

    def load(self) -> Saved | None:
        """What was saved last, or ``None`` (never saved)."""
        try:
            value = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise NotifyError(f"{self.path}: cannot read the cursor: {_reason(exc)}") from None
        if not isinstance(value, dict) or not isinstance(value.get("after"), int):
            raise NotifyError(f"{self.path}: not a cursor file (remove it to start from the newest entry)")
        database = value.get("database")
        self.saved = Saved(value["after"], database if isinstance(database, int) else None)
        return self.saved

    def save(self, after: int, database: int | None) -> None:
        """Record progress durably (atomically: the old content or the new, never a mix)."""
        if self.saved == (after, database):
            return
        folder = self.path.parent
        tmp = folder / f".{self.path.name}.tmp"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, json.dumps({"after": after, "database": database}).encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
            dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            raise NotifyError(f"{self.path}: cannot write the cursor: {_reason(exc)}") from None
        self.saved = Saved(after, database)


class PostFailed(Exception):
    """One try that was not acknowledged: ``reason`` in one line, and the receiver's
    ``Retry-After`` in seconds if it sent one."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class Poster:
    """Posts events to one webhook, each until acknowledged (or until a stop is requested)."""

    def __init__(self, webhook: Webhook, timeout: float, max_backoff: float) -> None:
        self.webhook = webhook
        self.timeout = timeout
        self.max_backoff = max_backoff
        self.name = redacted(webhook.url)

    def deliver(self, event: Event, stopped: Callable[[], bool], wait: Callable[[float], object]) -> bool:
        """Post ``event`` until the receiver acknowledges it (True), retrying after each failure
        with a capped, doubling wait (``wait``: an ``Event.wait`` that returns true on a stop
        request); False if a stop was requested first."""
        failures, since = 0, time.monotonic()
        while not stopped():
            try:
                self.post(event)
            except PostFailed as exc:
                failures += 1
                delay = min(self.max_backoff, FIRST_DELAY * 2 ** min(failures - 1, 30))
                if exc.retry_after is not None:
                    delay = min(self.max_backoff, max(delay, exc.retry_after))
                log.warning("webhook_failed", webhook=self.name, id=event.id, attempt=failures,
                            reason=str(exc), retry_in=round(delay, 3))  # fmt: skip
                if wait(delay):
                    return False
                continue
            if failures:
                log.info("webhook_back", webhook=self.name, id=event.id, failures=failures,
                         down_seconds=round(time.monotonic() - since, 3))  # fmt: skip
            log.info("event_notified", webhook=self.name, id=event.id, kind=event.kind, path=event.entry.path)
            return True
        return False

    def post(self, event: Event) -> None:
        """One try; raises :class:`PostFailed` unless the receiver answers 2xx."""
        body = json.dumps(event.payload(self.webhook.format), ensure_ascii=False).encode()
        request = urllib.request.Request(  # noqa: S310 - the URL is http(s) only (config.Webhook)
            self.webhook.url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "Idempotency-Key": event.key,
                "User-Agent": f"watcher/{__version__}",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:  # noqa: S310 - http(s) only, as above
                answer.read()
                status = answer.status
        except urllib.error.HTTPError as exc:
            text = _answer_text(exc)
            retry_after = _retry_after(exc.headers.get("Retry-After"))
            raise PostFailed(f"HTTP {exc.code} {exc.reason}{text}", retry_after) from None
        except urllib.error.URLError as exc:
            raise PostFailed(_reason(exc.reason)) from None
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise PostFailed(_reason(exc)) from None
        if not 200 <= status < 300:
            raise PostFailed(f"HTTP {status}")


def url_digest(url: str) -> str:
    """What names a webhook in its cursor file's name: a hash of its URL."""
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def redacted(url: str) -> str:
    """A webhook's URL for the log: scheme, host and port only (its path and query are often the
    secret, a Slack webhook's token), then its digest's first 8 characters, those its cursor
    file's name starts with (two webhooks on one host differ there)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''} ({url_digest(url)[:8]})"


def _answer_text(exc: urllib.error.HTTPError) -> str:
    with contextlib.suppress(OSError, http.client.HTTPException):
        text = " ".join(exc.read(_ANSWER_CHARS).decode("utf-8", "replace").split())
        return f": {text}" if text else ""
    return ""


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:  # an HTTP date: not worth parsing, the backoff applies
        return None


def _reason(exc: Any) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return " ".join(str(exc).split()) or type(exc).__name__
