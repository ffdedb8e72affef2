"""The cost of one :func:`watcher.producer.publish` call beside scikit-learn's own ``roc_curve`` on
the same data, in the same run: ``python -m benchmarks.publish``.

For each size (10,000 and 1,000,000 samples by default; 30% positives, continuous scores, so
nearly every score is distinct), the best of ``--repeats`` runs of: ``roc_curve`` (NumPy, the
reference), ``publish`` with the exact curve (a point at every distinct score), ``publish`` with
1,001 thresholds, and the exact call's parts (the curve from labels and scores; the file's bytes,
validated and scored; the atomic write). Wall and CPU seconds, the ratio of each to ``roc_curve``,
and the file's size. Labels and scores are NumPy arrays, as a job has them. The machine is shared
and noisy: figures move between runs. ``--quick`` runs tiny sizes (the smoke test).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_curve

from watcher.producer import _write_atomic, check, curve_from_scores, publish

ISSUER = "bench@example.com"


def timed(repeats: int, run: Callable[[], Any]) -> tuple[float, float, Any]:
    """Best wall and CPU seconds over ``repeats`` runs, and the last result."""
    best_wall = best_cpu = float("inf")
    result = None
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        result = run()
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return best_wall, best_cpu, result


def measure(n: int, repeats: int, folder: Path) -> list[tuple[str, float, float, str]]:
    rng = np.random.default_rng(n)
    labels = rng.random(n) < 0.3
    scores = np.clip(rng.normal(np.where(labels, 0.62, 0.4), 0.15), 0.0, 1.0)
    rows: list[tuple[str, float, float, str]] = []
    # Warm: the first call imports the e-mail check and builds pydantic's validators.
    publish(folder, model_id=uuid.uuid4(), issuer=ISSUER, labels=[1, 0], scores=[0.9, 0.1])
    wall, cpu, _ = timed(repeats, lambda: roc_curve(labels, scores))
    rows.append(("scikit-learn roc_curve", wall, cpu, ""))

    def exact() -> Any:
        return publish(folder, model_id=uuid.uuid4(), issuer=ISSUER, labels=labels, scores=scores)

    wall, cpu, done = timed(repeats, exact)
    rows.append(("publish, exact curve", wall, cpu, f"{done.n_points:,} points, {done.path.stat().st_size:,} bytes"))

    def grid() -> Any:
        return publish(folder, model_id=uuid.uuid4(), issuer=ISSUER, labels=labels, scores=scores, thresholds=1001)

    wall, cpu, done = timed(repeats, grid)
    rows.append(("publish, 1,001 thresholds", wall, cpu, f"{done.path.stat().st_size:,} bytes"))
    wall, cpu, curve = timed(repeats, lambda: curve_from_scores(labels, scores))
    rows.append(("  of which: the curve from labels and scores", wall, cpu, ""))
    wall, cpu, (raw, _) = timed(repeats, lambda: check(curve, uuid.uuid4(), ISSUER))
    rows.append(("  of which: the file's bytes, validated", wall, cpu, ""))
    wall, cpu, _ = timed(repeats, lambda: _write_atomic(folder / f"{uuid.uuid4()}.json", raw))
    rows.append(("  of which: the atomic write (fsync, rename, fsync)", wall, cpu, ""))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one run each (the smoke test)")
    args = parser.parse_args()
    sizes, repeats = ([1_000, 5_000], 1) if args.quick else (args.sizes, args.repeats)
    print("| samples | what | wall s | CPU s | wall / roc_curve | CPU / roc_curve | file |")
    print("|---:|---|---:|---:|---:|---:|---|")
    for n in sizes:
        folder = Path(tempfile.mkdtemp(prefix="watcher-bench-publish-"))
        try:
            rows = measure(n, repeats, folder)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        _, ref_wall, ref_cpu, _ = rows[0]
        for what, wall, cpu, note in rows:
            print(
                f"| {n:,} | {what} | {wall:.4f} | {cpu:.4f} | {wall / ref_wall:.1f}x | "
                f"{cpu / max(ref_cpu, 1e-9):.1f}x | {note} |"
            )


if __name__ == "__main__":
    main()
