"""The fleet's HTML page: the host's page (:mod:`watcher.reports.page`, ``watcher/reports/assets/*``) fed from the
central database, and the process it is rendered in beside ``watcher central publish``.

Every result of every host is on the page: each model's fleet-wide report row first (the
``report`` view's rule: latest experiment instant, then the greatest host and path), then its
other files on any host. A row's path reads ``host:path``, so the host shows in the path column,
the detail and the search, and the page's folders are per host. The rejections are listed with
their reasons under the same ``host:path``. The curves are not in the central database (hosts ship
the chosen point, not the curve), so a model's detail shows its point without a curve; no
earlier outcomes either (the central database keeps no history).

The columns are built by PostgreSQL in one pass (JSON arrays, no Python object per row), all
from one read-only snapshot, and rendered in a process of its own (:class:`PageProcess`), so the
publisher writes the table files meanwhile and never waits for the page.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from concurrent.futures import BrokenExecutor, Executor
from pathlib import Path
from typing import Any, TextIO

import psycopg

from watcher import regression
from watcher.errors import CentralError
from watcher.fleet import central
from watcher.lifeline import die_with_parent
from watcher.logs import get_logger
from watcher.regression import Rules
from watcher.reports.files import write_atomic
from watcher.reports.formats import FILE_NAMES
from watcher.reports.inflight import PageInFlight
from watcher.reports.page import render_html
from watcher.timestamps import now_iso

log = get_logger("watcher.fleetpage")

# Each model's winning row is the first of its rows in `pos` order, as in the report view. The
# rows come out of the window function in `pos` order, and the aggregates read them so without
# sorting again (an ORDER BY in each of them sorted the table ten times over); that they did is
# checked with the positions themselves (`_page_query(strict=True)` sorts in each aggregate).
_COLUMNS = ("model_id", "issuer", "optimal_threshold", "closest_recall_value", "experiment_date", "shown",
            "n_points", "target_recall", "pos")  # fmt: skip


def _page_query(where: str, strict: bool) -> bytes:
    order = " ORDER BY pos" if strict else ""
    arrays = ", ".join(f"coalesce(json_agg({c}{order}), '[]')::text" for c in _COLUMNS)
    return (
        "WITH r AS MATERIALIZED (SELECT row_number() OVER"
        " (ORDER BY model_id, experiment_at DESC, host DESC, path DESC) - 1 AS pos,"
        f""" (host || ':' || path) COLLATE "C" AS shown, * FROM watcher.results {where})"""
        f" SELECT count(*), coalesce(string_agg(CASE WHEN target_met THEN '1' ELSE '0' END, ''{order}), ''), {arrays},"
        " (SELECT coalesce(json_agg(pos ORDER BY shown), '[]')::text FROM r),"
        " (SELECT coalesce(json_agg(pos ORDER BY experiment_at, shown), '[]')::text FROM r) FROM r"
    ).encode()


# Over html_max_models: the winning rows of the models with the most recent experiments only.
_NEWEST = """WHERE (host, path) IN (SELECT host, path FROM (
    SELECT DISTINCT ON (model_id) host, path, experiment_at FROM watcher.results
    ORDER BY model_id, experiment_at DESC, host DESC, path DESC) w ORDER BY experiment_at DESC LIMIT %s)"""


def page_columns(conn: psycopg.Connection[Any], limit: int | None = None) -> dict[str, Any]:
    """Every central result as the columns :func:`watcher.reports.page.render_html` takes (see
    :meth:`watcher.queries.Queries.page_columns`), paths as ``host:path``, without curves. With
    ``limit``: only the winning rows of that many models, those with the newest experiments."""
    where, args = (_NEWEST, (limit,)) if limit is not None else ("", ())
    for strict in (False, True):
        row = conn.execute(_page_query(where, strict), args).fetchone()
        assert row is not None
        n, met, ids, issuers, thr, rec, dates, paths, npts, targets, positions, by_path, by_date = row
        if json.loads(positions) == list(range(n)):
            break
        log.warning("fleet_page_rows_out_of_order")  # read again, sorted in each aggregate
    return {
        "ids": ids, "issuers": issuers, "thr": thr, "rec": rec, "met": met, "dates": dates, "paths": paths,
        "npts": npts, "targets": targets, "curves": b"", "lengths": 0,
        "order": list(range(n)), "by_path": json.loads(by_path), "by_date": json.loads(by_date),
    }  # fmt: skip


# Each result's page position (as in _page_query) beside the fleet's experiment before it.
_REGRESSION_PAIRS = b"""SELECT pos, model_id, shown, target_met, closest_recall_value, optimal_threshold,
    previous_met, previous_recall, previous_threshold FROM (
    SELECT row_number() OVER (ORDER BY r.model_id, r.experiment_at DESC, r.host DESC, r.path DESC) - 1 AS pos,
        r.model_id, (r.host || ':' || r.path) COLLATE "C" AS shown, e.target_met, e.closest_recall_value,
        e.optimal_threshold, e.previous_met, e.previous_recall, e.previous_threshold
    FROM watcher.results r JOIN watcher.experiments e ON e.host = r.host AND e.path = r.path) x
