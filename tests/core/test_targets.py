"""Several target recalls, the optional ``precision_arr``/``fpr_arr``, and the ``max_f1`` and
``youden`` pickers: the scoring, the results-file rules, the settings, and the
``operating_points`` table as a scan and a reconcile keep it."""

from __future__ import annotations

import json
import random
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_curve, roc_curve

from testing.helpers import doc, write
from watcher.config import load_settings
from watcher.errors import ConfigError
from watcher.follow import Follower
from watcher.judge import JudgeOptions, _points_json, _recall_points_json, judge, rules_version
from watcher.lifecycle import RELOADABLE
from watcher.outcomes import Scored
from watcher.reconcile import reconcile, scan
from watcher.resultfile import RULES_VERSION, Problem, explain, validate_bytes
from watcher.schema import MIGRATIONS, statements
from watcher.scoring import OPERATING_POINTS, Point, max_f1, operating_points, optimal_point, scores_at, youden
from watcher.store import Store
from watcher.tree import own_outputs

_unit = st.floats(0.0, 1.0)
_recall = st.one_of(_unit, st.sampled_from([0.0, 0.5, 0.8, 0.85, 0.9, 1.0]))


@st.composite
def curves(draw: st.DrawFn) -> tuple[list[float], list[float], list[float]]:
    """Any valid curve (half of them falling, as measured curves are) and 1 to 4 targets."""
    thresholds = sorted(draw(st.sets(_unit, min_size=1, max_size=40)))
    recalls = draw(st.lists(_recall, min_size=len(thresholds), max_size=len(thresholds)))
    if draw(st.booleans()):
        recalls.sort(reverse=True)
    targets = draw(st.lists(st.one_of(_unit, st.sampled_from([0.8, 0.85, 0.9, *recalls])), min_size=1, max_size=4))
    return thresholds, recalls, targets


@given(curves(), st.sampled_from(OPERATING_POINTS))
@settings(max_examples=300, deadline=None)
def test_every_target_gets_the_point_optimal_point_gives_it(
    curve: tuple[list[float], list[float], list[float]], rule: Any
) -> None:
    """One pass for several targets picks, for each, exactly what the single-target rule does."""
    thresholds, recalls, targets = curve
    scores, points = operating_points(thresholds, recalls, targets, rule)
    assert scores == [optimal_point(thresholds, recalls, t, rule) for t in targets]
    assert [(p.kind, p.target, p.threshold, p.recall, p.met) for p in points] == [
        ("recall", t, s.threshold, s.recall, s.target_met) for t, s in zip(targets, scores, strict=True)
    ]
    assert all(p.precision is None and p.fpr is None for p in points)


