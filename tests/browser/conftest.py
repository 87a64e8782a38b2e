"""Fixtures of the browser tier: the real editor in front of a real CPU ComfyUI.

- ``editor_server`` (session): a ComfyUI 0.3.75 test server that serves the real frontend 1.32.9
  (``tests/comfy/frontend.py``) with charpack's node pack, the stand-ins, the tiny models and the
  example character's face as ``input/face.png`` (what ``workflows/api/*.json`` load) and a
  picture of her as ``input/input.png`` (what the stage-alone workflows start from).
- ``browser`` (session): Debian's Chromium, installed when missing, driven by Playwright.
- ``editor``: a fresh page of the editor, loaded and ready (``tests/browser/editor.py``).
- ``artefacts``: the folder screenshots go to (``$CHARPACK_ARTEFACTS`` or ``.artefacts/`` in
  the repository, ignored by git); ``python -m tests.browser.docs_pictures`` copies the ones the
  docs show into ``docs/img/``.

Every test here is marked ``browser`` (and ``server``, since it talks to the real server).
"""

from __future__ import annotations

import os
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

from tests.browser.editor import Editor
from tests.comfy.frontend import ensure_chromium, ensure_frontend
from tests.comfy.install import REPO, ComfyEnv
from tests.comfy.server import ComfyServer, start_server

FACE = REPO / "examples" / "faces" / "ava_front.png"
STAGE_INPUT = REPO / "examples" / "faces" / "ava_three_quarter.png"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--use-gl=swiftshader",
                 "--enable-unsafe-swiftshader"]  # fmt: skip
VIEWPORT = {"width": 1920, "height": 1080}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.browser)
            item.add_marker(pytest.mark.server)


def artefacts_dir() -> Path:
    configured = os.environ.get("CHARPACK_ARTEFACTS")
    return Path(configured) if configured else REPO / ".artefacts"


@pytest.fixture(scope="session")
def artefacts() -> Path:
    folder = artefacts_dir() / "browser"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def editor_server(
    comfy_env: ComfyEnv, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ComfyServer]:
    """The editor's server; tests share it, so each uses its own file names and seeds."""
    base = tmp_path_factory.mktemp("comfy-editor")
    (base / "input").mkdir()
    shutil.copyfile(FACE, base / "input" / "face.png")
    # What the stage-alone workflows start from (workflows/api/stage-*.json, the examples).
    shutil.copyfile(STAGE_INPUT, base / "input" / "input.png")
    server = start_server(base, env=comfy_env, frontend=ensure_frontend())
    # A first visit opens the Templates browser over the canvas; tests open it when they mean to.
    request = urllib.request.Request(
        server.url + "/api/settings/Comfy.TutorialCompleted", data=b"true", method="POST"
    )
    urllib.request.urlopen(request, timeout=30).close()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    binary = ensure_chromium()
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(binary), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def editor(browser: Browser, editor_server: ComfyServer) -> Iterator[Editor]:
    context = browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
    # The "Introducing Nodes 2.0" banner, dismissed as a user dismisses it (localStorage).
    context.add_init_script("localStorage.setItem('vueNodesBannerDismissed', 'true')")
    page = context.new_page()
    try:
        yield Editor(page=page, url=editor_server.url).open()
    finally:
        context.close()
