"""The contact sheet labels an image with no face "no face", never as a 0.00 score."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from charpack.folder.contact_sheet import (
    BAD,
    CARD,
    GAP,
    MARGIN,
    SheetStyle,
    collect_tiles,
    write_contact_sheet,
)
from charpack.folder.manifest import Manifest
from tests.support.pack_folders import JobSpec, Shot, build


def near(pixel: tuple[int, ...], colour: tuple[int, int, int], tol: int = 40) -> bool:
    return all(abs(a - b) <= tol for a, b in zip(pixel, colour, strict=True))


def test_a_tile_without_a_face_is_labelled_no_face(tmp_path: Path) -> None:
    build(
        tmp_path,
        [
            JobSpec("gym", 1, [Shot(7, None, "below_threshold")], status="below_threshold"),
            JobSpec("gym", 2, [Shot(8, 0.31)]),
        ],
        threshold=0.2,
    )
    manifest = Manifest.load(tmp_path)
    entry = manifest.job("gym/001")
    entry["attempts"][0]["face"] = False  # as the runner records an image with no face
    manifest.put(entry)
    manifest.save()
    faceless, scored = collect_tiles(Manifest.load(tmp_path))
    assert (faceless.kind, faceless.score, faceless.no_face) == ("rejected", None, True)
    assert (scored.kind, scored.score, scored.no_face) == ("image", 0.31, False)

    style = SheetStyle(columns=4, thumb_width=200)  # wide enough for a one-line header
    with Image.open(write_contact_sheet(tmp_path, style=style)) as sheet:
        rgb = sheet.convert("RGB")
    label_y = 116 + 40 + round(200 * 304 / 208) + 23  # the middle of the score pill
    right = [MARGIN + col * (200 + GAP) + 200 for col in (0, 1)]
    # A pill on both; the "no face" one is red and reaches further left than a score's.
    assert near(rgb.getpixel((right[0] - 11, label_y)), BAD)
    assert near(rgb.getpixel((right[0] - 72, label_y)), BAD)
    assert near(rgb.getpixel((right[1] - 72, label_y)), CARD)
