"""Command line: parse argv, load settings, call one library function, print, return an exit code.

Exit codes: 0 success; 1 invalid files found (``scan --strict``, ``validate``) or invalid data
(``publish``); 2 usage or configuration error; 3 runtime failure (database, watch dir) or, for
``status``, no daemon running.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import json
import os
import signal
import sqlite3
import sys
import threading
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

from watcher import __version__, logs, publishcli
from watcher.config import Settings, load_settings, unknown_env
from watcher.errors import ConfigError, WatcherError
from watcher.fleet import cli as fleetcli
from watcher.follow import Follower, follow
from watcher.reconcile import scan
from watcher.reports.formats import RENDERERS, render_table
from watcher.schema import REGRESSION_REPORT_COLUMNS, REPORT_COLUMNS
from watcher.store import Store
from watcher.validate import check

EXIT_OK, EXIT_INVALID, EXIT_CONFIG, EXIT_FAILURE = 0, 1, 2, 3


def _common(p: argparse.ArgumentParser, watch: bool = True) -> None:
    p.add_argument("--config", type=Path, help="TOML config file (default: $WATCHER_CONFIG, else none)")
    p.add_argument("--db", dest="db_path", help="SQLite database file")
    if watch:
        p.add_argument("--watch-dir", help="directory of results files")
    p.add_argument("--log-format", choices=["auto", "json", "console"], help="log format on stderr")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="lowest level logged")


class UsageError(Exception):
    """A command line argparse cannot use: one line for stderr, naming the (sub)command."""


class _Parser(argparse.ArgumentParser):
    """An argument parser that raises :class:`UsageError` instead of printing usage and exiting:
    a usage error is one line on stderr, like every other error."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see '{self.prog} --help')")


