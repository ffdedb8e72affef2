"""Running watcher as an unprivileged user, from tests that run as root (CI does).

Permission bits do not apply to root, so a test of "the service cannot read or write this" runs
the command as ``nobody``. That user cannot read root's home, where the test's interpreter and
virtualenv may live: :func:`nobody_python` builds, once per session, a virtualenv from the
system interpreter in a world-readable temporary folder, holding a copy of watcher and of the
installed distributions it requires. When the tests do not run as root, the current user is unprivileged already.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "watcher"
SYSTEM_PYTHON = Path("/usr/bin/python3.11")


@dataclass(frozen=True)
class Unprivileged:
    """How to run a command as an unprivileged user: the interpreter and the user ids."""

    python: str
    uid: int | None  # None: the tests already run unprivileged
    gid: int | None

    def popen_args(self) -> dict[str, Any]:
        """Keyword arguments of ``subprocess.Popen``/``run`` that drop to the user."""
        if self.uid is None:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": []}

    def watcher(self, *args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """``watcher ARGS`` as the user, to completion."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("WATCHER_")}
        return subprocess.run(
            [self.python, "-m", "watcher", *args], cwd=cwd, env=env, capture_output=True, text=True,
            timeout=timeout, **self.popen_args(),
        )  # fmt: skip

    def give(self, *paths: Path) -> None:
        """Make ``paths`` the user's own (no-op when unprivileged already)."""
        if self.uid is not None:
            for p in paths:
                os.chown(p, self.uid, self.gid if self.gid is not None else -1)


def _distributions(names: Sequence[str]) -> set[str]:
    """The named distributions and everything they require (their extras left out), recursively."""
    seen: set[str] = set()
    todo = [n for n in names if "extra ==" not in n]
    while todo:
        name = re.split(r"[ ;<>=!~\[(]", todo.pop(), maxsplit=1)[0].lower().replace("_", "-")
        if name in seen:
            continue
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        seen.add(name)
        todo += [r for r in requires if "extra ==" not in r]
    return seen


def _build(dest: Path) -> str:
    subprocess.run([str(SYSTEM_PYTHON), "-m", "venv", "--without-pip", str(dest)], check=True, capture_output=True)
    target = Path(
        subprocess.run(
            [str(dest / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True, capture_output=True, text=True,
        ).stdout.strip()
    )  # fmt: skip
    shutil.copytree(PACKAGE, target / "watcher", ignore=shutil.ignore_patterns("__pycache__"))
    for name in _distributions(metadata.requires("watcher") or []):  # what pyproject.toml names, installed
        dist = metadata.distribution(name)
        for file in dist.files or []:
            source = Path(str(dist.locate_file(file)))
            if file.parts[0] == ".." or "__pycache__" in file.parts or not source.is_file():
                continue  # scripts outside site-packages, compiled caches
            (target / file).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / file)
    for p in [dest, *dest.rglob("*")]:
        p.chmod(p.stat().st_mode | 0o444 | (0o111 if p.is_dir() else 0))
    return str(dest / "bin" / "python")


@pytest.fixture(scope="session")
def nobody() -> Iterator[Unprivileged]:
    """An :class:`Unprivileged` user that can run watcher (``nobody`` when the tests run as root)."""
    if os.geteuid() != 0:
        yield Unprivileged(sys.executable, None, None)
        return
    if not SYSTEM_PYTHON.exists():
        pytest.skip(f"running as root needs {SYSTEM_PYTHON} for a virtualenv the 'nobody' user can use")
    user = pwd.getpwnam("nobody")
    base = Path(tempfile.mkdtemp(prefix="watcher-nobody-"))
    base.chmod(0o755)
    try:
        yield Unprivileged(_build(base / "venv"), user.pw_uid, user.pw_gid)
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A temporary folder the unprivileged user can reach (pytest's own are private to root)."""
    base = Path(tempfile.mkdtemp(prefix="watcher-shared-"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        subprocess.run(["chmod", "-R", "u+rwx", str(base)], check=False)
        shutil.rmtree(base, ignore_errors=True)
