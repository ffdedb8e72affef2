"""The CLI: in-process through ``watcher.cli.main(argv, stdout)`` (exact output and exit code), and
end to end in a subprocess, as a user would run it."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from testing.helpers import doc, wait_until, write
from watcher import cli
from watcher.schema import REPORT_COLUMNS
from watcher.store import Store

MODEL = "3f2b8c1e-7d4a-4e0b-9a6f-1c2d3e4f5a6b"


def watcher(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("WATCHER_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "watcher", *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """``run(*argv)`` -> (exit code, stdout, stderr) of ``watcher.cli.main``, in this process."""
    for key in [k for k in os.environ if k.startswith("WATCHER_")]:
        monkeypatch.delenv(key)

    def call(*argv: str) -> tuple[int, str, str]:
        out = io.StringIO()
        capsys.readouterr()
        code = cli.main(list(argv), out)
        return code, out.getvalue(), capsys.readouterr().err

    return call


def events(stderr: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stderr.splitlines()]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    inbox = tmp_path / "inbox"
    write(inbox / "good.json", doc(model_id=MODEL, experiment_date="2024-05-01T12:00:00Z"))
    write(inbox / "sub" / "newer.json", doc(model_id=MODEL.upper(), experiment_date="2024-06-01T12:00:00Z"))
    write(inbox / "other.json", doc(model_id="00000000-0000-4000-8000-000000000001", issuer="bob@example.com"))
    write(inbox / "empty.json", "")
    write(inbox / "truncated.json", '{"model_id": "3f2b')
    write(inbox / "latin1.json", b'{"issuer": "\xe9"}')
    write(inbox / "array.json", "[1]")
    bad_fields = doc(
        model_id="nope", issuer="Ann <ann@example.com>", experiment_date="1714564800",
        recall_arr=[1.0, True, 0.5, 0.2, 0.0], threshold_arr=[0, 0.5, 0.4, 0.8, 1],
    )  # fmt: skip
    write(inbox / "fields.json", bad_fields)
    for ignored in (".hidden.json", ".x.json.swp", "x.json.tmp", "x.part", "x.json~", ".git/y.json", "notes.txt"):
        write(inbox / ignored, "garbage")
    return tmp_path


@pytest.mark.slow
def test_scan_report_and_logs_agree_file_by_file(tree: Path) -> None:
    proc = watcher("scan", "--watch-dir", "inbox", "--db", "var/w.db", "--log-level", "debug", cwd=tree)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "8 files: 8 read, 3 scored, 5 rejected, 0 removed; 2 models, 5 rejections in total\n"
    log = events(proc.stderr)
    rejected = {e["path"]: e["errors"] for e in log if e["event"] == "file_rejected"}
    assert sorted(rejected) == ["array.json", "empty.json", "fields.json", "latin1.json", "truncated.json"]
    assert rejected["empty.json"] == [{"field": None, "message": "file is empty"}]
    assert [e["field"] for e in rejected["fields.json"]] == [
        "model_id", "issuer", "experiment_date", "recall_arr[1]",
    ]  # fmt: skip
    assert sorted(e["path"] for e in log if e["event"] == "file_scored") == [
        "good.json",
        "other.json",
        "sub/newer.json",
    ]
    dup = [e for e in log if e["event"] == "model_duplicate"]
    assert (dup[0]["model_id"], dup[0]["winner"], dup[0]["others"]) == (MODEL, "sub/newer.json", ["good.json"])

    rep = watcher("report", "--db", "var/w.db", "--format", "json", cwd=tree)
    rows = json.loads(rep.stdout)
    assert [(r["model_id"], r["path"]) for r in rows] == [
        ("00000000-0000-4000-8000-000000000001", "other.json"), (MODEL, "sub/newer.json"),
    ]  # fmt: skip
    csv_report = (tree / "var" / "w-reports" / "report.csv").read_text()
    assert csv_report == watcher("report", "--db", "var/w.db", "--format", "csv", cwd=tree).stdout
    assert json.loads((tree / "var" / "w-reports" / "report.json").read_text()) == rows

    strict = watcher("scan", "--strict", "--watch-dir", "inbox", "--db", "var/w.db", cwd=tree)
    assert strict.returncode == 1
    assert strict.stdout.startswith("8 files: 0 read,")


@pytest.mark.slow
def test_report_filters_and_formats(tree: Path) -> None:
    watcher("scan", "--watch-dir", "inbox", "--db", "var/w.db", cwd=tree)
    by_issuer = watcher("report", "--db", "var/w.db", "--issuer", "bob@example.com", "--format", "csv", cwd=tree)
    assert by_issuer.stdout.count("\n") == 2 and "bob@example.com" in by_issuer.stdout
    by_model = watcher("report", "--db", "var/w.db", "--model", "3F2B", "--format", "markdown", cwd=tree)
    assert by_model.stdout.splitlines()[2].startswith(f"| {MODEL} | ana@example.com | 0.5 | 0.85 |")
    table = watcher("report", "--db", "var/w.db", "--format", "table", cwd=tree)
    assert table.stdout.splitlines()[0].split() == [
        "model_id", "issuer", "optimal_threshold", "closest_recall_value", "target_recall", "target_met",
        "experiment_date", "path",
    ]  # fmt: skip


def test_validate_prints_verdicts_and_exits_1_on_any_invalid(tree: Path) -> None:
    ok = watcher("validate", "inbox/good.json", cwd=tree)
    assert (ok.returncode, ok.stdout) == (
        0, f"inbox/good.json: ok: model_id {MODEL}, optimal_threshold 0.5, closest_recall_value 0.85\n",
    )  # fmt: skip
    bad = watcher("validate", "inbox/good.json", "inbox/array.json", "inbox/missing.json", cwd=tree)
    assert bad.returncode == 1
    assert bad.stdout.splitlines()[1:] == [
        "inbox/array.json: invalid",
        "  (file): top level must be a JSON object, not an array",
        "inbox/missing.json: invalid: no such file",
    ]


def test_config_errors_exit_2_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text("target_recall = 2\n")
    proc = watcher("scan", "--config", "c.toml", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr == "watcher: c.toml: target_recall: Input should be less than or equal to 1\n"
    missing = watcher("scan", "--config", "nope.toml", cwd=tmp_path)
    assert (missing.returncode, missing.stderr) == (2, "watcher: nope.toml: config file not found\n")
    env = watcher("scan", cwd=tmp_path, env={"WATCHER_OBSERVER": "magic"})
    assert env.returncode == 2 and env.stderr.startswith("watcher: WATCHER_OBSERVER: observer: Input should be")


def test_runtime_errors_exit_3(tmp_path: Path) -> None:
    proc = watcher("scan", "--watch-dir", "nowhere", "--db", "w.db", cwd=tmp_path)
    assert proc.returncode == 3
    assert proc.stderr == f"watcher: {tmp_path / 'nowhere'}: watch directory does not exist or is not a directory\n"
    rep = watcher("report", "--db", "none.db", cwd=tmp_path)
    assert rep.returncode == 3 and "no database here yet" in rep.stderr


def test_status_without_daemon(tree: Path) -> None:
    watcher("scan", "--watch-dir", "inbox", "--db", "var/w.db", cwd=tree)
    proc = watcher("status", "--db", "var/w.db", "--json", cwd=tree)
    assert proc.returncode == 3
    info = json.loads(proc.stdout)
    assert info["running"] is False and info["counts"]["models"] == 2 and info["counts"]["rejections"] == 5
    assert len(info["recent_rejections"]) == 5


def test_config_file_drives_everything(tmp_path: Path) -> None:
    write(tmp_path / "data" / "a.json", doc())
    (tmp_path / "w.toml").write_text('watch_dir = "data"\ndb_path = "state/w.db"\nreport_formats = ["markdown"]\n')
    proc = watcher("scan", cwd=tmp_path, env={"WATCHER_CONFIG": "w.toml"})
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "state" / "w-reports" / "report.md").exists()


def test_python_dash_m_and_console_script_agree(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("watcher")
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True).stdout
    assert out == watcher("--version", cwd=tmp_path).stdout == "watcher 0.1.0\n"


def test_bundled_examples_are_what_their_names_say() -> None:
    examples = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.json"))
    proc = watcher("validate", *map(str, examples), cwd=examples[0].parent)
    assert proc.returncode == 1
    verdicts = {
        line.split(": ")[0]: line.split(": ")[1] for line in proc.stdout.splitlines() if not line.startswith(" ")
    }
    assert verdicts == {str(p): ("ok" if p.name.startswith("valid") else "invalid") for p in examples}


def test_progress_bar_only_when_asked_or_on_a_terminal(tree: Path) -> None:
    quiet = watcher("scan", "--watch-dir", "inbox", "--db", "var/w.db", cwd=tree)
    assert "scanning [" not in quiet.stderr  # stderr is a pipe here: logs only
    (tree / "var" / "w.db").unlink()
    shown = watcher("scan", "--watch-dir", "inbox", "--db", "var/w2.db", cwd=tree, env={"WATCHER_PROGRESS": "always"})
    # (text=True turns the bar's carriage returns into newlines)
    assert "\nscanning [##############################] 8/8\n" in shown.stderr


def test_the_process_entry_keeps_what_the_imports_made_out_of_the_collector() -> None:
    # entry() freezes the objects that exist when it starts, then runs main().
    code = (
        "import gc, sys; from watcher import cli; "
        "cli.main = lambda: 0 if gc.get_freeze_count() > 10_000 else 1; sys.exit(cli.entry())"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


@pytest.mark.parametrize(
    ("argv", "stderr"),
    [
        (
            ["report", "--formt", "csv"],
            "watcher report: unrecognized arguments: --formt csv (see 'watcher report --help')\n",
        ),
        (
            ["report", "--format", "xml"],
            "watcher report: argument --format: invalid choice: 'xml' (choose from 'csv', 'json', 'markdown',"
            " 'table') (see 'watcher report --help')\n",
        ),
        ([], "watcher: the following arguments are required: COMMAND (see 'watcher --help')\n"),
        (["scna"], "watcher: argument COMMAND: invalid choice: 'scna' (choose from "),
        (["status", "--json=yes"], "watcher status: argument --json: ignored explicit argument 'yes' (see "),
    ],
)
def test_usage_errors_are_one_line_naming_the_subcommand(run: Any, argv: list[str], stderr: str) -> None:
    code, out, err = run(*argv)
    assert (code, out) == (2, "")
    assert err.startswith(stderr) and err.count("\n") == 1, err


def test_help_and_version_go_to_stdout_and_exit_0(run: Any) -> None:
    assert run("--version") == (0, "watcher 0.1.0\n", "")
    code, out, err = run("report", "--help")
    assert (code, err) == (0, "") and out.startswith("usage: watcher report ")


def test_a_usage_error_in_a_subprocess_is_one_line_and_exit_2(tmp_path: Path) -> None:
    proc = watcher("report", "--formt", "csv", cwd=tmp_path)
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == "watcher report: unrecognized arguments: --formt csv (see 'watcher report --help')\n"


def as_user(groups: list[int], argv: list[str], sigterm_after: float | None = None) -> tuple[int, str, str]:
    """``cli.main(argv)`` in a forked child running as 'nobody' with these supplementary groups:
    (exit code, stdout, stderr); with ``sigterm_after``, the child gets a SIGTERM after that many
    seconds. Forked, not exec'd: this interpreter may not be reachable for 'nobody'."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        try:
            os.setgroups(groups)
            os.setgid(65534)
            os.setuid(65534)
            out, err = io.StringIO(), io.StringIO()
            sys.stderr = err
            if sigterm_after is not None:
                import signal
                import threading

                threading.Timer(sigterm_after, os.kill, (os.getpid(), signal.SIGTERM)).start()
            code = cli.main(argv, out)
            result = json.dumps([code, out.getvalue(), err.getvalue()])
        except BaseException as exc:
            result = json.dumps([-1, "", repr(exc)])
        os.write(write_end, result.encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as fh:
        raw = fh.read()
    os.waitpid(pid, 0)
    code, out, err = json.loads(raw)
    return int(code), str(out), str(err)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a command as another user ('nobody')")
def test_a_reader_outside_the_group_is_told_which_group_to_join(monkeypatch: pytest.MonkeyPatch) -> None:
    import grp
    import shutil
    import tempfile

    for key in [k for k in os.environ if k.startswith("WATCHER_")]:
        monkeypatch.delenv(key)
    group = grp.getgrnam("daemon")  # a system group 'nobody' is not in
    top = Path(tempfile.mkdtemp(prefix="watcher-perm-"))  # (pytest's tmp_path is closed to others)
    try:
        top.chmod(0o755)
        write(top / "inbox" / "a.json", doc(model_id=MODEL))
        state = top / "state"
        assert cli.main(["scan", "--watch-dir", str(top / "inbox"), "--db", str(state / "w.db")], io.StringIO()) == 0
        # What the service leaves: a 0750 folder of 0640 files, owned by the service's group.
        for p in [state, *state.rglob("*")]:
            os.chown(p, 0, group.gr_gid)
        db = str(state / "w.db")
        for warm_up in (["report", "--db", db], ["status", "--db", db]):  # whatever main imports lazily,
            cli.main(warm_up, io.StringIO())  # imported now: the children cannot read this interpreter's files
        hint = f"join the group that owns it (e.g. `sudo usermod -aG {group.gr_name} $USER`, then log in again)\n"
        for command in (["report", "--db", db], ["status", "--db", db]):
            assert as_user([], command) == (3, "", f"watcher: permission denied: {db}; {hint}")
        # The folder open but the file closed: the same advice, from the file's group.
        state.chmod(0o755)
        assert as_user([], ["report", "--db", db]) == (3, "", f"watcher: permission denied: {db}; {hint}")
        state.chmod(0o750)
        # Joining the group is enough to read it (the read-only WAL reader cannot write -shm).
        code, out, err = as_user([group.gr_gid], ["report", "--db", db, "--format", "csv"])
        assert (code, err) == (0, "") and f"{MODEL},ana@example.com," in out
        # ... and to follow it.
        code, out, err = as_user([group.gr_gid], ["follow", "--db", db, "--last", "1"], sigterm_after=1.0)
        assert (code, err) == (0, "") and json.loads(out)["path"] == "a.json"
    finally:
        shutil.rmtree(top)


@pytest.mark.slow
def test_status_of_a_daemon_that_scored_files_at_start_shows_its_last_event(tmp_path: Path) -> None:
    from testing.daemon import Daemon

    write(tmp_path / "inbox" / "a.json", doc(model_id=MODEL))
    daemon = Daemon(tmp_path)
    try:
        daemon.start()  # the start-up reconcile scores a.json; no file event follows
        wait_until(lambda: daemon.query("SELECT last_event_at FROM daemon_status")[0][0], timeout=15, what="status")
        proc = watcher("status", "--db", str(daemon.db), cwd=tmp_path)
        lines = dict(line.split(":", 1) for line in proc.stdout.splitlines() if not line.startswith(" "))
        assert proc.returncode == 0 and lines["results"].strip() == "1"
        changed = daemon.query("SELECT at FROM history")[0][0]
        assert lines["last event"].strip() >= changed and lines["last change"].strip() == changed
    finally:
        assert daemon.stop() == 0


LOW = doc(model_id=MODEL, threshold_arr=[0.0, 0.5, 1.0], recall_arr=[0.6, 0.5, 0.0])


def test_validate_a_folder_checks_every_file_the_patterns_select(run: Any, tmp_path: Path) -> None:
    write(tmp_path / "d" / "low.json", LOW)
    write(tmp_path / "d" / "sub" / "bad.json", "[1]")
    for ignored in (".hidden/x.json", "x.json.tmp", "notes.txt"):
        write(tmp_path / "d" / ignored, "garbage")
    (tmp_path / "empty").mkdir()
    code, out, err = run("validate", str(tmp_path / "d"), str(tmp_path / "empty"))
    assert (code, err) == (1, "")
    assert out == (
        f"{tmp_path}/d/low.json: ok: model_id {MODEL}, optimal_threshold 0.0, closest_recall_value 0.6;"
        " below the target recall 0.85\n"
        f"{tmp_path}/d/sub/bad.json: invalid\n"
        "  (file): top level must be a JSON object, not an array\n"
        f"{tmp_path}/empty: no file here matches the patterns (*.json)\n"
    )
    assert run("validate", str(tmp_path / "d" / "low.json"), str(tmp_path / "empty"))[0] == 0  # below target: valid


NO_AT = "An email address must have an @-sign."


def test_validate_reads_standard_input_and_speaks_json_lines(
    run: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "bad.json", doc(issuer="nobody"))
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(json.dumps(LOW).encode())))
    code, out, err = run("validate", "-", str(tmp_path / "bad.json"), str(tmp_path / "gone.json"), "--format", "json")
    assert (code, err) == (1, "")
    assert [json.loads(line) for line in out.splitlines()] == [
        {
            "path": "-", "valid": True, "model_id": MODEL, "issuer": "ana@example.com",
            "experiment_date": "2024-05-01T12:00:00.000Z", "optimal_threshold": 0.0, "closest_recall_value": 0.6,
            "target_recall": 0.85, "target_met": False, "errors": [],
        },
        {
            "path": str(tmp_path / "bad.json"), "valid": False,
            "errors": [{"field": "issuer", "message": f"not a valid e-mail address: {NO_AT}"}],
        },
        {"path": str(tmp_path / "gone.json"), "valid": False, "errors": [{"field": None, "message": "no such file"}]},
    ]  # fmt: skip
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
    assert run("validate", "-") == (1, "-: invalid\n  (file): file is empty\n", "")