WHERE previous_met IS NOT NULL ORDER BY model_id, pos"""


def regressed_rows(conn: psycopg.Connection[Any], rules: Rules) -> list[list[Any]]:
    """Every central result that regressed from the fleet's experiment before it (on any host),
    as :meth:`watcher.queries.Queries.page_columns` gives ``regressed``: its position on the page
    (every result shown), model_id, ``host:path`` and reasons joined by "; "."""
    out: list[list[Any]] = []
    for pos, model_id, shown, met, recall, threshold, previous_met, previous_recall, previous_threshold in conn.execute(
        _REGRESSION_PAIRS
    ):
        found = regression.reasons(
            regression.Point(previous_met, previous_recall, previous_threshold),
            regression.Point(met, recall, threshold),
            rules,
        )
        if found:
            out.append([pos, model_id, shown, "; ".join(found)])
    return out


def rejection_rows(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    """Every central rejection, newest first: ``path`` (``host:path``), ``rejected_at``, ``errors``."""
    cur = conn.execute(
        "SELECT host || ':' || path, rejected_at, errors FROM watcher.rejections ORDER BY rejected_at DESC, host, path"
    )
    return [{"path": p, "rejected_at": at, "errors": errors} for p, at, errors in cur]


def write_page(
    conn: psycopg.Connection[Any], out_dir: Path, target: float, max_models: int, rules: Rules | None = None
) -> Path:
    """Rewrite ``report.html`` in ``out_dir`` atomically, from one read-only snapshot; with
    ``rules`` (regression checks on), the regressed results marked (when every model fits)."""
    path = out_dir / FILE_NAMES["html"]
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        conn.execute("SET LOCAL work_mem = '64MB'")  # the page's sorts, in memory
        row = conn.execute("SELECT count(DISTINCT model_id) FROM watcher.results").fetchone()
        omitted = max(0, int(row[0] if row else 0) - max_models)
        cols = page_columns(conn, max_models if omitted else None)
        if rules is not None and not omitted:
            cols["regressed"] = regressed_rows(conn, rules)
        rejections = rejection_rows(conn)
        generated = now_iso()

        def produce(fh: TextIO) -> None:
            render_html(cols, rejections, fh, generated, omitted, target=target)

        write_atomic(path, produce)
    return path


def render_page(url: str, out_dir: Path, target: float, max_models: int, rules: Rules | None = None) -> Path:
    """:func:`write_page` on a connection of its own (this runs in the page's process)."""
    with central.connect(url, "watcher publish page") as conn:
        return write_page(conn, out_dir, target, max_models, rules)


#: The page's process runs this much nicer than the publisher: on a busy machine the table files
#: (what the latency target is about) get the CPU first.
PAGE_NICE = 5


def _page_executor() -> Executor:
    from watcher.pools import CountedExecutor

    ctx = multiprocessing.get_context("forkserver")  # never fork a process holding connections
    ctx.set_forkserver_preload(["watcher.forkserver_init", __name__])  # the server dies with us
    return CountedExecutor(max_workers=1, mp_context=ctx, initializer=_init_page_process)


def _init_page_process() -> None:
    die_with_parent()
    os.nice(PAGE_NICE)


class PageProcess(PageInFlight[Path]):
    """The page, rendered in one process of its own, coalesced (:class:`PageInFlight`):
    :meth:`request` after each write of the table files; :meth:`tend` often (it starts the next
    rendering when the last one is done and another was requested meanwhile)."""

    def __init__(self, url: str, out_dir: Path, target: float, max_models: int, rules: Rules | None = None) -> None:
        super().__init__(_page_executor, render_page)
        self.args = (url, out_dir, target, max_models, rules)
        self.written = 0

    def request(self) -> None:
        """The tables changed: render the page again, now or once the current rendering ends."""
        self.want()
        self.tend()

    def tend(self) -> None:
        """Collect a finished rendering (logged), start the next one if requested."""
        done = self.finished()
        if done is not None:
            try:
                path = done.result()
                self.written += 1
                log.info("fleet_page_written", path=str(path), writes=self.written)
            except BrokenExecutor:  # the process died (killed, out of memory): a new one
                log.error("fleet_page_process_broken")
                self.discard()
                self.want()
            except (psycopg.Error, CentralError, OSError) as exc:
                log.error("fleet_page_failed", error=central.one_line(exc))  # the next change tries again
            except Exception as exc:  # noqa: BLE001 - a bug in the page must not end the tables' publisher
                log.error("fleet_page_failed", error=repr(exc))
        for _ in range(2):  # a process found dead at submission: once more, in a new one
            if self.submit(*self.args):
                return
            log.error("fleet_page_process_broken")
        # still wanted: the next tend tries again

    def close(self, wait: bool = True) -> bool:
        """Stop the process (waiting for a rendering that runs)."""
        if not super().close(wait):
            return False
        from watcher.pools import release_helpers

        release_helpers()
        return True
