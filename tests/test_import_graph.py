"""ragfn's rooms: no import circles, each room imports only what its docstring allows, few top-level modules."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from import_graph import cycles, declared_layers, import_graph, layering_violations

pytestmark = pytest.mark.unit
RAGFN = Path(__file__).resolve().parent.parent / "ragfn"


def test_ragfn_has_no_import_circles():
    assert cycles(import_graph(RAGFN)) == []


def test_every_room_imports_only_what_its_docstring_allows():
    assert layering_violations(RAGFN) == []


def test_the_declared_layers_are_themselves_acyclic_and_name_real_rooms():
    layers = declared_layers(RAGFN)
    assert set().union(*layers.values()) <= set(layers)
    assert cycles(layers) == []
    assert layers["ragfn.core"] == set()
    assert "ragfn.gateway" not in layers["ragfn.store"] | layers["ragfn.retrieval"] | layers["ragfn.ingest"]


def test_the_top_level_is_a_handful_of_modules_and_every_room_says_what_it_holds():
    top = sorted(p.name for p in RAGFN.glob("*.py"))
    assert len(top) <= 12, top
    rooms = sorted(p.parent.name for p in RAGFN.glob("*/__init__.py"))
    assert len(rooms) >= 8 and not [p for p in RAGFN.iterdir() if p.is_dir() and p.name != "__pycache__"
                                    and not (p / "__init__.py").is_file()]


def _package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "pkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root / "pkg"


def test_a_circle_is_found_even_through_a_function_level_or_relative_import(tmp_path):
    pkg = _package(tmp_path, {
        "__init__.py": "",
        "low/__init__.py": '"""Low.\n\nMay import: nothing of pkg.\n"""\n',
        "low/a.py": "from pkg.low import b\n",
        "low/b.py": "def f():\n    from .c import g\n",
        "low/c.py": "import pkg.low.a\n",
        "low/d.py": "from pkg.low.a import x\n",
    })
    assert cycles(import_graph(pkg)) == [["pkg.low.a", "pkg.low.b", "pkg.low.c"]]


def test_an_upward_import_between_rooms_is_named(tmp_path):
    pkg = _package(tmp_path, {
        "__init__.py": "",
        "core/__init__.py": '"""Core.\n\nMay import: nothing of pkg.\n"""\n',
        "core/x.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.app.y import Y\n",
        "app/__init__.py": '"""App.\n\nMay import: pkg.core.\n"""\n',
        "app/y.py": "from pkg.core import x\n",
    })
    assert layering_violations(pkg) == ["pkg.core.x imports pkg.app.y, but pkg.core may import only nothing"]
    assert cycles(import_graph(pkg)) == [["pkg.app.y", "pkg.core.x"]]


def test_a_room_without_its_may_import_line_is_an_error(tmp_path):
    pkg = _package(tmp_path, {"__init__.py": "", "room/__init__.py": '"""A room."""\n'})
    with pytest.raises(AssertionError, match="May import"):
        declared_layers(pkg)


def test_docs_architecture_lists_every_room_with_what_its_docstring_allows():
    import re

    table = (RAGFN.parent / "docs" / "architecture.md").read_text()
    rows = dict(re.findall(r"^\| `(ragfn\.\w+)` \| .+ \| ([^|]+) \|$", table, re.MULTILINE))
    layers = declared_layers(RAGFN)
    assert set(rows) == set(layers)
    for room, allowed in rows.items():
        named = set() if allowed.strip() == "nothing" else {f"ragfn.{n.strip()}" for n in allowed.split(",")}
        assert named == layers[room], room
