"""``watcher notify`` in process: which entries are events and what they say (rejections from
scanned files; regressions by the agreed interface, a scored entry's detail
``{"regression": [...]}``), the cursor, the retries, the config, and the exit codes."""

from __future__ import annotations

import io
import json
import socket
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from testing.helpers import doc, wait_until, write
from testing.webhook import Receiver
from watcher import logs
from watcher.alerts.delivery import Cursor, Poster, PostFailed, redacted
from watcher.alerts.events import Event, event_of, history_tag, regression_reasons
from watcher.alerts.notifier import follow_webhook, notify
from watcher.cli import main
from watcher.config import Settings, Webhook, load_settings, notify_state_dir_of
from watcher.errors import ConfigError, NotifyError
from watcher.follow import Entry, Follower, inode_of
from watcher.reconcile import scan
from watcher.store import Store

MODEL = "3f2b8c1e-7d4a-4e0b-9a6f-1c2d3e4f5a6b"


def _mark_regressed(db: Path, path: str, reasons: list[str]) -> int:
    """What the regression rule records (the agreed interface): the scored entry's detail."""
    with sqlite3.connect(db) as conn:
        (id_,) = conn.execute("SELECT max(id) FROM history WHERE path = ? AND outcome = 'scored'", [path]).fetchone()
        conn.execute("UPDATE history SET detail = ? WHERE id = ?", [json.dumps({"regression": reasons}), id_])
    return int(id_)


def test_rejections_and_regressions_are_events_and_nothing_else(make_settings: Any) -> None:
    settings = make_settings()
    scan(settings)
    follower = Follower(settings.db_path)
    write(settings.watch_dir / "bad.json", doc(issuer="x"))
    write(settings.watch_dir / "a.json", doc(model_id=MODEL))
    write(settings.watch_dir / "b.json", doc())
    scan(settings)
    regressed = _mark_regressed(settings.db_path, "a.json", ["target met before, not now", "recall down 0.12"])
    (settings.watch_dir / "b.json").unlink()
    scan(settings)
    batch = follower.poll()
    details = follower.store.scored_details(0, batch[-1].id)
    assert list(details) == [regressed]
    events = [e for e in (event_of(x, details.get(x.id), "gpu01") for x in batch) if e is not None]
    assert sorted((e.kind, e.entry.path) for e in events) == [("regressed", "a.json"), ("rejected", "bad.json")]
    assert [e.id for e in events] == sorted(e.id for e in events)  # in history order
    regression, rejected = sorted(events, key=lambda e: e.kind)
    assert rejected.payload("slack") == {
        "text": "watcher on gpu01: bad.json rejected:  issuer: not a valid e-mail address: "
        "An email address must have an @-sign."
    }
    body = regression.payload("plain")
    assert (body["key"], body["id"], body["host"], body["event"]) == (
        f"gpu01:{regressed}",
        regressed,
        "gpu01",
        "regressed",
    )
    assert (body["model_id"], body["path"]) == (MODEL, "a.json")
    assert body["regression"] == ["target met before, not now", "recall down 0.12"]
    assert body["optimal_threshold"] == 0.5 and body["errors"] is None
    assert regression.payload("slack")["text"] == (
        f"watcher on gpu01: model {MODEL} regressed (a.json): target met before, not now; recall down 0.12"
    )
    assert rejected.payload("plain")["errors"][0]["field"] == "issuer"
    follower.close()


@pytest.mark.parametrize(
    ("detail", "reasons"),
    [(None, ()), ("", ()), ("{", ()), ("[1]", ()), ('{"regression": []}', ()), ('{"other": 1}', ()),
     ('{"regression": ["a", "b"]}', ("a", "b"))],
)  # fmt: skip
def test_only_a_regression_object_with_reasons_is_a_regression(detail: str | None, reasons: tuple[str, ...]) -> None:
    assert regression_reasons(detail) == reasons


def test_the_key_names_host_and_id_whatever_the_host_name() -> None:
    entry = Entry(7, "t", "p", "rejected", None, None, [], None, None, None)
    assert Event("gpu 01/a", "rejected", entry).key == "gpu%2001%2Fa:7"


