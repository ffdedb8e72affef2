"""Symbolic links inside the watch dir, by the file they point to: the daemon's index that makes an
event on a file reach the links to it as well.

A link that stays inside the tree is judged as its target (:mod:`watcher.judge`), but the kernel's
events name the target, never the link: without this index, under inotify a link kept its target's
old row (or its row when the target was deleted) until the next full reconcile. The writer fills
the index from every reconcile's listing (:attr:`watcher.tree.Diff.links`) and from each path it
judges, and gives the links of a path each event it gets for that path (:mod:`watcher.writer`).

Only links whose final target (``realpath``, through chains of links) lies inside the watch dir
are kept: nothing outside is watched, so no event could name their target.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from watcher.tree import relpath

_NONE: frozenset[str] = frozenset()


def link_target(root: Path, rel: str) -> str | None:
    """The path inside ``root`` that the link at ``rel`` finally points to (relative, as the tree
    names it); ``None`` when ``rel`` is not a link, or points outside (or at the watch dir itself)."""
    full = os.path.join(root, rel)
    if not os.path.islink(full):
        return None
    target = relpath(Path(os.path.realpath(root)), os.path.realpath(full))
    return target or None


def _at_or_below(rel: str, folder: str) -> bool:
    return not folder or rel == folder or rel.startswith(folder + "/")


class Links:
    """Which links point at which path, below ``root``. Not thread-safe: the writer thread owns it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.target_of: dict[str, str] = {}  # link -> its target
        self.links_to: dict[str, set[str]] = {}  # target -> the links to it

    def to(self, rel: str) -> frozenset[str] | set[str]:
        """The links that point at ``rel`` (empty, at the cost of a lookup, for nearly every path)."""
        return self.links_to.get(rel, _NONE)

    def into(self, folder: str) -> list[str]:
        """The links outside ``folder`` whose target is at or below it (a folder moved or appeared:
        its files changed without an event each)."""
        return [
            link
            for link, target in self.target_of.items()
            if _at_or_below(target, folder) and not _at_or_below(link, folder)
        ]

    def note(self, rel: str) -> None:
        """Look at ``rel`` again: recorded as a link to its target now, or forgotten as one."""
        self._forget(rel)
        target = link_target(self.root, rel)
        if target is not None and target != rel:
            self.target_of[rel] = target
            self.links_to.setdefault(target, set()).add(rel)

    def listed(self, under: str, links: Iterable[str]) -> None:
        """A listing of ``under`` ('' for the whole tree) found ``links``: they replace the links
        recorded at or below it."""
        for rel in [rel for rel in self.target_of if _at_or_below(rel, under)]:
            self._forget(rel)
        for rel in links:
            self.note(rel)

    def _forget(self, rel: str) -> None:
        target = self.target_of.pop(rel, None)
        if target is None:
            return
        links = self.links_to[target]
        links.discard(rel)
        if not links:
            del self.links_to[target]
