"""Polling for file systems without inotify (NFS, SMB), at a cost that follows the changes and the
number of folders, not the number of unchanged files.

A folder's mtime moves when an entry is added, removed or renamed in it, so each poll ``stat``s
only the folders (their mtime and inode, kept per folder) and lists just the ones that moved. A
listed folder is compared with the stat keys the database holds for it
(:meth:`watcher.store.Store.stat_keys`, :func:`watcher.tree.diff_listing`): there is no second
copy of the tree in memory. A file rewritten in place leaves its folder's mtime alone; a slower
*sweep* lists and compares every folder in turn, paced so that polls and sweep together use at
most ``polling_cpu_share`` of a core on average (:mod:`watcher.watch.pacing`). On a big tree (or where
each call costs more CPU, as over NFS) the sweep's period stretches, and so does the poll's once
its folder ``stat`` calls alone would take more than three quarters of the budget.

What it finds goes out as ordinary watchdog events (created, modified, deleted, moved, and a
folder's created/deleted) into the observer's queue, so the writer's event path is the same as
with inotify. :class:`watcher.watch.observe.FolderPollingObserver` is the watchdog observer; its
emitter holds a :class:`Poller`, which is plain code with the clock, the CPU meter, the folder
``stat`` and the stored keys passed in.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from watchdog.events import (
    DirAttribEvent,
    DirCreatedEvent,
    DirDeletedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
)

from watcher.logs import get_logger
from watcher.outcomes import StatKey, identity_stat
from watcher.timestamps import now_iso
from watcher.tree import Matcher, diff_listing, listed
from watcher.watch.pacing import Budget, Meter

log = get_logger("watcher.poller")

#: A folder's version as a poll compares it: ``(mtime_ns, inode)``.
DirKey = tuple[int, int]
#: The stored stat keys of the files directly in a folder, or ``None`` while there is no database.
StoredKeys = Callable[[str], dict[str, StatKey | None] | None]

_ABSENT: Any = object()
#: A sweep begins at most once per this many polling intervals: on a small tree, where the budget
#: would allow one per poll, rewrites are still found within seconds, for a fraction of the cost.
SWEEP_EVERY = 10
#: The part of the budget the polls' folder stats may take before the poll period stretches; the
#: sweep has the rest at least.
POLL_SHARE = 0.75
#: One step of the sweep compares folders until it has seen this many files (or a sweep ends):
#: steps big enough that waking up for them costs little, small enough to pace finely.
SWEEP_STEP_FILES = 2000


def dir_key(full: str) -> DirKey | None:
    """A folder's ``(mtime_ns, inode)``; ``None`` when it is gone or no longer a folder."""
    try:
        st = os.stat(full)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_ino) if stat.S_ISDIR(st.st_mode) else None


def _file_key(full: str) -> StatKey | None:
    try:
        s = identity_stat(full)  # as the judge and the walk see it
    except OSError:
        return None
    return (s.st_size, s.st_mtime_ns, s.st_ino)


@dataclass(slots=True)
class Folder:
    """What a poll keeps per folder: its key, and whether to list it again at the next poll even
    if the key stays (a change made within the same tick of the file system's clock as the one
    just seen leaves the mtime as it was)."""

    key: DirKey
    full: str  # its absolute path, joined once: every poll stats it
    again: bool = False
    unreadable: bool = False  # its last listing failed (no permission): readable again is news


