"""The folder poller: what it finds by listing only the folders whose mtime moved, what its sweep
finds, and how it paces itself (a fake clock and CPU meter; no real timing)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from watchdog.events import FileSystemEvent

from testing.helpers import doc, write
from watcher.config import DEFAULT_IGNORE
from watcher.outcomes import StatKey
from watcher.tree import Matcher, listed
from watcher.watch import poller
from watcher.watch.pacing import Meter
from watcher.watch.poller import Poller, dir_key

T = TypeVar("T")


class Clock:
    """Monotonic time that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def mono(self) -> float:
        return self.now


class FakeMeter(Meter):
    """Every measured piece of work (a poll's folder stats, its listings, a step of the sweep)
    costs ``cost`` seconds of CPU; nothing else does."""

    def __init__(self, cost: float = 0.0) -> None:
        super().__init__(cpu=lambda: self.spent)
        self.cost = cost
        self.spent = 0.0

    def run(self, work: Callable[[], T]) -> tuple[T, float]:
        result = work()
        self.spent += self.cost
        return result, self.cost


class Fixture:
    """A tree on disk, a fake database (path -> stat key) and the events the poller sends."""

    def __init__(self, root: Path, clock: Clock, interval: float = 1.0, share: float = 0.01, cost: float = 0.0) -> None:
        self.root = root
        self.db: dict[str, StatKey | None] = {}
        self.events: list[tuple[str, str, str, bool]] = []
        self.listed: list[str] = []
        self.clock = clock
        self.meter = FakeMeter(cost)
        self.mtime = 1_000_000_000_000_000_000
        self.poller = Poller(
            str(root), Matcher(("*.json",), DEFAULT_IGNORE), self.stored, self.record, interval, share,
            clock=clock.mono, wall_clock=lambda: 1.7e9, meter=self.meter,
        )  # fmt: skip

    def stored(self, folder: str) -> dict[str, StatKey | None]:
        self.listed.append(folder)
        return {p: k for p, k in self.db.items() if os.path.dirname(p) == folder}

    def rel(self, path: str | bytes) -> str:
        return os.path.relpath(os.fsdecode(path), self.root) if path else ""

    def record(self, event: FileSystemEvent) -> None:
        self.events.append((event.event_type, self.rel(event.src_path), self.rel(event.dest_path), event.is_directory))

    def moved(self, *folders: str) -> None:
        """Give folders a new mtime, as any change in them would (distinct from any before: a
        file system's clock tick can be coarser than a test's steps)."""
        for folder in folders:
            self.mtime += 1_000_000
            os.utime(self.root / folder, ns=(self.mtime, self.mtime))

    def poll(self) -> list[tuple[str, str, str, bool]]:
        self.events.clear()
        self.listed.clear()
        self.poller.poll()
        return sorted(self.events)

    def catch_up(self) -> None:
        """The writer has stored every tracked file as it is now."""
        self.db.clear()
        for path in self.root.rglob("*.json"):
            s = path.stat()
            self.db[str(path.relative_to(self.root))] = (s.st_size, s.st_mtime_ns, s.st_ino)


@pytest.fixture
def fx(tmp_path: Path) -> Fixture:
    root = tmp_path / "inbox"
    for folder in ("a", "b", "a/deep"):
        (root / folder).mkdir(parents=True)
    f = Fixture(root, Clock())
    f.poller.discover()
    return f


def test_discover_records_every_folder_and_sends_nothing(fx: Fixture) -> None:
    assert sorted(fx.poller.folders) == ["", "a", "a/deep", "b"]
    assert fx.poll() == [] and fx.listed == []  # nothing moved: nothing listed, nothing read from the database


def test_a_new_file_is_found_by_listing_only_its_folder_and_sent_once(fx: Fixture) -> None:
    write(fx.root / "a" / "x.json", doc())
    write(fx.root / "a" / ".x.json.swp", "editor noise")
    fx.moved("a")
    assert fx.poll() == [("created", "a/x.json", "", False)]
    assert fx.listed == ["a"]
    # The folder is listed once more (a change in the same clock tick would not move its mtime),
    # but what was sent is not sent again while the database has not caught up.
    assert fx.poll() == [] and fx.listed == ["a"]
    assert fx.poll() == [] and fx.listed == []
    fx.catch_up()
    fx.moved("a")
    assert fx.poll() == []


