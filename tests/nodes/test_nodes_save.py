"""The pack saver: names unique per prompt (or exactly the name, overwriting, when asked),
metadata and a sidecar naming the prompt, no way out of the output folder, no planted symlink
followed, lossless pixels, encoding that never runs on ComfyUI's execution thread, and an editor
preview that is complete before the node returns."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from comfy_execution.utils import CurrentNodeContext
from PIL import Image

from charpack_nodes.nodes_save import CharpackSavePack, prompt_tag
from charpack_nodes.ops import paths, saving
from charpack_nodes.ops.images import to_uint8
from charpack_nodes.ops.png import encode_png
from tests.nodes.helpers import ComfyDirs, call_node

WORKFLOW = {"nodes": [{"id": 1, "type": "CharpackPipeline"}], "links": []}
PROMPT = {"12": {"class_type": "CharpackPipeline", "inputs": {"seed": 5}}}
PID = "6f1c2d3e-1a2b-4c3d-8e4f-123456789abc"  # the prompt ComfyUI runs (its executing context)


@pytest.fixture(autouse=True)
def temp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """ComfyUI's temp folder (where the previews go), fresh for each test."""
    import folder_paths

    folder = tmp_path / "comfy-temp"
    monkeypatch.setattr(folder_paths, "temp_directory", str(folder))
    return folder


def images(batch: int = 1, height: int = 48, width: int = 40, seed: int = 0) -> torch.Tensor:
    # Values outside 0..1 too: the saver must clip as SaveImage does.
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, height, width, 3, generator=generator) * 1.2 - 0.1


def save(prompt_id: str = PID, **overrides: Any) -> Any:
    inputs: dict[str, Any] = dict(
        images=images(), pack="lookbook", scene="harbour", name="harbour_0001_5", seed=5,
        parameters="photo of ava\nNegative prompt: blurry\nSteps: 30, Seed: 5",
        compress_level=1, score=0.8312,
    )  # fmt: skip
    hidden = {"hidden_prompt": PROMPT, "extra_pnginfo": {"workflow": WORKFLOW}}
    hidden.update({k: overrides.pop(k) for k in list(overrides) if k in hidden})
    inputs.update(overrides)
    with CurrentNodeContext(prompt_id, "20"):
        return call_node(CharpackSavePack, unique_id="20", **hidden, **inputs)


def read_png(path: Path) -> tuple[np.ndarray, dict[str, Any]]:
    with Image.open(path) as picture:
        return np.asarray(picture), dict(picture.info)


def all_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_saves_png_and_sidecar_under_the_name_and_the_prompt_id(
    comfy_dirs: ComfyDirs, fresh_writer: saving.BackgroundWriter
) -> None:
    batch = images()
    out = save(images=batch)
    stem = f"harbour_0001_5.{PID}"
    assert out.ui == {
        "images": [{"filename": f"{stem}.png", "subfolder": "charpack/lookbook/harbour",
                    "type": "temp"}],
        "pack_images": [{"filename": f"{stem}.png", "subfolder": "lookbook/harbour",
                         "type": "output"}],
        "sidecars": [{"filename": f"{stem}.json", "subfolder": "lookbook/harbour",
                      "type": "output"}],
    }  # fmt: skip
    assert fresh_writer.flush(60)
    folder = comfy_dirs.output / "lookbook" / "harbour"
    assert all_files(comfy_dirs.output) == [
        f"lookbook/harbour/{stem}.json",
        f"lookbook/harbour/{stem}.png",
    ]
    data = (folder / f"{stem}.png").read_bytes()
    picture = Image.open(io.BytesIO(data))
    # Lossless, and the same 8-bit pixels core SaveImage would write for this tensor.
    core = np.clip(255.0 * batch[0].numpy(), 0, 255).astype(np.uint8)
    assert np.array_equal(np.asarray(picture), core)
    assert picture.info["parameters"].startswith("photo of ava\nNegative prompt: blurry")
    assert json.loads(picture.info["prompt"]) == PROMPT
    assert json.loads(picture.info["workflow"]) == WORKFLOW
    assert picture.info["seed"] == "5" and picture.info["score"] == "0.831200"
    sidecar = json.loads((folder / f"{stem}.json").read_text())
    assert sidecar == {
        "pack": "lookbook", "scene": "harbour", "name": "harbour_0001_5", "index": 0,
        "file": f"{stem}.png", "prompt_id": PID, "seed": 5, "score": 0.8312,
        "parameters": "photo of ava\nNegative prompt: blurry\nSteps: 30, Seed: 5",
        "compress_level": 1, "width": 40, "height": 48,
        "sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
    }  # fmt: skip


