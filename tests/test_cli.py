"""The CLI end to end, in a subprocess, as a user would run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import doc, write

MODEL = "3f2b8c1e-7d4a-4e0b-9a6f-1c2d3e4f5a6b"


def watcher(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("WATCHER_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "watcher", *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=60
    )


def events(stderr: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stderr.splitlines()]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    inbox = tmp_path / "inbox"
    write(inbox / "good.json", doc(model_id=MODEL, experiment_date="2024-05-01T12:00:00Z"))
    write(inbox / "sub" / "newer.json", doc(model_id=MODEL.upper(), experiment_date="2024-06-01T12:00:00Z"))
    write(inbox / "other.json", doc(model_id="00000000-0000-4000-8000-000000000001", issuer="bob@example.com"))
    write(inbox / "empty.json", "")
    write(inbox / "truncated.json", '{"model_id": "3f2b')
    write(inbox / "latin1.json", b'{"issuer": "\xe9"}')
    write(inbox / "array.json", "[1]")
    bad_fields = doc(
        model_id="nope", issuer="Ann <ann@example.com>", experiment_date="1714564800",
        recall_arr=[1.0, True, 0.5, 0.2, 0.0], threshold_arr=[0, 0.5, 0.4, 0.8, 1],
    )  # fmt: skip
    write(inbox / "fields.json", bad_fields)
    for ignored in (".hidden.json", ".x.json.swp", "x.json.tmp", "x.part", "x.json~", ".git/y.json", "notes.txt"):
        write(inbox / ignored, "garbage")
    return tmp_path


def test_scan_report_and_logs_agree_file_by_file(tree: Path) -> None:
    proc = watcher("scan", "--watch-dir", "inbox", "--db", "var/w.db", "--log-level", "debug", cwd=tree)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "8 files: 8 read, 3 scored, 5 rejected, 0 removed; 2 models, 5 rejections in total\n"
    log = events(proc.stderr)
    rejected = {e["path"]: e["errors"] for e in log if e["event"] == "file_rejected"}
    assert sorted(rejected) == ["array.json", "empty.json", "fields.json", "latin1.json", "truncated.json"]
    assert rejected["empty.json"] == [{"field": None, "message": "file is empty"}]
    assert [e["field"] for e in rejected["fields.json"]] == [
        "model_id", "issuer", "experiment_date", "recall_arr[1]",
    ]  # fmt: skip
    assert sorted(e["path"] for e in log if e["event"] == "file_scored") == [
        "good.json",
        "other.json",
        "sub/newer.json",
    ]
    dup = [e for e in log if e["event"] == "model_duplicate"]
    assert (dup[0]["model_id"], dup[0]["winner"], dup[0]["others"]) == (MODEL, "sub/newer.json", ["good.json"])

    rep = watcher("report", "--db", "var/w.db", "--format", "json", cwd=tree)
    rows = json.loads(rep.stdout)
    assert [(r["model_id"], r["path"]) for r in rows] == [
        ("00000000-0000-4000-8000-000000000001", "other.json"), (MODEL, "sub/newer.json"),
    ]  # fmt: skip
    csv_report = (tree / "var" / "w-reports" / "report.csv").read_text()
    assert csv_report == watcher("report", "--db", "var/w.db", "--format", "csv", cwd=tree).stdout
    assert json.loads((tree / "var" / "w-reports" / "report.json").read_text()) == rows

    strict = watcher("scan", "--strict", "--watch-dir", "inbox", "--db", "var/w.db", cwd=tree)
    assert strict.returncode == 1
    assert strict.stdout.startswith("8 files: 0 read,")


def test_report_filters_and_formats(tree: Path) -> None:
    watcher("scan", "--watch-dir", "inbox", "--db", "var/w.db", cwd=tree)
    by_issuer = watcher("report", "--db", "var/w.db", "--issuer", "bob@example.com", "--format", "csv", cwd=tree)
    assert by_issuer.stdout.count("\n") == 2 and "bob@example.com" in by_issuer.stdout
    by_model = watcher("report", "--db", "var/w.db", "--model", "3F2B", "--format", "markdown", cwd=tree)
    assert by_model.stdout.splitlines()[2].startswith(f"| {MODEL} | ana@example.com | 0.5 | 0.85 |")
    table = watcher("report", "--db", "var/w.db", "--format", "table", cwd=tree)
    assert table.stdout.splitlines()[0].split() == [
        "model_id", "issuer", "optimal_threshold", "closest_recall_value", "experiment_date", "path",
    ]  # fmt: skip


def test_validate_prints_verdicts_and_exits_1_on_any_invalid(tree: Path) -> None:
    ok = watcher("validate", "inbox/good.json", cwd=tree)
    assert (ok.returncode, ok.stdout) == (
        0, f"inbox/good.json: ok: model_id {MODEL}, optimal_threshold 0.5, closest_recall_value 0.85\n",
    )  # fmt: skip
    bad = watcher("validate", "inbox/good.json", "inbox/array.json", "inbox/missing.json", cwd=tree)
    assert bad.returncode == 1
    assert bad.stdout.splitlines()[1:] == [
        "inbox/array.json: invalid",
        "  (file): top level must be a JSON object, not an array",
        "inbox/missing.json: invalid: no such file",
    ]


def test_config_errors_exit_2_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text("target_recall = 2\n")
    proc = watcher("scan", "--config", "c.toml", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr == "watcher: c.toml: target_recall: Input should be less than or equal to 1\n"
    missing = watcher("scan", "--config", "nope.toml", cwd=tmp_path)
    assert (missing.returncode, missing.stderr) == (2, "watcher: nope.toml: config file not found\n")
    env = watcher("scan", cwd=tmp_path, env={"WATCHER_OBSERVER": "magic"})
    assert env.returncode == 2 and env.stderr.startswith("watcher: WATCHER_OBSERVER: observer: Input should be")


def test_runtime_errors_exit_3(tmp_path: Path) -> None:
    proc = watcher("scan", "--watch-dir", "nowhere", "--db", "w.db", cwd=tmp_path)
    assert proc.returncode == 3
    assert proc.stderr == f"watcher: {tmp_path / 'nowhere'}: watch directory does not exist or is not a directory\n"
    rep = watcher("report", "--db", "none.db", cwd=tmp_path)
    assert rep.returncode == 3 and "no database here yet" in rep.stderr


def test_status_without_daemon(tree: Path) -> None:
    watcher("scan", "--watch-dir", "inbox", "--db", "var/w.db", cwd=tree)
    proc = watcher("status", "--db", "var/w.db", "--json", cwd=tree)
    assert proc.returncode == 3
    info = json.loads(proc.stdout)
    assert info["running"] is False and info["counts"]["models"] == 2 and info["counts"]["rejections"] == 5
    assert len(info["recent_rejections"]) == 5


def test_config_file_drives_everything(tmp_path: Path) -> None:
    write(tmp_path / "data" / "a.json", doc())
    (tmp_path / "w.toml").write_text('watch_dir = "data"\ndb_path = "state/w.db"\nreport_formats = ["markdown"]\n')
    proc = watcher("scan", cwd=tmp_path, env={"WATCHER_CONFIG": "w.toml"})
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "state" / "w-reports" / "report.md").exists()


def test_python_dash_m_and_console_script_agree(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("watcher")
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True).stdout
    assert out == watcher("--version", cwd=tmp_path).stdout == "watcher 0.1.0\n"


def test_bundled_examples_are_what_their_names_say() -> None:
    examples = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.json"))
    proc = watcher("validate", *map(str, examples), cwd=examples[0].parent)
    assert proc.returncode == 1
    verdicts = {
        line.split(": ")[0]: line.split(": ")[1] for line in proc.stdout.splitlines() if not line.startswith(" ")
    }
    assert verdicts == {str(p): ("ok" if p.name.startswith("valid") else "invalid") for p in examples}


def test_progress_bar_only_when_asked_or_on_a_terminal(tree: Path) -> None:
    quiet = watcher("scan", "--watch-dir", "inbox", "--db", "var/w.db", cwd=tree)
    assert "scanning [" not in quiet.stderr  # stderr is a pipe here: logs only
    (tree / "var" / "w.db").unlink()
    shown = watcher("scan", "--watch-dir", "inbox", "--db", "var/w2.db", cwd=tree, env={"WATCHER_PROGRESS": "always"})
    # (text=True turns the bar's carriage returns into newlines)
    assert "\nscanning [##############################] 8/8\n" in shown.stderr


def test_the_process_entry_keeps_what_the_imports_made_out_of_the_collector() -> None:
    # entry() freezes the objects that exist when it starts, then runs main().
    code = (
        "import gc, sys; from watcher import cli; "
        "cli.main = lambda: 0 if gc.get_freeze_count() > 10_000 else 1; sys.exit(cli.entry())"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0
