"""What readers ask the database: the report (with its filters and order), the HTML page's
columns, a model's earlier outcomes, the rejections, the counts and the history as it grows.

A mixin of :class:`watcher.store.Store`; every query here only reads, so a read-only store
(:meth:`watcher.store.Store.open_readonly`) can run them while the daemon writes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

import sqlite_utils

from watcher.schema import REGRESSION_REPORT_COLUMNS, REPORT_COLUMNS

_DETAIL_COLUMNS = (
    "model_id", "issuer", "optimal_threshold", "closest_recall_value", "experiment_date", "path",
    "target_recall", "target_met", "n_points", "curve",
)  # fmt: skip

# A result's regression reasons as one text ("" when none).
_REASONS = "(SELECT coalesce(group_concat(value, '; '), '') FROM json_each(regression))"
# The report view with each row's regression verdict, the reasons as one text.
_REPORT_REGRESSIONS = (
    f"(SELECT v.*, r.regressed, {_REASONS.replace('(regression)', '(r.regression)')} AS regression"
    " FROM report v JOIN results r ON r.path = v.path)"
)

# The history entries `watcher follow` shows, by (rejected_only, regressed_only): a scored entry
# has a detail only when its file regressed.
_ONLY = {
    (False, False): "",
    (True, False): " AND h.outcome = 'rejected'",
    (False, True): " AND h.outcome = 'scored' AND h.detail IS NOT NULL",
    (True, True): " AND (h.outcome = 'rejected' OR (h.outcome = 'scored' AND h.detail IS NOT NULL))",
}

# The history entries of a span of ids (an id range along the primary key).
_SPAN = "id > :after AND id <= :upto"
# The drawn curve's bytes; rows stored before rules version 3 hold none (text then) until re-judged.
_CURVE = "iif(typeof(curve) = 'blob', curve, x'')"


class Queries:
    """Read-only queries; :class:`watcher.store.Store` provides the connection."""

    db: sqlite_utils.Database

    def report_rows(
        self,
        issuer: str | None = None,
        model: str | None = None,
        below_target: bool = False,
        sort: str | None = None,
        desc: bool = False,
        regressions: bool = False,
        regressed_only: bool = False,
    ) -> Iterator[tuple[Any, ...]]:
        """The ``report`` view (tuples in REPORT_COLUMNS order), optionally filtered by issuer,
        model_id prefix, or to the models whose best point misses the target; sorted by ``sort``
        (one of REPORT_COLUMNS; descending with ``desc``), then by model_id. A cursor: rows stream,
        they are not all in memory. With ``regressions``, in REGRESSION_REPORT_COLUMNS order, and
        ``regressed_only`` keeps the models whose newest experiment regressed."""
        columns = REGRESSION_REPORT_COLUMNS if regressions or regressed_only else REPORT_COLUMNS
        source = _REPORT_REGRESSIONS if regressions or regressed_only else "report"
        sql = f"SELECT {', '.join(columns)} FROM {source} WHERE 1"
        args: dict[str, Any] = {}
        if issuer:
            sql += " AND issuer = :issuer COLLATE NOCASE"
            args["issuer"] = issuer
        if model:
            sql += " AND model_id LIKE :model ESCAPE '\\'"
            args["model"] = model.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        if below_target:
            sql += " AND target_met = 0"
        if regressed_only:
            sql += " AND regressed = 1"
        order = "model_id"
        if sort is not None and sort != "model_id":
            if sort not in columns:
                raise ValueError(f"not a report column: {sort!r}")
            order = f"{sort}{' DESC' if desc else ''}, model_id"
        elif desc:
            order = "model_id DESC"
        return iter(self.db.execute(f"{sql} ORDER BY {order}", args))

    def report_rows_with_points(self, regressions: bool = False) -> Iterator[tuple[Any, ...]]:
        """The ``report`` view's rows as :meth:`report_rows` gives them (by model_id), each with its
        file's ``point_sets`` text last (None when the file has its primary point alone): what the
        report files and the operating points files are rendered from in one pass. A cursor."""
        columns, source = (
            (REGRESSION_REPORT_COLUMNS, _REPORT_REGRESSIONS) if regressions else (REPORT_COLUMNS, "report")
        )
        sql = (
            f"SELECT {', '.join('v.' + c for c in columns)}, p.points FROM {source} v"
            " LEFT JOIN point_sets p ON p.path = v.path ORDER BY v.model_id"
        )
        return iter(self.db.execute(sql))

    def report_mark(self) -> tuple[str | None, int]:
        """Where the history stands: its identity (the first entry's id and time; None when empty)
        and its last id. Every change to ``results`` appends to ``history`` in the same
        transaction, so two marks of one history bound exactly the changes between them."""
        first = self.db.execute("SELECT id, at FROM history ORDER BY id LIMIT 1").fetchone()
        (last,) = self.db.execute("SELECT coalesce(max(id), 0) FROM history").fetchone()
        return (f"{first[0]}:{first[1]}" if first else None), int(last)

    def report_touched(self, after: int, upto: int) -> set[str]:
        """The model_ids whose report row may differ between the history marks ``after`` and
        ``upto`` (see :meth:`report_mark`): those of the paths the entries in between name, as
        ``results`` holds them now and as they were at ``after`` (a path's last entry up to then
        is ``scored`` exactly when it was in ``results``, with that entry's model_id)."""
        span = {"after": after, "upto": upto}
        sql = (
            f"WITH changed AS (SELECT DISTINCT path FROM history WHERE {_SPAN})"
            " SELECT model_id FROM results WHERE path IN changed"
            " UNION SELECT h.model_id FROM changed c JOIN history h"
            " ON h.id = (SELECT max(id) FROM history WHERE path = c.path AND id <= :after)"
            " WHERE h.outcome = 'scored'"
        )
        return {m for (m,) in self.db.execute(sql, span)}

    def report_rows_of(self, models: Iterable[str], regressions: bool = False) -> list[tuple[Any, ...]]:
        """The ``report`` view's rows (REPORT_COLUMNS order; REGRESSION_REPORT_COLUMNS with
        ``regressions``) of these model_ids, in no order; a model_id without results has none."""
        columns, source = (
            (REGRESSION_REPORT_COLUMNS, _REPORT_REGRESSIONS) if regressions else (REPORT_COLUMNS, "report")
        )
        sql = f"SELECT {', '.join(columns)} FROM {source} WHERE model_id IN (SELECT value FROM json_each(?))"
        return self.db.execute(sql, [json.dumps(sorted(models))]).fetchall()

    def report_details(self, limit: int | None = None) -> Iterator[tuple[Any, ...]]:
        """The report's rows with what the HTML page draws: model_id, issuer, optimal_threshold,
        closest_recall_value, experiment_date, path, target_recall, target_met, n_points, curve
        (bytes), by model_id. With ``limit``, only that many models: those with the most recent
        experiments."""
        columns = ", ".join(f"r.{c}" for c in _DETAIL_COLUMNS)
        if limit is None:
            sql = f"SELECT {columns} FROM report v JOIN results r ON r.path = v.path"
        else:
            # Newest first along results_recent, keeping a row only if it is its model's report row
            # (the same rule as the view, looked up in results_latest): reads about ``limit`` rows
            # instead of materialising the whole report to sort it.
            sql = (
                f"SELECT * FROM (SELECT {columns} FROM results r WHERE r.path = ("
                "SELECT l.path FROM results l WHERE l.model_id = r.model_id ORDER BY l.experiment_at DESC, l.path DESC"
                f" LIMIT 1) ORDER BY r.experiment_at DESC, r.path DESC LIMIT {int(limit)})"
            )
        return iter(self.db.execute(sql + " ORDER BY 1"))  # model_id

    def page_columns(self, regressions: bool = False) -> dict[str, Any]:
        """Every current result for the HTML page as columns that SQLite builds in one pass over
        the table (JSON arrays and strings, no Python object per row), in table order: reading
        100,000 rows along an index would cost a random page lookup each.

        Keys: ``ids``, ``issuers``, ``thr``, ``rec``, ``dates``, ``paths`` (JSON arrays), ``met``
        (a ``0``/``1`` string), ``curves`` (the curves' bytes, concatenated); ``npts`` and
        ``targets`` as one number when every row has the same, else a JSON array; ``lengths`` (of
        the curves, in bytes) as one number when every row has the same, else a list; and
        ``order``: the rows' positions by model_id, each model's report row first (the report
        view's rule: latest experiment instant, on a tie the greatest path), then its superseded
        files, read from the covering index ``results_latest`` alone (its entries carry the
        rowid); ``by_path`` and ``by_date``: the positions by path, and by experiment instant then
        path (from the path index and ``results_recent``). With ``regressions``, ``regressed``
        too: each regressed file's position, model_id, path and reasons (joined by "; "), by
        model_id then newest first.
        """
        keys = ("first", "last", "n", "ids", "issuers", "thr", "rec", "met", "dates", "paths", "curves", "lengths")
        same = ("npts", "targets")
        sql_of = {"npts": "n_points", "targets": "target_recall"}
        # One pass, one aggregate per column: SQLite's per-row work is what a page costs.
        row = self.db.execute(
            "SELECT min(rowid), max(rowid), count(*), json_group_array(model_id), json_group_array(issuer),"
            " json_group_array(optimal_threshold), json_group_array(closest_recall_value),"
            " coalesce(group_concat(target_met, ''), ''), json_group_array(experiment_date), json_group_array(path),"
            f" CAST(coalesce(group_concat({_CURVE}, ''), '') AS BLOB), json_group_array(length({_CURVE})), "
            + ", ".join(f"min({sql_of[k]}), max({sql_of[k]})" for k in same)
            + " FROM results"  # a table scan: rowid order
        ).fetchone()
        out: dict[str, Any] = dict(zip(keys, row, strict=False))
        lengths: list[int] = json.loads(out["lengths"])
        if len(out["curves"]) != sum(lengths):  # the blobs as text lost bytes: fetch them as hex
            (text,) = self.db.execute(f"SELECT coalesce(group_concat(hex({_CURVE}), ''), '') FROM results").fetchone()
            out["curves"] = bytes.fromhex(text)
        out["lengths"] = lengths[0] if lengths and min(lengths) == max(lengths) else lengths
        for k, (low, high) in zip(same, zip(row[len(keys) :: 2], row[len(keys) + 1 :: 2], strict=True), strict=True):
            everywhere = low is not None and low == high  # one value in every row (None: no rows)
            out[k] = (
                low
                if everywhere
                else self.db.execute(f"SELECT json_group_array({sql_of[k]}) FROM results").fetchone()[0]
            )
        first, last, n = out.pop("first"), out.pop("last"), out.pop("n")
        # Without gaps in the rowids, a row's position is its rowid minus the first: SQLite
        # computes the positions itself.
        offset = f"rowid - {int(first)}" if n and last - first == n - 1 else "rowid"
        orders = self.db.execute(
            f"SELECT (SELECT json_group_array({offset}) FROM"
            " (SELECT rowid FROM results ORDER BY model_id, experiment_at DESC, path DESC)),"
            f" (SELECT json_group_array({offset}) FROM (SELECT rowid FROM results ORDER BY path)),"
            f" (SELECT json_group_array({offset}) FROM (SELECT rowid FROM results ORDER BY experiment_at, path))"
        ).fetchone()
        positions: list[list[int]] = [json.loads(x) for x in orders]
        if offset == "rowid":
            # In table order (an index's order is another).
            (rowids,) = self.db.execute(
                "SELECT json_group_array(rowid) FROM (SELECT rowid FROM results ORDER BY rowid)"
            ).fetchone()
            position = {rowid: i for i, rowid in enumerate(json.loads(rowids))}
            positions = [[position[r] for r in p] for p in positions]
        out["order"], out["by_path"], out["by_date"] = positions
        if regressions:
            flagged = self.db.execute(
                f"SELECT rowid, model_id, path, {_REASONS} FROM results WHERE regressed = 1"
                " ORDER BY model_id, experiment_at DESC, path DESC"
            ).fetchall()
            at = (lambda r: position[r]) if offset == "rowid" else (lambda r: r - int(first))
            out["regressed"] = [[at(rowid), model_id, path, why] for rowid, model_id, path, why in flagged]
        return out

    def regression_texts(self, paths: Iterable[str]) -> dict[str, str]:
        """Of these stored paths, those that regressed, with their reasons joined by "; "."""
        sql = f"SELECT path, {_REASONS} FROM results WHERE regressed = 1 AND path IN (SELECT value FROM json_each(?))"
        return dict(self.db.execute(sql, [json.dumps(list(paths))]).fetchall())

    def earlier_outcomes(self, limit: int) -> list[tuple[Any, ...]]:
        """Of the newest ``limit`` history entries, those naming a model_id that no current result
        file accounts for (content since replaced, files removed), newest first:
        ``(model_id, at, path, outcome, sha256)``. Such an entry always has a later one for its
        path, so only paths with two entries or more are looked at (found along ``history_path``
        without sorting)."""
        (top,) = self.db.execute("SELECT coalesce(max(id), 0) FROM history").fetchone()
        sql = (
            "SELECT model_id, at, path, outcome, sha256 FROM history h"
            " WHERE path IN (SELECT path FROM history GROUP BY path HAVING count(*) > 1)"
            " AND id > :floor AND model_id IS NOT NULL AND NOT EXISTS"
            " (SELECT 1 FROM results r WHERE r.path = h.path AND r.sha256 IS h.sha256) ORDER BY id DESC"
        )
        return self.db.execute(sql, {"floor": top - int(limit)}).fetchall()

    def rejection_rows(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Current rejections, newest first, with ``errors`` decoded."""
        sql = "SELECT path, errors, rejected_at FROM rejections ORDER BY rejected_at DESC, path"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [{**row, "errors": json.loads(row["errors"])} for row in self.db.query(sql)]

    def counts(self) -> dict[str, int]:
        """Numbers of models in the report, current results, rejections and history entries."""
        row = self.db.execute(
            "SELECT (SELECT count(DISTINCT model_id) FROM results), (SELECT count(*) FROM results),"
            " (SELECT count(*) FROM rejections), (SELECT count(*) FROM history)"
        ).fetchone()
        return dict(zip(("models", "results", "rejections", "history"), row, strict=True))

    def page_counts(self, max_models: int, history_limit: int) -> tuple[int, bool]:
        """For the HTML page: how many models are beyond the newest ``max_models`` (0 when
        all fit), and whether ``history`` holds entries older than its newest ``history_limit``
        ids. Cheap when all fit: models are counted only when the results outnumber
        ``max_models``."""
        (results,) = self.db.execute("SELECT count(*) FROM results").fetchone()
        if results > max_models:
            (models,) = self.db.execute("SELECT count(DISTINCT model_id) FROM results").fetchone()
            results = models
        (older,) = self.db.execute(
            "SELECT EXISTS (SELECT 1 FROM history WHERE id <= (SELECT max(id) FROM history) - :limit)",
            {"limit": int(history_limit)},
        ).fetchone()
        return max(0, results - max_models), bool(older)

    def last_change(self) -> str | None:
        """When the newest outcome in ``history`` was recorded (by a daemon or a scan), or ``None``."""
        row = self.db.execute("SELECT at FROM history ORDER BY id DESC LIMIT 1").fetchone()
        return None if row is None else str(row[0])

    def history_after(
        self, after: int, rejected_only: bool = False, limit: int = 1000, regressed_only: bool = False
    ) -> list[tuple[Any, ...]]:
        """Up to ``limit`` history entries with an id above ``after``, oldest first: id, at, path,
        outcome, sha256, model_id, detail (a rejection's errors as JSON; a regressed scored file's
        ``{"regression": [reason, ...]}``), then, for a scored entry whose file is still stored
        with that content, optimal_threshold, closest_recall_value and target_met, and its other
        operating points (``n`` > 0) as a JSON array of objects, NULL when it has none (else
        NULLs). ``rejected_only``/``regressed_only``: only rejections, only regressed scored files."""
        where = _ONLY[rejected_only, regressed_only]
        points = (
            "(SELECT json_group_array(json_object('kind', kind, 'target', target, 'threshold', threshold,"
            " 'recall', recall, 'precision', precision, 'fpr', fpr, 'met', met)) FROM operating_points"
            " WHERE path = r.path AND n > 0 HAVING count(*) > 0)"
        )
        sql = (
            "SELECT h.id, h.at, h.path, h.outcome, h.sha256, h.model_id, h.detail,"
            f" r.optimal_threshold, r.closest_recall_value, r.target_met, {points}"
            " FROM history h LEFT JOIN results r ON h.outcome = 'scored' AND r.path = h.path AND r.sha256 = h.sha256"
            f" WHERE h.id > ?{where} ORDER BY h.id LIMIT ?"
        )
        return self.db.execute(sql, [after, limit]).fetchall()

    def history_start(self, back: int = 0, rejected_only: bool = False, regressed_only: bool = False) -> int:
        """The id to follow the history from: the newest entry's, or the one before the ``back``
        newest (rejections only with ``rejected_only``, regressed scored files only with
        ``regressed_only``); 0 for an empty history."""
        where = "WHERE 1" + _ONLY[rejected_only, regressed_only].replace("h.", "")
        if back <= 0:
            row = self.db.execute("SELECT coalesce(max(id), 0) FROM history").fetchone()
        else:
            sql = f"SELECT coalesce(min(id) - 1, 0) FROM (SELECT id FROM history {where} ORDER BY id DESC LIMIT ?)"
            row = self.db.execute(sql, [back]).fetchone()
        return int(row[0])

    def scored_details(self, after: int, upto: int) -> dict[int, str]:
        """The details of the ``scored`` history entries with an id above ``after`` and up to
        ``upto`` that have one (a regression's reasons), by id."""
        sql = f"SELECT id, detail FROM history WHERE {_SPAN} AND outcome = 'scored' AND detail IS NOT NULL"
        return {int(i): str(d) for i, d in self.db.execute(sql, {"after": after, "upto": upto})}
