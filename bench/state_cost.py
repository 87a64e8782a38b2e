"""What one pack-state event costs at 1,000 / 10,000 / 100,000 jobs: before and after.

Run by hand from the repository root (not a test): ``python bench/state_cost.py``
(``--sizes 1000,10000`` and ``--events N`` to shorten it). Writes ``bench/STATE.md`` and
prints the table.

An event is what the run loop saves once per change: one job entry replaced (a new attempt
recorded, or how it ended) then ``put`` + ``save``, with the entry ~8 KB, one attempt holding
charpack's own ``workflows/api/full.json`` graph and the fields a real run records (timings,
stage timings, two file records, score) — the shape of an entry copied from a real run.

- **before**: the manifest as it was until issue 12 (:class:`OldManifest`, copied here): every
  save rewrites ``manifest.json`` whole through ``atomic_write`` (temp file, fsync, rename),
  with each entry's JSON cached so a save costs a concatenation plus the write;
- **after**: :class:`charpack.folder.manifest.Manifest`: past 256 KiB a save appends the changed
  entries as one fsynced line to ``manifest.journal``; the run's first save (and the fold-in
  when the journal reaches 4x manifest.json's size, and the end of the run) writes the whole
  file, shown as its own columns: its cost once, and spread over the saves between two fold-ins.

Both write into a temporary folder on the same disk, one after the other. Each event's wall
time is split into the time inside ``os.fsync`` (the disk: both stores sync as a run does) and
the rest (charpack's own work); the disk's floor (appending 7 KB and fsyncing it) is measured
before and after the rows, since on a shared machine it varies by ten times.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from charpack.folder.integrity import atomic_write  # noqa: E402
from charpack.folder.journal import JOURNAL  # noqa: E402
from charpack.folder.manifest import COMPACT_FACTOR, JobEntry, Manifest  # noqa: E402

OUT = REPO / "bench" / "STATE.md"
WORKFLOW: dict[str, Any] = json.loads((REPO / "workflows" / "api" / "full.json").read_text())


class OldManifest:
    """The manifest's saving before issue 12 (orchestrator/folder/manifest.py at 7c79c5e)."""

    def __init__(self, folder: Path, header: dict[str, Any], jobs: dict[str, JobEntry]) -> None:
        self.folder = folder
        self.header = header
        self._jobs = jobs
        self._cache: dict[str, str] = {}

    @property
    def path(self) -> Path:
        return self.folder / "manifest.json"

    def put(self, entry: JobEntry) -> None:
        key = entry["key"]
        self._jobs[key] = entry
        self._cache.pop(key, None)

    def to_json(self) -> str:
        self.header["updated"] = time.time()
        head = json.dumps(self.header, indent=1, sort_keys=True)
        parts = []
        for key, entry in self._jobs.items():
            text = self._cache.get(key)
            if text is None:
                text = json.dumps(entry, sort_keys=True)
                self._cache[key] = text
            parts.append(f"  {json.dumps(key)}: {text}")
        body = ",\n".join(parts)
        return head[:-2] + ',\n "jobs": {\n' + body + "\n }\n}\n"

    def save(self) -> None:
        data = self.to_json().encode("utf-8")
        atomic_write(
            self.path,
            lambda fh: fh.write(data),
            doing="save manifest.json",
            root=self.folder,
            size=len(data),
        )


def header() -> dict[str, Any]:
    now = time.time()
    return {
        "format": 1,
        "run_id": "5b0c1f6e-2f39-4c8e-9a55-1c1f2b7f0a11",
        "created": now,
        "updated": now,
        "pack": {"name": "bench", "character": "Ava", "sha256": "a" * 64, "scenes": ["cafe"]},
        "identity": {"enabled": True, "threshold": 0.45, "max_attempts": 3},
        "servers": {"https://pod-a-8188.proxy.runpod.net": {"version": "0.3.75"}},
    }


