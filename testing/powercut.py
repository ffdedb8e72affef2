"""The power-cut loop, shared by ``tests/test_powercut.py`` (a handful of cuts) and
``benchmarks/powercut.py`` (hundreds): one fleet host whose state folder (database, ``-wal``,
``-shm``, lock, reports) is on the lazy file system (:mod:`testing.lazyfs`), shipping to a real
PostgreSQL, with its watch dir churning; at a random instant the host loses power (``kill -9`` of
the daemon and its helpers, then everything not fsynced is lost), comes back and settles.

Checked after each cut, before the restart: ``PRAGMA integrity_check`` of what the cut left, and
each report file (CSV, JSON) whole (it parses; the JSON ends where it should). After the host
settles: the local invariant (:mod:`tests.invariant`), ``integrity_check`` again, the report
files equal to a whole render of the database, and the host's central rows equal to its local
ones (:mod:`tests.fleet_invariant`). Every disagreement is collected, not raised, so a long run
counts them.
"""

from __future__ import annotations

import csv
import io
import json
import random
import sqlite3
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testing import fleet_invariant, invariant, lazyfs
from testing.daemon import Daemon
from testing.fleet import Fleet
from testing.helpers import doc, wait_until, write, write_atomically
from watcher.reports.files import write_reports
from watcher.store import Store

TABLES = ("csv", "json")


def mid(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


def churn(inbox: Path, stop: threading.Event, seed: int) -> int:
    """New files, rewrites (valid, invalid, in place or by rename) and deletions until ``stop``."""
    rng = random.Random(seed)
    done = 0
    while not stop.is_set():
        name = inbox / f"sub{rng.randrange(3)}" / f"f{rng.randrange(50)}.json"
        roll = rng.random()
        if roll < 0.15:
            name.unlink(missing_ok=True)
        elif roll < 0.25:
            write(name, b'{"model_id": ')
        elif roll < 0.6:
            write(name, doc(model_id=mid(rng.randrange(80)), experiment_date=f"2024-05-{rng.randrange(1, 29):02d}"))
        else:
            write_atomically(name, doc(model_id=mid(rng.randrange(80)), issuer=f"u{rng.randrange(9)}@example.com"))
        done += 1
        stop.wait(rng.choice((0.0, 0.002, 0.01)))
    return done


@dataclass
class Figures:
    cuts: int = 0
    local: list[str] = field(default_factory=list)  # integrity, invariant, report files
    central: list[str] = field(default_factory=list)
    settle: list[float] = field(default_factory=list)  # restart to settled, per cut, seconds
    resyncs: int = 0
    taken_back: list[int] = field(default_factory=list)  # history entries a cut took back, per cut
    emptied: int = 0  # cuts that left no committed history at all (nothing checkpointed yet)
    tracebacks: int = 0
    elapsed: float = 0.0

    def summary(self) -> str:
        times = sorted(self.settle) or [0.0]
        return (
            f"cuts {self.cuts}, mismatches local {len(self.local)} central {len(self.central)}, "
            f"time {self.elapsed:.1f} s, resyncs logged {self.resyncs} (counted at the end), "
            f"settle per cut median {statistics.median(times):.2f} s max {max(times):.2f} s, "
            f"history entries taken back per cut median {statistics.median(self.taken_back or [0]):.0f}"
            f" max {max(self.taken_back or [0])}, cuts back to an empty history {self.emptied}"
        )


def _max_id(db: Path) -> int:
    """The last history entry's id (0 without a database or a history)."""
    try:
        return fleet_invariant.local_max_id(db) if db.exists() else 0
    except sqlite3.Error:
        return 0


def integrity(db: Path) -> str:
    """``PRAGMA integrity_check`` on a read-only connection ("ok", or what is wrong)."""
    if not db.exists():
        return "ok"  # not created yet: nothing to be torn
    conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=30)
    try:
        return "; ".join(r[0] for r in conn.execute("PRAGMA integrity_check"))
    except sqlite3.DatabaseError as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()