def test_validate_standard_input_in_a_subprocess(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "watcher", "validate", "-"], input=json.dumps(LOW), cwd=tmp_path,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert (proc.returncode, proc.stderr) == (0, "")
    assert proc.stdout.startswith(f"-: ok: model_id {MODEL}, optimal_threshold 0.0,")


def test_report_below_target_sorted_and_what_matched_nothing(run: Any, tmp_path: Path) -> None:
    a, b, c = (f"{n}0000000-0000-4000-8000-000000000000" for n in "abc")
    write(tmp_path / "inbox" / "a.json", doc(model_id=a, recall_arr=[0.8, 0.75, 0.7, 0.6, 0.0]))  # 0.8 at 0.0
    write(tmp_path / "inbox" / "b.json", doc(model_id=b, issuer="=2+3@example.com"))  # meets it: 0.85 at 0.5
    write(tmp_path / "inbox" / "c.json", doc(model_id=c, recall_arr=[0.7, 0.6, 0.5, 0.4, 0.0]))  # 0.7 at 0.0
    db = str(tmp_path / "w.db")
    assert run("scan", "--watch-dir", str(tmp_path / "inbox"), "--db", db)[0] == 0
    code, out, err = run("report", "--db", db, "--below-target", "--sort", "closest_recall_value", "--desc")
    assert (code, err) == (0, "")
    date, head = "2024-05-01T12:00:00.000Z", ",".join(REPORT_COLUMNS)
    assert out == f"{head}\n{a},ana@example.com,0.0,0.8,0.85,false,{date},a.json\n" + (
        f"{c},ana@example.com,0.0,0.7,0.85,false,{date},c.json\n"
    )
    code, out, _ = run("report", "--db", db, "--sort", "optimal_threshold", "--format", "json")
    assert [(r["model_id"], r["target_met"]) for r in json.loads(out)] == [(a, False), (c, False), (b, True)]
    assert json.loads(out)[2]["issuer"] == "=2+3@example.com"
    code, out, _ = run("report", "--db", db, "--model", "zzz", "--format", "table")
    assert (code, out.splitlines()[-1]) == (0, "(no model matches --model zzz)")
    code, out, _ = run("report", "--db", db, "--issuer", "bob@example.com", "--below-target", "--format", "table")
    assert out.splitlines()[-1] == "(no model matches --issuer bob@example.com --below-target)"
    assert run("report", "--db", db, "--model", "zzz", "--format", "csv") == (0, head + "\n", "")
    code, _, err = run("report", "--db", db, "--sort", "size")
    assert code == 2 and err.startswith("watcher report: argument --sort: invalid choice: 'size'")


