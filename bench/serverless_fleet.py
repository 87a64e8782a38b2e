"""Fifty simulated Serverless workers kept busy by charpack's real orchestrator.

Run by hand from the repository root (not a test; about 3 minutes with the defaults)::

    pip install -e '.[dev]'
    python bench/serverless_fleet.py

What runs, each in its own process:

- a real S3 API: moto's server (``moto_server``) on loopback, one bucket;
- the endpoint: ``tests/support/fake_serverless.py``, the fake of RunPod's ``/v2`` job API
  (``/run`` with its policy, ``GET /status``, 429 over the queue limit), with ``--workers``
  workers; each job is a stand-in of charpack's worker of fixed duration (``--job-seconds``):
  it sleeps, then puts a ``--png-kb`` PNG and the attempt's ``done.json`` into S3 under the keys
  of :mod:`charpack.serverless.objects` (PNG before ``done.json``, as the real handler does) and
  returns the handler's output (every UI output, the files with their sha256);
- the client: ``run_pack`` with the endpoint (``EndpointConfig(workers=--workers)``, the
  backend's defaults otherwise), the same call as ``charpack run PACK --endpoint ID``, posting
  the bench graph of ``bench/workload.py`` (``run_pack(..., workflow=...)``), so the stand-in
  names the files the graph would save. Its pack folder gets every image from S3, checked.

Per job time (several side by side with ``--job-seconds 4,12``) it records: the throughput
the workers achieved (jobs / first start to last end on the endpoint) against the ideal
``workers / job time``, how busy the workers were (busy worker seconds / (workers x span)), the
end-to-end rate (images in the pack folder / the client's wall time, start-up and the last
downloads included), and the client's CPU time (user + system, from the kernel's accounting of
the child) per job. The table goes to stdout and below the ``<!-- results -->`` line of
``bench/SERVERLESS.md`` (the text above it is kept), with the command and the machine.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import platform
import random
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a script: the repository root holds ``bench``
    sys.path.insert(0, str(REPO))

RESULTS = REPO / "bench" / "SERVERLESS.md"
MARK = "<!-- results -->"
BUCKET = "charpack-bench"
ENDPOINT_ID = "bench-fleet"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def png_bytes(kb: int, seed: int = 7) -> bytes:
    """A valid RGB PNG of about ``kb`` KiB of noise (noise does not compress)."""
    side = max(8, int((kb * 1024 / 3) ** 0.5))
    rnd = random.Random(seed)
    rows = b"".join(b"\x00" + rnd.randbytes(side * 3) for _ in range(side))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    head = side.to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
    out = io.BytesIO()
    out.write(b"\x89PNG\r\n\x1a\n")
    out.write(chunk(b"IHDR", head) + chunk(b"IDAT", zlib.compress(rows, 1)) + chunk(b"IEND", b""))
    return out.getvalue()


class StandIn:
    """charpack's worker reduced to its contract: fixed time, then objects and the output."""

    def __init__(self, *, seconds: float, png: bytes, env: dict[str, str]) -> None:
        import boto3

        from charpack.serverless.objects import S3Config

        self.seconds = seconds
        self.png = png
        self.sha = hashlib.sha256(png).hexdigest()
        self.config = S3Config.from_env(env)
        self.s3 = boto3.session.Session(
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name=env["AWS_DEFAULT_REGION"],
        ).client("s3", endpoint_url=self.config.endpoint_url)
        self.lock = threading.Lock()

    def __call__(self, job: dict[str, Any]) -> dict[str, Any]:
        from charpack.serverless import objects

        started = time.time()
        time.sleep(self.seconds)
        inp = job["input"]
        prompt_id, job_key, run_id = inp["prompt_id"], inp["job_key"], inp["run_id"]
        node_id, node = next(iter(inp["workflow"].items()))
        prefix = str(node["inputs"]["prefix"])
        subfolder, _, stem = prefix.rpartition("/")
        filename = f"{stem}_00001_.png"
        key = objects.output_key(self.config.prefix, run_id, job_key, prompt_id, filename)
        self.s3.put_object(Bucket=self.config.bucket, Key=key, Body=self.png)
        ref = {"filename": filename, "subfolder": subfolder, "type": "output"}
        finished = time.time()
        output = {
            "prompt_id": prompt_id,
            "status": "success",
            "ui": {node_id: {"images": [ref]}},
            "files": [{"node": node_id, "key": "images", "filename": filename,
                       "subfolder": subfolder, "s3_key": key, "sha256": self.sha,
                       "bytes": len(self.png)}],
            "comfyui_version": "0.3.75",
            "execution_s": round(finished - started, 3),
            "started_ms": int(started * 1000),
            "finished_ms": int(finished * 1000),
            "worker_s": round(finished - started, 3),
        }  # fmt: skip
        done = objects.done_key(self.config.prefix, run_id, job_key, prompt_id)
        self.s3.put_object(Bucket=self.config.bucket, Key=done, Body=json.dumps(output).encode())
        return {"output": output}


