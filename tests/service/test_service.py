"""The service under a real systemd: docs/service.md, "Running as a service", word for word, in a container.

A Debian bookworm tree (testing/nspawn.py: built once, cached) boots under systemd-nspawn; inside
it the page's install block runs as written, from a copy of this checkout, and every check then
goes through systemd itself (systemctl, journalctl, the unit's own processes). The only thing
the test adds to the page is the machine around it: a training user whose results folder is
under /home, and a pip configuration pointing at wheels built on the host, since the container
has no package index of its own (``/etc/pip.conf`` with ``no-index`` and ``find-links``: the
page's ``pip install`` line itself is run unchanged).

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

import pytest

from testing import nspawn
from testing.helpers import doc, wait_until
from testing.service_box import (
    ARTIFACTS,
    BURST,
    CONTAINER_WARNINGS,
    DB,
    ROOT,
    SERVICE_PAGE,
    SRC,
    VENV,
    WATCH,
    WHEELS,
    assert_quiet,
    database_locked,
    doc_block,
    doc_dropin,
    drop,
    entries,
    events,
    hardening_directives,
    journal,
    journal_recipe,
    mount_of,
    mounts,
    pid_started,
    prop,
    report,
    sh,
    violations,
)

IGNORED = shutil.ignore_patterns(
    ".git", ".venv", "__pycache__", "*.egg-info", ".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis",
    "build", "dist", "var", "inbox", "test-artifacts",
)  # fmt: skip

NODE_EXPORTER = "/usr/local/bin/prometheus-node-exporter"
# The first run builds the Debian tree (a few minutes) inside the first test's set-up.
pytestmark = [pytest.mark.service, pytest.mark.timeout(1200)]


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[nspawn.Container]:
    """A booted container where the service page's install block has run and the service is enabled."""
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
    exporter = shutil.which("prometheus-node-exporter")  # Debian's, from the host (.ci/run installs it)
    if exporter:
        binds.append((Path(exporter), NODE_EXPORTER, True))
    with nspawn.Container(tree, f"watcher-test-{os.getpid()}", tmp / "console.log", binds) as box:
        # The machine the operator has: a package source pip can reach, a training user's folder.
        box.run(f"printf '[global]\\nno-index = true\\nfind-links = {WHEELS}\\n' > /etc/pip.conf")
        box.run(f"useradd --create-home ml && chmod 0755 /home/ml && runuser -u ml -- mkdir {WATCH}")
        box.run(f"cd {SRC} && set -ex && {doc_block(SERVICE_PAGE, '# Running as a service')}", timeout=300)
        # A reader: the service page says readers join group watcher.
        box.run("useradd --create-home ana && usermod -aG watcher ana")
        yield box


def test_documented_install_brings_the_unit_up(box: nspawn.Container) -> None:
    assert sh(box, "systemctl is-enabled watcher").strip() == "enabled"
    assert prop(box, "ActiveState") == "active"
    assert prop(box, "SubState") == "running"
    assert prop(box, "Type") == "notify"
    assert prop(box, "StatusText").startswith(f"watching {WATCH}; ")  # sent with READY=1 by the daemon
    assert prop(box, "TimeoutStartUSec") == "1min 30s"
    assert_quiet(box, "the first start")


VALID = doc(model_id="3f2b8c1e-7d4a-4e0b-9a6f-1c2d3e4f5a6b")
INVALID = doc(model_id="not-a-uuid")


