"""The fleet's central PostgreSQL database: connecting, the schema and its migrations, roles.

Everything lives in the schema ``watcher``: per (host, path) the ``results`` and ``rejections``
each host ships (:mod:`watcher.fleet.shipper`), one ``hosts`` row per host (its role, how far it has
shipped, when it was last seen), and the fleet-wide ``report`` view. Least privilege by
row-level security: a member of the group role ``watcher_host`` may insert, change and delete
only the rows of the host that ``hosts`` binds to its login role, and update only that host's
status; ``watcher_reader`` reads everything and writes nothing. The binding of a login role to a
host name is made by the database owner (:func:`add_host`), never by a host.

The schema is created and migrated by :func:`ensure_schema` under a transaction-level advisory
lock, so any number of processes may call it at the same moment: one migrates, the others wait
and then find nothing to do. psycopg is imported only inside :mod:`watcher.fleet`, and only when
a central database is configured or a ``watcher central`` command runs.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from watcher.errors import CentralError

#: Key of the advisory lock held while the schema is checked and migrated ('watcher1').
LOCK_KEY = 0x7761746368657231
#: LISTEN/NOTIFY channel: every shipped batch notifies it with the host name as the payload.
CHANNEL = "watcher_fleet"
HOST_ROLE = "watcher_host"
READER_ROLE = "watcher_reader"
#: Columns of the fleet report: the single-host report's, with the host before the path.
FLEET_COLUMNS = ("model_id", "issuer", "optimal_threshold", "closest_recall_value", "experiment_date", "host", "path")
#: With regression checks on: each model's newest experiment against the fleet's one before it
#: (whichever host holds it), as in the host's report.
FLEET_REGRESSION_COLUMNS = (*FLEET_COLUMNS, "regressed", "regression")

# Text that is compared or ordered is COLLATE "C" (byte order), as in SQLite: the tie rule of the
# report (greatest host, then path) must not depend on the server's locale. No foreign key from
# the rows to hosts: its check, one locked lookup per row, took 40% of a batch's insert, and the
# row-level security policies already allow a host role rows of its own registered host only.
_V1 = """
CREATE TABLE watcher.hosts (
    host text COLLATE "C" PRIMARY KEY,
    role name NOT NULL UNIQUE,
    version text,
    origin text,
    shipped_id bigint NOT NULL DEFAULT 0,
    local_max_id bigint NOT NULL DEFAULT 0,
    results integer NOT NULL DEFAULT 0,
    rejections integer NOT NULL DEFAULT 0,
    first_seen timestamptz,
    last_seen timestamptz,
    last_shipped timestamptz
);
COMMENT ON COLUMN watcher.hosts.origin IS 'identity of the local SQLite history shipped (its first entry)';
COMMENT ON COLUMN watcher.hosts.shipped_id IS 'last local history id whose change is in this database';
COMMENT ON COLUMN watcher.hosts.local_max_id IS 'the local history id the host had reached when last seen';
CREATE TABLE watcher.results (
    host text COLLATE "C" NOT NULL,
    path text COLLATE "C" NOT NULL,
    model_id text COLLATE "C" NOT NULL,
    issuer text NOT NULL,
    experiment_date text NOT NULL,
    experiment_at text COLLATE "C" NOT NULL,
    optimal_threshold double precision NOT NULL,
    closest_recall_value double precision NOT NULL,
    distance double precision NOT NULL,
    target_met boolean NOT NULL,
    target_recall double precision NOT NULL,
    n_points integer NOT NULL,
    sha256 text NOT NULL,
    rules_version integer NOT NULL,
    scored_at text NOT NULL,
    shipped_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (host, path)
);
CREATE INDEX results_latest ON watcher.results (model_id, experiment_at DESC, host DESC, path DESC);
CREATE TABLE watcher.rejections (
    host text COLLATE "C" NOT NULL,
    path text COLLATE "C" NOT NULL,
    errors jsonb NOT NULL,
    sha256 text,
    rules_version integer NOT NULL,
    rejected_at text NOT NULL,
    shipped_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (host, path)
);
-- One row per model_id: the latest experiment instant across the fleet; on a tie the greatest
-- (host, path). experiment_at is fixed-width UTC text, so it orders as the instant.
CREATE VIEW watcher.report AS
SELECT DISTINCT ON (model_id) model_id, issuer, optimal_threshold, closest_recall_value, experiment_date, host, path
FROM watcher.results
ORDER BY model_id, experiment_at DESC, host DESC, path DESC;
CREATE VIEW watcher.host_status AS
SELECT host, role, version, last_seen, last_shipped, results, rejections, shipped_id, local_max_id,
    greatest(local_max_id - shipped_id, 0) AS lag
