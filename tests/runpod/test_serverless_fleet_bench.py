"""The Serverless fleet benchmark's moving parts, small: three fake-endpoint workers of 0.5 s
jobs, a real moto S3 server, the real orchestrator in its own process (bench/serverless_fleet.py
--no-write). It proves the bench still drives a whole pack through the endpoint backend, every
image into the pack folder; the throughput itself is the bench's to measure, not a test's.
"""

from __future__ import annotations

import subprocess
import sys

from .conftest import REPO


def test_the_fleet_bench_brings_every_image_of_a_small_pack_into_the_folder():
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "serverless_fleet.py"), "--workers", "3",
         "--job-seconds", "0.5", "--waves", "2", "--png-kb", "16", "--no-write"],
        capture_output=True, text=True, timeout=300, check=False, cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    row = done.stdout.strip().splitlines()[-1]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:4] == ["0.5 s", "3", "6", "6"]  # job time, workers, jobs, images in folder
