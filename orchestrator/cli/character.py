"""``charpack character …``: from 3–5 face references to a trained, tested character LoRA.

Short commands over :mod:`charpack.character.flow`, one per step of the creator's path (each
can be run again: it resumes or keeps what is done), and ``make`` for all of them in order:

- ``check DIR``: the references (3–5 PNG/JPEG/WebP, ≥ 512 px, ≤ 10 MB, one face each, counted
  on the server) and the trigger token;
- ``bootstrap DIR``: a training pack generated from the references alone (FaceID + InstantID,
  no LoRA) into ``DIR/bootstrap/``, then the dataset chosen from it;
- ``dataset DIR``: the dataset from pack folders (``--from``) or ``DIR/curation.yaml``;
- ``train DIR``: the LoRA trained on the server (resumable), downloaded, verified, registered;
- ``test DIR``: the 5-shot identity test without and with the LoRA, and the report.

Servers as for ``charpack run`` (``--server``, ``CHARPACK_SERVER``, default
``http://127.0.0.1:8188``); training uses the first. Exit codes: 0 done, 1 failed or left
unfinished, 2 bad input, 3 no server, 130 stopped.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from ..character import flow
from ..character.layout import CharacterFolder
from ..comfy.auth import ServerConfig
from ..comfy.client import ComfyClient
from ..errors import CharacterError, CharpackError
from ..run.options import RunOptions, RunSummary
from .output import console, err_console, show_error
from .progress import JsonLines, RichProgress, TrainingJsonLines, TrainingProgress
from .run import server_urls

app = typer.Typer(
    help="Make a character: check its references, build a dataset, train its LoRA, test it.",
    no_args_is_help=True,
)

Dir = Annotated[Path, typer.Argument(help="The character folder (holding character.yaml).")]
Servers = Annotated[
    Optional[list[str]],  # noqa: UP045 - typer needs Optional on 3.10
    typer.Option(
        "--server", "-s",
        help="A ComfyUI server URL (repeat for several; training uses the first); default "
        "$CHARPACK_SERVER or http://127.0.0.1:8188.",
    ),
]  # fmt: skip
Json = Annotated[bool, typer.Option("--json", help="Training events as JSON lines on stdout.")]
PerScene = Annotated[
    int, typer.Option("--per-scene", min=1, max=50, help="Images per bootstrap scene.")
]
Checkpoint = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option("--checkpoint", help="Checkpoint to train on (default the character's)."),
]
Scenes = Annotated[
    Optional[int],  # noqa: UP045
    typer.Option(
        "--scenes", min=1, max=20,
        help="Bootstrap scenes (of 20: 5 shot types x 4 lights, spread over both).",
    ),
]  # fmt: skip
Steps = Annotated[
    Optional[int],  # noqa: UP045
    typer.Option("--steps", min=1, help="Total steps (default: 100 per image, 1500-3000)."),
]
Rank = Annotated[
    Optional[int],  # noqa: UP045
    typer.Option("--rank", min=1, max=128, help="LoRA rank (64)."),
]
Warmup = Annotated[
    Optional[int],  # noqa: UP045
    typer.Option("--warmup-steps", min=0, help="Warm-up steps at a rising rate (200)."),
]
ChunkSteps = Annotated[
    Optional[int],  # noqa: UP045
    typer.Option("--chunk-steps", min=1, help="Steps per resumable chunk prompt (250)."),
]
Dtype = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option("--dtype", help="bf16 (the preset) or fp32, for training and the LoRA."),
]


def _configs(server: list[str] | None) -> list[ServerConfig]:
    return [ServerConfig.from_url(url) for url in server_urls(server)]


def _fail(exc: CharpackError) -> typer.Exit:
    return typer.Exit(show_error(exc))


def _say(text: str) -> None:
    err_console.print(text, highlight=False)


# -- check ----------------------------------------------------------------------------------


@app.command()
def check(
    folder: Dir,
    server: Servers = None,
    offline: Annotated[
        bool, typer.Option("--offline", help="Check the files only; faces are not counted.")
    ] = False,
) -> None:
    """Check the face references and the trigger token before anything is generated."""
    try:
        _check(CharacterFolder.open(folder), server, offline)
    except CharpackError as exc:
        raise _fail(exc) from None


def _check(folder: CharacterFolder, server: list[str] | None, offline: bool) -> flow.CheckResult:
    client = None if offline else ComfyClient(config=_configs(server)[0])
    try:
        result = flow.check_character(folder, client=client)
    finally:
        if client is not None:
            client.close()
    for warning in result.warnings:
        _say(f"[yellow]warning:[/] {escape(warning)}")
    result.raise_for_problems()
    counted = "" if offline else ", one face each"
    refs = len(result.pack.face_references)
    console.print(f"references: {refs} OK{counted}", highlight=False)
    return result


# -- bootstrap and dataset ------------------------------------------------------------------


@app.command()
def bootstrap(
    folder: Dir,
    server: Servers = None,
    per_scene: PerScene = 3,
    scenes: Scenes = None,
) -> None:
    """Generate a training pack from the references alone, then choose the dataset from it."""
    try:
        character = CharacterFolder.open(folder)
        summary = _bootstrap(character, server, per_scene, scenes)
        if summary.exit_code:
            _show_run(summary)
            raise typer.Exit(summary.exit_code)
        _dataset(character, [character.bootstrap], None)
    except CharpackError as exc:
        raise _fail(exc) from None


def _bootstrap(
    folder: CharacterFolder, server: list[str] | None, per_scene: int, scenes: int | None
) -> RunSummary:
    pack = flow.write_bootstrap_pack(folder, per_scene=per_scene, scenes=scenes)
    _say(f"bootstrap pack: {escape(str(pack.path))} ({sum(s.count for s in pack.scenes)} images)")
    with RichProgress(err_console) as display:
        return flow.pack_run(pack, folder.bootstrap, _configs(server), RunOptions(on_event=display))


@app.command()
def dataset(
    folder: Dir,
    sources: Annotated[
        Optional[list[Path]],  # noqa: UP045
        typer.Option(
            "--from", help="A pack folder to choose from (repeat; default DIR/bootstrap)."
        ),
    ] = None,
    curation: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option("--curation", help="A curation file (default DIR/curation.yaml if any)."),
    ] = None,
) -> None:
    """Choose the training images (best identity scores with variety, or a curation file)."""
    try:
        character = CharacterFolder.open(folder)
        _dataset(character, sources, curation)
    except CharpackError as exc:
        raise _fail(exc) from None


def _dataset(folder: CharacterFolder, sources: list[Path] | None, curation: Path | None) -> Any:
    made = flow.build_dataset(folder, sources=sources, curation=curation)
    console.print(
        f"dataset {made.folder.name}: {len(made.images)} images with captions in "
        f"{escape(str(made.folder))}; what was chosen and why: {escape(str(made.contact))}",
        highlight=False,
    )
    return made


# -- train and test -------------------------------------------------------------------------


@app.command()
def train(
    folder: Dir,
    server: Servers = None,
    checkpoint: Checkpoint = None,
    steps: Steps = None,
    rank: Rank = None,
    warmup_steps: Warmup = None,
    chunk_steps: ChunkSteps = None,
    dtype: Dtype = None,
    test: Annotated[
        bool,
        typer.Option(
            "--test/--no-test",
            help="Run the 5-shot identity test before/after the new LoRA when it is trained.",
        ),
    ] = True,
    json_out: Json = False,
) -> None:
    """Train the character's LoRA from the latest dataset, register it, run the identity test.

    Run it again to resume an unfinished training. Presets and their reasons: docs/character.md;
    the options override them for a new training (an unfinished one keeps its own settings)."""
    try:
        spec = _spec(steps, rank, warmup_steps, chunk_steps, dtype)
        character = CharacterFolder.open(folder)
        _train(character, server, checkpoint, spec, json_out)
        if test:
            _identity(character, server, None, json_out)
    except CharpackError as exc:
        raise _fail(exc) from None


def _spec(
    steps: int | None, rank: int | None, warmup: int | None, chunk: int | None, dtype: str | None
) -> Any:
    from ..character.presets import TrainingSpec

    changes: dict[str, Any] = {"steps": steps}
    for key, value in (("rank", rank), ("warmup_steps", warmup), ("chunk_steps", chunk)):
        if value is not None:
            changes[key] = value
    if dtype is not None:
        if dtype not in ("bf16", "fp32"):
            raise CharacterError(f"--dtype {dtype}: use bf16 (the preset) or fp32")
        changes["training_dtype"] = changes["lora_dtype"] = dtype
    if all(v is None for v in changes.values()):
        return None
    try:
        return TrainingSpec(**changes)
    except ValueError as exc:
        raise CharacterError(str(exc)) from None


def _train(
    folder: CharacterFolder,
    server: list[str] | None,
    checkpoint: str | None,
    spec: Any,
    json_out: bool,
) -> None:
    options: dict[str, Any] = {"checkpoint": checkpoint, "spec": spec}
    config = _configs(server)[0]
    if json_out:
        result, reg = flow.train_and_register(
            folder, config, on_event=TrainingJsonLines(sys.stdout), **options
        )
    else:
        with TrainingProgress(err_console) as display:
            result, reg = flow.train_and_register(folder, config, on_event=display, **options)
    if result.resumed_from:
        _say(f"[yellow]resumed from {escape(result.resumed_from)}[/]")
    console.print(
        f"LoRA v{result.version}: {escape(str(result.lora_path))} ({result.bytes:,} bytes, "
        f"{result.steps} steps, sha256 {result.sha256[:12]}…), registered in "
        f"{escape(str(reg.pack_file))} as {escape(reg.lora_name)}",
        highlight=False,
    )


@app.command("test")
def identity_test(
    folder: Dir,
    server: Servers = None,
    version: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option("--version", min=1, help="Training version (default the latest)."),
    ] = None,
) -> None:
    """Run the 5-shot identity test without and with the LoRA and write the report."""
    try:
        _identity(CharacterFolder.open(folder), server, version)
    except CharpackError as exc:
        raise _fail(exc) from None


def _identity(
    folder: CharacterFolder, server: list[str] | None, version: int | None, json_out: bool = False
) -> None:
    configs = _configs(server)
    if json_out:  # the two runs' events as JSON lines, like charpack run --json
        with JsonLines(sys.stdout) as lines:
            test = flow.run_identity_test(
                folder, configs, version=version, options=RunOptions(on_event=lines)
            )
        report = {"event": "identity_report", "markdown": str(test.files.markdown),
                  "json": str(test.files.json), "contact": str(test.files.contact)}  # fmt: skip
        sys.stdout.write(json.dumps(report) + "\n")
        return
    with RichProgress(err_console) as display:
        test = flow.run_identity_test(
            folder, configs, version=version, options=RunOptions(on_event=display),
            on_pack=lambda side: _say(f"identity test, {side} the LoRA"),
        )  # fmt: skip
    console.print(test.files.markdown.read_text(encoding="utf-8"), highlight=False, markup=False)
    console.print(f"report: {escape(str(test.files.markdown))}", highlight=False)


# -- everything -----------------------------------------------------------------------------


@app.command()
def make(
    folder: Dir,
    server: Servers = None,
    per_scene: PerScene = 3,
    scenes: Scenes = None,
    checkpoint: Checkpoint = None,
    steps: Steps = None,
    rank: Rank = None,
    warmup_steps: Warmup = None,
    chunk_steps: ChunkSteps = None,
    dtype: Dtype = None,
) -> None:
    """Every step in order: check, bootstrap + dataset (unless one exists), train, test."""
    try:
        spec = _spec(steps, rank, warmup_steps, chunk_steps, dtype)
        character = CharacterFolder.open(folder)
        _check(character, server, offline=False)
        if character.latest("dataset") is None:
            summary = _bootstrap(character, server, per_scene, scenes)
            if summary.exit_code:
                _show_run(summary)
                raise typer.Exit(summary.exit_code)
            _dataset(character, [character.bootstrap], None)
        if flow.finished_training(character) is None:
            _train(character, server, checkpoint, spec, json_out=False)
        else:
            _say("the latest dataset's training is finished; skipping it")
        version = character.latest("training")
        if version is not None and (character.identity(version) / "report.md").is_file():
            _say(f"identity test v{version} done: {escape(str(character.identity(version)))}")
        else:
            _identity(character, server, None)
    except CharpackError as exc:
        raise _fail(exc) from None


def _show_run(summary: RunSummary) -> None:
    table = Table(title=f"{summary.pack} → {summary.folder}", show_edge=False)
    for column in ("images", "below threshold", "failed", "not run"):
        table.add_column(column, justify="right")
    counts = summary.counts
    left = counts.get("pending", 0) + counts.get("submitted", 0)
    table.add_row(
        str(counts.get("done", 0)), str(counts.get("below_threshold", 0)),
        str(counts.get("failed", 0)), str(left),
    )  # fmt: skip
    console.print(table)
    if summary.error:
        _say(f"[red]error:[/] {escape(summary.error)}")
    _say("the run did not finish; run the same command again to resume")
