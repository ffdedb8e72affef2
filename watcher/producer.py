"""The training job's side: publish one evaluated model into the watched folder in one call.

A job hands :func:`publish` its labels and scores (or a curve it already has, through one of the
``curve_from_*`` adapters) with the model's id and issuer; the file is built, checked with the
daemon's own validation on the exact bytes about to be written, written under a temporary name
the daemon ignores, flushed to disk and renamed into place, and the operating point the daemon
will store is returned (the daemon's own scoring function, on the same bytes).

Semantics, the same as scikit-learn's: the recall at threshold ``t`` is the fraction of positive
examples whose score is ``>= t``. Thresholds are probabilities in [0, 1]: scores outside it
(logits, margins) are refused unless the caller says they are logits (``logits=True``: mapped
through the logistic function). NaN and infinite scores are refused, and so is a sample with no
positive example (recall is undefined) or no negative one (the curve says nothing then). Labels
are 0/1 or booleans.

Pure Python, no dependency beyond watcher's own: NumPy arrays, PyTorch tensors, TensorFlow/Keras
tensors and plain sequences are accepted by duck typing (``.detach().cpu()``, ``.numpy()``,
``.tolist()``, ``__array__``), never by importing those libraries.
"""

from __future__ import annotations

import bisect
import contextlib
import fnmatch
import json
import math
import os
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from itertools import compress
from pathlib import Path
from typing import Any
from uuid import UUID

from watcher.config import DEFAULT_IGNORE, Settings
from watcher.errors import InvalidResultError, PublishError
from watcher.resultfile import ResultFile, validate_bytes
from watcher.scoring import OperatingPoint, optimal_point

#: The daemon's default target recall (``target_recall`` in the config); pass the configured one
#: to :func:`publish` when it differs.
DEFAULT_TARGET_RECALL: float = Settings.model_fields["target_recall"].default
#: The daemon's default ``max_file_bytes``: a bigger file would be rejected unread.
DEFAULT_MAX_FILE_BYTES: int = Settings.model_fields["max_file_bytes"].default
#: At most this many reasons are listed (the last one then says how many more there were).
MAX_REASONS = 50


@dataclass(frozen=True, slots=True)
class Curve:
    """A recall curve as the results file holds it: thresholds in increasing order, and the
    recall at each (the fraction of positives scored at or above it)."""

    thresholds: tuple[float, ...]
    recalls: tuple[float, ...]

    def __init__(self, thresholds: Any, recalls: Any) -> None:
        object.__setattr__(self, "thresholds", tuple(_floats(thresholds, "thresholds")))
        object.__setattr__(self, "recalls", tuple(_floats(recalls, "recalls")))


@dataclass(frozen=True, slots=True)
class Published:
    """What :func:`publish` wrote, and the operating point the daemon stores for it (the same
    names as the report's columns)."""

    path: Path
    model_id: str
    experiment_date: str
    optimal_threshold: float
    closest_recall_value: float
    target_recall: float
    target_met: bool
    n_points: int


# --- turning what the libraries return into plain floats -------------------------------------


def _plain(values: Any) -> Any:
    """``values`` as a Python list (or scalar), whatever array type holds it, without importing it."""
    if hasattr(values, "detach"):  # a PyTorch tensor: off the autograd graph, onto the CPU
        values = values.detach()
        if hasattr(values, "cpu"):
            values = values.cpu()
    if hasattr(values, "tolist"):  # NumPy, PyTorch
        return values.tolist()
    if hasattr(values, "numpy"):  # TensorFlow / Keras tensors
        return _plain(values.numpy())
    if hasattr(values, "__array__"):  # anything else NumPy can view (JAX, pandas, ...)
        return values.__array__().tolist()
    if isinstance(values, (str, bytes)):
        return values
    if isinstance(values, Iterable):
        return list(values)
    return values


_ARRAY_LIKE = ("detach", "tolist", "numpy", "__array__")


