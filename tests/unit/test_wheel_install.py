"""charpack as a user installs it: ``pip install .`` (not editable, no extras) into a fresh
virtualenv, used from a folder outside the repository.

The import package is ``charpack`` (never ``orchestrator``, a name another PyPI project
installs too), the public API imports, ``charpack validate`` works on a copied example pack, the
pod manifest ships with the wheel, and without the RunPod SDK ``charpack pod`` says how to
install it — also when run from a checkout's root, where ``import runpod`` would otherwise find
the ``runpod/`` recipe folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def run(cmd: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    environ.update(env)
    return subprocess.run(
        cmd, cwd=cwd, env=environ, capture_output=True, text=True, timeout=600
    )  # fmt: skip


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """(the venv's bin folder, a working folder outside the repository)."""
    base = tmp_path_factory.mktemp("wheel")
    venv = base / "venv"
    made = run([sys.executable, "-m", "venv", str(venv)], cwd=base)
    assert made.returncode == 0, made.stderr
    source = base / "source"  # a clean copy: no build/ or egg-info of the checkout's own
    shutil.copytree(
        REPO, source,
        ignore=shutil.ignore_patterns(".git", "*.egg-info", "build", "__pycache__", ".comfy"),
    )  # fmt: skip
    pip = run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(source)], cwd=base)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    work = base / "work"
    shutil.copytree(REPO / "examples", work / "examples")
    yield venv / "bin", work


def test_the_wheel_installs_charpack_and_no_orchestrator_package(
    installed: tuple[Path, Path],
) -> None:
    bin_dir, work = installed
    python = str(bin_dir / "python")
    api = run([python, "-c", "import charpack; print(' '.join(charpack.__all__))"], cwd=work)
    assert api.returncode == 0, api.stderr
    names = api.stdout.split()
    assert {"run_pack", "load_pack", "validate_pack", "preflight", "ComfyClient"} <= set(names)
    assert "CharpackError" in names
    every = run([python, "-c", "import charpack\nfor n in charpack.__all__: getattr(charpack, n)"],
                cwd=work)  # fmt: skip
    assert every.returncode == 0, every.stderr
    site = run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=work
    )
    top = {p.name for p in Path(site.stdout.strip()).iterdir()}
    assert "charpack" in top and "charpack_nodes" in top
    assert "orchestrator" not in top
    gone = run([python, "-c", "import orchestrator"], cwd=work)
    assert gone.returncode != 0 and "No module named 'orchestrator'" in gone.stderr


def test_the_installed_command_validates_a_copied_example_pack(
    installed: tuple[Path, Path],
) -> None:
    bin_dir, work = installed
    done = run([str(bin_dir / "charpack"), "validate", "examples/small-pack.yaml"], cwd=work)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("ok ") and "every workflow fits" in done.stdout
    for command in (["pod", "--help"], ["preflight", "--help"]):
        shown = run([str(bin_dir / "charpack"), *command], cwd=work, COLUMNS="120")
        assert shown.returncode == 0 and "Usage: charpack" in shown.stdout, shown.stderr


def test_the_wheel_ships_the_pod_manifest(installed: tuple[Path, Path]) -> None:
    bin_dir, work = installed
    code = (
        "from charpack.pod.spec import default_manifest_path, load_pod_spec\n"
        "path = default_manifest_path(); spec = load_pod_spec(repo_ref='v0')\n"
        "print(path); print(spec.gpu_type)"
    )
    done = run([str(bin_dir / "python"), "-c", code], cwd=work)
    assert done.returncode == 0, done.stderr
    path, gpu = done.stdout.split("\n")[:2]
    assert "site-packages" in path and path.endswith("manifest.toml") and gpu


@pytest.mark.parametrize("where", ["outside", "checkout root"])
def test_without_the_sdk_charpack_pod_says_how_to_install_it(
    installed: tuple[Path, Path], where: str
) -> None:
    bin_dir, work = installed
    cwd = work if where == "outside" else REPO
    # From the checkout's root, python -m puts the root first on sys.path: runpod/ is there.
    done = run([str(bin_dir / "python"), "-m", "charpack", "pod", "status"], cwd=cwd,
               RUNPOD_API_KEY="x" * 40)  # fmt: skip
    assert done.returncode != 0
    assert "install the extra: pip install 'charpack[pod]'" in done.stdout + done.stderr
    assert "Traceback" not in done.stderr
