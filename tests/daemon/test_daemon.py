"""``watcher run`` as a real process: real files, real signals, observed through the database and log."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from testing.daemon import OBSERVERS, Daemon
from testing.helpers import descendants, doc, wait_until, write, write_atomically
from watcher.outcomes import BAD_NAME
from watcher.reports.files import write_reports
from watcher.store import Store

pytestmark = pytest.mark.slow  # real daemon processes


def mid(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


@pytest.fixture(params=list(OBSERVERS))
def daemon(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Daemon]:
    d = Daemon(tmp_path, env=OBSERVERS[request.param])
    yield d
    d.stop()


def test_lifecycle_of_files(daemon: Daemon, tmp_path: Path) -> None:
    write(daemon.inbox / "present.json", doc(model_id=mid(1)))
    daemon.start()
    daemon.wait_results({"present.json": mid(1)})
    daemon.assert_invariant()

    write(daemon.inbox / "direct.json", doc(model_id=mid(2)))
    write_atomically(daemon.inbox / "atomic.json", doc(model_id=mid(3)))
    outside = write(tmp_path / "elsewhere" / "moved-in.json", doc(model_id=mid(4)))
    shutil.move(outside, daemon.inbox / "moved-in.json")  # a bare create: no close event will come
    write(daemon.inbox / "new" / "deeper" / "sub.json", doc(model_id=mid(5)))
    expected = {"present.json": mid(1), "direct.json": mid(2), "atomic.json": mid(3), "moved-in.json": mid(4),
                "new/deeper/sub.json": mid(5)}  # fmt: skip
    daemon.wait_results(expected)
    daemon.assert_invariant()

    write(daemon.inbox / "direct.json", doc(model_id=mid(22)))  # modify
    os.rename(daemon.inbox / "atomic.json", daemon.inbox / "renamed.json")  # rename inside the tree
    (daemon.inbox / "present.json").unlink()  # delete
    del expected["present.json"], expected["atomic.json"]
    expected.update({"direct.json": mid(22), "renamed.json": mid(3)})
    daemon.wait_results(expected)
    daemon.assert_invariant()

    write(daemon.inbox / "direct.json", doc(model_id=mid(22), recall_arr=[9]))  # valid -> invalid
    wait_until(lambda: daemon.rejections() == {"direct.json"}, what="rejection")
    assert "direct.json" not in daemon.results()
    daemon.assert_invariant()
    write(daemon.inbox / "direct.json", doc(model_id=mid(22)))  # -> valid again
    daemon.wait_results(expected)
    assert daemon.rejections() == set()
    daemon.assert_invariant()

    rejected = [e for e in daemon.events() if e["event"] == "file_rejected"]
    assert [(e["path"], e["errors"][0]["field"]) for e in rejected] == [("direct.json", "recall_arr[0]")]
    report = daemon.root / "var" / "reports" / "report.csv"
    wait_until(lambda: report.exists() and report.read_text().count("\n") == 1 + len(expected), what="report.csv")
    assert daemon.stop() == 0


def test_slow_writer_is_never_judged_half_written(daemon: Daemon) -> None:
    if daemon.polling:
        # No close event comes to a poller: a file is finished once it stayed the same for
        # settle_seconds. The writer pauses for 5 polling intervals, less than that.
        daemon.env["WATCHER_SETTLE_SECONDS"] = "1.5"
        pause = 1.0
    else:
        pause = 2.0  # well past settle_seconds (0.5 s), with the file open: its close decides
    daemon.start()
    text = json.dumps(doc(model_id=mid(7)))
    with (daemon.inbox / "slow.json").open("w") as fh:
        fh.write(text[: len(text) // 2])
        fh.flush()
        threading.Event().wait(pause)  # the scenario: a writer pausing mid-file
        fh.write(text[len(text) // 2 :])
    daemon.wait_results({"slow.json": mid(7)})
    assert daemon.query("SELECT outcome FROM history WHERE path = 'slow.json'") == [("scored",)]
    daemon.assert_invariant()


def test_polling_a_writer_pausing_past_settle_seconds_is_judged_twice(tmp_path: Path) -> None:
    # What polling cannot know: a file left unchanged for settle_seconds is judged as it stands
    # (here: half a document, rejected), and judged again once the sweep sees it rewritten.
    d = Daemon(tmp_path, env=OBSERVERS["polling"])
    try:
        d.start()
        text = json.dumps(doc(model_id=mid(8)))
        with (d.inbox / "paused.json").open("w") as fh:
            fh.write(text[: len(text) // 2])
            fh.flush()
            wait_until(lambda: d.rejections() == {"paused.json"}, what="the half file judged")
            fh.write(text[len(text) // 2 :])
        d.wait_results({"paused.json": mid(8)})
        outcomes = d.query("SELECT outcome FROM history WHERE path = 'paused.json' ORDER BY id")
        assert outcomes == [("rejected",), ("scored",)]
        d.assert_invariant()
    finally:
        assert d.stop() == 0


def test_burst_of_2000_files_all_ingested_while_readers_read(daemon: Daemon) -> None:
    daemon.start()
    errors: list[Exception] = []
    stop_reading = threading.Event()

    def reader() -> None:
        while not stop_reading.is_set():
            try:
                # One statement is one snapshot: it must never see a half-applied batch.
                consistent = daemon.query(
                    "SELECT (SELECT count(*) FROM report) = (SELECT count(DISTINCT model_id) FROM results)"
                    " AND (SELECT count(*) FROM results) <= (SELECT count(*) FROM history WHERE outcome = 'scored')"
                )
                assert consistent in ([], [(1,)]), consistent
            except Exception as exc:
                errors.append(exc)

    readers = [threading.Thread(target=reader) for _ in range(2)]
    for t in readers:
        t.start()
    for i in range(2000):
        write(daemon.inbox / f"b{i // 100}" / f"{i}.json", doc(model_id=mid(i)))
    wait_until(lambda: daemon.query("SELECT count(*) FROM results")[0][0] == 2000, timeout=120, what="2000 results")
    stop_reading.set()
    for t in readers:
        t.join()
    assert errors == []
    assert daemon.query("SELECT count(*) FROM report")[0][0] == 2000
    report = daemon.root / "var" / "reports" / "report.csv"
    wait_until(lambda: report.exists() and report.read_text().count("\n") == 2001, what="report.csv with 2000 rows")
    # Coalesced: at most one write per report_interval (0.2 s) while the burst lasted, not one per file.
    # The log line follows the files it reports on: wait for it too.
    writes = wait_until(lambda: [e for e in daemon.events() if e["event"] == "reports_written"], what="log line")
    first = datetime.fromisoformat(writes[0]["timestamp"])
    span = (datetime.fromisoformat(writes[-1]["timestamp"]) - first).total_seconds()
    assert 1 <= len(writes) <= span / 0.2 + 2, (len(writes), span)
    daemon.assert_invariant()
    assert daemon.stop() == 0


def test_the_tables_follow_each_change_by_its_models_alone_and_match_a_whole_render(daemon: Daemon) -> None:
    for i in range(30):
        write(daemon.inbox / f"r{i}.json", doc(model_id=mid(i)))
    daemon.start()
    daemon.wait_results({f"r{i}.json": mid(i) for i in range(30)})
    reports = daemon.root / "var" / "reports"

    def as_rendered() -> bool:
        """The daemon's table files hold what a whole render of its database gives."""
        with Store.open_readonly(daemon.db) as store, store.snapshot():
            whole = {
                p.name: p.read_bytes() for p in write_reports(store.report_rows, daemon.root / "whole", ["csv", "json"])
            }
        return all((reports / name).exists() and (reports / name).read_bytes() == data for name, data in whole.items())

    wait_until(as_rendered, what="the first tables")
    write(daemon.inbox / "r0.json", doc(model_id=mid(100)))  # its model gone, another one new
    write(daemon.inbox / "newer.json", doc(model_id=mid(1), experiment_date="2025-01-01T00:00:00Z"))  # supersedes r1
    (daemon.inbox / "r2.json").unlink()
    write(daemon.inbox / "r3.json", "{not json")
    daemon.wait_results({**{f"r{i}.json": mid(i) for i in range(4, 30)}, "r0.json": mid(100), "r1.json": mid(1),
                         "newer.json": mid(1)})  # fmt: skip
    wait_until(lambda: "r3.json" in daemon.rejections(), what="the rejection")
    wait_until(as_rendered, what="tables after the changes")
    assert b"newer.json" in (reports / "report.csv").read_bytes()
    assert [e["read"] for e in daemon.events() if e["event"] == "reports_written"][-1] == "changes"


