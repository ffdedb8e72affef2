"""watcher.producer and ``watcher publish``: the curve's semantics, the adapters, scikit-learn on a
real dataset, every refusal (one exception or one line and an exit code, nothing written), the
property that a published file is always one the daemon scores, and the shipped JSON Schema."""

from __future__ import annotations

import io
import json
import math
import sqlite3
import sys
import uuid
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import precision_recall_curve, roc_curve

from watcher import fileschema
from watcher.cli import main
from watcher.errors import InvalidResultError, PublishError
from watcher.judge import JudgeOptions, judge
from watcher.outcomes import Scored
from watcher.producer import (
    Curve,
    _sigmoid,
    curve_from_keras_recall,
    curve_from_pr,
    curve_from_roc,
    curve_from_scores,
    document,
    publish,
    temporary_name,
)
from watcher.reconcile import scan
from watcher.resultfile import ResultFile, validate_bytes
from watcher.tree import Matcher

ROOT = Path(__file__).resolve().parents[2]
MID = "3f2b8c1e-7d4a-4e0b-9a6f-1c2d3e4f5a6b"
WHO = "ana@example.com"


def brute_recall(labels: list[int], scores: list[float], t: float) -> float:
    pos = [s for y, s in zip(labels, scores, strict=True) if y]
    return sum(s >= t for s in pos) / len(pos)


@pytest.fixture(scope="module")
def breast_cancer() -> tuple[Any, Any]:
    """scikit-learn's bundled breast-cancer data, scored by a logistic regression."""
    X, y = load_breast_cancer(return_X_y=True)
    model = LogisticRegression(max_iter=5000).fit(X, y)
    return y, model.predict_proba(X)[:, 1]


# --- the curve ---------------------------------------------------------------------------------


def test_the_exact_curve_has_a_point_at_every_distinct_score_with_recall_at_or_above() -> None:
    labels = [1, 0, 1, 1, 0, 1, 0]
    scores = [0.9, 0.9, 0.5, 0.2, 0.2, 0.0, 1.0]
    curve = curve_from_scores(labels, scores)
    assert curve.thresholds == (0.0, 0.2, 0.5, 0.9, 1.0)
    assert curve.recalls == tuple(brute_recall(labels, scores, t) for t in curve.thresholds)
    assert curve.recalls == (1.0, 0.75, 0.5, 0.25, 0.0)


def test_a_fixed_grid_or_given_thresholds() -> None:
    labels, scores = [1, 0, 1, 0], [0.8, 0.3, 0.4, 0.1]
    curve = curve_from_scores(labels, scores, thresholds=5)
    assert curve.thresholds == (0.0, 0.25, 0.5, 0.75, 1.0)
    assert curve.recalls == (1.0, 1.0, 0.5, 0.5, 0.0)
    assert curve_from_scores(labels, scores, thresholds=[0.5, 0.35]).thresholds == (0.35, 0.5)


def test_logits_only_when_said() -> None:
    with pytest.raises(InvalidResultError, match=r"scores\[0\]: 2.0 is outside \[0, 1\].*logits"):
        curve_from_scores([1, 0], [2.0, -3.0])
    curve = curve_from_scores([1, 0], [2.0, -3.0], logits=True)
    assert curve.thresholds == pytest.approx((1 / (1 + math.exp(3.0)), 1 / (1 + math.exp(-2.0))), rel=1e-15)


def test_booleans_and_float_labels_and_a_predict_column() -> None:
    expected = curve_from_scores([1, 0, 1], [0.7, 0.2, 0.4])
    assert curve_from_scores([True, False, True], [0.7, 0.2, 0.4]) == expected
    assert curve_from_scores(np.array([1.0, 0.0, 1.0]), np.array([[0.7], [0.2], [0.4]], dtype=np.float32)) == (
        curve_from_scores([1, 0, 1], [float(np.float32(v)) for v in (0.7, 0.2, 0.4)])
    )


class FakeTensor:
    """What the adapters may use of a PyTorch tensor on a GPU: detach, cpu, tolist."""

    def __init__(self, values: list[Any], device: str = "cuda:0") -> None:
        self.values, self.device = values, device

    def detach(self) -> FakeTensor:
        return FakeTensor(self.values, self.device)

    def cpu(self) -> FakeTensor:
        return FakeTensor(self.values, "cpu")

    def tolist(self) -> list[Any]:
        assert self.device == "cpu", "read on the GPU"
        return list(self.values)


