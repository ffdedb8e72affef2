"""The fleet end to end, as docs/fleet.md sets it up: a real PostgreSQL, the
central schema and roles made with ``watcher central``, real ``watcher run`` daemons (each with
its own watch dir, database, host name and role) shipping to it, and ``watcher central publish``
keeping the fleet report files. The central invariant is checked after every scenario."""

from __future__ import annotations

import csv
import functools
import json
import random
import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from testing.daemon import Daemon
from testing.fleet import Fleet, kill_9, reference_files, running_fleet, watcher
from testing.helpers import doc, wait_until, write

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def fleet(pg_cluster: Any, tmp_path: Path) -> Iterator[Fleet]:
    with running_fleet(pg_cluster, tmp_path) as f:
        yield f


def _csv(path: Path) -> dict[str, dict[str, str]]:
    if not path.exists():
        return {}
    with path.open(newline="") as fh:
        return {row["model_id"]: row for row in csv.DictReader(fh)}


def test_three_hosts_ship_to_one_fleet_report(fleet: Fleet, tmp_path: Path) -> None:
    hosts = [fleet.add_host(f"gpu-0{i}") for i in (1, 2, 3)]
    report = fleet.publish(tmp_path / "fleet-reports")
    shared = "3f2b8c1e-7d4a-4e0b-9a6f-1c2d3e4f5a6b"
    write(hosts[0].inbox / "run-a.json", doc(model_id=shared, experiment_date="2024-05-01T12:00:00Z"))
    write(hosts[1].inbox / "sub" / "run-b.json", doc(model_id=shared, experiment_date="2024-05-02T09:00:00+02:00"))
    write(hosts[2].inbox / "bad.json", "{not json")
    own = {h.inbox: str(uuid.uuid4()) for h in hosts}
    for h in hosts:
        write(h.inbox / "own.json", doc(model_id=own[h.inbox]))
    fleet.check()
    # The same model on two hosts: the later experiment (2024-05-02T07:00Z on gpu-02) wins fleet-wide.
    wait_until(lambda: len(_csv(report)) == 4, 20, what="the fleet report file")
    wait_until(report.with_name("report.html").exists, 30, what="the fleet page (tests/fleet/test_page.py reads it)")
    assert (_csv(report)[shared]["host"], _csv(report)[shared]["path"]) == ("gpu-02", "sub/run-b.json")
    # A change on any host reaches the report file: gpu-01's file now holds the latest experiment.
    write(hosts[0].inbox / "run-a.json", doc(model_id=shared, experiment_date="2024-06-01T00:00:00Z"))
    wait_until(lambda: _csv(report).get(shared, {}).get("host") == "gpu-01", 20, what="gpu-01 winning")
    (hosts[2].inbox / "own.json").unlink()
    wait_until(lambda: own[hosts[2].inbox] not in _csv(report), 20, what="a removal on gpu-03")
    fleet.check()
    # Reading the fleet from the command line, as a reader.
    reader = {**fleet.env, "WATCHER_CENTRAL_URL": fleet.url(fleet.role("reader"))}
    done = watcher("report", "--central", "--format", "csv", env=reader)
    assert done.returncode == 0, done.stderr
    assert (
        done.stdout.splitlines()[0]
        == "model_id,issuer,optimal_threshold,closest_recall_value,experiment_date,host,path"
    )
    assert len(done.stdout.splitlines()) == 1 + 3
    status = watcher("status", "--central", env=reader)
    assert status.returncode == 0, status.stderr
    for name in ("gpu-01", "gpu-02", "gpu-03"):
        assert any(line.startswith(name) and " 0 " in line for line in status.stdout.splitlines()), status.stdout
    # A host configured with another host's name ships nothing of it: refused, logged, kept local.
    impostor = fleet.add_host("gpu-04", host_name="gpu-01")
    write(impostor.inbox / "x.json", doc())
    event = impostor.wait_event("central_refused")
    assert "may not write host 'gpu-01'" in event["error"]
    impostor.stop()
    del fleet.daemons["gpu-04"]
    with psycopg.connect(fleet.admin_url) as conn:
        assert conn.execute("SELECT count(*) FROM watcher.results WHERE path = 'x.json'").fetchone() == (0,)
    for h in hosts:
        assert h.stop() == 0
    fleet.check()


def _publish_events(fleet: Fleet) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (fleet.tmp / "publish.log").read_text().splitlines() if line.startswith("{")]


def _holds(host: Daemon, files: int) -> bool:
    return len(host.results()) + len(host.rejections()) == files


