"""The identity gate in the editor: a batch queued from the editor saves only the images whose
identity score reaches the gate's threshold; the others stop at the gate and their prompts still
succeed."""

from __future__ import annotations

from tests.browser.editor import Editor
from tests.browser.graphs import build, character_chain
from tests.browser.test_editor_run import history
from tests.comfy.server import ComfyServer

# Between the stand-in pipeline's scores for seeds 3-6 at 256x384 (about 0.97-0.996): both
# verdicts occur, so the batch shows the gate passing and blocking.
THRESHOLD = 0.98
SEED = 3


def test_an_editor_batch_saves_only_the_on_identity_images(
    editor: Editor, editor_server: ComfyServer
) -> None:
    editor.clear()
    nodes, links = character_chain(name="gated", width=256, height=384, seed=SEED)
    # Seeds SEED, SEED + 1, ...: a known mix of on- and off-identity images.
    nodes["pipeline"][1]["control_after_generate"] = "increment"
    nodes["gate"] = ("CharpackIdentityGate", {"threshold": THRESHOLD})
    links = [link for link in links if link[2:] != ("save", "images")]
    links += [
        ("score", "images", "gate", "images"),
        ("score", "score", "gate", "score"),
        ("gate", "images", "save", "images"),
    ]
    ids = build(editor, nodes, links)
    runs = editor.queue_batch(4)
    verdicts = []
    for run in runs:
        record = history(editor_server, run["prompt_id"])
        assert record["status"]["status_str"] == "success"
        outputs = record["outputs"]
        score = min(outputs[ids["score"]]["scores"])
        passed = outputs[ids["gate"]]["passed"] == [True]
        assert passed == (score >= THRESHOLD), (score, outputs[ids["gate"]])
        saved = ids["save"] in outputs and bool(outputs[ids["save"]].get("pack_images"))
        assert saved == passed, (score, sorted(outputs))
        verdicts.append(passed)
    assert True in verdicts and False in verdicts, verdicts
    # The last prompt's verdict is shown on the node.
    texts = editor.js(
        """(id) => (app.graph.getNodeById(id).widgets || []).map(w => String(w.value))""",
        ids["gate"],
    )
    shown = "passed" if verdicts[-1] else "blocked"
    assert any(t.startswith(shown) for t in texts), (verdicts, texts)