def _labelled(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random labels (both classes present) and scores in [0, 1] that lean towards the positives,
    rounded so that equal scores (and so steps and ties) come up."""
    n = int(rng.integers(5, 60))
    y = rng.integers(0, 2, n)
    y[:2] = (0, 1)
    scores = np.clip(rng.normal(0.4 + 0.2 * y, 0.25), 0, 1).round(int(rng.integers(1, 4)))
    return y, scores


@pytest.mark.slow
def test_max_f1_is_the_best_f1_scikit_learn_finds_among_the_thresholds() -> None:
    """On 300 random curves from scikit-learn's ``precision_recall_curve``: the F1 that
    scikit-learn's ``f1_score`` computes from the predictions at the chosen threshold is the
    highest it computes at any threshold of the curve."""
    rng = np.random.default_rng(29)
    for _ in range(300):
        y, scores = _labelled(rng)
        precision, recall, thresholds = precision_recall_curve(y, scores)
        # The library's last point (precision 1, recall 0) has no threshold.
        p, r, t = precision[:-1].tolist(), recall[:-1].tolist(), thresholds.tolist()
        i = max_f1(p, r)
        _, points = operating_points(t, r, [0.85], pickers=("max_f1",), precisions=p)
        assert points[1][:6] == ("max_f1", None, t[i], r[i], p[i], None)
        f1 = [f1_score(y, scores >= threshold, zero_division=0.0) for threshold in t]
        assert f1_score(y, scores >= t[i], zero_division=0.0) == pytest.approx(max(f1), abs=1e-12)
        assert max(j for j, v in enumerate(f1) if v >= max(f1) - 1e-9) == i  # ties: the highest threshold


@pytest.mark.slow
def test_youden_is_the_best_j_scikit_learn_finds_among_the_thresholds() -> None:
    """On 300 random curves from scikit-learn's ``roc_curve``: J = sensitivity + specificity - 1,
    from the confusion matrix scikit-learn computes at the chosen threshold, is the highest among
    the curve's thresholds; ties go to the highest threshold."""
    rng = np.random.default_rng(30)
    for _ in range(300):
        y, scores = _labelled(rng)
        fpr, tpr, thresholds = roc_curve(y, scores, drop_intermediate=False)
        keep = np.isfinite(thresholds) & (thresholds <= 1)  # the first threshold is +inf (nothing predicted)
        t, r, f = (a[keep][::-1].tolist() for a in (thresholds, tpr, fpr))
        i = youden(r, f)

        def j(threshold: float) -> float:
            tn, fp, fn, tp = confusion_matrix(y, scores >= threshold, labels=[0, 1]).ravel()
            return float(tp / (tp + fn) + tn / (tn + fp) - 1)

        js = [j(threshold) for threshold in t]
        assert j(t[i]) == pytest.approx(max(js), abs=1e-12)
        assert max(k for k, v in enumerate(js) if v >= max(js) - 1e-9) == i


def test_pickers_and_precision_at_each_point() -> None:
    thresholds, recalls = [0.1, 0.5, 0.9], [0.95, 0.84, 0.5]
    precisions, fprs = [0.5, 0.7, 0.9], [0.6, 0.2, 0.05]
    _, points = operating_points(
        thresholds, recalls, [0.85, 0.9], "at_least", ("max_f1", "youden"), precisions=precisions, fprs=fprs
    )
    assert [tuple(p) for p in points] == [
        ("recall", 0.85, 0.1, 0.95, 0.5, 0.6, True),
        ("recall", 0.9, 0.1, 0.95, 0.5, 0.6, True),
        ("max_f1", None, 0.5, 0.84, 0.7, 0.2, None),  # F1 0.66, 0.764, 0.643
        ("youden", None, 0.5, 0.84, 0.7, 0.2, None),  # J 0.35, 0.64, 0.45
    ]
    # A picker whose array the file lacks gives no point (and is no reason to reject the file).
    _, points = operating_points(thresholds, recalls, [0.85], pickers=("max_f1", "youden"), fprs=fprs)
    assert [p.kind for p in points] == ["recall", "youden"]
    assert points[0].precision is None and points[0].fpr == 0.2
    # Ties go to the highest threshold; F1 is 0 where precision and recall both are.
    assert max_f1([0.0, 0.5, 1.0, 0.0], [0.0, 1.0, 0.5, 0.0]) == 2
    assert max_f1([0.0, 0.0], [0.0, 0.0]) == 1
    assert youden([0.9, 0.8, 0.5], [0.4, 0.3, 0.2]) == 1


_unit = st.floats(0, 1) | st.sampled_from([0, 1])  # validation keeps a whole number as it came


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["recall", "max_f1", "youden"]), st.none() | _unit, _unit, _unit,
            st.none() | _unit, st.none() | _unit, st.none() | st.booleans(),
        ),
        min_size=1, max_size=5,
    )
)  # fmt: skip
def test_the_stored_points_are_the_json_encoders_text(points: list[tuple[Any, ...]]) -> None:
    # The worker's template writes exactly what the JSON encoder would (and what point_rows reads).
    text = _points_json([Point(*p) for p in points])
    assert text == json.dumps(points, separators=(",", ":"))
    assert json.loads(text) == [list(p) for p in points]


@given(
    st.lists(_unit, min_size=1, max_size=30),
    st.lists(st.floats(0, 1), min_size=1, max_size=4, unique=True),
    st.sampled_from(OPERATING_POINTS),
)
def test_the_recall_points_template_writes_what_the_generic_text_does(
    recalls: list[float], targets: list[float], rule: Any
) -> None:
    # A file without precision or FPR: its points filled into one template per targets, the
    # same text as the points built and written one by one.
    thresholds = [i / len(recalls) for i in range(len(recalls))]
    scores, points = operating_points(thresholds, recalls, targets, rule)
    assert scores_at(thresholds, recalls, targets, rule) == scores
    assert _recall_points_json(tuple(targets), scores) == _points_json(points)


# -- the results file ----------------------------------------------------------------------------


def _problems(**overrides: Any) -> list[tuple[str | None, str]]:
    raw = json.dumps(doc(**overrides)).encode()
    got = validate_bytes(raw)
    assert type(got) is type(explain(raw))  # the fast path and the thorough one agree
    return [] if not isinstance(got, list) else [(p.field, p.message) for p in got]


