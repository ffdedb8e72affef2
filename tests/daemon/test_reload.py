"""SIGHUP re-reads the config: a real daemon process, its config file, its database."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testing.daemon import Daemon
from testing.helpers import doc, wait_until, write

pytestmark = pytest.mark.slow  # real daemon processes


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    config = tmp_path / "config.toml"
    config.write_text("target_recall = 0.85\n")
    d = Daemon(tmp_path, "--config", str(config))
    yield d
    d.stop()


def targets(d: Daemon) -> set[float]:
    return {row[0] for row in d.query("SELECT target_recall FROM results")}


def test_reload_rescores_for_a_new_target_and_refuses_a_bad_config(daemon: Daemon, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    write(daemon.inbox / "a.json", doc())
    daemon.start()
    wait_until(lambda: targets(daemon) == {0.85}, what="scored for 0.85")
    pid = daemon.proc.pid if daemon.proc else 0

    config.write_text("target_recall = 0.9\nobserver = 'polling'\n")
    daemon.signal(signal.SIGHUP)
    daemon.wait_event("config_reloaded", changed=["target_recall"])
    partial = daemon.wait_event("config_reload_partial")
    assert partial["keys"] == ["observer"]  # kept until a restart
    wait_until(lambda: targets(daemon) == {0.9}, what="rescored for 0.9")
    (reports,) = {row[0] for row in daemon.query("SELECT count(*) FROM results")}
    assert reports == 1

    config.write_text("target_recall = 7\n")  # out of range
    daemon.signal(signal.SIGHUP)
    refused = daemon.wait_event("config_reload_refused")
    assert "target_recall" in refused["error"]
    assert refused["level"] == "error"
    write(daemon.inbox / "b.json", doc())  # still the old settings: scored for 0.9
    wait_until(lambda: len(daemon.results()) == 2, what="the next file")
    assert targets(daemon) == {0.9}
    daemon.assert_alive()
    assert daemon.proc is not None and daemon.proc.pid == pid
    assert [e for e in daemon.events() if e["event"] == "daemon_starting"] != []  # the same run's log
    assert daemon.stop() == 0


def test_systemd_hears_status_reloading_and_ready(tmp_path: Path) -> None:
    """The notify socket as systemd's: live STATUS= after changes, RELOADING=1 then READY=1."""
    import socket
    import time

    config = tmp_path / "config.toml"
    config.write_text("target_recall = 0.85\n")
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(0.2)
        d = Daemon(tmp_path, "--config", str(config), env={"NOTIFY_SOCKET": str(path)})
        heard: list[str] = []

        def hear(what: str) -> bool:
            with contextlib.suppress(TimeoutError):
                heard.append(sock.recv(4096).decode())
            return any(what in m for m in heard)

        try:
            d.start()
            wait_until(lambda: hear("READY=1"), what="READY=1")
            write(d.inbox / "a.json", doc())
            wait_until(lambda: hear("STATUS=watching") and "1 models, 1 results" in heard[-1], what="a live STATUS=")
            assert "last change " in heard[-1]
            heard.clear()
            before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
            config.write_text("target_recall = 0.9\n")
            d.signal(signal.SIGHUP)
            wait_until(lambda: hear("READY=1"), what="READY=1 after the reload")
            reloading = next(m for m in heard if "RELOADING=1" in m)
            usec = int(reloading.split("MONOTONIC_USEC=")[1].split("\n")[0])
            assert before <= usec <= time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
            assert heard.index(reloading) < max(i for i, m in enumerate(heard) if "READY=1" in m)
        finally:
            d.stop()


def test_the_start_is_extended_only_while_the_writer_makes_progress(make_settings: Any) -> None:
    """EXTEND_TIMEOUT_USEC= while the start-up reconcile's progress moves the writer's tick; none
    once it stands still (a hung start then meets TimeoutStartSec)."""
    import threading
    import time
    from types import SimpleNamespace

    from watcher.lifecycle import EXTEND_BY, EXTEND_EVERY, PROGRESS_WITHIN, Lifecycle

    sent: list[str] = []
    writer = SimpleNamespace(tick=time.monotonic())
    life = Lifecycle(make_settings(), writer, None, None, threading.Event(), None, send=sent.append)  # type: ignore[arg-type]
    life.starting()
    assert sent == [f"EXTEND_TIMEOUT_USEC={int(EXTEND_BY * 1e6)}"]
    life.starting()  # not again within EXTEND_EVERY
    assert len(sent) == 1
    life.extended -= EXTEND_EVERY
    life.starting()
    assert len(sent) == 2
    life.extended -= EXTEND_EVERY
    writer.tick -= PROGRESS_WITHIN + 1  # no progress for a while: no extension
    life.starting()
    assert len(sent) == 2
