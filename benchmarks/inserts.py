"""A cold scan's inserts as the table grows: ``python -m benchmarks.inserts [--files N] [--rounds R]``.

N outcomes go into an empty database in batches of ``batch_size``, one transaction each, as a cold
scan's writer applies them (:meth:`watcher.store.Store.apply`), three ways in turn in each round:
every index filled row by row (as before the deferred indexes); the indexes
:meth:`~watcher.store.Store.indexes_deferred` names built at the end (a cold scan now); and
``results_latest`` left to the end too (not done by watcher: the report view looks every model up
in it, so a reader during the scan would take quadratic time; this shows what it costs). The
outcomes are judged in memory from 2,000 generated documents (``testing.corpus``), each reused
under the paths of a tree of 100 files a folder, with a model_id and an experiment instant of
their own, as the million-file tree has them. Prints, per file, the CPU (user + system) of the
inserts and the close, the part of it that built indexes at the end, the system part, and wall.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import resource
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from testing import corpus
from watcher.judge import JudgeOptions, judge_bytes
from watcher.outcomes import FileStat, Scored
from watcher.resultfile import utc_instant
from watcher.schema import DEFERRABLE_INDEXES
from watcher.store import Store

#: The ways compared: the indexes dropped first and built at the end of the inserts.
WAYS = {
    "every index row by row": (),
    "deferred (a cold scan)": tuple(DEFERRABLE_INDEXES),
    "results_latest deferred too": ("results_latest", *DEFERRABLE_INDEXES),
}


def outcomes(n: int, seed: int = 1) -> list[Scored]:
    """``n`` scored outcomes, each with its own path, model_id and experiment instant."""
    rng = random.Random(seed)
    opts = JudgeOptions(root=Path("."), target_recall=0.85, max_file_bytes=64 << 20)
    made: list[Scored] = []
    for i in range(min(n, 2_000)):
        raw = json.dumps(corpus.document(i, 101, rng)).encode()
        judged = judge_bytes("", raw, FileStat(len(raw), 0, 0), hashlib.sha256(raw).hexdigest(), opts)
        assert isinstance(judged, Scored)
        made.append(judged)
    out = []
    for i in range(n):
        date = corpus.document(i, 1, rng)["experiment_date"]
        model_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        fields = {"path": corpus.relpath(i, 100), "model_id": model_id, "experiment_date": date}
        out.append(made[i % len(made)]._replace(**fields, experiment_at=utc_instant(date)))
    return out


def _cpu() -> tuple[float, float]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime, r.ru_stime


def insert(made: list[Scored], deferred: tuple[str, ...], work: Path, batch: int) -> tuple[float, float, float, float]:
    """CPU, of which the index build, system and wall seconds of the inserts (and the close)."""
    store = Store.open(work / "inserts.db")
    try:
        sql = dict(store.db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index'").fetchall())
        (cpu0, sys0), wall0 = _cpu(), time.perf_counter()
        with store.writing():
            for name in deferred:
                store.db.execute(f"DROP INDEX {name}")
        for start in range(0, len(made), batch):
            store.apply(made[start : start + batch])
        build0, _ = _cpu()
        with store.writing():
            for name in deferred:
                store.db.execute(sql[name])
        build1, _ = _cpu()
    finally:
        store.close()
    (cpu1, sys1), wall1 = _cpu(), time.perf_counter()
    return cpu1 - cpu0, build1 - build0, sys1 - sys0, wall1 - wall0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=5_000)
    args = parser.parse_args(argv)
    made = outcomes(args.files)
    runs: dict[str, list[tuple[float, float, float, float]]] = {way: [] for way in WAYS}
    for _ in range(args.rounds):
        for way, deferred in WAYS.items():
            with tempfile.TemporaryDirectory() as work:
                runs[way].append(insert(made, deferred, Path(work), args.batch_size))
    n = len(made)
    print(f"Inserts of {n:,} outcomes into an empty database, {args.rounds} interleaved rounds, µs per file "
          "(median; every run): CPU (of which indexes built at the end; system), wall")  # fmt: skip
    for way, figures in runs.items():
        cells = []
        for i in range(4):
            values = [f[i] / n * 1e6 for f in figures]
            cells.append(f"{statistics.median(values):.1f} ({' '.join(f'{v:.1f}' for v in values)})")
        print(f"  {way:28} CPU {cells[0]} (at the end {cells[1]}; system {cells[2]}), wall {cells[3]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