def test_the_optional_arrays_are_validated_with_every_reason() -> None:
    five = [0.5, 0.6, 0.7, 0.8, 0.9]
    assert _problems(precision_arr=five, fpr_arr=five) == []
    assert _problems(precision_arr=None, fpr_arr=None) == []  # null: the same as absent
    got = _problems(precision_arr=[0.5, 1.5, "0.7", 0.8], fpr_arr=[0.1, 0.2, 0.3, 0.4, -0.1], recall_arr=[1.0] * 4)
    fields = [f for f, _ in got]
    assert fields == ["precision_arr[1]", "precision_arr[2]", "fpr_arr[4]", "recall_arr"]
    # Lengths are compared only once each value is valid; then each wrong one is named.
    got = _problems(precision_arr=[0.5, 0.6], fpr_arr=[0.1] * 6)
    assert got == [
        ("precision_arr", "has 2 values but threshold_arr has 5"),
        ("fpr_arr", "has 6 values but threshold_arr has 5"),
    ]
    assert _problems(precision_arr=[]) == [("precision_arr", "has 0 values but threshold_arr has 5")]
    nan = json.dumps(doc()).replace('"recall_arr"', '"fpr_arr": [NaN, 0, 0, 0, 0], "recall_arr"').encode()
    assert [p.field for p in validate_bytes(nan)] == ["fpr_arr[0]"]  # type: ignore[union-attr]
    assert isinstance(validate_bytes(nan)[0], Problem)  # type: ignore[index]


def test_the_rules_version_follows_the_extra_targets_and_pickers() -> None:
    assert rules_version() == RULES_VERSION  # the default settings keep the version they always had
    assert rules_version("at_least") == RULES_VERSION + 1000
    one = rules_version("nearest", (0.8, 0.9))
    assert one == rules_version("nearest", [0.8, 0.9]) != rules_version("nearest", (0.8,))
    assert one != rules_version("nearest", (0.9, 0.8))  # the order is stored (operating_points.n)
    assert one != rules_version("nearest", (0.8, 0.9), ("max_f1",)) != rules_version("nearest", (), ("max_f1",))
    assert rules_version("at_least", (0.8, 0.9)) - one == 1000
    assert {"extra_targets", "extra_pickers"} <= RELOADABLE


def test_the_settings(tmp_path: Path) -> None:
    s = load_settings(env={"WATCHER_EXTRA_TARGETS": "0.8, 0.9", "WATCHER_EXTRA_PICKERS": "youden"}, cwd=tmp_path)
    assert (s.targets, s.extra_pickers) == ((0.85, 0.8, 0.9), ("youden",))
    assert load_settings(env={}, cwd=tmp_path).targets == (0.85,)
    toml = 'target_recall = 0.9\nextra_targets = [0.8, 0.85]\nextra_pickers = ["max_f1"]\n'
    config = write(tmp_path / "c.toml", toml)
    assert load_settings(config, env={}, cwd=tmp_path).targets == (0.9, 0.8, 0.85)
    for env, message in [
        ({"WATCHER_EXTRA_TARGETS": "0.85"}, "WATCHER_EXTRA_TARGETS: extra_targets: .*not target_recall's"),
        ({"WATCHER_EXTRA_TARGETS": "0.8,0.8"}, "at most once"),
        ({"WATCHER_EXTRA_TARGETS": "1.5"}, "less than or equal to 1"),
        ({"WATCHER_EXTRA_PICKERS": "f2"}, "'max_f1' or 'youden'"),
    ]:
        with pytest.raises(ConfigError, match=message):
            load_settings(env=env, cwd=tmp_path)


# -- the table -------------------------------------------------------------------------------


def _points(store: Store) -> list[tuple[Any, ...]]:
    """The table's rows without ``n`` (checked to be each file's points numbered from 0)."""
    rows = store.db.execute("SELECT * FROM operating_points ORDER BY path, kind, target").fetchall()
    by_path: dict[str, list[int]] = {}
    for row in rows:
        by_path.setdefault(row[0], []).append(row[1])
    assert all(sorted(ns) == list(range(len(ns))) for ns in by_path.values())
    return [(row[0], *row[2:]) for row in rows]


