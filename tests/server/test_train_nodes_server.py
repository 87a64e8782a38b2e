"""Character training nodes in the real ComfyUI 0.3.75 CPU server: the one-chunk training graph
(dataset uploaded into ``input/charpack_train/<x>/``, the real dataset and training nodes, the
stand-in loader's tiny real SDXL model) completes, ``CharpackSaveTrainedLoRA`` reports the file
and it downloads through ``/view``; a second chunk continues from it; ``CharpackFaceCheck``
counts faces.
"""

from __future__ import annotations

import hashlib
import math
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image

from charpack.comfy.auth import ServerConfig
from charpack.comfy.client import ComfyClient
from charpack_nodes.pipelines import catalog
from tests.comfy.server import ComfyServer
from tests.server.test_nodes_server import AVA_FRONT, NO_FACE, fresh_picture, run

pytestmark = pytest.mark.server

TINY = "tiny-sdxl-train.safetensors"
CAPTIONS = ("zxqvt_cp, linen coat, harbour", "zxqvt_cp, smiling, cafe", "zxqvt_cp, profile")


@pytest.fixture
def client(comfy_server: ComfyServer) -> Any:
    with ComfyClient(config=ServerConfig(url=comfy_server.url)) as c:
        yield c


def upload_dataset(server: ComfyServer, tmp_path: Path, *, size: int = 128) -> str:
    """Three face pictures and same-stem captions into ``input/charpack_train/<fresh>/`` through
    ``/upload/image`` with a subfolder, as the training driver sends them."""
    folder = f"charpack_train/test-{uuid.uuid4().hex[:8]}"
    for index, caption in enumerate(CAPTIONS):
        with Image.open(AVA_FRONT) as picture:
            shade = picture.convert("RGB").resize((size, size)).point(lambda v, i=index: v - 20 * i)
        image = tmp_path / f"img{index}.png"
        shade.save(image)
        text = tmp_path / f"img{index}.txt"
        text.write_text(caption, encoding="utf-8")
        for path in (image, text):
            with path.open("rb") as handle:
                response = requests.post(
                    server.url + "/upload/image",
                    files={"image": (path.name, handle)},
                    data={"type": "input", "subfolder": folder},
                    timeout=30,
                )
            response.raise_for_status()
            assert response.json()["name"] == path.name
    return folder


def chunk_graph(
    folder: str, name: str, *, steps: int = 4, dtype: str = "bf16", existing: str = "[None]",
    seed: int = 0,
) -> dict[str, Any]:  # fmt: skip
    """The training driver's graph of one chunk (ids as the brief fixes them)."""
    train = {
        "model": ["train.ckpt", 0], "latents": ["train.encode", 0],
        "positive": ["train.encode", 1], "batch_size": 1, "grad_accumulation_steps": 1,
        "steps": steps, "learning_rate": 5e-4, "rank": 4, "optimizer": "AdamW",
        "loss_function": "MSE", "seed": seed, "training_dtype": dtype, "lora_dtype": dtype,
        "algorithm": "LoRA", "gradient_checkpointing": True, "existing_lora": existing,
    }  # fmt: skip
    assert set(train) == set(catalog.TRAIN_LORA.explicit)
    return {
        "train.ckpt": {
            "class_type": catalog.CHECKPOINT_LOADER.class_type, "inputs": {"ckpt_name": TINY}},
        "train.data": {
            "class_type": catalog.LOAD_IMAGE_TEXT_DATASET.class_type,
            "inputs": {"folder": folder}},
        "train.encode": {
            "class_type": catalog.MAKE_TRAINING_DATASET.class_type,
            "inputs": {"images": ["train.data", 0], "vae": ["train.ckpt", 2],
                       "clip": ["train.ckpt", 1], "texts": ["train.data", 1]}},
        "train.lora": {"class_type": catalog.TRAIN_LORA.class_type, "inputs": train},
        "train.save": {
            "class_type": catalog.SAVE_TRAINED_LORA.class_type,
            "inputs": {"lora": ["train.lora", 1], "loss": ["train.lora", 2],
                       "steps": ["train.lora", 3], "name": name,
                       "metadata": '{"charpack_character": "ava"}'}},
    }  # fmt: skip


