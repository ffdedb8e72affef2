"""The invariant, stated once and checked after every reliability scenario: an independent oracle.

After the daemon settles, what the database holds is what this module computes from the tree by
itself, from the documents (docs/configuration.md "Which files count", docs/results-file.md
"Scoring", docs/how-it-works.md "The database" and "Guarantees"), not from the daemon's code:

* **Which files count.** It lists the tree itself (:func:`os.scandir`, symbolic links to folders never
  descended into): names matching ``patterns`` (``*.json``), in subfolders when ``recursive``,
  unless a path component matches ``ignore_patterns`` (hidden names, ``*~``, ``*.tmp``, ``*.part``,
  ``*.swp``, ``*.swx``, ``*.crdownload``); the database (with ``-wal``, ``-shm``, ``-journal``,
  ``.lock``) and the report folder are never inputs.
* **Every file in exactly one table, with every stored column.** It reads each file (never opening
  a FIFO or device for a blocking read, never following a link out of the tree) and computes its
  row: for a valid file every column of ``results`` (model_id in lowercase, issuer and
  experiment_date as written, experiment_at the UTC instant, the operating point by the scoring
  rule of the docs re-implemented here, distance rounded to 12 decimals, target_met, target_recall,
  n_points, size, mtime_ns, inode, sha256, the drawn curve); for an invalid file its ``errors``
  exactly as ``watcher validate --format json`` gives them, with size, mtime_ns, inode and sha256.
  Whether a file's content is valid, and its reasons, come from :mod:`watcher.resultfile` (shown
  right against hand-written expectations in ``tests/core/test_resultfile.py``); everything else
  (the walk, the special files, the scoring, the columns) is computed here.
* **Folders that cannot be listed** are a row of ``rejections`` under their own path ("folder
  cannot be read: <reason>"); what was stored below them stays (out of sight, not gone).
* **Nothing else is stored**; the ``report`` view is, per model_id, the row of its latest file
  (experiment instant, then the greatest path).
* **History.** Every current path's latest ``history`` entry is its current outcome (``scored``
  with its sha256 and model_id, or ``rejected``); every path ever recorded and no longer in the
  tree has ``removed`` as its latest entry.

Run it as the user the daemon runs as: permissions decide what can be listed and read.
"""

from __future__ import annotations

import fnmatch
import hashlib
import itertools
import json
import math
import os
import re
import sqlite3
import stat as st
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Protocol

from watcher.resultfile import validate_bytes

#: The documented defaults (docs/configuration.md, "Every key").
PATTERNS = ("*.json",)
IGNORE_PATTERNS = (".*", "*~", "*.tmp", "*.part", "*.swp", "*.swx", "*.crdownload")
TARGET_RECALL = 0.85
MAX_FILE_BYTES = 64 * 1024 * 1024
MAX_ERRORS = 50
#: Beside the database: its write-ahead log, shared memory, rollback journal and the daemon's lock.
DB_COMPANIONS = ("", "-wal", "-shm", "-journal", ".lock")
#: The scoring rule's tie tolerance and the stored distance's decimals (docs/results-file.md,
#: docs/how-it-works.md).
TOLERANCE = 1e-9
DISTANCE_DECIMALS = 12
#: The drawn curve (docs/reports.md): at most 32 evenly spread points plus the chosen one, each
#: point two bytes (x, y) in a 255 x 255 box, y pointing down.
CURVE_POINTS = 32
CURVE_STEPS = 255

BAD_NAME = "file name is not valid UTF-8 (shown with its undecodable bytes as \\xNN); rename the file"


class _Rules(Protocol):
    """What a :class:`watcher.tree.Matcher` carries (read as data, never asked to decide)."""

    patterns: tuple[str, ...]
    ignore_patterns: tuple[str, ...]
    recursive: bool
    own: frozenset[str]


@dataclass(frozen=True)
class Expected:
    """What the database must hold for one path: ``row`` the columns of ``results`` (valid) or of
    ``rejections`` (invalid; ``errors`` a list of ``{field, message}``)."""

    valid: bool
    row: dict[str, Any]


