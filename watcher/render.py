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
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice
from json.encoder import encode_basestring
from pathlib import Path
from typing import Any, Protocol, TextIO

from watcher.schema import REPORT_COLUMNS

Row = Sequence[Any]  # values in REPORT_COLUMNS order

#: File name of each report format.
FILE_NAMES = {"csv": "report.csv", "json": "report.json", "markdown": "report.md", "html": "report.html"}


class _Sink(Protocol):
    """One format, rendered a chunk of rows at a time: ``add`` each chunk, then ``end`` once."""

    def add(self, rows: list[Row]) -> None: ...

    def end(self) -> None: ...


class _Csv:
    """RFC 4180 CSV with a header line."""

    # The report's own rows (TEXT/REAL NOT NULL) rarely hold a character that needs quoting, so a
    # chunk is first formatted plainly (much faster than csv.writer); it is kept only if it holds
    # exactly one comma per column gap and one newline per row and no quote or carriage return,
    # where csv.writer would have quoted nothing and written the same text (floats as repr, like
    # csv). Any other chunk goes through csv.writer.
    _template = "%s,%s,%r,%r,%s,%s\n"  # REPORT_COLUMNS: the two scores are REAL

    def __init__(self, out: TextIO, columns: Sequence[str]) -> None:
        self.out = out
        self.writer = csv.writer(out, lineterminator="\n")
        self.writer.writerow(columns)
        self.fast = tuple(columns) == REPORT_COLUMNS

    def add(self, rows: list[Row]) -> None:
        if self.fast:
            t = self._template
            text = "".join([t % tuple(row) for row in rows])
            if (
                text.count(",") == (len(REPORT_COLUMNS) - 1) * len(rows)
                and text.count("\n") == len(rows)
                and '"' not in text
                and "\r" not in text
            ):
                self.out.write(text)
                return
        self.writer.writerows(rows)

    def end(self) -> None:
        pass


class _Json:
    """A JSON array of objects (one per model, keys in column order), one key or value per line."""

    # Encoded a chunk of rows per call of the C encoder: per-row dumps() calls, or indent= (which
    # falls back to the pure-Python encoder), cost seconds at 100,000 rows.
    _encode = json.JSONEncoder(ensure_ascii=False, separators=(",\n", ": ")).encode
    # The report's own rows have fixed types (TEXT/REAL NOT NULL): filling a template with the C
    # string escaper and float repr (what the encoder itself uses) is cheaper than building a
    # dict per row. Output is identical (a test compares both).
    _template = "{" + ",\n".join(f'"{c}": %s' for c in REPORT_COLUMNS) + "}"

    def __init__(self, out: TextIO, columns: Sequence[str]) -> None:
        self.out, self.columns, self.first = out, columns, True
        self.fast = tuple(columns) == REPORT_COLUMNS
        out.write("[")

    def add(self, rows: list[Row]) -> None:
        if self.fast:
            e, t = encode_basestring, self._template
            text = ",\n".join([t % (e(m), e(i), repr(x), repr(y), e(d), e(p)) for m, i, x, y, d, p in rows])
        else:
            text = self._encode([dict(zip(self.columns, row, strict=True)) for row in rows])[1:-1]
        self.out.write(("\n" if self.first else ",\n") + text)
        self.first = False

    def end(self) -> None:
        self.out.write("]\n" if self.first else "\n]\n")


class _Markdown:
    """A GitHub-flavoured Markdown table."""

    def __init__(self, out: TextIO, columns: Sequence[str]) -> None:
        self.out = out
        out.write("| " + " | ".join(columns) + " |\n|" + "|".join("---" for _ in columns) + "|\n")

    def add(self, rows: list[Row]) -> None:
        self.out.writelines("| " + " | ".join(_md_cell(v) for v in row) + " |\n" for row in rows)

    def end(self) -> None:
        pass


#: Formats that render rows as they stream by, a chunk at a time (so one pass can feed several).
_STREAMING: dict[str, Callable[[TextIO, Sequence[str]], _Sink]] = {"csv": _Csv, "json": _Json, "markdown": _Markdown}
_CHUNK = 1000


def _stream(fmt: str, rows: Iterable[Row], out: TextIO, columns: Sequence[str]) -> None:
    sink = _STREAMING[fmt](out, columns)
    it = iter(rows)
    while chunk := list(islice(it, _CHUNK)):
        sink.add(chunk)
    sink.end()


def render_csv(rows: Iterable[Row], out: TextIO, columns: Sequence[str] = REPORT_COLUMNS) -> None:
    """RFC 4180 CSV with a header line."""
    _stream("csv", rows, out, columns)


def render_json(rows: Iterable[Row], out: TextIO, columns: Sequence[str] = REPORT_COLUMNS) -> None:
    """A JSON array of objects (one per model, keys in column order), one key or value per line.
    Never the whole report in memory."""
    _stream("json", rows, out, columns)


def _md_cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def render_markdown(rows: Iterable[Row], out: TextIO, columns: Sequence[str] = REPORT_COLUMNS) -> None:
    """A GitHub-flavoured Markdown table."""
    _stream("markdown", rows, out, columns)


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


@contextlib.contextmanager
def atomic_file(path: Path, mode: int = 0o640) -> Iterator[TextIO]:
    """A temp file in ``path``'s folder to write into; on leaving without an error it is made
    durable and ``os.replace``-d over ``path``. On any failure the old file stays."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            yield fh
            fh.flush()
            os.fchmod(fh.fileno(), mode)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_atomic(path: Path, produce: Callable[[TextIO], object], mode: int = 0o640) -> None:
    """Write ``path`` through :func:`atomic_file`; ``produce(fh)`` writes the content."""
    with atomic_file(path, mode) as fh:
        produce(fh)


def write_reports(rows: Callable[[], Iterable[Row]], report_dir: Path, formats: Sequence[str]) -> list[Path]:
    """Regenerate each report file in ``report_dir`` (csv, json, markdown) from one pass over
    ``rows()``: the query runs once however many formats there are. Each file is replaced
    atomically."""
    targets = [report_dir / FILE_NAMES[fmt] for fmt in formats]
    with contextlib.ExitStack() as stack:
        sinks = [
            _STREAMING[fmt](stack.enter_context(atomic_file(target)), REPORT_COLUMNS)
            for fmt, target in zip(formats, targets, strict=True)
        ]
        it = iter(rows())
        while chunk := list(islice(it, _CHUNK)):
            for sink in sinks:
                sink.add(chunk)
        for sink in sinks:
            sink.end()
    return targets
