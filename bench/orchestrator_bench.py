"""charpack's runner against the naive loop and comfy-api-simplified, on real CPU servers.

Run by hand from the repository root (not a test; about 40 minutes with the defaults)::

    pip install -e '.[dev,bench]'
    python bench/orchestrator_bench.py

It makes the bench picture (``bench/picture.py``), starts the largest server count of real
ComfyUI 0.3.75 CPU servers with the bench node (``bench/servers.py``), warms each with one job,
and then, on each link (``loopback``: straight to the server; ``shaped``: through a relay per
server, ``--delay`` each way and ``--rate`` bytes/s both ways, like the RunPod proxy), runs the
same ``--jobs``-job pack (``bench/workload.py``) with every client, each in its own process:

- on one server: ``queued`` (every job POSTed up front: the server's own floor), charpack's
  runner, the naive loop and comfy-api-simplified (``bench/comparators.py``);
- on each larger server count: charpack's runner;

and last a ``--memory-jobs`` pack on ``--memory-servers`` servers with charpack's runner, its
contact sheet made afterwards, for the client's peak memory. Per run it records the client's
wall time (measured inside the client: first request to last file on disk), the servers'
execution spans from their own ``/history`` timestamps (busy = sum of spans, idle = gaps
between one prompt's end and the next one's start; lead-in = client start to the first
prompt's start, tail = the last prompt's end to the client's end), the client process's peak memory
(``VmHWM``, reported by the client itself: the whole process, imports included) and whether
every file arrived whole. The table goes to stdout and below the ``<!-- results -->`` line of
``bench/RESULTS.md`` (the text above it is kept), with the command and the machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: the repository root holds ``bench``
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import comparators
from bench.picture import bench_picture, cache_dir
from bench.report import Row, render, write_results
from bench.servers import BenchServer, busy_idle, clear_outputs, spans, start_servers
from bench.workload import REPO, Workload, jobs_of, write_pack

log = logging.getLogger("bench")

RESULTS = REPO / "bench" / "RESULTS.md"
ONE_SERVER_CLIENTS = ("queued", "charpack", "naive", "simplified", "toolkit", "headless")


class Bench:
    def __init__(self, args: argparse.Namespace, servers: list[BenchServer], work: Path) -> None:
        self.args = args
        self.servers = servers
        self.work = work
        self.picture_size = bench_picture().stat().st_size

    def run(
        self, client: str, link: str, count: int, *, jobs: int, seconds: float, rnd: int = 1,
        sheet: bool = False,
    ) -> Row:  # fmt: skip
        args = self.args
        used = self.servers[:count]
        tag = f"{client}-{link}-{count}s-{uuid.uuid4().hex[:6]}"
        folder = self.work / "packs" / tag
        pack = write_pack(folder, name=tag, count=jobs, seed=args.seed)
        out = self.work / "out" / tag
        urls = [s.url(link) for s in used]
        common = ["--pack", str(pack), "--tag", tag, "--out", str(out)]
        common += ["--seconds", str(seconds), "--steps", str(args.steps)]
        if client == "charpack":
            script = REPO / "bench" / "charpack_client.py"
            command = [sys.executable, str(script), *common]
            command += [a for url in urls for a in ("--server", url)]
            command += ["--contact-sheet"] if sheet else []
        else:
            script = REPO / "bench" / "comparators.py"
            command = [sys.executable, str(script), client, "--server", urls[0], *common]
        log.info("%s: %d jobs on %d server(s), %s link", client, jobs, count, link)
        limit = 300 + 3 * jobs * seconds / count
        result = run_client(command, log_path=self.work / "logs" / f"{tag}.log", limit_s=limit)
        busy = idle = 0.0
        errors = 0
        ran = []
        for server in used:
            run = spans(server, tag)
            b, i = busy_idle(run)
            busy, idle = busy + b, idle + i
            errors += sum(not s.ok for s in run)
            ran += run
            clear_outputs(server, tag)
        # Same machine, same clock: the servers' epoch milliseconds against the client's.
        lead = min(s.start for s in ran) / 1000 - float(result["t0"])
        tail = float(result["t1"]) - max(s.end for s in ran) / 1000
        files = sorted(out.rglob("*.png"))
        whole = [f for f in files if f.stat().st_size == self.picture_size]
        row = Row(
            link=link, servers=count, client=client, jobs=jobs, wall_s=float(result["wall_s"]),
            busy_s=busy, idle_s=idle, lead_s=lead, tail_s=tail, rss_mb=float(result["rss_mb"]),
            files_ok=len(files) == len(whole) == jobs, errors=errors, seconds=seconds, rnd=rnd,
            load1=os.getloadavg()[0],
        )  # fmt: skip
        for key in ("rss_sheet_mb", "contact_sheet_s"):
            if key in result:
                row.extra[key] = float(result[key])
        shutil.rmtree(out, ignore_errors=True)
        log.info(
            "  wall %.1f s, busy %.1f s, idle %.2f%% of busy, peak RSS %.0f MB, files %s",
            row.wall_s, row.busy_s, row.idle_pct, row.rss_mb, "ok" if row.files_ok else "MISSING",
        )  # fmt: skip
        return row


def run_client(command: list[str], *, log_path: Path, limit_s: float) -> dict[str, Any]:
    """Run one client process; return the JSON object it printed last."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as errors:
        # A client that hangs (the naive loop waits forever for a lost end marker) is killed.
        done = subprocess.run(command, cwd=REPO, stdout=subprocess.PIPE, stderr=errors,
                              timeout=limit_s, check=False)  # fmt: skip
    lines = done.stdout.decode().strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{command[1:3]} exited {done.returncode}; {log_path}:\n{tail}")
    return dict(json.loads(lines[-1]))


