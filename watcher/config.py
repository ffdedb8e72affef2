"""Typed settings, read once at the edge and passed down as one frozen object.

Precedence, highest first: command-line flags > environment (``WATCHER_<KEY>``) > config file >
defaults. Relative paths from a config file are relative to that file's folder (so a unit file or
``make run`` can point at ``config.toml`` from anywhere); relative paths from flags or the
environment are relative to the current directory. Every path is absolute once loaded.
"""

from __future__ import annotations

import os
import re
import socket
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from watcher.errors import ConfigError
from watcher.regression import Rules
from watcher.scoring import OperatingPoint, Picker

ENV_PREFIX = "WATCHER_"
#: Environment variable naming the config file (the ``--config`` flag wins over it).
CONFIG_ENV = "WATCHER_CONFIG"
#: The config a service install puts in place (README, "Running as a service"): used when no
#: ``--config`` and no ``$WATCHER_CONFIG`` is given, so ``watcher status``, ``report`` and
#: ``follow`` find the live database on such a host without flags.
SYSTEM_CONFIG = Path("/etc/watcher/config.toml")

ReportFormat = Literal["csv", "json", "markdown", "html"]
#: What a webhook receives (``watcher notify``): Slack-compatible ``{"text": ...}``, or the event as JSON.
WebhookFormat = Literal["slack", "plain"]

#: The database file name whose reports default to a folder named just ``reports``.
DEFAULT_DB_NAME = "watcher.db"
# A password in a libpq URL (postgresql://user:secret@host/db) or conninfo (password=secret).
_URL_PASSWORD = re.compile(r"^postgres(?:ql)?://[^/@?#]*:[^/@?#]*@", re.IGNORECASE)
_KV_PASSWORD = re.compile(r"(?:^|[\s?&])password\s*=", re.IGNORECASE)

DEFAULT_IGNORE = (".*", "*~", "*.tmp", "*.part", "*.swp", "*.swx", "*.crdownload")


