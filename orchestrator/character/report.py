"""The 5-shot identity test's before/after report, and the labelled picture sheets of this package.

Owns comparing two pack folders of the same test pack — ``before`` (without the new LoRA) and
``after`` (with it) — by identity score per shot type (the scene name) and overall: count,
mean, p10 and min (:func:`charpack.folder.report.score_stats`, so the figures match
``charpack report``), written as ``report.md``, ``report.json`` and a side-by-side
``contact.jpg`` (a row per shot type: before on the left, after on the right). An image in which the
identity node found no face scores 0 (the likeness failed); jobs that failed or never ran are
counted as ``missing`` and left out of the figures. It reads manifests and images only.

:func:`write_sheet` draws any list of :class:`~charpack.folder.contact_sheet.Tile` with the
pack contact sheet's painter (one look everywhere); :mod:`.dataset` uses it too.

Public API::

    compare(before: Path, after: Path) -> IdentityReport
    write_report(report: IdentityReport, dest: Path) -> ReportFiles   # report.md/.json, contact.jpg
    identity_rows(folder: Path) -> dict[str, ShotScores]             # one pack folder's scores
    write_sheet(tiles, path, *, title, character="", threshold=None, style=None,
                summary="") -> Path
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from ..folder.contact_sheet import SheetStyle, Tile, _Painter, _save, paginate
from ..folder.integrity import atomic_write
from ..folder.manifest import JobEntry, Manifest
from ..folder.report import Header, inside, read_header, score_stats

FIGURES = ("mean", "p10", "min")


@dataclass
class ShotScores:
    """The identity scores of one shot type (scene) in one pack folder."""

    scene: str
    scores: list[float] = field(default_factory=list)  # no-face images count as 0.0
    no_face: int = 0
    missing: int = 0  # failed or unfinished jobs
    tiles: list[Tile] = field(default_factory=list)

    def stats(self) -> dict[str, float] | None:
        return score_stats(self.scores)


@dataclass(frozen=True)
class IdentityReport:
    """Before/after identity figures of a test pack, per shot type and overall."""

    before: Path
    after: Path
    threshold: float | None
    shots: list[str]  # scene names, in the test pack's order
    rows: dict[str, tuple[ShotScores, ShotScores]]  # scene -> (before, after)
    overall: tuple[ShotScores, ShotScores]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": 1,
            "before": str(self.before),
            "after": str(self.after),
            "threshold": self.threshold,
            "shots": [{"scene": s, **_pair_json(*self.rows[s])} for s in self.shots],
            "overall": _pair_json(*self.overall),
            "no_face_scores_as": 0.0,
        }


@dataclass(frozen=True)
class ReportFiles:
    markdown: Path
    json: Path
    contact: Path


def identity_rows(folder: Path) -> dict[str, ShotScores]:
    """Per scene of the pack folder ``folder``: its identity scores and tiles, in job order."""
    manifest = Manifest.load(folder)
    rows: dict[str, ShotScores] = {}
    for entry in manifest:
        scene = str(entry.get("scene", "?"))
        row = rows.setdefault(scene, ShotScores(scene))
        score, image = _score(entry), entry.get("image")
        if image is None or entry.get("status") not in ("done", "below_threshold"):
            row.missing += 1
            continue
        if score is None and not _no_face(entry):
            row.missing += 1  # an image nobody scored (identity off): nothing to compare
            continue
        row.scores.append(0.0 if score is None else score)
        row.no_face += score is None
        row.tiles.append(
            Tile(
                "image" if entry.get("status") == "done" else "rejected",
                scene,
                int(entry.get("index", 0)),
                entry.get("seed"),
                score,
                inside(folder, str(image)),
                no_face=score is None,
            )
        )
    return rows


def compare(before: Path, after: Path) -> IdentityReport:
    """The before/after report of two pack folders of the same test pack."""
    rows_b, rows_a = identity_rows(before), identity_rows(after)
    shots = list(rows_b) + [s for s in rows_a if s not in rows_b]
    rows = {s: (rows_b.get(s) or ShotScores(s), rows_a.get(s) or ShotScores(s)) for s in shots}
    overall = (_total([b for b, _ in rows.values()]), _total([a for _, a in rows.values()]))
    threshold = read_header(Manifest.load(after)).threshold
    return IdentityReport(before, after, threshold, shots, rows, overall)


def write_report(report: IdentityReport, dest: Path) -> ReportFiles:
    """Write ``report.md``, ``report.json`` and ``contact.jpg`` into ``dest`` (made if needed)."""
    dest.mkdir(parents=True, exist_ok=True)
    md = dest / "report.md"
    js = dest / "report.json"
    text = render_markdown(report)
    data = json.dumps(report.to_json(), indent=2, sort_keys=True) + "\n"
    atomic_write(md, lambda fh: fh.write(text.encode()), doing="write report.md", root=dest)
    atomic_write(js, lambda fh: fh.write(data.encode()), doing="write report.json", root=dest)
    # One row per shot type: its before tiles on the left, its after tiles on the right.
    tiles = [tile for scene in report.shots for row in report.rows[scene] for tile in row.tiles]
    contact = write_sheet(
        tiles,
        dest / "contact.jpg",
        title=f"identity test {report.after.parent.name}".strip(),
        summary="left: before, right: after the LoRA",
        threshold=report.threshold,
        style=SheetStyle(columns=max(2, min(12, 2 * _widest(report)))),
    )
    return ReportFiles(md, js, contact)


def render_markdown(report: IdentityReport) -> str:
    """The report as a markdown page: one table row per shot type, then overall."""
    lines = [
        "# Identity test: before / after the LoRA",
        "",
        f"- before: `{report.before}` (without the new LoRA)",
        f"- after: `{report.after}` (with it)",
        f"- identity threshold: {_num(report.threshold)}; an image with no face found scores 0",
        "",
        "| shot | images | mean before | mean after | Δ mean | p10 before | p10 after "
        "| min before | min after | no face (b/a) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, (b, a) in [*((s, report.rows[s]) for s in report.shots), ("overall", report.overall)]:
        sb, sa = b.stats() or {}, a.stats() or {}
        delta = sa["mean"] - sb["mean"] if sb and sa else None
        label = f"**{name}**" if name == "overall" else name
        lines.append(
            f"| {label} | {len(b.scores)}/{len(a.scores)} | {_num(sb.get('mean'))} "
            f"| {_num(sa.get('mean'))} | {_num(delta, signed=True)} | {_num(sb.get('p10'))} "
            f"| {_num(sa.get('p10'))} | {_num(sb.get('min'))} | {_num(sa.get('min'))} "
            f"| {b.no_face}/{a.no_face} |"
        )
    missing = report.overall[0].missing + report.overall[1].missing
    if missing:
        lines += ["", f"{missing} job(s) failed or did not run and are not in the figures."]
    return "\n".join(lines) + "\n"


def write_sheet(
    tiles: Sequence[Tile],
    path: Path,
    *,
    title: str,
    character: str = "",
    threshold: float | None = None,
    style: SheetStyle | None = None,
    summary: str = "",
) -> Path:
    """Draw ``tiles`` (a band per distinct ``tile.scene``) as one JPEG page at ``path``."""
    style = style or SheetStyle()
    rows = [
        row
        for page in paginate(list(tiles), columns=style.columns, rows_per_page=10**6)
        for row in page
    ]
    header = Header(title, character, time.time(), None, threshold)
    summary = summary or f"{len(tiles)} images"
    painter = _Painter(style, round(style.thumb_width * _aspect(tiles)), header, summary, map)
    canvas = painter.page(rows, 1, 1)
    try:
        return _save(canvas, path, style.quality)
    finally:
        canvas.close()


def _aspect(tiles: Sequence[Tile]) -> float:
    for tile in tiles:
        if tile.path is not None and tile.path.is_file():
            try:
                with Image.open(tile.path) as img:
                    return float(min(2.0, max(0.5, img.height / img.width)))
            except (OSError, UnidentifiedImageError):
                continue
    return 1216 / 832


def _widest(report: IdentityReport) -> int:
    return max((len(r.tiles) for pair in report.rows.values() for r in pair), default=1)


def _total(rows: list[ShotScores]) -> ShotScores:
    total = ShotScores("overall")
    for row in rows:
        total.scores += row.scores
        total.no_face += row.no_face
        total.missing += row.missing
    return total


def _pair_json(before: ShotScores, after: ShotScores) -> dict[str, Any]:
    sb, sa = before.stats(), after.stats()
    return {
        "before": _side_json(before),
        "after": _side_json(after),
        "delta": {k: round(sa[k] - sb[k], 4) for k in FIGURES} if sb and sa else None,
    }


def _side_json(row: ShotScores) -> dict[str, Any]:
    stats = row.stats()
    return {
        "images": len(row.scores),
        "no_face": row.no_face,
        "missing": row.missing,
        **{k: (round(stats[k], 4) if stats else None) for k in FIGURES},
    }


def _score(entry: JobEntry) -> float | None:
    value = entry.get("score")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _no_face(entry: JobEntry) -> bool:
    return any(a.get("face") is False for a in entry.get("attempts") or [])


def _num(value: float | None, *, signed: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:+.3f}" if signed else f"{value:.3f}"
