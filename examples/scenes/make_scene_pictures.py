"""Make the example pack's init image and pose reference (small synthetic drawings).

    python examples/scenes/make_scene_pictures.py

``examples/scenes/cafe-terrace.png`` is a 208x304 (832x1216 / 4) street-cafe composition for the
img2img scene, with the example character "Ava" seated in it; ``examples/scenes/standing-pose.png``
a figure standing with one hand on the hip, on a plain ground, for the pose/composition reference
(core Canny turns it into the ControlNet hint). Deterministic: re-running reproduces the
committed files.

An init image keeps its composition, faces included: img2img repaints the faces it finds (the
identity stages pull them toward the references), it does not add one. So the seated figure's
face is drawn by the test world's face renderer (``tests/comfy/standins/faces.py``, as the face
references are), large enough for the face detector at the pack's size (eye distance 20 px
here, 80 px at 832x1216), and nothing else in the picture is near-white (``clamp_colour``): the
tiny detector takes near-white patches for eyes.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# A script, not a package module: make the repository importable without installing it.
sys.path.insert(0, str(REPO))

from PIL import Image, ImageDraw  # noqa: E402

from tests.comfy.standins.faces import AVA, clamp_colour, draw_face  # noqa: E402

HERE = Path(__file__).resolve().parent
SIZE = (208, 304)
FACE_CENTRE = (104.0, 156.0)  # between the eyes of the seated figure
EYE_DISTANCE = 20.0


def cafe_terrace() -> Image.Image:
    c = clamp_colour
    img = Image.new("RGB", SIZE, c((236, 226, 208)))
    d = ImageDraw.Draw(img)
    d.rectangle([0, 0, SIZE[0], 120], fill=c((150, 190, 225)))  # sky
    d.rectangle([0, 60, SIZE[0], 190], fill=c((214, 196, 170)))  # facade
    for x in range(12, SIZE[0], 48):  # windows
        d.rectangle([x, 78, x + 28, 120], fill=c((92, 104, 120)))
    d.polygon([(0, 130), (SIZE[0], 130), (SIZE[0] - 14, 158), (14, 158)], fill=c((176, 46, 52)))
    for x in range(14, SIZE[0] - 14, 22):  # awning stripes
        stripe = [(x, 130), (x + 11, 130), (x + 10, 158), (x + 1, 158)]
        d.polygon(stripe, fill=c((240, 236, 226)))
    d.rectangle([0, 190, SIZE[0], SIZE[1]], fill=c((168, 160, 150)))  # pavement
    draw_face(img, AVA, centre=FACE_CENTRE, eye_distance=EYE_DISTANCE)  # Ava, seated
    d = ImageDraw.Draw(img)
    for cx in (40, 168):  # tables and chairs either side of her
        d.ellipse([cx - 26, 214, cx + 26, 228], fill=c((70, 70, 74)))
        d.rectangle([cx - 2, 222, cx + 2, 262], fill=c((60, 60, 64)))
        d.rectangle([cx + 30, 206, cx + 36, 262], fill=c((120, 84, 52)))
    return img


def standing_pose() -> Image.Image:
    img = Image.new("RGB", SIZE, (214, 214, 210))
    d = ImageDraw.Draw(img)
    d.rectangle([0, 262, SIZE[0], SIZE[1]], fill=(150, 146, 140))  # ground
    d.ellipse([88, 30, 122, 70], fill=(40, 40, 44))  # head
    d.rectangle([98, 70, 112, 80], fill=(40, 40, 44))  # neck
    d.polygon([(80, 80), (130, 80), (124, 170), (86, 170)], fill=(40, 40, 44))  # torso
    d.line([(82, 84), (62, 128), (84, 150)], fill=(40, 40, 44), width=10)  # hand on hip
    d.line([(128, 84), (140, 130), (142, 172)], fill=(40, 40, 44), width=10)  # arm down
    d.line([(94, 168), (86, 266)], fill=(40, 40, 44), width=14)  # legs
    d.line([(116, 168), (128, 266)], fill=(40, 40, 44), width=14)
    return img


def main() -> None:
    cafe_terrace().save(HERE / "cafe-terrace.png", optimize=True)
    standing_pose().save(HERE / "standing-pose.png", optimize=True)


if __name__ == "__main__":
    main()
