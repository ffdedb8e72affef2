"""``watcher notify``: rejections and regressions, as the database records them, posted to webhooks.

A process of its own (and a systemd unit of its own, the only one allowed to reach the network):
the daemon never talks to the network. :mod:`watcher.alerts.events` says which history entries are
worth a post and what the post says; :mod:`watcher.alerts.delivery` posts one until its receiver
acknowledges it and keeps a durable cursor per webhook; :mod:`watcher.alerts.notifier` follows the
history (:mod:`watcher.follow`'s loop) for each webhook, in a thread of its own.
"""
