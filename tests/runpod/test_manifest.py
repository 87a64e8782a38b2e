"""The shipped runpod/manifest.toml: valid, pinned, safe, within the volume budget."""

from __future__ import annotations

import importlib.util
import re
import sys
from types import ModuleType

import pytest

from .conftest import REPO

KNOWN_SHA256 = {  # /work/shared/reference/models.md §2 (published by several install scripts)
    "face_yolov8m.pt": "e3893a92c5c1907136b6cc75404094db767c1e0cfefe1b43e87dad72af2e4c9f",
    "sam_vit_b_01ec64.pth": "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
    "4x-UltraSharp.pth": "a5812231fc936b42af08a5edba784195495d303d5b3248c24489ef0c4021fe01",
}


@pytest.fixture(scope="module")
def pm() -> ModuleType:
    # Loaded from its file: runpod/ is a folder of pod scripts, not an importable package.
    name = "charpack_runpod_provision_manifest"
    spec = importlib.util.spec_from_file_location(name, REPO / "runpod" / "provision_manifest.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while being created
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def manifest(pm):
    return pm.load_manifest(REPO / "runpod" / "manifest.toml")


def test_comfyui_is_the_version_the_test_server_runs(manifest):
    assert manifest.comfyui_version == "0.3.75"
    assert manifest.comfyui_commit == "f8b981ae9a5676311624bbafa636a1874db79459"


def test_every_node_pack_is_pinned_to_a_full_commit(manifest):
    names = {p.name for p in manifest.node_packs}
    assert names == {
        "ComfyUI_IPAdapter_plus",
        "ComfyUI_InstantID",
        "ComfyUI-Impact-Pack",
        "ComfyUI-Impact-Subpack",
    }
    assert all(re.fullmatch(r"[0-9a-f]{40}", p.commit) for p in manifest.node_packs)


def test_ultralytics_is_pinned_past_the_compromised_releases(manifest):
    (pin,) = [p for p in manifest.pins if p.startswith("ultralytics==")]
    version = tuple(int(x) for x in pin.split("==")[1].split("."))
    assert version >= (8, 3, 47)
    assert pin not in manifest.forbidden
    assert {f"ultralytics==8.3.{n}" for n in (41, 42, 45, 46)} <= set(manifest.forbidden)


def test_onnxruntime_cpu_cannot_shadow_the_gpu_build(manifest):
    assert any(p.startswith("onnxruntime-gpu==") for p in manifest.pins)
    assert "onnxruntime" in manifest.exclude
    assert not any(p.startswith("onnxruntime==") for p in manifest.pins)


def test_models_keep_upstream_names_and_known_hashes(manifest):
    by_file = {m.file: m for m in manifest.models}
    for name, digest in KNOWN_SHA256.items():
        assert by_file[name].sha256 == digest
    # FaceID Plus v2 switches on by the file name; InstantID needs antelopev2 not nested.
    assert "ip-adapter-faceid-plusv2_sdxl.bin" in by_file
    antelope = [m for m in manifest.models if m.folder == "insightface/models/antelopev2"]
    buffalo = [m for m in manifest.models if m.folder == "insightface/models/buffalo_l"]
    assert len(antelope) == 5 and len(buffalo) == 5
    assert all(m.licence for m in manifest.models)


def test_models_fit_a_50_gb_volume_with_room_for_outputs(manifest):
    total = sum(m.budget_bytes for m in manifest.models) / 1e9
    assert 17 < total < 21  # models.md §6: about 17 GB, plus the pose ControlNet (~2.5 GB)
    assert total + manifest.reserve_bytes / 1e9 < 50 - 10  # leaves room for venv and ComfyUI


def test_the_checkpoint_needs_a_civitai_token(manifest, pm):
    (ckpt,) = [m for m in manifest.models if m.folder == "checkpoints"]
    assert ckpt.token_env == "CIVITAI_TOKEN"


def test_every_model_the_example_packs_load_is_provisioned():
    """A pod provisioned from the manifest runs every shipped example pack: each file a loader
    names (pose ControlNet included) has a [models.*] entry at the same path. The character's
    own LoRA is the user's to put on the pod (runpod/README.md step 5), so it is left out."""
    from orchestrator.jobs import expand
    from orchestrator.packfile import load_pack
    from orchestrator.preflight import load_provisioning, model_files

    prov = load_provisioning(REPO / "runpod" / "manifest.toml")
    assert prov is not None
    provisioned = {f"{folder}/{file}" for folder, file in prov.models}
    needed: dict[str, str] = {}
    for pack in sorted((REPO / "examples").glob("*.yaml")):
        loaded = load_pack(pack)
        own_lora = f"loras/{(loaded.raw['character'].get('lora') or {}).get('file')}"
        for job in expand(loaded):
            for node in job.graph.values():
                for folder, _, file in model_files(node["class_type"], node["inputs"]):
                    needed.setdefault(f"{folder}/{file}", f"{pack.name} ({job.scene})")
        needed.pop(own_lora, None)
    assert "controlnet/controlnet-canny-sdxl-1.0.safetensors" in needed  # the pose scene
    missing = {path: where for path, where in needed.items() if path not in provisioned}
    assert not missing, f"no [models.*] entry in runpod/manifest.toml for: {missing}"
