"""The orchestrator benchmark's numbers: one row per run, the table, the targets, the file.

Owns :class:`Row` (what one client run measured) and rendering them as Markdown for
``bench/RESULTS.md``: the table of every run side by side, then each target of the design
(idle above the server's floor on the shaped link, wall time against both comparators,
4-server throughput, client memory) stated as met or missed from the same rows, then the
command and the machine. Pure formatting; ``bench/orchestrator_bench.py`` measures.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
from dataclasses import dataclass, field
from pathlib import Path

MARKER = "<!-- results -->"
END = "<!-- end results -->"
LABELS = {
    "queued": "all queued up front (floor)",
    "charpack": "**charpack run**",
    "naive": "naive loop (script example)",
    "simplified": "comfy-api-simplified 1.6.0",
    "toolkit": "comfy-toolkit 0.1.0 (pipelined, 2 queued)",
    "headless": "comfy-headless 3.1.1 (pipelined, 2 queued)",
}
PEERS = ("naive", "simplified", "toolkit", "headless")


@dataclass
class Row:
    link: str
    servers: int
    client: str
    jobs: int
    wall_s: float
    busy_s: float  # sum of execution spans over the servers
    idle_s: float  # sum of gaps between consecutive prompts, per server, summed
    lead_s: float  # client start to the first prompt's start (any server)
    tail_s: float  # the last prompt's end (any server) to the client's end
    rss_mb: float  # the client process's peak resident memory (VmHWM), MB
    files_ok: bool
    errors: int = 0
    seconds: float = 0.0  # execution time per job
    rnd: int = 1  # which repeat of the run
    load1: float = math.nan  # the machine's 1-minute load average when the run ended
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def idle_pct(self) -> float:
        return 100 * self.idle_s / self.busy_s if self.busy_s else math.nan

    @property
    def per_min(self) -> float:
        return 60 * self.jobs / self.wall_s

    @property
    def wall_over_busy(self) -> float:
        """Wall time against one server's share of the execution time (1.0 = never idle)."""
        return self.wall_s / (self.busy_s / self.servers) if self.busy_s else math.nan


def _find(
    rows: list[Row], *, link: str, servers: int, client: str, jobs: int, like: Row | None = None
) -> Row | None:
    """The row of that run; with ``like``, of the same job time and round as ``like``."""
    for row in rows:
        if (row.link, row.servers, row.client, row.jobs) != (link, servers, client, jobs):
            continue
        if like is None or (row.seconds, row.rnd) == (like.seconds, like.rnd):
            return row
    return None