def test_valid_and_invalid_files_show_in_report_and_journal_recipe(box: nspawn.Container) -> None:
    drop(box, "run1/valid.json", VALID)
    drop(box, "run1/invalid.json", INVALID)
    rows = wait_until(lambda: report(box), timeout=30, what="the valid file in watcher report")
    assert [(r["model_id"], r["path"]) for r in rows] == [(VALID["model_id"], "run1/valid.json")]
    wait_until(lambda: not violations(box), timeout=30, what="both files in the database")

    recipe = journal_recipe()  # run as docs/following.md writes it, through a shell, in the container
    out = wait_until(lambda: box.run(recipe).stdout.strip(), timeout=30, what="the recipe's output")
    lines = out.splitlines()
    assert len(lines) == 1, out  # exactly one line, for the one invalid file
    assert lines[0].startswith("file_rejected path=run1/invalid.json errors=")
    assert "model_id" in lines[0]
    # The same as native fields, one entry per rejected file; and among the problems (-p warning).
    (entry,) = entries(box, "WATCHER_EVENT=file_rejected")
    assert entry["WATCHER_PATH"] == "run1/invalid.json"
    assert any(e["field"] == "model_id" for e in json.loads(entry["WATCHER_ERRORS"]))
    assert entry["PRIORITY"] == "4" and entry["_TRANSPORT"] == "journal"
    assert entry["_SYSTEMD_UNIT"] == "watcher.service" and entry["SYSLOG_IDENTIFIER"] == "watcher"
    problems = entries(box, priority="warning")
    assert [e["WATCHER_PATH"] for e in problems if e.get("WATCHER_EVENT") == "file_rejected"] == ["run1/invalid.json"]
    assert not [e for e in problems if e.get("WATCHER_EVENT") == "file_scored"]
    # The journal does hold systemd's own lines about the unit, which the field match leaves out.
    assert "Started watcher.service" in journal(box)


def test_group_member_finds_the_live_database_through_the_installed_config(box: nspawn.Container) -> None:
    for flags in (" --config /etc/watcher/config.toml", ""):  # the installed config is found without flags too
        proc = box.run(f"runuser -u ana -- {VENV}/bin/watcher status{flags}")
        assert f"database:        {DB}" in proc.stdout
        assert "running" in proc.stdout.splitlines()[0]
        assert "run1/invalid.json" in proc.stdout
        assert proc.stderr == ""
    report = box.run(f"runuser -u ana -- {VENV}/bin/watcher report --format csv").stdout
    assert report.startswith("model_id,") and len(report.splitlines()) >= 2
    # The environment no longer names the paths: the config file is the one source of truth.
    assert "WATCHER_" not in prop(box, "Environment")


def test_watch_dir_under_home_works_without_a_traceback(box: nspawn.Container) -> None:
    assert "/home/" in sh(box, "grep ^watch_dir /etc/watcher/config.toml")
    assert int(prop(box, "NRestarts")) == 0
    log = journal(box)
    assert "Traceback" not in log
    assert "PermissionError" not in log


