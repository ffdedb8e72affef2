"""Regressions: is a model's experiment worse than the one before it? Pure: no I/O.

A model's experiments are its stored result files in the order the report uses (experiment
instant, then path); each is compared with the one just before it in that order, on its primary
operating point (``target_met``, ``closest_recall_value``, ``optimal_threshold``). The store
(:mod:`watcher.mirror`) keeps the verdicts in ``results.regressed``/``results.regression``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import NamedTuple

#: The reasons' beginnings: what a reader (or a filter) can match on.
TARGET_LOST = "target no longer met"
RECALL_DOWN = "recall down"
THRESHOLD_MOVED = "threshold moved"

#: The report columns that carry the verdict when regression checks are on.
REGRESSION_COLUMNS = ("regressed", "regression")


class Rules(NamedTuple):
    """When an experiment counts as a regression of the one before it: its recall lower by more
    than ``recall_delta``, or its threshold further than ``threshold_step`` away (either way), or
    the target met before and not now."""

    recall_delta: float
    threshold_step: float


class Point(NamedTuple):
    """What is compared of one experiment."""

    target_met: bool
    recall: float
    threshold: float


def reasons(previous: Point, current: Point, rules: Rules) -> list[str]:
    """Why ``current`` regressed from ``previous`` (empty: it did not), each reason short text.

    Differences are rounded to 12 decimals first, as the inputs give them (0.05, not the float
    subtraction's 0.04999999999999993), so a difference equal to the configured value is not
    more than it.
    """
    out: list[str] = []
    if previous.target_met and not current.target_met:
        out.append(TARGET_LOST)
    drop = round(previous.recall - current.recall, 12)
    if drop > rules.recall_delta:
        out.append(f"{RECALL_DOWN} {drop:g} ({previous.recall:g} -> {current.recall:g})")
    moved = round(abs(current.threshold - previous.threshold), 12)
    if moved > rules.threshold_step:
        out.append(f"{THRESHOLD_MOVED} {moved:g} ({previous.threshold:g} -> {current.threshold:g})")
    return out


def chain(points: Iterable[tuple[str, Point]], rules: Rules) -> Iterator[tuple[str, list[str]]]:
    """For one model's experiments in order, oldest first (``(path, point)``): each path and its
    reasons against the one before it (the first has none)."""
    previous: Point | None = None
    for path, point in points:
        yield path, ([] if previous is None else reasons(previous, point, rules))
        previous = point


#: No reason: the ``regression`` column of a file that did not regress.
NONE = "[]"


def encode(found: list[str]) -> str:
    """The reasons as the ``regression`` column holds them: a JSON list."""
    return json.dumps(found, ensure_ascii=False) if found else NONE


def detail(found: list[str]) -> str:
    """A flagged scored entry's ``history.detail``: ``{"regression": [reason, ...]}``."""
    return json.dumps({"regression": found}, ensure_ascii=False)
