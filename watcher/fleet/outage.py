"""Trouble with the central database, the same way for every connection to it (the daemon's
shipper, ``watcher central publish``, ``watcher follow --central``).

An error is classified (:func:`classify`): the server not answering (``central_unreachable``,
retried with a short :data:`BACKOFF`) or answering with a refusal (``central_refused``: a login
refused, no privilege, an unregistered host, an old schema; retried every
:data:`REFUSED_RETRY` seconds). :class:`Outage` logs a trouble once (again only when it changes;
an outage once, whatever libpq says meanwhile), says how long to wait before the next try, and
logs ``central_back`` with ``down_seconds`` once the server answers again.
"""

from __future__ import annotations

import re
import time
from typing import Any

import psycopg

from watcher.fleet import central

#: Reconnection delays grow from the first to the last (seconds); short, so a returning server
#: is noticed within a couple of seconds and the backlog starts shipping at once.
BACKOFF = (0.25, 0.5, 1.0, 2.0)
#: After a refusal (privilege, registration, schema), try again this often (seconds).
REFUSED_RETRY = 15.0

UNREACHABLE = "central_unreachable"
REFUSED = "central_refused"

#: libpq's reasons for a login the server refused (as opposed to a server not answering).
_REFUSED_LOGIN = re.compile(r"authentication failed|no password supplied|no pg_hba\.conf entry|does not exist")


def classify(exc: psycopg.Error) -> tuple[str, str]:
    """The event for a psycopg error (:data:`UNREACHABLE` or :data:`REFUSED`) and its one-line reason."""
    reason = central.one_line(exc)
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError) and not _REFUSED_LOGIN.search(reason):
        return UNREACHABLE, reason
    return REFUSED, reason  # the server answers, but not to these credentials, or refuses the work


class Outage:
    """One connection's trouble, if any. ``fields`` go with every event (the shipper's ``host``);
    with ``name_after``, ``central_back`` names the trouble it ends (``after``: the shipper's, whose
    troubles are not all outages)."""

    def __init__(self, log: Any, name_after: bool = False, **fields: Any) -> None:
        self.log = log
        self.name_after = name_after
        self.fields = fields
        self.event: str | None = None  # the event logged for the trouble we are in, if any
        self.reason: str | None = None
        self.since = 0.0
        self.failures = 0

    @property
    def down(self) -> bool:
        """True while in trouble (from the first failure to :meth:`back`)."""
        return self.event is not None

    def failed(self, exc: psycopg.Error) -> float:
        """:meth:`trouble` for a psycopg error, as :func:`classify` names it."""
        return self.trouble(*classify(exc))

    def trouble(self, event: str, reason: str, delays: tuple[float, ...] | None = None) -> float:
        """Log the trouble once (again only when it changes), and say how long to wait before the
        next try: ``delays`` grow with each failure in a row (by default :data:`BACKOFF` while
        unreachable, :data:`REFUSED_RETRY` otherwise)."""
        if delays is None:
            delays = BACKOFF if event == UNREACHABLE else (REFUSED_RETRY,)
        delay = delays[min(self.failures, len(delays) - 1)]
        if (event, reason) != (self.event, self.reason) and not (event == self.event == UNREACHABLE):
            if self.event is None:
                self.since = time.monotonic()
            self.log.error(event, **self.fields, error=reason, retry_in=delay)
        self.event, self.reason = event, reason
        self.failures += 1
        return delay

    def back(self) -> None:
        """The server answered: log ``central_back`` if we were in trouble, and start afresh."""
        if self.event is not None:
            after = {"after": self.event} if self.name_after else {}
            down = round(time.monotonic() - self.since, 1)
            self.log.warning("central_back", **self.fields, **after, down_seconds=down)
        self.event, self.reason, self.failures = None, None, 0
