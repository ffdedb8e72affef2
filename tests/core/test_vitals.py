"""The vitals thread's counts of the database, in-process: what they cost while changes keep coming."""

from __future__ import annotations

import itertools
import queue
import time
from pathlib import Path
from typing import Any

import pytest

from watcher import metrics
from watcher.metrics import RECOUNT_SHARE, Counts, Stats, Vitals


def test_counting_stays_within_its_share_of_a_core_while_changes_keep_coming(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A count reads every row (half a second of CPU at a million files): however often changes
    land, the counts together take at most RECOUNT_SHARE of a core, not one count per
    RECOUNT_SECONDS."""
    cost = 0.02  # CPU seconds of one count, as a big database's would be
    counted: list[float] = []

    def costly_count(db_path: Path) -> Counts:
        start = time.thread_time()
        while time.thread_time() - start < cost:
            pass  # CPU, as SQLite's read of every row is
        counted.append(time.monotonic())
        return Counts(results=len(counted))

    monkeypatch.setattr(metrics, "count", costly_count)
    monkeypatch.setattr(metrics, "RECOUNT_SECONDS", 0.01)  # the floor out of the way: only the share limits
    stats = Stats()
    vitals = Vitals(make_settings(), stats, writer=None, events=queue.Queue())  # type: ignore[arg-type]
    began = time.monotonic()
    while time.monotonic() - began < 1.5:
        stats.outcomes(1, 0, 0)  # a change after every look: counting is always due
        vitals._recount()
    span = time.monotonic() - began
    assert counted and vitals.counts.results == len(counted)
    # One count now, the next cost / RECOUNT_SHARE (1 s) later: two in 1.5 s (75 at the floor's pace).
    assert len(counted) <= 1 + span * RECOUNT_SHARE / cost
    assert all(b - a >= cost / RECOUNT_SHARE for a, b in itertools.pairwise(counted))
