"""How file events reach the writer: the observers, a family of alternatives behind one start.

- :mod:`~watcher.watch.observe`: :func:`~watcher.watch.observe.start_observer` picks the observer
  (inotify, or the folder poller when configured or when inotify is out of watches) and feeds the
  writer's bounded event queue.
- :mod:`~watcher.watch.inotify`: the inotify observer that pairs moves and leaves out reads.
- :mod:`~watcher.watch.poller`: the folder poller (listings diffed against the database), paced
  by :mod:`~watcher.watch.pacing` to a share of a core.

Imports go one way: the daemon and the writer import this package; it imports the core
(config, store, tree, outcomes, logs) and nothing else of watcher's.
"""
