"""runpod/provision.py on a fresh volume, a second run, and every way a download goes wrong."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from .conftest import REPO, base_manifest, model_entry, sha

FACE = os.urandom(300_000)  # stands in for face_yolov8m.pt
UPSCALER = os.urandom(120_000)
DET = os.urandom(50_000)
REC = os.urandom(70_000)


def _head(path: Path) -> str:
    return subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, check=True
    ).stdout.strip()


def _standard(file_server, make_remote):
    comfy = make_remote("ComfyUI", files={"requirements.txt": "numpy\n"})
    packs = {"ComfyUI_InstantID": make_remote("instantid"), "Impact": make_remote("impact")}
    manifest = base_manifest(comfy, packs)
    manifest["models"] = {
        "face": model_entry(
            file_server.add("/face_yolov8m.pt", FACE),
            FACE,
            "ultralytics/bbox",
            "face_yolov8m.pt",
            pickle_whitelist=True,
        ),
        "upscaler": model_entry(
            file_server.add("/4x.pth", UPSCALER), UPSCALER, "upscale_models", "4x-UltraSharp.pth"
        ),
        "det": model_entry(
            file_server.add("/a/det.onnx", DET),
            DET,
            "insightface/models/antelopev2",
            "scrfd_10g_bnkps.onnx",
        ),
        "rec": model_entry(
            file_server.add("/a/rec.onnx", REC),
            REC,
            "insightface/models/antelopev2",
            "glintr100.onnx",
        ),
    }
    return manifest, comfy, packs


def test_fresh_volume_gets_pinned_code_verified_models_and_layout(
    provision, volume, file_server, make_remote
):
    manifest, comfy, packs = _standard(file_server, make_remote)
    # Pin ComfyUI to its first commit: the pin is what is checked out, not the newest.
    manifest["comfyui"]["commit"] = comfy.commits[0]

    run = provision(manifest)

    assert run.returncode == 0, run.text
    comfy_dir = volume / "ComfyUI"
    assert _head(comfy_dir) == comfy.commits[0]
    for name, remote in packs.items():
        assert _head(comfy_dir / "custom_nodes" / name) == remote.commits[-1]
    models = comfy_dir / "models"
    assert (models / "ultralytics/bbox/face_yolov8m.pt").read_bytes() == FACE
    assert (models / "upscale_models/4x-UltraSharp.pth").read_bytes() == UPSCALER
    assert (models / "insightface/models/antelopev2/glintr100.onnx").read_bytes() == REC
    assert not list(models.rglob("*.part"))
    link = comfy_dir / "custom_nodes" / "charpack_nodes"
    assert link.is_symlink() and link.resolve() == REPO / "custom_nodes" / "charpack_nodes"
    assert (comfy_dir / "custom_nodes" / "skip_download_model").exists()
    whitelist = comfy_dir / "user/default/ComfyUI-Impact-Subpack/model-whitelist.txt"
    assert "face_yolov8m.pt" in whitelist.read_text().splitlines()
    assert run.outcome("layout", "insightface/antelopev2")["status"] == "ok"
    # The training folders (manifest [training]): where a trained LoRA lands and the dataset
    # the training nodes read.
    assert (models / "loras" / "charpack").is_dir()
    assert (comfy_dir / "input" / "charpack_train").is_dir()
    assert run.outcome("layout", "models/loras/charpack")["status"] == "done"
    assert run.report["ok"] is True


def test_second_run_downloads_nothing_and_changes_nothing(
    provision, volume, file_server, make_remote
):
    manifest, _, _ = _standard(file_server, make_remote)
    assert provision(manifest).returncode == 0
    files = sorted(p for p in (volume / "ComfyUI" / "models").rglob("*") if p.is_file())
    mtimes = {p: p.stat().st_mtime_ns for p in files}
    requests_before = len(file_server.requests)

    again = provision(manifest)

    assert again.returncode == 0, again.text
    assert len(file_server.requests) == requests_before
    assert {p: p.stat().st_mtime_ns for p in files} == mtimes
    statuses = {o["status"] for o in again.report["outcomes"]}
    assert statuses <= {"ok", "skipped"}, again.stdout


def test_cut_download_keeps_the_part_and_the_next_run_resumes_it(
    provision, volume, file_server, make_remote
):
    manifest, _, _ = _standard(file_server, make_remote)
    file_server.files["/4x.pth"].cut_after = 40_000
    file_server.files["/4x.pth"].cuts_left = 1

    first = provision(manifest, "--retries", "0")

    assert first.returncode == 1
    failed = first.outcome("model", "upscaler")
    assert failed["status"] == "failed" and "interrupted after 40000" in failed["detail"]
    assert "resumes" in failed["fix"]
    part = volume / "ComfyUI/models/upscale_models/4x-UltraSharp.pth.part"
    assert part.stat().st_size == 40_000
    # The other models were still installed: provisioning does not stop at the first failure.
    assert first.outcome("model", "face")["status"] == "done"

    second = provision(manifest, "--retries", "0")

    assert second.returncode == 0, second.text
    assert file_server.seen("/4x.pth")[-1].headers.get("Range") == "bytes=40000-"
    final = volume / "ComfyUI/models/upscale_models/4x-UltraSharp.pth"
    assert final.read_bytes() == UPSCALER and not part.exists()


def test_a_cut_within_one_run_is_retried_with_a_range_request(
    provision, volume, file_server, make_remote
):
    manifest, _, _ = _standard(file_server, make_remote)
    file_server.files["/4x.pth"].cut_after = 1000
    file_server.files["/4x.pth"].cuts_left = 2

    run = provision(manifest, "--retries", "3")

    assert run.returncode == 0, run.text
    ranges = [r.headers.get("Range") for r in file_server.seen("/4x.pth")]
    assert ranges == [None, "bytes=1000-", "bytes=2000-"]
    assert (volume / "ComfyUI/models/upscale_models/4x-UltraSharp.pth").read_bytes() == UPSCALER


def test_sha256_mismatch_is_deleted_and_reported_never_used(
    provision, volume, file_server, make_remote
):
    manifest, _, _ = _standard(file_server, make_remote)
    manifest["models"]["upscaler"]["sha256"] = sha(b"the published file")

    run = provision(manifest)

    assert run.returncode == 1
    failed = run.outcome("model", "upscaler")
    assert failed["status"] == "failed"
    assert "sha256 mismatch" in failed["detail"] and sha(UPSCALER) in failed["detail"]
    assert "deleted" in failed["detail"]
    folder = volume / "ComfyUI/models/upscale_models"
    assert list(folder.iterdir()) == []
    assert "fix:" in run.stdout and "sha256 mismatch" in run.stdout
    assert run.outcome("model", "face")["status"] == "done"


def test_a_tampered_file_on_the_volume_is_replaced(provision, volume, file_server, make_remote):
    manifest, _, _ = _standard(file_server, make_remote)
    assert provision(manifest).returncode == 0
    target = volume / "ComfyUI/models/upscale_models/4x-UltraSharp.pth"
    target.write_bytes(b"tampered")

    run = provision(manifest)

    assert run.returncode == 0, run.text
    details = [o["detail"] for o in run.report["outcomes"] if o["item"] == "upscaler"]
    assert "deleted it and will download it again" in details[0]
    assert details[1] == "downloaded and verified (manifest sha256)"
    assert target.read_bytes() == UPSCALER


def test_manifest_problems_are_all_listed_with_exit_code_2(provision, file_server, make_remote):
    manifest, _, _ = _standard(file_server, make_remote)
    manifest["comfyui"]["commit"] = "v0.3.75"
    manifest["models"]["face"]["sha256"] = "ABC"
    manifest["models"]["upscaler"]["folder"] = "../outside"

    run = provision(manifest)

    assert run.returncode == 2
    assert "comfyui.commit: must be a full 40-hex commit id" in run.stderr
    assert "models.face.sha256" in run.stderr
    assert "models.upscaler.folder" in run.stderr


def test_a_pack_moved_to_a_new_pin_is_checked_out_again(
    provision, volume, file_server, make_remote
):
    manifest, _, packs = _standard(file_server, make_remote)
    manifest["node_packs"]["Impact"]["commit"] = packs["Impact"].commits[0]
    assert provision(manifest).returncode == 0
    manifest["node_packs"]["Impact"]["commit"] = packs["Impact"].commits[1]

    run = provision(manifest)

    assert run.returncode == 0, run.text
    assert _head(volume / "ComfyUI/custom_nodes/Impact") == packs["Impact"].commits[1]
    assert run.outcome("git", "Impact")["detail"].startswith("moved from")


def test_a_pack_with_local_changes_is_reported_not_overwritten(
    provision, volume, file_server, make_remote
):
    manifest, _, packs = _standard(file_server, make_remote)
    manifest["node_packs"]["Impact"]["commit"] = packs["Impact"].commits[0]
    assert provision(manifest).returncode == 0
    edited = volume / "ComfyUI/custom_nodes/Impact/version.txt"
    edited.write_text("my local fix\n")
    manifest["node_packs"]["Impact"]["commit"] = packs["Impact"].commits[1]

    run = provision(manifest)

    assert run.returncode == 1
    failed = run.outcome("git", "Impact")
    assert "local changes" in failed["detail"] and "git -C" in failed["fix"]
    assert edited.read_text() == "my local fix\n"
