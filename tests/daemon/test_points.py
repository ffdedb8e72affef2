"""Several targets and pickers in a running daemon: its operating_points rows and points files follow
each file, and a reload with other extra targets judges every file again."""

from __future__ import annotations

import csv
import signal
from pathlib import Path

import pytest

from testing.daemon import Daemon
from testing.helpers import doc, wait_until, write

pytestmark = pytest.mark.slow  # a real daemon process


def _points(d: Daemon) -> list[tuple[object, ...]]:
    return d.query("SELECT path, n, kind, target, threshold, fpr, met FROM operating_points ORDER BY path, n")


def _points_csv(d: Daemon) -> list[list[str]] | None:
    path = d.db.parent / "reports" / "points.csv"
    try:
        with path.open(newline="") as fh:
            return [[row[2], row[3], row[4], row[8]] for row in csv.reader(fh)][1:]
    except FileNotFoundError:
        return None


def test_points_follow_the_files_and_a_reload_of_the_targets(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("extra_targets = [0.9]\n")
    d = Daemon(tmp_path, "--config", str(config))
    try:
        d.start()
        write(d.inbox / "a.json", doc(fpr_arr=[1.0, 0.5, 0.2, 0.1, 0.0]))
        two: list[tuple[object, ...]] = [
            ("a.json", 0, "recall", 0.85, 0.5, 0.2, 1),
            ("a.json", 1, "recall", 0.9, 0.25, 0.5, 1),
        ]
        wait_until(lambda: _points(d) == two, what="two points")
        wait_until(lambda: _points_csv(d) == [["recall", "0.85", "0.5", "true"], ["recall", "0.9", "0.25", "true"]])

        config.write_text('extra_targets = [0.5]\nextra_pickers = ["youden", "max_f1"]\n')
        d.signal(signal.SIGHUP)
        d.wait_event("config_reloaded", changed=["extra_targets", "extra_pickers"])
        d.wait_event("settings_taken", rescore=True)
        expected: list[tuple[object, ...]] = [
            ("a.json", 0, "recall", 0.85, 0.5, 0.2, 1),
            ("a.json", 1, "recall", 0.5, 0.75, 0.1, 1),
            ("a.json", 2, "youden", None, 0.5, 0.2, None),  # no max_f1 point: the file has no precision_arr
        ]
        wait_until(lambda: _points(d) == expected, what="the points under the new settings")
        wait_until(lambda: _points_csv(d) == [["recall", "0.85", "0.5", "true"], ["recall", "0.5", "0.75", "true"],
                                              ["youden", "", "0.5", ""]])  # fmt: skip

        (d.inbox / "a.json").unlink()
        wait_until(lambda: _points(d) == [], what="the points gone with the file")
        wait_until(lambda: _points_csv(d) == [])
        d.assert_alive()
    finally:
        assert d.stop() == 0
