"""The fleet's table files (CSV, JSON, Markdown), kept current by rendering again only the models
that the central change log says a batch touched.

Writing every row again after each shipped batch costs about half a second of the server's and
the publisher's time at 100,000 models (the ``report`` view read whole, twice: once for the CSV,
once for the JSON), and far more on a busy machine. So :class:`FleetTables` (the splicing of
:class:`watcher.reports.tables.SplicedFiles`, as the daemon's own table files) remembers where each
model's row lies in the files it wrote, reads from the server only the rows of the models touched
since, and writes each file as the old file's unchanged byte ranges with the new rows between.

With regression checks on (the publisher's ``rules``), every row also carries ``regressed`` and
``regression`` (:data:`~watcher.fleet.central.FLEET_REGRESSION_COLUMNS`): its model's newest
experiment judged here (:func:`judged`, :mod:`watcher.regression`) against the fleet's one before
it (the ``experiments`` view), and every format is rendered here by the host's table formats, as
``watcher report --central`` prints it with the same settings. A row still depends only on its
model's rows, so the splicing below holds unchanged.

With the checks off, both paths take each row's text from the same SQL expressions
(:data:`CSV_LINE`, the CSV line as ``watcher report --central --format csv`` prints it, formula
cells neutralised, and ``row_to_json``), so a spliced file has the bytes a whole write gives (a test holds the two equal
after random changes, and the CSV equal to the command's, the JSON to ``row_to_json``'s).

Which models a write must render again: every statement that deletes or inserts rows of
``watcher.results`` logs one row to ``watcher.changes`` in its own transaction (central migration
2), with its paths, and for the rows it deletes their model_ids. A report row depends only on its
model's rows, so the models touched between two snapshots are those of the rows deleted, and those
of the rows inserted (looked up in ``results`` now; if gone again, their deletion names them), by
the transactions visible in the new snapshot and not in the old one (``pg_visible_in_snapshot``;
the log is read in the new snapshot, so it holds exactly those transactions' rows: no window to
wait for, unlike a follower that must not miss a transaction still running).

Everything is read again on the first write of a connection, when the log cannot be read (no
privilege), when ``results`` was rewritten under another file node (TRUNCATE, which fires no
trigger, or VACUUM FULL), when the last write is older than :data:`MAX_GAP` (the log keeps a day),
when a file is not the one written last, and when the changes touch a quarter of the models or more
(:meth:`~watcher.reports.tables.SplicedFiles.splice_few`, the daemon's rule too).
Not covered: rows changed by an ``UPDATE`` (no trigger logs one; no watcher does one, hosts delete
and insert) show at the next whole write, and the log's trimming assumes no writing transaction
runs for most of a day.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import psycopg

from watcher import regression
from watcher.fleet import central
from watcher.regression import Rules
from watcher.reports.formats import FILE_NAMES, FORMULA_START, TABLE_FORMATS, Row, TableFormat
from watcher.reports.tables import SplicedFiles

#: The last write older than this: read everything (the change log drops entries after a day).
MAX_GAP = timedelta(hours=1)

_COLS = central.FLEET_COLUMNS
_TEXT = ("model_id", "issuer", "experiment_date", "host", "path")


def _csv_cell(column: str) -> str:
    """A text column as the host's CSV writes it (:mod:`watcher.reports.formats`, ``csv.writer``): a cell a
    spreadsheet would evaluate gets a leading ``'`` (:data:`~watcher.reports.formats.FORMULA_START`), then
    the cell is quoted when it holds the delimiter, the quote or LF (``csv.writer`` leaves a CR
    inside a cell unquoted); quotes inside doubled."""
    starts = ", ".join(f"chr({ord(c)})" for c in FORMULA_START)
    cell = f"(CASE WHEN left({column}, 1) IN ({starts}) THEN chr(39) || {column} ELSE {column} END)"
    return f"""CASE WHEN {cell} ~ '[",\\n]' THEN '"' || replace({cell}, '"', '""') || '"' ELSE {cell} END"""


def _csv_number(column: str) -> str:
    """A double as Python's ``repr`` writes it: the server's shortest round-trip text, with ``.0``
    after a whole number (``0`` and ``1`` are ``0.0`` and ``1.0`` in the host's CSV). Where the two
    choose an exponent differs only from 1e15 to 1e16, beyond any threshold or recall."""
    return f"CASE WHEN {column}::text ~ '^-?[0-9]+$' THEN {column}::text || '.0' ELSE {column}::text END"


#: A report row's CSV line (with its newline) over a relation ``r`` of :data:`FLEET_COLUMNS`:
#: byte for byte what ``watcher report --central --format csv`` prints for that row (numbers by
#: :func:`_csv_number`; every column is NOT NULL).
CSV_LINE = (
    " || ',' || ".join(_csv_cell(f"r.{c}") if c in _TEXT else _csv_number(f"r.{c}") for c in _COLS) + " || chr(10)"
)
JSON_TEXT = "row_to_json(r)::text"
_REPORT = f"SELECT {', '.join(_COLS)} FROM watcher.report r"
#: The report's columns, then the point of the row's experiment and of the fleet's one before it
#: (a filter on the models must name ``e.model_id`` too, or the view's window runs over every row).
JUDGED_SOURCE = (
    f"SELECT {', '.join('r.' + c for c in _COLS)}, e.target_met, e.previous_met, e.previous_recall,"
    " e.previous_threshold FROM watcher.report r"
    " JOIN watcher.experiments e ON e.model_id = r.model_id AND e.host = r.host AND e.path = r.path"
)
_POINT = ("target_met", "previous_met", "previous_recall", "previous_threshold")


def judged(row: Sequence[Any], rules: Rules) -> tuple[Any, ...]:
    """A row of :data:`JUDGED_SOURCE`'s columns as the report row with its verdict after it
    (:data:`~watcher.fleet.central.FLEET_REGRESSION_COLUMNS`): ``regressed`` 0 or 1, and
    ``regression`` the reasons joined by ``"; "`` (empty for the model's first experiment)."""
    n = len(_COLS)
    report, (met, previous_met, previous_recall, previous_threshold) = tuple(row[:n]), row[n:]
    if previous_met is None:  # the model's first experiment
        return (*report, 0, "")
    found = regression.reasons(
        regression.Point(previous_met, previous_recall, previous_threshold),
        regression.Point(met, report[_COLS.index("closest_recall_value")], report[_COLS.index("optimal_threshold")]),
        rules,
    )
    return (*report, int(bool(found)), "; ".join(found))


class _Rendered:
    """A table format whose rows come rendered by the server: the text is ``row[index]``."""

    def __init__(self, index: int, head: str, sep: str, tail: str, empty: str) -> None:
        self.index, self.head, self.sep, self.tail, self.empty = index, head, sep, tail, empty

    def texts(self, rows: list[Row]) -> list[str]:
        i = self.index
        return [row[i] for row in rows]


class _Typed:
    """A format rendered here (Markdown) from the typed columns, ``row[index:]``."""

    def __init__(self, index: int, table: TableFormat) -> None:
        self.index, self.table = index, table
        self.head, self.sep, self.tail, self.empty = table.head, table.sep, table.tail, table.empty

    def texts(self, rows: list[Row]) -> list[str]:
        i = self.index
        return self.table.texts([row[i:] for row in rows])


class _Judged:
    """A format rendered here with the verdict columns, from ``row[index:]`` judged by ``rules``."""

    def __init__(self, index: int, table: TableFormat, rules: Rules) -> None:
        self.index, self.table, self.rules = index, table, rules
        self.head, self.sep, self.tail, self.empty = table.head, table.sep, table.tail, table.empty

    def texts(self, rows: list[Row]) -> list[str]:
        i, rules = self.index, self.rules
        return self.table.texts([judged(row[i:], rules) for row in rows])


class _Mark(NamedTuple):
    """The snapshot a write read, the server's time then, and ``results``' file node."""

    snapshot: str
    at: datetime
    filenode: int


_MARK = (
    "SELECT pg_current_snapshot()::text, now(), pg_relation_filenode('watcher.results'),"
    " has_table_privilege('watcher.changes', 'SELECT')"
)
_GONE = (
    "SELECT DISTINCT m FROM watcher.changes c, unnest(c.models) m WHERE c.kind = 'results' AND c.op = 'gone'"
    " AND c.tx >= pg_snapshot_xmin(%(s)s::pg_snapshot) AND NOT pg_visible_in_snapshot(c.tx, %(s)s::pg_snapshot)"
)
_NEW = (
    "SELECT DISTINCT r.model_id FROM watcher.changes c, unnest(c.paths) p, watcher.results r"
    " WHERE c.kind = 'results' AND c.op = 'new' AND r.host = c.host AND r.path = p"
    " AND c.tx >= pg_snapshot_xmin(%(s)s::pg_snapshot) AND NOT pg_visible_in_snapshot(c.tx, %(s)s::pg_snapshot)"
)


class FleetTables(SplicedFiles):
    """The fleet's table files of ``formats`` (csv, json, markdown; others left out) in
    ``out_dir``, written in that order: CSV first; with ``rules``, the regression columns too.
    One thread uses it (the publisher's)."""

    def __init__(self, out_dir: Path, formats: Sequence[str], rules: Rules | None = None) -> None:
        kept = sorted((f for f in formats if f in TABLE_FORMATS), key=list(TABLE_FORMATS).index)
        self.columns = ["r.model_id"]
        self.source = _REPORT if rules is None else JUDGED_SOURCE
        tables: dict[str, TableFormat] = {}
        if rules is not None and kept:  # every format from the same typed, judged columns
            judged_columns = central.FLEET_REGRESSION_COLUMNS
            for fmt in kept:
                tables[fmt] = _Judged(1, TABLE_FORMATS[fmt](judged_columns), rules)
            self.columns.extend(f"r.{c}" for c in (*_COLS, *_POINT))
        for fmt in kept if rules is None else ():
            if fmt == "csv":
                head = ",".join(_COLS) + "\n"
                tables[fmt] = _Rendered(len(self.columns), head, "", "", head)
                self.columns.append(CSV_LINE)
            elif fmt == "json":
                tables[fmt] = _Rendered(len(self.columns), "[\n", ",\n", "\n]\n", "[]\n")
                self.columns.append(JSON_TEXT)
            else:
                tables[fmt] = _Typed(len(self.columns), TABLE_FORMATS[fmt](_COLS))
                self.columns.extend(f"r.{c}" for c in _COLS)
        super().__init__(tables, {f: out_dir / FILE_NAMES[f] for f in kept})
        self.mark: _Mark | None = None  # what the files were last written from

    def reset(self) -> None:
        """Forget what was written: the next write reads everything (a new connection: the
        publisher may have missed anything meanwhile, and a new server may be another one)."""
        self.mark = None

    def write(self, conn: psycopg.Connection[Any]) -> list[Path]:
        """Bring every file to the newest committed state, read in one read-only snapshot on
        ``conn`` (not in a transaction); each file is replaced atomically, and left alone when no
        report row changed. Raises what psycopg and the file system raise; after any failure the
        next write reads everything."""
        if not self.formats:
            return []
        kept, self.mark = self.mark, None  # set again only once every file is written
        with conn.transaction(), contextlib.ExitStack() as stack:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            conn.execute("SET LOCAL work_mem = '64MB'")  # the report's sort, in memory
            row = conn.execute(_MARK).fetchone()  # the first query: it takes the snapshot
            assert row is not None
            snapshot, at, filenode, logged = row
            mark = _Mark(snapshot, at, filenode)
            if (
                kept is not None
                and logged
                and self.sorted
                and kept.filenode == filenode
                and at - kept.at < MAX_GAP
                and (sources := self._open_written(stack)) is not None
            ):
                touched = self._touched(conn, kept.snapshot)
                if not touched:
                    self.mark = mark
                    return list(self.targets.values())
                if self.splice_few(touched, lambda models: self._rows(conn, sorted(models)), sources):
                    self.mark = mark
                    return list(self.targets.values())
            with conn.cursor() as cur:
                self._write_whole(cur.execute(self._query(None)))
            self.full_reads += 1
            self.mark = mark
        return list(self.targets.values())

    def _touched(self, conn: psycopg.Connection[Any], since: str) -> set[str]:
        """The model_ids whose rows changed in transactions visible now and not in ``since``."""
        args = {"s": since}
        return {m for (m,) in conn.execute(_GONE, args)} | {m for (m,) in conn.execute(_NEW, args)}

    def _rows(self, conn: psycopg.Connection[Any], models: list[str]) -> list[Row]:
        return conn.execute(self._query(models), {"m": models}).fetchall()

    def _query(self, models: list[str] | None) -> bytes:
        where = "" if models is None else " WHERE r.model_id = ANY(%(m)s::text[])"
        if models is not None and self.source is JUDGED_SOURCE:  # the view's window, only over these models
            where += " AND e.model_id = ANY(%(m)s::text[])"
        return f"SELECT {', '.join(self.columns)} FROM ({self.source}{where}) r ORDER BY r.model_id".encode()
