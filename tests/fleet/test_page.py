"""The fleet's HTML page: built from a real PostgreSQL and opened in a real headless Chromium
(every model of every host, superseded rows on other hosts, rejections with reasons, no console
errors); and end to end, ``watcher central publish`` with real daemons: the page follows a change
on any host, and the table files do not wait for it (its process is stopped, the tables go on)."""

from __future__ import annotations

import base64
import functools
import json
import os
import re
import signal
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from testing.cdp import CHROMIUM, Browser
from testing.fleet import Fleet, running_fleet
from testing.helpers import descendants, doc, wait_until, write
from watcher.fleet.page import PageProcess, write_page

pytestmark = pytest.mark.timeout(180)

SHARED = "3f2b8c1e-7d4a-4e0b-9a6f-1c2d3e4f5a6b"
OWN = "00000000-0000-4000-8000-000000000001"


def page_data(html: Path) -> dict[str, Any]:
    """The page's embedded data, with ``ids`` and ``paths`` decoded per row."""
    text = html.read_text()
    found = re.search(r'<script type="application/json" id="data">(.*?)</script>', text, re.S)
    assert found, "no data in the page"
    data: dict[str, Any] = json.loads(found.group(1))
    if data["idb"]:
        raw = base64.b64decode(data["idb"])
        data["ids"] = [str(uuid.UUID(bytes=raw[i : i + 16])) for i in range(0, len(raw), 16)]
    folder = _unpack(data["dir"])
    data["paths"] = [data["folders"][folder[p]] + data["names"][p] + data["ext"] for p in range(data["n"])]
    data["order_list"] = _unpack(data["order"])
    return data


def _unpack(packed: str) -> list[int]:
    width, raw = int(packed[0]), base64.b64decode(packed[1:])
    return [int.from_bytes(raw[i : i + width], "little") for i in range(0, len(raw), width)]


def _result(conn: psycopg.Connection[Any], host: str, path: str, model: str, at: str, thr: float = 0.5) -> None:
    conn.execute(
        "INSERT INTO watcher.results VALUES (%s, %s, %s, 'ana@example.com', %s, %s, %s, 0.85, 0, true, 0.85, 5,"
        " 'sha', 3, '2026-01-01T00:00:00.000Z')",
        (host, path, model, at, at, thr),
    )


@pytest.fixture
def fleet_db(central_db: Any) -> Iterator[psycopg.Connection[Any]]:
    """Two hosts' rows: SHARED on both (gpu-02's experiment is the later), OWN on gpu-01, and a
    rejection on gpu-02."""
    server, name = central_db
    with psycopg.connect(server.url(name), autocommit=True) as conn:
        _result(conn, "gpu-01", "run.json", SHARED, "2024-05-01T12:00:00.000Z", 0.25)
        _result(conn, "gpu-02", "sub/run.json", SHARED, "2024-05-02T07:00:00.000Z", 0.5)
        _result(conn, "gpu-01", "own.json", OWN, "2024-04-01T00:00:00.000Z")
        conn.execute(
            "INSERT INTO watcher.rejections VALUES ('gpu-02', 'bad.json', %s, 'sha', 3, '2026-01-01T00:00:00.000Z')",
            (json.dumps([{"field": "recall_arr", "message": "must have at least 2 items"}]),),
        )
        yield conn


def test_page_data_holds_every_row_winner_first(fleet_db: psycopg.Connection[Any], tmp_path: Path) -> None:
    html = write_page(fleet_db, tmp_path, 0.85, 1_000_000)
    data = page_data(html)
    assert (data["n"], data["models"]) == (3, 2)
    rows = [(data["ids"][p], data["paths"][p]) for p in data["order_list"]]
    # By model_id, each model's fleet-wide winner first, then its superseded row on the other host.
    assert rows == [(OWN, "gpu-01:own.json"), (SHARED, "gpu-02:sub/run.json"), (SHARED, "gpu-01:run.json")]
    assert data["rejections"] == [
        ["gpu-02:bad.json", "2026-01-01T00:00:00.000Z", [["recall_arr", "must have at least 2 items"]]]
    ]
    # Over html_max_models: the newest models' winning rows only, and the page says how many are left out.
    data = page_data(write_page(fleet_db, tmp_path, 0.85, 1))
    assert (data["n"], data["omitted"], data["ids"], data["paths"]) == (1, 1, [SHARED], ["gpu-02:sub/run.json"])


def _tended(page: PageProcess, done: Callable[[], bool]) -> bool:
    page.tend()  # what the publisher's loop does
    return done() and not page.busy


