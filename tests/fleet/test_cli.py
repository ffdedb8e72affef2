"""The fleet's commands at the edge: one line and an exit code for every failure, psycopg never
imported without a central database, and the status of a fleet as text and JSON."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from testing.fleet import scan_and_ship
from watcher.cli import main
from watcher.fleet import central


def test_the_single_host_commands_never_import_the_driver() -> None:
    code = "import sys, watcher.cli as c; c.build_parser(); print('psycopg' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "False"


def test_no_central_database_configured_is_a_usage_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    for argv in (["report", "--central"], ["status", "--central"], ["central", "publish"]):
        assert main([*argv, "--db", str(tmp_path / "w.db")]) == 2
        err = capsys.readouterr().err
        assert err == "watcher: no central database: set central_url (or give --url)\n"


def test_an_unreachable_server_is_one_line_and_exit_3(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    url = f"postgresql://nobody@/watcher?host={tmp_path}"  # no server listens there
    for argv in (["report", "--central", url], ["status", "--central", url], ["central", "init", "--url", url]):
        assert main(argv) == 3
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "cannot connect to the central database" in err, err


def test_status_lists_each_host_with_its_lag(central_db: Any) -> None:
    server, db = central_db
    with server.admin(db) as conn:
        central.add_host(conn, "gpu-07", "r_" + uuid.uuid4().hex[:8])
        conn.execute(
            "UPDATE watcher.hosts SET shipped_id = 5, local_max_id = 12, last_seen = now() WHERE host = 'gpu-07'"
        )
    out = io.StringIO()
    assert main(["status", "--central", server.url(db)], stdout=out) == 0
    line = next(x for x in out.getvalue().splitlines() if x.startswith("gpu-07"))
    assert " 7 " in line and "s ago" in line
    out = io.StringIO()
    assert main(["status", "--central", server.url(db), "--json"], stdout=out) == 0
    (host,) = json.loads(out.getvalue())["hosts"]
    assert (host["host"], host["lag"], host["shipped_id"]) == ("gpu-07", 7, 5)


def _one_host_fleet(central_db: Any, make_settings: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, str]:
    """A host whose folder holds models below and above target, issuers a spreadsheet would
    evaluate, and ties; scanned and shipped. Returns its settings and a reader's URL."""
    import random

    from testing.helpers import doc, write

    server, db = central_db
    role = "r_" + uuid.uuid4().hex[:8]
    with server.admin(db) as conn:
        central.add_host(conn, "gpu-01", role)
    server.set_password(role)
    monkeypatch.setenv("PGPASSFILE", str(server.passfile))
    settings = make_settings(central_url=server.url(db, role), host_name="gpu-01")
    rng = random.Random(5)
    issuers = ["ana@example.com", "=2+3@example.com", "Bo@example.com", "-x@example.com", "bo@example.com"]
    for i in range(40):
        recall = [1.0, rng.choice([0.9, 0.86, 0.84, 0.7]), rng.choice([0.85, 0.6, 0.8]), 0.2, 0.0]
        write(
            settings.watch_dir / f"{'=cmd' if i == 3 else 'run'}{i}.json",
            doc(issuer=rng.choice(issuers), recall_arr=recall, experiment_date=f"2024-05-{1 + i % 9:02}T12:00:00Z"),
        )
    scan_and_ship(settings)
    return settings, server.url(db)


def test_every_report_option_works_with_central_as_on_the_host(
    central_db: Any, make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With one host, the fleet report is the host's, with its host name: every filter, sort and
    # format gives the same rows, and the CSV and Markdown the same neutralised cells.
    settings, url = _one_host_fleet(central_db, make_settings, monkeypatch)
    shared = ["model_id", "issuer", "optimal_threshold", "closest_recall_value", "experiment_date", "path"]
    options: list[list[str]] = [[], ["--below-target"], ["--issuer", "BO@example.com"], ["--desc"]]
    options += [["--sort", c] for c in shared] + [["--sort", c, "--desc"] for c in shared]
    options += [["--below-target", "--sort", "optimal_threshold", "--desc"]]
    for option in options:
        for fmt in ("csv", "markdown", "json"):
            host_out, fleet_out = io.StringIO(), io.StringIO()
            assert main(["report", "--db", str(settings.db_path), "--format", "json", *option], stdout=host_out) == 0
            assert main(["report", "--central", url, "--format", "json", *option], stdout=fleet_out) == 0
            host_rows = [{k: r[k] for k in shared} for r in json.loads(host_out.getvalue())]
            fleet_rows = json.loads(fleet_out.getvalue())
            assert {r.pop("host") for r in fleet_rows} <= {"gpu-01"}
            assert fleet_rows == host_rows, (option, fmt)
            if fmt != "json":  # the same cells as the host's, neutralised alike
                host_out, fleet_out = io.StringIO(), io.StringIO()
                main(["report", "--db", str(settings.db_path), "--format", fmt, *option], stdout=host_out)
                main(["report", "--central", url, "--format", fmt, *option], stdout=fleet_out)
                assert ("'=2+3@example.com" in fleet_out.getvalue()) == ("'=2+3@example.com" in host_out.getvalue())
    below = io.StringIO()
    main(["report", "--central", url, "--format", "json", "--below-target"], stdout=below)
    everything = io.StringIO()
    main(["report", "--central", url, "--format", "json"], stdout=everything)
    assert 0 < len(json.loads(below.getvalue())) < len(json.loads(everything.getvalue()))


def test_a_sort_column_the_report_lacks_is_refused(
    central_db: Any, make_settings: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings, url = _one_host_fleet(central_db, make_settings, monkeypatch)
    capsys.readouterr()
    assert main(["report", "--central", url, "--sort", "target_met"]) == 2
    assert capsys.readouterr().err.startswith("watcher: watcher report --central: --sort target_met is not a column")
    assert main(["report", "--db", str(settings.db_path), "--sort", "host"]) == 2
    assert capsys.readouterr().err.startswith("watcher: watcher report: --sort host needs --central")
    out = io.StringIO()
    assert main(["report", "--central", url, "--sort", "host", "--format", "csv"], stdout=out) == 0


def test_the_published_fleet_csv_is_what_report_central_prints(
    central_db: Any, make_settings: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import psycopg

    from watcher.fleet.tables import FleetTables

    _, url = _one_host_fleet(central_db, make_settings, monkeypatch)
    tables = FleetTables(tmp_path / "fleet", ("csv", "markdown"))
    with psycopg.connect(url) as conn:
        tables.write(conn)
    for fmt, name in (("csv", "report.csv"), ("markdown", "report.md")):
        out = io.StringIO()
        assert main(["report", "--central", url, "--format", fmt], stdout=out) == 0
        assert (tmp_path / "fleet" / name).read_text(encoding="utf-8") == out.getvalue()
        assert "'=2+3@example.com" in out.getvalue() and "'=cmd3.json" in out.getvalue()
