"""manifest.json: round trip, cached job JSON stays correct after updates, clear load errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from charpack.folder.manifest import Manifest, ManifestError


def test_round_trip_and_updates_are_not_served_stale(tmp_path: Path) -> None:
    m = Manifest.create(tmp_path, pack={"name": "p"}, identity={"threshold": 0.45})
    m.put({"key": "a/001", "scene": "a", "index": 1, "status": "pending", "attempts": []})
    m.save()
    entry = m.job("a/001")
    entry["status"] = "done"
    entry["attempts"].append({"attempt": 1, "prompt_id": "x", "seed": 3, "score": 0.61})
    m.put(entry)  # re-serialised, not the cached "pending" text
    m.save()
    data = json.loads((tmp_path / "manifest.json").read_text())
    assert data["jobs"]["a/001"]["status"] == "done"
    again = Manifest.load(tmp_path)
    assert again.run_id == m.run_id
    assert again.job("a/001")["attempts"][0]["score"] == 0.61
    assert not list(tmp_path.glob(".*.tmp"))  # the temporary file was renamed into place


def test_empty_manifest_is_valid_json(tmp_path: Path) -> None:
    Manifest.create(tmp_path, pack={}, identity={}).save()
    assert json.loads((tmp_path / "manifest.json").read_text())["jobs"] == {}


def test_load_errors_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="no manifest — is .* a pack folder"):
        Manifest.load(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="unreadable manifest"):
        Manifest.load(tmp_path)
    (tmp_path / "manifest.json").write_text('{"format": 99}')
    with pytest.raises(ManifestError, match="format 99 is not 1"):
        Manifest.load(tmp_path)
