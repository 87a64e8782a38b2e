"""``charpack plan`` writes one workflow at a time: every job's file is its exact graph, the
summary lists every job in order, and no job keeps a graph (a 200,000-job plan stays small)."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from charpack.check.plan import write_plan
from charpack.pack.packfile import load_pack


def test_plan_streams_every_workflow_and_keeps_none(tmp_path: Path) -> None:
    Image.new("RGB", (48, 48), (205, 160, 130)).save(tmp_path / "face.png")
    pack_file = tmp_path / "pack.yaml"
    scenes = [
        {"name": "cafe", "prompt": "at a cafe", "count": 1500},
        {"name": "beach", "prompt": "on a beach", "seeds": [5, 2**63, 7]},
    ]
    character = {"name": "A", "face_references": ["face.png"]}
    pack_file.write_text(json.dumps({"pack": "p", "character": character, "scenes": scenes}))
    result = write_plan(load_pack(pack_file), tmp_path / "plan")
    summary = json.loads((tmp_path / "plan" / "plan.json").read_text())
    assert [j["key"] for j in summary["jobs"]] == [j.key for j in result.jobs]
    assert len(result.jobs) == 1503 and [j["seed"] for j in summary["jobs"][-3:]] == [5, 2**63, 7]
    assert not any("graph" in job.__dict__ or "spec" in job.__dict__ for job in result.jobs)
    for entry, job in zip(summary["jobs"][::300], result.jobs[::300], strict=True):
        written = json.loads((tmp_path / "plan" / entry["workflow"]).read_text())
        assert written == json.loads(json.dumps(job.graph))
        assert written["save.run"]["inputs"]["name"] == job.stem
    assert list((tmp_path / "plan").glob("*.tmp")) == []
