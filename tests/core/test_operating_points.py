"""The ``at_least`` and ``at_most`` rules: examples, their definitions as properties of any curve,
and ``at_least`` beside torchmetrics' ``BinaryPrecisionAtFixedRecall`` on random curves."""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from testing.helpers import doc, write
from watcher.config import Settings
from watcher.judge import JudgeOptions, judge, rules_version
from watcher.lifecycle import RELOADABLE
from watcher.outcomes import Scored
from watcher.producer import Curve, publish
from watcher.reconcile import reconcile
from watcher.resultfile import RULES_VERSION
from watcher.scoring import OPERATING_POINTS, optimal_point
from watcher.store import Store


@pytest.mark.parametrize(
    ("rule", "thresholds", "recalls", "target", "index", "met"),
    [
        ("at_least", [0.1, 0.2, 0.3], [0.95, 0.86, 0.70], 0.85, 1, True),  # the last one at or above
        ("at_least", [0.1, 0.2, 0.3], [0.95, 0.90, 0.845], 0.85, 1, True),  # 0.845 is nearer, but below
        ("at_least", [0.0, 0.5, 1.0], [1.0, 0.85, 0.0], 0.85, 1, True),  # equal counts as at least
        ("at_least", [0.1, 0.2, 0.3, 0.4], [0.9, 0.85, 0.85, 0.85], 0.85, 3, True),  # plateau: highest threshold
        ("at_least", [0.1, 0.2, 0.3, 0.4, 0.5], [0.3, 0.86, 0.2, 0.9, 0.1], 0.85, 3, True),  # not monotone
        ("at_least", [0.1, 0.2, 0.3], [0.80, 0.84, 0.84], 0.85, 2, False),  # none reaches: highest recall, ...
        ("at_least", [0.1, 0.2, 0.3], [0.84, 0.80, 0.84], 0.85, 2, False),  # ... the highest threshold of equals
        ("at_most", [0.1, 0.2, 0.3], [0.95, 0.86, 0.70], 0.85, 2, False),  # the first one at or below
        ("at_most", [0.1, 0.2, 0.3], [0.95, 0.85, 0.70], 0.85, 1, True),  # equal counts as at most (and meets it)
        ("at_most", [0.1, 0.2, 0.3, 0.4], [0.9, 0.5, 0.5, 0.1], 0.85, 1, False),  # plateau: lowest threshold
        ("at_most", [0.1, 0.2, 0.3], [0.90, 0.88, 0.88], 0.85, 1, True),  # none at or below: lowest recall, ...
        ("at_most", [0.1, 0.2, 0.3], [0.88, 0.90, 0.88], 0.85, 0, True),  # ... the lowest threshold of equals
    ],
)
def test_rules(rule: str, thresholds: list[float], recalls: list[float], target: float, index: int, met: bool) -> None:
    got = optimal_point(thresholds, recalls, target, rule)  # type: ignore[arg-type]
    assert (got.index, got.threshold, got.recall, got.target_met) == (index, thresholds[index], recalls[index], met)
    assert got.distance == abs(recalls[index] - target)


def test_nearest_is_the_default_and_an_unknown_rule_is_refused() -> None:
    curve = ([0.1, 0.2, 0.3], [0.95, 0.90, 0.845], 0.85)
    assert optimal_point(*curve) == optimal_point(*curve, "nearest") != optimal_point(*curve, "at_least")
    with pytest.raises(ValueError, match="unknown operating point rule"):
        optimal_point(*curve, "closest")  # type: ignore[arg-type]


