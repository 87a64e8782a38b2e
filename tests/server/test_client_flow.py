"""The client against a real ComfyUI 0.3.75 on CPU: submit, follow, collect, refuse, upload."""

from __future__ import annotations

import hashlib
import io
import queue
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from charpack.comfy.auth import ServerConfig
from charpack.comfy.client import ComfyClient
from charpack.comfy.events import Done, Event, Executing, ExecutionError, ExecutionStart
from charpack.comfy.results import JobState, JobStatus, OutputRef
from charpack.comfy.stream import EventStream
from charpack.errors import ExecutionFailed, MissingOnServer, PromptRejected
from charpack.pack.uploads import upload_for
from tests.support.completion import finished
from tests.support.graphs import fresh, invert_graph, load_graph, next_event, slow_graph
from tests.support.tcp_relay import TcpRelay

pytestmark = pytest.mark.server


@pytest.fixture
def config(comfy_server: Any) -> ServerConfig:
    return ServerConfig.from_url(comfy_server.url, name="cpu-test", env={})


@pytest.fixture
def client(config: ServerConfig) -> Iterator[ComfyClient]:
    with ComfyClient(config=config) as c:
        yield c


@pytest.fixture
def stream(config: ServerConfig) -> Iterator[EventStream]:
    with EventStream(config=config) as s:
        assert s.wait_connected(30)
        yield s


def _deadline(seconds: float = 120.0) -> float:
    return time.monotonic() + seconds


def _server_file(comfy_server: Any, ref: OutputRef) -> Path:
    assert ref.type == "output"
    return Path(comfy_server.output_dir) / ref.subfolder / ref.filename


def test_submit_follow_and_download(
    comfy_server: Any, client: ComfyClient, stream: EventStream, tmp_path: Path
) -> None:
    events: queue.Queue[Event] = stream.subscribe()
    color, prefix, pid = fresh("flow")
    submitted = client.submit(
        invert_graph(color=color, prefix=prefix), prompt_id=pid, client_id=stream.client_id
    )
    assert submitted.prompt_id == pid and not submitted.recovered
    seen: list[Event] = []
    done = next_event(events, Done, lambda e: e.prompt_id == pid, seen=seen)
    start = next(e for e in seen if isinstance(e, ExecutionStart) and e.prompt_id == pid)
    ran = [e.node for e in seen if isinstance(e, Executing) and e.prompt_id == pid]
    assert ran == ["img", "inv", "save"] and start.received <= done.received

    result = finished(client=client, stream=stream, prompt_id=pid, deadline=_deadline())
    assert result.status is JobStatus.SUCCESS and result.execution_s is not None
    (ref,) = result.outputs
    assert (ref.node_id, ref.type, ref.subfolder) == ("save", "output", prefix.split("/")[0])

    got = client.download(ref, tmp_path / "pack" / "look_001.png")
    written = _server_file(comfy_server, ref).read_bytes()
    assert got.path.read_bytes() == written
    assert got.sha256 == hashlib.sha256(written).hexdigest() and got.size == len(written)
    assert [p.name for p in got.path.parent.iterdir()] == ["look_001.png"]  # no temp left
    with Image.open(got.path) as image:
        assert image.size == (64, 64)
    assert client.job_state(pid) is JobState.DONE


def test_rejected_workflow_names_nodes_and_choices(client: ComfyClient) -> None:
    color, prefix, pid = fresh("reject")
    graph = invert_graph(color=color, prefix=prefix)
    graph["inv"] = {
        "class_type": "ImageScale",
        "inputs": {
            "image": ["img", 0],
            "upscale_method": "magic",
            "width": 8,
            "height": 8,
            "crop": "disabled",
        },
    }
    graph["ckpt"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "nope.st"}}
    graph["latent"] = {
        "class_type": "EmptyLatentImage",
        "inputs": {"width": 64, "height": 64, "batch_size": 1},
    }
    graph["vae"] = {
        "class_type": "VAEDecode",
        "inputs": {"samples": ["latent", 0], "vae": ["ckpt", 2]},
    }
    graph["save2"] = {
        "class_type": "SaveImage",
        "inputs": {"images": ["vae", 0], "filename_prefix": prefix},
    }
    with pytest.raises(PromptRejected) as caught:
        client.submit(graph, prompt_id=pid, client_id="c")
    messages = caught.value.node_messages
    assert messages["inv"] == [
        "[ImageScale] upscale_method: 'magic' is not an allowed value; the server has: "
        "nearest-exact, bilinear, area, bicubic, lanczos."
    ]
    (ckpt,) = messages["ckpt"]
    assert "'nope.st' is not on the server; the server has:" in ckpt
    assert all(name in ckpt for name in client.models("checkpoints"))
    assert "models/checkpoints/" in ckpt
    assert "Traceback" not in str(caught.value)
    assert client.job_state(pid) is JobState.LOST  # nothing was queued


