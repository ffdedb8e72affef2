"""Imported by the forkserver only (listed in its preload by :mod:`watcher.pools`): arms the
forkserver's death signal, so that it dies with the daemon (see :mod:`watcher.lifeline`)."""

from __future__ import annotations

from watcher.lifeline import die_with_parent

die_with_parent()
