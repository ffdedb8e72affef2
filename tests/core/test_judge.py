"""judge(): one path in, one outcome out, for every kind of thing a path can be."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from testing.helpers import doc, write
from watcher.judge import JudgeOptions, _read_at_most, judge, judge_many
from watcher.outcomes import BAD_NAME, Rejected, Removed, Scored, Unchanged
from watcher.resultfile import Problem


@pytest.fixture
def opts(tmp_path: Path) -> JudgeOptions:
    root = tmp_path / "inbox"
    root.mkdir()
    return JudgeOptions(root=root, target_recall=0.85, max_file_bytes=10_000)


def reason(outcome: object) -> str:
    assert isinstance(outcome, Rejected), outcome
    return outcome.errors[0].message


def test_valid_file_is_scored_with_stat_and_hash(opts: JudgeOptions) -> None:
    path = write(opts.root / "a.json", doc(model_id="3F2B8C1E-7D4A-4E0B-9A6F-1C2D3E4F5A6B"))
    out = judge("a.json", opts)
    assert isinstance(out, Scored)
    assert out.model_id == "3f2b8c1e-7d4a-4e0b-9a6f-1c2d3e4f5a6b"
    assert (out.optimal_threshold, out.closest_recall_value, out.target_met, out.n_points) == (0.5, 0.85, True, 5)
    assert out.stat.size == path.stat().st_size and out.stat.inode == path.stat().st_ino
    assert len(out.sha256) == 64


def test_known_hash_skips_parsing(opts: JudgeOptions) -> None:
    write(opts.root / "a.json", doc())
    first = judge("a.json", opts)
    assert isinstance(first, Scored)
    assert judge("a.json", opts, known_sha=first.sha256) == Unchanged("a.json", first.stat, first.sha256)


def test_invalid_file_is_rejected_with_reasons(opts: JudgeOptions) -> None:
    write(opts.root / "a.json", doc(issuer="nobody"))
    out = judge("a.json", opts)
    assert isinstance(out, Rejected) and out.sha256 and [p.field for p in out.errors] == ["issuer"]


def test_missing_file_is_removed(opts: JudgeOptions) -> None:
    assert judge("gone.json", opts) == Removed("gone.json")
    assert judge("no/such/dir.json", opts) == Removed("no/such/dir.json")


def test_directory_is_not_a_file(opts: JudgeOptions) -> None:
    (opts.root / "x.json").mkdir()
    assert judge("x.json", opts) == Removed("x.json")


def test_oversized_file_is_rejected_without_reading(opts: JudgeOptions) -> None:
    write(opts.root / "big.json", b" " * 10_001)
    out = judge("big.json", opts)
    assert reason(out) == "file is 10001 bytes, over max_file_bytes (10000)"
    assert isinstance(out, Rejected) and out.sha256 is None


def test_fifo_is_never_opened_for_a_blocking_read(opts: JudgeOptions) -> None:
    os.mkfifo(opts.root / "pipe.json")  # no writer: a blocking open would hang this test
    assert reason(judge("pipe.json", opts)) == "not a regular file (a FIFO); not read"


def test_device_file_is_rejected(opts: JudgeOptions) -> None:
    os.symlink("/dev/null", opts.root / "dev.json")
    out = judge("dev.json", JudgeOptions(opts.root, 0.85, 10_000, follow_symlinks=True))
    assert reason(out) == "not a regular file (a device); not read"


def test_symlink_outside_the_tree_is_rejected(opts: JudgeOptions, tmp_path: Path) -> None:
    outside = write(tmp_path / "outside.json", doc())
    os.symlink(outside, opts.root / "link.json")
    assert reason(judge("link.json", opts)) == "symbolic link points outside the watch directory; not followed"
    followed = JudgeOptions(opts.root, 0.85, 10_000, follow_symlinks=True)
    assert isinstance(judge("link.json", followed), Scored)


def test_symlink_inside_the_tree_is_followed(opts: JudgeOptions) -> None:
    write(opts.root / "real" / "a.json", doc())
    os.symlink("real/a.json", opts.root / "alias.json")
    assert isinstance(judge("alias.json", opts), Scored)


def test_dangling_symlink_is_reported(opts: JudgeOptions) -> None:
    os.symlink("nowhere.json", opts.root / "dangling.json")
    assert reason(judge("dangling.json", opts)) == "dangling symbolic link: its target does not exist"


def test_unexpected_exception_becomes_a_rejection(opts: JudgeOptions, monkeypatch: pytest.MonkeyPatch) -> None:
    write(opts.root / "a.json", doc())

    def boom(*_: object) -> None:
        raise RuntimeError("kaboom")

    monkeypatch.setattr("watcher.judge.validate_bytes", boom)
    out = judge("a.json", opts)
    assert isinstance(out, Rejected)
    assert out.errors == (Problem(None, "internal error while judging the file: RuntimeError: kaboom"),)


def test_judge_many_gives_what_judge_gives_one_by_one(opts: JudgeOptions, monkeypatch: pytest.MonkeyPatch) -> None:
    write(opts.root / "a.json", doc())
    write(opts.root / "bad.json", "{")
    write(opts.root / "b.json", doc(recall_arr=[0.2, 0.9, 0.8], threshold_arr=[0.1, 0.5, 0.7]))
    os.mkfifo(opts.root / "pipe.json")
    os.symlink("a.json", opts.root / "alias.json")
    known = judge("b.json", opts)
    assert isinstance(known, Scored)
    jobs = [
        ("a.json", None, True), ("bad.json", None, True), ("gone.json", None, True), ("pipe.json", None, False),
        ("alias.json", None, False), ("b.json", known.sha256, True), ("a.json", None, False),
    ]  # fmt: skip
    one_by_one = [judge(rel, opts, sha, regular) for rel, sha, regular in jobs]
    assert judge_many(jobs, opts) == one_by_one
    monkeypatch.setattr("watcher.judge.READ_AHEAD_BYTES", 1)  # parse after every read
    assert judge_many(jobs, opts) == one_by_one
    assert [type(o).__name__ for o in one_by_one] == [
        "Scored", "Rejected", "Removed", "Rejected", "Scored", "Unchanged", "Scored",
    ]  # fmt: skip


def test_a_file_listed_as_regular_but_now_a_link_is_looked_at_again(opts: JudgeOptions, tmp_path: Path) -> None:
    outside = write(tmp_path / "outside.json", doc())
    os.symlink(outside, opts.root / "was-a-file.json")  # O_NOFOLLOW refuses it: the lstat path decides
    out = judge("was-a-file.json", opts, regular=True)
    assert reason(out) == "symbolic link points outside the watch directory; not followed"


def _read_pipe(content: bytes, expected: int, keep_open: bool) -> bytes:
    r, w = os.pipe()
    os.set_blocking(r, False)  # a read of the open, empty pipe raises instead of waiting
    os.write(w, content)
    if not keep_open:
        os.close(w)
    try:
        return _read_at_most(r, 100, expected)
    finally:
        os.close(r)
        if keep_open:
            os.close(w)


def test_read_stops_after_one_read_when_the_size_is_as_expected() -> None:
    assert _read_pipe(b"0123456789", expected=10, keep_open=True) == b"0123456789"  # no second read
    assert _read_pipe(b"0123456789", expected=4, keep_open=False) == b"0123456789"  # more: read on
    assert _read_pipe(b"01234", expected=10, keep_open=False) == b"01234"  # less: read on to the end
    with pytest.raises(BlockingIOError):
        _read_pipe(b"01234", expected=10, keep_open=True)  # ...really asking for more


def test_a_name_that_is_not_utf8_is_rejected_unread_under_its_stored_form(opts: JudgeOptions) -> None:
    name = b"m\xff.json"
    with open(os.path.join(os.fsencode(opts.root), name), "wb") as fh:
        fh.write(b"{valid or not, it is never read")
    rel = os.fsdecode(name)
    for out in (judge(rel, opts), judge_many([(rel, None, True)], opts)[0]):
        assert isinstance(out, Rejected)
        assert (out.path, out.errors, out.sha256) == ("m\\xff.json", (Problem(None, BAD_NAME),), None)
        assert out.stat is not None and out.stat.inode == os.stat(os.path.join(os.fsencode(opts.root), name)).st_ino
    os.unlink(os.path.join(os.fsencode(opts.root), name))
    assert judge(rel, opts) == Removed("m\\xff.json")
