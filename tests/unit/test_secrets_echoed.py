"""A server that quotes our credentials back never gets them shown or stored.

``charpack run`` as a real process against a hostile server that answers like ComfyUI and puts
the request's ``Authorization`` header and URL into a 500 body, a ``node_errors`` message and an
``execution_error``'s ``exception_message`` (tests/support/echo_comfy.py). With the token as a
Bearer header, as ``?token=``, and with Basic credentials, no form of the secret (the value, the
password alone, the base64 of user:password, the URL-encoded token) may appear in stdout,
stderr, ``manifest.json`` or any other file of the pack folder.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
import yaml

from tests.support.commands import CHARPACK
from tests.support.echo_comfy import EchoComfy

REPO = Path(__file__).resolve().parents[2]
FACE = REPO / "examples" / "faces" / "ava_front.png"
TOKEN = "tok/3f9a+7c1e=5b"  # "/", "+" and "=" differ once URL-encoded
USER, PASSWORD = "ana", "s3cret-pass"


def _pack(folder: Path) -> Path:
    (folder / "faces").mkdir(parents=True)
    shutil.copyfile(FACE, folder / "faces" / "ava.png")
    pack = {
        "version": 1,
        "pack": "echo",
        "seed": 7,
        "character": {
            "name": "Ava",
            "checkpoint": "bigLoveXL.safetensors",
            "lora": {"file": "character_lora.safetensors", "strength": 0.7},
            "trigger": "ava_cp woman",
            "face_references": ["faces/ava.png"],
        },
        "defaults": {"width": 256, "height": 384, "steps": 4},
        "scenes": [
            {"name": "storm", "prompt": "in a storm", "count": 1},
            {"name": "crash", "prompt": "at a crash", "count": 1},
        ],
    }
    path = folder / "pack.yaml"
    path.write_text(yaml.safe_dump(pack, sort_keys=False))
    return path


def _forms(env: dict[str, str]) -> list[str]:
    """Every form of the secrets in ``env`` a leak could take."""
    values = [v for k, v in env.items() if k in ("CHARPACK_TOKEN", "CHARPACK_BASIC_AUTH")]
    if "CHARPACK_BASIC_AUTH" in env:
        values += [PASSWORD, base64.b64encode(env["CHARPACK_BASIC_AUTH"].encode()).decode()]
    return [f for v in values for f in {v, quote(v, safe=""), quote_plus(v)}]


@pytest.mark.parametrize(
    ("credentials", "json_out"),
    [
        ({"CHARPACK_TOKEN": TOKEN}, True),
        ({"CHARPACK_TOKEN": TOKEN, "CHARPACK_TOKEN_QUERY": "1"}, True),
        ({"CHARPACK_BASIC_AUTH": f"{USER}:{PASSWORD}"}, False),
    ],
    ids=["bearer", "query-token", "basic"],
)
def test_echoed_credentials_reach_no_output_and_no_file(
    tmp_path: Path, credentials: dict[str, str], json_out: bool
) -> None:
    pack = _pack(tmp_path / "src")
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHARPACK_")}
    env.update(credentials, COLUMNS="200")
    with EchoComfy(storm=3) as server:
        command = [*CHARPACK, "run", str(pack), "--server",
                   server.url, "--out", str(out), "--max-retries", "0"]  # fmt: skip
        done = subprocess.run(
            command + (["--json"] if json_out else []),
            cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        posts = dict(server.posts)
    assert done.returncode == 1, done.stdout + done.stderr
    # The server did quote the credential: the storm 3 times, then a rejection; the crash once.
    assert posts == {"storm": 4, "crash": 1}
    manifest = json.loads((out / "manifest.json").read_text())
    storm, crash = manifest["jobs"]["storm/001"], manifest["jobs"]["crash/001"]
    assert storm["status"] == crash["status"] == "failed"
    assert "rejected prompt" in storm["error"] and "upstream said" in crash["error"]
    assert "Authorization: " in crash["error"] and "***" in crash["error"]
    shown = done.stdout + done.stderr
    assert "answered 500 to POST /prompt" in shown and "upstream failed" in shown
    leaks = [
        (form, where)
        for form in _forms(credentials)
        for where, text in [("output", shown)]
        + [(str(p), p.read_bytes().decode("latin-1")) for p in out.rglob("*") if p.is_file()]
        if form in text
    ]
    assert leaks == []
