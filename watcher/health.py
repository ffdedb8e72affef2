"""``watcher status --check``: one verdict for a monitoring system, Nagios style.

Exit 0 ok, 1 warning, 2 critical, 3 unknown, and one line saying why (the worst problem first,
then how many more there are). What it looks at, all local and cheap:

* critical: no daemon holds the database (down); its heartbeat (written every 5 s) or its health
  file (written every 15 s by :mod:`watcher.metrics`) older than ``check_heartbeat_seconds``
  (hung, or the watchdog about to restart it); writes to the database or the reports failing;
* warning: the fleet's central database unreachable for longer than ``check_central_seconds``;
  more than ``check_rejections`` files rejected within the last ``check_rejections_window`` seconds;
* unknown: the config or the database cannot be read.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from watcher.config import Settings
from watcher.dblock import daemon_running
from watcher.errors import WatcherError
from watcher.metrics import health_path, iso_to_unix
from watcher.store import Store
from watcher.timestamps import now_iso

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
NAMES = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}
_RANK = {OK: 0, UNKNOWN: 1, WARNING: 2, CRITICAL: 3}  # the worst problem leads the line


def line(code: int, why: str) -> str:
    """The one line a check prints: ``WATCHER CRITICAL - daemon down: ...``."""
    return f"WATCHER {NAMES[code]} - {why}"


def verdict(settings: Settings, now: float | None = None) -> tuple[int, str]:
    """The exit code and the reason (without the ``WATCHER <STATE>`` prefix)."""
    now = time.time() if now is None else now
    try:
        store = Store.open_readonly(settings.db_path)
    except (WatcherError, sqlite3.Error, OSError) as exc:
        return UNKNOWN, f"cannot read the database: {exc}"
    try:
        status = store.status() or {}
        counts = store.counts()
        (rejected,) = store.db.execute(
            "SELECT count(*) FROM history WHERE outcome = 'rejected' AND at >= ?",
            [now_iso(now - settings.check_rejections_window)],
        ).fetchone()
    except sqlite3.Error as exc:
        return UNKNOWN, f"cannot read the database: {exc}"
    finally:
        store.close()
    problems = _problems(settings, now, status, int(rejected), _health(settings.db_path))
    if not problems:
        beat = iso_to_unix(status.get("heartbeat_at"))
        ago = "" if beat is None else f", heartbeat {max(now - beat, 0):.0f} s ago"
        return OK, (
            f"daemon running (pid {status.get('pid')}){ago}; {counts['models']} models, "
            f"{counts['rejections']} rejections"
        )
    problems.sort(key=lambda p: -_RANK[p[0]])
    code, why = problems[0]
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return code, why + more


def _health(db_path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(health_path(db_path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _problems(
    settings: Settings, now: float, status: dict[str, Any], rejected: int, health: dict[str, Any] | None
) -> list[tuple[int, str]]:
    if not daemon_running(settings.db_path):
        stopped = status.get("stopped_at")
        why = f" (stopped at {stopped})" if stopped else " (no daemon holds the database)"
        return [(CRITICAL, "daemon down" + why)]
    out: list[tuple[int, str]] = []
    limit = settings.check_heartbeat_seconds
    beat = iso_to_unix(status.get("heartbeat_at"))
    if beat is not None and now - beat > limit:
        out.append((CRITICAL, f"heartbeat late: last written {now - beat:.0f} s ago (limit {limit:g} s)"))
    if health is None or health.get("pid") != status.get("pid"):
        out.append((UNKNOWN, f"no health file from the running daemon ({health_path(settings.db_path)})"))
        health = {}
    else:
        written = float(health.get("written_at") or 0)
        if now - written > max(limit, 2 * float(health.get("period") or 15)):
            out.append((CRITICAL, f"watchdog late: the health file was written {now - written:.0f} s ago"))
    for key, what in (("database_failing_since", "database"), ("report_failing_since", "report")):
        since = health.get(key)
        if since is not None:
            out.append((CRITICAL, f"{what} writes failing for {now - float(since):.0f} s"))
    down = health.get("central_unreachable_since")
    if down is not None and now - float(down) > settings.check_central_seconds:
        out.append((
            WARNING,
            f"central database unreachable for {now - float(down):.0f} s (limit {settings.check_central_seconds:g} s)",
        ))  # fmt: skip
    if rejected > settings.check_rejections:
        window = settings.check_rejections_window
        out.append((
            WARNING,
            f"rejections rising: {rejected} files rejected in {window:g} s (limit {settings.check_rejections})",
        ))  # fmt: skip
    return out
