"""Log set-up: JSON lines (one per event, even for odd file names), no locals in tracebacks."""

from __future__ import annotations

import io
import json
import logging
import re
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from watcher import logs
from watcher.timestamps import UtcStamper


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_json_when_not_a_tty_one_line_per_event() -> None:
    stream = io.StringIO()
    logs.configure("info", "auto", stream)
    logs.get_logger("t").warning("file_rejected", path="we\nird \udcff name.json", errors=[{"field": None}])
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    event = json.loads(lines[0])
    assert (event["event"], event["level"], event["path"]) == ("file_rejected", "warning", "we\nird \udcff name.json")
    assert event["timestamp"].endswith("Z")


def test_console_on_a_tty() -> None:
    stream = Tty()
    logs.configure("info", "auto", stream)
    logs.get_logger("t").info("file_scored", path="a.json")
    assert "file_scored" in stream.getvalue() and not stream.getvalue().startswith("{")


def test_level_filter() -> None:
    stream = io.StringIO()
    logs.configure("warning", "json", stream)
    log = logs.get_logger("t")
    log.info("quiet")
    log.warning("loud")
    assert [json.loads(x)["event"] for x in stream.getvalue().splitlines()] == ["loud"]


def test_tracebacks_carry_no_local_variables() -> None:
    stream = io.StringIO()
    logs.configure("info", "json", stream)
    secret = "file contents that must not leak"  # noqa: F841 - a local the traceback must not show
    try:
        raise ValueError("boom")
    except ValueError:
        logs.get_logger("t").exception("failed")
    assert "must not leak" not in stream.getvalue()
    assert json.loads(stream.getvalue())["exception"][0]["exc_type"] == "ValueError"


@pytest.mark.filterwarnings("default")  # the warning must reach showwarning, not be raised
def test_warnings_and_library_logging_become_json_lines() -> None:
    stream = io.StringIO()
    logs.configure("info", "json", stream)
    warnings.warn("callback overwritten", RuntimeWarning, stacklevel=1)
    logging.getLogger("watchdog.observers.inotify_buffer").error("queue overflow")
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(e["event"], e["message"]) for e in events] == [
        ("python_warning", "callback overwritten"),
        ("library_log", "queue overflow"),
    ]
    assert events[1]["component"] == "watchdog.observers.inotify_buffer" and events[1]["level"] == "error"


class Flushes(io.StringIO):
    """A stream that tells what had reached it at each flush."""

    def __init__(self) -> None:
        super().__init__()
        self.flushed: list[int] = []

    def flush(self) -> None:
        self.flushed.append(len(self.getvalue().splitlines()))


def test_each_line_is_flushed_but_a_held_batch_once_at_its_end() -> None:
    stream = Flushes()
    logs.configure("info", "json", stream)
    log = logs.get_logger("t")
    log.info("one")
    with logs.held():
        log.info("two")
        with logs.held():
            log.info("three")
        log.info("four")
        assert stream.flushed == [1]
    log.info("five")
    assert stream.flushed == [1, 4, 5]


def test_line_buffered_stderr_is_left_to_the_writer_and_restored_by_reset() -> None:
    stream = io.TextIOWrapper(io.BytesIO(), line_buffering=True)
    logs.configure("info", "json", stream)
    assert not stream.line_buffering  # else every newline would be a write of its own
    logs.get_logger("t").info("one")
    assert stream.buffer.getvalue().count(b"\n") == 1  # still out at once, flushed by the writer
    logs.reset()
    assert stream.line_buffering


def test_values_json_cannot_encode_are_logged_as_their_repr_or_structlog_form() -> None:
    class Custom:
        def __structlog__(self) -> str:
            return "custom form"

    stream = io.StringIO()
    logs.configure("info", "json", stream)
    logs.get_logger("t").info("odd", path=Path("a.json"), custom=Custom(), ratio=0.5)
    event = json.loads(stream.getvalue())
    assert (event["path"], event["custom"], event["ratio"]) == ("PosixPath('a.json')", "custom form", 0.5)


def test_utc_stamper_microseconds_fixed_width_and_the_second_rolls_over() -> None:
    now = [1_714_564_799_999_999_000]  # 2024-05-01T11:59:59.999999Z
    stamp = UtcStamper(clock=lambda: now[0])
    assert stamp(None, "info", {})["timestamp"] == "2024-05-01T11:59:59.999999Z"
    now[0] += 1_000  # one microsecond later: the next second, and the next minute
    assert stamp(None, "info", {})["timestamp"] == "2024-05-01T12:00:00.000000Z"
    now[0] += 42_999  # 42.999 µs later, same second: only the fraction changes (cut, not rounded)
    assert stamp(None, "info", {})["timestamp"] == "2024-05-01T12:00:00.000042Z"


def test_logged_timestamp_is_now_in_utc() -> None:
    stream = io.StringIO()
    logs.configure("info", "json", stream)
    before = datetime.now(UTC)
    logs.get_logger("t").info("tick")
    after = datetime.now(UTC)
    stamp = json.loads(stream.getvalue())["timestamp"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", stamp)
    assert before - timedelta(microseconds=1) <= datetime.fromisoformat(stamp) <= after


def test_lines_are_what_the_json_module_writes() -> None:
    stream = io.StringIO()
    logs.configure("info", "json", stream)
    values = {"path": 'é/"q".json', "n": 3, "x": 0.1 + 0.2, "inf": float("inf"), "ok": True, "none": None}
    logs.get_logger("t").info("mixed", errors=[{"field": "a", "message": "b"}], **values)
    line = stream.getvalue().rstrip("\n")
    event = json.loads(line)
    assert line == json.dumps(event)  # same separators, ASCII escapes and float repr
    assert {k: event[k] for k in values} == values
