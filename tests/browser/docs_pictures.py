"""Copy the browser tier's screenshots into the docs and the example workflows' previews.

    pytest tests/browser && python -m tests.browser.docs_pictures

The pictures in ``docs/img/editor-*.jpg`` and ``custom_nodes/charpack_nodes/example_workflows/
*.jpg`` are taken by the browser tests (``.artefacts/browser/``, or ``$CHARPACK_ARTEFACTS``),
never drawn by hand: what the docs show is what the real editor showed in the last test run.
JPEG at quality 85, the docs' pictures at most 1600 px wide, the templates' previews 640 px.
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image

from tests.browser.conftest import artefacts_dir
from tests.comfy.install import REPO

DOCS = REPO / "docs" / "img"
EXAMPLES = REPO / "custom_nodes" / "charpack_nodes" / "example_workflows"
DOC_PICTURES = {
    "node-library.png": "editor-node-library.jpg",
    "finished-run.png": "editor-finished-run.jpg",
    "templates-browser.png": "editor-templates.jpg",
    "png-dropped.png": "editor-png-dropped.jpg",
}


# The editor's side bar and tab bar, left out of the templates' previews (the graph is the point).
CANVAS = (60, 40, 1920, 1080)


def save_jpeg(
    source: Path, target: Path, width: int, *, crop: tuple[int, ...] | None = None
) -> None:
    with Image.open(source) as picture:
        rgb = picture.convert("RGB")
        if crop:
            rgb = rgb.crop(crop)
        if rgb.width > width:
            rgb = rgb.resize((width, round(rgb.height * width / rgb.width)), Image.LANCZOS)
        target.parent.mkdir(parents=True, exist_ok=True)
        rgb.save(target, "JPEG", quality=85, optimize=True)


def main() -> int:
    shots = artefacts_dir() / "browser"
    missing = []
    for name, target in DOC_PICTURES.items():
        if (shots / name).is_file():
            save_jpeg(shots / name, DOCS / target, 1600)
        else:
            missing.append(name)
    for workflow in sorted(EXAMPLES.glob("*.json")):
        shot = shots / f"example-{workflow.stem}.png"
        if shot.is_file():
            save_jpeg(shot, workflow.with_suffix(".jpg"), 640, crop=CANVAS)
        else:
            missing.append(shot.name)
    if missing:
        sys.stderr.write(f"not in {shots} (run pytest tests/browser first): {', '.join(missing)}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
