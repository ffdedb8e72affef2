"""The folder's mirror in the database: which paths are stored with which stat key and hash, and
a batch of outcomes applied in one transaction (``results`` with ``point_sets``,
``rejections`` and ``history``).

A mixin of :class:`watcher.store.Store`, which owns the connection and its transactions.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from itertools import groupby
from operator import itemgetter
from typing import Any, NamedTuple

import sqlite_utils

from watcher import regression
from watcher.outcomes import FileStat, Outcome, Rejected, Removed, Scored, StatKey, Unchanged, stored_path
from watcher.regression import Rules
from watcher.timestamps import now_iso

# The columns a scored file writes (the regression verdict is written after, when judged).
_RESULT_COLUMNS = (
    "path, model_id, issuer, experiment_date, experiment_at, optimal_threshold, closest_recall_value, distance,"
    " target_met, target_recall, n_points, size, mtime_ns, inode, sha256, rules_version, scored_at, curve"
)


class Known(NamedTuple):
    """What the database holds for one path: its stat key ``(size, mtime_ns, inode)``, its hash,
    and whether it was judged under the current target and rules."""

    stat: StatKey | None
    sha256: str | None
    current: bool

    @property
    def reusable_sha(self) -> str | None:
        """The hash a re-read file may match to skip parsing: only an outcome judged under the
        current target and rules can be reused."""
        return self.sha256 if self.current else None


class Flagged(NamedTuple):
    """A scored file whose experiment regressed from the model's one before it."""

    scored: Scored
    reasons: list[str]
    previous_path: str


class Verdict(NamedTuple):
    """One stored file's regression verdict: its reasons (empty: none) and the path it was
    compared with (``None``: the model's first experiment)."""

    reasons: list[str]
    previous_path: str | None


@dataclass(slots=True)
class Applied:
    """What one :meth:`Mirror.apply` changed."""

    scored: list[Scored] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    models: set[str] = field(default_factory=set)
    #: The scored files found regressed (only with regression checks on), each with its reasons
    #: and the path of the model's experiment before it.
    regressed: list[Flagged] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        """True when the report or the rejections may differ."""
        return bool(self.scored or self.rejected or self.removed)


