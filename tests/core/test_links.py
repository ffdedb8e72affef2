"""The index of links inside the watch dir by target (:mod:`watcher.links`), on real links."""

from __future__ import annotations

import os
from pathlib import Path

from testing.helpers import doc, write
from watcher.links import Links, link_target


def test_a_link_is_indexed_by_its_final_target_inside_the_tree(tmp_path: Path) -> None:
    root = tmp_path / "inbox"
    write(root / "sub" / "t.json", doc())
    write(tmp_path / "outside.json", doc())
    os.symlink("sub/t.json", root / "l1.json")
    os.symlink("l1.json", root / "l2.json")  # a chain: its final target
    os.symlink("../t.json", root / "sub" / "up.json")  # relative to the link's folder
    os.symlink(tmp_path / "outside.json", root / "out.json")
    os.symlink("nowhere.json", root / "dangling.json")
    os.symlink(".", root / "self.json")
    assert link_target(root, "l1.json") == "sub/t.json"
    assert link_target(root, "l2.json") == "sub/t.json"
    assert link_target(root, "sub/up.json") == "t.json"  # no such file: still where it points
    assert link_target(root, "out.json") is None  # outside: no event can name it
    assert link_target(root, "dangling.json") == "nowhere.json"  # made later, it is inside
    assert link_target(root, "self.json") is None  # the watch dir itself
    assert link_target(root, "sub/t.json") is None  # not a link


def test_listed_links_replace_those_recorded_below_the_listing(tmp_path: Path) -> None:
    root = tmp_path / "inbox"
    write(root / "a.json", doc())
    write(root / "sub" / "b.json", doc())
    os.symlink("a.json", root / "la.json")
    os.symlink("../a.json", root / "sub" / "la.json")
    os.symlink("sub/b.json", root / "lb.json")
    links = Links(root)
    links.listed("", ["la.json", "sub/la.json", "lb.json"])
    assert links.to("a.json") == {"la.json", "sub/la.json"} and links.to("sub/b.json") == {"lb.json"}
    assert links.to("la.json") == set()

    (root / "sub" / "la.json").unlink()
    links.listed("sub", [])  # a listing of sub alone: the links above it stay
    assert links.to("a.json") == {"la.json"} and links.to("sub/b.json") == {"lb.json"}
    assert links.into("sub") == ["lb.json"]  # links from outside sub into it
    assert links.into("") == []  # nothing is outside the whole tree

    (root / "la.json").unlink()
    os.symlink("sub/b.json", root / "la.json")  # pointed elsewhere
    links.note("la.json")
    assert links.to("a.json") == set() and links.to("sub/b.json") == {"la.json", "lb.json"}
    (root / "lb.json").unlink()
    write(root / "lb.json", doc())  # a file now, not a link
    links.note("lb.json")
    assert links.to("sub/b.json") == {"la.json"}
    links.listed("", [])
    assert links.target_of == {} and links.links_to == {}