FROM watcher.hosts;
GRANT USAGE ON SCHEMA watcher TO watcher_host, watcher_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA watcher TO watcher_host, watcher_reader;
GRANT INSERT, UPDATE, DELETE ON watcher.results, watcher.rejections TO watcher_host;
GRANT UPDATE (version, origin, shipped_id, local_max_id, results, rejections, first_seen, last_seen, last_shipped)
    ON watcher.hosts TO watcher_host;
ALTER TABLE watcher.hosts ENABLE ROW LEVEL SECURITY;
ALTER TABLE watcher.results ENABLE ROW LEVEL SECURITY;
ALTER TABLE watcher.rejections ENABLE ROW LEVEL SECURITY;
CREATE POLICY read_all ON watcher.hosts FOR SELECT USING (true);
CREATE POLICY own_status ON watcher.hosts FOR UPDATE TO watcher_host
    USING (role = current_user) WITH CHECK (role = current_user);
CREATE POLICY read_all ON watcher.results FOR SELECT USING (true);
CREATE POLICY own_rows ON watcher.results FOR ALL TO watcher_host
    USING (host = (SELECT h.host FROM watcher.hosts h WHERE h.role = current_user))
    WITH CHECK (host = (SELECT h.host FROM watcher.hosts h WHERE h.role = current_user));
CREATE POLICY read_all ON watcher.rejections FOR SELECT USING (true);
CREATE POLICY own_rows ON watcher.rejections FOR ALL TO watcher_host
    USING (host = (SELECT h.host FROM watcher.hosts h WHERE h.role = current_user))
    WITH CHECK (host = (SELECT h.host FROM watcher.hosts h WHERE h.role = current_user))
"""

# The fleet's change log, for 'watcher follow --central': the central tables keep only the
# current row per (host, path), so each statement that deletes or inserts rows there logs ONE row
# here (a statement-level trigger over its transition table): the transaction's id, and the
# paths it took away ('gone', with each row's local timestamp and model_id) or put in ('new',
# with the timestamp), as arrays. A shipped batch deletes its paths, then inserts their current rows: a
# reader tells a change from a re-shipped row by the timestamp, and a removal by a path gone and
# not put back. One row per statement, not per row, keeps shipping's per-row cost to an array
# element or three. Rows older than a day are trimmed by the next results delete. The functions run as
# the schema's owner (hosts may not write this table; readers only read it).
_V2 = """
CREATE TABLE watcher.changes (
    tx xid8 NOT NULL,
    at timestamptz NOT NULL DEFAULT now(),
    host text COLLATE "C" NOT NULL,
    kind text NOT NULL CHECK (kind IN ('results', 'rejections')),
    op text NOT NULL CHECK (op IN ('gone', 'new')),
    paths text[] NOT NULL,
    stamps text[] NOT NULL,
    models text[]
);
COMMENT ON TABLE watcher.changes IS 'per statement on results/rejections: the (host, path)s it deleted or inserted';
CREATE INDEX changes_tx ON watcher.changes (tx);
CREATE INDEX changes_at ON watcher.changes (at);
CREATE FUNCTION watcher.log_results() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO watcher.changes (tx, host, kind, op, paths, stamps, models)
        SELECT pg_current_xact_id(), host, 'results', 'gone', array_agg(path), array_agg(scored_at), array_agg(model_id)
        FROM old_rows GROUP BY host;
        DELETE FROM watcher.changes WHERE at < now() - interval '1 day';
    ELSE
        INSERT INTO watcher.changes (tx, host, kind, op, paths, stamps)
        SELECT pg_current_xact_id(), host, 'results', 'new', array_agg(path), array_agg(scored_at)
        FROM new_rows GROUP BY host;
    END IF;
    RETURN NULL;