def saved_entry(server: ComfyServer, prompt_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The saver's whole UI output from ``/history`` (sha256 and size included)."""
    history = requests.get(f"{server.url}/history/{prompt_id}", timeout=30).json()
    ui = history[prompt_id]["outputs"]["train.save"]
    (entry,) = ui["charpack_lora"]
    return entry, ui


def test_a_training_chunk_runs_saves_and_downloads_and_the_next_chunk_continues(
    comfy_server: ComfyServer, client: ComfyClient, tmp_path: Path
) -> None:
    folder = upload_dataset(comfy_server, tmp_path)
    name = f"charpack/ava-{uuid.uuid4().hex[:6]}/ava-v1"
    first = run(client, chunk_graph(folder, name, steps=4)).raise_for_status()
    entry, ui = saved_entry(comfy_server, first.prompt_id)
    stem = name.rsplit("/", 1)[1]
    assert entry["lora_name"] == f"{name}_4_steps_lora.safetensors"
    assert entry["filename"] == f"{stem}_4_steps_lora.safetensors"
    assert entry["subfolder"] == "charpack_loras/" + name.rsplit("/", 1)[0]
    assert entry["type"] == "output" and entry["steps"] == 4
    assert len(ui["loss"]) == 4 and all(math.isfinite(v) and v >= 0 for v in ui["loss"])
    assert ui["text"][0].startswith(f"saved {entry['lora_name']} (4 steps, mean loss ")

    # The file downloads through /view (type output) and is the one in models/loras.
    view = requests.get(
        comfy_server.url + "/view",
        params={"filename": entry["filename"], "subfolder": entry["subfolder"], "type": "output"},
        timeout=60,
    )
    view.raise_for_status()
    assert hashlib.sha256(view.content).hexdigest() == entry["sha256"]
    assert len(view.content) == entry["bytes"]
    on_disk = comfy_server.models_dir / "loras" / entry["lora_name"]
    assert on_disk.read_bytes() == view.content
    (ref,) = [r for r in first.outputs if r.key == "charpack_lora"]
    downloaded = client.download(ref, tmp_path / "got.safetensors")
    assert downloaded.sha256 == entry["sha256"]

    # The server lists the new file, and a second chunk continues from it.
    listed = requests.get(comfy_server.url + "/models/loras", timeout=30).json()
    assert entry["lora_name"] in listed
    second = run(
        client, chunk_graph(folder, name, steps=2, existing=entry["lora_name"], seed=1)
    ).raise_for_status()
    more, more_ui = saved_entry(comfy_server, second.prompt_id)
    assert more["lora_name"] == f"{name}_6_steps_lora.safetensors" and more["steps"] == 6
    assert len(more_ui["loss"]) == 2


# fp32 on CPU: TrainLoraNode's autocast warns in the server log only (no warning reaches here).
def test_an_fp32_chunk_completes_too(
    comfy_server: ComfyServer, client: ComfyClient, tmp_path: Path
) -> None:
    folder = upload_dataset(comfy_server, tmp_path)
    name = f"charpack/fp32-{uuid.uuid4().hex[:6]}/fp32-v1"
    result = run(client, chunk_graph(folder, name, steps=4, dtype="fp32")).raise_for_status()
    entry, ui = saved_entry(comfy_server, result.prompt_id)
    assert entry["steps"] == 4 and len(ui["loss"]) == 4


def test_face_check_reports_one_face_in_a_portrait_and_none_in_a_landscape(
    comfy_server: ComfyServer, client: ComfyClient, tmp_path: Path
) -> None:
    counts = {}
    for label, source in (("ava_front.png", AVA_FRONT), ("no_face.png", NO_FACE)):
        image = client.upload_image(fresh_picture(source, tmp_path)).image_value
        graph = {
            "load": {"class_type": catalog.LOAD_IMAGE.class_type, "inputs": {"image": image}},
            "check": {
                "class_type": catalog.FACE_CHECK.class_type,
                "inputs": {"image": ["load", 0], "label": label},
            },
        }
        result = run(client, graph).raise_for_status()
        (entry,) = result.ui["check"]["faces"]
        assert entry["label"] == label
        assert len(entry["boxes"]) == len(entry["det_scores"]) == entry["count"]
        with Image.open(source) as picture:
            assert (entry["width"], entry["height"]) == picture.size
        counts[label] = entry["count"]
    assert counts == {"ava_front.png": 1, "no_face.png": 0}
