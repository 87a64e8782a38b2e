"""Resolve once, decide once, in a real run against the CPU ComfyUI (issue 9): no picture is hashed
after the pack is loaded, the identity gate decides each attempt once, the manifest is rewritten
once per change (one rewrite per attempt on a one-slot server) and the contact sheet is drawn
from the run's manifest in memory, not read back."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from charpack.comfy.auth import ServerConfig
from charpack.folder.manifest import Manifest
from charpack.pack import uploads as uploads_module
from charpack.pack.packfile import load_pack
from charpack.run import fetcher as fetcher_module
from charpack.run import retry_rules
from charpack.run.runner import run_pack
from tests.comfy.server import ComfyServer
from tests.server.test_run_pack import check_folder, options, write_pack

pytestmark = pytest.mark.server


def counting(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str, calls: list[Any]) -> None:
    real: Callable[..., Any] = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)


def test_a_run_names_uploads_once_decides_the_gate_once_and_rewrites_once_per_attempt(
    comfy_server: ComfyServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scenes = [
        {"name": "cafe", "prompt": "sitting at a cafe terrace", "count": 2},
        {"name": "walk", "prompt": "walking through a park", "count": 1},
    ]
    pack = load_pack(write_pack(tmp_path / "src", scenes))
    hashed: list[Any] = []
    verdicts: list[Any] = []
    loads: list[Any] = []
    saved: list[dict[str, Any]] = []
    counting(monkeypatch, uploads_module, "file_sha256", hashed)
    # The gate's function, wherever it is called from (the download thread, the judge).
    counting(monkeypatch, fetcher_module, "below", verdicts)
    counting(monkeypatch, retry_rules, "below", verdicts)
    counting(monkeypatch, Manifest, "load", loads)
    real_save = Manifest.save

    def save(self: Manifest) -> None:
        real_save(self)
        saved.append(json.loads(self.path.read_text())["jobs"])

    monkeypatch.setattr(Manifest, "save", save)

    out = tmp_path / "pack"
    server = ServerConfig.from_url(comfy_server.url, env={})
    summary = run_pack(pack, servers=[server], options=options(out, backlog=0))

    assert summary.counts["done"] == 3
    data = check_folder(out, pack)  # every file where its status says, with its sha256
    attempts = [a for job in data["jobs"].values() for a in job["attempts"]]
    finished = [a for a in attempts if a["status"] in ("success", "below_threshold")]
    assert hashed == []  # the pictures were named when the pack was loaded
    assert len(verdicts) == len(finished)  # one gate decision per scored attempt
    # One slot: the run's first save, one per attempt (its begin, carrying the previous
    # attempt's end) and the last attempt's end. The old runner saved twice per attempt.
    assert len(saved) == len(attempts) + 2
    assert all(a != b for a, b in zip(saved, saved[1:], strict=False))  # each carries a change
    assert saved[-1] == data["jobs"]
    assert (out / "contact-sheet.jpg").is_file() and loads == []  # drawn from memory