def page_models(page: Path) -> list[str]:
    """The model_ids the HTML report page holds (none before it is written)."""
    if not page.exists():
        return []
    data = json.loads(page.read_text().split('<script type="application/json" id="data">')[1].split("</script>")[0])
    raw = base64.b64decode(data["idb"])
    return [str(uuid.UUID(bytes=raw[k : k + 16])) for k in range(0, len(raw), 16)] or data["ids"]


def test_the_page_follows_changes_in_its_own_process_and_a_stop_leaves_it_current(tmp_path: Path) -> None:
    d = Daemon(tmp_path)
    page = d.root / "var" / "reports" / "report.html"
    try:
        d.start()
        write(d.inbox / "a.json", doc(model_id=mid(1)))
        wait_until(lambda: page_models(page) == [mid(1)], what="model 1 on the page")

        def after_change() -> list[dict[str, Any]]:
            return [e for e in d.events() if e["event"] == "report_page_written" and e["after_change"] is not None]

        logged = wait_until(after_change, what="report_page_written after a change")
        assert logged[0]["seconds"] >= 0 and logged[0]["after_change"] >= 0
        write(d.inbox / "b.json", doc(model_id=mid(2)))
        d.wait_results({"a.json": mid(1), "b.json": mid(2)})
    finally:
        assert d.stop() == 0
    assert sorted(page_models(page)) == [mid(1), mid(2)]  # stopped: the page matches the database
    assert not [e for e in d.events() if e["event"] in ("report_page_unfinished", "report_process_broken")]


