"""Character training on real parts: ComfyUI's own TrainLoraNode trains the test world's tiny
SDXL-shaped model (loaded by the stand-in checkpoint loader as a real ModelPatcher), and
CharpackSaveTrainedLoRA writes what ComfyUI's own LoRA loader then applies.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from comfy.cli_args import args

args.cpu = True  # before comfy.model_management is first imported: the test torch has no CUDA

import comfy.model_management  # noqa: E402
import comfy.utils  # noqa: E402
import nodes  # noqa: E402
import safetensors  # noqa: E402
import torch  # noqa: E402
from comfy_extras.nodes_dataset import MakeTrainingDataset  # noqa: E402
from comfy_extras.nodes_train import TrainLoraNode  # noqa: E402

from charpack_nodes.nodes_train import CharpackSaveTrainedLoRA  # noqa: E402
from tests.comfy import tinymodels  # noqa: E402
from tests.comfy.standins.core_nodes import CheckpointLoaderSimple  # noqa: E402
from tests.comfy.standins.core_nodes import LoraLoader as StandInLoraLoader  # noqa: E402
from tests.nodes.helpers import ComfyDirs, face_picture, to_tensor  # noqa: E402

TINY = Path(tinymodels.TINY_SDXL).name
CAPTIONS = ["zxqvt_cp, a woman in a linen coat", "zxqvt_cp, smiling at a cafe", "zxqvt_cp, profile"]


@pytest.fixture
def tiny_dirs(comfy_dirs: ComfyDirs, insightface_root: Path) -> ComfyDirs:
    """``comfy_dirs`` with the test world's tiny trainable SDXL checkpoint in it."""
    source = insightface_root.parent / tinymodels.TINY_SDXL
    shutil.copyfile(source, comfy_dirs.models / "checkpoints" / TINY)
    return comfy_dirs


def load_tiny() -> tuple[Any, Any, Any]:
    return CheckpointLoaderSimple().load_checkpoint(TINY)


def dataset(vae: Any, clip: Any, *, size: int = 128) -> tuple[list[Any], list[Any]]:
    """Three captioned pictures through the real MakeTrainingDataset (latents + conditioning)."""
    images = [to_tensor(face_picture(size=size)) * (0.6 + 0.2 * i) for i in range(3)]
    out = MakeTrainingDataset.execute(images=images, vae=[vae], clip=[clip], texts=CAPTIONS)
    return out.result[0], out.result[1]


def train(
    model: Any, latents: list[Any], positive: list[Any], *, steps: int = 3, rank: int = 4,
    dtype: str = "bf16", lr: float = 1e-3, seed: int = 0, existing: str = "[None]",
) -> tuple[Any, dict[str, torch.Tensor], dict[str, list[float]], int]:  # fmt: skip
    """The real TrainLoraNode, every input a list as ComfyUI's executor passes them."""
    values = {
        "model": model, "latents": latents, "positive": positive, "batch_size": 1,
        "steps": steps, "grad_accumulation_steps": 1, "learning_rate": lr, "rank": rank,
        "optimizer": "AdamW", "loss_function": "MSE", "seed": seed, "training_dtype": dtype,
        "lora_dtype": dtype, "algorithm": "LoRA", "gradient_checkpointing": True,
        "existing_lora": existing,
    }  # fmt: skip
    listed = {k: v if k in ("latents", "positive") else [v] for k, v in values.items()}
    return tuple(TrainLoraNode.execute(**listed).result)  # type: ignore[return-value]


def file_weights(dirs: ComfyDirs) -> dict[str, torch.Tensor]:
    path = dirs.models / "checkpoints" / TINY
    return comfy.utils.load_torch_file(str(path), safe_load=True)


def unet_output(patcher: Any) -> torch.Tensor:
    """The U-Net's prediction for one fixed latent, timestep and SDXL conditioning."""
    comfy.model_management.load_models_gpu([patcher], force_full_load=True)
    generator = torch.Generator().manual_seed(5)
    x = torch.randn((1, 4, 16, 16), generator=generator)
    context = torch.randn((1, 77, 2048), generator=generator) * 0.1
    y = torch.randn((1, 2816), generator=generator) * 0.1
    with torch.no_grad():
        return patcher.model.diffusion_model(x, torch.tensor([500.0]), context=context, y=y)


