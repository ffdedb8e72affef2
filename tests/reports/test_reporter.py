"""The report thread in-process, with a real page process: the tables never wait for the page,
page renders are coalesced, and the page ends up showing the last change."""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import signal
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from testing.helpers import doc, wait_until, write
from watcher import logs
from watcher.config import Settings
from watcher.reconcile import reconcile
from watcher.reports.files import write_html_file
from watcher.reports.reporter import Reporter
from watcher.store import Store


def _lock(settings: Settings) -> Path:
    return settings.db_path.with_name("page.lock")


def _renders(settings: Settings) -> Path:
    return settings.db_path.with_name("renders")


def held_page(settings: Settings) -> Path:
    """Writes the page once the test lets it: a shared lock on ``page.lock``, which the test holds
    exclusively to keep the page back. Notes each render (once under way) in ``renders``."""
    with _lock(settings).open("rb") as fh:
        fcntl.flock(fh, fcntl.LOCK_SH)
        with _renders(settings).open("a") as out:
            out.write("render\n")
        return write_html_file(settings)


def dies_once(settings: Settings) -> Path:
    """The first render kills its own process (as the OOM killer would); later ones write the page."""
    marker = settings.db_path.with_name("died")
    if not marker.exists():
        marker.touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return write_html_file(settings)


@contextlib.contextmanager
def held(settings: Settings) -> Iterator[Any]:
    """Hold the page back (see :func:`held_page`) until the block ends or ``release()``."""
    fh = _lock(settings).open("wb")
    fcntl.flock(fh, fcntl.LOCK_EX)
    try:
        yield lambda: fcntl.flock(fh, fcntl.LOCK_UN)
    finally:
        fh.close()


@pytest.fixture
def s(make_settings: Any) -> Settings:
    settings: Settings = make_settings(report_interval=0.05, settle_seconds=0.0)
    return settings


@pytest.fixture
def stream() -> io.StringIO:
    out = io.StringIO()
    logs.configure("info", "json", out)
    return out


def events(stream: io.StringIO, name: str) -> list[dict[str, Any]]:
    return [e for e in map(json.loads, stream.getvalue().splitlines()) if e["event"] == name]


@contextlib.contextmanager
def reporter(settings: Settings, page_writer: Any = write_html_file) -> Iterator[Reporter]:
    thread = Reporter(settings, lambda: True, threading.Event(), page_writer=page_writer)
    thread.start()
    try:
        yield thread
    finally:
        thread.stop()
        thread.join(30)
    assert not thread.is_alive()


def add(settings: Settings, name: str, r: Reporter) -> None:
    """A new result file, stored (as the writer would), and the reporter told."""
    write(settings.watch_dir / f"{name}.json", doc())
    store = Store.from_settings(settings)
    try:
        reconcile(store, settings)
    finally:
        store.close()
    r.mark()


def csv_has(settings: Settings, name: str) -> bool:
    csv = settings.report_dir / "report.csv"
    return csv.exists() and f"{name}.json" in csv.read_text()


def page_names(settings: Settings) -> list[str]:
    page = settings.report_dir / "report.html"
    if not page.exists():
        return []
    data = json.loads(page.read_text().split('<script type="application/json" id="data">')[1].split("</script>")[0])
    names: list[str] = data["names"]
    return names


@pytest.mark.slow
def test_tables_follow_changes_while_the_page_is_held_then_one_more_page_shows_the_last(
    s: Settings, stream: io.StringIO
) -> None:
    Store.from_settings(s).close()
    with held(s) as release, reporter(s, held_page) as r:
        for i in range(1, 6):
            add(s, f"a{i}", r)
            # Each change reaches the CSV although the first page has not even started.
            wait_until(partial(csv_has, s, f"a{i}"), timeout=10, what=f"a{i}.json in report.csv")
        assert not (s.report_dir / "report.html").exists()
        assert not _renders(s).exists()
        release()
        wait_until(lambda: "a5" in page_names(s), what="the last change on the page")
        wait_until(lambda: len(events(stream, "report_page_written")) == 2, what="two pages written")
    pages = events(stream, "report_page_written")
    # Five changes while the first page was held: one more page after it, not five.
    assert _renders(s).read_text().count("render") == 2
    assert sorted(page_names(s)) == [f"a{i}" for i in range(1, 6)]
    assert isinstance(pages[-1]["after_change"], float) and all(p["seconds"] >= 0 for p in pages)
    after = [t["after_change"] for t in events(stream, "reports_written") if t["after_change"] is not None]
    assert after  # the tables' own delay, logged apart from the page's


@pytest.mark.slow
def test_stop_waits_for_the_page_in_flight_and_the_one_after_it(s: Settings, stream: io.StringIO) -> None:
    Store.from_settings(s).close()
    with held(s) as release:
        r = Reporter(s, lambda: True, threading.Event(), page_writer=held_page)
        r.start()
        wait_until(lambda: (s.report_dir / "report.csv").exists(), what="report.csv")
        add(s, "late", r)
        wait_until(lambda: csv_has(s, "late"), what="late.json in report.csv")
        r.stop()
        r.join(0.3)  # bounded: the stop must not end while the page is held
        assert r.is_alive()
        release()
        r.join(30)
    assert not r.is_alive()
    assert page_names(s) == ["late"]  # a stopped reporter leaves a page that matches the database
    assert not events(stream, "report_page_unfinished")


@pytest.mark.slow
def test_a_page_process_that_dies_is_logged_and_replaced(s: Settings, stream: io.StringIO) -> None:
    write(s.watch_dir / "a.json", doc())
    store = Store.from_settings(s)
    reconcile(store, s)
    store.close()
    with reporter(s, dies_once) as r:
        r.mark()
        wait_until(lambda: page_names(s) == ["a"], what="the page, from a new process")
        wait_until(lambda: events(stream, "report_page_written"), what="report_page_written")
    assert len(events(stream, "report_process_broken")) == 1


def test_only_the_tables_when_the_page_is_not_asked_for(make_settings: Any, stream: io.StringIO) -> None:
    s = make_settings(report_formats=("csv",), report_interval=0.05)
    Store.from_settings(s).close()
    with reporter(s) as r:
        add(s, "a", r)
        wait_until(lambda: csv_has(s, "a"), what="a.json in report.csv")
    assert not (s.report_dir / "report.html").exists() and r.html.executor is None
    assert not events(stream, "report_page_written")


@pytest.mark.slow
def test_an_idle_reporter_stops_the_helper_processes_even_without_a_page_to_write(make_settings: Any) -> None:
    # The daemon starts the resource tracker before this thread; when nothing needs writing, no
    # page process is ever started, and the helpers must still go once idle.
    s = make_settings(worker_idle_seconds=0.2)
    Store.from_settings(s).close()
    out = io.StringIO()
    logs.configure("debug", "json", out)
    with reporter(s):
        wait_until(lambda: (s.report_dir / "report.html").exists(), what="report.html")
        wait_until(lambda: events(out, "report_process_stopped"), what="report_process_stopped")
    with reporter(s):  # every file there: nothing to write, no process started
        wait_until(lambda: len(events(out, "report_process_stopped")) == 2, what="helpers stopped, again")
    assert len(events(out, "report_page_written")) == 1
