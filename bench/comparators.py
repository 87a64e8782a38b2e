"""The clients charpack is measured against, each run in its own process by the benchmark.

- ``naive``: the loop of ComfyUI's ``script_examples/websockets_api_example.py``, written after
  its pattern (not its code): one websocket (websocket-client) with a ``client_id``, then per
  job POST ``/prompt``, block until ``executing`` with ``node: null`` for that prompt, GET
  ``/history/{id}``, GET ``/view`` for each image (read whole, as the example does) and write it
  to disk, next job. The server idles from each job's end until the next POST arrives.
- ``simplified``: ``comfy-api-simplified==1.6.0`` as its README drives it,
  ``ComfyApiWrapper(url).queue_and_wait_images(workflow, "Save Image")`` per job (a new
  websocket per job, opened after the POST), then the returned bytes written to disk.
- ``toolkit``: ``comfy-toolkit==0.1.0``, pipelined: ``ComfyClient(url).submit(graph)`` keeps
  :data:`DEPTH` prompts queued on the server (charpack's backlog), then per job, oldest first,
  ``wait_for_images(prompt_id)`` (its ``/history`` polling, default 2 s apart, which re-reads
  until the outputs exist) and ``download(descriptor)`` for each image, writing the bytes, and
  the next job submitted. The server has the next prompt queued while the client polls.
- ``headless``: ``comfy-headless==3.1.1``, pipelined the same way: ``ComfyClient(base_url=url)``
  ``.queue_prompt(graph)`` keeps :data:`DEPTH` queued, then per job ``wait_for_completion
  (prompt_id)`` (``/history`` polled every 0.5 s, its default) and ``get_image(filename,
  subfolder, type)`` for each image of the entry.
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

# Prompts the pipelined peers keep on the server at once: charpack's runner's default backlog.
DEPTH = 2


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


def _image_name(stem: str, i: int) -> str:
    return f"{stem}.png" if i == 0 else f"{stem}_{i:02d}.png"


def toolkit(url: str, jobs: list[BenchJob], work: Workload, out: Path) -> None:
    from comfy_toolkit import ComfyClient

    client = ComfyClient(url)
    waiting: list[tuple[str, BenchJob]] = []
    pending = iter(jobs)
    for job in pending:
        waiting.append((client.submit(work.graph(job)), job))
        if len(waiting) == DEPTH:
            break
    while waiting:
        prompt_id, job = waiting.pop(0)
        images = client.wait_for_images(prompt_id)
        for job_next in pending:  # refill the queue before downloading, as a pipeline would
            waiting.append((client.submit(work.graph(job_next)), job_next))
            break
        for i, image in enumerate(images):
            (out / _image_name(job.stem, i)).write_bytes(client.download(image))


def headless(url: str, jobs: list[BenchJob], work: Workload, out: Path) -> None:
    from comfy_headless.client import ComfyClient

    client = ComfyClient(base_url=url)
    waiting: list[tuple[str, BenchJob]] = []
    pending = iter(jobs)

    def submit(job: BenchJob) -> None:
        prompt_id = client.queue_prompt(work.graph(job))
        if prompt_id is None:
            raise RuntimeError(f"comfy-headless could not queue job {job.stem}")
        waiting.append((prompt_id, job))

    for job in pending:
        submit(job)
        if len(waiting) == DEPTH:
            break
    while waiting:
        prompt_id, job = waiting.pop(0)
        entry = client.wait_for_completion(prompt_id)
        if entry is None or not entry.get("status", {}).get("completed"):
            raise RuntimeError(f"comfy-headless: job {job.stem} failed or timed out: {entry}")
        for job_next in pending:
            submit(job_next)
            break
        images = [im for o in entry["outputs"].values() for im in o.get("images", [])]
        for i, image in enumerate(images):
            data = client.get_image(image["filename"], image["subfolder"], image["type"])
            if data is None:
                raise RuntimeError(f"comfy-headless: no bytes for {image['filename']}")
            (out / _image_name(job.stem, i)).write_bytes(data)


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


CLIENTS: dict[str, Client] = {
    "naive": naive,
    "simplified": simplified,
    "toolkit": toolkit,
    "headless": headless,
    "queued": queued,
}


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
