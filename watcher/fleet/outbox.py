"""Reading the shipper's outbox: the local ``history`` entries after a mark, and the current local
row of each path they name, as one batch ready to send.

A batch is read in ONE read transaction of the local SQLite database (WAL: the writer never waits
for it), so its entries, its rows and the identity of the history it comes from belong to one
snapshot. A path changed after that snapshot has a newer history entry, beyond the batch's end,
and is shipped again by a later batch: replaying the rows of any batch, at any later moment, is
harmless. This is what lets the shipper read the next batch while the server still writes the
current one, and throw the read away if the central mark turns out not to be where it expected.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

RESULT_COLUMNS = (
    "path", "model_id", "issuer", "experiment_date", "experiment_at", "optimal_threshold", "closest_recall_value",
    "distance", "target_met", "target_recall", "n_points", "sha256", "rules_version", "scored_at",
)  # fmt: skip
RESULT_TYPES = ("text", "text", "text", "text", "text", "float8", "float8", "float8", "bool", "float8", "int4",
                "text", "int4", "text")  # fmt: skip
REJECTION_COLUMNS = ("path", "errors", "sha256", "rules_version", "rejected_at")
REJECTION_TYPES = ("text", "jsonb", "text", "int4", "text")


@dataclass(frozen=True)
class Batch:
    """The history entries ``(start, end]`` of the local history identified by ``origin``, as
    JSON documents: every path they name, and the current ``results``/``rejections`` rows of
    those paths (a path in neither was removed). ``counts`` (local results, rejections) is read
    only with the batch that reaches ``local_max``, the last entry in the snapshot.
    ``start_entry`` and ``end_entry`` are the :func:`identity` of the entries at ``start`` and
    ``end`` in that snapshot (None where there is none)."""

    start: int
    end: int
    local_max: int
    origin: str | None
    start_entry: str | None
    end_entry: str | None
    paths: str
    n_paths: int
    results: str | None
    rejections: str | None
    counts: tuple[int, int] | None

    @property
    def empty(self) -> bool:
        return self.end <= self.start


def connect(db_path: Path) -> sqlite3.Connection:
    """A read-only connection to the local database (autocommit: :func:`read` opens its own
    transaction). Usable from one thread at a time, whichever it is."""
    uri = f"{db_path.absolute().as_uri()}?mode=ro"
    return sqlite3.connect(uri, uri=True, timeout=30.0, isolation_level=None, check_same_thread=False)


def last_id(local: sqlite3.Connection) -> int:
    """The last local history id (0 when there is none)."""
    return int(local.execute("SELECT coalesce(max(id), 0) FROM history").fetchone()[0])


def identity(local: sqlite3.Connection, entry_id: int) -> str | None:
    """The history entry ``entry_id`` as the central mark records it (JSON ``[id, at, outcome,
    path, sha256]``), None if there is no such entry. Ids alone do not name an entry: a history
    that went back in time (a restored backup; commits rolled back by a power cut) reuses them."""
    if entry_id <= 0:
        return None
    row = local.execute("SELECT id, at, outcome, path, sha256 FROM history WHERE id = ?", (entry_id,)).fetchone()
    return json.dumps(list(row)) if row else None


def read(local: sqlite3.Connection, start: int, size: int) -> Batch:
    """The batch of at most ``size`` entries after ``start``. Raises ``sqlite3.Error``."""
    local.execute("BEGIN")
    try:
        first = local.execute("SELECT id, at FROM history ORDER BY id LIMIT 1").fetchone()
        origin = f"{first[0]}:{first[1]}" if first else None
        local_max = last_id(local)
        end = max(start, min(start + size, local_max))
        start_entry = identity(local, start)
        if end == start:
            return Batch(start, end, local_max, origin, start_entry, start_entry, "[]", 0, None, None, None)
        end_entry = identity(local, end)
        span = (start, end)
        paths = [p for (p,) in local.execute(_PATHS, span)]
        results = local.execute(_RESULTS, span).fetchall()
        rejections = local.execute(_REJECTIONS, span).fetchall()
        # Counting the local tables walks an index of every row: once per catch-up, not per batch.
        counts = local.execute(_COUNTS).fetchone() if end == local_max else None
    finally:
        local.execute("COMMIT")
    # A batch travels as JSON, parsed once by the server (jsonb) and taken apart there: the JSON
    # encoder in C costs a few microseconds per row, psycopg's adaptation of nested Python lists
    # ~200. Floats are written as their shortest round-trip repr, so PostgreSQL gets the same
    # double; SQLite's 0/1 for target_met reads as a boolean.
    return Batch(
        start,
        end,
        local_max,
        origin,
        start_entry,
        end_entry,
        json.dumps(paths),
        len(paths),
        json.dumps(results) if results else None,
        json.dumps(rejections) if rejections else None,
        (int(counts[0]), int(counts[1])) if counts else None,
    )


_PATHS = "SELECT DISTINCT path FROM history WHERE id > ? AND id <= ?"
_RESULTS = (
    f"SELECT {', '.join(RESULT_COLUMNS)} FROM results WHERE path IN (SELECT path FROM history WHERE id > ? AND id <= ?)"
)
_REJECTIONS = (
    f"SELECT {', '.join(REJECTION_COLUMNS)} FROM rejections"
    " WHERE path IN (SELECT path FROM history WHERE id > ? AND id <= ?)"
)
_COUNTS = "SELECT (SELECT count(*) FROM results), (SELECT count(*) FROM rejections)"
