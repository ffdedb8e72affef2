"""The HTML report as written by Python: self-contained, escaped, and its embedded data decodes
back to exactly what the database holds (every model, every rejection, the drawn curves, the
superseded files and earlier outcomes). The page in a real browser: tests/reports/test_page_browser.py."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from testing.helpers import doc, write
from watcher.config import Settings
from watcher.reconcile import scan
from watcher.reports.page import Plain, Raw, columns_from_rows, render_html, script_json
from watcher.store import Store

MARKUP = "</script><img src=x onerror=alert(1)>.json"  # a folder "<" holding "script><img ...>.json"


def page_data(html: str) -> dict[str, Any]:
    match = re.search(r'<script type="application/json" id="data">(.*?)</script>', html, re.S)
    assert match
    data: dict[str, Any] = json.loads(match.group(1))
    return data


def ints(text: str) -> list[int]:
    width, raw = int(text[0]), base64.b64decode(text[1:])
    return [int.from_bytes(raw[k : k + width], "little") for k in range(0, len(raw), width)]


def rows_of(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Every row of the data (report rows and superseded files), decoded as the script does."""
    n, ids = data["n"], base64.b64decode(data["idb"])
    ys, grids = base64.b64decode(data["ys"]), [base64.b64decode(g) for g in data["grids"]]
    drawn = [ord(c) - 48 for c in data["drawn"]] if isinstance(data["drawn"], str) else data["drawn"]
    grid_of, dirs, issuers = ints(data["grid"]) if data["grid"] else [], ints(data["dir"]), ints(data["iss"])
    out, at = [], 0
    for p in range(n):
        count = drawn if isinstance(drawn, int) else drawn[p]
        grid = grids[grid_of[p] if grid_of else 0]
        hexid = ids[16 * p : 16 * p + 16].hex()
        folder = data["folders"][dirs[p]]
        out.append({
            "model_id": "-".join((hexid[:8], hexid[8:12], hexid[12:16], hexid[16:20], hexid[20:])),
            "issuer": data["issuers"][issuers[p]], "threshold": data["thr"][p], "recall": data["rec"][p],
            "met": data["met"][p] == "1", "date": data["dates"][p],
            "path": folder + data["names"][p] + data["ext"],
            "curve": bytes(b for pair in zip(grid[:count], ys[at : at + count], strict=True) for b in pair),
        })  # fmt: skip
        at += count
    return out


@pytest.fixture
def report(make_settings: Any) -> Path:
    settings: Settings = make_settings()
    for i in range(30):
        issuer = ("ana@example.com", "bob@example.com", "a+ml@example.com")[i % 3]
        recalls = [1.0, 0.95, 0.9 - i / 100, 0.5, 0.0] if i % 7 else [0.6, 0.5, 0.4, 0.3, 0.1]  # some miss 0.85
        write(settings.watch_dir / f"run{i % 2}" / f"m{i:02}.json",
              doc(model_id=f"00000000-0000-4000-8000-{i:012d}", issuer=issuer, recall_arr=recalls))  # fmt: skip
    # An older experiment of model 3 (superseded), and model 4's file rewritten (an earlier outcome).
    write(settings.watch_dir / "old" / "m03.json", doc(model_id=f"00000000-0000-4000-8000-{3:012d}",
                                                       experiment_date="2023-01-01T00:00:00Z"))  # fmt: skip
    write(settings.watch_dir / MARKUP, "{")  # markup in a file name
    write(settings.watch_dir / "bad.json", doc(issuer="<b>not an address</b>"))
    scan(settings)
    write(settings.watch_dir / "run0" / "m04.json", doc(model_id=f"00000000-0000-4000-8000-{4:012d}",
                                                        recall_arr=[1.0, 0.9, 0.8, 0.2, 0.0]))  # fmt: skip
    scan(settings)
    return settings.report_dir / "report.html"


def test_page_is_self_contained_and_escapes_content(report: Path) -> None:
    html = report.read_text()
    assert html.startswith("<!doctype html>")
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # nothing fetched from anywhere
    assert not re.search(r"\bfetch\(|XMLHttpRequest|import\(", html)
    assert "<img" not in html and MARKUP not in html
    assert html.count("</script>") == 2  # the data's and the script's own ends, nothing from the data
    data = page_data(html)
    assert MARKUP in [r[0] for r in data["rejections"]]  # intact once the JSON is read