class ArrayOnly:
    """Something only NumPy can read (``__array__``), like a JAX array or a pandas column."""

    def __init__(self, values: list[float]) -> None:
        self.values = values

    def __array__(self, dtype: Any = None, copy: Any = None) -> Any:
        return np.asarray(self.values, dtype=dtype)


def test_tensors_and_arrays_are_read_by_duck_typing() -> None:
    expected = curve_from_scores([1, 0, 1], [0.75, 0.25, 0.5])
    assert curve_from_scores(FakeTensor([1, 0, 1]), FakeTensor([0.75, 0.25, 0.5])) == expected
    assert curve_from_scores(ArrayOnly([1, 0, 1]), ArrayOnly([0.75, 0.25, 0.5])) == expected
    assert curve_from_scores((1, 0, 1), iter([0.75, 0.25, 0.5])) == expected


def test_numpy_scalars_and_one_element_tensors_in_a_plain_list() -> None:
    expected = curve_from_scores([1, 0, 1], [0.75, 0.25, 0.5])
    labels = list(np.array([True, False, True]))
    assert curve_from_scores(labels, list(np.array([0.75, 0.25, 0.5]))) == expected
    assert curve_from_scores([FakeTensor([1]), 0, 1], [FakeTensor([0.75]), 0.25, 0.5]) == expected


def test_two_columns_are_refused_with_a_hint() -> None:
    with pytest.raises(InvalidResultError, match=r"single column.*\[:, 1\]"):
        curve_from_scores([1, 0], [[0.3, 0.7], [0.6, 0.4]])


# --- the adapters ------------------------------------------------------------------------------


def test_roc_adapter_drops_scikit_learns_infinite_threshold_and_reverses() -> None:
    curve = curve_from_roc([0.0, 0.0, 0.5, 1.0], [0.0, 0.5, 1.0, 1.0], [math.inf, 0.8, 0.4, 0.1])
    assert curve == Curve([0.1, 0.4, 0.8], [1.0, 1.0, 0.5])


def test_roc_adapter_merges_torchmetrics_first_point_with_a_real_score_of_one() -> None:
    # torchmetrics' BinaryROC prepends (threshold 1.0, tpr 0); a real score of 1.0 gives 1.0 again.
    curve = curve_from_roc([0.0, 0.0, 0.5], [0.0, 0.5, 1.0], [1.0, 1.0, 0.3])
    assert curve == Curve([0.3, 1.0], [1.0, 0.5])


def test_pr_adapter_drops_the_last_recall_and_refuses_other_shapes() -> None:
    assert curve_from_pr([0.5, 1.0, 1.0], [1.0, 0.5, 0.0], [0.2, 0.6]) == Curve([0.2, 0.6], [1.0, 0.5])
    with pytest.raises(InvalidResultError, match="one more"):
        curve_from_pr([0.5, 1.0], [1.0, 0.5], [0.2, 0.6])


class FakeKerasRecall:
    def __init__(self, thresholds: Any, result: Any) -> None:
        self.thresholds, self._result = thresholds, result

    def result(self) -> Any:
        return self._result


def test_keras_adapter_reads_thresholds_and_result() -> None:
    metric = FakeKerasRecall([0.0, 0.5, 1.0], np.array([1.0, 0.6, 0.0], dtype=np.float32))
    assert curve_from_keras_recall(metric) == Curve([0.0, 0.5, 1.0], [1.0, float(np.float32(0.6)), 0.0])
    assert curve_from_keras_recall(FakeKerasRecall(0.5, np.float32(0.25))) == Curve([0.5], [0.25])


# --- scikit-learn on a real dataset --------------------------------------------------------------


def test_the_curve_equals_scikit_learns_roc_recall_at_the_same_thresholds(breast_cancer: Any) -> None:
    y, p = breast_cancer
    curve = dict(zip(*astuple(curve_from_scores(y, p)), strict=True))
    for drop in (True, False):
        _fpr, tpr, thresholds = roc_curve(y, p, drop_intermediate=drop)
        assert math.isinf(thresholds[0])
        assert all(curve[t] == r for t, r in zip(thresholds[1:].tolist(), tpr[1:].tolist(), strict=True))
    assert len(curve) == len(set(p.tolist()))


def astuple(curve: Curve) -> tuple[tuple[float, ...], tuple[float, ...]]:
    return curve.thresholds, curve.recalls


