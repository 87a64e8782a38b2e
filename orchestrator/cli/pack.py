"""``charpack preflight | report | publish | contact-sheet``: the commands around a pack folder.

Short typer command functions over :mod:`charpack.check.preflight`, :mod:`charpack.folder.report`,
:mod:`charpack.folder.publish` and :mod:`charpack.folder.contact_sheet`; :mod:`charpack.cli.main`
registers them. Each prints readable tables, or with ``--json`` one JSON object for scripts. Library
errors (the CharpackError tree) are shown by :mod:`charpack.cli.output` (under ``--json`` as its
one error object) and exit with their code.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from ..check.preflight import PreflightReport, load_provisioning
from ..check.preflight import preflight as run_preflight
from ..comfy.auth import ServerConfig
from ..comfy.client import ComfyClient
from ..folder.contact_sheet import SheetStyle, write_contact_sheets
from ..folder.publish import publish as run_publish
from ..folder.report import PRICE_ENV, PackReport, build_report, price_from_env, score_stats
from ..pack.jobs import expand
from ..pack.packfile import load_pack
from .output import JsonOpt, console, err_console, print_json, reported

PackDir = Annotated[Path, typer.Argument(help="A pack folder made by `charpack run`.")]


def preflight(
    pack: Annotated[Path, typer.Argument(help="The pack file (YAML).")],
    server: Annotated[
        str, typer.Option("--server", "-s", help="ComfyUI URL (credentials from CHARPACK_TOKEN).")
    ],
    json_out: JsonOpt = False,
) -> None:
    """Check a server has every node type, model file and input range a pack needs."""
    with reported("json" if json_out else "text"):
        jobs = expand(load_pack(pack))
        with ComfyClient(config=ServerConfig.from_url(server), attempts=2) as client:
            report = run_preflight(jobs, client=client, provisioning=load_provisioning())
    if json_out:
        print_json(_preflight_json(report))
    else:
        _show_preflight(report, str(pack))
    raise typer.Exit(report.exit_code)


def _preflight_json(report: PreflightReport) -> dict[str, Any]:
    return {
        "ok": report.ok,
        "server": report.server,
        "comfyui_version": report.comfyui_version,
        "checked": report.checked,
        "findings": [f.to_json() for f in report.findings],
    }


def _show_preflight(report: PreflightReport, pack: str) -> None:
    version = f"ComfyUI {report.comfyui_version}" if report.comfyui_version else "no answer"
    console.print(f"preflight {escape(pack)} on {escape(report.server)} ({escape(version)})")
    # Errors first, as lines rather than a table: fixes are long and people copy them.
    for f in sorted(report.findings, key=lambda f: f.level != "error"):
        mark = "[red]✗[/]" if f.level == "error" else "[yellow]![/]"
        used = list(f.used_by)
        scenes = ", ".join(used[:3]) + (f" and {len(used) - 3} more" if len(used) > 3 else "")
        where = f"  [dim](scenes: {escape(scenes)})[/]" if scenes else ""
        console.print(f"{mark} {f.area:<11} [bold]{escape(f.location)}[/]{where}")
        console.print(f"    {escape(f.message)}", highlight=False)
        if f.fix:
            console.print(f"    [cyan]fix:[/] {escape(f.fix)}", highlight=False)
    counts = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in report.checked.items())
    if report.ok:
        console.print(f"[green]ready[/]: checked {counts}; {len(report.warnings)} warning(s)")
    elif report.reachable:
        console.print(f"[red]not ready[/]: {len(report.errors)} problem(s); checked {counts}")
    else:
        console.print("[red]not ready[/]: the server did not answer, nothing else was checked")


def report(
    pack_dir: PackDir,
    price_per_hour: Annotated[
        Optional[float],  # noqa: UP045 - typer needs Optional on 3.10
        typer.Option(
            "--price-per-hour",
            min=0,
            help=f"GPU price in $/hour (default: {PRICE_ENV}, else 0.69, an RTX 4090 pod on "
            "RunPod secure cloud).",
        ),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Images, failures, retries, score distribution, time per image and estimated cost."""
    if price_per_hour is None:
        try:
            price, source = price_from_env()
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint=PRICE_ENV) from None
    else:
        price, source = price_per_hour, "--price-per-hour"
    with reported("json" if json_out else "text"):
        result = build_report(pack_dir, price_per_hour=price, price_source=source)
    if json_out:
        print_json(result.to_json())
        return
    _show_report(result)


