"""Smoke test: the benchmark and soak commands run and print every figure (their numbers are
measured by hand, outside the test suite: the machine is noisy)."""

from __future__ import annotations

import json
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


def test_scan_comparison_prints_cpu_and_wall_beside_the_naive_script(tmp_path: Path) -> None:
    corpus.generate(tmp_path / "tree", 200)
    args = ["--tree", str(tmp_path / "tree"), "--rounds", "1", "--naive"]
    proc = subprocess.run([sys.executable, "-m", "benchmarks.compare", str(REPO), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "CPU seconds, 200 files, 1 interleaved rounds (median; every run)"
    assert [line.split()[0] for line in lines[1:4]] == ["this", "other", "naive"]
    assert lines[4].startswith("Wall seconds of the cold scan")
    assert re.fullmatch(r"  naive  [\d.]+ \([\d.]+\), x1\.00", lines[7])
    assert all(re.fullmatch(r"  (this |other)  [\d.]+ \([\d.]+\), x[\d.]+", line) for line in lines[5:7])


def test_daemon_comparison_prints_the_cold_start_of_each_checkout() -> None:
    proc = subprocess.run([sys.executable, "-m", "benchmarks.compare", str(REPO), "--daemon", "300", "--rounds", "1"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("watcher run (inotify) cold start, 300 files, 1 interleaved rounds")
    assert [line.split()[0] for line in lines[1:]] == ["this", "other"]
    assert all("queue overflowed 0 of 1" in line for line in lines[1:])


def _quick(module: str) -> subprocess.CompletedProcess[str]:
    """``python -m MODULE --quick``, which must succeed."""
    proc = subprocess.run([sys.executable, "-m", module, "--quick"], cwd=REPO, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (.ci/run installs it)")
def test_page_benchmark_prints_every_figure() -> None:
    proc = _quick("benchmarks.page")
    for figure in ("report.html written from the database (s; CPU s in brackets)", "report.html size (MB)",
                   "load and first screen",
                   "sort by experiment_date", "sort by path", "filter: issuer", "filter: model_id prefix",
                   "open a model's detail"):  # fmt: skip
        assert f"\n| 500 models: {figure}" in proc.stdout, figure
    assert re.search(r"\n\| 500 models: sort by path \(ms, script in brackets\) \| \d+ \(\d+\) \|", proc.stdout)


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (.ci/run installs it)")
def test_page_parts_benchmark_prints_every_figure() -> None:
    proc = _quick("benchmarks.page_parts")
    for label in ("600 models, whole page", "600 models, in parts of 100"):
        for figure in ("written from the database (s; CPU s)", "first screen (ms)", "every part in (ms)",
                       "browser CPU to every part in (s)", "sort by threshold, every part in (ms)"):  # fmt: skip
            assert f"\n| {label}: {figure} | " in proc.stdout, (label, figure)
    assert "\n| 600 models, in parts of 100: the same models written as a whole page (s; CPU s) | " in proc.stdout
    assert "\n| 600 models, in parts of 100: report.html (MB); part files (number; MB) | 0.1; 5; " in proc.stdout
    assert "\n| 600 models, in parts of 100: models shown | 600 |" in proc.stdout
    assert re.search(r"\n\| 600 models in parts: first screen against the whole page of 600 \(ratio\) \| \d+\.\d\d \|",
                     proc.stdout)  # fmt: skip


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


def test_notify_kill_benchmark_prints_every_figure() -> None:
    proc = subprocess.run([sys.executable, "-m", "benchmarks.notify_kills", "--kills", "2"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    figures = json.loads(proc.stdout)
    assert set(figures) == {"written", "rejections", "posts", "duplicates", "kills", "catch_up_seconds",
                            "resumed_from", "lost"}  # fmt: skip
    assert figures["kills"] == 2 and figures["lost"] == 0 and figures["posts"] >= figures["rejections"] > 0


def test_million_generator_writes_each_file_once_a_hundred_to_a_folder(tmp_path: Path) -> None:
    from benchmarks import million

    million.generate(tmp_path / "a", 25_000, jobs=2)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.json"))
    assert len(files) == 25_000 and len({f.parent for f in files}) == 250
    assert files[0] == Path("run0000/model0000000.json") and files[-1] == Path("run0249/model0024999.json")
    # Deterministic: the same tree again, byte for byte (a sample across the three parts).
    million.generate(tmp_path / "b", 25_000, jobs=1)
    for f in files[::997]:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    ResultFile.model_validate_json((tmp_path / "a" / files[-1]).read_bytes())


def test_million_benchmark_prints_every_figure() -> None:
    proc = subprocess.run([sys.executable, "-m", "benchmarks.million", "--quick"], cwd=REPO, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("| 400 files in 4 folders | watcher |")
    for figure in ("naive script, one full rescan", "cold `watcher scan`", "cold scan against the naive script",
                   "unchanged re-scan", "database files after the scan", "report.html after the scan",
                   "daemon (inotify) start to ready", "start-up table write", "change -> database, p50 / p99 over 3",
                   "change -> report files", "idle, inotify", "daemon (polling) start to ready", "idle, polling",
                   "report.html after the changes"):  # fmt: skip
        assert f"\n| {figure}" in proc.stdout, figure
    assert re.search(r"\n\| idle, polling: [^|]+ \| \d+\.\d\d; \d+ \(1\) \|", proc.stdout)


def test_million_benchmark_measures_the_daemon_alone_and_leaves_the_tree_as_it_was(tmp_path: Path) -> None:
    from benchmarks import million

    tree, db = tmp_path / "tree", tmp_path / "db" / "watcher.db"
    million.generate(tree, 300, jobs=1)
    subprocess.run([sys.executable, "-m", "watcher", "scan", "--watch-dir", str(tree), "--db", str(db)], cwd=REPO,
                   check=True, capture_output=True, timeout=300)  # fmt: skip
    before = sorted((p.relative_to(tree), p.stat().st_mtime_ns) for p in tree.rglob("*"))
    proc = subprocess.run([sys.executable, "-m", "benchmarks.million", "--only", "daemon", "--tree", str(tree),
                           "--db", str(db), "--changes", "3", "--idle", "1", "--checkout", str(REPO)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"| {tree} ({REPO}) | watcher |" in proc.stdout
    assert re.search(r"\n\| change -> database, p50 / p99 over 3 \(ms\) \| \d+\.\d / \d+\.\d ", proc.stdout)
    assert re.search(r"\n\| change -> report files[^|]+\| \d+\.\d\d / \d+\.\d\d / \d+\.\d\d ", proc.stdout)
    assert "cold `watcher scan`" not in proc.stdout  # no scan: the database is the one given
    assert sorted((p.relative_to(tree), p.stat().st_mtime_ns) for p in tree.rglob("*")) == before


def test_stages_benchmark_prints_each_stage_per_file(tmp_path: Path) -> None:
    corpus.generate(tmp_path / "tree", 300)
    proc = subprocess.run([sys.executable, "-m", "benchmarks.stages", str(tmp_path / "tree")], cwd=REPO,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for stage in ("read (open, fstat, read, close)", "hash (sha256)", "parse and validate", "score",
                  "encode the drawn curve", "make the outcome", "IPC: pickle in the worker",
                  "IPC: unpickle in the scan's process", "insert (results, history, indexes; commits)",
                  "log lines", "the naive script", "watcher's stages, summed"):  # fmt: skip
        assert re.search(rf"\n\| {re.escape(stage)}[^|]* \| \d+\.\d \|", proc.stdout), stage


def test_inserts_benchmark_prints_each_way() -> None:
    proc = subprocess.run([sys.executable, "-m", "benchmarks.inserts", "--files", "600", "--rounds", "1",
                           "--batch-size", "200"], cwd=REPO, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("Inserts of 600 outcomes into an empty database, 1 interleaved rounds")
    for way, line in zip(("every index row by row", "deferred (a cold scan)", "results_latest deferred too"),
                         lines[1:], strict=True):  # fmt: skip
        assert re.fullmatch(rf"  {re.escape(way)} +CPU [\d.]+ \([\d.]+\) \(at the end [\d.]+ .*wall [\d.]+ .*", line)


def test_inserts_benchmark_makes_distinct_outcomes() -> None:
    from benchmarks.inserts import outcomes

    made = outcomes(2_500)
    assert len({o.path for o in made}) == len({o.model_id for o in made}) == 2_500
    assert made[0].path == "run0000/model0000000.json" and made[2_499].path == "run0024/model0002499.json"


def test_targets_benchmark_prints_one_and_three_targets_and_their_ratio() -> None:
    proc = subprocess.run([sys.executable, "-m", "benchmarks.targets", "--files", "300", "--rounds", "1"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("300 files, 1 rounds, cold scans")
    assert [line.split()[0] for line in lines[1:9]] == ["one", "three", "three", "three"] * 2
    assert "no report files" in lines[3] and "default report files" in lines[7]
    assert "ratio of the medians" in lines[3] and "rounds' ratios" in lines[4]
    assert all(float(lines[i].split("CPU ")[1].split(",")[0]) > 0 for i in (3, 4, 7, 8))  # the CPU ratios
