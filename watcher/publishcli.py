"""``watcher publish``: :func:`watcher.producer.publish` for jobs that are not in Python.

Labels and scores (``--scores``) or a curve (``--curve``) come from a file or standard input
(``-``), as CSV or JSON (a JSON object starts with ``{``; anything else is read as CSV):

* CSV: two columns, with or without a header row. With a header, the columns are found by name
  (``label``/``score``, ``threshold``/``recall``; a few common aliases too); without one, the
  first column is the label (or threshold), the second the score (or recall).
* JSON: ``{"labels": [...], "scores": [...]}`` or ``{"thresholds": [...], "recalls": [...]}``
  (``threshold_arr``/``recall_arr`` too).

The file goes into the configured watch dir (``--watch-dir`` or the config's ``watch_dir``) and the
operating point is computed at the configured ``target_recall`` and ``operating_point``. One line
out; on error, one line on stderr and the exit code: 1 the data or fields are invalid, 2 usage or
an unreadable input, 3 the folder cannot take the file.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from watcher.config import Settings
from watcher.errors import ConfigError, InvalidResultError
from watcher.producer import Curve, Published, capped, publish, temporary_name
from watcher.tree import Matcher

EXIT_OK, EXIT_INVALID = 0, 1

#: Column (CSV) and key (JSON) names, first the documented one, then accepted aliases.
_NAMES = {
    "labels": ("label", "labels", "y_true", "y", "target", "truth"),
    "scores": ("score", "scores", "y_score", "y_pred", "prediction", "probability", "prob"),
    "thresholds": ("threshold", "thresholds", "threshold_arr"),
    "recalls": ("recall", "recalls", "recall_arr", "tpr"),
}


def add_parser(sub: Any) -> None:
    """Add ``publish`` to the ``watcher`` command's subparsers."""
    p = sub.add_parser("publish", help="publish one evaluated model into the watch dir, atomically")
    p.add_argument("--config", type=Path, help="TOML config file (default: $WATCHER_CONFIG, else none)")
    p.add_argument("--watch-dir", help="the folder to publish into (default: the config's watch_dir)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--scores", metavar="FILE", help="labels and scores, CSV or JSON; - for standard input")
    source.add_argument("--curve", metavar="FILE", help="thresholds and recalls, CSV or JSON; - for standard input")
    p.add_argument("--model-id", required=True, help="the model's UUID")
    p.add_argument("--issuer", required=True, help="the e-mail address of who evaluated it")
    p.add_argument("--experiment-date", help="RFC 3339 date-time with offset (default: now, UTC)")
    p.add_argument(
        "--thresholds", type=int, metavar="N", help="with --scores: N evenly spaced thresholds (default: every score)"
    )
    p.add_argument("--logits", action="store_true", help="with --scores: the scores are logits (mapped to [0, 1])")
    p.add_argument("--name", help="the file's name in the folder (default: MODEL_ID.json)")
    p.add_argument("--format", choices=["text", "json"], default="text", help="json: the outcome as one JSON object")
    p.add_argument("--log-format", choices=["auto", "json", "console"], help="log format on stderr")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="lowest level logged")


def cmd_publish(args: argparse.Namespace, settings: Settings, out: TextIO, stdin: BinaryIO | None = None) -> int:
    """``watcher publish``: exit 0 published, 1 invalid (one line on stderr)."""
    if args.curve is not None and (args.thresholds is not None or args.logits):
        raise ConfigError("publish: --thresholds and --logits go with --scores, not --curve")
    matcher = Matcher.from_settings(settings)
    if args.name is not None and ("/" in args.name or not matcher.tracks(args.name)):
        raise ConfigError(
            f"publish: --name {args.name}: not a file name the daemon reads (patterns: {', '.join(settings.patterns)})"
        )
    probe = temporary_name(f"{args.model_id}.json")
    if matcher.tracks(probe):
        raise ConfigError(
            f"publish: the configured patterns and ignore_patterns select temporary names such as {probe}, "
            "which the daemon would judge half-written: keep '.*' or '*.tmp' in ignore_patterns"
        )
    source = args.scores if args.scores is not None else args.curve
    raw = _read(source, stdin or sys.stdin.buffer)
    try:
        if args.scores is not None:
            labels, scores = read_columns(raw, "labels", "scores", _label)
            kwargs: dict[str, Any] = {"labels": labels, "scores": scores, "thresholds": args.thresholds}
            kwargs["logits"] = args.logits
        else:
            thresholds, recalls = read_columns(raw, "thresholds", "recalls", _number)
            kwargs = {"curve": Curve(thresholds, recalls)}
        done = publish(
            settings.watch_dir, model_id=args.model_id, issuer=args.issuer, experiment_date=args.experiment_date,
            name=args.name, target_recall=settings.target_recall, max_file_bytes=settings.max_file_bytes,
            operating_point=settings.operating_point, **kwargs,
        )  # fmt: skip
    except InvalidResultError as exc:
        print(f"watcher publish: {source}: {exc}", file=sys.stderr)
        return EXIT_INVALID
    out.write(_json(done) if args.format == "json" else _text(done))
    return EXIT_OK


