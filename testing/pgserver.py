"""A throwaway PostgreSQL cluster for the fleet tests (and the fleet benchmark): a real server,
started from Debian's binaries on a Unix socket in a temporary folder, as an unprivileged user
when we are root (the server refuses to run as root), and always torn down.

Authentication is real: the superuser ``postgres`` is trusted on the socket (the test is the
database's owner), every other role logs in with a password from a ``PGPASSFILE``, as a host does.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg


def pg_bin() -> Path | None:
    """The newest installed PostgreSQL server's bin folder (Debian layout), or None."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name))
    return found[-1].parent if found else None


class PgServer:
    """One cluster: :meth:`start`, :meth:`stop` (and start again), :meth:`destroy`."""

    def __init__(self, fsync: bool = False) -> None:
        bindir = pg_bin()
        if bindir is None:
            raise RuntimeError("PostgreSQL server binaries not found (apt-get install postgresql-15)")
        self.bin = bindir
        self.dir = Path(tempfile.mkdtemp(prefix="watcher-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self.passfile = self.dir / "pgpass"
        self.fsync = fsync
        self._prefix: list[str] = []
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            os.chown(self.dir, nobody.pw_uid, nobody.pw_gid)
            self._prefix = ["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups"]
        self.passfile.write_text("")
        self.passfile.chmod(0o600)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth-local=trust", "--no-sync", "-E", "UTF8")
        hba = self.data / "pg_hba.conf"
        # The owner by trust on the socket; everyone else by password (scram), like a real fleet.
        self._run("sh", "-c", f"printf '%s\\n' '{_HBA}' > {hba}", tool_in_bin=False)

    def _run(self, tool: str, *args: str, tool_in_bin: bool = True) -> None:
        exe = str(self.bin / tool) if tool_in_bin else tool
        subprocess.run([*self._prefix, exe, *args], check=True, capture_output=True, cwd=self.dir, timeout=120)

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = f"-k {self.dir} -c listen_addresses='' -c fsync={'on' if self.fsync else 'off'} -c max_connections=60"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "-o", options, "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: disconnect clients and shut down cleanly; ``immediate``: a crash)."""
        self._run("pg_ctl", "-D", str(self.data), "-w", "-t", "60", "-m", mode, "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def destroy(self) -> None:
        """Stop (if running) and delete everything."""
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            if self.running():
                self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, dbname: str = "postgres", user: str = "postgres") -> str:
        """A libpq URL on the socket, without a password."""
        return f"postgresql://{user}@/{dbname}?host={self.dir}"

    def admin(self, dbname: str = "postgres") -> psycopg.Connection[Any]:
        return psycopg.connect(self.url(dbname), autocommit=True)

    def create_database(self) -> str:
        """A fresh, empty database; its name."""
        name = "t_" + uuid.uuid4().hex[:12]
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def set_password(self, role: str) -> str:
        """Give ``role`` a fresh password and put it in the pass file (what an operator does)."""
        password = uuid.uuid4().hex
        with self.admin() as conn:
            conn.execute(f"ALTER ROLE \"{role}\" PASSWORD '{password}'")
        with self.passfile.open("a") as fh:
            fh.write(f"*:*:*:{role}:{password}\n")
        return password

    def env(self) -> dict[str, str]:
        """Environment for a client that logs in with the pass file."""
        return {"PGPASSFILE": str(self.passfile)}


_HBA = "local all postgres trust\nlocal all all scram-sha-256"


@contextlib.contextmanager
def pg_server(fsync: bool = False) -> Iterator[PgServer]:
    """A started server, destroyed on leaving."""
    server = PgServer(fsync=fsync)
    try:
        server.start()
        yield server
    finally:
        server.destroy()
