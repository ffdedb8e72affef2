"""The operating-point rule: closest recall, ties to the point meeting the target, then the highest threshold."""

from __future__ import annotations

import random

import pytest

from watcher.scoring import Score, candidates_anywhere, candidates_falling, optimal_point


@pytest.mark.parametrize(
    ("thresholds", "recalls", "target", "index"),
    [
        ([0.0, 0.5, 1.0], [1.0, 0.85, 0.0], 0.85, 1),  # exact hit
        ([0.1, 0.2, 0.3], [0.95, 0.86, 0.70], 0.85, 1),  # nearest
        ([0.1, 0.2, 0.3], [0.95, 0.90, 0.80], 0.85, 1),  # 0.90 and 0.80 tie (float noise): meeting the target wins
        ([0.1, 0.2, 0.3], [0.80, 0.70, 0.90], 0.85, 2),  # same tie, order reversed
        ([0.1, 0.2, 0.3, 0.4], [0.9, 0.85, 0.85, 0.85], 0.85, 3),  # plateau: highest threshold
        ([0.1, 0.2, 0.3, 0.4], [0.84, 0.84, 0.5, 0.2], 0.85, 1),  # plateau below target: highest threshold
        ([0.1, 0.2, 0.3, 0.4, 0.5], [0.3, 0.86, 0.2, 0.86, 0.1], 0.85, 3),  # non-monotone: highest of the ties
        ([0.1, 0.2, 0.3, 0.4], [0.2, 0.9, 0.84, 0.1], 0.85, 2),  # non-monotone: 0.84 beats 0.9
        ([0.5], [0.2], 0.85, 0),  # single point
        ([0.0, 1.0], [1.0, 0.0], 0.5, 0),  # exact tie: recall 1.0 meets the target, 0.0 does not
    ],
)
def test_optimal_point(thresholds: list[float], recalls: list[float], target: float, index: int) -> None:
    got = optimal_point(thresholds, recalls, target)
    assert got.index == index
    assert got.threshold == thresholds[index]
    assert got.recall == recalls[index]


def test_score_carries_distance_and_met() -> None:
    got = optimal_point([0.1, 0.2], [0.9, 0.7], 0.85)
    assert got == Score(0, 0.1, 0.9, got.distance, True) and got.distance == pytest.approx(0.05)
    low = optimal_point([0.1], [0.5], 0.85)
    assert low.target_met is False and low.distance == pytest.approx(0.35)


def test_tolerance_treats_float_noise_as_a_tie() -> None:
    # 0.85 - 0.8 and 0.9 - 0.85 differ in the 17th digit; they must count as equally close.
    assert abs(0.85 - 0.8) != abs(0.9 - 0.85)
    assert optimal_point([0.3, 0.6], [0.9, 0.8], 0.85).index == 0


@pytest.mark.parametrize(("thresholds", "recalls"), [([], []), ([0.1], [0.5, 0.6])])
def test_bad_input_raises(thresholds: list[float], recalls: list[float]) -> None:
    with pytest.raises(ValueError, match="equal length"):
        optimal_point(thresholds, recalls, 0.85)


def _falling_curve(rng: random.Random) -> list[float]:
    # Recall values from a small grid (plateaus, exact hits of the target, float-noise ties
    # such as 0.8 / 0.9 around 0.85) or anywhere in [0, 1], never rising.
    grid = [0.0, 0.1, 0.5, 0.8, 0.84, 0.85, 0.86, 0.9, 1.0]
    n = rng.randint(1, 40)
    values = [rng.choice(grid) if rng.random() < 0.6 else rng.random() for _ in range(n)]
    return sorted(values, reverse=True)


@pytest.mark.parametrize("seed", range(20))
def test_falling_curves_are_searched_to_the_same_candidates(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(500):
        recalls = _falling_curve(rng)
        target = rng.choice([0.85, 0.5, 0.9, 0.0, 1.0, rng.choice(recalls), rng.random()])
        assert candidates_falling(recalls, target) == candidates_anywhere(recalls, target), (recalls, target)


def test_rising_curves_are_scanned() -> None:
    # Not falling: the search would miss the 0.85 at the end.
    recalls = [0.9, 0.2, 0.85]
    assert candidates_anywhere(recalls, 0.85) == [2]
    assert optimal_point([0.1, 0.2, 0.3], recalls, 0.85).index == 2
