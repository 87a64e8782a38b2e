"""How long `charpack plan` takes on the 100-image example pack.

Run from the repo root:  python bench/plan_speed.py [--runs 7]
Writes bench/PLAN.md. Two columns side by side in one run: the whole command as a user runs it
(interpreter start-up included) and the library call alone (load, expand, write 100 workflows).
"""

from __future__ import annotations

import argparse
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from charpack.check.plan import write_plan
from charpack.pack.packfile import load_pack

REPO = Path(__file__).resolve().parents[1]
PACK = REPO / "examples" / "lookbook-100.yaml"


def time_cli(out: Path) -> float:
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "charpack", "plan", str(PACK), "--out", str(out)],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - started


def time_library(out: Path) -> tuple[float, int]:
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    result = write_plan(load_pack(PACK), out)
    return time.perf_counter() - started, len(result.jobs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="charpack-plan-bench-"))
    cli, lib = [], []
    jobs = 0
    for _ in range(args.runs):
        cli.append(time_cli(work / "cli"))
        seconds, jobs = time_library(work / "lib")
        lib.append(seconds)
    shutil.rmtree(work, ignore_errors=True)
    rows = [
        ("`charpack plan` (whole command)", cli),
        ("`write_plan(load_pack(...))` (library)", lib),
    ]
    lines = [
        "# `charpack plan` speed",
        "",
        f"Pack: `examples/lookbook-100.yaml` ({jobs} jobs). {args.runs} runs each, interleaved.",
        f"Machine: {platform.machine()}, {platform.python_implementation()} "
        f"{platform.python_version()}.",
        "",
        "| what | median (ms) | min (ms) | max (ms) |",
        "|---|---:|---:|---:|",
    ]
    for name, values in rows:
        ms = [v * 1000 for v in values]
        lines.append(f"| {name} | {statistics.median(ms):.0f} | {min(ms):.0f} | {max(ms):.0f} |")
    lines += ["", f"Made by: `python bench/plan_speed.py --runs {args.runs}`", ""]
    text = "\n".join(lines)
    (REPO / "bench" / "PLAN.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
