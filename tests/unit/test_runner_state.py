"""The runner's bookkeeping without servers: attempts recorded before posting, the identity gate
and retry budgets, resuming a pack folder, stage timings from websocket events, and where
downloaded files go."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from charpack.comfy.events import (
    Done,
    Executing,
    ExecutionCached,
    ExecutionStart,
    ExecutionSuccess,
)
from charpack.comfy.results import JobResult, JobStatus, OutputRef
from charpack.folder.manifest import FileRecord, Manifest, ManifestError
from charpack.pack.jobs import prompt_id_for, retry_seed
from charpack.pack.packfile import IdentityGate, Pack, load_pack
from charpack.run.events import StageClocks, stage_of
from charpack.run.fetcher import destinations, score_of
from charpack.run.retry_rules import LOST_LIMIT, Ending, below
from charpack.run.state import PackState
from charpack.run.worker import substitute

REPO = Path(__file__).resolve().parents[2]

PACK = """\
version: 1
pack: unit-pack
seed: 11
character:
  name: Ava
  lora: {file: character_lora.safetensors, strength: 0.7}
  face_references: [faces/ava_front.png]
defaults: {width: 256, height: 384}
identity: {threshold: 0.6, max_attempts: 3}
scenes:
  - {name: cafe, prompt: at a cafe, count: 2}
  - {name: walk, prompt: in a park, seeds: [5]}
"""


def make_pack(folder: Path, text: str = PACK) -> Pack:
    (folder / "faces").mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "examples" / "faces" / "ava_front.png", folder / "faces")
    (folder / "pack.yaml").write_text(text)
    return load_pack(folder / "pack.yaml")


@pytest.fixture
def pack(tmp_path: Path) -> Pack:
    return make_pack(tmp_path / "src")


def begin(state: PackState, key: str) -> str:
    return state.begin(
        key, server="http://s:8188", version="0.3.75", seed=state.seed_for(key), workflow={}
    )


GATE = IdentityGate(enabled=True, threshold=0.6, max_attempts=3)  # PACK's identity


def scored(score: float, path: str = "cafe/x.png") -> Ending:
    """A finished attempt with the gate's verdict on ``score``, as the download thread makes it."""
    files: list[FileRecord] = [{"path": path, "sha256": "0" * 64, "bytes": 1}]
    return Ending("success", score=score, rejected=below(GATE, score), files=files)


