"""Training presets: the lessons of the issue as defaults, a step count from the dataset size,
and a chunk plan whose warm-up ramps the learning rate (the stock node has no scheduler)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from charpack.character.presets import (
    PRESET_REASONS,
    TrainingSpec,
    plan_chunks,
    steps_for_images,
    train_inputs,
)

DATA = Path(__file__).parents[2] / "orchestrator" / "data" / "object_info"


def test_the_presets_are_the_lessons_of_the_earlier_trainings() -> None:
    spec = TrainingSpec()
    assert (spec.training_dtype, spec.lora_dtype) == ("bf16", "bf16")
    assert spec.learning_rate == 5e-5 and spec.warmup_steps == 200 and spec.rank == 64
    assert (spec.optimizer, spec.loss_function, spec.batch_size) == ("AdamW", "MSE", 1)
    assert spec.gradient_checkpointing is True
    for name in ("training_dtype", "learning_rate", "warmup_steps", "rank", "steps"):
        assert PRESET_REASONS[name], name


@pytest.mark.parametrize(("images", "steps"), [(1, 1500), (15, 1500), (20, 2000), (40, 3000)])
def test_steps_grow_with_the_dataset_between_bounds(images: int, steps: int) -> None:
    assert steps_for_images(images) == steps
    assert TrainingSpec().total_steps(images) == steps
    assert TrainingSpec(steps=12).total_steps(images) == 12


def test_an_empty_dataset_is_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match="add dataset images"):
        steps_for_images(0)


def test_the_warm_up_is_four_chunks_at_rising_rates_then_250_step_chunks() -> None:
    chunks = plan_chunks(TrainingSpec(), 20)
    warm = [c for c in chunks if c.kind == "warmup"]
    assert [c.steps for c in warm] == [50, 50, 50, 50]
    assert [c.learning_rate for c in warm] == pytest.approx([1.25e-5, 2.5e-5, 3.75e-5, 5e-5])
    main = [c for c in chunks if c.kind == "main"]
    assert [c.steps for c in main] == [250] * 7 + [50]
    assert {c.learning_rate for c in main} == {5e-5}
    assert sum(c.steps for c in chunks) == 2000


def test_chunks_are_contiguous_and_each_has_its_own_seed() -> None:
    chunks = plan_chunks(TrainingSpec(seed=7), 20)
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert chunks[0].start_step == 0
    for before, after in zip(chunks, chunks[1:], strict=False):
        assert after.start_step == before.end_step
    assert len({c.seed for c in chunks}) == len(chunks) and chunks[0].seed == 7


def test_a_short_training_shortens_the_warm_up_instead_of_overrunning() -> None:
    chunks = plan_chunks(TrainingSpec(steps=6, warmup_steps=3, chunk_steps=2), 3)
    assert [(c.kind, c.steps) for c in chunks] == [
        ("warmup", 1),
        ("warmup", 1),
        ("warmup", 1),
        ("main", 2),
        ("main", 1),
    ]
    uneven = plan_chunks(TrainingSpec(steps=10, warmup_steps=10, warmup_chunks=4), 3)
    assert [c.steps for c in uneven] == [3, 3, 2, 2]
    none = plan_chunks(TrainingSpec(steps=5, warmup_steps=0, chunk_steps=250), 3)
    assert [(c.kind, c.steps, c.learning_rate) for c in none] == [("main", 5, 5e-5)]


def test_train_inputs_are_the_nodes_scalar_inputs_for_a_chunk() -> None:
    spec = TrainingSpec(rank=4, training_dtype="fp32", lora_dtype="fp32", steps=8)
    chunk = plan_chunks(spec, 3)[1]
    inputs = train_inputs(spec, chunk)
    assert inputs["steps"] == chunk.steps and inputs["learning_rate"] == chunk.learning_rate
    assert inputs["seed"] == chunk.seed and inputs["rank"] == 4
    assert inputs["training_dtype"] == "fp32" and inputs["gradient_checkpointing"] is True
    assert not {"model", "latents", "positive", "existing_lora"} & set(inputs)


@pytest.mark.parametrize("bad", [{"rank": 0}, {"rank": 256}, {"learning_rate": 2.0}, {"steps": 0}])
def test_out_of_range_settings_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="outside"):
        TrainingSpec(**bad)  # type: ignore[arg-type]


def test_the_spec_serialises_without_its_reasons() -> None:
    data = TrainingSpec(steps=8).to_json()
    assert data["steps"] == 8 and data["rank"] == 64 and "reasons" not in data


def test_train_inputs_fit_the_recorded_train_lora_node() -> None:
    """Every input the node requires is set by train_inputs or by the graph (four wired ones),
    and each value is one the recorded node accepts (0.3.75's /object_info)."""
    info = json.loads((DATA / "core-0.3.75.json").read_text())["TrainLoraNode"]["input"]
    required = info["required"]
    spec = TrainingSpec()
    inputs = train_inputs(spec, plan_chunks(spec, 20)[0])
    assert set(inputs) | {"model", "latents", "positive", "existing_lora"} == set(required)
    for name, value in inputs.items():
        kind, options = required[name][0], required[name][1]
        if kind == "COMBO":
            assert value in options["options"], name
        elif kind in ("INT", "FLOAT"):
            assert options.get("min", value) <= value <= options.get("max", value), name