def test_sigterm_exits_0_and_changes_while_stopped_are_reconciled(daemon: Daemon) -> None:
    write(daemon.inbox / "a.json", doc(model_id=mid(1)))
    write(daemon.inbox / "b.json", doc(model_id=mid(2)))
    daemon.start()
    daemon.wait_results({"a.json": mid(1), "b.json": mid(2)})
    assert daemon.stop() == 0
    assert daemon.query("SELECT stopped_at IS NOT NULL FROM daemon_status") == [(1,)]

    (daemon.inbox / "a.json").unlink()
    write(daemon.inbox / "b.json", doc(model_id=mid(22)))
    write(daemon.inbox / "c.json", doc(model_id=mid(3)))
    daemon.start()
    daemon.wait_results({"b.json": mid(22), "c.json": mid(3)})
    daemon.assert_invariant()
    assert daemon.stop() == 0


def test_sigint_also_stops_cleanly(daemon: Daemon) -> None:
    daemon.start()
    daemon.signal(signal.SIGINT)
    assert daemon.proc is not None and daemon.proc.wait(15) == 0


def test_kill_9_during_a_burst_loses_nothing(daemon: Daemon) -> None:
    daemon.start()
    expected = {}
    for i in range(600):
        rel = f"k{i}.json"
        write(daemon.inbox / rel, doc(model_id=mid(i)))
        expected[rel] = mid(i)
        if i == 300:
            wait_until(lambda: daemon.query("SELECT count(*) FROM results")[0][0] > 0, what="ingestion begun")
            daemon.kill()
    daemon.start()
    daemon.wait_results(expected, timeout=60)
    assert daemon.query("PRAGMA integrity_check") == [("ok",)]
    daemon.assert_invariant()
    assert daemon.stop() == 0


def test_second_daemon_on_the_same_database_is_refused(daemon: Daemon, tmp_path: Path) -> None:
    daemon.start()
    other = Daemon(tmp_path).start(wait=False)
    assert other.proc is not None and other.proc.wait(15) == 3
    assert "another watcher is already running on this database" in daemon.log_path.read_text()


def test_status_reports_a_running_daemon(daemon: Daemon) -> None:
    write(daemon.inbox / "bad.json", "{")
    daemon.start()
    wait_until(lambda: daemon.rejections() == {"bad.json"}, what="rejection")
    proc = subprocess.run([sys.executable, "-m", "watcher", "status", "--db", str(daemon.db)],
                          capture_output=True, text=True, env=daemon.env, timeout=30)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    kind = "polling" if daemon.polling else "inotify"
    assert lines[0].startswith(f"daemon:          running (pid {daemon.proc.pid}, {kind} observer)")  # type: ignore[union-attr]
    assert "rejections:      1" in lines
    assert lines[-1].startswith("  bad.json: not valid JSON")
    if not daemon.polling:  # the poller's lines come with its first heartbeat (see the next test)
        assert not any(line.startswith("poll period:") for line in lines)


def test_status_shows_the_poll_period_and_the_last_sweep(tmp_path: Path) -> None:
    d = Daemon(tmp_path, env=OBSERVERS["polling"])
    try:
        d.start()

        def status() -> dict[str, Any] | None:
            proc = subprocess.run([sys.executable, "-m", "watcher", "status", "--db", str(d.db), "--json"],
                                  capture_output=True, text=True, env=d.env, timeout=30)  # fmt: skip
            row = json.loads(proc.stdout)["daemon"]
            return row if row["last_sweep_at"] else None  # written with the heartbeat, every 5 s

        row = wait_until(status, timeout=30, what="a finished sweep in the status")
        assert 0.15 <= row["poll_period"] <= 2.0 and row["sweep_seconds"] >= 0
        assert datetime.fromisoformat(row["last_sweep_at"]) >= datetime.fromisoformat(row["started_at"])
    finally:
        assert d.stop() == 0


