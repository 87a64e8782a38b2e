"""Hostile and oversized pack files: each is refused fast with one clear line per problem (the
file, the place, the fix), and what is legitimate near each limit still loads."""

from __future__ import annotations

import os
import re
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest
import yaml
from pack_cases import VALID, mutate
from PIL import Image

from charpack.errors import PackError
from charpack.pack import packyaml
from charpack.pack.jobs import expand
from charpack.pack.packfile import MAX_COUNT, MAX_FACE_REFERENCES, MAX_JOBS, MAX_SCENES, load_pack

HEAD = """\
version: 1
pack: ava-test
character:
  name: Ava
  face_references: [faces/front.png]
"""


@pytest.fixture
def pack_dir(tmp_path: Path) -> Path:
    (tmp_path / "faces").mkdir()
    Image.new("RGB", (48, 48), (205, 160, 130)).save(tmp_path / "faces" / "front.png")
    return tmp_path


def write_text(pack_dir: Path, text: str) -> Path:
    path = pack_dir / "pack.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def write(pack_dir: Path, data: dict[str, Any]) -> Path:
    return write_text(pack_dir, yaml.dump(data, Dumper=yaml.CSafeDumper, sort_keys=False))


def problems_of(path: Path) -> list[str]:
    with pytest.raises(PackError) as info:
        load_pack(path)
    return info.value.problems


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header says width x height: a few dozen bytes on disk, gigabytes decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def alias_bomb(levels: int = 9) -> str:
    """Nine levels of nine aliases: 9**9 (387 million) strings from under 1 KB of YAML."""
    lines = ["lol0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for n in range(1, levels + 1):
        lines.append(f"lol{n}: &l{n} [{', '.join([f'*l{n - 1} '] * 9)}]")
    return "\n".join(lines) + "\n"


# --- the file itself: size, depth, aliases, tags, duplicates -----------------------------------


def test_an_alias_bomb_in_a_text_field_is_refused_before_it_expands(pack_dir: Path) -> None:
    text = (
        "bomb: &bomb\n"
        + "".join(f"  {line}\n" for line in alias_bomb().splitlines())
        + HEAD
        + "  prompt_prefix: *bomb\nscenes: [{name: s, prompt: p, count: 1}]\n"
    )
    path = write_text(pack_dir, text)
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}: line ")
    assert "the file expands to more than 500,000 values or 8 MiB of text" in problem
    assert problem.endswith("— write the values out, or use fewer aliases")


def test_aliases_that_share_settings_still_work(pack_dir: Path) -> None:
    text = HEAD + (
        "base: &base {cfg: 5.0, steps: 12}\n"
        "scenes:\n"
        "  - {name: cafe, prompt: at a cafe, count: 1, overrides: *base}\n"
        "  - name: beach\n"
        "    prompt: on a beach\n"
        "    count: 1\n"
        "    overrides: {<<: *base, steps: 20}\n"  # a merged key may be overridden
    )
    text = text.replace("base: &base", "defaults: &base")
    jobs = expand(load_pack(write_text(pack_dir, text)))
    assert [(j.spec.sampler.cfg, j.spec.sampler.steps) for j in jobs] == [(5.0, 12), (5.0, 20)]


def test_more_aliases_than_the_limit_are_refused(pack_dir: Path) -> None:
    attributes = "".join(f"    a{i}: *hair\n" for i in range(packyaml.MAX_ALIASES + 1))
    text = HEAD + "  prompt_prefix: &hair auburn hair\n  attributes:\n" + attributes
    [problem] = problems_of(write_text(pack_dir, text + "scenes: [{name: s, prompt: p, count: 1}]"))
    assert f"more than {packyaml.MAX_ALIASES} aliases (*name) — write the values out" in problem


DEEP = (
    "nested more than 20 levels deep — a pack file needs at most 6 "
    "(scenes[0].overrides.stages.faceid.weight)"
)


