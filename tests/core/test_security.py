"""What watcher never does with what it reads, and what a reader without permission gets."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from testing.helpers import doc, write
from watcher.judge import JudgeOptions, judge
from watcher.outcomes import Rejected

PACKAGE = Path(__file__).resolve().parents[2] / "watcher"


def test_no_eval_exec_shell_or_unpickling_of_file_content() -> None:
    forbidden = re.compile(r"\b(eval|exec)\(|shell=True|os\.system|pickle\.loads?\(|yaml\.load\(|marshal\.loads?")
    hits = [f"{p.relative_to(PACKAGE)}:{n}" for p in PACKAGE.rglob("*.py")  # every package: fleet/, reports/, ...
            for n, line in enumerate(p.read_text().splitlines(), 1) if forbidden.search(line)]  # fmt: skip
    assert hits == []


def judged_as_nobody(root: Path, rel: str) -> str:
    """The first reason judge() gives, in a forked child that runs as 'nobody' when we are root
    (permission bits do not apply to root). Forked, not exec'd: the interpreter may not be
    reachable for 'nobody'."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            if os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            out = judge(rel, JudgeOptions(root, 0.85, 1000))
            message = out.errors[0].message if isinstance(out, Rejected) else repr(out)
        except BaseException as exc:
            message = repr(exc)
        os.write(write_end, message.encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as fh:
        message = fh.read().decode()
    os.waitpid(pid, 0)
    return message


def test_unreadable_file_is_rejected_with_its_reason() -> None:
    root = Path(tempfile.mkdtemp(prefix="watcher-perm-"))
    try:
        root.chmod(0o755)
        write(root / "secret.json", doc()).chmod(0o000)
        assert judged_as_nobody(root, "secret.json") == "cannot open the file: Permission denied"
    finally:
        for p in root.iterdir():
            p.unlink()
        root.rmdir()
