"""Regressions: the comparison itself, and the verdicts the store keeps as files arrive, are
rewritten, arrive out of order and are removed; the history's detail, the reports' columns and
``watcher follow --regressions``' selection."""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from watcher import cli, regression
from watcher.config import load_settings
from watcher.errors import ConfigError
from watcher.follow import Follower
from watcher.outcomes import FileStat, Rejected, Removed, Scored
from watcher.regression import Point, Rules
from watcher.reports.formats import render_csv, render_json, render_markdown, render_table
from watcher.resultfile import Problem
from watcher.schema import MIGRATIONS, REGRESSION_REPORT_COLUMNS, REPORT_COLUMNS
from watcher.store import Store

RULES = Rules(recall_delta=0.02, threshold_step=0.1)


def point(met: bool = True, recall: float = 0.86, threshold: float = 0.5) -> Point:
    return Point(met, recall, threshold)


# -- the comparison ---------------------------------------------------------------------------


def test_an_equal_or_better_experiment_is_no_regression() -> None:
    assert regression.reasons(point(), point(), RULES) == []
    assert regression.reasons(point(met=False, recall=0.8), point(recall=0.9), RULES) == []


def test_target_met_before_and_not_now() -> None:
    assert regression.reasons(point(), point(met=False, recall=0.85), RULES) == ["target no longer met"]
    # Missed before and missed now: not news.
    assert regression.reasons(point(met=False, recall=0.7), point(met=False, recall=0.7), RULES) == []


@pytest.mark.parametrize(
    ("before", "now", "flagged"),
    [(0.90, 0.88, False), (0.90, 0.879, True), (0.87, 0.85, False), (0.3, 0.28, False), (0.9, 0.95, False)],
)
def test_recall_down_by_more_than_the_delta(before: float, now: float, flagged: bool) -> None:
    # 0.90 - 0.88 is 0.020000000000000018 in floats: exactly the delta as the inputs say, not more.
    found = regression.reasons(point(recall=before), point(recall=now), RULES)
    assert found == ([f"recall down {round(before - now, 12):g} ({before:g} -> {now:g})"] if flagged else [])


@pytest.mark.parametrize(
    ("before", "now", "flagged"), [(0.5, 0.6, False), (0.5, 0.61, True), (0.6, 0.5, False), (0.7, 0.55, True)]
)
def test_threshold_moved_by_more_than_the_step_either_way(before: float, now: float, flagged: bool) -> None:
    found = regression.reasons(point(threshold=before), point(threshold=now), RULES)
    assert found == ([f"threshold moved {round(abs(now - before), 12):g} ({before:g} -> {now:g})"] if flagged else [])


def test_every_reason_at_once_in_a_fixed_order() -> None:
    found = regression.reasons(point(recall=0.95, threshold=0.2), point(met=False, recall=0.5, threshold=0.9), RULES)
    assert found == [
        "target no longer met",
        "recall down 0.45 (0.95 -> 0.5)",
        "threshold moved 0.7 (0.2 -> 0.9)",
    ]


def test_chain_compares_each_with_the_one_before() -> None:
    points = [("a", point(recall=0.9)), ("b", point(recall=0.8)), ("c", point(recall=0.8)), ("d", point(recall=0.7))]
    assert [(p, bool(r)) for p, r in regression.chain(points, RULES)] == [
        ("a", False), ("b", True), ("c", False), ("d", True),
    ]  # fmt: skip


def test_the_history_detail_is_the_agreed_object() -> None:
    assert json.loads(regression.detail(["x", "y"])) == {"regression": ["x", "y"]}


# -- the store --------------------------------------------------------------------------------


def scored(
    path: str, day: int, recall: float = 0.86, threshold: float = 0.5, met: bool | None = None, model: str = "m1"
) -> Scored:
    at = f"2026-01-{day:02d}T00:00:00.000000Z"
    met = recall >= 0.85 if met is None else met
    sha = f"{path}:{day}:{recall}:{threshold}"
    return Scored(path, FileStat(1, day, 1), sha, model, "a@x.org", at, at, threshold, recall, 0.0, met, 0.85, 3)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / "w.db", regression_rules=RULES) as s:
        yield s


def verdicts(store: Store) -> dict[str, list[str]]:
    rows = store.db.execute("SELECT path, regressed, regression FROM results ORDER BY path").fetchall()
    out = {}
    for path, flag, reasons in rows:
        assert flag == int(bool(json.loads(reasons)))  # the flag and the reasons agree
        out[path] = json.loads(reasons)
    return out