def save(dirs: ComfyDirs, lora: Any, loss: Any, steps: int, name: str, **kw: Any) -> Any:
    return CharpackSaveTrainedLoRA.execute(lora=lora, loss=loss, steps=steps, name=name, **kw).ui


def test_train_lora_node_trains_the_tiny_real_model_with_finite_losses_and_base_unchanged(
    tiny_dirs: ComfyDirs,
) -> None:
    model, clip, vae = load_tiny()
    assert isinstance(model, comfy.model_patcher.ModelPatcher)
    latents, positive = dataset(vae, clip)
    assert [tuple(x["samples"].shape) for x in latents] == [(1, 4, 16, 16)] * 3
    _trained, lora, loss_map, steps = train(model, latents, positive, steps=3)
    assert steps == 3
    assert len(loss_map["loss"]) == 3 and all(math.isfinite(v) for v in loss_map["loss"])
    assert any(k.endswith(".lora_up.weight") for k in lora)
    assert all(k.startswith("diffusion_model.") for k in lora)
    # The base model's own weights are what the file holds: training wrote only the adapter.
    base = model.model.diffusion_model.state_dict()
    for key, value in file_weights(tiny_dirs).items():
        assert torch.equal(base[key.removeprefix(tinymodels.TINY_SDXL_PREFIX)], value), key


def test_bf16_training_gives_finite_losses_and_bf16_weights(tiny_dirs: ComfyDirs) -> None:
    model, clip, vae = load_tiny()
    latents, positive = dataset(vae, clip)
    _m, lora, loss_map, _steps = train(model, latents, positive, steps=2, lr=5e-5)
    assert all(math.isfinite(v) for v in loss_map["loss"])
    assert {v.dtype for v in lora.values()} == {torch.bfloat16}


# TrainLoraNode enters CPU autocast with fp32 too, which torch warns about (training.md §1).
@pytest.mark.filterwarnings("ignore:In CPU autocast, but the target dtype:UserWarning")
def test_fp32_training_gives_finite_losses_and_fp32_weights(tiny_dirs: ComfyDirs) -> None:
    model, clip, vae = load_tiny()
    latents, positive = dataset(vae, clip)
    _m, lora, loss_map, _steps = train(model, latents, positive, steps=2, dtype="fp32")
    assert all(math.isfinite(v) for v in loss_map["loss"])
    assert {v.dtype for v in lora.values()} == {torch.float32}


def test_saved_lora_is_applied_by_comfyui_own_loader_and_changes_the_output(
    tiny_dirs: ComfyDirs,
) -> None:
    model, clip, vae = load_tiny()
    latents, positive = dataset(vae, clip)
    _m, lora, loss_map, steps = train(model, latents, positive, steps=3, lr=5e-3)
    ui = save(tiny_dirs, lora, loss_map, steps, "charpack/ava/ava-v1", metadata='{"c": "ava"}')
    entry = ui["charpack_lora"][0]
    assert entry["lora_name"] == "charpack/ava/ava-v1_3_steps_lora.safetensors"

    fresh, fresh_clip, _vae = load_tiny()
    before = unet_output(fresh)
    loader = nodes.LoraLoaderModelOnly()  # ComfyUI's own class, not the stand-in
    (with_lora,) = loader.load_lora_model_only(fresh, entry["lora_name"], 1.0)
    after = unet_output(with_lora)
    (unchanged,) = loader.load_lora_model_only(fresh, entry["lora_name"], 0.0)
    assert torch.isfinite(after).all()
    assert not torch.allclose(before, after, atol=1e-6), "the LoRA changed nothing"
    assert torch.allclose(before, unet_output(unchanged))
    # The test server's stand-in loaders hand a real model to ComfyUI's own code: same result.
    standin, _ = StandInLoraLoader().load_lora(fresh, fresh_clip, entry["lora_name"], 1.0, 1.0)
    assert torch.allclose(unet_output(standin), after)


