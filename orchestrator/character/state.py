"""The resumable record of one training: ``training/v<N>/state.json``, and its dataset files.

Owns :class:`TrainingState` (what was planned, which chunk prompt is posted under which id,
which server file each finished chunk left) and :class:`ChunkRecord`, both saved atomically
before every post so a killed client finds the prompt it posted, plus the dataset a training
uploads (:func:`dataset_files`: the images with a same-stem ``.txt`` caption) and its content
hash (:func:`dataset_hash`), the provenance written into a chunk file's header
(:func:`safetensors_metadata`), and what the plan becomes when a server lost some chunk files
(:meth:`TrainingState.rebase`). Prompt ids are derived from the run, the chunk and the attempt
(:meth:`TrainingState.prompt_id`), so they are known before the post. It does not talk to a
server; the driver is :mod:`charpack.character.training`.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from ..errors import CharacterError, TrainingError
from ..folder.integrity import atomic_write
from .presets import Chunk

STATE_FILE = "state.json"
# models/loras/<this>/<character>/…: where every trained chunk lands on a server (the pod
# manifest's [training] lora_folder; provisioning creates it).
LORA_FOLDER = "charpack"
FORMAT = 1
MAX_HEADER_BYTES = 100 << 20  # safetensors refuses larger headers too
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")  # what LoadImageTextDataSetFromFolder reads
# Fixed, so the same run, chunk and attempt always give the same prompt id.
_PROMPT_NAMESPACE = uuid.UUID("7d6f3c1e-4b1a-5e8f-9c2d-2a6b1f0e8c31")

ChunkStatus = Literal["planned", "posted", "done"]


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class ChunkRecord:
    """One chunk of the plan and what became of it (``posted``: its prompt may be running)."""

    index: int
    kind: str
    start_step: int
    steps: int
    learning_rate: float
    seed: int
    status: ChunkStatus = "planned"
    attempt: int = 0  # posts so far; the prompt id changes with it
    prompt_id: str | None = None
    lora_name: str | None = None  # the server file (relative to models/loras) once done
    filename: str | None = None  # where /view serves it (type output)
    subfolder: str | None = None
    sha256: str | None = None
    bytes: int | None = None
    losses: list[float] | None = None

    @property
    def end_step(self) -> int:
        return self.start_step + self.steps

    @classmethod
    def planned(cls, chunk: Chunk) -> ChunkRecord:
        return cls(
            index=chunk.index,
            kind=chunk.kind,
            start_step=chunk.start_step,
            steps=chunk.steps,
            learning_rate=chunk.learning_rate,
            seed=chunk.seed,
        )

    def chunk(self) -> Chunk:
        kind: Any = self.kind
        return Chunk(self.index, kind, self.start_step, self.steps, self.learning_rate, self.seed)

    def reset(self) -> None:
        """Back to planned (its server file is gone); the attempt count stays."""
        self.status = "planned"
        self.prompt_id = self.lora_name = self.filename = self.subfolder = None
        self.sha256 = None
        self.bytes = None
        self.losses = None


@dataclass
class TrainingState:
    """Everything a later process needs to reattach to, resume or finish a training."""

    version: int
    character: str  # the character's slug, part of every file name
    dataset: str  # the dataset folder trained on
    dataset_hash: str
    upload_folder: str  # input/<this>/ on the server
    checkpoint: str
    spec: dict[str, Any]
    chunks: list[ChunkRecord]
    run_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    # The websocket's client id: progress goes to the client id a prompt was posted with, so
    # a process that reattaches uses the same one.
    client_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    status: Literal["training", "finished"] = "training"
    resumes: list[dict[str, str]] = field(default_factory=list)
    lora: dict[str, Any] | None = None
    created: str = field(default_factory=now_iso)
    format: int = FORMAT

    @property
    def total_steps(self) -> int:
        return self.chunks[-1].end_step if self.chunks else 0

    @property
    def server_name(self) -> str:
        """The stem every chunk saves under in models/loras (the node adds the step count)."""
        return f"{LORA_FOLDER}/{self.character}/{self.character}-v{self.version}"

    def prompt_id(self, record: ChunkRecord) -> str:
        """The prompt id of ``record``'s current attempt (a canonical lowercase UUID)."""
        return str(uuid.uuid5(_PROMPT_NAMESPACE, f"{self.run_id}/{record.index}/{record.attempt}"))

    def rebase(self, server_loras: list[str]) -> ChunkRecord | None:
        """Put the plan back on the chunk files the server still has (``/models/loras``):
        the last chunk whose file is listed and those before it are done, the rest planned
        again. Returns that chunk, or ``None`` when no file is left (start over)."""
        pattern = re.compile(
            re.escape(self.server_name) + r"_([0-9]+)_steps_lora(?:-[0-9]+)?\.safetensors"
        )
        by_steps: dict[int, list[str]] = {}
        for name in server_loras:
            match = pattern.fullmatch(name)
            if match:
                by_steps.setdefault(int(match.group(1)), []).append(name)
        base = None
        for record in self.chunks:
            if record.end_step in by_steps:
                base = record
        for record in self.chunks:
            if base is None or record.index > base.index:
                record.reset()
                continue
            files = by_steps.get(record.end_step, [])
            if record.status != "done" or record.lora_name not in files:
                # Done on a server that did not report it to us: only its name is known.
                record.reset()
                record.status = "done"
                record.lora_name = sorted(files)[0] if files else None
        return base

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any], *, source: Path) -> TrainingState:
        if data.get("format") != FORMAT:
            raise TrainingError(
                f"{source}: state format {data.get('format')!r} is not {FORMAT}; this charpack "
                "cannot resume it. Train a new version (a new dataset) instead."
            )
        try:
            chunks = [ChunkRecord(**c) for c in data["chunks"]]
            return cls(**{**data, "chunks": chunks})
        except (KeyError, TypeError) as exc:
            raise TrainingError(
                f"{source}: not a charpack training state ({exc}); move it away and train again"
            ) from None


