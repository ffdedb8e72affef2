"""Several targets on the report page: every target a line on the chart, in a real Chromium; and
the page of a single target is the script it always was."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from testing.cdp import CHROMIUM, Browser
from testing.helpers import doc, write
from watcher.config import Settings
from watcher.reconcile import scan
from watcher.reports.page import _asset, page_script


def test_the_script_gains_the_lines_only_with_extra_targets() -> None:
    assert page_script(()) == _asset("report.js")
    script = page_script((0.8,))
    assert len(script) == len(_asset("report.js")) + len(_asset("report-targets.js"))
    assert script.count("D.extraTargets") == 1


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (.ci/run installs it)")
def test_every_target_is_a_line_on_the_chart(tmp_path: Path) -> None:
    values: dict[str, Any] = {"watch_dir": tmp_path / "inbox", "db_path": tmp_path / "var" / "watcher.db"}
    settings = Settings(**values, workers=1, extra_targets=(0.5, 0.95))
    write(settings.watch_dir / "a.json", doc())
    scan(settings)
    with Browser(width=1400, height=1000) as b:
        b.open((settings.report_dir / "report.html").as_uri())
        b.click("#rows .row:nth-child(1) .id")
        b.wait_for("document.getElementById('detail').open")
        labels = b.eval("[...document.querySelectorAll('#chart text.tlabel')].map(e => e.textContent)")
        assert sorted(labels) == ["target recall 0.5", "target recall 0.85", "target recall 0.95"]
        ys = b.eval("[...document.querySelectorAll('#chart line.tline')].map(e => +e.getAttribute('y1'))")
        assert len(ys) == 3 and ys[2] < ys[0] < ys[1]  # 0.95 above 0.85 above 0.5 (y points down)
        assert b.errors() == []
