"""The package layout stays readable: the import package's top holds at most 8 modules beside
its sub-packages, every sub-package opens with what it owns, and no production module passes
400 lines (past that, split it by domain — style.md)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "orchestrator"  # installed as charpack
PRODUCTION = [PACKAGE, REPO / "custom_nodes" / "charpack_nodes", REPO / "runpod"]
MAX_LINES = 400


def test_the_package_top_holds_few_modules_beside_its_sub_packages() -> None:
    modules = sorted(p.name for p in PACKAGE.glob("*.py"))
    subpackages = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())
    assert len(modules) <= 8, modules
    assert {"pack", "comfy", "run", "folder", "check", "pod", "cli"} <= set(subpackages)


def test_no_production_module_passes_400_lines() -> None:
    long = {
        str(p.relative_to(REPO)): n
        for root in PRODUCTION
        for p in root.rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}


def test_every_module_opens_with_what_it_owns() -> None:
    missing = [
        str(p.relative_to(REPO))
        for p in PACKAGE.rglob("*.py")
        if not ast.get_docstring(ast.parse(p.read_text()))
    ]
    assert missing == []
