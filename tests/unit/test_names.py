"""One name rule: every name the pack validator accepts, the saver accepts too, and every name
the saver refuses, the validator refuses first (before a whole pipeline runs for nothing).

The saver's side is ``charpack_nodes.ops.paths.pack_paths``, the function CharpackSavePack calls
with its pack, scene and name inputs (standard library only, so it runs here without ComfyUI).
"""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest
import yaml
from name_cases import HOSTILE, ORDINARY
from pack_cases import mutate
from PIL import Image

from charpack.errors import PackError
from charpack.pack.jobs import expand
from charpack.pack.packfile import load_pack
from charpack_nodes.ops import paths


@pytest.fixture
def pack_dir(tmp_path: Path) -> Path:
    (tmp_path / "faces").mkdir()
    Image.new("RGB", (48, 48), (205, 160, 130)).save(tmp_path / "faces" / "front.png")
    return tmp_path


def validator_problems(pack_dir: Path, scene: str) -> list[str]:
    path = pack_dir / "pack.yaml"
    path.write_text(yaml.safe_dump(mutate("scenes.1.name", scene), sort_keys=False))
    try:
        load_pack(path)
    except PackError as exc:
        return exc.problems
    return []


def saver_refuses(field: str, value: str) -> str | None:
    names = {"pack": "p", "scene": "s", "name": "n", field: value}
    try:
        paths.pack_paths("/srv/out", **names)
    except paths.UnsafeName as exc:
        return str(exc)
    return None


@pytest.mark.parametrize("name", HOSTILE, ids=[repr(n)[:24] for n in HOSTILE])
def test_a_name_the_saver_refuses_is_refused_by_validate(pack_dir: Path, name: str) -> None:
    for field in ("pack", "scene", "name"):
        message = saver_refuses(field, name)
        assert message is not None, f"the saver accepted {name!r} as {field}"
        assert message.startswith(f"{field} ") and "use letters, digits" in message
        assert len(message) < 400
    problems = validator_problems(pack_dir, name)
    if any(unicodedata.category(c) == "Cs" for c in name):  # no UTF-8 file can hold it
        assert len(problems) == 1 and "found invalid Unicode character escape" in problems[0]
        return
    assert [p.split(": ")[1] for p in problems] == ["scenes[1].name"], problems


@pytest.mark.parametrize("name", ORDINARY)
def test_a_name_validate_accepts_is_accepted_by_the_saver(pack_dir: Path, name: str) -> None:
    assert validator_problems(pack_dir, name) == []
    path = pack_dir / "pack.yaml"
    for job in expand(load_pack(path)):  # every output name the jobs send, as the saver gets it
        out = job.spec.output
        assert saver_refuses("pack", out.pack) is None
        assert saver_refuses("scene", out.scene) is None
        assert saver_refuses("name", out.name) is None


def test_the_validator_says_why_a_windows_name_is_refused(pack_dir: Path) -> None:
    [problem] = validator_problems(pack_dir, "aux.txt")
    assert problem == (
        f"{pack_dir / 'pack.yaml'}: scenes[1].name: 'aux.txt' is a device name on Windows (con, "
        "prn, aux, nul, com0-com9, lpt0-lpt9, conin$, conout$; with any extension) — use "
        "letters, digits, '.', '_' or '-' (up to 64), starting with a letter or digit"
    )


def test_scene_names_that_differ_only_in_case_are_one_folder(pack_dir: Path) -> None:
    path = pack_dir / "pack.yaml"
    data = mutate("scenes.1.name", "CAFE")
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(PackError) as info:
        load_pack(path)
    assert info.value.problems == [
        f"{path}: scenes[1].name: duplicate scene name 'CAFE' (also scenes[0] 'cafe') — give "
        "every scene its own name (case does not count)"
    ]
