"""The report's formats: CSV, JSON, Markdown and the terminal table, rendered from rows to a text
stream. Pure: no file is opened here (:mod:`watcher.reports.files` writes them).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import chain, islice
from json.encoder import encode_basestring
from operator import itemgetter
from typing import Any, Protocol, TextIO

from watcher.schema import POINT_COLUMNS, REGRESSION_REPORT_COLUMNS, REPORT_COLUMNS

Row = Sequence[Any]  # values in REPORT_COLUMNS order

#: File name of each report format.
FILE_NAMES = {"csv": "report.csv", "json": "report.json", "markdown": "report.md", "html": "report.html"}
#: File name of each table format's operating points file (written only when the settings ask for
#: more than the primary target's point: ``extra_targets`` or ``extra_pickers``).
POINT_FILE_NAMES = {"csv": "points.csv", "json": "points.json", "markdown": "points.md"}


class TableFormat(Protocol):
    """One table format, rendered a row at a time: a file is ``head``, then the rows' ``texts``
    joined by ``sep``, then ``tail``; with no row at all, ``empty`` alone. A row's text does not
    depend on its neighbours, so a file can be put together from texts rendered at other times
    (:mod:`watcher.reports.tables`)."""

    head: str
    sep: str
    tail: str
    empty: str

    def texts(self, rows: list[Row]) -> list[str]:
        """Each row's text, in order."""
        ...


#: What a spreadsheet evaluates when a cell starts with it (a formula, or Excel's DDE): such a text
#: cell gets a leading ``'`` in the CSV and Markdown reports, as OWASP's "CSV Injection" page advises.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_FORMULA_CHARS = frozenset(FORMULA_START)
_BOOL = ("false", "true")
_REAL = ("optimal_threshold", "closest_recall_value", "target_recall")  # written as repr, as json does


def neutralise(cell: str) -> str:
    """``cell`` with a leading ``'`` when a spreadsheet would evaluate it; else unchanged."""
    return "'" + cell if cell.startswith(FORMULA_START) else cell


#: The 0/1 columns, written as false/true.
_FLAGS = ("target_met", "regressed")


def _flags(columns: Sequence[str]) -> list[int]:
    return [i for i, c in enumerate(columns) if c in _FLAGS]


def _as_text(columns: Sequence[str]) -> Callable[[Row], list[Any]]:
    """A row's cells as a spreadsheet should import them: text cells neutralised, ``target_met``
    and ``regressed`` as true/false, numbers left as they are."""
    flags = _flags(columns)

    def convert(row: Row) -> list[Any]:
        cells = [neutralise(v) if isinstance(v, str) else v for v in row]
        for flag in flags:
            if not isinstance(row[flag], str):
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
    _regressions = "%s,%s,%r,%r,%r,%s,%s,%s,%s,%s\n"  # REGRESSION_REPORT_COLUMNS: then regressed, regression
    sep = tail = ""

    def __init__(self, columns: Sequence[str]) -> None:
        self.buffer = io.StringIO()
        self.writer = csv.writer(self.buffer, lineterminator="\n")
        self.head = self.empty = self._line(columns)
        self.fast = tuple(columns) == REPORT_COLUMNS
        self.fast_regressions = tuple(columns) == REGRESSION_REPORT_COLUMNS
        self.columns = len(columns)
        self.points = tuple(columns) == POINT_COLUMNS
        self.as_text = _as_text(columns)

    def _line(self, cells: Sequence[Any]) -> str:
        self.buffer.seek(0)
        self.buffer.truncate()
        self.writer.writerow(cells)
        return self.buffer.getvalue()

    def texts(self, rows: list[Row]) -> list[str]:
        if self.fast or self.fast_regressions:
            b = _BOOL
            if self.fast:
                t = self._template
                texts = [t % (m, i, x, y, r, b[k], d, p) for m, i, x, y, r, k, d, p in rows]
                # The first character of every text cell, in one string: a third of the time of
                # searching the text for a separator followed by each formula character.
                starts = "".join([m[:1] + i[:1] + d[:1] + p[:1] for m, i, _x, _y, _r, _k, d, p in rows])
            else:
                t = self._regressions
                texts = [t % (m, i, x, y, r, b[k], d, p, b[f], g) for m, i, x, y, r, k, d, p, f, g in rows]
                starts = "".join([m[:1] + i[:1] + d[:1] + p[:1] + g[:1] for m, i, _x, _y, _r, _k, d, p, _f, g in rows])
            text = "".join(texts)
            if (
                text.count(",") == (self.columns - 1) * len(rows)
                and text.count("\n") == len(rows)
                and '"' not in text
                and "\r" not in text
                and _FORMULA_CHARS.isdisjoint(starts)
            ):
                return texts
        elif self.points:
            texts = _point_texts(rows)
            text = "".join(texts)
            starts = "".join([m[:1] + i[:1] + d[:1] + p[:1] for m, i, _k, _t, _x, _y, _p, _f, _a, d, p in rows])
            if (
                text.count(",") == (len(POINT_COLUMNS) - 1) * len(rows)
                and text.count("\n") == len(rows)
                and '"' not in text
                and "\r" not in text
                and _FORMULA_CHARS.isdisjoint(starts)
            ):
                return texts
        return [self._line(self.as_text(row)) for row in rows]


