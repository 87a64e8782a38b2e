"""The training driver: a character LoRA trained on a ComfyUI server, one chunk prompt at a time.

Owns :func:`train_character`: it uploads the dataset into the server's
``input/charpack_train/<char>-v<N>-<hash8>/``, posts the chunks of the plan
(:func:`charpack.character.presets.plan_chunks`) one after the other as the graph of
:func:`chunk_graph` (each continuing from the previous chunk's file through ``existing_lora``),
follows each with the websocket (step, total, loss, ETA as :class:`TrainingEvent`) and the HTTP
client, and downloads the last chunk's LoRA into ``loras/`` checked against the sha256 and size
the save node reported.

Resumable like a pack: ``training/v<N>/state.json`` (:mod:`charpack.character.state`) is written
before each post under a prompt id derived from run, chunk and attempt. A process started after
a killed one reattaches to the posted prompt (same prompt id and websocket client id; it is
never posted twice). When the server no longer knows a prompt, or a chunk file it needs is gone
(a restart, a new pod), the training resumes from the last chunk file ``/models/loras`` still
lists, else from the start, and says which (:attr:`TrainingResult.resumed_from`).
It does not pick the dataset (:mod:`charpack.character.dataset`) nor register the LoRA.
"""

from __future__ import annotations

import json
import logging
import math
import mimetypes
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from charpack_nodes.pipelines import catalog

from ..comfy.auth import ServerConfig
from ..comfy.client import ComfyClient
from ..comfy.downloads import Expect
from ..comfy.events import Disconnected, Done, Event, Progress, Reconnected
from ..comfy.limits import MB, Limits
from ..comfy.results import JobState, OutputRef, parse_history
from ..comfy.stream import EventStream
from ..errors import (
    CharacterError,
    MissingOnServer,
    PromptRejected,
    ServerUnavailable,
    TrainingError,
)
from ..folder.integrity import PackLock, atomic_write
from ..pack.uploads import file_sha256
from .layout import CharacterFolder, slug
from .lossplot import write_loss_plot
from .presets import Chunk, TrainingSpec, plan_chunks, train_inputs
from .state import (
    ChunkRecord,
    TrainingState,
    dataset_files,
    dataset_hash,
    load_state,
    now_iso,
    safetensors_metadata,
    save_state,
)

log = logging.getLogger(__name__)

UPLOAD_ROOT = "charpack_train"
SAVE_KEY = "charpack_lora"
NO_LORA = "[None]"
DOWNLOAD_FOLDER = "charpack_loras"  # the save node links each file under output/<this>/
MAX_LORA_BYTES = 4 << 30  # a rank-128 fp32 SDXL LoRA is ~1.6 GB
# Stable node ids of a chunk's graph.
CKPT, DATA, ENCODE, TRAIN, SAVE = (
    "train.ckpt",
    "train.data",
    "train.encode",
    "train.lora",
    "train.save",
)


@dataclass(frozen=True)
class TrainingEvent:
    """What the training is doing, for the progress display (and ``training/v<N>/log``).

    ``kind``: started, uploaded, posted, reattached, progress, chunk_done, server_down,
    server_up, resumed, downloaded, finished. ``step``/``total`` count the whole training;
    ``loss`` is the mean loss of the last finished chunk; ``eta_s`` is estimated from this
    process's step rate.
    """

    kind: str
    message: str
    chunk: int | None = None
    step: int | None = None
    total: int | None = None
    loss: float | None = None
    eta_s: float | None = None


@dataclass(frozen=True)
class TrainingResult:
    """A finished training: where its files are and how it went."""

    version: int
    version_dir: Path
    lora_path: Path
    sha256: str
    bytes: int
    steps: int
    losses: tuple[float, ...]
    # "server file <name>" / "start" when a lost server made it resume; None when it did not.
    resumed_from: str | None
    reattached: bool = False  # it picked up a prompt an earlier process had posted
    # The LoRA's name in the server's models/loras (what the pods' LoraLoader lists).
    server_file: str | None = None
    loss_plot: Path | None = None  # training/v<N>/loss.png (a copy lies beside the LoRA)


def chunk_graph(
    *,
    folder: str,
    checkpoint: str,
    spec: TrainingSpec,
    chunk: Chunk,
    existing_lora: str,
    name: str,
    metadata: dict[str, str],
) -> dict[str, Any]:
    """The API-format graph of one chunk: load the checkpoint and the dataset folder (a
    subfolder of ``input/``), encode it, train ``chunk`` on top of ``existing_lora`` and save
    it as ``models/loras/<name>_<steps>_steps_lora.safetensors``."""
    return {
        CKPT: {
            "class_type": catalog.CHECKPOINT_LOADER.class_type,
            "inputs": {"ckpt_name": checkpoint},
        },
        DATA: {
            "class_type": catalog.LOAD_IMAGE_TEXT_DATASET.class_type,
            "inputs": {"folder": folder},
        },
        ENCODE: {
            "class_type": catalog.MAKE_TRAINING_DATASET.class_type,
            # Keyword names: the catalogue owns the spelling of the loader folder "vae".
            "inputs": dict(images=[DATA, 0], texts=[DATA, 1], vae=[CKPT, 2], clip=[CKPT, 1]),
        },
        TRAIN: {
            "class_type": catalog.TRAIN_LORA.class_type,
            "inputs": {
                "model": [CKPT, 0],
                "latents": [ENCODE, 0],
                "positive": [ENCODE, 1],
                **train_inputs(spec, chunk),
                "existing_lora": existing_lora,
            },
        },
        SAVE: {
            "class_type": catalog.SAVE_TRAINED_LORA.class_type,
            "inputs": {
                "lora": [TRAIN, 1],
                "loss": [TRAIN, 2],
                "steps": [TRAIN, 3],
                "name": name,
                "metadata": json.dumps(metadata, sort_keys=True),
            },
        },
    }


