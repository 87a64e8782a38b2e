"""``charpack selftest``: does this server make on-identity images fast enough?

Owns :func:`selftest`: it runs the fixed 5-shot identity test (portrait, full body, profile,
dramatic light, expression; :data:`charpack.character.identity_test.SHOTS`) for a character on
one server — a user's pod, a local ComfyUI, the CPU test world — with the whole pipeline and
one attempt per shot, while a thread samples ``/system_stats`` for the memory the device uses.
From the pack folder it made it reports each stage's time (the server's own timestamps, per
shot), the identity mean, p10 and min, the peak device memory seen, and each target met or
missed (:data:`TARGETS`). The character is the given pack file's, or, without one, the
synthetic example character shipped with charpack (it measures the server, not a likeness).
"""

from __future__ import annotations

import statistics
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

from ..character.identity_test import SHOTS, identity_pack
from ..comfy.auth import ServerConfig
from ..comfy.client import ComfyClient
from ..errors import CharpackError
from ..folder.manifest import Manifest
from ..folder.report import score_stats
from ..pack.packfile import load_pack
from ..run.options import RunOptions, RunSummary
from ..run.runner import run_pack

# The targets (design.md §5 and the identity reference): a warm 4090 should finish a
# 3328x4864 image in about 12 s (a target no GPU run has measured yet); likeness at a mean
# >= 0.75 is best in class for tuning-free adapters, and no shot below the pack's threshold.
TARGETS: dict[str, float] = {"seconds_per_image": 12.0, "identity_mean": 0.75}
SAMPLE_S = 0.5  # how often /system_stats is read for the memory in use


@dataclass(frozen=True)
class Target:
    name: str
    wanted: str
    measured: str
    met: bool


@dataclass(frozen=True)
class SelftestReport:
    server: str
    folder: Path
    device: str
    comfyui_version: str | None
    shots: int
    images: int
    stage_seconds: dict[str, float]  # per stage, median of the shots that ran it (not cached)
    seconds_per_image: float | None  # median execution time of the shots after the first
    identity: dict[str, float] | None  # min, p10, median, mean, p90, max
    threshold: float
    peak_memory_bytes: int | None
    memory_total_bytes: int | None
    targets: list[Target] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(t.met for t in self.targets)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "server": self.server, "folder": str(self.folder),
            "device": self.device, "comfyui_version": self.comfyui_version,
            "shots": self.shots, "images": self.images, "stage_seconds": self.stage_seconds,
            "seconds_per_image": self.seconds_per_image, "identity": self.identity,
            "threshold": self.threshold, "peak_memory_bytes": self.peak_memory_bytes,
            "memory_total_bytes": self.memory_total_bytes,
            "targets": [vars(t) for t in self.targets],
        }  # fmt: skip


class MemorySampler:
    """Reads ``/system_stats`` every :data:`SAMPLE_S` on a thread; the most memory the first
    device had in use (total − free) is the peak. A sampled peak: a spike between two reads
    is missed, so it is a lower bound."""

    def __init__(self, client: ComfyClient) -> None:
        self.client = client
        self.peak: int | None = None
        self.total: int | None = None
        self.device = "?"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="selftest-memory", daemon=True)

    def __enter__(self) -> MemorySampler:
        self.read()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self.read()

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            self.read()

    def read(self) -> None:
        try:
            devices = self.client.system_stats().get("devices") or []
        except CharpackError:
            return  # a missed sample; the run itself reports a server that is down
        if not devices or not isinstance(devices[0], dict):
            return
        first = devices[0]
        total, free = first.get("vram_total"), first.get("vram_free")
        self.device = f"{first.get('name', '?')} ({first.get('type', '?')})"
        if isinstance(total, int) and isinstance(free, int):
            self.total = total
            self.peak = max(self.peak or 0, total - free)


def default_character() -> Path:
    """The synthetic example character shipped in the package (``data/selftest/``)."""
    return Path(str(resources.files("charpack") / "data" / "selftest" / "character.yaml"))


def selftest(
    server: ServerConfig,
    *,
    out: Path,
    pack_file: Path | None = None,
    options: RunOptions | None = None,
    on_start: Callable[[Path], None] | None = None,
) -> SelftestReport:
    """Run the 5-shot test on ``server`` into ``out`` and measure it (see the module doc)."""
    source = pack_file or default_character()
    raw = load_pack(source).raw
    target = out / "selftest.yaml"
    identity_pack(raw, name="charpack-selftest", source_dir=source.parent, target=target,
                  lora=raw["character"].get("lora"))  # fmt: skip
    pack = load_pack(target)
    if on_start is not None:
        on_start(target)
    client = ComfyClient(config=server)
    try:
        with MemorySampler(client) as memory:
            summary = run_pack(
                pack, servers=[server], options=replace(options or RunOptions(), out=out / "run")
            )
    finally:
        client.close()
    return measure(summary, memory, server, pack.identity.threshold)


def measure(
    summary: RunSummary, memory: MemorySampler, server: ServerConfig, threshold: float
) -> SelftestReport:
    """The report of a finished selftest run (its pack folder and the memory samples)."""
    manifest = Manifest.load(summary.folder)
    jobs = list(manifest)
    done = [j for j in jobs if j.get("image")]
    attempts = [j["attempts"][-1] for j in done if j.get("attempts")]
    stages: dict[str, list[float]] = {}
    for attempt in attempts:
        for stage, seconds in (attempt.get("stage_timings") or {}).items():
            stages.setdefault(stage, []).append(float(seconds))
    executions = [float(a["execution_s"]) for a in attempts if a.get("execution_s") is not None]
    warm = executions[1:] or executions  # the first shot loads the models
    scores = [float(j["score"]) for j in done if isinstance(j.get("score"), (int, float))]
    identity = score_stats(scores)
    version = next((a.get("comfyui_version") for a in attempts if a.get("comfyui_version")), None)
    per_image = statistics.median(warm) if warm else None
    report = SelftestReport(
        server=server.label, folder=summary.folder, device=memory.device,
        comfyui_version=version, shots=len(SHOTS), images=len(done),
        stage_seconds={k: statistics.median(v) for k, v in stages.items()},
        seconds_per_image=per_image, identity=identity, threshold=threshold,
        peak_memory_bytes=memory.peak, memory_total_bytes=memory.total,
    )  # fmt: skip
    return replace(report, targets=targets(report))


def targets(r: SelftestReport) -> list[Target]:
    """Each target, met or missed, with what was measured."""
    mean = r.identity["mean"] if r.identity else None
    low = r.identity["min"] if r.identity else None
    seconds = r.seconds_per_image
    return [
        Target("every shot made an image", f"{r.shots} of {r.shots}", f"{r.images}",
               r.images == r.shots),
        Target("time per image (warm, median)", f"≤ {TARGETS['seconds_per_image']:.0f} s",
               "—" if seconds is None else f"{seconds:.1f} s",
               seconds is not None and seconds <= TARGETS["seconds_per_image"]),
        Target("identity mean", f"≥ {TARGETS['identity_mean']:.2f}",
               "—" if mean is None else f"{mean:.3f}",
               mean is not None and mean >= TARGETS["identity_mean"]),
        Target("every shot on identity (min)", f"≥ {r.threshold:.2f}",
               "—" if low is None else f"{low:.3f}", low is not None and low >= r.threshold),
    ]  # fmt: skip
