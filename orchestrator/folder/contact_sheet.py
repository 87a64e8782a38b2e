"""The contact sheet: labelled thumbnails of a pack folder, as JPEG pages.

Owns turning a pack folder's manifest into ``contact-sheet.jpg`` (and ``contact-sheet-2.jpg``
… when a pack needs more than one page): a header with the pack name, character, date and
counts, then each scene as a titled band of thumbnails labelled with scene, index, seed and
identity score (green at or above the pack's threshold, red below; "no face" where the identity
node found no face in the image, which has no score). Failed and unfinished jobs
get a placeholder tile with their error; rejected attempts can be shown, marked as such.

Memory stays flat however large the pack: only one row of images is open at a time, each
shrunk while decoding (JPEG ``draft``, ``reduce`` for PNG through ``thumbnail``'s reducing gap),
and a page holds at most ``rows_per_page`` rows, so the canvas is bounded too. A PNG cannot be
decoded at a reduced size, so each decode holds the whole picture (4 bytes a pixel in Pillow:
65 MB for a 3328x4864 final image); images decode on as many threads as ``DECODE_BUDGET`` holds,
which is one for final 4K images and up to four for small ones. It reads the manifest and the
images and writes nothing but the sheet's pages.
"""

from __future__ import annotations

import logging
import os
import textwrap
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from PIL import Image, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError

from .integrity import atomic_write
from .manifest import Manifest
from .report import Header, inside, read_header

log = logging.getLogger(__name__)

SHEET = "contact-sheet.jpg"
TileKind = Literal["image", "rejected", "failed", "pending", "missing"]
Colour = tuple[int, int, int]

# Colours (a dark lightbox, so photographs stand out) and sizes in pixels.
BG, CARD, TEXT, MUTED = (24, 24, 27), (39, 39, 44), (236, 236, 240), (150, 150, 160)
GOOD, BAD, NEUTRAL = (46, 160, 67), (218, 54, 51), (88, 96, 105)
GAP, MARGIN, LABEL_H, BAND_H, HEADER_H = 14, 28, 46, 40, 116
# Decoded pixels the thumbnail threads may hold at once; one decode always runs (on the calling
# thread). Measured on a 200-image pack of 3328x4864 PNGs, the whole process's peak: 117 MB on
# the calling thread, 158 MB on one worker thread, 224 MB on two.
DECODE_BUDGET = 96 * 1024 * 1024


@dataclass(frozen=True)
class Tile:
    """One cell of the sheet: an image (accepted or rejected) or a placeholder."""

    kind: TileKind
    scene: str
    index: int
    seed: int | None
    score: float | None
    path: Path | None = None
    note: str = ""
    no_face: bool = False  # the identity node found no face (labelled so, not as a score)


@dataclass(frozen=True)
class SheetStyle:
    """Layout of the sheet: thumbnails per row, their width in pixels, rows per page."""

    columns: int = 6
    thumb_width: int = 240
    rows_per_page: int = 8
    quality: int = 85  # JPEG

    def __post_init__(self) -> None:
        if not (1 <= self.columns <= 20 and 64 <= self.thumb_width <= 1024):
            raise ValueError("contact sheet: columns must be 1-20 and thumb_width 64-1024 px")
        if self.rows_per_page < 1 or not 30 <= self.quality <= 95:
            raise ValueError("contact sheet: rows_per_page must be ≥ 1 and quality 30-95")

    @property
    def width(self) -> int:
        return 2 * MARGIN + self.columns * self.thumb_width + (self.columns - 1) * GAP


def write_contact_sheet(
    folder: Path,
    *,
    include_rejected: bool = False,
    style: SheetStyle | None = None,
    manifest: Manifest | None = None,
) -> Path:
    """Write the contact sheet of the pack folder ``folder``; return the first page's path.

    A pack with more rows than one page holds gets ``contact-sheet-2.jpg`` and so on too
    (:func:`write_contact_sheets` returns them all, and says what ``manifest`` is).
    """
    return write_contact_sheets(
        folder, include_rejected=include_rejected, style=style, manifest=manifest
    )[0]


