"""Drive the real ComfyUI graph editor (frontend 1.32.9) in a headless Chromium page.

``Editor`` wraps one Playwright page open on a test server that serves the real frontend. Every
call goes through the frontend's own objects, as ``reference/graph-editor.md`` §5 lists them:
``app.loadApiJson`` / ``app.loadGraphData`` / ``app.handleFile`` to load, ``app.graphToPrompt``
to export, the ``Comfy.QueuePrompt`` command or the Run button to queue, ``LiteGraph.createNode``
to build, and ``app.api`` events to wait — never a sleep. Server events are recorded in the page
from the moment it loads (``window.__charpack.events``), so a test waits for *its* prompt's
``execution_success`` and can inspect what the editor saw at each step.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playwright.sync_api import ConsoleMessage, Page, Response

LOAD_TIMEOUT_MS = 90_000
RUN_TIMEOUT_MS = 300_000

# What the frontend logs with no custom nodes at all (graph-editor.md §7): not a node pack's error.
KNOWN_NOISE = (
    "/api/userdata",
    "/user.css",
    "Cannot read properties of undefined (reading 'id')",
    "api.comfy.org",
    "Content Security Policy",
    "templates/",
    "Error loading core workflow templates",
    "Failed to load resource: the server responded with a status of 404",
)

_RECORDER = """() => {
  if (window.__charpack) return;
  const state = { events: [], probes: [] };
  window.__charpack = state;
  // What the editor can fetch of each reported image at the instant the node reports it done.
  app.api.addEventListener('executed', async (e) => {
    const d = e.detail || {};
    for (const img of ((d.output || {}).images || [])) {
      const q = new URLSearchParams({filename: img.filename, subfolder: img.subfolder || '',
                                     type: img.type || 'output'});
      const r = await fetch('/api/view?' + q, {cache: 'no-store'});
      const b = new Uint8Array(await r.arrayBuffer());
      const tail = Array.from(b.slice(-8)).join(',');
      state.probes.push({node: String(d.display_node || d.node), prompt_id: d.prompt_id,
        filename: img.filename, subfolder: img.subfolder || '', type: img.type,
        status: r.status, bytes: b.length, complete: tail === '73,69,78,68,174,66,96,130'});
    }
  });
  const kinds = ['status', 'executing', 'progress', 'executed', 'execution_start',
    'execution_success', 'execution_error', 'execution_cached', 'execution_interrupted'];
  for (const kind of kinds) {
    app.api.addEventListener(kind, (e) => {
      state.events.push({ type: kind, detail: e.detail === undefined ? null : e.detail,
                          at: performance.now() });
    });
  }
}"""


# Frame the canvas on some nodes (all when none are named), leaving room for the editor's bars.
_FIT = """(ids) => {
  const all = app.graph._nodes;
  const nodes = ids.length ? ids.map(i => app.graph.getNodeById(i)) : all;
  const boxes = nodes.filter(Boolean).map(n => n.getBounding());
  const x0 = Math.min(...boxes.map(b => b[0]));
  const y0 = Math.min(...boxes.map(b => b[1]));
  const x1 = Math.max(...boxes.map(b => b[0] + b[2]));
  const y1 = Math.max(...boxes.map(b => b[1] + b[3]));
  // Room for the editor's bars at the top.
  app.canvas.ds.fitToBounds([x0, y0 - 60, x1 - x0, y1 - y0 + 90], {zoom: 0.92});
  app.canvas.setDirty(true, true);
}"""


@dataclass
class Editor:
    """One page of the real editor; ``url`` is the test server's."""

    page: Page
    url: str
    console: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def open(self) -> Editor:
        self.page.on("console", self._on_console)
        self.page.on("pageerror", lambda error: self.console.append(f"pageerror: {error}"))
        self.page.on("response", self._on_response)
        self.page.goto(self.url + "/", wait_until="domcontentloaded")
        self.page.wait_for_function(
            "window.app && window.app.graph && window.LiteGraph && window.app.canvas "
            "&& window.app.api",
            timeout=LOAD_TIMEOUT_MS,
        )
        self.page.evaluate(_RECORDER)
        return self

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            self.console.append(f"{message.type}: {message.text}")

    def _on_response(self, response: Response) -> None:
        if response.status >= 400:
            self.failures.append(f"{response.status} {response.url}")

    def errors(self) -> list[str]:
        """Console errors and failed responses that are not the frontend's own noise."""
        lines = [line for line in self.console if line.startswith(("error", "pageerror"))]
        lines += self.failures
        return [line for line in lines if not any(noise in line for noise in KNOWN_NOISE)]

    # -- the frontend's calls ---------------------------------------------------------------

    def js(self, script: str, arg: Any = None) -> Any:
        return self.page.evaluate(script, arg)

    def version(self) -> str:
        return str(self.js("() => window.__COMFYUI_FRONTEND_VERSION__"))

    def clear(self) -> None:
        self.js("() => { app.graph.clear(); app.canvas.setDirty(true, true); }")

    def load_api(self, graph: dict[str, Any], name: str = "workflow.json") -> None:
        self.js("async ([g, n]) => { await app.loadApiJson(g, n); }", [graph, name])

    def load_ui(self, workflow: dict[str, Any]) -> None:
        self.js("async (w) => { await app.loadGraphData(w); }", workflow)

    def load_file(self, path: Path, mime: str) -> None:
        """Hand a file to the editor as a drop or file-open does (``app.handleFile``)."""
        data = list(path.read_bytes())
        self.js(
            """async ([bytes, name, mime]) => {
                const file = new File([new Uint8Array(bytes)], name, {type: mime});
                await app.handleFile(file);
            }""",
            [data, path.name, mime],
        )

    def drop_file(self, path: Path, mime: str) -> None:
        """Drop a file onto the canvas with a real drag-and-drop event sequence."""
        data = list(path.read_bytes())
        self.js(
            """async ([bytes, name, mime]) => {
                const file = new File([new Uint8Array(bytes)], name, {type: mime});
                const dt = new DataTransfer();
                dt.items.add(file);
                const canvas = document.querySelector('#graph-canvas');
                for (const type of ['dragenter', 'dragover', 'drop']) {
                  canvas.dispatchEvent(new DragEvent(type, {dataTransfer: dt, bubbles: true,
                                                            cancelable: true}));
                }
            }""",
            [data, path.name, mime],
        )

    def to_prompt(self) -> dict[str, Any]:
        """``app.graphToPrompt()``: ``{"output": API graph, "workflow": UI graph}``."""
        return dict(self.js("async () => JSON.parse(JSON.stringify(await app.graphToPrompt()))"))

    def serialize(self) -> dict[str, Any]:
        return dict(self.js("() => JSON.parse(JSON.stringify(app.graph.serialize()))"))

    def node_ids(self) -> list[str]:
        return [str(i) for i in self.js("() => app.graph._nodes.map(n => n.id)")]

    def event_count(self) -> int:
        return int(self.js("() => window.__charpack.events.length"))

    def probes(self, prompt_id: str) -> list[dict[str, Any]]:
        """Each image a node reported for ``prompt_id``, fetched the instant it was reported:
        ``status``, ``bytes`` and ``complete`` (the PNG ends with its IEND chunk)."""
        self.page.wait_for_function(
            "(p) => window.__charpack.probes.some(x => x.prompt_id === p)", arg=prompt_id
        )
        return [p for p in self.js("() => window.__charpack.probes") if p["prompt_id"] == prompt_id]

    def shown_images(self, node_id: str) -> list[dict[str, Any]]:
        """The pictures a node shows once they have loaded (or failed to): URL and size."""
        self.page.wait_for_function(
            """(id) => { const n = app.graph.getNodeById(id);
                 return n && n.imgs && n.imgs.length && n.imgs.every(i => i.complete); }""",
            arg=node_id,
        )
        return list(
            self.js(
                """(id) => app.graph.getNodeById(id).imgs.map(i => ({
                     src: i.src, width: i.naturalWidth, height: i.naturalHeight}))""",
                node_id,
            )
        )

    def events(self, since: int = 0) -> list[dict[str, Any]]:
        return list(self.js("(i) => window.__charpack.events.slice(i)", since))

    def queue(self, *, button: bool = False) -> dict[str, Any]:
        """Queue the graph as a user does (the Run button, or the ``Comfy.QueuePrompt``
        command) and wait for the prompt to finish: ``{"prompt_id", "events"}``, with every
        server event of that prompt in order. A refused or failed prompt raises."""
        start = self._before_queue()
        if button:
            self.page.get_by_role("button", name="Run", exact=True).first.click()
        else:
            self.js("() => app.extensionManager.command.execute('Comfy.QueuePrompt')")
        return self._runs(start, 1)[0]

    def queue_batch(self, count: int) -> list[dict[str, Any]]:
        """Queue the graph ``count`` times as Run with a batch count does (``app.queuePrompt``),
        and wait for all of them; one ``{"prompt_id", "events"}`` each, in queue order."""
        start = self._before_queue()
        self.js("(n) => app.queuePrompt(0, n)", count)
        return self._runs(start, count)

    def _before_queue(self) -> int:
        # The editor sets lastNodeErrors from the server's answer to each queue: clear an
        # earlier answer's, so only this queue's refusal counts.
        self.js("() => { app.lastNodeErrors = null; }")
        return self.event_count()

    def _runs(self, start: int, count: int) -> list[dict[str, Any]]:
        outcome = self.page.wait_for_function(
            """([start, n]) => {
                if (app.lastNodeErrors && Object.keys(app.lastNodeErrors).length) return 'refused';
                const ends = window.__charpack.events.slice(start).filter(e => ['execution_success',
                  'execution_error', 'execution_interrupted'].includes(e.type));
                return ends.length >= n ? 'ended' : null;
            }""",
            arg=[start, count],
            timeout=RUN_TIMEOUT_MS * count,
        ).json_value()
        if outcome == "refused":
            refused = self.js("() => JSON.parse(JSON.stringify(app.lastNodeErrors))")
            raise AssertionError(f"the server refused the prompt: {json.dumps(refused)[:2000]}")
        seen = [e for e in self.events(start) if isinstance(e.get("detail"), dict)]
        order: list[str] = []
        for event in seen:
            prompt_id = event["detail"].get("prompt_id")
            if event["type"] == "execution_start" and prompt_id not in order:
                order.append(prompt_id)
        runs = []
        for prompt_id in order:
            events = [e for e in seen if e["detail"].get("prompt_id") == prompt_id]
            failed = [
                e for e in events if e["type"] in ("execution_error", "execution_interrupted")
            ]
            if failed:
                raise AssertionError(
                    f"prompt {prompt_id} did not finish: {json.dumps(failed)[:2000]}; "
                    f"console: {self.errors()[:5]}"
                )
            runs.append({"prompt_id": prompt_id, "events": events})
        assert len(runs) == count, f"{count} prompts queued, {len(runs)} started: {order}"
        return runs

    def screenshot(self, path: Path, *, node_ids: list[str] | None = None) -> Path:
        """A picture of the editor, the canvas fitted to ``node_ids`` (all nodes when empty)
        (the frontend's ``fitToBounds`` over their bounding boxes), for artefacts and docs."""
        path.parent.mkdir(parents=True, exist_ok=True)
        if node_ids is not None:
            self.js(
                _FIT,
                node_ids,
            )
        # Every picture a node was sent is on it, loaded (the editor loads a node's picture when
        # it first draws the node, so only after the view is set).
        self.page.wait_for_function(
            """() => app.graph._nodes.every(n => {
                 const out = app.nodeOutputs && app.nodeOutputs[String(n.id)];
                 if (!out || !out.images || !out.images.length) return true;
                 return n.imgs && n.imgs.length && n.imgs.every(i => i.complete);
               })"""
        )
        if node_ids is not None:  # again: a loaded picture makes its node taller
            self.js(_FIT, node_ids)
        self.js("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
        self.page.screenshot(path=str(path))
        return path