# The operating points CSV's rows (POINT_COLUMNS) have fixed types too: text cells, kind (never
# quoted), then target, precision, fpr and met as a number, true/false or None (an empty cell).
_POINT_CSV = "%s,%s,%s,%s,%r,%r,%s,%s,%s,%s,%s\n"
#: A ``point_sets`` array as Python lists: the stored text starts with its ``[`` (written by the
#: worker, compact), so the decoder's own method without ``json.loads``'s layers around it.
_decode_points = json.JSONDecoder().raw_decode
#: A point's ``met`` in the points files: true/false as ``report.*`` writes ``target_met`` (None
#: for a picker's point).
_MET = {True: "true", False: "false", None: None}


def _point_texts(rows: list[Row]) -> list[str]:
    """Each operating point row's CSV line: the text cells as they are (the caller checks that
    none needs quoting), numbers as repr (as csv writes them), None an empty cell."""
    return [
        _POINT_CSV % (m, i, k, "" if t is None else repr(t), x, y, "" if p is None else repr(p),
                      "" if f is None else repr(f), "" if a is None else a, d, q)
        for m, i, k, t, x, y, p, f, a, d, q in rows
    ]  # fmt: skip


class _Json:
    """A JSON array of objects (one per model, keys in column order), one key or value per line;
    ``target_met`` as a boolean. Values are as stored (nothing neutralised: this is for programs)."""

    # Per-row dumps() calls with indent= (which falls back to the pure-Python encoder) cost seconds
    # at 100,000 rows; this encoder is the C one.
    _encode = json.JSONEncoder(ensure_ascii=False, separators=(",\n", ": ")).encode
    # The report's own rows have fixed types (TEXT/REAL/INTEGER NOT NULL): filling a template with
    # the C string escaper and float repr (what the encoder itself uses) takes half the time of
    # building a dict per row. Output is identical (a test compares both).
    _template = "{" + ",\n".join(f'"{c}": %{"r" if c in _REAL else "s"}' for c in REPORT_COLUMNS) + "}"
    head, sep, tail, empty = "[\n", ",\n", "\n]\n", "[]\n"

    def __init__(self, columns: Sequence[str]) -> None:
        self.columns = columns
        self.fast = tuple(columns) == REPORT_COLUMNS
        self.flags = [columns[i] for i in _flags(columns)]

    def texts(self, rows: list[Row]) -> list[str]:
        if self.fast:
            e, t, b = encode_basestring, self._template, _BOOL
            return [t % (e(m), e(i), x, y, r, b[k], e(d), e(p)) for m, i, x, y, r, k, d, p in rows]
        objects = [dict(zip(self.columns, row, strict=True)) for row in rows]
        for key in self.flags:
            for obj in objects:
                obj[key] = bool(obj[key])
        # The array's item separator is ",\n" too, so an object's text is what it is in the array.
        return [self._encode(obj) for obj in objects]


