"""Registering a trained LoRA in character.yaml: only the lora block changes, the pack stays
valid, the original is kept, and a registration that would break the pack changes nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from charpack.character.identity_test import SHOTS, identity_pack
from charpack.character.register import register_lora
from charpack.errors import CharacterError
from charpack.pack.packfile import load_pack

ROOT = Path(__file__).resolve().parents[2]
SHA = "0123456789abcdef" * 4


@pytest.fixture
def character(tmp_path: Path) -> Path:
    """A character folder: the example identity test as character.yaml, with its faces."""
    shutil.copytree(ROOT / "examples" / "faces", tmp_path / "faces")
    shutil.copy(ROOT / "examples" / "identity-test.yaml", tmp_path / "character.yaml")
    return tmp_path


def test_registering_replaces_only_the_lora_block(character: Path) -> None:
    pack_file = character / "character.yaml"
    before = pack_file.read_text()
    reg = register_lora(
        pack_file, lora_name="charpack/ava/ava-v1_1500_steps_lora.safetensors", sha256=SHA,
        version=1, backup_dir=character / "training" / "v1",
    )  # fmt: skip
    after = pack_file.read_text()
    pack = load_pack(pack_file)
    assert pack.raw["character"]["lora"] == {
        "file": "charpack/ava/ava-v1_1500_steps_lora.safetensors", "strength": 0.7, "sha256": SHA,
    }  # fmt: skip
    # Every line but the old lora block's three is still there, comments included.
    old_block = {"  lora:", "    file: character_lora.safetensors", "    strength: 0.7"}
    kept = [line for line in before.splitlines() if line not in old_block]
    assert all(line in after.splitlines() for line in kept)
    assert reg.backup.read_text() == before


def test_a_character_without_lora_gets_one_added(character: Path) -> None:
    pack_file = character / "character.yaml"
    text = pack_file.read_text().replace(
        "  lora:\n    file: character_lora.safetensors\n    strength: 0.7\n", ""
    )
    pack_file.write_text(text)
    assert "lora" not in load_pack(pack_file).raw["character"]
    register_lora(
        pack_file, lora_name="ava-v2_250_steps_lora.safetensors", sha256=SHA, version=2,
        backup_dir=character / "training" / "v2",
    )  # fmt: skip
    raw = load_pack(pack_file).raw
    assert raw["character"]["lora"]["file"] == "ava-v2_250_steps_lora.safetensors"
    assert raw["identity"]["threshold"] == 0.45  # the block after character is untouched


def test_a_registration_that_breaks_the_pack_changes_nothing(character: Path) -> None:
    pack_file = character / "character.yaml"
    (character / "faces" / "ava_front.png").unlink()  # the pack no longer loads as it is
    before = pack_file.read_text()
    with pytest.raises(CharacterError, match="left unchanged"):
        register_lora(
            pack_file, lora_name="x_1_steps_lora.safetensors", sha256=SHA, version=1,
            backup_dir=character / "training" / "v1",
        )  # fmt: skip
    assert pack_file.read_text() == before
    assert sorted(p.name for p in character.iterdir()) == ["character.yaml", "faces", "training"]


def test_the_identity_shots_are_the_examples_identity_test() -> None:
    example = load_pack(ROOT / "examples" / "identity-test.yaml")
    assert [(s.name, s.prompt, s.seeds) for s in example.scenes] == [
        (s.name, s.prompt, (s.seed,)) for s in SHOTS
    ]


def test_identity_pack_is_a_valid_pack_beside_its_folder(character: Path) -> None:
    raw = load_pack(character / "character.yaml").raw
    target = character / "identity" / "v1" / "before.yaml"
    identity_pack(raw, name="ava-identity-v1-before", source_dir=character, target=target,
                  lora=None)  # fmt: skip
    pack = load_pack(target)
    assert pack.face_references == tuple(
        (character / "faces" / n).resolve() for n in ("ava_front.png", "ava_three_quarter.png")
    )
    assert "lora" not in pack.raw["character"]
    assert pack.identity.max_attempts == 1
    assert [s.name for s in pack.scenes] == [s.name for s in SHOTS]
