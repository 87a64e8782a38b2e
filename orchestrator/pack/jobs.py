"""Jobs: a validated pack expanded into (scene, seed) units, each with its exact graph.

A job's ``key`` (``<scene>/<index>``) never changes; its seed does when the identity gate or an
execution error asks for a retry (:func:`retry_seed`, deterministic). Seeds of ``count`` scenes
are derived from the pack seed and the scene name, so adding a scene never shifts another's
seeds. Output file stems are ``<scene>_<index:03d>_<seed>``, made by :func:`file_stem` and
nowhere else. Jobs of one scene share their scene's spec and differ only in seed and output name
(``validate.validate_pack`` relies on it). Upload names come from the pack
(:attr:`~charpack.pack.model.Pack.uploads`, resolved when it was loaded), never hashed here.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import cached_property

from charpack_nodes.pipelines import ApiGraph, OutputSpec, PipelineSpec, build_pipeline, evolve

from .packfile import Pack, Scene
from .uploads import Upload

SEED_SPACE = 2**32  # readable seeds; SDXL accepts up to 2**64 - 1 (explicit seeds may use it)


def derive_seed(*parts: object) -> int:
    text = "\x1f".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "big") % SEED_SPACE


def retry_seed(job: Job, attempt: int) -> int:
    """The seed of a job's ``attempt`` (1 = its own seed)."""
    if attempt <= 1:
        return job.base_seed
    return derive_seed("retry", job.base_seed, job.key, attempt)


def file_stem(scene: str, index: int, seed: int) -> str:
    """The stem of an attempt's files: ``<scene>_<index:03d>_<seed>`` (the saver's ``name``,
    the downloaded ``<stem>.png`` / ``.json``, the plan's workflow file)."""
    return f"{scene}_{index:03d}_{seed}"


def prompt_id_for(run_id: str, key: str, attempt: int) -> str:
    """A client-chosen prompt_id: deterministic per run, job and attempt (lowercase uuid)."""
    return str(uuid.uuid5(uuid.UUID(run_id), f"{key}#{attempt}"))


@dataclass(frozen=True)
class Job:
    """One (scene, seed) unit of work.

    ``scene_spec`` is shared by every job of the scene (uploads and output folder filled in);
    the job's own :attr:`spec` (its seed, its output name) is made when first asked for, so a
    200,000-job pack costs a few small objects per job until a job is actually sent.
    """

    pack: str
    scene: str
    index: int
    base_seed: int
    seed: int
    scene_spec: PipelineSpec
    uploads: tuple[Upload, ...]

    @property
    def key(self) -> str:
        return f"{self.scene}/{self.index:03d}"

    @property
    def stem(self) -> str:
        return file_stem(self.scene, self.index, self.seed)

    def make_spec(self) -> PipelineSpec:
        """This job's spec, built afresh (not kept on the job: ``charpack plan`` streams)."""
        base = self.scene_spec
        return evolve(
            base,
            sampler=evolve(base.sampler, seed=self.seed),
            output=evolve(base.output, name=self.stem),
        )

    @cached_property
    def spec(self) -> PipelineSpec:
        return self.make_spec()

    def make_graph(self) -> ApiGraph:
        """This job's API graph, built afresh and not kept (see :attr:`graph`)."""
        return build_pipeline(self.make_spec()).graph.finalize()

    @cached_property
    def graph(self) -> ApiGraph:
        return build_pipeline(self.spec).graph.finalize()

    def with_seed(self, seed: int) -> Job:
        """The same job with another seed (a retry); output names follow the seed."""
        return replace(self, seed=seed)


def expand(pack: Pack) -> list[Job]:
    """Every job of ``pack``, scene by scene, in file order."""
    return list(iter_jobs(pack))


def iter_jobs(pack: Pack) -> Iterator[Job]:
    """:func:`expand`, one job at a time."""
    faces = tuple(pack.upload(p) for p in pack.face_references)
    for scene in pack.scenes:
        yield from _scene_jobs(pack, scene, faces)


def _scene_jobs(pack: Pack, scene: Scene, faces: tuple[Upload, ...]) -> Iterator[Job]:
    uploads = list(faces)
    names = tuple(u.image_value for u in faces)
    spec = evolve(scene.spec, character=evolve(scene.spec.character, face_images=names))
    if scene.init_image is not None and spec.img2img is not None:
        init = pack.upload(scene.init_image)
        uploads.append(init)
        spec = evolve(spec, img2img=evolve(spec.img2img, image=init.image_value))
    if scene.pose_image is not None and spec.pose is not None:
        pose = pack.upload(scene.pose_image)
        uploads.append(pose)
        spec = evolve(spec, pose=evolve(spec.pose, image=pose.image_value))
    spec = evolve(
        spec,
        output=OutputSpec(
            save="pack",
            pack=pack.name,
            scene=scene.name,
            name=scene.name,  # each job's own name is set by Job.make_spec
            compress_level=spec.output.compress_level,
        ),
    )
    shared = tuple(dict.fromkeys(uploads))
    seeds = scene.seeds or (derive_seed(pack.seed, scene.name, i) for i in range(scene.count))
    for index, seed in enumerate(seeds, start=1):
        yield Job(
            pack=pack.name,
            scene=scene.name,
            index=index,
            base_seed=seed,
            seed=seed,
            scene_spec=spec,
            uploads=shared,
        )
