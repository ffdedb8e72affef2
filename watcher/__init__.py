"""watcher: turn a folder of model-evaluation JSON files into a live, trustworthy SQLite table."""

__version__ = "0.1.0"
