"""The rules that turn the end of an attempt into a job's next step.

Owns :class:`Ending` (how an attempt ended), :class:`Decision` (what happens to its job next)
and the budgets, counted per job from its ``budget_from`` attempt on:

- ``identity.max_attempts`` scored attempts; below ``identity.threshold``, or with no face found
  in the image (:data:`NO_FACE`: another seed may show one), the job is retried with a new seed,
  and when every attempt was rejected the best one becomes the job's image (status
  ``below_threshold``; the files stay in ``rejected/``). Whether an attempt is rejected is
  decided once, by :func:`below`, on the download thread (it picks the attempt's folder); the
  verdict travels in :attr:`Ending.rejected`, and :func:`judge` follows it, so an attempt's
  folder and its status cannot disagree;
- ``max_retries`` execution errors after the first, each retried with a new seed — but only
  errors a new seed may change: one that the same graph raises whatever its seed (a face
  reference without a face, a missing model, a name the saver refuses, an input out of range;
  :func:`seed_cannot_fix`) fails the job at once, with the fix in its message;
- :data:`LOST_LIMIT` lost prompts, each retried with the same seed (nothing was wrong with it),
  so a job that crashes its server is not retried forever.

Server text in an error is redacted here (:func:`~charpack.comfy.auth.redact`) before it reaches
the manifest or any message. Pure functions over manifest entries;
:class:`~charpack.run.state.PackState` stores them.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from charpack_nodes.pipelines import catalog
from charpack_nodes.pipelines import gate as early_gate

from ..comfy.auth import redact
from ..comfy.results import JobResult, NodeFailure
from ..errors import ExecutionFailed
from ..folder.manifest import Attempt, FileRecord, JobEntry
from ..pack.packfile import IdentityGate
from .events import PromptTimes

LOST_LIMIT = 5
STOPPED_EARLY = early_gate.STOPPED_AT  # an attempt's ``stopped_at`` when the early gate blocked it


class NoFace(enum.Enum):
    """The identity node found no face in the image: a result of its own, not a 0.0 score."""

    NO_FACE = "no_face"


NO_FACE: Final = NoFace.NO_FACE
Score = float | NoFace | None  # an identity result: a score, no face, or no identity node


def scores_in(ui: Mapping[str, Any]) -> Score:
    """An Identity score node's UI output as one result: the batch's lowest score,
    :data:`NO_FACE` when an image of it has no face (``null`` in ``scores``, ``false`` in
    ``faces``; older node packs said so only in a warning), or None when it lists no score."""
    scores = tuple(ui.get("scores", ()) or ())
    warnings = [str(w) for w in ui.get("warnings", ()) or ()]
    if (
        any(v is None for v in scores)
        or any(f is False for f in ui.get("faces", ()) or ())
        or any(w.startswith("no face found in image") for w in warnings)
    ):
        return NO_FACE
    values = [float(v) for v in scores if isinstance(v, int | float) and not isinstance(v, bool)]
    return min(values) if values else None


@dataclass(frozen=True)
class EarlyStop:
    """The early gate blocked a prompt: nothing after it ran, no image was saved."""

    score: Score  # the gate's score node's result (None when its output is missing)


def early_stop(result: JobResult) -> EarlyStop | None:
    """How the early gate stopped ``result``'s prompt (its UI output ``passed: [false]``), or
    None when it let it go on or the graph has no early gate."""
    passed = result.ui.get(early_gate.GATE, {}).get("passed")
    if not result.ok or not isinstance(passed, list | tuple) or any(p is True for p in passed):
        return None
    return EarlyStop(scores_in(result.ui.get(early_gate.GATE_SCORE, {})))


# Execution errors a new seed cannot change: the same graph fails the same way on every seed.
# (what the error says, the fix); matched against "<node type> <exception type>: <message>".
_SEED_CANNOT_FIX: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"(?i)no face (detected|found in (the )?reference)"),
        "a face reference has no face the face detector can find; use a clear, well-lit photo "
        "where the face is large and unobstructed (character.face_references)",
    ),
    (
        re.compile(rf"^{re.escape(catalog.SAVE_PACK.class_type)} "),
        "the pack saver refused its file name or could not write it; fix the pack or scene "
        "name (charpack validate checks them) or free space in the server's output folder",
    ),
    (
        re.compile(
            r"(?i)(FileNotFoundError|model not found|Missing \w+ model|could not detect model "
            r"type|not found in .*models|no such file)"
        ),
        "a model file is missing or is not the kind the node loads; put the right file on the "
        "server (charpack preflight lists every model a pack needs)",
    ),
    (
        re.compile(r"(?i)(out of range|must be (between|at most|at least|positive))"),
        "an input is out of the node's range; fix the value in the pack (charpack validate)",
    ),
)

Action = Literal["done", "below_threshold", "failed", "retry", "requeue", "ignored"]


@dataclass(frozen=True)
class Decision:
    """What happens to a job after one of its attempts ended."""

    action: Action
    seed: int | None = None  # the next attempt's seed (retry / requeue)
    message: str = ""


@dataclass
class Ending:
    """How an attempt ended, as the runner saw it (seconds; ``*_at`` are epoch seconds)."""

    status: Literal["success", "error", "lost"]
    score: float | None = None
    face: bool | None = None  # False: the identity node found no face (score is None then)
    rejected: bool = False  # the identity gate's verdict (:func:`below`), made at download
    fix: str | None = None  # an error no seed can change: what to fix (the job is not retried)
    files: list[FileRecord] = field(default_factory=list)
    error: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    queue_wait_s: float | None = None
    execution_s: float | None = None
    stage_timings: dict[str, float] = field(default_factory=dict)
    worker_s: float | None = None  # on a Serverless endpoint: the seconds RunPod bills
    stopped_at: str | None = None  # STOPPED_EARLY: the early gate blocked the attempt
    early_score: float | None = None  # the early gate's score (None: no face, or not gated)

    @classmethod
    def of(
        cls,
        result: JobResult,
        *,
        score: Score,
        rejected: bool,
        files: list[FileRecord],
        times: PromptTimes,
        submitted_at: float | None,
    ) -> Ending:
        """The ending of a prompt the server finished (its files already downloaded).

        ``score`` is :func:`~charpack.run.fetcher.score_of`'s: a score, :data:`NO_FACE` or
        None (no identity node); ``rejected`` is the gate's verdict on it, made when its files'
        folder was chosen.
        """
        started = result.started_ms / 1000 if result.started_ms else None
        wait = times.queue_wait_s
        if wait is None and started is not None and submitted_at is not None:
            # No websocket events: the server's start time against our submit time.
            wait = max(0.0, started - submitted_at)
        no_face = isinstance(score, NoFace)
        early = early_stop(result)
        early_score = None if early is None or isinstance(early.score, NoFace) else early.score
        if early is not None:  # blocked: no final score ran, the early one is the result
            no_face = isinstance(early.score, NoFace)
            score = early_score
        return cls(
            "success" if result.ok else "error",
            score=None if isinstance(score, NoFace) else score,
            face=False if no_face else (True if score is not None else None),
            rejected=rejected,
            fix=None if result.ok else seed_cannot_fix(result.failure),
            files=files,
            error=None if result.ok else _failure(result),
            started_at=started,
            finished_at=result.finished_ms / 1000 if result.finished_ms else None,
            queue_wait_s=None if wait is None else round(wait, 4),
            execution_s=result.execution_s,
            stage_timings=times.stages,
            stopped_at=None if early is None else STOPPED_EARLY,
            early_score=early_score,
        )


def _failure(result: JobResult) -> str:
    try:
        result.raise_for_status()
    except ExecutionFailed as exc:  # its message names the node and what it raised
        return redact(str(exc))  # the server's text: it may quote our Authorization header
    return "execution failed"


def seed_cannot_fix(failure: NodeFailure | None) -> str | None:
    """The fix for an execution error that every seed would hit again, else None (retry)."""
    if failure is None:
        return None
    said = f"{failure.node_type or '?'} {failure.exception_type or '?'}: {failure.message}"
    for pattern, fix in _SEED_CANNOT_FIX:
        if pattern.search(said):
            return fix
    return None


def below(gate: IdentityGate, score: Score) -> bool:
    """True when the identity gate rejects ``score``: below the threshold, or no face found
    (no score, or no gate: accepted). The gate's one decision: called once per attempt, by
    the download thread, and carried from there in :attr:`Ending.rejected`."""
    if not gate.enabled:
        return False
    return isinstance(score, NoFace) or (score is not None and score < gate.threshold)


def budget(entry: JobEntry) -> list[Attempt]:
    """The attempts that count against the job's budgets."""
    return (entry.get("attempts") or [])[entry.get("budget_from", 0) :]


