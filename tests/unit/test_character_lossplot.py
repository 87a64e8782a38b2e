"""The loss plot: a picture of the losses with the chunk boundaries, written beside the LoRA."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from PIL import Image

from charpack.character.lossplot import (
    BAD,
    BOUNDARY,
    LEFT,
    RIGHT,
    SMOOTH,
    render_loss_plot,
    write_loss_plot,
)


def _losses(n: int) -> list[float]:
    return [0.2 * math.exp(-i / 80) + 0.02 * math.sin(i * 1.7) + 0.05 for i in range(n)]


def _colours(img: Image.Image) -> set[tuple[int, int, int]]:
    return {colour for _count, colour in img.getcolors(img.width * img.height) or []}


def _column(img: Image.Image, x: int) -> set[tuple[int, int, int]]:
    return {img.getpixel((x, y)) for y in range(60, img.height - 60)}  # type: ignore[misc]


def test_the_plot_shows_the_smoothed_loss_and_each_chunk_boundary(tmp_path: Path) -> None:
    losses = _losses(300)
    img = render_loss_plot(losses, boundaries=[50, 100, 150, 200, 300], title="ava v1")
    assert img.size == (960, 480)
    pixels = _colours(img)
    assert SMOOTH in pixels
    span = img.width - LEFT - RIGHT
    for end in (50, 100, 150, 200):
        x = round(LEFT + span * (end - 0.5) / 299)
        assert BOUNDARY in _column(img, x - 1) | _column(img, x) | _column(img, x + 1), end
    path = write_loss_plot(losses, tmp_path / "loras" / "ava-v1.loss.png", title="ava v1")
    with Image.open(path) as saved:
        assert saved.format == "PNG" and saved.size == (960, 480)


def test_a_non_finite_loss_is_marked_and_does_not_break_the_line() -> None:
    losses = _losses(40)
    losses[20] = float("nan")
    img = render_loss_plot(losses)
    assert BAD in _colours(img) and SMOOTH in _colours(img)


@pytest.mark.parametrize(
    ("losses", "mark"),
    [
        ([], BAD),  # "no finite loss recorded"
        ([0.1], SMOOTH),
        ([float("inf")], BAD),
        ([0.1, 0.1, 0.1], SMOOTH),
    ],
)
def test_short_or_flat_records_still_draw(losses: list[float], mark: tuple[int, ...]) -> None:
    img = render_loss_plot(losses, size=(400, 240))
    assert img.size == (400, 240)
    assert mark in _colours(img)  # the line, or the note that there is none: not a blank frame


def test_a_too_small_picture_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 320"):
        render_loss_plot([0.1], size=(100, 100))
