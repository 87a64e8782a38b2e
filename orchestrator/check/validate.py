"""Static validation of an API-format graph against ``/object_info``: the checks ComfyUI's
``/prompt`` would make, made before any GPU time is spent, plus a few it does not make (unknown
input names, which ComfyUI silently ignores, and forbidden node types).

Every :class:`~charpack.check.findings.Finding` names the node id, its type, the input and
the fix, with a stable code (``workflow.<what>``) for scripts. File-name lists that the
recording leaves empty (core loaders on a bare server) are not checked here; ``charpack
preflight`` checks them against a live server. :func:`validate_pack` checks a whole pack from a
few representative graphs (see there), so a pack at the job limit validates in seconds.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from charpack_nodes.pipelines import PipelineSpec, catalog, evolve, is_link
from charpack_nodes.pipelines.params import shown

from ..comfy.objectinfo import InputSpec, ObjectInfo
from ..errors import PackError
from ..pack.jobs import Job, iter_jobs
from ..pack.packfile import Pack
from ..pack.packyaml import MAX_FILE_BYTES, describe_file
from .findings import Finding

MAX_WORKFLOW_BYTES = MAX_FILE_BYTES

# Link types that accept any source type.
_ANY = {"*"}


def validate_graph(graph: Mapping[str, Any], info: ObjectInfo) -> list[Finding]:
    """Return findings (empty when the graph would pass the server's validation)."""
    findings: list[Finding] = []
    has_output = False
    for node_id, node in graph.items():
        nid = _cut(node_id)
        if not isinstance(node, Mapping) or "class_type" not in node:
            findings.append(
                _at(nid, None, "no_class_type", "node has no class_type", "every node needs one")
            )
            continue
        class_type = _cut(str(node["class_type"]))
        where = f"{nid} ({class_type})"
        if class_type in catalog.FORBIDDEN:
            message = f"{class_type} is never used in charpack graphs"
            findings.append(_at(where, nid, "forbidden_node", message, "remove it"))
        spec = info.get(class_type)
        if spec is None:
            message = f"node type not found in {info.source}"
            findings.append(
                _at(where, nid, "unknown_node", message, f"install {_provider(class_type)}")
            )
            continue
        has_output = has_output or spec.output_node
        inputs = node.get("inputs", {})
        if not isinstance(inputs, Mapping):
            message = f"inputs must be an object of name: value, got {shown(inputs)}"
            findings.append(_at(where, nid, "inputs_not_object", message))
            continue
        for name, ispec in spec.inputs.items():
            if name not in inputs:
                if ispec.required:
                    message = f"required input {name!r} is missing"
                    findings.append(_at(where, nid, "missing_input", message, "add it", name))
                continue
            found = _check_value(ispec, inputs[name], graph, info)
            if found is not None:
                findings.append(_at(where, nid, *found, name))
        for name in inputs:
            if name not in spec.inputs:
                message = f"unknown input {shown(name)} (ComfyUI would ignore it)"
                fix = f"inputs are: {', '.join(spec.inputs)}"
                findings.append(_at(where, nid, "unknown_input", message, fix, _cut(name)))
    if graph and not has_output:
        message, fix = "graph has no output node", "add a save node (CharpackSavePack)"
        findings.append(_at("", None, "no_output_node", message, fix))
    return findings


def validate_pack(pack: Pack, info: ObjectInfo) -> tuple[int, list[Finding]]:
    """The number of jobs of ``pack`` and the findings of the workflows they would send, each
    finding once, located at the first job that has it (``<job key>: <node>``).

    Jobs of a scene differ only in seed and output name (``jobs.py`` builds them so), and scenes
    whose specs differ only in prompt text build the same graph but for that text, which is
    always text. So each distinct shape is checked through its first job and the jobs with its
    smallest and largest seed (the only value with a range that differs): a few graphs, not one
    per job, and no graph is kept.
    """
    shapes: dict[PipelineSpec, list[Job]] = {}  # shape -> [first, lowest seed, highest seed]
    # A scene's jobs share one scene_spec object, so its shape is made (and hashed) once; the
    # spec is kept alongside so that its id is not reused by a later scene's spec.
    known: dict[int, tuple[PipelineSpec, list[Job]]] = {}
    total = 0
    for job in iter_jobs(pack):
        total += 1
        entry = known.get(id(job.scene_spec))
        if entry is None:
            picked = shapes.setdefault(_shape(job.scene_spec), [job, job, job])
            entry = known[id(job.scene_spec)] = (job.scene_spec, picked)
        picked = entry[1]
        if job.seed < picked[1].seed:
            picked[1] = job
        elif job.seed > picked[2].seed:
            picked[2] = job
    findings: list[Finding] = []
    seen: set[Finding] = set()
    for picked in shapes.values():
        for job in dict.fromkeys(picked):
            for finding in validate_graph(job.make_graph(), info):
                if finding not in seen:
                    seen.add(finding)
                    findings.append(located(finding, job.key))
    return total, findings


def located(finding: Finding, prefix: str) -> Finding:
    """``finding`` with its location prefixed by a job key or file name (``prefix: node``)."""
    where = f"{prefix}: {finding.location}" if finding.location else prefix
    return replace(finding, location=where)


def _at(
    location: str,
    node: str | None,
    what: str,
    message: str,
    fix: str = "",
    input_name: str | None = None,
) -> Finding:
    return Finding(f"workflow.{what}", location, message, fix, node=node, input=input_name)


def _shape(spec: PipelineSpec) -> PipelineSpec:
    return evolve(spec, prompt="", negative="", output=evolve(spec.output, scene="s", name="n"))


def _cut(text: object) -> str:
    """A node id or type as text, cut short: a hostile file's ids can be any length."""
    out = str(text)
    return out if len(out) <= 80 else out[:79] + "…"


def _provider(class_type: str) -> str:
    spec = catalog.get(class_type)
    return f"the {spec.pack} node pack" if spec else "the node pack that provides it"


# The findings about an input's literal value (type, choice, range): preflight checks the values
# of model-file and upload inputs against the server's own lists instead, and drops these.
VALUE_CODES = frozenset(
    f"workflow.{what}"
    for what in (
        "not_a_choice", "not_boolean", "not_text", "not_whole_number", "not_number",
        "below_minimum", "above_maximum",
    )
)  # fmt: skip

_Found = tuple[str, str, str]  # (what, message, fix)


def _check_value(
    ispec: InputSpec, value: Any, graph: Mapping[str, Any], info: ObjectInfo
) -> _Found | None:
    if is_link(value):
        return _check_link(ispec, value, graph, info)
    if not ispec.accepts_literal:
        got = shown(value)
        return (
            "needs_link",
            f"input {ispec.name!r} needs a link from a {ispec.type} output, got {got}",
            "",
        )
    name = ispec.name
    if ispec.type == "COMBO":
        if ispec.choices and value not in ispec.choices:
            listed = ", ".join(map(str, ispec.choices[:12]))
            more = " …" if len(ispec.choices) > 12 else ""
            return "not_a_choice", f"{name}: {shown(value)} is not one of: {listed}{more}", ""
        return None
    if ispec.type == "BOOLEAN":
        if not isinstance(value, bool):
            return "not_boolean", f"{name}: must be true or false, got {shown(value)}", ""
        return None
    if ispec.type == "STRING":
        if not isinstance(value, str):
            return "not_text", f"{name}: must be text, got {shown(value)}", ""
        return None
    if ispec.type == "INT" and (isinstance(value, bool) or not isinstance(value, int)):
        return "not_whole_number", f"{name}: must be a whole number, got {shown(value)}", ""
    if ispec.type == "FLOAT" and (isinstance(value, bool) or not isinstance(value, (int, float))):
        return "not_number", f"{name}: must be a number, got {shown(value)}", ""
    lo, hi = ispec.options.get("min"), ispec.options.get("max")
    if lo is not None and value < lo:
        return "below_minimum", f"{name}: {shown(value)} is below the minimum {lo}", "raise it"
    if hi is not None and value > hi:
        return "above_maximum", f"{name}: {shown(value)} is above the maximum {hi}", "lower it"
    return None


def _check_link(
    ispec: InputSpec, link: list[Any], graph: Mapping[str, Any], info: ObjectInfo
) -> _Found | None:
    source_id, index = link
    source = graph.get(source_id)
    name = ispec.name
    if not isinstance(source, Mapping):
        message = f"input {name!r} links to node {shown(source_id)}, which does not exist"
        return "link_to_missing_node", message, ""
    source_info = info.get(str(source.get("class_type")))
    if source_info is None:
        return None  # reported on the source node itself
    if not 0 <= index < len(source_info.outputs):
        message = (
            f"input {name!r} links to output {index} of {_cut(source_id)} "
            f"({source_info.class_type}), which has {len(source_info.outputs)} outputs"
        )
        return "link_to_missing_output", message, ""
    out_type = source_info.outputs[index]
    want = ispec.type
    if want in _ANY or out_type in _ANY or want == "COMBO":
        return None
    if set(out_type.split(",")).isdisjoint(want.split(",")):
        message = (
            f"input {name!r} expects {want} but {_cut(source_id)} "
            f"({source_info.class_type}) output {index} is {out_type}"
        )
        return "link_type_mismatch", message, ""
    return None


def load_api_workflow(path: Path) -> dict[str, Any]:
    """Read an API-format workflow (``charpack plan`` output, ``workflows/api/*.json``, ComfyUI's
    "Export (API)", or a ``POST /prompt`` body holding one under ``prompt``).

    Raises :class:`PackError` naming the file and the fix for anything else, a UI-format
    workflow (ComfyUI's plain "Save") included.
    """
    problem = describe_file(path)
    if problem is not None:
        raise PackError(f"{path}: {problem} — give an API-format workflow (JSON)")
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_WORKFLOW_BYTES + 1)
    except OSError as exc:
        raise PackError(f"{path}: cannot read the file ({exc.strerror}) — check the path") from None
    if len(raw) > MAX_WORKFLOW_BYTES:
        raise PackError(
            f"{path}: larger than {MAX_WORKFLOW_BYTES // 2**20} MiB — a workflow is a few hundred "
            "KB; give an API-format workflow"
        )
    try:
        data = json.loads(raw.decode("utf-8"))
    except ValueError as exc:  # not UTF-8, not JSON, or a number too long to convert
        reason = str(exc)
        reason = reason if len(reason) <= 200 else reason[:199] + "…"
        raise PackError(
            f"{path}: not valid JSON ({reason}) — give an API-format workflow"
        ) from None
    except RecursionError:
        raise PackError(
            f"{path}: nested too deeply to be a workflow — give an API-format workflow"
        ) from None
    if isinstance(data, dict) and isinstance(data.get("prompt"), dict):
        data = data["prompt"]  # a POST /prompt body
    if isinstance(data, dict) and isinstance(data.get("nodes"), list):
        raise PackError(
            f"{path}: this is a UI-format workflow (ComfyUI's Save) — export it with "
            "Workflow > Export (API) and validate that file"
        )
    if (
        not isinstance(data, dict)
        or not data
        or not all(isinstance(node, dict) and "class_type" in node for node in data.values())
    ):
        raise PackError(
            f"{path}: not an API-format workflow (an object of nodes, each with class_type and "
            "inputs) — give a pack file (YAML) or an API-format workflow (JSON)"
        )
    return data
