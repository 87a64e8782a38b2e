"""No traceback for any input: hostile pack files through the real command line.

Each file goes through ``python -m charpack validate`` in its own process, under a 1 GiB
address-space limit (an alias bomb or a runaway expansion dies with MemoryError there instead of
taking the machine) and a 60 s deadline. Every one must exit 2 with one line per problem, each
naming the file, and nothing else: no traceback, no crash, no hang.
"""

from __future__ import annotations

import random
import resource
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image

from tests.support.commands import CHARPACK

OK_HEAD = "pack: p\ncharacter:\n  name: A\n  face_references: [face.png]\n"
OK_SCENES = "scenes: [{name: s, prompt: p, count: 1}]\n"


def bomb() -> str:
    lines = ["lol0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for n in range(1, 10):
        lines.append(f"lol{n}: &l{n} [{', '.join([f'*l{n - 1} '] * 9)}]")
    return "\n".join(lines) + "\n" + OK_HEAD + "  prompt_prefix: *l9\n" + OK_SCENES


def garbage(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


CASES: dict[str, str | bytes] = {
    "binary garbage": garbage(1, 4096),
    "binary garbage starting like YAML": b"pack: " + garbage(2, 512),
    "invalid UTF-8": b"pack: caf\xe9\n",
    "UTF-16 with a BOM": "\ufeffpack: p\n".encode("utf-16"),
    "empty file": "",
    "only a comment": "# nothing here\n",
    "a top-level list": "- pack: p\n",
    "a top-level number": "42\n",
    "two documents": OK_HEAD + OK_SCENES + "---\npack: q\n",
    "a number with 5000 digits": OK_HEAD + "seed: " + "7" * 5000 + "\n" + OK_SCENES,
    "a count of 1e400": OK_HEAD + "scenes: [{name: s, prompt: p, count: 1e400}]\n",
    "NaN and infinities": OK_HEAD
    + "defaults: {cfg: .nan, steps: .inf}\nidentity: {threshold: .nan}\nseed: -.inf\n"
    + OK_SCENES,
    "a huge cfg integer": OK_HEAD + "defaults: {cfg: " + "9" * 400 + "}\n" + OK_SCENES,
    "!!python/object": "pack: !!python/object/apply:os.system ['echo owned']\n",
    "!!python/name": OK_HEAD + "seed: !!python/name:os.system\n" + OK_SCENES,
    "!!binary": OK_HEAD + "  trigger: !!binary aGVsbG8=\n" + OK_SCENES,
    "an alias bomb": bomb(),
    "an undefined alias": OK_HEAD + "  trigger: *nowhere\n" + OK_SCENES,
    "a merge of a number": OK_HEAD + "defaults: {<<: 5}\n" + OK_SCENES,
    "100,000 levels of lists": "pack: " + "[" * 100_000 + "]" * 100_000 + "\n",
    "50,000 levels of mappings": "pack: " + "{a: " * 50_000 + "1" + "}" * 50_000 + "\n",
    "a duplicate key": OK_HEAD + OK_SCENES + "pack: q\n",
    "a list as a key": "? [a, b]\n: c\n",
    "numbers and null as keys": OK_HEAD + "scenes: [{1: 2, null: 3, name: s, prompt: p}]\n",
    "a NUL byte": OK_HEAD.encode() + b"  trigger: a\x00b\n" + OK_SCENES.encode(),
    "a NUL in a path": OK_HEAD.replace("[face.png]", '["fa\\0ce.png"]') + OK_SCENES,
    "a 10,000-character path": OK_HEAD.replace("face.png", "d/" * 5000 + "f.png") + OK_SCENES,
    "a device as a picture": OK_HEAD.replace("face.png", "/dev/zero") + OK_SCENES,
    "text named .png": OK_HEAD.replace("face.png", "notes.png") + OK_SCENES,
    "a tab for indentation": "pack: p\ncharacter:\n\tname: A\n",
    "an unclosed quote": 'pack: "p\n',
    "version 99": "version: 99\n" + OK_HEAD + OK_SCENES,
    "version as a list": "version: [1]\n" + OK_HEAD + OK_SCENES,
    "a device name as scene": OK_HEAD + "scenes: [{name: con, prompt: p, count: 1}]\n",
    "a scene name with a newline": OK_HEAD + 'scenes: [{name: "s\\n", prompt: p, count: 1}]\n',
    "a prompt of a million words": OK_HEAD
    + "scenes: [{name: s, prompt: ["
    + "w, " * 400_000
    + "w], count: 1}]\n",
    "every field the wrong type": "pack: [1]\nseed: x\ncharacter: 5\nscenes: {a: 1}\n",
}


# `charpack validate` also takes one API-format workflow (JSON): the same promise holds there.
JSON_CASES: dict[str, str | bytes] = {
    "JSON garbage": garbage(3, 2048),
    "JSON nested 100,000 deep": "[" * 100_000 + "]" * 100_000,
    "JSON with a 5000-digit number": '{"1": {"class_type": "KSampler", "inputs": {"seed": '
    + "9" * 5000
    + "}}}",
    "JSON inputs as a list": '{"1": {"class_type": "KSampler", "inputs": [1, 2]}}',
    "JSON link to a non-node": '{"0": 5, "1": {"class_type": "VAEDecode", "inputs": '
    '{"vae": ["0", 0], "samples": ["nowhere", 99]}}}',
    "JSON a huge type name": '{"1": {"class_type": "' + "K" * 100_000 + '", "inputs": {}}}',
    "JSON a huge value": '{"1": {"class_type": "KSampler", "inputs": {"sampler_name": "'
    + "x" * 100_000
    + '"}}}',
}


def limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CHARPACK, "validate", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=limit_memory,
        cwd=path.parent,
    )


def check(name: str, path: Path, run: Callable[[Path], subprocess.CompletedProcess[str]]) -> str:
    """'' when the answer is right, else what is wrong with it."""
    try:
        out = run(path)
    except subprocess.TimeoutExpired:
        return f"{name}: no answer within 60 s"
    lines = out.stderr.splitlines()
    if out.returncode != 2 or "Traceback" in out.stderr or not lines:
        return f"{name}: exit {out.returncode}, stderr {out.stderr[-600:]!r}"
    if not lines[0].startswith("error: "):
        return f"{name}: first line {lines[0][:200]!r}"
    for line in lines:
        named = line.removeprefix("error: ").startswith((str(path), path.name))
        if not named and not line.startswith("…"):
            return f"{name}: a line that does not name the file: {line[:200]!r}"
        if len(line) > len(str(path)) + 400:
            return f"{name}: a line of {len(line)} characters"
    return ""


@pytest.fixture
def hostile_dir(tmp_path: Path) -> Path:
    Image.new("RGB", (48, 48), (205, 160, 130)).save(tmp_path / "face.png")
    (tmp_path / "notes.png").write_text("not a picture")
    files = [f"case{i:02d}.yaml" for i in range(len(CASES))]
    files += [f"case{i:02d}.json" for i in range(len(JSON_CASES))]
    for name, content in zip(files, [*CASES.values(), *JSON_CASES.values()], strict=True):
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return tmp_path


def test_no_hostile_pack_file_gets_a_traceback(hostile_dir: Path) -> None:
    (hostile_dir / "folder.json").mkdir()
    paths = [hostile_dir / f"case{i:02d}.yaml" for i in range(len(CASES))]
    paths += [hostile_dir / f"case{i:02d}.json" for i in range(len(JSON_CASES))]
    paths += [hostile_dir, Path("/dev/null"), hostile_dir / "absent.yaml"]
    paths += [hostile_dir / "folder.json", hostile_dir / "absent.json"]
    names = [*CASES, *JSON_CASES, "a directory", "a device", "a missing file"]
    names += ["a directory named .json", "a missing .json"]
    with ThreadPoolExecutor(max_workers=2) as pool:  # the processes run two at a time
        wrong = list(pool.map(check, names, paths, [validate] * len(paths)))
    assert [w for w in wrong if w] == []
