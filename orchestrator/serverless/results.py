"""A Serverless attempt's result: the handler's output read back, and its files fetched from S3.

Owns :func:`result_of` (the handler's output — from ``GET /status`` or the attempt's ``done.json``
— as the same :class:`~charpack.comfy.results.JobResult` a pod's ``/history`` gives, so the retry
rules, the identity gate and :func:`charpack.run.fetcher.plan` judge it the same way) and
:func:`fetch_result` (its files into the pack folder under the same integrity rules as pod
downloads: only what the job makes, the saver's sidecar read first and checked to name this
prompt and this image, the PNG streamed to a temp file in real folders, hashed on the way,
bounded in bytes and time, compared with the sidecar's and the handler's sha256 and size, then
renamed into place atomically). Nothing is held in memory but one chunk and the sidecar. It
does not decide when to fetch (:mod:`charpack.serverless.backend`) nor spell keys
(:mod:`charpack.serverless.objects`).
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..comfy.downloads import SIDECAR_MAX_BYTES, sidecar_fields
from ..comfy.landing import (
    create,
    guard_write,
    land,
    open_folder,
    part_name,
    unlink,
    write_file,
)
from ..comfy.limits import DownloadCancelled
from ..comfy.results import JobResult, JobStatus, NodeFailure, OutputRef, parse_outputs
from ..errors import OutputRefused
from ..folder.manifest import FileRecord
from ..run.fetcher import Expected, plan
from .objects import ObjectStore

CHUNK = 1 << 20


@dataclass(frozen=True)
class StoredFile:
    """One output file as the handler reported it: where it is in S3 and what it must be."""

    s3_key: str
    sha256: str | None
    size: int | None


def result_of(
    prompt_id: str, output: Mapping[str, Any]
) -> tuple[JobResult, dict[tuple[str, str, str], StoredFile]]:
    """The :class:`JobResult` of the handler's ``output`` and its files by (key, subfolder,
    filename); :class:`OutputRefused` when the output is not this attempt's."""
    theirs = output.get("prompt_id")
    if theirs != prompt_id:
        raise OutputRefused(
            f"the endpoint's result names prompt {str(theirs)[:40]!r}, not this attempt "
            f"({prompt_id}); refused."
        )
    refs, ui = parse_outputs(output.get("ui") or {})
    failure = None
    status = {"success": JobStatus.SUCCESS, "interrupted": JobStatus.INTERRUPTED}.get(
        str(output.get("status")), JobStatus.ERROR
    )
    if status is not JobStatus.SUCCESS:
        given = output.get("failure")
        data: Mapping[str, Any] = given if isinstance(given, Mapping) else {}
        failure = NodeFailure(
            node_id=None if data.get("node_id") is None else str(data.get("node_id")),
            node_type=None if data.get("node_type") is None else str(data.get("node_type")),
            exception_type=data.get("exception_type"),
            message=str(data.get("message") or f"the handler reported {output.get('status')!r}"),
        )
    started, finished = output.get("started_ms"), output.get("finished_ms")
    result = JobResult(
        prompt_id=prompt_id,
        status=status,
        outputs=refs,
        ui=ui,
        failure=failure,
        started_ms=started if isinstance(started, int) else None,
        finished_ms=finished if isinstance(finished, int) else None,
    )
    files: dict[tuple[str, str, str], StoredFile] = {}
    for item in output.get("files") or []:
        if not isinstance(item, Mapping) or not isinstance(item.get("s3_key"), str):
            continue
        size = item.get("bytes")
        files[
            (str(item.get("key")), str(item.get("subfolder") or ""), str(item.get("filename")))
        ] = StoredFile(
            s3_key=item["s3_key"],
            sha256=str(item["sha256"]) if item.get("sha256") else None,
            size=size if isinstance(size, int) and not isinstance(size, bool) else None,
        )
    return result, files


@dataclass(frozen=True)
class FetchLimits:
    """Time bounds of one file's transfer (bytes come from the job's :class:`Expected`)."""

    deadline_s: float = 600.0


