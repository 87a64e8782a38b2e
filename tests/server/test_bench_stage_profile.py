"""The stage-profile bench (``bench/stage_profile.py``) in a few hundred milliseconds: its
accounting of stopped attempts, and the GATE.md it writes.

The bench is a pure simulation of a warm 4090's stage times (no server: the profile is played as
sleeps), so this needs no ComfyUI; it lives beside the other bench smoke test. Nothing here
asserts on time: the played seconds are checked only for being written, the figures through the
profile's own (``sleep=False``) accounting, which is exact.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bench import stage_profile as sp
from bench import stage_world
from charpack_nodes.pipelines.catalog import STAGE_FACE_DETAILER, STAGE_UPSCALE
from tests.unit.test_doc_estimates import UNMEASURED, _paragraphs

FULL = sum(s.seconds for s in sp.stages(gate=False, stopped=False))
GATE_S = sp.gate_seconds()


def test_a_stopped_attempt_plays_nothing_after_the_gate() -> None:
    names = [s.name for s in sp.stages(gate=True, stopped=True)]
    assert names[-1] == sp.GATE
    assert names[-2] == sp.GATE_AFTER
    assert STAGE_FACE_DETAILER not in names and STAGE_UPSCALE not in names
    assert sp.GATE not in [s.name for s in sp.stages(gate=False, stopped=False)]


def test_every_profile_time_says_where_it_comes_from_and_that_it_is_an_estimate() -> None:
    # No stage has run on a GPU: each time is an estimate, and says what it was derived from.
    kinds = ("published-derived estimate", "seed-derived estimate", "estimate")
    for stage in sp.PROFILE:
        assert stage.seconds > 0
        assert stage.source.startswith(kinds), stage.name


def test_the_gate_stops_exactly_the_caught_rejects_and_both_sides_play_the_same_draws() -> None:
    jobs = sp.draw_jobs(7, jobs=200, rate=0.3, catch=0.5, max_attempts=3)
    off = sp.play(jobs, gate=False, scale=1.0, sleep=False)
    on = sp.play(jobs, gate=True, scale=1.0, sleep=False)
    caught = sum(a.caught for job in jobs for a in job)
    rejected = sum(a.rejected for job in jobs for a in job)
    assert 0 < caught < rejected
    assert on.stopped_early == caught and off.stopped_early == 0
    assert on.attempts == off.attempts == sum(len(job) for job in jobs)
    assert on.accepted == off.accepted == sum(not job[-1].rejected for job in jobs)
    early = sum(s.seconds for s in sp.stages(gate=True, stopped=True))
    assert math.isclose(off.nominal_s, off.attempts * FULL)
    assert math.isclose(on.nominal_s, (on.attempts - caught) * (FULL + GATE_S) + caught * early)
    assert on.per_accepted < off.per_accepted


def test_without_rejections_the_gate_only_adds_its_own_time() -> None:
    jobs = sp.draw_jobs(1, jobs=20, rate=0.0, catch=1.0, max_attempts=3)
    on = sp.play(jobs, gate=True, scale=1.0, sleep=False)
    assert on.stopped_early == 0 and on.accepted == 20
    assert math.isclose(on.per_accepted, FULL + GATE_S)
    assert math.isclose(
        sp.expected_per_accepted(rate=0.0, catch=1.0, gate=True, max_attempts=3), FULL + GATE_S
    )


@pytest.mark.parametrize("rate", [0.2, 0.4])
def test_the_expected_figure_is_what_many_draws_average_to(rate: float) -> None:
    jobs = sp.draw_jobs(3, jobs=20_000, rate=rate, catch=0.5, max_attempts=3)
    for gate in (False, True):
        tally = sp.play(jobs, gate=gate, scale=1.0, sleep=False)
        expected = sp.expected_per_accepted(rate=rate, catch=0.5, gate=gate, max_attempts=3)
        assert tally.nominal_per_accepted == pytest.approx(expected, rel=0.02)


def test_the_bench_writes_gate_md_with_every_rate_its_sources_and_the_verdict(
    tmp_path: Path,
) -> None:
    out = tmp_path / "GATE.md"
    argv = ["--runs", "2", "--jobs", "8", "--scale", "0.0001", "--results", str(out)]
    assert sp.main(argv) == 0
    text = out.read_text(encoding="utf-8")
    assert "ESTIMATE" in text and "--runs 2 --jobs 8" in text
    assert "load average" in text
    for stage in sp.PROFILE:
        assert f"| {stage.name} | {stage.seconds:.2f} | {stage.source} |" in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and "%" in line[:8]]
    assert [row.split("|")[1].strip() for row in rows] == ["0%", "20%", "30%", "40%"]
    assert all(row.count("±") >= 4 for row in rows)  # spreads over the runs
    assert "at 30 % rejection the gate cuts GPU-s per accepted image by ≥ 25 %" in text
    # The docs' rule (tests/unit/test_doc_estimates.py) holds for what the bench writes.
    assert [
        p for p in _paragraphs(text) if UNMEASURED.search(p) and "estimate" not in p.lower()
    ] == []


@pytest.mark.server
def test_the_cpu_world_table_comes_from_real_graphs_the_gate_stopped_and_keeps_the_profile(
    tmp_path: Path,
) -> None:
    out = tmp_path / "GATE.md"
    out.write_text("# the profile's part\n\nkept\n", encoding="utf-8")
    argv = ["--attempts", "1", "--runs", "1", "--step", "0", "--results", str(out)]
    # play() refuses a run where a stopping gate let an image through or a passing one did not.
    assert stage_world.main(argv) == 0
    text = out.read_text(encoding="utf-8")
    assert text.startswith("# the profile's part\n\nkept\n\n" + sp.WORLD_HEADING)
    assert "| stopped by the gate |" in text and "not a GPU" in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and "%" in line[:8]]
    assert [row.split("|")[1].strip() for row in rows] == ["0%", "20%", "30%", "40%"]
    # Re-running the profile bench keeps the world table.
    assert sp.main(["--runs", "1", "--jobs", "4", "--no-sleep", "--results", str(out)]) == 0
    again = out.read_text(encoding="utf-8")
    assert again.count(sp.WORLD_HEADING) == 1 and "| stopped by the gate |" in again