def _show_report(r: PackReport) -> None:
    h = r.header
    who = f" · character {h.character}" if h.character else ""
    console.print(f"[bold]{escape(h.pack)}[/]{escape(who)} · {escape(r.folder)}")
    table = Table(title="images by scene", show_edge=False)
    for column in ("scene", "jobs", "images", "below threshold", "failed", "pending", "attempts"):
        table.add_column(column, justify="left" if column == "scene" else "right")
    table.add_column("mean score", justify="right")
    for s in r.scenes:
        mean = "–" if s.mean_score is None else f"{s.mean_score:.3f}"
        row = (s.jobs, s.done, s.below_threshold, s.failed, s.pending, s.attempts)
        table.add_row(escape(s.scene), *map(str, row), mean)
    console.print(table)
    statuses = ", ".join(f"{n} {k}" for k, n in sorted(r.attempt_status.items()))
    console.print(
        f"{r.images} images from {r.jobs} jobs; {r.attempts} attempts ({statuses}); "
        f"{r.retried_jobs} job(s) needed a retry"
    )
    stats = score_stats(r.accepted_scores)
    if stats:
        line = " · ".join(f"{k} {v:.3f}" for k, v in stats.items())
        console.print(f"\n[bold]identity scores[/] of accepted images: {line}")
        rows = histogram(r.accepted_scores, r.rejected_scores, threshold=h.threshold)
        console.print("\n".join(rows) + "\n█ accepted  ░ below the threshold", highlight=False)
    if r.no_face_attempts:
        n = r.no_face_images
        kept = f", {n} of them accepted (no identity gate)" if n else ""
        console.print(f"no face found in {r.no_face_attempts} attempt(s){kept}: not scored")
    _show_time_and_cost(r)
    if r.failures:
        failed = Table(title="failed or below the threshold", show_edge=False)
        for column in ("job", "status", "attempts", "error"):
            failed.add_column(column, overflow="fold")
        for f in r.failures[:50]:
            failed.add_row(escape(f.key), f.status, str(f.attempts), escape(f.error))
        console.print(failed)


def _show_time_and_cost(r: PackReport) -> None:
    if not r.execution_s:
        console.print("\nno timings recorded yet")
        return
    mean = sum(r.execution_s) / len(r.execution_s)
    console.print(f"\n[bold]time[/]: {mean:.1f} s server execution per attempt", end="")
    if r.queue_wait_s:
        console.print(f", {sum(r.queue_wait_s) / len(r.queue_wait_s):.1f} s queue wait", end="")
    console.print()
    if r.gpu_seconds_per_image is not None and r.gpu_cost_per_image is not None:
        console.print(
            f"[bold]GPU per accepted image[/]: {r.gpu_seconds_per_image:.1f} s server execution "
            f"(all {len(r.execution_s)} timed attempts over {r.images} accepted) × "
            f"${r.price_per_hour:.2f}/h = ${r.gpu_cost_per_image:.5f}"
        )
    if r.stopped_early:
        early = score_stats(r.early_scores)
        scores = "" if early is None else f", early scores {early['min']:.3f}–{early['max']:.3f}"
        console.print(
            f"early identity gate: {r.stopped_early} of {r.attempts} attempt(s) stopped after "
            f"the InstantID fix{scores} (no detailer, upscale or save spent on them)"
        )
    if r.stage_means_s:
        stages = " · ".join(f"{k} {v:.1f} s" for k, v in r.stage_means_s.items())
        console.print(f"stages (mean per attempt): {escape(stages)}")
    per = "" if r.cost_per_image is None else f", ${r.cost_per_image:.4f} per image"
    if r.cost is not None and not r.endpoint_bills:
        console.print(
            f"[bold]cost[/]: {r.billed_s / 3600:.2f} GPU hours on {len(r.server_spans_s)} "
            f"server(s) × ${r.price_per_hour:.2f}/h = ${r.cost:.2f}{per} "
            f"({escape(r.price_source)}; pod start-up not included)"
        )
    elif r.cost is not None:
        _show_bill(r, per)


def _show_bill(r: PackReport, per: str) -> None:
    """Pods by their spans, endpoints by their worker seconds, then the total."""
    pods = sum(r.server_spans_s.values())
    if pods:
        console.print(
            f"[bold]cost[/] of pods: {pods / 3600:.2f} GPU hours on {len(r.server_spans_s)} "
            f"server(s) × ${r.price_per_hour:.2f}/h = ${pods / 3600 * r.price_per_hour:.2f} "
            f"({escape(r.price_source)}; pod start-up not included)"
        )
    for bill in r.endpoint_bills:
        lower = " (ComfyUI execution only: a lower bound)" if bill.measured == "execution" else ""
        console.print(
            f"[bold]bill[/] of endpoint {escape(bill.endpoint_id)}: {bill.worker_s:.1f} worker "
            f"seconds{lower} in {bill.attempts} attempts × ${bill.usd_per_s:.5f}/s = "
            f"${bill.cost:.4f} ({escape(bill.price_source)}; cold starts and idle timeouts not "
            "included: charpack endpoint status shows what RunPod billed)"
        )
    console.print(f"[bold]total[/]: ${r.cost:.4f}{per}")


