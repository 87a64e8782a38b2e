"""Bringing a finished prompt's files into the pack folder, on one thread per server.

Owns :class:`Fetcher`: it streams each output of a finished prompt (the image first, then the
saver's JSON sidecar) to its deterministic place — ``<scene>/<stem>.png``, or
``rejected/<scene>/<stem>.png`` when the identity gate rejects it — hashing
it on the way (:meth:`~charpack.comfy.client.ComfyClient.download`: temp file, atomic rename, so a
crash never leaves half an image under a final name), then reports :class:`Finished` to the
runner. The gate's verdict (:func:`~charpack.run.retry_rules.below`) is made here, once per
attempt, because it picks the folder; ``Finished.rejected`` carries it to the judge. Nothing is
held in memory but one chunk. A download that fails is reported as a lost
attempt, so the job runs again rather than being lost.

What lands in the pack folder is decided by the job, never by the server (:class:`Expected`):
only the files the job makes (its images and the saver's sidecars, at most ``images`` of
each, named ``<stem>.png`` / ``<stem>.json`` whatever the server calls them), each bounded in
bytes and time (:class:`DownloadRules`). For the pack pipeline every image must be provably this
attempt's: its sidecar (written by the saver last) must name this prompt and the image, and the
image's sha256 and size must match it. Anything else is refused
(:class:`~charpack.errors.OutputRefused`, reported as ``Finished(refused=...)``: the job
runs again as after a lost prompt); a full disk is reported as ``Finished(disk_full=...)``.
A first Ctrl-C (:meth:`Fetcher.drain`) gives the downloads under way ``STOP_GRACE_S`` to
finish; what is still coming then is dropped, as is every download at :meth:`Fetcher.close` (a
third Ctrl-C), within a fraction of a second: nothing is reported for it, so the attempt stays
submitted and the next run downloads it.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from charpack_nodes.pipelines import finish, gate

from ..comfy.client import ComfyClient
from ..comfy.downloads import SIDECAR_MAX_BYTES, Expect, check_ref
from ..comfy.landing import write_file
from ..comfy.limits import DownloadCancelled, Limits, StopSignal
from ..comfy.results import IMAGES, PACK_IMAGES, SIDECARS, JobResult, OutputRef, older_saver
from ..errors import CharpackError, DiskFull, OutputRefused, PackFolderError
from ..folder.manifest import FileRecord
from ..pack.jobs import Job
from ..pack.packfile import IdentityGate
from .messages import Close, DownloadStarted, Drain, Drained, Finished
from .options import RunOptions
from .retry_rules import Score, below, early_stop, scores_in
from .state import image_dir

log = logging.getLogger(__name__)

SCORE_NODE = finish.SCORE


@dataclass(frozen=True)
class Tracked:
    """A prompt a worker follows: its job and where its files go."""

    key: str
    scene: str
    stem: str


def score_of(result: JobResult) -> Score:
    """The identity result in a finished prompt's UI output (:func:`scores_in` of the final
    score node, else of any score node but the early gate's), or None when the graph has no
    identity node."""
    ui = result.ui.get(SCORE_NODE) or next(
        (u for node, u in result.ui.items() if "scores" in u and node != gate.GATE_SCORE), {}
    )
    return scores_in(ui)


UPSCALE_FACTOR = 4  # the pipeline's upscale model (4x-UltraSharp); larger models: raise the cap
BYTES_PER_PIXEL = 4  # RGBA, uncompressed: more than any PNG the saver writes (8-bit RGB, deflated)
HEADROOM = 2  # times the largest picture, plus METADATA_BYTES for text chunks
METADATA_BYTES = 16 << 20
PREPARED_IMAGES = 8  # a prepared workflow's output node may save a few images
# What is kept, and its local suffix: the saver's pack files (its ``images`` are temp previews,
# never listed as outputs), any other node's saved images, the saver's sidecars.
SUFFIXES = {PACK_IMAGES: ".png", IMAGES: ".png", SIDECARS: ".json"}


@dataclass(frozen=True)
class Expected:
    """What one attempt of a job can make: at most ``images`` PNGs of up to ``max_image_bytes``
    each, in ``subfolder`` (None: wherever a prepared workflow's node puts them), each with the
    saver's sidecar when ``provenance`` (the pack pipeline)."""

    images: int
    max_image_bytes: int
    subfolder: str | None = None
    provenance: bool = True


def expected_of(job: Job, *, prepared: bool = False, max_mb: float | None = None) -> Expected:
    """The outputs ``job`` can produce: width × height after the upscale × 4 bytes × headroom
    (``max_mb`` overrides the cap); a ``prepared`` workflow is not the saver's, so it has no
    sidecars to prove its files with."""
    sampler = job.spec.sampler
    scale = UPSCALE_FACTOR * job.spec.upscale.output_scale if job.spec.upscale.enabled else 1.0
    width = math.ceil(sampler.width * max(scale, 1.0))
    height = math.ceil(sampler.height * max(scale, 1.0))
    cap = width * height * BYTES_PER_PIXEL * HEADROOM + METADATA_BYTES
    if max_mb is not None:
        cap = int(max_mb * (1 << 20))
    if prepared:
        return Expected(images=PREPARED_IMAGES, max_image_bytes=cap, provenance=False)
    return Expected(images=1, max_image_bytes=cap, subfolder=f"{job.pack}/{job.scene}")


@dataclass(frozen=True)
class DownloadRules:
    """How a run's downloads are bounded: ``expect`` gives each job's :class:`Expected`;
    ``wait_s`` waits out a reported file not written yet, ``idle_s`` refuses a server that sends
    no byte that long, ``deadline_s`` one that takes longer than that for one file."""

    expect: Callable[[str], Expected] | None = None
    wait_s: float = 60.0
    idle_s: float = 30.0
    deadline_s: float = 600.0
    fallback: Expected = field(default_factory=lambda: Expected(PREPARED_IMAGES, 512 << 20))

    def of(self, key: str) -> Expected:
        return self.expect(key) if self.expect is not None else self.fallback

    def limits(self, max_bytes: int, stopping: StopSignal | None = None) -> Limits:
        return Limits(
            max_bytes=max_bytes,
            idle_s=self.idle_s,
            deadline_s=self.deadline_s,
            stopping=stopping,
        )


def download_rules(
    jobs: Mapping[str, Job], options: RunOptions, *, prepared: bool = False
) -> DownloadRules:
    """A run's :class:`DownloadRules`: each job's outputs from its spec, times from options."""

    def expect(key: str) -> Expected:
        return expected_of(jobs[key], prepared=prepared, max_mb=options.download_max_mb)

    return DownloadRules(
        expect=expect,
        wait_s=options.download_wait_s,
        idle_s=options.download_idle_s,
        deadline_s=options.download_deadline_s,
    )


@dataclass(frozen=True)
class Planned:
    """One image to fetch and, for the pack pipeline, the sidecar that proves it."""

    image: OutputRef
    image_rel: str
    sidecar: OutputRef | None = None
    sidecar_rel: str | None = None


def destinations(
    refs: tuple[OutputRef, ...], rel_dir: str, stem: str
) -> list[tuple[OutputRef, str]]:
    """The outputs that are kept (images, then sidecars) and their paths in the pack folder:
    ``<stem>.png``, ``<stem>_01.png`` … and ``<stem>.json`` …, whatever the server named them
    (the pack-folder tools take an attempt's first file as its picture)."""
    out = []
    for suffix in dict.fromkeys(SUFFIXES.values()):
        keys = [key for key, s in SUFFIXES.items() if s == suffix]
        kept = sorted(
            (r for r in refs if r.key in keys), key=lambda r: (keys.index(r.key), r.filename)
        )
        for count, ref in enumerate(kept):
            name = f"{stem}{suffix}" if count == 0 else f"{stem}_{count:02d}{suffix}"
            out.append((ref, f"{rel_dir}/{name}"))
    return out


def plan(
    refs: tuple[OutputRef, ...], expected: Expected, rel_dir: str, stem: str, server: str
) -> list[Planned]:
    """What to fetch from a finished prompt's outputs, or :class:`OutputRefused` when they are
    not what the job makes (names, suffixes, count, folder, a missing sidecar)."""
    kept = [check_ref(r, server=server) for r in refs if r.key in SUFFIXES]
    if expected.provenance:
        older = older_saver(tuple(kept))
        if older is not None:
            raise OutputRefused(f"{server}: {older}")
    images = [r for r in kept if r.key in (PACK_IMAGES, IMAGES)]
    sidecars = {Path(r.filename).stem: r for r in kept if r.key == SIDECARS}
    if not images:
        raise OutputRefused(f"{server} reported no image for this prompt; refused.")
    if len(images) > expected.images or len(kept) > 2 * expected.images:
        raise OutputRefused(
            f"{server} reported {len(kept)} files for this prompt; the job makes at most "
            f"{expected.images} image(s) (and a sidecar each); refused."
        )
    for ref in kept:
        suffix = SUFFIXES[ref.key]
        if Path(ref.filename).suffix.lower() != suffix:
            raise OutputRefused(
                f"{server} reported {ref.filename[:80]!r} as one of the prompt's {ref.key}; "
                f"the job makes {suffix} files only; refused."
            )
        if ref.type != "output":
            raise OutputRefused(
                f"{server} reported {ref.filename[:80]!r} from its {ref.type[:20]!r} folder; "
                "the job's files are in its output folder; refused."
            )
        if expected.subfolder is not None and ref.subfolder != expected.subfolder:
            raise OutputRefused(
                f"{server} reported {ref.filename[:80]!r} in {ref.subfolder[:80]!r}; the job "
                f"saves into {expected.subfolder!r}; refused."
            )
    placed = dict((r, rel) for r, rel in destinations(tuple(kept), rel_dir, stem))
    out = []
    for image in sorted(images, key=lambda r: r.filename):
        if not expected.provenance:
            out.append(Planned(image, placed[image]))
            continue
        sidecar = sidecars.get(Path(image.filename).stem)
        if sidecar is None:
            raise OutputRefused(
                f"{server} reported {image.filename[:80]!r} without the saver's sidecar, so "
                "it cannot be proven to be this prompt's image; refused. Update the server's "
                "charpack nodes to this client's version."
            )
        out.append(Planned(image, placed[image], sidecar, placed[sidecar]))
    return out


class Fetcher:
    """The download thread of one server; fed by its worker, reporting to the runner."""

    def __init__(
        self,
        *,
        server: str,
        client: Callable[[], ComfyClient],
        inbox: queue.SimpleQueue[Any],
        folder: Path,
        gate: IdentityGate,
        rules: DownloadRules | None = None,
    ) -> None:
        self.server = server
        self.client = client
        self.inbox = inbox
        self.folder = folder
        self.gate = gate
        self.rules = rules or DownloadRules()
        self.stopping = StopSignal()  # the first Ctrl-C: downloads get STOP_GRACE_S to finish
        self.cancel = threading.Event()  # closing: drop the download under way at once
        self.jobs: queue.Queue[Any] = queue.Queue()
        self.thread = threading.Thread(target=self._run, name=f"charpack-dl-{server}", daemon=True)

    def put(self, tracked: Tracked, result: JobResult) -> None:
        self.jobs.put((tracked, result))

    def drain(self) -> None:
        """Report :class:`Drained` once the downloads queued so far are done; what has not
        arrived ``STOP_GRACE_S`` after this is dropped (left to the next run)."""
        self.stopping.set()
        self.jobs.put(Drain())

    def close(self) -> None:
        """End the thread; a download under way stops at once (its ``.part`` removed)."""
        self.cancel.set()
        self.jobs.put(Close())

    def _run(self) -> None:
        while True:
            item = self.jobs.get()
            if isinstance(item, Close):
                return
            if isinstance(item, Drain):
                self.inbox.put(Drained(self.server))
                continue
            tracked, result = item
            if self.cancel.is_set():
                continue  # closing: the next run downloads it
            self.inbox.put(DownloadStarted(self.server, tracked.key, result.prompt_id))
            early = early_stop(result)
            if early is not None:  # the early gate blocked it: nothing was saved, nothing to fetch
                where = (self.server, tracked.key, result.prompt_id)
                self.inbox.put(Finished(*where, result=result, score=early.score, rejected=True))
                continue
            score = score_of(result)
            rejected = below(self.gate, score)  # the gate's one decision for this attempt
            rel_dir = image_dir(tracked.scene, rejected=rejected)
            try:
                files = self._fetch(tracked, result, rel_dir)
            except DownloadCancelled:
                log.info("%s: %s: download left to the next run", self.server, tracked.key)
                continue
            except Exception as exc:  # reported, never the end of this thread
                self.inbox.put(self._failed(tracked, result, exc))
                continue
            self.inbox.put(
                Finished(
                    self.server,
                    tracked.key,
                    result.prompt_id,
                    result=result,
                    score=score,
                    rejected=rejected,
                    files=files,
                )
            )

    def _failed(self, tracked: Tracked, result: JobResult, exc: Exception) -> Finished:
        where = (self.server, tracked.key, result.prompt_id)
        if isinstance(exc, DiskFull):
            log.warning("%s: %s: %s", self.server, tracked.key, exc)
            return Finished(*where, disk_full=str(exc))
        if isinstance(exc, OutputRefused | PackFolderError):
            log.warning("%s: %s: output refused: %s", self.server, tracked.key, exc)
            return Finished(*where, refused=str(exc))
        if isinstance(exc, CharpackError | OSError):
            log.warning("%s: %s: download failed: %s", self.server, tracked.key, exc)
        else:
            log.exception("%s: %s: download failed", self.server, tracked.key)
        return Finished(*where, lost=f"download failed: {exc}")

    def _fetch(self, tracked: Tracked, result: JobResult, rel_dir: str) -> list[FileRecord]:
        rules = self.rules
        expected = rules.of(tracked.key)
        client = self.client()
        label = client.config.label
        todo = plan(result.outputs, expected, rel_dir, tracked.stem, label)
        images: list[FileRecord] = []
        sidecars: list[FileRecord] = []
        for item in todo:
            expect = None
            raw = b""
            if item.sidecar is not None:
                raw, meta = client.fetch_sidecar(
                    item.sidecar,
                    prompt_id=result.prompt_id,
                    image=item.image.filename,
                    not_found_s=rules.wait_s,
                    limits=rules.limits(SIDECAR_MAX_BYTES, self.stopping),
                    cancel=self.cancel,
                )
                expect = Expect(sha256=str(meta["sha256"]), size=int(meta["size"]))
                if expect.size > expected.max_image_bytes:
                    raise OutputRefused(
                        f"{label}: {item.image.filename[:80]!r} is {expect.size} bytes, more "
                        f"than this job can produce ({expected.max_image_bytes}); refused."
                    )
            got = client.download(
                item.image,
                self.folder / item.image_rel,
                not_found_s=rules.wait_s,
                limits=rules.limits(expected.max_image_bytes, self.stopping),
                cancel=self.cancel,
                root=self.folder,
                expect=expect,
            )
            images.append({"path": item.image_rel, "sha256": got.sha256, "bytes": got.size})
            if item.sidecar_rel is not None:
                kept = write_file(self.folder, self.folder / item.sidecar_rel, raw)
                sidecars.append(
                    {"path": item.sidecar_rel, "sha256": kept.sha256, "bytes": kept.size}
                )
        return images + sidecars
