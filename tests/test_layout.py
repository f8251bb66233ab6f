"""The code layout's rules hold: packaged, one-way, and every package front door is a map that imports nothing."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PACKAGE_DIRS: dict[str, str] = PYPROJECT["tool"]["setuptools"]["package-dir"]  # package -> folder
APPLICATIONS = [name for name in PACKAGE_DIRS if name != "eupe"]


def source_packages() -> dict[str, Path]:
    """Every package on disk (a folder with ``__init__.py``) under its installed dotted name."""
    found = {}
    for package, folder in PACKAGE_DIRS.items():
        for init in sorted((ROOT / folder).rglob("__init__.py")):
            parts = init.parent.relative_to(ROOT / folder).parts
            found[".".join((package, *parts))] = init
    return found


def test_every_package_is_in_the_wheel():
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    missing = sorted(set(source_packages()) - listed)
    assert not missing, f"add to pyproject [tool.setuptools] packages, or a wheel install lacks them: {missing}"


def test_package_front_doors_are_maps_that_import_nothing():
    """One convention: ``__init__.py`` holds a docstring naming its modules (and eupe's version), no imports,
    no lazy ``__getattr__``, so every name is imported from the module that defines it."""
    for name, init in source_packages().items():
        tree = ast.parse(init.read_text())
        assert ast.get_docstring(tree), f"{init}: no docstring"
        others = [node for node in tree.body[1:]
                  if not (isinstance(node, ast.Assign) and [t.id for t in node.targets] == ["__version__"])]
        assert not others, f"{init}: a package front door holds only its docstring (line {others[0].lineno})"


def imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module)
        elif isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
    return modules


def test_the_library_imports_no_application():
    for path in sorted((ROOT / "eupe").rglob("*.py")):
        if any(p.is_symlink() for p in (path, *path.parents)):
            continue  # a worktree's link to an application folder
        bad = {m for m in imported_modules(path) for app in APPLICATIONS if m == app or m.startswith(app + ".")}
        assert not bad, f"{path.relative_to(ROOT)} imports the application(s) {sorted(bad)}"


def test_the_checker_sees_a_violation(tmp_path):
    sample = tmp_path / "x.py"
    sample.write_text("from eupe.cache_tools.commands import extract\n")
    assert "eupe.cache_tools.commands" in imported_modules(sample)
