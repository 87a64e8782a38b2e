"""Jobs: a validated pack expanded into (scene, seed) units, each with its exact graph.

A job's ``key`` (``<scene>/<index>``) never changes; its seed does when the identity gate or an
execution error asks for a retry (:func:`retry_seed`, deterministic). Seeds of ``count`` scenes
are derived from the pack seed and the scene name, so adding a scene never shifts another's
seeds. Output file stems are ``<scene>_<index:03d>_<seed>``.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, replace
from functools import cached_property

from charpack_nodes.pipelines import ApiGraph, OutputSpec, PipelineSpec, build_pipeline, evolve

from .packfile import Pack, Scene
from .uploads import Upload, upload_for

SEED_SPACE = 2**32  # readable seeds; SDXL accepts up to 2**64 - 1 (explicit seeds may use it)


def derive_seed(*parts: object) -> int:
    text = "\x1f".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "big") % SEED_SPACE


def retry_seed(job: Job, attempt: int) -> int:
    """The seed of a job's ``attempt`` (1 = its own seed)."""
    if attempt <= 1:
        return job.base_seed
    return derive_seed("retry", job.base_seed, job.key, attempt)


def prompt_id_for(run_id: str, key: str, attempt: int) -> str:
    """A client-chosen prompt_id: deterministic per run, job and attempt (lowercase uuid)."""
    return str(uuid.uuid5(uuid.UUID(run_id), f"{key}#{attempt}"))


@dataclass(frozen=True)
class Job:
    """One (scene, seed) unit of work."""

    pack: str
    scene: str
    index: int
    base_seed: int
    seed: int
    spec: PipelineSpec
    uploads: tuple[Upload, ...]

    @property
    def key(self) -> str:
        return f"{self.scene}/{self.index:03d}"

    @property
    def stem(self) -> str:
        return f"{self.scene}_{self.index:03d}_{self.seed}"

    @cached_property
    def graph(self) -> ApiGraph:
        return build_pipeline(self.spec).graph.finalize()

    def with_seed(self, seed: int) -> Job:
        """The same job with another seed (a retry); output names follow the seed."""
        spec = evolve(
            self.spec,
            sampler=evolve(self.spec.sampler, seed=seed),
            output=evolve(self.spec.output, name=f"{self.scene}_{self.index:03d}_{seed}"),
        )
        return replace(self, seed=seed, spec=spec)


def expand(pack: Pack) -> list[Job]:
    """Every job of ``pack``, scene by scene, in file order."""
    faces = tuple(upload_for(p) for p in pack.face_references)
    jobs: list[Job] = []
    for scene in pack.scenes:
        jobs.extend(_scene_jobs(pack, scene, faces))
    return jobs


def _scene_jobs(pack: Pack, scene: Scene, faces: tuple[Upload, ...]) -> list[Job]:
    uploads = list(faces)
    names = tuple(u.image_value for u in faces)
    spec = evolve(scene.spec, character=evolve(scene.spec.character, face_images=names))
    if scene.init_image is not None and spec.img2img is not None:
        init = upload_for(scene.init_image)
        uploads.append(init)
        spec = evolve(spec, img2img=evolve(spec.img2img, image=init.image_value))
    if scene.pose_image is not None and spec.pose is not None:
        pose = upload_for(scene.pose_image)
        uploads.append(pose)
        spec = evolve(spec, pose=evolve(spec.pose, image=pose.image_value))
    seeds = scene.seeds or tuple(derive_seed(pack.seed, scene.name, i) for i in range(scene.count))
    jobs = []
    for index, seed in enumerate(seeds, start=1):
        job_spec = evolve(
            spec,
            output=OutputSpec(
                save="pack",
                pack=pack.name,
                scene=scene.name,
                name=f"{scene.name}_{index:03d}_{seed}",
                compress_level=spec.output.compress_level,
            ),
        )
        job_spec = evolve(job_spec, sampler=evolve(job_spec.sampler, seed=seed))
        jobs.append(
            Job(
                pack=pack.name,
                scene=scene.name,
                index=index,
                base_seed=seed,
                seed=seed,
                spec=job_spec,
                uploads=tuple(dict.fromkeys(uploads)),
            )
        )
    return jobs