class Mirror:
    """The mirror's reads and writes; :class:`watcher.store.Store` provides the connection."""

    db: sqlite_utils.Database
    rules_version: int
    target_recall: float | None
    regression_rules: Rules | None

    def writing(self) -> AbstractContextManager[None]:
        """One write transaction (provided by :class:`watcher.store.Store`)."""
        raise NotImplementedError

    def size_hint(self) -> int:
        """About how many paths are stored (at least as many as there are): read from the end
        of the two tables' rowid trees, without counting them."""
        row = self.db.execute(
            "SELECT coalesce((SELECT max(rowid) FROM results), 0) + coalesce((SELECT max(rowid) FROM rejections), 0)"
        ).fetchone()
        return int(row[0])

    def stat_keys(
        self, under: str = "", outside: Sequence[str] = (), direct: bool = False
    ) -> dict[str, StatKey | None]:
        """Every stored path at or below ``under``: its stat key ``(size, mtime_ns, inode)`` when
        its outcome was made under the current target and rules, else ``None`` (judge it again).
        With ``outside`` (folders directly below the watch dir), only the paths in none of them;
        with ``direct``, only the files directly in ``under`` (what one folder's listing shows).

        What a reconcile compares each listed file with; the hashes are fetched (with
        :meth:`known_paths`) only for the few paths that turn out changed.
        """
        where, params = _under(stored_path(under))
        args: dict[str, Any] = {**params, "rules": self.rules_version, "target": self.target_recall}
        if outside:
            # The path's first folder ('' for a file at the top), looked up in the given ones.
            where += " AND substr(path, 1, instr(path, '/')) NOT IN (SELECT value FROM json_each(:outside))"
            args["outside"] = json.dumps([f"{stored_path(folder)}/" for folder in outside])
        if direct:
            prefix = len(stored_path(under)) + 1 if under else 0
            where += f" AND instr(substr(path, {prefix + 1}), '/') = 0"
        out: dict[str, StatKey | None] = {}
        for table in ("results", "rejections"):
            # A result is current only if scored for today's target; a rejection does not depend on it.
            extra = " AND target_recall = :target" if table == "results" else ""
            sql = f"SELECT path, size, mtime_ns, inode, rules_version = :rules{extra} FROM {table} WHERE {where}"
            # One row per stored file in every reconcile: fetched at once, no object per row
            # beyond the key (a rejection read without a stat has a key of NULLs: never equal).
            rows = self.db.execute(sql, args).fetchall()
            out.update({p: (size, mtime_ns, inode) if current else None for p, size, mtime_ns, inode, current in rows})
        return out

    def known_paths(self, paths: Sequence[str]) -> dict[str, Known]:
        """What is stored for each of ``paths`` (absent paths are left out), keyed as given: a
        path that is not valid UTF-8 is looked up in its :func:`~watcher.outcomes.stored_path` form."""
        out: dict[str, Known] = {}
        for chunk in _chunks(paths, 500):
            shown = [stored_path(p) for p in chunk]
            params = {f"p{i}": s for i, s in enumerate(shown)}
            found = self._known(f"path IN ({', '.join(':' + k for k in params)})", params)
            if shown != chunk:  # keyed as given
                found = {p: found[s] for p, s in zip(chunk, shown, strict=True) if s in found}
            out.update(found)
        return out

    def _known(self, where: str, params: dict[str, str]) -> dict[str, Known]:
        out: dict[str, Known] = {}
        args = {**params, "rules": self.rules_version, "target": self.target_recall}
        for table in ("results", "rejections"):
            # A result is current only if scored for today's target; a rejection does not depend on it.
            extra = " AND target_recall = :target" if table == "results" else ""
            sql = (
                f"SELECT path, size, mtime_ns, inode, sha256, rules_version = :rules{extra} FROM {table} WHERE {where}"
            )
            make = Known._make  # once per stored file in every reconcile: the cheapest constructor
            for path, size, mtime_ns, inode, sha, current in self.db.execute(sql, args):
                out[path] = make(((size, mtime_ns, inode) if size is not None else None, sha, current == 1))
        return out

    def duplicates(self, models: Iterable[str]) -> dict[str, list[str]]:
        """For each given model_id held by several files, its paths, the winner first.

        Looks up only the given model_ids (through the ``results_latest`` index), so the cost
        follows the batch, not the table.
        """
        out: dict[str, list[str]] = {}
        for chunk in _chunks(sorted(models), 500):
            sql = (
                f"SELECT model_id, path FROM results WHERE model_id IN ({','.join('?' * len(chunk))}) "
                "ORDER BY model_id, experiment_at DESC, path DESC"
            )
            for model_id, path in self.db.execute(sql, list(chunk)):
                out.setdefault(model_id, []).append(path)
        return {model_id: paths for model_id, paths in out.items() if len(paths) > 1}

    def apply(self, outcomes: Sequence[Outcome]) -> Applied:
        """Write a batch of outcomes in one transaction and return what changed.

        Scored/Rejected replace the path's row in the other table too; Unchanged refreshes the
        stat key only; Removed deletes the path. Every real change appends to ``history``. If a
        path occurs more than once, its last outcome counts. Statements are batched
        (``executemany``): per-row round trips dominate a bulk scan otherwise.
        """
        latest = {o.path: o for o in outcomes}
        applied = Applied()
        at = now_iso()
        scored = [o for o in latest.values() if isinstance(o, Scored)]
        rejected = [o for o in latest.values() if isinstance(o, Rejected)]
        unchanged = [o for o in latest.values() if isinstance(o, Unchanged)]
        removed = [o.path for o in latest.values() if isinstance(o, Removed)]
        ex = self.db.conn.executemany
        with self.writing():
            old_models = self._column("results", "model_id", [*latest])
            old_rejections = self._rejection_keys([o.path for o in rejected])
            # A rejection identical to the stored one (same content, same reasons) is not news.
            restat = [(*_stat_tuple(o.stat), o.path) for o in unchanged]
            fresh: list[tuple[Rejected, str]] = []
            for o in rejected:
                errors = json.dumps([p.as_dict() for p in o.errors], ensure_ascii=False)
                if old_rejections.get(o.path) == (errors, o.sha256):
                    restat.append((*_stat_tuple(o.stat), o.path))
                else:
                    fresh.append((o, errors))
            gone = self._column("rejections", "sha256", removed)
            ex("DELETE FROM rejections WHERE path = ?", [(o.path,) for o in scored])
            ex(
                f"INSERT OR REPLACE INTO results ({_RESULT_COLUMNS}) VALUES ({', '.join('?' * 18)})",
                [
                    (
                        o.path, o.model_id, o.issuer, o.experiment_date, o.experiment_at, o.optimal_threshold,
                        o.closest_recall_value, o.distance, int(o.target_met), o.target_recall, o.n_points,
                        o.stat.size, o.stat.mtime_ns, o.stat.inode, o.sha256, self.rules_version, at, o.curve,
                    )
                    for o in scored
                ],
            )  # fmt: skip
            # A file's operating points go with its results row: replaced, or gone with it. Only
            # a path that had a results row can have one (a cold scan deletes nothing), and only
            # files with more than their primary point have one (often none at all).
            if old_models and self.db.execute("SELECT EXISTS (SELECT 1 FROM point_sets)").fetchone()[0]:
                paths = [o.path for o in scored] + [o.path for o, _ in fresh] + removed
                ex("DELETE FROM point_sets WHERE path = ?", [(p,) for p in paths if p in old_models])
            sets = [(o.path, o.points) for o in scored if o.points]
            if sets:
                ex("INSERT INTO point_sets VALUES (?, ?)", sets)
            ex("DELETE FROM results WHERE path = ?", [(o.path,) for o, _ in fresh])
            ex(
                "INSERT OR REPLACE INTO rejections VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(o.path, e, *_stat_tuple(o.stat), o.sha256, self.rules_version, at) for o, e in fresh],
            )
            for table in ("results", "rejections"):
                ex(f"UPDATE {table} SET size = ?, mtime_ns = ?, inode = ? WHERE path = ?", restat)
            ex("DELETE FROM results WHERE path = ?", [(p,) for p in removed])
            ex("DELETE FROM rejections WHERE path = ?", [(p,) for p in removed])
            real_removals = [p for p in removed if p in old_models or p in gone]
            models = {o.model_id for o in scored}
            models.update(m for p, m in old_models.items() if not isinstance(latest[p], Unchanged))
            verdicts = self._judge_regressions(models) if self.regression_rules is not None else {}
            details: dict[str, str] = {}
            for s in scored:
                verdict = verdicts.get(s.path)
                if verdict is not None and verdict.reasons and verdict.previous_path is not None:
                    applied.regressed.append(Flagged(s, verdict.reasons, verdict.previous_path))
                    details[s.path] = regression.detail(verdict.reasons)
            history: list[tuple[Any, ...]] = [
                (at, o.path, "scored", o.sha256, o.model_id, details.get(o.path)) for o in scored
            ]
            history += [(at, o.path, "rejected", o.sha256, None, e) for o, e in fresh]
            history += [(at, p, "removed", gone.get(p), old_models.get(p), None) for p in real_removals]
            ex("INSERT INTO history (at, path, outcome, sha256, model_id, detail) VALUES (?, ?, ?, ?, ?, ?)", history)
        applied.scored, applied.rejected, applied.removed = scored, [o for o, _ in fresh], real_removals
        applied.models = models
        return applied

    def refresh_regressions(self) -> None:
        """Bring every stored verdict in line with :attr:`regression_rules` (they may have changed
        since the verdicts were made): every model judged again when they are set, else every
        flag cleared. Writes only the rows whose verdict changes."""
        if self.regression_rules is None:
            if self.db.execute("SELECT EXISTS (SELECT 1 FROM results WHERE regressed = 1)").fetchone()[0]:
                with self.writing():
                    self.db.execute("UPDATE results SET regressed = 0, regression = '[]' WHERE regressed = 1")
            return
        with self.writing():
            self._judge_regressions(None)

    def _judge_regressions(self, models: Iterable[str] | None) -> dict[str, Verdict]:
        """Judge again every file of ``models`` (``None``: of every model) against its model's
        experiment before it (experiment instant, then path: the report's order), in the open
        write transaction; store the verdicts that changed and return them all, by path."""
        assert self.regression_rules is not None
        rules = self.regression_rules
        sql = "SELECT model_id, experiment_at, path, target_met, closest_recall_value, optimal_threshold, regression"
        sql += " FROM results"
        args: list[Any] = []
        if models is not None:
            chosen = sorted(models)
            if not chosen:
                return {}
            sql += " WHERE model_id IN (SELECT value FROM json_each(?))"
            args.append(json.dumps(chosen))
        rows = sorted(self.db.execute(sql, args).fetchall())  # by model_id, experiment_at, path
        out: dict[str, Verdict] = {}
        changed: list[tuple[int, str, str]] = []
        for _model, grouped in groupby(rows, key=itemgetter(0)):
            group = list(grouped)
            if len(group) == 1:  # most models in a big scan: a first experiment, no regression
                path, stored = group[0][2], group[0][6]
                out[path] = Verdict([], None)
                if stored != regression.NONE:
                    changed.append((0, regression.NONE, path))
                continue
            previous: tuple[str, regression.Point] | None = None
            for _m, _at, path, met, recall, threshold, stored in group:
                point = regression.Point(bool(met), recall, threshold)
                found = [] if previous is None else regression.reasons(previous[1], point, rules)
                out[path] = Verdict(found, None if previous is None else previous[0])
                encoded = regression.encode(found)
                if encoded != stored:
                    changed.append((int(bool(found)), encoded, path))
                previous = (path, point)
        self.db.conn.executemany("UPDATE results SET regressed = ?, regression = ? WHERE path = ?", changed)
        return out

    def _column(self, table: str, column: str, paths: Sequence[str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for chunk in _chunks(paths, 500):
            sql = f"SELECT path, {column} FROM {table} WHERE path IN ({','.join('?' * len(chunk))})"
            out.update(self.db.execute(sql, list(chunk)).fetchall())
        return out

    def _rejection_keys(self, paths: Sequence[str]) -> dict[str, tuple[str, str | None]]:
        out: dict[str, tuple[str, str | None]] = {}
        for chunk in _chunks(paths, 500):
            sql = (
                f"SELECT path, errors, sha256 FROM rejections WHERE rules_version = ? "
                f"AND path IN ({','.join('?' * len(chunk))})"
            )
            out.update((p, (e, h)) for p, e, h in self.db.execute(sql, [self.rules_version, *chunk]))
        return out


def _stat_tuple(stat: FileStat | None) -> tuple[int | None, int | None, int | None]:
    return (stat.size, stat.mtime_ns, stat.inode) if stat is not None else (None, None, None)


def _under(under: str) -> tuple[str, dict[str, str]]:
    if not under:
        return "1", {}
    # Paths below a folder: 'dir/' prefix, compared as a range so the primary key index is used.
    return "path >= :lo AND path < :hi", {"lo": under + "/", "hi": under + "0"}


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
