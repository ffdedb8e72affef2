"""Generated models for the tests and the benchmarks: the rows of ``n`` models (realistic curves,
assorted issuers and date offsets), as the store's report rows, as scored outcomes, and as a
database written straight from them (no files)."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from testing import corpus
from watcher.config import Settings
from watcher.outcomes import FileStat, Scored
from watcher.scoring import curve_bytes, drawn_curve, optimal_point
from watcher.store import Store

OFFSETS = ["Z", "+02:00", "-05:30", ".250Z", ".123456+09:00", "z"]


def report_rows(n: int, seed: int = 1, superseded: float = 0.01) -> Iterator[tuple[Any, ...]]:
    """``n`` models' rows as :meth:`watcher.store.Store.report_details` gives them, unsorted, and for
    a share of the models a superseded older file: ``(model_id, issuer, threshold, recall,
    experiment_date, path, target_recall, target_met, n_points, curve, distance, experiment_at)``.
    Realistic curves (a few hundred, reused), 37 issuers, and dates written with assorted offsets
    so that text order and instant order differ."""
    rng = random.Random(seed)
    shapes = []
    for k in range(400):
        thresholds, recalls = corpus.curve(101, random.Random(k))
        score = optimal_point(thresholds, recalls, 0.85)
        xs, ys = drawn_curve(thresholds, recalls, score.index)
        shapes.append((score, curve_bytes(xs, ys)))
    dates = []
    for _ in range(5000):
        day, sec = 1 + rng.randrange(28), rng.randrange(86400)
        date = f"2024-{1 + rng.randrange(12):02}-{day:02}T{sec // 3600:02}:{sec // 60 % 60:02}:{sec % 60:02}"
        offset = OFFSETS[rng.randrange(len(OFFSETS))]
        date += offset.upper() if offset == "z" else offset
        dates.append((date, _utc(date)))
    older = ("2023-01-01T00:00:00Z", _utc("2023-01-01T00:00:00Z"))
    for i in range(n):
        h = f"{rng.getrandbits(128):032x}"
        model = f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) % 4]}{h[17:20]}-{h[20:]}"
        for v in range(2 if rng.random() < superseded else 1):
            score, curve = shapes[rng.randrange(len(shapes))]
            date, at = older if v else dates[rng.randrange(len(dates))]
            path = f"old/{corpus.relpath(i)}" if v else corpus.relpath(i)
            yield (model, f"user{i % 37}@example.com", score.threshold, score.recall, date, path, 0.85,
                   score.target_met, 101, curve, score.distance, at)  # fmt: skip


def outcomes(n: int, seed: int = 1, superseded: float = 0.01) -> Iterator[Scored]:
    """:func:`report_rows` as the outcomes of scored files, for :meth:`watcher.store.Store.apply`."""
    for i, (model, issuer, thr, rec, date, path, target, met, points, curve, distance, at) in enumerate(
        report_rows(n, seed, superseded)
    ):
        yield Scored(
            path=path, stat=FileStat(1000, 1, i), sha256=hashlib.sha256(path.encode()).hexdigest(), model_id=model,
            issuer=issuer, experiment_date=date, experiment_at=at, optimal_threshold=thr, closest_recall_value=rec,
            distance=distance, target_met=met, target_recall=target, n_points=points, curve=curve,
        )  # fmt: skip


def _utc(date: str) -> str:
    return datetime.fromisoformat(date.upper()).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def database(work: Path, n: int) -> Settings:
    """A database of ``n`` generated models (and settings pointing at it)."""
    values: dict[str, Any] = {"watch_dir": work, "db_path": work / f"page{n}.db", "report_dir": work / f"reports{n}"}
    settings = Settings(**values)
    store = Store.open(settings.db_path)
    try:
        batch: list[Any] = []
        for o in outcomes(n):
            batch.append(o)
            if len(batch) == 5000:
                store.apply(batch)
                batch = []
        store.apply(batch)
    finally:
        store.close()
    settings.report_dir.mkdir(exist_ok=True)
    return settings
