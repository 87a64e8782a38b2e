"""``charpack character check`` on bad references: every problem named with its file and the
fix, exit code 2, before anything is generated (faces counted by the real server)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from PIL import Image

from tests.comfy.server import ComfyServer
from tests.support.commands import CHARPACK

pytestmark = pytest.mark.server

REPO = Path(__file__).resolve().parents[2]


def check(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CHARPACK, "character", "check", str(folder), *args], capture_output=True, text=True,
        timeout=300, env={"PATH": "/usr/bin:/bin", "HOME": str(folder), "COLUMNS": "300"},
    )  # fmt: skip


def folder_with(tmp_path: Path, references: dict[str, Image.Image | Path]) -> Path:
    folder = tmp_path / "char"
    (folder / "references").mkdir(parents=True)
    for name, picture in references.items():
        if isinstance(picture, Path):
            shutil.copy(picture, folder / "references" / name)
        else:
            picture.save(folder / "references" / name)
    data = yaml.safe_load((REPO / "examples" / "character" / "character.yaml").read_text())
    data["character"]["face_references"] = [f"references/{n}" for n in references]
    (folder / "character.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return folder


def test_a_faceless_and_a_small_reference_are_both_named_with_the_fix(
    comfy_server: ComfyServer, tmp_path: Path
) -> None:
    refs = REPO / "examples" / "character" / "references"
    landscape = Image.open(REPO / "tests" / "data" / "no_face.png").convert("RGB")
    landscape = landscape.resize((640, 640))
    folder = folder_with(tmp_path, {
        "front.png": refs / "ava_front.png",
        "thumb.png": Image.open(refs / "ava_left.png").resize((300, 300)),
        "beach.png": landscape,
    })  # fmt: skip
    run = check(folder, "--server", comfy_server.url)
    assert run.returncode == 2, run.stdout + run.stderr
    text = " ".join((run.stdout + run.stderr).split())
    assert "thumb.png: 300×300 px: the short side is under 512 px" in text
    assert "use a picture at least 512×512 px" in text
    # The landscape passes the file checks; the server's face detector finds no face in it.
    assert "beach.png: no face found — use a photo where the face is large" in text
    assert "front.png" not in text


def test_too_few_references_and_a_common_trigger_offline(tmp_path: Path) -> None:
    refs = REPO / "examples" / "character" / "references"
    two = {"a.png": refs / "ava_front.png", "b.png": refs / "ava_left.png"}
    folder = folder_with(tmp_path, two)
    pack = folder / "character.yaml"
    pack.write_text(pack.read_text().replace("trigger: vhtqv woman", "trigger: ava"))
    run = check(folder, "--offline")
    assert run.returncode == 2
    text = " ".join((run.stdout + run.stderr).split())
    assert "2 face reference(s); at least 3 are needed — add 1 more photo(s)" in text
    # The weak trigger is a warning, with a rare token proposed.
    assert "warning: 'ava' contains the character's name" in text and "'vhtqv'" in text
