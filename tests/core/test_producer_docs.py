"""Every example of docs/from-your-training-job.md, read from the page and run as written.

scikit-learn's run against the real library. PyTorch, torchmetrics and Keras are not installed for
the tests (PyTorch from PyPI brings several GB of CUDA libraries; Keras needs JAX, TensorFlow or
PyTorch as a backend, 600 MB at least): their examples run against stand-ins written here from
those libraries' documented behaviour (the shapes and orders they return, tensors read through
``detach``/``cpu``/``tolist``), independent of watcher.producer's code.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from watcher.errors import InvalidResultError
from watcher.judge import JudgeOptions, judge
from watcher.outcomes import Scored
from watcher.producer import Curve, curve_from_scores, publish

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "from-your-training-job.md"
MID = "3f2b8c1e-7d4a-4e0b-9a6f-1c2d3e4f5a6b"


def sections() -> dict[str, list[tuple[str, str]]]:
    """The page's ``## `` sections: each one's fenced blocks, as (language, code)."""
    out: dict[str, list[tuple[str, str]]] = {}
    current = ""
    for part in re.split(r"^(## .+)$", PAGE.read_text(), flags=re.M):
        if part.startswith("## "):
            current = part[3:].strip()
            continue
        out[current] = re.findall(r"^```(\w+)\n(.*?)^```$", part, flags=re.M | re.S)
    return out


def python_blocks(section: str) -> list[str]:
    blocks = [code for lang, code in sections()[section] if lang == "python"]
    assert blocks, f"no python block under '## {section}'"
    return blocks


def run_blocks(section: str, folder: Path, monkeypatch: pytest.MonkeyPatch, **given: Any) -> dict[str, Any]:
    """Run a section's Python blocks in order in one namespace, in ``folder`` (which holds ``inbox``)."""
    (folder / "inbox").mkdir()
    monkeypatch.chdir(folder)
    namespace: dict[str, Any] = {"__name__": "__docs__", **given}
    for code in python_blocks(section):
        exec(compile(code, f"{PAGE.name}: {section}", "exec"), namespace)
    return namespace


def assert_all_scored(inbox: Path, count: int) -> list[Scored]:
    files = sorted(inbox.iterdir())
    assert len(files) == count, files
    outcomes = [judge(p.name, JudgeOptions(inbox, 0.85, 64 << 20)) for p in files]
    assert all(isinstance(o, Scored) for o in outcomes), outcomes
    return outcomes  # type: ignore[return-value]


def test_the_page_has_the_sections_the_tests_run() -> None:
    assert {"Plain Python", "scikit-learn", "PyTorch and torchmetrics", "Keras", "From the shell"} <= set(sections())


def test_plain_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    run_blocks("Plain Python", tmp_path, monkeypatch)
    # Both examples use the same model_id: the second replaced the first, whole.
    (outcome,) = assert_all_scored(tmp_path / "inbox", 1)
    assert outcome.n_points == 5
    printed = capsys.readouterr().out.split()
    assert printed == [f"inbox/{MID}.json", "0.62", "0.75", "False"]


def test_scikit_learn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ns = run_blocks("scikit-learn", tmp_path, monkeypatch)
    outcomes = assert_all_scored(tmp_path / "inbox", 3)  # three publishes, each a new model_id
    assert ns["done"].model_id in {o.model_id for o in outcomes}


# --- torchmetrics, as documented: tensors in, (precision, recall, thresholds) / (fpr, tpr, thresholds) out ---


class StandInTensor:
    """A float32 tensor on a GPU: readable only through ``detach().cpu()``."""

    def __init__(self, values: Any, device: str = "cuda:0") -> None:
        self.array = np.asarray(values, dtype=np.float32)
        self.device = device

    def detach(self) -> StandInTensor:
        return StandInTensor(self.array, self.device)

    def cpu(self) -> StandInTensor:
        return StandInTensor(self.array, "cpu")

    def tolist(self) -> Any:
        assert self.device == "cpu", "read while on the GPU"
        return self.array.tolist()


