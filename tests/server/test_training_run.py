"""A character LoRA trained on the CPU test server, chunk by chunk, by the training driver.

The real ``TrainLoraNode`` trains the test world's tiny real SDXL-shaped checkpoint
(``tiny-sdxl-train.safetensors``) on a three-picture dataset; the driver uploads the dataset,
posts each chunk continuing from the previous chunk's file, reports progress and downloads the
last file, checked against what the save node reported. A second training of the same dataset
writes a new version beside the first.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image, ImageDraw

from charpack.character.chunks import SAVE, TRAIN, TrainingEvent, TrainingResult
from charpack.character.presets import TrainingSpec
from charpack.character.state import load_state
from charpack.character.training import train_character
from charpack.comfy.auth import ServerConfig
from charpack.errors import PromptRejected
from tests.comfy.server import ComfyServer

pytestmark = pytest.mark.server

CHECKPOINT = "tiny-sdxl-train.safetensors"
TRIGGER = "vkrtx_cp"
# Three short chunks: two warm-up chunks of 2 steps, then 4 steps. Rank 4 keeps each chunk
# at seconds on the CPU server.
QUICK = TrainingSpec(
    steps=8, warmup_steps=4, warmup_chunks=2, chunk_steps=4, rank=4, seed=3,
    training_dtype="fp32", lora_dtype="fp32",
)  # fmt: skip


def write_character(root: Path, *, name: str = "Ava", variant: int = 0, pictures: int = 3) -> Path:
    """A character folder with ``character.yaml`` and ``dataset/v1`` (128-px pictures with
    captions, and a contact sheet that must not be trained on). ``variant`` changes every
    picture, so the server's cache never hides work of another test."""
    dataset = root / "dataset" / "v1"
    dataset.mkdir(parents=True)
    (root / "character.yaml").write_text(
        "character:\n"
        f"  name: {name}\n"
        f"  checkpoint: {CHECKPOINT}\n"
        f"  trigger: {TRIGGER}\n"
        "  face_references: [references/front.png]\n"
        "scenes:\n"
        "  - name: cafe\n"
        "    prompt: at a cafe table\n",
        encoding="utf-8",
    )
    scenes = ("at a cafe table", "on a city street", "in a studio, soft light", "by the sea")
    for i in range(pictures):
        picture = Image.new("RGB", (128, 128), (40 + 50 * i, 90 + variant % 150, 140))
        draw = ImageDraw.Draw(picture)
        draw.ellipse((32 + 4 * i, 24, 96, 100 - variant % 20), fill=(220, 180, 150))
        picture.save(dataset / f"{i:03d}.png")
        (dataset / f"{i:03d}.txt").write_text(f"{TRIGGER}, {scenes[i % len(scenes)]}")
    Image.new("RGB", (96, 64), (0, 0, 0)).save(dataset / "contact.jpg")
    return root


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file (tensor names and ``__metadata__``)."""
    with path.open("rb") as fh:
        (size,) = struct.unpack("<Q", fh.read(8))
        header: dict[str, Any] = json.loads(fh.read(size))
    return header


def history(server_url: str) -> dict[str, Any]:
    body: dict[str, Any] = requests.get(f"{server_url}/history", timeout=30).json()
    return body


def chunk_prompts(server_url: str, prompt_ids: list[str]) -> list[dict[str, Any]]:
    """The graphs the server ran under ``prompt_ids`` (history keeps each prompt's graph)."""
    runs = history(server_url)
    return [runs[p]["prompt"][2] for p in prompt_ids]


@dataclass
class Trained:
    char_dir: Path
    result: TrainingResult
    events: list[TrainingEvent]
    server: ComfyServer


@pytest.fixture(scope="module")
def trained(
    comfy_server: ComfyServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Trained]:
    char_dir = write_character(tmp_path_factory.mktemp("training-run") / "ava", variant=1)
    events: list[TrainingEvent] = []
    result = train_character(
        char_dir,
        ServerConfig.from_url(comfy_server.url, env={}),
        spec=QUICK,
        on_event=events.append,
    )
    yield Trained(char_dir, result, events, comfy_server)


def test_the_trained_lora_lands_in_the_character_folder_as_the_server_saved_it(
    trained: Trained,
) -> None:
    result = trained.result
    assert result.version == 1 and result.steps == 8
    assert result.lora_path == trained.char_dir.resolve() / "loras" / "ava-v1.safetensors"
    assert file_sha256(result.lora_path) == result.sha256
    assert result.lora_path.stat().st_size == result.bytes
    sha_line = (trained.char_dir / "loras" / "ava-v1.safetensors.sha256").read_text()
    assert sha_line == f"{result.sha256}  ava-v1.safetensors\n"
    on_server = trained.server.models_dir / "loras" / "charpack" / "ava"
    on_server /= "ava-v1_8_steps_lora.safetensors"
    assert file_sha256(on_server) == result.sha256  # the file the pods' LoRA loader lists
    assert result.server_file == "charpack/ava/ava-v1_8_steps_lora.safetensors"
    header = safetensors_header(result.lora_path)
    meta = header.pop("__metadata__")
    assert meta["charpack_character"] == "ava" and meta["charpack_version"] == "1"
    assert any(".lora_up" in k for k in header)
    assert result.resumed_from is None and not result.reattached


def test_each_chunk_continues_from_the_previous_chunks_file_at_its_own_rate(
    trained: Trained,
) -> None:
    state = load_state(trained.result.version_dir)
    assert state is not None and state.status == "finished"
    assert [(c.start_step, c.steps) for c in state.chunks] == [(0, 2), (2, 2), (4, 4)]
    ids = [c.prompt_id or "" for c in state.chunks]
    graphs = chunk_prompts(trained.server.url, ids)
    # Each chunk continues from the file the previous one saved. The shared server may hold
    # an earlier test's files under the same names, so a name can carry a -N suffix: the node
    # never overwrites.
    saved = [c.lora_name for c in state.chunks]
    assert [g[TRAIN]["inputs"]["existing_lora"] for g in graphs] == ["[None]", *saved[:-1]]
    for chunk, name in zip(state.chunks, saved, strict=True):
        assert re.fullmatch(
            rf"charpack/ava/ava-v1_{chunk.end_step}_steps_lora(-[0-9]+)?\.safetensors", name or ""
        ), name
    assert [g[TRAIN]["inputs"]["learning_rate"] for g in graphs] == [2.5e-5, 5e-5, 5e-5]
    assert len({g[TRAIN]["inputs"]["seed"] for g in graphs}) == 3
    assert all(c.attempt == 1 for c in state.chunks)  # each posted once
    assert [g[SAVE]["inputs"]["name"] for g in graphs] == ["charpack/ava/ava-v1"] * 3


def test_only_captioned_pictures_are_uploaded_into_the_training_folder(trained: Trained) -> None:
    state = load_state(trained.result.version_dir)
    assert state is not None
    assert state.upload_folder.startswith("charpack_train/ava-v1-")
    uploaded = trained.server.input_dir / state.upload_folder
    names = sorted(p.name for p in uploaded.iterdir())
    assert names == ["000.png", "000.txt", "001.png", "001.txt", "002.png", "002.txt"]
    assert (uploaded / "001.txt").read_text() == f"{TRIGGER}, on a city street"


def test_progress_reports_every_step_with_total_eta_and_the_losses_are_kept(
    trained: Trained,
) -> None:
    progress = [e for e in trained.events if e.kind == "progress"]
    assert [e.step for e in progress] == list(range(1, 9))
    assert {e.total for e in progress} == {8}
    assert any(e.eta_s is not None and e.eta_s >= 0 for e in progress)
    assert progress[-1].loss is not None  # the mean loss of the last finished chunk
    kinds = [e.kind for e in trained.events]
    assert kinds[0] == "started" and kinds[-1] == "finished"
    assert kinds.count("posted") == kinds.count("chunk_done") == 3
    losses = trained.result.losses
    assert len(losses) == 8 and all(math.isfinite(v) for v in losses)
    saved = json.loads((trained.result.version_dir / "loss.json").read_text())
    assert [v for c in saved["chunks"] for v in c["losses"]] == list(losses)
    logged = (trained.result.version_dir / "log").read_text().splitlines()
    assert [json.loads(line)["event"] for line in logged] == kinds
    plot = trained.result.loss_plot
    assert plot == trained.result.version_dir / "loss.png"
    beside = trained.char_dir / "loras" / "ava-v1.loss.png"
    assert beside.read_bytes() == plot.read_bytes()
    with Image.open(plot) as picture:
        assert picture.format == "PNG" and picture.size == (960, 480)


def test_a_second_training_of_the_same_dataset_is_a_new_version_beside_the_first(
    trained: Trained,
) -> None:
    first = trained.result.lora_path.read_bytes()
    again = train_character(
        trained.char_dir,
        ServerConfig.from_url(trained.server.url, env={}),
        spec=TrainingSpec(steps=2, warmup_steps=0, chunk_steps=2, rank=4, seed=9,
                          training_dtype="fp32", lora_dtype="fp32"),
    )  # fmt: skip
    assert again.version == 2 and again.steps == 2
    assert again.lora_path.name == "ava-v2.safetensors"
    assert file_sha256(again.lora_path) == again.sha256 != trained.result.sha256
    assert trained.result.lora_path.read_bytes() == first  # v1 untouched
    assert load_state(trained.result.version_dir).status == "finished"  # type: ignore[union-attr]


def test_a_refused_chunk_raises_with_the_servers_checkpoints_and_stays_unposted(
    comfy_server: ComfyServer, tmp_path: Path
) -> None:
    char_dir = write_character(tmp_path / "ava", variant=2)
    with pytest.raises(PromptRejected) as refused:
        train_character(
            char_dir,
            ServerConfig.from_url(comfy_server.url, env={}),
            spec=QUICK,
            checkpoint="not-on-the-server.safetensors",
        )
    assert CHECKPOINT in str(refused.value)  # the message lists what the server has
    state = load_state(char_dir / "training" / "v1")
    assert state is not None and state.chunks[0].status == "planned"
