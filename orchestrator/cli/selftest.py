"""``charpack selftest --server URL``: the 5-shot identity test on a server, measured.

A short command over :func:`charpack.check.selftest.selftest`: the table of stage times, the
identity figures, the peak device memory and each target met or missed (``--json``: one object
on stdout). Exit codes: 0 every target met, 1 a target missed, 2 bad input, 3 no server.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from ..check.selftest import SelftestReport
from ..check.selftest import selftest as run_selftest
from ..comfy.auth import ServerConfig
from ..errors import CharpackError
from ..run.options import RunOptions
from .output import console, err_console, print_json, show_error
from .progress import RichProgress
from .run import server_urls

GB = 1024**3


def selftest(
    server: Annotated[
        Optional[str],  # noqa: UP045 - typer needs Optional on 3.10
        typer.Option("--server", "-s", help="The ComfyUI server (default $CHARPACK_SERVER)."),
    ] = None,
    pack: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(
            "--pack", help="A pack file whose character to test (default: a synthetic one)."
        ),
    ] = None,
    out: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option("--out", "-o", help="Where the test's pack folder goes (default a temp dir)."),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="The report as JSON on stdout.")] = False,
) -> None:
    """Run the 5-shot identity test on a server and report stage times, memory and targets."""
    config = ServerConfig.from_url(server_urls([server] if server else None)[0])
    folder = out or Path(tempfile.mkdtemp(prefix="charpack-selftest-"))
    try:
        if json_out:
            report = run_selftest(config, out=folder, pack_file=pack)
        else:
            with RichProgress(err_console) as display:
                report = run_selftest(
                    config, out=folder, pack_file=pack, options=RunOptions(on_event=display)
                )
    except CharpackError as exc:
        raise typer.Exit(show_error(exc, "json" if json_out else "text")) from None
    if json_out:
        print_json(report.to_json())
    else:
        _show(report)
    if not report.ok:
        raise typer.Exit(1)


def _show(r: SelftestReport) -> None:
    console.print(
        f"selftest of {escape(r.server)} (ComfyUI {r.comfyui_version or '?'}, {escape(r.device)}): "
        f"{r.images} of {r.shots} shots; pack folder {escape(str(r.folder))}",
        highlight=False,
    )
    stages = Table(title="stage time, s (median of the shots that ran it)", show_edge=False)
    for name in r.stage_seconds:
        stages.add_column(name, justify="right")
    stages.add_row(*(f"{v:.2f}" for v in r.stage_seconds.values()))
    console.print(stages)
    if r.identity:
        i = r.identity
        console.print(
            f"identity: mean {i['mean']:.3f}, p10 {i['p10']:.3f}, min {i['min']:.3f} "
            f"(threshold {r.threshold:.2f})",
            highlight=False,
        )
    if r.peak_memory_bytes is not None and r.memory_total_bytes:
        console.print(
            f"peak memory in use (sampled from /system_stats): {r.peak_memory_bytes / GB:.1f} of "
            f"{r.memory_total_bytes / GB:.1f} GiB",
            highlight=False,
        )
    table = Table(title="targets", show_edge=False)
    for column in ("target", "wanted", "measured", ""):
        table.add_column(column)
    for t in r.targets:
        table.add_row(t.name, t.wanted, t.measured, "[green]met[/]" if t.met else "[red]missed[/]")
    console.print(table)
