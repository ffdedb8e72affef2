"""The reports: what the daemon and ``watcher report`` write from the store.

- :mod:`~watcher.reports.formats`: the row formats (CSV, JSON, Markdown, the terminal table),
  rendered to a text stream; pure.
- :mod:`~watcher.reports.tables`: the table files kept up to date by splicing changed rows.
- :mod:`~watcher.reports.page`: the self-contained HTML page, built around ``assets/``.
- :mod:`~watcher.reports.files`: the report files: written atomically, from a store (the tables
  whole, the page), and which are missing.
- :mod:`~watcher.reports.reporter`: the daemon's report thread (and the page's process).

Imports go one way: the reports import the core (store, schema, config, logs, pools), never
:mod:`watcher.watch` or :mod:`watcher.fleet`; the fleet imports the reports; the core reaches
them from its entry points (cli, daemon), from reconcile (``watcher scan`` refreshes the files
at its end) and from tree (the report file names, kept out of the watch).
"""