@dataclass(frozen=True)
class Row:
    job_s: float
    workers: int
    jobs: int
    images: int
    span_s: float
    throughput: float
    ideal: float
    busy: float
    wall_s: float
    end_to_end: float
    cpu_s: float
    requests: int
    ramp_s: float  # first start to the start that made every worker busy
    job_mean_s: float  # a job on its worker: the fixed time plus its S3 puts
    steady: float  # jobs/s while every worker had work (see `steady_rate`)

    @property
    def ratio(self) -> float:
        return self.throughput / self.ideal

    @property
    def steady_ratio(self) -> float:
        return self.steady / self.ideal


def steady_rate(spans: list[tuple[float, float]], workers: int) -> float:
    """Jobs per second between the moment every worker first had a job (the ``workers``-th
    start) and the last start (after it, workers only run out of work): the rate the fleet
    holds once the client has filled it, without the one-off ramp and tail."""
    starts = sorted(s for s, _ in spans)
    full, drain = starts[min(workers, len(starts)) - 1], starts[-1]
    ended = sum(full <= e <= drain for _, e in spans)
    return ended / (drain - full) if drain > full else float("nan")


def client(argv: list[str]) -> int:
    """The client process: run_pack on the endpoint, one JSON line with its result."""
    from bench.workload import BenchJob, Workload
    from charpack.pack.jobs import Job
    from charpack.pack.packfile import load_pack
    from charpack.run.runner import RunOptions, run_pack
    from charpack.serverless.backend import EndpointConfig

    parser = argparse.ArgumentParser()
    parser.add_argument("--pack", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--tag", required=True)
    args = parser.parse_args(argv)
    work = Workload(seconds=0.0, steps=1, tag=args.tag)

    def workflow(job: Job) -> dict[str, object]:
        return work.graph(BenchJob(job.seed, job.stem))

    started = time.monotonic()
    summary = run_pack(
        load_pack(args.pack),
        servers=[],
        endpoints=[EndpointConfig(endpoint_id=ENDPOINT_ID, workers=args.workers)],
        options=RunOptions(out=args.out, contact_sheet=False, handle_signals=False),
        workflow=workflow,
    )
    wall = time.monotonic() - started
    print(json.dumps({"wall_s": wall, "summary": summary.to_json()}), flush=True)
    return summary.exit_code


def _moto(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [shutil.which("moto_server") or "moto_server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError("moto_server exited at start") from None
            time.sleep(0.1)  # a bench, not a test: polling a port until it opens
    proc.kill()
    raise RuntimeError("moto_server did not open its port within 60 s")


def one(job_s: float, args: argparse.Namespace, env: dict[str, str], png: bytes) -> Row:
    from bench.workload import write_pack
    from tests.support.fake_serverless import FakeServerless

    jobs = args.workers * args.waves
    stand_in = StandIn(seconds=job_s, png=png, env=env)
    with tempfile.TemporaryDirectory(prefix="charpack-sls-bench-") as tmp:
        folder = Path(tmp)
        pack = write_pack(folder, name=f"fleet-{int(job_s * 1000)}", count=jobs, seed=11)
        out = folder / "out"
        tag = f"sls{int(time.time())}"
        with FakeServerless(stand_in, workers=args.workers, endpoint_id=ENDPOINT_ID) as fake:
            child_env = {**os.environ, **env, **fake.env}
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.monotonic()
            done = subprocess.run(
                [sys.executable, str(Path(__file__).resolve()), "--client", "--pack", str(pack),
                 "--out", str(out), "--workers", str(args.workers), "--tag", tag],
                env=child_env, capture_output=True, text=True, check=False,
            )  # fmt: skip
            wall = time.monotonic() - started
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            if done.returncode != 0:
                sys.stderr.write(done.stderr[-4000:])
                raise SystemExit(f"client exited {done.returncode}")
            runs = [j for j in fake.runs if j.started_at is not None and j.ended_at is not None]
            requests = len(fake.requests)
        images = len(list(out.rglob("*.png")))
    first = min(j.started_at for j in runs)  # type: ignore[type-var]
    last = max(j.ended_at for j in runs)  # type: ignore[type-var]
    span = last - first
    busy = sum(j.ended_at - j.started_at for j in runs)  # type: ignore[operator]
    completed = sum(j.status == "COMPLETED" for j in runs)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    spans = [(j.started_at, j.ended_at) for j in runs]
    starts = sorted(s for s, _ in spans)
    return Row(
        job_s=job_s,
        workers=args.workers,
        jobs=jobs,
        images=images,
        span_s=span,
        throughput=completed / span,
        ideal=args.workers / job_s,
        busy=busy / (args.workers * span),
        wall_s=wall,
        end_to_end=images / wall,
        cpu_s=cpu,
        requests=requests,
        ramp_s=starts[min(args.workers, len(starts)) - 1] - starts[0],
        job_mean_s=busy / len(runs),
        steady=steady_rate(spans, args.workers),  # type: ignore[arg-type]
    )


def table(rows: list[Row]) -> str:
    head = (
        "| job time | workers | jobs | images in folder | ideal | steady throughput (ratio) "
        "| whole-run throughput (ratio) | workers busy | ramp | job on worker | client wall "
        "| end to end | client CPU per job | API requests |"
    )
    lines = [head, "|" + "---|" * 14]
    for r in rows:
        lines.append(
            f"| {r.job_s:g} s | {r.workers} | {r.jobs} | {r.images} | {r.ideal:.2f}/s "
            f"| {r.steady:.2f}/s (**{r.steady_ratio:.3f}**) "
            f"| {r.throughput:.2f}/s ({r.ratio:.3f}) | {r.busy:.1%} | {r.ramp_s:.1f} s "
            f"| {r.job_mean_s:.2f} s | {r.wall_s:.1f} s | {r.end_to_end:.2f}/s "
            f"| {r.cpu_s / r.jobs * 1000:.1f} ms | {r.requests} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--client":
        return client(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=50)
    parser.add_argument("--job-seconds", default="4,12", help="comma-separated, side by side")
    parser.add_argument("--waves", type=int, default=6, help="jobs = workers x waves")
    parser.add_argument("--png-kb", type=int, default=256)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    port = _free_port()
    moto = _moto(port)
    env = {
        "CHARPACK_S3_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "CHARPACK_S3_BUCKET": BUCKET,
        "CHARPACK_S3_PREFIX": "charpack",
        "AWS_ACCESS_KEY_ID": "bench-key-id",
        "AWS_SECRET_ACCESS_KEY": "bench-secret-key",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    try:
        import boto3

        boto3.client(
            "s3",
            endpoint_url=env["CHARPACK_S3_ENDPOINT_URL"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name=env["AWS_DEFAULT_REGION"],
        ).create_bucket(Bucket=BUCKET)
        png = png_bytes(args.png_kb)
        rows = []
        for job_s in (float(x) for x in args.job_seconds.split(",")):
            row = one(job_s, args, env, png)
            print(table([row]).splitlines()[-1], flush=True)
            rows.append(row)
    finally:
        moto.terminate()
        moto.wait(30)
    text = table(rows)
    command = "python bench/serverless_fleet.py " + " ".join(argv)
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    body = (
        f"{MARK}\n\nCommand: `{command.strip()}` — {when}, {machine}; "
        f"PNG {len(png) // 1024} KiB per job.\n\n{text}\n"
    )
    print(text)
    if not args.no_write:
        old = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else MARK
        RESULTS.write_text(old.split(MARK)[0] + body, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
