"""The one step from judged outcomes to the database, shared by the live path (the writer) and
the whole-tree reconcile: apply a batch in one transaction, log what changed, report it.

The events keep the component they always had (``watcher.reconcile``): operators filter on it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from itertools import islice

from watcher import logs
from watcher.logs import get_logger
from watcher.mirror import Applied
from watcher.outcomes import Outcome
from watcher.store import Store

log = get_logger("watcher.reconcile")


def log_applied(applied: Applied, store: Store, bulk: bool = False) -> None:
    """One log event per changed file, and which file wins for each model_id held by several.

    ``bulk`` (a reconcile of the whole tree: scan, start-up, periodic): ``file_scored`` and
    ``file_removed`` go to debug, the reconcile's summary says how many; ``file_rejected`` and
    ``model_regressed`` (a scored file worse than its model's experiment before it, with regression
    checks on) are one line per file at every level, bulk or live.
    """
    # Bound once per batch: the module-level proxy looks the configuration up on every call.
    blog = log.bind()
    routine = blog.debug if bulk else blog.info
    with logs.held():  # the batch's lines leave in one flush
        for s in applied.scored:
            routine(
                "file_scored", path=s.path, model_id=s.model_id, optimal_threshold=s.optimal_threshold,
                closest_recall_value=s.closest_recall_value, target_met=s.target_met,
            )  # fmt: skip
        for r in applied.rejected:
            blog.warning("file_rejected", path=r.path, errors=[p.as_dict() for p in r.errors])
        for f in applied.regressed:
            blog.warning(
                "model_regressed", path=f.scored.path, model_id=f.scored.model_id, reasons=f.reasons,
                previous_path=f.previous_path,
            )  # fmt: skip
        for path in applied.removed:
            routine("file_removed", path=path)
        for model_id, paths in store.duplicates(applied.models).items():
            blog.info("model_duplicate", model_id=model_id, winner=paths[0], others=paths[1:])


def apply_in_batches(
    store: Store,
    outcomes: Iterable[Outcome],
    batch_size: int,
    on_batch: Callable[[Applied, int], None],
    bulk: bool = False,
) -> None:
    """Apply outcomes ``batch_size`` at a time, one transaction each, calling ``on_batch`` after
    each; logged as :func:`log_applied` says (``bulk``: a whole-tree reconcile)."""
    it = iter(outcomes)
    while batch := list(islice(it, batch_size)):
        applied = store.apply(batch)
        log_applied(applied, store, bulk)
        on_batch(applied, len(batch))
