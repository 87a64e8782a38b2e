"""The creator's path as steps over a character folder; ``charpack character`` calls these.

Each step reads what the earlier ones wrote and can be run again: a finished step's output is
kept, a half-done one resumes (the bootstrap and identity-test runs are ordinary resumable
pack folders, the training resumes from its ``state.json``).

- :func:`check_character`: the references (files here, faces on the server) and the trigger;
- :func:`run_bootstrap`: the bootstrap pack (FaceID + InstantID, no LoRA) into ``bootstrap/``;
- :func:`build_dataset`: chosen images + captions into ``dataset/v<N>/`` (from packs or a
  curation file);
- :func:`train_and_register`: the training (:func:`charpack.character.training.train_character`),
  then the LoRA registered in ``character.yaml``;
- :func:`run_identity_test`: the 5-shot test without and with the LoRA and the before/after
  report in ``identity/v<N>/``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from ..check.findings import Finding
from ..comfy.auth import ServerConfig
from ..comfy.client import ComfyClient
from ..errors import CharacterError
from ..folder.integrity import atomic_write
from ..pack.packfile import Pack, load_pack
from ..run.options import RunOptions, RunSummary
from ..run.runner import run_pack
from .captions import Captioner
from .dataset import Dataset, bootstrap_pack, choose, write_dataset
from .facecheck import server_face_checks
from .identity_test import identity_pack
from .layout import CharacterFolder, slug
from .references import check_references, face_problems
from .register import Registration, register_lora
from .report import ReportFiles, compare, write_report
from .training import TrainingEvent, TrainingResult, train_character
from .trigger import propose_trigger, trigger_warnings


@dataclass(frozen=True)
class CheckResult:
    """What :func:`check_character` found: ``problems`` stop the path, ``warnings`` do not."""

    pack: Pack
    problems: list[Finding] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    faces: list[dict[str, Any]] = field(default_factory=list)  # the server's face counts

    def raise_for_problems(self) -> CheckResult:
        if self.problems:
            raise CharacterError([str(p) for p in self.problems])
        return self


def check_character(folder: CharacterFolder, *, client: ComfyClient | None) -> CheckResult:
    """Check the references and the trigger; faces are counted on ``client``'s server (skipped
    when ``client`` is None, and the files' own checks still run)."""
    pack = load_pack(folder.pack_file)
    problems = check_references(list(pack.face_references))
    faces: list[dict[str, Any]] = []
    refused = {f.location for f in problems}
    readable = [p for p in pack.face_references if str(p) not in refused]
    if client is not None and readable:
        faces = server_face_checks(client, readable)
        problems += face_problems(faces)
    character = pack.raw["character"]
    trigger = str(character.get("trigger") or "")
    proposal = propose_trigger(str(character["name"]))
    warnings = (
        trigger_warnings(trigger, name=str(character["name"]))
        if trigger
        else [
            f"{folder.pack_file}: character.trigger is empty — the LoRA needs a rare trigger "
            f"token to bind the face to; add  trigger: {proposal} woman  (or man, person)"
        ]
    )
    return CheckResult(pack, problems, warnings, faces)


BOOTSTRAP_FILE = "bootstrap.yaml"


