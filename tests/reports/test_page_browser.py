"""The report page driven in a real headless Chromium (Debian's ``chromium``, over the DevTools
protocol on a pipe: testing/cdp.py): details by mouse and by keyboard with the hovered point read
off the page, sorting by instant, filters from the address, comparing models, no console errors,
and 100,000 models all reachable. Screenshots go to test-artifacts/."""

from __future__ import annotations

import contextlib
import io
import sqlite3
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from testing.cdp import CHROMIUM, Browser
from testing.helpers import doc, write
from testing.models import report_rows
from watcher.config import Settings
from watcher.reconcile import scan
from watcher.reports.page import columns_from_rows, render_html

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (.ci/run installs it)"),
]

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
ISSUERS = ("ana@example.com", "bob@example.com", "a+ml@example.com")
# Text order and instant order differ: 08:30+02:00 is 06:30 UTC, before 07:00Z.
DATES = (
    "2024-05-02T07:00:00Z",
    "2024-05-02T08:30:00+02:00",
    "2024-05-02T06:45:00.5-00:30",
    "2024-05-01T23:59:59.999999Z",
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with Browser(width=1400, height=1000) as b:
        yield b


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A scanned folder of 30 models (one superseded file, one rewritten file, a rejected file
    named with markup); the page and the database."""
    root = tmp_path_factory.mktemp("page")
    values: dict[str, Any] = {"watch_dir": root / "inbox", "db_path": root / "var" / "watcher.db", "workers": 1}
    settings = Settings(**values)
    for i in range(30):
        recalls = [1.0, 0.95, 0.9 - i / 100, 0.5, 0.0] if i % 7 else [0.6, 0.5, 0.4, 0.3, 0.1]
        write(settings.watch_dir / f"run{i % 2}" / f"m{i:02}.json",
              doc(model_id=f"00000000-0000-4000-8000-{i:012d}", issuer=ISSUERS[i % 3], recall_arr=recalls,
                  experiment_date=DATES[i % 4], threshold_arr=[0.0, 0.2, 0.45 + i / 100, 0.8, 1.0]))  # fmt: skip
    write(settings.watch_dir / "old" / "m03.json", doc(model_id=f"00000000-0000-4000-8000-{3:012d}",
                                                       experiment_date="2023-01-01T00:00:00Z"))  # fmt: skip
    write(settings.watch_dir / "</script><img src=x onerror=alert(1)>.json", "{")
    scan(settings)
    return settings.report_dir / "report.html", settings.db_path


def stored(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return conn.execute(sql, args).fetchall()


def visible_ids(b: Browser) -> list[str]:
    return list(b.eval("[...document.querySelectorAll('#rows .row:not([hidden]) .id')].map(e => e.textContent)"))


def readout(b: Browser) -> str:
    return str(b.eval("document.getElementById('readout').textContent"))


def hover_drawn_point(b: Browser, k: int) -> None:
    """Move the mouse onto the k-th drawn point of the detail's main curve."""
    x, y = b.eval(f"""(() => {{
        const line = document.querySelector('#chart polyline.series'), pt = line.points.getItem({k});
        const m = line.getScreenCTM(); return [pt.x * m.a + m.e, pt.y * m.d + m.f]; }})()""")
    b.mouse(x, y)


def expected_point(db: Path, model: str, k: int) -> tuple[str, str]:
    """The k-th drawn point of a model's report row, from the stored curve, as the page words it."""
    ((curve,),) = stored(db, "SELECT r.curve FROM report v JOIN results r USING (path) WHERE v.model_id = ?", model)
    return f"{curve[2 * k] / 255:.3f}", f"{1 - curve[2 * k + 1] / 255:.3f}"


def test_detail_by_click_reads_the_hovered_point(browser: Browser, page: tuple[Path, Path]) -> None:
    html, db = page
    b = browser
    b.open(html.as_uri())
    assert b.eval("document.getElementById('shown').textContent") == "30 of 30 shown"
    ARTIFACTS.mkdir(exist_ok=True)
    b.screenshot(ARTIFACTS / "report-table.png")
    b.click("#rows .row:nth-child(4) .id")  # the fourth model by model_id: ...03, with a superseded file
    b.wait_for("document.getElementById('detail').open")
    model = "00000000-0000-4000-8000-000000000003"
    assert b.eval("document.getElementById('dtitle').textContent") == f"model {model}"
    b.wait_for(f"location.hash === '#open={model}'")  # written a moment after the change
    hover_drawn_point(b, 3)
    t, r = expected_point(db, model, 3)
    assert f"threshold {t}, recall {r}" in readout(b)
    ((thr, rec),) = stored(db, "SELECT optimal_threshold, closest_recall_value FROM report WHERE model_id = ?", model)
    b.mouse(*b.center("#chart circle.chosen"))
    assert readout(b).endswith(f"chosen point: threshold {thr:.4f}, recall {rec:.4f}")
    # The other experiment (the superseded file) is listed with its point and overlaid.
    others = b.eval("document.getElementById('dothers').textContent")
    assert "old/m03.json" in others and "2023-01-01T00:00:00Z" in others
    assert b.eval("document.querySelectorAll('#chart polyline.series').length") == 2
    b.screenshot(ARTIFACTS / "report-detail.png")
    b.click("#dothers input[type=checkbox]")  # overlay off
    assert b.eval("document.querySelectorAll('#chart polyline.series').length") == 1
    b.key("Escape")
    b.wait_for("!document.getElementById('detail').open && location.hash === ''")
    assert b.errors() == []


def test_detail_by_keyboard(browser: Browser, page: tuple[Path, Path]) -> None:
    html, db = page
    b = browser
    b.open(html.as_uri())
    b.eval("document.getElementById('viewport').focus()")
    for key in ("ArrowDown", "ArrowDown", "ArrowUp", "Enter"):  # to the second row, open it
        b.key(key)
    b.wait_for("document.getElementById('detail').open")
    model = "00000000-0000-4000-8000-000000000001"
    assert b.eval("document.getElementById('dtitle').textContent") == f"model {model}"
    assert b.eval("document.activeElement.id") == "chart"
    b.key("ArrowRight")
    b.key("ArrowRight")  # the second drawn point
    t, r = expected_point(db, model, 1)
    assert f"threshold {t}, recall {r} (drawn point 2 of" in readout(b)
    b.key("Escape")
    b.wait_for("!document.getElementById('detail').open")
    assert b.eval("document.activeElement.id") == "viewport"
    assert b.errors() == []


def test_sort_by_date_follows_the_instant(browser: Browser, page: tuple[Path, Path]) -> None:
    html, db = page
    b = browser
    b.open(html.as_uri())
    b.click(".head button[data-key=experiment_date]")
    ids = b.eval("report.ids(0, 30)")
    dates = dict(stored(db, "SELECT model_id, experiment_date FROM report"))
    instants = [datetime.fromisoformat(dates[m].upper()) for m in ids]
    assert instants == sorted(instants) and len(ids) == 30
    assert [dates[m] for m in visible_ids(b)[:3]] == [DATES[3]] * 3  # the earliest instant first
    b.click(".head button[data-key=experiment_date]")  # descending
    b.wait_for("location.hash === '#sort=experiment_date&dir=desc'")
    down = [datetime.fromisoformat(dates[m].upper()) for m in b.eval("report.ids(0, 30)")]
    assert down == sorted(down, reverse=True)
    seen = list(dict.fromkeys(dates[m] for m in b.eval("report.ids(0, 30)")))
    # 06:45-00:30 is 07:15Z; 07:00Z comes after 08:30+02:00 (06:30Z) though it sorts before it as text.
    assert seen == [DATES[2], DATES[0], DATES[1], DATES[3]]
    assert b.errors() == []


@pytest.mark.parametrize("fragment", ["issuer=a+ml@example.com", "issuer=a%2Bml%40example.com"])
def test_filter_from_the_address_keeps_plus(browser: Browser, page: tuple[Path, Path], fragment: str) -> None:
    html, db = page
    b = browser
    b.open(f"{html.as_uri()}#{fragment}&sort=optimal_threshold&dir=desc")
    ids = b.eval("report.ids(0, 100)")
    want = {m for (m,) in stored(db, "SELECT model_id FROM report WHERE issuer = 'a+ml@example.com'")}
    assert set(ids) == want and len(ids) == 10
    assert b.eval("document.getElementById('issuer').value") == "a+ml@example.com"
    assert b.eval("document.getElementById('shown').textContent") == "10 of 30 shown"
    thresholds = [float(t) for t in b.eval("[...document.querySelectorAll('#rows .row:not([hidden]) .num')]"
                                           ".filter((e, i) => i % 2 === 0).map(e => e.textContent)")]  # fmt: skip
    assert thresholds == sorted(thresholds, reverse=True)
    # Written back so that the link can be shared: '+' as %2B, which reads back the same.
    b.wait_for("location.hash === '#issuer=a%2Bml@example.com&sort=optimal_threshold&dir=desc'")
    b.click("#missed")
    b.wait_for("location.hash.startsWith('#issuer=a%2Bml@example.com&missed=1')")
    assert b.errors() == []


def test_select_two_models_and_overlay_them(browser: Browser, page: tuple[Path, Path]) -> None:
    html, _ = page
    b = browser
    b.open(html.as_uri())
    assert b.eval("document.getElementById('compare').disabled") is True
    b.click("#rows .row:nth-child(1) input[type=checkbox]")
    b.eval("document.getElementById('viewport').focus()")
    b.key("ArrowDown")
    b.key(" ")  # Space selects the second row
    assert b.eval("document.getElementById('compare').disabled") is False
    b.click("#compare")
    b.wait_for("document.getElementById('detail').open")
    assert b.eval("document.querySelectorAll('#chart polyline.series').length") == 2
    legend = b.eval("document.getElementById('legend').textContent")
    assert "00000000-0000-4000-8000-000000000000" in legend and "00000000-0000-4000-8000-000000000001" in legend
    b.wait_for("location.hash.endsWith('cmp=00000000-0000-4000-8000-000000000000,"
               "00000000-0000-4000-8000-000000000001&open=compare')")  # fmt: skip
    b.mouse(*b.center("#chart circle.chosen"))
    assert "chosen point: threshold" in readout(b)
    b.screenshot(ARTIFACTS / "report-compare.png")
    assert b.errors() == []


def curve_bands(b: Browser) -> list[int]:
    """Per row band of the sparkline canvas, how many of its pixels are drawn."""
    bands = b.eval("""(() => {
        const c = document.querySelector('#sizer canvas.sparks'), x = c.getContext('2d');
        const band = 30 * window.devicePixelRatio, out = [];
        for (let k = 0; k < Math.round(c.height / band); k++) {
            const px = x.getImageData(0, k * band, c.width, band).data;
            let n = 0; for (let i = 3; i < px.length; i += 4) { if (px[i]) { n++; } }
            out.push(n);
        }
        return out; })()""")
    return list(bands)


def test_rows_and_curves_follow_a_filter_and_its_clearing(browser: Browser, page: tuple[Path, Path]) -> None:
    html, _ = page
    b = browser
    b.open(html.as_uri())
    first, bands = visible_ids(b), curve_bands(b)
    assert len(first) >= 20 and len(bands) == len(first)  # one curve per row on screen, none beyond
    assert all(n > 0 for n in bands)
    model = "00000000-0000-4000-8000-000000000005"
    b.click("#search")
    b.type_text(model)
    b.wait_for("document.getElementById('shown').textContent === '1 of 30 shown'")
    assert visible_ids(b) == [model] and len(curve_bands(b)) == 1
    # The viewport shrank to the one row; the list's scroll height is the rows', nothing drawn past them.
    assert b.eval("document.getElementById('viewport').scrollHeight") <= 120
    b.eval("(() => { const s = document.getElementById('search'); s.value = '';"
           " s.dispatchEvent(new Event('input')); })()")  # fmt: skip
    b.wait_for("document.getElementById('shown').textContent === '30 of 30 shown'")
    b.eval("new Promise(r => requestAnimationFrame(() => setTimeout(r, 0)))")  # the frame after the change
    assert visible_ids(b) == first  # the whole first screen again, not the one row's worth
    bands = curve_bands(b)
    assert len(bands) == len(first) and all(n > 0 for n in bands)
    assert b.errors() == []


def test_rejections_are_listed_with_reasons_and_searchable(browser: Browser, page: tuple[Path, Path]) -> None:
    html, _ = page
    b = browser
    b.open(html.as_uri())
    text = b.eval("document.getElementById('rejections').textContent")
    assert "</script><img src=x onerror=alert(1)>.json" in text and "not valid JSON" in text
    assert b.eval("document.querySelectorAll('img').length") == 0  # shown as text, never as markup
    b.click("#rejsearch")
    b.type_text("nothing like this")
    assert b.eval("document.getElementById('rejshown').textContent") == "0 match"
    assert b.errors() == []


def test_100000_models_all_reachable_and_counted(browser: Browser, tmp_path: Path) -> None:
    n = 100_000
    rows = sorted(r[:10] for r in report_rows(n, superseded=0))
    missed = sum(1 for r in rows if not r[7])
    out = io.StringIO()
    render_html(columns_from_rows(rows), [], out, "2026-01-01T00:00:00Z")
    html = tmp_path / "report.html"
    html.write_text(out.getvalue())
    b = browser
    b.open(html.as_uri(), timeout=120)
    meta = b.eval("document.getElementById('meta').textContent")
    assert f"{n:,} models" in meta and f"{missed:,} below target" in meta
    everyone = {r[0] for r in rows}
    for key, value in (("optimal_threshold", 2), ("issuer", 1)):
        b.click(f".head button[data-key={key}]")
        ids = b.eval(f"report.ids(0, {n})")
        assert len(ids) == n and set(ids) == everyone
        by_id = {r[0]: r[value] for r in rows}
        values = [by_id[m] for m in ids]
        assert values == sorted(values)
    b.click(".head button[data-key=experiment_date]")
    ids = b.eval(f"report.ids(0, {n})")
    dates = {r[0]: datetime.fromisoformat(r[4].upper()) for r in rows}
    assert set(ids) == everyone and [dates[m] for m in ids] == sorted(dates[m] for m in ids)
    b.eval("document.getElementById('viewport').focus()")
    b.key("End")  # scrolled to the last of all rows
    assert visible_ids(b)[-1] == ids[-1]
    counts = 0
    for digit in "0123456789abcdef":  # every model through the prefix filter
        b.eval(f"(() => {{ const s = document.getElementById('search'); s.value = '{digit}';"
               " s.dispatchEvent(new Event('input')); })()")  # fmt: skip
        shown = b.eval("report.count()")
        assert shown == sum(1 for m in everyone if m.startswith(digit))
        counts += shown
    assert counts == n
    b.screenshot(ARTIFACTS / "report-100000.png")
    assert b.errors() == []


def test_an_empty_page_opens_without_errors(browser: Browser, tmp_path: Path) -> None:
    html = tmp_path / "report.html"
    out = io.StringIO()
    render_html(columns_from_rows([]), [], out, "2026-01-01T00:00:00Z")
    html.write_text(out.getvalue())
    browser.open(html.as_uri())
    assert browser.eval("document.getElementById('shown').textContent") == "0 of 0 shown"
    browser.eval("document.getElementById('viewport').focus()")
    browser.key("Enter")  # nothing to open
    assert browser.eval("document.getElementById('detail').open") is False
    assert browser.errors() == []