def torn_reports(reports: Path) -> list[str]:
    """Each table file there must be whole: the JSON parses, the CSV is rows of the header's width
    ending in a line break (a cut at a row's end can pass for a whole CSV: the JSON, written with
    it, cannot)."""
    out = []
    path = reports / "report.json"
    if path.exists():
        try:
            json.loads(path.read_bytes())
        except ValueError as exc:
            out.append(f"report.json torn: {exc}")
    path = reports / "report.csv"
    if path.exists():
        text = path.read_text(encoding="utf-8")
        rows = list(csv.reader(io.StringIO(text)))
        if not text.endswith("\n") or not rows or any(len(r) != len(rows[0]) for r in rows):
            out.append(f"report.csv torn ({len(text)} bytes)")
    return out


def whole_render(db: Path, scratch: Path) -> dict[str, bytes]:
    scratch.mkdir(parents=True, exist_ok=True)
    with Store.open_readonly(db) as store, store.snapshot():
        return {p.name: p.read_bytes() for p in write_reports(store.report_rows, scratch, TABLES)}


def reports_differ(db: Path, reports: Path, scratch: Path) -> list[str]:
    whole = whole_render(db, scratch)
    return [
        f"{name}: not a whole render of the database" for name, data in whole.items() if _read(reports / name) != data
    ]


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


