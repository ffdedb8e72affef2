"""Where a cold scan's CPU goes, per file and per stage, each stage timed alone in one process.

``python -m benchmarks.stages TREE`` (a tree from ``python -m testing.corpus``): every ``*.json``
below TREE goes through each stage of a scan in turn, all files through one stage before the next
(so each figure is that stage's own cost, its inputs already made): read (open, fstat, one read,
close), hash, validate (parse and check, :func:`watcher.resultfile.validate_bytes`), score, the
drawn curve, the outcome pickled in a worker and unpickled in the scan's process (the pool's IPC),
the insert (:meth:`watcher.store.Store.apply`, batches of ``batch_size``, into a fresh database, the
deferred indexes built at the end as in a cold scan),
and its log lines (with the lookup of models held by several files). Then the naive script's work
(``benchmarks.baseline``: ``json.load`` and its checks and scoring) on the same files. Prints
microseconds of CPU per file (user + system), and the system part, for each stage.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import json
import os
import pickle
import resource
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from benchmarks import baseline
from watcher import logs
from watcher.apply import log_applied
from watcher.config import load_settings
from watcher.judge import DISTANCE_DECIMALS, JudgeOptions, _read
from watcher.mirror import Applied
from watcher.outcomes import Outcome, Scored
from watcher.resultfile import ResultFile, validate_bytes
from watcher.scoring import curve_bytes, drawn_curve, optimal_point
from watcher.store import Store


def _cpu() -> tuple[float, float]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime


def timed(label: str, n: int, step: Callable[[], Any], rows: list[tuple[str, float, float]]) -> Any:
    """Run ``step`` once; record its CPU (user + system) and system seconds per file in ``rows``.

    What the stages before made is frozen first (``gc.freeze``): a scan's processes hold a few
    batches at a time, not every file's outcome, so the collector must not walk them all here.
    """
    gc.freeze()
    (u0, s0) = _cpu()
    out = step()
    (u1, s1) = _cpu()
    rows.append((label, ((u1 - u0) + (s1 - s0)) / n * 1e6, (s1 - s0) / n * 1e6))
    return out


def _batches(items: list[Outcome], size: int) -> Iterator[list[Outcome]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def measure(tree: Path, work: Path) -> list[tuple[str, float, float]]:
    """Every stage over every file below ``tree``: (stage, µs of CPU per file, µs of system time)."""
    rels = sorted(str(p.relative_to(tree)) for p in tree.rglob("*.json"))
    n = len(rels)
    opts = JudgeOptions(root=tree, target_recall=0.85, max_file_bytes=64 << 20)
    rows: list[tuple[str, float, float]] = []
    contents = timed("read (open, fstat, read, close)", n, lambda: [_read(r, opts, True) for r in rels], rows)
    raws: list[bytes] = [c.raw for c in contents]
    shas = timed("hash (sha256)", n, lambda: [hashlib.sha256(b).hexdigest() for b in raws], rows)
    models: list[ResultFile] = timed("parse and validate", n, lambda: [validate_bytes(b) for b in raws], rows)
    assert all(isinstance(m, ResultFile) for m in models), "the stages are timed on valid files only"
    scores = timed("score", n, lambda: [optimal_point(m.threshold_arr, m.recall_arr, 0.85) for m in models], rows)

    def curves() -> list[bytes]:
        out = []
        for m, s in zip(models, scores, strict=True):
            out.append(curve_bytes(*drawn_curve(m.threshold_arr, m.recall_arr, s.index)))
        return out

    drawn = timed("encode the drawn curve", n, curves, rows)

    def outcomes() -> list[Outcome]:
        return [
            Scored(r, c.stat, h, m.model_id, m.issuer, m.experiment_date, m.experiment_at, s.threshold, s.recall,
                   round(s.distance, DISTANCE_DECIMALS), s.target_met, 0.85, len(m.threshold_arr), d)
            for r, c, h, m, s, d in zip(rels, contents, shas, models, scores, drawn, strict=True)
        ]  # fmt: skip

    made = timed("make the outcome", n, outcomes, rows)
    pickled = timed("IPC: pickle in the worker (chunks of 256)", n,
                    lambda: [pickle.dumps(made[i : i + 256], pickle.HIGHEST_PROTOCOL) for i in range(0, n, 256)],
                    rows)  # fmt: skip
    timed("IPC: unpickle in the scan's process", n, lambda: [pickle.loads(p) for p in pickled], rows)
    settings = load_settings(flags={"watch_dir": tree, "db_path": work / "stages.db"})
    store = Store.from_settings(settings)
    # As a cold scan makes it: some indexes built at the end (a checkout from before: none).
    deferred = getattr(store, "indexes_deferred", contextlib.nullcontext)

    def insert() -> list[Applied]:
        with deferred():
            return [store.apply(b) for b in _batches(made, settings.batch_size)]

    try:
        applied = timed("insert (results, history, indexes; commits)", n, insert, rows)
        with open(os.devnull, "w") as sink:
            logs.configure("info", "json", sink)

            def log_all() -> None:
                for a in applied:
                    log_applied(a, store, bulk=True)

            timed("log lines and the duplicates lookup (info, as a scan)", n, log_all, rows)
    finally:
        store.close()

    def naive() -> None:
        for r in rels:
            with open(os.path.join(tree, r), encoding="utf-8") as fh:
                doc = json.load(fh)
            baseline.score(doc)

    timed("the naive script: open, json.load, its checks and scoring", n, naive, rows)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tree", type=Path)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        rows = measure(args.tree, Path(work))
    watcher_total = sum(cpu for label, cpu, _ in rows if not label.startswith("the naive"))
    print("| stage | CPU per file (µs) | of which system (µs) |")
    print("|---|---:|---:|")
    for label, cpu, sys_ in rows:
        print(f"| {label} | {cpu:.1f} | {sys_:.1f} |")
    print(f"| watcher's stages, summed | {watcher_total:.1f} | |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
