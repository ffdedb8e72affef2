"""The one structlog set-up. Called once, at the edge (the CLI); :func:`reset` undoes it for tests.

Output goes to stderr: JSON lines when it is not a TTY (or ``log_format = "json"``), a readable
console format on a TTY. With ``auto``, when stderr is the journal (a systemd service), each event
is a native journal entry with fields instead (:mod:`watcher.journal`). One event is always one
line (JSON escapes newlines in file names), and tracebacks never carry local variables, which could hold file contents.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import sys
import threading
import warnings
from collections.abc import Iterator
from typing import IO, Any, Literal, TextIO

import structlog

from watcher import journal
from watcher.timestamps import UtcStamper

LogFormat = Literal["auto", "json", "console"]

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def resolve_format(log_format: LogFormat, stream: IO[str]) -> Literal["json", "console"]:
    """``auto`` means console on a TTY and JSON lines anywhere else (journald, pipes, files)."""
    if log_format != "auto":
        return log_format
    isatty = getattr(stream, "isatty", None)
    return "console" if isatty is not None and isatty() else "json"


def configure(
    level: str = "info",
    log_format: LogFormat = "auto",
    stream: TextIO | None = None,
    journal_socket: str | None = None,
) -> None:
    """Configure structlog process-wide: level filter, timestamps, and the renderer.

    ``journal_socket``: where journal entries go when stderr is the journal (tests name their own).
    """
    stream = sys.stderr if stream is None else stream
    if log_format == "auto" and _is_journal(stream):
        _configure_journal(level, stream, journal_socket or journal.SOCKET)
        return
    shared: list[Any] = [
        structlog.processors.add_log_level,
        UtcStamper(),
    ]
    renderer: list[Any]
    if resolve_format(log_format, stream) == "json":
        renderer = [
            structlog.processors.ExceptionRenderer(structlog.tracebacks.ExceptionDictTransformer(show_locals=False)),
            structlog.processors.JSONRenderer(serializer=_dumps),
        ]
    else:
        renderer = [structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback)]
    _own_buffering(stream)
    output = LineWriter(stream)
    _outputs[:] = [output]
    structlog.configure(
        processors=shared + renderer,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=lambda *_: output,
        cache_logger_on_first_use=False,
    )

    _capture_foreign_output()


def _is_journal(stream: IO[str]) -> bool:
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    return journal.stderr_is_journal(fd=fd)


def _configure_journal(level: str, stream: TextIO, path: str) -> None:
    # Exceptions as a structured field (no "Traceback" text), like the JSON lines.
    processors: list[Any] = [
        structlog.processors.add_log_level,
        UtcStamper(),
        structlog.processors.ExceptionRenderer(structlog.tracebacks.ExceptionDictTransformer(show_locals=False)),
        journal.JournalRenderer(),
    ]
    output = journal.JournalOutput(LineWriter(stream), path)
    _outputs[:] = []
    _journals[:] = [output]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=lambda *_: output,
        cache_logger_on_first_use=False,
    )
    _capture_foreign_output()


def _fallback(obj: Any) -> Any:
    # What structlog's own JSON fallback does: an object's __structlog__() form, else its repr.
    try:
        return obj.__structlog__()
    except AttributeError:
        return repr(obj)


# One encoder for every line: json.dumps(default=...) builds a new encoder per call, and even a
# kept JSONEncoder builds its C encoder per call (a bulk scan logs a line per file). Without a
# circular-reference check (markers=None): an event is a flat dict of values.
_ENCODER = json.JSONEncoder(default=_fallback)
_c_encoder = getattr(json.encoder, "c_make_encoder", None)
_ENCODE = (
    None
    if _c_encoder is None
    else _c_encoder(None, _fallback, json.encoder.encode_basestring_ascii, None, ": ", ", ", False, False, True)
)


def _dumps(obj: Any, **_: Any) -> str:
    if _ENCODE is None:  # no C accelerator (other Pythons)
        return _ENCODER.encode(obj)
    return "".join(_ENCODE(obj, 0))


_hold_depth = 0
_hold_lock = threading.Lock()
_unbuffered: list[io.TextIOWrapper] = []
_outputs: list[LineWriter] = []  # the configured one (a list: empty until configure())
_journals: list[journal.JournalOutput] = []  # the journal's, when configured


class LineWriter:
    """structlog's output: one line per event, written whole under a lock and flushed at once,
    or, inside :func:`held`, when the outermost ``held`` block ends."""

    def __init__(self, stream: TextIO) -> None:
        self._write = stream.write
        self._flush = stream.flush
        self._lock = threading.Lock()

    def msg(self, message: str) -> None:
        """Write one event's line."""
        with self._lock:
            self._write(message + "\n")
            if not _hold_depth:
                self._flush()

    def flush(self) -> None:
        """Flush what :func:`held` kept back."""
        with self._lock:
            self._flush()

    debug = info = warning = warn = error = err = critical = exception = fatal = failure = log = msg


@contextlib.contextmanager
def held() -> Iterator[None]:
    """Lines logged inside (by any thread) reach the stream in one flush at the end: a batch of
    thousands of lines costs one write, not one each (to journald, a pipe or a file)."""
    global _hold_depth
    with _hold_lock:  # a count, not a flag: nested or concurrent holds end at the last one
        _hold_depth += 1
    try:
        yield
    finally:
        with _hold_lock:
            _hold_depth -= 1
            last = not _hold_depth
        if last:
            for output in _outputs:
                output.flush()


def _own_buffering(stream: IO[str]) -> None:
    # stderr is line-buffered: every newline would be a write(2) and :func:`held` would hold
    # nothing. LineWriter flushes each line itself outside held(), so lines still leave at once.
    if isinstance(stream, io.TextIOWrapper) and stream.line_buffering:
        stream.reconfigure(line_buffering=False)
        _unbuffered.append(stream)


class _ToStructlog(logging.Handler):
    """Re-emits records of stdlib logging (watchdog logs through it) as structured events."""

    def emit(self, record: logging.LogRecord) -> None:
        log = structlog.get_logger(component=record.name)
        method = getattr(log, record.levelname.lower(), log.warning)
        method("library_log", message=record.getMessage())


_handler = _ToStructlog()
_saved_showwarning = warnings.showwarning


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    structlog.get_logger(component="python").warning(
        "python_warning", category=category.__name__, message=str(message), source=f"{filename}:{lineno}"
    )


def _capture_foreign_output() -> None:
    # Anything a library writes to stderr by itself (warnings, stdlib logging's last-resort
    # handler) would break "one JSON object per line" for journalctl | jq. Route it through here.
    warnings.showwarning = _show_warning
    root = logging.getLogger()
    if _handler not in root.handlers:
        root.addHandler(_handler)
    root.setLevel(logging.WARNING)


def reset() -> None:
    """Return structlog (and the capture of warnings and stdlib logging) to their defaults (for tests)."""
    structlog.reset_defaults()
    _outputs.clear()
    while _journals:
        _journals.pop().close()
    while _unbuffered:
        _unbuffered.pop().reconfigure(line_buffering=True)
    warnings.showwarning = _saved_showwarning
    logging.getLogger().removeHandler(_handler)


def get_logger(name: str) -> Any:
    """A logger bound to ``component=name``; configuration is looked up lazily at each call."""
    return structlog.get_logger(component=name)