def test_every_hardening_directive_is_in_force(box: nspawn.Container) -> None:
    """Each directive, observed on the running main process (not just read back from the unit)."""
    pid = prop(box, "MainPID")
    status = dict(line.split(":", 1) for line in sh(box, f"cat /proc/{pid}/status").splitlines() if ":" in line)
    status = {k: v.strip() for k, v in status.items()}
    ns = {n: sh(box, f"readlink /proc/{pid}/ns/{n}").strip() for n in ("net", "ipc", "uts", "user", "mnt")}
    host_ns = {n: sh(box, f"readlink /proc/1/ns/{n}").strip() for n in ns}
    uid_map = sh(box, f"cat /proc/{pid}/uid_map")
    own = mounts(sh(box, f"cat /proc/{pid}/mountinfo"))
    init = mounts(sh(box, "cat /proc/1/mountinfo"))
    dev = sh(box, f"nsenter --target {pid} --mount ls /dev").split()
    uid, gid = sh(box, "id -u watcher").strip(), sh(box, "id -g watcher").strip()
    analyze = box.run("systemd-analyze security --no-pager watcher").stdout
    exposure = re.search(r"Overall exposure level for watcher\.service: (\d+\.\d+)", analyze)
    assert exposure, analyze
    passed = {m.group(1) for m in re.finditer(r"^✓ (\S+?)=", analyze, re.M)}
    seccomp = f"seccomp mode {status['Seccomp']}, {status['Seccomp_filters']} filters on the process"
    proc = mount_of(own, "/proc")

    def ro(path: str) -> bool:
        return "ro" in mount_of(own, path)[1]

    checks: dict[str, tuple[bool, str]] = {
        "ProtectSystem": (
            ro("/usr") and ro("/etc") and ro("/var/lib") and not ro("/var/lib/watcher"),
            "/, /usr, /etc, /var read-only; /var/lib/watcher read-write",
        ),
        "ProtectHome": (ro(WATCH) and ro("/run/user"), f"{WATCH} and /run/user read-only, files read from it"),
        "PrivateTmp": (
            "systemd-private" in mount_of(own, "/tmp")[3] and "systemd-private" in mount_of(own, "/var/tmp")[3],
            "/tmp and /var/tmp are the unit's own systemd-private folders",
        ),
        "PrivateDevices": (
            mount_of(own, "/dev")[2] != mount_of(init, "/dev")[2] and not {"kmsg", "console", "net"} & set(dev),
            f"a /dev of its own: {' '.join(dev)}",
        ),
        "PrivateNetwork": (ns["net"] != host_ns["net"], "a network namespace of its own"),
        "PrivateUsers": (
            ns["user"] != host_ns["user"] and "4294967295" not in uid_map,
            "a user namespace mapping only root and watcher: " + " | ".join(uid_map.split("\n")).strip(" |"),
        ),
        "PrivateIPC": (ns["ipc"] != host_ns["ipc"], "an IPC namespace of its own"),
        "ProtectHostname": (ns["uts"] != host_ns["uts"], "a UTS namespace of its own (and seccomp)"),
        "NoNewPrivileges": (status["NoNewPrivs"] == "1", "NoNewPrivs: 1"),
        "CapabilityBoundingSet": (int(status["CapBnd"], 16) == 0, f"CapBnd: {status['CapBnd']}"),
        "AmbientCapabilities": (
            int(status["CapAmb"], 16) == 0 and int(status["CapEff"], 16) == 0,
            f"CapAmb: {status['CapAmb']}, CapEff: {status['CapEff']}",
        ),
        "ProtectKernelTunables": (
            ro("/sys") and "subset=pid" in proc[4],
            "/sys read-only; /proc/sys not there at all (ProcSubset=pid)",
        ),
        "ProtectKernelModules": (
            "ProtectKernelModules" in passed and status["Seccomp"] == "2",
            "no module syscalls (seccomp), no CAP_SYS_MODULE; this tree has no /lib/modules to hide",
        ),
        "ProtectKernelLogs": (
            "kmsg" not in dev and "subset=pid" in proc[4],
            "no /dev/kmsg, no /proc/kmsg; syslog() filtered by seccomp",
        ),
        "ProtectControlGroups": (
            all(ro(p) for p in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup/systemd")),
            "/sys/fs/cgroup read-only (read-write for the container's init)",
        ),
        "ProtectClock": ("ProtectClock" in passed and status["Seccomp"] == "2", f"@clock denied: {seccomp}"),
        "ProtectProc": ("hidepid=invisible" in proc[4], "/proc mounted hidepid=invisible"),
        "ProcSubset": ("subset=pid" in proc[4], "/proc mounted subset=pid"),
        "UMask": (status["Umask"] == "0027", f"Umask: {status['Umask']}; the database files are 0640"),
        "User": (status["Uid"].split() == [uid] * 4 and status["Gid"].split() == [gid] * 4, f"uid/gid {uid}"),
    }
    for name in (
        "RestrictAddressFamilies", "RestrictNamespaces", "RestrictRealtime", "RestrictSUIDSGID", "LockPersonality",
        "MemoryDenyWriteExecute", "SystemCallArchitectures", "SystemCallFilter",
    ):  # fmt: skip
        checks[name] = (status["Seccomp"] == "2" and name in passed, seccomp)
    # What a test cannot read from outside the process: the keyring, SysV IPC clean-up at stop,
    # and cgroup filters (in this container systemd gets no devices controller, and there is no
    # BPF tool to list programs). They are checked as set; PrivateNetwork and PrivateDevices
    # above already take away what IPAddressDeny and DevicePolicy guard.
    unobservable = {
        "DevicePolicy": prop(box, "DevicePolicy") == "closed",
        "IPAddressDeny": set(prop(box, "IPAddressDeny").split()) == {"::/0", "0.0.0.0/0"},
        "KeyringMode": prop(box, "KeyringMode") == "private" and "KeyringMode" in passed,
        "RemoveIPC": prop(box, "RemoveIPC") == "yes" and "RemoveIPC" in passed,
    }
    for name, ok in unobservable.items():
        checks[name] = (ok, "SET, effect not observable from outside here (systemctl show, systemd-analyze)")

    record = [f"systemd-analyze security watcher: exposure {exposure.group(1)}"]
    record += [
        f"{name}: {'NOT IN FORCE: ' if not ok else '' if why.startswith('SET') else 'in force: '}{why}"
        for name, (ok, why) in sorted(checks.items())
    ]
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "service-hardening.txt").write_text("\n".join(record) + "\n")
    assert not [line for line in record if "NOT IN FORCE" in line], "\n".join(record)
    assert not set(hardening_directives()) - set(checks), "a directive without a check"
    assert float(exposure.group(1)) <= 0.4

    warnings = box.run(
        "journalctl -b -p warning -o json --no-pager _SYSTEMD_UNIT=watcher.service + UNIT=watcher.service"
    )
    # The one rejected file's entry is a warning by design (the test above dropped it).
    found = [json.loads(line) for line in warnings.stdout.splitlines() if line.strip()]
    unexpected = [w["MESSAGE"] for w in found if w.get("WATCHER_EVENT") != "file_rejected"]
    unexpected = [m for m in unexpected if m not in CONTAINER_WARNINGS]
    assert unexpected == []