def test_the_raw_scikit_learn_curves_are_refused_and_the_adapters_fix_them(breast_cancer: Any) -> None:
    y, p = breast_cancer
    precision, recall, thresholds = precision_recall_curve(y, p)
    raw = document(Curve(thresholds, recall[:-1]), MID, WHO)
    assert not isinstance(validate_bytes(raw), list)
    # What a job writing the arrays by hand gets, as the issue reports it.
    problems = validate_bytes(document(_unchecked(thresholds, recall), MID, WHO))
    assert isinstance(problems, list)
    assert f"has {len(recall)} values but threshold_arr has {len(thresholds)}" in str(problems)
    fpr, tpr, roc_thresholds = roc_curve(y, p)
    problems = validate_bytes(document(_unchecked(roc_thresholds, tpr), MID, WHO))
    assert isinstance(problems, list)
    assert "threshold_arr[0]" in str(problems)
    exact = curve_from_scores(y, p)
    from_pr = curve_from_pr(precision, recall, thresholds)
    assert dict(zip(*astuple(from_pr), strict=True)).items() <= dict(zip(*astuple(exact), strict=True)).items()
    from_roc = curve_from_roc(fpr, tpr, roc_thresholds)
    assert dict(zip(*astuple(from_roc), strict=True)).items() <= dict(zip(*astuple(exact), strict=True)).items()


def _unchecked(thresholds: Any, recalls: Any) -> Curve:
    return Curve(thresholds, recalls)


def test_the_point_returned_is_the_one_the_daemon_stores(breast_cancer: Any, make_settings: Any) -> None:
    y, p = breast_cancer
    settings = make_settings()
    published = [
        publish(settings.watch_dir, model_id=uuid.uuid4(), issuer=WHO, labels=y, scores=p),
        publish(settings.watch_dir, model_id=uuid.uuid4(), issuer=WHO, labels=y, scores=p, thresholds=101),
        publish(
            settings.watch_dir, model_id=uuid.uuid4(), issuer=WHO, curve=curve_from_pr(*precision_recall_curve(y, p))
        ),
        publish(settings.watch_dir, model_id=uuid.uuid4(), issuer=WHO, curve=curve_from_roc(*roc_curve(y, p))),
    ]
    summary, counts = scan(settings)
    assert (summary.scored, counts["rejections"]) == (4, 0)
    conn = sqlite3.connect(settings.db_path)
    stored = {
        row[0]: row[1:]
        for row in conn.execute(
            "SELECT path, model_id, optimal_threshold, closest_recall_value, target_met, target_recall, n_points "
            "FROM results"
        )
    }
    conn.close()
    for done in published:
        assert stored[done.path.name] == (
            done.model_id, done.optimal_threshold, done.closest_recall_value, int(done.target_met),
            done.target_recall, done.n_points,
        )  # fmt: skip


# --- refusals: one exception, every reason, nothing written --------------------------------------


@pytest.mark.parametrize(
    ("labels", "scores", "reason"),
    [
        ([1, 1, 1], [0.2, 0.5, 0.9], "no negative example"),
        ([0, 0], [0.2, 0.5], "no positive example"),
        ([1, 0, 1], [0.2, math.nan, 0.9], r"scores\[1\]: must be a finite number, not nan"),
        ([1, 0, 1], [0.2, math.inf, 0.9], r"scores\[1\]: must be a finite number, not inf"),
        ([1, 0, 1], [0.2, 0.5], "scores: has 2 values but labels has 3"),
        ([1, 2, 0], [0.2, 0.5, 0.9], r"labels\[1\]: must be 0, 1 or a boolean, not 2"),
        ([1, 0], ["0.2", 0.5], r"scores\[0\]: must be a number, not str"),
        ([], [], "scores: no values"),
        ([1, 0], [10**400, 0.5], r"scores\[0\]: must be a finite number, not inf"),
    ],
)
def test_bad_data_raises_one_exception_and_writes_nothing(
    tmp_path: Path, labels: Any, scores: Any, reason: str
) -> None:
    with pytest.raises(InvalidResultError, match=reason) as caught:
        publish(tmp_path, model_id=MID, issuer=WHO, labels=labels, scores=scores)
    assert str(caught.value).startswith("nothing published: ")
    assert list(tmp_path.iterdir()) == []


