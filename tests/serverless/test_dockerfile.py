"""The worker image cannot drift from the pods: serverless/Dockerfile's pins are the manifest's.

No image is built here (no Docker in CI; serverless/README.md): these tests read the Dockerfile and
its scripts and compare them with runpod/manifest.toml — ComfyUI's commit, each node pack's
repository, commit and requirements flag, the Python pins, build-last packages, excluded and
forbidden names — and check that everything is installed into and run by /opt/venv, the
interpreter ComfyUI runs with (worker-comfyui issue #237), with the runpod SDK the tests use.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import shlex
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
FOLDER = REPO / "serverless"
DOCKERFILE = FOLDER / "Dockerfile"
VENV_PYTHON = "/opt/venv/bin/python"


def _provision_manifest() -> ModuleType:
    name = "charpack_test_serverless_provision_manifest"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "runpod" / "provision_manifest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def manifest() -> Any:
    return _provision_manifest().load_manifest(REPO / "runpod" / "manifest.toml")


def instructions() -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return lines


def build_args() -> dict[str, str]:
    args = {}
    for line in instructions():
        if line.startswith("ARG "):
            name, _, value = line[4:].partition("=")
            args[name] = shlex.split(value)[0] if value else ""
    return args


def test_the_image_is_built_on_worker_comfyui_5_8_5_base() -> None:
    (base,) = [line for line in instructions() if line.startswith("FROM ")]
    assert base == "FROM runpod/worker-comfyui:5.8.5-base"


def test_comfyui_is_the_manifests_commit(manifest: Any) -> None:
    args = build_args()
    assert args["COMFYUI_REPO"] == manifest.comfyui_repo
    assert args["COMFYUI_COMMIT"] == manifest.comfyui_commit
    text = DOCKERFILE.read_text()
    assert 'checkout --detach "${COMFYUI_COMMIT}"' in text
    assert 'test "$(git -C /comfyui rev-parse HEAD)" = "${COMFYUI_COMMIT}"' in text


def test_every_node_pack_is_installed_at_the_manifests_commit(manifest: Any) -> None:
    installed = [
        line.split()[2:]
        for line in instructions()
        if line.startswith("RUN charpack-install-node-pack ")
    ]
    expected = [
        [p.name, p.repo, p.commit, "requirements" if p.requirements else "no-requirements"]
        for p in manifest.node_packs
    ]
    assert installed == expected


def test_the_python_pins_are_the_manifests(manifest: Any) -> None:
    args = build_args()
    assert args["PYTHON_PINS"].split() == list(manifest.pins)
    assert args["BUILD_LAST"].split() == list(manifest.build_last)
    assert args["EXCLUDE"].split() == list(manifest.exclude)
    assert args["FORBIDDEN"].split() == list(manifest.forbidden)


def test_the_runpod_sdk_pin_is_the_one_the_worker_tests_run() -> None:
    assert build_args()["RUNPOD_PIN"] == f"runpod=={importlib.metadata.version('runpod')}"


def test_everything_goes_into_and_runs_from_the_interpreter_comfyui_runs_with() -> None:
    """Issue #237: node dependencies in /comfyui/.venv while ComfyUI runs from /opt/venv."""
    scripts = {p.name: p.read_text() for p in (DOCKERFILE, FOLDER / "install-node-pack.sh")}
    for name, text in scripts.items():
        text = re.sub(r"(?m)^\s*#.*$", "", text)  # what runs, not what the comments say
        assert "comfy-node-install" not in text and ".venv" not in text, name
        for call in re.findall(r"(\S+) -m pip install", text):
            assert call == VENV_PYTHON, f"{name}: pip install through {call}"
        assert not re.search(r"(?m)^(?!.*-m pip)\s*(RUN )?(uv )?pip3? install", text), name
    start = (FOLDER / "start.sh").read_text()
    assert f"{VENV_PYTHON} -u /comfyui/main.py --listen 127.0.0.1 --port 8188" in start
    assert f"exec {VENV_PYTHON} -u /opt/charpack/serverless/handler.py" in start
    assert 'CMD ["/opt/charpack/serverless/start.sh"]' in instructions()
    assert any('"/opt/charpack[serverless]"' in line for line in instructions())


def test_models_are_read_from_the_network_volume_in_both_layouts(manifest: Any) -> None:
    paths = yaml.safe_load((FOLDER / "extra_model_paths.yaml").read_text())
    bases = {section["base_path"] for section in paths.values()}
    mount = manifest.serverless["volume_mount"]
    comfy = manifest.layout["comfyui_dir"]
    assert bases == {f"{mount}/{comfy}/models", f"{mount}/models"}
    folders = {m.folder.split("/")[0] for m in manifest.models}
    for section in paths.values():
        listed = {str(v).split("/")[0] for k, v in section.items() if k != "base_path"}
        assert folders <= listed | {"ultralytics"}, folders - listed
    start = (FOLDER / "start.sh").read_text()
    assert f'volume="${{CHARPACK_VOLUME:-{mount}}}"' in start
    assert "COPY serverless/extra_model_paths.yaml /comfyui/extra_model_paths.yaml" in (
        instructions()
    )