def write_contact_sheets(
    folder: Path,
    *,
    include_rejected: bool = False,
    style: SheetStyle | None = None,
    manifest: Manifest | None = None,
) -> list[Path]:
    """Write every page of ``folder``'s contact sheet; return their paths in page order.

    ``manifest``: the folder's manifest already in memory (a run hands in its own, saved),
    so it is not read back from disk; None reads ``folder/manifest.json``.
    """
    style = style or SheetStyle()
    manifest = Manifest.load(folder) if manifest is None else manifest
    header = read_header(manifest)
    tiles = collect_tiles(manifest, include_rejected=include_rejected)
    pages = paginate(tiles, columns=style.columns, rows_per_page=style.rows_per_page)
    size = _first_size(tiles)
    aspect = 1216 / 832 if size is None else min(2.0, max(0.5, size[1] / size[0]))
    thumb_h = round(style.thumb_width * aspect)
    written = []
    threads = decode_threads(size)
    # One decode at a time runs on this thread: a worker thread's malloc arena would keep the
    # freed pictures' pages (~40 MB more at the peak for 4K images).
    with ThreadPoolExecutor(max_workers=threads) if threads > 1 else nullcontext() as pool:
        painter = _Painter(style, thumb_h, header, _summary(tiles), pool.map if pool else map)
        for number, rows in enumerate(pages, start=1):
            name = SHEET if number == 1 else f"contact-sheet-{number}.jpg"
            canvas = painter.page(rows, number, len(pages))
            written.append(_save(canvas, folder / name, style.quality))
            canvas.close()
    for stale in folder.glob("contact-sheet-*.jpg"):  # pages left from a bigger earlier sheet
        if stale not in written:
            stale.unlink()
    return written


def collect_tiles(manifest: Manifest, *, include_rejected: bool = False) -> list[Tile]:
    """The sheet's tiles in manifest order; rejected attempts before the job's final tile.

    A job that ended below the threshold shows the image it kept (its best attempt), marked as
    rejected; ``include_rejected`` shows every attempt below the threshold instead.
    """
    folder, tiles = manifest.folder, []
    for entry in manifest:
        scene, index = str(entry.get("scene", "?")), int(entry.get("index", 0))
        status, attempts = entry.get("status", "pending"), entry.get("attempts") or []
        shown: list[tuple[str, Any, Any]] = []  # (path, seed, score) of images to show
        if include_rejected:
            shown += [
                (a["files"][0]["path"], a.get("seed"), a.get("score"))
                for a in attempts
                if a.get("status") == "below_threshold" and a.get("files")
            ]
        elif status == "below_threshold" and entry.get("image"):
            shown.append((str(entry["image"]), entry.get("seed"), entry.get("score")))
        if status == "done" and entry.get("image"):
            shown.append((str(entry["image"]), entry.get("seed"), entry.get("score")))
        faceless = {
            a["files"][0]["path"] for a in attempts if a.get("face") is False and a.get("files")
        }
        for number, (rel, seed, score) in enumerate(shown, start=1):
            path = inside(folder, rel)
            accepted = status == "done" and number == len(shown)
            kind: TileKind = ("image" if accepted else "rejected") if path.is_file() else "missing"
            note = "" if path.is_file() else f"file missing: {rel}"
            tiles.append(Tile(kind, scene, index, seed, score, path, note, rel in faceless))
        if status == "failed":
            error = entry.get("error") or (attempts[-1].get("error") if attempts else None)
            tiles.append(Tile("failed", scene, index, entry.get("seed"), None, None, str(error)))
        elif status in ("pending", "submitted"):
            note = "not run yet"
            tiles.append(Tile("pending", scene, index, entry.get("seed"), None, None, note))
    return tiles


def paginate(tiles: list[Tile], *, columns: int, rows_per_page: int) -> list[list[list[Tile]]]:
    """Tiles grouped into pages of rows; a scene always starts a new row."""
    rows: list[list[Tile]] = []
    for tile in tiles:
        if rows and rows[-1][0].scene == tile.scene and len(rows[-1]) < columns:
            rows[-1].append(tile)
        else:
            rows.append([tile])
    pages = [rows[i : i + rows_per_page] for i in range(0, len(rows), rows_per_page)]
    return pages or [[]]


Font = ImageFont.FreeTypeFont | ImageFont.ImageFont
# map() or a thread pool's map: loads a row's thumbnails.
Mapper = Callable[[Callable[[Tile], Image.Image | None], Iterable[Tile]], Iterable[Any]]


def _font(size: int, *, bold: bool = False) -> Font:
    # DejaVu covers the dashes and accents of error texts and scene names; Pillow's bundled
    # font is the fallback where it is not installed.
    for name in ("DejaVuSans-Bold.ttf", "DejaVuSans.ttf") if bold else ("DejaVuSans.ttf",):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default(size=size)