def test_every_reason_at_once_in_validates_words(tmp_path: Path) -> None:
    with pytest.raises(InvalidResultError) as caught:
        publish(tmp_path, model_id="not-a-uuid", issuer="nobody", labels=[1, 0], scores=[math.nan, 0.5])
    assert caught.value.reasons == (
        "scores[0]: must be a finite number, not nan",
        "model_id: must be a UUID in 8-4-4-4-12 hex form",
        "issuer: not a valid e-mail address: An email address must have an @-sign.",
    )
    with pytest.raises(InvalidResultError, match="experiment_date: must be an RFC 3339"):
        publish(tmp_path, model_id=MID, issuer=WHO, labels=[1, 0], scores=[0.5, 0.1], experiment_date="2024-05-01")
    with pytest.raises(InvalidResultError, match=r"recall_arr: has 1 values but threshold_arr has 2"):
        publish(tmp_path, model_id=MID, issuer=WHO, curve=Curve([0.1, 0.5], [1.0]))
    with pytest.raises(InvalidResultError, match=r"threshold_arr\[1\]: must be greater"):
        publish(tmp_path, model_id=MID, issuer=WHO, curve=Curve([0.5, 0.1], [1.0, 0.5]))
    assert list(tmp_path.iterdir()) == []


def test_many_bad_values_are_capped(tmp_path: Path) -> None:
    with pytest.raises(InvalidResultError) as caught:
        publish(tmp_path, model_id=MID, issuer=WHO, labels=[1, 0] * 100, scores=[math.nan] * 200)
    assert len(caught.value.reasons) == 50
    assert caught.value.reasons[-1] == "151 more problems not listed"


def test_a_missing_folder_is_a_publish_error(tmp_path: Path) -> None:
    with pytest.raises(PublishError, match="no such folder"):
        publish(tmp_path / "nope", model_id=MID, issuer=WHO, labels=[1, 0], scores=[0.9, 0.1])
    assert not (tmp_path / "nope").exists()


def test_a_naive_datetime_is_refused_and_an_aware_one_kept(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta, timezone

    with pytest.raises(InvalidResultError, match="without a time zone"):
        publish(
            tmp_path, model_id=MID, issuer=WHO, labels=[1, 0], scores=[0.9, 0.1], experiment_date=datetime(2024, 5, 1)
        )
    done = publish(
        tmp_path, model_id=MID, issuer=WHO, labels=[1, 0], scores=[0.9, 0.1],
        experiment_date=datetime(2024, 5, 1, 12, tzinfo=timezone(timedelta(hours=2))),
    )  # fmt: skip
    assert done.experiment_date == "2024-05-01T12:00:00.000+02:00"
    now = publish(tmp_path, model_id=MID, issuer=WHO, labels=[1, 0], scores=[0.9, 0.1]).experiment_date
    assert now.endswith("Z") and abs(datetime.fromisoformat(now) - datetime.now(UTC)).total_seconds() < 60


def test_the_temporary_name_is_one_the_default_patterns_skip() -> None:
    matcher = Matcher(("*.json",), fileschema_defaults())
    name = temporary_name(f"{MID}.json")
    assert not matcher.tracks(name)
    assert not Matcher(("*",), fileschema_defaults()).tracks(name)  # skipped by ignore_patterns alone
    assert not Matcher(("*.json",), ()).tracks(name)  # and never selected by the patterns alone


def fileschema_defaults() -> tuple[str, ...]:
    from watcher.config import DEFAULT_IGNORE

    return DEFAULT_IGNORE


# --- any input: a file the daemon scores, or reasons -----------------------------------------------

scores_st = st.one_of(
    st.floats(min_value=0, max_value=1),
    st.floats(),
    st.sampled_from([0.0, 0.5, 1.0, math.nan, math.inf, -math.inf, -0.1, 1.5]),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    pairs=st.lists(st.tuples(st.sampled_from([0, 1, True, False]), scores_st), max_size=30),
    grid=st.one_of(st.none(), st.integers(min_value=0, max_value=12)),
    logits=st.booleans(),
)
def test_any_labels_and_scores_publish_a_file_the_daemon_scores_or_raise(
    tmp_path_factory: pytest.TempPathFactory, pairs: list[tuple[Any, float]], grid: int | None, logits: bool
) -> None:
    folder = tmp_path_factory.mktemp("inbox")
    labels, scores = [y for y, _ in pairs], [s for _, s in pairs]
    try:
        done = publish(folder, model_id=MID, issuer=WHO, labels=labels, scores=scores, thresholds=grid, logits=logits)
    except InvalidResultError as exc:
        assert exc.reasons
        assert list(folder.iterdir()) == []
        return
    assert [p.name for p in folder.iterdir()] == [f"{MID}.json"]
    outcome = judge(done.path.name, JudgeOptions(folder, 0.85, 64 << 20))
    assert isinstance(outcome, Scored), outcome
    assert (outcome.optimal_threshold, outcome.closest_recall_value) == (
        done.optimal_threshold,
        done.closest_recall_value,
    )
    if grid is None:
        mapped = [_sigmoid(s) if logits else s for s in scores]
        for t, r in zip(*astuple(curve_from_scores(labels, scores, logits=logits)), strict=True):
            assert r == brute_recall([int(y) for y in labels], mapped, t)


# --- watcher publish ------------------------------------------------------------------------------


def run_cli(args: list[str], stdin: bytes = b"", capsys: Any = None) -> tuple[int, str]:
    out = io.StringIO()
    old = sys.stdin
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin))
    try:
        code = main(["publish", *args], stdout=out)
    finally:
        sys.stdin = old
    return code, out.getvalue()