def test_active_only_after_ready(box: nspawn.Container) -> None:
    sh(box, "systemctl stop watcher")
    with database_locked(box):
        # The daemon starts but cannot finish its first reconcile: no READY=1, so systemd keeps
        # the unit activating, with the process running.
        sh(box, "systemctl start --no-block watcher")
        pid = wait_until(lambda: prop(box, "MainPID").strip("0") and prop(box, "MainPID"), what="a main pid")
        wait_until(lambda: pid_started(box, pid), timeout=30, what="daemon_starting")
        assert (prop(box, "ActiveState"), prop(box, "SubState")) == ("activating", "start")
        assert prop(box, "StatusText") == ""
    wait_until(lambda: prop(box, "ActiveState") == "active", timeout=40, what="active after READY")
    assert prop(box, "MainPID") == pid
    assert prop(box, "StatusText").startswith(f"watching {WATCH}; ")
    assert prop(box, "Result") == "success"


ALLOWED = {"socket AF_UNIX", "mmap write", "nice +1 (setpriority)", "write state dir", "read watch dir"}
KILLED = {"chroot (@privileged)", "sched_setaffinity (@resources)"}  # the syscall filter's verdict: SIGSYS


def test_the_sandbox_denies_from_inside(box: nspawn.Container) -> None:
    """tests/service/sandbox_probe.py run as an ExecStartPost= of the unit: its user, namespaces and filters."""
    probe = "/usr/local/lib/watcher-sandbox-probe.py"
    dropin = "/etc/systemd/system/watcher.service.d/probe.conf"
    sh(box, f"install -m 0644 {SRC}/tests/service/sandbox_probe.py {probe} && touch /tmp/watcher-probe-marker")
    sh(box, f"mkdir -p {Path(dropin).parent}")
    sh(box, f"printf '[Service]\\nExecStartPost={VENV}/bin/python {probe} {WATCH} /var/lib/watcher\\n' > {dropin}")
    try:
        sh(box, "systemctl daemon-reload && systemctl restart watcher")
        results = {}
        for line in journal(box).splitlines():
            if line.startswith('{"probe"'):
                event = json.loads(line)
                results[event["probe"]] = event["result"]
    finally:
        sh(box, f"rm {dropin} && systemctl daemon-reload && systemctl restart watcher")
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "service-sandbox.txt").write_text("".join(f"{k}: {v}\n" for k, v in results.items()))
    assert len(results) == 26, results
    wrong = {k: v for k, v in results.items() if (v == "allowed") != (k in ALLOWED)}
    wrong |= {k: results[k] for k in KILLED if results[k] != "killed: SIGSYS"}
    assert wrong == {}