#: What ``watcher report --sort`` takes: a host's report columns, and the fleet's ``host``.
_SORTABLE = (*REGRESSION_REPORT_COLUMNS, "host")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``watcher`` command."""
    parser = _Parser(prog="watcher", description="Turn a folder of evaluation results into a live table.")
    parser.add_argument("--version", action="version", version=f"watcher {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("scan", help="reconcile the watch dir into the database once")
    _common(p)
    p.add_argument("--strict", action="store_true", help="exit 1 if any file is rejected afterwards")

    p = sub.add_parser("run", help="watch the directory and keep the database live (foreground)")
    _common(p)

    p = sub.add_parser("report", help="print the current report")
    _common(p, watch=False)
    p.add_argument("--format", choices=sorted(RENDERERS), help="default: table on a terminal, csv otherwise")
    p.add_argument("--issuer", help="only this issuer's models")
    p.add_argument("--model", help="only model_ids starting with this")
    p.add_argument("--below-target", action="store_true", help="only models whose best point misses the target")
    p.add_argument(
        "--sort", choices=_SORTABLE, metavar="COLUMN", help="sort by this column, then model_id (default: model_id)"
    )
    p.add_argument("--desc", action="store_true", help="sort in descending order")
    _central_flag(p, "the fleet-wide report")

    p = sub.add_parser("validate", help="check files before writing them into the watch dir")
    _common(p, watch=False)
    p.add_argument(
        "paths", nargs="+", metavar="PATH",
        help="a results file; a folder (every file in it that the config's patterns select); - for standard input",
    )  # fmt: skip
    p.add_argument("--format", choices=["text", "json"], default="text", help="json: one JSON object per line")

    p = sub.add_parser("follow", help="print outcomes as the database records them, until Ctrl-C")
    _common(p, watch=False)
    p.add_argument("--rejections", action="store_true", help="only rejected files")
    p.add_argument(
        "--regressions", action="store_true",
        help="only scored files whose experiment regressed from the model's one before (with --rejections: both)",
    )  # fmt: skip
    p.add_argument("--last", type=int, default=0, metavar="N", help="first print the N most recent ones")
    p.add_argument(
        "--format", choices=["auto", "text", "json"], default="auto", help="auto: text on a terminal, else JSON lines"
    )
    _central_flag(p, "the fleet's outcomes, with their hosts,")

    p = sub.add_parser("notify", help="post rejections and regressions to the configured webhooks, until stopped")
    _common(p, watch=False)

    p = sub.add_parser("status", help="say whether the daemon runs, and what the database holds")
    _common(p, watch=False)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--check", action="store_true",
        help="one line and a Nagios exit code: 0 ok, 1 warning, 2 critical, 3 unknown",
    )  # fmt: skip
    _central_flag(p, "the fleet's hosts, their lag and last contact")

    publishcli.add_parser(sub)
    fleetcli.add_parser(sub, _common)
    return parser


def _central_flag(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--central",
        nargs="?",
        const=True,
        metavar="URL",
        help=f"{what}, from the central database (default: central_url)",
    )


def entry() -> int:
    """The ``watcher`` console script and ``python -m watcher``: :func:`main`, in a process of its own."""
    # What the imports made lives as long as the process: keep it out of the garbage collector's
    # passes (the ones a bulk scan's many objects set off, those of forked workers, and the one
    # at exit). Objects made from here on are collected as usual.
    gc.freeze()
    return main()


def main(argv: Sequence[str] | None = None, stdout: TextIO | None = None) -> int:
    """Entry point of the ``watcher`` console script; returns the exit code."""
    out = stdout or sys.stdout
    try:
        args = parse_args(argv, out)
    except UsageError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    except SystemExit as exc:  # --help, --version: printed, nothing else to do
        return int(exc.code or 0)
    flags = _flags(args)
    if getattr(args, "check", False):
        return _check(args, out)
    try:
        settings = load_settings(args.config, flags=flags)
    except ConfigError as exc:
        print(f"watcher: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    logs.configure(settings.log_level, settings.log_format)
    for name in unknown_env(os.environ):
        # Not an error: an unrelated variable with the prefix must not stop a service.
        logs.get_logger("watcher.cli").warning(
            "unknown_environment_variable", variable=name, hint="names no setting; ignored"
        )
    try:
        return int(COMMANDS[args.command](args, settings, out))
    except ConfigError as exc:  # found by a command (e.g. no central database named)
        print(f"watcher: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except WatcherError as exc:
        print(f"watcher: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except BrokenPipeError:
        # The reader went away (``watcher report | head``): not an error. Later writes (the
        # interpreter's flush at exit) go nowhere instead of failing again.
        _silence(out)
        return EXIT_OK
    except (OSError, sqlite3.Error) as exc:  # what no command foresaw: still one line, no traceback
        print(f"watcher {args.command}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - a bug: still one line (the traceback at --log-level debug)
        if settings.log_level == "debug":
            traceback.print_exc()
        print(f"watcher {args.command}: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def _check(args: argparse.Namespace, out: TextIO) -> int:
    """``watcher status --check``: every failure, the config's included, is one line and exit 3."""
    from watcher import health

    try:
        settings = load_settings(args.config, flags=_flags(args))
        logs.configure(settings.log_level, settings.log_format)
        code, why = health.verdict(settings)
    except Exception as exc:  # noqa: BLE001 - a check's every failure is "unknown", in one line
        code, why = health.UNKNOWN, str(exc)
    print(health.line(code, why), file=out)
    return code


def _flags(args: argparse.Namespace) -> dict[str, Any]:
    return {k: getattr(args, k, None) for k in ("db_path", "watch_dir", "log_format", "log_level")}


def _silence(out: TextIO) -> None:
    with contextlib.suppress(OSError, ValueError, AttributeError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())


def parse_args(argv: Sequence[str] | None, out: TextIO) -> argparse.Namespace:
    """Parse ``argv``; raises :class:`UsageError`. ``--help`` and ``--version`` print to ``out``
    and raise ``SystemExit(0)``."""
    parser = build_parser()
    with contextlib.redirect_stdout(out):
        args, extra = parser.parse_known_args(argv)
    if extra:
        # argparse leaves a subcommand's unknown options to the top level, which would show the
        # top-level usage: name the subcommand they were given to.
        raise UsageError(
            f"watcher {args.command}: unrecognized arguments: {' '.join(extra)} (see 'watcher {args.command} --help')"
        )
    return args


