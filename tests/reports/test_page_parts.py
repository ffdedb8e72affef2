"""A page in parts (more models than ``html_part_models``; here a tiny part size) in a real headless
Chromium from ``file://``: the first part's models on the first screen with "n of N models
loaded" while the other parts are held back, sorting and filtering over what is loaded, then over
every model once the parts are in; an address naming a model of a later part; and the part files'
generations: a page names only parts of its own write, the older ones go after the rename, and a
page whose parts are gone or of another write says so instead of mixing them; a failed write
leaves the old page and its parts; and a real daemon writing its page in parts after each change
(slow). Below the part size the page is one file, with no part files (``test_unchanged*`` pin its
bytes)."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import sqlite3
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from testing.cdp import CHROMIUM, Browser
from testing.daemon import Daemon
from testing.helpers import doc, wait_until, write
from testing.models import database, report_rows
from watcher.config import Settings
from watcher.reports import files
from watcher.reports.files import write_html_file
from watcher.reports.page import PART_FOLDER, PartFiles, columns_from_rows, render_html

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (.ci/run installs it)"),
]

MODELS = 300
PART = 40  # models a part: the page's own and 7 part files (8 parts in all)

#: Run in the page before its own scripts: the parts' calls are held in ``heldParts`` until the
#: test lets ``releaseParts(k)`` pass the next k to the page's own ``watcherPart``.
HOLD = """(() => {
  let real = null; window.heldParts = [];
  Object.defineProperty(window, 'watcherPart', { configurable: true,
    set(f) { real = f; }, get() { return q => { window.heldParts.push(q); }; } });
  window.releaseParts = k => { const out = window.heldParts.splice(0, k); out.forEach(real); return out.length; };
})()"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with Browser(width=1400, height=1000) as b:
        yield b


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A database of MODELS generated models (a few with a superseded file); parts of PART."""
    return database(tmp_path_factory.mktemp("parts"), MODELS).model_copy(update={"html_part_models": PART})


def report(settings: Settings) -> list[tuple[Any, ...]]:
    """The report view's rows: model_id, threshold, experiment_date, path, target_met."""
    sql = "SELECT model_id, optimal_threshold, experiment_date, path, target_met FROM report ORDER BY model_id"
    with contextlib.closing(sqlite3.connect(settings.db_path)) as conn:
        return conn.execute(sql).fetchall()


def page_data(html: Path) -> dict[str, Any]:
    text = html.read_text()
    start = text.index('<script type="application/json" id="data">') + len('<script type="application/json" id="data">')
    return dict(json.loads(text[start : text.index("</script>", start)]))


def shown(b: Browser) -> str:
    return str(b.eval("document.getElementById('shown').textContent"))


def sort_by(b: Browser, key: str) -> list[str]:
    b.click(f".head button[data-key={key}]")
    return list(b.eval("report.ids(0, 1e9)"))


@pytest.fixture
def held(browser: Browser) -> Iterator[Browser]:
    """The browser with the parts held back on every page it opens."""
    script = browser.call("Page.addScriptToEvaluateOnNewDocument", source=HOLD)["identifier"]
    try:
        yield browser
    finally:
        browser.call("Page.removeScriptToEvaluateOnNewDocument", identifier=script)