def violations(
    watch_dir: Path,
    db: Path,
    max_file_bytes: int = MAX_FILE_BYTES,
    matcher: _Rules | None = None,
    target_recall: float = TARGET_RECALL,
) -> list[str]:
    """Every way the database disagrees with the tree; empty when the invariant holds. ``matcher``
    (a :class:`watcher.tree.Matcher`) gives other patterns than the documented defaults; its
    fields are read, its methods never called."""
    if not db.exists():
        return ["no database"]
    stored = _read_db(db)
    if stored is None:
        return ["database has no schema yet"]
    results, rejections, report, last, gap = stored
    patterns = matcher.patterns if matcher else PATTERNS
    ignore = matcher.ignore_patterns if matcher else IGNORE_PATTERNS
    recursive = matcher.recursive if matcher else True
    own = matcher.own if matcher and matcher.own else own_outputs(watch_dir, db)
    files, unreadable = list_tree(watch_dir, patterns, ignore, recursive, own)

    out: list[str] = [f"{p}: in results and rejections" for p in sorted(set(results) & set(rejections))]
    on_disk: set[str] = set()
    latest: dict[str, tuple[str, str]] = {}
    for rel in files:
        exp = expected(watch_dir, rel, max_file_bytes, target_recall)
        if exp is None:
            continue  # gone while we looked, or not a file (a link to a folder)
        path = exp.row["path"]
        on_disk.add(path)
        if exp.valid:
            got = results.get(path)
            if got is None:
                why = f"in rejections with {rejections[path]['errors']}" if path in rejections else "not stored"
                out.append(f"{path}: valid on disk, but {why}")
            else:
                out += [
                    f"{path}: results.{col} is {got.get(col)!r}, expected {want!r}"
                    for col, want in exp.row.items()
                    if got.get(col) != want
                ]
            key = (exp.row["experiment_at"], path)
            if latest.get(exp.row["model_id"], ("", "")) < key:
                latest[exp.row["model_id"]] = key
            _check_history(out, path, last.get(path), "scored", exp.row["sha256"], exp.row["model_id"])
        else:
            got = rejections.get(path)
            if got is None:
                why = "in results" if path in results else "not stored"
                out.append(f"{path}: invalid on disk ({exp.row['errors'][0]['message']}), but {why}")
            else:
                out += _rejection_differences(path, got, exp.row)
            _check_history(out, path, last.get(path), "rejected", exp.row.get("sha256"), None)
    hidden = [_stored_path(folder) for folder, _ in unreadable]
    for (folder, reason), path in zip(unreadable, hidden, strict=True):
        on_disk.add(path)
        want = [{"field": None, "message": f"folder cannot be read: {reason}"}]
        got = rejections.get(path)
        if got is None:
            out.append(f"{path}/: cannot be listed, but not in rejections")
        elif json.loads(got["errors"]) != want:
            out.append(f"{path}/: rejections.errors is {got['errors']}, expected {want}")
        if path in results:
            out.append(f"{path}/: cannot be listed, but in results")

    def out_of_sight(p: str) -> bool:
        return any(p.startswith(f + "/") for f in hidden)

    out += [
        f"{p}: stored but not on disk"
        for p in sorted((set(results) | set(rejections)) - on_disk)
        if not out_of_sight(p)
    ]
    out += [
        f"{p}: no longer on disk, but history's latest entry is {entry[0]!r}, not 'removed'"
        for p, entry in sorted(last.items())
        if p not in on_disk
        and entry[0] != "removed"
        and entry[3] > gap  # else its 'removed' entry may have been trimmed
        and not out_of_sight(p)
        and p not in results
        and p not in rejections
    ]
    want_report = {m: _report_row(results[p]) for m, (_, p) in latest.items() if p in results}
    if report != want_report:
        wrong = sorted(m for m in set(report) | set(want_report) if report.get(m) != want_report.get(m))
        out += [f"report view for {m}: {report.get(m)}, expected {want_report.get(m)}" for m in wrong[:20]]
    return out