def test_cli_publishes_csv_from_standard_input(tmp_path: Path, capsys: Any) -> None:
    data = b"label,score\n1,0.91\n0,0.35\n1,0.78\n1,0.62\n0,0.41\n0,0.08\n1,0.55\n0,0.67\n"
    code, out = run_cli(["--watch-dir", str(tmp_path), "--scores", "-", "--model-id", MID, "--issuer", WHO], data)
    assert code == 0
    assert out == (
        f"published {tmp_path / MID}.json: model_id {MID}, optimal_threshold 0.62, closest_recall_value 0.75; "
        "below the target recall 0.85\n"
    )
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    ("flag", "data"),
    [
        ("--scores", b"1,0.91\n0,0.35\n1,0.78\n0,0.67\n"),
        ("--scores", b"score,label\n0.91,true\n0.35,false\n0.78,true\n0.67,false\n"),
        ("--scores", b'{"labels": [1, 0, 1, 0], "scores": [0.91, 0.35, 0.78, 0.67]}'),
        ("--curve", b"threshold,recall\n0.35,1.0\n0.67,1.0\n0.78,1.0\n0.91,0.5\n"),
        ("--curve", b'{"threshold_arr": [0.35, 0.67, 0.78, 0.91], "recall_arr": [1.0, 1.0, 1.0, 0.5]}'),
    ],
)
def test_cli_reads_csv_with_or_without_a_header_and_json(tmp_path: Path, flag: str, data: bytes) -> None:
    source = tmp_path / "input"
    source.write_bytes(data)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    code, out = run_cli(
        ["--watch-dir", str(inbox), flag, str(source), "--model-id", MID, "--issuer", WHO, "--format", "json"]
    )
    assert code == 0
    record = json.loads(out)
    assert (record["optimal_threshold"], record["closest_recall_value"], record["n_points"]) == (0.78, 1.0, 4)
    assert record["path"] == str(inbox / f"{MID}.json")


@pytest.mark.parametrize(
    ("args", "data", "code", "line"),
    [
        (["--scores", "-"], b"1,0.2\n1,0.9\n", 1, "watcher publish: -: nothing published: labels: no negative example"),
        (["--scores", "-"], b"1,0.2\n0,nan\n", 1, "scores[1]: must be a finite number, not nan"),
        (
            ["--scores", "-"],
            b"1,0.2\n0,abc\n",
            1,
            "watcher publish: -: nothing published: line 2: 'abc' is not a number",
        ),
        (["--scores", "-"], b'{"labels": [1, 0], "scores": [0.5]}', 1, "scores: has 1 values but labels has 2"),
        (["--curve", "-"], b"x,y\n0.1,1\n", 1, "the header has no column 'threshold'"),
        (["--curve", "-", "--logits"], b"", 2, "watcher: publish: --thresholds and --logits go with --scores"),
        (["--curve", "/nonexistent/input"], b"", 2, "watcher: publish: cannot read /nonexistent/input"),
        ([], b"", 2, "watcher publish: one of the arguments --scores --curve is required"),
        (["--scores", "-", "--name", "model.txt"], b"1,0.9\n0,0.1\n", 2, "--name model.txt: not a file name the"),
        (["--scores", "-", "--name", "a/b.json"], b"1,0.9\n0,0.1\n", 2, "--name a/b.json: not a file name the"),
    ],
)
def test_cli_errors_are_one_line_and_an_exit_code_and_nothing_is_written(
    tmp_path: Path, capsys: Any, args: list[str], data: bytes, code: int, line: str
) -> None:
    got, out = run_cli(["--watch-dir", str(tmp_path), "--model-id", MID, "--issuer", WHO, *args], data)
    err = capsys.readouterr().err
    assert (got, out) == (code, "")
    assert line in err and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == []


