"""Synthetic illustrated faces for the test world (Pillow only).

Owns the face renderer that the committed example references, the stand-in ``VAEDecode`` and the
tiny InsightFace models all agree on. A face is drawn from ``FaceParams`` (skin, hair colour and
length, eye colour, lips, head width, head turn) at a place given by its eye midpoint and eye
distance; the renderer returns the five InsightFace key points it drew, so callers never guess.

The geometry follows InsightFace's ArcFace template (eyes level, nose 0.57 and mouth 1.16 eye
distances below the eye line), so an aligned 112x112 crop of a drawn face lands where the tiny
recognition model expects it. The eyes are white, flat ellipses with a coloured iris: that is the
feature the tiny detector keys on (``tests/comfy/tinyface.py``), so nothing else the renderer draws
(hair, clothes, backgrounds) may be near-white. ``clamp_colour`` enforces that.

Nothing here imports ComfyUI, numpy or torch: the examples script and the project's own tests use
it from the project environment.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from PIL import Image, ImageDraw, ImageFilter

RGB = tuple[int, int, int]

SCLERA: RGB = (246, 244, 238)
PUPIL: RGB = (18, 16, 16)
# Anything the renderer draws besides the eyes keeps its lowest channel at or below this, so the
# detector's "white" class (lowest channel >= 190, low saturation) only ever sees eyes.
MAX_NON_EYE_MIN_CHANNEL = 165
SUPERSAMPLE = 3

SKIN_TONES: tuple[RGB, ...] = (
    (236, 200, 165),
    (229, 184, 150),
    (214, 165, 128),
    (196, 142, 105),
    (170, 118, 84),
    (141, 94, 64),
    (112, 74, 50),
    (92, 60, 42),
)
HAIR_COLOURS: tuple[RGB, ...] = (
    (28, 22, 20),
    (62, 40, 28),
    (104, 66, 38),
    (150, 98, 52),
    (196, 160, 96),
    (168, 70, 40),
    (120, 120, 124),
    (58, 30, 52),
)
EYE_COLOURS: tuple[RGB, ...] = (
    (76, 48, 30),
    (110, 76, 40),
    (60, 110, 160),
    (70, 130, 90),
    (96, 104, 112),
    (40, 36, 34),
)
LIP_COLOURS: tuple[RGB, ...] = ((190, 90, 95), (170, 96, 88), (150, 70, 80), (120, 60, 60))


@dataclass(frozen=True)
class FaceParams:
    """What a face looks like: identity (colours, hair, head shape) and pose (turn)."""

    skin: RGB
    hair: RGB
    hair_length: float  # 0 = cropped, 1 = below the shoulders
    eyes: RGB
    lips: RGB
    face_width: float = 1.0  # head width factor, 0.85 .. 1.1
    turn: float = 0.0  # head yaw, -1 .. 1; positive turns toward the viewer's right

    def turned(self, turn: float) -> FaceParams:
        """The same person with another head turn."""
        return replace(self, turn=max(-1.0, min(1.0, turn)))


@dataclass(frozen=True)
class Landmarks:
    """Where a drawn face ended up, in image pixels."""

    kps: tuple[tuple[float, float], ...]  # left eye, right eye, nose, mouth left, mouth right
    bbox: tuple[float, float, float, float]  # x1, y1, x2, y2 (forehead to chin)
    head: tuple[float, float, float, float]  # the head ellipse's bounding box


# The example character of the docs and tests ("Ava"): the committed references show her, and the
# test world's character LoRA carries her look.
AVA = FaceParams(
    skin=(224, 172, 138),
    hair=(72, 44, 30),
    hair_length=0.8,
    eyes=(70, 130, 90),
    lips=(190, 90, 95),
    face_width=0.95,
)


def clamp_colour(colour: RGB) -> RGB:
    """``colour`` darkened just enough that the detector can never take it for an eye."""
    low = min(colour)
    if low <= MAX_NON_EYE_MIN_CHANNEL:
        return tuple(int(c) for c in colour)  # type: ignore[return-value]
    shift = low - MAX_NON_EYE_MIN_CHANNEL
    return tuple(max(0, int(c) - shift) for c in colour)  # type: ignore[return-value]


def mix(a: RGB, b: RGB, t: float) -> RGB:
    """Linear blend of two colours (t=0 gives a, t=1 gives b)."""
    return tuple(int(round(x + (y - x) * t)) for x, y in zip(a, b, strict=True))  # type: ignore


def random_params(rng: random.Random, *, turn: float | None = None) -> FaceParams:
    """A random, plausible face drawn from the palettes (deterministic for a seeded ``rng``)."""
    return FaceParams(
        skin=rng.choice(SKIN_TONES),
        hair=rng.choice(HAIR_COLOURS),
        hair_length=round(rng.random(), 3),
        eyes=rng.choice(EYE_COLOURS),
        lips=rng.choice(LIP_COLOURS),
        face_width=round(0.85 + 0.25 * rng.random(), 3),
        turn=round(rng.uniform(-0.3, 0.3), 3) if turn is None else turn,
    )


def blend_params(a: FaceParams, b: FaceParams, t: float) -> FaceParams:
    """A face ``t`` of the way from ``a`` to ``b`` (identity only; the pose stays ``a``'s)."""
    t = max(0.0, min(1.0, t))
    return FaceParams(
        skin=mix(a.skin, b.skin, t),
        hair=mix(a.hair, b.hair, t),
        hair_length=a.hair_length + (b.hair_length - a.hair_length) * t,
        eyes=mix(a.eyes, b.eyes, t),
        lips=mix(a.lips, b.lips, t),
        face_width=a.face_width + (b.face_width - a.face_width) * t,
        turn=a.turn,
    )


def _shade(colour: RGB, factor: float) -> RGB:
    return clamp_colour(tuple(max(0, min(255, int(c * factor))) for c in colour))  # type: ignore


def draw_face(
    image: Image.Image, params: FaceParams, *, centre: tuple[float, float], eye_distance: float
) -> Landmarks:
    """Draw one face (with neck and shoulders) onto ``image`` in place.

    ``centre`` is the midpoint between the eyes, ``eye_distance`` the distance between the eye
    centres, both in pixels of ``image``.
    """
    d = float(eye_distance)
    mx, my = centre
    t = params.turn
    # The face is drawn on a supersampled layer around the head, then pasted with its alpha.
    x0, y0 = mx - 3.2 * d, my - 2.0 * d
    x1, y1 = mx + 3.2 * d, my + 4.5 * d
    ss = SUPERSAMPLE
    width, height = max(1, int((x1 - x0) * ss)), max(1, int((y1 - y0) * ss))
    layer = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    pen = ImageDraw.Draw(layer)

    def p(x: float, y: float) -> tuple[float, float]:
        return ((x - x0) * ss, (y - y0) * ss)

    def ellipse(cx: float, cy: float, rx: float, ry: float, fill: RGB) -> None:
        (ax, ay), (bx, by) = p(cx - rx, cy - ry), p(cx + rx, cy + ry)
        pen.ellipse((ax, ay, bx, by), fill=fill + (255,))

    skin, hair = clamp_colour(params.skin), clamp_colour(params.hair)
    head_cx, head_cy = mx - t * 0.55 * d, my + 0.35 * d
    head_rx, head_ry = 1.2 * d * params.face_width * (1 - 0.1 * abs(t)), 1.6 * d

    # Torso and neck, behind everything else.
    torso = _shade(mix(hair, (90, 110, 140), 0.7), 1.0)
    ellipse(head_cx, my + 4.3 * d, 2.4 * d, 1.9 * d, torso)
    (ax, ay), (bx, by) = p(head_cx - 0.45 * d, my + 1.4 * d), p(head_cx + 0.45 * d, my + 2.8 * d)
    pen.rectangle((ax, ay, bx, by), fill=_shade(skin, 0.86) + (255,))

    # Long hair falls behind the head and neck.
    length = max(0.0, min(1.0, params.hair_length))
    if length > 0.15:
        bottom = my + (0.6 + 2.6 * length) * d
        (ax, ay) = p(head_cx - head_rx * 1.12, head_cy - head_ry * 0.6)
        (bx, by) = p(head_cx + head_rx * 1.12, bottom)
        pen.rounded_rectangle((ax, ay, bx, by), radius=0.5 * d * ss, fill=hair + (255,))
    ellipse(head_cx, head_cy - 0.08 * d, head_rx * 1.1, head_ry * 1.04, hair)

    # Head, then the hair cap over the forehead.
    ellipse(head_cx, head_cy, head_rx, head_ry, skin)
    cap_top = head_cy - head_ry * 1.08
    (ax, ay) = p(head_cx - head_rx * 1.02, cap_top)
    (bx, by) = p(head_cx + head_rx * 1.02, 2 * (my - 0.5 * d) - cap_top)
    pen.chord((ax, ay, bx, by), start=180, end=360, fill=hair + (255,))

    # Eyes: flat white ellipses, iris and pupil looking the way the head turns.
    eye_y = my
    kps: list[tuple[float, float]] = []
    for side in (-1, 1):
        ex = mx + side * d / 2
        far = (side > 0 and t > 0) or (side < 0 and t < 0)
        wfac = 1.0 - 0.45 * abs(t) if far else 1.0
        rx, ry = 0.24 * d * wfac, 0.13 * d
        ellipse(ex, eye_y, rx, ry, SCLERA)
        ix = ex + t * 0.06 * d
        ellipse(ix, eye_y, 0.11 * d * min(1.0, wfac + 0.2), 0.11 * d, clamp_colour(params.eyes))
        ellipse(ix, eye_y, 0.05 * d, 0.05 * d, PUPIL)
        (ax, ay), (bx, by) = p(ex - rx, eye_y - ry), p(ex + rx, eye_y + ry)
        pen.arc(
            (ax, ay, bx, by),
            start=190,
            end=350,
            fill=_shade(skin, 0.45) + (255,),
            width=max(1, int(0.025 * d * ss)),
        )
        # Brow in the hair colour.
        (ax, ay) = p(ex - rx * 1.05, eye_y - 0.42 * d)
        (bx, by) = p(ex + rx * 1.05, eye_y - 0.12 * d)
        pen.arc(
            (ax, ay, bx, by),
            start=200,
            end=340,
            fill=hair + (255,),
            width=max(1, int(0.06 * d * ss)),
        )
        kps.append((ex, eye_y))

    # Nose: a soft shadow line and a tip.
    nose_x, nose_y = mx + t * 0.35 * d, my + 0.57 * d
    shadow = _shade(skin, 0.72)
    pen.line(
        [p(nose_x - 0.05 * d, my + 0.15 * d), p(nose_x - 0.1 * d, nose_y)],
        fill=shadow + (255,),
        width=max(1, int(0.04 * d * ss)),
    )
    ellipse(nose_x - 0.08 * d, nose_y + 0.02 * d, 0.06 * d, 0.04 * d, shadow)
    ellipse(nose_x + 0.08 * d, nose_y + 0.02 * d, 0.06 * d, 0.04 * d, shadow)
    kps.append((nose_x, nose_y))

    # Mouth: two lips between the corners.
    mouth_x, mouth_y = mx + t * 0.15 * d, my + 1.16 * d
    half = 0.41 * d * (1 - 0.2 * abs(t))
    lips = clamp_colour(params.lips)
    (ax, ay), (bx, by) = p(mouth_x - half, mouth_y - 0.1 * d), p(mouth_x + half, mouth_y + 0.14 * d)
    pen.chord((ax, ay, bx, by), start=0, end=180, fill=lips + (255,))
    (ax, ay), (bx, by) = (
        p(mouth_x - half * 0.9, mouth_y - 0.08 * d),
        p(mouth_x + half * 0.9, mouth_y + 0.06 * d),
    )
    pen.chord((ax, ay, bx, by), start=180, end=360, fill=_shade(lips, 0.85) + (255,))
    pen.line(
        [p(mouth_x - half, mouth_y), p(mouth_x + half, mouth_y)],
        fill=_shade(lips, 0.5) + (255,),
        width=max(1, int(0.02 * d * ss)),
    )
    kps.extend([(mouth_x - half, mouth_y), (mouth_x + half, mouth_y)])

    small = layer.resize((max(1, round(x1 - x0)), max(1, round(y1 - y0))), Image.LANCZOS)
    if image.mode == "RGBA":
        image.alpha_composite(small, (round(x0), round(y0)))
    else:
        image.paste(small, (round(x0), round(y0)), small)
    head_box = (head_cx - head_rx, head_cy - head_ry, head_cx + head_rx, head_cy + head_ry)
    bbox = (head_cx - head_rx, my - 1.05 * d, head_cx + head_rx, head_cy + head_ry)
    return Landmarks(kps=tuple(kps), bbox=bbox, head=head_box)


def backdrop(size: tuple[int, int], top: RGB, bottom: RGB) -> Image.Image:
    """A vertical two-colour gradient (never near-white)."""
    width, height = size
    top, bottom = clamp_colour(top), clamp_colour(bottom)
    column = Image.new("RGB", (1, height))
    for y in range(height):
        column.putpixel((0, y), mix(top, bottom, y / max(1, height - 1)))
    return column.resize((width, height))


def portrait(
    params: FaceParams,
    *,
    size: tuple[int, int] = (256, 256),
    background: tuple[RGB, RGB] = ((176, 186, 200), (120, 132, 150)),
    centre: tuple[float, float] | None = None,
    eye_distance: float | None = None,
) -> tuple[Image.Image, Landmarks]:
    """A head-and-shoulders picture of one face; by default centred and filling the frame."""
    width, height = size
    image = backdrop(size, *background)
    d = eye_distance if eye_distance is not None else min(width, height) * 0.19
    c = centre if centre is not None else (width / 2, height * 0.42)
    marks = draw_face(image, params, centre=c, eye_distance=d)
    return image, marks


def landscape(size: tuple[int, int], *, seed: int = 0) -> Image.Image:
    """A face-less outdoor picture: sky, hills, a path and grass texture (no near-white)."""
    rng = random.Random(seed)
    width, height = size
    image = backdrop(size, (96, 150, 204), (160, 190, 212))
    pen = ImageDraw.Draw(image)
    for layer, colour in enumerate(((96, 128, 92), (72, 112, 64), (58, 96, 50))):
        base = height * (0.45 + 0.15 * layer)
        points = [(0, height)]
        for x in range(0, width + 16, 16):
            points.append((x, base + rng.uniform(-0.06, 0.06) * height))
        points.append((width, height))
        pen.polygon(points, fill=colour)
    pen.polygon(
        [
            (width * 0.45, height),
            (width * 0.55, height),
            (width * 0.52, height * 0.62),
            (width * 0.5, height * 0.62),
        ],
        fill=(150, 128, 96),
    )
    for _ in range(width * height // 60):
        x, y = rng.uniform(0, width), rng.uniform(height * 0.6, height)
        shade = rng.randint(-25, 25)
        pen.line(
            [(x, y), (x + rng.uniform(-2, 2), y - rng.uniform(2, 6))],
            fill=clamp_colour((70 + shade, 110 + shade, 60 + shade)),
        )
    return image.filter(ImageFilter.SMOOTH)
