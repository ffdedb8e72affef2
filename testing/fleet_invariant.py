"""The central invariant, stated once: once a host has settled and its shipper caught up, its
rows in the central database equal its local ``results`` and ``rejections``."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import psycopg

_RESULT = (
    "path, model_id, issuer, experiment_date, experiment_at, optimal_threshold, closest_recall_value, distance,"
    " target_met, target_recall, n_points, sha256, rules_version, scored_at"
)


def local_state(db: Path) -> tuple[dict[str, tuple[Any, ...]], dict[str, tuple[Any, ...]]]:
    conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=30)
    try:
        results = {r[0]: (*r[:8], bool(r[8]), *r[9:]) for r in conn.execute(f"SELECT {_RESULT} FROM results")}
        rejections = {
            p: (p, json.loads(e), sha) for p, e, sha in conn.execute("SELECT path, errors, sha256 FROM rejections")
        }
    finally:
        conn.close()
    return results, rejections


def central_state(url: str, host: str) -> tuple[dict[str, tuple[Any, ...]], dict[str, tuple[Any, ...]]]:
    with psycopg.connect(url) as conn:
        results = {
            r[0]: tuple(r) for r in conn.execute(f"SELECT {_RESULT} FROM watcher.results WHERE host = %s", (host,))
        }
        rejections = {
            p: (p, e, sha)
            for p, e, sha in conn.execute(
                "SELECT path, errors, sha256 FROM watcher.rejections WHERE host = %s", (host,)
            )
        }
    return results, rejections


def violations(db: Path, url: str, host: str) -> list[str]:
    """Every difference between the host's local tables and its central rows; empty if equal."""
    local_results, local_rejections = local_state(db)
    central_results, central_rejections = central_state(url, host)
    out = []
    for name, local, remote in (
        ("results", local_results, central_results),
        ("rejections", local_rejections, central_rejections),
    ):
        out += [f"{host}: {name} {p}: only local" for p in local.keys() - remote.keys()]
        out += [f"{host}: {name} {p}: only central" for p in remote.keys() - local.keys()]
        out += [
            f"{host}: {name} {p}: local {local[p]} != central {remote[p]}"
            for p in local.keys() & remote.keys()
            if local[p] != remote[p]
        ]
    return out


def shipped_id(url: str, host: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT shipped_id FROM watcher.hosts WHERE host = %s", (host,)).fetchone()
    return int(row[0]) if row else -1


def local_max_id(db: Path) -> int:
    conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=30)
    try:
        return int(conn.execute("SELECT coalesce(max(id), 0) FROM history").fetchone()[0])
    finally:
        conn.close()