def test_deleted_renamed_and_replaced_files(fx: Fixture) -> None:
    for name in ("a/x.json", "a/y.json", "a/z.json"):
        write(fx.root / name, doc())
    fx.catch_up()
    (fx.root / "a" / "x.json").unlink()
    os.rename(fx.root / "a" / "y.json", fx.root / "b" / "y2.json")  # to another folder: one 'moved'
    write(fx.root / "a" / ".z.json.tmp", doc(issuer="bo@example.com"))
    os.replace(fx.root / "a" / ".z.json.tmp", fx.root / "a" / "z.json")  # replaced by an atomic rename
    fx.moved("a", "b")
    assert fx.poll() == [
        ("deleted", "a/x.json", "", False),
        ("modified", "a/z.json", "", False),
        ("moved", "a/y.json", "b/y2.json", False),
    ]
    assert sorted(fx.listed) == ["a", "b"]
    assert fx.poll() == []  # the same differences, already sent


def test_folders_that_appear_and_vanish(fx: Fixture) -> None:
    write(fx.root / "new" / "sub" / "n.json", doc())
    fx.moved("")
    assert fx.poll() == [("created", "new", "", True)]  # the writer reconciles the subtree
    assert {"new", "new/sub"} <= set(fx.poller.folders)
    os.rename(fx.root / "a", fx.root / "c")
    fx.moved("")
    events = fx.poll()
    assert ("deleted", "a", "", True) in events and ("created", "c", "", True) in events
    assert "a/deep" not in fx.poller.folders and "c/deep" in fx.poller.folders


def test_a_missing_watch_dir_is_not_taken_as_everything_deleted(fx: Fixture) -> None:
    write(fx.root / "a" / "x.json", doc())
    fx.catch_up()
    fx.root.rename(fx.root.with_name("elsewhere"))
    assert fx.poll() == []


