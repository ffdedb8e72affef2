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


#: What a spreadsheet evaluates when a cell starts with it (a formula, or Excel's DDE): such a text
#: cell gets a leading ``'`` in the CSV and Markdown reports, as OWASP's "CSV Injection" page advises.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_FORMULA_CHARS = frozenset(FORMULA_START)
_BOOL = ("false", "true")
_REAL = ("optimal_threshold", "closest_recall_value", "target_recall")  # written as repr, as json does


def neutralise(cell: str) -> str:
    """``cell`` with a leading ``'`` when a spreadsheet would evaluate it; else unchanged."""
    return "'" + cell if cell.startswith(FORMULA_START) else cell


def _as_text(columns: Sequence[str]) -> Callable[[Row], list[Any]]:
    """A row's cells as a spreadsheet should import them: text cells neutralised, ``target_met``
    as true/false, numbers left as they are."""
    flag = columns.index("target_met") if "target_met" in columns else -1

    def convert(row: Row) -> list[Any]:
        cells = [neutralise(v) if isinstance(v, str) else v for v in row]
        if flag >= 0 and not isinstance(row[flag], str):
            cells[flag] = _BOOL[bool(row[flag])]
        return cells

    return convert


class _Csv:
    """RFC 4180 CSV with a header line; text cells a spreadsheet would evaluate are neutralised."""

    # The report's own rows (TEXT/REAL NOT NULL) rarely hold a character that needs quoting, so a
    # chunk is first formatted plainly (much faster than csv.writer); it is kept only if it holds
    # exactly one comma per column gap and one newline per row, no quote or carriage return, and
    # no cell starting with a formula character, where csv.writer would have quoted nothing and
    # written the same text (floats as repr, like csv). Any other chunk goes through csv.writer.
    _template = "%s,%s,%r,%r,%r,%s,%s,%s\n"  # REPORT_COLUMNS: three REAL, then target_met

    def __init__(self, out: TextIO, columns: Sequence[str]) -> None:
        self.out = out
        self.writer = csv.writer(out, lineterminator="\n")
        self.writer.writerow(columns)
        self.fast = tuple(columns) == REPORT_COLUMNS
        self.as_text = _as_text(columns)

    def add(self, rows: list[Row]) -> None:
        if self.fast:
            t, b = self._template, _BOOL
            text = "".join([t % (m, i, x, y, r, b[k], d, p) for m, i, x, y, r, k, d, p in rows])
            # The first character of every text cell, in one string: a third of the time of
            # searching the text for a separator followed by each formula character.
            starts = "".join([m[:1] + i[:1] + d[:1] + p[:1] for m, i, _x, _y, _r, _k, d, p in rows])
            if (
                text.count(",") == (len(REPORT_COLUMNS) - 1) * len(rows)
                and text.count("\n") == len(rows)
                and '"' not in text
                and "\r" not in text
                and _FORMULA_CHARS.isdisjoint(starts)
            ):
                self.out.write(text)
                return
        self.writer.writerows(map(self.as_text, rows))

    def end(self) -> None:
        pass


class _Json:
    """A JSON array of objects (one per model, keys in column order), one key or value per line;
    ``target_met`` as a boolean. Values are as stored (nothing neutralised: this is for programs)."""

    # Encoded a chunk of rows per call of the C encoder: per-row dumps() calls, or indent= (which
    # falls back to the pure-Python encoder), cost seconds at 100,000 rows.
    _encode = json.JSONEncoder(ensure_ascii=False, separators=(",\n", ": ")).encode
    # The report's own rows have fixed types (TEXT/REAL/INTEGER NOT NULL): filling a template with
    # the C string escaper and float repr (what the encoder itself uses) takes half the time of
    # building a dict per row. Output is identical (a test compares both).
    _template = "{" + ",\n".join(f'"{c}": %{"r" if c in _REAL else "s"}' for c in REPORT_COLUMNS) + "}"

    def __init__(self, out: TextIO, columns: Sequence[str]) -> None:
        self.out, self.columns, self.first = out, columns, True
        self.fast = tuple(columns) == REPORT_COLUMNS
        self.flag = columns.index("target_met") if "target_met" in columns else -1
        out.write("[")

    def add(self, rows: list[Row]) -> None:
        if self.fast:
            e, t, b = encode_basestring, self._template, _BOOL
            text = ",\n".join([t % (e(m), e(i), x, y, r, b[k], e(d), e(p)) for m, i, x, y, r, k, d, p in rows])
        else:
            objects = [dict(zip(self.columns, row, strict=True)) for row in rows]
            if self.flag >= 0:
                key = self.columns[self.flag]
                for obj in objects:
                    obj[key] = bool(obj[key])
            text = self._encode(objects)[1:-1]
        self.out.write(("\n" if self.first else ",\n") + text)
        self.first = False

    def end(self) -> None:
        self.out.write("]\n" if self.first else "\n]\n")


class _Markdown:
    """A GitHub-flavoured Markdown table; text cells a spreadsheet would evaluate are neutralised
    (a table pasted from a rendered page lands in one)."""

    def __init__(self, out: TextIO, columns: Sequence[str]) -> None:
        self.out = out
        self.as_text = _as_text(columns)
        out.write("| " + " | ".join(columns) + " |\n|" + "|".join("---" for _ in columns) + "|\n")

    def add(self, rows: list[Row]) -> None:
        self.out.writelines("| " + " | ".join(_md_cell(v) for v in self.as_text(row)) + " |\n" for row in rows)

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


def render_table(
    rows: Iterable[Row], out: TextIO, columns: Sequence[str] = REPORT_COLUMNS, empty: str = "(no models yet)"
) -> None:
    """An aligned plain-text table for terminals; numbers right-aligned; ``empty`` below the
    header when there is no row."""
    rows = list(rows)
    flag = columns.index("target_met") if "target_met" in columns else -1
    cells = [[_BOOL[bool(v)] if i == flag else _md_cell(v) for i, v in enumerate(row)] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    numeric = [
        bool(rows) and i != flag and all(isinstance(row[i], (int, float)) for row in rows) for i in range(len(columns))
    ]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)]
        return "  ".join(parts).rstrip() + "\n"

    out.write(line(list(columns)) + line(["-" * w for w in widths]))
    out.writelines(line(r) for r in cells)
    if not rows:
        out.write(empty + "\n")


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
