"""The database: schema and migration, apply() semantics, the report view's winner rule."""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from watcher.errors import StoreError, TransientStoreError
from watcher.outcomes import FileStat, Rejected, Removed, Scored, Unchanged, stored_path
from watcher.resultfile import Problem
from watcher.schema import SCHEMA_VERSION
from watcher.store import Store, transient

ST = FileStat(10, 1, 1)


def scored(path: str, model: str = "m1", at: str = "2024-05-01T12:00:00.000000Z", sha: str = "s1") -> Scored:
    return Scored(path, ST, sha, model, "ana@example.com", at, at, 0.5, 0.85, 0.0, True, 0.85, 5)


def rejected(path: str, sha: str = "r1", message: str = "bad") -> Rejected:
    return Rejected(path, ST, sha, (Problem("issuer", message),))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / "w.db") as opened:
        yield opened


def history(store: Store) -> list[tuple[str, str]]:
    return [(r["outcome"], r["path"]) for r in store.db.query("SELECT outcome, path FROM history ORDER BY id")]


def test_new_database_is_wal_current_and_private(tmp_path: Path) -> None:
    with Store.open(tmp_path / "sub" / "w.db") as s:
        assert s.version == SCHEMA_VERSION
        assert s.db.journal_mode == "wal"
    assert (tmp_path / "sub" / "w.db").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "sub").stat().st_mode & 0o007 == 0


def test_valid_invalid_valid_moves_between_tables(store: Store) -> None:
    store.apply([scored("a.json")])
    assert store.counts()["results"] == 1
    store.apply([rejected("a.json")])
    assert (store.counts()["results"], store.counts()["rejections"]) == (0, 1)
    store.apply([scored("a.json", sha="s2")])
    assert (store.counts()["results"], store.counts()["rejections"]) == (1, 0)
    store.apply([Removed("a.json")])
    assert history(store) == [("scored", "a.json"), ("rejected", "a.json"), ("scored", "a.json"), ("removed", "a.json")]


def test_same_rejection_again_records_nothing_new(store: Store) -> None:
    assert store.apply([rejected("a.json")]).changed
    assert not store.apply([rejected("a.json")]).changed
    assert store.apply([rejected("a.json", message="other")]).changed
    assert len(history(store)) == 2


def test_unchanged_refreshes_stat_only(store: Store) -> None:
    store.apply([scored("a.json")])
    applied = store.apply([Unchanged("a.json", FileStat(10, 99, 1), "s1")])
    assert not applied.changed
    assert store.stat_keys()["a.json"] == FileStat(10, 99, 1)
    assert len(history(store)) == 1


def test_removing_an_unknown_path_is_a_no_op(store: Store) -> None:
    assert not store.apply([Removed("never.json")]).changed
    assert history(store) == []


def test_report_view_latest_instant_wins_then_greatest_path(store: Store) -> None:
    store.apply(
        [
            scored("old.json", "m1", at="2024-01-01T00:00:00.000000Z"),
            scored("new.json", "m1", at="2024-06-01T00:00:00.000000Z"),
            scored("a.json", "m2", at="2024-06-01T00:00:00.000000Z"),
            scored("b.json", "m2", at="2024-06-01T00:00:00.000000Z"),
        ]
    )
    assert [(r[0], r[-1]) for r in store.report_rows()] == [("m1", "new.json"), ("m2", "b.json")]
    assert store.duplicates({"m1", "m2"}) == {"m1": ["new.json", "old.json"], "m2": ["b.json", "a.json"]}


def test_report_filters(store: Store) -> None:
    store.apply([scored("a.json", "abc1"), scored("b.json", "abd2"), scored("c.json", "x_%")])
    assert [r[0] for r in store.report_rows(model="ab")] == ["abc1", "abd2"]
    assert [r[0] for r in store.report_rows(model="x_")] == ["x_%"]
    assert list(store.report_rows(issuer="ANA@example.com")) and not list(store.report_rows(issuer="bob@example.com"))


def test_outcomes_of_another_target_or_rules_are_not_current(tmp_path: Path) -> None:
    with Store.open(tmp_path / "w.db") as first:
        first.apply([scored("a.json"), rejected("b.json")])
    other = Store.open(tmp_path / "w.db", target_recall=0.9)
    keys, known = other.stat_keys(), other.known_paths(["a.json", "b.json"])
    assert keys["a.json"] is None and keys["b.json"] is not None  # a rejection does not depend on the target
    assert not known["a.json"].current and known["a.json"].reusable_sha is None
    assert known["b.json"].current and known["b.json"].reusable_sha == known["b.json"].sha256
    other.close()
    with Store.open(tmp_path / "w.db", rules_version=2) as newer_rules:
        assert set(newer_rules.stat_keys().values()) == {None}
        assert not any(k.current for k in newer_rules.known_paths(["a.json", "b.json"]).values())


