"""The service under a real systemd: README's "Running as a service", word for word, in a container.

A Debian bookworm tree (tests/nspawn.py: built once, cached) boots under systemd-nspawn; inside
it the README's install block runs as written, from a copy of this checkout, and every check then
goes through systemd itself (systemctl, journalctl, the unit's own processes). The only thing
the test adds to the README is the machine around it: a training user whose results folder is
under /home, and a pip configuration pointing at wheels built on the host, since the container
has no package index of its own (``/etc/pip.conf`` with ``no-index`` and ``find-links``: the
README's ``pip install`` line itself is run unchanged).

Needs root, systemd-nspawn and debootstrap; skipped elsewhere with the reason, except under
``CI=true``, where a skip would hide that the service was never tried, so it fails instead.
The tests share one booted container and run in file order; the container is powered off (or
killed) at the end, whatever happens.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import nspawn
from tests.helpers import doc, wait_until  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SRC = "/root/watcher"  # where the container sees its clone of the repository
WHEELS = "/wheelhouse"
WATCH = "/home/ml/results"  # the README's example watch dir: where a training user writes
DB = "/var/lib/watcher/watcher.db"
VENV = "/opt/watcher/venv"
IGNORED = shutil.ignore_patterns(
    ".git", ".venv", "__pycache__", "*.egg-info", ".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis",
    "build", "dist", "var", "inbox", "test-artifacts",
)  # fmt: skip

pytestmark = pytest.mark.timeout(600)


def readme_block(heading: str) -> str:
    """The first ```sh block after ``heading`` in the README."""
    text = README.read_text()
    start = text.index(f"\n{heading}\n")
    match = re.compile(r"```sh\n(.*?)```", re.S).search(text, start)
    assert match, f"no sh block under {heading}"
    return match.group(1)


def journal_recipe() -> str:
    """The README's one line that shows rejected files from the journal."""
    lines = [line for line in readme_block("## Following it live").splitlines() if "file_rejected" in line]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[nspawn.Container]:
    """A booted container where the README's install block has run and the service is enabled."""
    reason = nspawn.unavailable()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the service test must run in CI, but {reason}")
        pytest.skip(reason)
    tmp = tmp_path_factory.mktemp("service")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=IGNORED, symlinks=True)
    tree = nspawn.ensure_tree()
    wheels = nspawn.ensure_wheelhouse(src)
    binds = [(src, SRC, False), (wheels, WHEELS, True)]
    with nspawn.Container(tree, f"watcher-test-{os.getpid()}", tmp / "console.log", binds) as box:
        # The machine the operator has: a package source pip can reach, a training user's folder.
        box.run(f"printf '[global]\\nno-index = true\\nfind-links = {WHEELS}\\n' > /etc/pip.conf")
        box.run(f"useradd --create-home ml && chmod 0755 /home/ml && runuser -u ml -- mkdir {WATCH}")
        box.run(f"cd {SRC} && set -x && {readme_block('## Running as a service')}", timeout=300)
        yield box


def sh(box: nspawn.Container, script: str, timeout: float = 60.0) -> str:
    return box.run(script, timeout=timeout).stdout


def prop(box: nspawn.Container, name: str) -> str:
    return sh(box, f"systemctl show --value -p {name} watcher").strip()


def journal(box: nspawn.Container) -> str:
    return box.run("journalctl -u watcher -o cat --no-pager", check=False).stdout


def drop(box: nspawn.Container, name: str, content: dict[str, Any] | str) -> None:
    """Write a results file into the watch dir as the training user does."""
    text = content if isinstance(content, str) else json.dumps(content)
    box.run(f"runuser -u ml -- tee {shlex.quote(f'{WATCH}/{name}')} >/dev/null", input=text)


def report(box: nspawn.Container) -> list[dict[str, Any]]:
    out = sh(box, f"runuser -u ana -- {VENV}/bin/watcher report --config /etc/watcher/config.toml --format json")
    rows: list[dict[str, Any]] = json.loads(out)
    return rows


def violations(box: nspawn.Container) -> list[str]:
    """tests/invariant.py, run inside against the live database and watch dir."""
    code = (
        "from pathlib import Path; from tests.invariant import violations; "
        f"print('\\n'.join(violations(Path({WATCH!r}), Path({DB!r}))))"
    )
    out = sh(box, f"cd {SRC} && {VENV}/bin/python -c {shlex.quote(code)}")
    return [line for line in out.splitlines() if line]


def test_readme_install_brings_the_unit_up(box: nspawn.Container) -> None:
    assert sh(box, "systemctl is-enabled watcher").strip() == "enabled"
    assert prop(box, "ActiveState") == "active"
    assert prop(box, "SubState") == "running"
    assert prop(box, "Type") == "notify"
    assert prop(box, "StatusText") == f"watching {WATCH}"  # sent with READY=1 by the daemon
    assert "Traceback" not in journal(box)
