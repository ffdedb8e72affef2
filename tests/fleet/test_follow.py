"""``watcher follow --central``: the change log's windows read against a real PostgreSQL (rows
written as a shipped batch writes them, transactions left open across a read), and end to end:
two real daemons shipping, a real ``watcher follow --central`` process in a pipe, the server
restarted under it, SIGINT."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import psycopg
import pytest

from testing.fleet import Fleet, running_fleet
from testing.helpers import doc, wait_until, write
from tests.fleet.test_regressions import MODEL, OTHER, REASONS, experiment
from watcher.fleet.follow import FleetFollower

pytestmark = pytest.mark.timeout(180)


def _ship(
    conn: psycopg.Connection[Any],
    host: str,
    results: dict[str, str],
    rejections: dict[str, str] | None = None,
    gone: tuple[str, ...] = (),
) -> None:
    """What the shipper does in one batch: delete the batch's paths, insert their current rows.
    ``results``: path -> scored_at (the model_id is the path's stem); ``rejections``: path ->
    rejected_at; ``gone``: paths of the batch with no current row."""
    rejections = rejections or {}
    paths = [*results, *rejections, *gone]
    conn.execute("DELETE FROM watcher.results WHERE host = %s AND path = ANY(%s)", (host, paths))
    conn.execute("DELETE FROM watcher.rejections WHERE host = %s AND path = ANY(%s)", (host, paths))
    for path, at in results.items():
        conn.execute(
            "INSERT INTO watcher.results VALUES (%s, %s, %s, 'ana', '2024-05-01', '2024-05-01T00:00:00.000Z',"
            " 0.5, 0.85, 0, true, 0.85, 5, 'sha', 3, %s)",
            (host, path, path.split(".")[0], at),
        )
    for path, at in rejections.items():
        conn.execute(
            "INSERT INTO watcher.rejections VALUES (%s, %s, %s, 'sha', 3, %s)",
            (host, path, json.dumps([{"field": "recall_arr", "message": "too short"}]), at),
        )


def _lines(follower: FleetFollower) -> list[tuple[str, str, str]]:
    return [(e.host, e.entry.outcome, e.entry.path) for e in follower.poll()]


def test_windows_show_each_change_once_and_skip_reshipped_rows(central_db: Any) -> None:
    server, name = central_db
    with psycopg.connect(server.url(name), autocommit=True) as admin:
        with admin.transaction():
            _ship(admin, "a", {"m1.json": "t1", "m2.json": "t1"}, {"bad.json": "t1"})
        follower = FleetFollower(server.url(name))
        assert follower.poll() == []  # what was there before is not news
        with admin.transaction():
            _ship(admin, "a", {"m1.json": "t1", "m2.json": "t2"}, gone=("bad.json",))  # m1 re-shipped as it was
            _ship(admin, "b", {"m1.json": "t1"})
        assert _lines(follower) == [
            ("a", "scored", "m2.json"), ("a", "removed", "bad.json"), ("b", "scored", "m1.json"),
        ]  # fmt: skip
        assert follower.poll() == []
        # A transaction that began first and commits last is not skipped: the window stops below it.
        slow = psycopg.connect(server.url(name))
        _ship(slow, "a", {}, {"late.json": "t3"})
        with admin.transaction():
            _ship(admin, "b", {"m3.json": "t3"})
        assert _lines(follower) == []  # m3 waits behind the open transaction
        slow.commit()
        slow.close()
        lines = _lines(follower)
        assert lines == [("a", "rejected", "late.json"), ("b", "scored", "m3.json")]
        # A path changed twice between two reads is shown once, as it is now.
        with admin.transaction():
            _ship(admin, "a", {"m4.json": "t4"})
        with admin.transaction():
            _ship(admin, "a", {"m4.json": "t5"})
        entries = follower.poll()
        assert [(e.entry.path, e.entry.at) for e in entries] == [("m4.json", "t5")]
        assert entries[0].entry.model_id == "m4"
        follower.close()
    for last, only_rejections, expected in (
        (5, True, [("a", "late.json")]),
        (2, False, [("b", "m3.json"), ("a", "m4.json")]),
    ):
        back = FleetFollower(server.url(name), rejections_only=only_rejections, last=last)
        entries = back.poll()
        back.close()
        assert [(e.host, e.entry.path) for e in entries] == expected
        if only_rejections:
            assert entries[0].entry.errors == [{"field": "recall_arr", "message": "too short"}]


class Follow:
    """``watcher follow --central URL`` as a reader runs it (docs/fleet.md); its stdout read by a thread."""

    def __init__(self, fleet: Fleet, *args: str, env: dict[str, str] | None = None) -> None:
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("WATCHER_")}, **fleet.env, **(env or {})}
        self.err = (fleet.tmp / f"follow-{uuid.uuid4().hex[:6]}.err").open("wb+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "watcher", "follow", "--central", fleet.url(fleet.role("reader")),
             "--log-format", "json", *args],
            stdout=subprocess.PIPE, stderr=self.err, env=env,
        )  # fmt: skip
        self.text: list[str] = []
        assert self.proc.stdout is not None
        self.reader = threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True)
        self.reader.start()

    def _read(self, stream: IO[bytes]) -> None:
        for line in stream:
            self.text.append(line.decode())

    @property
    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in list(self.text)]

    def seen(self, host: str, outcome: str, path: str) -> dict[str, Any] | None:
        return next((x for x in self.lines if (x["host"], x["outcome"], x["path"]) == (host, outcome, path)), None)

    def wait(self, host: str, outcome: str, path: str) -> dict[str, Any]:
        return wait_until(lambda: self.seen(host, outcome, path), 30, what=f"{outcome} {host}:{path}")

    def stderr(self) -> str:
        self.err.seek(0)
        return self.err.read().decode()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.reader.join(10)  # the pipe's end reached
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        self.err.close()


@pytest.fixture(name="fleet")
def _fleet(pg_cluster: Any, tmp_path: Path) -> Iterator[Fleet]:
    with running_fleet(pg_cluster, tmp_path) as f:
        yield f


@pytest.fixture
def follows() -> Iterator[list[Follow]]:
    started: list[Follow] = []
    yield started
    for f in started:
        f.close()


def test_follow_central_end_to_end(fleet: Fleet, follows: list[Follow]) -> None:
    a, b = fleet.add_host("gpu-01"), fleet.add_host("gpu-02")
    fleet.add_reader()
    before = str(uuid.uuid4())
    write(a.inbox / "old.json", doc(model_id=before))
    fleet.check()
    live = Follow(fleet)
    follows.append(live)
    rejections = Follow(fleet, "--rejections")
    follows.append(rejections)
    wait_until(lambda: _activity(fleet).count("LISTEN") == 2, 20, what="both followers listening")
    model = str(uuid.uuid4())
    write(a.inbox / "run.json", doc(model_id=model))
    write(b.inbox / "sub" / "run.json", doc(model_id=model, recall_arr=[0.5, 0.4, 0.3, 0.2, 0.0]))
    write(b.inbox / "bad.json", doc(recall_arr=[1.0]))
    seen_a = live.wait("gpu-01", "scored", "run.json")
    assert (seen_a["model_id"], seen_a["optimal_threshold"], seen_a["closest_recall_value"]) == (model, 0.5, 0.85)
    assert live.wait("gpu-02", "scored", "sub/run.json")["target_met"] is False
    bad = live.wait("gpu-02", "rejected", "bad.json")
    assert bad["errors"] and "recall_arr" in json.dumps(bad["errors"])
    (a.inbox / "old.json").unlink()
    assert live.wait("gpu-01", "removed", "old.json")["model_id"] == before
    assert live.seen("gpu-01", "scored", "old.json") is None  # shipped before following began
    assert [x["path"] for x in rejections.lines] == ["bad.json"]
    fleet.check()
    assert len(live.lines) == 4  # each change once
    # --last: the most recent outcomes first, as text.
    text = Follow(fleet, "--last", "2", "--format", "text")
    follows.append(text)
    wait_until(lambda: len(text.text) == 2, 20, what="--last 2")
    assert text.text[1].split()[1:4] == ["gpu-01", "removed", "old.json"], text.text
    assert text.text[1].rstrip().endswith(f"model_id {before}")
    # The server restarted while following: logged once, followed on.
    fleet.server.stop("fast")
    wait_until(lambda: "central_unreachable" in live.stderr(), 20, what="central_unreachable")
    fleet.server.start()
    write(b.inbox / "after.json", doc())
    live.wait("gpu-02", "scored", "after.json")
    assert live.stderr().count("central_unreachable") == 1 and "central_back" in live.stderr()
    assert live.proc.poll() is None
    live.proc.send_signal(signal.SIGINT)
    assert live.proc.wait(10) == 0


def _activity(fleet: Fleet) -> str:
    with psycopg.connect(fleet.admin_url) as conn:
        rows = conn.execute("SELECT query FROM pg_stat_activity WHERE application_name = 'watcher follow'").fetchall()
    return " ".join(r[0] for r in rows)


def test_follow_central_unreachable_at_start_is_one_line_and_exit_3(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATCHER_")}
    url = f"postgresql://nobody@/watcher?host={tmp_path}"  # no server on this socket
    done = subprocess.run(
        [sys.executable, "-m", "watcher", "follow", "--central", url],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert done.returncode == 3, done.stderr
    assert done.stderr.count("\n") == 1 and "cannot connect to the central database" in done.stderr
    assert done.stdout == ""


def test_follow_central_regressions_judged_with_the_followers_settings(fleet: Fleet, follows: list[Follow]) -> None:
    # The hosts have regression checks off: the follower judges, under its own settings.
    a, b = fleet.add_host("gpu-01"), fleet.add_host("gpu-02")
    fleet.add_reader()
    write(a.inbox / "a.json", experiment(1, 0.9))
    fleet.check()
    on = {"WATCHER_REGRESSIONS": "true"}
    live = Follow(fleet, "--regressions", env=on)
    follows.append(live)
    both = Follow(fleet, "--regressions", "--rejections", "--format", "text", env=on)
    follows.append(both)
    loose = Follow(fleet, "--regressions", env={**on, "WATCHER_REGRESSION_RECALL_DELTA": "0.2"})
    follows.append(loose)
    every = Follow(fleet, env=on)
    follows.append(every)
    wait_until(lambda: _activity(fleet).count("LISTEN") == 4, 20, what="the followers listening")
    write(b.inbox / "first.json", experiment(3, 0.95, OTHER))  # the other model's first: nothing to compare
    write(b.inbox / "bad.json", doc(recall_arr=[1.0]))
    fleet.check()
    write(b.inbox / "b.json", experiment(2, 0.8))  # worse than gpu-01's day-1 experiment of the model
    fleet.check()
    seen = live.wait("gpu-02", "scored", "b.json")
    assert (seen["model_id"], seen["regression"]) == (MODEL, REASONS.split("; "))
    assert [(x["host"], x["path"]) for x in live.lines] == [("gpu-02", "b.json")]  # shipped after the others
    assert list(seen)[:3] == ["id", "at", "host"]
    assert loose.wait("gpu-02", "scored", "b.json")["regression"] == ["target no longer met"]
    every.wait("gpu-02", "scored", "b.json")
    assert "regression" not in every.seen("gpu-02", "scored", "first.json")  # type: ignore[operator]
    assert every.seen("gpu-02", "rejected", "bad.json") is not None
    wait_until(lambda: len(both.text) == 2, 30, what="a rejection and a regression as text")
    assert [line.split()[1:4] for line in both.text] == [
        ["gpu-02", "rejected", "bad.json"],
        ["gpu-02", "scored", "b.json"],
    ]
    assert both.text[1].rstrip().endswith(f"REGRESSED: {REASONS}")
    # Checks off where it runs: refused, one line, exit 2.
    off = Follow(fleet, "--regressions")
    follows.append(off)
    assert off.proc.wait(20) == 2
    assert off.stderr().strip().endswith("regression checks are off (set regressions = true)")