def test_existing_lora_continues_from_the_saved_file_and_counts_its_steps(
    tiny_dirs: ComfyDirs,
) -> None:
    model, clip, vae = load_tiny()
    latents, positive = dataset(vae, clip)
    _m, lora, loss_map, steps = train(model, latents, positive, steps=2, lr=5e-3)
    first = save(tiny_dirs, lora, loss_map, steps, "charpack/ava/ava-v1")["charpack_lora"][0]
    saved = comfy.utils.load_torch_file(str(tiny_dirs.models / "loras" / first["lora_name"]))

    _m, more, more_loss, total = train(
        model, latents, positive, steps=1, lr=1e-7, seed=1, existing=first["lora_name"]
    )
    assert total == 3
    assert len(more_loss["loss"]) == 1
    # A fresh LoRA starts with lora_down at zero; a continued one from the saved values.
    downs = [k for k in saved if k.endswith(".lora_down.weight")]
    assert downs and any(saved[k].abs().max() > 0 for k in downs)
    for key in downs:
        assert torch.allclose(more[key].float(), saved[key].float(), atol=1e-4), key
    second = save(tiny_dirs, more, more_loss, total, "charpack/ava/ava-v1")["charpack_lora"][0]
    assert second["lora_name"] == "charpack/ava/ava-v1_3_steps_lora.safetensors"


def small_lora() -> dict[str, torch.Tensor]:
    return {
        "diffusion_model.out.2.lora_up.weight": torch.ones((4, 2)),
        "diffusion_model.out.2.lora_down.weight": torch.ones((2, 4)) / 2,
    }


def test_save_writes_the_file_and_its_download_link_and_never_overwrites(
    comfy_dirs: ComfyDirs,
) -> None:
    loss = {"loss": [0.25, 0.125]}
    ui = save(comfy_dirs, small_lora(), loss, 250, "charpack/ava/ava-v1", metadata='{"a": "b"}')
    entry = ui["charpack_lora"][0]
    assert entry == {
        "lora_name": "charpack/ava/ava-v1_250_steps_lora.safetensors",
        "filename": "ava-v1_250_steps_lora.safetensors",
        "subfolder": "charpack_loras/charpack/ava",
        "type": "output",
        "sha256": entry["sha256"],
        "bytes": entry["bytes"],
        "steps": 250,
    }
    assert ui["loss"] == [0.25, 0.125]
    assert ui["text"] == [
        "saved charpack/ava/ava-v1_250_steps_lora.safetensors (250 steps, mean loss 0.188)"
    ]
    path = comfy_dirs.models / "loras" / entry["lora_name"]
    download = comfy_dirs.output / entry["subfolder"] / entry["filename"]
    assert path.read_bytes() == download.read_bytes()
    assert entry["bytes"] == path.stat().st_size
    assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    with safetensors.safe_open(str(path), framework="pt") as handle:
        assert handle.metadata() == {"a": "b"}
        assert set(handle.keys()) == set(small_lora())
    first_bytes = path.read_bytes()

    other = {k: v * 3 for k, v in small_lora().items()}
    again = save(comfy_dirs, other, loss, 250, "charpack/ava/ava-v1")["charpack_lora"][0]
    assert again["lora_name"] == "charpack/ava/ava-v1_250_steps_lora-2.safetensors"
    assert path.read_bytes() == first_bytes  # the first file is untouched
    # The step count stays where TrainLoraNode's existing_lora reads it.
    assert int(again["lora_name"].split("_steps_")[0].split("_")[-1]) == 250
    third = save(comfy_dirs, other, loss, 250, "charpack/ava/ava-v1")["charpack_lora"][0]
    assert third["filename"] == "ava-v1_250_steps_lora-3.safetensors"
    leftovers = [n for _r, _d, files in os.walk(comfy_dirs.models) for n in files if ".part" in n]
    assert leftovers == []


