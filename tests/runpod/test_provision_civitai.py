"""CivitAI entries: the version the user chose, verified against what CivitAI's API lists for it.

The real provision.py runs as on a pod; CivitAI is a local stand-in on 127.0.0.1 that answers
the documented shapes (fake_civitai.py), named with provisioning's own ``--civitai-api``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from .conftest import base_manifest, sha
from .fake_civitai import FakeCivitai, VersionFile

CKPT = os.urandom(300_000)
TOKEN = "civ" + "k3" * 20
XL3 = 1744439


@pytest.fixture
def civitai(file_server) -> FakeCivitai:
    return FakeCivitai(file_server, TOKEN)


@pytest.fixture
def manifest(make_remote):
    manifest = base_manifest(make_remote("ComfyUI"), {})
    manifest["models"] = {
        "biglove_xl": {
            "file": "bigLoveXL.safetensors",
            "folder": "checkpoints",
            "civitai_model": 897413,
            "url": "",
            "approx_size": 6_940_000_000,
            "sha256": "",
            "licence": "per CivitAI version flags",
            "token": "civitai",
        }
    }
    return manifest


def _run(provision, manifest, civitai, *args: str, env: dict[str, str] | None = None):
    return provision(
        manifest, "--civitai-api", civitai.api, *args, env={"CIVITAI_TOKEN": TOKEN, **(env or {})}
    )


def _ckpt(volume: Path) -> Path:
    return volume / "ComfyUI/models/checkpoints/bigLoveXL.safetensors"


def test_the_chosen_version_is_downloaded_and_verified_against_civitais_sha256(
    provision, volume, civitai, manifest
):
    civitai.add_version(
        XL3,
        [
            # A pickled checkpoint listed first and a training-data zip: never chosen.
            VersionFile("bigLove_xl3.ckpt", os.urandom(1000), format="PickleTensor", primary=False),
            VersionFile("bigLove_xl3.safetensors", CKPT),
            VersionFile("data.zip", os.urandom(10), format="Other", primary=False,
                        type="Training Data"),
        ],
    )  # fmt: skip

    # The pod receives the choice in its environment (charpack pod up --civitai-version).
    run = _run(provision, manifest, civitai, env={"CHARPACK_CIVITAI_VERSIONS": f"biglove_xl={XL3}"})

    assert run.returncode == 0, run.text
    assert _ckpt(volume).read_bytes() == CKPT
    done = run.outcome("model", "biglove_xl")
    assert done["status"] == "done"
    assert done["detail"] == f"downloaded and verified (CivitAI version {XL3} sha256)"
    (api,) = civitai.api_requests(XL3)
    assert api.headers.get("Authorization") == f"Bearer {TOKEN}"
    (download,) = civitai.downloads(XL3)
    assert download.headers.get("Authorization") == f"Bearer {TOKEN}"
    assert TOKEN not in run.text

    # A restart with the same choice asks CivitAI nothing and downloads nothing.
    requests_before = len(civitai.server.requests)
    again = _run(provision, manifest, civitai, "--civitai-version", f"biglove_xl={XL3}")
    assert again.returncode == 0, again.text
    assert len(civitai.server.requests) == requests_before
    assert again.outcome("model", "biglove_xl")["status"] == "ok"


def test_a_file_that_is_not_the_one_civitai_lists_is_deleted_and_reported(
    provision, volume, civitai, manifest
):
    published = sha(b"the file CivitAI hashed")
    civitai.add_version(XL3, [VersionFile("bigLove_xl3.safetensors", CKPT,
                                          listed_sha256=published)])  # fmt: skip

    run = _run(provision, manifest, civitai, "--civitai-version", f"biglove_xl={XL3}")

    assert run.returncode == 1
    failed = run.outcome("model", "biglove_xl")
    assert failed["status"] == "failed"
    assert f"sha256 mismatch: got {sha(CKPT)}, expected {published}" in failed["detail"]
    assert f"(CivitAI version {XL3})" in failed["detail"] and "deleted" in failed["detail"]
    assert "choose another version" in failed["fix"]
    assert list((volume / "ComfyUI/models/checkpoints").iterdir()) == []


def test_a_file_of_another_size_than_civitai_lists_is_refused(provision, volume, civitai, manifest):
    civitai.add_version(
        XL3, [VersionFile("bigLove_xl3.safetensors", CKPT, listed_kb=len(CKPT) / 1024 + 5)]
    )

    run = _run(provision, manifest, civitai, "--civitai-version", f"biglove_xl={XL3}")

    failed = run.outcome("model", "biglove_xl")
    assert failed["status"] == "failed" and f"downloaded {len(CKPT)} bytes" in failed["detail"]
    assert not _ckpt(volume).exists()


def test_a_version_without_a_safetensors_file_is_refused_before_any_download(
    provision, volume, civitai, manifest
):
    civitai.add_version(XL3, [VersionFile("bigLove_xl3.ckpt", CKPT, format="PickleTensor")])

    run = _run(provision, manifest, civitai, "--civitai-version", f"biglove_xl={XL3}")

    assert run.returncode == 1
    failed = run.outcome("model", "biglove_xl")
    assert failed["detail"] == (
        f"CivitAI version {XL3} has no safetensors file (bigLove_xl3.ckpt); charpack does not "
        "load pickled checkpoints"
    )
    assert "--civitai-version biglove_xl=<versionId>" in failed["fix"]
    assert civitai.downloads(XL3) == []
    assert not _ckpt(volume).exists()


def test_no_chosen_version_says_how_to_choose_and_asks_nothing(
    provision, civitai, manifest, file_server
):
    run = _run(provision, manifest, civitai)

    assert run.returncode == 1
    failed = run.outcome("model", "biglove_xl")
    assert failed["detail"] == "no CivitAI version chosen"
    assert failed["fix"] == (
        "choose a version on https://civitai.com/models/897413 (the number after "
        "modelVersionId= in its URL) and pass it: charpack pod up --civitai-version "
        "biglove_xl=<versionId>"
    )
    assert file_server.requests == []


def test_unknown_or_foreign_versions_and_bad_choices_are_clear_errors(provision, civitai, manifest):
    missing = _run(provision, manifest, civitai, "--civitai-version", "biglove_xl=999")
    assert (
        "CivitAI has no published version 999 (HTTP 404)"
        in missing.outcome("model", "biglove_xl")["detail"]
    )

    civitai.add_version(42, [VersionFile("other.safetensors", CKPT)], model_id=1234)
    foreign = _run(provision, manifest, civitai, "--civitai-version", "biglove_xl=42")
    assert foreign.outcome("model", "biglove_xl")["detail"] == (
        "CivitAI version 42 belongs to model 1234, not to model 897413 (biglove_xl)"
    )
    assert civitai.downloads(42) == []

    bad = _run(provision, manifest, civitai, "--civitai-version", "biglove=1", env={
        "CHARPACK_CIVITAI_VERSIONS": "biglove_xl=latest"})  # fmt: skip
    assert bad.returncode == 2
    assert "'biglove' is not a CivitAI entry of the manifest (CivitAI entries: biglove_xl)" in (
        bad.stderr
    )
    assert "'biglove_xl=latest': expected KEY=VERSION_ID" in bad.stderr


def test_choosing_another_version_replaces_the_checkpoint(provision, volume, civitai, manifest):
    other = os.urandom(200_000)
    civitai.add_version(XL3, [VersionFile("bigLove_xl3.safetensors", CKPT)])
    civitai.add_version(1973705, [VersionFile("bigLove_pony3.safetensors", other)])
    first = _run(provision, manifest, civitai, "--civitai-version", f"biglove_xl={XL3}")
    assert first.returncode == 0, first.text

    run = _run(provision, manifest, civitai, "--civitai-version", "biglove_xl=1973705")

    assert run.returncode == 0, run.text
    assert _ckpt(volume).read_bytes() == other
    assert [o["status"] for o in run.report["outcomes"] if o["item"] == "biglove_xl"] == [
        "warning",
        "done",
    ]  # the old file was deleted (its hash is not the new version's), then downloaded


def test_the_token_is_not_sent_to_a_download_url_on_another_host(
    provision, volume, civitai, manifest, file_server
):
    body = civitai.add_version(XL3, [VersionFile("bigLove_xl3.safetensors", CKPT)])
    # An API answer naming a download host other than the API's own: no token goes there.
    elsewhere = f"/elsewhere/{XL3}"
    file_server.add(elsewhere, CKPT)
    body["files"][0]["downloadUrl"] = file_server.url(elsewhere, host="localhost")
    file_server.add(f"/api/v1/model-versions/{XL3}", json.dumps(body).encode())

    run = _run(provision, manifest, civitai, "--civitai-version", f"biglove_xl={XL3}")

    assert run.returncode == 0, run.text
    (download,) = file_server.seen(elsewhere)
    assert "Authorization" not in download.headers
    assert _ckpt(volume).read_bytes() == CKPT
