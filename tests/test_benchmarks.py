"""Smoke test: the benchmark and soak commands run and print every figure (their numbers are
measured by hand, outside the test suite: the machine is noisy)."""

from __future__ import annotations

import operator
import random
import re
import subprocess
import sys
from itertools import islice
from pathlib import Path

import pytest

from testing import corpus
from testing.cdp import CHROMIUM
from watcher.resultfile import ResultFile

pytestmark = pytest.mark.slow  # the benchmark commands, run as a user would

REPO = Path(__file__).resolve().parent.parent


def test_benchmark_command_prints_every_figure() -> None:
    proc = subprocess.run([sys.executable, "-m", "benchmarks.run", "--quick"], cwd=REPO, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    for figure in ("cold scan", "unchanged re-scan", "peak RSS, cold scan", "daemon cold start to ready, 400 files",
                   "change-to-database latency", "change to report files", "idle CPU", "daemon peak RSS",
                   "latency growth", "burst of", "one 10,000-point curve validated and scored"):  # fmt: skip
        assert f"\n| {figure}" in proc.stdout, figure  # a row of the table starts with it
    assert "\n| cold scan, 400 files, start-up excluded (files/s) |" in proc.stdout
    assert proc.stdout.splitlines()[0].startswith("| figure | watcher | baseline |")


def test_benchmark_can_measure_the_report_files_alone() -> None:
    proc = subprocess.run([sys.executable, "-m", "benchmarks.run", "--reports", "300"], cwd=REPO, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 2 and rows[1].startswith("| change to report files, 300 models (s: CSV / CSV+JSON+HTML) |")


def test_page_comparison_prints_the_cpu_of_each_checkout() -> None:
    proc = subprocess.run([sys.executable, "-m", "benchmarks.compare", str(REPO), "--page", "200", "--rounds", "1"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("CPU seconds to write report.html, 200 models, 1 interleaved rounds")
    assert [line.split()[0] for line in lines[1:]] == ["this", "other"]


def test_tables_benchmark_prints_every_figure_against_its_baseline() -> None:
    proc = subprocess.run([sys.executable, "-m", "benchmarks.tables", "--models", "400", "--rounds", "1"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"\n\| whole render of 400 models \(csv\+json\), the baseline \(s\) \| \d+\.\d{3} \|", proc.stdout)
    for n in ("1 model", "100 models"):
        assert re.search(
            rf"\n\| a change of {n}: files written \(s; baseline/this\) \| [\d.]+ \([\d.]+x\) \|", proc.stdout
        )
    assert re.search(r"\n\| writes that read only the changed models \| [1-9]\d* of \d+ \|", proc.stdout)


def test_daemon_comparison_prints_the_cold_start_of_each_checkout() -> None:
    proc = subprocess.run([sys.executable, "-m", "benchmarks.compare", str(REPO), "--daemon", "300", "--rounds", "1"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("watcher run (inotify) cold start, 300 files, 1 interleaved rounds")
    assert [line.split()[0] for line in lines[1:]] == ["this", "other"]
    assert all("queue overflowed 0 of 1" in line for line in lines[1:])


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (.ci/run installs it)")
def test_page_benchmark_prints_every_figure() -> None:
    proc = subprocess.run([sys.executable, "-m", "benchmarks.page", "--quick"], cwd=REPO, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for figure in ("report.html written from the database (s; CPU s in brackets)", "report.html size (MB)",
                   "load and first screen",
                   "sort by experiment_date", "sort by path", "filter: issuer", "filter: model_id prefix",
                   "open a model's detail"):  # fmt: skip
        assert f"\n| 500 models: {figure}" in proc.stdout, figure
    assert re.search(r"\n\| 500 models: sort by path \(ms, script in brackets\) \| \d+ \(\d+\) \|", proc.stdout)


def test_polling_benchmark_prints_every_figure() -> None:
    proc = subprocess.run([sys.executable, "-m", "benchmarks.polling", "--quick"], cwd=REPO, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    for figure in ("idle CPU", "idle RSS of the daemon", "idle PSS, whole process tree", "new file to database",
                   "idle again after those files", "burst of 50 new files"):  # fmt: skip
        assert f"\n| {figure}" in proc.stdout, figure
    assert proc.stdout.startswith("| 400 files in 4 folders | inotify | polling |")


def test_soak_command_checks_the_invariant() -> None:
    proc = subprocess.run([sys.executable, "-m", "benchmarks.soak", "--minutes", "0.1", "--sample", "2"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "invariant: holds" in proc.stdout and "integrity_check: ok" in proc.stdout


def test_corpus_curves_are_valid_and_never_rise() -> None:
    rng = random.Random(3)
    for i in range(50):
        d = corpus.document(i, 101, rng)
        ResultFile.model_validate(d)
        r = d["recall_arr"]
        assert all(map(operator.ge, r, islice(r, 1, None))), r


def test_targets_benchmark_prints_one_and_three_targets_and_their_ratio() -> None:
    proc = subprocess.run([sys.executable, "-m", "benchmarks.targets", "--files", "300", "--rounds", "1"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("300 files, 1 rounds, cold scans")
    assert [line.split()[0] for line in lines[1:7]] == ["one", "three", "three"] * 2
    assert "no report files" in lines[3] and "default report files" in lines[6]
    assert all(float(lines[i].split("CPU ")[1].split(",")[0]) > 0 for i in (3, 6))  # the CPU ratios