def test_a_batch_gets_numbered_names_and_another_prompt_never_overwrites_them(
    comfy_dirs: ComfyDirs, fresh_writer: saving.BackgroundWriter
) -> None:
    later = str(uuid.uuid4())
    save(images=images(batch=2), name="look", score=None)
    save(later, images=images(batch=2, seed=1), name="look", score=None)
    assert fresh_writer.flush(60)
    assert all_files(comfy_dirs.output) == sorted(
        f"lookbook/harbour/look_0{i}.{pid}.{ext}"
        for pid in (PID, later)
        for i in (0, 1)
        for ext in ("json", "png")
    )
    folder = comfy_dirs.output / "lookbook/harbour"
    first, _info = read_png(folder / f"look_01.{PID}.png")
    assert np.array_equal(first, to_uint8(images(batch=2)[1]))  # the earlier prompt's, kept
    second, _info = read_png(folder / f"look_01.{later}.png")
    assert np.array_equal(second, to_uint8(images(batch=2, seed=1)[1]))
    sidecar = json.loads((folder / f"look_01.{later}.json").read_text())
    assert sidecar["index"] == 1 and sidecar["score"] is None and sidecar["prompt_id"] == later


def test_the_saver_is_never_a_cache_hit_and_a_strange_prompt_id_never_becomes_a_path() -> None:
    with CurrentNodeContext(PID, "20"):
        first = CharpackSavePack.fingerprint_inputs(name="x")
    with CurrentNodeContext(str(uuid.uuid4()), "20"):
        second = CharpackSavePack.fingerprint_inputs(name="x")
    assert first == PID and second != first  # same inputs, another prompt: runs again
    assert prompt_tag(PID) == PID
    for odd in ("../../etc/x", "A" * 300, "x\x00y", PID.upper()):
        tag = prompt_tag(odd)
        assert len(tag) == 32 and set(tag) <= set("0123456789abcdef")