def test_a_scan_stores_every_point_and_a_change_of_targets_judges_again(make_settings: Any) -> None:
    arrays = {"threshold_arr": [0.1, 0.5, 0.9], "recall_arr": [0.95, 0.84, 0.5], "precision_arr": [0.5, 0.7, 0.9]}
    s = make_settings()
    a = write(s.watch_dir / "a.json", doc(**arrays))
    write(s.watch_dir / "b.json", doc())
    with Store.from_settings(s) as store:
        reconcile(store, s)
        # One point per file by default: the primary target's, as in results.
        assert _points(store) == [
            ("a.json", "recall", 0.85, 0.5, 0.84, 0.7, None, 0),
            ("b.json", "recall", 0.85, 0.5, 0.85, None, None, 1),
        ]
    more = make_settings(extra_targets=(0.9, 0.5), extra_pickers=("max_f1", "youden"))
    with Store.from_settings(more) as store:
        assert all(key is None for key in store.stat_keys().values())  # nothing current: judged again
        reconcile(store, more)
        rows = [r for r in _points(store) if r[0] == "a.json"]
        assert rows == [
            ("a.json", "max_f1", None, 0.5, 0.84, 0.7, None, None),
            ("a.json", "recall", 0.5, 0.9, 0.5, 0.9, None, 1),
            ("a.json", "recall", 0.85, 0.5, 0.84, 0.7, None, 0),
            ("a.json", "recall", 0.9, 0.1, 0.95, 0.5, None, 1),
        ]  # no youden point: a.json has no fpr_arr
        assert len([r for r in _points(store) if r[0] == "b.json"]) == 3
        # The report's models with each point, through the view.
        assert store.db.execute("SELECT count(*) FROM report_points").fetchone() == (7,)
        # A file that turns invalid, and one removed: their points go with their results row.
        write(a, doc(**{**arrays, "precision_arr": [0.5, 2.0, 0.9]}))
        (s.watch_dir / "b.json").unlink()
        reconcile(store, more)
        assert _points(store) == []
        assert store.db.execute("SELECT count(*) FROM results").fetchone() == (0,)


def test_judge_puts_the_primary_target_first(tmp_path: Path) -> None:
    write(tmp_path / "a.json", doc(fpr_arr=[1.0, 0.5, 0.2, 0.1, 0.0]))
    outcome = judge("a.json", JudgeOptions(tmp_path, 0.85, 1 << 20, extra_targets=(0.95,), extra_pickers=("youden",)))
    assert isinstance(outcome, Scored)
    assert [(p.kind, p.target, p.threshold, p.fpr) for p in map(Point._make, json.loads(outcome.points))] == [
        ("recall", 0.85, 0.5, 0.2),
        ("recall", 0.95, 0.25, 0.5),
        ("youden", None, 0.5, 0.2),  # J: 0, 0.45, 0.65, 0.4, 0
    ]
    assert (outcome.optimal_threshold, outcome.target_recall) == (0.5, 0.85)


def test_a_database_of_the_previous_version_migrates_with_its_primary_points(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    with sqlite3.connect(db) as conn:
        for script in MIGRATIONS[:-1]:
            for sql in statements(script):
                conn.execute(sql)
        conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) - 1}")
        conn.execute(
            "INSERT INTO results (path, model_id, issuer, experiment_date, experiment_at, optimal_threshold,"
            " closest_recall_value, distance, target_met, target_recall, n_points, size, mtime_ns, inode, sha256,"
            " rules_version, scored_at) VALUES ('x.json', 'm', 'i@example.com', 'd', 'a', 0.5, 0.84, 0.01, 0, 0.85,"
            " 5, 1, 1, 1, 'h', 3, 'now')"
        )
    conn.close()
    with Store.open(db) as store:
        assert _points(store) == [("x.json", "recall", 0.85, 0.5, 0.84, None, None, 0)]
        assert store.stat_keys() == {"x.json": (1, 1, 1)}  # still current: not judged again


def test_random_files_with_arrays_round_trip(make_settings: Any) -> None:
    """Files with and without each array, several targets and both pickers: every stored point is
    what the scoring functions give for the file's arrays."""
    rng = random.Random(7)
    s = make_settings(extra_targets=(0.5, 0.95), extra_pickers=("max_f1", "youden"))
    docs = {}
    for i in range(30):
        n = rng.randint(1, 20)
        t = sorted(rng.sample(range(1000), n))
        d = doc(threshold_arr=[x / 1000 for x in t], recall_arr=sorted((rng.random() for _ in t), reverse=True))
        if i % 3 != 0:
            d["precision_arr"] = [rng.random() for _ in t]
        if i % 2 == 0:
            d["fpr_arr"] = [rng.random() for _ in t]
        docs[f"f{i}.json"] = d
        write(s.watch_dir / f"f{i}.json", d)
    with Store.from_settings(s) as store:
        reconcile(store, s)
        stored = _points(store)
    expected = []
    for name, d in docs.items():
        _, points = operating_points(
            d["threshold_arr"], d["recall_arr"], (0.85, 0.5, 0.95), "nearest", ("max_f1", "youden"),
            d.get("precision_arr"), d.get("fpr_arr"),
        )  # fmt: skip
        expected += [(name, *p[:6], None if p.met is None else int(p.met)) for p in points]
    key = lambda r: (r[0], r[1], -1.0 if r[2] is None else r[2])  # noqa: E731
    assert sorted(stored, key=key) == sorted(expected, key=key)


