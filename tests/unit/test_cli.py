"""The CLI: plan, validate, workflows export --check and --version, as a user runs them."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import yaml
from pack_cases import mutate
from typer.testing import CliRunner

from charpack.cli.main import app
from tests.support.commands import CHARPACK

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


def test_version_through_the_installed_entry_point() -> None:
    out = subprocess.run([*CHARPACK, "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("charpack ")


def test_plan_writes_one_workflow_per_job_and_a_summary(pack_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "plan"
    result = runner.invoke(app, ["plan", str(pack_file), "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "plan.json").read_text())
    assert [j["key"] for j in summary["jobs"]] == ["cafe/001", "cafe/002", "beach/001", "beach/002"]
    first = summary["jobs"][2]
    graph = json.loads((out / first["workflow"]).read_text())
    assert graph["base.sampler"]["inputs"]["seed"] == first["seed"] == 5
    face_name = graph["ref.face"]["inputs"]["image"]
    assert face_name.startswith("charpack/") and face_name in summary["uploads"]
    assert graph["save.run"]["inputs"]["name"] == "beach_001_5"


def test_plan_of_the_100_image_example_writes_100_workflows(tmp_path: Path) -> None:
    examples = tmp_path / "examples"
    shutil.copytree(REPO / "examples", examples)
    result = runner.invoke(
        app, ["plan", str(examples / "lookbook-100.yaml"), "--out", str(tmp_path / "p")]
    )
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "p" / "workflows").rglob("*.json"))) == 100


def test_validate_accepts_a_good_pack_and_rejects_a_bad_one(pack_file: Path) -> None:
    ok = runner.invoke(app, ["validate", str(pack_file)])
    assert ok.exit_code == 0 and "4 jobs" in ok.output
    pack_file.write_text(yaml.safe_dump(mutate("scenes.0.count", -3)))
    bad = subprocess.run(
        [*CHARPACK, "validate", str(pack_file)],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2
    assert "scenes[0].count: must be between 1 and 10000, got -3" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_validate_against_a_server_object_info_that_lacks_a_pack(
    pack_file: Path, tmp_path: Path
) -> None:
    core_only = REPO / "orchestrator" / "data" / "object_info" / "core-0.3.75.json"
    result = runner.invoke(app, ["validate", str(pack_file), "--object-info", str(core_only)])
    assert result.exit_code == 2
    assert "faceid.apply (IPAdapterFaceID): node type not found" in result.stderr
    assert "install the ComfyUI_IPAdapter_plus node pack" in result.stderr


def test_validate_takes_one_api_format_workflow(tmp_path: Path) -> None:
    """Every committed workflow passes; a broken one (also as a POST /prompt body) gets one line
    per problem; a UI-format workflow is refused with the way to export the API format."""
    for path in sorted((REPO / "workflows" / "api").glob("*.json")):
        result = runner.invoke(app, ["validate", str(path)])
        assert result.exit_code == 0, f"{path.name}: {result.output}"
    graph = json.loads((REPO / "workflows" / "api" / "full.json").read_text())
    graph["base.sampler"]["inputs"]["cfg"] = 400
    del graph["detail.run"]["inputs"]["denoise"]
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"prompt": graph, "client_id": "x"}))
    result = runner.invoke(app, ["validate", str(broken)])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "error: broken.json: base.sampler (KSampler): cfg: 400 is above the maximum 100.0 — "
        "lower it",
        "broken.json: detail.run (FaceDetailer): required input 'denoise' is missing — add it",
    ]
    ui = tmp_path / "ui.json"
    ui.write_text(json.dumps({"nodes": [{"id": 1, "type": "KSampler"}], "links": []}))
    result = runner.invoke(app, ["validate", str(ui)])
    assert result.exit_code == 2 and "Export (API)" in result.stderr


def test_examples_validate() -> None:
    for pack in sorted((REPO / "examples").glob("*.yaml")):
        result = runner.invoke(app, ["validate", str(pack)])
        assert result.exit_code == 0, f"{pack.name}: {result.exception or result.output}"


def test_committed_workflows_match_the_pipelines_module() -> None:
    result = runner.invoke(
        app, ["workflows", "export", "--check", "--dir", str(REPO / "workflows" / "api")]
    )
    assert result.exit_code == 0, result.output


def test_workflows_check_detects_drift_and_export_repairs_it(tmp_path: Path) -> None:
    target = tmp_path / "api"
    shutil.copytree(REPO / "workflows" / "api", target)
    full = target / "full.json"
    graph = json.loads(full.read_text())
    graph["base.sampler"]["inputs"]["cfg"] = 7.0
    full.write_text(json.dumps(graph))
    (target / "old.json").write_text("{}")
    drift = runner.invoke(app, ["workflows", "export", "--check", "--dir", str(target)])
    assert drift.exit_code == 1
    assert "full.json: differs" in drift.output and "old.json: not generated" in drift.output
    assert runner.invoke(app, ["workflows", "export", "--dir", str(target)]).exit_code == 0
    assert (
        runner.invoke(app, ["workflows", "export", "--check", "--dir", str(target)]).exit_code == 0
    )
