"""Report rendering (exact output) and atomic writing."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import pytest

from watcher.report import render_csv, render_json, render_markdown, render_table, write_atomic, write_reports

ROWS = [
    {"model_id": "m1", "issuer": "a@example.com", "optimal_threshold": 0.5, "closest_recall_value": 0.85,
     "experiment_date": "2024-05-01T12:00:00Z", "path": "a,b.json"},
    {"model_id": "m2", "issuer": "b@example.com", "optimal_threshold": 0.25, "closest_recall_value": 0.9,
     "experiment_date": "2024-05-02T12:00:00Z", "path": "x|y.json"},
]  # fmt: skip


def test_csv_round_trips() -> None:
    text = render_csv(ROWS)
    assert text.splitlines()[0] == "model_id,issuer,optimal_threshold,closest_recall_value,experiment_date,path"
    back = list(csv.DictReader(io.StringIO(text)))
    assert back[0]["path"] == "a,b.json" and back[1]["optimal_threshold"] == "0.25"


def test_json_keeps_types_and_column_order() -> None:
    data = json.loads(render_json(ROWS))
    assert data[1] == ROWS[1] and list(data[0]) == list(ROWS[0])


def test_markdown_escapes_pipes() -> None:
    lines = render_markdown(ROWS).splitlines()
    assert lines[0] == "| model_id | issuer | optimal_threshold | closest_recall_value | experiment_date | path |"
    assert lines[1] == "|---|---|---|---|---|---|"
    assert lines[3].endswith("| x\\|y.json |")


def test_table_aligns_numbers_right() -> None:
    lines = render_table(ROWS).splitlines()
    assert lines[0].startswith("model_id  issuer         optimal_threshold")
    assert lines[2].index("0.5") + 3 == lines[3].index("0.25") + 4
    assert render_table([]).splitlines()[-1] == "(no models yet)"


def test_write_atomic_replaces_whole_file_with_private_mode(tmp_path: Path) -> None:
    target = tmp_path / "r" / "report.csv"
    write_atomic(target, "one\n")
    inode = target.stat().st_ino
    write_atomic(target, "two\n")
    assert target.read_text() == "two\n"
    assert target.stat().st_ino != inode  # a new file renamed over the old one
    assert target.stat().st_mode & 0o777 == 0o640
    assert os.listdir(target.parent) == ["report.csv"]  # no temp files left


def test_failed_write_leaves_old_report_and_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "report.csv"
    write_atomic(target, "old\n")

    def fail(*_: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="No space"):
        write_atomic(target, "new\n")
    assert target.read_text() == "old\n" and os.listdir(tmp_path) == ["report.csv"]


def test_write_reports_all_formats(tmp_path: Path) -> None:
    paths = write_reports(ROWS, tmp_path, ["csv", "json", "markdown"])
    assert sorted(p.name for p in paths) == ["report.csv", "report.json", "report.md"]
