"""The real CharpackSavePack applies the one name rule: every name of the shared table that the
pack validator refuses (tests/unit/test_names.py) is refused here with nothing written (no pack
file, no preview), and the ordinary names it accepts are saved and previewed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from comfy_execution.utils import CurrentNodeContext

from charpack_nodes.nodes_save import CharpackSavePack
from charpack_nodes.ops import saving
from tests.nodes.helpers import ComfyDirs, call_node
from tests.unit.name_cases import HOSTILE, ORDINARY

PID = "0b7e9c1a-5d2f-4e3a-9c8b-7a6f5e4d3c2b"


@pytest.fixture(autouse=True)
def temp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import folder_paths

    folder = tmp_path / "comfy-temp"
    monkeypatch.setattr(folder_paths, "temp_directory", str(folder))
    return folder


def save(**names: str) -> Any:
    inputs: dict[str, Any] = dict(
        images=torch.zeros(1, 16, 16, 3), pack="lookbook", scene="harbour", name="n", seed=5,
        parameters="p", compress_level=1, score=0.5,
    )  # fmt: skip
    inputs.update(names)
    with CurrentNodeContext(PID, "20"):
        return call_node(CharpackSavePack, unique_id="20", **inputs)


def files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("value", HOSTILE, ids=[repr(v)[:24] for v in HOSTILE])
def test_the_saver_refuses_every_hostile_name_and_writes_nothing(
    comfy_dirs: ComfyDirs, fresh_writer: saving.BackgroundWriter, temp_dir: Path, value: str
) -> None:
    for field in ("pack", "scene", "name"):
        with pytest.raises(ValueError) as caught:
            save(**{field: value})
        assert str(caught.value).startswith(f"CharpackSavePack: {field} ")
    assert fresh_writer.flush(60)
    assert files(comfy_dirs.output) == []
    assert not temp_dir.exists() or files(temp_dir) == []


@pytest.mark.parametrize("value", ORDINARY)
def test_the_saver_keeps_every_ordinary_name(
    comfy_dirs: ComfyDirs, fresh_writer: saving.BackgroundWriter, temp_dir: Path, value: str
) -> None:
    save(pack=value, scene=value, name=value)
    assert fresh_writer.flush(60)
    saved = [f for f in files(comfy_dirs.output) if f.endswith(".png")]
    assert saved == [f"{value}/{value}/{value}.{PID}.png"]
    assert files(temp_dir) == [f"charpack/{value}/{value}/{value}.{PID}.png"]
