"""One Finding type for validate and preflight: preflight takes validate's findings apart by
their fields (node, input, code), so what it reports itself is not reported twice, and what it
does not check is kept, with the scenes that have it."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml
from pack_cases import VALID
from PIL import Image

from charpack.check.findings import Finding
from charpack.check.preflight import PreflightReport, check_jobs
from charpack.check.validate import validate_graph
from charpack.comfy.objectinfo import ObjectInfo
from charpack.pack.jobs import expand
from charpack.pack.packfile import load_pack


def test_a_finding_reads_as_one_line_and_serialises_every_field() -> None:
    finding = Finding(
        "workflow.above_maximum",
        "cafe/001: base.sampler (KSampler)",
        "cfg: 120.0 is above the maximum 100.0",
        "lower it",
        node="base.sampler",
        input="cfg",
        used_by=["cafe", "beach", "cafe"],
    )
    assert str(finding) == (
        "cafe/001: base.sampler (KSampler): cfg: 120.0 is above the maximum 100.0 — lower it"
    )
    assert finding.area == "workflow" and finding.used_by == ("beach", "cafe")
    assert finding.to_json()["used_by"] == ["beach", "cafe"]
    assert str(Finding("workflow.no_output_node", "", "graph has no output node")) == (
        "graph has no output node"
    )


def test_preflight_drops_what_it_checks_itself_and_keeps_the_rest(tmp_path: Path) -> None:
    (tmp_path / "faces").mkdir()
    Image.new("RGB", (48, 48), (205, 160, 130)).save(tmp_path / "faces" / "front.png")
    (tmp_path / "pack.yaml").write_text(yaml.safe_dump(VALID))
    jobs = expand(load_pack(tmp_path / "pack.yaml"))
    raw = copy.deepcopy(ObjectInfo.recorded().raw)
    del raw["IPAdapterFaceID"]  # a node type the server lacks
    raw["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0] = ["other.safetensors"]
    raw["KSampler"]["input"]["required"]["cfg"][1]["max"] = 3.0  # the pack asks for 4.0
    info = ObjectInfo(raw, source="a saved /object_info")

    graph = dict(jobs[0].graph)
    by_validate = {(f.node, f.input): f for f in validate_graph(graph, info)}
    # validate alone reports all three, as Findings with the node and input they are about
    assert by_validate["faceid.apply", None].code == "workflow.unknown_node"
    assert by_validate["base.ckpt", "ckpt_name"].code == "workflow.not_a_choice"
    assert by_validate["base.sampler", "cfg"].code == "workflow.above_maximum"

    report = check_jobs(
        jobs, info=info, lister=lambda folder: None, provisioning=None, report=PreflightReport("s")
    )
    assert all(isinstance(f, Finding) for f in report.findings)
    assert [f.location for f in report.errors if f.code == "node.missing"] == ["IPAdapterFaceID"]
    (ckpt,) = [f for f in report.errors if f.location == "models/checkpoints/bigLoveXL.safetensors"]
    assert ckpt.code == "model.missing" and "other.safetensors" in ckpt.fix
    workflow = [f for f in report.findings if f.area == "workflow"]
    # the missing node and the checkpoint name are reported once, by preflight's own checks
    assert {(f.node, f.input) for f in workflow} == {("base.sampler", "cfg")}
    (cfg,) = workflow
    assert cfg.level == "error" and cfg.fix == "lower it"
    assert cfg.used_by == ("beach", "cafe")
