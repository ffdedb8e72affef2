"""``watcher follow``: the outcomes the database records, as they are recorded.

Reads the ``history`` table (append-only; ids only grow) on a read-only connection, so any user who
may read the database can follow it: no journald, no access to the daemon's output, no write.
New entries are found by id every ``interval`` seconds (one indexed query; the daemon is never
disturbed). A database that is replaced (removed and rebuilt by the daemon) is noticed by its
inode, opened anew and followed from its start.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from watcher.errors import StoreError
from watcher.store import Store

#: How often the history is looked at; also how long a stop request may wait to be seen.
INTERVAL = 0.25


class Entry(NamedTuple):
    """One recorded outcome. ``errors`` for a rejection; the chosen point for a scored file while
    it is still stored with that content (``None`` once it changed or went); ``regression``, the
    reasons, for a scored file whose experiment regressed from its model's one before; and its
    other operating points (extra targets and pickers; ``None`` when there are none)."""

    id: int
    at: str
    path: str
    outcome: str
    sha256: str | None
    model_id: str | None
    errors: list[dict[str, Any]] | None
    optimal_threshold: float | None
    closest_recall_value: float | None
    target_met: bool | None
    regression: list[str] | None = None
    points: list[dict[str, Any]] | None = None

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> Entry:
        """From a :meth:`watcher.store.Store.history_after` row."""
        id_, at, path, outcome, sha, model_id, detail, threshold, recall, met, points = row
        errors = json.loads(detail) if outcome == "rejected" and detail else None
        regression = json.loads(detail)["regression"] if outcome == "scored" and detail else None
        flag = None if met is None else bool(met)
        others = json.loads(points) if points else None
        return cls(id_, at, path, outcome, sha, model_id, errors, threshold, recall, flag, regression, others)

    def as_json(self) -> str:
        """One JSON object on one line (every field, null where it does not apply; ``regression``,
        the reasons, only on a scored file that regressed; ``points`` only when there are other
        operating points than the primary one)."""
        fields = self._asdict()
        if self.regression is None:
            del fields["regression"]
        if self.points is None:
            del fields["points"]
        return json.dumps(fields, ensure_ascii=False)

    def as_text(self) -> str:
        """One line for a terminal: time, outcome, path, then the model and point or the reasons."""
        return f"{self.at}  {self.outcome:<8}  {self.path}{self.detail()}"

    def detail(self) -> str:
        """What follows the path on a text line: the model and point, or the reasons."""
        if self.outcome == "rejected":
            reasons = "; ".join(
                f"{e['field']}: {e['message']}" if e.get("field") else e["message"] for e in self.errors or []
            )
            return f"  {reasons}"
        if self.outcome == "scored":
            point = ""
            if self.optimal_threshold is not None:
                point = f"  threshold {self.optimal_threshold}  recall {self.closest_recall_value}"
                point += "" if self.target_met else "  (below target)"
            for p in self.points or []:
                at = f"at {p['target']}" if p["kind"] == "recall" else p["kind"]
                point += f"  | {at}: threshold {p['threshold']}  recall {p['recall']}"
                point += "" if p["precision"] is None else f"  precision {p['precision']}"
                point += "" if p["fpr"] is None else f"  fpr {p['fpr']}"
                point += "  (below target)" if p["met"] == 0 else ""
            if self.regression:
                point += f"  REGRESSED: {'; '.join(self.regression)}"
            return f"  model_id {self.model_id}{point}"
        return f"  model_id {self.model_id}" if self.model_id else ""


class Follower:
    """Reads the history entries recorded after those that existed when it opened (or the ``last``
    ones before that, or those after the id ``after``: a cursor kept elsewhere); :meth:`poll`
    returns each entry once."""

    def __init__(
        self,
        db_path: Path,
        rejections_only: bool = False,
        last: int = 0,
        regressions_only: bool = False,
        after: int | None = None,
    ) -> None:
        self.path = db_path
        self.rejections_only = rejections_only
        self.regressions_only = regressions_only
        self.store = Store.open_readonly(db_path)
        self.inode = inode_of(db_path)
        self.after = self.store.history_start(last, rejections_only, regressions_only) if after is None else after

    def poll(self, limit: int = 1000) -> list[Entry]:
        """The next entries (at most ``limit``), oldest first; empty when none is new."""
        inode = inode_of(self.path)
        if inode is not None and inode != self.inode:
            # Another database at this path now (the daemon rebuilt it): everything in it is new.
            try:
                fresh = Store.open_readonly(self.path)
            except StoreError:  # not migrated yet: look again next time
                return []
            self.store.close()
            self.store, self.inode, self.after = fresh, inode, 0
        rows = self.store.history_after(self.after, self.rejections_only, limit, self.regressions_only)
        if rows:
            self.after = rows[-1][0]
        return [Entry.from_row(row) for row in rows]

    def close(self) -> None:
        """Close the connection."""
        self.store.close()


def follow(
    follower: Follower, stopped: Callable[[], bool], wait: Callable[[float], object], interval: float = INTERVAL
) -> Iterator[list[Entry]]:
    """Yield each non-empty batch of new entries until ``stopped()``; between looks,
    ``wait(interval)`` (an ``Event.wait``: never a busy loop)."""
    while not stopped():
        batch = follower.poll()
        if batch:
            yield batch
            continue  # a full batch may have more behind it
        wait(interval)


def inode_of(path: Path) -> int | None:
    """The file's inode (what tells a replaced database from the one that was open), or ``None``."""
    try:
        return os.stat(path).st_ino
    except OSError:  # removed and not yet rebuilt: keep reading the open one
        return None