def test_known_under_a_folder(store: Store) -> None:
    store.apply(
        [scored("sub/a.json"), scored("sub/x/b.json", "m2"), scored("sub0.json", "m3"), scored("su.json", "m4")]
    )
    assert sorted(store.stat_keys("sub")) == ["sub/a.json", "sub/x/b.json"]
    store.apply([scored("sub0/c.json", "m5"), rejected("x/d.json")])
    assert sorted(store.stat_keys(outside=["sub", "x"])) == ["su.json", "sub0.json", "sub0/c.json"]
    assert sorted(store.known_paths(["sub0.json", "nope.json"])) == ["sub0.json"]


def test_paths_that_are_not_utf8_are_looked_up_in_their_stored_form(store: Store) -> None:
    # A name the OS could not decode arrives with lone surrogates; SQLite cannot bind those.
    folder, name = os.fsdecode(b"d\xfe"), os.fsdecode(b"d\xfe/a\xff.json")
    store.apply([rejected(stored_path(name)), scored("b.json")])
    assert store.stat_keys(folder) == {"d\\xfe/a\\xff.json": (10, 1, 1)}
    assert sorted(store.stat_keys(outside=[folder])) == ["b.json"]
    assert sorted(store.known_paths([name, "b.json", os.fsdecode(b"nope\xff.json")])) == sorted([name, "b.json"])


def test_rejection_errors_are_a_json_array(store: Store) -> None:
    store.apply([rejected("a.json")])
    raw = store.db.execute("SELECT errors FROM rejections").fetchone()[0]
    assert json.loads(raw) == [{"field": "issuer", "message": "bad"}]
    assert store.rejection_rows()[0]["errors"] == [{"field": "issuer", "message": "bad"}]


