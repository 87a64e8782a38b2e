"""``charpack report PACK_DIR``: what a pack folder holds, computed from its ``manifest.json``.

Owns reading a pack folder's facts for the tools around it (header fields, safe relative paths,
used by :mod:`charpack.folder.contact_sheet` and :mod:`charpack.folder.publish` too) and the
report itself: images, failures, retries, the identity score distribution (min, p10, median,
mean, p90, max of the accepted images; attempts where no face was found are counted apart, never
as a 0.0 score), time per image and per stage (named as in the pack file) and the estimated
cost at a price per GPU hour, and GPU seconds and their cost per ACCEPTED image (every
attempt's server execution time, rejected and early-stopped ones included, over the accepted
images) with the attempts the early identity gate stopped. It reads only the manifest (never
the images) and prints nothing; the CLI renders :class:`PackReport` (:mod:`charpack.cli.pack`).

Cost model: a pod is billed while it runs, so the estimate is each server's span from its first
submission to its last finish, summed over servers, times the hourly price. Time spent before
the first job (pod start, model downloads) is not in the manifest and not counted. A RunPod
Serverless endpoint is billed per worker second instead: its attempts' worker seconds times the
price of its GPU type (:mod:`charpack.serverless.bill`), never a span.
"""

from __future__ import annotations

import os
import statistics
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from charpack_nodes.pipelines.stages import stage_name

from ..serverless.bill import EndpointBill, endpoint_bills, endpoint_id_of
from .manifest import JobEntry, Manifest, ManifestError

PRICE_ENV = "CHARPACK_PRICE_PER_HOUR"
# runpod/README.md §8: an RTX 4090 pod on RunPod's secure cloud, the cloud type
# runpod/manifest.toml asks for; community cloud was ~$0.34/h. Prices change: check the console.
DEFAULT_PRICE = 0.69
DEFAULT_PRICE_SOURCE = "RTX 4090 pod, RunPod secure cloud (example price, runpod/README.md §8)"


@dataclass(frozen=True)
class Header:
    """The manifest header fields the tools show."""

    pack: str
    character: str
    created: float | None
    updated: float | None
    threshold: float | None


def read_header(manifest: Manifest) -> Header:
    """Pack name, character, dates and identity threshold from a manifest header."""
    head = manifest.header
    pack: dict[str, Any] = head["pack"] if isinstance(head.get("pack"), dict) else {}
    name = pack.get("name") or pack.get("pack") or manifest.folder.name
    character: Any = pack.get("character", head.get("character", ""))
    if isinstance(character, dict):
        character = character.get("name", "")
    identity: dict[str, Any] = head["identity"] if isinstance(head.get("identity"), dict) else {}
    threshold = identity.get("threshold")
    return Header(
        pack=str(name),
        character=str(character or ""),
        created=_number(head.get("created")),
        updated=_number(head.get("updated")),
        threshold=float(threshold) if isinstance(threshold, (int, float)) else None,
    )


def inside(folder: Path, rel: str) -> Path:
    """``folder / rel`` for a path read from a manifest; refuses one that leaves the folder."""
    pure = PurePosixPath(rel)
    if pure.is_absolute() or ".." in pure.parts or not rel:
        raise ManifestError(
            f"{folder / 'manifest.json'}: file path {rel!r} points outside the pack folder — "
            "the manifest was edited or corrupted; restore it from the run"
        )
    return folder.joinpath(*pure.parts)


def price_from_env(env: dict[str, str] | None = None) -> tuple[float, str]:
    """The hourly price and where it comes from: ``CHARPACK_PRICE_PER_HOUR`` or the default."""
    raw = (os.environ if env is None else env).get(PRICE_ENV, "").strip()
    if not raw:
        return DEFAULT_PRICE, DEFAULT_PRICE_SOURCE
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(
            f"{PRICE_ENV}={raw!r} is not a number — set it to dollars per GPU hour, e.g. 0.69"
        ) from None
    if value < 0:
        raise ValueError(f"{PRICE_ENV}={raw!r} is negative — set dollars per GPU hour, e.g. 0.69")
    return value, f"from {PRICE_ENV}"


@dataclass(frozen=True)
class SceneRow:
    scene: str
    jobs: int
    done: int
    below_threshold: int
    failed: int
    pending: int
    attempts: int
    mean_score: float | None
    no_face: int = 0  # attempts whose image had no face the identity node could find


@dataclass(frozen=True)
class Failure:
    key: str
    status: str
    attempts: int
    error: str