def test_a_change_of_rule_judges_every_stored_outcome_again(make_settings: Any) -> None:
    """The rule is part of the stored ``rules_version``: a store opened under another rule finds
    no stored outcome current, and the next reconcile scores every file again under its rule."""
    assert [rules_version(rule) for rule in OPERATING_POINTS] == [
        RULES_VERSION,
        RULES_VERSION + 1000,
        RULES_VERSION + 2000,
    ]
    curve = {"threshold_arr": [0.1, 0.2, 0.3], "recall_arr": [0.95, 0.90, 0.845]}
    nearest = make_settings()
    write(nearest.watch_dir / "a.json", doc(**curve))
    stored: dict[str, Any] = {}
    for rule in ("nearest", "at_least", "at_least", "at_most", "nearest"):
        s = make_settings(operating_point=rule)
        with Store.from_settings(s) as store:
            assert store.rules_version == rules_version(rule)
            keys = store.stat_keys()
            current = bool(keys) and all(key is not None for key in keys.values())
            reconcile(store, s)
            (row,) = store.db.execute("SELECT optimal_threshold, rules_version FROM results").fetchall()
        assert current == (rule in stored)  # judged again unless the last judgement was under this rule
        stored = {rule: row}
        assert row == ({"nearest": 0.3, "at_least": 0.2, "at_most": 0.3}[rule], rules_version(rule))


def test_the_setting_takes_the_three_rules_and_a_change_waits_for_a_restart() -> None:
    def rule_of(**given: Any) -> str:
        return Settings.model_validate(given).operating_point

    assert rule_of() == "nearest"
    assert [rule_of(operating_point=rule) for rule in OPERATING_POINTS] == list(OPERATING_POINTS)
    with pytest.raises(ValidationError, match="operating_point"):
        rule_of(operating_point="closest")
    # A reload keeps the running rule (the store's rules version is fixed when it opens).
    assert "operating_point" not in RELOADABLE


@pytest.mark.parametrize("rule", OPERATING_POINTS)
def test_publish_returns_the_point_the_daemon_stores_under_the_rule(rule: str, tmp_path: Path) -> None:
    curve = Curve([0.1, 0.2, 0.3, 0.4], [0.95, 0.90, 0.845, 0.5])
    done = publish(tmp_path, model_id=str(uuid.uuid4()), issuer="ana@example.com", curve=curve, operating_point=rule)  # type: ignore[arg-type]
    outcome = judge(done.path.name, JudgeOptions(tmp_path, 0.85, 64 << 20, operating_point=rule))  # type: ignore[arg-type]
    assert isinstance(outcome, Scored)
    assert (outcome.optimal_threshold, outcome.closest_recall_value, outcome.target_met) == (
        done.optimal_threshold,
        done.closest_recall_value,
        done.target_met,
    )
    assert done.optimal_threshold == {"nearest": 0.3, "at_least": 0.2, "at_most": 0.3}[rule]


# Any valid curve: 1 to 40 points, thresholds strictly increasing in [0, 1], recalls in [0, 1]
# drawn from a small set half the time, so that equal recalls and recalls equal to the target come up.
_unit = st.floats(0.0, 1.0)
_recall = st.one_of(_unit, st.sampled_from([0.0, 0.2, 0.5, 0.84, 0.85, 0.86, 1.0]))


@st.composite
def curves(draw: st.DrawFn) -> tuple[list[float], list[float], float]:
    thresholds = sorted(draw(st.sets(_unit, min_size=1, max_size=40)))
    recalls = draw(st.lists(_recall, min_size=len(thresholds), max_size=len(thresholds)))
    target = draw(st.one_of(_unit, st.sampled_from([0.0, 0.85, 1.0]), st.sampled_from(recalls)))
    return thresholds, recalls, target


@given(curves())
@settings(max_examples=200, deadline=None)
def test_at_least_is_its_definition(curve: tuple[list[float], list[float], float]) -> None:
    """The point is feasible (recall >= target) and no feasible point has a higher threshold; when
    none is feasible, no point has a higher recall, nor the same recall at a higher threshold."""
    thresholds, recalls, target = curve
    got = optimal_point(thresholds, recalls, target, "at_least")
    points = list(zip(thresholds, recalls, strict=True))
    assert (got.threshold, got.recall) == points[got.index]
    feasible = [(t, r) for t, r in points if r >= target]
    assert got.target_met == bool(feasible) == (got.recall >= target)
    if feasible:
        assert all(t <= got.threshold for t, _ in feasible)
    else:
        assert all(r < got.recall or (r == got.recall and t <= got.threshold) for t, r in points)


