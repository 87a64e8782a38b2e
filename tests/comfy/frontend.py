"""The real ComfyUI graph editor for the browser tier: frontend packages and a system Chromium.

ComfyUI 0.3.75 pins its frontend in ``requirements.txt``: ``comfyui-frontend-package==1.32.9``
with ``comfyui-workflow-templates==0.7.25`` and ``comfyui-embedded-docs==0.3.1`` beside it
(``reference/graph-editor.md`` §1). :func:`ensure_frontend` installs exactly those from PyPI with
``pip install --target`` into ``<cache>/frontend-1.32.9/`` (outside git, like the ComfyUI
environment; its own stamp, the same lock), so the server can serve ``index.html`` from
``comfyui_frontend_package/static`` and import the templates and embedded docs from that folder.

:func:`ensure_chromium` returns Debian's real Chromium binary, installing the ``chromium``
package (and a font) when it is missing, as the auth-proxy tests install nginx; Playwright
drives that binary, so no browser is ever downloaded.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.comfy.install import _locked, _pip_env, _run, cache_root

FRONTEND_VERSION = "1.32.9"
FRONTEND_PINS = (
    f"comfyui-frontend-package=={FRONTEND_VERSION}",
    "comfyui-workflow-templates==0.7.25",
    # The templates' index, which ComfyUI imports; the media packages beside it are not needed.
    "comfyui-workflow-templates-core==0.3.12",
    "comfyui-embedded-docs==0.3.1",
)
CHROMIUM_BINARY = Path("/usr/lib/chromium/chromium")  # the wrapper in /usr/bin is a shell script
CHROMIUM_PACKAGES = ("chromium", "fonts-dejavu-core")
FRONTEND_RECIPE = 2


@dataclass(frozen=True)
class Frontend:
    """An installed frontend: the ``--front-end-root`` and the folder to put on PYTHONPATH."""

    packages: Path
    version: str = FRONTEND_VERSION

    @property
    def static(self) -> Path:
        return self.packages / "comfyui_frontend_package" / "static"


def ensure_frontend() -> Frontend:
    """The pinned frontend packages, installed on first use (about 60 MB from PyPI)."""
    root = cache_root() / f"frontend-{FRONTEND_VERSION}"
    stamp_path = root / "stamp.json"
    key = {"pins": list(FRONTEND_PINS), "recipe": FRONTEND_RECIPE}
    with _locked(root):
        stamp = json.loads(stamp_path.read_text()) if stamp_path.exists() else {}
        packages = root / "packages"
        if stamp.get("key") != key or not (packages / "comfyui_frontend_package").is_dir():
            stamp_path.unlink(missing_ok=True)
            shutil.rmtree(packages, ignore_errors=True)
            _run(
                "pip-frontend",
                [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(packages),
                 *FRONTEND_PINS],
                logs=root / "logs",
                env=_pip_env(),
            )  # fmt: skip
            stamp_path.write_text(json.dumps({"key": key}, indent=2))
    frontend = Frontend(packages=packages)
    if not (frontend.static / "index.html").is_file():
        raise RuntimeError(f"{frontend.static} has no index.html: delete {root} and run again")
    return frontend


def ensure_chromium() -> Path:
    """Debian's Chromium binary, installed with apt when missing (tests run as root in CI)."""
    if CHROMIUM_BINARY.is_file():
        return CHROMIUM_BINARY
    if os.geteuid() != 0:
        raise RuntimeError(
            "Chromium is missing and tests are not root: apt-get install "
            + " ".join(CHROMIUM_PACKAGES)
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", *CHROMIUM_PACKAGES]
    for cmd in (["apt-get", "update"], install):
        subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=900)
    if not CHROMIUM_BINARY.is_file():
        raise RuntimeError(f"apt installed chromium but {CHROMIUM_BINARY} is missing")
    return CHROMIUM_BINARY
