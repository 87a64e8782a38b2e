"""The Serverless job's contract, the worker's side: :class:`JobRequest` (a validated
``job["input"]``, by :func:`parse_request`) and :class:`JobFailed` (a job the worker could not
carry out, answered as a FAILED job). One job is one attempt of one pack job::

    job["input"] = {"workflow": <API graph>, "prompt_id": <client-chosen uuid>,
                    "job_key": "cafe/001", "run_id": <pack run id>,
                    "inputs": [{"name": <Upload.image_value>, "s3_key": ...}],
                    "expect": {"max_files": 2, "max_bytes": ..., "subfolder"?: "<pack>/<scene>"}}

A FAILED job's ``error`` is a JSON string ``{"type", "message", "retry"}``; for
``comfy_unavailable`` and ``lost`` the answer also asks the SDK to replace the worker
(``refresh_worker``). It runs nothing (:mod:`.worker` does).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..comfy.results import check_prompt_id
from ..errors import CharpackError
from .objects import check_job_key, check_run_id

__all__ = ["DEFAULT_MAX_BYTES", "REFRESH_KINDS", "JobFailed", "JobRequest", "parse_request"]

DEFAULT_MAX_BYTES = 512 << 20
# ComfyUI is gone or restarted under the handler: a fresh worker is the cure, not this one.
REFRESH_KINDS = frozenset({"comfy_unavailable", "lost"})


class JobFailed(CharpackError):
    """The worker could not carry out the job; ``kind`` and ``retry`` go to the client."""

    def __init__(self, kind: str, message: str, *, retry: bool = True) -> None:
        super().__init__(message)
        self.kind = kind
        self.retry = retry

    def payload(self) -> dict[str, Any]:
        error = {"type": self.kind, "message": str(self), "retry": self.retry}
        answer: dict[str, Any] = {"error": json.dumps(error, sort_keys=True)}
        if self.kind in REFRESH_KINDS:
            answer["refresh_worker"] = True  # the SDK stops this worker; the platform starts anew
        return answer


@dataclass(frozen=True)
class JobRequest:
    """A validated ``job["input"]``."""

    workflow: dict[str, Any]
    prompt_id: str
    job_key: str
    run_id: str
    inputs: tuple[tuple[str, str], ...]  # (upload name, s3 key)
    max_files: int
    max_bytes: int
    subfolder: str | None = None  # where the saver must have written them (``<pack>/<scene>``)


def parse_request(raw: Any) -> JobRequest:
    """``job["input"]`` checked, or :class:`JobFailed` (``invalid_input``) saying what is wrong."""
    try:
        if not isinstance(raw, Mapping):
            raise ValueError("the job's input is not an object")
        workflow = raw.get("workflow")
        if not isinstance(workflow, Mapping) or not workflow:
            raise ValueError("'workflow' (the API graph) is missing or empty")
        inputs = []
        for item in raw.get("inputs") or ():
            if not isinstance(item, Mapping):
                raise ValueError(f"an entry of 'inputs' is not an object: {item!r:.80}")
            inputs.append((str(item["name"]), str(item["s3_key"])))
        expect = raw.get("expect") or {}
        return JobRequest(
            workflow=dict(workflow),
            prompt_id=check_prompt_id(str(raw.get("prompt_id"))),
            job_key=check_job_key(str(raw.get("job_key"))),
            run_id=check_run_id(str(raw.get("run_id"))),
            inputs=tuple(inputs),
            max_files=int(expect.get("max_files", 2)),
            max_bytes=int(expect.get("max_bytes", DEFAULT_MAX_BYTES)),
            subfolder=None if expect.get("subfolder") is None else str(expect["subfolder"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise JobFailed("invalid_input", f"job input refused: {exc}", retry=False) from exc