class Webhook(BaseModel):
    """One receiver of ``watcher notify``'s posts. A bare URL in the config stands for
    ``{url = URL, format = "plain"}`` (so ``WATCHER_WEBHOOKS=URL,URL`` works)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(pattern=r"^https?://[^/?#\s]+\S*$")
    format: WebhookFormat = "plain"

    @model_validator(mode="before")
    @classmethod
    def _bare_url(cls, data: Any) -> Any:
        return {"url": data} if isinstance(data, str) else data


class Settings(BaseModel):
    """Everything watcher can be told. See ``config.toml`` for each key's meaning."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    watch_dir: Path = Path("inbox")
    db_path: Path = Path("var/watcher.db")
    report_dir: Path = Path("var/reports")  # beside db_path when not given (see _default_report_dir)
    report_formats: tuple[ReportFormat, ...] = ("csv", "json", "html")
    html_max_models: int = Field(1_000_000, ge=1)
    html_part_models: int = Field(10_000, ge=1)
    target_recall: float = Field(0.85, ge=0.0, le=1.0, allow_inf_nan=False)
    operating_point: OperatingPoint = "nearest"
    extra_targets: tuple[Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)], ...] = ()
    extra_pickers: tuple[Picker, ...] = ()
    regressions: bool = False
    regression_recall_delta: float = Field(0.02, ge=0.0, le=1.0, allow_inf_nan=False)
    regression_threshold_step: float = Field(0.1, ge=0.0, allow_inf_nan=False)
    patterns: tuple[str, ...] = Field(("*.json",), min_length=1)
    ignore_patterns: tuple[str, ...] = DEFAULT_IGNORE
    recursive: bool = True
    follow_symlinks: bool = False
    max_file_bytes: int = Field(64 * 1024 * 1024, gt=0)
    max_errors_per_file: int = Field(50, ge=1)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"
    observer: Literal["inotify", "polling"] = "inotify"
    polling_interval: float = Field(1.0, gt=0)
    polling_cpu_share: float = Field(0.008, gt=0, le=1)
    settle_seconds: float = Field(2.0, ge=0)
    max_write_seconds: float = Field(60.0, gt=0)
    report_interval: float = Field(1.0, ge=0)
    reconcile_interval: float = Field(300.0, gt=0)
    batch_size: int = Field(5000, ge=1)
    workers: int = Field(0, ge=0)
    worker_idle_seconds: float = Field(30.0, ge=0)
    history_keep_days: float = Field(90.0, ge=0)
    progress: Literal["auto", "always", "never"] = "auto"
    central_url: str | None = None
    metrics_file: Path | None = None
    check_heartbeat_seconds: float = Field(30.0, gt=0)
    check_central_seconds: float = Field(600.0, gt=0)
    check_rejections: int = Field(10, ge=0)
    check_rejections_window: float = Field(3600.0, gt=0)
    host_name: str = Field("", max_length=200, validate_default=True)
    webhooks: tuple[Webhook, ...] = ()
    notify_state_dir: Path | None = None  # beside db_path when not given (see notify_state_dir_of)
    notify_timeout: float = Field(10.0, gt=0)
    notify_max_backoff: float = Field(60.0, gt=0)

    @field_validator("central_url")
    @classmethod
    def _no_password(cls, value: str | None) -> str | None:
        # A config file is no place for a secret: libpq reads it from ~/.pgpass or PGPASSFILE.
        if value is not None and (_URL_PASSWORD.match(value) or _KV_PASSWORD.search(value)):
            raise ValueError("must not contain a password: put it in ~/.pgpass or the file PGPASSFILE names")
        return value or None

    @field_validator("extra_targets", "extra_pickers")
    @classmethod
    def _distinct(cls, value: tuple[Any, ...], info: ValidationInfo) -> tuple[Any, ...]:
        # Each point once: a target given twice (or equal to target_recall) would be two rows
        # with one key.
        if len(set(value)) != len(value) or info.data.get("target_recall") in value:
            raise ValueError("each value at most once, and not target_recall's")
        return value

    @property
    def targets(self) -> tuple[float, ...]:
        """Every target recall: ``target_recall`` (the primary one, in ``results``) first, then
        ``extra_targets`` in their order."""
        return (self.target_recall, *self.extra_targets)

    @field_validator("metrics_file")
    @classmethod
    def _prom_suffix(cls, value: Path | None) -> Path | None:
        # node_exporter's textfile collector reads only *.prom files (and skips the temporary one).
        if value is not None and str(value) and value.suffix != ".prom":
            raise ValueError("must end in .prom (node_exporter's textfile collector reads only those)")
        return value

    @field_validator("host_name")
    @classmethod
    def _hostname(cls, value: str) -> str:
        return value.strip() or socket.gethostname()

    @model_validator(mode="before")
    @classmethod
    def _default_report_dir(cls, data: Any) -> Any:
        # Reports live outside the watch dir by default: beside the database.
        if isinstance(data, Mapping) and data.get("report_dir") is None:
            db = data.get("db_path", cls.model_fields["db_path"].default)
            if isinstance(db, str | os.PathLike):
                data = {**data, "report_dir": default_report_dir(Path(db))}
        return data

    @property
    def regression_rules(self) -> Rules | None:
        """The rules regressions are judged by, or ``None`` when ``regressions`` is off."""
        return Rules(self.regression_recall_delta, self.regression_threshold_step) if self.regressions else None

    @property
    def worker_count(self) -> int:
        """Worker processes for bulk parsing; ``workers = 0`` means one per CPU."""
        return self.workers or (os.cpu_count() or 1)


def notify_state_dir_of(settings: Settings) -> Path:
    """Where ``watcher notify`` keeps its cursors: ``notify_state_dir``, else a folder ``notify``
    beside the database."""
    return settings.notify_state_dir or settings.db_path.parent / "notify"


def default_report_dir(db_path: Path) -> Path:
    """Where a database's reports go when ``report_dir`` is not set: beside it, in ``reports``
    for the usual ``watcher.db``, else in ``<stem>-reports`` (``runs.db`` -> ``runs-reports``), so
    a second database in the same folder never overwrites another's reports."""
    name = "reports" if db_path.name == DEFAULT_DB_NAME else f"{db_path.stem}-reports"
    return db_path.parent / name


