"""Named exceptions. Library code raises these; only the CLI turns them into exit codes."""

import errno

#: errno values of a disk that fails or fills up: the daemon waits them out, never exits for them.
#: (EROFS is not among them: under systemd a database outside ReadWritePaths looks just so.)
TRANSIENT_ERRNOS = frozenset({errno.EIO, errno.ENOSPC, errno.EDQUOT})


class WatcherError(Exception):
    """Base class of every error watcher raises on purpose."""


class ConfigError(WatcherError):
    """The configuration (file, environment or flags) cannot be used. One line, for humans."""


class StoreError(WatcherError):
    """The database cannot be opened, migrated or written."""


class TransientStoreError(StoreError):
    """The database cannot be opened or written for now (an I/O error, a full disk): worth waiting
    for, unlike a place this user may not write or a second daemon."""


class DatabaseAccessError(StoreError):
    """The database exists but this user may not read it (not in the group that owns it)."""


class WatchDirError(WatcherError):
    """The watch directory is missing or is not a directory."""


class AlreadyRunningError(WatcherError):
    """Another daemon holds the database's lock."""


class CentralError(WatcherError):
    """The fleet's central database cannot be reached, set up or written. One line, for humans."""


class PublishError(WatcherError):
    """A result could not be published into the watch folder (missing, unwritable); nothing was
    written there under a name the daemon reads."""


class InvalidResultError(PublishError):
    """The result to publish would be rejected (or could not be built): every reason, in
    ``reasons``, worded as ``watcher validate`` words them. Nothing was written."""

    def __init__(self, reasons: list[str]) -> None:
        self.reasons = tuple(reasons)
        count = f"{len(reasons)} problems: " if len(reasons) > 1 else ""
        super().__init__(f"nothing published: {count}{'; '.join(reasons)}")


class NotifyError(WatcherError):
    """``watcher notify`` cannot keep its cursor (unreadable, unwritable). One line, for humans."""
