"""``charpack plan``: the exact payloads a pack would send, written to disk for inspection.

Writes ``<out>/workflows/<scene>/<stem>.json`` (the API-format graph posted as ``prompt``) for
every job and ``<out>/plan.json`` (pack, character, uploads, and per job: key, seed, workflow
file). Nothing is contacted; upload names are content-derived, so the graphs are final. Written
one workflow at a time, so memory stays flat however many jobs the pack has.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from charpack_nodes.pipelines import to_json

from ..folder.integrity import atomic_write
from ..pack.jobs import Job, iter_jobs
from ..pack.packfile import Pack


@dataclass(frozen=True)
class PlanResult:
    out_dir: Path
    jobs: list[Job]
    files: list[Path]


def write_plan(pack: Pack, out_dir: Path) -> PlanResult:
    """Write every job's workflow and the plan summary; return what was written.

    One workflow at a time: each graph is built, written and dropped (a job keeps no graph),
    and the summary's job list goes to disk line by line, so a pack at the job limit is planned
    in bounded memory.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs: list[Job] = []
    files: list[Path] = []
    uploads: dict[str, dict[str, str]] = {}
    made: set[Path] = set()
    plan_file = out_dir / "plan.json"
    entries_tmp = plan_file.with_suffix(".jobs.tmp")
    with entries_tmp.open("w", encoding="utf-8") as entries:
        for job in iter_jobs(pack):
            jobs.append(job)
            rel = Path("workflows") / job.scene / f"{job.stem}.json"
            target = out_dir / rel
            if target.parent not in made:
                target.parent.mkdir(parents=True, exist_ok=True)
                made.add(target.parent)
            target.write_text(to_json(job.make_graph()), encoding="utf-8")
            files.append(target)
            for up in job.uploads:
                if up.image_value not in uploads:
                    uploads[up.image_value] = {"file": str(up.path), "sha256": up.sha256}
            entry = {
                "key": job.key,
                "scene": job.scene,
                "index": job.index,
                "seed": job.seed,
                "workflow": rel.as_posix(),
                "output": f"{job.pack}/{job.scene}/{job.stem}.png",
            }
            entries.write(("    " if len(jobs) == 1 else ",\n    ") + json.dumps(entry))
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
    }
    head = json.dumps(summary, indent=2)

    def write(out: BinaryIO) -> None:
        out.write((head[: head.rindex("}")].rstrip() + ',\n  "jobs": [\n').encode("utf-8"))
        with entries_tmp.open("rb") as entries:
            shutil.copyfileobj(entries, out)
        out.write(b"\n  ]\n}\n")

    atomic_write(plan_file, write, doing="write plan.json")
    entries_tmp.unlink()
    files.append(plan_file)
    return PlanResult(out_dir=out_dir, jobs=jobs, files=files)
