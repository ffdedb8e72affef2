"""The invariant, stated once and checked after every reliability scenario.

After the daemon settles: every tracked file in the tree is in exactly one of ``results`` and
``rejections``, agreeing with the file's own verdict; every folder that cannot be listed is in
``rejections`` under its own path (what was stored below it may stay: it is out of sight, not
gone); nothing else is in them; the ``report`` view equals the latest valid file per model_id;
``history``'s last entry for each current path records its current outcome and content.

Run it as the user the daemon runs as: permissions decide what can be listed.

Each file's own verdict comes from the production judge (:func:`watcher.judge.judge`): this module
checks that the service *applied* every verdict, not that the verdicts are right. That the judge
is right is shown independently, against hand-written expectations, in ``tests/core/test_judge.py``,
``tests/core/test_resultfile.py`` and ``tests/core/test_scoring.py``.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from watcher.config import DEFAULT_IGNORE
from watcher.judge import JudgeOptions, judge
from watcher.outcomes import Rejected, Removed, Scored, stored_path
from watcher.tree import Matcher, walk


def violations(
    watch_dir: Path, db: Path, max_file_bytes: int = 64 * 1024 * 1024, matcher: Matcher | None = None
) -> list[str]:
    """Every way the database disagrees with the tree; empty when the invariant holds. ``matcher``
    says which files count (by default ``*.json`` and the default ignore patterns)."""
    if not db.exists():
        return ["no database"]
    conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=30)
    try:
        results = {p: sha for p, sha in conn.execute("SELECT path, sha256 FROM results")}
        rejections = {p: sha for p, sha in conn.execute("SELECT path, sha256 FROM rejections")}
        report = {m: p for m, p in conn.execute("SELECT model_id, path FROM report")}
        last = {
            p: (o, sha)
            for p, o, sha in conn.execute(
                "SELECT path, outcome, sha256 FROM history WHERE id IN (SELECT max(id) FROM history GROUP BY path)"
            )
        }
    finally:
        conn.close()
    out: list[str] = [f"{p}: in results and rejections" for p in set(results) & set(rejections)]
    opts = JudgeOptions(root=watch_dir, target_recall=0.85, max_file_bytes=max_file_bytes)
    latest: dict[str, tuple[str, str]] = {}
    on_disk = set()
    unreadable: list[tuple[str, str]] = []
    for name, _ in walk(watch_dir, matcher or Matcher(("*.json",), DEFAULT_IGNORE), unreadable=unreadable):
        verdict, rel = judge(name, opts), stored_path(name)  # the database's form of the path
        if isinstance(verdict, Removed):
            continue  # vanished while we looked
        on_disk.add(rel)
        if isinstance(verdict, Scored):
            if results.get(rel) != verdict.sha256:
                out.append(f"{rel}: valid on disk, but results has {results.get(rel)!r}")
            if latest.get(verdict.model_id, ("", "")) < (verdict.experiment_at, rel):
                latest[verdict.model_id] = (verdict.experiment_at, rel)
        elif isinstance(verdict, Rejected) and rel not in rejections:
            out.append(f"{rel}: invalid on disk ({verdict.errors[0].message}), but not in rejections")
        table, kind = (results, "scored") if rel in results else (rejections, "rejected")
        if rel in table and last.get(rel) != (kind, table[rel]):
            out.append(f"{rel}: history's last entry {last.get(rel)} is not ({kind}, {table[rel]})")
    hidden = [stored_path(folder) for folder, _ in unreadable]
    for folder in hidden:
        on_disk.add(folder)
        if folder not in rejections:
            out.append(f"{folder}/: cannot be listed, but not in rejections")
    out += [
        f"{p}: stored but not on disk"
        for p in (set(results) | set(rejections)) - on_disk
        if not any(p.startswith(f + "/") for f in hidden)
    ]
    expected = {m: p for m, (_, p) in latest.items()}
    if report != expected:
        out.append(f"report view {sorted(report.items())} != latest valid per model {sorted(expected.items())}")
    return out


def holds(watch_dir: Path, db: Path, matcher: Matcher | None = None) -> bool:
    """True when there are no :func:`violations` (for polling with a deadline)."""
    return not violations(watch_dir, db, matcher=matcher)
