"""How long `charpack validate` (and `charpack plan`) take, and how much memory, on packs at the
limits and on hostile pack files.

Run from the repo root:  python bench/validate_limits.py [--plan-jobs 200000] [--old-jobs 20000]
Writes bench/VALIDATE.md. Every row is the whole command as a user runs it, in its own process
(interpreter start-up included); peak RSS is that process's own (``wait4`` on a process forked
from a small timer, see ``TIMER``). Packs:

- 200,000 jobs (the pack limit, ``MAX_JOBS``): 20 scenes of ``count: 10000`` (the per-scene
  limit); and 20 scenes of 10,000 explicit 20-digit seeds, the largest such file;
- one job over the limit; an alias bomb in a text field; 5,000 levels of nesting; a file over
  the size limit;
- the old approach for comparison: every job's graph built, kept and validated, as `validate`
  did before, on ``--old-jobs`` jobs (at 200,000 it took 218 s and 3 GB).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from PIL import Image

from charpack.pack.packfile import MAX_COUNT, MAX_JOBS
from charpack.pack.packyaml import MAX_FILE_BYTES

REPO = Path(__file__).resolve().parents[1]
HEAD = {"version": 1, "pack": "bench", "character": {"name": "A", "face_references": ["f.png"]}}

# What `charpack validate` did before validate_pack: every job's graph, each kept on its job.
OLD_LOOP = """
import sys
from charpack.pack.jobs import expand
from charpack.comfy.objectinfo import ObjectInfo
from charpack.pack.packfile import load_pack
from charpack.check.validate import validate_graph
info = ObjectInfo.recorded()
jobs = expand(load_pack(sys.argv[1]))
found = {f for job in jobs for f in validate_graph(job.graph, info)}
print(f"{len(jobs)} jobs, {len(found)} findings")
"""


def write_pack(folder: Path, name: str, scenes: list[dict[str, object]], extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "f.png").exists():
        Image.new("RGB", (64, 64), (205, 160, 130)).save(folder / "f.png")
    path = folder / f"{name}.yaml"
    data = {**HEAD, "scenes": scenes}
    path.write_text(yaml.dump(data, Dumper=yaml.CSafeDumper, sort_keys=False) + extra)
    return path


def count_scenes(jobs: int) -> list[dict[str, object]]:
    full, rest = divmod(jobs, MAX_COUNT)
    counts = [MAX_COUNT] * full + ([rest] if rest else [])
    return [{"name": f"s{i:02d}", "prompt": "a photo", "count": n} for i, n in enumerate(counts)]


def seed_scenes(jobs: int) -> list[dict[str, object]]:
    start = 10**19  # 20 digits each: the largest file these seeds make
    scenes = []
    for i, scene in enumerate(count_scenes(jobs)):
        n = int(str(scene.pop("count")))
        scene["seeds"] = list(range(start + i * MAX_COUNT, start + i * MAX_COUNT + n))
        scenes.append(scene)
    return scenes


def alias_bomb(folder: Path) -> Path:
    lines = ["lol0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for n in range(1, 10):
        lines.append(f"lol{n}: &l{n} [{', '.join([f'*l{n - 1} '] * 9)}]")
    text = yaml.dump({**HEAD}, Dumper=yaml.CSafeDumper, sort_keys=False)
    text = text.replace("  name: A\n", "  name: A\n  prompt_prefix: *l9\n")
    path = folder / "alias-bomb.yaml"
    path.write_text("\n".join(lines) + "\n" + text + "scenes: [{name: s, prompt: p, count: 1}]\n")
    return path


def deep(folder: Path) -> Path:
    path = folder / "deep.yaml"
    path.write_text("pack: " + "[" * 5000 + "]" * 5000 + "\n")
    return path


def oversized(folder: Path) -> Path:
    path = folder / "oversized.yaml"
    with path.open("w") as fh:
        fh.write(("# " + "x" * 1021 + "\n") * (MAX_FILE_BYTES // 1024 + 1))
    return path


# Runs the command as its own grandchild and reports its wall time and peak RSS. A child's
# peak RSS counts the memory of the process it was forked from (Linux keeps the high-water mark
# across exec), so the command is forked from this small interpreter, not from the bench.
TIMER = """
import os, sys, time
started = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
_pid, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - started
print(f"BENCH {wall:.3f} {usage.ru_maxrss}", file=sys.stderr)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def measure(args: list[str], cwd: Path) -> tuple[float, float, int, str]:
    """Wall seconds, peak RSS (MB) of that process alone, exit code, last output line."""
    run = subprocess.run(
        [sys.executable, "-c", TIMER, *args], cwd=cwd, capture_output=True, text=True
    )
    lines = [line.strip() for line in (run.stdout + run.stderr).splitlines() if line.strip()]
    _, wall, rss_kb = next(line for line in lines if line.startswith("BENCH ")).split()
    output = [line for line in lines if not line.startswith("BENCH ")]
    return float(wall), int(rss_kb) / 1024, run.returncode, output[-1] if output else ""


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--plan-jobs", type=int, default=MAX_JOBS, help="0 skips plan")
    parser.add_argument("--old-jobs", type=int, default=20_000, help="0 skips the old approach")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="charpack-validate-bench-"))
    cli = [sys.executable, "-m", "charpack"]
    rows: list[tuple[str, str, tuple[float, float, int, str]]] = []
    try:
        packs = {
            f"{MAX_JOBS:,} jobs: 20 scenes × `count: {MAX_COUNT}`": write_pack(
                work, "count", count_scenes(MAX_JOBS)
            ),
            f"{MAX_JOBS:,} jobs: 20 scenes × {MAX_COUNT:,} explicit 20-digit seeds": write_pack(
                work, "seeds", seed_scenes(MAX_JOBS)
            ),
            f"{MAX_JOBS + 1:,} jobs (one over the limit)": write_pack(
                work, "over", [*count_scenes(MAX_JOBS), {"name": "one", "prompt": "p", "count": 1}]
            ),
            "alias bomb (9 levels × 9 aliases) in `prompt_prefix`": alias_bomb(work),
            "5,000 levels of nesting": deep(work),
            f"a file over {MAX_FILE_BYTES // 2**20} MiB": oversized(work),
        }
        for label, path in packs.items():
            size = _size(path.stat().st_size)
            result = measure([*cli, "validate", str(path)], work)
            rows.append((f"`charpack validate` · {label}", size, result))
            print(rows[-1], flush=True)
        if args.old_jobs:
            path = write_pack(work, "old", count_scenes(args.old_jobs))
            label = f"old approach (every graph built and kept) · {args.old_jobs:,} jobs"
            rows.append((label, "", measure([sys.executable, "-c", OLD_LOOP, str(path)], work)))
            print(rows[-1], flush=True)
        if args.plan_jobs:
            path = write_pack(work, "plan", count_scenes(args.plan_jobs))
            out = work / "plan-out"
            label = f"`charpack plan` · {args.plan_jobs:,} jobs (writes every workflow)"
            rows.append((label, "", measure([*cli, "plan", str(path), "--out", str(out)], work)))
            print(rows[-1], flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lines = [
        "# `charpack validate` at the limits and on hostile pack files",
        "",
        "Each row is one command in its own process, interpreter start-up included; peak RSS is",
        "that process's own. Limits: "
        f"{MAX_JOBS:,} jobs per pack, {MAX_COUNT:,} per scene (`count` or `seeds`), "
        f"{MAX_FILE_BYTES // 2**20} MiB per file (docs/pack-format.md, Limits).",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, "
        f"{platform.python_implementation()} {platform.python_version()}.",
        "",
        "| what | file | wall (s) | peak RSS (MB) | exit | last line of output |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for label, size, (wall, rss, code, last) in rows:
        shown = last if len(last) <= 110 else last[:109] + "…"
        shown = shown.replace("|", "\\|").replace(str(work), "…")
        lines.append(f"| {label} | {size} | {wall:.2f} | {rss:.0f} | {code} | {shown} |")
    lines += [
        "",
        f"Made by: `python bench/validate_limits.py --plan-jobs {args.plan_jobs} "
        f"--old-jobs {args.old_jobs}`",
        "",
    ]
    text = "\n".join(lines)
    (REPO / "bench" / "VALIDATE.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