def test_cli_missing_folder_is_exit_3(tmp_path: Path, capsys: Any) -> None:
    code, _ = run_cli(
        ["--watch-dir", str(tmp_path / "nope"), "--scores", "-", "--model-id", MID, "--issuer", WHO], b"1,0.9\n0,0.1\n"
    )
    assert code == 3
    assert capsys.readouterr().err == f"watcher: cannot publish into {tmp_path / 'nope'}: no such folder\n"


# --- the JSON Schema ---------------------------------------------------------------------------------


def test_the_shipped_schema_equals_a_fresh_generation() -> None:
    fresh = fileschema.schema_text()
    for copy in fileschema.COPIES:
        assert (ROOT / copy).read_text() == fresh, f"{copy} is stale: run python -m watcher.fileschema --write"
    assert fileschema.shipped_schema() == json.loads(fresh)


def test_the_schema_accepts_the_valid_examples_and_rejects_the_invalid_ones(tmp_path: Path) -> None:
    schema = fileschema.results_file_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    examples = sorted((ROOT / "examples").glob("*.json"))
    assert {p.name.split("-")[0] for p in examples} == {"valid", "invalid"}
    for path in examples:
        try:
            doc = json.loads(path.read_bytes())
        except json.JSONDecodeError:
            assert path.name.startswith("invalid-"), path
            continue
        assert validator.is_valid(doc) == path.name.startswith("valid-"), path
    done = publish(tmp_path, model_id=MID, issuer=WHO, labels=[1, 0, 1], scores=[0.9, 0.2, 0.6])
    assert validator.is_valid(json.loads(done.path.read_bytes()))


def test_the_schema_states_which_schema_versions_are_read() -> None:
    validator = jsonschema.Draft202012Validator(fileschema.results_file_schema())
    base: dict[str, Any] = {"model_id": MID, "issuer": WHO, "experiment_date": "2024-05-01T12:00:00Z"}
    base |= {"threshold_arr": [0.0, 1.0], "recall_arr": [1.0, 0.0]}
    for version, valid in ((None, True), (1, True), (2, False), ("1", False), (1.5, False)):
        given = base if version is None else {**base, "schema_version": version}
        assert validator.is_valid(given) == valid == isinstance(validate_bytes(json.dumps(given).encode()), ResultFile)


def test_the_benchmark_prints_every_row() -> None:
    import subprocess

    run = subprocess.run(
        [sys.executable, "-m", "benchmarks.publish", "--quick"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert (run.returncode, run.stderr) == (0, "")
    for what in ("scikit-learn roc_curve", "publish, exact curve", "publish, 1,001 thresholds", "the atomic write"):
        assert run.stdout.count(f" {what}") == 2, what


def test_cli_refuses_a_config_whose_patterns_would_select_the_temporary_name(tmp_path: Path, capsys: Any) -> None:
    config = tmp_path / "config.toml"
    config.write_text('patterns = ["*"]\nignore_patterns = ["*~"]\n')
    code, out = run_cli(
        ["--config", str(config), "--watch-dir", str(tmp_path), "--scores", "-", "--model-id", MID, "--issuer", WHO],
        b"1,0.9\n0,0.1\n",
    )
    assert (code, out) == (2, "")
    assert "keep '.*' or '*.tmp' in ignore_patterns" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml"]


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("sub/model.json", "is not a file name"),
        ("/elsewhere/model.json", "is not a file name"),
        ("..", "is not a file name"),
        (".model.json", r"a name the daemon ignores \(\.\*\)"),
        ("model.json.tmp", r"a name the daemon ignores \(\*\.tmp\)"),
    ],
)
def test_a_name_outside_the_folder_or_one_the_daemon_ignores_is_refused(tmp_path: Path, name: str, reason: str) -> None:
    (tmp_path / "sub").mkdir()
    with pytest.raises(PublishError, match=reason):
        publish(tmp_path, model_id=MID, issuer=WHO, labels=[1, 0], scores=[0.9, 0.1], name=name)
    assert [p.name for p in tmp_path.rglob("*")] == ["sub"]
