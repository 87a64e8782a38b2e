"""CharpackBenchJob: a stand-in pipeline of fixed execution time with a real-sized PNG output.

One output node that stands for the whole GPU pipeline in ``bench/orchestrator_bench.py``: it
spends ``seconds`` of wall time (sleeping in ``steps`` slices, reporting each through ComfyUI's
``ProgressBar`` as a sampler does, and honouring interrupts), then writes the bench picture — a
photograph-like 3328x4864 PNG of ~29 MB made once by ``bench/picture.py`` and named by
``$CHARPACK_BENCH_PICTURE`` — as ``output/<prefix>_<seed>.png``, and lists it in its UI output
like ``SaveImage``. Sleeping rather than computing keeps CPU per job tiny, so four servers and
the client share two cores without slowing each other; the picture's bytes are read once per
server process and copied per job, so the file is real-sized but costs no encoding.
"""

from __future__ import annotations

import os
import time
from functools import cache
from pathlib import Path

import comfy.model_management
import comfy.utils
import folder_paths
from comfy_api.latest import ComfyExtension, io

NODE = "CharpackBenchJob"
PICTURE_ENV = "CHARPACK_BENCH_PICTURE"


@cache
def picture_bytes() -> bytes:
    """The bench picture, read once per server process."""
    path = os.environ.get(PICTURE_ENV, "")
    if not path or not Path(path).is_file():
        raise ValueError(
            f"{NODE}: ${PICTURE_ENV} must name the bench picture (got {path!r}); start the "
            "server through bench/orchestrator_bench.py, which makes it with bench/picture.py."
        )
    return Path(path).read_bytes()


def output_path(prefix: str, seed: int) -> tuple[Path, str, str]:
    """Where the job's file goes: (path, subfolder, filename), inside the output folder."""
    root = Path(folder_paths.get_output_directory()).resolve()
    path = (root / f"{prefix}_{seed}.png").resolve()
    if root not in path.parents:
        raise ValueError(f"{NODE}: prefix {prefix!r} leaves the output folder; use a/b names")
    rel = path.relative_to(root)
    return path, rel.parent.as_posix() if rel.parent != Path(".") else "", rel.name


class CharpackBenchJob(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=NODE,
            display_name="Bench job (charpack)",
            category="charpack/bench",
            description="Stands for a whole pipeline in benchmarks: waits a fixed time, then "
            "saves a real-sized PNG and lists it like SaveImage.",
            inputs=[
                io.Int.Input(
                    "seed",
                    default=0,
                    min=0,
                    max=2**64 - 1,
                    tooltip="Varies per job so ComfyUI's cache never skips one; names the file.",
                ),
                io.Float.Input(
                    "seconds",
                    default=3.6,
                    min=0.0,
                    max=600.0,
                    tooltip="Wall time the job spends, as a GPU pipeline would.",
                ),
                io.Int.Input(
                    "steps",
                    default=20,
                    min=1,
                    max=1000,
                    tooltip="Progress updates over that time, like sampler steps.",
                ),
                io.String.Input(
                    "prefix",
                    default="bench/job",
                    tooltip="File name prefix under output/ (may hold a subfolder).",
                ),
            ],
            outputs=[],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, seed: int, seconds: float, steps: int, prefix: str) -> io.NodeOutput:
        data = picture_bytes()  # before the clock: a missing picture fails at once
        path, subfolder, filename = output_path(prefix, seed)
        progress = comfy.utils.ProgressBar(steps)
        start = time.monotonic()
        for step in range(1, steps + 1):
            comfy.model_management.throw_exception_if_processing_interrupted()
            # Against a fixed schedule, so progress messages do not stretch the job.
            time.sleep(max(0.0, start + seconds * step / steps - time.monotonic()))
            progress.update(1)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        image = {"filename": filename, "subfolder": subfolder, "type": "output"}
        return io.NodeOutput(ui={"images": [image]})


class BenchExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [CharpackBenchJob]
