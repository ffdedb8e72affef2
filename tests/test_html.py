"""The HTML report: rendered by Python (structure), and by a real headless Chromium (JS, no
console errors, rows, filters, sorting), with a screenshot saved to test-artifacts/."""

from __future__ import annotations

import contextlib
import io
import re
import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import doc, write
from watcher.config import Settings
from watcher.html import render_html, sparkline
from watcher.reconcile import scan
from watcher.scoring import curve_bytes
from watcher.store import Store

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def report(make_settings: Any) -> Path:
    settings: Settings = make_settings()
    for i in range(30):
        issuer = ("ana@example.com", "bob@example.com", "chen@example.com")[i % 3]
        recalls = [1.0, 0.95, 0.9 - i / 100, 0.5, 0.0] if i % 7 else [0.6, 0.5, 0.4, 0.3, 0.1]  # some miss 0.85
        write(settings.watch_dir / f"m{i:02}.json", doc(model_id=f"00000000-0000-4000-8000-{i:012d}", issuer=issuer,
                                                       recall_arr=recalls))  # fmt: skip
    write(settings.watch_dir / "<img src=x onerror=alert(1)>.json", "{")  # markup in a file name
    scan(settings)
    return settings.reports / "report.html"


def test_page_is_self_contained_and_escapes_content(report: Path) -> None:
    html = report.read_text()
    assert html.startswith("<!doctype html>")
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # nothing fetched from anywhere
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;.json" in html
    assert html.count('role="img"') == 30 and html.count('class="curve"') == 30 and html.count('class="chosen"') == 30
    with contextlib.closing(sqlite3.connect(report.parent.parent / "watcher.db")) as conn:
        (missed,) = conn.execute("SELECT count(*) FROM results WHERE target_met = 0").fetchone()
    assert 0 < missed < 30 and html.count('class="miss"') == missed
    assert f"{missed} below target" in html
    assert "Rejected files (1)" in html


def test_curve_marks_target_and_chosen_point() -> None:
    curve = curve_bytes((0.0, 0.5, 1.0), (1.0, 0.85, 0.0))
    assert curve == bytes([0, 0, 128, 38, 255, 255])  # x, y of each point, in 0..255 with y down
    svg = sparkline(curve, 0.85, (0.5, 0.85))
    assert '<polyline class="curve" points="0,0,128,38,255,255"/>' in svg
    assert 'viewBox="0 0 255 255" preserveAspectRatio="none"' in svg
    assert '<circle class="chosen" cx="60.0" cy="7.4"' in svg
    assert '<line class="target" x1="0" x2="120" y1="7.4" y2="7.4"/>' in svg


def test_page_caps_models_and_says_so() -> None:
    out = io.StringIO()
    render_html([], [], out, "now", omitted=90_000)
    assert "90000 older models not shown here" in out.getvalue()


def test_large_report_stays_small_per_model(make_settings: Any) -> None:
    settings: Settings = make_settings()
    n = 5000
    write(
        settings.watch_dir / "big.json",
        doc(threshold_arr=[i / n for i in range(n)], recall_arr=[1 - i / n for i in range(n)]),
    )
    scan(settings)
    size = (settings.reports / "report.html").stat().st_size
    with Store.from_settings(settings) as store:
        assert len(next(store.report_details())[-1]) in (64, 66)  # the drawn curve is downsampled...
        assert next(store.report_rows())[3] == pytest.approx(0.85, abs=1 / n)  # ...the scoring is not
    assert size < 20_000


def chromium(*args: str, user_dir: Path) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={user_dir}", "--enable-logging=stderr", "--v=0"]  # fmt: skip
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120)


def console_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (.ci/run installs it)")
def test_real_browser_renders_rows_filters_and_sorts(report: Path, tmp_path: Path) -> None:
    url = report.as_uri()
    dom = chromium("--dump-dom", url, user_dir=tmp_path / "u1")
    assert console_errors(dom.stderr) == []
    assert 'data-ready="1"' in dom.stdout  # the script ran to its end
    rows = re.findall(r'<tr( class="miss")? data-issuer="([^"]+)" data-model="([^"]+)"( hidden="")?>', dom.stdout)
    assert len(rows) == 30 and not any(r[3] for r in rows)

    filtered = chromium("--dump-dom", url + "#issuer=bob@example.com", user_dir=tmp_path / "u2")
    shown = [r for r in re.findall(r'<tr[^>]* data-issuer="([^"]+)" data-model="[^"]+"( hidden="")?>',
                                   filtered.stdout) if not r[1]]  # fmt: skip
    assert {r[0] for r in shown} == {"bob@example.com"} and len(shown) == 10
    assert '<span id="shown">10</span>' in filtered.stdout

    ordered = chromium("--dump-dom", url + "#sort=optimal_threshold&dir=desc", user_dir=tmp_path / "u3")
    values = [float(v) for v in re.findall(r'<td class="num" data-v="([0-9.e-]+)">', ordered.stdout)[::2]]
    assert values == sorted(values, reverse=True) and len(values) == 30

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    chromium(f"--screenshot={shot}", "--window-size=1400,1000", url, user_dir=tmp_path / "u4")
    assert shot.stat().st_size > 10_000