def test_data_holds_every_model_as_the_database_does(report: Path) -> None:
    data = page_data(report.read_text())
    rows = rows_of(data)
    with contextlib.closing(sqlite3.connect(report.parent.parent / "watcher.db")) as conn:
        stored = {r[0]: r[1:] for r in conn.execute(
            "SELECT path, model_id, issuer, optimal_threshold, closest_recall_value, target_met, experiment_date, curve"
            " FROM results")}  # fmt: skip
        report_paths = [r[0] for r in conn.execute("SELECT path FROM report ORDER BY model_id")]
        missed = conn.execute("SELECT count(*) FROM report v JOIN results r USING (path) WHERE r.target_met = 0")
        (missed,) = missed.fetchone()
    assert data["n"] == len(stored) == 31 and data["models"] == 30
    for r in rows:  # numbers as SQLite writes them, to 15 significant digits
        mid, issuer, thr, rec, met, date, curve = stored[r["path"]]
        assert (r["model_id"], r["issuer"], r["met"], r["date"], r["curve"]) == (mid, issuer, bool(met), date, curve)
        assert (r["threshold"], r["recall"]) == (pytest.approx(thr, rel=1e-14), pytest.approx(rec, rel=1e-14))
    order = [rows[p]["path"] for p in ints(data["order"])]
    # By model_id, each model's report row first, then its superseded file.
    firsts = [p for k, p in enumerate(order) if k == 0 or rows_of_path(rows, p) != rows_of_path(rows, order[k - 1])]
    assert firsts == report_paths and order[order.index("run1/m03.json") + 1] == "old/m03.json"
    assert [rows[p]["path"] for p in ints(data["byPath"])] == sorted(stored)
    assert 0 < missed < 30
    assert [r[0] for r in data["rejections"]] and {r[0] for r in data["rejections"]} == {MARKUP, "bad.json"}
    bad = next(r for r in data["rejections"] if r[0] == "bad.json")
    assert bad[2] and bad[2][0][0] == "issuer"  # every reason, with its field
    (earlier,) = data["earlier"]  # model 4's first content, replaced
    assert rows[earlier[0]]["path"] == "run0/m04.json" and earlier[3] == "scored"


def rows_of_path(rows: list[dict[str, Any]], path: str) -> str:
    return str(next(r["model_id"] for r in rows if r["path"] == path))


def test_dates_are_ordered_by_instant_not_text(make_settings: Any) -> None:
    settings: Settings = make_settings()
    dates = [
        "2024-05-02T07:00:00Z",
        "2024-05-02T08:30:00+02:00",
        "2024-05-02T06:45:00.5-00:30",
        "2024-05-02T07:00:00.000001Z",
    ]
    for i, date in enumerate(dates):
        write(settings.watch_dir / f"d{i}.json", doc(experiment_date=date))
    scan(settings)
    data = page_data((settings.report_dir / "report.html").read_text())
    assert [data["dates"][p] for p in ints(data["byDate"])] == [dates[1], dates[0], dates[3], dates[2]]


def test_rows_from_python_give_the_same_page_data(report: Path) -> None:
    """The capped page (``html_max_models``) is built from rows in Python, not by SQLite."""
    with Store.open_readonly(report.parent.parent / "watcher.db") as store:
        sql_data = page_data(render(store.page_columns()))
        py_data = page_data(render(columns_from_rows(store.report_details())))

    def rounded(rows: list[dict[str, Any]]) -> dict[str, Any]:  # SQLite writes 15 significant digits
        return {
            r["path"]: {**r, "threshold": round(r["threshold"], 12), "recall": round(r["recall"], 12)} for r in rows
        }

    assert rounded(rows_of(py_data)) == rounded([r for r in rows_of(sql_data) if r["path"] != "old/m03.json"])


def render(cols: dict[str, Any], rejections: Any = (), omitted: int = 0) -> str:
    out = io.StringIO()
    render_html(cols, rejections, out, "2026-01-01T00:00:00Z", omitted)
    return out.getvalue()


