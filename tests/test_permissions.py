"""What the service does with what it may not write or read, run as an unprivileged user (as
the service runs): one line and an exit code, never a traceback."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.helpers import doc, write
from tests.unprivileged import Unprivileged, nobody, shared_tmp

__all__ = ["nobody", "shared_tmp"]  # fixtures


def test_run_with_an_unwritable_database_location_is_one_line_and_exit_3(
    nobody: Unprivileged, shared_tmp: Path
) -> None:
    inbox = shared_tmp / "inbox"
    write(inbox / "a.json", doc())
    state = shared_tmp / "state"  # root's, 0755: the user can read it but not create the lock there
    state.mkdir()
    proc = nobody.watcher("run", "--watch-dir", str(inbox), "--db", str(state / "w.db"), cwd=shared_tmp)
    assert (proc.returncode, proc.stderr) == (
        3, f"watcher: {state / 'w.db.lock'}: cannot create the database's lock file: Permission denied\n",
    )  # fmt: skip

    # The folder is the user's, but the database file in it is root's and read-only to the user.
    mine = shared_tmp / "mine"
    mine.mkdir()
    nobody.give(mine)
    sqlite3.connect(mine / "w.db").close()
    (mine / "w.db").chmod(0o644)
    for command in ("run", "scan"):
        proc = nobody.watcher(command, "--watch-dir", str(inbox), "--db", str(mine / "w.db"), cwd=shared_tmp)
        assert proc.returncode == 3, proc.stderr
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
        assert proc.stderr.startswith(f"watcher: {mine / 'w.db'}: cannot open the database: "), proc.stderr
