"""The S3 object layout of Serverless runs, and access to the bucket (boto3, config from env).

Owns the keys (the one place they are spelled):

- an attempt's outputs: ``<prefix>/runs/<run_id>/<job_key>/<prompt_id>/`` (:func:`output_prefix`),
  holding the final PNG and its sidecar JSON under their ComfyUI file names, the sidecar first
  and the PNG last (a present PNG means the attempt's files are complete), then ``done.json``
  (:func:`done_key`), the handler's whole output, written last of all;
- an input picture (face reference, init or pose image): ``<prefix>/inputs/<upload name>``
  (:func:`input_key`), where the upload name is the content-derived
  :attr:`charpack.pack.uploads.Upload.image_value` (``charpack/<sha256[:20]>.<ext>``), so each
  file is uploaded once, whoever needs it.

and :class:`ObjectStore`, the few bucket operations the worker and the orchestrator's backend
need (head, upload a file or JSON, download a file, read JSON or a streamed body, list; it deletes
nothing: docs/serverless.md, "The bucket afterwards"). Credentials come from
the environment only (:meth:`S3Config.from_env`), never from payloads, manifests or logs, and are
registered for log redaction. It does not decide what to upload when (:mod:`.worker`, the
backend) or check file contents against sidecars (the callers do, with the sha256 recorded here).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..comfy.auth import register_secret
from ..comfy.results import check_prompt_id
from ..errors import CharpackError

log = logging.getLogger(__name__)

ENDPOINT_ENV = "CHARPACK_S3_ENDPOINT_URL"
BUCKET_ENV = "CHARPACK_S3_BUCKET"
PREFIX_ENV = "CHARPACK_S3_PREFIX"
DEFAULT_PREFIX = "charpack"
SECRET_ENVS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
DONE = "done.json"
SHA256_META = "sha256"  # user metadata on every object charpack writes (x-amz-meta-sha256)

_JOB_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[0-9]{3,}$")
_PART_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class ObjectStoreError(CharpackError):
    """S3 refused or could not be reached; the message names the bucket, key and the fix."""


class ObjectStoreConfigError(ObjectStoreError):
    """The environment does not say which bucket to use (or says it badly)."""


# -- keys --------------------------------------------------------------------------------------


def _clean_prefix(prefix: str) -> str:
    parts = [p for p in prefix.strip().strip("/").split("/") if p]
    if not parts or any(p in (".", "..") for p in parts):
        raise ObjectStoreConfigError(
            f"S3 prefix {prefix!r} is not a folder name; set {PREFIX_ENV} to e.g. 'charpack'."
        )
    return "/".join(parts)


def check_job_key(job_key: str) -> str:
    """``job_key`` if it is a job key ``<scene>/<index:03d>`` (``cafe/001``)."""
    if not isinstance(job_key, str) or not _JOB_KEY_RE.match(job_key):
        raise ValueError(f"job key {job_key!r} is not '<scene>/<index:03d>' (such as 'cafe/001').")
    return job_key


def check_run_id(run_id: str) -> str:
    """``run_id`` if it can be one part of a key (a pack run's id: a uuid)."""
    if not isinstance(run_id, str) or not _PART_RE.match(run_id):
        raise ValueError(f"run id {run_id!r} is not one plain key part (a pack run's uuid).")
    return run_id


def output_prefix(prefix: str, run_id: str, job_key: str, prompt_id: str) -> str:
    """The folder of one attempt's objects: ``<prefix>/runs/<run_id>/<job_key>/<prompt_id>/``."""
    return (
        f"{_clean_prefix(prefix)}/runs/{check_run_id(run_id)}/{check_job_key(job_key)}/"
        f"{check_prompt_id(prompt_id)}/"
    )


def output_key(prefix: str, run_id: str, job_key: str, prompt_id: str, filename: str) -> str:
    """The key of one output file (its ComfyUI file name) of an attempt."""
    if not filename or "/" in filename or "\\" in filename or filename in (".", "..", DONE):
        raise ValueError(f"output file name {filename!r} is not one plain file name.")
    return output_prefix(prefix, run_id, job_key, prompt_id) + filename


def done_key(prefix: str, run_id: str, job_key: str, prompt_id: str) -> str:
    """The key of an attempt's ``done.json`` (the handler's output, written last)."""
    return output_prefix(prefix, run_id, job_key, prompt_id) + DONE


def input_key(prefix: str, upload_name: str) -> str:
    """The key of an input picture: ``<prefix>/inputs/<upload name>`` (``Upload.image_value``)."""
    parts = upload_name.split("/")
    if not upload_name or any(not _PART_RE.match(p) for p in parts):
        raise ValueError(
            f"upload name {upload_name!r} is not a content-derived upload name "
            "(such as 'charpack/0123456789abcdef0123.png')."
        )
    return f"{_clean_prefix(prefix)}/inputs/{upload_name}"


# -- configuration -----------------------------------------------------------------------------


@dataclass(frozen=True)
class S3Config:
    """Which bucket, under which prefix, at which endpoint (None: AWS itself)."""

    bucket: str
    prefix: str = DEFAULT_PREFIX
    endpoint_url: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> S3Config:
        """The store named by ``CHARPACK_S3_BUCKET`` / ``CHARPACK_S3_PREFIX`` /
        ``CHARPACK_S3_ENDPOINT_URL``; credentials and region are boto3's own ``AWS_*``
        variables, registered here so log redaction masks them."""
        env = os.environ if env is None else env
        for name in SECRET_ENVS:
            value = env.get(name, "").strip()
            if value:
                register_secret(value)
        bucket = env.get(BUCKET_ENV, "").strip()
        if not bucket:
            raise ObjectStoreConfigError(
                f"{BUCKET_ENV} is not set: name the S3 bucket that holds Serverless inputs and "
                f"results (credentials in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, the "
                f"endpoint of an S3-compatible store in {ENDPOINT_ENV})."
            )
        endpoint = env.get(ENDPOINT_ENV, "").strip() or None
        prefix = _clean_prefix(env.get(PREFIX_ENV, "").strip() or DEFAULT_PREFIX)
        return cls(bucket=bucket, prefix=prefix, endpoint_url=endpoint)


@dataclass(frozen=True)
class StoredObject:
    """An object's size and the sha256 charpack recorded when it wrote it (None if another
    tool wrote it)."""

    key: str
    size: int
    sha256: str | None


def _boto3() -> Any:
    try:
        import boto3  # type: ignore[import-untyped,unused-ignore]
    except ImportError as exc:  # pragma: no cover - the serverless extra is missing
        raise ObjectStoreConfigError(
            "boto3 is not installed: pip install 'charpack[serverless]'."
        ) from exc
    return boto3


class ObjectStore:
    """One bucket and prefix. Thread-safe (boto3 clients are); keys come from the functions
    above."""

    def __init__(self, config: S3Config, *, max_pool: int = 16) -> None:
        self.config = config
        boto3 = _boto3()
        from botocore.config import Config  # type: ignore[import-untyped,unused-ignore]

        self._client = boto3.session.Session().client(
            "s3",
            endpoint_url=config.endpoint_url,
            config=Config(
                max_pool_connections=max_pool,
                retries={"max_attempts": 4, "mode": "standard"},
                connect_timeout=10,
                read_timeout=60,
            ),
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ObjectStore:
        return cls(S3Config.from_env(env))

    @property
    def prefix(self) -> str:
        return self.config.prefix

    def __repr__(self) -> str:
        where = self.config.endpoint_url or "AWS"
        return f"ObjectStore(s3://{self.config.bucket}/{self.config.prefix} at {where})"

    def _error(self, exc: Exception, what: str, key: str) -> ObjectStoreError:
        detail = getattr(exc, "response", {}).get("Error", {}) if hasattr(exc, "response") else {}
        code = detail.get("Code") or type(exc).__name__
        message = detail.get("Message") or str(exc)
        hint = {
            "NoSuchBucket": f"create the bucket or set {BUCKET_ENV} to one that exists",
            "AccessDenied": "give these credentials read and write access to the prefix",
            "InvalidAccessKeyId": "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY",
            "SignatureDoesNotMatch": "check AWS_SECRET_ACCESS_KEY",
        }.get(str(code), f"check the bucket, the credentials and {ENDPOINT_ENV}")
        return ObjectStoreError(
            f"S3 {what} of s3://{self.config.bucket}/{key} failed ({code}: {message}); {hint}."
        )

    def head(self, key: str) -> StoredObject | None:
        """The object's size and recorded sha256, or None when there is no such object."""
        try:
            answer = self._client.head_object(Bucket=self.config.bucket, Key=key)
        except Exception as exc:
            status = getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status == 404:
                return None
            raise self._error(exc, "HEAD", key) from exc
        meta = answer.get("Metadata") or {}
        return StoredObject(
            key=key, size=int(answer["ContentLength"]), sha256=meta.get(SHA256_META)
        )

    def exists(self, key: str) -> bool:
        return self.head(key) is not None

    def upload_file(
        self, path: Path, key: str, *, sha256: str, content_type: str | None = None
    ) -> StoredObject:
        """Upload ``path`` under ``key`` (multipart for large files), recording its sha256."""
        extra: dict[str, Any] = {"Metadata": {SHA256_META: sha256}}
        if content_type:
            extra["ContentType"] = content_type
        try:
            self._client.upload_file(str(path), self.config.bucket, key, ExtraArgs=extra)
        except Exception as exc:
            raise self._error(exc, "upload", key) from exc
        return StoredObject(key=key, size=path.stat().st_size, sha256=sha256)

    def put_json(self, key: str, value: Any) -> StoredObject:
        """Write ``value`` as JSON under ``key`` (one PUT: readers see all of it or nothing)."""
        data = json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
        sha = hashlib.sha256(data).hexdigest()
        try:
            self._client.put_object(
                Bucket=self.config.bucket,
                Key=key,
                Body=data,
                ContentType="application/json",
                Metadata={SHA256_META: sha},
            )
        except Exception as exc:
            raise self._error(exc, "PUT", key) from exc
        return StoredObject(key=key, size=len(data), sha256=sha)

    def open_body(self, key: str, *, missing_ok: bool = False) -> Any:
        """A streaming GET of ``key``: boto3's body (``read``, ``iter_chunks``, ``close``; the
        caller closes it). None when there is no such object and ``missing_ok``."""
        try:
            return self._client.get_object(Bucket=self.config.bucket, Key=key)["Body"]
        except Exception as exc:
            code = getattr(exc, "response", {}).get("Error", {}).get("Code")
            if missing_ok and code in ("NoSuchKey", "404"):
                return None
            raise self._error(exc, "GET", key) from exc

    def get_json(self, key: str, *, max_bytes: int = 16 * 1024 * 1024) -> Any | None:
        """The JSON under ``key``, or None when there is no such object."""
        body = self.open_body(key, missing_ok=True)
        if body is None:
            return None
        try:
            data = body.read(max_bytes + 1)
        finally:
            body.close()
        if len(data) > max_bytes:
            raise ObjectStoreError(f"s3://{self.config.bucket}/{key} is over {max_bytes} bytes.")
        return json.loads(data)

    def download_file(self, key: str, dest: Path) -> Path:
        """Stream ``key`` into ``dest`` (boto3 writes a temporary file and renames it)."""
        try:
            self._client.download_file(self.config.bucket, key, str(dest))
        except Exception as exc:
            raise self._error(exc, "download", key) from exc
        return dest

    def keys(self, prefix: str) -> Iterator[str]:
        """Every key under ``prefix``, in key order."""
        token: dict[str, Any] = {}
        while True:
            try:
                page = self._client.list_objects_v2(
                    Bucket=self.config.bucket, Prefix=prefix, **token
                )
            except Exception as exc:
                raise self._error(exc, "LIST", prefix) from exc
            for item in page.get("Contents") or ():
                yield str(item["Key"])
            if not page.get("IsTruncated"):
                return
            token = {"ContinuationToken": page["NextContinuationToken"]}