def attempt(n: int, key: str, status: str) -> dict[str, Any]:
    stem = key.replace("/", "_")
    return {
        "attempt": 1,
        "prompt_id": f"{n:08x}-6b1e-5c2a-9d4f-0c1e2d3f4a5b",
        "seed": 1_000_000 + n,
        "server": "https://pod-a-8188.proxy.runpod.net",
        "comfyui_version": "0.3.75",
        "workflow": WORKFLOW,  # the same graph object: its JSON is what costs, not its memory
        "submitted_at": 1_764_000_000.0 + n,
        "started_at": 1_764_000_001.5 + n,
        "finished_at": 1_764_000_013.2 + n,
        "queue_wait_s": 1.5,
        "execution_s": 11.7,
        "stage_timings": {"base": 4.1, "detail": 3.2, "detect": 0.4, "instantid": 2.9, "up": 1.1},
        "status": status,
        "score": 0.6123 if status == "success" else None,
        "face": True,
        "error": None,
        "files": [
            {"path": f"cafe/{stem}_{n}.png", "sha256": "b" * 64, "bytes": 29_000_000},
            {"path": f"cafe/{stem}_{n}.json", "sha256": "c" * 64, "bytes": 6_100},
        ],
    }


def entry(i: int) -> JobEntry:
    key = f"cafe/{i:06d}"
    return {
        "key": key,
        "scene": "cafe",
        "index": i,
        "status": "done",
        "seed": 1_000_000 + i,
        "prompt_id": f"{i:08x}-6b1e-5c2a-9d4f-0c1e2d3f4a5b",
        "server": "https://pod-a-8188.proxy.runpod.net",
        "score": 0.6123,
        "error": None,
        "image": f"cafe/cafe_{i:06d}_{i}.png",
        "attempts": [attempt(i, key, "success")],
    }  # type: ignore[typeddict-item]


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def measure(size: int, events_before: int, events_after: int) -> dict[str, Any]:
    row: dict[str, Any] = {"jobs": size}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        jobs = {e["key"]: e for e in map(entry, range(1, size + 1))}
        keys = list(jobs)
        old = OldManifest(folder / "old", header(), dict(jobs))
        old.save()  # fills the entry cache, as a running process's earlier saves did
        row["mb"] = old.path.stat().st_size / 1e6
        measured = [event(old, jobs, keys, n) for n in range(events_before)]
        row["before_ms"] = statistics.mean(m[0] for m in measured) * 1e3
        row["before_work_ms"] = statistics.mean(m[1] for m in measured) * 1e3
        row["before_fsync_ms"] = statistics.mean(m[2] for m in measured) * 1e3
        row["before_n"] = len(measured)
        del old
        gc.collect()

        new = Manifest(folder / "new", header(), dict(jobs))
        row["first_ms"] = timed(new.save) * 1e3  # the run's first save: the whole file
        snapshot = (folder / "new" / "manifest.json").stat().st_size
        measured = [event(new, jobs, keys, n) for n in range(events_after)]
        journal = (folder / "new" / JOURNAL).stat().st_size
        per_line = journal / max(1, len(measured))
        times = sorted(m[0] for m in measured)
        row["after_ms"] = statistics.mean(times) * 1e3
        row["after_p99_ms"] = times[int(0.99 * (len(times) - 1))] * 1e3
        row["after_max_ms"] = times[-1] * 1e3
        row["after_work_ms"] = statistics.mean(m[1] for m in measured) * 1e3
        row["after_fsync_ms"] = statistics.mean(m[2] for m in measured) * 1e3
        row["after_n"] = len(times)
        row["line_kb"] = per_line / 1e3
        # One fold-in per COMPACT_FACTOR x manifest.json of journal: its cost spread over them.
        saves_per_fold = COMPACT_FACTOR * snapshot / per_line
        row["fold_ms"] = row["first_ms"] / saves_per_fold
        row["load_s"] = timed(lambda: Manifest.load(folder / "new"))
        del new
        gc.collect()
    return row


FSYNCS: list[float] = []  # seconds of every os.fsync, in order (both stores call os.fsync)
_REAL_FSYNC = os.fsync


def _timed_fsync(fd: int) -> None:
    started = time.perf_counter()
    _REAL_FSYNC(fd)
    FSYNCS.append(time.perf_counter() - started)


