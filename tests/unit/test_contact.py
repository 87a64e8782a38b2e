"""The contact sheet: labelled thumbnails, placeholders for failures, pages, flat memory."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from charpack.cli import pack as cli_pack
from charpack.folder.contact_sheet import (
    BAD,
    CARD,
    GAP,
    GOOD,
    MARGIN,
    SHEET,
    SheetStyle,
    collect_tiles,
    decode_threads,
    write_contact_sheet,
    write_contact_sheets,
)
from charpack.folder.manifest import Manifest
from tests.support.pack_folders import JobSpec, Shot, build, small_pack

REPO = Path(__file__).resolve().parents[2]
app = typer.Typer()
app.command("contact-sheet")(cli_pack.contact_sheet)
app.command()(cli_pack.report)
runner = CliRunner()


def near(pixel: tuple[int, ...], colour: tuple[int, int, int], tol: int = 40) -> bool:
    return all(abs(a - b) <= tol for a, b in zip(pixel, colour, strict=True))


def test_tiles_follow_the_manifest_with_rejected_attempts_on_request(tmp_path: Path) -> None:
    manifest = small_pack(tmp_path)
    plain = [(t.kind, t.scene, t.index, t.seed, t.score) for t in collect_tiles(manifest)]
    assert plain == [
        ("image", "cafe-terrace", 1, 101, 0.62),
        ("image", "cafe-terrace", 2, 203, 0.58),
        ("image", "cafe-terrace", 3, 303, 0.71),
        ("failed", "city-walk", 1, 404, None),
        ("image", "city-walk", 2, 505, 0.49),
        ("image", "city-walk", 3, 606, 0.55),
        ("pending", "city-walk", 4, 4, None),
    ]
    tiles = collect_tiles(manifest, include_rejected=True)
    assert [(t.kind, t.seed, t.score) for t in tiles[1:3]] == [
        ("rejected", 202, 0.31),
        ("image", 203, 0.58),
    ]
    assert "CUDA out of memory" in tiles[4].note


def test_a_job_below_the_threshold_shows_its_kept_image_as_rejected(tmp_path: Path) -> None:
    shots = [Shot(7, 0.31, "below_threshold"), Shot(8, 0.40, "below_threshold")]
    manifest = build(tmp_path, [JobSpec("gym", 1, shots, status="below_threshold")])
    (tile,) = collect_tiles(manifest)
    assert (tile.kind, tile.seed, tile.score) == ("rejected", 8, 0.40)  # the best attempt
    assert tile.path == tmp_path / "rejected" / "gym" / "gym_001_8.png"
    every = collect_tiles(manifest, include_rejected=True)
    assert [(t.kind, t.seed) for t in every] == [("rejected", 7), ("rejected", 8)]


def test_sheet_is_a_jpeg_grid_with_scores_coloured_against_the_threshold(tmp_path: Path) -> None:
    small_pack(tmp_path)
    style = SheetStyle(columns=4, thumb_width=200)
    path = write_contact_sheet(tmp_path, include_rejected=True, style=style)
    assert path == tmp_path / SHEET
    with Image.open(path) as sheet:
        assert sheet.format == "JPEG" and sheet.width == 2 * MARGIN + 4 * 200 + 3 * GAP
        rgb = sheet.convert("RGB")
    thumb_h = round(200 * 304 / 208)  # the pack's aspect, read from its first image
    first_row = 116 + 40  # header, then the scene band
    label_y = first_row + thumb_h + 23  # the middle of the score pill

    def tile_x(col: int) -> int:
        return MARGIN + col * (200 + GAP)

    pill = [rgb.getpixel((tile_x(c) + 200 - 11, label_y)) for c in range(4)]  # right padding
    assert near(pill[0], GOOD) and near(pill[1], BAD)  # 0.62 passes, the rejected 0.31 not
    assert near(pill[2], GOOD) and near(pill[3], GOOD)
    assert near(rgb.getpixel((tile_x(1) + 1, first_row + 60)), BAD)  # rejected: red frame
    # the thumbnail itself: the picture's skin-coloured face in the middle of the tile
    assert near(rgb.getpixel((tile_x(0) + 100, first_row + round(thumb_h * 0.35))), (222, 184, 150))


def test_failures_get_a_placeholder_and_missing_files_do_not_stop_the_sheet(
    tmp_path: Path,
) -> None:
    small_pack(tmp_path)
    (tmp_path / "city-walk" / "city-walk_002_505.png").unlink()
    (tmp_path / "city-walk" / "city-walk_003_606.png").write_bytes(b"not an image")
    style = SheetStyle(columns=4, thumb_width=200)
    path = write_contact_sheet(tmp_path, style=style)
    thumb_h = round(200 * 304 / 208)
    second_row = 116 + 40 + (thumb_h + 46 + GAP) + 40
    with Image.open(path) as sheet:
        rgb = sheet.convert("RGB")
    for col in range(3):  # failed job, missing file, unreadable file: red framed placeholders
        x = MARGIN + col * (200 + GAP)
        assert near(rgb.getpixel((x + 9, second_row + 60)), BAD, tol=60), col
        assert near(rgb.getpixel((x + 100, second_row + thumb_h - 30)), CARD, tol=12), col
    kinds = [t.kind for t in collect_tiles(Manifest.load(tmp_path))]
    assert kinds[4:6] == ["missing", "image"]  # unreadable is found while drawing


def test_big_packs_get_pages_and_a_smaller_sheet_removes_old_pages(tmp_path: Path) -> None:
    jobs = [JobSpec(f"scene-{s}", i, [Shot(s * 100 + i, 0.6)]) for s in range(3) for i in (1, 2, 3)]
    build(tmp_path, jobs, size=(64, 96))
    style = SheetStyle(columns=2, thumb_width=96, rows_per_page=2)
    pages = write_contact_sheets(tmp_path, style=style)
    # each scene of 3 images takes 2 rows (scenes start new rows): 6 rows, 3 pages
    assert pages == [
        tmp_path / SHEET,
        tmp_path / "contact-sheet-2.jpg",
        tmp_path / "contact-sheet-3.jpg",
    ]
    again = write_contact_sheets(tmp_path, style=SheetStyle(columns=3, thumb_width=96))
    assert again == [tmp_path / SHEET]
    assert sorted(p.name for p in tmp_path.glob("contact-sheet*.jpg")) == [SHEET]


def test_cli_writes_the_sheet(tmp_path: Path) -> None:
    small_pack(tmp_path)
    out = runner.invoke(app, ["contact-sheet", str(tmp_path), "--rejected", "--columns", "3"])
    assert out.exit_code == 0, out.output
    assert str(tmp_path / SHEET) in out.output and "1 page(s)" in out.output
    bad = runner.invoke(app, ["contact-sheet", str(tmp_path), "--columns", "0"])
    assert bad.exit_code == 2 and "--columns" in bad.output


_PEAK = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from charpack.folder.contact_sheet import SheetStyle, write_contact_sheets
    write_contact_sheets(Path(sys.argv[1]), style=SheetStyle(columns=6, rows_per_page=2))
    # VmHWM starts afresh at exec; ru_maxrss would carry the parent's size over from fork.
    status = Path("/proc/self/status").read_text()
    print(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))
    """
)