def test_polling_mode_finds_a_file(tmp_path: Path) -> None:
    d = Daemon(tmp_path, env={"WATCHER_OBSERVER": "polling", "WATCHER_POLLING_INTERVAL": "0.2"})
    try:
        d.start()
        write(d.inbox / "sub" / "polled.json", doc(model_id=mid(9)))
        d.wait_results({"sub/polled.json": mid(9)})
        assert d.events()[0]["observer"] == "polling"
    finally:
        assert d.stop() == 0


def test_sd_notify_ready_stopping_and_watchdog(tmp_path: Path) -> None:
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(30)
    d = Daemon(tmp_path, env={"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "400000"})
    messages: list[str] = []
    try:
        d.start(wait=False)

        def got(msg: str) -> bool:
            while not any(m.startswith(msg) for m in messages):
                messages.append(sock.recv(4096).decode())
            return True

        got("READY=1")
        got("WATCHDOG=1")
        assert d.stop() == 0
        got("STOPPING=1")
        assert messages.index(next(m for m in messages if m.startswith("READY=1"))) < messages.index("STOPPING=1")
    finally:
        sock.close()
        d.stop()


def test_hidden_and_temp_names_are_never_processed(daemon: Daemon) -> None:
    daemon.start()
    for name in (".x.json.swp", "x.json.tmp", "x.part", "x.json~", ".hidden/y.json"):
        write(daemon.inbox / name, "{garbage")
    write(daemon.inbox / "marker.json", doc(model_id=mid(1)))
    daemon.wait_results({"marker.json": mid(1)})
    assert daemon.rejections() == set()
    assert {p for (p,) in daemon.query("SELECT path FROM history")} == {"marker.json"}


def test_a_name_that_is_not_utf8_is_rejected_and_the_daemon_goes_on(daemon: Daemon) -> None:
    # Such a name once killed the writer thread (SQLite cannot hold it), and with it the daemon,
    # at every restart while the file was there.
    inbox = os.fsencode(daemon.inbox)
    with open(os.path.join(inbox, b"before\xff.json"), "wb") as fh:
        fh.write(json.dumps(doc(model_id=mid(1))).encode())
    daemon.start()
    wait_until(lambda: daemon.rejections() == {"before\\xff.json"}, what="rejection found at start")
    os.mkdir(os.path.join(inbox, b"run\xfe"))
    with open(os.path.join(inbox, b"run\xfe/during.json"), "wb") as fh:
        fh.write(json.dumps(doc(model_id=mid(2))).encode())
    write(daemon.inbox / "fine.json", doc(model_id=mid(3)))
    daemon.wait_results({"fine.json": mid(3)})
    wait_until(lambda: daemon.rejections() == {"before\\xff.json", "run\\xfe/during.json"}, what="rejection")
    os.unlink(os.path.join(inbox, b"before\xff.json"))
    wait_until(lambda: daemon.rejections() == {"run\\xfe/during.json"}, what="removal")
    daemon.assert_alive()
    rejected = {e["path"]: e["errors"] for e in daemon.events() if e["event"] == "file_rejected"}
    assert rejected == {p: [{"field": None, "message": BAD_NAME}] for p in ("before\\xff.json", "run\\xfe/during.json")}
    assert daemon.stop() == 0


def test_an_idle_daemon_lets_its_worker_processes_go_and_starts_them_again(tmp_path: Path) -> None:
    d = Daemon(tmp_path, env={"WATCHER_WORKERS": "2", "WATCHER_WORKER_IDLE_SECONDS": "1"})
    try:
        d.start()
        assert d.proc is not None
        pid = d.proc.pid
        expected: dict[str, str] = {}
        for round_ in range(2):
            batch = {f"r{round_}/{i}.json": mid(100 * round_ + i) for i in range(64)}
            for rel, model in batch.items():
                write(d.inbox / rel, doc(model_id=model))
            expected |= batch
            # The HTML page's process (with the fork server and resource tracker) and, for batches
            # big enough, the workers: helpers start ...
            wait_until(lambda: len(descendants(pid)) >= 3, what="worker processes")
            d.wait_results(expected)
            # ... and once the daemon has had nothing to do for worker_idle_seconds, it is one process.
            wait_until(lambda: descendants(pid) == [], timeout=30, what="no helper process left")
        d.assert_invariant()
    finally:
        assert d.stop() == 0