def fetch_result(
    store: ObjectStore,
    result: JobResult,
    files: Mapping[tuple[str, str, str], StoredFile],
    *,
    folder: Path,
    rel_dir: str,
    stem: str,
    expected: Expected,
    label: str,
    limits: FetchLimits | None = None,
    cancel: threading.Event | None = None,
) -> list[FileRecord]:
    """Bring ``result``'s files into ``folder`` (see the module docstring); their records,
    images first. Raises :class:`OutputRefused`, :class:`~charpack.errors.DiskFull`,
    :class:`DownloadCancelled`, or the store's error."""
    limits = limits or FetchLimits()
    todo = plan(result.outputs, expected, rel_dir, stem, label)
    images: list[FileRecord] = []
    sidecars: list[FileRecord] = []
    for item in todo:
        image = _stored(files, item.image, label)
        want_sha, want_size = image.sha256, image.size
        raw = b""
        if item.sidecar is not None:
            raw = _read(store, _stored(files, item.sidecar, label).s3_key, SIDECAR_MAX_BYTES, label)
            meta = _sidecar(raw, label, result.prompt_id, item.image.filename)
            if want_sha is not None and (want_sha, want_size) != (meta["sha256"], meta["size"]):
                raise OutputRefused(
                    f"{label}: the handler and the sidecar disagree about "
                    f"{item.image.filename[:80]!r}; refused."
                )
            want_sha, want_size = str(meta["sha256"]), int(meta["size"])
        if want_size is not None and want_size > expected.max_image_bytes:
            raise OutputRefused(
                f"{label}: {item.image.filename[:80]!r} is {want_size} bytes, more than this "
                f"job can produce ({expected.max_image_bytes}); refused."
            )
        cap = want_size if want_size is not None else expected.max_image_bytes
        sha, size = _stream(
            store,
            image.s3_key,
            folder,
            folder / item.image_rel,
            cap,
            label,
            limits,
            cancel,
            (want_sha, want_size),
        )
        images.append({"path": item.image_rel, "sha256": sha, "bytes": size})
        if item.sidecar_rel is not None:
            kept = write_file(folder, folder / item.sidecar_rel, raw)
            sidecars.append({"path": item.sidecar_rel, "sha256": kept.sha256, "bytes": kept.size})
    return images + sidecars


def _stored(
    files: Mapping[tuple[str, str, str], StoredFile], ref: OutputRef, label: str
) -> StoredFile:
    found = files.get((ref.key, ref.subfolder, ref.filename))
    if found is None:
        raise OutputRefused(
            f"{label}: the handler reported {ref.filename[:80]!r} without its S3 object; refused."
        )
    return found


def _sidecar(raw: bytes, label: str, prompt_id: str, image: str) -> dict[str, Any]:
    meta = sidecar_fields(
        raw, label, f"the sidecar of {image[:80]!r}", fix="Rebuild the worker image."
    )
    if meta.get("prompt_id") != prompt_id or meta.get("file") != image:
        raise OutputRefused(
            f"{label}: the sidecar in S3 belongs to prompt {str(meta.get('prompt_id'))[:40]!r} "
            f"and {str(meta.get('file'))[:80]!r}, not to this attempt ({prompt_id}, {image!r}); "
            "refused."
        )
    return meta


def _read(store: ObjectStore, key: str, max_bytes: int, label: str) -> bytes:
    body = store.open_body(key)
    try:
        data = body.read(max_bytes + 1)
    finally:
        body.close()
    if len(data) > max_bytes:
        raise OutputRefused(f"{label}: s3 object {key} is over {max_bytes} bytes; refused.")
    return bytes(data)


def _stream(
    store: ObjectStore,
    key: str,
    root: Path,
    dest: Path,
    cap: int,
    label: str,
    limits: FetchLimits,
    cancel: threading.Event | None,
    want: tuple[str | None, int | None],
) -> tuple[str, int]:
    body = store.open_body(key)
    folder = open_folder(root, dest)
    tmp = part_name(dest.name)
    try:
        fd = create(folder, tmp, dest)
        try:
            digest = hashlib.sha256()
            size = 0
            started = time.monotonic()
            with os.fdopen(fd, "wb") as fh:
                for chunk in body.iter_chunks(CHUNK):
                    if cancel is not None and cancel.is_set():
                        raise DownloadCancelled(f"download of {key} cancelled")
                    size += len(chunk)
                    if size > cap:
                        raise OutputRefused(
                            f"{label}: s3 object {key} is over {cap} bytes; refused."
                        )
                    if time.monotonic() - started > limits.deadline_s:
                        raise OutputRefused(
                            f"{label}: s3 object {key} took over {limits.deadline_s:.0f} s; "
                            "refused."
                        )
                    digest.update(chunk)
                    guard_write(fh.write, chunk, dest, cap)
                guard_write(lambda _: fh.flush(), b"", dest, cap)
                guard_write(lambda _: os.fsync(fh.fileno()), b"", dest, cap)
            sha = digest.hexdigest()
            want_sha, want_size = want
            if (want_sha is not None and sha != want_sha) or (
                want_size is not None and size != want_size
            ):
                raise OutputRefused(
                    f"{label}: s3 object {key} is not the file its sidecar describes ({size} "
                    f"bytes, sha256 {sha[:12]}…); refused."
                )
            land(folder, tmp, dest)
        except BaseException:
            unlink(folder, tmp)
            raise
    finally:
        os.close(folder)
        body.close()
    return sha, size