def table(rows: list[Row], *, plan: dict[float, int]) -> list[str]:
    lines = [
        "| job (s) | run | load | link | servers | client | jobs | wall (s) | server busy (s) "
        "| wall ÷ busy per server "
        "| server idle, % of busy | above floor (pp) | lead-in (s) | tail (s) | jobs/min "
        "| × 1 server | client peak RSS (MB) | files |",
        "|---:|---:|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        jobs = plan.get(row.seconds, row.jobs)
        floor = _find(rows, link=row.link, servers=1, client="queued", jobs=row.jobs, like=row)
        one = _find(rows, link=row.link, servers=1, client="charpack", jobs=jobs, like=row)
        above = f"{row.idle_pct - floor.idle_pct:+.2f}" if floor and row is not floor else ""
        scale = ""
        if row.client == "charpack" and one is not None and row.jobs in (jobs, jobs * row.servers):
            scale = f"{row.per_min / one.per_min:.2f}"
        files = "all whole" if row.files_ok else "**MISSING/SHORT**"
        if row.errors:
            files += f", {row.errors} execution errors"
        lines.append(
            f"| {row.seconds:g} | {row.rnd} | {row.load1:.2f} "
            f"| {row.link} | {row.servers} | {LABELS[row.client]} | {row.jobs} "
            f"| {row.wall_s:.1f} | {row.busy_s:.1f} | {row.wall_over_busy:.3f} "
            f"| {row.idle_pct:.2f} | {above} | {row.lead_s:.2f} | {row.tail_s:.2f} "
            f"| {row.per_min:.1f} | {scale} | {row.rss_mb:.0f} "
            f"| {files} |"
        )
    return lines


def targets(rows: list[Row], *, jobs: int) -> list[str]:
    def verdict(ok: bool) -> str:
        return "**met**" if ok else "**MISSED**"

    out = []
    floor = _find(rows, link="shaped", servers=1, client="queued", jobs=jobs)
    ours = _find(rows, link="shaped", servers=1, client="charpack", jobs=jobs)
    naive = _find(rows, link="shaped", servers=1, client="naive", jobs=jobs)
    simple = _find(rows, link="shaped", servers=1, client="simplified", jobs=jobs)
    if floor and ours:
        above = ours.idle_pct - floor.idle_pct
        out.append(
            f"- Shaped link, one server: charpack leaves the server idle {ours.idle_pct:.2f}% "
            f"of its busy time; the floor (all {jobs} queued up front, same run) is "
            f"{floor.idle_pct:.2f}%: {above:+.2f} pp (target ≤ +0.5 pp): {verdict(above <= 0.5)}."
        )
    if ours and naive and simple:
        ok = ours.wall_s < naive.wall_s and ours.wall_s < simple.wall_s
        out.append(
            f"- Shaped link, one server, pack wall time: charpack {ours.wall_s:.1f} s, naive loop "
            f"{naive.wall_s:.1f} s (idle {naive.idle_pct:.1f}%), comfy-api-simplified "
            f"{simple.wall_s:.1f} s (idle {simple.idle_pct:.1f}%) (target: lower than both): "
            f"{verdict(ok)}."
        )
    for row in rows:  # the throughput target: 4 servers, each with the one-server run's work
        one = _find(rows, link=row.link, servers=1, client="charpack", jobs=jobs)
        if one is None or row.servers < 2 or row.jobs != jobs * row.servers:
            continue
        ratio = row.per_min / one.per_min
        out.append(
            f"- {row.link.capitalize()} link, {row.servers} servers, each given as many jobs as "
            f"the one-server run ({row.jobs} jobs in all): {ratio:.2f} × one server's throughput "
            f"(target ≥ 3.8): {verdict(ratio >= 3.8)}."
        )
    for link in ("shaped", "loopback"):
        one = _find(rows, link=link, servers=1, client="charpack", jobs=jobs)
        four = _find(rows, link=link, servers=4, client="charpack", jobs=jobs)
        if one and four:
            ratio = four.per_min / one.per_min
            most = math.ceil(jobs / 4)
            best = jobs / most
            out.append(
                f"- {link.capitalize()} link, the same {jobs} jobs on 4 servers: {ratio:.2f} × "
                f"one server's throughput, {100 * ratio / best:.1f}% of the {best:.2f} that "
                f"{jobs} jobs allow (one server runs {most}); the start and the last job weigh "
                f"more in a run a quarter as long."
            )
    for row in rows:
        if "rss_sheet_mb" not in row.extra:
            continue
        sheet_mb, sheet_s = row.extra["rss_sheet_mb"], row.extra["contact_sheet_s"]
        peak = max(row.rss_mb, sheet_mb)
        out.append(
            f"- Client memory, {row.jobs}-image pack of 3328×4864 PNGs on {row.servers} servers "
            f"({row.link} link): peak RSS {row.rss_mb:.0f} MB when the run returned, "
            f"{sheet_mb:.0f} MB after also writing the contact sheet ({sheet_s:.0f} s), as "
            f"`charpack run` does by default (target < 200 MB): {verdict(peak < 200)}."
        )
    return out


def _spread(values: list[float], fmt: str = ".3f") -> str:
    """Median and range of repeated runs: ``median (min–max)``."""
    if not values:
        return ""
    if len(values) == 1:
        return format(values[0], fmt)
    lo, mid, hi = min(values), statistics.median(values), max(values)
    return f"{mid:{fmt}} ({lo:{fmt}}–{hi:{fmt}})"


def _groups(rows: list[Row]) -> dict[tuple[float, str, int, str, int], list[Row]]:
    groups: dict[tuple[float, str, int, str, int], list[Row]] = {}
    for row in rows:
        if "rss_sheet_mb" in row.extra:
            continue  # the memory run is reported on its own
        key = (row.seconds, row.link, row.servers, row.client, row.jobs)
        groups.setdefault(key, []).append(row)
    return groups


def summary(rows: list[Row]) -> list[str]:
    """Each client's repeated runs in one row: median (min–max), wall against the floor's
    wall in the same round (the fair comparison when the machine's load drifts)."""
    lines = [
        "| job (s) | link | servers | client | jobs | runs | wall (s) | wall ÷ floor's wall, same "
        "round | server idle, % of busy | above floor (pp) | jobs/min | client peak RSS (MB) "
        "| load (1 min) | files |",
        "|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for (seconds, link, servers, client, jobs), group in _groups(rows).items():
        ratios, above = [], []
        for row in group:
            floor = _find(rows, link=link, servers=1, client="queued", jobs=jobs, like=row)
            if floor is not None and floor is not row and servers == 1:
                ratios.append(row.wall_s / floor.wall_s)
                above.append(row.idle_pct - floor.idle_pct)
        ok = all(r.files_ok and not r.errors for r in group)
        lines.append(
            f"| {seconds:g} | {link} | {servers} | {LABELS[client]} | {jobs} | {len(group)} "
            f"| {_spread([r.wall_s for r in group], '.1f')} | {_spread(ratios)} "
            f"| {_spread([r.idle_pct for r in group], '.2f')} | {_spread(above, '+.2f')} "
            f"| {_spread([r.per_min for r in group], '.2f')} "
            f"| {_spread([r.rss_mb for r in group], '.0f')} "
            f"| {_spread([r.load1 for r in group], '.2f')} "
            f"| {'all whole' if ok else '**MISSING/SHORT or errors**'} |"
        )
    return lines


def peer_targets(rows: list[Row]) -> list[str]:
    """charpack against every peer, round by round: the peer's wall ÷ charpack's wall."""
    out = []
    for (seconds, link, servers, client, jobs), group in _groups(rows).items():
        if client not in PEERS or servers != 1:
            continue
        ratios = []
        for row in group:
            ours = _find(rows, link=link, servers=1, client="charpack", jobs=jobs, like=row)
            if ours is not None:
                ratios.append(row.wall_s / ours.wall_s)
        if not ratios:
            continue
        if min(ratios) > 1:
            verdict = "charpack **ahead** in every round"
        elif statistics.median(ratios) >= 1:
            verdict = "charpack **at or ahead** (ahead in most rounds, not all)"
        elif max(ratios) >= 1:
            verdict = "charpack **at** the peer (behind in most rounds, within the spread)"
        else:
            verdict = "charpack **BEHIND** in every round"
        out.append(
            f"- {seconds:g} s jobs, {link}: {LABELS[client]} wall ÷ charpack wall, same round, "
            f"{_spread(ratios)} over {len(ratios)} rounds: {verdict}."
        )
    return out


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB; Linux {platform.release()}; "
        f"Python {platform.python_version()}; ComfyUI 0.3.75 on CPU (test world)"
    )


def render(
    rows: list[Row], *, args: argparse.Namespace, picture_bytes: int, command: str, minutes: float
) -> str:
    plan = dict(args.plan)
    packs = "; ".join(f"{jobs} jobs of {seconds:g} s" for seconds, jobs in args.plan)
    links = ", ".join(sorted({r.link for r in rows}))
    lines = [
        f"Packs: {packs} of execution each ({args.steps} progress steps), every job writing "
        f"one 3328×4864 PNG of {picture_bytes / 1e6:.1f} MB. Links: {links} "
        f"(shaped: {args.delay * 1000:.0f} ms each way, "
        f"{args.rate / 1e6:g} MB/s each way, one relay per server). {args.runs} run(s) of "
        "each, interleaved (each round starts with the next client). Every run used fresh "
        "inputs (no cache hits) and its own output names; runs were one after another on the "
        "same warm servers. The machine's 1-minute load average before the servers started: "
        f"{args.load_before[0]:.2f} (5 min {args.load_before[1]:.2f}); each run's load is "
        "read when it ends and includes the bench's own server and client.",
        "",
    ]
    if args.runs > 1 or len(args.plan) > 1:
        lines += [
            "Median (min–max) over the runs:",
            "",
            *summary(rows),
            "",
            "Targets (charpack at or ahead of every peer):",
            "",
            *peer_targets(rows),
            "",
            "Every run:",
            "",
        ]
    lines += [*table(rows, plan=plan), ""]
    if args.runs == 1 and len(args.plan) == 1:
        lines += ["Targets:", "", *targets(rows, jobs=args.plan[0][1]), ""]
    lines += [
        f"Command: `{command}` ({minutes:.0f} min).",
        "",
        f"Machine: {machine()}.",
        "",
    ]
    return "\n".join(lines)


def write_results(path: Path, text: str) -> None:
    """Replace what lies between the marker lines of ``path`` (after :data:`MARKER`, up to
    :data:`END` or the end); the text above and below them is kept."""
    head = f"# charpack run against its peers\n\n{MARKER}\n"
    tail = ""
    if path.is_file() and MARKER in path.read_text(encoding="utf-8"):
        before, after = path.read_text(encoding="utf-8").split(MARKER, 1)
        head = before + MARKER + "\n"
        if END in after:
            tail = "\n" + END + after.split(END, 1)[1]
    path.write_text(head + "\n" + text + tail, encoding="utf-8")
