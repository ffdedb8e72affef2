"""A page rendered in a process of its own, coalesced: at most one rendering in flight and at
most one more wanted, however many requests come (never a queue of pages). Used by the daemon's
report thread (:mod:`watcher.reports.reporter`) and the fleet's publisher (:mod:`watcher.fleet.page`),
which decide what a finished, failed or broken rendering means; this holds the process, starts it
with the first rendering, and lets a dead one go (a new one with the next rendering).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from concurrent.futures import BrokenExecutor, Executor, Future
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class PageInFlight(Generic[T]):
    """``render`` in the process ``start()`` makes: :meth:`want` a page, :meth:`submit` it when
    none is in flight (with the arguments of the moment: settings may have been reloaded), take
    the one in flight with :meth:`finished` once it is done. ``done`` is called (on another
    thread) when a rendering ends."""

    def __init__(
        self, start: Callable[[], Executor], render: Callable[..., T], done: Callable[[], None] | None = None
    ) -> None:
        self.start = start
        self.render = render
        self.done = done
        self.executor: Any = None  # an Executor (Any: a test reaches into the processes)
        self.running: Future[T] | None = None  # the rendering in flight
        self.started = 0.0  # when it was submitted (monotonic)
        self.wanted = False  # another rendering is due once the one in flight is done

    @property
    def busy(self) -> bool:
        """True while a rendering runs or waits to start."""
        return self.running is not None or self.wanted

    def want(self) -> None:
        """Another rendering is due (now, or once the one in flight is done)."""
        self.wanted = True

    def submit(self, *args: Any) -> bool:
        """Start the wanted rendering, ``render(*args)``, unless one is in flight; False when the
        process was found dead (or could not be started): it is let go, the rendering still wanted."""
        if self.running is not None or not self.wanted:
            return True
        self.wanted = False
        try:
            if self.executor is None:
                self.executor = self.start()
            self.started = time.monotonic()
            self.running = self.executor.submit(self.render, *args)
        except BrokenExecutor:
            self.discard()
            self.wanted = True
            return False
        if self.done is not None:
            done = self.done
            self.running.add_done_callback(lambda _: done())
        return True

    def finished(self) -> Future[T] | None:
        """The rendering in flight once it is done, no longer in flight; None while it runs (or none does)."""
        running = self.running
        if running is None or not running.done():
            return None
        self.running = None
        return running

    def discard(self) -> None:
        """Let the process go at once (dead, or in an unknown state), and the rendering in flight."""
        if self.executor is not None:
            with contextlib.suppress(Exception):
                self.executor.shutdown(wait=False, cancel_futures=True)
        self.executor, self.running = None, None

    def close(self, wait: bool = True) -> bool:
        """Stop the process (with ``wait``, after the rendering in flight); True if one ran."""
        executor, self.executor, self.running = self.executor, None, None
        if executor is None:
            return False
        executor.shutdown(wait=wait, cancel_futures=True)
        return True
