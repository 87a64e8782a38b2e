"""The rules that turn the end of an attempt into a job's next step.

Owns :class:`Ending` (how an attempt ended), :class:`Decision` (what happens to its job next)
and the budgets, counted per job from its ``budget_from`` attempt on:

- ``identity.max_attempts`` scored attempts; below ``identity.threshold`` the job is retried with
  a new seed, and when every attempt scored below it the best one becomes the job's image
  (status ``below_threshold``; the files stay in ``rejected/``);
- ``max_retries`` execution errors after the first, each retried with a new seed;
- :data:`LOST_LIMIT` lost prompts, each retried with the same seed (nothing was wrong with it),
  so a job that crashes its server is not retried forever.

Pure functions over manifest entries; :class:`~orchestrator.run_state.PackState` stores them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from .client_results import JobResult
from .errors import ExecutionFailed
from .manifest import Attempt, FileRecord, JobEntry
from .packfile import IdentityGate
from .run_events import PromptTimes

LOST_LIMIT = 5

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
    files: list[FileRecord] = field(default_factory=list)
    error: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    queue_wait_s: float | None = None
    execution_s: float | None = None
    stage_timings: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        result: JobResult,
        *,
        score: float | None,
        files: list[FileRecord],
        times: PromptTimes,
        submitted_at: float | None,
    ) -> Ending:
        """The ending of a prompt the server finished (its files already downloaded)."""
        started = result.started_ms / 1000 if result.started_ms else None
        wait = times.queue_wait_s
        if wait is None and started is not None and submitted_at is not None:
            # No websocket events: the server's start time against our submit time.
            wait = max(0.0, started - submitted_at)
        return cls(
            "success" if result.ok else "error",
            score=score,
            files=files,
            error=None if result.ok else _failure(result),
            started_at=started,
            finished_at=result.finished_ms / 1000 if result.finished_ms else None,
            queue_wait_s=None if wait is None else round(wait, 4),
            execution_s=result.execution_s,
            stage_timings=times.stages,
        )


def _failure(result: JobResult) -> str:
    try:
        result.raise_for_status()
    except ExecutionFailed as exc:  # its message names the node and what it raised
        return str(exc)
    return "execution failed"


def below(gate: IdentityGate, score: float | None) -> bool:
    """True when the identity gate rejects ``score`` (no score, or no gate: accepted)."""
    return gate.enabled and score is not None and score < gate.threshold


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
    if ending.status == "lost":
        attempt["status"] = "lost"
        lost = sum(a.get("status") == "lost" for a in budget(entry))
        if lost >= LOST_LIMIT:
            return Decision(
                "failed",
                message=f"lost {lost} times: its server restarted or could not be reached on "
                "every try; check the server's log (a job that crashes it?)",
            )
        return Decision("requeue", seed=next_seed(), message=ending.error or "prompt lost")
    if ending.status == "error":
        attempt["status"] = "error"
        message = ending.error or "execution failed"
        errors = sum(a.get("status") == "error" for a in budget(entry))
        if errors > max_retries:
            return Decision("failed", message=message)
        return Decision("retry", seed=next_seed(), message=message)
    if not below(gate, ending.score):
        attempt["status"] = "success"
        return Decision("done")
    attempt["status"] = "below_threshold"
    scored = [a for a in budget(entry) if a.get("status") in ("success", "below_threshold")]
    if len(scored) < gate.max_attempts:
        return Decision(
            "retry",
            seed=next_seed(),
            message=f"identity score {ending.score:.3f} is below {gate.threshold:g}",
        )
    return Decision(
        "below_threshold", message=f"all {len(scored)} attempts scored below {gate.threshold:g}"
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
        best = max(rejected, key=lambda a: a.get("score") or 0.0)
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
