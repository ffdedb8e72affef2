# One entry point for everything. `make test` is what CI runs (.ci/run).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install run test test-fast pytest lint typecheck docs systemd-check bench bench-page soak soak-long lock deb clean

# Install pinned versions (requirements.lock) into .venv; redone when the pins change.
$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c requirements.lock pip setuptools wheel
	$(BIN)/python -m pip install -q -c requirements.lock --no-build-isolation -e '.[dev]'
	touch $@

install: $(STAMP)

# The main job on the bundled config: watch ./inbox, database and reports under ./var.
run: install
	mkdir -p inbox
	$(BIN)/watcher run --config config.toml

# Every check: lint, format, types, the docs site, and the whole test suite.
test: install lint typecheck docs pytest

pytest: install
	$(BIN)/pytest

# The quick loop while editing: the in-process tests only (no real daemon, PostgreSQL, browser,
# spreadsheet or systemd; see the markers in pyproject.toml). `make test` still runs everything.
test-fast: install
	$(BIN)/pytest -q -m "not slow and not fleet and not browser and not service"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

# The docs site (mkdocs.yml, docs/) into site/; strict: a broken link or anchor, or a page missing
# from nav, fails (not --quiet: it hides the warnings strict mode counts). The variable silences a
# banner of the theme's about its successor.
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

bench: install
	$(BIN)/python -m benchmarks.run
	$(BIN)/python -m benchmarks.tables
	$(BIN)/python -m benchmarks.polling
	$(BIN)/python -m benchmarks.page

# The report page alone, in headless Chromium (also the last part of `make bench`).
bench-page: install
	$(BIN)/python -m benchmarks.page

soak: install
	$(BIN)/python -m benchmarks.soak

# Two hours at 100 changes a second, history kept 14.4 minutes: sizes and memory must go flat.
soak-long: install
	$(BIN)/python -m benchmarks.soak --minutes 120 --rate 100 --keep-days 0.01 --sample 60

# Re-pin after changing dependencies in pyproject.toml.
lock: install
	(echo "# Pinned versions of everything 'make install' puts in .venv (regenerate: make lock)."; \
	 $(BIN)/pip freeze --all --exclude-editable | grep -v '^-e' | sort -f) > requirements.lock

# The Debian package (debian/, dh-virtualenv: apt-get install dh-virtualenv) into ../watcher_*.deb.
deb:
	dpkg-buildpackage -us -uc -b

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache site