def test_parts_load_after_the_first_screen_and_then_every_model_works(held: Browser, settings: Settings) -> None:
    html = write_html_file(settings)
    rows = report(settings)
    everyone = [r[0] for r in rows]
    files = sorted(p.name for p in (settings.report_dir / PART_FOLDER).iterdir())
    data = page_data(html)
    assert [f"{PART_FOLDER}/{f}" for f in files] == data["parts"] and len(files) == 7
    assert all(f.startswith(data["gen"] + "-") for f in files)
    assert data["models"] == PART and data["total"] == MODELS
    b = held
    b.open(html.as_uri())
    b.wait_for("window.heldParts.length === 7")  # every part file ran, none passed on yet
    # The first screen: the first part's models, and the page says how many are in.
    assert shown(b) == f"{PART} of {PART} shown \u00b7 {PART} of {MODELS} models loaded"
    assert b.eval("report.ids(0, 1e9)") == everyone[:PART]
    by_threshold = sort_by(b, "optimal_threshold")  # sorting works on what is loaded
    thr = {r[0]: r[1] for r in rows}
    assert sorted(by_threshold) == everyone[:PART]
    assert [thr[m] for m in by_threshold] == sorted(thr[m] for m in by_threshold)
    assert b.eval("document.body.dataset.parts") is None
    b.eval("releaseParts(1)")
    b.wait_for(f"document.getElementById('shown').textContent.endsWith('{2 * PART} of {MODELS} models loaded')")
    assert sorted(b.eval("report.ids(0, 1e9)")) == everyone[: 2 * PART]  # still sorted by threshold, over both
    ids = b.eval("report.ids(0, 1e9)")
    assert [thr[m] for m in ids] == sorted(thr[m] for m in ids)
    b.eval("releaseParts(100)")
    b.wait_for("document.body.dataset.parts === 'all'")
    assert shown(b) == f"{MODELS} of {MODELS} shown"
    # Every model, and each sort over all of them.
    ids = b.eval("report.ids(0, 1e9)")
    assert sorted(ids) == everyone and [thr[m] for m in ids] == sorted(thr[m] for m in ids)
    assert sort_by(b, "model_id") == everyone
    instant = {r[0]: (datetime.fromisoformat(r[2].upper()), r[3]) for r in rows}
    assert sort_by(b, "experiment_date") == sorted(everyone, key=lambda m: (instant[m], m))
    where = {r[0]: r[3] for r in rows}
    assert sort_by(b, "path") == sorted(everyone, key=lambda m: (where[m], m))
    missed = sum(1 for r in rows if not r[4])
    meta = b.eval("document.getElementById('meta').textContent")
    assert f"{MODELS} models" in meta and f"{missed} below target" in meta
    # Filters over every part: each first digit of the model_ids, and an issuer.
    sort_by(b, "model_id")
    counts = 0
    for digit in "0123456789abcdef":
        b.eval(f"(() => {{ const s = document.getElementById('search'); s.value = '{digit}';"
               " s.dispatchEvent(new Event('input')); })()")  # fmt: skip
        got = b.eval("report.ids(0, 1e9)")
        assert got == [m for m in everyone if m.startswith(digit)]
        counts += len(got)
    assert counts == MODELS
    b.eval("(() => { const s = document.getElementById('search'); s.value = '';"
           " s.dispatchEvent(new Event('input')); })()")  # fmt: skip
    b.eval("(() => { const s = document.getElementById('issuer'); s.value = 'user5@example.com';"
           " s.dispatchEvent(new Event('change')); })()")  # fmt: skip
    with contextlib.closing(sqlite3.connect(settings.db_path)) as conn:
        want = [m for (m,) in conn.execute("SELECT model_id FROM report WHERE issuer = 'user5@example.com' ORDER BY 1")]
    assert b.eval("report.ids(0, 1e9)") == want and len(want) > PART // 37
    # The last model's detail (the last part), with its curve drawn from that part's bytes.
    b.eval("(() => { const s = document.getElementById('issuer'); s.value = '';"
           " s.dispatchEvent(new Event('change')); })()")  # fmt: skip
    b.eval("document.getElementById('viewport').focus()")
    b.key("End")
    b.key("Enter")
    b.wait_for("document.getElementById('detail').open")
    assert b.eval("document.getElementById('dtitle').textContent") == f"model {everyone[-1]}"
    assert b.eval("document.querySelector('#chart polyline.series').points.length") > 2
    assert where[everyone[-1]] in b.eval("document.getElementById('dfacts').textContent")
    b.key("Escape")
    assert b.errors() == []