def test_readonly_open(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no database here yet"):
        Store.open_readonly(tmp_path / "none.db")
    with Store.open(tmp_path / "w.db") as rw:
        rw.apply([scored("a.json")])
    with Store.open_readonly(tmp_path / "w.db") as ro:
        assert len(list(ro.report_rows())) == 1
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            ro.db.execute("DELETE FROM results")


def test_report_details_limit_keeps_the_most_recent_report_rows(store: Store) -> None:
    day = "2024-05-0{}T12:00:00.000000Z".format
    store.apply([
        scored("m1-old.json", "m1", day(1)), scored("m1-new.json", "m1", day(5)),  # m1's row: m1-new
        scored("m2.json", "m2", day(4)),
        scored("m3-a.json", "m3", day(6)), scored("m3-b.json", "m3", day(6)),  # a tie: the greater path wins
        scored("m4.json", "m4", day(2)),
    ])  # fmt: skip
    every = list(store.report_details())
    assert [(r[0], r[5]) for r in every] == [("m1", "m1-new.json"), ("m2", "m2.json"), ("m3", "m3-b.json"),
                                             ("m4", "m4.json")]  # fmt: skip
    assert [(*r[:4], *r[6:8], *r[4:6]) for r in every] == list(store.report_rows())  # the view's columns
    assert [(r[0], r[5]) for r in store.report_details(limit=2)] == [("m1", "m1-new.json"), ("m3", "m3-b.json")]
    assert list(store.report_details(limit=2)) == [every[0], every[2]]
    assert list(store.report_details(limit=10)) == every


def test_size_hint_is_at_least_the_number_of_stored_paths(store: Store) -> None:
    assert store.size_hint() == 0
    store.apply([scored("a.json"), scored("b.json", "m2"), rejected("c.json")])
    assert store.size_hint() == 3
    store.apply([Removed("a.json")])
    assert store.size_hint() >= 2


def test_checkpointing_copies_the_log_into_the_database_file_meanwhile(store: Store, tmp_path: Path) -> None:
    store.apply([scored(f"{i}.json", f"m{i}") for i in range(500)])
    before = (tmp_path / "w.db").stat().st_size  # the batch is in the write-ahead log only
    with store.checkpointing():
        pass
    assert (tmp_path / "w.db").stat().st_size > before
    assert len(list(store.report_rows())) == 500


def test_page_columns_list_each_model_report_row_first(store: Store) -> None:
    store.apply([scored("m2-a.json", "m2", "2024-05-01T12:00:00.000000Z"), scored("m1.json", "m1"),
                 scored("m2-b.json", "m2", "2024-05-02T12:00:00.000000Z"), rejected("bad.json")])  # fmt: skip
    store.apply([Removed("m1.json"), scored("m1.json", "m1")])  # a gap in the rowids
    cols = store.page_columns()
    paths = json.loads(cols["paths"])
    assert [paths[p] for p in cols["order"]] == ["m1.json", "m2-b.json", "m2-a.json"]
    assert [paths[p] for p in cols["by_path"]] == sorted(paths)
    assert [paths[p] for p in cols["by_date"]] == ["m1.json", "m2-a.json", "m2-b.json"]
    assert json.loads(cols["ids"]) == [p.split("-")[0].removesuffix(".json") for p in paths]
    assert cols["met"] == "111" and cols["npts"] == 5 and cols["targets"] == 0.85 and cols["curves"] == b""


def test_page_counts_count_models_beyond_the_cap_and_say_whether_history_goes_further(store: Store) -> None:
    store.apply([scored("a.json", "m1"), scored("b.json", "m1"), scored("c.json", "m2")])
    assert store.page_counts(max_models=3, history_limit=3) == (0, False)  # 3 results: all fit, uncounted
    assert store.page_counts(max_models=2, history_limit=2) == (0, True)  # 3 results but 2 models
    assert store.page_counts(max_models=1, history_limit=10) == (1, False)
    assert store.page_counts(max_models=1, history_limit=0) == (1, True)  # every entry is beyond 0


def test_earlier_outcomes_are_replaced_and_removed_content(store: Store) -> None:
    store.apply([scored("a.json", "m1", sha="s1"), scored("b.json", "m2", sha="s2"), scored("c.json", "m3")])
    store.apply([scored("a.json", "m1", sha="s1b"), Removed("b.json")])
    store.apply([scored("c.json", "m3")])  # re-scored, same content: not an earlier outcome
    earlier = [(m, p, outcome, sha) for m, _, p, outcome, sha in store.earlier_outcomes(1000)]
    assert earlier == [
        ("m2", "b.json", "removed", None),
        ("m2", "b.json", "scored", "s2"),
        ("m1", "a.json", "scored", "s1"),
    ]
    assert [e[3] for e in store.earlier_outcomes(2)] == ["removed"]  # only the newest entries are looked at


def test_a_write_waits_for_another_connections_write_lock_instead_of_failing(tmp_path: Path) -> None:
    # apply() reads before it writes. With a deferred BEGIN, another connection's commit between
    # the two makes the write fail at once ("database is locked", busy timeout ignored); a write
    # transaction that takes the lock up front waits for it instead.
    first = Store.open(tmp_path / "w.db")
    first.apply([scored("a.json")])
    first.close()
    opened, go, started = threading.Event(), threading.Event(), threading.Event()
    failed: list[BaseException] = []

    def write() -> None:
        store = Store.open(tmp_path / "w.db")  # a connection belongs to its thread
        opened.set()
        go.wait(10)
        store.db.conn.set_trace_callback(lambda sql: started.set())
        try:
            store.apply([scored("a.json", sha="s2"), scored("b.json", model="m2")])
        except BaseException as exc:
            failed.append(exc)
        finally:
            store.close()

    thread = threading.Thread(target=write)
    thread.start()
    assert opened.wait(30)
    other = sqlite3.connect(tmp_path / "w.db", timeout=30, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO history (at, path, outcome) VALUES ('x', 'other.json', 'removed')")
    go.set()
    assert started.wait(10)
    thread.join(0.5)  # time for a deferred transaction to reach its first write and fail
    other.execute("COMMIT")
    thread.join(30)
    assert not thread.is_alive()
    assert failed == []
    assert other.execute("SELECT count(*) FROM results").fetchone()[0] == 2
    other.close()


def test_opening_while_another_connection_holds_the_write_lock_does_not_fail(tmp_path: Path) -> None:
    # A daemon starting while a backup or a script holds the write lock must start (and wait in
    # its writes), not give up once the busy timeout has run out.
    Store.open(tmp_path / "w.db").close()
    other = sqlite3.connect(tmp_path / "w.db", isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        with Store.open(tmp_path / "w.db") as store:
            assert store.version == SCHEMA_VERSION
    finally:
        other.execute("ROLLBACK")
        other.close()


def _sqlite_error(message: str, code: int) -> sqlite3.Error:
    exc = sqlite3.OperationalError(message)
    exc.sqlite_errorcode = code  # as the sqlite3 module sets it
    return exc


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (_sqlite_error("disk I/O error", 10 | (4 << 8)), True),  # SQLITE_IOERR_FSYNC
        (_sqlite_error("database or disk is full", 13), True),  # SQLITE_FULL
        (sqlite3.OperationalError("disk I/O error"), True),  # no code: the message says it
        (OSError(errno.EIO, "Input/output error"), True),
        (OSError(errno.ENOSPC, "No space left on device"), True),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), True),
        (TransientStoreError("x"), True),
        (_sqlite_error("attempt to write a readonly database", 8), False),  # SQLITE_READONLY
        (_sqlite_error("unable to open database file", 14), False),  # SQLITE_CANTOPEN
        (_sqlite_error("file is not a database", 26), False),
        (_sqlite_error("database is locked", 5), False),
        (OSError(errno.EACCES, "Permission denied"), False),
        (OSError(errno.EROFS, "Read-only file system"), False),  # what ProtectSystem=strict gives
        (StoreError("x"), False),
    ],
)
def test_which_errors_are_waited_out(exc: BaseException, expected: bool) -> None:
    assert transient(exc) is expected


def test_a_database_that_is_no_database_is_not_waited_for(tmp_path: Path) -> None:
    (tmp_path / "w.db").write_bytes(b"not a database, " * 100)
    with pytest.raises(StoreError) as raised:
        Store.open(tmp_path / "w.db")
    assert not isinstance(raised.value, TransientStoreError)
