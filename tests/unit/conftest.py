"""Unit tier: our own code and dependencies only (no ComfyUI, no servers)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))  # shared case tables (pack_cases.py)

from pack_cases import VALID  # noqa: E402  (found through the line above)


@pytest.fixture
def pack_file(tmp_path: Path) -> Path:
    """A valid pack file (``pack_cases.VALID``) with its face reference beside it."""
    (tmp_path / "faces").mkdir()
    Image.new("RGB", (48, 48), (205, 160, 130)).save(tmp_path / "faces" / "front.png")
    path = tmp_path / "pack.yaml"
    path.write_text(yaml.safe_dump(VALID))
    return path
