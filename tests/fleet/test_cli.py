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