def test_deep_nesting_is_refused_not_a_recursion_error(pack_dir: Path) -> None:
    path = write_text(pack_dir, HEAD + "  attributes: " + "[" * 500 + "]" * 500 + "\n")
    assert problems_of(path) == [f"{path}: line 6, column 33: {DEEP}"]


def test_nesting_deeper_than_libyaml_scans_is_refused_the_same_way(pack_dir: Path) -> None:
    # PyYAML 6.0.4's libyaml stops at 1,000 levels while scanning ahead (where earlier wheels
    # let the event pass refuse at level 21): the message is the same, only the column differs.
    path = write_text(pack_dir, HEAD + "  attributes: " + "[" * 5000 + "]" * 5000 + "\n")
    [problem] = problems_of(path)
    assert re.fullmatch(rf"{re.escape(str(path))}: line 6, column \d+: {re.escape(DEEP)}", problem)


def test_nesting_up_to_the_limit_is_read(pack_dir: Path) -> None:
    # The top, character and attributes mappings, then lists: exactly MAX_DEPTH levels in all.
    deep = "[" * (packyaml.MAX_DEPTH - 3) + "]" * (packyaml.MAX_DEPTH - 3)
    [problem] = problems_of(write_text(pack_dir, HEAD + f"  attributes: {{hair: {deep}}}\n"
                                       "scenes: [{name: s, prompt: p, count: 1}]\n"))  # fmt: skip
    assert problem.endswith(
        "character.attributes.hair: must be text, got [[[...]]] — put the value in quotes"
    )


def test_a_file_over_the_size_limit_is_refused_unread(pack_dir: Path) -> None:
    path = pack_dir / "pack.yaml"
    with path.open("w") as fh:
        fh.write(HEAD)
        fh.write(("# " + "x" * 1021 + "\n") * (packyaml.MAX_FILE_BYTES // 1024 + 1))
    assert problems_of(path) == [
        f"{path}: the pack file is larger than 8 MiB — a pack file holds settings, not pictures; "
        "split it into several packs"
    ]


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("!!python/object/apply:os.system ['echo owned']", "!!python/object/apply:os.system"),
        ("!!binary aGVsbG8=", "!!binary"),
        ("!!set {a, b}", "!!set"),
    ],
)
def test_tags_are_refused(pack_dir: Path, value: str, shown: str) -> None:
    path = write_text(pack_dir, f"pack: {value}\n")
    assert problems_of(path) == [
        f"{path}: line 1, column 7: the tag '{shown}' is not used in pack files — remove it "
        "(quote a value to make it text)"
    ]


def test_a_key_given_twice_is_refused_with_both_lines(pack_dir: Path) -> None:
    text = HEAD + "scenes:\n  - name: cafe\n    prompt: at a cafe\n    count: 2\n    count: 200\n"
    path = write_text(pack_dir, text)
    assert problems_of(path) == [
        f"{path}: line 10, column 5: the key 'count' is given twice (first at line 9) — keep "
        "one of them"
    ]


def test_a_number_with_thousands_of_digits_is_refused(pack_dir: Path) -> None:
    path = write_text(pack_dir, HEAD + "seed: " + "9" * 5000 + "\n")
    assert problems_of(path) == [
        f"{path}: line 6, column 7: this number has too many digits (a seed has at most 20) — "
        "shorten it"
    ]


def test_a_date_like_name_stays_text(pack_dir: Path) -> None:
    data = mutate("pack", "PLACEHOLDER")
    text = yaml.safe_dump(data, sort_keys=False).replace("PLACEHOLDER", "2024-05-01")
    assert load_pack(write_text(pack_dir, text)).name == "2024-05-01"


# --- version -----------------------------------------------------------------------------------


def test_an_unknown_version_is_refused_before_anything_else(pack_dir: Path) -> None:
    data = {**mutate("version", 2), "new_section": {"from": "the future"}}
    path = write(pack_dir, data)
    assert problems_of(path) == [
        f"{path}: version: 2 is not a pack format this charpack reads (it reads version 1) — set "
        "version: 1 (docs/pack-format.md), or upgrade charpack if the file was written for a "
        "newer one"
    ]


