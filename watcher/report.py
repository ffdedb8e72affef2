"""Render the summary report and write report files atomically. Rendering is pure.

A report file is replaced by ``rename(2)`` of a fully written temp file in the same folder, so a
reader sees either the old report or the new one, never a torn one.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from watcher.store import REPORT_COLUMNS

Row = Mapping[str, Any]

#: File name of each report format.
FILE_NAMES = {"csv": "report.csv", "json": "report.json", "markdown": "report.md"}


def render_csv(rows: Iterable[Row], columns: Sequence[str] = REPORT_COLUMNS) -> str:
    """RFC 4180 CSV with a header line."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([row[c] for c in columns] for row in rows)
    return out.getvalue()


def render_json(rows: Iterable[Row], columns: Sequence[str] = REPORT_COLUMNS) -> str:
    """A JSON array of objects, one per model and line, keys in column order."""
    # No indent=: with it, json falls back to its pure-Python encoder (slow at 100,000 rows).
    lines = [json.dumps({c: row[c] for c in columns}, ensure_ascii=False) for row in rows]
    return "[\n" + ",\n".join(lines) + "\n]\n" if lines else "[]\n"


def _md_cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def render_markdown(rows: Iterable[Row], columns: Sequence[str] = REPORT_COLUMNS) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(_md_cell(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def render_table(rows: Iterable[Row], columns: Sequence[str] = REPORT_COLUMNS) -> str:
    """An aligned plain-text table for terminals; numbers right-aligned."""
    rows = list(rows)
    cells = [[_md_cell(row[c]) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    numeric = [bool(rows) and all(isinstance(row[c], (int, float)) for row in rows) for c in columns]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)]
        return "  ".join(parts).rstrip()

    out = [line(list(columns)), line(["-" * w for w in widths])] + [line(r) for r in cells]
    if not rows:
        out.append("(no models yet)")
    return "\n".join(out) + "\n"


RENDERERS: dict[str, Callable[[Iterable[Row]], str]] = {
    "csv": render_csv,
    "json": render_json,
    "markdown": render_markdown,
    "table": render_table,
}


def write_atomic(path: Path, text: str, mode: int = 0o640) -> None:
    """Write ``text`` to ``path`` through a temp file and ``os.replace``; durable once it returns."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fchmod(fh.fileno(), mode)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_reports(rows: Sequence[Row], report_dir: Path, formats: Iterable[str]) -> list[Path]:
    """Regenerate every configured report file in ``report_dir``; returns the paths written."""
    written = []
    for fmt in formats:
        target = report_dir / FILE_NAMES[fmt]
        write_atomic(target, RENDERERS[fmt](rows))
        written.append(target)
    return written
