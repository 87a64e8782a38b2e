"""Unit tier: our own code and dependencies only (no ComfyUI, no servers)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # shared case tables (pack_cases.py)
