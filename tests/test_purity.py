"""The pure cores import no zmq, no asyncio and no clock, directly or through zdse."""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "zdse"
#: What a pure module may not import: sockets, an event loop, a clock.
FORBIDDEN = frozenset({"zmq", "asyncio", "time", "datetime"})
#: The cores the architecture names pure (docs/architecture.md): checked even
#: if their docstring forgot to say so.
CORES = (
    "zdse.wire.codec",
    "zdse.wire.limits",
    "zdse.wire.routes",
    "zdse.wire.receipts",
    "zdse.cage.core",
    "zdse.cage.effects",
    "zdse.cage.tables",
    "zdse.node.core",
    "zdse.node.session",
    "zdse.node.publications",
    "zdse.node.subscriptions",
    "zdse.node.requests",
    "zdse.node.silence",
    "zdse.node.table",
    "zdse.supervisor.core",
)
_CLAIM = re.compile(r"\bPure\b")


def _module_path(name: str) -> Path:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def _tree(name: str) -> ast.Module:
    return ast.parse(_module_path(name).read_text(), str(_module_path(name)))


@cache
def _imports(name: str) -> frozenset[str]:
    """Every module ``name`` imports, at any depth of its code (type-only ones left out)."""
    return frozenset(_imports_of(_tree(name)))


def _imports_of(tree: ast.Module) -> set[str]:
    found: set[str] = set()
    type_only = {id(node) for stmt in ast.walk(tree) if isinstance(stmt, ast.If)
                 and ast.unparse(stmt.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")
                 for node in ast.walk(stmt)}
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            # "from zdse.wire import codec" imports the module zdse.wire.codec.
            found.update(f"{node.module}.{alias.name}" for alias in node.names
                         if _module_path(f"{node.module}.{alias.name}").exists())
    return found


def _claimed_pure() -> list[str]:
    """Modules whose docstring's first paragraph says they are pure."""
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        if _CLAIM.search(doc.split("\n\n")[0]):
            rel = path.relative_to(PACKAGE.parent).with_suffix("")
            names.append(".".join(p for p in rel.parts if p != "__init__"))
    return names


def _reached(name: str) -> dict[str, str]:
    """Every zdse module ``name`` loads, directly or not, each with who imports it first."""
    seen = {name: name}
    todo = [name]
    while todo:
        current = todo.pop()
        for imported in _imports(current):
            if imported.startswith("zdse") and _module_path(imported).exists() \
                    and imported not in seen:
                seen[imported] = current
                todo.append(imported)
    return seen


@pytest.mark.parametrize("name", sorted(set(CORES) | set(_claimed_pure())))
def test_a_pure_core_imports_no_sockets_loop_or_clock(name: str) -> None:
    """Neither the module nor any zdse module it loads imports zmq, asyncio, time or datetime."""
    bad = []
    for module, importer in _reached(name).items():
        for imported in _imports(module):
            if imported.split(".")[0] in FORBIDDEN:
                via = "" if module == name else f" (loaded through {importer})"
                bad.append(f"{module} imports {imported}{via}")
    assert bad == [], bad


def test_the_scan_sees_imports_anywhere_but_under_type_checking() -> None:
    """An import inside a function counts; one under ``if TYPE_CHECKING:`` does not."""
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import asyncio\n"
                     "def f():\n    import time\n    from zmq.asyncio import Context\n")
    assert _imports_of(tree) & FORBIDDEN == {"time"}
    assert "zmq.asyncio" in _imports_of(tree)