def test_every_rejection_and_the_cap_are_on_the_page() -> None:
    rejections = [{"path": f"r{i}.json", "rejected_at": "now", "errors": [{"field": None, "message": "bad"}]}
                  for i in range(5000)]  # fmt: skip
    html = render(columns_from_rows([]), rejections, omitted=90_000)
    data = page_data(html)
    assert len(data["rejections"]) == 5000 and data["omitted"] == 90_000
    assert "5000 rejected files" in html


def test_embedded_json_cannot_end_the_script() -> None:
    text = script_json({"a": "</script><!-- & \u2028\u2029"})
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == {"a": "</script><!-- & \u2028\u2029"}


def test_raw_text_beyond_ascii_is_escaped_too_and_base64_is_left_as_it_is() -> None:
    text = script_json({"raw": Raw('["\u00e9</script>\u2028"]'), "b64": Plain("2AAE+/w=="), "drawn": "0<z"})
    assert "<" not in text and "\u2028" not in text
    assert json.loads(text) == {"raw": ["\u00e9</script>\u2028"], "b64": "2AAE+/w==", "drawn": "0<z"}


UUID = "0a1b2c3d-4e5f-4a6b-8c7d-8e9fa0b1c2d3"


@pytest.mark.parametrize(
    ("other", "packed"),
    [
        ("00000000-0000-4000-8000-000000000001", True),
        (UUID.upper(), False),  # not lowercase
        (UUID[:9] + " " + UUID[10:], False),  # a space: skipped by bytes.fromhex, a byte short
        (UUID[:8] + "0-" + UUID[10:], False),  # a dash out of place
        (UUID[:35] + "g", False),  # not hex
        (UUID[:34] + "\u00e9d", False),
        (UUID + "0", False),  # too long
    ],
)
def test_model_ids_are_packed_as_16_bytes_only_when_every_one_is_a_lowercase_uuid(other: str, packed: bool) -> None:
    row = (UUID, "a@example.com", 0.5, 0.85, "2024-05-01T12:00:00Z", "a.json", 0.85, 1, 5, b"")
    data = page_data(render(columns_from_rows([row, (other, *row[1:5], "b.json", *row[6:])])))
    if packed:
        assert data["ids"] == [] and base64.b64decode(data["idb"]) == bytes.fromhex((UUID + other).replace("-", ""))
    else:
        assert data["idb"] == "" and data["ids"] == [UUID, other]


def test_large_report_stays_small_per_model(make_settings: Any) -> None:
    settings: Settings = make_settings()
    n = 5000
    write(
        settings.watch_dir / "big.json",
        doc(threshold_arr=[i / n for i in range(n)], recall_arr=[1 - i / n for i in range(n)]),
    )
    scan(settings)
    size = (settings.report_dir / "report.html").stat().st_size
    with Store.from_settings(settings) as store:
        assert len(next(store.report_details())[-1]) in (64, 66)  # the drawn curve is downsampled...
        assert next(store.report_rows())[3] == pytest.approx(0.85, abs=1 / n)  # ...the scoring is not
    assert size < 80_000  # the page's own markup, style and script, and one small row of data


def test_capped_page_keeps_the_most_recent_models_and_says_so(make_settings: Any) -> None:
    settings: Settings = make_settings(html_max_models=5)
    for i in range(8):
        write(settings.watch_dir / f"m{i}.json", doc(experiment_date=f"2024-05-0{i + 1}T12:00:00Z"))
    scan(settings)
    data = page_data((settings.report_dir / "report.html").read_text())
    assert data["models"] == 5 and data["omitted"] == 3
    assert sorted(r["date"] for r in rows_of(data)) == [f"2024-05-0{i + 1}T12:00:00Z" for i in range(3, 8)]


def test_an_empty_database_makes_an_empty_page(make_settings: Any) -> None:
    settings: Settings = make_settings()
    scan(settings)
    data = page_data((settings.report_dir / "report.html").read_text())
    assert (data["n"], data["models"], data["rejections"], rows_of(data)) == (0, 0, [], [])
