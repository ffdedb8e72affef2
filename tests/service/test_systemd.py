"""The unit file, checked offline with systemd-analyze (any output but a missing binary fails)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from watcher.config import load_settings

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "watcher.service"
pytestmark = [
    pytest.mark.service,
    pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed"),
]
# The one complaint allowed: the package is not installed at ExecStart's path on a test machine.
MISSING_BINARY = re.compile(
    r"^\S+: Command /opt/watcher/venv/bin/watcher is not executable: No such file or directory$"
)


def verify(unit: Path) -> list[str]:
    proc = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    lines = (proc.stdout + proc.stderr).splitlines()
    return [line for line in lines if line.strip() and not MISSING_BINARY.match(line)]


def test_unit_verifies_clean(tmp_path: Path) -> None:
    unit = tmp_path / "watcher.service"
    shutil.copy(UNIT, unit)
    assert verify(unit) == []


def test_verify_check_catches_a_parse_warning(tmp_path: Path) -> None:
    unit = tmp_path / "watcher.service"
    unit.write_text(UNIT.read_text().replace("[Service]\n", "[Service]\nNoSuchDirective=1\n"))
    assert any("NoSuchDirective" in line for line in verify(unit))


def test_security_exposure_at_most_2(tmp_path: Path) -> None:
    unit = tmp_path / "watcher.service"
    shutil.copy(UNIT, unit)
    proc = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(unit)], capture_output=True, text=True, timeout=60
    )
    match = re.search(r"Overall exposure level for watcher\.service: (\d+\.\d+)", proc.stdout + proc.stderr)
    assert match, proc.stdout + proc.stderr
    assert float(match.group(1)) <= 2.0


def test_unit_contract() -> None:
    text = UNIT.read_text()
    for line in ("Type=notify", "WatchdogSec=30", "Restart=on-failure", "User=watcher", "ProtectSystem=strict",
                 "PrivateNetwork=yes", "NoNewPrivileges=yes", "StateDirectory=watcher", "UMask=0027",
                 "LogRateLimitIntervalSec=0", "PrivateDevices=yes", "ProtectHome=read-only",
                 "SystemCallFilter=setpriority", "RestrictAddressFamilies=AF_UNIX", "IPAddressDeny=any"):  # fmt: skip
        assert f"\n{line}\n" in text
    # The paths live in the installed config (systemd/config.toml), not in the unit's environment.
    assert "Environment=" not in text


def test_service_config_names_the_state_directory(tmp_path: Path) -> None:
    # As installed, with the watch_dir line docs/service.md appends.
    config = tmp_path / "config.toml"
    config.write_text((UNIT.parent / "config.toml").read_text() + 'watch_dir = "/home/ml/results"\n')
    settings = load_settings(config_file=config, env={})
    assert settings.db_path == Path("/var/lib/watcher/watcher.db")
    assert settings.report_dir == Path("/var/lib/watcher/reports")
    assert settings.watch_dir == Path("/home/ml/results")
    assert settings.notify_state_dir == Path("/var/lib/watcher-notify")


NOTIFY_UNIT = UNIT.parent / "watcher-notify.service"


def test_notify_unit_verifies_clean_and_is_as_hardened(tmp_path: Path) -> None:
    unit = tmp_path / "watcher-notify.service"
    shutil.copy(NOTIFY_UNIT, unit)
    assert verify(unit) == []
    proc = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(unit)], capture_output=True, text=True, timeout=60
    )
    match = re.search(r"Overall exposure level for watcher-notify\.service: (\d+\.\d+)", proc.stdout + proc.stderr)
    assert match, proc.stdout + proc.stderr
    assert float(match.group(1)) <= 2.0


def test_notify_unit_alone_reaches_the_network_and_writes_only_its_state() -> None:
    text = NOTIFY_UNIT.read_text()
    assert "\nExecStart=/opt/watcher/venv/bin/watcher notify --config /etc/watcher/config.toml\n" in text
    for line in ("RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6", "ProtectSystem=strict", "User=watcher",
                 "StateDirectory=watcher-notify", "NoNewPrivileges=yes", "Restart=on-failure",
                 "RestartPreventExitStatus=2"):  # fmt: skip
        assert f"\n{line}\n" in text
    settings = [line.split("=")[0] for line in text.splitlines() if line and not line.startswith("#")]
    assert not {"PrivateNetwork", "IPAddressDeny", "ReadWritePaths"} & set(settings)
    # ... while the daemon's unit keeps every network door shut.
    daemon = UNIT.read_text()
    assert "\nPrivateNetwork=yes\n" in daemon and "\nRestrictAddressFamilies=AF_UNIX\n" in daemon


DROP_IN = UNIT.parent / "central.conf"


def test_central_drop_in_verifies_and_opens_only_the_server(tmp_path: Path) -> None:
    # A drop-in's settings apply as if appended to the unit: verify the two together.
    unit = tmp_path / "watcher.service"
    unit.write_text(UNIT.read_text() + "\n" + DROP_IN.read_text())
    assert verify(unit) == []
    settings = [line for line in DROP_IN.read_text().splitlines() if line and not line.startswith("#")]
    assert settings == [
        "[Service]",
        "PrivateNetwork=no",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "IPAddressAllow=192.0.2.10",
        "LoadCredential=pgpass:/etc/watcher/pgpass",
        "Environment=PGPASSFILE=%d/pgpass",
    ]
    assert "\nIPAddressDeny=any\n" in UNIT.read_text()  # what the allowance is an exception to
