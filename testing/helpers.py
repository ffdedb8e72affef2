"""Test helpers: sample documents, file writers, and a deadline-based wait (never a bare sleep)."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def doc(**overrides: Any) -> dict[str, Any]:
    """A valid results document; keyword arguments replace (or, with value ``...``, remove) keys."""
    base: dict[str, Any] = {
        "model_id": str(uuid.uuid4()),
        "issuer": "ana@example.com",
        "experiment_date": "2024-05-01T12:00:00.000Z",
        "threshold_arr": [0.0, 0.25, 0.5, 0.75, 1.0],
        "recall_arr": [1.0, 0.95, 0.85, 0.5, 0.0],
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not ...}


def write(path: Path, content: dict[str, Any] | str | bytes) -> Path:
    """Write a document (JSON-encoded), text or bytes to ``path``, creating folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, dict):
        content = json.dumps(content)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def write_atomically(path: Path, content: dict[str, Any]) -> Path:
    """The temp-then-rename pattern a careful training job uses."""
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp, content)
    os.replace(tmp, path)
    return path


def wait_until(predicate: Callable[[], T | None], timeout: float = 20.0, interval: float = 0.05, what: str = "") -> T:
    """Poll ``predicate`` until it returns something truthy, or fail after ``timeout`` seconds."""
    gate = threading.Event()
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        gate.wait(interval)


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (children, their children, ...), from /proc."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # gone meanwhile
            if fields[0] != "Z":
                parent[int(entry)] = int(fields[1])
    out, todo = [], [pid]
    while todo:
        above = todo.pop()
        kids = [c for c, p in parent.items() if p == above]
        out += kids
        todo += kids
    return out