def test_a_superseded_file_and_an_address_in_a_later_part(browser: Browser, settings: Settings) -> None:
    html = write_html_file(settings)
    with contextlib.closing(sqlite3.connect(settings.db_path)) as conn:
        model, old = conn.execute(
            "SELECT r.model_id, r.path FROM results r JOIN report v USING (model_id) WHERE r.path != v.path"
            " ORDER BY r.model_id DESC LIMIT 1"
        ).fetchone()
    everyone = [r[0] for r in report(settings)]
    assert everyone.index(model) >= PART  # in a part file, not the page
    b = browser
    b.open(f"{html.as_uri()}#open={model}")
    b.wait_for("document.body.dataset.parts === 'all'")
    b.wait_for(f"document.getElementById('dtitle').textContent === 'model {model}'")
    assert b.eval("document.getElementById('detail').open") is True
    assert old in b.eval("document.getElementById('dothers').textContent")  # its other file, overlaid
    assert b.eval("document.querySelectorAll('#chart polyline.series').length") == 2
    b.key("Escape")
    assert b.errors() == []


def test_each_write_is_a_generation_and_a_page_never_mixes_two(browser: Browser, settings: Settings) -> None:
    folder = settings.report_dir / PART_FOLDER
    html = write_html_file(settings)
    first = page_data(html)
    saved = html.with_name("saved.html")
    shutil.copyfile(html, saved)  # a page opened before the next writes
    write_html_file(settings)
    second = page_data(html)
    assert second["gen"] > first["gen"]
    gens = {p.name.split("-")[0] for p in folder.iterdir()}
    assert gens == {first["gen"], second["gen"]}  # the previous one kept for a page still loading it
    # A part of another write under the old page's name: refused, nothing of it mixed in.
    stray = folder / Path(first["parts"][2]).name
    stray.write_text((folder / Path(second["parts"][2]).name).read_text())
    b = browser
    b.open(saved.as_uri())
    b.wait_for("document.body.dataset.parts === 'failed'")
    note = b.eval("document.getElementById('note').textContent")
    assert note.startswith("The report was rewritten while this page loaded its parts")
    assert f"{3 * PART} of {MODELS} models are shown; reload the page" in note  # the first three parts only
    assert b.eval("report.count()") == 3 * PART
    write_html_file(settings)
    third = page_data(html)
    assert {p.name.split("-")[0] for p in folder.iterdir()} == {second["gen"], third["gen"]}
    assert all((settings.report_dir / name).exists() for name in third["parts"])
    b.open(saved.as_uri())  # its parts are gone
    b.wait_for("document.body.dataset.parts === 'failed'")
    assert re.match(r"A part of this page \(report-parts/\w+-0001\.js\) is missing",
                    b.eval("document.getElementById('note').textContent"))  # fmt: skip
    assert b.eval("report.count()") == PART
    b.open(html.as_uri())  # the page in place is whole
    b.wait_for("document.body.dataset.parts === 'all'")
    assert b.eval("report.count()") == MODELS
    errors = b.errors()  # the missing parts' loads, the one error the browser logs here
    assert errors and all(e == "Failed to load resource: net::ERR_FILE_NOT_FOUND" for e in errors), errors
    b.events.clear()


def test_a_page_of_few_models_is_one_file(settings: Settings) -> None:
    shutil.rmtree(settings.report_dir / PART_FOLDER, ignore_errors=True)
    html = write_html_file(settings.model_copy(update={"html_part_models": MODELS}))  # as many as it holds
    data = page_data(html)
    assert "parts" not in data and "gen" not in data and data["models"] == MODELS
    assert not (settings.report_dir / PART_FOLDER).exists()
    assert "watcherPart" not in html.read_text()


