"""Which paths under the watch dir are results files, a stat-only walk that lists them, and the
comparison of a listing with the stat keys stored for it.

A path is tracked when its file name matches one of ``patterns`` and no component of its path
(relative to the watch dir) matches ``ignore_patterns`` (hidden names, editor and temp files).
Relative paths are always ``/``-separated. Symlinked directories are never descended into, so a
walk cannot leave the tree or loop.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from fnmatch import translate
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from watcher.outcomes import StatKey, identity_stat, stored_path
from watcher.reports.formats import FILE_NAMES, POINT_FILE_NAMES

if TYPE_CHECKING:
    from watcher.config import Settings


def _alternatives(patterns: tuple[str, ...]) -> str:
    return "|".join(f"(?:{translate(p)})" for p in patterns) or "(?!)"


def _compile(patterns: tuple[str, ...]) -> re.Pattern[str]:
    # One regex for all patterns: matching runs once per path component of every file.
    return re.compile(_alternatives(patterns))


def _wanted_and_not_ignored(patterns: tuple[str, ...], ignore_patterns: tuple[str, ...]) -> re.Pattern[str]:
    # The file name's two rules in one match (once per file of every walk).
    return re.compile(f"(?!{_alternatives(ignore_patterns)})(?:{_alternatives(patterns)})")


#: Beside the database: its write-ahead log, shared memory, rollback journal and the daemon's lock.
DB_COMPANIONS = ("-wal", "-shm", "-journal", ".lock", ".health")


def own_outputs(settings: Settings) -> frozenset[str]:
    """What watcher itself writes inside the watch dir, relative to it: the database with its
    companion files, and the report dir (the whole folder; only the report files themselves
    when the reports are written into the watch dir's top). Empty when both live outside."""
    root = os.path.realpath(settings.watch_dir)
    db = os.path.realpath(settings.db_path)
    reports = os.path.realpath(settings.report_dir)
    paths = [db + suffix for suffix in ("", *DB_COMPANIONS)]
    names = [*FILE_NAMES.values(), *POINT_FILE_NAMES.values()]
    paths += [os.path.join(reports, name) for name in names] if reports == root else [reports]
    rels = (relpath(Path(root), p) for p in paths)
    return frozenset(rel for rel in rels if rel)


@dataclass(frozen=True)
class Matcher:
    """Decides whether a relative path is tracked (glob patterns, case-sensitive).

    ``own``: relative paths of watcher's own outputs (:func:`own_outputs`), never tracked nor
    descended into, whatever the patterns say: its own report or database is never an input.
    """

    patterns: tuple[str, ...]
    ignore_patterns: tuple[str, ...]
    recursive: bool = True
    own: frozenset[str] = frozenset()
    _ignored: re.Pattern[str] = field(init=False, repr=False, compare=False)
    _tracked_name: re.Pattern[str] = field(init=False, repr=False, compare=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> Matcher:
        """The path filter the settings describe."""
        return cls(settings.patterns, settings.ignore_patterns, settings.recursive, own_outputs(settings))

    def __post_init__(self) -> None:
        object.__setattr__(self, "_ignored", _compile(self.ignore_patterns))
        object.__setattr__(self, "_tracked_name", _wanted_and_not_ignored(self.patterns, self.ignore_patterns))

    def ignored_part(self, name: str) -> bool:
        """True when a single path component is hidden or a temp name."""
        return self._ignored.match(name) is not None

    def tracks(self, rel: str) -> bool:
        """True when the relative path ``rel`` names a results file watcher should judge."""
        parts = rel.split("/")
        if not rel or (not self.recursive and len(parts) > 1):
            return False
        if any(self.ignored_part(part) for part in parts[:-1]):
            return False
        if self.own and self.owned(rel):
            return False
        return self.tracks_name(parts[-1])

    def owned(self, rel: str) -> bool:
        """True when ``rel`` is one of watcher's own outputs or lies in its report folder."""
        if rel in self.own:
            return True
        parts = rel.split("/")
        return any("/".join(parts[:i]) in self.own for i in range(1, len(parts)))

    def tracks_name(self, name: str) -> bool:
        """:meth:`tracks` for a file whose folder is already known to be watched (the walk's case):
        the name matches a pattern and no ignore pattern."""
        return self._tracked_name.match(name) is not None

    def descends(self, rel_dir: str) -> bool:
        """True when a directory's content may hold tracked files."""
        if not rel_dir:
            return True
        if self.own and self.owned(rel_dir):
            return False
        return self.recursive and not any(self.ignored_part(p) for p in rel_dir.split("/"))


def relpath(root: Path, path: str | os.PathLike[str]) -> str | None:
    """``path`` relative to ``root``, ``/``-separated; ``None`` when outside the root."""
    top, full = os.fspath(root), os.fspath(path)
    # The usual case, once per filesystem event: ``path`` is ``root`` joined with a clean
    # relative path (so watchdog builds them). A prefix check costs a twentieth of relpath().
    if full.startswith(top) and full[len(top) : len(top) + 1] == os.sep:
        rest = full[len(top) + 1 :]
        if rest and os.path.normpath(rest) == rest and rest != os.pardir and not rest.startswith(os.pardir + os.sep):
            return rest.replace(os.sep, "/")
    rel = os.path.relpath(full, top)
    if rel == os.curdir:
        return ""
    if rel == os.pardir or rel.startswith(os.pardir + os.sep):
        return None
    return rel.replace(os.sep, "/")


def walk(
    root: Path,
    matcher: Matcher,
    under: str = "",
    subfolders: list[str] | None = None,
    unreadable: list[tuple[str, str]] | None = None,
) -> Iterator[tuple[str, os.DirEntry[str]]]:
    """Yield ``(relative path, directory entry)`` for every tracked entry at or below
    ``root / under``; :func:`entry_stat_key` gives an entry's stat key when it is needed.

    ``under`` must itself be a folder the matcher descends into. Nothing is opened, and only
    folders are listed: a file is stat'ed only when its key is asked for (a first scan of a
    tree never needs it). A folder that cannot be listed (no permission, a path too long) is
    appended to ``unreadable`` as ``(relative path, reason)``; one that vanished meanwhile is
    not. With ``subfolders``, the folders directly below ``under`` are appended to it instead
    of walked (their subtrees can then be walked elsewhere, in parallel).
    """
    own = matcher.own
    stack = [under]
    while stack:
        rel_dir = stack.pop()
        try:
            entries = list(os.scandir(os.path.join(root, rel_dir) if rel_dir else root))
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as exc:
            if unreadable is not None:
                unreadable.append((rel_dir, exc.strerror or str(exc)))
            continue
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                continue
            if is_dir:
                if matcher.descends(rel):
                    (subfolders if subfolders is not None and rel_dir == under else stack).append(rel)
            elif matcher.tracks_name(entry.name) and not (own and rel in own):
                yield rel, entry


def entry_stat_key(entry: os.DirEntry[str]) -> StatKey | None:
    """An entry's :data:`~watcher.outcomes.StatKey`, as :func:`~watcher.outcomes.identity_stat`
    sees it; ``None`` once it is gone."""
    try:
        s = entry.stat() if not entry.is_symlink() else identity_stat(entry.path)
    except OSError:
        return None
    return (s.st_size, s.st_mtime_ns, s.st_ino)


_ABSENT: Any = object()


class Diff(NamedTuple):
    """A listing compared with the stored stat keys, before ``skip`` and the stored hashes apply."""

    seen: int  #: files listed
    changed: list[tuple[str, bool, bool]]  #: (path, regular file, stored): new, or not as stored
    gone: list[str]  #: stored, not listed (nor in or below a folder that could not be listed)
    unreadable: tuple[tuple[str, str], ...] = ()  #: (folder, reason): folders that could not be listed
    links: tuple[str, ...] = ()  #: the symbolic links listed (for the daemon's :mod:`watcher.links`)


#: One listed file: (relative path, its directory entry, the listing showed a regular file).
Listed = tuple[str, os.DirEntry[str], bool]


def listed(
    root: Path,
    matcher: Matcher,
    under: str,
    subfolders: list[str] | None = None,
    unreadable: list[tuple[str, str]] | None = None,
) -> Iterator[Listed]:
    """:func:`walk`, with whether the listing showed a regular file (its d_type: such a file is
    later opened without another ``lstat``)."""
    return (
        (rel, entry, entry.is_file(follow_symlinks=False))
        for rel, entry in walk(root, matcher, under, subfolders, unreadable)
    )


def diff_listing(
    stored: dict[str, StatKey | None], listing: Iterable[Listed], unreadable: list[tuple[str, str]] | None = None
) -> Diff:
    """Compare a walk's ``(path, entry, regular)`` with ``stored`` (:meth:`watcher.store.Store.stat_keys`;
    emptied on the way). A file is stat'ed only when a key is stored for it, so a first scan
    never stats one. ``changed`` holds paths as listed, ``gone`` as stored
    (:func:`watcher.outcomes.stored_path`). ``unreadable`` is the list the walk fills (see
    :func:`walk`): what is stored at or below such a folder is not gone, only out of sight."""
    changed: list[tuple[str, bool, bool]] = []
    links: list[str] = []
    seen = 0
    for rel, entry, regular in listing:
        seen += 1
        if not regular and entry.is_symlink():  # the entry's type, as listed: no system call
            links.append(rel)
        key = stored.pop(rel, _ABSENT)  # popped: what is left after the walk is gone from disk
        if key is _ABSENT and not rel.isascii():
            key = stored.pop(stored_path(rel), _ABSENT)  # a name stored in another form
        if key is _ABSENT:
            changed.append((rel, regular, False))
        elif key is None or key != entry_stat_key(entry):
            changed.append((rel, regular, True))
    folders = [stored_path(folder) for folder, _ in unreadable or ()]
    gone = [p for p in stored if not any(p == f or p.startswith(f + "/") for f in folders)] if folders else list(stored)
    return Diff(seen, changed, gone, tuple(unreadable or ()), tuple(links))