def test_a_watch_dir_that_goes_away_during_a_poll_or_a_sweep_is_not_taken_as_everything_deleted(
    fx: Fixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(fx.root / "x.json", doc())
    write(fx.root / "a" / "y.json", doc())
    fx.catch_up()
    away = fx.root.with_name("elsewhere")
    real_key = fx.poller.folder_key

    def gone_after_the_first_stat(full: str) -> poller.DirKey | None:
        # The watch dir was there when the poll began, and is renamed away right after.
        if not away.exists():
            fx.root.rename(away)
            return real_key(str(away))
        return real_key(full)

    fx.poller.folder_key = gone_after_the_first_stat
    fx.moved("a")
    assert fx.poll() == []  # neither its folders nor its files are gone one by one
    away.rename(fx.root)
    fx.poller.folder_key = real_key
    assert sorted(fx.poller.folders) == ["", "a", "a/deep", "b"]

    fx.events.clear()

    def renamed_while_listing(*args: Any, **kwargs: Any) -> Any:
        fx.root.rename(away)  # between the sweep's look at the folder and its listing
        return listed(*args, **kwargs)

    monkeypatch.setattr(poller, "listed", renamed_while_listing)
    fx.poller.examine([""])
    assert fx.events == []
    away.rename(fx.root)


def seal(monkeypatch: pytest.MonkeyPatch, folder: Path) -> Callable[[], None]:
    """Listing ``folder`` fails as it does without permission (this suite may run as root, who
    lists anything); the function returned unseals it."""
    scandir = os.scandir

    def sealed(path: Any = ".") -> Any:
        if os.fspath(path) == str(folder):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", sealed)
    return lambda: monkeypatch.setattr(os, "scandir", scandir)


def test_a_folder_that_cannot_be_listed_keeps_its_files_and_is_sent_once_it_can(
    fx: Fixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(fx.root / "a" / "x.json", doc())
    fx.catch_up()
    unseal = seal(monkeypatch, fx.root / "a")
    fx.poller.sweep_step()
    assert fx.events == []  # out of sight is not deleted
    assert fx.poller.folders["a"].unreadable
    unseal()
    fx.poller.sweep_step()
    # As inotify's event for the change: the writer reconciles the folder, rejection and files.
    assert fx.events == [("attrib", "a", "", True)]
    fx.events.clear()
    fx.poller.sweep_step()
    assert fx.events == []


def test_a_folder_unreadable_when_discovered_is_sent_once_it_can_be_listed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "inbox"
    write(root / "run7" / "a.json", doc())
    f = Fixture(root, Clock())
    unseal = seal(monkeypatch, root / "run7")
    f.poller.discover()
    assert f.poller.folders["run7"].unreadable and not f.poller.folders[""].unreadable
    unseal()
    f.poller.sweep_step()
    assert f.events == [("attrib", "run7", "", True)]  # its file is the writer's reconcile's


def test_an_in_place_rewrite_is_left_to_the_sweep(fx: Fixture) -> None:
    write(fx.root / "a" / "deep" / "r.json", doc())
    fx.catch_up()
    fx.poll(), fx.poll()  # the new file's folder moved: listed, and once more
    folder_before = dir_key(str(fx.root / "a" / "deep"))
    with (fx.root / "a" / "deep" / "r.json").open("a") as fh:
        fh.write(" ")  # the file's mtime moves, its folder's does not
    assert dir_key(str(fx.root / "a" / "deep")) == folder_before
    assert fx.poll() == []
    fx.events.clear()
    fx.poller.sweep_step()  # a small tree: one step is the whole sweep
    assert fx.events == [("modified", "a/deep/r.json", "", False)]
    assert fx.poller.status()["last_sweep_at"] is not None


def test_nothing_is_compared_before_there_is_a_database(tmp_path: Path) -> None:
    root = tmp_path / "inbox"
    root.mkdir()
    events: list[Any] = []
    answer: dict[str, Any] = {"keys": None}
    poller = Poller(str(root), Matcher(("*.json",), ()), lambda _: answer["keys"], events.append, 1.0, 0.01)
    poller.discover()
    write(root / "x.json", doc())
    os.utime(root, ns=(1, 1))
    poller.poll()
    assert events == []
    answer["keys"] = {}
    poller.poll()  # looked at again, now that the database answers
    assert [e.event_type for e in events] == ["created"]


def run_for(fx: Fixture, seconds: float) -> int:
    """Drive the poller's loop on the fake clock; the number of polls."""
    end, polls = fx.clock.now + seconds, 0
    while fx.clock.now < end:
        before = fx.poller.last_poll
        wait = fx.poller.step()
        polls += fx.poller.last_poll != before
        fx.clock.now += wait
    return polls


def paced(tmp_path: Path, folders: int, cost: float, share: float = 0.01) -> Fixture:
    root = tmp_path / "inbox"
    for i in range(folders):
        write(root / f"f{i}" / "a.json", doc())
    fx = Fixture(root, Clock(), interval=1.0, share=share, cost=cost)
    fx.catch_up()
    fx.poller.discover()
    fx.poller.start_sweeping()
    return fx


def test_polls_and_sweeps_stay_within_the_cpu_share(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # One folder per step of the sweep, and each measured piece of work costs 2 ms of CPU: with
    # 1% of a core, the polls (every second) take 0.2%, the sweep the rest.
    monkeypatch.setattr(poller, "SWEEP_STEP_FILES", 1)
    fx = paced(tmp_path, folders=50, cost=0.002)
    polls = run_for(fx, 600.0)
    spent = fx.meter.spent
    assert spent <= 0.01 * 600 + fx.poller.budget.cap + 0.002
    assert spent >= 0.009 * 600  # and the budget is used: the sweep goes on
    assert 595 <= polls <= 601  # polls keep their interval
    status = fx.poller.status()
    assert status["poll_period"] == 1.0
    # A sweep is 51 folders at 2 ms each, out of 0.8% of a core: about 12.75 s.
    assert 11 <= status["sweep_seconds"] <= 15
    assert fx.events == []  # and nothing changed


def test_the_poll_period_stretches_when_folder_stats_alone_would_exceed_their_part(tmp_path: Path) -> None:
    fx = paced(tmp_path, folders=5, cost=0.015)  # 15 ms per round of folder stats, 1% of a core
    polls = run_for(fx, 400.0)
    assert fx.poller.status()["poll_period"] == pytest.approx(2.0)  # 15 ms / (3/4 of 1%)
    assert 195 <= polls <= 201
    assert fx.meter.spent <= 0.01 * 400 + fx.poller.budget.cap + 0.015
    assert fx.poller.status()["sweep_seconds"] is not None  # the sweep still has its quarter


def test_sweeps_still_happen_when_every_wake_up_costs_cpu(tmp_path: Path) -> None:
    # Waking up to check the budget costs CPU too (0.3 ms here, a short interval): waking for just
    # the reserve would spend it again on the wake-up, and no sweep would ever begin.
    fx = paced(tmp_path, folders=3, cost=0.0001, share=0.008)
    fx.poller.interval = 0.2
    end = fx.clock.now + 60.0
    while fx.clock.now < end:
        fx.meter.spent += 0.0003  # the wake-up, outside any measured piece of work
        fx.clock.now += fx.poller.step()
    assert fx.poller.status()["sweep_seconds"] is not None
    assert fx.meter.spent <= 0.008 * 60 + fx.poller.budget.cap + 0.001
