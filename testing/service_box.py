"""The service test's handles on its container: the docs' blocks, commands run inside, /proc parsed.

Shared by the tests in tests/service/test_service.py (see there; testing/nspawn.py is the container itself).
"""

from __future__ import annotations

import contextlib
import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from testing import nspawn
from testing.helpers import wait_until

ROOT = Path(__file__).resolve().parent.parent
SERVICE_PAGE = ROOT / "docs" / "service.md"  # "Running as a service": the install block, the drop-ins
FOLLOWING_PAGE = ROOT / "docs" / "following.md"  # "Following it live": the journal recipe
SRC = "/root/watcher"  # where the container sees its clone of the repository
WHEELS = "/wheelhouse"
WATCH = "/home/ml/results"  # the service page's example watch dir: where a training user writes
DB = "/var/lib/watcher/watcher.db"
VENV = "/opt/watcher/venv"


def doc_block(page: Path, heading: str) -> str:
    """The first ```sh block after ``heading`` (a whole line, e.g. ``# Running as a service``) in ``page``."""
    text = "\n" + page.read_text()  # a page's title is its first line
    start = text.index(f"\n{heading}\n")
    match = re.compile(r"```sh\n(.*?)```", re.S).search(text, start)
    assert match, f"no sh block under {heading}"
    return match.group(1)


def journal_recipe() -> str:
    """The following page's one line that shows rejected files from the journal."""
    lines = [line for line in doc_block(FOLLOWING_PAGE, "# Following it live").splitlines() if "file_rejected" in line]
    assert len(lines) == 1, lines
    return lines[0]


def sh(box: nspawn.Container, script: str, timeout: float = 60.0) -> str:
    return box.run(script, timeout=timeout).stdout


def prop(box: nspawn.Container, name: str) -> str:
    return sh(box, f"systemctl show --value -p {name} watcher").strip()


def journal(box: nspawn.Container) -> str:
    return box.run("journalctl -u watcher -o cat --no-pager", check=False).stdout


def entries(box: nspawn.Container, *matches: str, priority: str = "") -> list[dict[str, Any]]:
    """The unit's journal entries (``journalctl -u watcher -o json``), with journalctl's matches."""
    where = " ".join(shlex.quote(m) for m in matches) + (f" -p {priority}" if priority else "")
    out = box.run(f"journalctl -u watcher {where} -o json --no-pager", check=False).stdout
    return [json.loads(raw) for raw in out.splitlines() if raw.strip()]


def text(value: Any) -> str:
    """A field's value as text: journald gives a value that is not plain UTF-8 as a list of bytes."""
    return bytes(value).decode("utf-8", "replace") if isinstance(value, list) else str(value)


def events(box: nspawn.Container, name: str) -> list[dict[str, Any]]:
    """The daemon's events called ``name``, as it logged them: its ``WATCHER_*`` fields, the prefix
    dropped and lower-cased, values that are JSON parsed (``WATCHER_EXIT_CODE=0`` -> ``exit_code: 0``)."""
    out = []
    for entry in entries(box, f"WATCHER_EVENT={name}"):
        event: dict[str, Any] = {}
        for key, value in entry.items():
            if key.startswith("WATCHER_"):
                try:
                    event[key[8:].lower()] = json.loads(text(value))
                except ValueError:
                    event[key[8:].lower()] = text(value)
        out.append(event)
    return out


def assert_quiet(box: nspawn.Container, after: str) -> None:
    """Everything the unit's own processes put in the journal is the daemon's entries, each with its
    ``WATCHER_EVENT`` (the sandbox probe's JSON lines, a test's own ExecStartPost=, aside), and no
    traceback anywhere in the unit's journal: the daemon's own output and that of every helper
    process it started (a helper's stray line would arrive on the stdout stream)."""
    foreign = []
    for entry in entries(box, "_SYSTEMD_UNIT=watcher.service"):
        message = text(entry.get("MESSAGE", ""))
        if message in CONTAINER_WARNINGS:  # systemd's own, logged from the unit's process before exec
            ok = True
        elif entry.get("_TRANSPORT") == "journal":
            ok = "WATCHER_EVENT" in entry
        else:
            try:
                ok = "probe" in json.loads(message)
            except (ValueError, TypeError):
                ok = False
        if not ok:
            foreign.append(f"{entry.get('_TRANSPORT')}: {message}")
    assert foreign == [], f"after {after}: entries that are not the daemon's events:\n" + "\n".join(foreign[:40])
    assert "Traceback" not in journal(box), f"after {after}: a traceback in the journal"


def drop(box: nspawn.Container, name: str, content: dict[str, Any] | str) -> None:
    """Write a results file into the watch dir as the training user does."""
    text = content if isinstance(content, str) else json.dumps(content)
    path = f"{WATCH}/{name}"
    box.run(f"runuser -u ml -- mkdir -p {shlex.quote(str(Path(path).parent))}")
    box.run(f"runuser -u ml -- tee {shlex.quote(path)} >/dev/null", input=text)


