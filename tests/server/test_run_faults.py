"""``charpack run`` when things break: the server is killed and restarted mid-pack, the link
drops while jobs run, and an authenticating proxy refuses the token.

The run goes on in-process (a thread) while the test breaks things from outside; every wait is
on a condition (an event the run reports, a process state) with a deadline.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from charpack.comfy.auth import ServerConfig
from charpack.pack.packfile import load_pack
from charpack.run.events import RunEvent
from charpack.run.runner import run_pack
from tests.comfy.server import ComfyServer
from tests.runpod.fake_runpod import FakeRunPod
from tests.runpod.fixtures_proxy import AuthProxy, ensure_nginx
from tests.server.test_run_pack import (
    check_folder,
    history_ids,
    manifest,
    options,
    run_cli,
    write_pack,
)
from tests.support.tcp_relay import TcpRelay

pytestmark = pytest.mark.server

DEADLINE_S = 300
# Short sampler passes keep a job at a few seconds even with slowed stand-in steps.
QUICK = {"face_detailer": {"steps": 2}, "instantid": {"steps": 2}}


class Watcher:
    """Collects a run's events and lets the test wait for one."""

    def __init__(self) -> None:
        self.events: list[RunEvent] = []
        self._seen: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self.hooks: dict[str, Callable[[RunEvent], None]] = {}

    def _flag(self, kind: str) -> threading.Event:
        with self._lock:
            return self._seen.setdefault(kind, threading.Event())

    def __call__(self, event: RunEvent) -> None:
        self.events.append(event)
        hook = self.hooks.pop(event.kind, None)
        if hook is not None:
            hook(event)
        self._flag(event.kind).set()

    def wait(self, kind: str, timeout: float = DEADLINE_S) -> None:
        assert self._flag(kind).wait(timeout), f"no {kind!r} event within {timeout} s"

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]


def test_a_server_killed_and_restarted_mid_pack_loses_nothing_and_duplicates_nothing(
    comfy_server_factory: Callable[..., ComfyServer], tmp_path: Path
) -> None:
    server = comfy_server_factory(standin_step_seconds=0.25)
    pack = load_pack(
        write_pack(
            tmp_path / "src", [{"name": "park", "prompt": "park bench", "count": 5}], stages=QUICK
        )
    )
    out = tmp_path / "pack"
    watch = Watcher()
    config = ServerConfig.from_url(server.url, env={})
    run = options(out, on_event=watch, give_up_s=120)
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(run_pack, pack, servers=[config], options=run)
        watch.wait("done")  # one image is in; others are queued or running
        server.kill()
        server.start()  # same port, same files: queue and history are gone
        summary = future.result(timeout=DEADLINE_S)

    assert summary.exit_code == 0 and summary.counts["done"] == 5
    data = check_folder(out, pack)
    statuses = [a["status"] for j in data["jobs"].values() for a in j["attempts"]]
    assert statuses.count("success") == 5
    assert "lost" in statuses  # the prompts the restart wiped were found lost and sent again
    accepted = {
        a["prompt_id"]
        for j in data["jobs"].values()
        for a in j["attempts"]
        if a["status"] == "success"
    }
    assert accepted & history_ids(server.url)  # ...and ran on the restarted server
    assert "server_down" in watch.kinds() and watch.kinds().count("server_up") >= 2


