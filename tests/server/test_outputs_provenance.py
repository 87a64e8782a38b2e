"""Every recorded image is this attempt's image, on the real CPU ComfyUI.

The severe case of issue 8: the server already holds a file under the name a job's saver writes
(an earlier run of a changed pack), and ``/view`` serves that old file until the saver's
background writer has renamed the new one into place. Here the earlier run's files are planted
under the old-style names, and the server's writer is kept busy with two large images first, so
the run's images are still waiting to be written when their prompts finish: exactly the moment
a client that trusts a 200 from ``/view`` downloads the stale file. The run must record only its
own images (size, sha256, seed, the prompt id in the saver's sidecar). And a graph posted again
unchanged (the graph editor's "queue again", a rerun of a pack) writes and serves its own files
instead of ComfyUI's cached output naming the earlier prompt's, unless the saver is told to
``overwrite`` (then one file, replaced atomically by the later prompt's). The editor is shown a
downscaled preview that is complete on disk when the ``executed`` message reaches it, and a
server whose older saver lists its pack files under ``images`` only is refused with the fix.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image

from charpack.comfy.auth import ServerConfig
from charpack.comfy.client import ComfyClient
from charpack.comfy.events import Event, Executed
from charpack.comfy.stream import EventStream
from charpack.pack.jobs import expand
from charpack.pack.packfile import load_pack
from charpack.run.runner import run_pack
from tests.comfy.server import ComfyServer
from tests.server.test_downloads_hostile import one_job_pack, refused_run
from tests.server.test_nodes_server import AVA_FRONT, fresh_picture, run
from tests.server.test_run_pack import check_folder, manifest, options, write_pack
from tests.support.hostile_comfy import HostileComfy

pytestmark = pytest.mark.server

BUSY_SIDE = 3072  # two noise pictures this big keep the saver's writer busy for seconds


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def plant_stale(folder: Path, stem: str) -> bytes:
    """What an earlier run of the old saver left: ``<stem>.png`` (another size) and its sidecar."""
    folder.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (512, 768), (200, 30, 30)).save(folder / f"{stem}.png")
    data = (folder / f"{stem}.png").read_bytes()
    sidecar = {"file": f"{stem}.png", "sha256": sha256(data), "size": len(data), "seed": 1}
    (folder / f"{stem}.json").write_text(json.dumps(sidecar))
    return data


def keep_writer_busy(client: ComfyClient, tmp_path: Path) -> None:
    """Queue two saves of large noise pictures (level 9: slow to encode) ahead of the run."""
    for i in range(2):
        noise = os.urandom(BUSY_SIDE * BUSY_SIDE * 3)  # numpy is no dependency of charpack's
        path = tmp_path / f"busy-{uuid.uuid4().hex[:8]}.png"
        Image.frombytes("RGB", (BUSY_SIDE, BUSY_SIDE), noise).save(path, compress_level=0)
        name = client.upload_image(path).image_value
        graph = {
            "load": {"class_type": "LoadImage", "inputs": {"image": name}},
            "save": {"class_type": "CharpackSavePack", "inputs": {
                "images": ["load", 0], "pack": "busy", "scene": "writer", "name": f"busy{i}",
                "seed": 0, "parameters": "", "compress_level": 9}},
        }  # fmt: skip
        client.submit(graph, prompt_id=str(uuid.uuid4()), client_id=str(uuid.uuid4()))


def test_an_earlier_runs_file_under_the_same_name_is_never_recorded(
    comfy_server: ComfyServer, tmp_path: Path
) -> None:
    scenes = [{"name": "cafe", "prompt": "sitting at a cafe terrace, linen shirt", "count": 2}]
    pack = load_pack(write_pack(tmp_path / "src", scenes))
    jobs = {job.key: job for job in expand(pack)}
    on_server = Path(comfy_server.output_dir) / pack.name / "cafe"
    stale = {key: plant_stale(on_server, job.stem) for key, job in jobs.items()}
    config = ServerConfig.from_url(comfy_server.url, env={})
    out = tmp_path / "pack"
    with ComfyClient(config=config) as client:
        keep_writer_busy(client, tmp_path)
        summary = run_pack(pack, servers=[config], options=options(out, contact_sheet=False))

    assert summary.exit_code == 0 and summary.counts["done"] == 2
    data = check_folder(out, pack)
    for key, entry in data["jobs"].items():
        (attempt,) = entry["attempts"]
        image_rec, sidecar_rec = attempt["files"]
        image = (out / image_rec["path"]).read_bytes()
        assert image != stale[key], f"{key} holds the earlier run's image"
        with Image.open(out / image_rec["path"]) as picture:
            assert picture.size == (1024, 1536), "4x the 256x384 base, not the old 512x768"
            assert picture.info["seed"] == str(attempt["seed"])
        sidecar = json.loads((out / sidecar_rec["path"]).read_text())
        assert sidecar["prompt_id"] == attempt["prompt_id"]  # provenance
        assert sidecar["sha256"] == sha256(image) == image_rec["sha256"]
        assert sidecar["size"] == len(image) and sidecar["seed"] == attempt["seed"]
        # The saver wrote the run's file under its own name; the earlier one is untouched.
        stem = jobs[key].stem
        assert (on_server / f"{stem}.{attempt['prompt_id']}.png").read_bytes() == image
        assert (on_server / f"{stem}.png").read_bytes() == stale[key]
    assert manifest(out)["jobs"].keys() == jobs.keys()


def saver_graph(face: str, name: str, **changes: Any) -> dict[str, Any]:
    graph = {
        "load": {"class_type": "LoadImage", "inputs": {"image": face}},
        "save": {"class_type": "CharpackSavePack", "inputs": {
            "images": ["load", 0], "pack": "again", "scene": "same", "name": name, "seed": 3,
            "parameters": "", "compress_level": 1}},
    }  # fmt: skip
    graph["save"]["inputs"].update(changes)
    return graph


def test_the_same_graph_queued_again_writes_and_serves_its_own_files(
    comfy_server: ComfyServer, tmp_path: Path
) -> None:
    config = ServerConfig.from_url(comfy_server.url, env={})
    with ComfyClient(config=config) as client:
        face = client.upload_image(fresh_picture(AVA_FRONT, tmp_path)).image_value
        graph = saver_graph(face, f"queued-{uuid.uuid4().hex[:6]}")
        first = run(client, graph).raise_for_status()
        second = run(client, graph).raise_for_status()  # identical: every input cached
        for result in (first, second):
            refs = {ref.key: ref for ref in result.outputs}
            image, sidecar = refs["pack_images"], refs["sidecars"]
            assert result.prompt_id in image.filename and result.prompt_id in sidecar.filename
            raw, meta = client.fetch_sidecar(
                sidecar, prompt_id=result.prompt_id, image=image.filename, not_found_s=30
            )
            got = client.download(image, tmp_path / f"{result.prompt_id}.png", not_found_s=30)
            assert meta["prompt_id"] == result.prompt_id and meta["sha256"] == got.sha256
    assert first.outputs != second.outputs
    folder = Path(comfy_server.output_dir) / "again" / "same"
    stem = graph["save"]["inputs"]["name"]
    assert sorted(p.name for p in folder.glob(f"{stem}.*.png")) == sorted(
        f"{stem}.{r.prompt_id}.png" for r in (first, second)
    )  # two prompts, two pack files


def test_overwrite_gives_one_file_which_the_later_prompt_replaces(
    comfy_server: ComfyServer, tmp_path: Path
) -> None:
    config = ServerConfig.from_url(comfy_server.url, env={})
    name = f"cover-{uuid.uuid4().hex[:6]}"
    with ComfyClient(config=config) as client:
        face = client.upload_image(fresh_picture(AVA_FRONT, tmp_path)).image_value
        graph = saver_graph(face, name, overwrite=True)
        first = run(client, graph).raise_for_status()
        second = run(client, graph).raise_for_status()
        refs = {ref.key: ref for ref in second.outputs}
        assert refs["pack_images"].filename == f"{name}.png"
        assert refs["sidecars"].filename == f"{name}.json"
        assert {r.filename for r in first.outputs} == {r.filename for r in second.outputs}
        # The first prompt's sidecar may still be in place a moment: waited out, then it is ours.
        _raw, meta = client.fetch_sidecar(
            refs["sidecars"], prompt_id=second.prompt_id, image=f"{name}.png", not_found_s=30
        )
        got = client.download(refs["pack_images"], tmp_path / "cover.png")
    assert meta["sha256"] == got.sha256 and meta["file"] == f"{name}.png"
    folder = Path(comfy_server.output_dir) / "again" / "same"
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(name)) == [
        f"{name}.json",
        f"{name}.png",
    ]  # one file, no second name, no temporary file left


def test_the_editor_preview_is_complete_on_disk_when_the_executed_message_arrives(
    comfy_server: ComfyServer, tmp_path: Path
) -> None:
    config = ServerConfig.from_url(comfy_server.url, env={})
    seen: dict[str, Any] = {}
    arrived = threading.Event()
    prompt_id = str(uuid.uuid4())

    def on_event(event: Event) -> None:
        # Runs on the stream's thread as the message arrives: read the files at that moment.
        if isinstance(event, Executed) and event.prompt_id == prompt_id and event.node == "save":
            seen["output"] = event.output
            seen["previews"] = [
                (Path(comfy_server.temp_dir) / ref["subfolder"] / ref["filename"]).read_bytes()
                for ref in event.output["images"]
            ]
            arrived.set()

    big = tmp_path / f"big-{uuid.uuid4().hex[:8]}.png"
    with Image.open(AVA_FRONT) as picture:
        picture.convert("RGB").resize((1200, 1800)).save(big)
    with ComfyClient(config=config) as client, EventStream(config=config) as stream:
        stream.subscribe(on_event)
        face = client.upload_image(big).image_value
        graph = saver_graph(face, f"preview-{uuid.uuid4().hex[:6]}")
        client.submit(graph, prompt_id=prompt_id, client_id=stream.client_id)
        result = client.fetch_result(prompt_id, retry_s=300)
        assert result is not None and result.raise_for_status()
        assert arrived.wait(60), "no executed message for the saver"
        (ref,) = seen["output"]["images"]
        assert ref["type"] == "temp" and ref["subfolder"] == "charpack/again/same"
        assert ref["filename"] == f"{graph['save']['inputs']['name']}.{prompt_id}.png"
        (data,) = seen["previews"]
        Image.open(io.BytesIO(data)).verify()  # whole: every chunk and CRC present
        with Image.open(io.BytesIO(data)) as preview:
            assert preview.size == (683, 1024)  # 1200x1800 with the long side 1024
        # The editor reads it through /view, as it names it.
        served = requests.get(f"{comfy_server.url}/view", params=ref, timeout=30)
        assert served.status_code == 200 and served.content == data
        (pack_image,) = seen["output"]["pack_images"]
        assert pack_image["type"] == "output" and pack_image["subfolder"] == "again/same"
        got = client.download(
            next(r for r in result.outputs if r.key == "pack_images"), tmp_path / "full.png",
            not_found_s=30,
        )  # fmt: skip
    with Image.open(got.path) as full:
        assert full.size == (1200, 1800)  # the pack file keeps every pixel


def test_a_server_whose_older_saver_lists_pack_files_under_images_only_is_refused(
    tmp_path: Path,
) -> None:
    pack, job = one_job_pack(tmp_path)
    subfolder = f"{pack.name}/cafe"
    server = HostileComfy(
        outputs=lambda pid: server.saver_outputs(pid, subfolder, job.stem, older=True)
    )
    with server:
        errors = refused_run(pack, server, tmp_path / "out")
    assert any(
        "lists its files under 'images' only" in e and "Update the server's charpack nodes" in e
        for e in errors
    ), errors
