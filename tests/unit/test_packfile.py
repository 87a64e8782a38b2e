"""Pack files: a valid pack loads into jobs; each broken pack gets its exact, actionable message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pack_cases import DELETE, VALID, mutate
from PIL import Image

from charpack.errors import PackError
from charpack.pack.jobs import expand
from charpack.pack.packfile import load_pack

SAMPLERS_HEAD = "euler, euler_cfg_pp, euler_ancestral, euler_ancestral_cfg_pp, heun, heunpp2"


@pytest.fixture
def pack_dir(tmp_path: Path) -> Path:
    (tmp_path / "faces").mkdir()
    Image.new("RGB", (48, 48), (205, 160, 130)).save(tmp_path / "faces" / "front.png")
    (tmp_path / "faces" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    (tmp_path / "notes.txt").write_text("not an image")
    return tmp_path


def write(pack_dir: Path, data: dict[str, Any]) -> Path:
    path = pack_dir / "pack.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


CASES = [
    (
        "missing scenes",
        mutate("scenes", DELETE),
        ["scenes: required field is missing — add it (see examples/small-pack.yaml)"],
    ),
    (
        "missing face references",
        mutate("character.face_references", DELETE),
        [
            "character.face_references: required field is missing — add it "
            "(see examples/small-pack.yaml)"
        ],
    ),
    (
        "empty face references",
        mutate("character.face_references", []),
        ["character.face_references: must not be empty — add at least one entry"],
    ),
    (
        "count is text",
        mutate("scenes.0.count", "four"),
        [
            "scenes[0].count: must be a whole number, got 'four' — write digits without "
            "quotes, e.g. 4"
        ],
    ),
    (
        "cfg is text",
        mutate("defaults.cfg", "high"),
        ["defaults.cfg: must be a number, got 'high' — write digits without quotes, e.g. 0.7"],
    ),
    (
        "unknown stage",
        mutate("defaults.stages", {"sharpen": {"enabled": True}}),
        [
            "defaults.stages.sharpen: unknown stage 'sharpen' — stages are: faceid, instantid, "
            "face_detailer, upscale, pag, detection"
        ],
    ),
    (
        "misspelt stage setting",
        mutate("defaults.stages", {"faceid": {"wieght": 0.8}}),
        [
            "defaults.stages.faceid.wieght: unknown setting — faceid settings are: enabled, "
            "preset, lora_strength, provider, weight, weight_faceidv2, weight_type, "
            "combine_embeds, start_at, end_at, embeds_scaling"
        ],
    ),
    (
        "negative LoRA strength",
        mutate("character.lora.strength", -0.5),
        ["character.lora.strength: must be between 0 and 2, got -0.5 — the preset is 0.7"],
    ),
    (
        "face reference not found",
        mutate("character.face_references", ["faces/nope.png"]),
        [
            "character.face_references[0]: file not found: faces/nope.png — paths are "
            "relative to {dir}"
        ],
    ),
    (
        "unreadable face image",
        mutate("character.face_references", ["faces/corrupt.png"]),
        [
            "character.face_references[0]: cannot read faces/corrupt.png as an image — "
            "re-export it as PNG or JPEG"
        ],
    ),
    (
        "duplicate scene names",
        mutate("scenes.1.name", "cafe"),
        [
            "scenes[1].name: duplicate scene name 'cafe' (also scenes[0]) — give every scene "
            "its own name"
        ],
    ),
    (
        "negative seed",
        mutate("scenes.1.seeds", [-1]),
        [
            "scenes[1].seeds[0]: must be between 0 and 18446744073709551615, got -1 — use a "
            "value in range"
        ],
    ),
    (
        "seed beyond 64 bits",
        mutate("scenes.1.seeds", [2**64]),
        [
            "scenes[1].seeds[0]: must be between 0 and 18446744073709551615, got "
            "18446744073709551616 — use a value in range"
        ],
    ),
    (
        "count and seeds together",
        mutate("scenes.0.seeds", [1]),
        ["scenes[0]: needs exactly one of count or seeds — set count: N or seeds: [..]"],
    ),
    (
        "unknown top-level field",
        {**VALID, "scene": []},
        ["scene: unknown field — remove it or fix its spelling"],
    ),
    (
        "pack name with spaces",
        mutate("pack", "my pack!"),
        [
            "pack: 'my pack!' is not a usable folder name — use letters, digits, '.', '_' or "
            "'-' (up to 64), starting with a letter or digit"
        ],
    ),
    (
        "threshold above 1",
        mutate("identity.threshold", 1.5),
        [
            "identity.threshold: must be between 0 and 1, got 1.5 — it is an ArcFace cosine "
            "similarity; 0.45 is a good start"
        ],
    ),
    (
        "width not a multiple of 8",
        mutate("defaults.width", 830),
        [
            "defaults.width: must be a multiple of 8, got 830 — round it to a multiple of 8 "
            "(the preset size is 832x1216)"
        ],
    ),
    (
        "unknown InstantID mode",
        mutate("defaults.stages", {"instantid": {"mode": "during"}}),
        [
            "defaults.stages.instantid.mode: must be one of detailer, img2img; got 'during' — "
            "use one of the listed values"
        ],
    ),
    (
        "zero count",
        mutate("scenes.0.count", 0),
        ["scenes[0].count: must be between 1 and 10000, got 0 — use a value in range"],
    ),
    (
        "unsupported pose preprocessor",
        mutate("scenes.0.pose", {"image": "faces/front.png", "preprocess": "openpose"}),
        [
            "scenes[0].pose.preprocess: must be one of none, canny; got 'openpose' — use one of "
            "the listed values"
        ],
    ),
    (
        "init image is not an image",
        mutate("scenes.0.init_image", "notes.txt"),
        ["scenes[0].init_image: notes.txt is not an image file — use a PNG, JPEG or WebP file"],
    ),
    (
        "stage value quoted",
        mutate("defaults.stages", {"face_detailer": {"denoise": "0.4"}}),
        [
            "defaults.stages.face_detailer.denoise: must be a number, got '0.4' — write the "
            "value in that form"
        ],
    ),
    (
        "scene override out of range",
        mutate("scenes.0.overrides", {"cfg": 99}),
        ["scenes[0].overrides.cfg: must be between 1 and 30, got 99 — use a value in that range"],
    ),
    (
        "unknown sampler",
        mutate("defaults.sampler", "euler_fast"),
        [
            f"defaults.sampler: must be one of 42 names such as {SAMPLERS_HEAD}; got "
            "'euler_fast' — use one of the listed values"
        ],
    ),
]


@pytest.mark.parametrize(("data", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_broken_pack_gets_exact_message(
    pack_dir: Path, data: dict[str, Any], expected: list[str]
) -> None:
    path = write(pack_dir, data)
    with pytest.raises(PackError) as info:
        load_pack(path)
    want = [f"{path}: {line.format(dir=pack_dir)}" for line in expected]
    assert info.value.problems == want


def test_case_table_is_large_enough() -> None:
    assert len(CASES) >= 15


def test_every_problem_is_reported_at_once(pack_dir: Path) -> None:
    data = mutate("scenes.0.count", 0)
    data["character"]["face_references"] = ["faces/nope.png"]
    data["identity"]["threshold"] = 2.0
    with pytest.raises(PackError) as info:
        load_pack(write(pack_dir, data))
    fields = [p.split(": ")[1] for p in info.value.problems]
    assert fields == ["character.face_references[0]", "identity.threshold", "scenes[0].count"]


def test_yaml_syntax_error_names_line(pack_dir: Path) -> None:
    path = pack_dir / "pack.yaml"
    path.write_text("pack: x\n  scenes: [\n")
    with pytest.raises(PackError) as info:
        load_pack(path)
    assert info.value.problems == [
        f"{path}: not valid YAML at line 2, column 9: mapping values are not allowed in this "
        "context — check indentation and quoting there"
    ]


def test_missing_pack_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    with pytest.raises(PackError, match=r"absent\.yaml: pack file not found"):
        load_pack(path)


def test_valid_pack_expands_into_jobs(pack_dir: Path) -> None:
    pack = load_pack(write(pack_dir, VALID))
    jobs = expand(pack)
    assert [j.key for j in jobs] == ["cafe/001", "cafe/002", "beach/001", "beach/002"]
    assert [j.seed for j in jobs[2:]] == [5, 6]
    assert jobs[0].seed != jobs[1].seed
    # Seeds of count scenes depend on the pack seed and scene name only: stable across runs
    # and unaffected by other scenes.
    again = expand(load_pack(write(pack_dir, mutate("scenes.1.seeds", [7]))))
    assert [j.seed for j in again[:2]] == [j.seed for j in jobs[:2]]
    assert pack.face_references == ((pack_dir / "faces" / "front.png").resolve(),)


def test_defaults_and_overrides_reach_the_job_spec(pack_dir: Path) -> None:
    data = mutate("scenes.0.overrides", {"cfg": 5.0, "stages": {"pag": True}})
    data["defaults"]["stages"]["upscale"] = {"enabled": False}
    jobs = expand(load_pack(write(pack_dir, data)))
    cafe, beach = jobs[0].spec, jobs[2].spec
    assert (cafe.sampler.cfg, cafe.pag.enabled) == (5.0, True)
    assert (beach.sampler.cfg, beach.pag.enabled) == (4.0, False)
    assert not cafe.upscale.enabled and not beach.upscale.enabled
    assert cafe.face_detailer.denoise == 0.4
    assert cafe.character.lora is not None
    assert (cafe.character.lora.strength_model, cafe.character.lora.strength_clip) == (0.7, 0.7)