def test_a_burst_is_judged_by_worker_processes_inside_the_sandbox(box: nspawn.Container) -> None:
    restarts = prop(box, "NRestarts")
    sh(box, f"runuser -u ml -- /usr/bin/python3.11 -c {shlex.quote(BURST)} /home/ml/staging/burst 400")
    sh(box, f"runuser -u ml -- mv /home/ml/staging/burst {WATCH}/burst")
    wait_until(lambda: not violations(box), timeout=60, what="the 400 files stored")
    assert len([r for r in report(box) if r["path"].startswith("burst/")]) == 400
    assert prop(box, "NRestarts") == restarts
    log = journal(box)
    assert "Traceback" not in log
    assert "code=killed" not in log


def test_kill_9_is_restarted_and_loses_nothing(box: nspawn.Container) -> None:
    before, restarts = prop(box, "MainPID"), int(prop(box, "NRestarts"))
    script = " && ".join(
        f"runuser -u ml -- tee {WATCH}/run2/m{i}.json >/dev/null <<< {shlex.quote(json.dumps(doc()))}"
        for i in range(30)
    )
    sh(box, f"runuser -u ml -- mkdir -p {WATCH}/run2 && {script} && kill -9 {before}")
    drop(box, "run2/late-invalid.json", "{")  # written while it is down or starting again
    wait_until(lambda: int(prop(box, "NRestarts")) == restarts + 1, timeout=30, what="a restart")
    wait_until(lambda: prop(box, "ActiveState") == "active", timeout=40, what="active again")
    assert prop(box, "MainPID") not in (before, "0")
    wait_until(lambda: not violations(box), timeout=30, what="every file in results or rejections")
    assert len([r for r in report(box) if r["path"].startswith("run2/")]) == 30
    log = journal(box)
    assert "Main process exited, code=killed, status=9/KILL" in log
    assert_quiet(box, "kill -9 and the restart")


def test_watchdog_restarts_a_stuck_writer(box: nspawn.Container) -> None:
    # A short watchdog for the test only; the writer is then made to hang on the database lock.
    dropin = "/etc/systemd/system/watcher.service.d/watchdog.conf"
    sh(box, f"mkdir -p {Path(dropin).parent} && printf '[Service]\\nWatchdogSec=3\\nLimitCORE=0\\n' > {dropin}")
    sh(box, "systemctl daemon-reload && systemctl restart watcher")
    try:
        restarts = int(prop(box, "NRestarts"))
        before = prop(box, "MainPID")
        with database_locked(box):
            drop(box, "run3/stuck.json", doc())  # the writer blocks on its next write
            wait_until(lambda: "Watchdog timeout" in journal(box), timeout=60, what="the watchdog timeout")
            wait_until(lambda: int(prop(box, "NRestarts")) > restarts, timeout=30, what="a restart")
        wait_until(lambda: prop(box, "ActiveState") == "active", timeout=60, what="active again")
        assert prop(box, "MainPID") != before
        wait_until(lambda: not violations(box), timeout=30, what="the stuck file stored after the restart")
    finally:
        sh(box, f"rm {dropin} && systemctl daemon-reload && systemctl restart watcher")
    assert prop(box, "WatchdogUSec") == "30s"
    assert_quiet(box, "a watchdog timeout and the restart")


def test_stop_exits_0(box: nspawn.Container) -> None:
    sh(box, "systemctl stop watcher")  # the docs' own word: exit 0, unit inactive, not failed
    assert prop(box, "ActiveState") == "inactive"
    assert prop(box, "Result") == "success"
    assert prop(box, "ExecMainStatus") == "0"
    assert events(box, "daemon_stopped")[-1]["exit_code"] == 0
    assert_quiet(box, "stop")
    sh(box, "systemctl start watcher")
    assert prop(box, "ActiveState") == "active"
    assert_quiet(box, "start")


