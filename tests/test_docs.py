"""The README stays short, and every page of docs/ is in the site's nav (``make docs`` builds the
site strictly; these checks are the fast part of it, in the default suite)."""

from __future__ import annotations

import re
from pathlib import Path

from testing.service_box import SERVICE_PAGE, doc_block, doc_ini_block, journal_recipe

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def nav_pages() -> set[str]:
    """The pages mkdocs.yml's nav lists (``- Title: page.md`` lines, nested or not)."""
    text = (ROOT / "mkdocs.yml").read_text()
    nav = text[text.index("\nnav:\n") :]
    return set(re.findall(r"^\s*- (?:[^:\n]+: )?(\S+\.md)\s*$", nav, re.M))


def test_readme_stays_short() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 160, f"README.md has {len(lines)} lines: move the detail into a page of docs/"


def test_every_page_is_in_the_nav_and_every_nav_entry_exists() -> None:
    pages = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")}
    nav = nav_pages()
    assert pages - nav == set(), "pages missing from mkdocs.yml's nav"
    assert nav - pages == set(), "nav entries with no page"


def test_readme_links_to_every_page() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [p for p in nav_pages() if p != "index.md" and f"(docs/{p})" not in readme]
    assert missing == []


def test_the_service_tests_blocks_are_found() -> None:
    """The blocks tests/test_service.py runs word for word (the test itself boots a container)."""
    install = doc_block(SERVICE_PAGE, "# Running as a service")
    assert "systemctl enable --now watcher" in install
    assert "pip install -c requirements.lock ." in install
    assert "journalctl -u watcher" in journal_recipe()
    assert "BindReadOnlyPaths=/tmp/results" in doc_ini_block("**Under `/tmp` or `/var/tmp`**")
    assert "ReadWritePaths=/srv/watcher-reports" in doc_ini_block(
        "**A database or report folder outside `/var/lib/watcher`**"
    )
