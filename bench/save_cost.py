"""What saving one 3328x4864 image costs: core SaveImage vs CharpackSavePack, side by side.

Run by hand from the repository root (not a test): ``python bench/save_cost.py [--repeats 5]``.
It re-runs itself inside the cached ComfyUI 0.3.75 test environment (built on first use, see
``tests/comfy/install.py``) and calls the two nodes' own code in one process, as ComfyUI's
executor would: core ``nodes.SaveImage().save_images`` and ``CharpackSavePack.execute`` through
its V3 class clone. Measured per image (median of the repeats):

* execution thread: wall time until the node returns (the time the GPU would wait);
* total CPU: process CPU time until the file is on disk, all threads (the background encode too);
* until on disk: wall time until the PNG and its sidecar exist;
* file size.

The image is photograph-like (smooth colour fields, mid-frequency detail and sensor-like noise),
so the PNG sizes and encode times are those of real photographs rather than of flat test renders.
Writes the table to ``bench/SAVE.md`` and prints it.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "SAVE.md"
WIDTH, HEIGHT = 3328, 4864
INSIDE = "CHARPACK_BENCH_INSIDE"


def relaunch(argv: list[str]) -> int:
    """Run this script again with the ComfyUI environment's Python and import paths."""
    sys.path.insert(0, str(REPO))
    from tests.comfy.install import STUBS, ensure_comfy_env

    env_info = ensure_comfy_env()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(
        PYTHONPATH=os.pathsep.join([str(REPO), str(env_info.comfy_dir), str(STUBS),
                                    str(REPO / "custom_nodes")]),
        **{INSIDE: "1"},
    )  # fmt: skip
    # -P: bench/ must not come first on sys.path, or bench/nodes (the bench's own node pack)
    # shadows ComfyUI's nodes module.
    command = [str(env_info.python), "-P", str(Path(__file__).resolve()), *argv]
    return subprocess.call(command, cwd=REPO, env=env)


