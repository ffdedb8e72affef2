"""Native journal entries: a real datagram socket standing in for journald's, real file descriptors."""

from __future__ import annotations

import array
import os
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from watcher import logs
from watcher.journal import PRIORITY, stderr_is_journal


def parse(data: bytes) -> dict[str, str]:
    """The native protocol, read back."""
    out, i = {}, 0
    while i < len(data):
        nl = data.index(b"\n", i)
        line = data[i:nl]
        if b"=" in line:
            name, value = line.split(b"=", 1)
            i = nl + 1
        else:
            name = line
            (size,) = struct.unpack("<Q", data[nl + 1 : nl + 9])
            value = data[nl + 9 : nl + 9 + size]
            i = nl + 9 + size + 1
        out[name.decode()] = value.decode()
    return out


@pytest.fixture
def journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[socket.socket, str]]:
    """A socket where entries arrive, and stderr's stand-in named by $JOURNAL_STREAM."""
    path = str(tmp_path / "journal.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.settimeout(5)
        stream = (tmp_path / "stderr").open("w")
        st = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        logs.configure("info", "auto", stream=stream, journal_socket=path)
        yield sock, str(tmp_path / "stderr")
        stream.close()


def test_stderr_is_the_journal_only_when_journal_stream_names_it(tmp_path: Path) -> None:
    with (tmp_path / "a").open("w") as a, (tmp_path / "b").open("w") as b:
        st = os.fstat(a.fileno())
        env = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        assert stderr_is_journal(env, a.fileno())
        assert not stderr_is_journal(env, b.fileno())
        assert not stderr_is_journal({}, a.fileno())
        assert not stderr_is_journal({"JOURNAL_STREAM": "junk"}, a.fileno())


def test_an_event_is_one_entry_with_fields(journal: tuple[socket.socket, str]) -> None:
    sock, stderr = journal
    errors = [{"field": "model_id", "message": "not a UUID"}]
    logs.get_logger("watcher.reconcile").warning("file_rejected", path="run1/bad\nname.json", errors=errors)
    fields = parse(sock.recv(1 << 20))
    assert fields["WATCHER_EVENT"] == "file_rejected"
    assert fields["PRIORITY"] == str(PRIORITY["warning"]) == "4"
    assert fields["WATCHER_PATH"] == "run1/bad\nname.json"  # a newline: the binary form, intact
    assert fields["WATCHER_ERRORS"] == '[{"field": "model_id", "message": "not a UUID"}]'
    assert fields["WATCHER_COMPONENT"] == "watcher.reconcile"
    assert fields["SYSLOG_IDENTIFIER"] == "watcher"
    assert "\n" not in fields["MESSAGE"] and fields["MESSAGE"].startswith("file_rejected path=")
    logs.get_logger("x").info("daemon_ready")
    assert parse(sock.recv(1 << 20))["PRIORITY"] == "6"
    logs.get_logger("x").debug("below_the_level")
    assert Path(stderr).read_text() == ""  # nothing on stderr: the entries went to the socket


def test_an_entry_too_big_for_a_datagram_goes_in_a_memfd(journal: tuple[socket.socket, str]) -> None:
    sock, _ = journal
    big = "x" * (4 << 20)
    logs.get_logger("x").error("huge", detail=big)
    fds = array.array("i")
    _, ancillary, _, _ = sock.recvmsg(1 << 16, socket.CMSG_SPACE(fds.itemsize))
    level, kind, data = ancillary[0]
    assert (level, kind) == (socket.SOL_SOCKET, socket.SCM_RIGHTS)
    fds.frombytes(data[: fds.itemsize])
    with os.fdopen(fds[0], "rb") as memfd:
        memfd.seek(0)  # journald maps the file; the offset is where the writer left it
        fields = parse(memfd.read())
    assert fields["WATCHER_DETAIL"] == big
    assert fields["PRIORITY"] == "3"


def test_json_lines_when_stderr_is_not_the_journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", "1:2")
    with (tmp_path / "stderr").open("w") as stream:
        logs.configure("info", "auto", stream=stream, journal_socket=str(tmp_path / "none.sock"))
        logs.get_logger("x").info("daemon_ready")
    assert '"event": "daemon_ready"' in (tmp_path / "stderr").read_text()