def histogram(
    accepted: list[float],
    rejected: list[float],
    *,
    threshold: float | None = None,
    bin_width: float = 0.05,
    width: int = 32,
) -> list[str]:
    """A text histogram of scores: ``█`` accepted, ``░`` below the threshold, one line per bin."""
    every = accepted + rejected
    if not every:
        return []
    lo = int(min(every) / bin_width + 1e-9)
    hi = int(max(every) / bin_width + 1e-9)
    bins = range(lo, hi + 1)
    good = Counter(int(s / bin_width + 1e-9) for s in accepted)
    bad = Counter(int(s / bin_width + 1e-9) for s in rejected)
    peak = max(good[b] + bad[b] for b in bins)
    lines = []
    for b in bins:
        n_good, n_bad = good[b], bad[b]
        bar = "█" * _cells(n_good, peak, width) + "░" * _cells(n_bad, peak, width)
        start = b * bin_width
        mark = ""
        if threshold is not None and b == int(threshold / bin_width + 1e-9):
            mark = f"  ◀ threshold {threshold:g}"
        lines.append(
            f"{start:4.2f}–{start + bin_width:4.2f} │{bar:<{width}} {n_good + n_bad}{mark}"
        )
    return lines


def _cells(count: int, peak: int, width: int) -> int:
    # A bin with any score gets at least one cell, so a lone outlier stays visible.
    return max(1, round(count * width / peak)) if count else 0


def publish(
    pack_dir: PackDir,
    out: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option("--out", "-o", help="Where to write the copies (default PACK_DIR/publish)."),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Write copies of the accepted images with every metadata chunk stripped."""
    with reported("json" if json_out else "text"):
        result = run_publish(pack_dir, out_dir=out)
    if json_out:
        print_json(
            {
                "ok": not result.missing,
                "out_dir": str(result.out_dir),
                "written": [str(p) for p in result.written],
                "bytes_removed": result.bytes_removed,
                "missing": result.missing,
                "changed": result.changed,
            }
        )
    else:
        console.print(
            f"wrote {len(result.written)} image(s) to {escape(str(result.out_dir))} without "
            f"metadata ({result.bytes_removed / 1024:.1f} KiB of chunks removed)"
        )
        for rel in result.changed:
            err_console.print(
                f"[yellow]note:[/] {escape(rel)} differs from its sha256 in the manifest"
            )
        for rel in result.missing:
            err_console.print(f"[red]missing:[/] {escape(rel)} — restore it or re-run the job")
    if result.missing:
        raise typer.Exit(2)


def contact_sheet(
    pack_dir: PackDir,
    rejected: Annotated[
        bool, typer.Option("--rejected", help="Also show attempts below the threshold.")
    ] = False,
    columns: Annotated[int, typer.Option(min=1, max=20, help="Thumbnails per row.")] = 6,
    thumb_width: Annotated[int, typer.Option(min=64, max=1024, help="Thumbnail width, px.")] = 240,
    rows_per_page: Annotated[int, typer.Option(min=1, help="Rows per JPEG page.")] = 8,
) -> None:
    """Write contact-sheet.jpg: labelled thumbnails with scene, seed and score."""
    started = time.perf_counter()
    style = SheetStyle(columns=columns, thumb_width=thumb_width, rows_per_page=rows_per_page)
    pages = write_contact_sheets(pack_dir, include_rejected=rejected, style=style)
    elapsed = time.perf_counter() - started
    for page in pages:
        console.print(escape(str(page)))
    console.print(f"{len(pages)} page(s) in {elapsed:.1f} s")


def export_manifest(pack_dir: PackDir) -> None:
    """Write PACK_DIR/manifest.json whole from the pack state (a big pack's run keeps its
    changes in manifest.journal until it ends): for tools that read the plain file."""
    from ..folder.integrity import PackLock
    from ..folder.manifest import Manifest

    with reported("text"):
        lock = PackLock.acquire(pack_dir)  # never while a run writes the folder
        try:
            manifest = Manifest.load(pack_dir)
            manifest.export()
            manifest.close()
        finally:
            lock.release()
    console.print(f"wrote {escape(str(pack_dir / 'manifest.json'))} ({len(manifest)} jobs)")
