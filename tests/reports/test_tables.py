"""The kept table files: after any sequence of changes, the same bytes as a whole render."""

from __future__ import annotations

import errno
import functools
import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from watcher.outcomes import FileStat, Outcome, Rejected, Removed, Scored, Unchanged
from watcher.regression import Rules
from watcher.reports.files import write_reports
from watcher.reports.tables import ReportTables
from watcher.resultfile import Problem
from watcher.schema import REGRESSION_REPORT_COLUMNS
from watcher.store import Store

FORMATS = ["csv", "json", "markdown"]
ST = FileStat(10, 1, 1)
PATHS = [f"d{i % 3}/r{i}.json" for i in range(80)]
MODELS = [f"m{i:02d}" for i in range(40)] + ["=cmd", 'q"uote', "é-model"]
ISSUERS = ["ana@example.com", "b,ob@example.com", "+ml@example.com"]
# Few instants, so that two files of one model often tie and the greatest path decides.
INSTANTS = ["2024-05-01T12:00:00.000000Z", "2024-05-02T12:00:00.000000Z", "2024-05-03T12:00:00.000000Z"]


def scored(path: str, model: str, at: str, issuer: str = "ana@example.com", sha: str = "s") -> Scored:
    return Scored(path, ST, sha, model, issuer, at, at, 0.5, 0.86, 0.01, True, 0.85, 5)


def rejected(path: str) -> Rejected:
    return Rejected(path, ST, "r", (Problem("issuer", "bad"),))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / "w.db") as opened:
        yield opened


def whole(store: Store, folder: Path) -> dict[str, bytes]:
    """The files a whole render of the report gives."""
    folder.mkdir(exist_ok=True)
    return {p.name: p.read_bytes() for p in write_reports(store.report_rows, folder, FORMATS)}


def kept(tables: ReportTables, store: Store) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in tables.write(store)}


def random_batch(rng: random.Random) -> list[Outcome]:
    batch: list[Outcome] = []
    for _ in range(rng.randint(1, 3)):
        path, roll = rng.choice(PATHS), rng.random()
        if roll < 0.6:
            model, at, issuer = rng.choice(MODELS), rng.choice(INSTANTS), rng.choice(ISSUERS)
            batch.append(scored(path, model, at, issuer, sha=str(rng.random())))
        elif roll < 0.75:
            batch.append(rejected(path))
        elif roll < 0.95:
            batch.append(Removed(path))
        else:
            batch.append(Unchanged(path, FileStat(11, 2, 2), "s"))
    return batch


@pytest.mark.slow
def test_every_write_equals_a_whole_render_and_most_read_only_the_changes(store: Store, tmp_path: Path) -> None:
    rng = random.Random(17)
    store.apply([scored(p, rng.choice(MODELS), rng.choice(INSTANTS)) for p in PATHS])
    tables = ReportTables(tmp_path / "kept", [*FORMATS, "html"])
    for step in range(400):
        store.apply(random_batch(rng))
        assert kept(tables, store) == whole(store, tmp_path / "whole"), f"step {step}"
    assert tables.partial_reads > 300  # the changes alone, nearly every time
    assert tables.full_reads >= 1


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), steps=st.integers(1, 30))
@pytest.mark.slow
def test_any_history_of_changes_gives_the_whole_render(tmp_path: Path, seed: int, steps: int) -> None:
    rng = random.Random(seed)
    folder = tmp_path / str(seed)
    with Store.open(folder / "w.db") as store:
        store.apply([scored(p, rng.choice(MODELS), rng.choice(INSTANTS)) for p in rng.sample(PATHS, 60)])
        tables = ReportTables(folder / "kept", FORMATS)
        kept(tables, store)
        for _ in range(steps):
            store.apply(random_batch(rng))
            assert kept(tables, store) == whole(store, folder / "whole")


def test_a_superseded_file_given_to_another_model_leaves_the_first_models_row(store: Store, tmp_path: Path) -> None:
    others = [scored(p, f"other{i}", INSTANTS[0]) for i, p in enumerate(PATHS[6:])]  # a partial read pays
    store.apply([scored(p, "m1", INSTANTS[0]) for p in PATHS[:6]] + [scored("new.json", "m1", INSTANTS[2]), *others])
    tables = ReportTables(tmp_path, ["csv"])
    kept(tables, store)
    store.apply([scored(PATHS[0], "m2", INSTANTS[1])])  # was one of m1's older files
    assert kept(tables, store) == {"report.csv": whole(store, tmp_path / "whole")["report.csv"]}
    store.apply([scored("new.json", "m3", INSTANTS[0])])  # m1's report row moves to another model
    assert kept(tables, store)["report.csv"] == whole(store, tmp_path / "whole")["report.csv"]
    assert b"new.json" in (tmp_path / "report.csv").read_bytes()
    assert tables.partial_reads == 2


def test_no_change_writes_nothing(store: Store, tmp_path: Path) -> None:
    store.apply([scored(p, f"m{i}", INSTANTS[0]) for i, p in enumerate(PATHS)])
    tables = ReportTables(tmp_path, FORMATS)
    kept(tables, store)
    before = {p: p.stat().st_mtime_ns for p in tmp_path.glob("report.*")}
    store.apply([Unchanged(PATHS[0], FileStat(11, 2, 2), "s")])  # no history entry: not a change
    kept(tables, store)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.glob("report.*")} == before
    assert (tables.full_reads, tables.partial_reads) == (1, 0)


