"""Command line: parse argv, load settings, call one library function, print, return an exit code.

Exit codes: 0 success; 1 invalid files found (``scan --strict``, ``validate``); 2 usage or
configuration error; 3 runtime failure (database, watch dir) or, for ``status``, no daemon running.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from watcher import __version__, logs
from watcher.config import Settings, load_settings
from watcher.errors import ConfigError, WatcherError
from watcher.judge import JudgeOptions, judge
from watcher.outcomes import Rejected, Scored
from watcher.reconcile import scan
from watcher.render import RENDERERS
from watcher.store import Store

EXIT_OK, EXIT_INVALID, EXIT_CONFIG, EXIT_FAILURE = 0, 1, 2, 3


def _common(p: argparse.ArgumentParser, watch: bool = True) -> None:
    p.add_argument("--config", type=Path, help="TOML config file (default: $WATCHER_CONFIG, else none)")
    p.add_argument("--db", dest="db_path", help="SQLite database file")
    if watch:
        p.add_argument("--watch-dir", help="directory of results files")
    p.add_argument("--log-format", choices=["auto", "json", "console"], help="log format on stderr")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="lowest level logged")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``watcher`` command."""
    parser = argparse.ArgumentParser(
        prog="watcher", description="Turn a folder of evaluation results into a live table."
    )
    parser.add_argument("--version", action="version", version=f"watcher {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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

    p = sub.add_parser("validate", help="check files before writing them into the watch dir")
    _common(p, watch=False)
    p.add_argument("files", nargs="+", type=Path, metavar="FILE")

    p = sub.add_parser("status", help="say whether the daemon runs, and what the database holds")
    _common(p, watch=False)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


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
    args = build_parser().parse_args(argv)
    flags = {k: getattr(args, k, None) for k in ("db_path", "watch_dir", "log_format", "log_level")}
    try:
        settings = load_settings(args.config, flags=flags)
    except ConfigError as exc:
        print(f"watcher: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    logs.configure(settings.log_level, settings.log_format)
    try:
        return int(COMMANDS[args.command](args, settings, out))
    except WatcherError as exc:
        print(f"watcher: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130


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

    return run(settings)


def cmd_report(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """``watcher report``."""
    fmt = args.format or ("table" if out.isatty() else "csv")
    store = Store.open_readonly(settings.db_path)
    try:
        RENDERERS[fmt](store.report_rows(issuer=args.issuer, model=args.model), out)
    finally:
        store.close()
    return EXIT_OK


def cmd_validate(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """``watcher validate FILE...``: one verdict per file, reasons indented below."""
    invalid = 0
    for path in args.files:
        opts = JudgeOptions(
            root=path.parent.absolute(), target_recall=settings.target_recall,
            max_file_bytes=settings.max_file_bytes, max_errors=settings.max_errors_per_file, follow_symlinks=True,
        )  # fmt: skip
        outcome = judge(path.name, opts)
        if isinstance(outcome, Scored):
            print(
                f"{path}: ok: model_id {outcome.model_id}, optimal_threshold {outcome.optimal_threshold}, "
                f"closest_recall_value {outcome.closest_recall_value}",
                file=out,
            )
            continue
        invalid += 1
        problems = outcome.errors if isinstance(outcome, Rejected) else ()
        print(f"{path}: invalid" + ("" if problems else ": no such file"), file=out)
        for p in problems:
            print(f"  {p.field or '(file)'}: {p.message}", file=out)
    return EXIT_INVALID if invalid else EXIT_OK


def cmd_status(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """``watcher status``: exit 0 when a daemon is running on this database, 3 otherwise."""
    from watcher.daemon import daemon_running

    store = Store.open_readonly(settings.db_path)
    try:
        info: dict[str, Any] = {
            "running": daemon_running(settings.db_path),
            "daemon": store.status(),
            "counts": store.counts(),
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
        f"started at:      {d.get('started_at') or '-'}",
        f"last event:      {d.get('last_event_at') or '-'}",
        f"last reconcile:  {d.get('last_reconcile_at') or '-'}",
        *_polling_lines(d),
        f"models:          {c['models']}",
        f"results:         {c['results']}",
        f"rejections:      {c['rejections']}",
    ]
    if info["recent_rejections"]:
        lines.append("newest rejections:")
        lines += [f"  {r['path']}: {r['reason']}" for r in info["recent_rejections"]]
    return "\n".join(lines) + "\n"


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
}
