"""The ``charpack`` command line: short commands that call library functions.

Only the ``cli`` package prints, through :mod:`charpack.cli.output` (one console, one error
renderer, one ``--json`` error shape), and only this module configures logging. Errors from the
library (the CharpackError tree) are shown as plain messages with their exit code, never as
tracebacks.
"""

from __future__ import annotations

import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from ..check import workflows as workflow_files
from ..check.findings import Finding
from ..check.plan import write_plan
from ..check.validate import load_api_workflow, located, validate_graph, validate_pack
from ..comfy.objectinfo import ObjectInfo
from ..errors import CharpackError, ValidationError
from ..pack.packfile import load_pack
from . import character as cli_character
from . import endpoint as cli_endpoint
from . import pack as cli_pack
from . import pod as cli_pod
from . import run as cli_run
from . import selftest as cli_selftest
from .output import JsonOpt, console, err_console, print_json, reported, setup_logging, show_error

app = typer.Typer(
    name="charpack",
    help="Photo packs of one consistent character with ComfyUI.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
workflows_app = typer.Typer(
    help="Generated workflow JSON (workflows/api/, workflows/ui/, example_workflows/).",
    no_args_is_help=True,
)


def _version() -> str:
    try:
        return version("charpack")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0+unknown"


def _version_callback(value: bool) -> None:
    if value:
        console.print(f"charpack {_version()}")
        raise typer.Exit()


@app.callback()
def main_options(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
    show_version: Annotated[
        Optional[bool],  # noqa: UP045 - typer needs Optional on 3.10
        typer.Option("--version", callback=_version_callback, is_eager=True, help="Show version."),
    ] = None,
) -> None:
    setup_logging(verbose)


PackArg = Annotated[Path, typer.Argument(help="The pack file (YAML).")]


@app.command()
def validate(
    pack: Annotated[
        Path,
        typer.Argument(
            help="A pack file (YAML), or one API-format workflow (JSON): a file of charpack "
            "plan, workflows/api/, or ComfyUI's Export (API)."
        ),
    ],
    object_info: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(
            "--object-info",
            help="A saved GET /object_info answer to check against (default: the recorded "
            "ComfyUI 0.3.75 + pinned node packs).",
        ),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Check a pack file and every workflow it would send, or one API-format workflow, against
    the node types, inputs and ranges a server offers, without contacting a server."""
    with reported("json" if json_out else "text"):
        info = ObjectInfo.from_files([object_info]) if object_info else ObjectInfo.recorded()
        if pack.suffix.lower() == ".json":
            graph = load_api_workflow(pack)
            found = [located(f, pack.name) for f in validate_graph(graph, info)]
            counts = {"nodes": len(graph)}
            done = f"{len(graph)} nodes; the workflow fits {info.source}"
        else:
            loaded = load_pack(pack)
            jobs, found = validate_pack(loaded, info)  # a few representative graphs, not all
            counts = {"scenes": len(loaded.scenes), "jobs": jobs}
            done = f"{len(loaded.scenes)} scenes, {jobs} jobs; every workflow fits {info.source}"
        if json_out:
            print_json(_validate_json(pack, info, counts, found))
            if found:
                raise typer.Exit(ValidationError.exit_code)
            return
        if found:
            raise ValidationError([str(f) for f in found])
        console.print(f"[green]ok[/] {pack}: {done}")


def _validate_json(
    pack: Path, info: ObjectInfo, counts: dict[str, int], found: list[Finding]
) -> dict[str, object]:
    return {
        "ok": not found,
        "file": str(pack),
        "kind": "workflow" if "nodes" in counts else "pack",
        "object_info": info.source,
        **counts,
        "findings": [f.to_json() for f in found],
    }


@app.command()
def plan(
    pack: PackArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write the plan into.")],
) -> None:
    """Write the exact workflow every job would send, plus a plan summary, for inspection."""
    started = time.perf_counter()
    loaded = load_pack(pack)
    result = write_plan(loaded, out)
    elapsed = time.perf_counter() - started
    table = Table(title=f"plan for {loaded.name}", show_edge=False)
    table.add_column("scene")
    table.add_column("images", justify="right")
    table.add_column("seeds")
    for scene in loaded.scenes:
        seeds = [j.seed for j in result.jobs if j.scene == scene.name]
        shown = ", ".join(map(str, seeds[:3])) + (" …" if len(seeds) > 3 else "")
        table.add_row(scene.name, str(len(seeds)), shown)
    console.print(table)
    console.print(
        f"wrote {len(result.jobs)} workflows and plan.json to {out} in {elapsed * 1000:.0f} ms"
    )


# The order here is the order of `charpack --help`: a pack's life from file to published folder.
app.command()(cli_pack.preflight)
app.command()(cli_run.run)
app.command()(cli_pack.report)
app.command()(cli_pack.publish)
app.command("contact-sheet")(cli_pack.contact_sheet)
app.command("export-manifest")(cli_pack.export_manifest)
app.command()(cli_selftest.selftest)
app.add_typer(cli_pod.app, name="pod")
app.add_typer(cli_endpoint.app, name="endpoint")
app.add_typer(cli_character.app, name="character")
app.add_typer(workflows_app, name="workflows")


@workflows_app.command("export")
def workflows_export(
    check: Annotated[
        bool, typer.Option("--check", help="Only compare; exit 1 if the files drifted.")
    ] = False,
    directory: Annotated[
        Path, typer.Option("--dir", help="Where the generated API workflows live.")
    ] = workflow_files.API_DIR,
    ui_directory: Annotated[
        Optional[Path],  # noqa: UP045 - typer needs Optional on 3.10
        typer.Option("--ui-dir", help="Where the UI workflows live (default: ui/ beside --dir)."),
    ] = None,
    examples_directory: Annotated[
        Path,
        typer.Option("--examples-dir", help="The node pack's example_workflows/ folder."),
    ] = workflow_files.EXAMPLES_DIR,
) -> None:
    """Regenerate workflows/api/ and workflows/ui/ from the pipelines module and the node pack's
    example_workflows/ (or check them all for drift)."""
    ui_directory = ui_directory or directory.parent / "ui"
    generated = workflow_files.generate_all(directory, ui_directory, examples_directory)
    if check:
        problems = [p for d, files in generated.items() for p in workflow_files.check(d, files)]
        if problems:
            for line in problems:
                err_console.print(f"[red]drift[/] {escape(line)}")
            err_console.print("fix: run `charpack workflows export` and commit the result")
            raise typer.Exit(1)
        shown = ", ".join(str(d) for d in generated)
        console.print(f"[green]ok[/] {shown} match what charpack generates")
        return
    for target, files in generated.items():
        written = workflow_files.export(target, files)
        console.print(f"{len(written)} file(s) updated in {target}")


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except CharpackError as exc:  # one a command did not show itself (cli.output.reported)
        sys.exit(show_error(exc))
