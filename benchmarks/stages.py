"""Where a cold scan's CPU goes, per file and per stage, each stage timed apart in one process.

``python -m benchmarks.stages TREE`` (a tree from ``python -m testing.corpus``): every ``*.json``
below TREE goes through the stages of a scan as the scan takes it, without its concurrency: a
batch (``batch_size``) is judged in chunks of 256 files, each stage over a chunk's files before
the next (read: open, fstat, one read, close; hash; validate, :func:`watcher.resultfile.validate_bytes`;
score; the drawn curve; the outcome; pickled as a worker sends it); then the batch is unpickled
(the pool's IPC, in the scan's process), inserted (:meth:`watcher.store.Store.apply`, one
transaction, into a fresh database; the indexes a cold scan defers are built at the end, counted
in the insert) and logged (with the lookup of models held by several files). Then the naive
script's work (``benchmarks.baseline``: ``json.load`` and its checks and scoring) on the same
files. Prints microseconds of CPU per file (user + system), and the system part, for each stage.
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
from functools import partial
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


class Stages:
    """CPU (user + system) and system seconds summed by stage, in the order first seen."""

    def __init__(self) -> None:
        self.seconds: dict[str, list[float]] = {}

    def timed(self, label: str, step: Callable[[], Any]) -> Any:
        """Run ``step`` once and add its CPU to ``label``'s."""
        (u0, s0) = _cpu()
        out = step()
        (u1, s1) = _cpu()
        total = self.seconds.setdefault(label, [0.0, 0.0])
        total[0] += (u1 - u0) + (s1 - s0)
        total[1] += s1 - s0
        return out

    def per_file(self, n: int) -> list[tuple[str, float, float]]:
        """(stage, µs of CPU per file, µs of system time per file)."""
        return [(label, cpu / n * 1e6, sys_ / n * 1e6) for label, (cpu, sys_) in self.seconds.items()]


#: Files a worker judges between two sends (the scan's chunks).
CHUNK = 256
INSERT = "insert (results, history, indexes; commits)"


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _judged(rels: list[str], opts: JudgeOptions, stages: Stages) -> bytes:
    """One worker's chunk, stage by stage (each over the chunk's files before the next, as
    :func:`watcher.judge.judge_many` reads ahead of parsing): the pickled outcomes."""
    contents = stages.timed("read (open, fstat, read, close)", lambda: [_read(r, opts, True) for r in rels])
    raws: list[bytes] = [c.raw for c in contents]
    shas = stages.timed("hash (sha256)", lambda: [hashlib.sha256(b).hexdigest() for b in raws])
    models: list[ResultFile] = stages.timed("parse and validate", lambda: [validate_bytes(b) for b in raws])
    assert all(isinstance(m, ResultFile) for m in models), "the stages are timed on valid files only"
    scores = stages.timed("score", lambda: [optimal_point(m.threshold_arr, m.recall_arr, 0.85) for m in models])

    def curves() -> list[bytes]:
        out = []
        for m, s in zip(models, scores, strict=True):
            out.append(curve_bytes(*drawn_curve(m.threshold_arr, m.recall_arr, s.index)))
        return out

    drawn = stages.timed("encode the drawn curve", curves)

    def outcomes() -> list[Outcome]:
        return [
            Scored(r, c.stat, h, m.model_id, m.issuer, m.experiment_date, m.experiment_at, s.threshold, s.recall,
                   round(s.distance, DISTANCE_DECIMALS), s.target_met, 0.85, len(m.threshold_arr), d)
            for r, c, h, m, s, d in zip(rels, contents, shas, models, scores, drawn, strict=True)
        ]  # fmt: skip

    made = stages.timed("make the outcome", outcomes)
    pickled: bytes = stages.timed(
        f"IPC: pickle in the worker (chunks of {CHUNK})", lambda: pickle.dumps(made, pickle.HIGHEST_PROTOCOL)
    )
    return pickled


def _unpickled(pickled: list[bytes]) -> list[Outcome]:
    return [o for p in pickled for o in pickle.loads(p)]


def measure(tree: Path, work: Path) -> list[tuple[str, float, float]]:
    """Every stage over every file below ``tree``: (stage, µs of CPU per file, µs of system time).

    The files go through as a scan takes them: a batch (``batch_size``) judged in chunks of
    :data:`CHUNK`, each stage over a chunk's files in turn; then the batch's chunks unpickled,
    inserted in one transaction and logged; then the next batch. So each stage works on what one
    of the scan's processes holds at that point, not on every file's outcome at once.
    """
    rels = sorted(str(p.relative_to(tree)) for p in tree.rglob("*.json"))
    n = len(rels)
    opts = JudgeOptions(root=tree, target_recall=0.85, max_file_bytes=64 << 20)
    stages = Stages()
    settings = load_settings(flags={"watch_dir": tree, "db_path": work / "stages.db"})
    store = Store.from_settings(settings)
    # As a cold scan makes it: some indexes built at its end (a checkout from before: none).
    deferred = getattr(store, "indexes_deferred", contextlib.nullcontext)()
    gc.freeze()  # as the scan's entry does: what the imports made is never walked again
    try:
        with open(os.devnull, "w") as sink:
            logs.configure("info", "json", sink)
            stages.timed(INSERT, deferred.__enter__)
            for batch in _chunks(rels, settings.batch_size):
                pickled = [_judged(chunk, opts, stages) for chunk in _chunks(batch, CHUNK)]
                made: list[Outcome] = stages.timed("IPC: unpickle in the scan's process", partial(_unpickled, pickled))
                applied: Applied = stages.timed(INSERT, partial(store.apply, made))
                stages.timed("log lines and the duplicates lookup (info, as a scan)",
                             partial(log_applied, applied, store, bulk=True))  # fmt: skip
            stages.timed(INSERT, lambda: deferred.__exit__(None, None, None))
    finally:
        store.close()
    rows = stages.per_file(n)

    def naive() -> None:
        for r in rels:
            with open(os.path.join(tree, r), encoding="utf-8") as fh:
                doc = json.load(fh)
            baseline.score(doc)

    naive_stage = Stages()
    naive_stage.timed("the naive script: open, json.load, its checks and scoring", naive)
    return rows + naive_stage.per_file(n)


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
