"""``charpack pod up|status|down``: a RunPod GPU pod with ComfyUI behind our auth proxy.

Short commands over `charpack.pod.lifecycle`. Each prints a readable summary, or with ``--json`` one
JSON object (errors included, in the one shape of :func:`charpack.cli.output.error_json`).
Secrets (RUNPOD_API_KEY, CHARPACK_TOKEN, CIVITAI_TOKEN, HF_TOKEN) come from the environment and
are never shown.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from ..errors import AuthError, CharpackError
from ..pod.api import api_key_from_env
from ..pod.health import check_health
from ..pod.lifecycle import (
    DEFAULT_NAME,
    PodInfo,
    comfy_token_from_env,
    ensure_pod_up,
    load_pod_spec,
    pod_status,
    stop_pod,
)
from .output import JsonOpt, console, err_console, run_reported

app = typer.Typer(
    help="A RunPod GPU pod running ComfyUI behind charpack's auth proxy.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
NameOpt = Annotated[
    str, typer.Option("--name", help="The pod's name: charpack finds its pod by it.")
]


@app.command()
def up(
    name: NameOpt = DEFAULT_NAME,
    volume_id: Annotated[
        Optional[str],  # noqa: UP045 - typer needs Optional on 3.10
        typer.Option("--volume-id", help="Network volume id (or CHARPACK_RUNPOD_VOLUME_ID)."),
    ] = None,
    civitai_version: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option(
            "--civitai-version",
            metavar="KEY=VERSION_ID",
            help="The CivitAI version of a CivitAI model entry, e.g. biglove_xl=1744439 "
            "(repeatable; or CHARPACK_CIVITAI_VERSIONS). Provisioning verifies the download "
            "against the SHA256 CivitAI lists for it.",
        ),
    ] = None,
    record_hashes: Annotated[
        bool,
        typer.Option(
            "--record-hashes",
            help="Let provisioning download entries you added to the manifest without a "
            "sha256 and record theirs (trust on first use). The shipped entries need none.",
        ),
    ] = False,
    repo_ref: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            "--ref",
            help="charpack git ref the pod runs (default: this client's version, so the pod's "
            "nodes match it; preflight refuses a pod at another one).",
        ),
    ] = None,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout",
            help="Seconds to wait for ComfyUI (first start provisions ~19 GB of models).",
        ),
    ] = 3600.0,
    poll_seconds: Annotated[float, typer.Option("--poll-seconds", hidden=True)] = 5.0,
    json_out: JsonOpt = False,
) -> None:
    """Resume or create the pod, wait until ComfyUI answers through the proxy, print its URL."""

    def body() -> dict[str, Any]:
        spec = load_pod_spec(
            name=name,
            network_volume_id=volume_id,
            repo_ref=repo_ref,
            provision_args=("--record-hashes",) if record_hashes else (),
            civitai_versions=tuple(civitai_version or ()),
        )
        api_key = api_key_from_env()
        token = comfy_token_from_env()
        say = (lambda _m: None) if json_out else (lambda m: err_console.print(escape(m)))
        info = ensure_pod_up(
            spec=spec,
            api_key=api_key,
            comfy_token=token,
            timeout_s=timeout,
            poll_s=poll_seconds,
            on_progress=say,
        )
        if not json_out:
            _show_up(info)
        return {"pod": info.to_json()}

    run_reported(json_out, body)


def _show_up(info: PodInfo) -> None:
    console.print(
        f"[green]ready[/] pod {info.pod_id} ({info.gpu or 'GPU'}"
        f"{f', ${info.cost_per_hr}/h' if info.cost_per_hr else ''})"
    )
    console.print(info.url, highlight=False)
    if info.provision_failures:
        console.print(
            f"[yellow]provisioning reported {len(info.provision_failures)} "
            "problem(s); ComfyUI runs with what is in place:[/]"
        )
        for line in info.provision_failures:
            console.print(f"  - {escape(line)}", highlight=False)
        console.print(
            "fix them, then restart the pod (charpack pod down; charpack pod up): "
            "provisioning reruns at every start"
        )
    console.print("stop it when done: charpack pod down")


@app.command()
def status(name: NameOpt = DEFAULT_NAME, json_out: JsonOpt = False) -> None:
    """Show the pod(s) with that name: state, GPU, price, URL, and whether ComfyUI answers."""

    def body() -> dict[str, Any]:
        spec = load_pod_spec(name=name)
        pods = pod_status(spec=spec, api_key=api_key_from_env())
        try:
            token: str | None = comfy_token_from_env()
        except CharpackError:
            token = None  # without the token we can still list, just not probe
        checked = [_probe(p, token) for p in pods]
        if not json_out:
            _show_status(name, checked)
        return {"pods": [p.to_json() for p in checked]}

    run_reported(json_out, body)


def _probe(info: PodInfo, token: str | None) -> PodInfo:
    if info.status != "RUNNING" or token is None:
        return info
    try:
        ready, _ = check_health(url=info.url, token=token, timeout=10)
    except (AuthError, CharpackError):
        ready = False
    return replace(info, healthy=ready)


def _show_status(name: str, pods: list[PodInfo]) -> None:
    if not pods:
        console.print(f"no pod named {name!r}: start one with charpack pod up")
        return
    table = Table(show_edge=False)
    for column in ("pod", "state", "GPU", "$/h", "up", "ComfyUI", "URL"):
        table.add_column(column)
    for p in pods:
        health = {True: "[green]ready[/]", False: "[yellow]not ready[/]", None: "-"}[p.healthy]
        uptime = f"{p.uptime_s // 60} min" if p.uptime_s else "-"
        table.add_row(
            p.pod_id, p.status, p.gpu or "-", str(p.cost_per_hr or "-"), uptime, health, p.url
        )
    console.print(table)


@app.command()
def down(
    name: NameOpt = DEFAULT_NAME,
    pod_id: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--pod-id", help="Stop this pod instead of the one named --name."),
    ] = None,
    terminate: Annotated[
        bool,
        typer.Option(
            "--terminate",
            help="Delete the pod instead of stopping it (the "
            "network volume and everything on it stay).",
        ),
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Stop the pod: GPU billing ends; the network volume keeps models and outputs."""

    def body() -> dict[str, Any]:
        spec = load_pod_spec(name=name)
        done = stop_pod(spec=spec, api_key=api_key_from_env(), pod_id=pod_id, terminate=terminate)
        if not json_out:
            if not done:
                console.print(f"nothing to stop: no running pod named {name!r}")
            for p in done:
                console.print(f"{p.status.lower()} pod {p.pod_id}")
        return {"pods": [p.to_json() for p in done]}

    run_reported(json_out, body)