class Poller:
    """Polls the folders below ``root`` and sweeps their files; see the module docstring.

    ``emit`` takes each event; ``stored(folder)`` gives the database's stat keys of the files
    directly in a folder. Call :meth:`discover` once, then :meth:`step` in a loop, waiting the
    seconds it returns. Sweeps begin once :meth:`start_sweeping` was called (after the start-up
    reconcile: before it, the database does not yet describe the tree). Use from one thread;
    :meth:`status` may be read from any.
    """

    def __init__(
        self,
        root: str,
        matcher: Matcher,
        stored: StoredKeys,
        emit: Callable[[FileSystemEvent], None],
        interval: float,
        share: float,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        meter: Meter | None = None,
        folder_key: Callable[[str], DirKey | None] = dir_key,
    ) -> None:
        self.root, self.matcher, self.stored, self.emit = root, matcher, stored, emit
        self.top = Path(root)
        self.interval, self.share = interval, share
        self.clock, self.wall_clock, self.folder_key = clock, wall_clock, folder_key
        self.meter = meter or Meter()
        self.base_cap = 2 * share * max(interval, 1.0)
        self.budget = Budget(share, cap=self.base_cap)
        self.folders: dict[str, Folder] = {}
        self.children: dict[str, set[str]] = {}  # folder -> its subfolders that are in ``folders``
        #: Per folder, the changes already sent and not yet in the database (path -> the key
        #: sent, ``None`` for a deletion): sent once, not at every look until the writer catches up.
        self.sent: dict[str, dict[str, StatKey | None]] = {}
        self.sweeping = threading.Event()
        self.stat_cost = 0.0  # CPU of one round of folder stats (moving average): sets the poll period
        self.next_poll = 0.0
        self.last_poll: float | None = None
        self.period = interval
        self.to_sweep: list[str] = []
        self.sweep_began = 0.0
        self.next_sweep = 0.0
        self.sweep_seconds: float | None = None
        self.last_sweep_at: float | None = None
        self.cpu_mark: float | None = None  # the thread's CPU time when the last step returned

    def full(self, rel: str) -> str:
        """The absolute path of a relative one."""
        return os.path.join(self.root, rel) if rel else self.root

    # -- the loop ----------------------------------------------------------------------------

    def step(self) -> float:
        """Poll if due, else take one step of the sweep if due and affordable; the seconds to
        wait before the next call."""
        now = self.clock()
        self.budget.refill(now)
        cpu = self.meter.cpu()
        if self.cpu_mark is not None:
            self.budget.charge(max(0.0, cpu - self.cpu_mark))  # waking up and waiting cost something too
        try:
            return self._step(now)
        finally:
            self.cpu_mark = self.meter.cpu()

    def _step(self, now: float) -> float:
        if now >= self.next_poll:
            self.poll()
            if self.last_poll is not None:
                self.period = now - self.last_poll
            self.last_poll = now
            # The folder stats may take up to POLL_SHARE of the budget; the rest is the sweep's.
            self.next_poll = now + max(self.interval, self.stat_cost / (POLL_SHARE * self.share))
            return 0.0
        if not self.sweeping.is_set():
            return self.next_poll - now
        # Sweep only with enough left for the next poll's folder stats.
        if now >= max(self.next_sweep, self.budget.when(self.stat_cost, now)):
            _, cost = self.meter.run(self.sweep_step)
            self.budget.charge(cost)
            return 0.0
        # Wait until an interval's worth more is saved: waking up costs CPU too, and waking for
        # just what was needed would spend it again on the wake-up, never getting there.
        wake = max(self.next_sweep, self.budget.when(self.stat_cost + self.share * self.interval, now))
        return max(0.0, min(self.next_poll, wake) - now)

    def start_sweeping(self) -> None:
        """Allow sweeps from now on (the database describes the tree); any thread may call it."""
        self.sweeping.set()

    def status(self) -> dict[str, Any]:
        """The current poll period, how long the last full sweep took and when it ended."""
        return {
            "poll_period": round(self.period, 3),
            "sweep_seconds": None if self.sweep_seconds is None else round(self.sweep_seconds, 3),
            "last_sweep_at": None if self.last_sweep_at is None else now_iso(self.last_sweep_at),
        }

    # -- polls -------------------------------------------------------------------------------

    def discover(self, under: str = "") -> None:
        """Record the key of every folder at or below ``under``, sending nothing."""
        stack = [under]
        while stack:
            rel = stack.pop()
            key = self.folder_key(self.full(rel))
            if key is None:
                continue
            self.folders[rel] = Folder(key, self.full(rel))
            if rel:
                self.children.setdefault(os.path.dirname(rel), set()).add(rel)
            stack += self._subfolders(rel)

    def _subfolders(self, rel: str) -> list[str]:
        if rel and not self.matcher.recursive:
            return []
        try:
            with os.scandir(self.full(rel)) as it:
                names = [e.name for e in it if e.is_dir(follow_symlinks=False)]
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError:
            self.folders[rel].unreadable = True  # there but not listable: see examine
            return []
        subs = [f"{rel}/{name}" if rel else name for name in names]
        return [sub for sub in subs if self.matcher.descends(sub)]

    def poll(self) -> None:
        """``stat`` every known folder; list and compare the ones that moved (and those to look at again)."""
        changed, cost = self.meter.run(self._moved_folders)
        self.stat_cost = cost if self.last_poll is None else 0.8 * self.stat_cost + 0.2 * cost
        # What may be saved up must cover what the sweep waits for (see step), however many folders.
        self.budget.cap = max(self.base_cap, 2 * (self.stat_cost + self.share * self.interval))
        self.budget.charge(cost)
        if changed:
            _, cost = self.meter.run(lambda: self.examine(changed))
            self.budget.charge(cost)  # in proportion to the changes: delays the sweep, not the polls

    def _moved_folders(self) -> list[str]:
        if self.folder_key(self.root) is None:
            return []  # the watch dir is missing: nothing in it is taken as deleted (RootWatch reports it)
        changed: list[str] = []
        gone: list[str] = []
        key_of, folders = self.folder_key, self.folders  # once per folder per poll: every lookup counts
        for rel, folder in list(folders.items()):
            key = key_of(folder.full)
            if key is None:
                gone.append(rel)
            elif key != folder.key:
                folder.key, folder.again = key, True
                changed.append(rel)
            elif folder.again:
                folder.again = False
                changed.append(rel)
        if gone and key_of(self.root) is None:
            # The watch dir went away meanwhile (renamed, unmounted): its folders are not gone one
            # by one. RootWatch reports it; the changed ones are listed again when it is back.
            for rel in changed:
                folders[rel].again = True
            return []
        for rel in gone:
            if rel in folders:  # else forgotten with a folder above it
                self._folder_gone(rel)
        return changed

    def _folder_gone(self, rel: str) -> None:
        self.emit(DirDeletedEvent(self.full(rel)))
        self.children.get(os.path.dirname(rel), set()).discard(rel)
        stack = [rel]
        while stack:
            gone = stack.pop()
            self.folders.pop(gone, None)
            self.sent.pop(gone, None)
            stack += self.children.pop(gone, ())

    # -- comparing folders with the database -------------------------------------------------

    def examine(self, folders: list[str]) -> int:
        """List each folder, compare it with its stored keys, and send what differs (once); the
        number of files listed."""
        seen = 0
        created: dict[str, StatKey] = {}
        modified: dict[str, StatKey] = {}
        gone: dict[str, StatKey | None] = {}
        for rel in folders:
            folder = self.folders.get(rel)
            stored = self.stored(rel) if folder is not None else None
            if folder is None or stored is None:
                if folder is not None:
                    folder.again = True  # no database yet: look again next time
                continue
            subfolders: list[str] = []
            unreadable: list[tuple[str, str]] = []
            listing = listed(self.top, self.matcher, rel, subfolders, unreadable)
            diff = diff_listing(stored, listing, unreadable)  # leaves the gone in stored
            if self.folder_key(folder.full) is None:
                # Gone while (or before) it was listed, or the watch dir with it: an empty listing
                # is no evidence that its files were deleted. The poll sends the folder's deletion
                # (the writer reconciles its subtree), and nothing while the watch dir is away.
                continue
            if unreadable:
                folder.unreadable = True  # out of sight is not deleted: nothing sent
                continue
            seen += diff.seen
            self._compare_subfolders(rel, subfolders)
            if folder.unreadable:
                # Listed again after a failure (its permissions changed): as with inotify's event
                # for that change, the writer reconciles its subtree, which judges its files and
                # drops the rejection recorded for the folder itself.
                folder.unreadable = False
                self.sent.pop(rel, None)
                self.emit(DirAttribEvent(folder.full))
                continue
            before = self.sent.pop(rel, {})
            now: dict[str, StatKey | None] = {}
            for path, _regular, was_stored in diff.changed:
                key = _file_key(self.full(path))
                if key is None:
                    continue  # gone meanwhile: its folder's next listing says so
                now[path] = key
                if before.get(path, _ABSENT) != key:
                    (modified if was_stored else created)[path] = key
            for path in diff.gone:
                now[path] = None
                if before.get(path, _ABSENT) is not None:
                    gone[path] = stored[path]
            if now:
                self.sent[rel] = now
        self._send(created, modified, gone)
        return seen

    def _send(self, created: dict[str, StatKey], modified: dict[str, StatKey], gone: dict[str, StatKey | None]) -> None:
        # A file gone from one name and found under another with the same (size, mtime, inode)
        # was renamed: one 'moved', which the writer judges at once, instead of a new file to settle.
        was_at = {key: path for path, key in gone.items() if key is not None}
        for found in (created, modified):
            for path, key in list(found.items()):
                src = was_at.pop(key, None)
                if src is not None:
                    del gone[src], found[path]
                    self.emit(FileMovedEvent(self.full(src), self.full(path)))
        for path in gone:
            self.emit(FileDeletedEvent(self.full(path)))
        for path in created:
            self.emit(FileCreatedEvent(self.full(path)))
        for path in modified:
            self.emit(FileModifiedEvent(self.full(path)))

    def _compare_subfolders(self, rel: str, listed_now: list[str]) -> None:
        known = set(self.children.get(rel, ()))
        for sub in listed_now:
            if sub not in known:
                self.emit(DirCreatedEvent(self.full(sub)))  # the writer reconciles its subtree
                self.discover(sub)
        for sub in known.difference(listed_now):
            self._folder_gone(sub)

    # -- the sweep ---------------------------------------------------------------------------

    def sweep_step(self) -> None:
        """Compare the next folders of the sweep, about :data:`SWEEP_STEP_FILES` files' worth
        (starting a sweep when none is under way, stopping where one ends)."""
        seen = 0
        while seen < SWEEP_STEP_FILES:
            if not self.to_sweep:
                self.to_sweep = sorted(self.folders, reverse=True)  # taken from the end: the top folder first
                self.sweep_began = self.clock()
            rel = self.to_sweep.pop()
            seen += self.examine([rel]) if rel in self.folders else 0
            if not self.to_sweep:
                self.sweep_seconds, self.last_sweep_at = self.clock() - self.sweep_began, self.wall_clock()
                self.next_sweep = self.sweep_began + SWEEP_EVERY * self.interval
                return