def test_server_stopped_mid_burst_loses_nothing(fleet: Fleet, tmp_path: Path) -> None:
    hosts = [fleet.add_host(f"node-{i}") for i in (1, 2)]
    report = fleet.publish(tmp_path / "fleet-reports")
    wait_until(report.exists, 20, what="the first fleet report")
    for i in range(60):
        write(hosts[i % 2].inbox / f"a{i}.json", doc())
    fleet.server.stop("fast")
    for i in range(60, 150):
        write(hosts[i % 2].inbox / f"a{i}.json", doc() if i % 10 else "[]")
    (hosts[0].inbox / "a0.json").unlink()
    for h, files in zip(hosts, (74, 75), strict=True):  # each host goes on locally meanwhile
        h.wait_event("central_unreachable")
        wait_until(functools.partial(_holds, h, files), 30, what=f"{files} files in {h.db}")
    fleet.server.start()
    fleet.check()
    for h in hosts:
        h.wait_event("central_back")
        assert len([e for e in h.events() if e["event"] == "central_unreachable"]) == 1
    wait_until(lambda: len(_csv(report)) == 140, 30, what="the fleet report after the restart")
    with psycopg.connect(fleet.admin_url) as conn:
        assert conn.execute("SELECT count(*), count(DISTINCT (host, path)) FROM watcher.results").fetchone() == (
            140,
            140,
        )
    # Written whole on reconnecting (a notification may have been lost); a change after that is
    # spliced in, and the files hold what a whole write gives: COPY's CSV, row_to_json's JSON.
    # (A change can land in the same write as a whole one still due to the reconnection, e.g. a
    # batch shipped again after the outage: then the next change is the one spliced.)
    for attempt in range(3):
        model = str(uuid.uuid4())
        write(hosts[1].inbox / f"after{attempt}.json", doc(model_id=model))
        wait_until(lambda: model in _csv(report), 20, what="a change after the restart")
        written = [e for e in _publish_events(fleet) if e.get("event") == "fleet_reports_written"]
        if not written[-1]["whole"]:
            break
    assert [e["whole"] for e in written if e["why"] == "connected"] == [True, True], written
    assert not written[-1]["whole"], written
    with psycopg.connect(fleet.admin_url) as conn:
        reference = reference_files(conn, tmp_path)
    assert (reference["csv"], reference["json"]) == (report.read_bytes(), report.with_name("report.json").read_bytes())


def test_kill_9_while_shipping_reships_harmlessly(fleet: Fleet) -> None:
    host = fleet.add_host("crashy")
    rng = random.Random(18)
    expected: dict[str, str] = {}
    for round_ in range(5):
        for i in range(80):
            model = str(uuid.uuid4())
            write(host.inbox / f"r{round_}-{i}.json", doc(model_id=model))
            expected[f"r{round_}-{i}.json"] = model
        # kill -9 at a random moment of the ingest-and-ship that follows
        wait_until(lambda: len(host.results()) > len(expected) - 80, 30)
        threading.Event().wait(rng.uniform(0.0, 0.3))  # the moment of the kill, not a synchronisation
        kill_9(host)
        host.start()
    host.wait_results(expected)
    fleet.check()
    with psycopg.connect(fleet.admin_url) as conn:
        assert conn.execute("SELECT count(*) FROM watcher.results WHERE host = 'crashy'").fetchone() == (400,)


def _online_backup(host: Daemon, to: Path) -> None:
    """The README's online backup, taken with the sqlite3 command while the daemon runs."""
    done = subprocess.run(["sqlite3", str(host.db), f".backup '{to}'"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def _put_back(host: Daemon, backup: Path) -> None:
    """The README's restore (the copy in place, its -wal and -shm deleted): also what a power cut
    leaves of a database whose last commits were never made durable."""
    for name in ("watcher.db", "watcher.db-wal", "watcher.db-shm"):
        (host.db.parent / name).unlink(missing_ok=True)
    shutil.copyfile(backup, host.db)


def _churn_while_down(host: Daemon, tag: str) -> None:
    """What changes in a folder while its daemon is down: rewrites, deletions, new files, a bad one."""
    names = sorted(p.name for p in host.inbox.glob("*.json"))
    for name in names[::5]:
        write(host.inbox / name, doc())
    for name in names[1::7]:
        (host.inbox / name).unlink()
    for i in range(10):
        write(host.inbox / f"{tag}-{i}.json", doc())
    write(host.inbox / f"{tag}-bad.json", "{not json")


def test_a_host_restored_from_its_backup_converges_centrally(fleet: Fleet, tmp_path: Path) -> None:
    # The scenario, as a new operator follows "Backing it up" on a fleet host.
    if shutil.which("sqlite3") is None:
        pytest.fail("the sqlite3 command (Debian package sqlite3; .ci/run installs it) is not installed")
    host = fleet.add_host("restored")
    for i in range(40):
        write(host.inbox / f"a{i}.json", doc())
    fleet.check()
    _online_backup(host, tmp_path / "backup.db")
    for i in range(60):  # shipped after the backup
        write(host.inbox / f"b{i}.json", doc())
    fleet.check()
    assert host.stop() == 0
    _churn_while_down(host, "down")
    _put_back(host, tmp_path / "backup.db")
    host.start()
    fleet.check(timeout=60)
    assert [e["event"] for e in host.events() if e["event"] == "central_resync"] == ["central_resync"]


def test_a_host_whose_last_commits_a_crash_took_back_converges_centrally(fleet: Fleet, tmp_path: Path) -> None:
    # A power cut in WAL with synchronous=NORMAL may take back the last commits: the host comes
    # back with an older database (here: the state of a moment before, as a backup holds it) whose
    # history then grows over ids the central database already holds.
    if shutil.which("sqlite3") is None:
        pytest.fail("the sqlite3 command (Debian package sqlite3; .ci/run installs it) is not installed")
    host = fleet.add_host("cut")
    for i in range(30):
        write(host.inbox / f"a{i}.json", doc())
    fleet.check()
    _online_backup(host, tmp_path / "before.db")
    for i in range(8):  # committed and shipped, then lost locally
        write(host.inbox / f"b{i}.json", doc())
    fleet.check()
    kill_9(host)
    _churn_while_down(host, "after")
    _put_back(host, tmp_path / "before.db")
    host.start()
    fleet.check(timeout=60)
