"""The loss plot of a training: a PNG picture of the per-step losses, drawn with Pillow.

Owns drawing the raw loss per step (thin, light), its moving average (bold), the chunk
boundaries (dashed verticals, so a jump at a chunk's start is seen as one) and the axes with
their figures. ComfyUI's own ``LossGraphNode`` draws on the server into its output folder; this
picture is drawn on the client from the losses the save node reports, so it lies beside the LoRA
(``loras/<name>-v<N>.loss.png``) and in ``training/v<N>/loss.png``. Non-finite losses (the save
node refuses them, but a partial record may hold one) are left out of the line and marked red
on the axis.

Public API::

    render_loss_plot(losses: Sequence[float], *, boundaries: Sequence[int] = (), title="",
                     size=(960, 480)) -> PIL.Image.Image
    write_loss_plot(losses, path: Path, *, boundaries=(), title="", size=(960, 480)) -> Path

``boundaries`` are step counts at which a chunk ended (``Chunk.end_step``); the last one, the
end of the training, is not drawn.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw

from ..folder.contact_sheet import _font
from ..folder.integrity import atomic_write

BG, AXIS, GRID, TEXT = (255, 255, 255), (60, 60, 68), (228, 228, 234), (40, 40, 48)
RAW, SMOOTH, BOUNDARY, BAD = (150, 180, 225), (25, 80, 170), (170, 170, 180), (210, 50, 45)
LEFT, RIGHT, TOP, BOTTOM = 78, 24, 52, 56


def render_loss_plot(
    losses: Sequence[float],
    *,
    boundaries: Sequence[int] = (),
    title: str = "",
    size: tuple[int, int] = (960, 480),
) -> Image.Image:
    """The plot of ``losses`` (step 1 … n) as an RGB picture of ``size``."""
    width, height = size
    if width < 320 or height < 200:
        raise ValueError(f"a loss plot of {width}×{height} px: use at least 320×200")
    img = Image.new("RGB", size, BG)
    draw = ImageDraw.Draw(img)
    small, big = _font(13), _font(17, bold=True)
    finite = [v for v in losses if math.isfinite(v)]
    steps = len(losses)
    mean = f", mean {sum(finite) / len(finite):.4f}" if finite else ""
    draw.text((LEFT, 16), f"{title or 'training loss'} · {steps} steps{mean}", font=big, fill=TEXT)
    box = (LEFT, TOP, width - RIGHT, height - BOTTOM)
    if not finite:
        draw.rectangle(box, outline=AXIS)
        draw.text((LEFT + 16, TOP + 16), "no finite loss recorded", font=small, fill=BAD)
        return img
    low, high = _range(finite)

    def x_of(step: float) -> float:  # step 1 at the left edge, step n at the right
        return box[0] + (box[2] - box[0]) * ((step - 1) / max(1, steps - 1))

    def y_of(value: float) -> float:
        return box[3] - (box[3] - box[1]) * ((value - low) / (high - low))

    for k in range(5):
        value = low + (high - low) * k / 4
        y = y_of(value)
        draw.line((box[0], y, box[2], y), fill=GRID)
        label = f"{value:.4g}"
        draw.text(
            (box[0] - 8 - draw.textlength(label, font=small), y - 8), label, font=small, fill=TEXT
        )
    for step in _ticks(steps):
        x = x_of(step)
        draw.line((x, box[3], x, box[3] + 5), fill=AXIS)
        label = str(step)
        draw.text(
            (x - draw.textlength(label, font=small) / 2, box[3] + 8), label, font=small, fill=TEXT
        )
    draw.text((box[2] - 40, height - 22), "step", font=small, fill=TEXT)
    for end in boundaries:
        if 1 <= end < steps:
            x = x_of(end + 0.5)
            for y in range(box[1], box[3], 10):
                draw.line((x, y, x, min(y + 5, box[3])), fill=BOUNDARY)
    _polyline(draw, [(x_of(i + 1), y_of(v)) for i, v in enumerate(losses)], RAW, 1)
    window = max(1, steps // 20)
    _polyline(draw, [(x_of(i + 1), y_of(v)) for i, v in _moving(losses, window)], SMOOTH, 3)
    for i, value in enumerate(losses):
        if not math.isfinite(value):
            x = x_of(i + 1)
            draw.line((x, box[3] - 10, x, box[3]), fill=BAD, width=3)
    draw.rectangle(box, outline=AXIS)
    return img


def write_loss_plot(
    losses: Sequence[float],
    path: Path,
    *,
    boundaries: Sequence[int] = (),
    title: str = "",
    size: tuple[int, int] = (960, 480),
) -> Path:
    """Draw the plot and write it to ``path`` as PNG (atomically; folders are made)."""
    img = render_loss_plot(losses, boundaries=boundaries, title=title, size=size)
    try:
        return atomic_write(path, lambda fh: img.save(fh, "PNG"), doing="write the loss plot")
    finally:
        img.close()


def _range(values: Sequence[float]) -> tuple[float, float]:
    low, high = min(values), max(values)
    pad = (high - low) * 0.05 or max(abs(high) * 0.05, 1e-6)
    return low - pad, high + pad


def _ticks(steps: int) -> list[int]:
    """About six round step numbers from 1 to ``steps``."""
    if steps <= 1:
        return [1]
    raw = (steps - 1) / 6
    magnitude = 10 ** math.floor(math.log10(raw)) if raw >= 1 else 1
    step = next((m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw), 10 * magnitude)
    ticks = list(range(step, steps + 1, int(step)))
    return [1, *ticks] if not ticks or ticks[0] != 1 else ticks


def _moving(values: Sequence[float], window: int) -> list[tuple[int, float]]:
    """(index, trailing mean of up to ``window`` finite values) for each finite value."""
    out: list[tuple[int, float]] = []
    recent: list[float] = []
    for i, value in enumerate(values):
        if not math.isfinite(value):
            continue
        recent = [*recent[-(window - 1) :], value] if window > 1 else [value]
        out.append((i, sum(recent) / len(recent)))
    return out


def _polyline(
    draw: ImageDraw.ImageDraw,
    points: list[tuple[float, float]],
    colour: tuple[int, int, int],
    width: int,
) -> None:
    finite = [(x, y) for x, y in points if math.isfinite(y)]
    if len(finite) == 1:
        x, y = finite[0]
        draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=colour)
    elif finite:
        draw.line(finite, fill=colour, width=width, joint="curve")
