"""charpack preflight against a real ComfyUI 0.3.75: what a server lacks, named with the
provisioning entry that provides it, before any GPU time is spent."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from typer.testing import CliRunner

from charpack.check.preflight import (
    PreflightReport,
    check_jobs,
    load_provisioning,
    preflight,
)
from charpack.cli import pack as cli_pack
from charpack.comfy.auth import ServerConfig
from charpack.comfy.client import ComfyClient
from charpack.comfy.objectinfo import ObjectInfo
from charpack.errors import MissingOnServer
from charpack.pack.jobs import Job, expand
from charpack.pack.packfile import load_pack
from charpack_nodes.pipelines import catalog
from tests.comfy.server import free_port

pytestmark = pytest.mark.server

REPO = Path(__file__).resolve().parents[2]
app = typer.Typer()
app.command()(cli_pack.preflight)
app.command()(cli_pack.report)
runner = CliRunner()


@pytest.fixture
def pack_file(tmp_path: Path) -> Path:
    """The small example pack, copied so a test may edit it."""
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    return tmp_path / "examples" / "small-pack.yaml"


@pytest.fixture
def client(comfy_server: Any) -> Iterator[ComfyClient]:
    config = ServerConfig.from_url(comfy_server.url, name="cpu-test", env={})
    with ComfyClient(config=config) as c:
        yield c


def _edit(pack_file: Path, **character: Any) -> None:
    data = yaml.safe_load(pack_file.read_text())
    data["character"].update(character)
    pack_file.write_text(yaml.safe_dump(data))


def _jobs(pack_file: Path) -> list[Job]:
    return expand(load_pack(pack_file))


def _scenes(pack_file: Path) -> list[str]:
    return sorted(s.name for s in load_pack(pack_file).scenes)


def test_a_provisioned_server_is_ready(pack_file: Path, client: ComfyClient) -> None:
    report = preflight(_jobs(pack_file), client=client, provisioning=load_provisioning())
    assert report.ok and report.exit_code == 0, report.errors
    assert report.comfyui_version == "0.3.75"
    # one workflow per scene: within a scene, jobs differ only in seeds and names
    assert report.checked["workflows"] == len(_scenes(pack_file)) >= 3
    assert report.checked["node_types"] >= 20
    # charpack's node pack registers models/insightface (the folder the cubiq packs read
    # directly), so the InsightFace packs are checked on the server, not left to a warning.
    assert "models/buffalo_l/w600k_r50.onnx" in client.models("insightface")
    assert report.checked["insightface_packs"] == 2  # buffalo_l (FaceID, score), antelopev2
    assert not [f for f in report.findings if f.area == "insightface"]


def test_a_lora_that_is_not_there_is_reported_with_its_folder(
    pack_file: Path, comfy_server: Any
) -> None:
    _edit(pack_file, lora={"file": "ava_v2.safetensors", "strength": 0.7})
    out = runner.invoke(app, ["preflight", str(pack_file), "--server", comfy_server.url])
    assert out.exit_code == 2, out.output
    assert "ava_v2.safetensors is not in models/loras/" in out.output
    assert "character_lora.safetensors" in out.output  # what the server has instead
    data = json.loads(
        runner.invoke(
            app, ["preflight", str(pack_file), "--server", comfy_server.url, "--json"]
        ).output
    )
    (finding,) = [f for f in data["findings"] if f["level"] == "error"]
    assert finding["location"] == "models/loras/ava_v2.safetensors"
    assert "no provisioning entry" in finding["fix"]
    assert sorted(finding["used_by"]) == _scenes(pack_file)  # every scene loads the LoRA


def test_a_missing_model_names_its_provisioning_entry(pack_file: Path, client: ComfyClient) -> None:
    jobs = _jobs(pack_file)
    live = ObjectInfo(client.object_info(), source="live")

    def lister(folder: str) -> list[str] | None:
        # The server as it would be without the upscaler and the FaceID LoRA on disk.
        gone = {"4x-UltraSharp.pth", "ip-adapter-faceid-plusv2_sdxl_lora.safetensors"}
        try:
            return [f for f in client.models(folder) if f not in gone]
        except MissingOnServer:
            return None

    raw = dict(live.raw)
    upscaler = json.loads(json.dumps(raw["UpscaleModelLoader"]))
    upscaler["input"]["required"]["model_name"][1]["options"] = []
    raw["UpscaleModelLoader"] = upscaler
    report = check_jobs(
        jobs,
        info=ObjectInfo(raw, source="saved"),
        lister=lister,
        provisioning=load_provisioning(),
        report=PreflightReport(server="saved"),
    )
    fixes = {f.location: f.fix for f in report.errors}
    assert (
        "[models.ultrasharp_4x] in runpod/manifest.toml"
        in fixes["models/upscale_models/4x-UltraSharp.pth"]
    )
    lora = "models/loras/ip-adapter-faceid-plusv2_sdxl_lora.safetensors"
    assert "[models.faceid_plusv2_sdxl_lora]" in fixes[lora]  # found by name by the FaceID loader
    assert len(report.errors) == 2


def test_insightface_packs_are_checked_when_the_server_lists_them(
    pack_file: Path, client: ComfyClient, comfy_server: Any
) -> None:
    # A server that lists models/insightface (the folder the cubiq packs read directly) shows
    # what is on its disk; here the test server's real folder with InstantID's recogniser gone.
    root = Path(comfy_server.models_dir) / "insightface"
    on_disk = [p.relative_to(root).as_posix() for p in root.rglob("*.onnx")]
    assert "models/antelopev2/glintr100.onnx" in on_disk  # the test's premise

    def lister(folder: str) -> list[str] | None:
        if folder == "insightface":
            return [f for f in on_disk if f != "models/antelopev2/glintr100.onnx"]
        try:
            return client.models(folder)
        except MissingOnServer:
            return None

    report = check_jobs(
        _jobs(pack_file),
        info=ObjectInfo(client.object_info(), source="live"),
        lister=lister,
        provisioning=load_provisioning(),
        report=PreflightReport(server="live"),
    )
    (finding,) = report.findings
    assert finding.level == "error" and finding.location == "models/insightface/models/antelopev2/"
    assert "missing glintr100.onnx" in finding.message
    assert "[models.antelopev2_glintr100]" in finding.fix and "not nested" in finding.fix


def test_a_saved_object_info_without_a_pack_lists_its_node_types_and_entry(
    pack_file: Path, client: ComfyClient
) -> None:
    live = client.object_info()
    without = {
        ct: info
        for ct, info in live.items()
        if getattr(catalog.get(ct), "pack", None) != catalog.IPADAPTER
    }
    # and a server whose KSampler allows less guidance than the pack asks for (4.0)
    sampler = json.loads(json.dumps(without["KSampler"]))
    sampler["input"]["required"]["cfg"][1]["max"] = 3.0
    without["KSampler"] = sampler
    report = check_jobs(
        _jobs(pack_file),
        info=ObjectInfo(without, source="saved /object_info"),
        lister=lambda folder: None,
        provisioning=load_provisioning(),
        report=PreflightReport(server="saved"),
    )
    nodes = {f.location: f.fix for f in report.errors if f.area == "node"}
    assert set(nodes) == {"IPAdapterUnifiedLoaderFaceID", "IPAdapterFaceID"}
    assert (
        "[node_packs.ComfyUI_IPAdapter_plus] (cubiq/ComfyUI_IPAdapter_plus @ 9d076a3)"
        in (nodes["IPAdapterFaceID"])
    )
    (cfg,) = [f for f in report.errors if f.area == "workflow"]
    assert "cfg: 4.0 is above the maximum 3.0" in cfg.message


def test_a_server_without_the_node_packs(pack_file: Path, comfy_server_factory: Any) -> None:
    # Only charpack's own node pack loads: the third-party stand-ins are switched off.
    bare = comfy_server_factory(
        extra_args=("--disable-all-custom-nodes", "--whitelist-custom-nodes", "charpack_nodes")
    )
    config = ServerConfig.from_url(bare.url, env={})
    with ComfyClient(config=config) as c:
        report = preflight(_jobs(pack_file), client=c, provisioning=load_provisioning())
    missing = {f.location: f.fix for f in report.errors if f.area == "node"}
    assert set(missing) == {
        "IPAdapterUnifiedLoaderFaceID", "IPAdapterFaceID", "InstantIDModelLoader",
        "InstantIDFaceAnalysis", "InstantIDAttentionPatch", "SAMLoader", "FaceDetailer",
        "UltralyticsDetectorProvider",
    }  # fmt: skip
    assert "[node_packs.ComfyUI-Impact-Subpack]" in missing["UltralyticsDetectorProvider"]
    unknown = {f.location: f for f in report.warnings if f.area == "model"}
    sam = unknown["models/sams/sam_vit_b_01ec64.pth"]
    assert "ComfyUI-Impact-Pack registers it" in sam.message
    assert "[models.sam_vit_b]" in sam.fix
    assert report.exit_code == 2


def test_an_unreachable_server_exits_3_and_says_what_to_check(pack_file: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    out = runner.invoke(app, ["preflight", str(pack_file), "--server", url])
    assert out.exit_code == 3
    assert "cannot" in out.output.lower() or "unreachable" in out.output.lower()
    assert "check the URL" in out.output


# -- the charpack nodes' version ---------------------------------------------------------------


def test_the_server_reports_the_charpack_nodes_it_loaded(client: ComfyClient) -> None:
    import charpack_nodes
    from charpack.pod import version as pod_version

    # The test server loads custom_nodes/charpack_nodes from this checkout, as a pod loads it
    # from the checkout provisioning made at the client's version.
    answer = client.http.json(client.http.request("GET", "/charpack/version"), "version")
    assert answer["name"] == "charpack" and answer["version"] == charpack_nodes.__version__
    theirs = pod_version.parse_version(answer)
    assert theirs is not None
    if (REPO / ".git").exists():  # loaded from a git checkout: its commit too
        assert theirs.commit is not None
    assert theirs.matches(pod_version.client_version())
    assert "version" not in client.object_info()  # a route: /object_info is the nodes' own


def test_a_client_of_another_version_is_refused_with_the_fix(
    pack_file: Path, client: ComfyClient, comfy_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from charpack.pod import version as pod_version

    server = pod_version.server_version(client)
    assert server is not None
    newer = pod_version.CharpackVersion("0.2.0")
    monkeypatch.setattr(pod_version, "client_version", lambda: newer)

    report = preflight(_jobs(pack_file), client=client, provisioning=load_provisioning())

    (finding,) = [f for f in report.errors if f.area == "version"]
    assert finding.message == f"server runs charpack nodes {server}, this client is 0.2.0"
    assert finding.fix == (
        "update the pod (charpack pod up re-provisions at 0.2.0) or install "
        f"charpack=={server.version}"
    )
    assert report.exit_code == 2 and len(report.errors) == 1
    out = runner.invoke(app, ["preflight", str(pack_file), "--server", comfy_server.url])
    assert out.exit_code == 2, out.output
    assert "this client is 0.2.0" in out.output and "charpack pod up re-provisions" in out.output


def test_the_same_version_at_another_commit_is_refused_too(
    pack_file: Path, client: ComfyClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from charpack.pod import version as pod_version

    server = pod_version.server_version(client)
    assert server is not None
    if not server.commit:
        pytest.skip("the test server's node pack is not in a git checkout: no commit to compare")
    other = pod_version.CharpackVersion(server.version, "0" * 40)
    monkeypatch.setattr(pod_version, "client_version", lambda: other)

    report = preflight(_jobs(pack_file), client=client, provisioning=load_provisioning())

    (finding,) = report.errors
    assert finding.message == (
        f"server runs charpack nodes {server.version} (commit {server.commit[:12]}), this client "
        f"is {server.version} (commit 000000000000)"
    )
    assert f"install charpack=={server.version} at commit {server.commit}" in finding.fix
    assert "charpack pod up re-provisions at" in finding.fix


def test_charpack_nodes_that_do_not_report_their_version_are_refused(
    pack_file: Path, comfy_server: Any
) -> None:
    # The real server behind a relay that answers 404 at /charpack/version, as nodes from
    # before the route would: the nodes are there (in /object_info) but say no version.
    import threading
    import urllib.error
    import urllib.request
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class OldNodes(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

        def do_GET(self) -> None:  # noqa: N802
            if self.path.startswith("/charpack/version"):
                status, body = 404, b"404: Not Found"
            else:
                try:
                    with urllib.request.urlopen(comfy_server.url + self.path, timeout=30) as r:
                        status, body = r.status, r.read()
                except urllib.error.HTTPError as exc:
                    status, body = exc.code, exc.read()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    relay = ThreadingHTTPServer(("127.0.0.1", 0), OldNodes)
    threading.Thread(target=relay.serve_forever, daemon=True).start()
    try:
        config = ServerConfig.from_url(f"http://127.0.0.1:{relay.server_address[1]}", env={})
        with ComfyClient(config=config) as c:
            report = preflight(_jobs(pack_file), client=c, provisioning=load_provisioning())
    finally:
        relay.shutdown()
        relay.server_close()
    (finding,) = report.errors
    assert finding.area == "version" and "do not report their version" in finding.message
    assert "charpack pod up re-provisions at" in finding.fix
