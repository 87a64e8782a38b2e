"""The shipped runpod/manifest.toml: valid, pinned, safe, within the volume budget."""

from __future__ import annotations

import importlib.util
import re
import sys
from types import ModuleType

import pytest

from .conftest import REPO

# The published values (shared reference model-hashes.md §1-§3): sha256, exact bytes and the
# revision the URL pins. face_yolov8m and person_yolov8m-seg: Bingsu/adetailer b0a075f, the one
# revision with known values for both (resolve/main moved past the first upload's hash).
_BUFFALO = "53577c23cb5e1c5fd0f632d6a1353e8e87b44986"
_ANTELOPE = "ba0c3e10f4548361eb9a63265d87ce1140ab5a05"
_K3D68 = ("df5c06b8a0c12e422b2ed8947b8869faa4105387f199c477af038aa01f9a45cc", 143_607_619)
_D106 = ("f001b856447c413801ef5c42091ed0cd516fcd21f2d6b79635b1e733a7109dbf", 5_030_888)
_DET = ("5838f7fe053675b1c7a08b633df49e7af5495cee0493c7dcf6697200b85b5b91", 16_923_827)
_AGE = ("4fde69b1c810857b88c64a335084f1c3fe8f01246c9a191b48c7bb756d6652fb", 1_322_532)
PUBLISHED = {
    "faceid_plusv2_sdxl": ("c6945d82b543700cc3ccbb98d363b837e9c596281607857c74b713a876daf5fb",
                           1_487_555_181, "c36a25fd18f826b122f1c3162a7af961d5861aa3"),
    "faceid_plusv2_sdxl_lora": ("f24b4bb2dad6638a09c00f151cde84991baf374409385bcbab53c1871a30cb7b",
                                371_842_896, "c36a25fd18f826b122f1c3162a7af961d5861aa3"),
    "clip_vit_h": ("6ca9667da1ca9e0b0f75e46bb030f7e011f44f86cbfb8d5a36590fcd7507b030",
                   2_528_373_448, "94e28fff1b6932cada2f95358d7191eca2106001"),
    "instantid_adapter": ("02b3618e36d803784166660520098089a81388e61a93ef8002aa79a5b1c546e1",
                          1_691_134_141, "e017855ddd75ce2f720d0198647d0c686830202a"),
    "instantid_controlnet": ("c8127be9f174101ebdafee9964d856b49b634435cf6daa396d3f593cf0bbbb05",
                             2_502_139_136, "0e9547646001e233e9ab3fde8625bf564edc2431"),
    "pose_controlnet_canny": ("b2e7d3921058a442cc80430d1ec8847f42599c705e2451c95e77cf4dcf8d6c25",
                              2_502_139_136, "eb115a19a10d14909256db740ed109532ab1483c"),
    "buffalo_l_1k3d68": (*_K3D68, _BUFFALO),
    "buffalo_l_2d106det": (*_D106, _BUFFALO),
    "buffalo_l_det_10g": (*_DET, _BUFFALO),
    "buffalo_l_genderage": (*_AGE, _BUFFALO),
    "buffalo_l_w600k_r50": ("4c06341c33c2ca1f86781dab0e829f88ad5b64be9fba56e56bc9ebdefc619e43",
                            174_383_860, _BUFFALO),
    "antelopev2_1k3d68": (*_K3D68, _ANTELOPE),
    "antelopev2_2d106det": (*_D106, _ANTELOPE),
    "antelopev2_genderage": (*_AGE, _ANTELOPE),
    "antelopev2_glintr100": ("4ab1d6435d639628a6f3e5008dd4f929edf4c4124b1a7169e1048f9fef534cdf",
                             260_665_334, _ANTELOPE),
    "antelopev2_scrfd": (*_DET, _ANTELOPE),
    "face_yolov8m": ("f02b8a23e6f12bd2c1b1f6714f66f984c728fa41ed749d033e7d6dea511ef70c",
                     52_026_019, "b0a075fd35454c86bb453a1ca06b29ffee704c20"),
    "person_yolov8m_seg": ("9d881ec50b831f546e37977081b18f4e3bf65664aec163f97a311b0955499795",
                           54_827_683, "b0a075fd35454c86bb453a1ca06b29ffee704c20"),
    "sam_vit_b": ("ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
                  375_042_383, "7790786db131bcdc639f24a915d9f2c331d843ee"),
    "ultrasharp_4x": ("a5812231fc936b42af08a5edba784195495d303d5b3248c24489ef0c4021fe01",
                      66_961_958, "920fe218c211f831b43cb30327f203e2b59f5dab"),
}  # fmt: skip
PINNED_URL = re.compile(r"^https://huggingface\.co/[\w.-]+/[\w.-]+/resolve/([0-9a-f]{40})/\S+$")


