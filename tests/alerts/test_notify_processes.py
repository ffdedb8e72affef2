"""``watcher notify`` end to end: a real ``watcher run`` daemon, a real ``watcher notify`` process
and a local webhook receiver. Rejected files are posted (both formats); a receiver that is down is
retried and then caught up, in order; a notify process killed -9 forty times at random instants
while rejections keep coming delivers every one of them at least once."""

from __future__ import annotations

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
