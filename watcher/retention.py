"""Bounded storage: old ``history`` entries trimmed in small steps, and the write-ahead log kept
under a size.

``history`` is append-only: at one change a second it grows by ~31 million rows a year. The
daemon's writer trims it with :class:`HistoryTrimmer`, a slice of ids at a time (one short
transaction, so the writer is never held for long), entries older than ``history_keep_days``
only, and never one that something still reads:

* the first entry: it names the history (its id and time are the identity the report tables and
  the fleet's shipper compare), and the last one: ids are never reused (SQLite would hand the
  largest rowid out again);
* the newest :data:`KEEP_NEWEST` entries (the report page's earlier outcomes look that far back);
* anything at or after ``floor``: the fleet shipper's central mark (entries not shipped yet, and
  the entry at the mark, which the shipper checks before each batch);
* for every path still in ``results`` or ``rejections``: its latest entry and its latest ``scored``
  entry (what a model looked like before a change: the report tables' splice reads it, and a
  resync of the fleet ships every path the history names).

A removed path's entries go once they are old enough. The trimmer walks the entries upwards by id,
:data:`SLICE` entries a step (the ids trimmed before cost nothing), from where it stopped, and
starts again from the beginning once it reaches entries too recent to trim, so entries kept for a
while (a path's latest) are looked at again later.

The write-ahead log: SQLite's automatic checkpoints copy it into the database but cannot start it
again from its beginning while a reader holds an older state, so under sustained changes with
readers (the report thread, the shipper, ``watcher follow``) it only grows. :data:`WAL_LIMIT` is
the size past which the writer checkpoints and truncates it at once (waiting a moment for
readers) instead of only when a burst ends.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from watcher.store import guarded
from watcher.timestamps import now_iso

if TYPE_CHECKING:
    from watcher.store import Store

#: The newest entries are always kept: the report page's earlier outcomes reach this far back.
KEEP_NEWEST = 200_000
#: Entries looked at per trim step: one transaction of at most a few tens of milliseconds.
SLICE = 2_000
#: Past this size (bytes) the write-ahead log is checkpointed and truncated without waiting for
#: the burst to end.
WAL_LIMIT = 64 * 1024 * 1024

_TRIM = """
DELETE FROM history WHERE id IN (
    SELECT h.id FROM history h
    WHERE h.id >= :start AND h.id < :end AND h.at < :cutoff
    AND NOT (
        (h.id = (SELECT max(x.id) FROM history x WHERE x.path = h.path)
         OR h.id = (SELECT max(x.id) FROM history x WHERE x.path = h.path AND x.outcome = 'scored'))
        AND (EXISTS (SELECT 1 FROM results r WHERE r.path = h.path)
             OR EXISTS (SELECT 1 FROM rejections j WHERE j.path = h.path))
    )
)
"""
_RECENT = "SELECT EXISTS (SELECT 1 FROM history WHERE id >= :start AND id < :end AND at >= :cutoff)"


@dataclass(frozen=True)
class Trimmed:
    """One trim step: entries deleted, the slice ``[start, end)`` looked at, and whether the walk
    reached entries too recent to trim (it starts again from the beginning next time)."""

    deleted: int
    start: int
    end: int
    wrapped: bool


class HistoryTrimmer:
    """Trims ``history`` entries older than ``keep_days`` (see the module's rules), one slice of
    ids per :meth:`step`. ``keep_days`` 0 keeps everything."""

    def __init__(self, keep_days: float) -> None:
        self.keep_days = keep_days
        self.next_id = 0  # where the walk goes on

    @guarded
    def step(self, store: Store, floor: int | None, now: float | None = None) -> Trimmed | None:
        """Trim one slice, in one write transaction of ``store``; ``floor``: no entry at or after
        this id is trimmed (None: no such limit). Returns what was done, None when there is
        nothing to look at. Raises :class:`~watcher.errors.StoreError`."""
        if self.keep_days <= 0:
            return None
        db = store.db
        first, last = db.execute("SELECT coalesce(min(id), 0), coalesce(max(id), 0) FROM history").fetchone()
        limit = last - KEEP_NEWEST if floor is None else min(last - KEEP_NEWEST, floor)
        start = max(self.next_id, first + 1)
        if start >= limit:
            self.next_id = 0
            return None
        # A slice of SLICE entries, not of SLICE ids: trimmed stretches of ids cost no steps (a walk
        # by id slices took one step per 2,000 ids ever written, so its length, and the history's
        # swing between two walks, grew with the database's age).
        cutoff = now_iso((time.time() if now is None else now) - self.keep_days * 86400)
        # Entries are in time order along the ids: when the walk's next one is too recent, so are
        # all after it. No slice and no write then: an idle daemon whose history is younger than
        # keep_days (a new one, or one trimmed up to date) spends nothing on it.
        (at,) = db.execute("SELECT at FROM history WHERE id >= ? ORDER BY id LIMIT 1", (start,)).fetchone() or (None,)
        if at is None or at >= cutoff:
            self.next_id = 0
            return Trimmed(0, start, start, True)
        row = db.execute("SELECT id FROM history WHERE id >= ? ORDER BY id LIMIT 1 OFFSET ?", (start, SLICE)).fetchone()
        end = limit if row is None else min(row[0], limit)
        span: dict[str, Any] = {"start": start, "end": end, "cutoff": cutoff}
        with store.writing():
            deleted = db.execute(_TRIM, span).rowcount
            # Entries are in time order along the ids: one too recent in this slice ends the walk.
            recent = db.execute(_RECENT, span).fetchone()[0]
        wrapped = bool(recent) or end >= limit
        self.next_id = 0 if wrapped else end
        return Trimmed(deleted, start, end, wrapped)
