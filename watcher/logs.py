"""The one structlog set-up. Called once, at the edge (the CLI); :func:`reset` undoes it for tests.

Output goes to stderr: JSON lines when it is not a TTY (or ``log_format = "json"``), a readable
console format on a TTY. One event is always one line (JSON escapes newlines in file names), and
tracebacks never carry local variables, which could hold file contents.
"""

from __future__ import annotations

import logging
import sys
import warnings
from typing import IO, Any, Literal, TextIO

import structlog

LogFormat = Literal["auto", "json", "console"]

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def resolve_format(log_format: LogFormat, stream: IO[str]) -> Literal["json", "console"]:
    """``auto`` means console on a TTY and JSON lines anywhere else (journald, pipes, files)."""
    if log_format != "auto":
        return log_format
    isatty = getattr(stream, "isatty", None)
    return "console" if isatty is not None and isatty() else "json"


def configure(level: str = "info", log_format: LogFormat = "auto", stream: TextIO | None = None) -> None:
    """Configure structlog process-wide: level filter, timestamps, and the renderer."""
    stream = sys.stderr if stream is None else stream
    shared: list[Any] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: list[Any]
    if resolve_format(log_format, stream) == "json":
        renderer = [
            structlog.processors.ExceptionRenderer(structlog.tracebacks.ExceptionDictTransformer(show_locals=False)),
            structlog.processors.JSONRenderer(),
        ]
    else:
        renderer = [structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback)]
    structlog.configure(
        processors=shared + renderer,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.WriteLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )

    _capture_foreign_output()


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
    warnings.showwarning = _saved_showwarning
    logging.getLogger().removeHandler(_handler)


def get_logger(name: str) -> Any:
    """A logger bound to ``component=name``; configuration is looked up lazily at each call."""
    return structlog.get_logger(component=name)