_PATH_KEYS = ("watch_dir", "db_path", "report_dir", "metrics_file", "notify_state_dir")
_LIST_KEYS = ("report_formats", "patterns", "ignore_patterns", "webhooks", "extra_targets", "extra_pickers")


def _absolute(values: dict[str, Any], base: Path) -> dict[str, Any]:
    out = dict(values)
    for key in ("metrics_file", "notify_state_dir"):
        if out.get(key) == "":
            out[key] = None  # empty: none (the metrics file), the default (notify's state)
    for key in _PATH_KEYS:
        if isinstance(out.get(key), str):
            out[key] = str((base / Path(out[key]).expanduser()).absolute())
    return out


def read_config_file(path: Path) -> dict[str, Any]:
    """Parse a TOML config file into raw values, paths made absolute against its folder.

    Raises :class:`ConfigError` for a missing, unreadable or malformed file.
    """
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    # Accept either top-level keys or a [watcher] table.
    if set(data) == {"watcher"} and isinstance(data["watcher"], dict):
        data = data["watcher"]
    return _absolute(data, path.parent.absolute())


def unknown_env(env: Mapping[str, str]) -> list[str]:
    """The ``WATCHER_*`` variables that name no setting, sorted. They are left out of the
    settings (an unrelated variable with that prefix must not stop a service); the caller warns."""
    fields = Settings.model_fields
    return sorted(
        name
        for name in env
        if name.startswith(ENV_PREFIX) and name != CONFIG_ENV and name[len(ENV_PREFIX) :].lower() not in fields
    )


def read_env(env: Mapping[str, str], cwd: Path) -> dict[str, Any]:
    """Raw values from ``WATCHER_<KEY>`` variables; lists are comma-separated. Variables that
    name no setting are skipped (see :func:`unknown_env`)."""
    out: dict[str, Any] = {}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV:
            continue
        key = name[len(ENV_PREFIX) :].lower()
        if key not in Settings.model_fields:
            continue
        if key in _LIST_KEYS:
            out[key] = [part.strip() for part in value.split(",") if part.strip()]
        else:
            out[key] = value
    return _absolute(out, cwd)


def load_settings(
    config_file: Path | None = None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
    cwd: Path | None = None,
) -> Settings:
    """Merge defaults, the config file, the environment and flags into :class:`Settings`.

    ``config_file`` falls back to ``$WATCHER_CONFIG``; with neither, only defaults, the
    environment and flags apply. ``flags`` holds only the options actually given (``None`` values
    are ignored). Raises :class:`ConfigError` with one line naming the source and the key.
    """
    env = os.environ if env is None else env
    cwd = Path.cwd() if cwd is None else cwd
    if config_file is None and env.get(CONFIG_ENV):
        config_file = cwd / env[CONFIG_ENV]
    if config_file is None and SYSTEM_CONFIG.is_file():
        config_file = SYSTEM_CONFIG

    layers: list[tuple[str, dict[str, Any]]] = []
    if config_file is not None:
        layers.append((str(config_file), read_config_file(config_file)))
    env_values = read_env(env, cwd)
    layers.append(("environment", env_values))
    flag_values = _absolute({k: v for k, v in (flags or {}).items() if v is not None}, cwd)
    layers.append(("command line", flag_values))

    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for source, values in layers:
        for key, value in values.items():
            merged[key] = value
            origin[key] = f"{ENV_PREFIX}{key.upper()}" if source == "environment" else source
    # Defaults are relative to the current directory.
    merged = {**_absolute({k: str(v) for k, v in _default_paths().items()}, cwd), **merged}
    try:
        return Settings.model_validate(merged)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = str(first["loc"][0]) if first["loc"] else ""
        where = origin.get(key, "config")
        name = ".".join(str(part) for part in first["loc"])  # a nested key in full: webhooks.0.url
        if first["type"] == "extra_forbidden":
            raise ConfigError(f"{where}: unknown key {name!r}") from None
        raise ConfigError(f"{where}: {name}: {first['msg']}") from None


def _default_paths() -> dict[str, Path]:
    fields = Settings.model_fields
    return {key: fields[key].default for key in ("watch_dir", "db_path")}
