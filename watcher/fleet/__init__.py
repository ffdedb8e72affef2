"""The fleet: the optional wing for a central PostgreSQL shared by many hosts (``pip install
'watcher[postgres]'``). The only package that imports psycopg, and only when it is used: the CLI
imports :mod:`watcher.fleet.cli`, whose commands import the driver when they run, and the daemon
imports its :class:`~watcher.fleet.shipper.Shipper` only when ``central_url`` is set.

- :mod:`~watcher.fleet.central`: the central schema, connections and statements.
- :mod:`~watcher.fleet.outbox`: the host's local queue of changes not yet shipped (SQLite).
- :mod:`~watcher.fleet.shipper`: the daemon's thread that ships the outbox to central.
- :mod:`~watcher.fleet.publisher`: ``watcher central publish``, the fleet's report files.
- :mod:`~watcher.fleet.tables`, :mod:`~watcher.fleet.page`: its table files and its HTML page.
- :mod:`~watcher.fleet.follow`: ``watcher central follow``, the fleet's change feed.
- :mod:`~watcher.fleet.cli`: the ``watcher central`` commands.

Imports go one way: the fleet imports the core and :mod:`watcher.reports`, never the reverse.
"""
