"""The creator's whole path on the CPU server, as a user runs it: the installed ``charpack``
command over a copy of ``examples/character``.

references checked (files here, faces on the server) → a bootstrap pack from the references
alone → a dataset of the best images with captions → the real ``TrainLoraNode`` training the
test world's tiny real SDXL checkpoint in resumable chunks → the LoRA downloaded, verified and
registered in ``character.yaml`` → the 5-shot identity test without and with it, and the
before/after report. Each step's files are checked against what the server and the pack folders
hold, not against fixed numbers.

In the test world the pipeline's stand-in sampler runs no U-Net, so a trained LoRA cannot change
the pictures: the "after" figures equal the "before" ones here, and the test checks that the
after run really used the new LoRA, and that the report's figures are the pack folders' own.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import statistics
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.browser.conftest import artefacts_dir
from tests.comfy.server import ComfyServer
from tests.support.commands import CHARPACK

pytestmark = pytest.mark.server

REPO = Path(__file__).resolve().parents[2]
TINY = "tiny-sdxl-train.safetensors"
# Small pictures and no 4x upscale keep the CPU runs short; the path is the same.
FAST_DEFAULTS = {"width": 512, "height": 640, "steps": 4, "stages": {"upscale": {"enabled": False}}}


def charpack(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    run = subprocess.run(
        [*CHARPACK, *args], cwd=cwd, capture_output=True, text=True, timeout=900,
        env={"PATH": "/usr/bin:/bin", "HOME": str(cwd), "COLUMNS": "200"},
    )  # fmt: skip
    assert run.returncode == 0, f"charpack {' '.join(args)} exited {run.returncode}:\n" + (
        run.stdout + run.stderr
    )[-6000:]
    return run


def character_folder(tmp: Path) -> Path:
    folder = tmp / "ava"
    shutil.copytree(REPO / "examples" / "character", folder)
    pack = folder / "character.yaml"
    pack.write_text(pack.read_text() + "\n" + yaml.safe_dump({"defaults": FAST_DEFAULTS}))
    return folder


def safetensors_keys(path: Path) -> list[str]:
    with path.open("rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    return [k for k in header if k != "__metadata__"]


def manifest_jobs(folder: Path) -> list[dict[str, Any]]:
    return list(json.loads((folder / "manifest.json").read_text())["jobs"].values())


def lora_names(job: dict[str, Any]) -> list[str]:
    workflow = job["attempts"][-1]["workflow"]
    return [n["inputs"]["lora_name"] for n in workflow.values() if n["class_type"] == "LoraLoader"]


def test_references_to_a_trained_registered_and_tested_character(
    comfy_server: ComfyServer, tmp_path: Path
) -> None:
    folder = character_folder(tmp_path)
    server = ["--server", comfy_server.url]
    original = (folder / "character.yaml").read_text()

    # 1. The references: three files of the right kind, one face each on the server.
    checked = charpack("character", "check", str(folder), *server, cwd=tmp_path)
    assert "references: 3 OK, one face each" in checked.stdout

    # 2. Bootstrap: one image for each of 5 scenes (one per shot type), then the dataset.
    charpack(
        "character", "bootstrap", str(folder), *server, "--per-scene", "1", "--scenes", "5",
        cwd=tmp_path,
    )  # fmt: skip
    bootstrap_jobs = manifest_jobs(folder / "bootstrap")
    assert len(bootstrap_jobs) == 5
    assert all(j["status"] == "done" for j in bootstrap_jobs)
    assert all(lora_names(j) == [] for j in bootstrap_jobs)  # no LoRA: there is none yet
    dataset = folder / "dataset" / "v1"
    record = json.loads((dataset / "dataset.json").read_text())
    shots = {row["shot"] for row in record["images"]}
    assert shots == {"close-up", "half-body", "full-body", "profile", "three-quarter"}
    for row in record["images"]:
        caption = (dataset / row["file"]).with_suffix(".txt").read_text().strip()
        assert caption == row["caption"] and caption.startswith("vhtqv woman, ")
        assert (dataset / row["file"]).is_file()
    scores = {Path(j["image"]).name: j["score"] for j in bootstrap_jobs}
    assert sorted(r["score"] for r in record["images"]) == sorted(scores.values())
    assert (dataset / "contact.jpg").stat().st_size > 0

    # 3. Training on the server: the real TrainLoraNode, in chunks, with progress events.
    trained = charpack(
        "character", "train", str(folder), *server, "--checkpoint", TINY, "--steps", "6",
        "--warmup-steps", "2", "--chunk-steps", "2", "--rank", "4", "--json", cwd=tmp_path,
    )  # fmt: skip
    events = [json.loads(line) for line in trained.stdout.splitlines() if line.startswith("{")]
    progress = [e for e in events if e["event"] == "progress"]
    assert [e["step"] for e in progress][-1] == 6 and {e["total"] for e in progress} == {6}
    assert [e["event"] for e in events].count("chunk_done") == 4  # 2 warm-up + 2 main chunks
    state = json.loads((folder / "training" / "v1" / "state.json").read_text())
    final = state["chunks"][-1]
    lora = folder / "loras" / "ava-v1.safetensors"
    digest = hashlib.sha256(lora.read_bytes()).hexdigest()
    assert digest == final["sha256"]
    assert (folder / "loras" / "ava-v1.safetensors.sha256").read_text().split()[0] == digest
    # The same bytes are where the pods' LoraLoader looks, under the registered name.
    on_server = comfy_server.models_dir / "loras" / final["lora_name"]
    assert on_server.read_bytes() == lora.read_bytes()
    keys = safetensors_keys(lora)
    assert any(k.endswith("lora_up.weight") for k in keys)
    assert all(k.startswith("diffusion_model.") for k in keys)
    assert (folder / "loras" / "ava-v1.loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    chunks = json.loads((folder / "training" / "v1" / "loss.json").read_text())["chunks"]
    assert sum(len(c["losses"]) for c in chunks) == 6  # one loss per step, from the server

    # 4. Registered in character.yaml, the original kept.
    character = yaml.safe_load((folder / "character.yaml").read_text())["character"]
    assert character["lora"] == {"file": final["lora_name"], "strength": 0.7, "sha256": digest}
    assert (folder / "training" / "v1" / "character.before.yaml").read_text() == original

    # 5. The 5-shot identity test, without and with the LoRA, ran as part of the training,
    #    and its report; charpack character test repeats it (the pack folders are complete).
    reports = [e for e in events if e["event"] == "identity_report"]
    assert [Path(r["markdown"]) for r in reports] == [folder / "identity" / "v1" / "report.md"]
    tested = charpack("character", "test", str(folder), *server, cwd=tmp_path)
    identity = folder / "identity" / "v1"
    before, after = manifest_jobs(identity / "before"), manifest_jobs(identity / "after")
    assert [j["scene"] for j in before] == [j["scene"] for j in after] == [
        "portrait", "full-body", "profile", "dramatic-light", "expression",
    ]  # fmt: skip
    assert all(lora_names(j) == [] for j in before)
    assert all(lora_names(j) == [final["lora_name"]] for j in after)
    report = json.loads((identity / "report.json").read_text())
    for side, jobs in (("before", before), ("after", after)):
        values = [j["score"] for j in jobs]
        assert report["overall"][side]["mean"] == pytest.approx(statistics.fmean(values), abs=6e-4)
        assert report["overall"][side]["min"] == pytest.approx(min(values), abs=1e-4)
    assert "| portrait |" in (identity / "report.md").read_text()
    assert "Identity test: before / after the LoRA" in tested.stdout
    assert (identity / "contact.jpg").stat().st_size > 0

    # 6. make over the finished folder redoes nothing: no new version of anything.
    made = charpack("character", "make", str(folder), *server, cwd=tmp_path)
    assert "training is finished; skipping it" in made.stderr
    assert "identity test v1 done" in made.stderr
    for kind in ("dataset", "training", "identity"):
        assert sorted(p.name for p in (folder / kind).iterdir()) == ["v1"]
    keep_pictures(folder, checked.stdout + trained.stderr + tested.stdout)


# docs/character.md's pictures come from this run (python -m tests.server.character_pictures).
PICTURES = {
    "bootstrap/contact-sheet.jpg": "bootstrap-contact.jpg",
    "dataset/v1/contact.jpg": "dataset-contact.jpg",
    "loras/ava-v1.loss.png": "loss.png",
    "identity/v1/contact.jpg": "identity-contact.jpg",
    "identity/v1/report.md": "identity-report.md",
}


def keep_pictures(folder: Path, terminal: str) -> None:
    """Copy this run's pictures and report to ``.artefacts/character/`` for the docs."""
    target = artefacts_dir() / "character"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for source, name in PICTURES.items():
        shutil.copyfile(folder / source, target / name)
    (target / "terminal.txt").write_text(terminal)
