"""The early identity gate through an endpoint: an attempt the gate stops on the worker saves
nothing, the worker uploads nothing for it and still answers COMPLETED, and the client records
it as stopped early and retries it (no download refused), as on pods
(tests/server/test_early_gate.py calibrates the same way)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from charpack.run.retry_rules import STOPPED_EARLY
from charpack.serverless.objects import done_key
from tests.comfy.server import ComfyServer
from tests.server.test_early_gate import SEED, _early_score, _pack_file
from tests.serverless.conftest import S3
from tests.serverless.test_backend import endpoint, manifest, run  # noqa: F401 - the fixture
from tests.support.fake_serverless import FakeServerless

pytestmark = pytest.mark.server


def test_an_attempt_the_early_gate_stops_on_a_worker_is_retried_not_refused(
    comfy_server: ComfyServer, endpoint: FakeServerless, s3: S3, tmp_path: Path  # noqa: F811
) -> None:
    # Calibration through the endpoint: every final score rejected, the gate passing all.
    probe = tmp_path / "probe-out"
    run(_pack_file(tmp_path / "probe", threshold=1.0, margin=1.0), probe, endpoint)
    first, second = manifest(probe)["jobs"]["cafe/001"]["attempts"][:2]
    e1, e2 = (_early_score(comfy_server, a["prompt_id"]) for a in (first, second))
    threshold = math.floor(second["score"] * 10_000) / 10_000
    at = round((e1 + e2) / 2, 4)
    assert e1 + 2e-4 < at < e2 - 2e-4 and at < threshold, f"pick another SEED than {SEED}"

    out = tmp_path / "out"
    pack = _pack_file(tmp_path / "src", threshold=threshold, margin=round(threshold - at, 4))
    summary = run(pack, out, endpoint)

    assert summary.exit_code == 0, summary.failures
    data = manifest(out)
    job = data["jobs"]["cafe/001"]
    stopped, accepted = job["attempts"]
    assert stopped["status"] == "below_threshold" and stopped["stopped_at"] == STOPPED_EARLY
    assert stopped["early_score"] == pytest.approx(e1, abs=1e-6)
    assert stopped["files"] == [] and stopped["score"] is None
    assert stopped["worker_s"] > 0  # RunPod bills the part that ran
    # The worker stored no file for it, only its answer.
    prefix = done_key(s3.prefix, data["run_id"], "cafe/001", stopped["prompt_id"])
    folder = prefix.rsplit("/", 1)[0] + "/"
    assert [k for k in s3.keys() if k.startswith(folder)] == [prefix]
    assert accepted["status"] == "success" and accepted["score"] >= threshold
    assert job["status"] == "done" and (out / job["image"]).is_file()