class _Curves:
    def __init__(self, thresholds: int | None = None) -> None:
        self.thresholds = thresholds
        self.preds: list[float] = []
        self.target: list[int] = []

    def update(self, preds: StandInTensor, target: StandInTensor) -> None:
        self.preds += preds.array.tolist()
        self.target += target.array.astype(int).tolist()

    def _grid(self) -> np.ndarray:
        if self.thresholds is None:
            return np.unique(np.asarray(self.preds, dtype=np.float32))
        return np.linspace(0, 1, self.thresholds, dtype=np.float32)

    def _counts(self, t: float) -> tuple[int, int, int]:
        p, y = np.asarray(self.preds, dtype=np.float32), np.asarray(self.target)
        hit = p >= t  # torchmetrics: a prediction at or above the threshold is positive
        return int((hit & (y == 1)).sum()), int((hit & (y == 0)).sum()), int((~hit & (y == 1)).sum())


class BinaryPrecisionRecallCurve(_Curves):
    def compute(self) -> tuple[StandInTensor, StandInTensor, StandInTensor]:
        grid = self._grid()  # increasing
        counts = [self._counts(t) for t in grid]
        precision = [tp / (tp + fp) if tp + fp else 1.0 for tp, fp, _ in counts] + [1.0]
        recall = [tp / (tp + fn) for tp, _, fn in counts] + [0.0]
        return StandInTensor(precision), StandInTensor(recall), StandInTensor(grid)


class BinaryROC(_Curves):
    def compute(self) -> tuple[StandInTensor, StandInTensor, StandInTensor]:
        grid = self._grid()[::-1]  # decreasing
        if self.thresholds is None:  # the exact curve starts at (0, 0), threshold 1
            grid = np.concatenate([np.ones(1, dtype=np.float32), grid])
        negatives = sum(1 for y in self.target if y == 0)
        counts = [self._counts(t) for t in grid]
        tpr = [tp / (tp + fn) for tp, _, fn in counts]
        fpr = [fp / negatives for _, fp, _ in counts]
        if self.thresholds is None:
            tpr[0] = fpr[0] = 0.0
        return StandInTensor(fpr), StandInTensor(tpr), StandInTensor(grid)


def test_torchmetrics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    classification = types.ModuleType("torchmetrics.classification")
    classification.BinaryPrecisionRecallCurve = BinaryPrecisionRecallCurve  # type: ignore[attr-defined]
    classification.BinaryROC = BinaryROC  # type: ignore[attr-defined]
    torchmetrics = types.ModuleType("torchmetrics")
    torchmetrics.classification = classification  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torchmetrics", torchmetrics)
    monkeypatch.setitem(sys.modules, "torchmetrics.classification", classification)
    rng = np.random.default_rng(7)
    target = rng.integers(0, 2, 500)
    scores = np.clip(rng.normal(0.35 + 0.3 * target, 0.2), 0, 1).round(3)  # ties, and 0.0 and 1.0
    ns = run_blocks(
        "PyTorch and torchmetrics", tmp_path, monkeypatch, preds=StandInTensor(scores), target=StandInTensor(target)
    )
    assert_all_scored(tmp_path / "inbox", 1)  # three publishes of one model_id
    exact = curve_from_scores(target, np.asarray(scores, dtype=np.float32))
    assert ns["pr"].thresholds == 101
    published = json.loads((tmp_path / "inbox" / f"{MID}.json").read_bytes())
    assert (published["threshold_arr"], published["recall_arr"]) == (list(exact.thresholds), list(exact.recalls))


