"""Folder layout on the volume that the node packs rely on.

- our node pack linked into ``ComfyUI/custom_nodes/charpack_nodes`` from the charpack checkout;
- ``custom_nodes/skip_download_model`` so the Impact packs never fetch models on their own
  (provisioning places and verifies them);
- InsightFace packs at ``models/insightface/models/<pack>/`` with every file, and no nested
  ``antelopev2/antelopev2/`` (both cubiq packs hard-code this path);
- the Impact Subpack's unsafe-load whitelist, listing only hash-verified YOLO files.
"""

from __future__ import annotations

import os
from pathlib import Path

from provision_manifest import PodManifest
from provision_models import State
from provision_report import Report

WHITELIST = Path("user/default/ComfyUI-Impact-Subpack/model-whitelist.txt")


def link_node_pack(*, comfy_dir: Path, repo: Path, report: Report) -> None:
    src = repo / "custom_nodes" / "charpack_nodes"
    dst = comfy_dir / "custom_nodes" / "charpack_nodes"
    if not src.is_dir():
        report.add(
            "layout",
            "charpack_nodes",
            "failed",
            f"{src} does not exist",
            "pass --repo <charpack checkout> (the folder holding custom_nodes/)",
        )
        return
    if dst.is_symlink():
        if Path(os.readlink(dst)) == src:
            report.add("layout", "charpack_nodes", "ok", f"already linked to {src}")
            return
        dst.unlink()
    elif dst.exists():
        report.add(
            "layout",
            "charpack_nodes",
            "failed",
            f"{dst} exists and is not our link",
            f"move it away (`mv {dst} {dst}.old`) and rerun",
        )
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.symlink_to(src, target_is_directory=True)
    report.add("layout", "charpack_nodes", "done", f"linked to {src}")


def skip_download_marker(*, comfy_dir: Path, report: Report) -> None:
    marker = comfy_dir / "custom_nodes" / "skip_download_model"
    if marker.exists():
        report.add("layout", marker.name, "ok", "present")
        return
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text("models are placed and verified by charpack provisioning\n")
    report.add("layout", marker.name, "done", "created (the Impact packs download nothing)")


def check_insightface(*, manifest: PodManifest, models_dir: Path, report: Report) -> None:
    root = models_dir / "insightface" / "models"
    packs: dict[str, list[str]] = {}
    for m in manifest.models:
        parts = Path(m.folder).parts
        if parts[:2] == ("insightface", "models") and len(parts) == 3:
            packs.setdefault(parts[2], []).append(m.file)
    for pack, files in sorted(packs.items()):
        folder = root / pack
        nested = folder / pack
        if nested.is_dir():
            report.add(
                "layout",
                f"insightface/{pack}",
                "failed",
                f"nested folder {nested} (InstantID then fails: 'detection' not in models)",
                f"move its files up one level: `mv {nested}/* {folder}/ && rmdir {nested}`",
            )
            continue
        missing = [f for f in files if not (folder / f).is_file()]
        if missing:
            report.add(
                "layout",
                f"insightface/{pack}",
                "failed",
                f"missing in {folder}: {', '.join(missing)}",
                "see the model failures above; FaceID/InstantID cannot start without them",
            )
        else:
            report.add("layout", f"insightface/{pack}", "ok", f"all {len(files)} files in place")


def write_whitelist(
    *, manifest: PodManifest, comfy_dir: Path, state: State, report: Report
) -> None:
    names = sorted(
        m.file
        for m in manifest.models
        if m.pickle_whitelist and (state.model(m.relpath) or {}).get("sha256")
    )
    path = comfy_dir / WHITELIST
    text = "# written by charpack provisioning: sha256-verified files only\n" + "".join(
        f"{n}\n" for n in names
    )
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        report.add("layout", "subpack whitelist", "ok", f"{len(names)} verified file(s) listed")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    report.add("layout", "subpack whitelist", "done", f"{len(names)} verified file(s) listed")


def training_folders(*, manifest: PodManifest, comfy_dir: Path, report: Report) -> None:
    """The folders a character training writes to (manifest ``[training]``): the LoRA folder
    the pipeline's LoraLoader lists and the dataset folder the training nodes read."""
    training = manifest.training
    for parent, key in (("models/loras", "lora_folder"), ("input", "dataset_folder")):
        path = comfy_dir / parent / training[key]
        if path.is_symlink() or (path.exists() and not path.is_dir()):
            report.add(
                "layout", f"{parent}/{training[key]}", "failed",
                f"{path} exists and is not a folder",
                f"move it away (`mv {path} {path}.old`) and rerun",
            )  # fmt: skip
            continue
        if path.is_dir():
            report.add("layout", f"{parent}/{training[key]}", "ok", "present")
            continue
        path.mkdir(parents=True)
        report.add("layout", f"{parent}/{training[key]}", "done", "created for training")