@dataclass(frozen=True)
class PackReport:
    """Everything ``charpack report`` shows; :meth:`to_json` is the ``--json`` shape."""

    folder: str
    header: Header
    jobs: int
    status: dict[str, int]  # job status -> count
    attempts: int
    attempt_status: dict[str, int]  # attempt status -> count
    retried_jobs: int  # jobs that needed more than one attempt
    scenes: list[SceneRow]
    failures: list[Failure]
    accepted_scores: list[float]  # score of each accepted image
    rejected_scores: list[float]  # score of each attempt below the threshold
    no_face_attempts: int  # attempts whose image had no face (no score; retried by the gate)
    no_face_images: int  # accepted images with no face found (only without an identity gate)
    execution_s: list[float]  # server execution time of each attempt that has one
    queue_wait_s: list[float]
    stage_means_s: dict[str, float]
    server_spans_s: dict[str, float]  # redacted server -> first submission to last finish
    price_per_hour: float
    price_source: str
    servers: dict[str, int] = field(default_factory=dict)  # server -> attempts
    endpoint_bills: list[EndpointBill] = field(default_factory=list)  # Serverless endpoints
    stopped_early: int = 0  # attempts the early identity gate stopped after the InstantID fix
    early_scores: list[float] = field(default_factory=list)  # their early scores (with a face)

    @property
    def endpoint_cost(self) -> float:
        return sum(b.cost for b in self.endpoint_bills)

    @property
    def images(self) -> int:
        return self.status.get("done", 0)

    @property
    def billed_s(self) -> float:
        """Pod seconds (spans) plus endpoint worker seconds."""
        return sum(self.server_spans_s.values()) + sum(b.worker_s for b in self.endpoint_bills)

    @property
    def cost(self) -> float | None:
        """Estimated dollars for the run (None without timings)."""
        if not self.server_spans_s and not self.endpoint_bills:
            return None
        pods = sum(self.server_spans_s.values()) / 3600 * self.price_per_hour
        return pods + self.endpoint_cost

    @property
    def cost_per_image(self) -> float | None:
        return None if self.cost is None or not self.images else self.cost / self.images

    @property
    def seconds_per_image(self) -> float | None:
        """Billed seconds per accepted image: retries and failures are part of the price."""
        timed = self.server_spans_s or self.endpoint_bills
        return self.billed_s / self.images if self.images and timed else None

    @property
    def gpu_seconds_per_image(self) -> float | None:
        """Server execution seconds (all attempts) per accepted image."""
        return sum(self.execution_s) / self.images if self.images and self.execution_s else None

    @property
    def gpu_cost_per_image(self) -> float | None:
        """Dollars of server execution (all attempts, rejected and stopped ones too) per
        accepted image at the hourly price: the GPU's share of :attr:`cost_per_image`."""
        gpu = self.gpu_seconds_per_image
        return None if gpu is None else gpu / 3600 * self.price_per_hour

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(
            images=self.images,
            billed_s=round(self.billed_s, 3),
            cost=_round(self.cost, 4),
            cost_per_image=_round(self.cost_per_image, 5),
            seconds_per_image=_round(self.seconds_per_image, 3),
            gpu_seconds_per_image=_round(self.gpu_seconds_per_image, 3),
            gpu_cost_per_image=_round(self.gpu_cost_per_image, 6),
            score_stats=score_stats(self.accepted_scores),
            endpoint_bills=[b.to_json() for b in self.endpoint_bills],
        )
        return data