def stopped_codes(box: nspawn.Container) -> list[int]:
    """The exit code each daemon logged as it stopped, oldest first."""
    return [event["exit_code"] for event in events(box, "daemon_stopped")]


def test_restart_right_after_a_change_is_quiet(box: nspawn.Container) -> None:
    """Each restart comes while the daemon starts the change's page: its helpers stopped after an
    idle stretch (made short here), the report thread waits on a fork server just started (KillMode
    control-group killed it under the daemon), or while the page is being rendered."""
    dropin = "/etc/systemd/system/watcher.service.d/idle.conf"
    idle = "[Service]\\nEnvironment=WATCHER_WORKER_IDLE_SECONDS=0.5\\n"
    sh(box, f"mkdir -p {Path(dropin).parent} && printf '{idle}' > {dropin}")
    sh(box, "systemctl daemon-reload && systemctl restart watcher")
    restarts = prop(box, "NRestarts")
    # A fork server, or a process forked from it (no pgrep in this tree: procps is not installed).
    forkserver = 'grep -qs "[m]ultiprocessing.forkserver" /proc/[0-9]*/cmdline'
    csv = "/var/lib/watcher/reports/report.csv"
    try:
        for n in range(6):
            before, stops = prop(box, "MainPID"), len(stopped_codes(box))
            sh(box, f"timeout 30 sh -c 'while {forkserver}; do sleep 0.01; done'")
            drop(box, f"run4/r{n}.json", doc())
            # Polled inside the container: a round trip through nsenter per look would be too late
            # ([m]: the pattern must not match the polling shell's, or grep's, own command line).
            # Even runs: the fork server is starting; odd runs: the tables are written, the page is
            # being rendered. reset-failed: the loop restarts faster than systemd's start rate limit
            # (5 in 10 s) allows.
            ready = forkserver if n % 2 == 0 else f"grep -q run4/r{n}.json {csv}"
            sh(box, f"systemctl reset-failed watcher; timeout 30 sh -c 'until {ready} 2>/dev/null; do sleep 0.002; "
                    "done' && systemctl restart watcher")  # fmt: skip
            assert prop(box, "ActiveState") == "active" and prop(box, "MainPID") != before
            wait_until(lambda: len(stopped_codes(box)) > stops, timeout=30, what="the old daemon's daemon_stopped")
            assert stopped_codes(box)[stops:] == [0]
            assert_quiet(box, f"restart {n + 1} right after a change")
        assert prop(box, "NRestarts") == restarts
    finally:
        sh(box, f"rm {dropin} && systemctl daemon-reload && systemctl reset-failed watcher")
        sh(box, "systemctl restart watcher")


def test_report_dir_elsewhere_with_the_documented_drop_in(box: nspawn.Container) -> None:
    dropin = doc_dropin(box, "**A database or report folder outside `/var/lib/watcher`**")
    sh(box, "install -d -o watcher -g watcher -m 0750 /srv/watcher-reports")  # as the service page says
    sh(box, "sed -i 's|^report_dir = .*|report_dir = \"/srv/watcher-reports\"|' /etc/watcher/config.toml")
    sh(box, "systemctl daemon-reload && systemctl restart watcher")
    try:
        drop(box, "run5/elsewhere.json", doc())
        wait_until(
            lambda: "run5/elsewhere.json" in box.run("cat /srv/watcher-reports/report.csv", check=False).stdout,
            timeout=30,
            what="the report in the moved report_dir",
        )
        assert prop(box, "ActiveState") == "active"
        assert events(box, "report_write_failed") == []
    finally:
        sh(box, f"rm {dropin} && sed -i 's|^report_dir = .*|report_dir = \"/var/lib/watcher/reports\"|' "
                "/etc/watcher/config.toml")  # fmt: skip
        sh(box, "systemctl daemon-reload && systemctl restart watcher")


