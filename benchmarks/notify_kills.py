"""``watcher notify`` killed at random, at length: the acceptance test's loop
(:func:`testing.webhook.kill_loop`) with more kills, printing its figures.

``python -m benchmarks.notify_kills [--kills 200] [--seed 29] [--every 0.03]``

A real daemon and a real ``watcher notify`` in a temporary folder, a local webhook receiver;
``notify`` is killed with SIGKILL ``kills`` times while a file arrives every ``every`` seconds (two
in three rejected). Exit 1 if any rejection never reached the receiver.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from testing.daemon import Daemon
from testing.webhook import NotifyProcess, Receiver, kill_loop, rejected_ids


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=200)
    parser.add_argument("--seed", type=int, default=29)
    parser.add_argument("--every", type=float, default=0.03, help="seconds between files")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="notify-kills-") as folder:
        root = Path(folder)
        receiver = Receiver().start()
        daemon = Daemon(root).start()
        notify = NotifyProcess(root, daemon.db, [{"url": receiver.url}]).start()
        try:
            figures = kill_loop(daemon, notify, receiver, args.kills, args.seed, args.every)
            lost = sorted(set(rejected_ids(daemon.db)) - set(receiver.ids()))
        finally:
            notify.stop()
            daemon.stop()
            receiver.stop()
    print(json.dumps({**figures, "lost": len(lost)}))
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