def test_torchmetrics_exact_roc_is_the_exact_curve_plus_its_start(tmp_path: Path) -> None:
    from watcher.producer import curve_from_pr, curve_from_roc

    rng = np.random.default_rng(3)
    target = rng.integers(0, 2, 300)
    scores = rng.random(300).round(2)
    scores[:3] = 1.0
    exact = curve_from_scores(target, np.asarray(scores, dtype=np.float32))
    roc, pr = BinaryROC(), BinaryPrecisionRecallCurve()
    for metric in (roc, pr):
        metric.update(StandInTensor(scores), StandInTensor(target))
    # float32 recalls, as torchmetrics computes them; the (1.0, 0) start merged with the real 1.0 scores
    assert_same(curve_from_roc(*roc.compute()), exact)
    assert_same(curve_from_pr(*pr.compute()), exact)
    grid = BinaryROC(thresholds=11)
    grid.update(StandInTensor(scores), StandInTensor(target))
    on_grid = [float(t) for t in np.linspace(0, 1, 11, dtype=np.float32)]
    assert_same(curve_from_roc(*grid.compute()), curve_from_scores(target, scores.astype(np.float32), on_grid))


def assert_same(got: Curve, expected: Curve) -> None:
    assert got.thresholds == expected.thresholds
    assert got.recalls == pytest.approx(expected.recalls, abs=1e-6)


# --- Keras, as documented: predict returns one column; Recall(thresholds=[...]) counts y_pred > t -----------


class StandInModel:
    def __init__(self, weights: np.ndarray) -> None:
        self.weights = weights

    def predict(self, x: np.ndarray, verbose: int = 1) -> np.ndarray:
        out: np.ndarray = (1 / (1 + np.exp(-(x @ self.weights)))).astype(np.float32).reshape(-1, 1)
        return out


class Recall:
    def __init__(self, thresholds: list[float]) -> None:
        self.thresholds = thresholds
        self.tp = np.zeros(len(thresholds))
        self.fn = np.zeros(len(thresholds))

    def update_state(self, y_true: Any, y_pred: Any) -> None:
        y, p = np.asarray(y_true).reshape(-1), np.asarray(y_pred).reshape(-1)
        for i, t in enumerate(self.thresholds):
            self.tp[i] += ((p > t) & (y == 1)).sum()
            self.fn[i] += ((p <= t) & (y == 1)).sum()

    def result(self) -> np.ndarray:
        return (self.tp / (self.tp + self.fn)).astype(np.float32)


def test_keras(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keras = types.ModuleType("keras")
    keras.metrics = types.SimpleNamespace(Recall=Recall)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "keras", keras)
    rng = np.random.default_rng(5)
    x_val = rng.normal(size=(400, 4))
    model = StandInModel(np.array([1.5, -0.5, 0.8, 0.0]))
    y_val = (rng.random(400) < model.predict(x_val).reshape(-1)).astype(int)
    ns = run_blocks("Keras", tmp_path, monkeypatch, model=model, x_val=x_val, y_val=y_val)
    (outcome,) = assert_all_scored(tmp_path / "inbox", 1)
    assert outcome.n_points == 21  # the last publish: the metric's 21 thresholds
    assert ns["recall"].thresholds[-1] == 1.0


# --- the shell, and the error message as printed on the page ----------------------------------------------


def test_the_shell_example(tmp_path: Path) -> None:
    (block,) = [code for lang, code in sections()["From the shell"] if lang == "sh"]
    (tmp_path / "inbox").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATCHER_")}
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    run = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert (run.returncode, run.stderr) == (0, "")
    assert run.stdout == (
        f"published {tmp_path}/inbox/{MID}.json: model_id {MID}, optimal_threshold 0.62, closest_recall_value 0.75; "
        "below the target recall 0.85\n"
    )
    text = " ".join(PAGE.read_text().split())
    assert "optimal_threshold 0.62, closest_recall_value 0.75; below the target recall 0.85" in text
    assert_all_scored(tmp_path / "inbox", 1)


def test_the_documented_error_message(tmp_path: Path) -> None:
    (shown,) = [code.strip() for lang, code in sections()["When it fails"] if lang == "text"]
    with pytest.raises(InvalidResultError) as caught:
        publish(tmp_path, model_id=MID, issuer="ana", labels=[1, 0, 1, 0], scores=[0.9, 0.2, 0.7, math.nan])
    assert str(caught.value) == shown
