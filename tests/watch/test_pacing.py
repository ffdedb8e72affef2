"""The CPU budget: a token bucket of CPU seconds, and what a piece of work is charged."""

from __future__ import annotations

import pytest

from watcher.watch.pacing import Budget, Meter


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


def test_meter_charges_the_calling_threads_cpu_time() -> None:
    ticks = iter([0.0, 0.003])
    meter = Meter(cpu=lambda: next(ticks))
    result, cost = meter.run(lambda: "done")
    assert result == "done" and cost == pytest.approx(0.003)
