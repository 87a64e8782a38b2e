"""The bill of a real run on an endpoint: `run_pack` with the Serverless backend against the fake
/v2 job API (tests/support/fake_serverless.py) whose workers are the fleet bench's stand-in of
charpack's worker, results in a real S3 API (moto's server), then `charpack report` on the pack
folder the run left. It ties the report to what the backend really records (the attempts'
server ``runpod-endpoint:<id>``, their times), not to a hand-made manifest.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench.serverless_fleet import StandIn, png_bytes
from bench.workload import BenchJob, Workload, write_pack
from charpack.cli import main as cli_main
from charpack.pack.jobs import Job
from charpack.pack.packfile import load_pack
from charpack.run.runner import RunOptions, run_pack
from charpack.serverless.backend import EndpointConfig
from charpack.serverless.bill import PRICE_ENV
from charpack.serverless.endpoint import load_endpoint_spec
from tests.support.fake_serverless import FakeServerless

JOB_S = 0.3


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {
        "AWS_ACCESS_KEY_ID": "bill-test-key",
        "AWS_SECRET_ACCESS_KEY": "bill-test-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
        "CHARPACK_S3_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "CHARPACK_S3_BUCKET": "charpack-bill",
        "CHARPACK_S3_PREFIX": "charpack",
    }
    try:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv(PRICE_ENV, raising=False)
        import boto3

        boto3.session.Session().client(
            "s3", endpoint_url=env["CHARPACK_S3_ENDPOINT_URL"]
        ).create_bucket(Bucket=env["CHARPACK_S3_BUCKET"])
        yield env
    finally:
        server.stop()


def test_a_run_on_an_endpoint_is_billed_per_worker_second_in_the_report(
    s3_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    work = Workload(seconds=0.0, steps=1, tag="billtest")

    def workflow(job: Job) -> dict[str, object]:
        return work.graph(BenchJob(job.seed, job.stem))

    pack = write_pack(tmp_path, name="bill", count=4, seed=3)
    out = tmp_path / "out"
    with FakeServerless(
        StandIn(seconds=JOB_S, png=png_bytes(8), env=s3_env), workers=2, endpoint_id="ep4bill"
    ) as fake:
        for name, value in fake.env.items():
            monkeypatch.setenv(name, value)
        summary = run_pack(
            load_pack(pack),
            servers=[],
            endpoints=[EndpointConfig(endpoint_id="ep4bill", workers=2, poll_interval=0.1)],
            options=RunOptions(out=out, contact_sheet=False, handle_signals=False),
            workflow=workflow,
        )
    assert summary.exit_code == 0

    result = CliRunner().invoke(cli_main.app, ["report", str(out), "--json"])

    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["images"] == 4 and data["server_spans_s"] == {}  # no pod time
    (bill,) = data["endpoint_bills"]
    assert bill["endpoint_id"] == "ep4bill" and bill["attempts"] == 4
    assert bill["worker_s"] >= 4 * JOB_S  # every job slept JOB_S on its worker
    price = load_endpoint_spec().price_per_s
    assert bill["usd_per_s"] == price
    assert bill["cost"] == pytest.approx(bill["worker_s"] * price, abs=1e-5)
    assert data["cost"] == pytest.approx(bill["cost"], abs=1e-4)  # the report rounds to 4
    text = CliRunner().invoke(cli_main.app, ["report", str(out)]).output
    assert "bill of endpoint ep4bill:" in text and "in 4 attempts" in text
