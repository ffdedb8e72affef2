"""The database schema: tables, indexes, the report view, and the migrations between versions.

A database records its version in ``PRAGMA user_version``; :meth:`watcher.store.Store.open`
applies the missing migrations in order, each in one transaction. Migrations are never edited
once released: a change is a new one.
"""

from __future__ import annotations

#: The ``report`` view's columns (since schema version 5): the chosen point, the target it was
#: chosen for and whether it meets it (0/1), then where it comes from.
REPORT_COLUMNS = (
    "model_id", "issuer", "optimal_threshold", "closest_recall_value", "target_recall", "target_met",
    "experiment_date", "path",
)  # fmt: skip

#: The report's columns with regression checks on (``regressions = true``): REPORT_COLUMNS, then
#: whether the model's newest experiment regressed from the one before it (0/1) and why (the
#: reasons joined by "; ", empty when not).
REGRESSION_REPORT_COLUMNS = (*REPORT_COLUMNS, "regressed", "regression")

#: The ``report_points`` view's columns (since schema version 9), as the ``points`` report files
#: show them: each operating point of each model's report row.
POINT_COLUMNS = (
    "model_id", "issuer", "kind", "target", "threshold", "recall", "precision", "fpr", "met", "experiment_date", "path",
)  # fmt: skip

_V1 = """
CREATE TABLE results (
    path TEXT PRIMARY KEY,
    model_id TEXT NOT NULL,
    issuer TEXT NOT NULL,
    experiment_date TEXT NOT NULL,
    experiment_at TEXT NOT NULL,
    optimal_threshold REAL NOT NULL,
    closest_recall_value REAL NOT NULL,
    distance REAL NOT NULL,
    target_met INTEGER NOT NULL,
    target_recall REAL NOT NULL,
    n_points INTEGER NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    inode INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    rules_version INTEGER NOT NULL,
    scored_at TEXT NOT NULL
);
-- Covers the report view: it is read from this index alone, in model_id order.
CREATE INDEX results_latest ON results (
    model_id, experiment_at DESC, path DESC, issuer, optimal_threshold, closest_recall_value, experiment_date
);
CREATE TABLE rejections (
    path TEXT PRIMARY KEY,
    errors TEXT NOT NULL,
    size INTEGER,
    mtime_ns INTEGER,
    inode INTEGER,
    sha256 TEXT,
    rules_version INTEGER NOT NULL,
    rejected_at TEXT NOT NULL
);
CREATE TABLE history (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    path TEXT NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN ('scored', 'rejected', 'removed')),
    sha256 TEXT,
    model_id TEXT,
    detail TEXT
);
CREATE INDEX history_path ON history (path, id);
-- One row per model_id: its file with the latest experiment instant, on a tie the greatest path.
-- SQLite takes the bare columns from the row holding max() (documented behaviour); experiment_at
-- is fixed-width UTC text, so the concatenation orders by (instant, path).
CREATE VIEW report AS
SELECT model_id, issuer, optimal_threshold, closest_recall_value, experiment_date, path
FROM (
    SELECT model_id, issuer, optimal_threshold, closest_recall_value, experiment_date, path,
        max(experiment_at || char(31) || path) AS latest_key
    FROM results
    GROUP BY model_id
);
"""

_V2 = """
CREATE TABLE daemon_status (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    pid INTEGER,
    host TEXT,
    observer TEXT,
    started_at TEXT,
    stopped_at TEXT,
    heartbeat_at TEXT,
    last_event_at TEXT,
    last_reconcile_at TEXT,
    files_scored INTEGER NOT NULL DEFAULT 0,
    files_rejected INTEGER NOT NULL DEFAULT 0,
    files_removed INTEGER NOT NULL DEFAULT 0
);
"""

_V3 = """
-- The drawn curve for the HTML report (downsampled; never used for scoring): SVG points text
-- under rules version 2, bytes from watcher.scoring.curve_bytes since rules version 3.
ALTER TABLE results ADD COLUMN curve TEXT NOT NULL DEFAULT '';
"""

_V4 = """
-- The HTML page shows the most recent models: read them in this order, not by sorting them all.
CREATE INDEX results_recent ON results (experiment_at DESC, path DESC);
-- The same rule as before (per model_id the latest experiment instant, on a tie the greatest path),
-- no longer an aggregate: each row of results_latest is kept if it is the first of its model_id
-- there. A third faster over the whole report, and a filter (issuer, model_id) applies before the
-- lookup instead of after the whole grouping.
DROP VIEW report;
CREATE VIEW report AS
SELECT model_id, issuer, optimal_threshold, closest_recall_value, experiment_date, path
FROM results r
WHERE path = (
    SELECT l.path FROM results l WHERE l.model_id = r.model_id ORDER BY l.experiment_at DESC, l.path DESC LIMIT 1
);
"""