@given(curves())
@settings(max_examples=200, deadline=None)
def test_at_most_is_its_definition(curve: tuple[list[float], list[float], float]) -> None:
    """The point is feasible (recall <= target) and no feasible point has a lower threshold; when
    none is feasible, no point has a lower recall, nor the same recall at a lower threshold."""
    thresholds, recalls, target = curve
    got = optimal_point(thresholds, recalls, target, "at_most")
    points = list(zip(thresholds, recalls, strict=True))
    assert (got.threshold, got.recall) == points[got.index]
    assert got.target_met == (got.recall >= target)  # the same meaning under every rule
    feasible = [(t, r) for t, r in points if r <= target]
    if feasible:
        assert got.recall <= target and all(t >= got.threshold for t, _ in feasible)
    else:
        assert all(r > got.recall or (r == got.recall and t >= got.threshold) for t, r in points)


@given(curves())
@settings(max_examples=150, deadline=None)
def test_at_most_is_at_least_in_the_mirror(curve: tuple[list[float], list[float], float]) -> None:
    """Negating thresholds, recalls and the target (exact in floating point), and reversing the
    order so the thresholds still increase, turns one rule into the other."""
    thresholds, recalls, target = curve
    n = len(thresholds)
    mirrored = optimal_point([-t for t in reversed(thresholds)], [-r for r in reversed(recalls)], -target, "at_least")
    assert optimal_point(thresholds, recalls, target, "at_most").index == n - 1 - mirrored.index


@given(curves(), st.sampled_from(OPERATING_POINTS))
@settings(max_examples=150, deadline=None)
def test_every_rule_picks_a_point_of_the_curve(curve: tuple[list[float], list[float], float], rule: str) -> None:
    thresholds, recalls, target = curve
    got = optimal_point(thresholds, recalls, target, rule)  # type: ignore[arg-type]
    assert 0 <= got.index < len(thresholds) and got.distance == abs(got.recall - target)


# --- torchmetrics ----------------------------------------------------------------------------


def torchmetrics_precision_at_fixed_recall(
    scores: np.ndarray, labels: np.ndarray, grid: Sequence[float], min_recall: float
) -> tuple[float, float, np.ndarray, np.ndarray]:
    """An independent oracle of torchmetrics' ``binary_precision_at_fixed_recall`` with a list of
    thresholds (its binned mode), written from its source (``precision_fixed_recall.py``,
    ``recall_fixed_precision.py``, ``precision_recall_curve.py``):

    * the curve: at each threshold t of the list a sample is predicted positive when its score is
      >= t; precision = tp / (tp + fp), recall = tp / (tp + fn); then one more point (precision 1,
      recall 0) with no threshold, which the reduction drops (it zips to the shortest);
    * the reduction (``_precision_at_recall``): among the points with recall >= min_recall, the
      lexicographic maximum of (precision, recall, threshold); it returns (precision, threshold),
      and (0, 1e6) when no point qualifies or the best precision is 0.

    Returns that pair and the curve's recall and precision at each threshold. Computed in float64
    (torchmetrics' default is float32): what is compared is the decision on the values a results
    file carries, not float32 rounding. Every sample set has a positive, so recall never divides
    by zero, and min_recall > 0, so a point with no prediction (precision 0/0, whose convention
    differs between torchmetrics versions) is never feasible.
    """
    thresholds = np.asarray(grid)
    predicted = scores[None, :] >= thresholds[:, None]
    tp = (predicted & (labels[None, :] == 1)).sum(axis=1)
    fp = (predicted & (labels[None, :] == 0)).sum(axis=1)
    fn = (labels == 1).sum() - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
    recall = tp / (tp + fn)
    feasible = [(p, r, t) for p, r, t in zip(precision, recall, thresholds, strict=True) if r >= min_recall]
    best_precision, best_threshold = (max(feasible)[0], max(feasible)[2]) if feasible else (0.0, 0.0)
    if best_precision == 0.0:
        best_threshold = 1e6
    return float(best_precision), float(best_threshold), recall, precision


