"""The alternative users would otherwise run from cron: re-read every file, check, score, write a CSV.

Standard library only, one process, no state: O(all files) on every run. ``python -m
benchmarks.baseline DIR OUT.csv``. It checks the same fields (loosely, as such a script would) and
applies the same scoring rule, so the work compared is the same.
"""

from __future__ import annotations

import csv
import json
import os
import re
import sys
from datetime import datetime

UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def score(doc: dict, target: float = 0.85) -> tuple[float, float] | None:  # type: ignore[type-arg]
    try:
        mid = doc["model_id"]
        if not (isinstance(mid, str) and UUID.fullmatch(mid) and "@" in doc["issuer"]):
            return None
        datetime.fromisoformat(doc["experiment_date"])
        t, r = doc["threshold_arr"], doc["recall_arr"]
        if not t or len(t) != len(r):
            return None
        for a in (t, r):
            for x in a:
                if isinstance(x, bool) or not isinstance(x, (int, float)) or not 0 <= x <= 1:
                    return None
        if any(t[i] <= t[i - 1] for i in range(1, len(t))):
            return None
    except (KeyError, TypeError, ValueError):
        return None
    best_d = min(abs(x - target) for x in r)
    cands = [i for i, x in enumerate(r) if abs(x - target) <= best_d + 1e-9]
    i = max(cands, key=lambda i: (r[i] >= target, t[i]))
    return t[i], r[i]


def rescan(root: str, out: str) -> int:
    """Read and score every ``*.json`` below ``root``; write the latest row per model to ``out``."""
    latest: dict[str, tuple[str, list[object]]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if not name.endswith(".json") or name.startswith("."):
                continue
            path = os.path.join(dirpath, name)
            try:
                with open(path, encoding="utf-8") as fh:
                    doc = json.load(fh)
            except (OSError, ValueError):
                continue
            if not isinstance(doc, dict) or (s := score(doc)) is None:
                continue
            key = doc["model_id"].lower()
            row = [key, doc["issuer"], s[0], s[1], doc["experiment_date"], os.path.relpath(path, root)]
            if key not in latest or latest[key][0] < doc["experiment_date"]:
                latest[key] = (doc["experiment_date"], row)
    with open(out + ".tmp", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["model_id", "issuer", "optimal_threshold", "closest_recall_value", "experiment_date", "path"])
        w.writerows(row for _, row in sorted(latest.values(), key=lambda v: v[1][0]))  # type: ignore[arg-type,return-value]
    os.replace(out + ".tmp", out)
    return len(latest)


if __name__ == "__main__":
    rescan(sys.argv[1], sys.argv[2])
