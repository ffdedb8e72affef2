"""``watcher notify`` end to end: a real ``watcher run`` daemon, a real ``watcher notify`` process
and a local webhook receiver. Rejected files are posted (both formats); a receiver that is down is
retried and then caught up, in order; a notify process killed -9 forty times at random instants
while rejections keep coming delivers every one of them at least once; a regression the daemon
finds (its checks on) is posted with its reasons."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from testing.daemon import Daemon
from testing.helpers import doc, wait_until, write
from testing.webhook import NotifyProcess, Receiver, kill_loop, rejected_ids

pytestmark = pytest.mark.slow


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon(tmp_path).start()
    yield d
    d.stop()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


@pytest.fixture
def spawn(tmp_path: Path, daemon: Daemon) -> Iterator[Callable[..., NotifyProcess]]:
    """``spawn(webhooks, **settings)``: a NotifyProcess on the daemon's database, killed after the
    test if it still runs (a failed assertion leaves none behind)."""
    made: list[NotifyProcess] = []

    def make(webhooks: list[dict[str, str]], **settings: float) -> NotifyProcess:
        made.append(NotifyProcess(tmp_path, daemon.db, webhooks, **settings))
        return made[-1]

    yield make
    for notify in made:
        notify.cleanup()


def test_rejected_files_are_posted_in_both_formats(
    spawn: Callable[..., NotifyProcess], daemon: Daemon, receiver: Receiver
) -> None:
    notify = spawn([{"url": receiver.url}, {"url": f"{receiver.url}/s", "format": "slack"}]).start()
    for i in range(3):
        write(daemon.inbox / f"bad{i}.json", doc(issuer=f"nobody{i}"))
    write(daemon.inbox / "ok.json", doc())
    wait_until(lambda: len(receiver.posts) == 6, what="three rejections, twice")
    ids = rejected_ids(daemon.db)
    assert sorted(receiver.ids()) == ids and len(ids) == 3
    plain = [p for p in receiver.posts if "id" in p["body"]]
    assert {p["body"]["path"] for p in plain} == {"bad0.json", "bad1.json", "bad2.json"}
    assert all(p["headers"]["Idempotency-Key"] == p["body"]["key"] for p in plain)
    assert all(p["body"]["errors"][0]["field"] == "issuer" for p in plain)
    slack = sorted(p["body"]["text"] for p in receiver.posts if "text" in p["body"])
    assert len(slack) == 3 and all(" rejected:  issuer: not a valid e-mail address" in t for t in slack)
    assert notify.stop() == 0
    assert [e["event"] for e in notify.events()][-1] == "notify_stopped"


def test_a_receiver_that_is_down_is_retried_then_caught_up_in_order(
    spawn: Callable[..., NotifyProcess], daemon: Daemon, receiver: Receiver
) -> None:
    notify = spawn([{"url": receiver.url}], notify_max_backoff=0.3).start()
    receiver.stop()  # not listening: connections refused
    for i in range(5):
        write(daemon.inbox / f"a{i}.json", "[1]")
    wait_until(lambda: len(rejected_ids(daemon.db)) == 5, what="five rejections")
    wait_until(lambda: len(notify.events("webhook_failed")) >= 3, what="retries while down")
    receiver.status = 503  # listening again, but failing
    receiver.start()
    wait_until(lambda: receiver.refused >= 2, what="refused posts")
    for i in range(5):
        write(daemon.inbox / f"b{i}.json", "[2]")
    receiver.status = 200
    wait_until(lambda: len(receiver.ids()) >= 10, what="the backlog caught up")
    assert receiver.ids() == rejected_ids(daemon.db)  # every one, once, in history order
    failed = notify.events("webhook_failed")
    assert {e["reason"] for e in failed} == {"Connection refused", "HTTP 503 Service Unavailable"}
    assert all(e["id"] == failed[0]["id"] and e["retry_in"] <= 0.3 for e in failed)  # the first held
    assert [e["failures"] for e in notify.events("webhook_back")] == [len(failed)]
    assert notify.stop() == 0
    assert "Traceback" not in notify.log_path.read_text()


def test_killed_at_random_forty_times_it_loses_no_event(
    spawn: Callable[..., NotifyProcess], daemon: Daemon, receiver: Receiver
) -> None:
    notify = spawn([{"url": receiver.url}]).start()
    figures = kill_loop(daemon, notify, receiver, kills=40)
    expected, got = rejected_ids(daemon.db), receiver.ids()
    assert set(got) == set(expected) and figures["rejections"] > 100  # at least once, nothing unknown
    first_seen = list(dict.fromkeys(got))
    assert first_seen == sorted(first_seen)  # a first delivery never overtakes an earlier event
    assert figures["resumed_from"] > 10  # the kills cut into the delivery, again and again
    assert notify.stop() == 0


def test_a_regression_the_daemon_finds_is_posted_with_its_reasons(tmp_path: Path, receiver: Receiver) -> None:
    # The whole chain with no hand-made history: a daemon with the regression checks on scores a
    # model's second experiment, worse than its first, and notify posts it (both formats).
    daemon = Daemon(tmp_path, env={"WATCHER_REGRESSIONS": "true"}).start()
    notify = NotifyProcess(
        tmp_path, daemon.db, [{"url": receiver.url}, {"url": f"{receiver.url}/s", "format": "slack"}]
    )
    try:
        notify.start()
        model = "3f2b8c1e-7d4a-4e0b-9a6f-1c2d3e4f5a6b"
        write(daemon.inbox / "first.json", doc(model_id=model, experiment_date="2024-05-01T12:00:00.000Z"))
        wait_until(lambda: "first.json" in daemon.results(), what="the first experiment scored")
        worse = doc(model_id=model, experiment_date="2024-05-02T12:00:00.000Z", recall_arr=[1.0, 0.8, 0.6, 0.3, 0.0])
        write(daemon.inbox / "second.json", worse)
        wait_until(lambda: len(receiver.posts) == 2, what="the regression, twice")
        plain = next(p["body"] for p in receiver.posts if "id" in p["body"])
        assert plain["event"] == "regressed" and plain["path"] == "second.json" and plain["model_id"] == model
        assert "target no longer met" in plain["regression"]
        assert plain["id"] in [e[0] for e in _scored_ids(daemon.db)]
        slack = next(p["body"]["text"] for p in receiver.posts if "text" in p["body"])
        assert f"model {model} regressed (second.json)" in slack and "target no longer met" in slack
        assert [e["path"] for e in daemon.events() if e["event"] == "model_regressed"] == ["second.json"]
        assert notify.stop() == 0
    finally:
        notify.cleanup()
        daemon.stop()


def _scored_ids(db: Path) -> list[tuple[int, str]]:
    conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT id, path FROM history WHERE outcome = 'scored'").fetchall()
    finally:
        conn.close()
