"""Building the ComfyUI test environment: reused when built, serialised between sessions, and a
failing step explains itself."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.comfy import install
from tests.comfy.install import REPO, ComfyEnv, TestWorldError


@pytest.mark.server
def test_a_built_environment_is_reused_not_rebuilt(comfy_env: ComfyEnv) -> None:
    again = install.ensure_comfy_env()
    assert again.build_seconds is None
    assert again.python == comfy_env.python and again.models == comfy_env.models
    assert not (again.comfy_dir / "extra_model_paths.yaml").exists()
    assert (again.comfy_dir / "main.py").exists() and again.front_end_root.is_dir()


@pytest.mark.server
def test_a_second_session_waits_for_the_lock_then_uses_the_environment(
    comfy_env: ComfyEnv,
) -> None:
    code = (
        "import logging; logging.basicConfig(level=logging.INFO);"
        "from tests.comfy.install import ensure_comfy_env; print(ensure_comfy_env().python)"
    )
    env = {**os.environ, "CHARPACK_TEST_CACHE": str(comfy_env.root.parent)}
    with install._locked(comfy_env.root):
        other = subprocess.Popen(
            [sys.executable, "-c", code], cwd=REPO, env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            waiting = False
            deadline = time.monotonic() + 60
            while not waiting and time.monotonic() < deadline and other.poll() is None:
                line = other.stderr.readline()  # type: ignore[union-attr]
                waiting = "waiting for another test session" in line
            assert waiting and other.poll() is None, "the second session did not wait"
        except BaseException:
            other.kill()
            raise
    out, _ = other.communicate(timeout=120)
    assert other.returncode == 0 and out.strip() == str(comfy_env.python)


def test_a_failing_build_step_names_the_step_and_shows_the_log_tail(tmp_path: Path) -> None:
    command = [sys.executable, "-c", "print('resolver: no matching distribution'); exit(3)"]
    with pytest.raises(TestWorldError) as failure:
        install._run("pip-requirements", command, logs=tmp_path)
    message = str(failure.value)
    assert "'pip-requirements' (exit 3)" in message
    assert "resolver: no matching distribution" in message
    assert str(tmp_path / "pip-requirements.log") in message
