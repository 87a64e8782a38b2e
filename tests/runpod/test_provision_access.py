"""Provisioning's clear errors: tokens, a full volume, files without a published hash."""

from __future__ import annotations

import os
from pathlib import Path

from .conftest import base_manifest, model_entry, sha

CKPT = os.urandom(200_000)
HF_TOKEN = "hf_" + "x7" * 20
CIVITAI_TOKEN = "civ" + "q4" * 20


def _manifest(file_server, make_remote, **entry):
    manifest = base_manifest(make_remote("ComfyUI"), {})
    url = file_server.add("/ckpt", CKPT, **entry.pop("serve", {}))
    manifest["models"] = {
        "ckpt": model_entry(url, CKPT, "checkpoints", "model.safetensors", **entry)
    }
    return manifest


def _all_written_text(volume: Path, run) -> str:
    texts = [run.stdout, run.stderr]
    texts += [
        p.read_text(errors="replace")
        for p in volume.rglob("*")
        if p.is_file() and p.suffix in (".log", ".json", ".txt")
    ]
    return "\n".join(texts)


def test_server_asking_for_a_token_gives_401_and_names_the_fix(
    provision, volume, file_server, make_remote
):
    manifest = _manifest(file_server, make_remote, serve={"token": HF_TOKEN})

    run = provision(manifest)

    assert run.returncode == 1
    failed = run.outcome("model", "ckpt")
    assert "HTTP 401" in failed["detail"] and "needs a token" in failed["detail"]
    assert "export HF_TOKEN=<token>" in failed["fix"]
    assert not (volume / "ComfyUI/models/checkpoints/model.safetensors").exists()


def test_a_wrong_token_is_reported_as_refused(provision, file_server, make_remote):
    manifest = _manifest(file_server, make_remote, token="hf", serve={"token": HF_TOKEN})

    run = provision(manifest, env={"HF_TOKEN": "hf_wrong"})

    failed = run.outcome("model", "ckpt")
    assert "refused the download with HTTP 401 although HF_TOKEN was sent" in failed["detail"]
    assert "hf_wrong" not in run.text


def test_token_goes_in_a_header_to_the_manifest_host_only_and_is_never_written(
    provision, volume, file_server, make_remote
):
    # The file host redirects to a CDN on another host name: the token must not follow.
    cdn = f"localhost:{file_server.port}"
    manifest = _manifest(
        file_server,
        make_remote,
        token="civitai",
        serve={"redirect_host": cdn},
    )

    run = provision(manifest, env={"CIVITAI_TOKEN": CIVITAI_TOKEN})

    assert run.returncode == 0, run.text
    first, second = file_server.seen("/ckpt")
    assert first.headers.get("Authorization") == f"Bearer {CIVITAI_TOKEN}"
    assert second.host == cdn and "Authorization" not in second.headers
    assert CIVITAI_TOKEN not in first.path
    assert (volume / "ComfyUI/models/checkpoints/model.safetensors").read_bytes() == CKPT
    assert CIVITAI_TOKEN not in _all_written_text(volume, run)


def test_missing_civitai_token_fails_before_any_request(provision, file_server, make_remote):
    manifest = _manifest(file_server, make_remote, token="civitai")

    run = provision(manifest)

    assert run.returncode == 1
    failed = run.outcome("model", "ckpt")
    assert failed["detail"] == "needs a CivitAI token and CIVITAI_TOKEN is not set"
    assert "export CIVITAI_TOKEN=<token>" in failed["fix"]
    assert file_server.seen("/ckpt") == []


def test_an_html_login_page_is_not_taken_for_the_file(provision, volume, file_server, make_remote):
    manifest = _manifest(file_server, make_remote, token="civitai", serve={"html": True})

    run = provision(manifest, env={"CIVITAI_TOKEN": CIVITAI_TOKEN})

    failed = run.outcome("model", "ckpt")
    assert "HTML page instead of the file" in failed["detail"]
    assert "CIVITAI_TOKEN" in failed["fix"]
    assert not list((volume / "ComfyUI/models/checkpoints").glob("model.safetensors*"))


def test_a_full_volume_is_refused_before_downloading(provision, volume, file_server, make_remote):
    manifest = _manifest(file_server, make_remote)
    # Keep a million GB free for outputs: no real disk has that, so the budget check refuses.
    manifest["volume"]["reserve_gb"] = 1_000_000

    run = provision(manifest)

    assert run.returncode == 1
    failed = run.outcome("volume", str(volume / "ComfyUI" / "models"))
    assert failed["status"] == "failed"
    assert "not enough space" in failed["detail"] and "1000000.00 GB kept free" in failed["detail"]
    assert "grow the network volume" in failed["fix"] and "nothing was downloaded" in failed["fix"]
    assert run.outcome("model", "ckpt")["status"] == "skipped"
    assert file_server.seen("/ckpt") == []


def test_a_file_without_a_published_hash_needs_record_hashes(
    provision, volume, file_server, make_remote
):
    manifest = _manifest(file_server, make_remote, sha256="")

    refused = provision(manifest)

    assert refused.returncode == 1
    assert "no sha256 in the manifest" in refused.outcome("model", "ckpt")["detail"]
    assert "--record-hashes" in refused.outcome("model", "ckpt")["fix"]
    assert file_server.seen("/ckpt") == []

    recorded = provision(manifest, "--record-hashes")

    assert recorded.returncode == 0, recorded.text
    warning = recorded.outcome("model", "ckpt")
    assert warning["status"] == "warning" and sha(CKPT) in warning["detail"]
    assert "trust on first use" in warning["detail"]

    # Later runs verify against the recorded value without the flag.
    again = provision(manifest)
    assert again.returncode == 0, again.text
    assert again.outcome("model", "ckpt")["detail"] == "already verified (recorded sha256)"
