"""Settings: defaults, file, environment, flags, precedence, and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from watcher.config import Settings, load_settings, unknown_env
from watcher.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_bundled_config_documents_every_key_with_its_default(tmp_path: Path) -> None:
    from_file = load_settings(REPO / "config.toml", env={}, cwd=tmp_path)
    defaults = load_settings(None, env={}, cwd=REPO)
    text = (REPO / "config.toml").read_text()
    for key in Settings.model_fields:
        assert f"\n{key} = " in text, f"config.toml does not document {key}"
    assert from_file == defaults.model_copy(update={"report_dir": REPO / "var" / "reports"})


def test_defaults_are_relative_to_cwd(tmp_path: Path) -> None:
    s = load_settings(None, env={}, cwd=tmp_path)
    assert s.watch_dir == tmp_path / "inbox"
    assert s.db_path == tmp_path / "var" / "watcher.db"
    assert s.report_dir == tmp_path / "var" / "reports"
    assert s.target_recall == 0.85 and s.patterns == ("*.json",) and s.recursive


def test_file_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    cfg = tmp_path / "etc" / "w.toml"
    cfg.parent.mkdir()
    cfg.write_text('watch_dir = "../data"\ndb_path = "/abs/w.db"\n')
    s = load_settings(cfg, env={}, cwd=Path("/"))
    assert s.watch_dir == tmp_path / "etc" / ".." / "data"
    assert s.db_path == Path("/abs/w.db")
    assert s.report_dir == Path("/abs/w-reports")  # named after a database not called watcher.db


def test_precedence_flag_over_env_over_file(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("target_recall = 0.7\nsettle_seconds = 5\nbatch_size = 10\n")
    env = {"WATCHER_TARGET_RECALL": "0.8", "WATCHER_SETTLE_SECONDS": "3", "WATCHER_PATTERNS": "*.json, *.res"}
    s = load_settings(cfg, env=env, flags={"target_recall": 0.9, "watch_dir": None}, cwd=tmp_path)
    assert (s.target_recall, s.settle_seconds, s.batch_size) == (0.9, 3.0, 10)
    assert s.patterns == ("*.json", "*.res")


def test_config_file_from_environment(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text("target_recall = 0.6\n")
    assert load_settings(None, env={"WATCHER_CONFIG": "c.toml"}, cwd=tmp_path).target_recall == 0.6


def test_installed_system_config_is_used_when_none_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    system = tmp_path / "etc" / "config.toml"
    monkeypatch.setattr("watcher.config.SYSTEM_CONFIG", system)
    assert load_settings(None, env={}, cwd=tmp_path).target_recall == 0.85  # none installed: defaults
    system.parent.mkdir()
    system.write_text('target_recall = 0.7\ndb_path = "/var/lib/watcher/watcher.db"\n')
    s = load_settings(None, env={}, cwd=tmp_path)
    assert (s.target_recall, s.db_path) == (0.7, Path("/var/lib/watcher/watcher.db"))
    (tmp_path / "c.toml").write_text("target_recall = 0.6\n")
    assert load_settings(None, env={"WATCHER_CONFIG": "c.toml"}, cwd=tmp_path).target_recall == 0.6  # named wins
    assert load_settings(tmp_path / "c.toml", env={}, cwd=tmp_path).target_recall == 0.6


@pytest.mark.parametrize(
    ("content", "env", "message"),
    [
        (None, {}, "{cfg}: config file not found"),
        ("target_recall = ", {}, "{cfg}: not valid TOML: Invalid value (at end of document)"),
        ("colour = 'red'\n", {}, "{cfg}: unknown key 'colour'"),
        ("target_recall = 1.5\n", {}, "{cfg}: target_recall: Input should be less than or equal to 1"),
        ("observer = 'fanotify'\n", {}, "{cfg}: observer: Input should be 'inotify' or 'polling'"),
        (
            "",
            {"WATCHER_BATCH_SIZE": "many"},
            "WATCHER_BATCH_SIZE: batch_size: Input should be a valid integer, unable to parse string as an integer",
        ),
    ],
)
def test_errors_are_one_clear_line(tmp_path: Path, content: str | None, env: dict[str, str], message: str) -> None:
    cfg = tmp_path / "c.toml"
    if content is not None:
        cfg.write_text(content)
    with pytest.raises(ConfigError) as info:
        load_settings(cfg, env=env, cwd=tmp_path)
    assert str(info.value) == message.format(cfg=cfg)
    assert "\n" not in str(info.value)


def test_unknown_environment_variable_is_left_out_and_named_but_an_unknown_file_key_is_an_error(
    tmp_path: Path,
) -> None:
    env = {"WATCHER_NOPE": "1", "WATCHER_TARGET_RECALL": "0.9", "WATCHER_CONFIG_BACKUP": "x"}
    settings = load_settings(env=env, cwd=tmp_path)
    assert settings.target_recall == 0.9
    assert unknown_env(env) == ["WATCHER_CONFIG_BACKUP", "WATCHER_NOPE"]
    (tmp_path / "c.toml").write_text("nope = 1\n")
    with pytest.raises(ConfigError, match="unknown key 'nope'"):
        load_settings(tmp_path / "c.toml", env=env, cwd=tmp_path)


def test_central_url_never_holds_a_password(tmp_path: Path) -> None:
    import socket

    s = load_settings(
        None, env={"WATCHER_CENTRAL_URL": "postgresql://gpu01@db:5432/watcher?sslmode=require"}, cwd=tmp_path
    )
    assert s.central_url == "postgresql://gpu01@db:5432/watcher?sslmode=require"
    assert s.host_name == socket.gethostname()
    assert load_settings(None, env={}, cwd=tmp_path).central_url is None
    for url in (
        "postgresql://gpu01:secret@db/watcher",
        "postgres://gpu01:@db/watcher",
        "host=db user=gpu01 password=secret",
        "postgresql://gpu01@db/watcher?sslmode=require&password=secret",
    ):
        with pytest.raises(ConfigError, match="must not contain a password"):
            load_settings(None, env={"WATCHER_CENTRAL_URL": url}, cwd=tmp_path)
