"""Power cuts of a fleet host, honestly: its state folder on a file system that loses every write
not fsynced (:mod:`tests.lazyfs`), its watch dir churning, shipping to a real PostgreSQL. After
each cut the database is whole, the report files are whole, and once the host settles its
database agrees with its folder, its reports with its database and the central rows with its
own. The long run is ``python -m benchmarks.powercut --cuts 200``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.powercut import PowerCuts
from tests.test_fleet import running_fleet
from tests.test_lazyfs import require_fuse

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def test_five_power_cuts_of_a_shipping_host_lose_nothing_that_matters(pg_cluster: Any, tmp_path: Path) -> None:
    require_fuse()
    with running_fleet(pg_cluster, tmp_path) as fleet:
        loop = PowerCuts(fleet, tmp_path, seed=25)
        try:
            figures = loop.run(cuts=5)
        finally:
            loop.close()
    assert figures.cuts == 5
    assert figures.local == [], figures.local
    assert figures.central == [], figures.central
    assert figures.tracebacks == 0
    assert figures.settle and max(figures.settle) < 60, figures.summary()
