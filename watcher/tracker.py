"""When is a file finished? A pure state machine over filesystem events, one state per path.

Rules (``now`` is a monotonic clock, passed in so tests need no real time):

* A writer closing the file (``closed``) or a rename into place (``moved``) makes it ready at once,
  unless another writer still holds it open.
* ``opened``/``closed``/``closed_nowrite`` are counted per path, so a file some process holds open
  after writing is never judged before it is closed, however long the writer pauses, up to
  ``max_write_seconds``, after which it is judged as it stands. Our own reads open and close
  without writing: they balance out and never make a file dirty.
* Where no close can come (a file moved in from outside the tree is a bare ``created``; polling;
  NFS), a dirty file with no open writer is ready once its (size, mtime) stayed the same for
  ``settle_seconds``. Given the wall clock, that time counts from the file's own mtime (a file
  keeps its mtime only as long as nobody writes to it), at most ``settle_seconds`` before it was
  first seen: a poller that finds a file a second after its last write waits one more second,
  not two.
* ``deleted`` and the source of ``moved`` are ready at once (the judge then sees the file gone).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["created", "modified", "attrib", "opened", "closed", "closed_nowrite", "deleted", "moved_in"]


@dataclass(slots=True)
class PathState:
    """What is known of one path since it was last judged."""

    dirty: bool = False
    writers: int = 0
    ready_now: bool = False
    dirty_since: float = 0.0
    last_event: float = 0.0
    stable_key: SettleKey | None = None
    stable_since: float = 0.0


#: What the settle rule compares: ``(size, mtime_ns)``.
SettleKey = tuple[int, int]


def settle_key(full_path: str) -> SettleKey | None:
    """(size, mtime_ns) of a path, or ``None`` if it is gone."""
    try:
        s = os.stat(full_path)
    except OSError:
        return None
    return (s.st_size, s.st_mtime_ns)


#: A dirty file with no close to wait for gets its first look this soon (or after settle_seconds
#: if that is shorter); from then on the settle clock runs.
FIRST_LOOK = 0.25


@dataclass
class Tracker:
    """Per-path states and the readiness rules above. Not thread-safe: the writer thread owns it.

    Cost follows the events, not the files in flight: paths that may be ready at once sit in a set,
    and the others are looked at only when the earliest of their deadlines is due (scanning every
    state on each turn would make a burst quadratic).
    """

    settle_seconds: float
    max_write_seconds: float
    states: dict[str, PathState] = field(default_factory=dict)
    _now: set[str] = field(default_factory=set)
    _scan_at: float = math.inf

    def feed(self, kind: Kind, rel: str, now: float) -> None:
        """Record one event for the relative path ``rel``."""
        st = self.states.get(rel)
        if st is None:
            if kind == "closed_nowrite":
                return  # a reader finished with a file we are not tracking: nothing to do
            st = self.states[rel] = PathState()
        st.last_event = now
        if kind == "opened":
            st.writers += 1
            self._scan_at = min(self._scan_at, now + 2 * self.max_write_seconds + 1)  # to forget a lost close
            return
        if kind in ("closed", "closed_nowrite"):
            st.writers = max(0, st.writers - 1)
            if kind == "closed_nowrite":
                if not st.dirty and not st.writers:
                    del self.states[rel]
                elif st.ready_now and not st.writers:
                    self._now.add(rel)
                return
        if kind == "deleted":
            st.writers = 0
        if not st.dirty:
            st.dirty, st.dirty_since = True, now
            limit = self.max_write_seconds if st.writers else min(self.settle_seconds, FIRST_LOOK)
            self._scan_at = min(self._scan_at, now + limit)
        if kind in ("closed", "moved_in", "deleted"):
            st.ready_now = True
            self._now.add(rel)
        st.stable_key = None

    def busy(self, rel: str) -> bool:
        """True while events for ``rel`` are pending: a reconcile must leave it to the tracker."""
        st = self.states.get(rel)
        return st is not None and (st.dirty or st.writers > 0)

    def writing(self, rel: str) -> bool:
        """True while a process we saw open ``rel`` has not closed it."""
        st = self.states.get(rel)
        return st is not None and st.writers > 0

    def ready(self, now: float, key: Callable[[str], SettleKey | None], wall: float | None = None) -> list[str]:
        """Paths to judge now; their state is cleared. ``key(rel)`` stats a path for the settle rule;
        ``wall`` is the wall-clock time (``time.time()``) matching ``now``, for the mtime's credit."""
        out = [rel for rel in self._now if self._take_if(rel, lambda st: st.ready_now and not st.writers)]
        self._now.clear()
        if now >= self._scan_at:
            out += self._scan(now, key, wall)
        return out

    def _take_if(self, rel: str, test: Callable[[PathState], bool]) -> bool:
        st = self.states.get(rel)
        if st is None or not st.dirty or not test(st):
            return False
        st.dirty = st.ready_now = False
        st.stable_key = None
        if not st.writers:
            del self.states[rel]
        return True

    def _scan(self, now: float, key: Callable[[str], SettleKey | None], wall: float | None) -> list[str]:
        out: list[str] = []
        deadlines = [math.inf]
        for rel, st in list(self.states.items()):
            if not st.dirty:
                if st.writers and now - st.last_event > 2 * self.max_write_seconds:
                    del self.states[rel]  # a close we never saw (dropped events); forget the count
                elif st.writers:
                    deadlines.append(st.last_event + 2 * self.max_write_seconds + 1)
                continue
            if st.writers:
                if now - st.dirty_since < self.max_write_seconds:
                    deadlines.append(st.dirty_since + self.max_write_seconds)
                    continue  # a writer holds it open: wait for its close
            elif not st.ready_now:
                k = key(rel)
                if k is not None and k != st.stable_key:
                    # Unchanged since its mtime; a clock ahead of ours (mtime in the future) gives no credit.
                    age = 0.0 if wall is None else min(self.settle_seconds, max(0.0, wall - k[1] / 1e9))
                    st.stable_key, st.stable_since = k, now - age
                if k is not None and now - st.stable_since < self.settle_seconds:
                    deadlines.append(st.stable_since + self.settle_seconds)
                    continue
            if self._take_if(rel, lambda _: True):
                out.append(rel)
        self._scan_at = min(deadlines)
        return out

    def next_deadline(self, now: float) -> float | None:
        """The earliest time :meth:`ready` may return something new (``None``: only events can)."""
        if self._now:
            return now
        return None if math.isinf(self._scan_at) else self._scan_at