def judge(
    entry: JobEntry,
    attempt: Attempt,
    ending: Ending,
    *,
    gate: IdentityGate,
    max_retries: int,
    next_seed: Callable[[], int],
) -> Decision:
    """Set ``attempt``'s status from ``ending`` and decide the job's next step."""
    if ending.error:  # whatever reported it (a download, a lost prompt), it may quote a server
        ending.error = attempt["error"] = redact(ending.error)
    if ending.status == "lost":
        attempt["status"] = "lost"
        lost = sum(a.get("status") == "lost" for a in budget(entry))
        if lost >= LOST_LIMIT:
            # Say the last reason: a refused download is no server restart.
            why = f"; the last time: {ending.error}" if ending.error else ""
            return Decision(
                "failed",
                message=f"lost {lost} times{why}. Its server restarted, could not be reached or "
                "sent files that were refused on every try; check the server's log (a job that "
                "crashes it?)",
            )
        return Decision("requeue", seed=next_seed(), message=ending.error or "prompt lost")
    if ending.status == "error":
        attempt["status"] = "error"
        message = ending.error or "execution failed"
        if ending.fix is not None:
            attempt["error"] = message = (
                f"{message} — not retried, no seed changes this: {ending.fix}"
            )
            return Decision("failed", message=message)
        errors = sum(a.get("status") == "error" for a in budget(entry))
        if errors > max_retries:
            return Decision("failed", message=message)
        return Decision("retry", seed=next_seed(), message=message)
    if ending.face is not None:
        attempt["face"] = ending.face
    if ending.stopped_at is not None:
        # Blocked after the InstantID fix: no final score, no image; retried as a rejection.
        attempt["stopped_at"] = ending.stopped_at
        attempt["early_score"] = ending.early_score
        attempt["score"] = None
        ending.rejected = True
    if not ending.rejected:  # the gate decided when the files were placed; never again here
        attempt["status"] = "success"
        return Decision("done")
    attempt["status"] = "below_threshold"
    scored = [a for a in budget(entry) if a.get("status") in ("success", "below_threshold")]
    if len(scored) < gate.max_attempts:
        if ending.stopped_at is not None:
            why = (
                "stopped at the early gate: no face found"
                if ending.early_score is None
                else f"stopped at the early gate: score {ending.early_score:.3f} is below "
                f"{gate.early_threshold or gate.threshold:g}"
            )
        elif ending.score is None:
            why = "no face found in the image"
        else:
            why = f"identity score {ending.score:.3f} is below {gate.threshold:g}"
        return Decision("retry", seed=next_seed(), message=why)
    faceless = sum(a.get("face") is False for a in scored)
    early = sum(a.get("stopped_at") is not None for a in scored)
    if faceless == len(scored):
        return Decision("below_threshold", message=f"no face found in any of {faceless} attempts")
    notes = [f"{faceless} with no face found"] * bool(faceless)
    notes += [f"{early} stopped at the early gate"] * bool(early)
    also = f" ({'; '.join(notes)})" if notes else ""
    return Decision(
        "below_threshold",
        message=f"all {len(scored)} attempts scored below {gate.threshold:g}{also}",
    )