def build_report(folder: Path, *, price_per_hour: float, price_source: str = "given") -> PackReport:
    """Read ``folder``'s manifest and compute the report (the images are not opened)."""
    if price_per_hour < 0:
        raise ValueError(f"price per hour must not be negative, got {price_per_hour}")
    manifest = Manifest.load(folder)
    status: Counter[str] = Counter()
    attempt_status: Counter[str] = Counter()
    per_scene: dict[str, list[JobEntry]] = defaultdict(list)
    failures: list[Failure] = []
    accepted: list[float] = []
    rejected: list[float] = []
    no_face = no_face_images = 0
    execution: list[float] = []
    waits: list[float] = []
    stages: dict[str, list[float]] = defaultdict(list)
    spans: dict[str, tuple[float, float]] = {}
    servers: Counter[str] = Counter()
    attempts = retried = stopped = 0
    early: list[float] = []
    on_endpoints: list[Any] = []
    for entry in manifest:
        job_status = str(entry.get("status", "pending"))
        status[job_status] += 1
        per_scene[str(entry.get("scene", "?"))].append(entry)
        tries = entry.get("attempts") or []
        attempts += len(tries)
        retried += len(tries) > 1
        if job_status == "done" and isinstance(entry.get("score"), (int, float)):
            accepted.append(float(entry["score"]))  # type: ignore[arg-type]
        elif job_status == "done" and tries and tries[-1].get("face") is False:
            no_face_images += 1
        if job_status in ("failed", "below_threshold"):
            last = tries[-1].get("error") if tries else None
            error = entry.get("error") or last or _below(entry.get("score"), tries)
            failures.append(Failure(entry["key"], job_status, len(tries), str(error)))
        for attempt in tries:
            attempt_status[str(attempt.get("status", "?"))] += 1
            no_face += attempt.get("face") is False
            if attempt.get("stopped_at"):
                stopped += 1
                if (early_score := _number(attempt.get("early_score"))) is not None:
                    early.append(early_score)
            score = attempt.get("score")
            if attempt.get("status") == "below_threshold" and isinstance(score, (int, float)):
                rejected.append(float(score))
            _collect_times(attempt, execution, waits, stages)
            server = str(attempt.get("server") or "?")
            servers[server] += 1
            if endpoint_id_of(server) is not None:
                on_endpoints.append(attempt)  # billed per worker second, not by its span
                continue
            start, end = _number(attempt.get("submitted_at")), _number(attempt.get("finished_at"))
            if start is not None and end is not None and end >= start:
                lo, hi = spans.get(server, (start, end))
                spans[server] = (min(lo, start), max(hi, end))
    return PackReport(
        folder=str(folder),
        header=read_header(manifest),
        jobs=len(manifest),
        status=dict(status),
        attempts=attempts,
        attempt_status=dict(attempt_status),
        retried_jobs=retried,
        scenes=[_scene_row(name, entries) for name, entries in per_scene.items()],
        failures=failures,
        accepted_scores=accepted,
        rejected_scores=rejected,
        no_face_attempts=no_face,
        no_face_images=no_face_images,
        execution_s=execution,
        queue_wait_s=waits,
        stage_means_s={k: statistics.fmean(v) for k, v in stages.items()},
        server_spans_s={k: hi - lo for k, (lo, hi) in spans.items()},
        price_per_hour=price_per_hour,
        price_source=price_source,
        servers=dict(servers),
        endpoint_bills=endpoint_bills(on_endpoints, manifest.header.get("servers") or {}),
        stopped_early=stopped,
        early_scores=early,
    )


def _collect_times(
    attempt: Any, execution: list[float], waits: list[float], stages: dict[str, list[float]]
) -> None:
    run = _number(attempt.get("execution_s"))
    if run is not None:
        execution.append(run)
    wait = _number(attempt.get("queue_wait_s"))
    if wait is not None:
        waits.append(wait)
    # The manifest records node-id prefixes (``detail``); the report names stages as the pack
    # file does (``face_detailer``), old manifests included.
    for stage, seconds in (attempt.get("stage_timings") or {}).items():
        if isinstance(seconds, (int, float)):
            stages[stage_name(str(stage))].append(float(seconds))


def _scene_row(name: str, entries: list[JobEntry]) -> SceneRow:
    counts = Counter(str(e.get("status", "pending")) for e in entries)
    scores = [
        float(s)
        for e in entries
        if e.get("status") == "done" and isinstance(s := e.get("score"), (int, float))
    ]
    return SceneRow(
        scene=name,
        jobs=len(entries),
        done=counts["done"],
        below_threshold=counts["below_threshold"],
        failed=counts["failed"],
        pending=counts["pending"] + counts["submitted"],
        attempts=sum(len(e.get("attempts") or []) for e in entries),
        mean_score=statistics.fmean(scores) if scores else None,
        no_face=sum(a.get("face") is False for e in entries for a in e.get("attempts") or []),
    )


def score_stats(scores: list[float]) -> dict[str, float] | None:
    """min / p10 / median / mean / p90 / max of ``scores`` (None when there are none).

    p10 and p90 interpolate between the sorted scores (``statistics.quantiles``, inclusive): the
    score that 10 % of the images fall below, and 90 %.
    """
    if not scores:
        return None
    p10 = p90 = scores[0]
    if len(scores) > 1:
        deciles = statistics.quantiles(scores, n=10, method="inclusive")
        p10, p90 = deciles[0], deciles[-1]
    return {
        "min": min(scores),
        "p10": p10,
        "median": statistics.median(scores),
        "mean": statistics.fmean(scores),
        "p90": p90,
        "max": max(scores),
    }


def _below(score: Any, attempts: list[Any]) -> str:
    if (
        not isinstance(score, (int, float))
        and attempts
        and all(a.get("face") is False for a in attempts if a.get("status") == "below_threshold")
    ):
        return "no face found in any attempt; one of its images is kept in rejected/"
    best = f"best score {score:.3f}" if isinstance(score, (int, float)) else "no score"
    return f"every attempt scored below the identity threshold ({best}); its image is kept"


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)