def test_watch_dir_under_tmp_with_the_documented_drop_in(box: nspawn.Container) -> None:
    dropin = doc_dropin(box, "**Under `/tmp` or `/var/tmp`**")
    sh(box, "runuser -u ml -- mkdir /tmp/results")
    sh(box, "sed -i 's|^watch_dir = .*|watch_dir = \"/tmp/results\"|' /etc/watcher/config.toml")
    sh(box, "systemctl daemon-reload && systemctl restart watcher")
    try:
        box.run("runuser -u ml -- tee /tmp/results/t.json >/dev/null", input=json.dumps(VALID | {"issuer": "t@x.org"}))
        wait_until(lambda: any(r["path"] == "t.json" for r in report(box)), timeout=30, what="the file under /tmp")
        assert prop(box, "ActiveState") == "active"
    finally:
        sh(box, f"rm {dropin} && sed -i 's|^watch_dir = .*|watch_dir = \"{WATCH}\"|' /etc/watcher/config.toml")
        sh(box, "systemctl daemon-reload && systemctl restart watcher")


# Reads the metrics node_exporter serves, on the container's loopback (the container shares the
# host's network: a free port is picked first).
SCRAPE = (
    "import sys, urllib.request; "
    "print(urllib.request.urlopen(f'http://127.0.0.1:{sys.argv[1]}/metrics', timeout=5).read().decode())"
)
FREE_PORT = "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"


def test_node_exporter_serves_the_metrics_file(box: nspawn.Container) -> None:
    """Debian's node_exporter, its textfile collector on the folder the service config names, run as
    docs/service.md says (its user in group watcher); scraped over loopback inside the container."""
    if box.run(f"test -x {NODE_EXPORTER}", check=False).returncode != 0:
        pytest.skip("prometheus-node-exporter is not installed on the host (apt-get install prometheus-node-exporter)")
    folder = "/var/lib/watcher/metrics"
    assert f'metrics_file = "{folder}/watcher.prom"' in sh(box, "cat /etc/watcher/config.toml")
    wait_until(lambda: box.run(f"test -s {folder}/watcher.prom", check=False).returncode == 0, what="the file")
    sh(box, "useradd --system prometheus && usermod -aG watcher prometheus")
    port = sh(box, f"/usr/bin/python3.11 -c {shlex.quote(FREE_PORT)}").strip()
    flags = f"--collector.textfile.directory={folder} --web.listen-address=127.0.0.1:{port}"
    sh(box, "systemd-run --quiet --collect --unit=node-exporter --uid=prometheus --gid=prometheus "
            f"{NODE_EXPORTER} --collector.disable-defaults --collector.textfile {flags}")  # fmt: skip
    try:
        scrape = f"/usr/bin/python3.11 -c {shlex.quote(SCRAPE)} {port}"

        def scraped() -> str | None:
            proc = box.run(scrape, check=False)
            return proc.stdout if proc.returncode == 0 and "watcher_files" in proc.stdout else None

        page = wait_until(scraped, timeout=30, what="watcher's series from node_exporter")
    finally:
        box.run("systemctl stop node-exporter", check=False)
    assert "node_textfile_scrape_error 0" in page
    series = {line.split(" ")[0] for line in page.splitlines() if line.startswith("watcher_")}
    assert len(series) >= 12, series
    for name in ('watcher_files{state="scored"}', 'watcher_outcomes_total{outcome="rejected"}', "watcher_models"):
        assert name in series, series
    assert "# TYPE watcher_outcomes_total counter" in page