def details(store: Store) -> list[tuple[str, str, str | None]]:
    return store.db.execute("SELECT path, outcome, detail FROM history ORDER BY id").fetchall()


def test_a_worse_new_experiment_is_flagged_with_its_reasons_and_predecessor(store: Store) -> None:
    assert store.apply([scored("a.json", 1, recall=0.9)]).regressed == []
    applied = store.apply([scored("b.json", 2, recall=0.8, threshold=0.3)])
    [flagged] = applied.regressed
    assert flagged.scored.path == "b.json" and flagged.previous_path == "a.json"
    assert flagged.reasons == [
        "target no longer met",
        "recall down 0.1 (0.9 -> 0.8)",
        "threshold moved 0.2 (0.5 -> 0.3)",
    ]
    assert verdicts(store) == {"a.json": [], "b.json": flagged.reasons}
    assert details(store) == [
        ("a.json", "scored", None),
        ("b.json", "scored", json.dumps({"regression": flagged.reasons})),
    ]


def test_models_are_compared_only_with_themselves(store: Store) -> None:
    store.apply([scored("a.json", 1, recall=0.9, model="m1"), scored("b.json", 2, recall=0.5, model="m2")])
    assert verdicts(store) == {"a.json": [], "b.json": []}


def test_an_older_experiment_arriving_late_takes_its_place_in_the_order(store: Store) -> None:
    # Day 3 arrives first; day 1 (better) and day 2 (worse) come later: each file is compared with
    # the model's experiment just before it by date, whatever the order of arrival.
    store.apply([scored("c.json", 3, recall=0.9)])
    store.apply([scored("a.json", 1, recall=0.9)])
    assert verdicts(store) == {"a.json": [], "c.json": []}
    applied = store.apply([scored("b.json", 2, recall=0.8)])
    assert [f.previous_path for f in applied.regressed] == ["a.json"]
    # c.json is now compared with b.json (better than it): no longer... and never was flagged.
    assert verdicts(store) == {"a.json": [], "b.json": ["target no longer met", "recall down 0.1 (0.9 -> 0.8)"],
                               "c.json": []}  # fmt: skip
    # A late arrival that makes its successor a regression flags the successor in the database,
    # silently: the history's news is about the file that arrived.
    store.apply([scored("d.json", 4, recall=0.95)])
    store.apply([scored("e.json", 5, recall=0.95)])
    late = store.apply([scored("dd.json", 4, recall=0.99, model="m1")._replace(experiment_at="2026-01-04T12:00:00Z")])
    assert late.regressed == []
    assert verdicts(store)["e.json"] == ["recall down 0.04 (0.99 -> 0.95)"]
    assert [d for _p, _o, d in details(store)].count(None) == len(details(store)) - 1


def test_removing_the_predecessor_compares_its_successor_with_the_one_before(store: Store) -> None:
    store.apply([scored("a.json", 1, recall=0.87), scored("b.json", 2, recall=0.95), scored("c.json", 3, recall=0.87)])
    assert verdicts(store)["c.json"] == ["recall down 0.08 (0.95 -> 0.87)"]
    store.apply([Removed("b.json")])
    assert verdicts(store) == {"a.json": [], "c.json": []}
    store.apply([Removed("a.json")])
    assert verdicts(store) == {"c.json": []}


def test_a_rejected_file_leaves_the_chain(store: Store) -> None:
    store.apply([scored("a.json", 1, recall=0.87), scored("b.json", 2, recall=0.95), scored("c.json", 3, recall=0.87)])
    assert verdicts(store)["c.json"] != []
    store.apply([Rejected("b.json", None, None, (Problem("issuer", "bad"),))])
    assert verdicts(store) == {"a.json": [], "c.json": []}


def test_a_rewrite_is_judged_again_against_the_same_predecessor(store: Store) -> None:
    store.apply([scored("a.json", 1, recall=0.9), scored("b.json", 2, recall=0.9)])
    applied = store.apply([scored("b.json", 2, recall=0.7)])
    assert [f.scored.path for f in applied.regressed] == ["b.json"]
    store.apply([scored("b.json", 2, recall=0.91)])  # fixed: the flag goes, the history says nothing of it
    assert verdicts(store) == {"a.json": [], "b.json": []}
    assert [d is not None for _p, _o, d in details(store)] == [False, False, True, False]


