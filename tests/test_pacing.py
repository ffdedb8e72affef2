"""The CPU budget: a token bucket of CPU seconds, and what a piece of work is charged."""

from __future__ import annotations

import pytest

from watcher.pacing import WAIT_WEIGHT, Budget, Meter, cost_of


def test_work_is_charged_its_cpu_time_or_a_share_of_the_time_it_waited() -> None:
    assert cost_of(0.004, 0.005) == 0.004  # local disk: CPU-bound
    assert cost_of(0.001, 0.5) == pytest.approx(WAIT_WEIGHT * 0.5)  # a slow server: mostly waiting


def test_the_balance_accrues_at_the_share_up_to_the_cap_and_debt_delays() -> None:
    b = Budget(share=0.01, cap=0.02)
    b.refill(0.0)
    b.refill(1.0)
    assert b.balance == pytest.approx(0.01)
    b.refill(100.0)
    assert b.balance == pytest.approx(0.02)  # saved up no further than the cap
    b.charge(0.05)  # a costly piece of work: in debt
    assert b.when(0.0, 100.0) == pytest.approx(103.0)  # 0.03 s of debt at 1% of a core
    assert b.when(0.0, 103.0) == 103.0
    b.refill(102.0)  # time never runs backwards for the bucket
    assert b.balance == pytest.approx(0.0)


def test_meter_measures_the_calling_threads_cpu_and_wall_time() -> None:
    ticks = iter([0.0, 0.003])
    walls = iter([10.0, 10.5])
    meter = Meter(cpu=lambda: next(ticks), wall=lambda: next(walls))
    result, cost = meter.run(lambda: "done")
    assert result == "done" and cost == pytest.approx(WAIT_WEIGHT * 0.5)
