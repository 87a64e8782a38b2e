"""The clients charpack is measured against, each run in its own process by the benchmark.

- ``naive``: the loop of ComfyUI's ``script_examples/websockets_api_example.py``, written after
  its pattern (not its code): one websocket (websocket-client) with a ``client_id``, then per
  job POST ``/prompt``, block until ``executing`` with ``node: null`` for that prompt, GET
  ``/history/{id}``, GET ``/view`` for each image (read whole, as the example does) and write it
  to disk, next job. The server idles from each job's end until the next POST arrives.
- ``simplified``: ``comfy-api-simplified==1.6.0`` as its README drives it,
  ``ComfyApiWrapper(url).queue_and_wait_images(workflow, "Save Image")`` per job (a new
  websocket per job, opened after the POST), then the returned bytes written to disk.
- ``queued``: not a client anyone ships but the **floor**: every job POSTed up front, then each
  collected as it finishes. The server never waits for a client, so the gaps between its
  prompts are its own (history, ``gc.collect()``, the next prompt's start).

Command line (used by ``bench/orchestrator_bench.py``)::

    python bench/comparators.py naive --server URL --pack PACK --tag T --seconds S --steps N \\
        --out DIR

prints one JSON object: ``wall_s`` (first request to last file on disk; ``t0``, ``t1``: the same
as epoch seconds), ``files``, ``bytes``,
``rss_mb`` (the process's peak memory).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: the repository root holds ``bench``
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.workload import TITLE, BenchJob, Workload, jobs_of, peak_rss_mb

Client = Callable[[str, list[BenchJob], Workload, Path], None]


def _post(url: str, graph: dict[str, Any], client_id: str) -> str:
    body = json.dumps({"prompt": graph, "client_id": client_id}).encode()
    request = urllib.request.Request(f"{url}/prompt", data=body)
    with urllib.request.urlopen(request) as response:
        return str(json.loads(response.read())["prompt_id"])


def _history(url: str, prompt_id: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/history/{prompt_id}") as response:
        return dict(json.loads(response.read())[prompt_id])


def _view(url: str, image: dict[str, str]) -> bytes:
    query = urllib.parse.urlencode(
        {"filename": image["filename"], "subfolder": image["subfolder"], "type": image["type"]}
    )
    with urllib.request.urlopen(f"{url}/view?{query}") as response:
        return bytes(response.read())


def _save_outputs(url: str, prompt_id: str, stem: str, out: Path) -> None:
    entry = _history(url, prompt_id)
    for node_output in entry["outputs"].values():
        # Save pack lists its full-size files under pack_images (its images are previews).
        for i, image in enumerate(node_output.get("pack_images") or node_output.get("images", [])):
            name = f"{stem}.png" if i == 0 else f"{stem}_{i:02d}.png"
            (out / name).write_bytes(_view(url, image))


def _ws_url(url: str, client_id: str) -> str:
    return url.replace("http", "ws", 1) + f"/ws?clientId={client_id}"


def naive(url: str, jobs: list[BenchJob], work: Workload, out: Path) -> None:
    import websocket

    client_id = str(uuid.uuid4())
    ws = websocket.WebSocket()
    ws.connect(_ws_url(url, client_id))
    try:
        for job in jobs:
            prompt_id = _post(url, work.graph(job), client_id)
            while True:
                message = ws.recv()
                if not isinstance(message, str):
                    continue  # previews are binary
                event = json.loads(message)
                data = event.get("data") or {}
                if event["type"] == "executing" and data.get("prompt_id") == prompt_id:
                    if data.get("node") is None:
                        break
            _save_outputs(url, prompt_id, job.stem, out)
    finally:
        ws.close()


def simplified(url: str, jobs: list[BenchJob], work: Workload, out: Path) -> None:
    from comfy_api_simplified import ComfyApiWrapper, ComfyWorkflowWrapper

    api = ComfyApiWrapper(url)
    for job in jobs:
        images = api.queue_and_wait_images(ComfyWorkflowWrapper(work.graph(job)), TITLE)
        for i, data in enumerate(images.values()):
            name = f"{job.stem}.png" if i == 0 else f"{job.stem}_{i:02d}.png"
            (out / name).write_bytes(data)


def queued(url: str, jobs: list[BenchJob], work: Workload, out: Path) -> None:
    import websocket

    client_id = str(uuid.uuid4())
    ws = websocket.WebSocket()
    ws.connect(_ws_url(url, client_id))
    try:
        waiting = {_post(url, work.graph(job), client_id): job for job in jobs}
        while waiting:
            message = ws.recv()
            if not isinstance(message, str):
                continue
            event = json.loads(message)
            data = event.get("data") or {}
            if event["type"] == "executing" and data.get("node") is None:
                job = waiting.pop(str(data.get("prompt_id")), None)
                if job is not None:
                    _save_outputs(url, str(data["prompt_id"]), job.stem, out)
    finally:
        ws.close()


CLIENTS: dict[str, Client] = {"naive": naive, "simplified": simplified, "queued": queued}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("client", choices=sorted(CLIENTS))
    parser.add_argument("--server", required=True)
    parser.add_argument("--pack", type=Path, required=True)
    parser.add_argument("--tag", required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    jobs = jobs_of(args.pack)
    work = Workload(seconds=args.seconds, steps=args.steps, tag=args.tag)
    args.out.mkdir(parents=True, exist_ok=True)
    t0, started = time.time(), time.monotonic()
    CLIENTS[args.client](args.server.rstrip("/"), jobs, work, args.out)
    wall, t1 = time.monotonic() - started, time.time()
    files = sorted(args.out.glob("*.png"))
    result = {
        "wall_s": wall,
        "t0": t0,
        "t1": t1,
        "files": len(files),
        "bytes": sum(f.stat().st_size for f in files),
        "rss_mb": peak_rss_mb(),
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