def test_changed_rules_are_applied_to_every_stored_verdict_at_open(tmp_path: Path) -> None:
    with Store.open(tmp_path / "w.db", regression_rules=RULES) as s:
        s.apply([scored("a.json", 1, recall=0.9), scored("b.json", 2, recall=0.87)])
        assert verdicts(s) == {"a.json": [], "b.json": ["recall down 0.03 (0.9 -> 0.87)"]}
    with Store.open(tmp_path / "w.db", regression_rules=Rules(0.05, 0.1)) as s:
        assert verdicts(s) == {"a.json": [], "b.json": []}
    with Store.open(tmp_path / "w.db", regression_rules=Rules(0.01, 0.1)) as s:
        assert verdicts(s)["b.json"] == ["recall down 0.03 (0.9 -> 0.87)"]
    with Store.open(tmp_path / "w.db") as s:  # checks off: no flag left behind
        assert verdicts(s) == {"a.json": [], "b.json": []}
        s.apply([scored("c.json", 3, recall=0.1)])
        assert verdicts(s)["c.json"] == [] and details(s)[-1][2] is None


def test_a_version_7_database_migrates_with_no_flags(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "w.db")
    conn.executescript(";\n".join(MIGRATIONS[:7]) + "\nPRAGMA user_version = 7;")
    conn.execute(
        "INSERT INTO results VALUES ('a.json', 'm1', 'a@x.org', 'd', 'd', 0.5, 0.8, 0.05, 0, 0.85,"
        " 3, 1, 1, 1, 'h', 3, 't', '')"
    )
    conn.commit()
    conn.close()
    with Store.open(tmp_path / "w.db") as s:
        assert s.db.execute("SELECT regressed, regression FROM results").fetchall() == [(0, "[]")]


# -- readers ----------------------------------------------------------------------------------


def test_the_report_rows_carry_the_newest_experiments_verdict_as_text(store: Store) -> None:
    store.apply([scored("a.json", 1, recall=0.9), scored("b.json", 2, recall=0.8), scored("x.json", 1, model="m2")])
    rows = list(store.report_rows(regressions=True))
    assert [r[-2:] for r in rows] == [(1, "target no longer met; recall down 0.1 (0.9 -> 0.8)"), (0, "")]
    assert list(store.report_rows(regressed_only=True)) == rows[:1]
    assert sorted(store.report_rows_of(["m1", "m2"], regressions=True)) == rows
    assert len(next(store.report_rows())) == len(REGRESSION_REPORT_COLUMNS) - 2


def test_every_format_marks_the_regressed_row_with_its_reasons(store: Store) -> None:
    store.apply([scored("a.json", 1, recall=0.9), scored("b.json", 2, recall=0.8)])
    rows = list(store.report_rows(regressions=True))
    out = {}
    for name, render in (("csv", render_csv), ("json", render_json), ("md", render_markdown), ("t", render_table)):
        buffer = io.StringIO()
        render(rows, buffer, REGRESSION_REPORT_COLUMNS)
        out[name] = buffer.getvalue()
    reasons = "target no longer met; recall down 0.1 (0.9 -> 0.8)"
    assert out["csv"].splitlines()[0].endswith(",regressed,regression")
    assert out["csv"].splitlines()[1].endswith(f",b.json,true,{reasons}")
    assert json.loads(out["json"])[0] | {} == {
        "model_id": "m1", "issuer": "a@x.org", "optimal_threshold": 0.5, "closest_recall_value": 0.8,
        "target_recall": 0.85, "target_met": False, "experiment_date": "2026-01-02T00:00:00.000000Z",
        "path": "b.json", "regressed": True, "regression": reasons,
    }  # fmt: skip
    assert out["md"].splitlines()[2].endswith(f"| b.json | true | {reasons} |")
    assert out["t"].splitlines()[2].rstrip().endswith(f"b.json  true       {reasons}")


def test_following_regressions_only(store: Store, tmp_path: Path) -> None:
    follower = Follower(tmp_path / "w.db", regressions_only=True)
    both = Follower(tmp_path / "w.db", rejections_only=True, regressions_only=True)
    store.apply([scored("a.json", 1, recall=0.9), Rejected("r.json", None, None, (Problem("issuer", "bad"),))])
    store.apply([scored("b.json", 2, recall=0.8)])
    [entry] = follower.poll()
    assert (entry.path, entry.regression) == ("b.json", ["target no longer met", "recall down 0.1 (0.9 -> 0.8)"])
    assert entry.as_text().endswith("REGRESSED: target no longer met; recall down 0.1 (0.9 -> 0.8)")
    assert json.loads(entry.as_json())["regression"] == entry.regression
    assert [e.path for e in both.poll()] == ["r.json", "b.json"]
    assert "regression" not in json.loads(Follower(tmp_path / "w.db", last=3).poll()[0].as_json())
    assert [e.path for e in Follower(tmp_path / "w.db", regressions_only=True, last=5).poll()] == ["b.json"]
    for f in (follower, both):
        f.close()