def test_an_unforeseen_error_is_one_line_and_exit_3(run: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("something no command foresaw")

    monkeypatch.setattr(cli, "scan", broken)
    code, out, err = run("scan", "--watch-dir", str(tmp_path), "--db", str(tmp_path / "w.db"))
    assert (code, out, err) == (3, "", "watcher scan: internal error: ValueError: something no command foresaw\n")
    monkeypatch.setattr(cli, "check", lambda *a: (_ for _ in ()).throw(PermissionError(13, "Permission denied", "x")))
    assert run("validate", "x.json") == (3, "", "watcher validate: [Errno 13] Permission denied: 'x'\n")


def test_status_says_when_the_daemons_watch_dir_is_missing(tmp_path: Path, run: Any) -> None:
    inbox = tmp_path / "inbox"
    write(inbox / "a.json", doc())
    assert run("scan", "--watch-dir", str(inbox), "--db", str(tmp_path / "w.db"))[0] == 0
    with Store.open(tmp_path / "w.db") as store:  # as the daemon records itself at start
        store.set_status(pid=1, observer="inotify", watch_dir=str(inbox))
    _, out, _ = run("status", "--db", str(tmp_path / "w.db"))
    assert f"watch dir:       {inbox}\n" in out
    (inbox / "a.json").unlink()
    inbox.rmdir()
    _, out, _ = run("status", "--db", str(tmp_path / "w.db"))
    assert f"watch dir:       {inbox} (missing: the daemon waits for it)\n" in out
    _, out, _ = run("status", "--db", str(tmp_path / "w.db"), "--json")
    assert json.loads(out)["watch_dir_present"] is False


def test_under_ci_a_skipped_test_fails(tmp_path: Path) -> None:
    # The suite's own rule (tests/conftest.py), applied to a probe outside the suite.
    probe = tmp_path / "test_probe.py"
    probe.write_text(
        "import pytest\n\ndef test_skips():\n    pytest.skip('tool missing')\n\ndef test_runs():\n    pass\n"
    )
    repo = Path(__file__).resolve().parents[2]
    for ci, code, line in (("true", 1, "1 failed, 1 passed"), ("", 0, "1 passed, 1 skipped")):
        env = {**os.environ, "CI": ci}
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-q", "-p", "no:cacheprovider", str(probe)],
            cwd=repo, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == code, done.stdout + done.stderr
        assert line in done.stdout, done.stdout
        if ci:
            assert "skipped under CI, where every test must run: Skipped: tool missing" in done.stdout
