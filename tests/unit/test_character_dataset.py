"""The training dataset: a bootstrap pack the real pack loader accepts, the automatic choice
(identity, shot-type quotas, repeats), the curation file, and dataset/v<N>/ as the training
nodes read it (bucketed images, same-stem captions) with every candidate's verdict recorded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from PIL import Image

from charpack.character.captions import Captioner
from charpack.character.dataset import (
    LIGHTS,
    SHOT_TYPES,
    bootstrap_pack,
    bucket_size,
    choose,
    collect_candidates,
    curate,
    load_curation,
    select,
    shot_of,
    write_dataset,
)
from charpack.errors import CharacterError
from charpack.folder.manifest import Manifest
from charpack.pack.packfile import load_pack
from tests.support.pack_folders import JobSpec, Shot, build

EXAMPLE = Path(__file__).parents[2] / "examples" / "character" / "character.yaml"
CHARACTER = yaml.safe_load(EXAMPLE.read_text())["character"]


def _pack_folder(folder: Path, jobs: dict[str, list[tuple[int, float | None]]]) -> Path:
    """A pack folder with one job per (seed, score); its pack file gives the scene prompts."""
    specs = []
    for scene, shots in jobs.items():
        for i, (seed, score) in enumerate(shots, start=1):
            low = score is None or score < 0.45
            status = "below_threshold" if low else "success"
            specs.append(
                JobSpec(
                    scene,
                    i,
                    [Shot(seed, score, status)],
                    status="below_threshold" if low else "done",
                )
            )
    manifest = build(folder, specs, pack="ava-bootstrap")
    pack_file = folder.parent / f"{folder.name}.yaml"
    scenes = [{"name": s, "prompt": f"{s.replace('-', ' ')}, linen shirt"} for s in jobs]
    pack_file.write_text(yaml.safe_dump({"scenes": scenes}))
    manifest.header["pack"]["file"] = str(pack_file)
    manifest.save()
    return folder


def test_the_bootstrap_pack_loads_with_faceid_instantid_and_no_lora(tmp_path: Path) -> None:
    source = yaml.safe_load(EXAMPLE.read_text())
    source["character"]["lora"] = {"file": "old.safetensors", "strength": 0.7}
    data = bootstrap_pack(source, source_dir=EXAMPLE.parent, per_scene=2)
    path = tmp_path / "bootstrap.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    pack = load_pack(path)
    assert pack.name == "ava-bootstrap" and len(pack.scenes) == 20
    assert "lora" not in data["character"] and data["character"]["trigger"] == "woman"
    names = {s.name for s in pack.scenes}
    assert names == {f"{shot}-{light}" for shot in SHOT_TYPES for light in LIGHTS}
    for scene in pack.scenes:
        assert scene.count == 2 and scene.spec.character.lora is None
        assert scene.spec.faceid.enabled and scene.spec.instantid.enabled
    assert len({s.prompt for s in pack.scenes}) == 20
    assert all(ref.is_file() for ref in pack.face_references)


@pytest.mark.parametrize(
    ("scene", "prompt", "shot"),
    [
        ("close-up-studio", "", "close-up"),
        ("three-quarter-daylight", "", "three-quarter"),
        ("cafe-terrace", "full body, standing at a cafe", "full-body"),
        ("beach", "side profile view at the sea", "profile"),
        ("beach", "sunset at the sea", "beach"),
    ],
)
def test_shot_type_comes_from_the_scene_name_or_prompt(scene: str, prompt: str, shot: str) -> None:
    assert shot_of(scene, prompt) == shot


def test_the_choice_keeps_the_best_on_identity_with_a_quota_per_shot(tmp_path: Path) -> None:
    folder = _pack_folder(
        tmp_path / "bootstrap",
        {
            "close-up-daylight": [(1, 0.80), (2, 0.78), (3, 0.76), (4, 0.30)],
            "full-body-studio": [(5, 0.60)],
            "profile-golden-hour": [(6, 0.55), (7, None)],
        },
    )
    choices = select(collect_candidates([folder]), target=4)
    verdict = {c.candidate.seed: (c.chosen, c.reason) for c in choices}
    # quota: ceil(4 / 3 shot types) = 2 close-ups first; the free slot then goes to the 3rd best
    assert verdict[1] == verdict[2] == verdict[5] == verdict[6] == (True, "chosen")
    assert verdict[3] == (False, "quota")
    assert verdict[4] == (False, "below_threshold") and verdict[7] == (False, "no_score")
    wide = select(collect_candidates([folder]), target=5)  # quota 2, one slot left over
    assert [c.candidate.seed for c in wide if c.chosen] == [1, 2, 3, 5, 6]
    assert "over the close-up quota" in next(c.why for c in wide if c.candidate.seed == 3)


def test_repeats_across_pack_folders_are_chosen_once(tmp_path: Path) -> None:
    jobs = {"close-up-daylight": [(1, 0.8)], "half-body-studio": [(2, 0.7)]}
    first = _pack_folder(tmp_path / "one", jobs)
    second = _pack_folder(tmp_path / "two", jobs)
    choices = select(collect_candidates([first, second]))
    assert sum(c.chosen for c in choices) == 2
    assert [c.reason for c in choices if not c.chosen] == ["duplicate", "duplicate"]


def test_a_curation_file_hand_picks_from_any_pack_folder(tmp_path: Path) -> None:
    folder = _pack_folder(tmp_path / "bootstrap", {"close-up-daylight": [(1, 0.8), (2, 0.3)]})
    other = _pack_folder(tmp_path / "weekend", {"city-walk": [(9, 0.6)]})
    loose = tmp_path / "mine.png"
    Image.new("RGB", (300, 400), (90, 80, 70)).save(loose)
    weak = next(folder.glob("rejected/*/*.png"))
    city = next(other.glob("city-walk/*.png"))
    curation = tmp_path / "curation.yaml"
    curation.write_text(
        yaml.safe_dump(
            {
                "images": [
                    str(weak.relative_to(tmp_path)),
                    {"image": str(city.relative_to(tmp_path))},
                    {"image": "mine.png", "caption": "reading on a sofa, lamp light"},
                ]
            }
        )
    )
    choices = curate(load_curation(curation), collect_candidates([folder]))
    chosen = [c for c in choices if c.chosen]
    assert [c.candidate.image for c in chosen] == [weak, city, loose.resolve()]
    assert "identity 0.300" in chosen[0].why and chosen[1].candidate.scene == "city-walk"
    assert [c.reason for c in choices if not c.chosen] == ["not_picked"]
    dataset = write_dataset(
        choices, tmp_path / "dataset" / "v1", captioner=Captioner("vhtqv woman"), long_side=256
    )
    assert dataset.captions[1] == "vhtqv woman, city walk, linen shirt"
    assert dataset.captions[2] == "vhtqv woman, reading on a sofa, lamp light"


def test_exclusions_leave_the_automatic_choice_otherwise_alone(tmp_path: Path) -> None:
    folder = _pack_folder(tmp_path / "b", {"close-up-daylight": [(1, 0.8), (2, 0.7)]})
    drop = next(folder.glob("close-up-daylight/*_1.png"))
    curation = tmp_path / "curation.yaml"
    curation.write_text(yaml.safe_dump({"exclude": [str(drop)]}))
    choices = choose([folder], curation=curation)
    assert [(c.candidate.seed, c.chosen, c.reason) for c in choices] == [
        (1, False, "excluded"),
        (2, True, "chosen"),
    ]


def test_curation_problems_are_named_together(tmp_path: Path) -> None:
    loose = tmp_path / "loose.png"
    Image.new("RGB", (64, 64)).save(loose)
    bad = tmp_path / "curation.yaml"
    bad.write_text(yaml.safe_dump({"images": ["gone.png", {"image": "loose.png", "caption": 3}]}))
    with pytest.raises(CharacterError) as err:
        load_curation(bad)
    assert len(err.value.problems) == 2 and "gone.png does not exist" in err.value.problems[0]
    bad.write_text(yaml.safe_dump({"pick": []}))
    with pytest.raises(CharacterError, match="'images:'"):
        load_curation(bad)
    bad.write_text(yaml.safe_dump(["loose.png"]))
    with pytest.raises(CharacterError, match="add 'caption:"):
        curate(load_curation(bad), [])


@pytest.mark.parametrize(
    ("size", "bucket"),
    [
        ((832, 1216), (704, 1024)),
        ((1024, 1024), (1024, 1024)),
        ((208, 304), (704, 1024)),
        ((4000, 100), (1024, 64)),
    ],
)
def test_buckets_have_the_long_side_and_sides_in_multiples_of_64(
    size: tuple[int, int], bucket: tuple[int, int]
) -> None:
    assert bucket_size(*size) == bucket


def test_the_dataset_folder_is_what_the_training_nodes_read(tmp_path: Path) -> None:
    folder = _pack_folder(
        tmp_path / "bootstrap",
        {"close-up-daylight": [(1, 0.8), (2, 0.2)], "full-body-studio": [(3, 0.6)]},
    )
    captioner = Captioner.from_character(CHARACTER)
    dest = tmp_path / "ava" / "dataset" / "v1"
    dataset = write_dataset(choose([folder]), dest, captioner=captioner)
    pngs = sorted(dest.glob("*.png"))
    assert [p.name for p in pngs] == ["001-close-up-daylight-1.png", "002-full-body-studio-3.png"]
    for png in pngs:
        with Image.open(png) as img:
            assert img.size == (704, 1024)
        caption = png.with_suffix(".txt").read_text()
        assert caption.startswith("vhtqv woman, ") and "linen shirt" in caption
    record = json.loads(dataset.json.read_text())
    assert [c["chosen"] for c in record["candidates"]] == [True, False, True]
    assert "below the threshold 0.45" in record["candidates"][1]["why"]
    assert record["images"][0]["source"].endswith("close-up-daylight_001_1.png")
    with Image.open(dataset.contact) as sheet:
        assert sheet.format == "JPEG"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["v1"]  # no partial folder left


def test_a_dataset_is_never_overwritten_and_never_empty(tmp_path: Path) -> None:
    folder = _pack_folder(tmp_path / "b", {"close-up-daylight": [(1, 0.8), (2, 0.1)]})
    dest = tmp_path / "dataset" / "v1"
    dest.mkdir(parents=True)
    with pytest.raises(CharacterError, match="never overwritten"):
        write_dataset(choose([folder]), dest, captioner=Captioner("zmrct"))
    weak = [c for c in choose([folder]) if not c.chosen]
    with pytest.raises(CharacterError, match="no image to train on"):
        write_dataset(weak, tmp_path / "dataset" / "v2", captioner=Captioner("zmrct"))
    assert not (tmp_path / "dataset" / "v2").exists()


def test_a_folder_without_manifest_is_refused_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(CharacterError, match="no manifest"):
        collect_candidates([tmp_path])
    assert Manifest.exists(tmp_path) is False