def _flat(values: Any, name: str) -> list[Any]:
    """A one-dimensional list: shape (n,), or (n, 1) as a model's ``predict`` returns; NumPy
    scalars and one-element tensors in a plain list are read too."""
    plain = _plain(values)
    if isinstance(plain, (str, bytes)) or not isinstance(plain, list):
        raise InvalidResultError([f"{name}: must be a sequence of numbers, not {type(values).__name__}"])
    if {type(v) for v in plain} <= {float, int, bool}:
        return plain
    out: list[Any] = []
    for i, v in enumerate(plain):
        if isinstance(v, list):
            if len(v) != 1:
                raise InvalidResultError(
                    [
                        f"{name}[{i}]: must be one number (a single column), not {len(v)} values; "
                        "for predict_proba's two columns, give the positive class's: [:, 1]"
                    ]
                )
            v = v[0]
        elif not isinstance(v, (str, bytes, int, float)) and any(map(partial(hasattr, v), _ARRAY_LIKE)):
            v = _plain(v)
            if isinstance(v, list) and len(v) == 1:
                v = v[0]
        out.append(v)
    return out


def _floats(values: Any, name: str) -> list[float]:
    out: list[float] = []
    reasons: list[str] = []
    for i, v in enumerate(_flat(values, name)):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            reasons.append(f"{name}[{i}]: must be a number, not {type(v).__name__}")
            continue
        out.append(float(v) if isinstance(v, float) or abs(v) < 2**1000 else math.inf)
    if reasons:
        raise InvalidResultError(capped(reasons))
    return out


def capped(reasons: list[str]) -> list[str]:
    """At most :data:`MAX_REASONS` reasons, the last then saying how many were left out."""
    if len(reasons) <= MAX_REASONS:
        return reasons
    return [*reasons[: MAX_REASONS - 1], f"{len(reasons) - MAX_REASONS + 1} more problems not listed"]


# --- curves ----------------------------------------------------------------------------------


def curve_from_scores(
    labels: Any, scores: Any, thresholds: int | Sequence[float] | None = None, logits: bool = False
) -> Curve:
    """The recall curve of ``scores`` against ``labels`` (0/1 or booleans, one per score).

    ``thresholds``: ``None`` for the exact curve, one point at every distinct score; an int ``n``
    for ``n`` evenly spaced thresholds from 0 to 1; or the thresholds themselves (in [0, 1]).
    ``logits``: the scores are logits; each is mapped to a probability by the logistic function.
    Raises :class:`~watcher.errors.InvalidResultError` with every reason the data cannot give
    a curve (NaN or infinite scores, scores outside [0, 1], one class only, lengths differ...).
    """
    ys, ss = _flat(labels, "labels"), _flat(scores, "scores")
    grid, reasons = _grid(thresholds)
    clean = _clean(ys, ss, logits)
    if clean is not None and not reasons:
        return _exact(*clean) if thresholds is None else _on_grid(grid, clean[1])
    if len(ys) != len(ss):
        reasons.append(f"scores: has {len(ss)} values but labels has {len(ys)}")
    if not ss:
        reasons.append("scores: no values")
    positives: list[float] = []
    distinct: set[float] = set()
    negatives = 0
    outside = 0
    for i, (y, s) in enumerate(zip(ys, ss, strict=False)):
        label = _label(y)
        if label is None:
            reasons.append(f"labels[{i}]: must be 0, 1 or a boolean, not {y!r}")
        if isinstance(s, bool) or not isinstance(s, (int, float)):
            reasons.append(f"scores[{i}]: must be a number, not {type(s).__name__}")
            continue
        score = float(s) if isinstance(s, float) or abs(s) < 2**1000 else math.inf
        if not math.isfinite(score):
            reasons.append(f"scores[{i}]: must be a finite number, not {score!r}")
            continue
        if logits:
            score = _sigmoid(score)
        elif not 0.0 <= score <= 1.0:
            outside += 1
            if outside <= 3:
                reasons.append(
                    f"scores[{i}]: {score!r} is outside [0, 1]: give probabilities, or say the scores are logits"
                )
            continue
        distinct.add(score)
        if label:
            positives.append(score)
        elif label is not None:
            negatives += 1
    if outside > 3:
        reasons.append(f"scores: {outside - 3} more values outside [0, 1]")
    if not reasons:
        if not positives:
            reasons.append("labels: no positive example (label 1): recall is undefined without positives")
        if not negatives:
            reasons.append("labels: no negative example (label 0): every threshold's recall says nothing")
    if reasons:
        raise InvalidResultError(capped(reasons))
    return _exact(list(distinct), positives) if thresholds is None else _on_grid(grid, positives)