def test_page_process_killed_renders_again(central_db: Any, tmp_path: Path) -> None:
    server, name = central_db
    page = PageProcess(server.url(name), tmp_path, 0.85, 1_000_000)
    html = tmp_path / "report.html"
    try:
        page.request()
        wait_until(functools.partial(_tended, page, lambda: page.written == 1), 60, what="the first page")
        os.kill(next(iter(page.executor._processes)), signal.SIGKILL)  # out of memory, say
        html.unlink()
        page.request()
        wait_until(functools.partial(_tended, page, html.exists), 60, what="the page from a new process")
        assert page.written == 2
    finally:
        page.close()


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (.ci/run installs it)")
def test_page_opens_in_chromium_with_hosts_shown(fleet_db: psycopg.Connection[Any], tmp_path: Path) -> None:
    html = write_page(fleet_db, tmp_path, 0.85, 1_000_000)
    with Browser(width=1400, height=1000) as b:
        b.open(html.as_uri())
        assert b.eval("document.getElementById('shown').textContent") == "2 of 2 shown"
        assert sorted(b.eval("report.ids(0, 10)")) == sorted([SHARED, OWN])
        rows = b.eval("[...document.querySelectorAll('#rows .row:not([hidden])')].map(e => e.textContent)")
        assert any(SHARED in r and "gpu-02:sub/run.json" in r for r in rows), rows
        b.click("#rows .row:nth-child(2) .id")  # SHARED (after OWN by model_id)
        b.wait_for("document.getElementById('detail').open")
        assert b.eval("document.getElementById('dtitle').textContent") == f"model {SHARED}"
        assert "gpu-01:run.json" in b.eval("document.getElementById('dothers').textContent")
        b.mouse(*b.center("#chart circle.chosen"))
        assert "chosen point: threshold 0.5000" in b.eval("document.getElementById('readout').textContent")
        b.key("Escape")
        text = b.eval("document.getElementById('rejections').textContent")
        assert "gpu-02:bad.json" in text and "must have at least 2 items" in text
        assert b.errors() == []


@pytest.fixture(name="fleet")
def _fleet(pg_cluster: Any, tmp_path: Path) -> Iterator[Fleet]:
    with running_fleet(pg_cluster, tmp_path) as f:
        try:
            yield f
        finally:
            for pid in descendants(f.publisher.pid) if f.publisher is not None else []:
                os.kill(pid, signal.SIGCONT)  # a stopped page process must be able to die


def _events(fleet: Fleet, name: str) -> list[dict[str, Any]]:
    lines = (fleet.tmp / "publish.log").read_text().splitlines()
    return [e for e in map(json.loads, filter(None, lines)) if e.get("event") == name]


def _html_ids(html: Path) -> set[str]:
    return set(page_data(html)["ids"]) if html.exists() else set()


def _has(csv: Path, model: str) -> bool:
    return model in _csv_ids(csv)


def _csv_ids(csv: Path) -> set[str]:
    return {line.split(",")[0] for line in csv.read_text().splitlines()[1:]} if csv.exists() else set()


def test_publish_writes_the_page_after_the_tables_never_before_them(fleet: Fleet, tmp_path: Path) -> None:
    a, b = fleet.add_host("gpu-01"), fleet.add_host("gpu-02")
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    write(a.inbox / "one.json", doc(model_id=first))
    write(b.inbox / "two.json", doc(model_id=second))
    write(b.inbox / "bad.json", "{")
    fleet.check()
    csv = fleet.publish(tmp_path / "fleet")
    html = csv.with_name("report.html")
    wait_until(lambda: _html_ids(html) == {first, second}, 30, what="the fleet page with both hosts' models")
    assert [r[0] for r in page_data(html)["rejections"]] == ["gpu-02:bad.json"]
    # A change on a host reaches the page.
    third = str(uuid.uuid4())
    write(a.inbox / "three.json", doc(model_id=third))
    wait_until(lambda: third in _html_ids(html), 30, what="the change on the page")
    # The page's process stopped (as if it took forever): the tables still follow each change.
    assert fleet.publisher is not None
    wait_until(lambda: len(_events(fleet, "fleet_page_written")) >= 2, 20, what="the page written twice")
    helpers = descendants(fleet.publisher.pid)
    assert helpers, "no page process"
    for pid in helpers:
        os.kill(pid, signal.SIGSTOP)
    tables_before = len(_events(fleet, "fleet_reports_written"))
    pages_before = len(_events(fleet, "fleet_page_written"))
    later = [str(uuid.uuid4()) for _ in range(3)]
    for i, model in enumerate(later):
        write(b.inbox / f"later{i}.json", doc(model_id=model))
        wait_until(functools.partial(_has, csv, model), 20, what="the table file, with the page stopped")
    wait_until(lambda: len(_events(fleet, "fleet_reports_written")) >= tables_before + 3, 10, what="3 table writes")
    assert not set(later) & _html_ids(html)
    for pid in helpers:
        os.kill(pid, signal.SIGCONT)
    wait_until(lambda: set(later) <= _html_ids(html), 30, what="the page catching up")
    # Coalesced: the requests made meanwhile became one more page (two if one was running), not three.
    wait_until(lambda: len(_events(fleet, "fleet_page_written")) > pages_before, 10)
    fleet.check()
    assert len(_events(fleet, "fleet_page_written")) - pages_before <= 2
