"""One training chunk as ComfyUI sees it, and what a training reports.

Owns the names a chunk's graph and its files use (the dataset's upload root under ``input/``,
the save node's UI key, where ``/view`` serves the saved files), :func:`chunk_graph` (the API
graph of one chunk: checkpoint, dataset folder, encoding, ``TrainLoraNode``, charpack's save
node, with stable node ids) and the two records :func:`charpack.character.training.
train_character` hands its caller: :class:`TrainingEvent` and :class:`TrainingResult`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from charpack_nodes.pipelines import catalog

from .presets import Chunk, TrainingSpec, train_inputs

log = logging.getLogger(__name__)


UPLOAD_ROOT = "charpack_train"
SAVE_KEY = "charpack_lora"
NO_LORA = "[None]"
DOWNLOAD_FOLDER = "charpack_loras"  # the save node links each file under output/<this>/
MAX_LORA_BYTES = 4 << 30  # a rank-128 fp32 SDXL LoRA is ~1.6 GB
# Stable node ids of a chunk's graph.
CKPT, DATA, ENCODE, TRAIN, SAVE = (
    "train.ckpt",
    "train.data",
    "train.encode",
    "train.lora",
    "train.save",
)


@dataclass(frozen=True)
class TrainingEvent:
    """What the training is doing, for the progress display (and ``training/v<N>/log``).

    ``kind``: started, uploaded, posted, reattached, progress, chunk_done, server_down,
    server_up, resumed, downloaded, finished. ``step``/``total`` count the whole training;
    ``loss`` is the mean loss of the last finished chunk; ``eta_s`` is estimated from this
    process's step rate.
    """

    kind: str
    message: str
    chunk: int | None = None
    step: int | None = None
    total: int | None = None
    loss: float | None = None
    eta_s: float | None = None


@dataclass(frozen=True)
class TrainingResult:
    """A finished training: where its files are and how it went."""

    version: int
    version_dir: Path
    lora_path: Path
    sha256: str
    bytes: int
    steps: int
    losses: tuple[float, ...]
    # "server file <name>" / "start" when a lost server made it resume; None when it did not.
    resumed_from: str | None
    reattached: bool = False  # it picked up a prompt an earlier process had posted
    # The LoRA's name in the server's models/loras (what the pods' LoraLoader lists).
    server_file: str | None = None
    loss_plot: Path | None = None  # training/v<N>/loss.png (a copy lies beside the LoRA)


def chunk_graph(
    *,
    folder: str,
    checkpoint: str,
    spec: TrainingSpec,
    chunk: Chunk,
    existing_lora: str,
    name: str,
    metadata: dict[str, str],
) -> dict[str, Any]:
    """The API-format graph of one chunk: load the checkpoint and the dataset folder (a
    subfolder of ``input/``), encode it, train ``chunk`` on top of ``existing_lora`` and save
    it as ``models/loras/<name>_<steps>_steps_lora.safetensors``."""
    return {
        CKPT: {
            "class_type": catalog.CHECKPOINT_LOADER.class_type,
            "inputs": {"ckpt_name": checkpoint},
        },
        DATA: {
            "class_type": catalog.LOAD_IMAGE_TEXT_DATASET.class_type,
            "inputs": {"folder": folder},
        },
        ENCODE: {
            "class_type": catalog.MAKE_TRAINING_DATASET.class_type,
            # Keyword names: the catalogue owns the spelling of the loader folder "vae".
            "inputs": dict(images=[DATA, 0], texts=[DATA, 1], vae=[CKPT, 2], clip=[CKPT, 1]),
        },
        TRAIN: {
            "class_type": catalog.TRAIN_LORA.class_type,
            "inputs": {
                "model": [CKPT, 0],
                "latents": [ENCODE, 0],
                "positive": [ENCODE, 1],
                **train_inputs(spec, chunk),
                "existing_lora": existing_lora,
            },
        },
        SAVE: {
            "class_type": catalog.SAVE_TRAINED_LORA.class_type,
            "inputs": {
                "lora": [TRAIN, 1],
                "loss": [TRAIN, 2],
                "steps": [TRAIN, 3],
                "name": name,
                "metadata": json.dumps(metadata, sort_keys=True),
            },
        },
    }