def holds(watch_dir: Path, db: Path, matcher: _Rules | None = None) -> bool:
    """True when there are no :func:`violations` (for polling with a deadline)."""
    return not violations(watch_dir, db, matcher=matcher)


# -- which files count -------------------------------------------------------------------------


def own_outputs(watch_dir: Path, db: Path) -> frozenset[str]:
    """The database with its companions, and the default report folder (``reports`` beside a
    ``watcher.db``, ``<stem>-reports`` beside another name), relative to the watch dir when inside."""
    root = os.path.realpath(watch_dir)
    real_db = os.path.realpath(db)
    reports = os.path.join(os.path.dirname(real_db), "reports" if db.name == "watcher.db" else f"{db.stem}-reports")
    out = set()
    for p in [real_db + suffix for suffix in DB_COMPANIONS] + [reports]:
        rel = os.path.relpath(p, root)
        if rel != os.curdir and not rel.startswith(os.pardir):
            out.add(rel.replace(os.sep, "/"))
    return frozenset(out)


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def list_tree(
    root: Path, patterns: tuple[str, ...], ignore: tuple[str, ...], recursive: bool, own: frozenset[str]
) -> tuple[list[str], list[tuple[str, str]]]:
    """(relative paths of the files that count, ``/``-separated; folders that cannot be listed
    with the reason). Folders are listed with :func:`os.scandir`, from a stack (a tree any number
    of levels deep); a link is never descended into: a link to a folder is listed as a file here
    and found to be none when read."""
    files: list[str] = []
    unreadable: list[tuple[str, str]] = []
    stack = [""]
    while stack:
        base = stack.pop()
        try:
            with os.scandir(os.path.join(root, base) if base else root) as it:
                entries = list(it)
        except (FileNotFoundError, NotADirectoryError):
            continue  # vanished meanwhile: not a folder any more
        except OSError as exc:
            unreadable.append((base, exc.strerror or str(exc)))
            continue
        for entry in entries:
            rel = f"{base}/{entry.name}" if base else entry.name
            try:
                folder = entry.is_dir(follow_symlinks=False)
            except OSError:
                continue
            if folder:
                if recursive and not _matches(entry.name, ignore) and rel not in own:
                    stack.append(rel)
            elif _matches(entry.name, patterns) and not _matches(entry.name, ignore) and rel not in own:
                files.append(rel)
    return files, unreadable


def _stored_path(rel: str) -> str:
    """A name that is not valid UTF-8 is stored with its undecodable bytes as ``\\xNN``."""
    raw = rel.encode("utf-8", "surrogateescape")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("utf-8", "backslashreplace")


# -- what one file must be ---------------------------------------------------------------------


def _rejected(path: str, message: str, s: os.stat_result | None, sha: str | None = None) -> Expected:
    row: dict[str, Any] = {"path": path, "errors": [{"field": None, "message": message}], "sha256": sha}
    if s is not None:
        row.update(size=s.st_size, mtime_ns=s.st_mtime_ns, inode=s.st_ino)
    return Expected(False, row)


def _identity(full: str) -> os.stat_result | None:
    try:
        return os.stat(full)
    except OSError:
        try:
            return os.lstat(full)
        except OSError:
            return None