def train_character(
    char_dir: Path | str,
    server: ServerConfig,
    *,
    spec: TrainingSpec | None = None,
    dataset_dir: Path | str | None = None,
    checkpoint: str | None = None,
    on_event: Callable[[TrainingEvent], None] | None = None,
    give_up_s: float = 900.0,
    poll_s: float = 5.0,
) -> TrainingResult:
    """Train (or finish training) the character in ``char_dir`` on ``server``.

    ``dataset_dir`` defaults to the latest ``dataset/v<N>``; the training takes that number
    unless ``training/v<N>`` finished already (then the next free one). An unfinished training
    of the same dataset is resumed with its own recorded settings (``spec`` and ``checkpoint``
    are then ignored). ``checkpoint`` defaults to the pack file's ``character.checkpoint``.
    ``give_up_s``: how long an unreachable server is waited for. Raises
    :class:`~charpack.errors.TrainingError` when a chunk fails on the server or the download
    does not match, :class:`~charpack.errors.CharacterError` for a missing dataset,
    :class:`~charpack.errors.ServerUnavailable` when the server stays away.
    """
    folder = CharacterFolder.open(char_dir)
    dataset = _dataset_folder(folder, dataset_dir)
    pairs = dataset_files(dataset)
    digest = dataset_hash(pairs)
    # One training of a character at a time (a killed one's lock is taken over).
    with PackLock.acquire(folder.root / "training"):
        state, resumed = _open_state(folder, dataset, digest, spec, checkpoint, len(pairs))
        driver = _Driver(
            folder=folder,
            state=state,
            pairs=pairs,
            server=server,
            on_event=on_event,
            give_up_s=give_up_s,
            poll_s=poll_s,
        )
        return driver.run(resumed)


def _dataset_folder(folder: CharacterFolder, given: Path | str | None) -> Path:
    if given is not None:
        return Path(given).resolve()
    latest = folder.latest("dataset")
    if latest is None:
        raise CharacterError(
            f"{folder.root}: no dataset/v<N> folder — build one first (charpack character "
            "dataset) or pass the dataset folder to train on"
        )
    return folder.dataset(latest)


def _pack_character(folder: CharacterFolder) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(folder.pack_file.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise CharacterError(f"{folder.pack_file}: cannot be read ({exc}); fix the file") from None
    character = raw.get("character") if isinstance(raw, dict) else None
    return character if isinstance(character, dict) else {}


def _open_state(
    folder: CharacterFolder,
    dataset: Path,
    digest: str,
    spec: TrainingSpec | None,
    checkpoint: str | None,
    images: int,
) -> tuple[TrainingState, bool]:
    """The unfinished state of this dataset (resumed: True), else a new version's."""
    for version in reversed(folder.versions("training")):
        found = load_state(folder.training(version))
        if found is not None and found.status != "finished" and found.dataset_hash == digest:
            return found, True
    character = _pack_character(folder)
    name = slug(str(character.get("name") or folder.root.name))
    ckpt = checkpoint or character.get("checkpoint")
    if not isinstance(ckpt, str) or not ckpt:
        raise CharacterError(
            f"{folder.pack_file}: no character.checkpoint — set it or pass the checkpoint to "
            "train on"
        )
    shared = _dataset_version(folder, dataset)
    free = (
        shared is not None
        and not folder.training(shared).exists()
        and not folder.lora_file(name, shared).exists()
    )
    version = shared if free and shared is not None else folder.next_version()
    spec = spec or TrainingSpec()
    state = TrainingState(
        version=version,
        character=name,
        dataset=str(dataset),
        dataset_hash=digest,
        upload_folder=f"{UPLOAD_ROOT}/{name}-v{version}-{digest[:8]}",
        checkpoint=ckpt,
        spec=spec.to_json(),
        chunks=[ChunkRecord.planned(c) for c in plan_chunks(spec, images)],
    )
    save_state(folder.training(version), state)
    return state, False


def _dataset_version(folder: CharacterFolder, dataset: Path) -> int | None:
    """N when ``dataset`` is this character's ``dataset/v<N>``."""
    for version in folder.versions("dataset"):
        if folder.dataset(version).resolve() == dataset:
            return version
    return None


def _spec(state: TrainingState) -> TrainingSpec:
    return TrainingSpec(**state.spec)


class _Lost(Exception):
    """The server no longer knows a chunk's prompt, or a file a chunk needs is gone."""


class _Driver:
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
            spec=_spec(state),
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

    # -- the end ---------------------------------------------------------------------------

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
