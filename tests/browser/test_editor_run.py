"""A graph built and queued in the real editor: it runs, and Save pack shows *this* run's image.

Character → Pipeline → Identity score → Save pack, built node by node in the page and queued
from the Run button, as a user does. What the user relies on, each a defect the editor showed:
- the picture Save pack reports is complete the instant it is reported (the editor fetches it
  then: before the fix 5 of 9 runs showed nothing), and the node shows that picture;
- a second run with the same name writes its own files and shows its own picture;
- the seed recorded in the sidecar and the PNG is the seed that made the image, although the
  editor's "control after generate" changes the seed widget after every queue;
- the identity score appears on the Identity score node;
- ``overwrite`` on replaces the one file, and only when asked.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

from PIL import Image

from tests.browser.editor import Editor
from tests.browser.graphs import build, character_chain
from tests.comfy.server import ComfyServer


def history(server: ComfyServer, prompt_id: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{server.url}/history/{prompt_id}", timeout=30) as answer:
        return dict(json.load(answer)[prompt_id])


def sidecar_of(server: ComfyServer, output: dict[str, Any]) -> dict[str, Any]:
    entry = output["sidecars"][0]
    path = server.output_dir / entry["subfolder"] / entry["filename"]
    return dict(json.loads(path.read_text()))


def pack_file(server: ComfyServer, output: dict[str, Any]) -> Path:
    entry = output["pack_images"][0]
    return server.output_dir / entry["subfolder"] / entry["filename"]


def run_once(editor: Editor, server: ComfyServer, ids: dict[str, str]) -> dict[str, Any]:
    done = editor.queue(button=True)
    record = history(server, done["prompt_id"])
    return {
        "prompt_id": done["prompt_id"],
        "events": done["events"],
        "outputs": record["outputs"],
        "graph": record["prompt"][2],
        "probes": editor.probes(done["prompt_id"]),
    }


def test_save_pack_reports_only_complete_files_and_shows_this_runs_picture(
    editor: Editor, editor_server: ComfyServer
) -> None:
    # Only what every version of the nodes has (Character → Pipeline → Save pack, the image
    # wired alone), queued twice under one name: what the editor fetches and shows is tested.
    editor.clear()
    nodes, _ = character_chain(name="preview")
    del nodes["score"]
    links = [
        ("character", "character", "pipeline", "character"),
        ("pipeline", "image", "save", "images"),
    ]
    ids = build(editor, nodes, links)
    for _ in range(2):
        run = run_once(editor, editor_server, ids)
        probes = [p for p in run["probes"] if p["node"] == ids["save"]]
        # Fetched the instant the node reported it, as the editor fetches it: there, whole.
        assert probes and all(p["status"] == 200 and p["complete"] for p in probes), probes
        shown = editor.shown_images(ids["save"])
        assert len(shown) == 1 and shown[0]["width"] > 0, shown
        assert probes[0]["filename"] in shown[0]["src"] and run["prompt_id"] in shown[0]["src"]


def test_the_character_chain_runs_from_the_editor_and_save_pack_shows_this_runs_image(
    editor: Editor, editor_server: ComfyServer, artefacts: Path
) -> None:
    editor.clear()
    ids = build(editor, *character_chain(name="chain"))
    runs = [run_once(editor, editor_server, ids) for _ in range(2)]

    seeds = []
    for run in runs:
        save = run["outputs"][ids["save"]]
        # The preview the editor fetched the instant the node reported it was complete.
        probes = [p for p in run["probes"] if p["node"] == ids["save"]]
        assert probes and all(p["status"] == 200 and p["complete"] for p in probes), probes
        assert [p["filename"] for p in probes] == [i["filename"] for i in save["images"]]
        # A progress bar moved during the run.
        assert any(e["type"] == "progress" for e in run["events"])
        # The seed that made the image: the one the queued prompt carried.
        seed = run["graph"][ids["pipeline"]]["inputs"]["seed"]
        seeds.append(seed)
        sidecar = sidecar_of(editor_server, save)
        assert sidecar["seed"] == seed and sidecar["prompt_id"] == run["prompt_id"]
        with Image.open(pack_file(editor_server, save)) as png:
            assert png.size == (2048, 3072)
            assert png.text["seed"] == str(seed)
            assert f"Seed: {seed}" in png.text["parameters"]
            assert "linen summer dress" in png.text["parameters"]

    # control after generate ("randomize") moved the seed widget between the two queues...
    assert seeds[0] != seeds[1]
    # ...and each run wrote its own files under the unchanged name.
    first, second = (pack_file(editor_server, r["outputs"][ids["save"]]) for r in runs)
    assert first != second and first.is_file() and second.is_file()
    assert first.name.startswith("chain.") and second.name.startswith("chain.")

    # The node shows the second run's picture, loaded.
    shown = editor.shown_images(ids["save"])
    latest = runs[1]["outputs"][ids["save"]]["images"][0]["filename"]
    assert len(shown) == 1 and latest in shown[0]["src"] and shown[0]["width"] > 0, shown

    # The identity score is on the Identity score node.
    scores = runs[1]["outputs"][ids["score"]]["scores"]
    texts = editor.js(
        """(id) => { const n = app.graph.getNodeById(id);
             return (n.widgets || []).map(w => String(w.value)); }""",
        ids["score"],
    )
    assert any(f"{min(scores):.3f}" in text for text in texts), (scores, texts)

    editor.screenshot(artefacts / "finished-run.png", node_ids=list(ids.values()))
    assert editor.errors() == []


def test_overwrite_replaces_the_one_file_only_when_asked(
    editor: Editor, editor_server: ComfyServer
) -> None:
    editor.clear()
    nodes, links = character_chain(name="fixed-name", width=256, height=384, seed=5)
    nodes["save"][1]["overwrite"] = True
    ids = build(editor, nodes, links)
    runs = [run_once(editor, editor_server, ids) for _ in range(2)]
    paths = [pack_file(editor_server, r["outputs"][ids["save"]]) for r in runs]
    assert paths[0] == paths[1] and paths[0].name == "fixed-name.png"
    assert sorted(p.name for p in paths[0].parent.glob("fixed-name*")) == [
        "fixed-name.json",
        "fixed-name.png",
    ]
    sidecar = sidecar_of(editor_server, runs[1]["outputs"][ids["save"]])
    assert sidecar["prompt_id"] == runs[1]["prompt_id"]
    # Each run still shows its own picture (the preview is per prompt).
    shown = editor.shown_images(ids["save"])
    assert runs[1]["outputs"][ids["save"]]["images"][0]["filename"] in shown[0]["src"]
