"""Time ``watcher scan`` inside one process, start-up excluded: ``python -m benchmarks.scan_timer
TREE DB`` prints the seconds that :func:`watcher.reconcile.scan` took (log lines included, written
to /dev/null), so that the benchmark can compare the scan itself with the baseline's rescan
function, also timed in-process."""

from __future__ import annotations

import os
import sys
import time

from watcher import logs
from watcher.config import load_settings
from watcher.reconcile import scan


def main(tree: str, db: str) -> float:
    """Scan ``tree`` into ``db`` once; the seconds it took."""
    with open(os.devnull, "w") as sink:
        logs.configure("info", "json", sink)
        settings = load_settings(flags={"watch_dir": tree, "db_path": db})
        start = time.perf_counter()
        scan(settings)
        return time.perf_counter() - start


if __name__ == "__main__":
    print(f"{main(sys.argv[1], sys.argv[2]):.6f}")