def _grid(thresholds: int | Sequence[float] | None) -> tuple[list[float], list[str]]:
    """The thresholds asked for, in increasing order, and the reasons they cannot be used."""
    if thresholds is None:
        return [], []
    if isinstance(thresholds, int) and not isinstance(thresholds, bool):
        if thresholds < 2:
            return [], [f"thresholds: {thresholds} thresholds: give at least 2"]
        return [i / (thresholds - 1) for i in range(thresholds)], []
    try:
        grid = _floats(thresholds, "thresholds")
    except InvalidResultError as exc:
        return [], list(exc.reasons)
    bad = [t for t in grid if not 0.0 <= t <= 1.0]
    if bad:
        return [], [f"thresholds: {bad[0]!r} is outside [0, 1]"]
    return sorted(set(grid)), []


def _on_grid(grid: list[float], positives: list[float]) -> Curve:
    pos = sorted(positives)
    total = len(pos)
    # Positives scored >= t: those from the first one not below t.
    return _curve(grid, [(total - bisect.bisect_left(pos, t)) / total for t in grid])


def _clean(ys: list[Any], ss: list[Any], logits: bool) -> tuple[list[float], list[float]] | None:
    """(scores, positives' scores) when every label and score is fine and both classes are
    there, checked in a few passes that run in C; ``None`` sends the data to the thorough path,
    which names every problem."""
    if len(ys) != len(ss) or not ss:
        return None
    kinds = {type(s) for s in ss}
    if not kinds <= {float, int} or not {type(y) for y in ys} <= {bool, int, float}:
        return None
    if int in kinds:
        try:
            ss = [float(s) for s in ss]
        except OverflowError:  # an int too large for a float: named by the thorough path
            return None
    if not set(ys) <= {0, 1} or not all(map(math.isfinite, ss)):  # True == 1 and 1.0 == 1
        return None
    if logits:
        ss = list(map(_sigmoid, ss))
    elif min(ss) < 0.0 or max(ss) > 1.0:
        return None
    positives = list(compress(ss, ys))
    if not positives or len(positives) == len(ss):
        return None
    return ss, positives


def _exact(scores: list[float], positives: list[float]) -> Curve:
    """A point at every distinct score: the share of positives scored at or above it."""
    # One walk up the sorted scores, counting the positives below each new one (measured: about
    # twice as fast as a set, a sort and a binary search per point, at a million scores).
    ordered, pos = sorted(scores), sorted(positives)
    total = len(pos)
    points: list[float] = []
    recalls: list[float] = []
    below = 0
    previous = math.nan
    for t in ordered:
        if t == previous:
            continue
        previous = t
        while below < total and pos[below] < t:
            below += 1
        points.append(t)
        recalls.append((total - below) / total)
    return _curve(points, recalls)


def _curve(thresholds: list[float], recalls: list[float]) -> Curve:
    curve = Curve.__new__(Curve)
    object.__setattr__(curve, "thresholds", tuple(thresholds))
    object.__setattr__(curve, "recalls", tuple(recalls))
    return curve


def _label(y: Any) -> bool | None:
    if isinstance(y, bool):
        return y
    if isinstance(y, (int, float)) and y in (0, 1):
        return bool(y)
    return None


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def curve_from_pr(precision: Any, recall: Any, thresholds: Any) -> Curve:
    """From a precision-recall curve: scikit-learn's ``precision_recall_curve`` and torchmetrics'
    ``BinaryPrecisionRecallCurve`` (``curve_from_pr(*precision_recall_curve(y, p))``).

    Both give thresholds in increasing order and one more recall than thresholds: the last
    (recall 0, precision 1) belongs to no threshold and is dropped.
    """
    del precision  # not part of the results file
    ts, rs = _floats(thresholds, "thresholds"), _floats(recall, "recall")
    if len(rs) != len(ts) + 1:
        raise InvalidResultError(
            [f"recall: has {len(rs)} values for {len(ts)} thresholds; a precision-recall curve has one more"]
        )
    return _merged(ts, rs[:-1])


