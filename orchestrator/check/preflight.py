"""``charpack preflight PACK --server URL``: is this server ready for this pack, before any GPU time
is spent?

Owns the comparison of what a pack's workflows need with what one live server has: that it
answers (with our credentials), its ComfyUI version against the pinned one, its charpack nodes'
version against this client's (``GET /charpack/version``: another version is an error, since
the workflows this client builds are made for its own nodes), every node type
(from ``/object_info``), every model file a loader names (the loader's file list in
``/object_info``) and every file a loader finds by name on its own (the FaceID loader's
IP-Adapter, LoRA and CLIP vision files, via ``/models/<folder>``), the InsightFace model packs
when the server lists ``models/insightface``, and :func:`~charpack.check.validate.validate_graph`
of every distinct workflow against the live ``/object_info`` (input names and ranges).

Each missing piece names the provisioning entry that provides it (``runpod/manifest.toml``:
``[node_packs.*]`` for node types, ``[models.*]`` with the folder for model files). It reads the
server only; nothing is uploaded or queued. The checks themselves (:func:`check_jobs`) take the
object_info and a folder lister, so they also run against a saved ``/object_info``.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from charpack_nodes.pipelines import catalog

from ..comfy.client import ComfyClient
from ..comfy.objectinfo import ObjectInfo
from ..comfy.rejections import LOADER_FOLDERS
from ..errors import AuthError, MissingOnServer, ServerUnavailable
from ..pack.jobs import Job
from ..pod import version as pod_version
from ..pod.spec import default_manifest_path
from .findings import Finding
from .validate import VALUE_CODES, validate_graph

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PINNED_COMFYUI = "0.3.75"
Lister = Callable[[str], "list[str] | None"]  # models/<folder> listing; None: folder unknown

# Files a node finds by name pattern rather than through an input (IPAdapter's Unified Loader
# FaceID, per preset): (folder, pattern it matches, the upstream file name to put there).
_FOUND_BY_NAME: dict[tuple[str, str], tuple[tuple[str, str, str], ...]] = {
    (catalog.IPADAPTER_UNIFIED_LOADER_FACEID.class_type, "FACEID PLUS V2"): (
        (catalog.FOLDER_IPADAPTER, r"faceid.plusv2.sdxl\.(safetensors|bin)$",
         "ip-adapter-faceid-plusv2_sdxl.bin"),
        (catalog.FOLDER_LORAS, r"faceid.plusv2.sdxl.lora\.safetensors$",
         "ip-adapter-faceid-plusv2_sdxl_lora.safetensors"),
        (catalog.FOLDER_CLIP_VISION, r"ViT.H.14.*s32B.b79K",
         "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors"),
    ),
}  # fmt: skip


# The files of an InsightFace pack that detection and the identity embedding need (both cubiq
# packs load whatever else the folder holds; provisioning places the whole pack).
_FACE_FILES = {
    "buffalo_l": ("det_10g.onnx", "w600k_r50.onnx"),
    "antelopev2": ("scrfd_10g_bnkps.onnx", "glintr100.onnx"),
}


@dataclass
class PreflightReport:
    server: str
    comfyui_version: str | None = None
    findings: list[Finding] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)
    reachable: bool = True

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "warning"]

    @property
    def ok(self) -> bool:
        return self.reachable and not self.errors

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else (2 if self.reachable else 3)


@dataclass(frozen=True)
class Provisioning:
    """The parts of ``runpod/manifest.toml`` preflight points to."""

    path: str
    comfyui_version: str
    node_packs: dict[str, str]  # name -> "repo @ commit"
    models: dict[tuple[str, str], str]  # (folder, file) -> key

    def pack_entry(self, pack: str) -> str | None:
        if pack == catalog.CORE:
            return f"[comfyui] version {self.comfyui_version} in {self.path}"
        if pack in self.node_packs:
            return f"[node_packs.{pack}] ({self.node_packs[pack]}) in {self.path}"
        return None

    def model_entry(self, folder: str, file: str) -> str | None:
        key = self.models.get((folder, file))
        return None if key is None else f"[models.{key}] in {self.path}"

    def pack_files(self, folder: str) -> list[str]:
        return sorted(file for (fold, file) in self.models if fold == folder)


def load_provisioning(path: Path | None = None) -> Provisioning | None:
    """Read runpod/manifest.toml (None when charpack runs without its checkout)."""
    path = path or default_manifest_path()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return None
    packs = {
        name: f"{entry.get('repo', '?').removeprefix('https://github.com/')} @ "
        f"{str(entry.get('commit', '?'))[:7]}"
        for name, entry in raw.get("node_packs", {}).items()
    }
    models = {(str(m["folder"]), str(m["file"])): key for key, m in raw.get("models", {}).items()}
    version = str(raw.get("comfyui", {}).get("version", PINNED_COMFYUI))
    return Provisioning("runpod/manifest.toml", version, packs, models)


def preflight(
    jobs: list[Job], *, client: ComfyClient, provisioning: Provisioning | None = None
) -> PreflightReport:
    """Check the server behind ``client`` for everything ``jobs`` need; never raises for it."""
    report = PreflightReport(server=client.config.label)
    try:
        stats = client.system_stats()
        raw_info = client.object_info()
    except (ServerUnavailable, AuthError) as exc:
        report.reachable = False
        code = "server.refused" if isinstance(exc, AuthError) else "server.unreachable"
        report.findings.append(Finding(code, client.config.label, str(exc), _reach_fix(exc)))
        return report
    pinned = provisioning.comfyui_version if provisioning else PINNED_COMFYUI
    version = stats.get("system", {}).get("comfyui_version")
    report.comfyui_version = None if version is None else str(version)
    if report.comfyui_version != pinned:
        subject = f"ComfyUI {report.comfyui_version or 'unknown'}"
        problem = f"charpack is tested with ComfyUI {pinned}; node packs are pinned for it"
        fix = f"run ComfyUI {pinned} ([comfyui] in runpod/manifest.toml) or try a few images first"
        report.findings.append(Finding("version.comfyui", subject, problem, fix, "warning"))

    def lister(folder: str) -> list[str] | None:
        try:
            return client.models(folder)
        except MissingOnServer:
            return None

    _check_charpack_version(client, raw_info, report)
    info = ObjectInfo(raw_info, source=f"the /object_info of {client.config.label}")
    check_jobs(jobs, info=info, lister=lister, provisioning=provisioning, report=report)
    return report


def _check_charpack_version(
    client: ComfyClient, raw_info: dict[str, Any], report: PreflightReport
) -> None:
    ours = pod_version.client_version()
    try:
        theirs = pod_version.server_version(client)
    except (ServerUnavailable, AuthError) as exc:
        problem = f"could not read {pod_version.VERSION_ROUTE}: {exc}"
        fix = "run preflight again"
        report.findings.append(
            Finding("version.charpack_unread", "charpack nodes", problem, fix, "warning")
        )
        return
    ours_loaded = any(getattr(catalog.get(ct), "pack", None) == catalog.CHARPACK for ct in raw_info)
    if theirs is None and not ours_loaded:
        return  # no charpack nodes at all: the node check names them with the fix
    if theirs is not None and theirs.matches(ours):
        return
    problem, fix = pod_version.mismatch_message(theirs, ours)
    subject = f"charpack nodes {theirs or 'of unknown version'}"
    report.findings.append(Finding("version.charpack_mismatch", subject, problem, fix))


def check_jobs(
    jobs: Iterable[Job],
    *,
    info: ObjectInfo,
    lister: Lister,
    provisioning: Provisioning | None,
    report: PreflightReport,
) -> PreflightReport:
    """Compare the jobs' workflows with ``info`` and the folder listings; add findings."""
    graphs: dict[str, dict[str, Any]] = {}
    for job in jobs:  # workflows differ in seeds and names only within a scene
        if job.scene not in graphs:
            graphs[job.scene] = dict(job.graph)
    types: dict[str, set[str]] = {}
    files: dict[tuple[str, str, str, str], set[str]] = {}  # (folder, type, input, file)
    found_by_name: dict[tuple[str, str, str, str], set[str]] = {}  # (+ the node type)
    face_packs: dict[str, set[str]] = {}
    # Nodes whose type is reported missing here, and inputs whose values are checked here
    # against the server's own lists: validate_graph's findings about them are left out.
    skip_nodes: set[str] = set()
    skip_values: set[tuple[str, str]] = set()  # (node id, input)
    for scene, graph in graphs.items():
        for node_id, node in graph.items():
            ct, inputs = str(node["class_type"]), node.get("inputs", {})
            types.setdefault(ct, set()).add(scene)
            if ct not in info:
                skip_nodes.add(node_id)
            if ct == catalog.LOAD_IMAGE.class_type:  # charpack run uploads these first
                skip_values.add((node_id, "image"))
            for folder, name, value in model_files(ct, inputs):
                files.setdefault((folder, ct, name, value), set()).add(scene)
                skip_values.add((node_id, name))
            for need in _FOUND_BY_NAME.get((ct, str(inputs.get("preset"))), ()):
                found_by_name.setdefault((*need, ct), set()).add(scene)
            pack = _face_pack(ct, inputs)
            if pack:
                face_packs.setdefault(pack, set()).add(scene)
    add = report.findings.append
    for ct, scenes in sorted(types.items()):
        if ct not in info:
            add(_missing_node(ct, scenes, provisioning))
    for (folder, ct, name, value), scenes in sorted(files.items()):
        spec = info.get(ct)
        choices = spec.inputs[name].choices if spec and name in spec.inputs else None
        have = list(choices) if choices is not None else lister(folder)
        if have is None:
            add(_unchecked(folder, value, ct, scenes, provisioning))
        elif value not in have:
            add(_missing_file(folder, value, have, scenes, provisioning))
    for (folder, pattern, upstream, ct), scenes in sorted(found_by_name.items()):
        have = lister(folder)
        if have is None:
            add(_unchecked(folder, upstream, ct, scenes, provisioning))
        elif not any(re.search(pattern, f, re.IGNORECASE) for f in have):
            add(_missing_file(folder, upstream, have, scenes, provisioning))
    _check_face_packs(face_packs, lister, provisioning, add)
    refused: dict[Finding, list[str]] = {}  # validate_graph's finding -> scenes
    for scene, graph in graphs.items():
        for finding in validate_graph(graph, info):
            if finding.node in skip_nodes or (
                finding.code in VALUE_CODES and (finding.node, finding.input) in skip_values
            ):
                continue
            refused.setdefault(finding, []).append(scene)
    for finding, where in refused.items():
        add(replace(finding, used_by=where))
    report.checked.update(
        workflows=len(graphs),
        node_types=len(types),
        model_files=len(files) + len(found_by_name),
        insightface_packs=len(face_packs),
    )
    return report