def _random_case(rng: random.Random) -> tuple[np.ndarray, np.ndarray, list[float], float]:
    n = rng.randint(2, 60)
    labels = np.array([rng.random() < rng.uniform(0.1, 0.9) for _ in range(n)], dtype=int)
    labels[rng.randrange(n)] = 1  # at least one positive
    separation = rng.uniform(0.0, 3.0)
    scores = np.array([1 / (1 + np.exp(-(rng.gauss(0, 1) + separation * (y - 0.5)))) for y in labels])
    if rng.random() < 0.3:  # coarse scores: many ties
        scores = np.round(scores, 1)
    grid = sorted({round(rng.random(), rng.choice([1, 2, 3])) for _ in range(rng.randint(1, 30))})
    positives = int(labels.sum())
    # The target: often exactly a reachable recall (k / positives), where "at least" is decided by equality.
    min_recall = rng.randint(1, positives) / positives if rng.random() < 0.5 else rng.uniform(0.01, 1.0)
    return scores, labels, grid, min_recall


@pytest.mark.slow
def test_at_least_beside_torchmetrics_binary_precision_at_fixed_recall() -> None:
    """On 10,000 random curves (random labels and scores, a random threshold grid, torchmetrics'
    way of turning them into a curve), watcher's ``at_least`` is compared with the oracle above.

    torchmetrics does not return "the highest threshold whose recall is at least the target": it
    returns the highest *precision* among the points whose recall is at least the target, and that
    point's threshold (no recall). A results file carries no precision, so watcher cannot make that
    choice; what the two share is the feasible set, and the rule picks its highest threshold (for a
    given recall, the fewest false positives). So what is compared, on every curve:

    1. the feasible set is the same: torchmetrics finds a point exactly when ``target_met``;
    2. threshold and recall: watcher's point is the point of torchmetrics' curve with the highest
       threshold among those with recall >= min_recall, and its recall is that point's recall
       (exact float equality, both read from the same curve);
    3. torchmetrics' own answer is consistent with it: a feasible point, at a threshold no higher
       than watcher's and a recall no lower; where the two thresholds differ, torchmetrics' point has
       a higher precision, or the same precision and a higher recall (its tie-break): watcher's
       point loses only on precision, which it does not have.
    """
    rng = random.Random(29)
    same = 0
    for _ in range(10_000):
        scores, labels, grid, min_recall = _random_case(rng)
        tm_precision, tm_threshold, recall, precision = torchmetrics_precision_at_fixed_recall(
            scores, labels, grid, min_recall
        )
        got = optimal_point(grid, [float(r) for r in recall], min_recall, "at_least")
        feasible = [i for i, r in enumerate(recall) if r >= min_recall]
        # 1. the same feasible set
        assert got.target_met == (tm_threshold != 1e6) == bool(feasible)
        if not feasible:
            assert got.recall == max(recall)  # the documented fallback
            continue
        # 2. threshold and recall: the highest feasible threshold of torchmetrics' curve
        highest = max(feasible, key=lambda i: grid[i])
        assert (got.threshold, got.recall) == (grid[highest], recall[highest])
        # 3. torchmetrics' answer: feasible, no higher threshold, no lower recall, and better only on precision
        tm = grid.index(tm_threshold)
        assert tm in feasible and tm_threshold <= got.threshold and recall[tm] >= got.recall
        assert tm_precision == precision[tm] >= precision[got.index]
        if tm != got.index:
            assert precision[tm] > precision[got.index] or recall[tm] > recall[got.index]
        else:
            same += 1
    assert 0 < same < 10_000  # both kinds of curve came up