def test_reload_changes_the_target_without_a_restart(box: nspawn.Container) -> None:
    pid, restarts = prop(box, "MainPID"), prop(box, "NRestarts")
    assert {r["target_recall"] for r in report(box)} == {0.85}
    sh(box, "echo 'target_recall = 0.9' >> /etc/watcher/config.toml && systemctl reload watcher")
    try:
        wait_until(lambda: {r["target_recall"] for r in report(box)} == {0.9}, timeout=60, what="rescored for 0.9")
        # READY=1 follows at the main loop's next turn after the writer took the settings, which
        # may come after the rows were rescored (seen "reloading" here on a loaded machine).
        wait_until(lambda: prop(box, "ActiveState") == "active", timeout=30, what="READY=1 after the reload")
        assert (prop(box, "MainPID"), prop(box, "NRestarts")) == (pid, restarts)
        assert events(box, "config_reloaded")[-1]["changed"] == ["target_recall"]
        # A config that does not load: refused, one line, the old settings kept, still running.
        sh(box, "echo 'target_recall = 7' >> /etc/watcher/config.toml && systemctl reload watcher")
        wait_until(lambda: events(box, "config_reload_refused"), timeout=30, what="config_reload_refused")
        wait_until(lambda: prop(box, "ActiveState") == "active", timeout=30, what="READY=1 after the refusal")
        assert prop(box, "MainPID") == pid
    finally:
        sh(box, "sed -i '/^target_recall = /d' /etc/watcher/config.toml && systemctl reload watcher")
    wait_until(lambda: {r["target_recall"] for r in report(box)} == {0.85}, timeout=60, what="back to 0.85")
    assert prop(box, "MainPID") == pid
    assert_quiet(box, "reloads")


RECEIVER = """
import http.server, json, pathlib
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with open("/root/hook.jsonl", "a") as out:
            out.write(json.dumps({"key": self.headers["Idempotency-Key"], "body": body}) + "\\n")
        self.send_response(204)
        self.end_headers()
server = http.server.HTTPServer(("127.0.0.1", 0), H)
pathlib.Path("/root/hook.port").write_text(str(server.server_address[1]))
server.serve_forever()
"""


def test_the_notify_unit_posts_rejections_from_its_own_sandbox(box: nspawn.Container) -> None:
    """systemd/watcher-notify.service beside the daemon: it reaches a webhook (on the container's
    loopback), keeps its cursor in its own state directory, and leaves the daemon's alone."""
    sh(
        box,
        f"cat > /root/receiver.py <<'EOF'\n{RECEIVER}\nEOF\nsystemd-run --unit=hook-receiver python3 /root/receiver.py",
    )
    port = wait_until(lambda: sh(box, "cat /root/hook.port 2>/dev/null || true").strip(), what="the receiver's port")
    config = sh(box, "cat /etc/watcher/config.toml")
    try:
        sh(box, f"install -m 0644 {SRC}/systemd/watcher-notify.service /etc/systemd/system/")
        sh(box, f"echo 'webhooks = [\"http://127.0.0.1:{port}/hook\"]' >> /etc/watcher/config.toml")
        sh(box, "systemctl daemon-reload && systemctl start watcher-notify")
        wait_until(
            lambda: "webhook_following" in sh(box, "journalctl -u watcher-notify -o cat --no-pager"),
            what="notify following",
        )
        drop(box, "notify-bad.json", "[1]")
        line = wait_until(lambda: sh(box, "cat /root/hook.jsonl 2>/dev/null || true").strip(), 30, what="a post")
        post = json.loads(line.splitlines()[0])
        assert post["body"]["path"] == "notify-bad.json" and post["body"]["event"] == "rejected"
        assert post["key"] == post["body"]["key"]
        cursors = sh(box, "ls /var/lib/watcher-notify/notify 2>/dev/null; ls /var/lib/watcher-notify").split()
        assert any(name.endswith(".cursor") for name in cursors), cursors
        assert sh(box, "systemctl show --value -p ActiveState watcher-notify").strip() == "active"
        assert sh(box, "stat -c %U /var/lib/watcher-notify").strip() == "watcher"
        assert not sh(box, "ls /var/lib/watcher | grep -i notify || true").strip()  # nothing in the daemon's
        assert prop(box, "PrivateNetwork") == "yes"  # the daemon's unit, unchanged
    finally:
        sh(box, "systemctl stop watcher-notify hook-receiver || true")
        sh(box, f"cat > /etc/watcher/config.toml <<'EOF'\n{config}EOF")
