"""Log events as native journal entries, when stderr is the journal.

systemd sets ``$JOURNAL_STREAM`` to the device and inode of the stream it connects a service's
stdout/stderr to; when stderr's own match, stderr is the journal, and each event goes to the
journal's socket instead, as one entry with fields: ``PRIORITY`` from the level, ``WATCHER_EVENT``,
and every other key of the event upper-cased with a ``WATCHER_`` prefix (``path`` ->
``WATCHER_PATH``; values that are not strings as JSON), ``MESSAGE`` a readable one-liner. So
``journalctl -u watcher WATCHER_EVENT=file_rejected`` lists the rejected files and
``journalctl -u watcher -p warning`` the problems, with no jq.

The protocol is the journal's native one, written directly (it is short): one datagram per entry
to ``/run/systemd/journal/socket``, ``KEY=value`` lines, or ``KEY``, a 64-bit little-endian
length and the raw value for a value with a newline; an entry too big for a datagram goes in a
sealed memfd passed along with the datagram. The socket is a file-system AF_UNIX socket:
``RestrictAddressFamilies=AF_UNIX`` allows it and ``PrivateNetwork=`` does not hide it.
"""

from __future__ import annotations

import array
import errno
import json
import os
import re
import socket
import struct
import threading
from collections.abc import Mapping
from typing import Any

SOCKET = "/run/systemd/journal/socket"
#: syslog priorities by structlog level.
PRIORITY = {"debug": 7, "info": 6, "warning": 4, "warn": 4, "error": 3, "exception": 3, "critical": 2, "fatal": 2}
#: Keys the entry carries in fields of their own (or not at all: the journal stamps its own time).
_OWN = frozenset({"event", "level", "timestamp"})
_BAD = re.compile(r"[^A-Z0-9_]")


def stderr_is_journal(env: Mapping[str, str] | None = None, fd: int = 2) -> bool:
    """True when ``fd`` is the stream systemd connected to the journal (``$JOURNAL_STREAM``)."""
    value = (os.environ if env is None else env).get("JOURNAL_STREAM", "")
    try:
        dev, ino = (int(part) for part in value.split(":"))
        st = os.fstat(fd)
    except (ValueError, OSError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def field_name(key: str) -> str:
    """``path`` -> ``WATCHER_PATH``: upper case, letters, digits and underscores only."""
    return "WATCHER_" + _BAD.sub("_", key.upper())


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=repr)


def message(event_dict: Mapping[str, Any]) -> str:
    """The entry's MESSAGE: the event's name, then ``key=value`` for the rest, on one line."""
    parts = [str(event_dict.get("event", ""))]
    for key, value in event_dict.items():
        if key not in _OWN and key != "component":
            text = _text(value)
            parts.append(f"{key}={json.dumps(text, ensure_ascii=False) if ' ' in text or not text else text}")
    return " ".join(parts).replace("\n", "\\n")


def entry(event_dict: Mapping[str, Any], identifier: str = "watcher") -> dict[str, str]:
    """The journal fields of one event."""
    fields = {
        "MESSAGE": message(event_dict),
        "PRIORITY": str(PRIORITY.get(str(event_dict.get("level", "info")), 6)),
        "SYSLOG_IDENTIFIER": identifier,
        "WATCHER_EVENT": str(event_dict.get("event", "")),
    }
    for key, value in event_dict.items():
        if key not in _OWN:
            fields[field_name(key)] = _text(value)
    return fields


def encode(fields: Mapping[str, str]) -> bytes:
    """The native protocol's datagram for ``fields``."""
    out = bytearray()
    for name, value in fields.items():
        data = value.encode("utf-8", "replace")
        if b"\n" in data:
            out += name.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += name.encode() + b"=" + data + b"\n"
    return bytes(out)


class JournalRenderer:
    """structlog's last processor: the event as the datagram :class:`JournalOutput` sends."""

    def __call__(self, logger: Any, method: str, event_dict: dict[str, Any]) -> bytes:
        return encode(entry(event_dict))


class JournalOutput:
    """structlog's output: one datagram per event to the journal's socket (one socket per process:
    a forked worker opens its own). A send that fails falls back to ``fallback`` (stderr, which
    is the journal's stream anyway), so no event is lost silently."""

    def __init__(self, fallback: Any, path: str = SOCKET) -> None:
        self.path = path
        self.fallback = fallback
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._pid = 0

    def _socket(self) -> socket.socket:
        if self._sock is None or self._pid != os.getpid():
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._pid = os.getpid()
        return self._sock

    def msg(self, payload: bytes) -> None:
        """Send one entry."""
        with self._lock:
            try:
                try:
                    self._socket().sendto(payload, self.path)
                except OSError as exc:
                    if exc.errno not in (errno.EMSGSIZE, errno.ENOBUFS):
                        raise
                    self._send_large(payload)
            except OSError:
                self.fallback.msg(payload.decode("utf-8", "replace").replace("\n", " "))

    def _send_large(self, payload: bytes) -> None:
        fd = os.memfd_create("watcher-journal", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.write(fd, payload)
            import fcntl

            seals = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
            rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))]
            self._socket().sendmsg([], rights, 0, self.path)
        finally:
            os.close(fd)

    def close(self) -> None:
        """Close this process's socket (a new one opens at the next entry)."""
        with self._lock:
            if self._sock is not None and self._pid == os.getpid():
                self._sock.close()
            self._sock = None

    def flush(self) -> None:
        """Nothing is held back: each entry leaves as it is logged."""

    debug = info = warning = warn = error = err = critical = exception = fatal = failure = log = msg
