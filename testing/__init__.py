"""What the tests and the benchmarks share (not shipped: the wheel holds ``watcher`` alone).

- :mod:`~testing.helpers`: result documents, file writes, waiting for a condition, a process's
  descendants.
- :mod:`~testing.daemon`: a real ``watcher run`` process on temporary folders.
- :mod:`~testing.invariant`, :mod:`~testing.fleet_invariant`: what the database (and the
  central one) must hold for the files on disk.
- :mod:`~testing.corpus`: a results tree of N realistic files (``python -m testing.corpus``).
- :mod:`~testing.models`: N generated models as report rows, outcomes, or a database.
- :mod:`~testing.pgserver`: a throwaway PostgreSQL server of its own.
- :mod:`~testing.fleet`: a central database with real daemons shipping to it and a publisher.
- :mod:`~testing.cdp`: headless Chromium over the DevTools protocol on a pipe.
- :mod:`~testing.unprivileged`: commands run as ``nobody``.
- :mod:`~testing.nspawn`, :mod:`~testing.service_box`: a Debian tree booted under
  systemd-nspawn, with the service installed.

Imports go one way: ``tests`` and ``benchmarks`` import ``testing``; ``testing`` imports
``watcher`` and nothing of the tests or the benchmarks.
"""
