"""The observer set-up: the enqueue-only handler, the event filter and the polling fallback."""

from __future__ import annotations

import errno
import io
import json
import os
import queue
import threading
from typing import Any

import pytest
from watchdog.events import DirModifiedEvent, FileClosedEvent, FileMovedEvent, FileSystemEvent, FileSystemEventHandler

from testing.helpers import wait_until, write
from watcher import logs
from watcher.watch.observe import FolderPollingObserver, QueueHandler, start_observer


def test_handler_only_enqueues_and_flags_overflow() -> None:
    events: queue.Queue[Any] = queue.Queue(maxsize=2)
    overflow = threading.Event()
    handler = QueueHandler(events, overflow)
    handler.dispatch(FileClosedEvent("/w/a.json"))
    handler.dispatch(DirModifiedEvent("/w"))  # dropped: noise
    handler.dispatch(FileMovedEvent("/w/.a.tmp", "/w/b.json"))
    assert not overflow.is_set()
    handler.dispatch(FileClosedEvent("/w/c.json"))  # the queue is full: never block, never raise
    assert overflow.is_set()
    assert [events.get_nowait(), events.get_nowait()] == [
        ("closed", "/w/a.json", "", False),
        ("moved", "/w/.a.tmp", "/w/b.json", False),
    ]


@pytest.mark.parametrize(("err", "sysctl"), [(errno.ENOSPC, "max_user_watches"), (errno.EMFILE, "max_user_instances")])
def test_inotify_limit_falls_back_to_polling_and_says_how_to_fix(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch, err: int, sysctl: str
) -> None:
    def exhausted(*_: Any, **__: Any) -> None:
        raise OSError(err, "inotify limit reached")

    monkeypatch.setattr("watcher.watch.inotify.PairingInotifyObserver.__init__", exhausted)
    stream = io.StringIO()
    logs.configure("info", "json", stream)
    observer, kind = start_observer(make_settings(), QueueHandler(queue.Queue(), threading.Event()))
    try:
        assert kind == "polling" and isinstance(observer, FolderPollingObserver)
    finally:
        observer.stop()
        observer.join()
    event = json.loads(stream.getvalue())
    assert event["event"] == "inotify_limit_reached" and f"sysctl -w fs.inotify.{sysctl}=" in event["hint"]


class Recorder(FileSystemEventHandler):
    def __init__(self) -> None:
        self.events: list[FileSystemEvent] = []

    def on_any_event(self, event: FileSystemEvent) -> None:
        self.events.append(event)


def test_the_observer_never_sends_a_folders_own_modified_event(make_settings: Any) -> None:
    settings = make_settings()
    recorder = Recorder()
    observer, kind = start_observer(settings, recorder)
    try:
        assert kind == "inotify"
        for name in ("a.json", "b.json"):  # b's close comes after anything a's close made
            write(settings.watch_dir / name, "{}")
            closed = os.fsencode(settings.watch_dir / name)
            wait_until(
                lambda: any(e.event_type == "closed" and os.fsencode(e.src_path) == closed for e in recorder.events)
            )
    finally:
        observer.stop()
        observer.join()
    kinds = {(e.event_type, e.is_directory) for e in recorder.events}
    assert {("created", False), ("opened", False), ("modified", False), ("closed", False)} <= kinds
    assert ("modified", True) not in kinds