END
$$;
CREATE FUNCTION watcher.log_rejections() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO watcher.changes (tx, host, kind, op, paths, stamps)
        SELECT pg_current_xact_id(), host, 'rejections', 'gone', array_agg(path), array_agg(rejected_at)
        FROM old_rows GROUP BY host;
    ELSE
        INSERT INTO watcher.changes (tx, host, kind, op, paths, stamps)
        SELECT pg_current_xact_id(), host, 'rejections', 'new', array_agg(path), array_agg(rejected_at)
        FROM new_rows GROUP BY host;
    END IF;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION watcher.log_results(), watcher.log_rejections() FROM PUBLIC;
CREATE TRIGGER results_gone AFTER DELETE ON watcher.results REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION watcher.log_results();
CREATE TRIGGER results_new AFTER INSERT ON watcher.results REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION watcher.log_results();
CREATE TRIGGER rejections_gone AFTER DELETE ON watcher.rejections REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION watcher.log_rejections();
CREATE TRIGGER rejections_new AFTER INSERT ON watcher.rejections REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION watcher.log_rejections();
GRANT SELECT ON watcher.changes TO watcher_reader
"""

# The identity of the entry at the mark: a host checks it before each batch, so a local history
# that went back in time (restored from a backup, rolled back by a power cut) and then grew again,
# reusing ids the mark has passed with other entries, is told apart from the one shipped.
_V3 = """
ALTER TABLE watcher.hosts ADD COLUMN shipped_entry text;
COMMENT ON COLUMN watcher.hosts.shipped_entry IS
    'the local history entry at shipped_id, as shipped: [id, at, outcome, path, sha256] in JSON';
GRANT UPDATE (shipped_entry) ON watcher.hosts TO watcher_host
"""

# Regressions across hosts (watcher.regression): each result beside the one before it among its
# model's results of every host, in the report's order (experiment instant, then host, then path;
# byte order). What counts as a regression is the reader's setting, so the view gives the two
# points and the reader judges them.
_V4 = """
CREATE VIEW watcher.experiments AS
SELECT host, path, model_id, target_met, closest_recall_value, optimal_threshold,
    lag(host) OVER w AS previous_host, lag(path) OVER w AS previous_path, lag(target_met) OVER w AS previous_met,
    lag(closest_recall_value) OVER w AS previous_recall, lag(optimal_threshold) OVER w AS previous_threshold
