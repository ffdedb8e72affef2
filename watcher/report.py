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
from collections.abc import Callable, Iterable, Sequence
from itertools import islice
from pathlib import Path
from typing import Any, TextIO

from watcher.schema import REPORT_COLUMNS

Row = Sequence[Any]  # values in REPORT_COLUMNS order

#: File name of each report format.
FILE_NAMES = {"csv": "report.csv", "json": "report.json", "markdown": "report.md", "html": "report.html"}


def render_csv(rows: Iterable[Row], out: TextIO, columns: Sequence[str] = REPORT_COLUMNS) -> None:
    """RFC 4180 CSV with a header line."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)


def render_json(rows: Iterable[Row], out: TextIO, columns: Sequence[str] = REPORT_COLUMNS) -> None:
    """A JSON array of objects (one per model, keys in column order), one key or value per line."""
    # Encoded 1,000 rows per call of the C encoder: per-row dumps() calls, or indent= (which falls
    # back to the pure-Python encoder), cost seconds at 100,000 rows. Never the whole report in memory.
    encode = json.JSONEncoder(ensure_ascii=False, separators=(",\n", ": ")).encode
    it = iter(rows)
    out.write("[")
    first = True
    while chunk := [dict(zip(columns, row, strict=True)) for row in islice(it, 1000)]:
        out.write(("\n" if first else ",\n") + encode(chunk)[1:-1])
        first = False
    out.write("\n]\n" if not first else "]\n")


def _md_cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def render_markdown(rows: Iterable[Row], out: TextIO, columns: Sequence[str] = REPORT_COLUMNS) -> None:
    """A GitHub-flavoured Markdown table."""
    out.write("| " + " | ".join(columns) + " |\n|" + "|".join("---" for _ in columns) + "|\n")
    for row in rows:
        out.write("| " + " | ".join(_md_cell(v) for v in row) + " |\n")


def render_table(rows: Iterable[Row], out: TextIO, columns: Sequence[str] = REPORT_COLUMNS) -> None:
    """An aligned plain-text table for terminals; numbers right-aligned."""
    rows = list(rows)
    cells = [[_md_cell(v) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    numeric = [bool(rows) and all(isinstance(row[i], (int, float)) for row in rows) for i in range(len(columns))]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)]
        return "  ".join(parts).rstrip() + "\n"

    out.write(line(list(columns)) + line(["-" * w for w in widths]))
    out.writelines(line(r) for r in cells)
    if not rows:
        out.write("(no models yet)\n")


Renderer = Callable[[Iterable[Row], TextIO], None]
RENDERERS: dict[str, Renderer] = {
    "csv": render_csv,
    "json": render_json,
    "markdown": render_markdown,
    "table": render_table,
}


def render(fmt: str, rows: Iterable[Row]) -> str:
    """Render to a string (for small outputs and tests)."""
    out = io.StringIO()
    RENDERERS[fmt](rows, out)
    return out.getvalue()


def write_atomic(path: Path, produce: Callable[[TextIO], object], mode: int = 0o640) -> None:
    """Write through a temp file in the same folder and ``os.replace`` it over ``path``; durable
    once it returns. ``produce(fh)`` writes the content. On any failure the old file stays."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            produce(fh)
            fh.flush()
            os.fchmod(fh.fileno(), mode)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_reports(rows: Callable[[], Iterable[Row]], report_dir: Path, formats: Iterable[str]) -> list[Path]:
    """Regenerate each report file in ``report_dir``, streaming a fresh ``rows()`` into each."""
    written = []
    for fmt in formats:
        renderer = RENDERERS[fmt]

        def produce(fh: TextIO, renderer: Renderer = renderer) -> None:
            renderer(rows(), fh)

        target = report_dir / FILE_NAMES[fmt]
        write_atomic(target, produce)
        written.append(target)
    return written
