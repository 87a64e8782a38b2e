"""``charpack run PACK``: generate a whole pack on one or many ComfyUI servers.

A short command over :func:`charpack.run.runner.run_pack`: it resolves the servers (``--server``,
repeatable, else ``CHARPACK_SERVER`` comma-separated, else ``http://127.0.0.1:8188``; with
``--pod`` a RunPod pod is brought up first and stopped afterwards), shows the run (rich
progress, or ``--json``: one JSON event per line on stdout), prints a summary and exits with
its code: 0 every job has an image, 1 some failed or are left, 2 bad input, 3 no server / wrong
credentials, 130 stopped by Ctrl-C. Credentials come from the environment only
(``CHARPACK_TOKEN``, ``CHARPACK_BASIC_AUTH``) and are
never printed. The ``charpack`` app registers :func:`run`; ``python -m charpack.cli.run``
runs it alone. ``--endpoint ID`` (repeatable) adds RunPod Serverless endpoints, alone or beside
the servers (:mod:`charpack.serverless.backend`); with an endpoint and no ``--server`` no
default server is used.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from ..comfy.auth import ServerConfig
from ..errors import CharpackError
from ..pack.packfile import Pack, load_pack
from ..run.runner import RunOptions, RunSummary, run_pack
from .output import console, err_console, show_error
from .progress import JsonLines, RichProgress

if TYPE_CHECKING:
    from ..serverless.backend import EndpointConfig

SERVER_ENV = "CHARPACK_SERVER"
DEFAULT_SERVER = "http://127.0.0.1:8188"


def server_urls(given: list[str] | None, env: dict[str, str] | None = None) -> list[str]:
    """The servers to use: ``--server`` values, else ``$CHARPACK_SERVER``, else the default."""
    env = dict(os.environ) if env is None else env
    urls = [u.strip() for u in given or [] if u.strip()]
    if not urls:
        urls = [u.strip() for u in env.get(SERVER_ENV, "").split(",") if u.strip()]
    return list(dict.fromkeys(urls or [DEFAULT_SERVER]))


def run(
    pack: Annotated[Path, typer.Argument(help="The pack file (YAML).")],
    server: Annotated[
        Optional[list[str]],  # noqa: UP045 - typer needs Optional on 3.10
        typer.Option(
            "--server",
            "-s",
            help="A ComfyUI server URL (repeat for several); default $CHARPACK_SERVER "
            f"(comma-separated) or {DEFAULT_SERVER}.",
        ),
    ] = None,
    out: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option("--out", "-o", help="The pack folder (default ./<pack name>)."),
    ] = None,
    backlog: Annotated[
        int,
        typer.Option(
            "--backlog",
            min=0,
            max=32,
            help="Prompts queued behind the running one on each server, so its GPU never waits.",
        ),
    ] = 2,
    max_retries: Annotated[
        int,
        typer.Option(
            "--max-retries",
            min=0,
            max=10,
            help="New-seed retries of a job after an execution error.",
        ),
    ] = 2,
    json_out: Annotated[
        bool, typer.Option("--json", help="One JSON event per line on stdout, for scripts.")
    ] = False,
    pod: Annotated[
        bool,
        typer.Option(
            "--pod",
            help="Bring the RunPod pod up for the run (needs "
            "RUNPOD_API_KEY, CHARPACK_TOKEN) and stop it afterwards.",
        ),
    ] = False,
    pod_name: Annotated[str, typer.Option("--pod-name", help="The pod's name.")] = "charpack",
    volume_id: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--volume-id", help="Network volume for a new pod."),
    ] = None,
    contact_sheet: Annotated[
        bool, typer.Option("--contact-sheet/--no-contact-sheet", help="Write contact-sheet.jpg.")
    ] = True,
    endpoint: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option(
            "--endpoint",
            "-e",
            help="A RunPod Serverless endpoint id to run jobs on (repeatable; alone or beside "
            "--server). Needs RUNPOD_API_KEY and the results bucket: CHARPACK_S3_BUCKET, "
            "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (CHARPACK_S3_ENDPOINT_URL for "
            "S3-compatible storage).",
        ),
    ] = None,
    endpoint_workers: Annotated[
        int,
        typer.Option(
            "--endpoint-workers",
            min=1,
            max=1000,
            help="GPUs each endpoint runs at once (its max workers): the run keeps "
            "that many jobs running there, plus --backlog queued per GPU.",
        ),
    ] = 10,
    job_timeout: Annotated[
        float,
        typer.Option(
            "--job-timeout",
            min=6,
            max=86400,
            help="Seconds a Serverless job may run before RunPod stops it (its policy's "
            "execution timeout); it then runs again.",
        ),
    ] = 600,
) -> None:
    """Generate every image of a pack into a pack folder; run it again to resume."""
    try:
        loaded = load_pack(pack)
        options = RunOptions(
            out=out or Path.cwd() / loaded.name,
            backlog=backlog,
            max_retries=max_retries,
            contact_sheet=contact_sheet,
        )
        endpoints = _endpoints(endpoint, endpoint_workers, job_timeout)
        if endpoints and not server and not pod:
            configs: list[ServerConfig] = []  # the endpoint alone: no default server
            summary = _run(loaded, configs, options, json_out, endpoints)
        else:
            with _servers(server, pod, pod_name, volume_id, json_out) as configs:
                summary = _run(loaded, configs, options, json_out, endpoints)
    except CharpackError as exc:
        raise typer.Exit(show_error(exc, "events" if json_out else "text")) from None
    if not json_out:
        _show(summary)
    if summary.exit_code:
        raise typer.Exit(summary.exit_code)


@contextmanager
def _servers(
    given: list[str] | None, pod: bool, pod_name: str, volume_id: str | None, quiet: bool
) -> Iterator[list[ServerConfig]]:
    if not pod:
        yield [ServerConfig.from_url(url) for url in server_urls(given)]
        return
    from ..pod.lifecycle import api_key_from_env, comfy_token_from_env, load_pod_spec, pod_session

    spec = load_pod_spec(name=pod_name, network_volume_id=volume_id)
    token = comfy_token_from_env()
    extra = [ServerConfig.from_url(url) for url in given or []]

    def say(message: str) -> None:
        if not quiet:
            err_console.print(escape(message), highlight=False)

    with pod_session(
        spec=spec, api_key=api_key_from_env(), comfy_token=token, on_progress=say
    ) as info:
        yield [info.server(token=token), *extra]


def _endpoints(ids: list[str] | None, workers: int, timeout_s: float) -> list[EndpointConfig]:
    if not ids:
        return []
    from ..serverless.backend import EndpointConfig
    from ..serverless.jobs_api import Policy

    policy = Policy(execution_timeout_ms=int(timeout_s * 1000))
    given = dict.fromkeys(i.strip() for i in ids if i.strip())
    return [EndpointConfig(endpoint_id=i, workers=workers, policy=policy) for i in given]


def _run(
    pack: Pack,
    configs: list[ServerConfig],
    options: RunOptions,
    json_out: bool,
    endpoints: list[EndpointConfig],
) -> RunSummary:
    if json_out:
        with JsonLines(sys.stdout) as lines:
            return run_pack(
                pack,
                servers=configs,
                options=replace(options, on_event=lines),
                endpoints=endpoints,
            )
    with RichProgress(err_console) as display:
        return run_pack(
            pack, servers=configs, options=replace(options, on_event=display), endpoints=endpoints
        )


def _show(summary: RunSummary) -> None:
    counts = summary.counts
    table = Table(title=f"{summary.pack} → {summary.folder}", show_edge=False)
    for column in ("images", "below threshold", "failed", "not run", "attempts", "time"):
        table.add_column(column, justify="right")
    left = counts.get("pending", 0) + counts.get("submitted", 0)
    table.add_row(
        str(counts.get("done", 0)),
        str(counts.get("below_threshold", 0)),
        str(counts.get("failed", 0)),
        str(left),
        str(summary.attempts),
        f"{summary.elapsed_s:.1f} s",
    )
    console.print(table)
    for key, error in summary.failures[:20]:
        console.print(f"[red]{escape(key)}[/]: {escape(error)}", highlight=False)
    if len(summary.failures) > 20:
        console.print(f"… and {len(summary.failures) - 20} more (see manifest.json)")
    if summary.error:
        err_console.print(f"[red]error:[/] {escape(summary.error)}", highlight=False)
    if summary.interrupted:
        console.print("stopped; run the same command again to resume")
    elif left:
        console.print(f"{left} job(s) not finished; run the same command again to resume")