def photo_like(seed: int = 0, size: tuple[int, int] = (WIDTH, HEIGHT)):  # type: ignore[no-untyped-def]
    import torch
    import torch.nn.functional as F

    width, height = size
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(1, 3, height // 64, width // 64, generator=g)
    image = F.interpolate(low, size=(height, width), mode="bicubic", align_corners=False)
    mid = torch.rand(1, 3, height // 8, width // 8, generator=g) * 0.15
    image += F.interpolate(mid, size=(height, width), mode="bilinear", align_corners=False)
    image += torch.randn(1, 3, height, width, generator=g) * (2.0 / 255)
    return image.clamp(0, 1).permute(0, 2, 3, 1).contiguous()


def measure(
    repeats: int, size: tuple[int, int] = (WIDTH, HEIGHT)
) -> list[tuple[str, dict[str, float]]]:
    from comfy.cli_args import args

    args.cpu = True  # as the server runs here (--cpu); must be set before nodes is imported
    import folder_paths
    import nodes
    from comfy_api.latest import io

    from charpack_nodes.nodes_save import CharpackSavePack
    from charpack_nodes.ops import saving

    work = Path(tempfile.mkdtemp(prefix="charpack-bench-"))
    folder_paths.set_output_directory(str(work))
    image = photo_like(size=size)
    prompt = {"1": {"class_type": "CharpackPipeline", "inputs": {"seed": 1}}}
    pnginfo = {"workflow": {"nodes": [], "links": []}}
    hidden = {io.Hidden.prompt: prompt, io.Hidden.extra_pnginfo: pnginfo}
    rows: list[tuple[str, dict[str, float]]] = []

    def core(level: int):  # type: ignore[no-untyped-def]
        def save(i: int) -> Path:
            saver = nodes.SaveImage()
            saver.compress_level = level  # SaveImage's own attribute (4); not a node input
            out = saver.save_images(image, filename_prefix=f"core{level}/run{i}", prompt=prompt,
                                    extra_pnginfo=pnginfo)  # fmt: skip
            item = out["ui"]["images"][0]
            return work / item["subfolder"] / item["filename"]

        return save

    def charpack(level: int):  # type: ignore[no-untyped-def]
        def save(i: int) -> Path:
            node = CharpackSavePack.PREPARE_CLASS_CLONE(hidden)
            out = node.execute(
                images=image,
                pack="bench",
                scene=f"level{level}",
                name=f"run{i}",
                seed=1,
                parameters="bench",
                compress_level=level,
            )
            item = out.ui["pack_images"][0]  # UI "images" is the editor's preview
            return work / item["subfolder"] / item["filename"]

        return save

    cases = [
        ("core SaveImage (Pillow, level 4: as shipped)", core(4), False),
        ("core SaveImage patched to level 1 (Pillow)", core(1), False),
    ]
    for level in (1, 0, 6):
        cases.append((f"CharpackSavePack, compress_level {level}", charpack(level), True))
    writer = saving.writer()
    for label, run, background in cases:
        samples: dict[str, list[float]] = {"thread": [], "cpu": [], "disk": [], "size": []}
        for i in range(repeats + 1):  # the first run warms caches and the writer; not counted
            writer.flush()
            cpu0, wall0 = time.process_time(), time.perf_counter()
            path = run(i)
            returned = time.perf_counter() - wall0
            if background:
                writer.flush()
            on_disk = time.perf_counter() - wall0
            cpu = time.process_time() - cpu0
            if i:
                samples["thread"].append(returned)
                samples["cpu"].append(cpu)
                samples["disk"].append(on_disk)
                samples["size"].append(path.stat().st_size / 2**20)
        rows.append((label, {k: statistics.median(v) for k, v in samples.items()}))
        print(f"{label}: {rows[-1][1]}", flush=True)  # noqa: T201
    return rows


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import numpy
    import PIL
    import torch

    return (
        f"{model}, {os.cpu_count()} cores; Python {platform.python_version()}, "
        f"torch {torch.__version__}, numpy {numpy.__version__}, Pillow {PIL.__version__}"
    )


def table(rows: list[tuple[str, dict[str, float]]], repeats: int) -> str:
    lines = [
        "| saver | execution thread (GPU waits) | total CPU | until on disk | PNG size |",
        "|---|---:|---:|---:|---:|",
    ]

    def ms(seconds: float) -> str:
        return f"{seconds * 1000:.1f} ms" if seconds < 0.01 else f"{seconds * 1000:.0f} ms"

    for label, m in rows:
        lines.append(f"| {label} | {ms(m['thread'])} | {ms(m['cpu'])} | {ms(m['disk'])} | "
                     f"{m['size']:.1f} MiB |")  # fmt: skip
    return "\n".join(lines) + f"\n\nMedian of {repeats} runs per row after one warm-up run."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument(
        "--size", default=f"{WIDTH}x{HEIGHT}", help="WxH of the image (smaller: a smoke run)"
    )
    args = parser.parse_args()
    if os.environ.get(INSIDE) != "1":
        raise SystemExit(relaunch(sys.argv[1:]))
    width, height = (int(v) for v in args.size.lower().split("x"))
    rows = measure(args.repeats, (width, height))
    body = table(rows, args.repeats)
    print(body)  # noqa: T201
    if not args.no_write and (width, height) != (WIDTH, HEIGHT):
        raise SystemExit("bench/SAVE.md holds 3328x4864 figures: add --no-write for other sizes")
    if not args.no_write:
        header = OUT.read_text().split("<!-- results -->")[0] if OUT.exists() else ""
        OUT.write_text(
            header + "<!-- results -->\n\n" + body + f"\n\nMachine: {machine()}.\n"
            f"Command: `python bench/save_cost.py --repeats {args.repeats}`.\n"
        )


if __name__ == "__main__":
    main()