FROM watcher.results
WINDOW w AS (PARTITION BY model_id ORDER BY experiment_at, host, path);
GRANT SELECT ON watcher.experiments TO watcher_host, watcher_reader
"""

#: Migration ``i`` takes the central schema from version i to i + 1. Never edited once released.
MIGRATIONS: tuple[str, ...] = (_V1, _V2, _V3, _V4)
SCHEMA_VERSION = len(MIGRATIONS)

_ROLES = f"""
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{HOST_ROLE}') THEN CREATE ROLE {HOST_ROLE} NOLOGIN; END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{READER_ROLE}') THEN CREATE ROLE {READER_ROLE} NOLOGIN; END IF;
END
$$
"""


def connect(
    url: str, application: str = "watcher", autocommit: bool = False, timeout: int = 5
) -> psycopg.Connection[Any]:
    """Open a connection with libpq's conventions (URL or ``key=value`` conninfo; the password
    from ``~/.pgpass`` or ``PGPASSFILE``; ``PG*`` variables fill what the URL leaves out).

    Raises :class:`CentralError` with libpq's one-line reason.
    """
    try:
        return psycopg.connect(url, autocommit=autocommit, connect_timeout=timeout, application_name=application)
    except psycopg.Error as exc:
        raise CentralError(f"cannot connect to the central database: {one_line(exc)}") from None


def one_line(exc: BaseException) -> str:
    """An error's first line (libpq's messages carry hints and context on further lines)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def schema_version(conn: psycopg.Connection[Any]) -> int:
    """The version of the central schema in this database, 0 when there is none."""
    row = conn.execute("SELECT to_regclass('watcher.meta') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return 0
    found = conn.execute("SELECT version FROM watcher.meta").fetchone()
    return int(found[0]) if found else 0


def ensure_schema(conn: psycopg.Connection[Any]) -> int:
    """Create or migrate the central schema (and the two group roles) to :data:`SCHEMA_VERSION`.

    Safe when several processes call it at once: the check and every migration run in one
    transaction holding an advisory lock. Returns the number of migrations applied. Raises
    :class:`CentralError` when the schema is missing or old and this role may not change it, or
    when the database holds a newer schema than this watcher knows.
    """
    try:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
            current = schema_version(conn)
            if current > SCHEMA_VERSION:
                raise CentralError(
                    f"central schema version {current} is newer than this watcher's ({SCHEMA_VERSION}); "
                    "upgrade watcher on this machine"
                )
            if current == SCHEMA_VERSION:
                return 0
            conn.execute(_ROLES)
            conn.execute("CREATE SCHEMA IF NOT EXISTS watcher")
            conn.execute("CREATE TABLE IF NOT EXISTS watcher.meta (id int PRIMARY KEY CHECK (id = 1), version int)")
            conn.execute("INSERT INTO watcher.meta VALUES (1, 0) ON CONFLICT DO NOTHING")
            conn.execute("GRANT USAGE ON SCHEMA watcher TO watcher_host, watcher_reader")
            conn.execute("GRANT SELECT ON watcher.meta TO watcher_host, watcher_reader")
            for version in range(current, SCHEMA_VERSION):
                for statement in _statements(MIGRATIONS[version]):
                    conn.execute(statement.encode())
            conn.execute("UPDATE watcher.meta SET version = %s", (SCHEMA_VERSION,))
            return SCHEMA_VERSION - current
    except psycopg.errors.InsufficientPrivilege as exc:
        raise CentralError(
            f"the central schema needs creating or migrating, and this role may not ({one_line(exc)}); "
            "run 'watcher central init' as the database's owner"
        ) from None
    except psycopg.Error as exc:
        raise CentralError(f"cannot set up the central schema: {one_line(exc)}") from None


def require_schema(conn: psycopg.Connection[Any]) -> None:
    """Raise :class:`CentralError` unless the schema is at this watcher's version (for readers and
    hosts, which never migrate on their own unless they own the database)."""
    try:
        version = schema_version(conn)
        conn.rollback()
    except psycopg.Error as exc:
        raise CentralError(f"cannot read the central schema: {one_line(exc)}") from None
    if version != SCHEMA_VERSION:
        raise CentralError(
            f"central schema version {version}, this watcher needs {SCHEMA_VERSION}; "
            "run 'watcher central init' as the database's owner"
        )


def add_host(conn: psycopg.Connection[Any], host: str, role: str) -> bool:
    """Bind the login ``role`` to the fleet host ``host`` (creating the role, LOGIN, without a
    password, if it does not exist) and make it a member of ``watcher_host``. Returns True when
    the host is new. Raises :class:`CentralError` (a host bound to another role, no privilege).
    """
    try:
        with conn.transaction():
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
            conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(HOST_ROLE), sql.Identifier(role)))
            row = conn.execute("SELECT role FROM watcher.hosts WHERE host = %s", (host,)).fetchone()
            if row is not None and row[0] != role:
                raise CentralError(f"host {host!r} is already bound to role {row[0]!r}")
            if row is None:
                conn.execute("INSERT INTO watcher.hosts (host, role) VALUES (%s, %s)", (host, role))
            return row is None
    except psycopg.Error as exc:
        raise CentralError(f"cannot add host {host!r}: {one_line(exc)}") from None


def grant_reader(conn: psycopg.Connection[Any], role: str) -> None:
    """Make the login ``role`` (created, without a password, if missing) a fleet reader."""
    try:
        with conn.transaction():
            if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
                conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
            conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(READER_ROLE), sql.Identifier(role)))
    except psycopg.Error as exc:
        raise CentralError(f"cannot add reader {role!r}: {one_line(exc)}") from None


def _statements(script: str) -> list[str]:
    """The script's statements: split at each ``;`` that ends a line outside a ``$$`` body."""
    out: list[str] = []
    part = ""
    for piece in script.split(";\n"):
        part = f"{part};\n{piece}" if part else piece
        if part.count("$$") % 2 == 0:
            out.append(part.strip())
            part = ""
    return [s for s in out if s]
