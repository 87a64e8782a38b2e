"""Fixtures for the node pack's nodes-tier tests (inside the ComfyUI test environment).

``comfy_dirs`` points ComfyUI's ``folder_paths`` at fresh input/output/model folders (with a
copy of the tiny InsightFace packs and a few model file names) for one test; ``fresh_writer``
gives the pack saver a private background writer.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.nodes.helpers import MODEL_FILES, ComfyDirs


@pytest.fixture
def comfy_dirs(
    tmp_path: Path, insightface_root: Path, monkeypatch: pytest.MonkeyPatch
) -> ComfyDirs:
    import folder_paths

    dirs = ComfyDirs(tmp_path / "input", tmp_path / "output", tmp_path / "models")
    for folder in (dirs.input, dirs.output, dirs.models):
        folder.mkdir()
    # A copy, so a test may break a pack without touching the shared tiny models.
    shutil.copytree(insightface_root, dirs.insightface)
    for kind, names in MODEL_FILES.items():
        (dirs.models / kind).mkdir()
        for name in names:
            (dirs.models / kind / name).write_bytes(b"placeholder")
        extensions = folder_paths.folder_names_and_paths[kind][1]
        monkeypatch.setitem(
            folder_paths.folder_names_and_paths, kind, ([str(dirs.models / kind)], extensions)
        )
    monkeypatch.setattr(folder_paths, "filename_list_cache", {})
    monkeypatch.setattr(folder_paths, "models_dir", str(dirs.models))
    monkeypatch.setattr(folder_paths, "input_directory", str(dirs.input))
    monkeypatch.setattr(folder_paths, "output_directory", str(dirs.output))
    return dirs


@pytest.fixture
def fresh_writer(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A private background writer for the pack saver (flushed when the test ends)."""
    from charpack_nodes.ops import saving

    writer = saving.BackgroundWriter()
    monkeypatch.setattr(saving, "_WRITER", writer)
    yield writer
    writer.flush(60)