def warm_up(servers: list[BenchServer], work: Path, seconds: float, steps: int) -> None:
    """One job per server first: its first prompt loads the node's picture and warms caches."""
    for server in servers:
        tag = f"warmup-{uuid.uuid4().hex[:6]}"
        folder = work / "packs" / tag
        jobs = jobs_of(write_pack(folder, name=tag, count=1, seed=1))
        out = work / "out" / tag
        out.mkdir(parents=True, exist_ok=True)
        comparators.queued(server.comfy.url, jobs, Workload(seconds, steps, tag), out)
        clear_outputs(server, tag)
        shutil.rmtree(out, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", default="50", help="jobs per pack, one per --seconds value")
    parser.add_argument("--seconds", default="3.6", help="execution time per job (s), a list")
    parser.add_argument("--runs", type=int, default=1, help="repeats of every run, interleaved")
    parser.add_argument("--clients", default=",".join(ONE_SERVER_CLIENTS),
                        help="the clients run on one server")  # fmt: skip
    parser.add_argument("--steps", type=int, default=20, help="progress updates per job")
    parser.add_argument("--servers", default="1,2,4", help="server counts for charpack")
    parser.add_argument("--links", default="loopback,shaped")
    parser.add_argument("--delay", type=float, default=0.05, help="shaped: seconds each way")
    parser.add_argument("--rate", type=float, default=25e6, help="shaped: bytes/s each way")
    parser.add_argument("--memory-jobs", type=int, default=200)
    parser.add_argument("--memory-servers", type=int, default=4)
    parser.add_argument("--memory-link", default="shaped")
    parser.add_argument("--seed", type=int, default=20261121)
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (GBs)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    counts = sorted({int(n) for n in args.servers.split(",")})
    links = [link.strip() for link in args.links.split(",")]
    clients = [c.strip() for c in args.clients.split(",")]
    times = [float(x) for x in args.seconds.split(",")]
    sizes = [int(x) for x in args.jobs.split(",")]
    sizes = sizes * len(times) if len(sizes) == 1 else sizes
    if len(sizes) != len(times):
        parser.error("--jobs takes one value, or one per --seconds value")
    args.plan = list(zip(times, sizes, strict=True))
    args.load_before = os.getloadavg()
    work = args.work or cache_dir() / f"run-{uuid.uuid4().hex[:8]}"
    picture = bench_picture()
    rows: list[Row] = []
    started = time.monotonic()
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, work, True)
        total = max([*counts, args.memory_servers if args.memory_jobs else 0])
        servers = start_servers(total, root=work / "servers", picture=picture,
                                delay_s=args.delay, rate=args.rate, stack=stack)  # fmt: skip
        warm_up(servers, work, times[0], args.steps)
        bench = Bench(args, servers, work)
        for seconds, jobs in args.plan:
            # Rounds interleave the clients (each round starting one client later), so a change
            # in the machine's load falls on every client alike.
            for rnd in range(1, args.runs + 1):
                shift = (rnd - 1) % len(clients)
                order = clients[shift:] + clients[:shift]
                for link in links:
                    if 1 in counts:
                        for client in order:
                            rows.append(bench.run(client, link, 1, jobs=jobs, seconds=seconds,
                                                  rnd=rnd))  # fmt: skip
                    for count in counts:
                        if count > 1:
                            rows.append(bench.run("charpack", link, count, jobs=jobs,
                                                  seconds=seconds, rnd=rnd))  # fmt: skip
        if args.memory_jobs:
            rows.append(bench.run("charpack", args.memory_link, args.memory_servers,
                                  jobs=args.memory_jobs, seconds=times[0], sheet=True))  # fmt: skip
    command = "python bench/orchestrator_bench.py" + "".join(f" {a}" for a in sys.argv[1:])
    text = render(rows, args=args, picture_bytes=picture.stat().st_size, command=command,
                  minutes=(time.monotonic() - started) / 60)  # fmt: skip
    print(text)
    write_results(args.results, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