def test_the_points_files_show_every_point_and_only_when_asked_for(make_settings: Any, tmp_path: Path) -> None:
    formats = ("csv", "json", "markdown")
    one = make_settings(report_formats=formats, report_dir=tmp_path / "reports")
    model = "0b9c2d4e-0000-4000-8000-000000000001"
    write(one.watch_dir / "a.json", doc(model_id=model, precision_arr=[0.1, 0.2, 0.3, 0.4, 0.5]))
    scan(one)
    assert sorted(p.name for p in one.report_dir.iterdir()) == ["report.csv", "report.json", "report.md"]
    report = (one.report_dir / "report.csv").read_bytes()
    pickers = ("max_f1", "youden")
    more = make_settings(
        report_formats=formats, report_dir=tmp_path / "reports", extra_targets=(0.9,), extra_pickers=pickers
    )
    scan(more)
    assert (one.report_dir / "report.csv").read_bytes() == report  # the primary point's report, unchanged
    head = "model_id,issuer,kind,target,threshold,recall,precision,fpr,met,experiment_date,path\n"
    assert (more.report_dir / "points.csv").read_text() == head + (
        f"{model},ana@example.com,recall,0.85,0.5,0.85,0.3,,true,2024-05-01T12:00:00.000Z,a.json\n"
        f"{model},ana@example.com,recall,0.9,0.25,0.95,0.2,,true,2024-05-01T12:00:00.000Z,a.json\n"
        f"{model},ana@example.com,max_f1,,0.75,0.5,0.4,,,2024-05-01T12:00:00.000Z,a.json\n"
    )  # F1: 0.182, 0.330, 0.4435, 0.4444, 0; no youden point: the file has no fpr_arr
    (model_points,) = json.loads((more.report_dir / "points.json").read_text())  # an object per model
    assert (model_points["model_id"], model_points["path"]) == (model, "a.json")
    assert model_points["points"] == [  # [kind, target, threshold, recall, precision, fpr, met]
        ["recall", 0.85, 0.5, 0.85, 0.3, None, True], ["recall", 0.9, 0.25, 0.95, 0.2, None, True],
        ["max_f1", None, 0.75, 0.5, 0.4, None, None],
    ]  # fmt: skip
    markdown = (more.report_dir / "points.md").read_text().splitlines()
    assert markdown[3].startswith(f"| {model} | ana@example.com | recall | 0.9 | 0.25 |")


def test_follow_shows_the_other_points_and_nothing_more_without_them(make_settings: Any) -> None:
    model = "0b9c2d4e-0000-4000-8000-000000000002"
    one = make_settings()
    scan(one)
    follower = Follower(one.db_path)
    write(one.watch_dir / "a.json", doc(model_id=model, fpr_arr=[1.0, 0.5, 0.2, 0.1, 0.0]))
    scan(one)
    (entry,) = follower.poll()
    assert entry.points is None and "points" not in json.loads(entry.as_json())
    assert entry.as_text().endswith(f"a.json  model_id {model}  threshold 0.5  recall 0.85")
    more = make_settings(extra_targets=(0.9,), extra_pickers=("max_f1", "youden"))
    scan(more)  # judged again under the new rules version
    (entry,) = follower.poll()
    point = {"kind": "recall", "target": 0.9, "threshold": 0.25, "recall": 0.95, "precision": None, "fpr": 0.5}
    youden = {"kind": "youden", "target": None, "threshold": 0.5, "recall": 0.85, "precision": None, "fpr": 0.2}
    assert entry.points == [{**point, "met": 1}, {**youden, "met": None}]
    assert json.loads(entry.as_json())["points"] == entry.points
    assert entry.as_text().endswith(
        "recall 0.85  | at 0.9: threshold 0.25  recall 0.95  fpr 0.5  | youden: threshold 0.5  recall 0.85  fpr 0.2"
    )


def test_points_files_written_into_the_watch_dir_are_never_judged(make_settings: Any) -> None:
    s = make_settings(extra_targets=(0.9,), report_formats=("csv", "json"))
    s = s.model_copy(update={"report_dir": s.watch_dir})
    write(s.watch_dir / "a.json", doc())
    scan(s)
    assert (s.watch_dir / "points.json").is_file()
    assert {"points.csv", "points.json", "points.md"} <= own_outputs(s)
    summary, _ = scan(s)
    assert (summary.seen, summary.rejected) == (1, 0)  # points.json is not a results file