def test_the_key_names_the_history_so_a_rebuilt_database_reuses_no_key(tmp_path: Path) -> None:
    # Two databases of one host, the second built after the first (a rebuild, a restore): both
    # number their entries from 1, and the same id must not give the same key.
    keys = []
    for name in ("first", "rebuilt"):
        settings = Settings.model_validate(
            {"watch_dir": tmp_path / name / "inbox", "db_path": tmp_path / name / "w.db"}
        )
        write(settings.watch_dir / "bad.json", doc(issuer="nobody"))
        scan(settings)
        with Store.open_readonly(settings.db_path) as store:
            (row,) = store.history_after(0)
            entry = Entry.from_row(row)
            event = event_of(entry, None, "gpu01", history_tag(store.report_mark()[0]))
        assert event is not None and event.id == 1
        keys.append(event.key)
    assert keys[0] != keys[1] and all(k.startswith("gpu01:") and k.endswith(":1") for k in keys)
    assert history_tag(None) == "" and len(keys[0].split(":")[1]) == 8


def test_the_cursor_is_saved_atomically_and_read_back(tmp_path: Path) -> None:
    cursor = Cursor(tmp_path / "state", "https://hooks.example.com/T0/B0/secret")
    assert cursor.load() is None
    cursor.save(41, 99)
    assert Cursor(tmp_path / "state", "https://hooks.example.com/T0/B0/secret").load() == (41, 99)
    assert [p.name for p in (tmp_path / "state").iterdir()] == [cursor.path.name]  # no temporary left
    assert "secret" not in cursor.path.name and "secret" not in cursor.path.read_text()
    cursor.path.write_text("[]")
    with pytest.raises(NotifyError, match="not a cursor file"):
        Cursor(tmp_path / "state", "https://hooks.example.com/T0/B0/secret").load()


def test_a_cursor_that_cannot_be_written_is_one_named_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(NotifyError, match="cannot write the cursor"):
        Cursor(tmp_path / "file", "http://x/").save(1, 1)


def test_the_log_names_a_webhook_without_its_secret() -> None:
    name = redacted("https://user:pw@hooks.example.com:8443/services/T0/B0/XYZ?token=s")
    assert name.startswith("https://hooks.example.com:8443 (") and "XYZ" not in name and "pw" not in name


def test_webhooks_from_the_config_file_and_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        'webhooks = [{url = "https://hooks.example.com/a", format = "slack"}, "http://10.0.0.1:8080/b"]\n'
        'notify_state_dir = "state"\n'
    )
    settings = load_settings(config, env={})
    assert settings.webhooks == (
        Webhook(url="https://hooks.example.com/a", format="slack"),
        Webhook(url="http://10.0.0.1:8080/b", format="plain"),
    )
    assert notify_state_dir_of(settings) == tmp_path / "state"
    env = load_settings(env={"WATCHER_WEBHOOKS": "http://a/1, http://b/2"}, cwd=tmp_path)
    assert [w.url for w in env.webhooks] == ["http://a/1", "http://b/2"]
    assert notify_state_dir_of(env) == tmp_path / "var" / "notify"  # beside the database
    config.write_text('webhooks = [{url = "file:///etc/passwd"}]\n')
    with pytest.raises(ConfigError, match=r"webhooks\.0\.url"):
        load_settings(config, env={})
    config.write_text('webhooks = [{url = "http://a/", format = "teams"}]\n')
    with pytest.raises(ConfigError, match=r"webhooks\.0\.format"):
        load_settings(config, env={})


def test_a_failure_is_one_log_line_and_the_wait_doubles_up_to_the_cap() -> None:
    receiver = Receiver().start()
    receiver.status = 503
    stream = io.StringIO()
    logs.configure("info", "json", stream=stream)
    poster = Poster(Webhook(url=receiver.url), timeout=5, max_backoff=2.0)
    waits: list[float] = []

    def wait(seconds: float) -> bool:
        waits.append(seconds)
        if len(waits) == 5:
            receiver.status = 200
        return False

    event = Event("h", "rejected", Entry(3, "t", "p.json", "rejected", None, None, [], None, None, None))
    assert poster.deliver(event, lambda: False, wait)
    assert waits == [0.5, 1.0, 2.0, 2.0, 2.0]
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    failed = [line for line in lines if line["event"] == "webhook_failed"]
    assert len(failed) == 5 == receiver.refused
    assert failed[0]["reason"] == "HTTP 503 Service Unavailable" and failed[0]["id"] == 3
    assert [line["event"] for line in lines[5:]] == ["webhook_back", "event_notified"]
    assert receiver.ids() == [3] and receiver.posts[0]["headers"]["Idempotency-Key"] == "h:3"
    receiver.stop()
    with pytest.raises(PostFailed, match="refused"):
        poster.post(event)  # nobody listens
    assert not poster.deliver(event, lambda: False, lambda s: True)  # a stop request ends the retries


