"""``charpack plan``: the exact payloads a pack would send, written to disk for inspection.

Writes ``<out>/workflows/<scene>/<stem>.json`` (the API-format graph posted as ``prompt``) for
every job and ``<out>/plan.json`` (pack, character, uploads, and per job: key, seed, workflow
file). Nothing is contacted; upload names are content-derived, so the graphs are final.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from charpack_nodes.pipelines import to_json

from .jobs import Job, expand
from .packfile import Pack


@dataclass(frozen=True)
class PlanResult:
    out_dir: Path
    jobs: list[Job]
    files: list[Path]


def write_plan(pack: Pack, out_dir: Path) -> PlanResult:
    """Write every job's workflow and the plan summary; return what was written."""
    jobs = expand(pack)
    out_dir.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    entries: list[dict[str, Any]] = []
    uploads: dict[str, dict[str, str]] = {}
    made: set[Path] = set()
    for job in jobs:
        rel = Path("workflows") / job.scene / f"{job.stem}.json"
        target = out_dir / rel
        if target.parent not in made:
            target.parent.mkdir(parents=True, exist_ok=True)
            made.add(target.parent)
        target.write_text(to_json(job.graph), encoding="utf-8")
        files.append(target)
        for up in job.uploads:
            uploads[up.image_value] = {"file": str(up.path), "sha256": up.sha256}
        entries.append(
            {
                "key": job.key,
                "scene": job.scene,
                "index": job.index,
                "seed": job.seed,
                "workflow": rel.as_posix(),
                "output": f"{job.pack}/{job.scene}/{job.stem}.png",
            }
        )
    summary = {
        "pack": pack.name,
        "pack_file": str(pack.path),
        "character": pack.character_name,
        "identity": {
            "enabled": pack.identity.enabled,
            "threshold": pack.identity.threshold,
            "max_attempts": pack.identity.max_attempts,
        },
        "uploads": uploads,
        "jobs": entries,
    }
    plan_file = out_dir / "plan.json"
    tmp = plan_file.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, plan_file)
    files.append(plan_file)
    return PlanResult(out_dir=out_dir, jobs=jobs, files=files)