def test_partly_valid_prompt_is_rejected_and_not_left_queued(
    client: ComfyClient, stream: EventStream
) -> None:
    events: queue.Queue[Event] = stream.subscribe()
    color, prefix, busy = fresh("busy")
    client.submit(
        slow_graph(color=color, prefix=prefix), prompt_id=busy, client_id=stream.client_id
    )
    next_event(events, Executing, lambda e: e.prompt_id == busy and e.node == "blur")
    color, prefix, pid = fresh("partial")
    graph = invert_graph(color=color, prefix=prefix)
    graph["bad"] = {"class_type": "SaveImage", "inputs": {"images": ["img", 0]}}  # no prefix
    with pytest.raises(PromptRejected) as caught:  # ComfyUI answers 200 and queues "save"
        client.submit(graph, prompt_id=pid, client_id=stream.client_id)
    assert "queued and then cancelled" in str(caught.value)
    assert "required input 'filename_prefix' is missing" in caught.value.node_messages["bad"][0]
    assert client.job_state(pid) is JobState.LOST  # dropped while still pending: never runs
    assert finished(client=client, stream=stream, prompt_id=busy, deadline=_deadline()).ok


def test_unknown_node_type_and_model_folder(client: ComfyClient) -> None:
    _, prefix, pid = fresh("unknown")
    graph = {"x": {"class_type": "NoSuchNode", "inputs": {}}}
    with pytest.raises(PromptRejected, match="NoSuchNode does not exist. Install the node pack"):
        client.submit(graph, prompt_id=pid, client_id="c")
    with pytest.raises(MissingOnServer, match="no model folder 'no_such_folder'"):
        client.models("no_such_folder")
    with pytest.raises(ValueError, match="lowercase canonical UUID"):
        client.submit(graph, prompt_id=pid.upper(), client_id="c")


def _png(path: Path, color: tuple[int, int, int]) -> Path:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), color).save(buf, format="PNG")
    path.write_bytes(buf.getvalue())
    return path


def test_same_bytes_are_uploaded_once(comfy_server: Any, tmp_path: Path) -> None:
    color, prefix, pid = fresh("upload")
    rgb = (color % 256, (color >> 8) % 256, 7)
    a = _png(tmp_path / "face_a.png", rgb)
    b = tmp_path / "copy" / "face_b.PNG"
    b.parent.mkdir()
    b.write_bytes(a.read_bytes())
    with TcpRelay(target_port=comfy_server.port) as relay:
        cfg = ServerConfig.from_url(relay.url, env={})
        with ComfyClient(config=cfg) as client:
            first = client.upload_image(a)
            second = client.upload_image(b)
            assert client.uploaded == (first,)
            client.submit(
                load_graph(image=first.image_value, prefix=prefix), prompt_id=pid, client_id="c"
            )
            result = finished(client=client, prompt_id=pid, deadline=_deadline(), poll_interval=0.1)
        with ComfyClient(config=cfg) as other:  # a new run: same name, no renamed copy
            third = other.upload_image(a)
    uploads = [r for r in relay.requests if r.startswith("POST /upload/image")]
    assert len(uploads) == 2  # one per client; b was never sent
    assert first.filename == second.filename == third.filename == upload_for(a).filename
    assert first.subfolder == "charpack" and second.path == b
    assert result.ok and len(result.outputs) == 1


def test_execution_error_names_the_node(
    client: ComfyClient, stream: EventStream, tmp_path: Path
) -> None:
    events: queue.Queue[Event] = stream.subscribe()
    _, prefix, pid = fresh("broken")
    bad = tmp_path / f"broken_{pid[:8]}.png"
    bad.write_bytes(b"this is not a picture " + pid.encode())
    upload = client.upload_image(bad)
    client.submit(
        load_graph(image=upload.image_value, prefix=prefix),
        prompt_id=pid,
        client_id=stream.client_id,
    )
    error = next_event(events, ExecutionError, lambda e: e.prompt_id == pid)
    result = finished(client=client, stream=stream, prompt_id=pid, deadline=_deadline())
    assert result.status is JobStatus.ERROR and result.outputs == ()
    assert result.failure is not None
    assert (result.failure.node_id, result.failure.node_type) == ("load", "LoadImage")
    assert error.node_id == "load" and error.exception_type == result.failure.exception_type
    with pytest.raises(ExecutionFailed) as caught:
        result.raise_for_status()
    assert caught.value.node_id == "load" and "LoadImage" in str(caught.value)


def test_cancel_interrupts_the_running_and_drops_the_pending(
    client: ComfyClient, stream: EventStream
) -> None:
    events: queue.Queue[Event] = stream.subscribe()
    color, prefix, running = fresh("cancel_a")
    client.submit(
        slow_graph(color=color, prefix=prefix), prompt_id=running, client_id=stream.client_id
    )
    color_b, prefix_b, pending = fresh("cancel_b")
    client.submit(
        invert_graph(color=color_b, prefix=prefix_b), prompt_id=pending, client_id=stream.client_id
    )
    next_event(events, Executing, lambda e: e.prompt_id == running and e.node == "blur")
    client.cancel([running, pending])
    result = finished(client=client, stream=stream, prompt_id=running, deadline=_deadline())
    assert result.status is JobStatus.INTERRUPTED and result.outputs == ()
    assert result.failure is not None and result.failure.node_id in ("blur", "save")
    assert client.job_state(pending) is JobState.LOST  # removed before it ran: no history


def test_missing_output_file_is_reported(client: ComfyClient, tmp_path: Path) -> None:
    ref = OutputRef(filename="never_written_00001_.png", subfolder="", type="output", node_id="s")
    with pytest.raises(MissingOnServer, match="answered 404"):
        client.download(ref, tmp_path / "x.png", not_found_s=0.2)
    assert list(tmp_path.iterdir()) == []