@pytest.mark.parametrize("harm", ["removed", "replaced", "appended"])
def test_a_file_not_as_written_is_written_whole(store: Store, tmp_path: Path, harm: str) -> None:
    store.apply([scored(p, f"m{i}", INSTANTS[0]) for i, p in enumerate(PATHS)])
    tables = ReportTables(tmp_path, FORMATS)
    kept(tables, store)
    target = tmp_path / "report.json"
    if harm == "removed":
        target.unlink()
    elif harm == "replaced":
        target.with_name("other").write_text("[]\n")
        target.with_name("other").replace(target)
    else:
        with target.open("a") as fh:
            fh.write("junk")
    store.apply([scored(PATHS[0], "changed", INSTANTS[1])])
    assert kept(tables, store) == whole(store, tmp_path / "whole")
    assert (tables.full_reads, tables.partial_reads) == (2, 0)


def test_another_history_is_read_whole(tmp_path: Path) -> None:
    tables = ReportTables(tmp_path / "out", ["csv"])
    with Store.open(tmp_path / "a.db") as a:
        a.apply([scored(p, f"m{i}", INSTANTS[0]) for i, p in enumerate(PATHS)])
        kept(tables, a)
    with Store.open(tmp_path / "b.db") as b:
        b.apply([scored("only.json", "solo", INSTANTS[1]), scored("x.json", "solo2", INSTANTS[1])])
        b.apply([scored(p, f"n{i}", INSTANTS[0]) for i, p in enumerate(PATHS[:2])])
        assert kept(tables, b) == {"report.csv": whole(b, tmp_path / "whole")["report.csv"]}
    assert tables.full_reads == 2


def test_many_changes_are_read_whole(store: Store, tmp_path: Path) -> None:
    store.apply([scored(p, f"m{i}", INSTANTS[0]) for i, p in enumerate(PATHS)])
    tables = ReportTables(tmp_path, ["json"])
    kept(tables, store)
    store.apply([scored(p, f"k{i}", INSTANTS[1]) for i, p in enumerate(PATHS[:20])])  # 40 of 80 models touched
    assert kept(tables, store) == {"report.json": whole(store, tmp_path / "whole")["report.json"]}
    assert (tables.full_reads, tables.partial_reads) == (2, 0)


def test_an_empty_report_and_a_report_emptied(store: Store, tmp_path: Path) -> None:
    tables = ReportTables(tmp_path, FORMATS)
    assert kept(tables, store) == whole(store, tmp_path / "whole")
    store.apply([scored(p, f"m{i}", INSTANTS[0]) for i, p in enumerate(PATHS[:3])])
    kept(tables, store)
    store.apply([Removed(p) for p in PATHS[:3]])
    assert kept(tables, store) == whole(store, tmp_path / "whole")
    assert (tmp_path / "report.json").read_text() == "[]\n"


def test_no_table_format_writes_nothing(store: Store, tmp_path: Path) -> None:
    assert ReportTables(tmp_path, ["html"]).write(store) == []
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("report")]


def test_without_copy_file_range_the_ranges_are_copied_through_memory(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unsupported(*_args: object) -> int:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "copy_file_range", unsupported)
    store.apply([scored(p, f"m{i}", INSTANTS[0]) for i, p in enumerate(PATHS)])
    tables = ReportTables(tmp_path, FORMATS)
    kept(tables, store)
    store.apply([scored(PATHS[5], "m5", INSTANTS[2], issuer="=changed@example.com"), Removed(PATHS[40])])
    assert kept(tables, store) == whole(store, tmp_path / "whole")
    assert tables.partial_reads == 1


def test_with_regression_checks_the_kept_files_are_the_whole_render_too(tmp_path: Path) -> None:
    # The verdict of a model's report row depends on its own files only, so the splice's rule
    # (the models the history names) covers it: late arrivals, removals and rewrites included.
    rng = random.Random(29)
    flagged = 0
    with Store.open(tmp_path / "w.db", regression_rules=Rules(0.02, 0.1)) as s:
        tables = ReportTables(tmp_path / "kept", FORMATS, regressions=True)
        (tmp_path / "kept").mkdir()
        for step in range(60):
            batch: list[Outcome] = []
            for _ in range(rng.randint(1, 3)):
                path = rng.choice(PATHS[:30])
                if rng.random() < 0.8:
                    recall, threshold = rng.choice([0.8, 0.86, 0.9]), rng.choice([0.3, 0.5])
                    at = rng.choice(INSTANTS)
                    batch.append(Scored(path, ST, str(rng.random()), rng.choice(MODELS[:5]), "ana@example.com",
                                        at, at, threshold, recall, 0.0, recall >= 0.85, 0.85, 5))  # fmt: skip
                else:
                    batch.append(Removed(path))
            s.apply(batch)
            rows = functools.partial(s.report_rows, regressions=True)
            folder = tmp_path / f"whole{step}"
            folder.mkdir()
            expected = {p.name: p.read_bytes() for p in write_reports(rows, folder, FORMATS, REGRESSION_REPORT_COLUMNS)}
            assert kept(tables, s) == expected, step
            flagged += b",true," in expected["report.csv"]
        assert tables.partial_reads > 0 and flagged > 10