def settle(entry: JobEntry, decision: Decision) -> None:
    """Update the job entry's summary fields for ``decision``."""
    if decision.action == "done":
        last = (entry.get("attempts") or [])[-1]
        entry.update(
            {
                "status": "done",
                "seed": last["seed"],
                "score": last.get("score"),
                "image": first_image(last),
                "error": None,
            }
        )
    elif decision.action == "below_threshold":
        rejected = [a for a in budget(entry) if a.get("status") == "below_threshold"]
        # An attempt with an image beats one the early gate stopped, and a scored one beats one
        # with no face found, whatever its score.
        best = max(
            rejected,
            key=lambda a: (
                first_image(a) is not None,
                a.get("score") is not None,
                a.get("score") or a.get("early_score") or 0.0,
            ),
        )
        entry.update(
            {
                "status": "below_threshold",
                "seed": best["seed"],
                "prompt_id": best["prompt_id"],
                "score": best.get("score"),
                "image": first_image(best),
                "error": None,
            }
        )
    elif decision.action == "failed":
        entry.update({"status": "failed", "error": decision.message})
    elif decision.action in ("retry", "requeue"):
        entry.update({"status": "pending"})


def active(entry: JobEntry) -> Attempt | None:
    """The attempt in flight on a server, if any (always the job's last)."""
    attempts = entry.get("attempts") or []
    if entry.get("status") == "submitted" and attempts:
        last = attempts[-1]
        if last.get("status") in ("submitted", "running"):
            return last
    return None


def first_image(attempt: Attempt) -> str | None:
    files = attempt.get("files") or []
    pngs = [f["path"] for f in files if f["path"].endswith(".png")]
    return pngs[0] if pngs else (files[0]["path"] if files else None)