class PowerCuts:
    """One host of ``fleet`` on a lazy mount; :meth:`run` cuts it ``n`` times."""

    def __init__(self, fleet: Fleet, tmp: Path, name: str = "cut-host", seed: int = 25) -> None:
        self.fleet, self.tmp = fleet, tmp
        self.rng = random.Random(seed)
        self.host: Daemon = fleet.add_host(name, start=False)
        self.var = self.host.db.parent
        self.reports = self.var / "reports"
        self.mount = lazyfs.mount(self.host.root / "var-disk", self.var, log=tmp / f"{name}.lazyfs.log")
        self.figures = Figures()
        self.hostname = self.host.env["WATCHER_HOST_NAME"]

    def close(self) -> None:
        """Stop the daemon (kill -9 if it does not stop) and unmount; safe to call twice."""
        try:
            proc = self.host.proc
            if proc is not None and proc.poll() is None:
                try:
                    self.host.stop()
                except Exception:
                    self.host.kill()
        finally:
            self.mount.unmount()

    def _cut(self, within: tuple[float, float]) -> None:
        """Churn the watch dir; at a random instant of it, the power cut; churn stops after it."""
        stop = threading.Event()
        worker = threading.Thread(target=churn, args=(self.host.inbox, stop, self.rng.randrange(1 << 30)))
        worker.start()
        try:
            threading.Event().wait(self.rng.uniform(*within))  # the instant of the cut, not a synchronisation
            # Committed just before the kill, as a reader saw it (after the kill, a reader's recovery
            # of the log could also count a batch whose commit the kill interrupted).
            before = _max_id(self.host.db)
            if self.host.proc is not None and self.host.proc.poll() is None:
                self.host.kill()
            self.mount.cut()
            after = _max_id(self.host.db)
        finally:
            stop.set()
            worker.join()
        self.figures.cuts += 1
        self.figures.taken_back.append(max(0, before - after))
        self.figures.emptied += after == 0 < before
        self.figures.local += [f"cut {self.figures.cuts}: {p}" for p in self._after_cut()]

    def _after_cut(self) -> list[str]:
        problems = torn_reports(self.reports)
        found = integrity(self.host.db)
        return problems if found == "ok" else [*problems, f"integrity after the cut: {found}"]

    def _checkpointed(self) -> bool:
        wal = self.host.db.with_name(self.host.db.name + "-wal")
        return not wal.exists() or wal.stat().st_size == 0

    def _settled_locally(self) -> bool:
        self.host.assert_alive()
        return (
            invariant.holds(self.host.inbox, self.host.db)
            and fleet_invariant.shipped_id(self.fleet.admin_url, self.hostname)
            == fleet_invariant.local_max_id(self.host.db)
            and not fleet_invariant.violations(self.host.db, self.fleet.admin_url, self.hostname)
            and not reports_differ(self.host.db, self.reports, self.tmp / "whole")
        )

    def _settle(self, timeout: float, timed: bool = True) -> None:
        started = time.monotonic()
        try:
            wait_until(self._settled_locally, timeout, interval=0.1, what="the host to settle")
        except AssertionError:
            n = self.figures.cuts
            proc = self.host.proc
            if proc is not None and proc.poll() is not None:
                self.figures.local.append(f"cut {n}: the daemon exited with {proc.returncode}")
            self.figures.local += [f"cut {n}: {v}" for v in invariant.violations(self.host.inbox, self.host.db)]
            self.figures.local += [
                f"cut {n}: {v}" for v in reports_differ(self.host.db, self.reports, self.tmp / "whole")
            ]
            self.figures.central += [
                f"cut {n}: {v}" for v in fleet_invariant.violations(self.host.db, self.fleet.admin_url, self.hostname)
            ]
            if not self.figures.central and fleet_invariant.shipped_id(
                self.fleet.admin_url, self.hostname
            ) != fleet_invariant.local_max_id(self.host.db):
                self.figures.central.append(f"cut {n}: shipping did not catch up in {timeout} s")
            return
        if timed:
            self.figures.settle.append(time.monotonic() - started)
        found = integrity(self.host.db)
        if found != "ok":
            self.figures.local.append(f"cut {self.figures.cuts}: integrity after settling: {found}")

    def run(self, cuts: int, settle_timeout: float = 60.0, progress: bool = False) -> Figures:
        started = time.monotonic()
        for i in range(10):
            write(self.host.inbox / f"seed{i}.json", doc(model_id=mid(100 + i)))
        self.host.start()
        self._settle(settle_timeout, timed=False)
        while self.figures.cuts < cuts:
            self._cut((0.05, 2.5))
            self.host.start(wait=False)
            if self.figures.cuts < cuts and self.rng.random() < 0.3:
                self._cut((0.0, 1.0))  # again, while it starts and reconciles
                self.host.start(wait=False)
            self._settle(settle_timeout)
            if self.rng.random() < 0.5:  # a pause: the daemon copies its log into the database file (fsynced)
                wait_until(self._checkpointed, 30, what="the idle checkpoint")
            if progress:
                self.figures.elapsed = time.monotonic() - started
                print(f"  {self.figures.summary()}", flush=True)
        self.figures.elapsed = time.monotonic() - started
        self._count_log()
        return self.figures

    def _count_log(self) -> None:
        text = self.host.log_path.read_text(errors="replace")
        self.figures.tracebacks = text.count("Traceback")
        events: list[dict[str, Any]] = []
        for line in text.splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                self.figures.local.append(f"a log line that is not JSON: {line[:200]!r}")
        self.figures.resyncs = sum(e.get("event") == "central_resync" for e in events)
        fuse_log = self.mount.log.read_text(errors="replace") if self.mount.log.exists() else ""
        if fuse_log.strip():
            self.figures.local.append(f"the lazy file system logged: {fuse_log[-2000:]}")


def entry_code(mode: str) -> str:
    """Python for ``python -c``: the ``watcher`` command, its database connection set to
    ``PRAGMA synchronous = mode`` right after it is opened (and migrated)."""
    assert mode in ("OFF", "NORMAL", "FULL", "EXTRA")
    return (
        "import sys\n"
        "from watcher import store\n"
        "_open = store.Store.open.__func__\n"
        "def _open_with(cls, *args, **kwargs):\n"
        "    opened = _open(cls, *args, **kwargs)\n"
        f"    opened.db.execute('PRAGMA synchronous = {mode}')\n"
        "    return opened\n"
        "store.Store.open = classmethod(_open_with)\n"
        "from watcher.cli import entry\n"
        "sys.exit(entry())\n"
    )
