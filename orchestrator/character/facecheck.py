"""Counting the faces of the references on a server, before anything is generated or trained.

Owns :func:`server_face_checks`: it uploads each reference, posts one prompt of a
``LoadImage`` → ``CharpackFaceCheck`` pair per reference (InsightFace's detector, the preset
model pack, on the server: the client has no face models), waits for it with the client's
history/queue reads and returns the node's UI entries in reference order, which
:func:`charpack.character.references.face_problems` turns into problems. Nothing is kept on
the server but the uploaded references (content-named, shared with the pack's uploads).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from charpack_nodes.pipelines import catalog

from ..comfy.client import ComfyClient
from ..comfy.results import JobState
from ..errors import JobLost, TimeoutExceeded

FACES_KEY = "faces"


def face_check_graph(images: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """The API graph for ``(LoadImage value, label)`` pairs: ``ref<i>.load`` → ``ref<i>.faces``."""
    graph: dict[str, Any] = {}
    for index, (image, label) in enumerate(images, 1):
        load, check = f"ref{index}.load", f"ref{index}.faces"
        graph[load] = {"class_type": catalog.LOAD_IMAGE.class_type, "inputs": {"image": image}}
        graph[check] = {
            "class_type": catalog.FACE_CHECK.class_type,
            "inputs": {"image": [load, 0], "label": label},
        }
    return graph


def server_face_checks(
    client: ComfyClient, references: Sequence[Path], *, timeout_s: float = 300.0
) -> list[dict[str, Any]]:
    """The ``CharpackFaceCheck`` entries for ``references`` (one each, in order)."""
    pairs = [(client.upload_image(path).image_value, path.name) for path in references]
    graph = face_check_graph(pairs)
    prompt_id = str(uuid.uuid4())
    client.submit(graph, prompt_id=prompt_id, client_id=f"charpack-facecheck-{prompt_id[:8]}")
    deadline = time.monotonic() + timeout_s
    wait = 0.1
    while True:
        state = client.job_state(prompt_id)
        if state is JobState.DONE:
            break
        if state is JobState.LOST:
            raise JobLost(
                f"{client.config.label}: the face check prompt vanished (the server restarted?); "
                "run the command again"
            )
        if time.monotonic() >= deadline:
            client.cancel([prompt_id])
            raise TimeoutExceeded(
                f"{client.config.label}: the face check did not finish in {timeout_s:.0f} s; "
                "is the server busy with a pack? Try again when its queue is empty"
            )
        time.sleep(wait)  # polling the server's queue, bounded by the deadline above
        wait = min(wait * 2, 1.0)
    result = client.fetch_result(prompt_id)
    if result is None:
        raise JobLost(f"{client.config.label}: the face check finished but has no history entry")
    result.raise_for_status()
    entries: list[dict[str, Any]] = []
    for index in range(1, len(references) + 1):
        found = result.ui.get(f"ref{index}.faces", {}).get(FACES_KEY, ())
        entries.extend(dict(e) for e in found if isinstance(e, dict))
    return entries
