"""The fleet's commands: ``watcher central init|add-host|add-reader|publish``, and
``watcher report --central`` / ``status --central`` / ``follow --central``, which read the
central database.

Each command parses nothing itself (:mod:`watcher.cli` does) and returns an exit code; psycopg
is imported only when one of these runs.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import signal
import threading
from collections.abc import Iterator
from datetime import datetime
from typing import Any, TextIO

from watcher.config import Settings
from watcher.errors import CentralError, ConfigError
from watcher.timestamps import iso


def add_parser(sub: Any, common: Any) -> None:
    """Register ``watcher central ...`` on the CLI's sub-parsers."""
    p = sub.add_parser("central", help="the fleet's central PostgreSQL database (set up, publish)")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = actions.add_parser("init", help="create or migrate the central schema and its group roles (as the owner)")
    common(a, watch=False)
    _url(a)
    a = actions.add_parser("add-host", help="let a login role ship one host's rows (as the owner)")
    common(a, watch=False)
    _url(a)
    a.add_argument("host", help="the host's name in the fleet (its host_name setting)")
    a.add_argument("--role", required=True, help="the login role the host connects as (created if missing)")
    a = actions.add_parser("add-reader", help="let a login role read the fleet, nothing more (as the owner)")
    common(a, watch=False)
    _url(a)
    a.add_argument("role", help="the login role (created if missing)")
    a = actions.add_parser("publish", help="keep the fleet's report files current (foreground)")
    common(a, watch=False)
    _url(a)
    a.add_argument("--out", help="folder of the fleet report files (default: 'fleet' in report_dir)")


