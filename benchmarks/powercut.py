"""Power cuts of a fleet host, many of them: ``testing/powercut.py``'s loop (the state folder on the
lazy file system of ``testing/lazyfs.py``, the watch dir churning, shipping to a throwaway
PostgreSQL), run for ``--cuts`` cuts, with its figures printed: cuts, mismatches (local: integrity,
the invariant, report files; central: the host's rows), total time, resyncs logged, the time from
the restart until the host settled (median, max), and how much history each cut took back.

``python -m benchmarks.powercut [--cuts 200] [--seed 25] [--quiet] [--synchronous FULL]``

``--synchronous FULL`` runs the host's database with every commit fsynced (see
``benchmarks.durability``): then no cut should take back any history.

Needs root, ``/dev/fuse``, Debian's ``fuse3`` and ``python3-fusepy``, and PostgreSQL's server
binaries. Exits 1 if any cut left a mismatch (each one is printed). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from testing import lazyfs
from testing.fleet import Fleet
from testing.pgserver import PgServer
from testing.powercut import PowerCuts, entry_code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cuts", type=int, default=200)
    parser.add_argument("--seed", type=int, default=25)
    parser.add_argument("--quiet", action="store_true", help="no line per round")
    parser.add_argument(
        "--synchronous",
        choices=("NORMAL", "FULL"),
        default=None,
        help="the host database's setting (default: as a fleet host runs it, FULL)",
    )
    args = parser.parse_args(argv)
    why = lazyfs.missing()
    if why is not None:
        print(f"cannot cut power here: {why}", file=sys.stderr)
        return 2
    server = PgServer()
    fleet: Fleet | None = None
    loop: PowerCuts | None = None
    with tempfile.TemporaryDirectory(prefix="watcher-powercut-") as tmp:
        try:
            server.start()
            fleet = Fleet(server, Path(tmp))
            loop = PowerCuts(fleet, Path(tmp), seed=args.seed)
            if args.synchronous is not None:
                loop.host.entry = ["-c", entry_code(args.synchronous)]
            figures = loop.run(args.cuts, progress=not args.quiet)
        finally:
            if loop is not None:
                loop.close()
            if fleet is not None:
                fleet.close()
            server.destroy()
    for problem in figures.local + figures.central:
        print(f"MISMATCH {problem}")
    print(f"| power cuts (synchronous = {args.synchronous or 'FULL, a fleet host'}) | {figures.cuts} |")
    print(f"| mismatches, local (integrity, invariant, report files) | {len(figures.local)} |")
    print(f"| mismatches, central (the host's rows) | {len(figures.central)} |")
    print(f"| total time (s) | {figures.elapsed:.1f} |")
    print(f"| resyncs logged (central_resync) | {figures.resyncs} |")
    if figures.settle:
        times = sorted(figures.settle)
        print(f"| restart to settled (s), median / max | {times[len(times) // 2]:.2f} / {times[-1]:.2f} |")
    taken = sorted(figures.taken_back) or [0]
    print(f"| history entries a cut took back, median / max | {taken[len(taken) // 2]} / {taken[-1]} |")
    print(f"| cuts that left no history at all (nothing checkpointed yet) | {figures.emptied} |")
    print(f"| tracebacks in the daemon's output | {figures.tracebacks} |")
    return 1 if figures.local or figures.central or figures.tracebacks else 0


if __name__ == "__main__":
    sys.exit(main())
