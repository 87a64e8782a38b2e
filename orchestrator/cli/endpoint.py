"""``charpack endpoint up|status|down``: the RunPod Serverless endpoint for ``charpack run
--endpoint``.

Short commands over `charpack.serverless.endpoint`. Each prints a readable summary, or with
``--json`` one JSON object (errors included, in the one shape of
:func:`charpack.cli.output.error_json`). Secrets (RUNPOD_API_KEY, the S3 keys the workers get)
come from the environment and are never shown.
"""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer
from rich.markup import escape

from ..errors import PodError
from ..serverless.endpoint import (
    SPEND_LIMIT_PER_HOUR,
    EndpointInfo,
    api_key_from_env,
    endpoint_down,
    endpoint_status,
    endpoint_up,
    load_endpoint_spec,
)
from .output import JsonOpt, console, run_reported

app = typer.Typer(
    help="A RunPod Serverless endpoint running charpack's worker (charpack run --endpoint).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
NameOpt = Annotated[
    Optional[str],  # noqa: UP045 - typer needs Optional on 3.10
    typer.Option("--name", help="The endpoint's name (default: serverless.name of the manifest)."),
]
IdOpt = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option("--endpoint-id", help="This endpoint instead of the one named --name."),
]


@app.command()
def up(
    name: NameOpt = None,
    volume_id: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--volume-id", help="Network volume id (or CHARPACK_RUNPOD_VOLUME_ID)."),
    ] = None,
    image: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--image", help="Worker image (or CHARPACK_ENDPOINT_IMAGE)."),
    ] = None,
    gpu_type: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--gpu-type", help='RunPod GPU type id, e.g. "NVIDIA GeForce RTX 4090".'),
    ] = None,
    max_workers: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option("--max-workers", min=1, help="Most workers at once (RunPod's default: 3)."),
    ] = None,
    runpod_secret: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option(
            "--runpod-secret",
            metavar="VAR=SECRET_NAME",
            help="Give the workers VAR as a reference to the RunPod secret SECRET_NAME instead "
            "of its value (repeatable), e.g. AWS_SECRET_ACCESS_KEY=charpack_s3_secret: the "
            "endpoint then stores no credential itself.",
        ),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Create the endpoint, or update the settings that differ from the manifest and options."""

    def body() -> dict[str, Any]:
        spec = load_endpoint_spec(
            name=name,
            image=image,
            gpu_type=gpu_type,
            max_workers=max_workers,
            network_volume_id=volume_id,
        )
        refs = {}
        for item in runpod_secret or ():
            var, sep, secret = (part.strip() for part in item.partition("="))
            if not sep or not var or not secret:
                raise PodError(f"--runpod-secret {item!r}: expected VAR=SECRET_NAME")
            refs[var] = secret
        info = endpoint_up(spec=spec, api_key=api_key_from_env(), secret_refs=refs)
        if not json_out:
            _show_up(info)
        return {"endpoint": info.to_json()}

    run_reported(json_out, body)


def _price_line(info: EndpointInfo) -> str:
    if info.price is None or info.max_per_hour is None:
        return ""
    line = (
        f"${info.price.usd_per_s:.5f} per worker second ({escape(info.price.source)}); "
        f"up to ${info.max_per_hour:.2f}/h with all {info.workers_max} workers busy"
    )
    if info.max_per_hour > SPEND_LIMIT_PER_HOUR:
        line += (
            f" [yellow](over RunPod's default ${SPEND_LIMIT_PER_HOUR:.0f}/h spend limit: ask "
            "RunPod to raise it or lower --max-workers)[/]"
        )
    return line


def _show_up(info: EndpointInfo) -> None:
    what = {(): "unchanged", ("created",): "created"}.get(info.changed)
    what = what or "updated " + ", ".join(info.changed)
    console.print(
        f"[green]{what}[/] endpoint {info.endpoint_id} ({escape(info.gpu_type)}, "
        f"{info.workers_min}-{info.workers_max} workers, volume "
        f"{', '.join(info.network_volumes) or '-'} in {', '.join(info.data_centers) or '-'})"
    )
    if line := _price_line(info):
        console.print(line, highlight=False)
    console.print(
        f"run a pack on it: charpack run PACK --endpoint {info.endpoint_id} "
        f"--endpoint-workers {info.workers_max}"
    )
    console.print("remove it when done: charpack endpoint down (idle workers cost nothing)")


@app.command()
def status(name: NameOpt = None, endpoint_id: IdOpt = None, json_out: JsonOpt = False) -> None:
    """Show the endpoint: settings, price, workers, queue and what RunPod billed (30 days)."""

    def body() -> dict[str, Any]:
        spec = load_endpoint_spec(name=name)
        found = endpoint_status(spec=spec, api_key=api_key_from_env(), endpoint_id=endpoint_id)
        if not json_out:
            _show_status(spec.name, found)
        return {"endpoints": [e.to_json() for e in found]}

    run_reported(json_out, body)


def _counts(d: dict[str, int] | None, keys: tuple[str, ...]) -> str:
    return "-" if d is None else " ".join(f"{d.get(k, 0)} {k}" for k in keys)


def _show_status(name: str, found: list[EndpointInfo]) -> None:
    # One block per endpoint, not a table: the lines stay readable in a narrow terminal.
    if not found:
        console.print(f"no endpoint named {name!r}: create one with charpack endpoint up")
        return
    for e in found:
        billed = "-" if e.billed_usd is None else f"${e.billed_usd:.2f}"
        console.print(f"[bold]endpoint {e.endpoint_id}[/] ({escape(e.name)})", highlight=False)
        console.print(
            f"  {escape(e.gpu_type)}, {e.workers_min}-{e.workers_max} workers, idle timeout "
            f"{e.idle_timeout_s} s, volume {', '.join(e.network_volumes) or '-'}",
            highlight=False,
        )
        console.print(
            f"  workers now: {_counts(e.workers, ('running', 'idle', 'initializing'))}",
            highlight=False,
        )
        console.print(
            f"  jobs: {_counts(e.jobs, ('inQueue', 'inProgress', 'completed', 'failed'))}",
            highlight=False,
        )
        if line := _price_line(e):
            console.print(f"  {line}", highlight=False)
        console.print(f"  billed by RunPod, last 30 days: {billed}", highlight=False)


@app.command()
def down(
    name: NameOpt = None,
    endpoint_id: IdOpt = None,
    force: Annotated[
        bool,
        typer.Option("--force", help="Delete even while jobs are queued or running (cancelled)."),
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Delete the endpoint (the network volume and the pack folders stay)."""

    def body() -> dict[str, Any]:
        spec = load_endpoint_spec(name=name)
        done = endpoint_down(
            spec=spec, api_key=api_key_from_env(), endpoint_id=endpoint_id, force=force
        )
        if not json_out:
            if not done:
                console.print(f"nothing to delete: no endpoint named {spec.name!r}")
            for e in done:
                console.print(f"deleted endpoint {e.endpoint_id}")
        return {"endpoints": [e.to_json() for e in done]}

    run_reported(json_out, body)
