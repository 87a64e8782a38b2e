"""Bringing a finished prompt's files into the pack folder, on one thread per server.

Owns :class:`Fetcher`: it streams each output of a finished prompt (the image first, then the
saver's JSON sidecar) to its deterministic place — ``<scene>/<stem>.png``, or
``rejected/<scene>/<stem>.png`` when the identity score is below the pack's threshold — hashing
it on the way (:meth:`~orchestrator.client.ComfyClient.download`: temp file, atomic rename, so a
crash never leaves half an image under a final name), then reports :class:`Finished` to the
runner. Nothing is held in memory but one chunk. A download that fails is reported as a lost
attempt, so the job runs again rather than being lost.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .client import ComfyClient
from .client_results import JobResult, OutputRef
from .errors import CharpackError
from .manifest import FileRecord
from .packfile import IdentityGate
from .run_messages import Close, DownloadStarted, Drain, Drained, Finished
from .run_rules import NO_FACE, Score, below
from .run_state import image_dir

log = logging.getLogger(__name__)

SCORE_NODE = "score.run"


@dataclass(frozen=True)
class Tracked:
    """A prompt a worker follows: its job and where its files go."""

    key: str
    scene: str
    stem: str


def score_of(result: JobResult) -> Score:
    """The identity result in a finished prompt's UI output: the lowest score of a batch,
    :data:`~orchestrator.run_rules.NO_FACE` when an image of it has no face (the node lists
    ``null`` for its score and ``false`` in ``faces``; older node packs said so only in a
    warning, with a 0.0 score), or None when the graph has no identity node."""
    ui = result.ui.get(SCORE_NODE) or next((u for u in result.ui.values() if "scores" in u), {})
    scores = tuple(ui.get("scores", ()))
    warnings = [str(w) for w in ui.get("warnings", ())]
    if (
        any(v is None for v in scores)
        or any(f is False for f in ui.get("faces", ()))
        or any(w.startswith("no face found in image") for w in warnings)
    ):
        return NO_FACE
    values = [float(v) for v in scores if isinstance(v, int | float) and not isinstance(v, bool)]
    return min(values) if values else None


def destinations(
    refs: tuple[OutputRef, ...], rel_dir: str, stem: str
) -> list[tuple[OutputRef, str]]:
    """Each output and its path in the pack folder; images first (the pack-folder tools take an
    attempt's first file as its picture)."""
    ordered = sorted(refs, key=lambda r: (r.key != "images", r.key, r.filename))
    seen: dict[str, int] = {}
    out = []
    for ref in ordered:
        suffix = Path(ref.filename).suffix.lower() or ".bin"
        count = seen.get(suffix, 0)
        seen[suffix] = count + 1
        name = f"{stem}{suffix}" if count == 0 else f"{stem}_{count:02d}{suffix}"
        out.append((ref, f"{rel_dir}/{name}"))
    return out


class Fetcher:
    """The download thread of one server; fed by its worker, reporting to the runner."""

    def __init__(
        self,
        *,
        server: str,
        client: Callable[[], ComfyClient],
        inbox: queue.Queue[Any],
        folder: Path,
        gate: IdentityGate,
        download_wait_s: float,
    ) -> None:
        self.server = server
        self.client = client
        self.inbox = inbox
        self.folder = folder
        self.gate = gate
        self.download_wait_s = download_wait_s
        self.jobs: queue.Queue[Any] = queue.Queue()
        self.thread = threading.Thread(target=self._run, name=f"charpack-dl-{server}", daemon=True)

    def put(self, tracked: Tracked, result: JobResult) -> None:
        self.jobs.put((tracked, result))

    def drain(self) -> None:
        """Report :class:`Drained` once the downloads queued so far are done."""
        self.jobs.put(Drain())

    def close(self) -> None:
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
            self.inbox.put(DownloadStarted(self.server, tracked.key, result.prompt_id))
            score = score_of(result)
            rel_dir = image_dir(tracked.scene, rejected=below(self.gate, score))
            try:
                files = self._fetch(result.outputs, rel_dir, tracked.stem)
            except (CharpackError, OSError) as exc:
                log.warning("%s: %s: download failed: %s", self.server, tracked.key, exc)
                self.inbox.put(
                    Finished(
                        self.server, tracked.key, result.prompt_id, lost=f"download failed: {exc}"
                    )
                )
                continue
            self.inbox.put(
                Finished(
                    self.server,
                    tracked.key,
                    result.prompt_id,
                    result=result,
                    score=score,
                    files=files,
                )
            )

    def _fetch(self, refs: tuple[OutputRef, ...], rel_dir: str, stem: str) -> list[FileRecord]:
        client = self.client()
        records: list[FileRecord] = []
        for ref, rel in destinations(refs, rel_dir, stem):
            got = client.download(ref, self.folder / rel, not_found_s=self.download_wait_s)
            records.append({"path": rel, "sha256": got.sha256, "bytes": got.size})
        return records
