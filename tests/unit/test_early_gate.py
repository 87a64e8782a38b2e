"""The early identity gate without a server: where the pack file puts it in the graph, how a
blocked prompt is read from its history, how its attempt is recorded and retried, and what the
report makes of the attempts (GPU seconds and cost per accepted image, attempts stopped early).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from charpack.cli import pack as cli_pack
from charpack.comfy.results import JobResult, JobStatus
from charpack.errors import PackError
from charpack.folder.manifest import FileRecord
from charpack.folder.report import build_report
from charpack.pack.jobs import expand
from charpack.pack.packfile import Pack
from charpack.run.events import PromptTimes
from charpack.run.retry_rules import NO_FACE, STOPPED_EARLY, EarlyStop, Ending, below, early_stop
from charpack.run.state import PackState
from charpack_nodes.pipelines import PipelineSpec, build_pipeline, catalog, finish, gate
from charpack_nodes.pipelines import face as F
from charpack_nodes.pipelines import models as M
from tests.unit.test_runner_state import PACK, make_pack


def _pack(tmp_path: Path, identity: str) -> Pack:
    return make_pack(tmp_path / "src", PACK.replace("{threshold: 0.6, max_attempts: 3}", identity))


def _graph(pack: Pack) -> dict[str, Any]:
    return expand(pack)[0].graph


def test_a_pack_that_retries_gates_after_the_instantid_fix_at_threshold_minus_the_margin(
    tmp_path: Path,
) -> None:
    pack = _pack(tmp_path, "{threshold: 0.6, max_attempts: 3}")
    g = _graph(pack)
    assert pack.identity.early_threshold == pytest.approx(0.5)  # 0.6 - the 0.10 default margin
    score, blocker = g[gate.GATE_SCORE], g[gate.GATE]
    assert score["class_type"] == catalog.IDENTITY_SCORE.class_type
    assert score["inputs"]["images"] == [F.INSTANTID_DETAILER, 0]
    assert score["inputs"]["reference"] == g[M.FACEID_APPLY]["inputs"]["image"]  # the face
    assert blocker["class_type"] == catalog.IDENTITY_GATE.class_type
    assert blocker["inputs"] == {
        "images": [F.INSTANTID_DETAILER, 0], "score": [gate.GATE_SCORE, 1], "threshold": 0.5,
    }  # fmt: skip
    # Everything after the fix hangs off the gate, so a block skips detailer, upscale and save.
    assert g[F.DETAIL]["inputs"]["image"] == [gate.GATE, 0]


def test_the_margin_is_a_pack_option_and_the_gate_can_be_turned_off(tmp_path: Path) -> None:
    wide = _pack(tmp_path / "a", "{threshold: 0.6, max_attempts: 3, early_gate: {margin: 0.25}}")
    assert _graph(wide)[gate.GATE]["inputs"]["threshold"] == pytest.approx(0.35)
    off = _pack(tmp_path / "b", "{threshold: 0.6, max_attempts: 3, early_gate: {enabled: false}}")
    assert off.identity.early_threshold is None and gate.GATE not in _graph(off)
    assert _graph(off)[F.DETAIL]["inputs"]["image"] == [F.INSTANTID_DETAILER, 0]


def test_no_gate_where_nothing_would_be_retried_or_scored(tmp_path: Path) -> None:
    # max_attempts 1 (the identity test): the only attempt runs whole, its final score measured.
    once = _pack(tmp_path / "a", "{threshold: 0.6, max_attempts: 1}")
    assert once.identity.early_threshold is None and gate.GATE not in _graph(once)
    unscored = _pack(tmp_path / "b", "{enabled: false, max_attempts: 3}")
    assert gate.GATE not in _graph(unscored) and gate.GATE_SCORE not in _graph(unscored)
    # The pipeline's own default (macro nodes, workflows/) has no early gate.
    assert gate.GATE not in {n.id for n in build_pipeline(PipelineSpec()).graph}


def test_a_margin_out_of_range_names_the_field(tmp_path: Path) -> None:
    with pytest.raises(PackError, match=r"identity\.early_gate\.margin"):
        _pack(tmp_path, "{threshold: 0.6, max_attempts: 3, early_gate: {margin: 0}}")


def _result(ui: dict[str, Any], *, ok: bool = True) -> JobResult:
    status = JobStatus.SUCCESS if ok else JobStatus.ERROR
    return JobResult("p", status, ui=ui, started_ms=1_000, finished_ms=4_500)


def _blocked(score: float | None) -> dict[str, Any]:
    return {
        gate.GATE_SCORE: {"scores": (score,), "faces": (score is not None,)},
        gate.GATE: {"passed": (False,), "threshold": (0.5,), "text": ("blocked: …",)},
    }


def test_a_blocked_prompt_is_read_from_the_gates_ui_output() -> None:
    assert early_stop(_result(_blocked(0.312))) == EarlyStop(0.312)
    assert early_stop(_result(_blocked(None))) == EarlyStop(NO_FACE)
    passed = {**_blocked(0.7), gate.GATE: {"passed": (True,)}}
    assert early_stop(_result(passed)) is None
    assert early_stop(_result({finish.SCORE: {"scores": (0.7,)}})) is None
    assert early_stop(_result(_blocked(0.3), ok=False)) is None  # an error is an error


def _ending(pack: Pack, result: JobResult, score: Any, files: list[FileRecord]) -> Ending:
    """The ending the runner makes, with the verdict the download thread gives it."""
    rejected = early_stop(result) is not None or below(pack.identity, score)
    return Ending.of(
        result, score=score, rejected=rejected, files=files, times=PromptTimes(None, {}),
        submitted_at=None,
    )  # fmt: skip


def _stopped_early_then_accepted(tmp_path: Path) -> tuple[PackState, str]:
    """A saved pack folder with one job: stopped by the early gate at 0.312, retried with the
    seed the decision gave, accepted at 0.7 (3.5 s of execution each)."""
    pack = _pack(tmp_path, "{threshold: 0.6, max_attempts: 2}")
    state = PackState.open(tmp_path / "out", pack, max_retries=2)
    key = "cafe/001"
    first = state.begin(key, server="s", version="0.3.75", seed=state.seed_for(key), workflow={})
    decision = state.end(key, first, _ending(pack, _result(_blocked(0.312)), 0.312, []))
    assert decision.action == "retry" and decision.seed != state.jobs[key].base_seed
    assert "early gate" in decision.message and "0.312" in decision.message
    second = state.begin(key, server="s", version="0.3.75", seed=decision.seed, workflow={})
    png: list[FileRecord] = [{"path": "cafe/x.png", "sha256": "0" * 64, "bytes": 1}]
    final = _result({finish.SCORE: {"scores": (0.7,), "faces": (True,)}})
    assert state.end(key, second, _ending(pack, final, 0.7, png)).action == "done"
    state.save()
    return state, key


def test_a_blocked_attempt_records_where_it_stopped_and_is_retried_like_a_rejection(
    tmp_path: Path,
) -> None:
    state, key = _stopped_early_then_accepted(tmp_path)
    out = tmp_path / "out"
    a, b = state.entry(key)["attempts"]
    assert (a["status"], a["stopped_at"], a["early_score"]) == (
        "below_threshold", STOPPED_EARLY, 0.312,
    )  # fmt: skip
    assert a["score"] is None and a["files"] == [] and a["execution_s"] == pytest.approx(3.5)
    assert b["status"] == "success" and "stopped_at" not in b and b["score"] == 0.7
    report = build_report(out, price_per_hour=3.60)
    assert report.stopped_early == 1 and report.early_scores == [0.312]
    assert report.images == 1 and report.gpu_seconds_per_image == pytest.approx(7.0)
    assert report.gpu_cost_per_image == pytest.approx(7.0 / 3600 * 3.60)
    assert report.to_json()["gpu_cost_per_image"] == pytest.approx(0.007)


def test_when_every_attempt_stops_early_the_job_ends_below_the_threshold_saying_so(
    tmp_path: Path,
) -> None:
    pack = _pack(tmp_path, "{threshold: 0.6, max_attempts: 2}")
    state = PackState.open(tmp_path / "out", pack, max_retries=2)
    key = "cafe/001"
    for score in (0.2, None):
        seed = state.seed_for(key)
        pid = state.begin(key, server="s", version="0.3.75", seed=seed, workflow={})
        decision = state.end(key, pid, _ending(pack, _result(_blocked(score)), score, []))
    assert decision.action == "below_threshold"
    assert "1 with no face found" in decision.message
    assert "2 stopped at the early gate" in decision.message
    entry = state.entry(key)
    assert entry["status"] == "below_threshold" and entry["image"] is None


def test_charpack_report_prints_gpu_per_accepted_image_and_the_early_stops(
    tmp_path: Path,
) -> None:
    _stopped_early_then_accepted(tmp_path)
    out = tmp_path / "out"
    app = typer.Typer()
    app.command()(cli_pack.report)
    app.command()(cli_pack.publish)  # two commands, so typer keeps the command name
    shown = CliRunner().invoke(app, ["report", str(out), "--price-per-hour", "3.6"])
    assert shown.exit_code == 0, shown.output
    text = " ".join(shown.output.split())
    assert "GPU per accepted image: 7.0 s server execution (all 2 timed attempts over 1 " in text
    assert "× $3.60/h = $0.00700" in text
    assert "early identity gate: 1 of 2 attempt(s) stopped after the InstantID fix" in text
    assert "early scores 0.312–0.312" in text
