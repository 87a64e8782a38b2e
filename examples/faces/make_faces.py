"""Make the committed example face references and the face-less test picture.

    python examples/faces/make_faces.py

Writes ``examples/faces/ava_front.png``, ``examples/faces/ava_three_quarter.png`` (the example
character "Ava", two views, 256x256), the example character folder's three references
``examples/character/references/*.png`` (640x640: front and both three-quarter views, on
different backdrops; character creation wants 3–5 references of at least 512 px) and
``tests/data/no_face.png`` (a landscape with no face).
They are synthetic drawings from the test world's face renderer
(``tests/comfy/standins/faces.py``), which the tiny test face models are built to find; the output
is deterministic, so re-running the script reproduces the committed files.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# A script, not a package module: make the repository importable without installing it.
sys.path.insert(0, str(REPO))

from PIL import Image  # noqa: E402

from tests.comfy.standins.faces import AVA, landscape, portrait  # noqa: E402

THREE_QUARTER_TURN = 0.5
PALETTE_COLOURS = 128


def main() -> None:
    front, _ = portrait(AVA)
    three_quarter, _ = portrait(AVA.turned(THREE_QUARTER_TURN))
    outputs = {
        REPO / "examples/faces/ava_front.png": front,
        REPO / "examples/faces/ava_three_quarter.png": three_quarter,
        REPO / "tests/data/no_face.png": landscape((256, 256), seed=7),
    }
    references = REPO / "examples/character/references"
    for name, turn, background in (
        ("ava_front", 0.0, ((176, 186, 200), (120, 132, 150))),
        ("ava_left", -THREE_QUARTER_TURN, ((200, 190, 170), (150, 136, 118))),
        ("ava_right", THREE_QUARTER_TURN, ((170, 196, 186), (110, 140, 128))),
    ):
        outputs[references / f"{name}.png"] = portrait(
            AVA.turned(turn) if turn else AVA, size=(640, 640), background=background
        )[0]
    for path, image in outputs.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        # A small palette keeps the flat drawings at a few KB without visible loss.
        small = image.convert("RGB").quantize(
            colors=PALETTE_COLOURS, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE
        )
        small.save(path, optimize=True)
        print(f"wrote {path.relative_to(REPO)} ({path.stat().st_size} bytes)")  # noqa: T201


if __name__ == "__main__":
    main()