def model_files(class_type: str, inputs: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The model files a node loads by name: (models/ folder, input name, file name)."""
    return [
        (folder, name, inputs[name])
        for (loader, name), folder in LOADER_FOLDERS.items()
        if class_type == loader and isinstance(inputs.get(name), str)
    ]


def _face_pack(class_type: str, inputs: dict[str, Any]) -> str | None:
    """The InsightFace model pack a node loads from models/insightface/models/ (both cubiq
    packs hard-code that folder)."""
    if class_type == catalog.IPADAPTER_UNIFIED_LOADER_FACEID.class_type:
        return "buffalo_l"
    if class_type == catalog.INSTANTID_FACE_ANALYSIS.class_type:
        return "antelopev2"
    if class_type == catalog.IDENTITY_SCORE.class_type:
        return str(inputs.get("model_pack", "buffalo_l"))
    return None


def _check_face_packs(
    packs: dict[str, set[str]], lister: Lister, prov: Provisioning | None, add: Callable[..., None]
) -> None:
    listed = lister(catalog.FOLDER_INSIGHTFACE) if packs else None
    have = {f.replace("\\", "/") for f in listed} if listed is not None else None
    for pack, scenes in sorted(packs.items()):
        folder = f"{catalog.FOLDER_INSIGHTFACE}/models/{pack}"
        subject, wanted = f"models/{folder}/", prov.pack_files(folder) if prov else []
        needed = _FACE_FILES.get(pack, tuple(wanted))
        if have is None:
            problem = "cannot be probed: the server does not list models/insightface"
            fix = f"make sure {subject} holds {', '.join(wanted) or 'the pack'} (not nested)"
            add(Finding("insightface.unprobed", subject, problem, fix, "warning", used_by=scenes))
            continue
        absent = [f for f in needed if f"models/{pack}/{f}" not in have]
        if absent or not any(f.startswith(f"models/{pack}/") for f in have):
            entries = [e for f in absent if prov and (e := prov.model_entry(folder, f))]
            problem = f"InsightFace pack {pack} is missing {', '.join(absent) or 'its files'}"
            fix = f"place them in {subject} (not nested): {', '.join(entries) or 'see runpod/'}"
            add(Finding("insightface.missing", subject, problem, fix, used_by=scenes))


def _missing_node(ct: str, scenes: set[str], prov: Provisioning | None) -> Finding:
    spec = catalog.get(ct)
    pack = spec.pack if spec else None
    entry = prov.pack_entry(pack) if prov and pack else None
    if pack == catalog.CORE:
        fix = f"run the pinned ComfyUI ({entry or PINNED_COMFYUI}): this one lacks a core node"
    elif pack == catalog.CHARPACK:
        fix = "install charpack's node pack (custom_nodes/charpack_nodes, linked by provisioning)"
    elif entry:
        fix = f"install {pack}: provisioning entry {entry}"
    else:
        fix = f"install {pack or 'the node pack that provides it'}"
    return Finding("node.missing", ct, "node type not on the server", fix, used_by=scenes)


def _missing_file(
    folder: str, value: str, have: list[str], scenes: set[str], prov: Provisioning | None
) -> Finding:
    where, _, file = f"{folder}/{value}".rpartition("/")
    entry = prov.model_entry(where, file) if prov else None
    listing = ", ".join(have[:12]) + (" …" if len(have) > 12 else "") if have else "none"
    if entry:
        fix = f"put {file} in models/{where}/: provisioning entry {entry} downloads it"
    else:
        fix = (
            f"put {file} in models/{where}/ on the server (no provisioning entry: it is the "
            f"pack's own file) or fix the name in the pack; the server has: {listing}"
        )
    problem = f"{file} is not in models/{where}/"
    return Finding("model.missing", f"models/{where}/{file}", problem, fix, used_by=scenes)


def _unchecked(
    folder: str, value: str, ct: str, scenes: set[str], prov: Provisioning | None
) -> Finding:
    spec = catalog.get(ct)
    pack = spec.pack if spec else "the node pack of " + ct
    where, _, file = f"{folder}/{value}".rpartition("/")
    entry = prov.model_entry(where, file) if prov else None
    problem = f"cannot be checked: the server has no model folder {folder!r} ({pack} registers it)"
    fix = f"install {pack}, put {file} in models/{where}/" + (
        f" (provisioning entry {entry}), then run preflight again" if entry else ", then run again"
    )
    location = f"models/{where}/{file}"
    return Finding("model.unchecked", location, problem, fix, "warning", used_by=scenes)


def _reach_fix(exc: Exception) -> str:
    if isinstance(exc, AuthError):
        return "set CHARPACK_TOKEN (or CHARPACK_BASIC_AUTH) to the server's credentials"
    return "check the URL and that the pod is running (`charpack pod status`)"