def test_a_symlink_planted_at_a_temp_name_is_never_followed(
    comfy_dirs: ComfyDirs, fresh_writer: saving.BackgroundWriter, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    folder = comfy_dirs.output / "lookbook" / "harbour"
    folder.mkdir(parents=True)
    stem = f"harbour_0001_5.{PID}"
    # The names the saver used to write through (<name>.png.part), old and new stems.
    for name in ("harbour_0001_5.png.part", f"{stem}.png.part", f"{stem}.json.part"):
        os.symlink(victim, folder / name)
    save()
    assert fresh_writer.flush(60) and not fresh_writer.failures()
    assert victim.read_text() == "keep me"
    assert (folder / f"{stem}.png").is_file() and not (folder / f"{stem}.png").is_symlink()
    # Even a link at the exact temp name (were it guessed) is refused, not followed.
    monkeypatch.setattr(saving.secrets, "token_hex", lambda n: "deadbeef")
    os.symlink(victim, folder / f".{stem}.png.deadbeef.part")
    save()
    assert fresh_writer.flush(60)
    assert any("File exists" in f for f in fresh_writer.failures())
    assert victim.read_text() == "keep me"


def test_secret_looking_extra_pnginfo_and_disabled_metadata_stay_out_of_the_file(
    comfy_dirs: ComfyDirs, fresh_writer: saving.BackgroundWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    save(name="a", extra_pnginfo={"workflow": WORKFLOW, "api_key_comfy_org": "sk-123"})
    from comfy.cli_args import args

    monkeypatch.setattr(args, "disable_metadata", True)
    save(name="b")
    assert fresh_writer.flush(60)
    folder = comfy_dirs.output / "lookbook" / "harbour"
    assert "api_key_comfy_org" not in read_png(folder / f"a.{PID}.png")[1]
    assert b"sk-123" not in (folder / f"a.{PID}.png").read_bytes()
    assert set(read_png(folder / f"b.{PID}.png")[1]) == {"parameters", "seed", "score"}


ATTACKS = [
    ("pack", ".."), ("pack", "../outside"), ("scene", "a/b"), ("scene", "..\\x"),
    ("name", "/etc/passwd"), ("name", "C:evil"), ("name", "x\x00y"), ("name", "line\nbreak"),
    ("name", "."), ("pack", ""), ("scene", " padded"), ("name", "bell\x07"), ("name", "nul"),
    ("name", "a" * 121), ("name", "dots..."), ("name", "\u202eright-to-left"),
]  # fmt: skip


@pytest.mark.parametrize(("field", "value"), ATTACKS, ids=[repr(v)[:20] for _f, v in ATTACKS])
def test_names_that_could_escape_or_break_are_refused_and_nothing_is_written(
    comfy_dirs: ComfyDirs, fresh_writer: saving.BackgroundWriter, field: str, value: str
) -> None:
    before = all_files(comfy_dirs.output.parent)
    with pytest.raises(ValueError) as caught:
        save(**{field: value})
    message = str(caught.value)
    assert message.startswith(f"CharpackSavePack: {field} ")
    assert "use letters, digits" in message or "keep it within 120" in message
    assert fresh_writer.flush(60)
    assert all_files(comfy_dirs.output.parent) == before


def test_a_symlinked_pack_folder_pointing_outside_is_refused(
    comfy_dirs: ComfyDirs, fresh_writer: saving.BackgroundWriter, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, comfy_dirs.output / "lookbook")
    with pytest.raises(ValueError, match="outside the output folder"):
        save()
    assert fresh_writer.flush(60)
    assert list(elsewhere.iterdir()) == []


@dataclass
class HeldWriter:
    """The background writer held before each write: ``started`` once it holds a job,
    ``release`` lets it (and every later job) write."""

    started: threading.Event
    release: threading.Event


@pytest.fixture
def held_writer(monkeypatch: pytest.MonkeyPatch) -> HeldWriter:
    held = HeldWriter(started=threading.Event(), release=threading.Event())
    real = saving.write_job

    def write(job: saving.SaveJob) -> saving.Written:
        held.started.set()
        assert held.release.wait(60), "test did not release the writer"
        return real(job)

    monkeypatch.setattr(saving, "write_job", write)
    return held


def test_the_node_returns_before_the_image_is_encoded(
    comfy_dirs: ComfyDirs, fresh_writer: saving.BackgroundWriter, held_writer: HeldWriter
) -> None:
    out = save(name="later")  # returns although the writer cannot write yet
    target = comfy_dirs.output / "lookbook" / "harbour" / f"later.{PID}.png"
    assert out.ui["pack_images"][0]["filename"] == target.name and not target.exists()
    held_writer.release.set()
    assert fresh_writer.flush(60)
    assert target.exists() and not list(target.parent.glob("*.part"))


def gradient(batch: int, height: int, width: int) -> torch.Tensor:
    """Smooth pictures (any fair downscale of them agrees), image i with blue = i / batch."""
    ys = torch.linspace(0, 1, height)[:, None].expand(height, width)
    xs = torch.linspace(0, 1, width)[None, :].expand(height, width)
    return torch.stack(
        [torch.stack([xs, ys, torch.full_like(xs, i / batch)], dim=-1) for i in range(batch)]
    )


def test_the_preview_is_whole_on_disk_when_the_node_returns_while_the_pack_file_waits(
    comfy_dirs: ComfyDirs, fresh_writer: saving.BackgroundWriter, temp_dir: Path,
    held_writer: HeldWriter,
) -> None:  # fmt: skip
    big = gradient(2, 1500, 1100)
    out = save(images=big, name="big", score=None)
    refs = out.ui["images"]
    assert refs == [
        {"filename": f"big_{i:02d}.{PID}.png", "subfolder": "charpack/lookbook/harbour",
         "type": "temp"}
        for i in (0, 1)
    ]  # fmt: skip
    for index, ref in enumerate(refs):
        path = temp_dir / ref["subfolder"] / ref["filename"]
        Image.open(path).verify()  # every chunk present, every CRC right: a complete file
        with Image.open(path) as picture:
            assert picture.size == (751, 1024)  # long side 1024, the aspect kept
            full = Image.fromarray(to_uint8(big[index]))
            expected = np.asarray(full.resize(picture.size, Image.Resampling.BOX), np.int16)
            assert np.abs(np.asarray(picture, np.int16) - expected).max() <= 3
    # The pack files are still waiting for the writer, and no temporary file is left behind.
    assert not list(comfy_dirs.output.rglob("*.png"))
    assert not [p for p in temp_dir.rglob("*") if p.name.endswith(".part")]
    held_writer.release.set()
    assert fresh_writer.flush(60)
    with Image.open(comfy_dirs.output / out.ui["pack_images"][1]["subfolder"]
                    / out.ui["pack_images"][1]["filename"]) as picture:  # fmt: skip
        assert picture.size == (1100, 1500)  # the pack file is full size


def test_a_small_image_is_its_own_preview_pixel_for_pixel(
    comfy_dirs: ComfyDirs, fresh_writer: saving.BackgroundWriter, temp_dir: Path
) -> None:
    batch = images(height=48, width=40)
    out = save(images=batch)
    (ref,) = out.ui["images"]
    preview, info = read_png(temp_dir / ref["subfolder"] / ref["filename"])
    assert np.array_equal(preview, to_uint8(batch[0])) and "workflow" not in info
    assert fresh_writer.flush(60)


def test_only_the_newest_previews_are_kept_so_a_long_run_never_fills_the_disk(
    comfy_dirs: ComfyDirs, fresh_writer: saving.BackgroundWriter, temp_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    from charpack_nodes.ops import preview

    monkeypatch.setattr(preview, "MAX_KEPT", 3)
    unrelated = temp_dir / "ComfyUI_temp_abcde_00001_.png"  # core PreviewImage's: not ours
    unrelated.parent.mkdir(parents=True)
    unrelated.write_bytes(b"core preview")
    os.utime(unrelated, ns=(0, 0))
    names = []
    for i in range(5):
        out = save(str(uuid.uuid4()), name=f"run{i}", scene=f"scene{i % 2}")
        (ref,) = out.ui["images"]
        path = temp_dir / ref["subfolder"] / ref["filename"]
        assert path.is_file()  # the one just named is always there
        names.append(path)
        os.utime(path, ns=(i * 10**9, i * 10**9))  # ages in order, whatever the clock's tick
    kept = sorted(p for p in (temp_dir / "charpack").rglob("*") if p.is_file())
    assert kept == sorted(names[2:])
    assert unrelated.read_bytes() == b"core preview"
    assert fresh_writer.flush(60)
    assert len(list(comfy_dirs.output.rglob("*.png"))) == 5  # the pack files are all kept


def test_overwrite_writes_exactly_the_name_and_replaces_an_earlier_prompts_files(
    comfy_dirs: ComfyDirs, fresh_writer: saving.BackgroundWriter
) -> None:
    later = str(uuid.uuid4())
    first = save(name="cover", overwrite=True, images=images(seed=1))
    assert fresh_writer.flush(60)
    second = save(later, name="cover", overwrite=True, images=images(seed=2))
    assert fresh_writer.flush(60)
    folder = comfy_dirs.output / "lookbook" / "harbour"
    assert all_files(comfy_dirs.output) == [
        "lookbook/harbour/cover.json",
        "lookbook/harbour/cover.png",
    ]
    pixels, _info = read_png(folder / "cover.png")
    assert np.array_equal(pixels, to_uint8(images(seed=2)[0]))  # the later prompt's image
    sidecar = json.loads((folder / "cover.json").read_text())
    assert sidecar["prompt_id"] == later and sidecar["file"] == "cover.png"
    assert second.ui["pack_images"] == [
        {"filename": "cover.png", "subfolder": "lookbook/harbour", "type": "output"}
    ]
    assert second.ui["sidecars"][0]["filename"] == "cover.json"
    # The previews stay unique per prompt: the editor never shows the other prompt's.
    assert first.ui["images"][0]["filename"] == f"cover.{PID}.png"
    assert second.ui["images"][0]["filename"] == f"cover.{later}.png"
    save(name="set", overwrite=True, images=images(batch=2), score=None)
    save(later, name="set", overwrite=True, images=images(batch=2, seed=4), score=None)
    assert fresh_writer.flush(60)
    assert sorted(p.name for p in folder.glob("set*")) == [
        "set_00.json",
        "set_00.png",
        "set_01.json",
        "set_01.png",
    ]
    assert np.array_equal(read_png(folder / "set_01.png")[0], to_uint8(images(2, seed=4)[1]))


def test_without_seed_and_parameters_the_sidecar_says_null_and_the_png_has_neither(
    comfy_dirs: ComfyDirs, fresh_writer: saving.BackgroundWriter
) -> None:
    with CurrentNodeContext(PID, "20"):
        call_node(
            CharpackSavePack, unique_id="20", hidden_prompt=PROMPT, images=images(),
            pack="lookbook", scene="harbour", name="bare", compress_level=1,
        )  # fmt: skip
    assert fresh_writer.flush(60)
    folder = comfy_dirs.output / "lookbook" / "harbour"
    sidecar = json.loads((folder / f"bare.{PID}.json").read_text())
    assert sidecar["seed"] is None and sidecar["parameters"] is None and sidecar["score"] is None
    _pixels, info = read_png(folder / f"bare.{PID}.png")
    assert set(info) == {"prompt"}  # no parameters, no seed: nothing is made up


def test_seed_and_parameters_are_never_randomised_and_overwrite_is_an_optional_switch() -> None:
    info = CharpackSavePack.GET_NODE_INFO_V1()["input"]
    assert list(info["required"]) == ["images", "pack", "scene", "name", "compress_level"]
    optional = info["optional"]
    assert optional["overwrite"][0] == "BOOLEAN" and optional["overwrite"][1]["default"] is False
    # Widgets (an API workflow's literal survives the editor) the editor never rolls: the
    # frontend adds "control after generate" to an INT named seed unless told false.
    assert optional["seed"][0] == "INT" and optional["seed"][1]["default"] == -1
    assert optional["seed"][1]["control_after_generate"] is False
    assert optional["parameters"][0] == "STRING" and optional["parameters"][1]["default"] == ""
    assert optional["score"][0] == "FLOAT" and optional["score"][1]["forceInput"] is True


def test_the_widgets_left_at_their_defaults_record_no_seed_and_no_parameters(
    comfy_dirs: ComfyDirs, fresh_writer: saving.BackgroundWriter
) -> None:
    # What the editor sends for an unconnected seed and parameters: their widgets' defaults.
    save(name="defaults", seed=-1, parameters="", score=None)
    assert fresh_writer.flush(60)
    folder = comfy_dirs.output / "lookbook" / "harbour"
    sidecar = json.loads((folder / f"defaults.{PID}.json").read_text())
    assert sidecar["seed"] is None and sidecar["parameters"] is None
    _pixels, info = read_png(folder / f"defaults.{PID}.png")
    assert "seed" not in info and "parameters" not in info


def test_a_slow_disk_makes_the_saver_wait_instead_of_piling_up_images(
    comfy_dirs: ComfyDirs, fresh_writer: saving.BackgroundWriter, held_writer: HeldWriter
) -> None:
    save(name="n0")
    # The writer holds n0; the queue holds up to MAX_PENDING more.
    assert held_writer.started.wait(60)
    for i in range(1, 1 + saving.MAX_PENDING):
        save(name=f"n{i}")
    blocked = threading.Thread(target=save, kwargs={"name": "n9"})
    blocked.start()
    blocked.join(0.5)
    assert blocked.is_alive(), "a full queue must hold the next image back"
    held_writer.release.set()
    blocked.join(60)
    assert not blocked.is_alive() and fresh_writer.flush(60)
    assert len(list((comfy_dirs.output / "lookbook" / "harbour").glob("*.png"))) == 4


def test_a_failed_write_is_reported_by_the_next_save(
    comfy_dirs: ComfyDirs, fresh_writer: saving.BackgroundWriter
) -> None:
    (comfy_dirs.output / "lookbook").write_text("a file where the pack folder should be")
    save()  # accepted: the failure happens on the writer thread
    assert fresh_writer.flush(60)
    with pytest.raises(ValueError) as caught:
        save(pack="other")
    message = str(caught.value)
    assert message.startswith("CharpackSavePack: an earlier image could not be written: ")
    assert f"lookbook/harbour/harbour_0001_5.{PID}.png" in message and "free disk space" in message
    save(pack="other")  # reported once; the saver works again
    assert fresh_writer.flush(60)


def test_pack_paths_accept_ordinary_names() -> None:
    target = paths.pack_paths(
        "/srv/out",
        pack="Summer Lookbook 2025",
        scene="café (day)",
        name="ava_0001-12345",
        index=3,
        batch_size=4,
    )
    assert target.subfolder == "Summer Lookbook 2025/café (day)"
    assert target.png.endswith("/Summer Lookbook 2025/café (day)/ava_0001-12345_03.png")


@pytest.mark.parametrize("level", [0, 1, 3, 4, 9])
@pytest.mark.parametrize("shape", [(9, 7), (9, 7, 1), (9, 7, 3), (9, 7, 4), (1, 1, 3)])
def test_png_encoder_is_lossless_at_every_level(level: int, shape: tuple[int, ...]) -> None:
    pixels = np.random.default_rng(level).integers(0, 256, shape, dtype=np.uint8)
    data = encode_png(pixels, text=[("parameters", "café ☕"), ("seed", "5")], compress_level=level)
    picture = Image.open(io.BytesIO(data))
    picture.load()
    assert np.array_equal(np.asarray(picture).reshape(shape), pixels)
    assert picture.info["parameters"] == "café ☕" and picture.info["seed"] == "5"
    Image.open(io.BytesIO(data)).verify()  # checks every chunk's CRC


def test_images_still_queued_when_the_process_exits_are_written_first(tmp_path: Path) -> None:
    # The write is held until the interpreter has started to exit (atexit runs handlers in
    # reverse order, so the gate opens just before the writer's own exit flush).
    code = f"""
import atexit, threading
import numpy as np
from charpack_nodes.ops import paths, saving
gate = threading.Event()
real = saving.write_job
saving.write_job = lambda job: (gate.wait(60), real(job))[1]
writer = saving.writer()
atexit.register(gate.set)
target = paths.pack_paths({str(tmp_path)!r}, pack="p", scene="s", name="last")
writer.submit(saving.SaveJob(image=np.zeros((8, 8, 3), np.uint8), paths=target, text=(),
                             sidecar={{}}, compress_level=1))
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    assert (tmp_path / "p" / "s" / "last.png").is_file()
    assert (tmp_path / "p" / "s" / "last.json").is_file()