def event(
    store: OldManifest | Manifest, jobs: dict[str, JobEntry], keys: list[str], n: int
) -> tuple[float, float, float]:
    """Replace one job's attempt (begin, then end, alternately), put and save: (wall, wall
    outside fsync, inside fsync) seconds."""
    key = keys[(n * 7919) % len(keys)]
    e = jobs[key]
    status = "submitted" if n % 2 == 0 else "success"
    synced = len(FSYNCS)
    started = time.perf_counter()
    e["attempts"] = [attempt(n, key, status)]
    e["status"] = "submitted" if status == "submitted" else "done"
    store.put(e)
    store.save()
    wall = time.perf_counter() - started
    synced_s = sum(FSYNCS[synced:])
    return wall, wall - synced_s, synced_s


def disk_floor(events: int = 200) -> float:
    """Median seconds of appending 7 KB to a file and fsyncing it: what this disk charges."""
    with tempfile.TemporaryDirectory() as tmp:
        fd = os.open(Path(tmp) / "floor", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            times = []
            for _ in range(events):
                started = time.perf_counter()
                os.write(fd, b"x" * 7_000)
                _REAL_FSYNC(fd)
                times.append(time.perf_counter() - started)
        finally:
            os.close(fd)
    return statistics.median(times)


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| jobs | manifest.json | before: ms per event (work / fsync) | after: ms per event "
        "(work / fsync) | after: p99 / max ms | after: journal line | after: fold-in, ms per "
        "event | after: whole-file save (first save, fold-in, end) | after: load with journal |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['jobs']:,} | {r['mb']:.0f} MB "
            f"| {r['before_ms']:.1f} ({r['before_work_ms']:.1f} / {r['before_fsync_ms']:.1f}; "
            f"n={r['before_n']}) "
            f"| {r['after_ms']:.2f} ({r['after_work_ms']:.2f} / {r['after_fsync_ms']:.2f}; "
            f"n={r['after_n']}) | {r['after_p99_ms']:.1f} / {r['after_max_ms']:.1f} "
            f"| {r['line_kb']:.1f} KB | {r['fold_ms']:.3f} "
            f"| {r['first_ms']:.0f} ms | {r['load_s']:.2f} s |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--events", type=int, default=1000, help="events measured after")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    os.environ.pop("CHARPACK_STATE_SNAPSHOT_MAX", None)
    os.fsync = _timed_fsync  # counted, not changed: both stores sync exactly as in a run
    floor_before = disk_floor()
    rows = []
    for size in sizes:
        before = max(5, min(50, 300_000_000 // (size * 8_000)))  # seconds, not minutes, per row
        rows.append(measure(size, before, args.events))
        print(f"{size:,} jobs done", file=sys.stderr)
    floor_after = disk_floor()
    load = os.getloadavg()[0]
    command = "python bench/state_cost.py" + (
        "" if args.sizes == "1000,10000,100000" and args.events == 1000 else
        f" --sizes {args.sizes} --events {args.events}"
    )  # fmt: skip
    text = (
        f"{table(rows)}\n\n"
        f"This disk's floor, appending 7 KB and fsyncing it (median of 200): "
        f"{floor_before * 1e3:.2f} ms before the rows, {floor_after * 1e3:.2f} ms after.\n\n"
        f"Command: `{command}` — {platform.python_implementation()} "
        f"{platform.python_version()}, {os.cpu_count()} CPUs, load average {load:.1f} at the "
        f"end, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.\n"
    )
    print(text)
    write_results(text)
    return 0


def write_results(table_text: str) -> None:
    """Replace the measured part of bench/STATE.md (below its marker), keeping the prose."""
    marker = "<!-- measured: bench/state_cost.py writes below this line -->"
    prose = OUT.read_text().split(marker)[0] if OUT.exists() else "# Pack state cost\n\n"
    OUT.write_text(f"{prose.rstrip()}\n\n{marker}\n\n{table_text}")


if __name__ == "__main__":
    raise SystemExit(main())