# -- settings and the command line --------------------------------------------------------------


def test_settings_from_the_environment(tmp_path: Path) -> None:
    off = load_settings(env={}, cwd=tmp_path)
    assert (off.regressions, off.regression_rules) == (False, None)
    env = {"WATCHER_REGRESSIONS": "true", "WATCHER_REGRESSION_RECALL_DELTA": "0.05"}
    assert load_settings(env=env, cwd=tmp_path).regression_rules == Rules(0.05, 0.1)
    with pytest.raises(ConfigError, match="WATCHER_REGRESSION_THRESHOLD_STEP: regression_threshold_step"):
        load_settings(env={"WATCHER_REGRESSION_THRESHOLD_STEP": "-1"}, cwd=tmp_path)


def test_watcher_report_shows_the_columns_only_with_the_checks_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in [k for k in os.environ if k.startswith("WATCHER_")]:
        monkeypatch.delenv(key)
    db = tmp_path / "w.db"
    with Store.open(db, regression_rules=RULES) as s:
        s.apply([scored("a.json", 1, recall=0.9), scored("b.json", 2, recall=0.8), scored("x.json", 1, model="m2")])

    def report(*argv: str) -> tuple[int, str]:
        out = io.StringIO()
        return cli.main(["report", "--db", str(db), "--format", "csv", *argv], out), out.getvalue()

    code, text = report()
    assert code == 0 and text.splitlines()[0] == ",".join(REPORT_COLUMNS)
    assert cli.main(["report", "--db", str(db), "--sort", "regressed"], io.StringIO()) == 2  # checks off
    monkeypatch.setenv("WATCHER_REGRESSIONS", "true")
    code, text = report("--sort", "regressed", "--desc")
    lines = text.splitlines()
    assert code == 0 and lines[0] == ",".join(REGRESSION_REPORT_COLUMNS)
    assert lines[1].endswith(",true,target no longer met; recall down 0.1 (0.9 -> 0.8)") and "m1" in lines[1]
    assert lines[2].endswith(",false,")


def test_the_csv_fast_path_writes_what_csv_writer_writes() -> None:
    base = ("m1", "a@x.org", 0.5, 0.1 + 0.2, 0.85, 0, "2026-01-01T00:00:00Z", "b.json")
    rows = [
        (*base, 1, "target no longer met; recall down 0.1 (0.9 -> 0.8)"),
        (*base, 0, ""),
        (*base, 1, 'a "quoted", reason'),  # not what watcher writes: csv.writer's way, quoted
        (*base, 1, "-starts like a formula"),
    ]
    fast, slow = io.StringIO(), io.StringIO()
    render_csv(rows[:2], fast, REGRESSION_REPORT_COLUMNS)
    for chunk in (rows[:2], rows[2:]):
        out = io.StringIO()
        render_csv(chunk, out, REGRESSION_REPORT_COLUMNS)
        slow.write(out.getvalue())
    expected = io.StringIO()
    writer = csv.writer(expected, lineterminator="\n")
    writer.writerow(REGRESSION_REPORT_COLUMNS)
    for row in rows[:2]:
        writer.writerow([*row[:5], "false", *row[6:8], ["false", "true"][row[8]], row[9]])
    assert fast.getvalue() == expected.getvalue()
    lines = slow.getvalue().splitlines()  # each chunk with its header: rows at 1, 2, 4, 5
    prefix = "m1,a@x.org,0.5,0.30000000000000004,0.85,false,2026-01-01T00:00:00Z,b.json,true,"
    assert lines[:3] == expected.getvalue().splitlines()
    assert lines[4] == prefix + '"a ""quoted"", reason"'
    assert lines[5] == prefix + "'-starts like a formula"


def test_follow_central_regressions_with_the_checks_off_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WATCHER_REGRESSIONS", raising=False)
    code = cli.main(["follow", "--central", "postgresql://nobody@/x", "--regressions", "--db", str(tmp_path / "w.db")])
    assert code == 2
    assert capsys.readouterr().err == (
        "watcher: watcher follow --central --regressions: regression checks are off (set regressions = true)\n"
    )
