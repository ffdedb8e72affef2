"""The metrics file of a real daemon, read with prometheus-client's own parser."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from testing.daemon import Daemon
from testing.helpers import doc, wait_until, write
from watcher.metrics import PERIOD

pytestmark = pytest.mark.slow  # real daemon processes


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon(tmp_path, env={"WATCHER_METRICS_FILE": str(tmp_path / "metrics" / "watcher.prom")})
    (tmp_path / "metrics").mkdir()
    write(d.inbox / "old.json", doc())  # there before the start: the start-up reconcile scores it
    yield d
    d.stop()


def samples(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the file, by name and labels; the parser raises on a malformed file."""
    out = {}
    for family in text_string_to_metric_families(path.read_text()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(path: Path, name: str, **labels: str) -> float | None:
    return samples(path).get((name, tuple(sorted(labels.items()))))


def test_the_metrics_file_follows_the_daemon(daemon: Daemon, tmp_path: Path) -> None:
    prom = tmp_path / "metrics" / "watcher.prom"
    started = time.time()
    daemon.start()
    wait_until(lambda: prom.exists() and value(prom, "watcher_files", state="scored") == 1, what="the first count")
    text = prom.read_text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert len([line for line in text.splitlines() if not line.startswith("#")]) >= 12
    for name, family in families.items():
        assert name.startswith("watcher_")
        assert family.documentation, name  # HELP
        suffix = "_total" if family.type == "counter" else ""
        assert f"# TYPE {name}{suffix} {family.type}" in text  # TYPE, on the exposed name
    assert families["watcher_outcomes"].type == "counter"
    assert "watcher_outcomes_total" in text  # counters carry _total
    assert value(prom, "watcher_models") == 1
    assert value(prom, "watcher_outcomes_total", outcome="scored") == 1
    assert (value(prom, "watcher_last_reconcile_timestamp_seconds") or 0) >= started - 1
    assert value(prom, "watcher_last_reconcile_duration_seconds") is not None

    write(daemon.inbox / "new.json", doc())
    write(daemon.inbox / "bad.json", "{")
    write(daemon.inbox / "low.json", doc(threshold_arr=[0.0, 0.5, 1.0], recall_arr=[0.5, 0.4, 0.0]))
    wait_until(lambda: value(prom, "watcher_outcomes_total", outcome="rejected") == 1, timeout=30, what="rejected")
    wait_until(lambda: value(prom, "watcher_files", state="scored") == 3, timeout=30, what="three scored")
    assert value(prom, "watcher_files", state="rejected") == 1
    assert value(prom, "watcher_models") == 3
    assert value(prom, "watcher_models_below_target") == 1
    assert value(prom, "watcher_outcomes_total", outcome="scored") == 3
    assert (value(prom, "watcher_last_event_timestamp_seconds") or 0) >= started
    assert (value(prom, "watcher_last_change_timestamp_seconds") or 0) >= started
    assert value(prom, "watcher_queue_events") == 0
    assert value(prom, "watcher_event_queue_overflows_total") == 0
    assert value(prom, "watcher_report_write_failures_total") == 0
    # No temporary file is left beside it (node_exporter reads *.prom only, but still).
    assert sorted(p.name for p in prom.parent.iterdir()) == ["watcher.prom"]

    # Idle: rewritten at least every PERIOD seconds.
    before = prom.stat().st_mtime_ns
    wait_until(lambda: prom.stat().st_mtime_ns > before, timeout=PERIOD + 5, what="an idle rewrite")


def test_a_metrics_file_that_is_not_prom_is_refused(tmp_path: Path) -> None:
    from watcher.cli import main

    config = tmp_path / "c.toml"
    config.write_text('metrics_file = "m.txt"\n')
    assert main(["status", "--config", str(config)]) == 2