def _plain_cells(cells: Iterable[str]) -> bool:
    """True when none of these text cells needs quoting in a CSV file (no comma, quote, newline or
    carriage return) or neutralising (none starts with a formula character): the cells joined
    by NUL, which no text cell holds, and searched in C."""
    text = "\0".join(cells)
    return not (
        text[:1] in _FORMULA_CHARS or any(c in text for c in ',"\n\r') or any("\0" + c in text for c in FORMULA_START)
    )


class _PointSets:
    """One table format's operating points file, rendered from report rows (in ``columns`` order)
    that carry their file's ``point_sets`` text last (None when the file has its primary point
    alone): the points files are read in the report's own pass.

    CSV and Markdown have a row per model and point (POINT_COLUMNS); JSON an object per model,
    its ``points`` the stored arrays ([kind, target, threshold, recall, precision, fpr, met]).
    The stored text is the worker's compact JSON (:func:`watcher.judge._points_json`): every
    number as its repr, a kind a plain name, ``met`` a JSON literal. So the CSV's cells are cut
    out of it as they stand, and the JSON's arrays are it: no decode and no repr again, and the
    bytes the decoded rows give (a test compares them). A text not in that form (a space in it)
    and a chunk with a cell to quote or neutralise go through the decoded rows."""

    _json = '{"model_id": %s,\n"issuer": %s,\n"experiment_date": %s,\n"path": %s,\n"points": %s}'

    def __init__(self, fmt: str, columns: Sequence[str]) -> None:
        self.fmt = fmt
        self.table = TABLE_FORMATS[fmt](POINT_COLUMNS) if fmt != "json" else _Json(REPORT_COLUMNS)
        self.head, self.sep, self.tail, self.empty = self.table.head, self.table.sep, self.table.tail, self.table.empty
        cells = ("model_id", "issuer", "target_recall", "optimal_threshold", "closest_recall_value", "target_met",
                 "experiment_date", "path")  # fmt: skip
        self.cells = itemgetter(*(list(columns).index(c) for c in cells))
        texts = ("model_id", "issuer", "experiment_date", "path")
        self.text_cells = itemgetter(*(list(columns).index(c) for c in texts))

    def rows(self, rows: list[Row]) -> Iterator[Row]:
        """The POINT_COLUMNS rows of these report rows: each model's points, in the stored order."""
        decode, met = _decode_points, _MET
        for row in rows:
            m, i, t, x, y, k, d, q = self.cells(row)
            if row[-1] is None:
                yield m, i, "recall", t, x, y, None, None, _BOOL[bool(k)], d, q
            else:
                for kind, target, threshold, recall, p, f, a in decode(row[-1])[0]:
                    yield m, i, kind, target, threshold, recall, p, f, met[a], d, q

    def texts(self, rows: list[Row]) -> list[str]:
        if self.fmt == "json":
            return self._objects(rows)
        if self.fmt == "csv":
            sets = [row[-1] for row in rows if row[-1] is not None]
            stored = "".join(sets)
            points = len(sets) + stored.count("],[")  # sets end "]]", points within one "],["
            # The worker's compact text, seven cells a point (always, unless written by hand),
            # and text cells that need no quoting and no neutralising.
            if (
                " " not in stored
                and stored.count(",") == 6 * points + points - len(sets)
                and _plain_cells(chain.from_iterable(map(self.text_cells, rows)))
            ):
                return self._csv(rows)
        return self.table.texts(list(self.rows(rows)))

    def _csv(self, rows: list[Row]) -> list[str]:
        texts: list[str] = []
        append = texts.append
        for row in rows:
            m, i, t, x, y, k, d, q = self.cells(row)
            if row[-1] is None:
                append(f"{m},{i},recall,{t!r},{x!r},{y!r},,,{_BOOL[bool(k)]},{d},{q}\n")
            else:  # [["recall",0.85,0.26,0.8527,null,null,true],...] -> recall,0.85,0.26,0.8527,,,true
                body = row[-1][2:-2].replace('"', "").replace("null", "")
                head, tail = f"{m},{i},", f",{d},{q}\n"
                append(head + (tail + head).join(body.split("],[")) + tail)
        return texts

    def _objects(self, rows: list[Row]) -> list[str]:
        e, template, b = encode_basestring, self._json, _BOOL
        texts: list[str] = []
        append = texts.append
        for row in rows:
            m, i, t, x, y, k, d, q = self.cells(row)
            points = row[-1]
            if points is None:
                points = f'[["recall",{t!r},{x!r},{y!r},null,null,{b[bool(k)]}]]'
            elif " " in points:  # not the worker's compact text: made so
                points = json.dumps(json.loads(points), separators=(",", ":"))
            append(template % (e(m), e(i), e(d), e(q), points))
        return texts