def test_version_as_text_is_a_type_error(pack_dir: Path) -> None:
    path = write(pack_dir, mutate("version", "1"))
    assert problems_of(path) == [
        f"{path}: version: must be a whole number, got '1' — write digits without quotes, e.g. 4"
    ]


# --- jobs, scenes and face references ----------------------------------------------------------


def test_seeds_obey_the_same_per_scene_limit_as_count(pack_dir: Path) -> None:
    path = write(pack_dir, mutate("scenes.1.seeds", list(range(MAX_COUNT + 1))))
    assert problems_of(path) == [
        f"{path}: scenes[1].seeds: lists 10,001 seeds; a scene has at most 10,000 jobs — split "
        "it into several scenes"
    ]
    load_pack(write(pack_dir, mutate("scenes.1.seeds", list(range(MAX_COUNT)))))


def test_a_pack_has_at_most_max_jobs(pack_dir: Path) -> None:
    scenes = [{"name": f"s{i:02d}", "prompt": "p", "count": MAX_COUNT} for i in range(20)]
    at_limit = load_pack(write(pack_dir, {**VALID, "scenes": scenes}))
    assert sum(s.count for s in at_limit.scenes) == MAX_JOBS
    scenes.append({"name": "one-more", "prompt": "p", "seeds": [1]})
    path = write(pack_dir, {**VALID, "scenes": scenes})
    assert problems_of(path) == [
        f"{path}: scenes: 200,001 jobs in all; a pack has at most 200,000 — split it into "
        "several packs (each gets its own folder)"
    ]


def test_too_many_scenes_are_refused_before_each_is_checked(pack_dir: Path) -> None:
    scenes = [{"name": f"s{i}", "prompt": "p", "count": 1} for i in range(MAX_SCENES + 1)]
    path = write(pack_dir, {**VALID, "scenes": scenes})
    assert problems_of(path) == [
        f"{path}: scenes: 1,001 scenes; a pack has at most 1,000 — split it into several packs"
    ]


def test_too_many_face_references_are_refused(pack_dir: Path) -> None:
    path = write(
        pack_dir,
        mutate("character.face_references", ["faces/front.png"] * (MAX_FACE_REFERENCES + 1)),
    )
    assert problems_of(path) == [
        f"{path}: character.face_references: 17 pictures; at most {MAX_FACE_REFERENCES} are "
        "used — keep the best few (they are averaged)"
    ]


def test_problems_beyond_the_cap_are_counted_not_listed(pack_dir: Path) -> None:
    path = write(pack_dir, mutate("scenes.1.seeds", [-1 - i for i in range(500)]))
    problems = problems_of(path)
    assert len(problems) == 101
    assert problems[-1] == "… and 400 more problems — fix these first"


# --- pictures ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "path"),
    [
        ("character.face_references", "character.face_references"),
        ("scenes[0].init_image", "scenes.0.init_image"),
        ("scenes[0].pose.image", "scenes.0.pose"),
    ],
)
def test_a_huge_picture_is_refused_from_its_header(pack_dir: Path, field: str, path: str) -> None:
    (pack_dir / "huge.png").write_bytes(png_header(20000, 20000))
    value: Any = "huge.png"
    if path == "character.face_references":
        value, field = ["huge.png"], field + "[0]"
    elif path == "scenes.0.pose":
        value = {"image": "huge.png"}
    pack = write(pack_dir, mutate(path, value))
    assert problems_of(pack) == [
        f"{pack}: {field}: huge.png is 20000x20000 pixels (400.0 megapixels); the limit is 64 "
        "megapixels — scale it down (e.g. to 4096 px on the longer side) and save it again"
    ]