def spread(scenes: Sequence[dict[str, Any]], count: int | None) -> list[dict[str, Any]]:
    """``count`` of the bootstrap scenes (5 shot types × 4 lights, shot-major), chosen so each
    shot type comes once before any comes twice and the lights vary: diagonal by diagonal."""
    shots, lights = 5, max(1, len(scenes) // 5)
    if count is None or count >= len(scenes) or len(scenes) != shots * lights:
        return list(scenes)
    order = [scenes[i * lights + (i + r) % lights] for r in range(lights) for i in range(shots)]
    return order[:count]


def write_bootstrap_pack(
    folder: CharacterFolder, *, per_scene: int = 3, scenes: int | None = None
) -> Pack:
    """Write ``bootstrap.yaml`` (the character without LoRA, up to 20 varied scenes of
    ``per_scene`` images; ``scenes`` fewer of them) and load it.

    An existing ``bootstrap.yaml`` is kept as it is (the user may have edited it, and its
    pack folder must resume the same pack)."""
    target = folder.root / BOOTSTRAP_FILE
    if not target.exists():
        raw = load_pack(folder.pack_file).raw
        data = bootstrap_pack(raw, per_scene=per_scene)
        data["scenes"] = spread(data["scenes"], scenes)
        header = (
            "# The bootstrap pack: on-identity training images from the references alone\n"
            "# (FaceID + InstantID, no LoRA), written by charpack character bootstrap. Edit it\n"
            "# before the first run if you like; charpack keeps it.\n"
        )
        text = header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
        body = text.encode("utf-8")
        atomic_write(target, lambda fh: fh.write(body), doing=f"write {target.name}")
    return load_pack(target)


def build_dataset(
    folder: CharacterFolder,
    *,
    sources: Sequence[Path] | None = None,
    curation: Path | None = None,
    target: int | None = None,
) -> Dataset:
    """Choose the training images from ``sources`` (default the bootstrap pack folder), by
    ``curation`` when given or when ``curation.yaml`` exists, into the next ``dataset/v<N>``."""
    folders = [Path(s) for s in sources] if sources else [folder.bootstrap]
    missing = [str(f) for f in folders if not (f / "manifest.json").is_file()]
    if missing:
        raise CharacterError(
            [f"{m}: not a pack folder (no manifest.json) — pass a folder charpack run made, or "
             "run charpack character bootstrap first" for m in missing]  # fmt: skip
        )
    if curation is None and folder.curation_file.is_file():
        curation = folder.curation_file
    elif curation is not None and not curation.is_file():
        raise CharacterError(f"{curation}: no such curation file — fix the path")
    raw = load_pack(folder.pack_file).raw
    threshold = (raw.get("identity") or {}).get("threshold")
    extra = {} if target is None else {"target": target}
    choices = choose(folders, curation=curation, threshold=threshold, **extra)
    captioner = Captioner.from_character(raw["character"])
    return write_dataset(choices, folder.dataset(folder.next_version()), captioner=captioner)


def pack_run(
    pack: Pack,
    out: Path,
    servers: Sequence[ServerConfig],
    options: RunOptions | None,
) -> RunSummary:
    """``run_pack`` into ``out`` with the caller's options (display, backlog ...)."""
    return run_pack(pack, servers=servers, options=replace(options or RunOptions(), out=out))


def train_and_register(
    folder: CharacterFolder,
    server: ServerConfig,
    *,
    on_event: Callable[[TrainingEvent], None] | None = None,
    **train_options: Any,
) -> tuple[TrainingResult, Registration]:
    """Train (or finish) the latest dataset's LoRA and register it in ``character.yaml``."""
    result = train_character(folder.root, server, on_event=on_event, **train_options)
    lora_name = lora_name_of(result)
    registration = register_lora(
        folder.pack_file,
        lora_name=lora_name,
        sha256=result.sha256,
        version=result.version,
        backup_dir=result.version_dir,
    )
    return result, registration


def finished_training(folder: CharacterFolder) -> int | None:
    """The version of a finished training of the latest dataset, or None."""
    from .state import load_state

    dataset = folder.latest("dataset")
    for version in reversed(folder.versions("training")):
        state = load_state(folder.training(version))
        if state is not None and state.status == "finished" and dataset is not None:
            if Path(state.dataset).resolve() == folder.dataset(dataset).resolve():
                return version
    return None


def lora_name_of(result: TrainingResult) -> str:
    """The name the pods' LoraLoader knows the trained LoRA by (relative to models/loras)."""
    if not result.server_file:
        raise CharacterError(
            f"{result.version_dir}: the training does not name its final LoRA on the server; "
            "run charpack character train again to finish it"
        )
    return result.server_file


@dataclass(frozen=True)
class IdentityTest:
    version: int
    before: RunSummary
    after: RunSummary
    files: ReportFiles


def run_identity_test(
    folder: CharacterFolder,
    servers: Sequence[ServerConfig],
    *,
    version: int | None = None,
    options: RunOptions | None = None,
    on_pack: Callable[[str], None] | None = None,
) -> IdentityTest:
    """The 5-shot test without the LoRA (``before``) and with the registered LoRA (``after``),
    then the before/after report; ``version`` defaults to the latest training."""
    pack = load_pack(folder.pack_file)
    raw = pack.raw
    lora = raw["character"].get("lora")
    version = version or folder.latest("training")
    if version is None or not lora:
        raise CharacterError(
            f"{folder.pack_file}: no trained LoRA is registered — run charpack character train "
            f"{folder.root} first"
        )
    base = folder.identity(version)
    name = slug(str(raw["character"]["name"]))
    summaries = {}
    for side, side_lora in (("before", None), ("after", lora)):
        file = identity_pack(
            raw, name=f"{name}-identity-v{version}-{side}", source_dir=folder.root,
            target=base / f"{side}.yaml", lora=side_lora,
        )  # fmt: skip
        if on_pack is not None:
            on_pack(side)
        summaries[side] = pack_run(load_pack(file), base / side, servers, options)
        if summaries[side].interrupted:
            raise CharacterError(f"the identity test ({side}) was stopped; run it again to resume")
    files = write_report(compare(base / "before", base / "after"), base)
    return IdentityTest(version, summaries["before"], summaries["after"], files)
