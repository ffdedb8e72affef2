"""What the daemon tells systemd beyond READY=1 and WATCHDOG=1, and what it does on SIGHUP.

* While the start-up reconcile makes progress, ``EXTEND_TIMEOUT_USEC=`` every few seconds: a
  finite ``TimeoutStartSec=`` then stops a start that hangs, never a long one that advances.
* On SIGHUP (``systemctl reload watcher``: ``ExecReload=`` sends it to the main process), the
  settings are read again. systemd hears ``RELOADING=1`` with ``MONOTONIC_USEC=`` (what systemd
  253's ``Type=notify-reload`` asks for; 252, Debian bookworm's, takes ``RELOADING=1`` and ignores
  the other field), then ``READY=1`` once the writer has the new settings. A config that does not
  load is refused with one line (``config_reload_refused``) and the old settings stay. Settings
  that only a restart can change (the watch dir, the database, the observer, logging, the fleet)
  are named in a ``config_reload_partial`` line and keep their old values.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from watcher.errors import ConfigError
from watcher.logs import get_logger
from watcher.notify import notify

if TYPE_CHECKING:
    from watcher.config import Settings
    from watcher.metrics import Vitals
    from watcher.reports.reporter import Reporter
    from watcher.writer import Writer

log = get_logger("watcher.daemon")

#: Seconds between two EXTEND_TIMEOUT_USEC= messages, and how far each extends the start.
EXTEND_EVERY = 5.0
EXTEND_BY = 30.0
#: How recent the writer's last sign of progress must be for the start to be extended.
PROGRESS_WITHIN = 10.0

#: Settings a reload applies; any other that changed takes effect at the next restart.
RELOADABLE = frozenset({
    "target_recall", "extra_targets", "extra_pickers", "patterns", "ignore_patterns", "max_file_bytes",
    "max_errors_per_file", "follow_symlinks",
    "report_dir", "report_formats", "html_max_models", "html_part_models", "report_interval", "reconcile_interval",
    "batch_size",
    "worker_idle_seconds", "metrics_file", "check_heartbeat_seconds", "check_central_seconds", "check_rejections",
    "check_rejections_window", "progress",
})  # fmt: skip


class Lifecycle:
    """The supervisor's helper for the start-up extension and reloads (called from its loop)."""

    def __init__(
        self,
        settings: Settings,
        writer: Writer,
        reporter: Reporter,
        vitals: Vitals,
        hangup: threading.Event,
        reload: Callable[[], Settings] | None,
        send: Callable[[str], bool] = notify,
    ) -> None:
        self.settings = settings
        self.writer = writer
        self.reporter = reporter
        self.vitals = vitals
        self.hangup = hangup
        self.reload = reload
        self.send = send
        self.extended = -float("inf")
        self.reloading = False

    def ready(self) -> None:
        """The first reconcile is done: READY=1 with the first status line."""
        text = self.vitals.status_text()
        self.vitals.status_line = text
        self.send(f"READY=1\nSTATUS={text}")
        self.writer.stats.changed.set()  # counted afresh soon

    def starting(self) -> None:
        """Before READY=1: extend the start timeout while the writer shows progress."""
        now = time.monotonic()
        if now - self.extended >= EXTEND_EVERY and now - self.writer.tick < PROGRESS_WITHIN:
            self.send(f"EXTEND_TIMEOUT_USEC={int(EXTEND_BY * 1e6)}")
            self.extended = now

    def check_reload(self) -> None:
        """After READY=1: start a reload on SIGHUP; say READY=1 once the writer took the settings."""
        if self.reloading and self.writer.new_settings is None:
            self.reloading = False
            self.send(f"READY=1\nSTATUS={self.vitals.status_text()}")
        if not self.hangup.is_set() or self.reloading:
            return
        self.hangup.clear()
        self.send(f"RELOADING=1\nMONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")
        new = self._load()
        if new is None:
            self.send("READY=1")
            return
        self.apply(new)
        self.reloading = True

    def _load(self) -> Settings | None:
        if self.reload is None:
            log.warning("config_reload_refused", error="this daemon was started without a way to reload")
            return None
        try:
            return self.reload()
        except ConfigError as exc:
            log.error("config_reload_refused", error=str(exc), hint="the running settings are kept")
            return None

    def apply(self, new: Settings) -> None:
        """Hand the reloadable part of ``new`` to the threads; log what changed."""
        old = self.settings
        changed = [k for k in type(old).model_fields if getattr(old, k) != getattr(new, k)]
        fixed = [k for k in changed if k not in RELOADABLE]
        if fixed:
            log.warning("config_reload_partial", keys=fixed, hint="these take effect at the next restart")
        kept: dict[str, Any] = {k: getattr(old, k) for k in fixed}
        merged = new.model_copy(update=kept)
        self.settings = merged
        self.writer.new_settings = merged  # taken by the writer's thread at its next turn
        self.reporter.reload(merged)
        self.vitals.settings = merged
        log.info("config_reloaded", changed=[k for k in changed if k in RELOADABLE])
