"""The inotify observer: watchdog's, with reads of files left out where the kernel's events come in.

The observer asks for opens and no-write closes: the tracker counts the processes that hold a
file open, so that a writer pausing mid-file is not judged (:mod:`watcher.tracker`). But every
read of a file is an open and a no-write close too: the daemon's own reconcile reads each file
it judges, and watchdog carries each event through three threads of the daemon's process before
the handler sees it. On a cold start of 100,000 files those 200,000 events about doubled the
daemon's CPU time to ready against the polling observer's (they compete with the writer thread
for the interpreter) and overflowed the event queue.

:class:`PairingInotifyFD` reads the kernel's events as watchdog's reader does and leaves out a
file's open together with the no-write close that follows it, when no other event for that file
comes between the two (:class:`ReadPairs`). That is exact, not a guess about who read:

* A no-write close comes from a descriptor opened read-only: closing one opened for writing is
  ``IN_CLOSE_WRITE``, whether anything was written or not.
* The tracker counts an open +1 and a no-write close -1; with nothing else for the file in
  between, the pair leaves its state as it was (``tests/watch/test_inotify.py`` checks this against
  the tracker on arbitrary event sequences).
* What the pair's absence changes is when the open is known: as if the reader had opened the
  file just before it closed it, which the kernel could equally have reported. Meanwhile nothing
  happened to the file: a write, create, delete, rename, attribute change or a writer's close
  would have been an event for it between the two.

Every other event goes on, in the kernel's order. Opens and no-write closes of folders are left
out too (watchdog makes no event of them). An overflow of the kernel's queue, or an event about a
watched folder itself, ends every pairing across it. When a read leaves an open whose close may be
just behind it, the reader waits for more events, :data:`READ_WAIT` at most, before passing them on.

The reader also reports an overflow of the kernel's queue (``on_overflow``), which watchdog only
logs: the daemon reconciles then, as when its own queue overflows.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from watchdog.observers.api import DEFAULT_OBSERVER_TIMEOUT, BaseObserver
from watchdog.observers.inotify import InotifyEmitter, InotifyObserver
from watchdog.observers.inotify_c import DEFAULT_EVENT_BUFFER_SIZE, InotifyConstants, InotifyEvent, InotifyFD

#: Longest wait for the close of an open that ends a read (its events are passed on after it).
READ_WAIT = 0.01

_OPEN = InotifyConstants.IN_OPEN
_CLOSE_NOWRITE = InotifyConstants.IN_CLOSE_NOWRITE
_FOLDER_READS = frozenset({_OPEN | InotifyConstants.IN_ISDIR, _CLOSE_NOWRITE | InotifyConstants.IN_ISDIR})


class ReadPairs:
    """The events of one or more consecutive reads, with reads of files left out (see above).

    :meth:`add` takes events in the kernel's order; :meth:`kept` gives the ones to pass on;
    :attr:`waiting` is true while some file's open has had no event after it yet.
    """

    def __init__(self) -> None:
        self.events: list[InotifyEvent] = []
        self.dropped: set[int] = set()
        self.folder_reads = 0
        #: (watch, name) -> index of an open with no event for that file after it yet
        self._open_at: dict[tuple[int, bytes], int] = {}

    @property
    def waiting(self) -> bool:
        """True while an open may still be paired with a close that has not come yet."""
        return bool(self._open_at)

    def add(self, events: list[InotifyEvent]) -> None:
        """Take the next events, in the kernel's order."""
        for event in events:
            i = len(self.events)
            self.events.append(event)
            mask = event.mask
            if mask in _FOLDER_READS:
                self.dropped.add(i)
                self.folder_reads += 1
                continue
            if event.wd == -1 or not event.name:
                # The queue overflowed, or an event about a watched folder itself (deleted,
                # moved, no longer watched): pair nothing across it.
                self._open_at = {k: v for k, v in self._open_at.items() if event.wd != -1 and k[0] != event.wd}
                continue
            key = (event.wd, event.name)
            opened = self._open_at.pop(key, None)
            if mask == _OPEN:
                self._open_at[key] = i  # an earlier open of the same file stays: this one follows it
            elif mask == _CLOSE_NOWRITE and opened is not None:
                self.dropped.update((opened, i))

    def kept(self) -> list[InotifyEvent]:
        """The events to pass on, in order."""
        if not self.dropped:
            return self.events
        return [e for i, e in enumerate(self.events) if i not in self.dropped]


class PairingInotifyFD(InotifyFD):
    """watchdog's inotify reader thread, passing on each read's events without the reads of files
    (:class:`ReadPairs`). ``pairs_dropped`` counts the opens left out (with their closes).

    ``on_overflow()`` is called when the kernel's queue overflowed (events were lost), after
    watchdog has watched the tree anew: the daemon then reconciles, as when its own queue is full.
    """

    def __init__(self, on_overflow: Callable[[], None] = lambda: None) -> None:
        super().__init__()
        self.on_overflow = on_overflow
        self.pairs_dropped = 0

    def handle_event(self, event: InotifyEvent) -> None:
        """watchdog's handling (which, on an overflow, only logs it and watches the tree anew),
        then ``on_overflow()`` for an overflow."""
        super().handle_event(event)
        if event.is_queue_overflow:
            self.on_overflow()

    def read_events(self, *, event_buffer_size: int = DEFAULT_EVENT_BUFFER_SIZE) -> list[InotifyEvent]:
        """One read (and those that follow within :data:`READ_WAIT` while an open waits for its
        close), reads of files left out. Runs in this thread only."""
        pairs = ReadPairs()
        pairs.add(super().read_events(event_buffer_size=event_buffer_size))
        deadline = time.monotonic() + READ_WAIT
        while pairs.waiting and self._poller is not None:
            left = deadline - time.monotonic()
            # Also ready when the reader is being closed: the read below then returns nothing.
            if left <= 0 or not self._poller.poll(max(1, round(left * 1000))):
                break
            more = super().read_events(event_buffer_size=event_buffer_size)
            if not more:
                break
            pairs.add(more)
        self.pairs_dropped += (len(pairs.dropped) - pairs.folder_reads) // 2
        return pairs.kept()


class PairingInotifyObserver(InotifyObserver):
    """watchdog's inotify observer, reading events with :class:`PairingInotifyFD` (which calls
    ``on_overflow()`` when the kernel's queue overflowed)."""

    def __init__(self, on_overflow: Callable[[], None] = lambda: None) -> None:
        # What InotifyObserver.__init__ does, with this reader in place of watchdog's own (its
        # emitters take the reader as an argument; stopping the observer stops and joins it).
        self._inotify_fd = PairingInotifyFD(on_overflow)
        self._inotify_fd.start()
        BaseObserver.__init__(self, InotifyEmitter, timeout=DEFAULT_OBSERVER_TIMEOUT, inotify_fd=self._inotify_fd)
