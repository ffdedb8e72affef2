"""``watcher validate``: check files before they go into the watch dir, with the daemon's own rules.

A FILE is judged as it is (a symbolic link is followed); a DIR stands for every file under it that
the configured ``patterns``/``ignore_patterns``/``recursive`` select, judged as the daemon would
judge it in a watch dir there; ``-`` is standard input. Verdicts are printed as text (one line
per file, reasons indented below) or as JSON Lines (one object per file, in the order checked).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from watcher.config import Settings
from watcher.judge import JudgeOptions, judge, judge_bytes
from watcher.outcomes import FileStat, Outcome, Rejected, Removed, Scored
from watcher.resultfile import Problem
from watcher.tree import Matcher, walk

STDIN = "-"
#: Stands for the outcomes of a folder that holds no file the patterns select (not an error).
NOTHING_MATCHED = Removed("")


def check(paths: Sequence[str], settings: Settings, fmt: str, out: TextIO, stdin: BinaryIO) -> int:
    """Judge every file ``paths`` name (files, folders, ``-``) and print each verdict to ``out``
    as ``fmt`` (``text`` or ``json``). Returns how many were invalid (a missing path counts)."""
    invalid = 0
    for shown, outcome in _outcomes(paths, settings, stdin):
        if outcome is NOTHING_MATCHED:
            if fmt == "text":
                out.write(f"{shown}: no file here matches the patterns ({', '.join(settings.patterns)})\n")
            continue
        invalid += not isinstance(outcome, Scored)
        out.write(_json(shown, outcome) if fmt == "json" else _text(shown, outcome))
    return invalid


def _outcomes(paths: Sequence[str], settings: Settings, stdin: BinaryIO) -> Iterator[tuple[str, Outcome | None]]:
    """(path as shown, its outcome); ``None`` for a path that names nothing."""
    options = JudgeOptions.from_settings(settings)
    for given in paths:
        if given == STDIN:
            yield given, _judge_stdin(stdin, options)
            continue
        path = Path(given)
        if path.is_dir():
            # As the daemon would judge it in a watch dir there (links out of it not followed).
            opts = replace(options, root=path.absolute())
            found = sorted(rel for rel, _entry in walk(path, Matcher.from_settings(settings)))
            if not found:
                yield given, NOTHING_MATCHED
            for rel in found:
                yield str(path / rel), judge(rel, opts)
            continue
        # A file named on the command line is judged whatever its name; a link is followed.
        outcome = judge(path.name, replace(options, root=path.parent.absolute(), follow_symlinks=True))
        yield given, outcome if isinstance(outcome, (Scored, Rejected)) else None


def _judge_stdin(stdin: BinaryIO, opts: JudgeOptions) -> Scored | Rejected:
    raw = stdin.read(opts.max_file_bytes + 1)
    stat = FileStat(len(raw), 0, 0)
    if len(raw) > opts.max_file_bytes:
        return Rejected(STDIN, None, None, (Problem(None, f"input is over max_file_bytes ({opts.max_file_bytes})"),))
    return judge_bytes(STDIN, raw, stat, hashlib.sha256(raw).hexdigest(), opts)


def _text(shown: str, outcome: Outcome | None) -> str:
    if isinstance(outcome, Scored):
        line = (
            f"{shown}: ok: model_id {outcome.model_id}, optimal_threshold {outcome.optimal_threshold}, "
            f"closest_recall_value {outcome.closest_recall_value}"
        )
        if not outcome.target_met:
            line += f"; below the target recall {outcome.target_recall}"
        return line + "\n"
    if not isinstance(outcome, Rejected):
        return f"{shown}: invalid: no such file\n"
    return f"{shown}: invalid\n" + "".join(f"  {p.field or '(file)'}: {p.message}\n" for p in outcome.errors)


def _json(shown: str, outcome: Outcome | None) -> str:
    record: dict[str, Any] = {"path": shown, "valid": isinstance(outcome, Scored)}
    if isinstance(outcome, Scored):
        record.update(
            model_id=outcome.model_id, issuer=outcome.issuer, experiment_date=outcome.experiment_date,
            optimal_threshold=outcome.optimal_threshold, closest_recall_value=outcome.closest_recall_value,
            target_recall=outcome.target_recall, target_met=outcome.target_met, errors=[],
        )  # fmt: skip
    elif isinstance(outcome, Rejected):
        record["errors"] = [p.as_dict() for p in outcome.errors]
    else:
        record["errors"] = [{"field": None, "message": "no such file"}]
    return json.dumps(record, ensure_ascii=False) + "\n"