def _url(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", help="libpq URL or conninfo of the central database (default: central_url)")


def central_url(args: argparse.Namespace, settings: Settings) -> str:
    """The URL given with ``--url`` (or ``--central URL``), else the ``central_url`` setting;
    ConfigError if neither."""
    given = getattr(args, "url", None) or getattr(args, "central", None)
    url = given if isinstance(given, str) else settings.central_url
    if not url:
        raise ConfigError("no central database: set central_url (or give --url)")
    return str(url)


def cmd_central(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """``watcher central ACTION``."""
    from watcher.fleet import central

    url = central_url(args, settings)
    if args.action == "publish":
        return _publish(args, settings, url)
    with _errors(f"central {args.action}"), central.connect(url, "watcher central") as conn:
        applied = central.ensure_schema(conn) if args.action == "init" else 0
        central.require_schema(conn)
        if args.action == "init":
            print(f"central schema at version {central.SCHEMA_VERSION} ({applied} migrations applied)", file=out)
        elif args.action == "add-host":
            new = central.add_host(conn, args.host, args.role)
            print(f"host {args.host}: role {args.role} {'added' if new else 'already bound'}", file=out)
        else:
            central.grant_reader(conn, args.role)
            print(f"reader {args.role}: may read the fleet", file=out)
    return 0


@contextlib.contextmanager
def _errors(what: str) -> Iterator[None]:
    """The driver's errors as one line (psycopg is imported only when a fleet command runs)."""
    import psycopg

    from watcher.fleet.central import one_line

    try:
        yield
    except psycopg.Error as exc:
        raise CentralError(f"{what}: {one_line(exc)}") from None


def _publish(args: argparse.Namespace, settings: Settings, url: str) -> int:
    from pathlib import Path

    from watcher.fleet.publisher import Publisher

    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())  # only a flag; the loop notices
    out_dir = Path(args.out).absolute() if args.out else settings.report_dir / "fleet"
    if "html" in settings.report_formats:
        from watcher.lifeline import start_quiet_resource_tracker

        start_quiet_resource_tracker()  # for the page's process; before any thread (see its doc)
    Publisher(
        url, out_dir, settings.report_formats, settings.report_interval, stop,
        target=settings.target_recall, max_models=settings.html_max_models, rules=settings.regression_rules,
    ).run()  # fmt: skip
    return 0


def cmd_report(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """``watcher report --central``: the fleet-wide report."""
    from watcher.fleet import central
    from watcher.fleet.publisher import report_rows
    from watcher.reports.formats import render_csv, render_json, render_markdown, render_table

    columns = central.FLEET_REGRESSION_COLUMNS if settings.regressions else central.FLEET_COLUMNS
    if args.sort is not None and args.sort not in columns:
        raise ConfigError(
            f"watcher report --central: --sort {args.sort} is not a column of the fleet report"
            f" (one of: {', '.join(columns)})"
        )
    fmt = args.format or ("table" if out.isatty() else "csv")
    with (
        _errors("cannot read the fleet report"),
        central.connect(central_url(args, settings), "watcher report") as conn,
    ):
        central.require_schema(conn)
        rows = report_rows(
            conn, issuer=args.issuer, model=args.model, below_target=args.below_target, sort=args.sort, desc=args.desc,
            regressions=settings.regression_rules,
        )  # fmt: skip
    render = {"csv": render_csv, "json": render_json, "markdown": render_markdown, "table": render_table}[fmt]
    if fmt == "table" and (filters := report_filters(args)):
        render = functools.partial(render_table, empty=f"(no model matches {' '.join(filters)})")
    render(rows, out, columns)
    return 0


def report_filters(args: argparse.Namespace) -> list[str]:
    """The filters a ``watcher report`` was given, as typed (for the message when none matches)."""
    filters = [f"--issuer {args.issuer}"] * bool(args.issuer) + [f"--model {args.model}"] * bool(args.model)
    return filters + ["--below-target"] * args.below_target


def cmd_follow(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """``watcher follow --central``: the fleet's outcomes as they land, until SIGINT/SIGTERM
    (exit 0). The server unreachable at the start is a CentralError (exit 3); lost later, it
    is waited for (logged on stderr) and following resumes where it was."""
    from watcher.fleet.follow import FleetFollower, follow_fleet

    rules = settings.regression_rules
    if args.regressions and rules is None:  # nothing would ever be judged: say so rather than wait
        raise ConfigError("watcher follow --central --regressions: regression checks are off (set regressions = true)")
    as_json = args.format == "json" or (args.format == "auto" and not out.isatty())
    stop = threading.Event()
    with _errors("cannot follow the fleet"), _on_signals(stop):
        follower = FleetFollower(
            central_url(args, settings), rejections_only=args.rejections, last=args.last, rules=rules,
            regressions_only=args.regressions,
        )  # fmt: skip
        try:
            for batch in follow_fleet(follower, stop.is_set, stop.wait):
                out.write("".join((e.as_json() if as_json else e.as_text()) + "\n" for e in batch))
                out.flush()  # a pipe (jq, grep) sees each batch as it comes
        finally:
            follower.close()
    return 0


@contextlib.contextmanager
def _on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT and SIGTERM set ``stop`` (only a flag; the loop notices), then the old handlers return."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signals = (signal.SIGINT, signal.SIGTERM)
    before = [signal.signal(sig, lambda *_: stop.set()) for sig in signals]
    try:
        yield
    finally:
        for sig, handler in zip(signals, before, strict=True):
            signal.signal(sig, handler)


def cmd_status(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """``watcher status --central``: the fleet's hosts, their lag and last contact. Exit 0 when
    the central database answers (3 otherwise, as a CentralError)."""
    from watcher.fleet import central
    from watcher.fleet.publisher import age, fleet_counts, host_rows

    with (
        _errors("cannot read the fleet's status"),
        central.connect(central_url(args, settings), "watcher status") as conn,
    ):
        central.require_schema(conn)
        hosts, counts = host_rows(conn), fleet_counts(conn)
    if args.json:
        for h in hosts:
            h["last_seen"], h["last_shipped"] = _shown(h["last_seen"]), _shown(h["last_shipped"])
            h["seconds_since"] = None if h["seconds_since"] is None else float(h["seconds_since"])
        print(json.dumps({"hosts": hosts, "counts": counts}, indent=1), file=out)
        return 0
    lines = [
        f"hosts:           {len(hosts)}",
        f"models:          {counts['models']} (fleet-wide)",
        f"results:         {counts['results']}",
        f"rejections:      {counts['rejections']}",
    ]
    width = max([4, *(len(h["host"]) for h in hosts)])
    lines.append(
        f"{'host':<{width}}  {'last seen':<24}  {'':<12}  {'lag':>6}  {'results':>8}  {'rejections':>10}  version"
    )
    for h in hosts:
        since = None if h["seconds_since"] is None else float(h["seconds_since"])
        lines.append(
            f"{h['host']:<{width}}  {_shown(h['last_seen']):<24}  {age(since):<12}  {h['lag']:>6}  "
            f"{h['results']:>8}  {h['rejections']:>10}  {h['version'] or '-'}"
        )
    out.write("\n".join(lines) + "\n")
    return 0


def _shown(moment: datetime | None) -> str:
    """A central timestamp as watcher shows times (:func:`watcher.timestamps.iso`); ``-`` for none."""
    return "-" if moment is None else iso(moment)
