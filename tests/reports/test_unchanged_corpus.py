"""Every report file, rendered with the default settings from a generated corpus that holds what
the bundled examples do not (models with several files, superseded experiments, equal dates,
rejections of every kind, nested folders), is byte for byte what fbd0eff (the code before the
``operating_point`` setting, ``schema_version``, several targets, the pickers and the regression
checks) rendered: the sha256 and size of each file, in ``fixtures/corpus-digests.json``.

How the digests were made: :func:`build_corpus`'s tree rendered with fbd0eff's own modules (its
``watcher.publish.write_html`` and ``watcher.render.write_reports``, the same fixed clock) and with
this code's :func:`render`, and the files compared: the CSV, JSON and Markdown files were equal,
and the page differed in one line only, a comment of its script that names the module that writes
it (``watcher/html.py`` then, ``watcher/reports/page.py`` since the modules moved into folders).
The digests are this code's files. :mod:`tests.reports.test_unchanged` does the same for the
examples and keeps the files themselves.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
from pathlib import Path

import pytest

from testing import corpus
from tests.reports.test_unchanged import FIXED_MTIME_NS, render

EXPECTED = Path(__file__).parent / "fixtures" / "corpus-digests.json"

#: Files that break one rule each (with the valid ones, the report's rejections section).
BROKEN = {
    "bad/truncated.json": '{"model_id": "broken',
    "bad/not-an-object.json": "[1, 2, 3]",
    "bad/empty.json": "",
    "bad/nan.json": '{"model_id": "0b9c0c1e-7d4a-4e0b-9a6f-1c2d3e4f5a6b", "issuer": "a@example.com",'
    ' "experiment_date": "2024-05-01T12:00:00.000Z", "threshold_arr": [0.0, 0.5, 1.0], "recall_arr": [1.0, NaN, 0.0]}',
    "bad/lengths.json": '{"model_id": "1b9c0c1e-7d4a-4e0b-9a6f-1c2d3e4f5a6b", "issuer": "a@example.com",'
    ' "experiment_date": "2024-05-01T12:00:00.000Z", "threshold_arr": [0.0, 0.5, 1.0], "recall_arr": [1.0, 0.0]}',
    "bad/naive-date.json": '{"model_id": "2b9c0c1e-7d4a-4e0b-9a6f-1c2d3e4f5a6b", "issuer": "a@example.com",'
    ' "experiment_date": "2024-05-01T12:00:00", "threshold_arr": [0.0, 1.0], "recall_arr": [1.0, 0.0]}',
    "bad/missing.json": '{"model_id": "3b9c0c1e-7d4a-4e0b-9a6f-1c2d3e4f5a6b"}',
    "bad/thresholds-falling.json": '{"model_id": "4b9c0c1e-7d4a-4e0b-9a6f-1c2d3e4f5a6b", "issuer": "=2+3@example.com",'
    ' "experiment_date": "2024-05-01T12:00:00.000Z", "threshold_arr": [1.0, 0.0], "recall_arr": [0.0, 1.0]}',
}


def build_corpus(inbox: Path) -> None:
    """300 generated files in nested folders, every fifth one another experiment of the model
    before it (some on the very same instant), and the :data:`BROKEN` files; mtimes fixed."""
    rng = random.Random(29)
    previous: dict[str, object] | None = None
    for i in range(300):
        doc = corpus.document(i, 11 + i % 90, rng)
        if previous is not None and i % 5 == 0:
            doc["model_id"] = previous["model_id"]
            if i % 10 == 0:
                doc["experiment_date"] = previous["experiment_date"]
        if i % 17 == 0:
            doc["issuer"] = f"=2+{i}@example.com"  # a formula cell, neutralised in CSV and Markdown
        path = inbox / f"run{i % 4}" / f"week{i % 3}" / f"m{i:04}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc))
        previous = doc
    for rel, text in BROKEN.items():
        (inbox / rel).parent.mkdir(parents=True, exist_ok=True)
        (inbox / rel).write_text(text)
    for path in inbox.rglob("*.json"):
        os.utime(path, ns=(FIXED_MTIME_NS, FIXED_MTIME_NS))


def digests(files: dict[str, bytes]) -> dict[str, list[object]]:
    return {name: [hashlib.sha256(content).hexdigest(), len(content)] for name, content in files.items()}


def test_every_report_file_is_unchanged_on_a_generated_corpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    got = digests(render(tmp_path, monkeypatch, fill=build_corpus))
    expected = json.loads(EXPECTED.read_text())
    assert sorted(got) == sorted(expected) == ["report.csv", "report.html", "report.json", "report.md"]
    for name in expected:
        assert got[name] == expected[name], name


if __name__ == "__main__":  # python -m tests.reports.test_unchanged_corpus DIR: the corpus alone
    build_corpus(Path(sys.argv[1]))
