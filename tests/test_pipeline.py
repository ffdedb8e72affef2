"""judge(): one path in, one outcome out, for every kind of thing a path can be."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import doc, write
from watcher.models import Problem
from watcher.pipeline import JudgeOptions, Rejected, Removed, Scored, Unchanged, judge


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

    monkeypatch.setattr("watcher.pipeline.validate_bytes", boom)
    out = judge("a.json", opts)
    assert isinstance(out, Rejected)
    assert out.errors == (Problem(None, "internal error while judging the file: RuntimeError: kaboom"),)
