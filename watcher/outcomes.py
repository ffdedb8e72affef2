"""What the layers above share: a file's stat key, the outcome of judging a file, and how a path
is written in the database, the log and the reports.

The bottom layer: the judge makes outcomes, the store writes them, the tree walk compares stat
keys, and none of them needs the others to know these shapes.
"""

from __future__ import annotations

import os
from typing import NamedTuple

from watcher.resultfile import Problem

#: A file's version without reading it, ``(size, mtime_ns, inode)``, as the database returns it.
StatKey = tuple[int, int, int]


class FileStat(NamedTuple):
    """A :data:`StatKey` with names. A tuple, so it compares equal to the plain keys the database
    hands back (no object per stored row)."""

    size: int
    mtime_ns: int
    inode: int

    @classmethod
    def of(cls, s: os.stat_result) -> FileStat:
        """Build from an ``os.stat_result``."""
        return cls(s.st_size, s.st_mtime_ns, s.st_ino)


def identity_stat(full: str) -> os.stat_result:
    """The stat that identifies a path's version: the link target's when it resolves, else its own.

    The tree walk and the judge both use this, so an unchanged file compares equal.
    """
    try:
        return os.stat(full)
    except OSError:
        return os.lstat(full)


# Named tuples rather than dataclasses: a bulk scan pickles one per file from the worker processes.


class Scored(NamedTuple):
    """A valid file and its chosen operating point; ``curve`` is the drawing's stored form
    (:func:`watcher.scoring.curve_bytes`); ``points`` every operating point of the file (the
    primary target's first, then the extra targets', then the pickers') as the JSON array the
    ``point_sets`` table stores, each point a :class:`watcher.scoring.Point` as an array, or ""
    when the primary point without precision or FPR is all there is (the results row says it).
    Text: made in the worker process, it crosses to the writer as one string (pickling a named
    tuple per point cost a bulk scan more than storing them)."""

    path: str
    stat: FileStat
    sha256: str
    model_id: str
    issuer: str
    experiment_date: str
    experiment_at: str
    optimal_threshold: float
    closest_recall_value: float
    distance: float
    target_met: bool
    target_recall: float
    n_points: int
    curve: bytes = b""
    points: str = ""


class Rejected(NamedTuple):
    """An invalid file and every reason. ``stat``/``sha256`` are ``None`` when it could not be read."""

    path: str
    stat: FileStat | None
    sha256: str | None
    errors: tuple[Problem, ...]


class Unchanged(NamedTuple):
    """The content hashes to what is stored and was judged under the current rules: nothing to redo."""

    path: str
    stat: FileStat
    sha256: str


class Removed(NamedTuple):
    """The file is gone (or never was a file we track)."""

    path: str


Outcome = Scored | Rejected | Unchanged | Removed

#: One job of a bulk scan: (relative path, the stored hash it may match, ``regular``: a listing
#: just showed a regular file there). A plain tuple: jobs are pickled to worker processes.
Job = tuple[str, str | None, bool]


def stored_path(rel: str) -> str:
    """How a relative path is written in the database, the log and the reports: as it is, unless
    the name is not valid UTF-8. The OS then hands Python its undecodable bytes as lone
    surrogates, which no UTF-8 text (SQLite's, JSON's) can hold; they are written as ``\\xNN``.

    Such a file is rejected (see :data:`BAD_NAME`): its stored form does not name it on disk, and
    a file whose name spells out the same escape would share its row.
    """
    if rel.isascii():  # nearly every path: a single C-level check
        return rel
    try:
        raw = rel.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that no name on disk decodes to; escaped all the same
        return rel.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


#: The reason given for a file whose name is not valid UTF-8 (:func:`stored_path`).
BAD_NAME = "file name is not valid UTF-8 (shown with its undecodable bytes as \\xNN); rename the file"
