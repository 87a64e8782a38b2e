"""The training presets of a character LoRA and the plan that splits a training into chunks.

Owns :class:`TrainingSpec` (every ``TrainLoraNode`` setting charpack chooses, each with the
reason in :data:`PRESET_REASONS`), the step count from the dataset size
(:func:`steps_for_images`) and :func:`plan_chunks`, which turns a spec into the list of
:class:`Chunk` prompts the training driver (:mod:`charpack.character.training`) posts one after
the other. It does not build graphs or talk to a server.

Public API::

    spec = TrainingSpec()                        # the presets; override with keyword arguments
    spec.total_steps(images) -> int              # spec.steps, else steps_for_images(images)
    steps_for_images(images: int) -> int         # clamp(100 * images, 1500, 3000)
    plan_chunks(spec, images: int) -> list[Chunk]
    train_inputs(spec, chunk) -> dict[str, Any]  # TrainLoraNode's inputs but model/latents/
                                                 # positive/existing_lora

Why chunks: the stock ``TrainLoraNode`` has no learning-rate scheduler, so the warm-up is run as
``warmup_chunks`` short prompts at rising fractions of the learning rate (4 × 50 steps at 25, 50,
75 and 100 %), each continuing from the previous chunk's saved file (``existing_lora``); the rest
runs in chunks of ``chunk_steps`` (250) steps, so a lost server costs at most one chunk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

TrainingDtype = Literal["bf16", "fp32"]
Optimizer = Literal["AdamW", "Adam", "SGD", "RMSprop"]
LossFunction = Literal["MSE", "L1", "Huber", "SmoothL1"]
Algorithm = Literal["LoRA", "LoHa", "LoKr", "OFT"]
ChunkKind = Literal["warmup", "main"]

#: Steps per dataset image, and the bounds of the total (training.md §4: 1.5k–3k steps).
STEPS_PER_IMAGE = 100
MIN_STEPS = 1500
MAX_STEPS = 3000

#: Why each preset has its value; docs/character.md quotes these.
PRESET_REASONS: dict[str, str] = {
    "training_dtype": "bf16: fp16 gave NaN losses from step 1 on SDXL; bf16 has fp32's range",
    "lora_dtype": "bf16: the adapter in the same dtype as training, half the memory of fp32",
    "learning_rate": "5e-5: 1e-4 overshot the face; 5e-5 with a warm-up converged",
    "warmup_steps": "200 steps of warm-up keep the first updates of a fresh adapter small",
    "rank": "64: rank 32 learned the body but not the face",
    "optimizer": "AdamW: the node's default and the reference trainers' choice",
    "loss_function": "MSE: the diffusion objective the base model was trained with",
    "batch_size": "1: fits a 24 GB card at 1024 px with gradient checkpointing",
    "gradient_checkpointing": "on: trades compute for memory so 1024 px fits 24 GB",
    "steps": "100 per image, at least 1500 and at most 3000 (training.md §4)",
    "chunk_steps": "250-step chunks: a lost server costs at most one chunk of work",
}


@dataclass(frozen=True)
class TrainingSpec:
    """What charpack trains with; every field is a ``TrainLoraNode`` input or a chunking choice.

    ``steps=None`` takes the step count from the dataset size (:func:`steps_for_images`).
    Field reasons: :data:`PRESET_REASONS`.
    """

    training_dtype: TrainingDtype = "bf16"
    lora_dtype: TrainingDtype = "bf16"
    learning_rate: float = 5e-5
    warmup_steps: int = 200
    warmup_chunks: int = 4
    rank: int = 64
    optimizer: Optimizer = "AdamW"
    loss_function: LossFunction = "MSE"
    algorithm: Algorithm = "LoRA"
    batch_size: int = 1
    grad_accumulation_steps: int = 1
    gradient_checkpointing: bool = True
    steps: int | None = None
    chunk_steps: int = 250
    seed: int = 0
    # Reasons travel with the spec so a JSON dump of it explains itself.
    reasons: dict[str, str] = field(default_factory=lambda: dict(PRESET_REASONS), compare=False)

    def __post_init__(self) -> None:
        _check_range("learning_rate", self.learning_rate, 1e-7, 1.0)
        _check_range("rank", self.rank, 1, 128)
        _check_range("batch_size", self.batch_size, 1, 10000)
        _check_range("grad_accumulation_steps", self.grad_accumulation_steps, 1, 1024)
        _check_range("warmup_steps", self.warmup_steps, 0, 100000)
        _check_range("warmup_chunks", self.warmup_chunks, 1, 100)
        _check_range("chunk_steps", self.chunk_steps, 1, 100000)
        if self.steps is not None:
            _check_range("steps", self.steps, 1, 100000)

    def total_steps(self, images: int) -> int:
        """The steps of the whole training: ``steps`` when set, else from the image count."""
        return self.steps if self.steps is not None else steps_for_images(images)

    def to_json(self) -> dict[str, Any]:
        """The spec as state files and reports record it (reasons left out)."""
        return {
            name: getattr(self, name) for name in self.__dataclass_fields__ if name != "reasons"
        }


@dataclass(frozen=True)
class Chunk:
    """One training prompt: ``steps`` steps at ``learning_rate``, after ``start_step`` steps."""

    index: int  # 0-based position in the plan
    kind: ChunkKind
    start_step: int  # steps trained before this chunk
    steps: int
    learning_rate: float
    seed: int  # differs per chunk so chunks do not replay the same noise

    @property
    def end_step(self) -> int:
        """Steps trained once this chunk is done."""
        return self.start_step + self.steps

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "kind": self.kind,
            "start_step": self.start_step,
            "steps": self.steps,
            "end_step": self.end_step,
            "learning_rate": self.learning_rate,
            "seed": self.seed,
        }


def steps_for_images(images: int) -> int:
    """Total steps for a dataset of ``images`` pictures: ``clamp(100 × images, 1500, 3000)``.

    About 100 passes over each picture; few pictures still get 1500 steps (heavy repeats, as
    3–5 photo guides do), many are capped at 3000 where likeness stops improving.
    """
    if images < 1:
        raise ValueError(f"a training needs at least 1 image, got {images}: add dataset images")
    return max(MIN_STEPS, min(MAX_STEPS, STEPS_PER_IMAGE * images))


def plan_chunks(spec: TrainingSpec, images: int) -> list[Chunk]:
    """The chunks of a training of ``images`` pictures, in order; their steps sum to the total.

    The warm-up (``min(warmup_steps, total)`` steps) is split into ``warmup_chunks`` near-equal
    chunks at ``k / warmup_chunks`` of the learning rate (k = 1…n; fewer chunks when the warm-up
    has fewer steps than chunks); the rest is cut into ``chunk_steps`` chunks at the full rate, the
    last one possibly shorter.
    """
    total = spec.total_steps(images)
    warmup = min(spec.warmup_steps, total)
    sizes: list[tuple[ChunkKind, int, float]] = []
    parts = min(spec.warmup_chunks, warmup)
    for k in range(parts):
        size = warmup // parts + (1 if k < warmup % parts else 0)
        sizes.append(("warmup", size, spec.learning_rate * (k + 1) / parts))
    rest = total - warmup
    while rest > 0:
        size = min(spec.chunk_steps, rest)
        sizes.append(("main", size, spec.learning_rate))
        rest -= size
    chunks: list[Chunk] = []
    start = 0
    for index, (kind, size, rate) in enumerate(sizes):
        chunks.append(Chunk(index, kind, start, size, rate, spec.seed + index))
        start += size
    return chunks


def train_inputs(spec: TrainingSpec, chunk: Chunk) -> dict[str, Any]:
    """``TrainLoraNode``'s scalar inputs for ``chunk`` (the graph adds model, latents,
    positive and existing_lora)."""
    return {
        "batch_size": spec.batch_size,
        "grad_accumulation_steps": spec.grad_accumulation_steps,
        "steps": chunk.steps,
        "learning_rate": chunk.learning_rate,
        "rank": spec.rank,
        "optimizer": spec.optimizer,
        "loss_function": spec.loss_function,
        "seed": chunk.seed,
        "training_dtype": spec.training_dtype,
        "lora_dtype": spec.lora_dtype,
        "algorithm": spec.algorithm,
        "gradient_checkpointing": spec.gradient_checkpointing,
    }


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ValueError(
            f"TrainingSpec.{name} = {value} is outside {low}…{high}: pick a value in it"
        )