def _peak_kib(folder: Path) -> int:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", _PEAK, str(folder)], capture_output=True, text=True, env=env
    )
    assert out.returncode == 0, out.stderr
    return int(out.stdout.strip())


def _pack_of_one_picture(
    tmp_path: Path, folder: str, count: int, size: tuple[int, int], *, noise: bool = False
) -> Path:
    """A pack of ``count`` jobs whose images are one ``size`` PNG hard-linked under each name
    (a gradient, or with ``noise`` random pixels: a photograph's decode cost and more)."""
    jobs = [JobSpec("look", i, [Shot(i, 0.6)]) for i in range(1, count + 1)]
    build(tmp_path / folder, jobs, size=(16, 24))
    big = tmp_path / f"big-{size[0]}x{size[1]}.png"
    if not big.exists():
        if noise:
            img = Image.frombytes("RGB", size, os.urandom(3 * size[0] * size[1]))
        else:
            img = Image.radial_gradient("L").convert("RGB").resize(size)
        img.save(big, compress_level=1)
    for png in (tmp_path / folder).glob("look/*.png"):
        png.unlink()
        os.link(big, png)
    return tmp_path / folder


@pytest.mark.skipif(sys.platform != "linux", reason="reads the peak from /proc")
def test_memory_stays_flat_however_many_big_images(tmp_path: Path) -> None:
    # One 1664x2432 PNG (16 MB decoded) under every job's name: 12 images vs 48.
    small = _peak_kib(_pack_of_one_picture(tmp_path, "small", 12, (1664, 2432)))
    large = _peak_kib(_pack_of_one_picture(tmp_path, "large", 48, (1664, 2432)))
    # Holding the decoded images would add ~440 MB; one at a time adds nothing measurable.
    assert large - small < 40 * 1024, (small, large)


@pytest.mark.skipif(sys.platform != "linux", reason="reads the peak from /proc")
def test_final_4k_images_decode_one_at_a_time(tmp_path: Path) -> None:
    # A 3328x4864 PNG decodes to 65 MB: charpack run writes the sheet after a pack in the same
    # process, which must stay under 200 MB, so these never decode two at once. Small images
    # still decode on several threads (as many as the cores, up to four).
    assert decode_threads((3328, 4864), cpus=16) == 1
    assert decode_threads((832, 1216), cpus=16) == 4 and decode_threads((832, 1216), cpus=2) == 2
    peak = _peak_kib(_pack_of_one_picture(tmp_path, "final", 12, (3328, 4864), noise=True))
    # One decode (65 MB) + a page canvas + the interpreter: ~100 MB; two at once: ~165 MB.
    assert peak < 135 * 1024, f"peak {peak // 1024} MB"