def _read(source: str, stdin: BinaryIO) -> bytes:
    if source == "-":
        return stdin.read()
    try:
        return Path(source).read_bytes()
    except OSError as exc:
        raise ConfigError(f"publish: cannot read {source}: {exc.strerror}") from None


def _text(done: Published) -> str:
    line = (
        f"published {done.path}: model_id {done.model_id}, optimal_threshold {done.optimal_threshold}, "
        f"closest_recall_value {done.closest_recall_value}"
    )
    if not done.target_met:
        line += f"; below the target recall {done.target_recall}"
    return line + "\n"


def _json(done: Published) -> str:
    return json.dumps({**asdict(done), "path": str(done.path)}) + "\n"


def read_columns(raw: bytes, first: str, second: str, first_value: Callable[[str], Any]) -> tuple[list[Any], list[Any]]:
    """Two columns from CSV or JSON bytes; :class:`InvalidResultError` naming every bad cell."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidResultError([f"not UTF-8 text: invalid byte at offset {exc.start}"]) from None
    if text.lstrip().startswith("{"):
        return _from_json(text, first, second)
    return _from_csv(text, first, second, first_value)


def _from_json(text: str, first: str, second: str) -> tuple[list[Any], list[Any]]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidResultError([f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"]) from None
    columns = []
    for key in (first, second):
        found = [name for name in _NAMES[key] if name in doc]
        if not found:
            raise InvalidResultError([f"no key {_NAMES[key][0]!r} (or {', '.join(_NAMES[key][1:])}) in the object"])
        columns.append(doc[found[0]])
    return columns[0], columns[1]


def _from_csv(text: str, first: str, second: str, first_value: Callable[[str], Any]) -> tuple[list[Any], list[Any]]:
    rows = [(n, row) for n, row in enumerate(csv.reader(io.StringIO(text)), 1) if any(c.strip() for c in row)]
    if not rows:
        raise InvalidResultError(["no rows"])
    at = (0, 1)
    header = rows[0][1]
    if not _numeric(header):
        names = [c.strip().lower() for c in header]
        at = (_column(names, first), _column(names, second))
        rows = rows[1:]
    xs: list[Any] = []
    ys: list[Any] = []
    reasons: list[str] = []
    for n, row in rows:
        if len(row) <= max(at):
            reasons.append(f"line {n}: has {len(row)} columns, needs {max(at) + 1}")
            continue
        for cell, parse, into in ((row[at[0]], first_value, xs), (row[at[1]], _number, ys)):
            try:
                into.append(parse(cell.strip()))
            except ValueError as exc:
                reasons.append(f"line {n}: {exc}")
    if reasons:
        raise InvalidResultError(capped(reasons))
    return xs, ys


def _numeric(row: list[str]) -> bool:
    try:
        [float(c) for c in row if c.strip() not in ("true", "false", "True", "False")]
    except ValueError:
        return False
    return True


def _column(names: list[str], key: str) -> int:
    for name in _NAMES[key]:
        if name in names:
            return names.index(name)
    raise InvalidResultError([f"the header has no column {_NAMES[key][0]!r} (or {', '.join(_NAMES[key][1:])})"])


def _number(cell: str) -> float:
    try:
        value = float(cell)
    except ValueError:
        raise ValueError(f"{cell!r} is not a number") from None
    return value


def _label(cell: str) -> Any:
    lowered = cell.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return int(cell)
    except ValueError:
        pass
    return _number(cell)
