"""Benchmarks: ``python -m benchmarks.run`` (or ``make bench``). Not part of the test suite's pass/fail."""
