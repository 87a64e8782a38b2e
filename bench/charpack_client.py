"""charpack's runner as the benchmark runs it: ``run_pack`` in its own process.

The same public call the CLI makes (:func:`charpack.run.runner.run_pack`, one JSON event per
line like ``charpack run --json`` when ``--events`` is given), with one difference: each
attempt posts the bench graph (``run_pack(..., workflow=...)``) instead of the pack's
pipeline, so the jobs are the comparators' jobs. The runner's defaults are kept (backlog 2);
the contact sheet is left out of the timed run, as the comparators make none, and written
afterwards with ``--contact-sheet`` so its cost and memory are reported on their own.

Prints one JSON object: ``wall_s`` (``run_pack`` from call to return; ``t0``, ``t1``: the same
as epoch seconds), ``summary``
(:meth:`RunSummary.to_json`), ``rss_mb`` (this process's peak memory when the run returned),
and with ``--contact-sheet`` ``contact_sheet_s`` and ``rss_sheet_mb`` (the peak after it).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the repository root holds ``bench``
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.workload import BenchJob, Workload, peak_rss_mb


def main(argv: list[str] | None = None) -> int:
    from charpack.cli.progress import JsonLines
    from charpack.comfy.auth import ServerConfig
    from charpack.pack.jobs import Job
    from charpack.pack.packfile import load_pack
    from charpack.run.runner import RunOptions, run_pack

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", action="append", required=True)
    parser.add_argument("--pack", type=Path, required=True)
    parser.add_argument("--tag", required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--backlog", type=int, default=RunOptions.backlog)
    parser.add_argument("--events", action="store_true", help="JSON events on stderr")
    parser.add_argument("--contact-sheet", action="store_true")
    args = parser.parse_args(argv)

    work = Workload(seconds=args.seconds, steps=args.steps, tag=args.tag)

    def workflow(job: Job) -> dict[str, object]:
        return work.graph(BenchJob(job.seed, job.stem))

    pack = load_pack(args.pack)
    servers = [ServerConfig.from_url(url) for url in args.server]
    sink = JsonLines(sys.stderr) if args.events else None
    options = RunOptions(out=args.out, backlog=args.backlog, contact_sheet=False, on_event=sink)
    t0, started = time.time(), time.monotonic()
    summary = run_pack(pack, servers=servers, options=options, workflow=workflow)
    result: dict[str, object] = {
        "wall_s": time.monotonic() - started,
        "t0": t0,
        "t1": time.time(),
        "summary": summary.to_json(),
        "rss_mb": peak_rss_mb(),
    }
    if args.contact_sheet:
        from charpack.folder.contact_sheet import write_contact_sheet

        started = time.monotonic()
        write_contact_sheet(args.out)
        result["contact_sheet_s"] = time.monotonic() - started
        result["rss_sheet_mb"] = peak_rss_mb()
    print(json.dumps(result), flush=True)
    return summary.exit_code


if __name__ == "__main__":
    sys.exit(main())