def expected(root: Path, rel: str, max_file_bytes: int, target: float) -> Expected | None:
    """What the database must hold for ``root / rel``; ``None`` when nothing (gone, or a folder)."""
    full = os.path.join(root, rel)
    path = _stored_path(rel)
    if path != rel:
        s = _identity(full)
        return None if s is None else _rejected(path, BAD_NAME, s)
    try:
        lst = os.lstat(full)
    except FileNotFoundError:
        return None
    if st.S_ISLNK(lst.st_mode):
        if not os.path.exists(full):
            return _rejected(path, "dangling symbolic link: its target does not exist", lst)
        real_root = os.path.realpath(root)
        if os.path.commonpath([real_root, os.path.realpath(full)]) != real_root:
            return _rejected(path, "symbolic link points outside the watch directory; not followed", _identity(full))
    try:
        fd = os.open(full, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return _rejected(path, f"cannot open the file: {exc.strerror}", lst)
    try:
        s = os.fstat(fd)
        if st.S_ISDIR(s.st_mode):
            return None
        if not st.S_ISREG(s.st_mode):
            kind = (
                "a FIFO" if st.S_ISFIFO(s.st_mode)
                else "a device" if st.S_ISCHR(s.st_mode) or st.S_ISBLK(s.st_mode)
                else "a socket" if st.S_ISSOCK(s.st_mode)
                else "not a file"
            )  # fmt: skip
            return _rejected(path, f"not a regular file ({kind}); not read", s)
        if s.st_size > max_file_bytes:
            return _rejected(path, f"file is {s.st_size} bytes, over max_file_bytes ({max_file_bytes})", s)
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        raw = b"".join(chunks)
    finally:
        os.close(fd)
    sha = hashlib.sha256(raw).hexdigest()
    verdict = validate_bytes(raw, MAX_ERRORS)
    if isinstance(verdict, list):
        row: dict[str, Any] = {
            "path": path, "errors": [p.as_dict() for p in verdict], "sha256": sha,
            "size": len(raw), "mtime_ns": s.st_mtime_ns, "inode": s.st_ino,
        }  # fmt: skip
        return Expected(False, row)
    return Expected(True, scored_row(path, raw, s, sha, target))


def scored_row(path: str, raw: bytes, s: os.stat_result, sha: str, target: float) -> dict[str, Any]:
    """Every column of ``results`` for a valid file, from its bytes (docs/results-file.md)."""
    doc = json.loads(raw.removeprefix(b"\xef\xbb\xbf").decode("utf-8"))  # a UTF-8 BOM is tolerated
    thresholds = [float(t) for t in doc["threshold_arr"]]
    recalls = [float(r) for r in doc["recall_arr"]]
    best = operating_point(thresholds, recalls, target)
    recall = recalls[best]
    return {
        "path": path,
        "model_id": doc["model_id"].lower(),
        "issuer": doc["issuer"],
        "experiment_date": doc["experiment_date"],
        "experiment_at": utc_instant(doc["experiment_date"]),
        "optimal_threshold": thresholds[best],
        "closest_recall_value": recall,
        "distance": round(abs(recall - target), DISTANCE_DECIMALS),
        "target_met": int(recall >= target),
        "target_recall": target,
        "n_points": len(thresholds),
        "size": len(raw),
        "mtime_ns": s.st_mtime_ns,
        "inode": s.st_ino,
        "sha256": sha,
        "curve": drawn(thresholds, recalls, best),
    }


def operating_point(thresholds: list[float], recalls: list[float], target: float) -> int:
    """The scoring rule of docs/results-file.md, the plain way: with d = |recall - target|, the
    candidates are d <= min(d) + 1e-9; prefer recall >= target, then the highest threshold."""
    d = [abs(r - target) for r in recalls]
    limit = min(d) + TOLERANCE
    candidates = [i for i in range(len(d)) if d[i] <= limit]
    meeting = [i for i in candidates if recalls[i] >= target]
    pool = meeting or candidates
    return max(pool, key=lambda i: thresholds[i])


def drawn(thresholds: list[float], recalls: list[float], chosen: int) -> bytes:
    """The stored drawing: evenly spread points (all when there are at most 32) and the chosen one."""
    n = len(thresholds)
    keep = {round(i * (n - 1) / (CURVE_POINTS - 1)) for i in range(CURVE_POINTS)} if n > CURVE_POINTS else set(range(n))
    keep.add(chosen)
    out = bytearray()
    for i in sorted(keep):
        # Each coordinate rounded half up: x = t * 255, y = (1 - r) * 255.
        out += bytes(
            [math.floor(thresholds[i] * CURVE_STEPS + 0.5), math.floor(CURVE_STEPS + 0.5 - recalls[i] * CURVE_STEPS)]
        )
    return bytes(out)


_DATE = re.compile(r"(\d{4})-(\d\d)-(\d\d)[Tt](\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?(?:([Zz])|([+-])(\d\d):(\d\d))\Z")


def utc_instant(date: str) -> str:
    """An RFC 3339 date-time as the UTC instant, ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (fixed width)."""
    m = _DATE.match(date)
    if m is None:
        raise ValueError(f"not an RFC 3339 date-time: {date!r}")
    y, mo, d, h, mi, sec, frac, zulu, sign, oh, om = m.groups()
    offset = timedelta(0) if zulu else (1 if sign == "+" else -1) * timedelta(hours=int(oh), minutes=int(om))
    local = datetime(int(y), int(mo), int(d), int(h), int(mi), int(sec), int((frac or "").ljust(6, "0")))
    instant = local.replace(tzinfo=timezone(offset)).astimezone(UTC).replace(tzinfo=None)
    return instant.strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"


# -- what the database holds -------------------------------------------------------------------

_ROW = dict[str, Any]


_LAST = tuple[str, str | None, str | None, int]  # a path's latest history entry: outcome, sha256, model_id, id
_DB = tuple[dict[str, _ROW], dict[str, _ROW], dict[str, tuple[Any, ...]], dict[str, _LAST], int]


def _read_db(db: Path) -> _DB | None:
    conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=30)
    conn.row_factory = sqlite3.Row
    try:
        conn.execute("BEGIN")  # one snapshot for every table
        try:
            results = {r["path"]: dict(r) for r in conn.execute("SELECT * FROM results")}
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return None
            raise
        rejections = {r["path"]: dict(r) for r in conn.execute("SELECT * FROM rejections")}
        report = {r["model_id"]: tuple(r) for r in conn.execute("SELECT * FROM report")}
        last = {
            r["path"]: (r["outcome"], r["sha256"], r["model_id"], r["id"])
            for r in conn.execute(
                "SELECT id, path, outcome, sha256, model_id FROM history "
                "WHERE id IN (SELECT max(id) FROM history GROUP BY path)"
            )
        }
        # The ids trimmed away (docs/how-it-works.md, "Bounded storage"): the largest one below
        # the newest id that is missing; a path's 'removed' entry after it may have been trimmed.
        ids = [r[0] for r in conn.execute("SELECT id FROM history ORDER BY id")]
        conn.execute("COMMIT")
    finally:
        conn.close()
    gap = max((b - 1 for a, b in itertools.pairwise(ids) if b > a + 1), default=0)
    return results, rejections, report, last, gap


def _report_row(r: _ROW) -> tuple[Any, ...]:
    cols = ("model_id", "issuer", "optimal_threshold", "closest_recall_value", "target_recall", "target_met",
            "experiment_date", "path")  # fmt: skip
    return tuple(r[c] for c in cols)


def _rejection_differences(path: str, got: _ROW, want: dict[str, Any]) -> list[str]:
    out = []
    errors = json.loads(got["errors"])
    if errors != want["errors"]:
        out.append(f"{path}: rejections.errors is {errors}, expected {want['errors']}")
    for col in ("sha256", "size", "mtime_ns", "inode"):
        if col in want and got.get(col) != want[col]:
            out.append(f"{path}: rejections.{col} is {got.get(col)!r}, expected {want[col]!r}")
    return out


def _check_history(
    out: list[str], path: str, entry: _LAST | None, outcome: str, sha: str | None, model_id: str | None
) -> None:
    want = (outcome, sha, model_id) if outcome == "scored" else None
    if entry is None:
        out.append(f"{path}: no history entry, expected {outcome!r}")
    elif (want is not None and entry[:3] != want) or entry[0] != outcome:
        out.append(f"{path}: history's latest entry is {entry}, expected {want or outcome!r}")
