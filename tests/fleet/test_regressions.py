"""Regressions across a fleet (a real PostgreSQL server): a model's experiments on different hosts
are compared with each other, so a host whose first experiment of a model is worse than another
host's earlier one is flagged in the fleet's report, though not in its own."""

from __future__ import annotations

import csv
import io
import json
import os
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from testing.fleet import scan_and_ship
from testing.helpers import doc, wait_until, write
from watcher.cli import main
from watcher.config import Settings
from watcher.fleet import central
from watcher.fleet.page import write_page
from watcher.fleet.publisher import Publisher
from watcher.regression import Rules

MODEL = "00000000-0000-4000-8000-000000000001"
OTHER = "00000000-0000-4000-8000-000000000002"
REASONS = "target no longer met; recall down 0.1 (0.9 -> 0.8)"


def experiment(day: int, recall: float, model: str = MODEL) -> dict[str, Any]:
    return doc(model_id=model, experiment_date=f"2026-01-{day:02d}T00:00:00Z",
               threshold_arr=[0.0, 0.25, 0.5, 0.75, 1.0], recall_arr=[1.0, 0.99, recall, 0.3, 0.0])  # fmt: skip


def host(central_db: Any, tmp_path: Path, name: str, files: dict[str, dict[str, Any]]) -> Settings:
    """A host with these files, scanned (regression checks on) and shipped."""
    server, db = central_db
    role = "r_" + uuid.uuid4().hex[:8]
    with server.admin(db) as conn:
        central.add_host(conn, name, role)
    server.set_password(role)
    root = tmp_path / name
    settings = Settings.model_validate({"watch_dir": root / "inbox", "db_path": root / "var" / "watcher.db",
                                        "workers": 1, "regressions": True, "central_url": server.url(db, role),
                                        "host_name": name})  # fmt: skip
    for path, content in files.items():
        write(settings.watch_dir / path, content)
    scan_and_ship(settings)
    return settings


def report(*argv: str) -> list[dict[str, Any]]:
    out = io.StringIO()
    assert main(["report", "--format", "json", *argv], stdout=out) == 0
    rows: list[dict[str, Any]] = json.loads(out.getvalue())
    return rows