def test_save_refuses_a_diverged_training_and_writes_nothing(comfy_dirs: ComfyDirs) -> None:
    loss = {"loss": [0.5, 0.4, float("nan"), 0.3]}
    diverged = r"training diverged: loss nan at step 6 \(step 3 of 4 in this run\)"
    with pytest.raises(ValueError, match=diverged) as error:
        save(comfy_dirs, small_lora(), loss, 7, "charpack/ava/ava-v1")
    assert "bf16" in str(error.value) and "learning_rate" in str(error.value)
    with pytest.raises(ValueError, match=r"loss inf at step 1"):
        save(comfy_dirs, small_lora(), {"loss": [float("inf")]}, 1, "charpack/ava/ava-v1")
    assert not (comfy_dirs.models / "loras" / "charpack").exists()
    assert not (comfy_dirs.output / "charpack_loras").exists()


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("/tmp/evil", "absolute path"),
        ("charpack/../../evil", "'..'"),
        ("charpack\\evil", "'\\\\'"),
        ("charpack//ava", "empty folder name"),
        ("charpack/ava/", "empty folder name"),
        ("", "is empty"),
        ("a" * 201, "201 characters"),
        ("charpack/a\x07b", "control"),
        ("charpack/ava_steps_x", "_steps_"),
    ],
)
def test_save_refuses_a_bad_name(comfy_dirs: ComfyDirs, name: str, problem: str) -> None:
    with pytest.raises(ValueError, match="CharpackSaveTrainedLoRA: name") as error:
        save(comfy_dirs, small_lora(), {"loss": [0.1]}, 1, name)
    assert problem.replace("\\\\", "\\") in str(error.value)
    written = [n for _r, _d, files in os.walk(comfy_dirs.output) for n in files]
    assert written == []


def test_save_refuses_metadata_that_is_not_a_string_map(comfy_dirs: ComfyDirs) -> None:
    for bad in ('{"steps": 3}', "[1]", "not json"):
        with pytest.raises(ValueError, match="metadata"):
            save(comfy_dirs, small_lora(), {"loss": [0.1]}, 1, "charpack/x", metadata=bad)


@pytest.mark.parametrize("node_id", ["CharpackSaveTrainedLoRA", "CharpackFaceCheck"])
def test_the_training_nodes_are_registered_and_documented(node_id: str) -> None:
    import asyncio

    import charpack_nodes

    extension = asyncio.run(charpack_nodes.comfy_entrypoint())
    found = {n.GET_SCHEMA().node_id: n for n in asyncio.run(extension.get_node_list())}
    info = found[node_id].GET_NODE_INFO_V1()
    assert info["category"] in ("charpack/training", "charpack/identity")
    assert info["display_name"].endswith("(charpack)")
    assert info["output_node"] is True
    assert len(info["description"]) > 40
    for name, spec in info["input"]["required"].items():
        assert spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"


def test_face_check_counts_one_face_in_a_portrait_and_none_in_a_landscape(
    comfy_dirs: ComfyDirs,
) -> None:
    from PIL import Image

    from charpack_nodes.nodes_train import CharpackFaceCheck

    with Image.open(Path(__file__).parents[1] / "data" / "no_face.png") as picture:
        empty = to_tensor(picture.convert("RGB"))
    portrait = CharpackFaceCheck.execute(image=to_tensor(face_picture(size=512)), label="ava.png")
    (entry,) = portrait.ui["faces"]
    assert entry["label"] == "ava.png" and entry["count"] == 1
    assert (entry["width"], entry["height"]) == (512, 512)
    assert len(entry["boxes"]) == 1 and len(entry["det_scores"]) == 1
    x1, y1, x2, y2 = entry["boxes"][0]
    assert 0 <= x1 < x2 <= 512 and 0 <= y1 < y2 <= 512
    (none,) = CharpackFaceCheck.execute(image=empty, label="empty.png").ui["faces"]
    assert none["count"] == 0 and none["boxes"] == [] and none["label"] == "empty.png"