def curve_from_roc(fpr: Any, tpr: Any, thresholds: Any) -> Curve:
    """From a ROC curve: scikit-learn's ``roc_curve`` and torchmetrics' ``BinaryROC``
    (``curve_from_roc(*roc_curve(y, p))``); the recall is the true positive rate.

    Thresholds come in decreasing order and are put in increasing order. scikit-learn's first
    point (threshold ``inf``: nothing predicted positive) is not a threshold and is dropped;
    torchmetrics' first point (threshold 1.0, recall 0) is a true point and is kept, merged with
    a real threshold of 1.0 when there is one.
    """
    del fpr  # not part of the results file
    ts, rs = _floats(thresholds, "thresholds"), _floats(tpr, "tpr")
    if len(ts) != len(rs):
        raise InvalidResultError([f"tpr: has {len(rs)} values but thresholds has {len(ts)}"])
    kept = [(t, r) for t, r in zip(ts, rs, strict=True) if math.isfinite(t)]
    return _merged([t for t, _ in kept], [r for _, r in kept])


def curve_from_keras_recall(metric: Any) -> Curve:
    """From ``keras.metrics.Recall(thresholds=[...])`` after it has seen the data (``update_state``
    or ``model.evaluate``): its ``thresholds`` and ``result()``, one recall per threshold.

    Keras counts a prediction as positive when it is *above* the threshold (``>``), where this
    module (and scikit-learn) counts *at or above* (``>=``): the two differ only for scores equal
    to a threshold. For the exact curve from a model's predictions, use :func:`curve_from_scores`
    on ``model.predict(x)`` instead.
    """
    thresholds, result = metric.thresholds, _plain(metric.result())
    # One threshold gives one number, not a sequence.
    recalls = _floats(result if isinstance(result, list) else [result], "recall")
    ts = _floats(thresholds if isinstance(thresholds, (list, tuple)) else [thresholds], "thresholds")
    if len(ts) != len(recalls):
        raise InvalidResultError([f"recall: has {len(recalls)} values but thresholds has {len(ts)}"])
    return _merged(ts, recalls)


def _merged(thresholds: list[float], recalls: list[float]) -> Curve:
    """Sorted by threshold; a threshold given twice keeps its highest recall (the recall at t
    counts every positive scored >= t)."""
    best: dict[float, float] = {}
    for t, r in zip(thresholds, recalls, strict=True):
        best[t] = max(r, best.get(t, r))
    points = sorted(best)
    return _curve(points, [best[t] for t in points])


# --- the file --------------------------------------------------------------------------------


