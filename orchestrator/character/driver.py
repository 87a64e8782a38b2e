"""One process's run of a training: posting chunks, following them, surviving a lost server.

Owns :class:`Driver`, which :func:`charpack.character.training.train_character` builds: it
uploads the dataset once, posts each chunk under the prompt id its state records first,
follows it with the websocket (a hint) and ``/history`` (the truth), reattaches to a prompt an
earlier process posted, rebases the plan on the chunk files a restarted server still lists, and
waits out an unreachable server for ``give_up_s``. The end of a training (download, loss files)
is :class:`charpack.character.ending.TrainingEnd`.
"""

from __future__ import annotations

import json
import logging
import mimetypes
import queue
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from charpack_nodes.pipelines import catalog

from ..comfy.auth import ServerConfig
from ..comfy.client import ComfyClient
from ..comfy.events import Disconnected, Done, Event, Progress, Reconnected
from ..comfy.results import JobState, parse_history
from ..comfy.stream import EventStream
from ..errors import (
    PromptRejected,
    ServerUnavailable,
    TrainingError,
)
from .chunks import NO_LORA, SAVE, SAVE_KEY, TRAIN, TrainingEvent, TrainingResult, chunk_graph
from .ending import TrainingEnd
from .layout import CharacterFolder
from .presets import TrainingSpec
from .state import (
    ChunkRecord,
    TrainingState,
    now_iso,
    save_state,
)

log = logging.getLogger(__name__)


class _Lost(Exception):
    """The server no longer knows a chunk's prompt, or a file a chunk needs is gone."""


