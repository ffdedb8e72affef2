"""One file in, one outcome out: stat, read safely, hash, validate, score.

:func:`judge` never raises and never blocks: a FIFO or device is never opened, a file over
``max_file_bytes`` is never read, a symlink is followed only when it stays inside the watch tree.
It runs in worker processes during a bulk scan, so its inputs and outputs are small and picklable.
"""

from __future__ import annotations

import functools
import hashlib
import os
import stat as st
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Concatenate, ParamSpec, TypeVar

from watcher.outcomes import (
    BAD_NAME,
    FileStat,
    Job,
    Outcome,
    Rejected,
    Removed,
    Scored,
    Unchanged,
    identity_stat,
    stored_path,
)
from watcher.resultfile import RULES_VERSION, Problem, validate_bytes
from watcher.scoring import (
    OPERATING_POINTS,
    OperatingPoint,
    Picker,
    Point,
    Score,
    curve_bytes,
    drawn_curve,
    operating_points,
    scores_at,
)

if TYPE_CHECKING:
    from watcher.config import Settings


@dataclass(frozen=True, slots=True)
class JudgeOptions:
    """The settings :func:`judge` needs; small, so it pickles cheaply to worker processes."""

    root: Path
    target_recall: float
    max_file_bytes: int
    max_errors: int = 50
    follow_symlinks: bool = False
    operating_point: OperatingPoint = "nearest"
    extra_targets: tuple[float, ...] = ()
    extra_pickers: tuple[Picker, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> JudgeOptions:
        """The part of the settings that judging a file needs."""
        return cls(
            root=settings.watch_dir,
            target_recall=settings.target_recall,
            max_file_bytes=settings.max_file_bytes,
            max_errors=settings.max_errors_per_file,
            follow_symlinks=settings.follow_symlinks,
            operating_point=settings.operating_point,
            extra_targets=settings.extra_targets,
            extra_pickers=settings.extra_pickers,
        )

    @property
    def rules_version(self) -> int:
        """:func:`rules_version` of these options."""
        return rules_version(self.operating_point, self.extra_targets, self.extra_pickers)


def rules_version(
    operating_point: OperatingPoint = "nearest", extra_targets: Sequence[float] = (), extra_pickers: Sequence[str] = ()
) -> int:
    """The ``rules_version`` stored with each outcome, which the store compares with its own to
    tell a current outcome from one to judge again: the validation rules'
    :data:`~watcher.resultfile.RULES_VERSION`, plus 1000 times the rule's place in
    :data:`~watcher.scoring.OPERATING_POINTS` (``nearest`` 0, ``at_least`` 1, ``at_most`` 2). So a
    database judged under one rule has every outcome judged again under another, as under another
    target, and the default rule keeps the version it always had.

    With extra targets or pickers, 10,000 times a CRC-32 of them (in order: a point's place is
    stored) is added: a change of either judges every file again too (the ``operating_points``
    rows of every file follow it), and without them the version is the one it always was."""
    version = RULES_VERSION + 1000 * OPERATING_POINTS.index(operating_point)
    if extra_targets or extra_pickers:
        key = repr(([float(t) for t in extra_targets], list(extra_pickers))).encode()
        version += 10_000 * (zlib.crc32(key) + 1)
    return version


#: JSON's literals for a point's ``met`` (None for a picker's point).
_JSON_LITERALS = {None: "null", True: "true", False: "false"}


def _points_json(points: Sequence[Point]) -> str:
    """A file's points as ``point_sets`` stores them: a compact JSON array of arrays (a scan makes
    one per file). What ``json.dumps(points, separators=(",", ":"))`` gives, in a third less time:
    kinds are plain names, numbers finite (validation refuses others) and written as their repr,
    as the encoder writes them (a test compares both)."""
    return (
        "["
        + ",".join([
            f'["{k}",{"null" if t is None else repr(t)},{x!r},{r!r},{"null" if p is None else repr(p)},'
            f'{"null" if f is None else repr(f)},{_JSON_LITERALS[m]}]'
            for k, t, x, r, p, f, m in points
        ])
        + "]"
    )  # fmt: skip


@functools.lru_cache(maxsize=16)
def _recall_template(targets: tuple[float, ...]) -> str:
    """The ``point_sets`` text of recall points at ``targets``, their cells left to fill (threshold
    and recall as ``%r``, met as ``%s``): the targets' own text is made once."""
    return "[" + ",".join(f'["recall",{t!r},%r,%r,null,null,%s]' for t in targets) + "]"


def _recall_points_json(targets: tuple[float, ...], scores: Sequence[Score]) -> str:
    """:func:`_points_json` of the recall points of ``scores`` (one per target, no precision or
    FPR): the same text (a test compares them), filled into one template."""
    cells: list[object] = []
    for s in scores:
        cells += (s.threshold, s.recall, "true" if s.target_met else "false")
    return _recall_template(targets) % tuple(cells)


#: The stored distance is rounded: |0.8 - 0.85| is 0.05 to whoever reads the database, not the float
#: subtraction's 0.04999999999999993. (Scoring compares the exact distances.)
DISTANCE_DECIMALS = 12


def _reject(path: str, message: str, stat: FileStat | None = None) -> Rejected:
    return Rejected(path, stat, None, (Problem(None, message),))


def _bad_name(rel: str, shown: str, opts: JudgeOptions) -> Rejected | Removed:
    # Rejected without being read, under its stored form, with its stat key: a later reconcile
    # then finds it unchanged instead of judging it again.
    try:
        key = FileStat.of(identity_stat(os.path.join(opts.root, rel)))
    except OSError:
        return Removed(shown)
    return _reject(shown, BAD_NAME, key)


def _inside(path: str, root: Path) -> bool:
    real_root = os.path.realpath(root)
    return os.path.commonpath([real_root, os.path.realpath(path)]) == real_root


#: :func:`judge_many` reads at most about this many bytes ahead of parsing.
READ_AHEAD_BYTES = 4 << 20


class _Content:
    """A file's bytes and the stat of the open file they were read from."""

    __slots__ = ("raw", "stat")

    def __init__(self, raw: bytes, stat: FileStat) -> None:
        self.raw = raw
        self.stat = stat


def judge(rel: str, opts: JudgeOptions, known_sha: str | None = None, regular: bool = False) -> Outcome:
    """Judge the file at ``opts.root / rel``. Never raises.

    ``known_sha`` is the stored hash of this path's last outcome, given only when that outcome was
    made under the current target and rules; an identical file then yields :class:`Unchanged`
    without being parsed again. ``regular`` says a directory listing just showed a regular file
    at this path (not a link, FIFO or device), so it is opened without a separate ``lstat``.
    A file whose name is not valid UTF-8 is rejected unread, under :func:`stored_path`.
    """
    content = _guarded(_read, rel, opts, regular)
    if not isinstance(content, _Content):
        return content
    return _guarded(_verdict, rel, opts, content, known_sha)


def judge_many(jobs: Sequence[Job], opts: JudgeOptions) -> list[Outcome]:
    """:func:`judge` for each job, outcomes in order; reads run ahead of parsing.

    Files are read a few MiB ahead (:data:`READ_AHEAD_BYTES`), then parsed one after another:
    system calls between parses cost the parser its warm CPU caches.
    """
    out: list[Outcome] = []
    ahead: list[tuple[int, str, _Content, str | None]] = []
    ahead_bytes = 0
    for rel, known_sha, regular in jobs:
        content = _guarded(_read, rel, opts, regular)
        if not isinstance(content, _Content):
            out.append(content)
            continue
        out.append(Removed(rel))  # a placeholder, replaced below
        ahead.append((len(out) - 1, rel, content, known_sha))
        ahead_bytes += len(content.raw)
        if ahead_bytes >= READ_AHEAD_BYTES:
            _parse_ahead(ahead, out, opts)
            ahead_bytes = 0
    _parse_ahead(ahead, out, opts)
    return out


def _parse_ahead(ahead: list[tuple[int, str, _Content, str | None]], out: list[Outcome], opts: JudgeOptions) -> None:
    for i, rel, content, known_sha in ahead:
        out[i] = _guarded(_verdict, rel, opts, content, known_sha)
    ahead.clear()


_P = ParamSpec("_P")
_T = TypeVar("_T")


def _guarded(step: Callable[Concatenate[str, _P], _T], rel: str, *args: _P.args, **kwargs: _P.kwargs) -> _T | Rejected:
    try:
        return step(rel, *args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - one bad file must never stop the service
        return _reject(stored_path(rel), f"internal error while judging the file: {type(exc).__name__}: {exc}")


def _read(rel: str, opts: JudgeOptions, regular: bool) -> Outcome | _Content:
    if not rel.isascii() and (shown := stored_path(rel)) != rel:
        return _bad_name(rel, shown, opts)
    full = os.path.join(opts.root, rel)
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
    lst: os.stat_result | None = None
    if regular:
        flags |= os.O_NOFOLLOW
    else:
        try:
            lst = os.lstat(full)
        except (FileNotFoundError, NotADirectoryError):
            return Removed(rel)
        except OSError as exc:
            return _reject(rel, f"cannot stat the file: {exc.strerror}")
        if st.S_ISLNK(lst.st_mode):
            ident = FileStat.of(identity_stat(full))
            if not os.path.exists(full):
                return _reject(rel, "dangling symbolic link: its target does not exist", ident)
            if not opts.follow_symlinks and not _inside(full, opts.root):
                return _reject(rel, "symbolic link points outside the watch directory; not followed", ident)
        else:
            flags |= os.O_NOFOLLOW
            if st.S_ISDIR(lst.st_mode):
                return Removed(rel)
    try:
        # O_NONBLOCK: a FIFO opened for reading must never block the service.
        fd = os.open(full, flags)
    except (FileNotFoundError, NotADirectoryError):
        return Removed(rel)
    except OSError as exc:
        if regular:  # replaced since the listing (by a link, say), or unreadable: look closer
            return _read(rel, opts, regular=False)
        return _reject(rel, f"cannot open the file: {exc.strerror}", FileStat.of(lst) if lst else None)
    try:
        fst = os.fstat(fd)
        fstat = FileStat.of(fst)
        if st.S_ISDIR(fst.st_mode):
            return Removed(rel)
        if not st.S_ISREG(fst.st_mode):
            return _reject(rel, f"not a regular file ({_kind(fst.st_mode)}); not read", fstat)
        if fst.st_size > opts.max_file_bytes:
            return _reject(rel, f"file is {fst.st_size} bytes, over max_file_bytes ({opts.max_file_bytes})", fstat)
        raw = _read_at_most(fd, opts.max_file_bytes + 1, fst.st_size)
    except OSError as exc:
        return _reject(rel, f"cannot read the file: {exc.strerror}", FileStat.of(lst) if lst else None)
    finally:
        os.close(fd)
    if len(raw) > opts.max_file_bytes:  # grew while we read it
        return _reject(rel, f"file is over max_file_bytes ({opts.max_file_bytes})", fstat)
    return _Content(raw, fstat)


def _verdict(rel: str, opts: JudgeOptions, content: _Content, known_sha: str | None) -> Outcome:
    sha = hashlib.sha256(content.raw).hexdigest()
    if known_sha == sha:
        return Unchanged(rel, content.stat, sha)
    return judge_bytes(rel, content.raw, content.stat, sha, opts)


def judge_bytes(rel: str, raw: bytes, fstat: FileStat, sha: str, opts: JudgeOptions) -> Scored | Rejected:
    """Validate and score content already read."""
    result = validate_bytes(raw, opts.max_errors)
    if isinstance(result, list):
        return Rejected(rel, fstat, sha, tuple(result))
    # Every target in one pass over the arrays; the primary one (``results``) first.
    targets = (opts.target_recall, *opts.extra_targets)
    if result.precision_arr is None and result.fpr_arr is None:  # no picker can answer: recall points alone
        scores = scores_at(result.threshold_arr, result.recall_arr, targets, opts.operating_point)
        # Only what results cannot say: nothing when the primary point is all.
        points = _recall_points_json(targets, scores) if opts.extra_targets else ""
    else:  # the points carry precision or FPR: stored, even the primary one alone
        scores, found = operating_points(
            result.threshold_arr, result.recall_arr, targets, opts.operating_point, opts.extra_pickers,
            result.precision_arr, result.fpr_arr,
        )  # fmt: skip
        points = _points_json(found)
    score = scores[0]
    thresholds, recalls = drawn_curve(result.threshold_arr, result.recall_arr, score.index)
    return Scored(
        path=rel,
        stat=fstat,
        sha256=sha,
        model_id=result.model_id,
        issuer=result.issuer,
        experiment_date=result.experiment_date,
        experiment_at=result.experiment_at,
        optimal_threshold=score.threshold,
        closest_recall_value=score.recall,
        distance=round(score.distance, DISTANCE_DECIMALS),
        target_met=score.target_met,
        target_recall=opts.target_recall,
        n_points=len(result.threshold_arr),
        curve=curve_bytes(thresholds, recalls),
        points=points,
    )


def _read_at_most(fd: int, limit: int, expected: int) -> bytes:
    # One read() when the file holds the ``expected`` size that fstat gave: asking for a byte more
    # and getting exactly ``expected`` back means the end was reached (a second read() to see
    # the end costs as much again). Anything else (a file that grew or shrank, a short read from a
    # network filesystem) reads on until the end.
    first = os.read(fd, min(limit, expected + 1))
    if len(first) == expected:
        return first
    chunks = [first]
    remaining = limit - len(first)
    while remaining > 0:
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _kind(mode: int) -> str:
    if st.S_ISFIFO(mode):
        return "a FIFO"
    if st.S_ISCHR(mode) or st.S_ISBLK(mode):
        return "a device"
    if st.S_ISSOCK(mode):
        return "a socket"
    return "not a file"
