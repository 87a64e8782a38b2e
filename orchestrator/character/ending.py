"""The end of a training: the last chunk's LoRA downloaded and proven, the loss files written.

Owns :class:`TrainingEnd`, the part of :class:`charpack.character.driver.Driver` that finishes a
training: the download from ``/view`` checked against the sha256 and size the save node
reported and by the file's own header (this run, this chunk), the ``.sha256`` file,
``loss.json`` and the loss plots (``training/v<N>/loss.png`` and one beside the LoRA).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..comfy.auth import ServerConfig
from ..comfy.client import ComfyClient
from ..comfy.downloads import Expect
from ..comfy.limits import MB, Limits
from ..comfy.results import OutputRef
from ..errors import (
    MissingOnServer,
    TrainingError,
)
from ..folder.integrity import atomic_write
from ..pack.uploads import file_sha256
from .chunks import DOWNLOAD_FOLDER, MAX_LORA_BYTES, SAVE, SAVE_KEY, TrainingResult
from .layout import CharacterFolder
from .lossplot import write_loss_plot
from .state import (
    ChunkRecord,
    TrainingState,
    safetensors_metadata,
)

log = logging.getLogger(__name__)


class TrainingEnd:
    """Finishing a training; mixed into the driver, which provides these."""

    state: TrainingState
    folder: CharacterFolder
    dir: Path
    client: ComfyClient
    server: ServerConfig
    resumed_from: str | None
    reattached: bool

    def emit(self, kind: str, message: str, **values: Any) -> None:
        raise NotImplementedError

    def _call(self, fn: Callable[[], Any]) -> Any:
        raise NotImplementedError

    def _save(self) -> None:
        raise NotImplementedError

    def _last_loss(self) -> float | None:
        raise NotImplementedError

    def _finish(self) -> TrainingResult:
        state = self.state
        last = state.chunks[-1]
        dest = self.folder.lora_file(state.character, state.version)
        if state.status != "finished":
            downloaded = self._download(last, dest)
            sha_file = dest.with_name(dest.name + ".sha256")
            line = f"{downloaded[0]}  {dest.name}\n".encode("ascii")
            atomic_write(sha_file, lambda fh: fh.write(line), doing=f"write {sha_file.name}")
            self._write_losses()
            self._plot_losses(dest)
            state.lora = {
                "path": str(dest),
                "sha256": downloaded[0],
                "bytes": downloaded[1],
                "server_file": last.lora_name,
            }
            state.status = "finished"
            self._save()
            self.emit(
                "finished",
                f"trained {state.total_steps} steps: {dest}",
                step=state.total_steps,
                total=state.total_steps,
                loss=self._last_loss(),
            )
        lora = state.lora or {}
        return TrainingResult(
            version=state.version,
            version_dir=self.dir,
            lora_path=dest,
            sha256=str(lora.get("sha256")),
            bytes=int(lora.get("bytes") or 0),
            steps=state.total_steps,
            losses=tuple(v for c in state.chunks for v in c.losses or ()),
            resumed_from=self.resumed_from,
            reattached=self.reattached,
            server_file=last.lora_name,
            loss_plot=self.dir / "loss.png",
        )

    def _download(self, last: ChunkRecord, dest: Path) -> tuple[str, int]:
        """The last chunk's file into ``dest``, checked against the sha256 and size the save
        node reported and by its header (this run, this chunk). When the report was lost with
        a restarted server, the header alone proves it."""
        if dest.exists():  # an earlier process downloaded it and was killed before the end
            if (file_sha256(dest) == last.sha256) if last.sha256 else self._ours(dest, last):
                return file_sha256(dest), dest.stat().st_size
            raise TrainingError(
                f"{dest} exists and is not this training's LoRA; charpack never overwrites it. "
                "Move it away and run the training again."
            )
        ref = self._ref(last)
        known = last.sha256 is not None and last.bytes is not None
        expect = Expect(sha256=last.sha256 or "", size=last.bytes or 0) if known else None
        limits = Limits(
            max_bytes=(last.bytes or MAX_LORA_BYTES) + MB,
            idle_s=60.0,
            deadline_s=3600.0,
            cap_is="the LoRA the server reported" if known else "a LoRA",
        )
        try:
            got = self._call(
                lambda: self.client.download(
                    ref, dest, limits=limits, root=self.folder.root, expect=expect
                )
            )
        except MissingOnServer as exc:
            raise TrainingError(
                f"{self.server.label} no longer serves {ref.subfolder}/{ref.filename} ({exc}); "
                f"the server file is models/loras/{last.lora_name} — copy it by hand"
            ) from None
        wrong = known and (got.sha256 != last.sha256 or got.size != last.bytes)
        if wrong or not self._ours(got.path, last):
            dest.unlink(missing_ok=True)
            raise TrainingError(
                f"the downloaded {ref.filename} is not the file chunk {last.index + 1} of this "
                f"training saved (sha256 {got.sha256[:12]}…, {got.size} bytes; the server "
                f"reported {(last.sha256 or '?')[:12]}…, {last.bytes} bytes, run "
                f"{self.state.run_id}); run the training again to fetch it again"
            )
        self.emit("downloaded", f"{dest.name}: sha256 {got.sha256}, {got.size} bytes")
        return got.sha256, got.size

    def _ref(self, last: ChunkRecord) -> OutputRef:
        """Where ``/view`` serves the last chunk's file (as the save node reported it, else
        where it links every file: ``output/charpack_loras/<name in models/loras>``)."""
        if last.filename is not None:
            filename, subfolder = last.filename, last.subfolder or ""
        elif last.lora_name is not None:
            folder, _, filename = last.lora_name.rpartition("/")
            subfolder = "/".join(p for p in (DOWNLOAD_FOLDER, folder) if p)
        else:
            raise TrainingError(
                f"training v{self.state.version}: no file of the last chunk is known; run the "
                "training again"
            )
        return OutputRef(
            filename=filename, subfolder=subfolder, type="output", node_id=SAVE, key=SAVE_KEY
        )

    def _ours(self, path: Path, last: ChunkRecord) -> bool:
        """True when ``path``'s safetensors header names this run and ``last``'s chunk."""
        meta = safetensors_metadata(path)
        run, chunk = meta.get("charpack_run"), meta.get("charpack_chunk")
        return run == self.state.run_id and chunk == str(last.index)

    def _write_losses(self) -> None:
        body = {
            "total_steps": self.state.total_steps,
            "chunks": [
                {
                    "index": c.index,
                    "start_step": c.start_step,
                    "steps": c.steps,
                    "learning_rate": c.learning_rate,
                    "losses": c.losses,
                }
                for c in self.state.chunks
            ],
        }
        data = json.dumps(body, indent=2).encode("utf-8") + b"\n"
        atomic_write(self.dir / "loss.json", lambda fh: fh.write(data), doing="write loss.json")

    def _plot_losses(self, dest: Path) -> None:
        """``training/v<N>/loss.png`` and its copy beside the LoRA; a chunk whose losses were
        never seen (it finished while no client followed it) is drawn as a gap."""
        losses = [
            v
            for c in self.state.chunks
            for v in (c.losses if c.losses is not None else [math.nan] * c.steps)
        ]
        boundaries = [c.end_step for c in self.state.chunks]
        title = f"{self.state.character} v{self.state.version}"
        for path in (self.dir / "loss.png", dest.with_name(f"{dest.stem}.loss.png")):
            write_loss_plot(losses, path, boundaries=boundaries, title=title)