def _first_size(tiles: list[Tile]) -> tuple[int, int] | None:
    """Width and height of the first readable image (the pack's size), None if there is none."""
    for tile in tiles:
        if tile.path is not None and tile.kind in ("image", "rejected"):
            try:
                with Image.open(tile.path) as img:  # reads the header only
                    return img.width, img.height
            except (OSError, UnidentifiedImageError):
                continue
    return None


def decode_threads(size: tuple[int, int] | None, cpus: int | None = None) -> int:
    """Threads that decode thumbnails: as many whole decoded images as DECODE_BUDGET holds
    (Pillow keeps 4 bytes a pixel), at least one, at most four and the machine's core count."""
    cpus = cpus or os.cpu_count() or 1
    decoded = 4 * size[0] * size[1] if size else 4 * 832 * 1216
    return max(1, min(4, cpus, DECODE_BUDGET // decoded))


def _summary(tiles: list[Tile]) -> str:
    count = {k: sum(t.kind == k for t in tiles) for k in ("image", "rejected", "failed", "pending")}
    parts = [f"{count['image']} images"]
    return " · ".join(
        parts + [f"{count[k]} {k}" for k in ("rejected", "failed", "pending") if count[k]]
    )


class _Painter:
    """Draws pages; holds what every page shares (style, fonts, header text)."""

    def __init__(
        self, style: SheetStyle, thumb_h: int, header: Header, summary: str, mapper: Mapper
    ) -> None:
        self.style, self.w, self.h, self.map = style, style.thumb_width, thumb_h, mapper
        self.header, self.summary = header, summary
        self.title, self.sub, self.band = _font(32, bold=True), _font(16), _font(17, bold=True)
        self.label, self.small, self.stamp = _font(14, bold=True), _font(12), _font(18, bold=True)
        self.lines = self._header_lines()
        self.header_h = HEADER_H + 22 * (len(self.lines) - 1)

    def page(self, rows: list[list[Tile]], number: int, pages: int) -> Image.Image:
        starts = [i == 0 or rows[i - 1][0].scene != row[0].scene for i, row in enumerate(rows)]
        row_h = self.h + LABEL_H + GAP
        height = self.header_h + sum(starts) * BAND_H + len(rows) * row_h + MARGIN
        self.canvas = Image.new("RGB", (self.style.width, height), BG)
        self.draw = ImageDraw.Draw(self.canvas)
        self._header(number, pages)
        y = self.header_h
        for i, row in enumerate(rows):
            if starts[i]:
                more = " (continued)" if i == 0 and number > 1 else ""
                self.draw.text((MARGIN, y + 10), row[0].scene + more, font=self.band, fill=TEXT)
                self.draw.line(
                    (MARGIN, y + BAND_H - 6, self.style.width - MARGIN, y + BAND_H - 6), fill=CARD
                )
                y += BAND_H
            # Decoding dominates and Pillow releases the GIL while decoding: a row's images load
            # on the pool's threads (as many as the memory budget allows), one row at a time.
            thumbs = self.map(self._load, row)
            for col, (tile, thumb) in enumerate(zip(row, thumbs, strict=True)):
                self._tile(tile, MARGIN + col * (self.w + GAP), y, thumb)
            y += row_h
        return self.canvas

    def _header_lines(self) -> list[str]:
        """The line under the title, split in two where the sheet is too narrow for one."""
        head = self.header
        when = head.created or head.updated
        date = time.strftime("%Y-%m-%d %H:%M", time.localtime(when)) if when else "undated"
        who = [f"character {head.character}" if head.character else "", date]
        what = [self.summary]
        if head.threshold is not None:
            what.append(f"identity threshold {head.threshold:g}")
        one = " · ".join(b for b in who + what if b)
        if self.sub.getlength(one) <= self.style.width - 2 * MARGIN:
            return [one]
        return [" · ".join(b for b in who if b), " · ".join(what)]

    def _header(self, number: int, pages: int) -> None:
        draw = self.draw
        draw.text((MARGIN, 24), self.header.pack, font=self.title, fill=TEXT)
        for i, line in enumerate(self.lines):
            draw.text((MARGIN, 72 + 22 * i), line, font=self.sub, fill=MUTED)
        if pages > 1:
            label = f"page {number} of {pages}"
            width = draw.textlength(label, font=self.sub)
            draw.text((self.style.width - MARGIN - width, 36), label, font=self.sub, fill=MUTED)

    def _tile(self, tile: Tile, x: int, y: int, thumb: Image.Image | None) -> None:
        w, h, draw = self.w, self.h, self.draw
        draw.rectangle((x, y, x + w - 1, y + h + LABEL_H - 1), fill=CARD)
        drawn = thumb is not None
        if thumb is not None:
            at = (x + (w - thumb.width) // 2, y + (h - thumb.height) // 2)
            self.canvas.paste(thumb, at, thumb)
            thumb.close()
        if tile.kind == "rejected" and drawn:
            draw.rectangle((x, y, x + w - 1, y + h - 1), outline=BAD, width=3)
            width = draw.textlength("REJECTED", font=self.small)
            draw.rectangle((x + 3, y + 3, x + 16 + width, y + 24), fill=BAD)
            draw.text((x + 10, y + 6), "REJECTED", font=self.small, fill=TEXT)
        elif not drawn:
            kind = "missing" if tile.kind in ("image", "rejected") else tile.kind
            title = {"failed": "FAILED", "pending": "NOT RUN", "missing": "NO IMAGE"}[kind]
            note = tile.note or ("unreadable image file" if tile.path else "")
            self._placeholder(title, note, x, y, NEUTRAL if kind == "pending" else BAD)
        self._label(tile, x, y + h)

    def _load(self, tile: Tile) -> Image.Image | None:
        """The tile's thumbnail, or None for a placeholder (may run on the pool's threads)."""
        if tile.kind not in ("image", "rejected") or tile.path is None:
            return None
        box = (self.w, self.h)
        try:
            with Image.open(tile.path) as img:
                img.draft("RGB", box)  # JPEG: decode at 1/2, 1/4 or 1/8 scale directly
                img.thumbnail(box, Image.Resampling.LANCZOS, reducing_gap=2.0)  # PNG: reduce()
                thumb = ImageOps.contain(img.convert("RGBA"), box, Image.Resampling.LANCZOS)
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            log.warning("contact sheet: cannot read %s (%s)", tile.path, exc)
            return None
        return thumb

    def _placeholder(self, title: str, note: str, x: int, y: int, colour: Colour) -> None:
        draw, w = self.draw, self.w
        draw.rectangle((x + 8, y + 8, x + w - 9, y + self.h - 9), outline=colour, width=2)
        cx, cy = x + w // 2, y + self.h // 3
        if colour == NEUTRAL:  # waiting, not broken: an empty ring instead of a cross
            draw.ellipse((cx - 22, cy - 22, cx + 22, cy + 22), outline=colour, width=5)
        else:
            draw.line((cx - 22, cy - 22, cx + 22, cy + 22), fill=colour, width=5)
            draw.line((cx - 22, cy + 22, cx + 22, cy - 22), fill=colour, width=5)
        title_w = draw.textlength(title, font=self.stamp)
        draw.text((cx - title_w / 2, cy + 38), title, font=self.stamp, fill=colour)
        for i, line in enumerate(textwrap.wrap(note, max(8, int((w - 28) / 7.2)))[:6]):
            draw.text((x + 16, cy + 72 + i * 17), line, font=self.small, fill=MUTED)

    def _label(self, tile: Tile, x: int, y: int) -> None:
        draw, w = self.draw, self.w
        room = w - (96 if tile.no_face else 70)  # beside the score (or "no face") pill
        name = self._fit(f"#{tile.index:03d} {tile.scene}", self.label, room)  # index survives
        draw.text((x + 8, y + 6), name, font=self.label, fill=TEXT)
        seed = self._fit("seed –" if tile.seed is None else f"seed {tile.seed}", self.small, room)
        draw.text((x + 8, y + 26), seed, font=self.small, fill=MUTED)
        if tile.no_face:
            good, text = False, "no face"
        elif tile.score is None:
            return
        else:
            good = self.header.threshold is None or tile.score >= self.header.threshold
            text = f"{tile.score:.2f}"
        left = x + w - 24 - draw.textlength(text, font=self.label)
        draw.rounded_rectangle(
            (left, y + 10, x + w - 8, y + 36), radius=11, fill=GOOD if good else BAD
        )
        draw.text((left + 10, y + 14), text, font=self.label, fill=(255, 255, 255))

    def _fit(self, text: str, font: Font, room: float) -> str:
        if self.draw.textlength(text, font=font) <= room:
            return text
        while text and self.draw.textlength(text + "…", font=font) > room:
            text = text[:-1]
        return text + "…"


def _save(canvas: Image.Image, path: Path, quality: int) -> Path:
    # Never through a link planted in the pack folder: neither the page nor its temp file.
    return atomic_write(
        path,
        lambda fh: canvas.save(fh, "JPEG", quality=quality, optimize=True, progressive=True),
        doing="write the contact sheet",
        root=path.parent,
    )
