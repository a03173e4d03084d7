"""ARCHITECTURE.md matches the tree: its room table names every package and top-level module of
src/rlhf_cli (and nothing else), in the layering test's order of rooms, and every path it names exists."""
import re
from pathlib import Path

from test_layering import ALLOWED

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "rlhf_cli"
TEXT = (ROOT / "ARCHITECTURE.md").read_text()


def room_rows():
    table = TEXT.split("## The rooms, lowest first", 1)[1].split("\n## ", 1)[0]
    return [ln for ln in table.splitlines() if ln.startswith("| `") or ln.startswith("| base modules")]


def named_rooms():
    names = []
    for row in room_rows():
        first = row.split("|")[1]
        names += [n.rstrip("/").removesuffix(".py") for n in re.findall(r"`([\w./]+)`", first)]
    return names


def test_every_room_of_the_tree_is_on_the_page_and_nothing_else():
    tree = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    tree |= {p.stem for p in SRC.glob("*.py") if p.stem != "__init__"}
    assert set(named_rooms()) == tree


def test_the_page_and_the_layering_test_know_the_same_rooms():
    assert set(named_rooms()) == set(ALLOWED) - {""}


def test_rooms_are_listed_lowest_first():
    """A room may import only rooms listed above it: its ALLOWED set holds no room listed after it."""
    order = named_rooms()
    for i, room in enumerate(order):
        allowed = ALLOWED[room]
        if allowed is None:  # cli/, the top
            assert i == len(order) - 1
            continue
        later = set(order[i + 1:])
        assert not allowed & later, f"{room} may import {sorted(allowed & later)}, listed after it"


def test_every_path_the_page_names_exists():
    for path in set(re.findall(r"`((?:[\w]+/)+[\w]+\.py)", TEXT)) | set(re.findall(r"`(tests/[\w/]+\.py)`", TEXT)):
        full = ROOT / path if path.startswith(("tests/", "conf/", "recipes/")) else SRC / path
        assert full.exists(), path
