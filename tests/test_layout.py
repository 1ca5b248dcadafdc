"""
The code's shape, as docs/architecture.md promises it: every module is
named there, none outgrows what one reader holds in mind, and twistd's
plugin directory stays a namespace. (The import rules are import-linter
contracts in pyproject.toml, run by `make lint`.)
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "txvnc"
MODULES = sorted(p for p in PACKAGE.rglob("*.py"))
MAX_MODULE_LINES = 500
MAX_CLASS_LINES = 300
#: Option tables are long by nature: one entry per option, nothing to split.
TABLES = {("txvnc/tap.py", "Options")}


def _name(path: Path) -> str:
    return str(path.relative_to(REPO))


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_module_is_small(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{_name(path)} has {lines} lines"


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_classes_are_small(path: Path) -> None:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and (_name(path), node.name) not in TABLES:
            assert node.end_lineno is not None
            lines = node.end_lineno - node.lineno + 1
            assert lines <= MAX_CLASS_LINES, f"{node.name} has {lines} lines"


def documented_modules(doc: str) -> set[str]:
    """
    The files the layout tree of docs/architecture.md names: one entry a
    line, two spaces of indent a level, folders ending in a slash.
    """
    layout = doc.split("## Layout", 1)[1].split("```")[1]
    folders: list[str] = []
    named = set()
    for line in layout.splitlines():
        if not line.strip():
            continue
        depth = (len(line) - len(line.lstrip(" "))) // 2
        entry = line.split()[0]
        del folders[depth:]
        if entry.endswith("/"):
            folders.append(entry.rstrip("/"))
        else:
            named.add("/".join([*folders, entry]))
    return named


def test_every_module_is_in_the_architecture_document() -> None:
    named = documented_modules((REPO / "docs" / "architecture.md").read_text())
    modules = {_name(p) for p in MODULES if p.name != "__init__.py"}
    assert sorted(modules - named) == []
    assert sorted(
        m for m in named - modules if m.startswith("txvnc/") and m.endswith(".py")
    ) == []


def test_plugin_directory_is_a_namespace() -> None:
    # An __init__.py there would shadow Twisted's own twisted/plugins in a
    # wheel, and twistd would find no plugin but ours.
    assert not (REPO / "twisted" / "plugins" / "__init__.py").exists()
