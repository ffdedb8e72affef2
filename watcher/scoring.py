"""Pick the operating point of a recall curve. Pure functions, no I/O.

For each point let d = |recall - target|. Candidates are the points with d <= min(d) + TOLERANCE
(so 0.80 and 0.90 tie around 0.85 despite float rounding). Among candidates, a point that meets the
target (recall >= target) is preferred; among those, the highest threshold (the same recall with
fewer false positives). The curve need not be monotone.
"""

from __future__ import annotations

import bisect
import functools
import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import islice
from operator import itemgetter

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
    # Recall rarely rises with the threshold: such a curve is searched, not scanned (this runs
    # once per scored file; both ways give the same candidates, see the tests).
    if all(map(operator.ge, recalls, islice(recalls, 1, None))):
        candidates = candidates_falling(recalls, target)
    else:
        candidates = candidates_anywhere(recalls, target)
    best = candidates[0]
    if len(candidates) > 1:
        # Tuples compare left to right: meeting the target first, then the higher threshold.
        best = max(candidates, key=lambda i: (recalls[i] >= target, thresholds[i]))
    recall = recalls[best]
    return Score(best, thresholds[best], recall, abs(recall - target), recall >= target)


def candidates_anywhere(recalls: Sequence[float], target: float) -> list[int]:
    """Indexes of the points whose distance to ``target`` is within ``TOLERANCE`` of the smallest
    one, in order; any curve."""
    distances = [abs(r - target) for r in recalls]
    limit = min(distances) + TOLERANCE
    return [i for i, d in enumerate(distances) if d <= limit]


def candidates_falling(recalls: Sequence[float], target: float) -> list[int]:
    """:func:`candidates_anywhere` for a curve whose recall never rises (each value >= the next)."""
    # The distance then falls until the first point below the target and rises from there (float
    # subtraction keeps order), so the closest point is one of the two around that crossing, and
    # the candidates are the run of points around it within the limit: a binary search and a
    # short walk.
    n = len(recalls)
    crossing = bisect.bisect_right(recalls, -target, key=operator.neg)  # first recall < target
    above = abs(recalls[crossing - 1] - target) if crossing > 0 else math.inf
    below = abs(recalls[crossing] - target) if crossing < n else math.inf
    limit = min(above, below) + TOLERANCE
    start = end = crossing
    while start > 0 and abs(recalls[start - 1] - target) <= limit:
        start -= 1
    while end < n and abs(recalls[end] - target) <= limit:
        end += 1
    return list(range(start, end))


def drawn_curve(
    thresholds: Sequence[float], recalls: Sequence[float], chosen: int, points: int = 32
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """At most ``points`` (threshold, recall) pairs (one more for the chosen point), evenly
    spread, as (thresholds, recalls): enough to draw the curve, never used for scoring."""
    pick = _picker(len(thresholds), points, chosen)
    return pick(thresholds), pick(recalls)


@functools.lru_cache(maxsize=1024)
def _picker(n: int, points: int, chosen: int) -> Callable[[Sequence[float]], tuple[float, ...]]:
    # Cached: curves in one results tree share a length, so the selection is computed once per
    # (length, chosen index) instead of once per file.
    keep = {round(i * (n - 1) / (points - 1)) for i in range(points)} if n > points else set(range(n))
    keep.add(chosen)
    getter = itemgetter(*sorted(keep))
    if len(keep) == 1:
        return lambda values: (getter(values),)
    return getter


#: Drawn curves are stored quantised to this many steps per axis: finer than any drawing's pixels.
STEPS = 255
_Y0 = STEPS + 0.5


def curve_bytes(thresholds: tuple[float, ...], recalls: Sequence[float]) -> bytes:
    """The stored form of a :func:`drawn_curve` (``results.curve``): x, y of each point, one byte
    each, in a ``STEPS`` x ``STEPS`` box with y pointing down. Made for every scored file, so it
    is cheap (a results tree shares its threshold grid: the x coordinates come from a cache) and
    small (66 bytes for 33 points)."""
    out = bytearray(2 * len(recalls))
    out[::2] = _xs(thresholds)
    out[1::2] = bytes([int(_Y0 - r * STEPS) for r in recalls])  # round((1 - r) * STEPS)
    return bytes(out)


@functools.lru_cache(maxsize=256)
def _xs(thresholds: tuple[float, ...]) -> bytes:
    return bytes([int(t * STEPS + 0.5) for t in thresholds])
