"""A CPU budget for background work: on average no more than ``share`` of one core.

Pure bookkeeping, with the clock passed in: :class:`Budget` is a token bucket of CPU seconds,
refilled at ``share`` seconds per second of wall time, and :func:`cost_of` says what one piece of
work is charged. The poller (:mod:`watcher.poller`) spends from it; tests drive it with numbers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")

#: Time spent waiting on the file system (an NFS or SMB server answering) is charged at this
#: fraction of its length besides the CPU time: a slow server gets fewer calls, not just a core.
WAIT_WEIGHT = 0.1


def cost_of(cpu_seconds: float, wall_seconds: float) -> float:
    """What a piece of work that took ``cpu_seconds`` of its thread's CPU time and
    ``wall_seconds`` of wall time is charged: its CPU time, or a :data:`WAIT_WEIGHT` of its wall
    time where it mostly waited."""
    return max(cpu_seconds, WAIT_WEIGHT * wall_seconds)


@dataclass
class Budget:
    """A token bucket of CPU seconds: ``share`` of a core accrues per second of (monotonic) time,
    at most ``cap`` seconds are saved up while nothing runs; work charged while the balance is
    low drives it negative, and whoever waits for the balance then waits longer. So over any
    long stretch the work charged is at most ``share`` times the time passed, plus ``cap``.
    """

    share: float
    cap: float
    balance: float = 0.0
    at: float | None = field(default=None)

    def refill(self, now: float) -> None:
        """Add what accrued since the last call."""
        if self.at is not None and now > self.at:
            self.balance = min(self.cap, self.balance + (now - self.at) * self.share)
        self.at = now if self.at is None else max(self.at, now)

    def charge(self, seconds: float) -> None:
        """Spend ``seconds`` of CPU (the balance may go negative)."""
        self.balance -= seconds

    def when(self, needed: float, now: float) -> float:
        """The time at which the balance reaches ``needed`` (``now`` if it already has)."""
        self.refill(now)
        if self.balance >= needed:
            return now
        return now + (needed - self.balance) / self.share


@dataclass
class Meter:
    """Measures a piece of work on the calling thread: its thread CPU time and wall time."""

    cpu: Callable[[], float] = time.thread_time
    wall: Callable[[], float] = time.monotonic

    def run(self, work: Callable[[], T]) -> tuple[T, float]:
        """Run ``work()``; its result and its :func:`cost_of`."""
        cpu0, wall0 = self.cpu(), self.wall()
        result = work()
        return result, cost_of(self.cpu() - cpu0, self.wall() - wall0)
