"""The daemon and the CLI at the edges an operator meets in the first week: its own files in the
watch dir, stray environment variables, a second database, missing folders, concurrent scans."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon_harness import Daemon
from tests.helpers import doc, write


def mid(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon(tmp_path)
    yield d
    d.stop()


def test_unknown_watcher_variable_is_warned_about_once_and_the_daemon_goes_on(tmp_path: Path) -> None:
    d = Daemon(tmp_path, env={"WATCHER_UNRELATED_JOB_ID": "42"})
    try:
        d.start()
        write(d.inbox / "a.json", doc(model_id=mid(1)))
        d.wait_results({"a.json": mid(1)})
        warnings = [e for e in d.events() if e["event"] == "unknown_environment_variable"]
        assert [(e["level"], e["variable"]) for e in warnings] == [("warning", "WATCHER_UNRELATED_JOB_ID")]
    finally:
        assert d.stop() == 0
