"""The writer thread in-process, driven through its event queue (no observer, no real timing)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import queue
import sqlite3
import threading
from collections.abc import Iterator
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import pytest

from testing.helpers import doc, wait_until, write
from watcher import logs
from watcher.config import Settings
from watcher.reconcile import reconcile as real_reconcile
from watcher.store import Store, guarded
from watcher.watch.observe import Event
from watcher.writer import Writer


@contextlib.contextmanager
def writer_thread(settings: Settings) -> Iterator[tuple[Writer, Settings, io.StringIO]]:
    stream = io.StringIO()
    logs.configure("info", "json", stream)
    writer = Writer(settings, queue.Queue(), threading.Event(), "test")
    writer.start()
    wait_until(writer.ready.is_set, what="writer ready")
    yield writer, settings, stream
    writer.stop_event.set()
    writer.join(10)
    assert not writer.is_alive() and writer.failed is None


@pytest.fixture
def running(make_settings: Any) -> Iterator[tuple[Writer, Settings, io.StringIO]]:
    with writer_thread(make_settings(settle_seconds=0.0)) as parts:
        yield parts


def send(writer: Writer, settings: Settings, kind: str, rel: str, dest: str = "", is_dir: bool = False) -> None:
    event: Event = (kind, str(settings.watch_dir / rel), str(settings.watch_dir / dest) if dest else "", is_dir)
    writer.events.put(event)


def stored(settings: Settings, table: str = "results") -> set[str]:
    store = Store.open_readonly(settings.db_path)
    try:
        return {r["path"] for r in store.db.query(f"SELECT path FROM {table}")}
    finally:
        store.close()


def test_closed_file_is_judged(running: tuple[Writer, Settings, io.StringIO]) -> None:
    writer, settings, _ = running
    write(settings.watch_dir / "a.json", doc())
    send(writer, settings, "closed", "a.json")
    wait_until(lambda: stored(settings) == {"a.json"}, what="a.json stored")


@pytest.mark.slow
def test_database_errors_are_retried_without_losing_the_file(
    running: tuple[Writer, Settings, io.StringIO], monkeypatch: pytest.MonkeyPatch
) -> None:
    writer, settings, stream = running
    real_apply = Store.apply
    failures = iter([sqlite3.OperationalError("database or disk is full")] * 2)

    def flaky(self: Store, outcomes: Any) -> Any:
        error = next(failures, None)
        if error is not None:
            raise error
        return real_apply(self, outcomes)

    monkeypatch.setattr(Store, "apply", guarded(flaky))  # as the store raises it: StoreError
    write(settings.watch_dir / "a.json", doc())
    send(writer, settings, "closed", "a.json")
    wait_until(lambda: stored(settings) == {"a.json"}, what="stored after the disk cleared")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    errors = [e for e in lines if e["event"] == "database_error"]
    assert [e["error"] for e in errors] == ["database or disk is full"]  # once, not once per retry
    # The connection that failed is not trusted again: opened anew, the tree reconciled into it.
    after = [e["event"] for e in lines[lines.index(errors[0]) :]]
    assert after.index("reconcile_done") < after.index("database_back")
    assert writer.is_alive()


def test_queue_overflow_triggers_a_full_reconcile(running: tuple[Writer, Settings, io.StringIO]) -> None:
    writer, settings, stream = running
    write(settings.watch_dir / "missed.json", doc())  # its events were dropped
    writer.overflow.set()
    send(writer, settings, "closed", "other-not-there.json")  # wakes the loop
    wait_until(lambda: stored(settings) == {"missed.json"}, what="reconciled")
    assert '"event_queue_overflow"' in stream.getvalue()


def test_rename_keeps_one_row_under_the_new_path(running: tuple[Writer, Settings, io.StringIO]) -> None:
    writer, settings, _ = running
    write(settings.watch_dir / "a.json", doc())
    send(writer, settings, "closed", "a.json")
    wait_until(lambda: stored(settings) == {"a.json"}, what="a.json")
    (settings.watch_dir / "a.json").rename(settings.watch_dir / "b.json")
    send(writer, settings, "moved", "a.json", dest="b.json")
    wait_until(lambda: stored(settings) == {"b.json"}, what="b.json only")


def model_ids(settings: Settings) -> dict[str, str]:
    store = Store.open_readonly(settings.db_path)
    try:
        return {r["path"]: r["model_id"] for r in store.db.query("SELECT path, model_id FROM results")}
    finally:
        store.close()


def test_an_event_on_a_file_reaches_the_links_to_it(running: tuple[Writer, Settings, io.StringIO]) -> None:
    # The kernel names the file, never a link to it: the writer's index of links does the rest.
    writer, settings, _ = running
    inbox = settings.watch_dir
    first, second, third = (f"00000000-0000-4000-8000-00000000000{n}" for n in (1, 2, 3))
    write(inbox / "data" / "raw.txt", doc(model_id=first))  # a name not tracked itself
    os.symlink("data/raw.txt", inbox / "latest.json")
    send(writer, settings, "created", "latest.json")  # a link made while running
    wait_until(lambda: model_ids(settings) == {"latest.json": first}, what="the link judged")

    write(inbox / "data" / "raw.txt", doc(model_id=second))  # rewritten in place
    send(writer, settings, "opened", "data/raw.txt")
    send(writer, settings, "modified", "data/raw.txt")
    send(writer, settings, "closed", "data/raw.txt")
    wait_until(lambda: model_ids(settings) == {"latest.json": second}, what="the link follows its target")

    write(inbox / "data" / "raw.txt", doc(model_id=third))
    (inbox / "data").rename(inbox / "old")  # its folder moved: one event for the folder
    send(writer, settings, "moved", "data", dest="old", is_dir=True)
    wait_until(lambda: stored(settings, "rejections") == {"latest.json"}, what="the link dangling")
    assert model_ids(settings) == {}


def test_a_new_folders_file_not_yet_written_waits_for_its_close(make_settings: Any) -> None:
    with writer_thread(make_settings(settle_seconds=30.0)) as (writer, settings, stream):
        run = settings.watch_dir / "run1"
        write(run / "done.json", doc())
        write(run / "empty-long-ago.json", "")
        os.utime(run / "empty-long-ago.json", (1, 1))
        write(run / "being-written.json", "")  # created; its content not written yet
        send(writer, settings, "created", "run1", is_dir=True)
        wait_until(lambda: stored(settings) == {"run1/done.json"}, what="the finished file")
        wait_until(lambda: stored(settings, "rejections") == {"run1/empty-long-ago.json"}, what="the old empty file")
        write(run / "being-written.json", doc())
        send(writer, settings, "closed", "run1/being-written.json")
        wait_until(lambda: "run1/being-written.json" in stored(settings), what="scored on its close")
        assert stored(settings, "rejections") == {"run1/empty-long-ago.json"}
        rejected = [json.loads(line)["path"] for line in stream.getvalue().splitlines() if "file_rejected" in line]
        assert rejected == ["run1/empty-long-ago.json"]


@pytest.mark.slow
def test_a_broken_worker_pool_during_a_reconcile_is_retried(
    running: tuple[Writer, Settings, io.StringIO], monkeypatch: pytest.MonkeyPatch
) -> None:
    writer, settings, stream = running
    calls: list[str] = []

    def breaks_once(*args: Any, **kwargs: Any) -> Any:
        calls.append("x")
        if len(calls) == 1:
            raise BrokenProcessPool("a worker was killed")
        return real_reconcile(*args, **kwargs)

    monkeypatch.setattr("watcher.writer.reconcile", breaks_once)
    write(settings.watch_dir / "missed.json", doc())
    writer.overflow.set()  # a full reconcile now
    send(writer, settings, "closed", "other-not-there.json")  # wakes the loop
    wait_until(lambda: stored(settings) == {"missed.json"}, what="reconciled on the retry")
    broken = [json.loads(line) for line in stream.getvalue().splitlines() if "worker_pool_broken" in line]
    assert [(b["under"], b["retry_in"]) for b in broken] == [(".", 5.0)]
    assert writer.is_alive()