def test_experiments_on_different_hosts_are_compared(
    central_db: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, db = central_db
    for key in [k for k in os.environ if k.startswith("WATCHER_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("PGPASSFILE", str(server.passfile))
    host(central_db, tmp_path, "gpu-01", {"a.json": experiment(1, 0.9), "o.json": experiment(1, 0.9, OTHER)})
    second = host(central_db, tmp_path, "gpu-02", {"b.json": experiment(2, 0.8), "o.json": experiment(2, 0.95, OTHER)})
    url = server.url(db)

    # Off: the fleet report as it always was.
    assert [sorted(r) for r in report("--central", url)] == [sorted(central.FLEET_COLUMNS)] * 2
    assert main(["report", "--central", url, "--sort", "regressed"], stdout=io.StringIO()) == 2  # no such column
    monkeypatch.setenv("WATCHER_REGRESSIONS", "true")
    fleet = report("--central", url)
    assert [(r["model_id"], r["host"], r["path"], r["regressed"], r["regression"]) for r in fleet] == [
        (MODEL, "gpu-02", "b.json", True, REASONS),
        (OTHER, "gpu-02", "o.json", False, ""),
    ]
    # Sorted by the verdict (judged here), then by model_id, as a host's report sorts.
    assert [r["model_id"] for r in report("--central", url, "--sort", "regressed")] == [OTHER, MODEL]
    assert [r["model_id"] for r in report("--central", url, "--sort", "regressed", "--desc")] == [MODEL, OTHER]
    assert [r["model_id"] for r in report("--central", url, "--sort", "regression", "--desc")] == [MODEL, OTHER]
    # gpu-02's own database holds only its experiment of the model: nothing to compare with there.
    mine = report("--db", str(second.db_path))
    assert [(r["model_id"], r["regressed"]) for r in mine] == [(MODEL, False), (OTHER, False)]
    # A looser rule, read by this reader: only the target's loss remains.
    monkeypatch.setenv("WATCHER_REGRESSION_RECALL_DELTA", "0.2")
    assert report("--central", url)[0]["regression"] == "target no longer met"
    # The order is the report's: instant, then host, then path (a tie on the instant goes to the
    # greater host, so gpu-02's day-2 file is compared with gpu-01's of the same day).
    with server.admin(db) as conn:
        conn.execute("UPDATE watcher.results SET experiment_at = '2026-01-02T00:00:00.000000Z' WHERE host = 'gpu-01'")
        rows = conn.execute(
            "SELECT host, path, previous_host, previous_path FROM watcher.experiments WHERE model_id = %s", (MODEL,)
        ).fetchall()
    assert rows == [("gpu-01", "a.json", None, None), ("gpu-02", "b.json", "gpu-01", "a.json")]


def test_the_fleet_page_marks_a_regression_across_hosts(
    central_db: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, db = central_db
    monkeypatch.setenv("PGPASSFILE", str(server.passfile))
    host(central_db, tmp_path, "gpu-01", {"a.json": experiment(1, 0.9), "o.json": experiment(1, 0.9, OTHER)})
    host(central_db, tmp_path, "gpu-02", {"b.json": experiment(2, 0.8), "o.json": experiment(2, 0.95, OTHER)})
    with central.connect(server.url(db)) as conn:
        off = write_page(conn, tmp_path / "off", 0.85, 100).read_text()
        on = write_page(conn, tmp_path / "on", 0.85, 100, Rules(0.02, 0.1)).read_text()
        few = write_page(conn, tmp_path / "few", 0.85, 1, Rules(0.02, 0.1)).read_text()
    assert 'id="regressions"' not in off and 'id="regressions"' not in few  # few: not every model fits
    marks = json.loads(on.split('<script type="application/json" id="regressions">')[1].split("</script>")[0])
    # Every result is on the page, by model_id then newest first: the model's gpu-02 file is 0,
    # gpu-01's 1, the other model's 2 and 3.
    assert marks == {"p": [0], "rows": [[MODEL, "gpu-02:b.json", REASONS]]}


def test_the_published_tables_carry_the_verdicts_under_the_publishers_settings(
    central_db: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, db = central_db
    monkeypatch.setenv("PGPASSFILE", str(server.passfile))
    host(central_db, tmp_path, "gpu-01", {"a.json": experiment(1, 0.9), "o.json": experiment(1, 0.9, OTHER)})
    host(central_db, tmp_path, "gpu-02", {"o.json": experiment(2, 0.95, OTHER)})
    out = tmp_path / "fleet"
    publisher = Publisher(server.url(db), out, ["csv", "json", "markdown"], 0.05, rules=Rules(0.02, 0.1))
    thread = threading.Thread(target=publisher.run)
    thread.start()
    try:
        wait_until(lambda: publisher.writes >= 1, 20, what="the first write")
        rows = list(csv.DictReader(io.StringIO((out / "report.csv").read_text(), newline="")))
        assert [(r["model_id"], r["regressed"], r["regression"]) for r in rows] == [
            (MODEL, "false", ""), (OTHER, "false", "")
        ]  # fmt: skip
        # A host ships a worse experiment of the model: the files follow, with the verdict.
        host(central_db, tmp_path, "gpu-03", {"b.json": experiment(2, 0.8)})

        def flagged() -> list[Any]:
            rows = json.loads((out / "report.json").read_text())
            return [(r["host"], r["regressed"], r["regression"]) for r in rows if r["regressed"]]

        assert wait_until(flagged, 20, what="the regression published") == [("gpu-03", True, REASONS)]
        assert (
            f"| {MODEL} |" in (out / "report.md").read_text()
            and "| regressed | regression |" in (out / "report.md").read_text()
        )
    finally:
        publisher.stop.set()
        thread.join(20)
