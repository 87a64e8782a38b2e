"""What every client in the orchestrator benchmark runs: the same jobs, the same graph.

Owns the bench pack (a real charpack pack file: the example character, one scene of ``count``
jobs) and the one-node API graph each job posts (``CharpackBenchJob`` from ``bench/nodes``:
fixed wall time, a ~29 MB PNG out). charpack's runner expands the pack itself and posts
:func:`job_graph` through ``run_pack(..., workflow=...)``; the comparators get the same seeds
and stems from :func:`jobs_of`. Every graph carries a run ``tag`` in its file prefix, so runs
never share ComfyUI cache entries or output files, and the server's history entries of one run
are found by that tag (:func:`tag_of`). Every client reports its own peak memory the same way
(:func:`peak_rss_mb`).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
FACE = REPO / "examples" / "faces" / "ava_front.png"
NODE_ID = "job"
TITLE = "Save Image"  # comfy-api-simplified finds the output node by its title


@dataclass(frozen=True)
class BenchJob:
    seed: int
    stem: str


@dataclass(frozen=True)
class Workload:
    """How long a job runs and how it reports progress; ``tag`` names the run."""

    seconds: float
    steps: int
    tag: str

    def graph(self, job: BenchJob) -> dict[str, Any]:
        return job_graph(seed=job.seed, stem=job.stem, work=self)


def job_graph(*, seed: int, stem: str, work: Workload) -> dict[str, Any]:
    """The API graph of one job: the bench node, writing ``output/<tag>/<stem>_<seed>.png``."""
    inputs = {
        "seed": seed,
        "seconds": work.seconds,
        "steps": work.steps,
        "prefix": f"{work.tag}/{stem}",
    }
    node = {"class_type": "CharpackBenchJob", "inputs": inputs, "_meta": {"title": TITLE}}
    return {NODE_ID: node}


def tag_of(entry: dict[str, Any]) -> str | None:
    """The run tag of a ``/history`` entry (``prompt[2]`` is the graph), None if not ours."""
    try:
        prefix = entry["prompt"][2][NODE_ID]["inputs"]["prefix"]
    except (KeyError, IndexError, TypeError):
        return None
    return str(prefix).split("/", 1)[0]


def write_pack(folder: Path, *, name: str, count: int, seed: int) -> Path:
    """A pack file of ``count`` jobs in one scene; its face reference is uploaded as usual."""
    (folder / "faces").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(FACE, folder / "faces" / FACE.name)
    pack = {
        "version": 1,
        "pack": name,
        "seed": seed,
        "character": {
            "name": "Ava",
            "trigger": "ava_cp woman",
            "face_references": [f"faces/{FACE.name}"],
        },
        "identity": {"enabled": False},
        "scenes": [{"name": "studio", "prompt": "studio portrait, linen shirt", "count": count}],
    }
    path = folder / "pack.yaml"
    path.write_text(yaml.safe_dump(pack, sort_keys=False), encoding="utf-8")
    return path


def jobs_of(pack_path: Path) -> list[BenchJob]:
    """The pack's jobs as charpack expands them (seed and file stem), in pack order."""
    from charpack.pack.jobs import expand
    from charpack.pack.packfile import load_pack

    return [BenchJob(job.seed, job.stem) for job in expand(load_pack(pack_path))]


def peak_rss_mb() -> float:
    """This process's peak resident memory since it started its program (``VmHWM``), in MB.

    Not ``getrusage``'s ``ru_maxrss``: Linux carries the parent's resident size at fork into
    the child's, so a client started by a big parent would report the parent's memory.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / 1e6  # the kernel counts kB = KiB
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")
