"""The supervisor (``daemon.run``) in-process: a stop event instead of a signal, and an observer
whose events the test feeds (watchdog's real dispatch thread, no inotify, no real timing)."""

from __future__ import annotations

import contextlib
import io
import json
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from watchdog.events import FileClosedEvent, FileSystemEvent, FileSystemEventHandler
from watchdog.observers.api import BaseObserver, EventEmitter

from testing.helpers import doc, wait_until, write
from watcher import daemon, logs
from watcher.config import Settings
from watcher.errors import AlreadyRunningError
from watcher.store import Store

#: What the scripted emitters emit, in order (one daemon per test).
SCRIPT: queue.Queue[FileSystemEvent] = queue.Queue()


class ScriptedEmitter(EventEmitter):
    """Emits the events a test puts on :data:`SCRIPT`, through the observer's own filter."""

    def queue_events(self, timeout: float) -> None:
        with contextlib.suppress(queue.Empty):
            self.queue_event(SCRIPT.get(timeout=timeout))


def scripted_observer(settings: Settings, handler: FileSystemEventHandler) -> tuple[BaseObserver, str]:
    observer = BaseObserver(ScriptedEmitter, timeout=0.05)
    observer.schedule(handler, str(settings.watch_dir), recursive=True)
    observer.start()
    return observer, "scripted"


class Running:
    """``daemon.run`` in a thread, its log captured, its exit code kept."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stop = threading.Event()
        self.stream = io.StringIO()
        self.code: int | None = None
        self.error: BaseException | None = None
        logs.configure("info", "json", self.stream)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.code = daemon.run(self.settings, self.stop, observer_factory=scripted_observer)
        except BaseException as exc:
            self.error = exc

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stream.getvalue().splitlines()]

    def wait_event(self, name: str) -> dict[str, Any]:
        return wait_until(lambda: next((e for e in self.events() if e["event"] == name), None), what=name)

    def finish(self) -> int | None:
        self.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive()
        return self.code


@pytest.fixture
def running(make_settings: Any) -> Iterator[Running]:
    while not SCRIPT.empty():
        SCRIPT.get_nowait()
    r = Running(make_settings(report_interval=0.1, settle_seconds=0.2))
    r.thread.start()
    r.wait_event("daemon_ready")
    yield r
    r.finish()


def results(settings: Settings) -> dict[str, str]:
    store = Store.open_readonly(settings.db_path)
    try:
        return {row["path"]: row["model_id"] for row in store.db.query("SELECT path, model_id FROM results")}
    finally:
        store.close()


def test_an_event_from_the_observer_reaches_the_database_and_the_reports(running: Running) -> None:
    settings = running.settings
    model = doc()["model_id"]
    write(settings.watch_dir / "a.json", doc(model_id=model))
    SCRIPT.put(FileClosedEvent(str(settings.watch_dir / "a.json")))
    wait_until(lambda: results(settings) == {"a.json": model}, what="a.json stored")
    csv = settings.report_dir / "report.csv"
    wait_until(lambda: csv.exists() and model in csv.read_text(), what="the report")
    assert running.finish() == 0
    names = [e["event"] for e in running.events()]
    assert names.index("daemon_ready") < names.index("file_scored") < names.index("daemon_stopped")


def test_a_dead_writer_ends_the_daemon_with_exit_1(running: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(Store, "apply", broken)  # not a database error: nothing to retry
    write(running.settings.watch_dir / "a.json", doc())
    SCRIPT.put(FileClosedEvent(str(running.settings.watch_dir / "a.json")))
    wait_until(lambda: not running.thread.is_alive(), what="the supervisor to return")
    assert running.code == 1
    died = running.wait_event("writer_died")
    assert "disk on fire" in died["error"]


@pytest.mark.slow
def test_a_dead_observer_ends_the_daemon_with_exit_1(make_settings: Any) -> None:
    observers: list[BaseObserver] = []

    def kept(settings: Settings, handler: FileSystemEventHandler) -> tuple[BaseObserver, str]:
        observer, kind = scripted_observer(settings, handler)
        observers.append(observer)
        return observer, kind

    r = Running(make_settings())
    r.thread = threading.Thread(target=lambda: setattr(r, "code", daemon.run(r.settings, r.stop, kept)), daemon=True)
    r.thread.start()
    r.wait_event("daemon_ready")
    observers[0].stop()
    r.thread.join(30)
    assert r.code == 1 and r.wait_event("observer_died")


def test_a_second_daemon_on_the_same_database_is_refused(running: Running) -> None:
    with pytest.raises(AlreadyRunningError, match="another watcher is already running on this database"):
        daemon.run(running.settings, threading.Event(), observer_factory=scripted_observer)


def test_a_missing_watch_dir_is_reported_once_and_waited_for(make_settings: Any, tmp_path: Path) -> None:
    settings = make_settings(watch_dir=tmp_path / "inbox")
    settings.watch_dir.rmdir()  # not there yet: no exit and restart loop
    r = Running(settings)
    r.thread.start()
    r.wait_event("daemon_ready")
    assert [e["event"] for e in r.events()].count("watch_dir_missing") == 1
    assert r.finish() == 0 and r.error is None
