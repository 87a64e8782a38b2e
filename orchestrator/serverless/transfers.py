"""An attempt's files between S3 and the worker's ComfyUI: :func:`ensure_inputs` brings each
input picture ComfyUI lacks from S3 (checked against its content-derived name), and
:func:`store_files` fetches the attempt's outputs from ComfyUI, checked as on pods (the saver's
sidecar must name this prompt and image, the image must match its sha256 and size, at most
``expect`` files and bytes), then uploads them under
:func:`~charpack.serverless.objects.output_prefix`: sidecars first, PNGs last.

Every failure is a :class:`~charpack.serverless.job_request.JobFailed`. It writes no
``done.json`` and talks to no job API (:mod:`.worker` does).
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from pathlib import Path
from typing import Any

from ..comfy.client import ComfyClient
from ..comfy.downloads import Expect
from ..comfy.limits import Limits
from ..comfy.results import IMAGES, PACK_IMAGES, SIDECARS, JobResult
from ..errors import OutputRefused, ServerUnavailable
from ..pack.uploads import Upload, file_sha256
from ..run.fetcher import Expected, plan
from .job_request import JobFailed, JobRequest
from .objects import ObjectStore, ObjectStoreError, input_key, output_key

__all__ = ["ensure_inputs", "store_files"]

log = logging.getLogger(__name__)


def ensure_inputs(request: JobRequest, *, client: ComfyClient, store: ObjectStore) -> None:
    """Bring each input picture ComfyUI lacks from S3 into its input folder (by upload,
    under its content-derived name, checked against that name)."""
    for name, key in request.inputs:
        if key != input_key(store.prefix, name):
            raise JobFailed(
                "invalid_input",
                f"input {name!r} has key {key!r}, not {input_key(store.prefix, name)!r}",
                retry=False,
            )
        subfolder, _, filename = name.rpartition("/")
        params = {"filename": filename, "subfolder": subfolder, "type": "input"}
        have = client.http.request("GET", "/view", params=params, ok=(200, 404))
        have.close()
        if have.status_code == 200:
            continue
        with tempfile.TemporaryDirectory(prefix="charpack-in-") as tmp:
            path = Path(tmp) / filename
            try:
                store.download_file(key, path)
            except ObjectStoreError as exc:
                raise JobFailed("input_missing", str(exc)) from exc
            sha = file_sha256(path)
            if not sha.startswith(Path(filename).stem):
                raise JobFailed(
                    "input_missing",
                    f"s3 object {key} does not hold the file its content-derived name "
                    f"says (sha256 {sha[:20]}…); upload it again.",
                )
            client.upload_image(
                Upload(path=path, sha256=sha, subfolder=subfolder, filename=filename),
                subfolder=subfolder,
            )
            log.info("input %s brought from S3", name)


def store_files(
    request: JobRequest,
    result: JobResult,
    *,
    client: ComfyClient,
    store: ObjectStore,
    server: str,
) -> list[dict[str, Any]]:
    """Fetch the attempt's files from ComfyUI (checked as on pods), then upload them:
    sidecars first, PNGs last."""
    images = max(1, request.max_files // 2)
    expected = Expected(
        images=images, max_image_bytes=request.max_bytes, subfolder=request.subfolder
    )
    try:
        if len([r for r in result.outputs if r.key in (PACK_IMAGES, IMAGES, SIDECARS)]) > (
            request.max_files
        ):
            raise OutputRefused(
                f"{server} reported more than {request.max_files} files for this prompt"
            )
        planned = plan(result.outputs, expected, "", "attempt", server)
    except OutputRefused as exc:
        raise JobFailed("output_refused", str(exc)) from exc
    limits = Limits(max_bytes=request.max_bytes)
    files: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="charpack-out-") as tmp:
        fetched = []
        try:
            for item in planned:
                expect = None
                if item.sidecar is not None:
                    raw, meta = client.fetch_sidecar(
                        item.sidecar, prompt_id=request.prompt_id, image=item.image.filename
                    )
                    side = Path(tmp) / item.sidecar.filename
                    side.write_bytes(raw)
                    fetched.append((item.sidecar, side, hashlib.sha256(raw).hexdigest()))
                    expect = Expect(sha256=str(meta["sha256"]), size=int(meta["size"]))
                got = client.download(
                    item.image, Path(tmp) / item.image.filename, limits=limits, expect=expect
                )
                fetched.append((item.image, got.path, got.sha256))
        except (OutputRefused, ServerUnavailable, KeyError, ValueError) as exc:
            raise JobFailed("output_refused", f"fetching the outputs failed: {exc}") from exc
        fetched.sort(key=lambda f: f[0].key in (PACK_IMAGES, IMAGES))  # PNGs last
        for ref, path, sha in fetched:
            key = output_key(
                store.prefix,
                request.run_id,
                request.job_key,
                request.prompt_id,
                ref.filename,
            )
            kind = "application/json" if ref.key == SIDECARS else "image/png"
            try:
                info = store.upload_file(path, key, sha256=sha, content_type=kind)
            except ObjectStoreError as exc:
                raise JobFailed("upload_failed", str(exc)) from exc
            files.append(
                {
                    "node": ref.node_id,
                    "key": ref.key,
                    "filename": ref.filename,
                    "subfolder": ref.subfolder,
                    "s3_key": key,
                    "sha256": sha,
                    "bytes": info.size,
                }
            )
    return files