def test_regression_marks_and_earlier_outcomes_follow_their_rows(browser: Browser, tmp_path: Path) -> None:
    rows = [r[:10] for r in report_rows(MODELS, seed=3, superseded=0)]  # in no order, as a table's
    cols = columns_from_rows(rows)
    cols["order"] = sorted(range(MODELS), key=lambda i: rows[i][0])  # the positions by model_id
    by_id = cols["order"]
    flagged = [by_id[7], by_id[PART + 3], by_id[-1]]  # in the page, in a part file, in the last part file
    cols["regressed"] = [[i, rows[i][0], rows[i][5], f"recall fell {i}"] for i in flagged]

    def write(name: str, text: str) -> None:
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)

    html = tmp_path / "report.html"
    with html.open("w") as fh:
        earlier = [(rows[flagged[2]][0], "2025-01-01T00:00:00.000000Z", "gone/m.json", "rejected", "ab" * 32)]
        render_html(cols, [], fh, "2026-01-01T00:00:00Z", earlier=earlier, part_files=PartFiles("0001", write, PART))
    b = browser
    b.open(html.as_uri())
    b.wait_for("document.body.dataset.parts === 'all'")
    assert b.eval("document.getElementById('regressedcount').textContent") == "3 regressed"
    assert f"{MODELS} models" in b.eval("document.getElementById('meta').textContent")
    for i in flagged:
        b.eval(f"(() => {{ const s = document.getElementById('search'); s.value = '{rows[i][0]}';"
               " s.dispatchEvent(new Event('input')); })()")  # fmt: skip
        b.wait_for("document.querySelector('#rows .row:not([hidden])').classList.contains('regressed')")
        title = b.eval("document.querySelector('#rows .row:not([hidden]) .flag').title")
        assert title == f"regressed: recall fell {i}"
    b.click("#rows .row:not([hidden]) .id")  # the last one's detail lists its earlier outcome
    b.wait_for("document.getElementById('detail').open")
    others = b.eval("document.getElementById('dothers').textContent")
    assert "gone/m.json" in others and "abababababab" in others
    b.key("Escape")
    assert b.errors() == []


def test_a_failed_write_leaves_the_page_and_its_parts(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = settings.report_dir / PART_FOLDER
    html = write_html_file(settings)
    before = {p.name: p.read_bytes() for p in [html, *folder.iterdir()]}
    real, written = files.write_atomic, list[Path]()

    def failing(path: Path, produce: Any, mode: int = 0o640) -> None:
        if len(written) == 4:  # the page (its temp file, open meanwhile), then three parts
            raise OSError(28, "No space left on device")
        written.append(path)
        real(path, produce, mode)

    monkeypatch.setattr(files, "write_atomic", failing)
    with pytest.raises(OSError, match="No space left"):
        write_html_file(settings)
    assert written[0] == html and [p.parent for p in written[1:]] == [folder] * 3
    assert {p.name: p.read_bytes() for p in [html, *folder.iterdir()]} == before  # and nothing of them left


@pytest.mark.slow  # a real daemon process
def test_the_daemon_writes_its_page_in_parts_and_each_change_anew(browser: Browser, tmp_path: Path) -> None:
    d = Daemon(tmp_path, env={"WATCHER_HTML_PART_MODELS": "4"})
    html = d.root / "var" / "reports" / "report.html"
    folder = html.parent / PART_FOLDER

    def page_of(total: int) -> dict[str, Any] | None:
        data = page_data(html) if html.exists() else {}
        return data if data.get("total") == total else None

    def model(i: int) -> str:
        return f"00000000-0000-4000-8000-{i:012d}"

    try:
        d.start()
        for i in range(10):
            write(d.inbox / f"m{i}.json", doc(model_id=model(i)))
        first = wait_until(lambda: page_of(10), what="a page of 10 models")
        assert first["models"] == 4 and [Path(p).name for p in first["parts"]] == [
            f"{first['gen']}-0001.js", f"{first['gen']}-0002.js"]  # fmt: skip
        write(d.inbox / "m10.json", doc(model_id=model(10)))
        second = wait_until(lambda: page_of(11), what="a page of 11 models")
        assert second["gen"] > first["gen"] and all((html.parent / p).exists() for p in second["parts"])
        browser.open(html.as_uri())
        browser.wait_for("document.body.dataset.parts === 'all'")
        assert browser.eval("report.ids(0, 100)") == [model(i) for i in range(11)]
        assert browser.errors() == []
    finally:
        assert d.stop() == 0
    gens = {p.name.split("-")[0] for p in folder.iterdir()}
    assert second["gen"] in gens and len(gens) <= 2  # the page's own, and at most the one before it