class Driver(TrainingEnd):
    """One process's run of a training: a client, a websocket, the state, the events."""

    def __init__(
        self,
        *,
        folder: CharacterFolder,
        state: TrainingState,
        pairs: list[tuple[Path, Path]],
        server: ServerConfig,
        on_event: Callable[[TrainingEvent], None] | None,
        give_up_s: float,
        poll_s: float,
    ) -> None:
        self.folder = folder
        self.state = state
        self.pairs = pairs
        self.server = server
        self.on_event = on_event
        self.give_up_s = give_up_s
        self.poll_s = poll_s
        self.dir = folder.training(state.version)
        self.client = ComfyClient(config=server)
        self.stream = EventStream(config=server, client_id=state.client_id)
        self.events: queue.Queue[Event] = self.stream.subscribe()
        self.uploaded = False
        self.down_since: float | None = None
        self.resumed_from: str | None = None
        self.reattached = False
        self.rate_start: tuple[float, int] | None = None  # (time, step) of this process's first

    # -- the run ---------------------------------------------------------------------------

    def run(self, resumed: bool) -> TrainingResult:
        state = self.state
        self.stream.start()
        try:
            verb = "continuing" if resumed else "starting"
            self.emit(
                "started",
                f"{verb} training v{state.version} of {state.character}: "
                f"{len(state.chunks)} chunks, {state.total_steps} steps on "
                f"{self.server.label}",
                total=state.total_steps,
            )
            if state.status != "finished":
                self._train()
            return self._finish()
        finally:
            self.stream.close()
            self.client.close()

    def _train(self) -> None:
        while (record := self._next()) is not None:
            try:
                if record.status == "posted":
                    self.reattached = True
                    self.emit(
                        "reattached",
                        f"following chunk {record.index + 1}'s prompt "
                        f"{record.prompt_id}, posted by an earlier run",
                        chunk=record.index,
                    )
                else:
                    self._post(record)
                entry = self._follow(record)
            except _Lost as lost:
                self._recover(str(lost))
                continue
            self._record(record, entry)
        self._save()

    def _next(self) -> ChunkRecord | None:
        return next((c for c in self.state.chunks if c.status != "done"), None)

    def _base(self, record: ChunkRecord) -> str:
        """The server file ``record`` continues from; :class:`_Lost` when the server lacks it."""
        if record.index == 0:
            return NO_LORA
        previous = self.state.chunks[record.index - 1]
        name = previous.lora_name or ""
        if name not in self._call(lambda: self.client.models(catalog.FOLDER_LORAS)):
            raise _Lost(f"the server no longer has {name or 'the previous chunk file'}")
        return name

    def _post(self, record: ChunkRecord) -> None:
        base = self._base(record)
        if not self.uploaded:
            self._call(self._upload)
        state = self.state
        record.attempt += 1
        record.prompt_id = state.prompt_id(record)
        record.status = "posted"
        self._save()  # before the post: a process killed during it finds the id
        graph = chunk_graph(
            folder=state.upload_folder,
            checkpoint=state.checkpoint,
            spec=TrainingSpec(**state.spec),
            chunk=record.chunk(),
            existing_lora=base,
            name=state.server_name,
            metadata=self._metadata(record),
        )
        prompt_id = record.prompt_id
        try:
            self.client.submit(graph, prompt_id=prompt_id, client_id=state.client_id)
        except PromptRejected:
            record.status, record.prompt_id = "planned", None  # nothing queued: post it again
            self._save()
            raise
        except ServerUnavailable as exc:
            # Never posted again under this id: once the server answers, job_state says
            # whether it was queued, and a prompt it never took is lost (a new attempt).
            log.info("%s: post of %s unclear (%s); following it", self.server.label, prompt_id, exc)
        self.emit(
            "posted",
            f"chunk {record.index + 1}/{len(state.chunks)}: steps "
            f"{record.start_step + 1}–{record.end_step} at learning rate "
            f"{record.learning_rate:g} (prompt {prompt_id})",
            chunk=record.index,
            step=record.start_step,
            total=state.total_steps,
        )

    def _metadata(self, record: ChunkRecord) -> dict[str, str]:
        state = self.state
        return {
            "charpack_character": state.character,
            "charpack_version": str(state.version),
            "charpack_run": state.run_id,
            "charpack_chunk": str(record.index),
            "charpack_dataset_sha256": state.dataset_hash,
            "charpack_spec": json.dumps(state.spec, sort_keys=True),
        }

    def _upload(self) -> None:
        """Every picture and caption into ``input/<upload_folder>/`` under its own name
        (overwriting: the folder is named by the dataset's content)."""
        for image, caption in self.pairs:
            for path in (image, caption):
                data = path.read_bytes()
                mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
                response = self.client.http.request(
                    "POST",
                    "/upload/image",
                    what=f"upload of {path.name}",
                    files={"image": (path.name, data, mime)},
                    data={
                        "type": "input",
                        "subfolder": self.state.upload_folder,
                        "overwrite": "true",
                    },
                )
                body = self.client.http.json(response, f"upload of {path.name}")
                if body.get("name") != path.name:
                    raise TrainingError(
                        f"{self.server.label} stored {path.name} as {body.get('name')!r}; the "
                        "caption pairing needs the same names. Check the server's input folder."
                    )
        self.uploaded = True
        self.emit(
            "uploaded",
            f"{len(self.pairs)} pictures with captions in input/{self.state.upload_folder}/",
        )

    # -- following one prompt --------------------------------------------------------------

    def _follow(self, record: ChunkRecord) -> dict[str, Any]:
        """Wait until ``record``'s prompt is done; its history entry. :class:`_Lost` when the
        server no longer knows it."""
        prompt_id = record.prompt_id or ""
        last_poll = time.monotonic()
        poll_now = True
        while True:
            if poll_now or time.monotonic() - last_poll >= self.poll_s:
                entry = self._poll(prompt_id)
                if entry is not None:
                    return entry
                last_poll, poll_now = time.monotonic(), False
            try:
                event = self.events.get(timeout=self.poll_s)
            except queue.Empty:
                poll_now = True
                continue
            if isinstance(event, Progress) and event.prompt_id == prompt_id and event.node == TRAIN:
                self._progress(record, int(event.value))
            elif isinstance(event, Done) and event.prompt_id == prompt_id:
                poll_now = True
            elif isinstance(event, Disconnected | Reconnected):
                poll_now = True

    def _poll(self, prompt_id: str) -> dict[str, Any] | None:
        job = self._call(lambda: self.client.job_state(prompt_id))
        if job is JobState.LOST:
            raise _Lost(
                f"the server does not know prompt {prompt_id} (it restarted, or the post never "
                "reached it)"
            )
        if job is not JobState.DONE:
            return None
        entry: dict[str, Any] | None = self._call(lambda: self.client.history(prompt_id))
        return entry

    def _progress(self, record: ChunkRecord, value: int) -> None:
        step = record.start_step + value
        now = time.monotonic()
        if self.rate_start is None:
            self.rate_start = (now, step)
        eta: float | None = None
        t0, s0 = self.rate_start
        if step > s0 and now > t0:
            eta = (self.state.total_steps - step) * (now - t0) / (step - s0)
        loss = self._last_loss()
        self.emit(
            "progress",
            f"step {step}/{self.state.total_steps}",
            chunk=record.index,
            step=step,
            total=self.state.total_steps,
            loss=loss,
            eta_s=eta,
        )

    def _last_loss(self) -> float | None:
        done = [c for c in self.state.chunks if c.status == "done" and c.losses]
        if not done:
            return None
        losses = done[-1].losses or []
        return sum(losses) / len(losses)

    def _record(self, record: ChunkRecord, entry: dict[str, Any]) -> None:
        result = parse_history(record.prompt_id or "", entry)
        if not result.ok:
            failure = result.failure
            said = failure.message if failure else "no details in history"
            where = f"{failure.node_id} ({failure.node_type})" if failure else "an unknown node"
            raise TrainingError(
                f"chunk {record.index + 1} of training v{self.state.version} failed on "
                f"{self.server.label} at {where}: {said}. Fix the cause and run the training "
                "again: it resumes from the last finished chunk."
            )
        saved = self._saved(entry, record)
        record.status = "done"
        record.lora_name = str(saved["lora_name"])
        record.filename = str(saved["filename"])
        record.subfolder = str(saved["subfolder"])
        record.sha256 = str(saved["sha256"])
        record.bytes = int(saved["bytes"])
        losses = ((entry.get("outputs") or {}).get(SAVE) or {}).get("loss") or []
        record.losses = [float(v) for v in losses]
        if int(saved["steps"]) != record.end_step:
            raise TrainingError(
                f"chunk {record.index + 1} saved {saved['steps']} steps, the plan says "
                f"{record.end_step}: the file it continued from is not this training's. Train "
                "a new version."
            )
        self._save()
        self.emit(
            "chunk_done",
            f"chunk {record.index + 1}/{len(self.state.chunks)} saved as {record.lora_name}",
            chunk=record.index,
            step=record.end_step,
            total=self.state.total_steps,
            loss=self._last_loss(),
        )

    def _saved(self, entry: dict[str, Any], record: ChunkRecord) -> dict[str, Any]:
        items = ((entry.get("outputs") or {}).get(SAVE) or {}).get(SAVE_KEY) or []
        needed = ("lora_name", "filename", "subfolder", "sha256", "bytes", "steps")
        if not items or not isinstance(items[0], dict) or any(k not in items[0] for k in needed):
            raise TrainingError(
                f"chunk {record.index + 1}: the server's save node reported no "
                f"{SAVE_KEY!r} entry with {', '.join(needed)}; update the server's charpack "
                "nodes to this client's version"
            )
        return dict(items[0])

    # -- a lost server ---------------------------------------------------------------------

    def _recover(self, why: str) -> None:
        """Resume from the last chunk file the server still lists, else from the start."""
        names = self._call(lambda: self.client.models(catalog.FOLDER_LORAS))
        base = self.state.rebase(names)
        if base is None:
            self.resumed_from = "start"
            said = (
                f"starting over from the start: no chunk file of v{self.state.version} on "
                f"the server ({why})"
            )
        else:
            base_name = base.lora_name or ""
            self.resumed_from = f"server file {base_name}"
            said = (
                f"resuming from the server file {base_name} (step {base.end_step} of "
                f"{self.state.total_steps}): {why}"
            )
        self.state.resumes.append({"at": now_iso(), "from": self.resumed_from, "why": why})
        self.uploaded = False  # a restarted or new server may lack the dataset
        self._save()
        self.emit("resumed", said, step=base.end_step if base else 0, total=self.state.total_steps)

    def _call(self, fn: Callable[[], Any]) -> Any:
        """``fn()``, retried while the server is unreachable (up to ``give_up_s``)."""
        while True:
            try:
                value = fn()
            except ServerUnavailable as exc:
                now = time.monotonic()
                if self.down_since is None:
                    self.down_since = now
                    self.emit(
                        "server_down",
                        f"{self.server.label} is not answering ({exc}); "
                        f"waiting up to {self.give_up_s:.0f} s",
                    )
                elif now - self.down_since > self.give_up_s:
                    raise ServerUnavailable(
                        f"{self.server.label} did not answer for {self.give_up_s:.0f} s; "
                        f"training v{self.state.version} is saved in {self.dir}: run the "
                        "training again once the server is up and it continues"
                    ) from exc
                time.sleep(min(2.0, self.poll_s))  # retry interval while the server is away
                continue
            if self.down_since is not None:
                self.down_since = None
                self.client.close()
                self.client = ComfyClient(config=self.server)  # fresh connections after a restart
                self.emit("server_up", f"{self.server.label} answers again")
            return value

    # -- bookkeeping -----------------------------------------------------------------------

    def _save(self) -> None:
        save_state(self.dir, self.state)

    def emit(self, kind: str, message: str, **values: Any) -> None:
        event = TrainingEvent(kind, message, **values)
        line = json.dumps({"at": now_iso(), "event": kind, "message": message, **values})
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / "log", "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
        log.info("%s", message)
        if self.on_event is not None:
            self.on_event(event)
