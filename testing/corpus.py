"""Generate a results tree of N realistic files (logistic recall curves, 101 points by default).

``python -m testing.corpus DIR N [--points P]``. Files go 1,000 to a subfolder, as training jobs
grouped by run would write them. Deterministic for a given seed.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import uuid
from pathlib import Path
from typing import Any


def curve(points: int, rng: random.Random) -> tuple[list[float], list[float]]:
    """Thresholds 0..1 and a noisy recall curve that never rises, with steps and plateaus.

    Recall measured at a threshold never rises as the threshold does (a positive scored above a
    threshold is above every lower one), so the noise is kept as a running minimum.
    """
    mid, steep = rng.uniform(0.3, 0.7), rng.uniform(6, 20)
    thresholds = [i / (points - 1) for i in range(points)] if points > 1 else [0.5]
    noisy = [min(1.0, max(0.0, 1 / (1 + math.exp(steep * (t - mid))) + rng.uniform(-0.01, 0.01))) for t in thresholds]
    return [round(t, 6) for t in thresholds], [round(r, 6) for r in itertools.accumulate(noisy, min)]


def document(i: int, points: int, rng: random.Random) -> dict[str, Any]:
    """The i-th results document."""
    thresholds, recalls = curve(points, rng)
    return {
        "model_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "issuer": f"user{i % 37}@example.com",
        "experiment_date": f"2024-{1 + i % 12:02}-{1 + i % 28:02}T{i % 24:02}:{i % 60:02}:{(i * 7) % 60:02}.000Z",
        "threshold_arr": thresholds,
        "recall_arr": recalls,
    }


def relpath(i: int, per_folder: int = 1000) -> str:
    """Where the i-th file lives in the tree (``per_folder`` files to a folder)."""
    return f"run{i // per_folder:04}/model{i:07}.json"


def generate(
    root: Path, n: int, points: int = 101, seed: int = 1, start: int = 0, per_folder: int = 1000
) -> list[Path]:
    """Write files ``start`` .. ``start + n - 1`` under ``root``; returns their paths."""
    rng = random.Random(seed * 1_000_003 + start)
    paths = []
    for i in range(start, start + n):
        path = root / relpath(i, per_folder)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document(i, points, rng)))
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("dir", type=Path)
    parser.add_argument("n", type=int)
    parser.add_argument("--points", type=int, default=101)
    args = parser.parse_args()
    generate(args.dir, args.n, args.points)


if __name__ == "__main__":
    main()
