"""One prompt with execution blocking vs two prompts per attempt, for the early identity gate.

Run by hand: ``python -m bench.gate_prompts [--attempts 6] [--runs 3] [--step 0.05]``. Starts a
private CPU test-world ComfyUI (stand-ins with a fixed time per sampler step,
``CHARPACK_STANDIN_STEP_SECONDS``) and plays ``attempts`` attempts of the pipeline (256×384, 4
steps per sampler) both ways, queued up front as the runner keeps a backlog:

- **one**: the whole pipeline with the early gate in it (``charpack_nodes.pipelines.gate``);
- **two**: prompt A (base, FaceID, InstantID fix, identity score, the 832×1216-stage image
  saved as a PNG) and, when its score passes, prompt B (that PNG loaded, FaceDetailer, upscale,
  final score, save), posted by the client when A is in its history.

Each way twice: every attempt passes the gate (``pass``: the two-prompt way's worst case) and
every attempt is stopped (``stop``). Reported: wall seconds for all attempts, server execution
seconds summed over prompts (the GPU-seconds on a GPU), prompts posted, with min/median/max
over ``runs`` and the load average. CPU figures only: they show the relative cost of the two
ways' mechanics, not a GPU's stage times (an estimate until a GPU run exists).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from charpack.comfy.auth import ServerConfig
from charpack.comfy.client import ComfyClient
from charpack.comfy.results import JobResult
from charpack_nodes.pipelines import (
    CharacterSpec,
    DetailerSpec,
    EarlyGateSpec,
    Graph,
    InstantIDSpec,
    OutputSpec,
    PipelineSpec,
    SamplerSpec,
    UpscaleSpec,
    build_pipeline,
    catalog,
    evolve,
    face,
    finish,
    stages,
)  # fmt: skip
from tests.comfy.server import start_server

REPO = Path(__file__).resolve().parents[1]
FACE = REPO / "examples" / "faces" / "ava_front.png"


def _spec(face_name: str, seed: int, threshold: float) -> PipelineSpec:
    return PipelineSpec(
        character=CharacterSpec(face_images=(face_name,)),
        prompt="portrait at a cafe",
        sampler=SamplerSpec(seed=seed, steps=4, width=256, height=384),
        instantid=InstantIDSpec(steps=4),
        face_detailer=DetailerSpec(steps=4),
        early_gate=EarlyGateSpec(enabled=True, threshold=threshold),
        output=OutputSpec(pack="gatebench", scene=f"s{seed}", name="img"),
    )


def _first_half(spec: PipelineSpec) -> dict[str, Any]:
    """Prompt A: up to the InstantID fix, scored, its image saved for prompt B."""
    half = evolve(
        spec, early_gate=EarlyGateSpec(), face_detailer=evolve(spec.face_detailer, enabled=False),
        upscale=UpscaleSpec(enabled=False), output=evolve(spec.output, save="image"),
    )  # fmt: skip
    return build_pipeline(half).graph.finalize()


def _second_half(spec: PipelineSpec, saved: str) -> dict[str, Any]:
    """Prompt B: prompt A's image loaded from the output folder, then the rest."""
    g = Graph("")
    image: Any = g.node(catalog.LOAD_IMAGE.class_type, stages.INPUT_IMAGE, image=saved).out(0)
    image = face.add_face_detailer(g, spec, image)
    image = finish.add_upscale(g, spec, image)
    return stages._finish(g, spec, image, True).graph.finalize()


def _wait(client: ComfyClient, ids: list[str]) -> dict[str, JobResult]:
    done: dict[str, JobResult] = {}
    while len(done) < len(ids):
        for pid in ids:
            if pid not in done and (r := client.result(pid)) is not None:
                done[pid] = r.raise_for_status()
        time.sleep(0.02)  # polling cadence, not a wait for a condition's time
    return done


def _post(client: ComfyClient, graph: dict[str, Any]) -> str:
    pid = str(uuid.uuid4())
    client.submit(graph, prompt_id=pid, client_id="gatebench")
    return pid


def one_prompt(client: ComfyClient, specs: list[PipelineSpec]) -> tuple[float, float, int]:
    start = time.monotonic()
    ids = [_post(client, build_pipeline(s).graph.finalize()) for s in specs]
    results = _wait(client, ids)
    wall = time.monotonic() - start
    return wall, sum(r.execution_s or 0.0 for r in results.values()), len(ids)


def two_prompts(client: ComfyClient, specs: list[PipelineSpec]) -> tuple[float, float, int]:
    start = time.monotonic()
    first = {_post(client, _first_half(s)): s for s in specs}
    second: list[str] = []
    pending = dict(first)
    results: dict[str, JobResult] = {}
    while pending:
        for pid, spec in list(pending.items()):
            if (r := client.result(pid)) is None:
                continue
            results[pid] = r.raise_for_status()
            del pending[pid]
            (score,) = r.ui[finish.SCORE]["scores"]
            if score is not None and score >= spec.early_gate.threshold:
                (png,) = [o for o in r.outputs if o.filename.endswith(".png")]
                second.append(
                    _post(client, _second_half(spec, f"{png.subfolder}/{png.filename} [output]"))
                )
        time.sleep(0.02)
    results.update(_wait(client, second))
    wall = time.monotonic() - start
    return wall, sum(r.execution_s or 0.0 for r in results.values()), len(results)


def _stats(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}–{max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attempts", type=int, default=6)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--step", type=float, default=0.05, help="stand-in seconds per step")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(Path(tmp) / "comfy", standin_step_seconds=args.step)
        try:
            with ComfyClient(config=ServerConfig(url=server.url)) as client:
                face_name = client.upload_image(FACE).image_value
                _wait(
                    client,
                    [_post(client, build_pipeline(_spec(face_name, 1, -1)).graph.finalize())],
                )
                rows = []
                for case, threshold in (("pass", -1.0), ("stop", 1.0)):
                    for way, play in (("one", one_prompt), ("two", two_prompts)):
                        walls, gpus, posts, loads = [], [], 0, []
                        for run in range(args.runs):
                            # Fresh seeds per run and way, so the server's cache hides no work.
                            first = 1000 * (run + 2) + 500 * (threshold > 0) + 100 * (way == "two")
                            seeds = range(first, first + args.attempts)
                            specs = [_spec(face_name, s, threshold) for s in seeds]
                            loads.append(os.getloadavg()[0])
                            wall, gpu, posts = play(client, specs)
                            walls.append(wall)
                            gpus.append(gpu)
                        rows.append((case, way, _stats(walls), _stats(gpus), posts, max(loads)))
        finally:
            server.stop()
    head = "| gate | way | wall s, median (min–max) | server execution s | prompts | load (1 min) |"
    lines = [
        f"{args.attempts} attempts × {args.runs} runs, {args.step} s per stand-in step, "
        f"{os.cpu_count()} cores",
        "",
        head,
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {c} | {w} | {wall} | {gpu} | {p} | {load:.2f} |" for c, w, wall, gpu, p, load in rows
    ]
    text = "\n".join(lines)
    print(text)  # noqa: T201
    command = " ".join(["python -m bench.gate_prompts", *sys.argv[1:]])
    intro = (
        "# Early gate: one prompt vs two\n\nMeasured on the CPU test world (stand-ins), not a "
        'GPU; the decision is in docs/pipeline.md, "The early identity gate".\n\n'
        f"`{command}`, "
    )
    (REPO / "bench" / "GATE_PROMPTS.md").write_text(intro + text + "\n")


if __name__ == "__main__":
    main()
