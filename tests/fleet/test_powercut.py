"""Power cuts of a fleet host, honestly: its state folder on a file system that loses every write
not fsynced (:mod:`testing.lazyfs`), its watch dir churning, shipping to a real PostgreSQL. After
each cut the database is whole, the report files are whole, and once the host settles its
database agrees with its folder, its reports with its database and the central rows with its
own. The long run is ``python -m benchmarks.powercut --cuts 200``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from testing.fleet import running_fleet
from testing.lazyfs import require_fuse
from testing.powercut import PowerCuts, entry_code

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def test_five_power_cuts_of_a_shipping_host_lose_nothing_that_matters(pg_cluster: Any, tmp_path: Path) -> None:
    require_fuse()
    with running_fleet(pg_cluster, tmp_path) as fleet:
        loop = PowerCuts(fleet, tmp_path, seed=25)
        # A fleet host syncs every commit (synchronous=FULL) and a cut takes nothing back; with
        # NORMAL, as a host without central_url runs, cuts take commits back that were shipped
        # already: the harder case for the central rows, so the one run here.
        loop.host.entry = ["-c", entry_code("NORMAL")]
        try:
            figures = loop.run(cuts=5)
        finally:
            loop.close()
    assert figures.cuts == 5
    assert figures.local == [], figures.local
    assert figures.central == [], figures.central
    assert figures.tracebacks == 0
    assert figures.settle and max(figures.settle) < 60, figures.summary()
