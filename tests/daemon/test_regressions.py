"""Regressions live: a real daemon with regression checks on, results files written over time,
and ``watcher follow --regressions`` as a real process beside it: the flag and its reasons in the
database and the report files, the ``model_regressed`` event, and only the regressed files
followed. The neighbours' verdicts follow removals and late arrivals."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testing.daemon import OBSERVERS, Daemon
from testing.helpers import doc, wait_until, write_atomically

pytestmark = pytest.mark.slow  # real daemon processes

MODEL = "00000000-0000-4000-8000-000000000001"
OTHER = "00000000-0000-4000-8000-000000000002"
THRESHOLDS = [0.0, 0.25, 0.5, 0.75, 1.0]


def experiment(day: int, recall_at_half: float, model: str = MODEL, hour: int = 0) -> dict[str, Any]:
    """A results file whose chosen point (target 0.85) is threshold 0.5 at this recall."""
    return doc(model_id=model, experiment_date=f"2026-01-{day:02d}T{hour:02d}:00:00Z", threshold_arr=THRESHOLDS,
               recall_arr=[1.0, 0.99, recall_at_half, 0.3, 0.0])  # fmt: skip


@pytest.fixture(params=list(OBSERVERS))
def daemon(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Daemon]:
    env = {**OBSERVERS[request.param], "WATCHER_REGRESSIONS": "true", "WATCHER_REPORT_FORMATS": "csv,json,markdown"}
    d = Daemon(tmp_path, env=env)
    yield d
    d.stop()


def report(d: Daemon) -> dict[str, dict[str, str]]:
    path = d.root / "var" / "reports" / "report.csv"
    if not path.exists():
        return {}
    with path.open(newline="") as fh:
        return {row["model_id"]: row for row in csv.DictReader(fh)}


def newest(d: Daemon, path: str) -> dict[str, str] | None:
    """The model's report row once its newest file is ``path``."""
    row = report(d).get(MODEL)
    return row if row is not None and row["path"] == path else None


def verdicts(d: Daemon) -> dict[str, list[str]]:
    return {p: json.loads(r) for p, r in d.query("SELECT path, regression FROM results")}


def test_a_worse_experiment_is_flagged_live_and_followed(daemon: Daemon, tmp_path: Path) -> None:
    write_atomically(daemon.inbox / "day1.json", experiment(1, 0.9))
    write_atomically(daemon.inbox / "other.json", experiment(1, 0.9, model=OTHER))
    daemon.start()
    daemon.wait_results({"day1.json": MODEL, "other.json": OTHER})
    out = (tmp_path / "follow.out").open("wb")
    # --last 100, more than this test records: every regression from the start, so the files
    # written below are followed however long this process takes to start.
    follower = subprocess.Popen(
        [sys.executable, "-m", "watcher", "follow", "--regressions", "--last", "100", "--format", "json",
         "--db", str(daemon.db)],
        stdout=out, stderr=subprocess.PIPE, env=daemon.env,
    )  # fmt: skip
    out.close()
    try:
        # A worse experiment of the model (and a worse one of another model's file, but its first:
        # nothing to compare with).
        write_atomically(daemon.inbox / "day2.json", experiment(2, 0.8))
        event = daemon.wait_event("model_regressed", path="day2.json")
        reasons = ["target no longer met", "recall down 0.1 (0.9 -> 0.8)"]
        assert (event["model_id"], event["reasons"], event["previous_path"]) == (MODEL, reasons, "day1.json")
        assert event["level"] == "warning"
        row = wait_until(lambda: newest(daemon, "day2.json"), what="day2 in the report")
        assert (row["regressed"], row["regression"]) == ("true", "; ".join(reasons))
        assert report(daemon)[OTHER]["regressed"] == "false"
        md = (daemon.root / "var" / "reports" / "report.md").read_text()
        assert f"| day2.json | true | {'; '.join(reasons)} |" in md
        as_json = json.loads((daemon.root / "var" / "reports" / "report.json").read_text())
        assert [(o["regressed"], o["regression"]) for o in as_json] == [(True, "; ".join(reasons)), (False, "")]
        assert daemon.query("SELECT detail FROM history WHERE path = 'day2.json'") == [
            (json.dumps({"regression": reasons}),)
        ]

        # Better again: not flagged, nothing followed.
        write_atomically(daemon.inbox / "day3.json", experiment(3, 0.95))
        wait_until(lambda: newest(daemon, "day3.json"), what="day3 in the report")
        assert report(daemon)[MODEL]["regressed"] == "false"

        # A late arrival between day 1 and day 2, better than both: day 2 is now compared with
        # it (a larger drop); the newest stays right.
        write_atomically(daemon.inbox / "day15.json", experiment(1, 0.97, hour=12))
        wait_until(lambda: verdicts(daemon).get("day2.json") == ["target no longer met",
                   "recall down 0.17 (0.97 -> 0.8)"], what="day2 compared with the late arrival")  # fmt: skip
        assert verdicts(daemon)["day15.json"] == []
        # The worse one removed: day 3 is compared with the late arrival, and is no regression.
        (daemon.inbox / "day2.json").unlink()
        wait_until(lambda: "day2.json" not in verdicts(daemon), what="day2 removed")
        assert verdicts(daemon) == {"day1.json": [], "day15.json": [], "day3.json": [], "other.json": []}
        # A rewrite of the newest that makes it worse is flagged again, and followed.
        write_atomically(daemon.inbox / "day3.json", experiment(3, 0.5))
        daemon.wait_event("model_regressed", path="day3.json", previous_path="day15.json")
        moved = "threshold moved 0.25 (0.5 -> 0.25)"
        wait_until(lambda: report(daemon)[MODEL]["regression"] == moved, what="the report's reason")
        lines = wait_until(lambda: _lines(tmp_path / "follow.out", 2), what="two followed lines")
    finally:
        follower.send_signal(signal.SIGTERM)
        code = follower.wait(15)
        assert follower.stderr is not None
        with follower.stderr:
            err = follower.stderr.read()
    assert (code, err) == (0, b"")
    # Nearest the target is now threshold 0.25 (recall 0.99): the target is met, the threshold moved.
    assert [(e["path"], e["outcome"], e["regression"]) for e in lines] == [
        ("day2.json", "scored", reasons),
        ("day3.json", "scored", [moved]),
    ]


def _lines(path: Path, n: int) -> list[dict[str, Any]] | None:
    text = path.read_text()
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    return lines if len(lines) >= n else None
