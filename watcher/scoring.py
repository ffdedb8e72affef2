"""Pick the operating points of a recall curve. Pure functions, no I/O.

:func:`operating_points` gives the point of each target recall (the primary one and
``extra_targets``, in one pass over the arrays) and of each picker asked for (:data:`PICKERS`:
``max_f1``, ``youden``); :func:`optimal_point` the point of one target.

Three rules (:data:`OPERATING_POINTS`, the ``operating_point`` setting); the curve need not be
monotone, and recall is compared with the target exactly (as floats) except in ``nearest``:

``nearest`` (the default)
    For each point let d = |recall - target|. Candidates are the points with d <= min(d) +
    TOLERANCE (so 0.80 and 0.90 tie around 0.85 despite float rounding). Among candidates, a point
    that meets the target (recall >= target) is preferred; among those, the highest threshold (the
    same recall with fewer false positives).
``at_least``
    The highest threshold whose recall is at least the target (the convention of torchmetrics,
    Keras and TFMA: the point meets the target). When no point reaches it: the point with the
    highest recall, the highest threshold among equal ones.
``at_most``
    The mirror image: the lowest threshold whose recall is at most the target. When every point
    is above it: the point with the lowest recall, the lowest threshold among equal ones.

Thresholds are strictly increasing, so each rule picks exactly one point. Whatever the rule,
``target_met`` is recall >= target and ``distance`` is |recall - target|.
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
from typing import Literal, NamedTuple, get_args

#: Distances within this of the best one count as equally close.
TOLERANCE = 1e-9

#: The rules that pick the operating point (the ``operating_point`` setting), the default first.
OperatingPoint = Literal["nearest", "at_least", "at_most"]
OPERATING_POINTS: tuple[OperatingPoint, ...] = get_args(OperatingPoint)


# Not frozen: one is made per file and target, and a frozen dataclass costs four times as much to
# make (its __init__ goes through object.__setattr__), a tenth of what three targets add to a scan.
@dataclass(slots=True)
class Score:
    """The chosen point: its index, threshold, recall, distance to the target, and whether it meets it."""

    index: int
    threshold: float
    recall: float
    distance: float
    target_met: bool


def optimal_point(
    thresholds: Sequence[float], recalls: Sequence[float], target: float, rule: OperatingPoint = "nearest"
) -> Score:
    """Return the point of the curve chosen for ``target`` under ``rule`` (see the module).

    ``thresholds`` and ``recalls`` are non-empty and of equal length, the thresholds strictly
    increasing (validation guarantees it); ``ValueError`` for an empty or uneven pair.
    """
    if not recalls or len(thresholds) != len(recalls):
        raise ValueError("need two non-empty sequences of equal length")
    if rule not in OPERATING_POINTS:
        raise ValueError(f"unknown operating point rule {rule!r}")
    # Recall rarely rises with the threshold: such a curve is searched, not scanned (both ways
    # give the same point, see the tests).
    return _pick(thresholds, recalls, target, rule, all(map(operator.ge, recalls, islice(recalls, 1, None))))


def _score(thresholds: Sequence[float], recalls: Sequence[float], target: float, index: int) -> Score:
    recall = recalls[index]
    return Score(index, thresholds[index], recall, abs(recall - target), recall >= target)


def at_least(recalls: Sequence[float], target: float) -> int:
    """Index of the highest threshold whose recall is >= ``target`` (thresholds increasing, so
    the last such index); when there is none, of the highest recall (the last of equal ones)."""
    for i in range(len(recalls) - 1, -1, -1):
        if recalls[i] >= target:
            return i
    top = max(recalls)
    return len(recalls) - 1 - list(reversed(recalls)).index(top)


def at_most(recalls: Sequence[float], target: float) -> int:
    """Index of the lowest threshold whose recall is <= ``target`` (the first such index); when
    there is none, of the lowest recall (the first of equal ones)."""
    for i, recall in enumerate(recalls):
        if recall <= target:
            return i
    return list(recalls).index(min(recalls))


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


#: The pickers that need no target (the ``extra_pickers`` setting): ``max_f1`` the point of the
#: highest F1 = 2PR / (P + R) (needs ``precision_arr``; F1 is 0 where P + R is 0), ``youden`` the
#: point of the highest Youden's J = recall - FPR (needs ``fpr_arr``). Among values within
#: ``TOLERANCE`` of the highest, the highest threshold (as everywhere here: the same score with
#: fewer positives).
Picker = Literal["max_f1", "youden"]
PICKERS: tuple[Picker, ...] = get_args(Picker)


class Point(NamedTuple):
    """One operating point of a file: ``kind`` is ``"recall"`` (chosen for ``target`` under the
    rule) or a :data:`Picker` (``target`` is then ``None``, and so is ``met``); ``precision`` and
    ``fpr`` are the file's values at the point, ``None`` when it carries no such array. A named
    tuple: a bulk scan pickles several per file from the worker processes."""

    kind: str
    target: float | None
    threshold: float
    recall: float
    precision: float | None
    fpr: float | None
    met: bool | None


def operating_points(
    thresholds: Sequence[float],
    recalls: Sequence[float],
    targets: Sequence[float],
    rule: OperatingPoint = "nearest",
    pickers: Sequence[Picker] = (),
    precisions: Sequence[float] | None = None,
    fprs: Sequence[float] | None = None,
) -> tuple[list[Score], list[Point]]:
    """The chosen point for each of ``targets`` (as :func:`optimal_point`, in order) and the
    :class:`Point` of each, then of each picker the file can answer (``max_f1`` only with
    ``precisions``, ``youden`` only with ``fprs``; a picker without its array gives no point).

    One pass over the arrays whatever the number of targets: the curve's shape is looked at
    once, and on a falling curve (the usual case) each target is a binary search.
    """
    scores = scores_at(thresholds, recalls, targets, rule)

    def point(kind: str, target: float | None, index: int, met: bool | None) -> Point:
        precision = None if precisions is None else precisions[index]
        fpr = None if fprs is None else fprs[index]
        return Point(kind, target, thresholds[index], recalls[index], precision, fpr, met)

    if precisions is None and fprs is None:  # the usual file: each point straight from its score
        points = [
            Point("recall", t, s.threshold, s.recall, None, None, s.target_met)
            for t, s in zip(targets, scores, strict=True)
        ]
    else:
        points = [point("recall", t, s.index, s.target_met) for t, s in zip(targets, scores, strict=True)]
    for picker in pickers:
        if picker == "max_f1" and precisions is not None:
            points.append(point(picker, None, max_f1(precisions, recalls), None))
        elif picker == "youden" and fprs is not None:
            points.append(point(picker, None, youden(recalls, fprs), None))
    return scores, points


def scores_at(
    thresholds: Sequence[float], recalls: Sequence[float], targets: Sequence[float], rule: OperatingPoint = "nearest"
) -> list[Score]:
    """The chosen point for each of ``targets`` (as :func:`optimal_point`, in order): the scores
    of :func:`operating_points` without their points (a file without precision or FPR needs no
    more)."""
    if not recalls or len(thresholds) != len(recalls):
        raise ValueError("need two non-empty sequences of equal length")
    if rule not in OPERATING_POINTS:
        raise ValueError(f"unknown operating point rule {rule!r}")
    falling = all(map(operator.ge, recalls, islice(recalls, 1, None)))
    return [_pick(thresholds, recalls, target, rule, falling) for target in targets]


def _pick(thresholds: Sequence[float], recalls: Sequence[float], target: float, rule: str, falling: bool) -> Score:
    """The point for ``target`` under ``rule``; ``falling``: no recall is above the one before."""
    if rule == "at_most":
        return _score(thresholds, recalls, target, at_most(recalls, target))
    if rule == "at_least":
        if falling:  # the last recall >= target is just before the first one below it
            crossing = bisect.bisect_right(recalls, -target, key=operator.neg)
            if crossing > 0:
                return _score(thresholds, recalls, target, crossing - 1)
        return _score(thresholds, recalls, target, at_least(recalls, target))
    candidates = candidates_falling(recalls, target) if falling else candidates_anywhere(recalls, target)
    best = candidates[0]
    if len(candidates) > 1:
        # Tuples compare left to right: meeting the target first, then the higher threshold.
        best = max(candidates, key=lambda i: (recalls[i] >= target, thresholds[i]))
    return _score(thresholds, recalls, target, best)


def max_f1(precisions: Sequence[float], recalls: Sequence[float]) -> int:
    """Index of the highest F1 (2PR / (P + R), 0 where both are 0); among values within
    ``TOLERANCE`` of it, the highest threshold (the last index)."""
    return _last_best([2 * p * r / (p + r) if p + r > 0 else 0.0 for p, r in zip(precisions, recalls, strict=True)])


def youden(recalls: Sequence[float], fprs: Sequence[float]) -> int:
    """Index of the highest Youden's J (recall - FPR); among values within ``TOLERANCE`` of it,
    the highest threshold (the last index)."""
    return _last_best(list(map(operator.sub, recalls, fprs)))


def _last_best(values: list[float]) -> int:
    # Within TOLERANCE: the same value computed two ways (F1 from rounded precision and recall)
    # differs in its last bits, and such points are a tie.
    limit = max(values) - TOLERANCE
    return next(i for i in range(len(values) - 1, -1, -1) if values[i] >= limit)
