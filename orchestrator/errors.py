"""The one exception hierarchy of the orchestrator.

Every message says what is wrong and how to fix it. The CLI prints ``str(error)`` and exits
with ``error.exit_code``; nothing here logs or prints.

    CharpackError
    ├── PackError                 the pack file or its files are wrong (before anything is sent)
    ├── ValidationError           a graph fails static validation against object_info
    ├── ServerConfigError         a server URL or its credentials (environment) are malformed
    ├── ServerUnavailable         a server cannot be reached / answers 5xx / proxy timeout
    ├── AuthError                 a server (or its proxy) refused our credentials
    ├── PromptRejected            POST /prompt answered 400 or 200 with node_errors
    ├── MissingOnServer           a model folder or a reported output file is not on the server
    ├── ExecutionFailed           the server ran the prompt and a node raised
    ├── JobLost                   the server no longer knows a prompt (restart)
    ├── TimeoutExceeded           a bounded wait ran out
    ├── OutputRefused             a server's reported output is not this attempt's file, or is
    │                             not a file the job can produce (name, size, count, time)
    ├── PackFolderError           the pack folder cannot be used as it is
    │   ├── PackFolderBusy        another charpack run holds the folder's lock
    │   └── DiskFull              the pack folder's disk is full (nothing is regenerated)
    ├── CharacterError            a character folder, its references or its dataset are wrong
    ├── TrainingError             a LoRA training failed or its result cannot be trusted
    └── PodError                  RunPod API / pod lifecycle problems
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


class CharpackError(Exception):
    """Base of every error charpack raises on purpose."""

    exit_code = 1


class PackError(CharpackError):
    """A pack file is malformed or refers to something missing.

    ``problems`` holds one line per problem, each naming the file, the field and the fix.
    """

    exit_code = 2

    def __init__(self, problems: Sequence[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class ValidationError(CharpackError):
    """A graph does not fit a server's (or the recorded) ``/object_info``."""

    exit_code = 2

    def __init__(self, findings: Sequence[str]) -> None:
        self.findings = list(findings)
        super().__init__("\n".join(self.findings))


class ServerUnavailable(CharpackError):
    """A ComfyUI server cannot be reached or answered with a server-side failure."""

    exit_code = 3


class AuthError(CharpackError):
    """A server or its auth proxy refused the request (401/403)."""

    exit_code = 3


class PromptRejected(CharpackError):
    """ComfyUI refused a workflow; ``node_messages`` maps node id to readable messages."""

    exit_code = 2

    def __init__(self, message: str, node_messages: Mapping[str, Sequence[str]] | None = None):
        self.node_messages = {k: list(v) for k, v in (node_messages or {}).items()}
        lines = [message]
        for node_id, messages in self.node_messages.items():
            lines.extend(f"  {node_id}: {m}" for m in messages)
        super().__init__("\n".join(lines))


class ExecutionFailed(CharpackError):
    """A node raised while the server ran the prompt."""

    def __init__(self, message: str, *, node_id: str | None = None, node_type: str | None = None):
        self.node_id = node_id
        self.node_type = node_type
        super().__init__(message)


class JobLost(CharpackError):
    """A submitted prompt is in neither history nor queue (the server restarted)."""


class TimeoutExceeded(CharpackError):
    """A bounded wait ran out."""


class PodError(CharpackError):
    """RunPod API or pod lifecycle problem (missing key, no capacity, health check failed)."""

    exit_code = 4


class ServerConfigError(CharpackError):
    """A server URL or the credentials for it (environment variables) are malformed."""

    exit_code = 2


class MissingOnServer(CharpackError):
    """The server lacks something a job needs: a model folder, or an output file it reported."""

    exit_code = 2


class OutputRefused(CharpackError):
    """A file a server reported is refused: it is not provably this attempt's output (another
    prompt's file, not completely written), or it is not one the job can produce (a name with
    control characters, a suffix the job does not make, more files than the job makes, larger
    than the job can produce, or too slow to arrive)."""


class PackFolderError(CharpackError):
    """The pack folder cannot be used as it is (locked, full, or holding something unexpected)."""

    exit_code = 2


class PackFolderBusy(PackFolderError):
    """Another ``charpack run`` holds the pack folder's lock."""


class DiskFull(PackFolderError):
    """The disk holding the pack folder is full; the run stops and nothing is regenerated."""


class CharacterError(CharpackError):
    """A character folder cannot be used: references that fail the checks, no dataset, a
    curation file naming missing images. ``problems`` holds one line per problem, each naming
    the file and the fix."""

    exit_code = 2

    def __init__(self, problems: Sequence[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class TrainingError(CharpackError):
    """A LoRA training failed on the server (a node raised, the loss diverged) or its result
    cannot be trusted (the downloaded file's sha256 or size differs from what the server
    reported)."""


class PromptNotTaken(ServerUnavailable):
    """The server answered 5xx to ``POST /prompt`` and its history and queue say the prompt was
    not queued: not a lost prompt (nothing ran), but a server that refuses work for now."""

    def __init__(self, message: str, *, status: int, body: str, since: float) -> None:
        self.status = status
        self.body = body  # redacted excerpt of the last answer
        self.since = since  # time.monotonic() of the first 5xx of this submit
        super().__init__(message)
