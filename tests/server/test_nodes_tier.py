"""Bridge to the nodes tier: run ``tests/nodes`` with the ComfyUI test environment's Python.

Node tests need ComfyUI importable (torch, ``comfy_api``, ``folder_paths``), which the project's
own environment does not have. This test runs them in the cached ComfyUI venv, with the ComfyUI
tree, the torchvision stub and ``custom_nodes/`` on the path, and fails with the inner report.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.comfy.install import REPO, STUBS, ComfyEnv

INNER_TIMEOUT_S = 600


@pytest.mark.nodes
def test_nodes_tier_passes_in_the_comfyui_environment(comfy_env: ComfyEnv) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(
        PYTHONPATH=os.pathsep.join(
            [str(comfy_env.comfy_dir), str(STUBS), str(REPO / "custom_nodes")]
        ),
        CHARPACK_NODES_TIER="1",
        CHARPACK_INSIGHTFACE_ROOT=str(comfy_env.insightface_root),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
    )
    command = [str(comfy_env.python), "-m", "pytest", "tests/nodes", "-q", "-p", "no:cacheprovider"]
    inner = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=INNER_TIMEOUT_S
    )
    report = (inner.stdout + inner.stderr)[-20000:]
    # Exit 5 means nothing was collected: the tier would silently test nothing.
    assert inner.returncode == 0, f"nodes tier failed (exit {inner.returncode}):\n{report}"
