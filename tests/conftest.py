from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from watcher import logs
from watcher.config import Settings


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    yield
    logs.reset()


@pytest.fixture
def make_settings(tmp_path: Path) -> Any:
    """Settings on temporary folders: ``make_settings(target_recall=0.9)``."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "watch_dir": tmp_path / "inbox",
            "db_path": tmp_path / "var" / "watcher.db",
            "workers": 1,
        }
        values.update(overrides)
        Path(values["watch_dir"]).mkdir(parents=True, exist_ok=True)
        return Settings(**values)

    return make
