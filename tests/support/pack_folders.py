"""Small, real pack folders for the tests of the pack-folder tools (contact, publish, report).

Builds what ``charpack run`` leaves behind, through :class:`charpack.folder.manifest.Manifest`
itself: real PNG files carrying the metadata chunks ComfyUI and our saver write (``prompt``,
``workflow``, ``parameters`` as tEXt/iTXt/zTXt plus an eXIf chunk), accepted images under
``<scene>/``, rejected attempts under ``rejected/<scene>/``, failed and pending jobs, and per
attempt the timings, server and sha256 records the runner writes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, PngImagePlugin

from charpack.folder.manifest import Attempt, FileRecord, JobEntry, Manifest
from charpack.pack.jobs import file_stem
from charpack.run.state import image_dir

SECRET_PROMPT = "ava_cp woman, linen shirt at a sunny street cafe, morning light"
SERVER = "https://pod-a-8188.proxy.runpod.net"


@dataclass
class Shot:
    """One attempt to put into a job: its seed, score, status and timings."""

    seed: int
    score: float | None
    status: str = "success"  # attempt status: success | below_threshold | error | ...
    error: str | None = None
    execution_s: float = 10.0
    queue_wait_s: float = 0.5
    server: str = SERVER
    submitted_at: float = 1_000.0


@dataclass
class JobSpec:
    scene: str
    index: int
    shots: list[Shot] = field(default_factory=list)
    status: str = "done"  # final job status


def picture(path: Path, *, seed: int, size: tuple[int, int] = (208, 304)) -> None:
    """A PNG with a seeded picture and every metadata chunk kind a real output carries."""
    w, h = size
    hue = (seed * 47) % 255
    img = Image.new("RGB", size, (40 + hue // 3, 70 + hue // 4, 110 + hue // 5))
    draw = ImageDraw.Draw(img)
    draw.ellipse((w * 0.3, h * 0.18, w * 0.7, h * 0.52), fill=(222, 184, 150))  # a face
    draw.rectangle((w * 0.2, h * 0.55, w * 0.8, h), fill=(hue, 120, 200 - hue // 2))
    draw.text((6, 6), str(seed), fill=(255, 255, 255))
    info = PngImagePlugin.PngInfo()
    info.add_text("prompt", json.dumps({"base.pos": {"inputs": {"text": SECRET_PROMPT}}}))
    info.add_text("workflow", json.dumps({"nodes": [{"type": "KSampler"}]}), zip=True)
    info.add_itxt("parameters", f"{SECRET_PROMPT}\nSteps: 30, CFG: 4.0, Seed: {seed}")
    exif = Image.Exif()
    exif[0x010E] = SECRET_PROMPT  # ImageDescription
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, pnginfo=info, exif=exif.tobytes(), compress_level=1)


def _record(folder: Path, rel: str) -> FileRecord:
    data = (folder / rel).read_bytes()
    return {"path": rel, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def build(
    folder: Path,
    jobs: list[JobSpec],
    *,
    pack: str = "ava-weekend",
    character: str = "Ava",
    threshold: float = 0.45,
    size: tuple[int, int] = (208, 304),
) -> Manifest:
    """Write images and the manifest for ``jobs`` into ``folder``; return the saved manifest."""
    manifest = Manifest.create(
        folder,
        pack={"name": pack, "character": character, "file": "small-pack.yaml"},
        identity={"enabled": True, "threshold": threshold, "max_attempts": 3},
    )
    clock = 1_000.0
    for spec in jobs:
        key = f"{spec.scene}/{spec.index:03d}"
        attempts: list[Attempt] = []
        image: str | None = None
        for number, shot in enumerate(spec.shots, start=1):
            stem = file_stem(spec.scene, spec.index, shot.seed)
            files: list[FileRecord] = []
            if shot.status == "success":
                image = f"{image_dir(spec.scene, rejected=False)}/{stem}.png"
                picture(folder / image, seed=shot.seed, size=size)
                files.append(_record(folder, image))
            elif shot.status == "below_threshold":
                rel = f"{image_dir(spec.scene, rejected=True)}/{stem}.png"
                picture(folder / rel, seed=shot.seed, size=size)
                files.append(_record(folder, rel))
            submitted = max(clock, shot.submitted_at)
            finished = submitted + shot.queue_wait_s + shot.execution_s
            clock = finished
            attempt: Attempt = {
                "attempt": number,
                "prompt_id": f"00000000-0000-4000-8000-{number:012d}",
                "seed": shot.seed,
                "server": shot.server,
                "comfyui_version": "0.3.75",
                "workflow": {"base.sampler": {"class_type": "KSampler", "inputs": {}}},
                "submitted_at": submitted,
                "started_at": submitted + shot.queue_wait_s,
                "finished_at": finished,
                "queue_wait_s": shot.queue_wait_s,
                "execution_s": shot.execution_s,
                "stage_timings": {
                    "base": shot.execution_s * 0.6,
                    "upscale": shot.execution_s * 0.4,
                },
                "status": shot.status,  # type: ignore[typeddict-item]
                "score": shot.score,
                "error": shot.error,
                "files": files,
            }
            attempts.append(attempt)
        last = spec.shots[-1] if spec.shots else None
        if spec.status == "below_threshold":  # the runner keeps the best attempt as the image
            last = max(spec.shots, key=lambda shot: shot.score or 0.0)
            stem = file_stem(spec.scene, spec.index, last.seed)
            image = f"{image_dir(spec.scene, rejected=True)}/{stem}.png"
        entry: JobEntry = {
            "key": key,
            "scene": spec.scene,
            "index": spec.index,
            "status": spec.status,  # type: ignore[typeddict-item]
            "seed": last.seed if last else spec.index,
            "prompt_id": attempts[-1]["prompt_id"] if attempts else None,
            "server": last.server if last else None,
            "score": last.score if last and spec.status in ("done", "below_threshold") else None,
            "error": last.error if last and spec.status == "failed" else None,
            "image": image if spec.status in ("done", "below_threshold") else None,
            "attempts": attempts,
        }
        manifest.put(entry)
    manifest.save()
    return manifest


def small_pack(folder: Path, **kwargs: Any) -> Manifest:
    """Two scenes: retries below the threshold, a failure, a pending job; 5 accepted images."""
    jobs = [
        JobSpec("cafe-terrace", 1, [Shot(101, 0.62)]),
        JobSpec("cafe-terrace", 2, [Shot(202, 0.31, "below_threshold"), Shot(203, 0.58)]),
        JobSpec("cafe-terrace", 3, [Shot(303, 0.71)]),
        JobSpec(
            "city-walk",
            1,
            [Shot(404, None, "error", "FaceDetailer: CUDA out of memory — lower guide_size")],
            status="failed",
        ),
        JobSpec("city-walk", 2, [Shot(505, 0.49)]),
        JobSpec("city-walk", 3, [Shot(606, 0.55)]),
        JobSpec("city-walk", 4, [], status="pending"),
    ]
    return build(folder, jobs, **kwargs)
