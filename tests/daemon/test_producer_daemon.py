"""watcher.producer against a running daemon, with real processes and signals: 50 jobs publishing
at once are all scored with no rejection on the way; publishers killed with SIGKILL, at random
moments and between write and rename, leave nothing the daemon judges; a folder the job may not
write into is one exception, or one line and exit 3, and nothing is written."""

from __future__ import annotations

import contextlib
import json
import random
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testing.daemon import Daemon, settle
from testing.helpers import wait_until
from testing.unprivileged import Unprivileged, nobody, shared_tmp

pytestmark = pytest.mark.slow  # real daemon processes

__all__ = ["nobody", "shared_tmp"]  # fixtures

ROOT = Path(__file__).resolve().parents[2]

# One job: announce it is ready, wait for the start signal on stdin, publish, print the outcome.
JOB = """
import json, random, sys
from watcher.producer import publish
folder, model_id, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = random.Random(seed)
labels = [rng.random() < 0.4 for _ in range(3000)]
scores = [min(1.0, max(0.0, rng.gauss(0.6 if y else 0.4, 0.2))) for y in labels]
print("ready", flush=True)
sys.stdin.read(1)
done = publish(folder, model_id=model_id, issuer="job@example.com", labels=labels, scores=scores)
print(json.dumps({"name": done.path.name, "model_id": done.model_id, "threshold": done.optimal_threshold,
                  "recall": done.closest_recall_value}), flush=True)
"""

# A job that publishes big files in a loop. With "hold", it stops inside the fsync of its first
# temporary file (written, not yet renamed), says so, and waits there to be killed.
LOOP = """
import os, random, sys, uuid
from watcher import producer
folder, seed, hold = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "hold"
if hold:
    real_fsync = os.fsync
    def fsync(fd):
        real_fsync(fd)
        print("in-fsync", flush=True)
        sys.stdin.read(1)
    producer.os.fsync = fsync
rng = random.Random(seed)
print("started", flush=True)
while True:
    labels = [rng.random() < 0.5 for _ in range(60000)]
    scores = [rng.random() for _ in labels]
    producer.publish(folder, model_id=uuid.UUID(int=rng.getrandbits(128), version=4), issuer="job@example.com",
                     labels=labels, scores=scores)
"""


OBSERVERS = {
    "inotify": {},
    "polling": {"WATCHER_OBSERVER": "polling", "WATCHER_POLLING_INTERVAL": "0.2"},
}


@pytest.fixture(params=list(OBSERVERS))
def daemon(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Daemon]:
    """A daemon on each observer: inotify sees the rename, polling finds the new name."""
    d = Daemon(tmp_path, env=OBSERVERS[request.param])
    try:
        yield d
    finally:
        try:
            d.stop()
        except subprocess.TimeoutExpired:
            d.kill()