def load_state(folder: Path) -> TrainingState | None:
    """The state in ``folder`` (``training/v<N>/``), or ``None`` when there is none."""
    path = folder / STATE_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise TrainingError(
            f"{path}: unreadable ({exc}); move it away and train again (a new version)"
        ) from None
    return TrainingState.from_json(data, source=path)


def save_state(folder: Path, state: TrainingState) -> Path:
    """Write ``state`` to ``folder/state.json`` atomically (old or new file, never half)."""
    body = json.dumps(state.to_json(), indent=2, sort_keys=True).encode("utf-8") + b"\n"
    return atomic_write(folder / STATE_FILE, lambda fh: fh.write(body), doing="save state.json")


def safetensors_metadata(path: Path) -> dict[str, Any]:
    """The ``__metadata__`` of a safetensors file's header (``{}`` when unreadable): the save
    node writes the run and chunk there, which proves whose file it is."""
    try:
        with path.open("rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            if size > MAX_HEADER_BYTES:
                return {}
            header = json.loads(fh.read(size))
    except (OSError, ValueError, struct.error):
        return {}
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return dict(meta) if isinstance(meta, dict) else {}


def dataset_files(folder: Path) -> list[tuple[Path, Path]]:
    """The training pictures of ``folder`` with their captions: every image that has a
    same-stem ``.txt`` beside it, by name (the contact sheet has none, so it is left out)."""
    if not folder.is_dir():
        raise CharacterError(
            f"{folder}: no such dataset folder — build the dataset first (charpack character "
            "dataset) or name an existing dataset/v<N> folder"
        )
    pairs = []
    for image in sorted(folder.iterdir()):
        caption = image.with_suffix(".txt")
        if image.suffix.lower() in IMAGE_SUFFIXES and image.is_file() and caption.is_file():
            pairs.append((image, caption))
    if not pairs:
        raise CharacterError(
            f"{folder}: no training pictures — it needs images (PNG/JPEG/WebP) each with a "
            "same-named .txt caption; rebuild the dataset"
        )
    return pairs


def dataset_hash(pairs: list[tuple[Path, Path]]) -> str:
    """sha256 over the names and contents of the pictures and captions (hex)."""
    digest = hashlib.sha256()
    for image, caption in pairs:
        for path in (image, caption):
            digest.update(path.name.encode("utf-8") + b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).hexdigest().encode("ascii") + b"\n")
    return digest.hexdigest()
