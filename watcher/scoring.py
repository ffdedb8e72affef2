"""Pick the operating point of a recall curve. Pure functions, no I/O.

For each point let d = |recall - target|. Candidates are the points with d <= min(d) + TOLERANCE
(so 0.80 and 0.90 tie around 0.85 despite float rounding). Among candidates, a point that meets the
target (recall >= target) is preferred; among those, the highest threshold (the same recall with
fewer false positives). The curve need not be monotone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

#: Distances within this of the best one count as equally close.
TOLERANCE = 1e-9


@dataclass(frozen=True, slots=True)
class Score:
    """The chosen point: its index, threshold, recall, distance to the target, and whether it meets it."""

    index: int
    threshold: float
    recall: float
    distance: float
    target_met: bool


def optimal_point(thresholds: Sequence[float], recalls: Sequence[float], target: float) -> Score:
    """Return the point of the curve chosen for ``target``.

    ``thresholds`` and ``recalls`` are non-empty and of equal length (validation guarantees it);
    ``ValueError`` otherwise.
    """
    if not recalls or len(thresholds) != len(recalls):
        raise ValueError("need two non-empty sequences of equal length")
    best_d = min(abs(r - target) for r in recalls)
    limit = best_d + TOLERANCE
    best = -1
    best_key = (False, 0.0)
    for i, r in enumerate(recalls):
        if abs(r - target) <= limit:
            # Python compares tuples left to right: met beats not met, then higher threshold wins.
            key = (r >= target, thresholds[i])
            if best < 0 or key > best_key:
                best, best_key = i, key
    recall = recalls[best]
    return Score(best, thresholds[best], recall, abs(recall - target), recall >= target)