class _Markdown:
    """A GitHub-flavoured Markdown table; text cells a spreadsheet would evaluate are neutralised
    (a table pasted from a rendered page lands in one)."""

    sep = tail = ""

    def __init__(self, columns: Sequence[str]) -> None:
        self.as_text = _as_text(columns)
        self.head = self.empty = "| " + " | ".join(columns) + " |\n|" + "|".join("---" for _ in columns) + "|\n"

    def texts(self, rows: list[Row]) -> list[str]:
        return ["| " + " | ".join(_md_cell(v) for v in self.as_text(row)) + " |\n" for row in rows]


#: The formats whose files are tables of rows, rendered a row at a time (one pass can feed several).
TABLE_FORMATS: dict[str, Callable[[Sequence[str]], TableFormat]] = {"csv": _Csv, "json": _Json, "markdown": _Markdown}
_CHUNK = 1000


class _Sink:
    """Writes one format's file as chunks of rows go by: ``add`` each chunk's texts, then ``end``."""

    def __init__(self, fmt: TableFormat, out: TextIO) -> None:
        self.fmt, self.out, self.first = fmt, out, True

    def add(self, texts: list[str]) -> None:
        if texts:
            self.out.write((self.fmt.head if self.first else self.fmt.sep) + self.fmt.sep.join(texts))
            self.first = False

    def end(self) -> None:
        self.out.write(self.fmt.empty if self.first else self.fmt.tail)


def render_tables(
    rows: Iterable[Row],
    outs: Mapping[str, TextIO],
    columns: Sequence[str] = REPORT_COLUMNS,
    points: Mapping[str, TextIO] | None = None,
) -> None:
    """Write each table format of ``outs`` (format -> stream) from one pass over ``rows``: the
    rows are read once however many formats there are. With ``points`` (format -> stream of its
    operating points file), each row carries its file's ``point_sets`` text last
    (:meth:`watcher.queries.Queries.report_rows_with_points`), and the points files are written
    in the same pass."""
    tables = [TABLE_FORMATS[fmt](columns) for fmt in outs]
    sinks = [_Sink(table, out) for table, out in zip(tables, outs.values(), strict=True)]
    sets = [_PointSets(fmt, columns) for fmt in points or {}]
    set_sinks = [_Sink(table, out) for table, out in zip(sets, (points or {}).values(), strict=True)]
    it = iter(rows)
    while chunk := list(islice(it, _CHUNK)):
        if sets:
            for points_file, sink in zip(sets, set_sinks, strict=True):
                sink.add(points_file.texts(chunk))
            chunk = [row[:-1] for row in chunk]
        for table, sink in zip(tables, sinks, strict=True):
            sink.add(table.texts(chunk))
    for sink in [*sinks, *set_sinks]:
        sink.end()


def _stream(fmt: str, rows: Iterable[Row], out: TextIO, columns: Sequence[str]) -> None:
    render_tables(rows, {fmt: out}, columns)


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
    flags = _flags(columns)
    cells = [[_BOOL[bool(v)] if i in flags else _md_cell(v) for i, v in enumerate(row)] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    numeric = [
        bool(rows) and i not in flags and all(isinstance(row[i], (int, float)) for row in rows)
        for i in range(len(columns))
    ]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)]
        return "  ".join(parts).rstrip() + "\n"

    out.write(line(list(columns)) + line(["-" * w for w in widths]))
    out.writelines(line(r) for r in cells)
    if not rows:
        out.write(empty + "\n")


Renderer = Callable[..., None]  # (rows, out, columns=REPORT_COLUMNS)
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
