"""The finished-file state machine, driven with a fake clock and fake stat results."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from watcher.tracker import FIRST_LOOK, Kind, Tracker

SETTLE, MAX_WRITE = 2.0, 60.0


def make() -> Tracker:
    return Tracker(settle_seconds=SETTLE, max_write_seconds=MAX_WRITE)


def stat_of(table: Mapping[str, tuple[int, int] | None]) -> Callable[[str], tuple[int, int] | None]:
    return lambda rel: table.get(rel)


def test_writer_close_makes_ready_at_once() -> None:
    t = make()
    kinds: tuple[Kind, ...] = ("created", "opened", "modified", "modified", "closed")
    for kind in kinds:
        t.feed(kind, "a.json", 0.0)
    assert t.ready(0.0, stat_of({})) == ["a.json"]
    assert t.states == {}


def test_open_writer_is_never_judged_before_close_however_long_it_pauses() -> None:
    t = make()
    t.feed("created", "a.json", 0.0)
    t.feed("opened", "a.json", 0.0)
    t.feed("modified", "a.json", 0.1)
    sizes = stat_of({"a.json": (10, 1)})
    for now in (1.0, 5.0, 30.0, 59.0):  # far beyond settle_seconds
        assert t.ready(now, sizes) == []
    t.feed("modified", "a.json", 59.5)
    t.feed("closed", "a.json", 59.6)
    assert t.ready(59.6, sizes) == ["a.json"]


def test_writer_open_too_long_is_judged_as_it_stands() -> None:
    t = make()
    t.feed("opened", "a.json", 0.0)
    t.feed("modified", "a.json", 0.0)
    assert t.ready(MAX_WRITE - 0.1, stat_of({})) == []
    assert t.ready(MAX_WRITE, stat_of({})) == ["a.json"]
    assert t.busy("a.json")  # still open: a reconcile must keep its hands off


def test_our_own_reads_balance_out_and_do_not_dirty() -> None:
    t = make()
    t.feed("opened", "a.json", 0.0)
    t.feed("closed_nowrite", "a.json", 0.0)
    assert t.states == {}
    t.feed("closed_nowrite", "b.json", 0.0)  # a close whose open we never saw
    assert t.states == {}


def test_moved_in_bare_create_waits_for_stable_size_and_mtime() -> None:
    t = make()
    t.feed("created", "a.json", 0.0)  # moved in from outside: no open, no close
    growing = {"a.json": (10, 1)}
    assert t.ready(0.0, stat_of(growing)) == []  # first look
    growing["a.json"] = (20, 2)
    assert t.ready(1.5, stat_of(growing)) == []  # changed: the settle clock restarts
    assert t.ready(3.0, stat_of(growing)) == []
    assert t.ready(3.5, stat_of(growing)) == ["a.json"]


def test_settle_time_counts_from_the_files_own_mtime_when_the_wall_clock_is_given() -> None:
    # A poller finds a file 1.2 s after its last write (wall clock 100.0 at monotonic 0.0): it has
    # been unchanged since its mtime, so 0.8 s more makes settle_seconds, not 2.
    t = make()
    t.feed("created", "a.json", 0.0)
    written = {"a.json": (10, int(98.8e9))}
    assert t.ready(FIRST_LOOK, stat_of(written), wall=100.0 + FIRST_LOOK) == []
    assert t.ready(0.75, stat_of(written), wall=100.75) == []
    assert t.ready(0.8, stat_of(written), wall=100.8) == ["a.json"]
    # Written again after it was first seen: the credit is only for the time since that write.
    t.feed("created", "b.json", 0.0)
    assert t.ready(FIRST_LOOK, stat_of({"b.json": (10, int(99e9))}), wall=100.0 + FIRST_LOOK) == []
    rewritten = {"b.json": (20, int(100.5e9))}
    assert t.ready(1.0, stat_of(rewritten), wall=101.0) == []  # changed: 0.5 s of credit
    assert t.ready(2.45, stat_of(rewritten), wall=102.45) == []
    assert t.ready(2.5, stat_of(rewritten), wall=102.5) == ["b.json"]
    # An mtime ahead of this clock (another machine's, on NFS) gives none; the credit is at most settle_seconds.
    t.feed("created", "c.json", 0.0)
    assert t.ready(FIRST_LOOK, stat_of({"c.json": (1, int(500e9))}), wall=100.0) == []
    assert t.ready(FIRST_LOOK + SETTLE, stat_of({"c.json": (1, int(500e9))}), wall=102.0) == ["c.json"]


def test_rename_into_place_and_delete_are_ready_at_once() -> None:
    t = make()
    t.feed("moved_in", "a.json", 0.0)
    t.feed("deleted", "b.json", 0.0)
    assert sorted(t.ready(0.0, stat_of({}))) == ["a.json", "b.json"]


def test_vanished_file_with_no_close_is_judged_at_first_look() -> None:
    t = make()
    t.feed("created", "a.json", 0.0)
    assert t.ready(0.0, stat_of({})) == []
    assert t.ready(FIRST_LOOK, stat_of({})) == ["a.json"]


def test_next_deadline() -> None:
    t = make()
    assert t.next_deadline(5.0) is None
    t.feed("created", "a.json", 5.0)
    assert t.next_deadline(5.0) == 5.0 + FIRST_LOOK  # the first look
    t.ready(5.0 + FIRST_LOOK, stat_of({"a.json": (1, 1)}))
    assert t.next_deadline(5.5) == 5.0 + FIRST_LOOK + SETTLE  # then when it would have settled
    t.feed("opened", "b.json", 6.0)
    t.feed("modified", "b.json", 6.0)
    assert t.next_deadline(6.0) == 5.0 + FIRST_LOOK + SETTLE
    t.feed("closed", "c.json", 6.0)
    assert t.next_deadline(6.0) == 6.0  # ready at once


def test_burst_costs_follow_events_not_files_in_flight() -> None:
    t = make()
    looked: list[str] = []

    def key(rel: str) -> tuple[int, int] | None:
        looked.append(rel)
        return (1, 1)

    for i in range(1000):
        t.feed("created", f"{i}.json", 0.0)
        t.feed("opened", f"{i}.json", 0.0)
    for i in range(1000):
        t.feed("closed", f"{i}.json", 0.01)
        assert t.ready(0.01, key) == [f"{i}.json"]  # each close is ready at once...
    assert looked == []  # ...without a stat of the other files in flight


def test_stale_open_count_is_forgotten() -> None:
    t = make()
    t.feed("opened", "a.json", 0.0)  # its close was dropped
    t.ready(2 * MAX_WRITE + 1, stat_of({}))
    assert t.states == {}


def test_writing_is_only_a_seen_open() -> None:
    t = make()
    t.feed("created", "bare.json", 0.0)
    t.feed("opened", "open.json", 0.0)
    assert not t.writing("bare.json") and t.busy("bare.json")
    assert t.writing("open.json") and not t.writing("unknown.json")