def document(curve: Curve, model_id: str | UUID, issuer: str, experiment_date: datetime | str | None = None) -> bytes:
    """The results file's bytes, as :func:`publish` writes them (UTF-8 JSON, one line)."""
    doc = {
        "model_id": str(model_id),
        "issuer": issuer,
        "experiment_date": _date(experiment_date),
        "threshold_arr": list(curve.thresholds),
        "recall_arr": list(curve.recalls),
    }
    # NaN and infinities are written as JSON would not have them (NaN), so validation names them.
    return (json.dumps(doc, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


def _date(value: datetime | str | None) -> Any:
    if value is None:
        value = datetime.now(UTC)
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise InvalidResultError(["experiment_date: a datetime without a time zone; give one, e.g. tzinfo=UTC"])
        text = value.isoformat(timespec="milliseconds")
        return text[:-6] + "Z" if text.endswith("+00:00") else text
    return value


def check(
    curve: Curve,
    model_id: str | UUID,
    issuer: str,
    experiment_date: datetime | str | None = None,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
) -> tuple[bytes, ResultFile]:
    """The file's bytes and the daemon's reading of them; :class:`~watcher.errors.InvalidResultError`
    with every reason the daemon would reject them for (the words of ``watcher validate``)."""
    raw = document(curve, model_id, issuer, experiment_date)
    result = validate_bytes(raw, MAX_REASONS)
    if isinstance(result, list):
        raise InvalidResultError([f"{p.field}: {p.message}" if p.field else p.message for p in result])
    if len(raw) > max_file_bytes:
        raise InvalidResultError(
            [
                f"the file would be {len(raw)} bytes, over max_file_bytes ({max_file_bytes}): "
                "give fewer thresholds (thresholds=1001)"
            ]
        )
    return raw, result


def publish(
    folder: str | os.PathLike[str],
    *,
    model_id: str | UUID,
    issuer: str,
    labels: Any = None,
    scores: Any = None,
    curve: Curve | None = None,
    thresholds: int | Sequence[float] | None = None,
    logits: bool = False,
    experiment_date: datetime | str | None = None,
    name: str | None = None,
    target_recall: float = DEFAULT_TARGET_RECALL,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    operating_point: OperatingPoint = "nearest",
) -> Published:
    """Publish one evaluated model into ``folder`` (the daemon's watch folder), atomically.

    Give ``labels`` and ``scores`` (see :func:`curve_from_scores` for ``thresholds`` and
    ``logits``), or a ``curve``. ``experiment_date`` defaults to now (UTC); a ``datetime`` must
    carry its time zone, a string is taken as written (RFC 3339). The file is ``name`` (default
    ``<model_id>.json``); one of that name already there is replaced as a whole.

    Returns the path and the operating point the daemon stores for the file at ``target_recall``
    under the rule ``operating_point`` (its configured ones; 0.85 and ``nearest`` by default).
    Raises :class:`~watcher.errors.InvalidResultError` (every reason) when the daemon would reject
    the file or the data gives no curve, and :class:`~watcher.errors.PublishError` when the folder
    cannot take it; nothing is written then.
    """
    if curve is None and (labels is None or scores is None):
        raise InvalidResultError(["give labels and scores, or a curve"])
    if curve is not None and (labels is not None or scores is not None):
        raise InvalidResultError(["give labels and scores, or a curve, not both"])
    reasons: list[str] = []
    if curve is None:
        try:
            curve = curve_from_scores(labels, scores, thresholds, logits)
        except InvalidResultError as exc:
            reasons += exc.reasons
    try:
        # With no curve, a one-point stand-in lets the other fields' reasons be listed too.
        raw, result = check(curve or _curve([0.0], [0.0]), model_id, issuer, experiment_date, max_file_bytes)
    except InvalidResultError as exc:
        reasons += exc.reasons
    if reasons:
        raise InvalidResultError(capped(reasons))
    name = name or f"{result.model_id}.json"
    _check_name(name)
    target = Path(folder) / name
    _write_atomic(target, raw)
    score = optimal_point(result.threshold_arr, result.recall_arr, target_recall, operating_point)
    return Published(
        path=target,
        model_id=result.model_id,
        experiment_date=result.experiment_date,
        optimal_threshold=score.threshold,
        closest_recall_value=score.recall,
        target_recall=target_recall,
        target_met=score.target_met,
        n_points=len(result.threshold_arr),
    )


def temporary_name(name: str) -> str:
    """The name a file is written under before its rename: hidden, ending in ``.tmp``, so the
    daemon's default ``ignore_patterns`` (``.*``, ``*.tmp``) skip it, and not ending in ``.json``
    so its default ``patterns`` never select it."""
    return f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"


def _check_name(name: str) -> None:
    """A file name in the folder, and not one the daemon's default ``ignore_patterns`` skip."""
    if "/" in name or "\0" in name or name in ("", ".", ".."):
        raise PublishError(f"{name!r} is not a file name (a name in the folder, without '/')")
    ignored = [p for p in DEFAULT_IGNORE if fnmatch.fnmatchcase(name, p)]
    if ignored:
        raise PublishError(f"{name!r} is a name the daemon ignores ({ignored[0]}): the file would never be scored")


def _write_atomic(target: Path, raw: bytes) -> None:
    folder = target.parent
    if not folder.is_dir():
        raise PublishError(f"cannot publish into {folder}: no such folder")
    tmp = folder / temporary_name(target.name)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        raise PublishError(f"cannot publish into {folder}: {exc.strerror}") from None
    try:
        try:
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise PublishError(f"cannot publish {target}: {exc.strerror}") from None
    # The rename itself is durable once the folder is flushed.
    with contextlib.suppress(OSError):
        dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
