"""Timestamps as watcher writes them: UTC, ISO 8601, a ``Z`` for the zone, fixed width (text
order is time order).

- :func:`iso`: a moment with milliseconds (``2024-05-01T12:00:00.000Z``), as the database stores
  times and as the fleet shows the central ones; :func:`now_iso` is now (or a ``time.time()``).
- :class:`UtcStamper`: the log's ``timestamp`` field, with microseconds, made cheap per event.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any


def iso(moment: datetime) -> str:
    """``moment`` (any zone) in UTC, ISO 8601 with milliseconds and a ``Z``."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now_iso(at: float | None = None) -> str:
    """The current time (or the ``time.time()`` value ``at``) as :func:`iso` writes it."""
    return iso(datetime.now(UTC) if at is None else datetime.fromtimestamp(at, UTC))


class UtcStamper:
    """A processor that adds ``timestamp``: now in UTC, ISO 8601 with six fraction digits and a
    ``Z`` (``2024-05-01T12:00:00.000000Z``; fixed width, so text order is time order).

    structlog's ``TimeStamper(fmt="iso", utc=True)`` builds a ``datetime`` for every event
    (a bulk scan logs a line per file); here the date and time of day are formatted
    once per second and only the microseconds per event. ``clock`` returns nanoseconds since
    the epoch (tests pass their own).
    """

    __slots__ = ("_clock", "_second")

    def __init__(self, clock: Callable[[], int] = time.time_ns) -> None:
        self._clock = clock
        # (second, its formatted prefix) as one tuple: threads replace it whole, never half.
        self._second: tuple[int, str] = (-1, "")

    def __call__(self, logger: Any, method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        second, nanos = divmod(self._clock(), 1_000_000_000)
        cached, prefix = self._second
        if second != cached:
            prefix = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second))
            self._second = (second, prefix)
        event_dict["timestamp"] = f"{prefix}{nanos // 1000:06d}Z"
        return event_dict
