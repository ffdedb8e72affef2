"""``watcher notify``'s loop: for each webhook, in a thread of its own, follow the history from
that webhook's cursor (:func:`watcher.follow.follow` on a read-only connection) and deliver each
event in id order, saving the cursor after each acknowledgement (and after each batch that held
none). A receiver that is down holds up its own webhook only.

With no cursor yet (the first start), a webhook starts at the newest entry: what was recorded
before is not news. A cursor of another database (the file at ``db_path`` was replaced meanwhile)
starts at that database's first entry, as ``watcher follow`` does when it sees one replaced.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from watcher import logs
from watcher.alerts.delivery import Cursor, Poster, redacted
from watcher.alerts.events import event_of, history_tag
from watcher.config import Settings, Webhook, notify_state_dir_of
from watcher.errors import ConfigError
from watcher.follow import INTERVAL, Follower, follow, inode_of

log = logs.get_logger("watcher.notify")


def notify(settings: Settings, stop: threading.Event, interval: float = INTERVAL) -> None:
    """Deliver events to every configured webhook until ``stop`` is set. Raises the first
    :class:`WatcherError` a webhook's loop met (the others are stopped first);
    :class:`ConfigError` when no webhook is configured."""
    if not settings.webhooks:
        raise ConfigError("watcher notify: no webhooks configured (set webhooks in the config, or WATCHER_WEBHOOKS)")
    urls = [w.url for w in settings.webhooks]
    if len(set(urls)) != len(urls):
        raise ConfigError("watcher notify: webhooks: the same URL twice (each keeps one cursor)")
    failures: list[BaseException] = []

    def run(webhook: Webhook) -> None:
        try:
            follow_webhook(settings, webhook, stop.is_set, stop.wait, interval)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which reports it
            failures.append(exc)
            stop.set()

    threads = [
        threading.Thread(target=run, args=(w,), name=f"notify-{redacted(w.url)}", daemon=True)
        for w in settings.webhooks
    ]
    for thread in threads:
        thread.start()
    stop.wait()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    log.info("notify_stopped")


def follow_webhook(
    settings: Settings,
    webhook: Webhook,
    stopped: Callable[[], bool],
    wait: Callable[[float], object],
    interval: float = INTERVAL,
) -> None:
    """One webhook's loop (see the module's docstring) until ``stopped()``."""
    cursor = Cursor(notify_state_dir_of(settings), webhook.url)
    saved = cursor.load()
    start = None if saved is None else saved.after if saved.database == inode_of(settings.db_path) else 0
    follower = Follower(settings.db_path, after=start)
    poster = Poster(webhook, settings.notify_timeout, settings.notify_max_backoff)
    try:
        cursor.save(follower.after, follower.inode)  # a first start: from here on, nothing is missed
        log.info("webhook_following", webhook=poster.name, after=follower.after, db=str(settings.db_path))
        for batch in follow(follower, stopped, wait, interval):
            details = follower.store.scored_details(batch[0].id - 1, batch[-1].id)
            history = history_tag(follower.store.report_mark()[0])
            for entry in batch:
                event = event_of(entry, details.get(entry.id), settings.host_name, history)
                if event is None:
                    continue
                if not poster.deliver(event, stopped, wait):
                    return  # stopped before an acknowledgement: the cursor stays before it
                cursor.save(entry.id, follower.inode)
            cursor.save(batch[-1].id, follower.inode)
    finally:
        follower.close()
