"""The idle cost of the metrics file: a daemon on N files, idle, with and without ``metrics_file``.

``python -m benchmarks.metrics_idle [N] [SECONDS]`` (default 100,000 files, 60 s each). Prints the
daemon's CPU time (its process and helpers, user + system) over the idle stretch as a share of one
core, for both runs, and the difference: the metrics file's own cost.
"""

from __future__ import annotations

import sys
import tempfile
import threading
from pathlib import Path

from benchmarks.polling import tree_pids
from testing.corpus import generate
from testing.daemon import Daemon


def cpu_seconds(pid: int) -> float:
    """User + system time of ``pid`` and its descendants, in seconds."""
    total = 0
    for p in tree_pids(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / 100  # clock ticks (USER_HZ)


def idle_share(root: Path, seconds: float, metrics: bool) -> float:
    env = {"WATCHER_WORKER_IDLE_SECONDS": "1", "WATCHER_RECONCILE_INTERVAL": "86400"}
    if metrics:
        env["WATCHER_METRICS_FILE"] = str(root / "metrics" / "watcher.prom")
    d = Daemon(root, env=env)
    d.start(wait=False)
    try:
        d.wait_event("daemon_ready", timeout=900)
        assert d.proc is not None
        gate = threading.Event()
        for _ in range(120):  # idle once a 5 s stretch costs under 1% of a core (the first report done)
            before = cpu_seconds(d.proc.pid)
            gate.wait(5)
            if cpu_seconds(d.proc.pid) - before < 0.05:
                break
        before = cpu_seconds(d.proc.pid)
        threading.Event().wait(seconds)
        return (cpu_seconds(d.proc.pid) - before) / seconds
    finally:
        d.stop(60)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 60.0
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate(root / "inbox", n, points=11)
        without = idle_share(root, seconds, metrics=False)
        with_metrics = idle_share(root, seconds, metrics=True)
    print(f"{n} files, {seconds:.0f} s idle: without metrics_file {100 * without:.4f}% of a core, "
          f"with {100 * with_metrics:.4f}%, difference {100 * (with_metrics - without):+.4f}%")  # fmt: skip


if __name__ == "__main__":
    main()
