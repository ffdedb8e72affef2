"""Report files from the database: the tables here, the HTML page in another process meanwhile."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

import pytest

from testing.helpers import doc, write
from watcher.config import Settings
from watcher.errors import StoreError
from watcher.reconcile import reconcile
from watcher.reports.files import refresh_reports
from watcher.store import Store


@pytest.fixture
def s(make_settings: Any) -> Settings:
    settings: Settings = make_settings()
    return settings


@pytest.fixture
def store(s: Settings) -> Iterator[Store]:
    write(s.watch_dir / "a.json", doc())
    opened = Store.from_settings(s)
    reconcile(opened, s)
    yield opened
    opened.close()


class Spy(ProcessPoolExecutor):
    """A real one-process executor that records what it was given."""

    def __init__(self) -> None:
        super().__init__(max_workers=1, mp_context=multiprocessing.get_context("fork"))
        self.jobs: list[str] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.jobs.append(fn.__name__)
        return super().submit(fn, *args, **kwargs)


def test_html_page_is_written_by_the_other_process_meanwhile(s: Settings, store: Store) -> None:
    with Spy() as spy:
        assert refresh_reports(store, s, changed=True, html_in=spy)
    assert spy.jobs == ["write_html_file"]
    page = (s.report_dir / "report.html").read_text()
    data = json.loads(page.split('<script type="application/json" id="data">')[1].split("</script>")[0])
    assert "1 models" in page and (data["names"], data["ext"]) == (["a"], ".json")
    assert (
        "a.json" in (s.report_dir / "report.csv").read_text() and "a.json" in (s.report_dir / "report.json").read_text()
    )


def test_work_meanwhile_starts_once_the_page_process_exists(s: Settings, store: Store) -> None:
    seen: list[list[str]] = []

    @contextlib.contextmanager
    def meanwhile() -> Iterator[None]:
        seen.append(list(spy.jobs))  # what had been submitted (and so forked) when it began
        yield

    with Spy() as spy:
        assert refresh_reports(store, s, changed=True, html_in=spy, meanwhile=meanwhile)
    assert seen == [["write_html_file"]]


def test_a_failure_in_the_page_process_is_raised_after_the_tables(s: Settings, store: Store) -> None:
    elsewhere = s.model_copy(update={"db_path": s.db_path.with_name("absent.db")})
    with Spy() as spy, pytest.raises(StoreError, match=r"absent\.db: no database here yet"):
        refresh_reports(store, elsewhere, changed=True, html_in=spy)
    assert "a.json" in (s.report_dir / "report.csv").read_text()  # the tables were written all the same
    assert not (s.report_dir / "report.html").exists()