_V5 = """
-- Readers see the target next to the chosen point, and whether it is met. The covering index gets
-- the two columns too, so the report is still read from the index alone.
DROP VIEW report;
DROP INDEX results_latest;
CREATE INDEX results_latest ON results (
    model_id, experiment_at DESC, path DESC, issuer, optimal_threshold, closest_recall_value, target_recall,
    target_met, experiment_date
);
CREATE VIEW report AS
SELECT model_id, issuer, optimal_threshold, closest_recall_value, target_recall, target_met, experiment_date, path
FROM results r
WHERE path = (
    SELECT l.path FROM results l WHERE l.model_id = r.model_id ORDER BY l.experiment_at DESC, l.path DESC LIMIT 1
);
-- |recall - target| as decimal inputs give it (0.05, not the float subtraction's 0.04999999999999993),
-- as watcher.judge now stores it.
UPDATE results SET distance = round(distance, 12);
"""

_V6 = """
-- The polling observer's pace, for `watcher status`: seconds between the last two polls, how long
-- the last full sweep (every file stat'ed) took, and when it ended.
ALTER TABLE daemon_status ADD COLUMN poll_period REAL;
ALTER TABLE daemon_status ADD COLUMN sweep_seconds REAL;
ALTER TABLE daemon_status ADD COLUMN last_sweep_at TEXT;
"""

_V7 = """
-- The folder the running daemon watches, so that `watcher status` can say when it is missing.
ALTER TABLE daemon_status ADD COLUMN watch_dir TEXT;
"""

_V8 = """
-- Regressions (watcher.regression): whether a file's experiment is worse than its model's one
-- before it (0/1), and why (a JSON list of short texts; empty when not flagged). Kept only while
-- the setting `regressions` is on; all 0 otherwise.
ALTER TABLE results ADD COLUMN regressed INTEGER NOT NULL DEFAULT 0;
ALTER TABLE results ADD COLUMN regression TEXT NOT NULL DEFAULT '[]';
"""

_V9 = """
-- The operating points of the scored files that have more than their primary one (extra targets or
-- pickers asked for) or whose primary one carries precision or fpr: one row per file, ``points`` a
-- JSON array of every point of the file, each [kind, target, threshold, recall, precision, fpr,
-- met], in the settings' order (the primary target first, then the extra targets, then the
-- pickers). Written and deleted with the file's results row, in the same transaction. One row per
-- file and no row at all with the primary target alone: a cold scan of 100,000 files with three
-- targets costs about what it costs with one (docs/performance.md).
CREATE TABLE point_sets (
    path TEXT PRIMARY KEY,
    points TEXT NOT NULL
) WITHOUT ROWID;
-- Every operating point of each scored file, one row per (path, n): n is the point's place in the
-- settings (0 the primary target, the point in results); kind 'recall' (chosen for target under the
-- rule) or a picker ('max_f1', 'youden': target and met NULL); precision and fpr NULL when the file
-- has no such array. A file without a point_sets row has its primary point alone, read from results.
CREATE VIEW operating_points AS
SELECT path, 0 AS n, 'recall' AS kind, target_recall AS target, optimal_threshold AS threshold,
    closest_recall_value AS recall, NULL AS precision, NULL AS fpr, target_met AS met
FROM results WHERE path NOT IN (SELECT path FROM point_sets)
UNION ALL
SELECT p.path, CAST(j.key AS INTEGER), j.value ->> 0, j.value ->> 1, j.value ->> 2, j.value ->> 3, j.value ->> 4,
    j.value ->> 5, j.value ->> 6
FROM point_sets p, json_each(p.points) j;
-- The report's models with each of their points: the report view's rows joined with the points.
CREATE VIEW report_points AS
SELECT v.model_id, v.issuer, p.n, p.kind, p.target, p.threshold, p.recall, p.precision, p.fpr, p.met, v.experiment_date,
    v.path
FROM report v JOIN operating_points p ON p.path = v.path;
"""

#: The indexes a cold scan builds once at its end instead of row by row (see
#: :meth:`watcher.store.Store.indexes_deferred`), each as the migrations create it (a test keeps
#: the two the same): no reader beside ``watcher scan`` needs them to stay fast (without them it
#: sorts what it would have read in order), unlike ``results_latest``, which the report view looks
#: every model up in (the daemon keeps them: its report thread looks the history up by path).
#: :meth:`watcher.store.Store.open` builds any that is missing (a cold scan stopped midway).
DEFERRABLE_INDEXES = {
    "results_recent": "CREATE INDEX results_recent ON results (experiment_at DESC, path DESC)",
    "history_path": "CREATE INDEX history_path ON history (path, id)",
}

#: Migration ``i`` takes a database from ``user_version`` i to i + 1.
MIGRATIONS: tuple[str, ...] = (_V1, _V2, _V3, _V4, _V5, _V6, _V7, _V8, _V9)
SCHEMA_VERSION = len(MIGRATIONS)


def statements(script: str) -> list[str]:
    """The statements of a migration script, one by one."""
    # Split on complete statements (the view body contains no ';').
    return [s.strip() for s in script.split(";\n") if s.strip()]