def on_disk(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def test_nothing_is_written_until_saved_and_every_job_starts_pending(
    pack: Pack, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    state = PackState.open(out, pack, max_retries=2)
    assert not out.exists()  # a run that cannot reach a server leaves no folder behind
    assert state.todo() == ["cafe/001", "cafe/002", "walk/001"]
    state.save()
    data = on_disk(out)
    assert data["pack"]["name"] == "unit-pack" and len(data["pack"]["sha256"]) == 64
    assert data["identity"] == {"enabled": True, "threshold": 0.6, "max_attempts": 3}
    assert {k: v["status"] for k, v in data["jobs"].items()} == dict.fromkeys(state.jobs, "pending")


def test_an_attempt_is_on_disk_with_its_prompt_id_before_the_caller_can_post_it(
    pack: Pack, tmp_path: Path
) -> None:
    state = PackState.open(tmp_path / "out", pack, max_retries=2)
    graph = {"save.run": {"class_type": "CharpackSavePack", "inputs": {"seed": 1}}}
    prompt_id = state.begin(
        "walk/001", server="http://s:8188", version="0.3.75", seed=5, workflow=graph
    )
    assert prompt_id == prompt_id_for(state.run_id, "walk/001", 1)
    job = on_disk(tmp_path / "out")["jobs"]["walk/001"]
    assert job["status"] == "submitted" and job["prompt_id"] == prompt_id
    (attempt,) = job["attempts"]
    assert attempt["status"] == "submitted" and attempt["workflow"] == graph
    assert attempt["server"] == "http://s:8188" and attempt["comfyui_version"] == "0.3.75"


def test_identity_gate_retries_with_new_seeds_then_keeps_the_best_below(
    pack: Pack, tmp_path: Path
) -> None:
    state = PackState.open(tmp_path / "out", pack, max_retries=2)
    job = state.jobs["cafe/001"]
    seeds = []
    for n, score in enumerate((0.40, 0.55, 0.30), start=1):
        seeds.append(state.seed_for("cafe/001"))
        pid = begin(state, "cafe/001")
        decision = state.end("cafe/001", pid, scored(score, f"rejected/cafe/{n}.png"))
        if n < 3:
            assert decision.action == "retry" and decision.seed == retry_seed(job, n + 1)
    assert seeds == [retry_seed(job, 1), retry_seed(job, 2), retry_seed(job, 3)]
    assert seeds[0] == job.base_seed and len(set(seeds)) == 3
    assert decision.action == "below_threshold"
    state.flush()  # the run loop does so once per message handled
    entry = on_disk(tmp_path / "out")["jobs"]["cafe/001"]
    assert entry["status"] == "below_threshold"
    assert entry["score"] == 0.55 and entry["seed"] == seeds[1]
    assert entry["image"] == "rejected/cafe/2.png"
    assert [a["status"] for a in entry["attempts"]] == ["below_threshold"] * 3


def test_a_score_at_the_threshold_is_accepted(pack: Pack, tmp_path: Path) -> None:
    state = PackState.open(tmp_path / "out", pack, max_retries=2)
    pid = begin(state, "cafe/001")
    assert state.end("cafe/001", pid, scored(0.6, "cafe/a.png")).action == "done"
    entry = state.entry("cafe/001")
    assert (entry["status"], entry["image"], entry["score"]) == ("done", "cafe/a.png", 0.6)


def test_execution_errors_retry_with_new_seeds_up_to_max_retries(
    pack: Pack, tmp_path: Path
) -> None:
    state = PackState.open(tmp_path / "out", pack, max_retries=1)
    first = begin(state, "walk/001")
    decision = state.end("walk/001", first, Ending("error", error="node boom failed"))
    assert decision.action == "retry" and decision.seed != 5
    second = begin(state, "walk/001")
    decision = state.end("walk/001", second, Ending("error", error="node boom failed"))
    assert decision.action == "failed"
    entry = state.entry("walk/001")
    assert entry["status"] == "failed" and entry["error"] == "node boom failed"


def test_a_lost_prompt_runs_again_with_the_same_seed_but_not_forever(
    pack: Pack, tmp_path: Path
) -> None:
    state = PackState.open(tmp_path / "out", pack, max_retries=2)
    for n in range(1, LOST_LIMIT + 1):
        pid = begin(state, "walk/001")
        assert pid == prompt_id_for(state.run_id, "walk/001", n)  # a new id each time
        decision = state.end("walk/001", pid, Ending("lost", error="server restarted"))
        if n < LOST_LIMIT:
            assert decision.action == "requeue" and decision.seed == 5
    assert decision.action == "failed" and "lost 5 times" in decision.message


def test_a_stale_attempt_cannot_change_the_job(pack: Pack, tmp_path: Path) -> None:
    state = PackState.open(tmp_path / "out", pack, max_retries=2)
    old = begin(state, "walk/001")
    state.end("walk/001", old, Ending("lost", error="moved"))
    begin(state, "walk/001")
    assert state.end("walk/001", old, scored(0.9)).action == "ignored"
    assert state.entry("walk/001")["status"] == "submitted"


def test_resume_keeps_finished_jobs_finds_prompts_in_flight_and_retries_failed_ones(
    pack: Pack, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    state = PackState.open(out, pack, max_retries=0)
    done = begin(state, "cafe/001")
    state.end("cafe/001", done, scored(0.9, "cafe/ok.png"))
    flying = begin(state, "cafe/002")
    broken = begin(state, "walk/001")
    state.end("walk/001", broken, Ending("error", error="boom"))
    assert state.entry("walk/001")["status"] == "failed"
    state.flush()  # the run loop does so once per message handled

    again = PackState.open(out, pack, max_retries=0)
    assert again.run_id == state.run_id
    assert [(k, a["prompt_id"]) for k, a in again.in_flight()] == [("cafe/002", flying)]
    assert again.todo() == ["walk/001"]  # the failed job gets a fresh budget
    retry = begin(again, "walk/001")
    assert again.end("walk/001", retry, Ending("error", error="boom")).action == "failed"
    assert len(again.entry("walk/001")["attempts"]) == 2


def test_a_folder_made_from_another_pack_is_refused_with_the_fix(
    pack: Pack, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    PackState.open(out, pack, max_retries=2).save()
    edited = make_pack(tmp_path / "edited", PACK.replace("count: 2", "count: 3"))
    with pytest.raises(ManifestError, match="--out with a new folder") as info:
        PackState.open(out, edited, max_retries=2)
    assert "unit-pack" in str(info.value)
    assert Manifest.load(out).header["pack"]["sha256"]  # the folder was left as it was


def test_stage_timings_come_from_executing_transitions_grouped_by_prefix() -> None:
    clocks = StageClocks()
    clocks.submitted("p", 100.0)
    s = "srv"
    for event in (
        ExecutionStart(s, 101.5, prompt_id="p"),
        ExecutionCached(s, 101.5, prompt_id="p", nodes=("ref.face",)),
        Executing(s, 101.6, prompt_id="p", node="base.ckpt"),
        Executing(s, 101.7, prompt_id="p", node="base.sampler"),
        Executing(s, 104.7, prompt_id="p", node="upscale.run"),
        Executing(s, 105.0, prompt_id=None, node="upscale.run"),  # a reconnect's re-send
        Executing(s, 106.7, prompt_id="p", node="save.run"),
        Executing(s, 106.8, prompt_id="other", node="base.ckpt"),
        ExecutionSuccess(s, 107.0, prompt_id="p"),
        Done(s, 107.1, prompt_id="p"),
    ):
        clocks.handle(event)
    clocks.submitted("p", 100.2)  # the POST's own time, reported after the server started it
    times = clocks.pop("p")
    assert times.queue_wait_s == pytest.approx(1.3)
    assert times.stages == pytest.approx({"base": 3.1, "upscale": 2.0, "save": 0.3})
    assert clocks.pop("p").queue_wait_s is None  # forgotten
    assert stage_of("instantid.detailer.0.0.3") == "instantid" and stage_of("x") == "other"


def test_files_go_under_the_scene_images_first_and_scores_are_read_from_the_score_node() -> None:
    refs = (
        OutputRef("a.json", "p/s", "output", "save.run", key="sidecars"),
        OutputRef("a.png", "p/s", "output", "save.run", key="images"),
    )
    placed = [rel for _, rel in destinations(refs, "rejected/cafe", "cafe_001_7")]
    assert placed == ["rejected/cafe/cafe_001_7.png", "rejected/cafe/cafe_001_7.json"]
    result = JobResult("p", JobStatus.SUCCESS, refs, ui={"score.run": {"scores": (0.7, 0.4)}})
    assert score_of(result) == 0.4
    assert score_of(JobResult("p", JobStatus.SUCCESS, refs)) is None


def test_upload_names_a_server_changed_are_substituted_in_the_graph() -> None:
    graph = {"ref.face": {"class_type": "LoadImage", "inputs": {"image": "charpack/a.png"}}}
    out = substitute(graph, {"charpack/a.png": "charpack/a (1).png"})
    assert out["ref.face"]["inputs"]["image"] == "charpack/a (1).png"
    assert graph["ref.face"]["inputs"]["image"] == "charpack/a.png"