@contextlib.contextmanager
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes started in the block; every one still alive at its end is killed and reaped."""
    started: list[subprocess.Popen[str]] = []
    try:
        yield started
    finally:
        for p in started:
            if p.poll() is None:
                p.kill()
            p.wait(10)
            for stream in (p.stdin, p.stdout):
                if stream is not None:
                    stream.close()


def spawn(started: list[subprocess.Popen[str]], code: str, *args: str) -> subprocess.Popen[str]:
    p = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    started.append(p)
    return p


def expect_line(p: subprocess.Popen[str], line: str) -> None:
    assert p.stdout is not None
    got = p.stdout.readline()
    assert got == f"{line}\n", f"expected {line!r}, got {got!r} (exit {p.poll()})"


def rejected_events(d: Daemon) -> list[dict[str, Any]]:
    return [e for e in d.events() if e["event"] == "file_rejected"]


def test_fifty_jobs_publishing_at_once_are_all_scored_and_never_rejected(daemon: Daemon) -> None:
    daemon.start()
    ids = [str(uuid.UUID(int=i + 1, version=4)) for i in range(50)]
    with processes() as started:
        for i, mid in enumerate(ids):
            spawn(started, JOB, str(daemon.inbox), mid, str(i))
        for p in started:
            expect_line(p, "ready")
        for p in started:  # the start signal, to all of them within a few milliseconds
            assert p.stdin is not None
            p.stdin.write("g")
            p.stdin.close()
        outputs = []
        for p in started:
            assert p.stdout is not None
            outputs.append(json.loads(p.stdout.readline()))
            assert p.wait(60) == 0
    daemon.wait_results({f"{mid}.json": mid for mid in ids}, timeout=60)
    stored = {r[0]: r[1:] for r in daemon.query("SELECT path, optimal_threshold, closest_recall_value FROM results")}
    assert {o["name"]: (o["threshold"], o["recall"]) for o in outputs} == stored
    assert daemon.rejections() == set()
    assert rejected_events(daemon) == []
    assert [p.name for p in daemon.inbox.iterdir() if not p.name.endswith(".json")] == []


def test_publishers_killed_at_any_moment_leave_nothing_the_daemon_judges(daemon: Daemon) -> None:
    daemon.start()
    rng = random.Random(20261207)
    gate = threading.Event()
    held = 0
    with processes() as started:
        for round_ in range(12):
            hold = round_ % 3 == 0
            p = spawn(started, LOOP, str(daemon.inbox), str(round_), "hold" if hold else "run")
            expect_line(p, "started")
            if hold:  # killed with its temporary file written, flushed, and not renamed
                expect_line(p, "in-fsync")
                held += 1
            else:  # killed at a random moment: building, checking, writing or renaming
                gate.wait(rng.uniform(0.0, 1.5))
            p.send_signal(signal.SIGKILL)
            assert p.wait(10) == -signal.SIGKILL
    leftovers = sorted(p.name for p in daemon.inbox.iterdir() if not p.name.endswith(".json"))
    assert len(leftovers) >= held, "the held kills leave their temporary files"
    assert all(name.startswith(".") and name.endswith(".tmp") for name in leftovers), leftovers
    settle(daemon, timeout=60)
    published = {p.name for p in daemon.inbox.glob("*.json")}
    wait_until(lambda: set(daemon.results()) == published, 60, what="every published file scored")
    assert daemon.rejections() == set()
    assert rejected_events(daemon) == []


def test_an_unwritable_folder_is_one_error_and_nothing_is_written(nobody: Unprivileged, shared_tmp: Path) -> None:
    folder = shared_tmp / "inbox"
    folder.mkdir(mode=0o555)
    folder.chmod(0o555)
    data = shared_tmp / "scores.csv"
    data.write_text("label,score\n1,0.9\n0,0.2\n")
    data.chmod(0o644)
    mid = "3f2b8c1e-7d4a-4e0b-9a6f-1c2d3e4f5a6b"
    run = nobody.watcher(
        "publish", "--watch-dir", str(folder), "--scores", str(data), "--model-id", mid, "--issuer", "a@example.com",
        cwd=shared_tmp,
    )  # fmt: skip
    assert (run.returncode, run.stdout) == (3, "")
    assert run.stderr == f"watcher: cannot publish into {folder}: Permission denied\n"
    code = (
        "from watcher.producer import publish\nfrom watcher.errors import PublishError\n"
        f"try:\n    publish({str(folder)!r}, model_id={mid!r}, issuer='a@example.com',\n"
        "            labels=[1, 0], scores=[0.9, 0.2])\n"
        "except PublishError as exc:\n    print(type(exc).__name__, exc)\n"
    )
    run = subprocess.run(
        [nobody.python, "-c", code], cwd=shared_tmp, capture_output=True, text=True, timeout=60, **nobody.popen_args()
    )
    assert (run.returncode, run.stderr) == (0, "")
    assert run.stdout == f"PublishError cannot publish into {folder}: Permission denied\n"
    assert list(folder.iterdir()) == []
