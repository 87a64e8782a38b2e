"""Packaging: the node pack's Registry manifest is complete and versioned with the project."""

from __future__ import annotations

import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]


def load(path: Path) -> dict:  # type: ignore[type-arg]
    return tomllib.loads(path.read_text(encoding="utf-8"))


def test_registry_manifest_has_the_required_fields_and_the_project_version() -> None:
    root = load(REPO / "pyproject.toml")
    pack = load(REPO / "custom_nodes" / "charpack_nodes" / "pyproject.toml")
    assert pack["project"]["version"] == root["project"]["version"]
    assert pack["project"]["name"] and "comfyui" not in pack["project"]["name"].lower()
    assert pack["project"]["urls"]["Repository"].startswith("https://")
    comfy = pack["tool"]["comfy"]
    assert comfy["PublisherId"] and comfy["DisplayName"]
    assert comfy["requires-comfyui"] == ">=0.3.75"


def test_readme_names_exactly_the_two_setup_commands() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "    pip install -e '.[dev]'\n    pytest\n" in readme
    assert "pip install -e '.[dev]' || exit 1\npytest\n" in (REPO / ".ci" / "run").read_text()