def test_a_picture_at_the_limit_is_accepted(pack_dir: Path) -> None:
    (pack_dir / "big.png").write_bytes(png_header(8000, 8000))
    # The header is accepted; the body of this hand-made file is not a real 8000x8000 image,
    # so only the size check is proven here (verify() reads chunks, not pixels).
    load_pack(write(pack_dir, mutate("scenes.0.init_image", "big.png")))


# --- every problem of a mapping ---------------------------------------------------------------


def test_every_bad_setting_of_one_mapping_is_reported(pack_dir: Path) -> None:
    data = mutate("defaults", {"width": 830, "height": 4096, "cfg": 99, "steps": 0})
    data["defaults"]["stages"] = {"faceid": {"weight": 9, "lora_strength": 2}}
    data["identity"].update(model_pack="buffalo_xl", provider="TPU")
    data["scenes"][0]["pose"] = {"image": "faces/front.png", "strength": 5, "preprocess": "x"}
    fields = [p.split(": ")[1] for p in problems_of(write(pack_dir, data))]
    assert fields == [
        "identity.model_pack",
        "identity.provider",
        "defaults.width",
        "defaults.height",
        "defaults.steps",
        "defaults.cfg",
        "defaults.stages.faceid.weight",
        "defaults.stages.faceid.lora_strength",
        "scenes[0].pose.strength",
        "scenes[0].pose.preprocess",
    ]


def test_values_that_only_fit_together_are_accepted(pack_dir: Path) -> None:
    # start 0.85 alone breaks start < end (end's preset is 0.8); with end 0.95 it is fine.
    pose = {"image": "faces/front.png", "start_percent": 0.85, "end_percent": 0.95}
    jobs = expand(load_pack(write(pack_dir, mutate("scenes.0.pose", pose))))
    assert jobs[0].spec.pose is not None and jobs[0].spec.pose.start_percent == 0.85


# --- what a path names -------------------------------------------------------------------------


def test_a_directory_or_device_is_named_for_what_it_is(pack_dir: Path) -> None:
    data = mutate("character.face_references", ["faces"])
    data["scenes"][0]["init_image"] = "/dev/null"
    path = write(pack_dir, data)
    assert problems_of(path) == [
        f"{path}: character.face_references[0]: faces is a directory — give a picture file; "
        f"paths are relative to {pack_dir}",
        f"{path}: scenes[0].init_image: /dev/null is not a regular file (a device, pipe or "
        f"socket) — give a picture file; paths are relative to {pack_dir}",
    ]


def test_a_pack_path_that_is_a_directory_or_device(pack_dir: Path) -> None:
    with pytest.raises(PackError) as info:
        load_pack(pack_dir)
    assert info.value.problems == [
        f"{pack_dir}: is a directory — give the pack file (YAML) inside it"
    ]
    fifo = pack_dir / "pack.fifo"
    os.mkfifo(fifo)  # opening a FIFO for reading would block until a writer comes
    for device in (Path("/dev/zero"), fifo):
        with pytest.raises(PackError) as info:
            load_pack(device)
        assert info.value.problems == [
            f"{device}: is not a regular file (a device, pipe or socket) — give a pack file (YAML)"
        ]


# --- messages stay short -----------------------------------------------------------------------


def test_a_huge_value_is_cut_in_the_message(pack_dir: Path) -> None:
    path = write(pack_dir, mutate("scenes.0.prompt", ["word " * 200_000]))
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}: scenes[0].prompt: must be text, got ['word word word")
    assert len(problem) < len(str(path)) + 200


def test_a_huge_name_or_key_is_cut_in_the_message(pack_dir: Path) -> None:
    data = mutate("pack", "x" * 100_000)
    data["defaults"]["stages"] = {"k" * 50_000: True}
    problems = problems_of(write(pack_dir, data))
    assert [p.split(": ")[1] for p in problems] == ["pack", "defaults.stages." + "k" * 39 + "…"]
    assert all(len(p) < len(str(pack_dir)) + 300 for p in problems), problems