def cmd_scan(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """``watcher scan``."""
    bar = _progress_bar(settings)
    summary, counts = scan(settings, progress=bar)
    print(
        f"{summary.seen} files: {summary.read} read, {summary.scored} scored, {summary.rejected} rejected, "
        f"{summary.removed} removed; {counts['models']} models, {counts['rejections']} rejections in total",
        file=out,
    )
    return EXIT_INVALID if args.strict and counts["rejections"] else EXIT_OK


def cmd_run(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """``watcher run``: the daemon, in the foreground."""
    from watcher.daemon import run  # imported here: only this command needs watchdog

    # SIGHUP reads the settings as this start did: the same file, environment and flags.
    return run(settings, reload=lambda: load_settings(args.config, flags=_flags(args)))


def cmd_report(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """``watcher report``."""
    if args.central:
        return fleetcli.cmd_report(args, settings, out)
    columns = REGRESSION_REPORT_COLUMNS if settings.regressions else REPORT_COLUMNS
    if args.sort is not None and args.sort not in columns:
        raise ConfigError(f"watcher report: --sort {args.sort} needs --central (one of: {', '.join(columns)})")
    fmt = args.format or ("table" if out.isatty() else "csv")
    render = RENDERERS[fmt]
    filters = fleetcli.report_filters(args)
    if fmt == "table" and filters:
        render = functools.partial(render_table, empty=f"(no model matches {' '.join(filters)})")
    store = Store.open_readonly(settings.db_path)
    try:
        rows = store.report_rows(
            issuer=args.issuer, model=args.model, below_target=args.below_target, sort=args.sort, desc=args.desc,
            regressions=settings.regressions,
        )  # fmt: skip
        render(rows, out, columns)
    finally:
        store.close()
    return EXIT_OK


def cmd_validate(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """``watcher validate PATH...``: one verdict per file; exit 1 if any is invalid."""
    invalid = check(args.paths, settings, args.format, out, sys.stdin.buffer)
    return EXIT_INVALID if invalid else EXIT_OK


def cmd_follow(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """``watcher follow``: new outcomes from the database's history until SIGINT/SIGTERM (exit 0)."""
    if args.central:
        return fleetcli.cmd_follow(args, settings, out)
    as_json = args.format == "json" or (args.format == "auto" and not out.isatty())
    follower = Follower(
        settings.db_path, rejections_only=args.rejections, last=max(args.last, 0), regressions_only=args.regressions
    )
    stop = _StopRequest()
    try:
        with stop.on_signals():
            for batch in follow(follower, stop.requested, stop.event.wait):
                out.write("".join((e.as_json() if as_json else e.as_text()) + "\n" for e in batch))
                out.flush()  # a pipe (jq, grep) sees each batch as it comes
    finally:
        follower.close()
    return EXIT_OK


def cmd_notify(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """``watcher notify``: post events to the webhooks until SIGINT/SIGTERM (exit 0)."""
    from watcher.alerts.notifier import notify  # imported here: only this command posts

    stop = _StopRequest()
    with stop.on_signals():
        notify(settings, stop.event)
    return EXIT_OK


class _StopRequest:
    """SIGINT/SIGTERM only set an event here; a loop that waits on it (``event.wait``) wakes at
    once, one that polls ``requested`` sees it within its interval."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def requested(self) -> bool:
        return self.event.is_set()

    @contextlib.contextmanager
    def on_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        signals = (signal.SIGINT, signal.SIGTERM)
        before = [signal.signal(sig, self._set) for sig in signals]
        try:
            yield
        finally:
            for sig, handler in zip(signals, before, strict=True):
                signal.signal(sig, handler)

    def _set(self, signum: int, frame: object) -> None:
        self.event.set()


def cmd_status(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """``watcher status``: exit 0 when a daemon is running on this database, 3 otherwise."""
    if args.central:
        return fleetcli.cmd_status(args, settings, out)
    from watcher.dblock import daemon_running

    store = Store.open_readonly(settings.db_path)
    try:
        info: dict[str, Any] = {
            "running": daemon_running(settings.db_path),
            "daemon": store.status(),
            "counts": store.counts(),
            "last_change": store.last_change(),
            "watch_dir_present": _watch_dir_present(store.status()),
            "recent_rejections": [
                {"path": r["path"], "rejected_at": r["rejected_at"], "reason": _first_reason(r["errors"])}
                for r in store.rejection_rows(limit=5)
            ],
        }
    finally:
        store.close()
    if args.json:
        print(json.dumps(info, indent=1), file=out)
    else:
        out.write(_format_status(info, settings))
    return EXIT_OK if info["running"] else EXIT_FAILURE


def _first_reason(errors: list[dict[str, Any]]) -> str:
    first = errors[0] if errors else {"field": None, "message": "?"}
    return f"{first['field']}: {first['message']}" if first["field"] else str(first["message"])


def _format_status(info: dict[str, Any], settings: Settings) -> str:
    d = info["daemon"] or {}
    c = info["counts"]
    lines = [
        f"daemon:          {'running' if info['running'] else 'not running'}"
        + (f" (pid {d.get('pid')}, {d.get('observer')} observer)" if info["running"] else ""),
        f"database:        {settings.db_path}",
        *_watch_dir_line(d, info["watch_dir_present"]),
        f"started at:      {d.get('started_at') or '-'}",
        f"last event:      {d.get('last_event_at') or '-'}",
        f"last reconcile:  {d.get('last_reconcile_at') or '-'}",
        f"last change:     {info['last_change'] or '-'}",
        *_polling_lines(d),
        f"models:          {c['models']}",
        f"results:         {c['results']}",
        f"rejections:      {c['rejections']}",
    ]
    if info["recent_rejections"]:
        lines.append("newest rejections:")
        lines += [f"  {r['path']}: {r['reason']}" for r in info["recent_rejections"]]
    return "\n".join(lines) + "\n"


def _watch_dir_present(daemon: dict[str, Any] | None) -> bool | None:
    """Whether the folder the daemon watches is there, as this user sees it (``None``: not known)."""
    folder = (daemon or {}).get("watch_dir")
    return None if folder is None else Path(folder).is_dir()


def _watch_dir_line(d: dict[str, Any], present: bool | None) -> list[str]:
    if present is None:
        return []
    # A daemon whose folder is gone (unmounted, deleted, not created yet) waits for it, keeping
    # what it stored: say so, or its quiet looks like an empty folder.
    return [f"watch dir:       {d['watch_dir']}" + ("" if present else " (missing: the daemon waits for it)")]


def _polling_lines(d: dict[str, Any]) -> list[str]:
    """The polling observer's pace: the period between polls, the last full sweep's length and end."""
    if d.get("observer") != "polling" or d.get("poll_period") is None:
        return []
    sweep = d.get("sweep_seconds")
    return [
        f"poll period:     {d['poll_period']:.2f} s (new, deleted, renamed files)",
        f"last sweep:      {d.get('last_sweep_at') or '-'}"
        + (f" (took {sweep:.1f} s; files rewritten in place)" if sweep is not None else " (none finished yet)"),
    ]


def _progress_bar(settings: Settings) -> Any:
    """A one-line progress bar on stderr for ``scan`` on a terminal; ``None`` in logs and pipes."""
    enabled = settings.progress == "always" or (settings.progress == "auto" and sys.stderr.isatty())
    if not enabled:
        return None

    def show(done: int, total: int) -> None:
        width = 30
        filled = width * done // total if total else width
        end = "\n" if done >= total else ""  # a finished bar leaves its line to what follows
        sys.stderr.write(f"\rscanning [{'#' * filled}{'.' * (width - filled)}] {done}/{total}{end}")
        sys.stderr.flush()

    return show


COMMANDS = {
    "scan": cmd_scan,
    "run": cmd_run,
    "report": cmd_report,
    "validate": cmd_validate,
    "status": cmd_status,
    "follow": cmd_follow,
    "notify": cmd_notify,
    "central": fleetcli.cmd_central,
    "publish": publishcli.cmd_publish,
}
