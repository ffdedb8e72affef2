"""The report page with regression checks on, in a real headless Chromium (testing/cdp.py): a
regressed model's row is marked with its reasons however the table is sorted, the headline
counts them and a table lists them; with the checks off, the page carries none of it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testing.cdp import CHROMIUM, Browser
from testing.helpers import doc, write
from watcher.config import Settings
from watcher.reconcile import scan

REGRESSED = "00000000-0000-4000-8000-000000000007"
REASONS = "target no longer met; recall down 0.1 (0.9 -> 0.8)"


def folder(root: Path, regressions: bool) -> Path:
    """Scan 12 models, one of them with a worse second experiment; return the page."""
    values: dict[str, Any] = {"watch_dir": root / "inbox", "db_path": root / "var" / "watcher.db", "workers": 1}
    settings = Settings(**values, regressions=regressions)
    for i in range(12):
        write(settings.watch_dir / f"m{i:02}.json", doc(model_id=f"00000000-0000-4000-8000-{i:012d}",
              experiment_date="2024-05-01T00:00:00Z", recall_arr=[1.0, 0.95, 0.9, 0.5, 0.0]))  # fmt: skip
    write(settings.watch_dir / "new" / "m07.json", doc(model_id=REGRESSED, experiment_date="2024-05-02T00:00:00Z",
          recall_arr=[1.0, 0.95, 0.8, 0.5, 0.0]))  # fmt: skip
    scan(settings)
    return settings.report_dir / "report.html"


def test_without_the_checks_the_page_has_no_regression_marks(tmp_path: Path) -> None:
    html = folder(tmp_path, regressions=False).read_text()
    assert 'id="regressions"' not in html and "regressed" not in html


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with Browser(width=1400, height=900) as b:
        yield b


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (.ci/run installs it)")
def test_a_regressed_row_is_marked_with_its_reasons(browser: Browser, tmp_path: Path) -> None:
    b = browser
    b.open(folder(tmp_path, regressions=True).as_uri())
    b.wait_for("!!document.getElementById('regressedcount')")
    assert b.eval("document.getElementById('regressedcount').textContent") == "1 regressed"

    def marked() -> list[list[str]]:
        return list(
            b.eval(
                "[...document.querySelectorAll('#rows .row.regressed')].map(r =>"
                " [r.cells[0].textContent, r.cells[4].textContent, r.cells[4].title])"
            )
        )

    assert marked() == [[REGRESSED, "below target \u00b7 regressed", f"regressed: {REASONS}"]]
    # Sorted another way, the rows are filled again: the mark follows the model, not the row.
    b.click(".head button[data-key=closest_recall_value]")
    b.wait_for("document.querySelector('#rows .row .id').textContent === '" + REGRESSED + "'")
    assert marked() == [[REGRESSED, "below target \u00b7 regressed", f"regressed: {REASONS}"]]
    assert b.eval("document.querySelectorAll('#rows .row.regressed').length") == 1
    listed = b.eval("[...document.querySelectorAll('#regressed tbody td')].map(c => c.textContent)")
    assert listed == [REGRESSED, "new/m07.json", REASONS]
    assert b.errors() == []


def test_a_page_of_the_newest_models_only_marks_them_too(tmp_path: Path) -> None:
    values: dict[str, Any] = {"watch_dir": tmp_path / "inbox", "db_path": tmp_path / "var" / "watcher.db"}
    for i in range(12):
        write(values["watch_dir"] / f"m{i:02}.json", doc(model_id=f"00000000-0000-4000-8000-{i:012d}",
              experiment_date="2024-05-01T00:00:00Z", recall_arr=[1.0, 0.95, 0.9, 0.5, 0.0]))  # fmt: skip
    write(values["watch_dir"] / "new" / "m07.json", doc(model_id=REGRESSED, experiment_date="2024-05-02T00:00:00Z",
          recall_arr=[1.0, 0.95, 0.8, 0.5, 0.0]))  # fmt: skip
    scan(Settings(**values, workers=1, regressions=True, html_max_models=3))
    html = (tmp_path / "var" / "reports" / "report.html").read_text()
    marks = json.loads(html.split('<script type="application/json" id="regressions">')[1].split("</script>")[0])
    data = json.loads(html.split('<script type="application/json" id="data">')[1].split("</script>")[0])
    # The newest three: m07's new file, then m11 and m10 (a tie on the date: the greater path);
    # by model_id, m07's row is the first.
    assert data["omitted"] == 9 and data["n"] == 3
    assert marks == {"p": [0], "rows": [[REGRESSED, "new/m07.json", REASONS]]}
