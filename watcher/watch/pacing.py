"""A CPU budget for background work: on average no more than ``share`` of one core.

Pure bookkeeping, with the clock passed in: :class:`Budget` is a token bucket of CPU seconds,
refilled at ``share`` seconds per second of wall time, and :class:`Meter` measures what a piece of
work is charged: the CPU time of the thread that did it. The poller (:mod:`watcher.watch.poller`) spends
from it; tests drive it with numbers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")


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
    """Measures a piece of work by the calling thread's CPU time: user and system, so the kernel's
    work for a network file system's calls counts too. Not the wall time: that also holds the
    waits for the GIL while the daemon's other threads work (a burst), which are no cost of the
    poller's."""

    cpu: Callable[[], float] = time.thread_time

    def run(self, work: Callable[[], T]) -> tuple[T, float]:
        """Run ``work()``; its result and the CPU seconds it took."""
        cpu0 = self.cpu()
        result = work()
        return result, self.cpu() - cpu0
