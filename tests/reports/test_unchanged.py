"""Every report file, rendered from the bundled examples (``examples/*.json``) with the default
settings, is byte for byte what the code before the ``operating_point`` setting and the
``schema_version`` field rendered.

The expected files in ``fixtures/examples/`` were written by :func:`render` from that code
(``python -m tests.reports.test_unchanged DIR`` writes them again). The clock is the one thing
that differs between two renderings, so it is fixed here (the judging time stored in the
database and the page's generation time); every other byte comes from the code under test.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from watcher.config import Settings
from watcher.reconcile import reconcile
from watcher.reports.files import write_html, write_reports
from watcher.store import Store

ROOT = Path(__file__).resolve().parents[2]
EXPECTED = Path(__file__).parent / "fixtures" / "examples"
FORMATS = ("csv", "json", "markdown")
FIXED_NOW = "2026-01-02T03:04:05.000000Z"
FIXED_MTIME_NS = 1_700_000_000_000_000_000


def copy_examples(inbox: Path) -> None:
    """The bundled examples, with a fixed mtime."""
    inbox.mkdir(parents=True)
    for example in sorted((ROOT / "examples").glob("*.json")):
        shutil.copyfile(example, inbox / example.name)
        os.utime(inbox / example.name, ns=(FIXED_MTIME_NS, FIXED_MTIME_NS))


def render(work: Path, patch: pytest.MonkeyPatch, fill: Callable[[Path], None] = copy_examples) -> dict[str, bytes]:
    """Scan a folder ``fill`` made (the examples by default) with the default settings and the
    clock fixed, and return every report file."""
    inbox = work / "inbox"
    fill(inbox)
    patch.setattr("watcher.mirror.now_iso", lambda at=None: FIXED_NOW)
    patch.setattr("watcher.reports.files.now_iso", lambda at=None: FIXED_NOW)
    settings = Settings.model_validate({"watch_dir": inbox, "db_path": work / "var" / "watcher.db", "workers": 1})
    store = Store.from_settings(settings)
    try:
        reconcile(store, settings)
        with store.snapshot():
            written = write_reports(store.report_rows, settings.report_dir, FORMATS)
        written.append(write_html(store, settings))
    finally:
        store.close()
    return {path.name: path.read_bytes() for path in written}


def test_every_report_file_is_unchanged_on_the_examples(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rendered = render(tmp_path, monkeypatch)
    expected = {path.name: path.read_bytes() for path in EXPECTED.iterdir()}
    assert sorted(rendered) == sorted(expected) == ["report.csv", "report.html", "report.json", "report.md"]
    for name, content in expected.items():
        assert rendered[name] == content, name


if __name__ == "__main__":  # writes the expected files: run on the code they must stay equal to
    import tempfile

    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as mp:
        for name, content in render(Path(tmp), mp).items():
            (Path(sys.argv[1]) / name).write_bytes(content)