def report(box: nspawn.Container) -> list[dict[str, Any]]:
    out = sh(box, f"runuser -u ana -- {VENV}/bin/watcher report --config /etc/watcher/config.toml --format json")
    rows: list[dict[str, Any]] = json.loads(out)
    return rows


def violations(box: nspawn.Container) -> list[str]:
    """testing/invariant.py, run inside against the live database and watch dir."""
    code = (
        "from pathlib import Path; from testing.invariant import violations; "
        f"print('\\n'.join(violations(Path({WATCH!r}), Path({DB!r}))))"
    )
    out = sh(box, f"cd {SRC} && {VENV}/bin/python -c {shlex.quote(code)}")
    return [line for line in out.splitlines() if line]


UNIT = ROOT / "systemd" / "watcher.service"
ARTIFACTS = ROOT / "test-artifacts"
# The one warning systemd gives about the unit here: this container lacks CAP_NET_ADMIN, so the
# private network's loopback stays down (the service uses no network; on a host it comes up).
CONTAINER_WARNINGS = ("Failed to configure loopback network device, ignoring: Operation not permitted",)


def hardening_directives() -> list[str]:
    """Names of the directives below the unit's "# Hardening." comment."""
    text = UNIT.read_text()
    section = text[text.index("# Hardening.") : text.index("[Install]")]
    return sorted({line.split("=", 1)[0] for line in section.splitlines() if re.match(r"^[A-Z]\w+=", line)})


def mounts(text: str) -> list[tuple[str, set[str], str, str, set[str]]]:
    """/proc/PID/mountinfo as (mount point, options, device, root, super options), in order."""
    out = []
    for line in text.splitlines():
        fields, rest = line.split(" - ", 1)
        f = fields.split()
        out.append((f[4], set(f[5].split(",")), f[2], f[3], set(rest.split()[2].split(","))))
    return out


def mount_of(
    table: list[tuple[str, set[str], str, str, set[str]]], path: str
) -> tuple[str, set[str], str, str, set[str]]:
    """The mount that serves ``path``: the deepest mount point above it, the last one mounted."""
    best = max(
        (i for i, m in enumerate(table) if path == m[0] or path.startswith(m[0].rstrip("/") + "/")),
        key=lambda i: (len(table[i][0]), i),
    )
    return table[best]


# Holds SQLite's write lock on the live database until SIGTERM (systemctl stop), as any other
# writer could: the daemon's writer thread then waits on it.
LOCKER = (
    "import signal, sqlite3, sys; signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM}); "
    "db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60); db.execute('BEGIN EXCLUSIVE'); "
    "print('locked', flush=True); signal.sigwait({signal.SIGTERM})"
)


@contextlib.contextmanager
def database_locked(box: nspawn.Container) -> Iterator[None]:
    """The live database's write lock held by another process (a transient unit) inside."""
    box.run(
        f"systemd-run --quiet --collect --unit=dblock --uid=watcher --gid=watcher "
        f"/usr/bin/python3.11 -c {shlex.quote(LOCKER)} {DB}"
    )
    try:
        wait_until(lambda: "locked" in box.run("journalctl -u dblock -o cat").stdout, timeout=30, what="the lock")
        yield
    finally:
        box.run("systemctl stop dblock", check=False)


def pid_started(box: nspawn.Container, pid: str) -> bool:
    """True once the daemon with this pid has logged daemon_starting."""
    return any(str(event.get("pid")) == pid for event in events(box, "daemon_starting"))


# Writes N valid results files into a new folder, then moves the folder into the watch dir at
# once: the daemon reconciles it in one go, with its worker processes.
BURST = (
    "import json, os, sys, uuid; d = sys.argv[1]; os.makedirs(d)\n"
    "for i in range(int(sys.argv[2])):\n"
    "    doc = dict(model_id=str(uuid.uuid4()), issuer='b@example.com', experiment_date='2024-05-01T12:00:00Z',\n"
    "               threshold_arr=[0.0, 0.5, 1.0], recall_arr=[1.0, 0.85, 0.0])\n"
    "    open(f'{d}/{i}.json', 'w').write(json.dumps(doc))\n"
)


def doc_ini_block(after: str) -> str:
    """The service page's first ini block after the text ``after``."""
    text = SERVICE_PAGE.read_text()
    match = re.compile(r"```ini\n(.*?)```", re.S).search(text, text.index(after))
    assert match, f"no ini block after {after}"
    return match.group(1)


def doc_dropin(box: nspawn.Container, after: str) -> str:
    """Install the service page's first ini block after ``after`` as the unit's drop-in; its path."""
    block = doc_ini_block(after)
    dropin = "/etc/systemd/system/watcher.service.d/override.conf"  # where `systemctl edit` writes
    sh(box, f"mkdir -p {Path(dropin).parent} && cat > {dropin} <<'END'\n{block}END")
    return dropin