def test_completion_is_still_detected_when_the_link_drops_while_jobs_run(
    comfy_server: ComfyServer, tmp_path: Path
) -> None:
    pack = load_pack(
        write_pack(tmp_path / "src", [{"name": "roof", "prompt": "rooftop bar", "count": 4}])
    )
    out = tmp_path / "pack"
    watch = Watcher()
    with TcpRelay(target_port=comfy_server.port) as relay:

        def cut(event: RunEvent) -> None:
            relay.refuse()  # nothing gets through until the run notices and polls
            relay.cut()

        watch.hooks["node"] = cut
        watch.hooks["server_down"] = lambda event: relay.accept()
        config = ServerConfig.from_url(relay.url, env={})
        summary = run_pack(pack, servers=[config], options=options(out, on_event=watch))

        uploads = [r for r in relay.requests if r.startswith("POST /upload/image")]

    assert summary.exit_code == 0 and summary.counts["done"] == 4
    check_folder(out, pack)
    kinds = watch.kinds()
    assert "server_down" in kinds and kinds.index("server_up") < kinds.index("server_down")
    assert kinds.count("done") == 4
    # The face reference went up once per connection: at the start and after the outage
    # (a server that comes back may have restarted without its input folder).
    assert len(uploads) == kinds.count("server_up") == 2


@pytest.fixture(scope="module")
def auth_proxy(
    comfy_server: ComfyServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AuthProxy]:
    ensure_nginx()
    proxy = AuthProxy(
        upstream=comfy_server.url.split("://", 1)[1],
        token=secrets.token_urlsafe(32),
        root=tmp_path_factory.mktemp("run-proxy"),
    )
    try:
        proxy.wait_ready()
        yield proxy
    finally:
        proxy.stop()


@pytest.mark.nginx
def test_a_wrong_token_is_refused_before_anything_is_written_and_the_right_one_runs(
    auth_proxy: AuthProxy, tmp_path: Path
) -> None:
    path = write_pack(tmp_path / "src", [{"name": "desk", "prompt": "at a desk", "count": 1}])
    out = tmp_path / "pack"
    wrong = "wrong-" + secrets.token_urlsafe(24)
    result = run_cli(
        str(path), "--server", auth_proxy.url, "--out", str(out), env={"CHARPACK_TOKEN": wrong}
    )
    assert result.exit_code == 3
    assert "refused" in result.output and "CHARPACK_TOKEN" in result.output
    assert wrong not in result.output
    assert not out.exists()

    result = run_cli(
        str(path),
        "--server",
        auth_proxy.url,
        "--out",
        str(out),
        "--json",
        env={"CHARPACK_TOKEN": auth_proxy.token},
    )
    assert result.exit_code == 0, result.output
    assert auth_proxy.token not in result.output
    assert manifest(out)["jobs"]["desk/001"]["status"] == "done"
    assert auth_proxy.token not in (out / "manifest.json").read_text()


@pytest.mark.nginx
def test_run_with_pod_brings_the_pod_up_runs_through_its_proxy_and_stops_it(
    auth_proxy: AuthProxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeRunPod(api_key="rp_" + secrets.token_hex(16))
    fake.volumes = [{"id": "vol1", "name": "charpack", "size": 50, "dataCenterId": "EU-RO-1"}]
    try:
        env = {
            "RUNPOD_API_BASE_URL": fake.url,  # the SDK's own setting for its API endpoint
            "RUNPOD_API_KEY": fake.api_key,
            "CHARPACK_COMFY_TOKEN": auth_proxy.token,
            "CHARPACK_RUNPOD_PROXY_URL": auth_proxy.url,  # stands in for <pod>-8188.proxy…
            "CHARPACK_RUNPOD_VOLUME_ID": "vol1",
        }
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("CHARPACK_TOKEN", raising=False)
        path = write_pack(tmp_path / "src", [{"name": "loft", "prompt": "loft", "count": 1}])
        out = tmp_path / "pack"
        result = run_cli(str(path), "--pod", "--out", str(out), "--json")
        assert result.exit_code == 0, result.output
        ops = fake.ops()
        assert "podFindAndDeployOnDemand" in ops and ops[-1] == "podStop"
        data = manifest(out)
        assert data["jobs"]["loft/001"]["status"] == "done"
        assert data["jobs"]["loft/001"]["attempts"][0]["server"] == auth_proxy.url
        for secret in (auth_proxy.token, fake.api_key):
            assert secret not in result.output
            assert secret not in (out / "manifest.json").read_text()
    finally:
        fake.close()