def pin_problems(m) -> list[str]:  # type: ignore[no-untyped-def]
    """Why a manifest entry would not provision the same bytes every time (empty: pinned).

    CivitAI entries are the user's to configure (the version comes from `--civitai-version`
    and is verified against CivitAI's API), so they may leave url and sha256 empty."""
    if m.civitai_model is not None and not m.url and not m.sha256:
        return []
    problems = []
    if not PINNED_URL.match(m.url):
        problems.append(f"{m.key}: url {m.url!r} is not pinned to a /resolve/<40-hex>/ revision")
    if not re.fullmatch(r"[0-9a-f]{64}", m.sha256):
        problems.append(f"{m.key}: no sha256")
    if m.size is None:
        problems.append(f"{m.key}: no exact size (approx_size is for the budget only)")
    return problems


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


def test_every_downloadable_entry_is_pinned_and_hashed(manifest):
    problems = [p for m in manifest.models for p in pin_problems(m)]
    assert not problems
    assert "resolve/main" not in (REPO / "runpod" / "manifest.toml").read_text()
    # Only the checkpoint is the user's to choose (a CivitAI version).
    assert [m.key for m in manifest.models if m.civitai_model] == ["biglove_xl"]


def test_every_entry_has_the_published_hash_size_and_revision(manifest):
    by_key = {m.key: m for m in manifest.models}
    assert set(by_key) - {"biglove_xl"} == set(PUBLISHED)
    for key, (digest, size, revision) in PUBLISHED.items():
        m = by_key[key]
        assert (m.sha256, m.size) == (digest, size), key
        match = PINNED_URL.match(m.url)
        assert match and match.group(1) == revision, (key, m.url)


@pytest.mark.parametrize(
    ("url", "sha256", "size", "wrong"),
    [
        ("https://huggingface.co/Bingsu/adetailer/resolve/main/face_yolov8m.pt", "a" * 64, 1,
         "not pinned"),
        ("https://huggingface.co/Bingsu/adetailer/resolve/v1.0/face_yolov8m.pt", "a" * 64, 1,
         "not pinned"),
        ("https://huggingface.co/Bingsu/adetailer/resolve/b0a075fd/face_yolov8m.pt", "a" * 64, 1,
         "not pinned"),
        ("https://huggingface.co/Bingsu/adetailer/resolve/" + "b" * 40 + "/face_yolov8m.pt", "",
         1, "no sha256"),
        ("https://huggingface.co/Bingsu/adetailer/resolve/" + "b" * 40 + "/face_yolov8m.pt",
         "a" * 64, None, "no exact size"),
    ],
)  # fmt: skip
def test_the_pin_check_catches_moving_or_unhashed_entries(pm, url, sha256, size, wrong):
    entry = pm.Model(
        key="face", file="face_yolov8m.pt", folder="ultralytics/bbox", url=url, size=size,
        approx_size=None if size else 52_000_000, sha256=sha256, licence="x", token="",
        pickle_whitelist=True,
    )  # fmt: skip
    (problem,) = pin_problems(entry)
    assert wrong in problem


def test_models_keep_upstream_names(manifest):
    by_file = {m.file: m for m in manifest.models}
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


def test_the_checkpoint_is_a_civitai_choice_that_needs_a_token(manifest, pm):
    (ckpt,) = [m for m in manifest.models if m.folder == "checkpoints"]
    assert ckpt.token_env == "CIVITAI_TOKEN"
    assert ckpt.civitai_model == 897413 and ckpt.civitai_version is None  # the user chooses


def test_the_pod_is_not_pinned_to_a_branch(manifest):
    # The pod runs the client's version (charpack pod up passes it), never a moving branch.
    assert "ref" not in manifest.raw["charpack"]


def test_every_model_the_example_packs_load_is_provisioned():
    """A pod provisioned from the manifest runs every shipped example pack: each file a loader
    names (pose ControlNet included) has a [models.*] entry at the same path. The character's
    own LoRA is the user's to put on the pod (runpod/README.md step 5), so it is left out."""
    from charpack.check.preflight import load_provisioning, model_files
    from charpack.pack.jobs import expand
    from charpack.pack.packfile import load_pack

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


def test_training_folders_match_the_training_driver_and_stay_inside(manifest, pm, tmp_path):
    from charpack.character.state import LORA_FOLDER
    from charpack.character.training import UPLOAD_ROOT

    # The driver names LoRAs and datasets under these folders; the pod must create the same.
    assert manifest.training["lora_folder"] == LORA_FOLDER
    assert manifest.training["dataset_folder"] == UPLOAD_ROOT
    text = (REPO / "runpod" / "manifest.toml").read_text()
    bad = text.replace('lora_folder = "charpack"', 'lora_folder = "../../escape"').replace(
        "reserve_gb = 8\n\n[comfyui]", "reserve_gb = -1\nextra = 1\n\n[comfyui]"
    )
    path = tmp_path / "manifest.toml"
    path.write_text(bad)
    with pytest.raises(pm.PodManifestError) as err:
        pm.load_manifest(path)
    message = str(err.value)
    assert "training.lora_folder: a relative folder under ComfyUI/models/loras/" in message
    assert "training.reserve_gb" in message and "unknown key(s) extra" in message