def test_a_webhook_follows_from_its_cursor_and_saves_it_after_each_acknowledgement(make_settings: Any) -> None:
    receiver = Receiver().start()
    settings = make_settings(webhooks=[receiver.url])
    hook = settings.webhooks[0]
    write(settings.watch_dir / "before.json", "{")
    scan(settings)
    stop = threading.Event()
    thread = threading.Thread(target=follow_webhook, args=(settings, hook, stop.is_set, stop.wait, 0.02))
    thread.start()
    cursor = Cursor(notify_state_dir_of(settings), receiver.url)
    wait_until(lambda: cursor.load(), what="the first cursor")
    assert cursor.load() == (1, inode_of(settings.db_path))  # a first start: what was there is not news
    for i in range(3):
        write(settings.watch_dir / f"bad{i}.json", "[1]")
    write(settings.watch_dir / "ok.json", doc())
    scan(settings)
    wait_until(lambda: len(receiver.ids()) == 3, what="three posts")
    wait_until(lambda: cursor.load() == (5, inode_of(settings.db_path)), what="the cursor at the last entry")
    stop.set()
    thread.join()
    assert receiver.ids() == _rejected_ids(settings.db_path)[1:]  # in id order
    # Stopped, then started again: from the cursor, neither missing nor repeating an event.
    write(settings.watch_dir / "bad9.json", "[2]")
    scan(settings)
    stop.clear()
    thread = threading.Thread(target=follow_webhook, args=(settings, hook, stop.is_set, stop.wait, 0.02))
    thread.start()
    wait_until(lambda: len(receiver.ids()) == 4, what="the fourth post")
    stop.set()
    thread.join()
    assert receiver.ids() == _rejected_ids(settings.db_path)[1:]
    receiver.stop()


def _rejected_ids(db: Path) -> list[int]:
    with sqlite3.connect(db) as conn:
        return [i for (i,) in conn.execute("SELECT id FROM history WHERE outcome = 'rejected' ORDER BY id")]


def test_no_webhook_is_a_config_error_and_a_missing_database_a_runtime_one(
    tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = str(tmp_path / "none.db")
    monkeypatch.delenv("WATCHER_WEBHOOKS", raising=False)
    monkeypatch.setenv("WATCHER_CONFIG", str(tmp_path / "c.toml"))
    (tmp_path / "c.toml").write_text("")
    assert main(["notify", "--db", db], stdout=io.StringIO()) == 2
    assert capsys.readouterr().err.startswith("watcher: watcher notify: no webhooks configured")
    with pytest.raises(ConfigError, match="the same URL twice"):
        notify(load_settings(env={"WATCHER_WEBHOOKS": "http://a/,http://a/"}, flags={"db_path": db}), threading.Event())
    monkeypatch.setenv("WATCHER_WEBHOOKS", "http://127.0.0.1:9/hook")
    assert main(["notify", "--db", db, "--log-level", "error"], stdout=io.StringIO()) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "none.db" in err and "Traceback" not in err


def test_a_cursor_of_another_database_starts_from_the_first_entry_regressions_included(make_settings: Any) -> None:
    receiver = Receiver().start()
    settings = make_settings(webhooks=[receiver.url])
    write(settings.watch_dir / "a.json", doc(model_id=MODEL))
    write(settings.watch_dir / "bad.json", "[1]")
    write(settings.watch_dir / "ok.json", doc())
    scan(settings)
    regressed = _mark_regressed(settings.db_path, "a.json", ["recall down 0.2"])
    # Saved against a database that was since replaced (another inode), far beyond its ids.
    Cursor(notify_state_dir_of(settings), receiver.url).save(999, (inode_of(settings.db_path) or 0) + 1)
    stop = threading.Event()
    hook = settings.webhooks[0]
    thread = threading.Thread(target=follow_webhook, args=(settings, hook, stop.is_set, stop.wait, 0.02))
    thread.start()
    wait_until(lambda: len(receiver.ids()) == 2, what="the rejection and the regression")
    stop.set()
    thread.join()
    assert sorted(receiver.ids()) == sorted([regressed, *_rejected_ids(settings.db_path)])
    assert sorted(b["event"] for b in receiver.bodies()) == ["regressed", "rejected"]
    saved = Cursor(notify_state_dir_of(settings), receiver.url).load()
    assert saved == (3, inode_of(settings.db_path))
    receiver.stop()


def test_a_receiver_that_never_answers_fails_after_the_timeout() -> None:
    with socket.socket() as listener:  # accepts connections (the kernel's backlog), never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/hook"
        event = Event("h", "rejected", Entry(1, "t", "p", "rejected", None, None, [], None, None, None))
        start = time.monotonic()
        with pytest.raises(PostFailed, match="timed out"):
            Poster(Webhook(url=url), timeout=0.3, max_backoff=1).post(event)
        assert 0.3 <= time.monotonic() - start < 5
