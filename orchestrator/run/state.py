"""The pack folder's record during ``charpack run``: the jobs, their attempts, and the manifest.

Owns :class:`PackState`: opening a pack folder (a new one, or resuming one only when it was made
from the same pack: same name, same parsed content and the same content in every reference file
it names — :func:`charpack.run.pack_identity.pack_digest`), recording each attempt and saving
the manifest **before** its prompt is posted, and storing how attempts end, with the job's next
step decided by :mod:`charpack.run.retry_rules`. A resumed folder keeps finished jobs, returns
the prompts still in flight for the runner to look up on their servers, and gives failed jobs a
fresh budget (their attempts stay on record). Attempt status ``interrupted`` means cancelled by
the user; an interrupt nobody asked for is an ``error``. Seeds follow
:func:`charpack.pack.jobs.retry_seed` and never repeat within a job. Nothing is written until
:meth:`PackState.save`.

The manifest is saved once per change, not once per job it touches:
:meth:`PackState.begin_all` saves at once (the attempts of one dispatch are on disk before any
is posted), taking along whatever else changed since the last save; every other change (an
attempt's end, a refused scene's jobs, a cancel) only marks the state dirty, and the run loop
calls :meth:`PackState.flush` once per message handled, before it waits for the next. In a
steady run each attempt costs one save: the next attempt's begin carries the previous end. A
save's cost does not grow with the pack (:meth:`charpack.folder.manifest.Manifest.save`: a big
pack's saves go to ``manifest.journal``); :meth:`PackState.close` leaves ``manifest.json``
whole at the end of the run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from ..errors import CharpackError
from ..folder.manifest import Attempt, JobEntry, Manifest, ManifestError
from ..pack.jobs import Job, expand, prompt_id_for, retry_seed
from ..pack.packfile import Pack
from .pack_identity import (
    made_before_references,
    not_this_pack,
    pack_digest,
    references,
    settings_digest,
)
from .retry_rules import Decision, Ending, active, judge, settle

log = logging.getLogger(__name__)

_SUMMARY = ("status", "seed", "prompt_id", "server")  # what begin changes on the job entry
CANCELLED = "cancelled by the user (Ctrl-C twice); the next run submits it again"


@dataclass(frozen=True)
class Begin:
    """One attempt to record before it is posted (:meth:`PackState.begin_all`)."""

    key: str
    server: str
    version: str | None
    seed: int
    workflow: dict[str, Any]


def model_group(job: Job) -> Hashable:
    """Jobs with equal groups load the same checkpoint and LoRA."""
    character = job.spec.character
    return (character.checkpoint, character.lora.name if character.lora else None)


def image_dir(scene: str, *, rejected: bool) -> str:
    """Where an attempt's files go, relative to the pack folder."""
    return f"rejected/{scene}" if rejected else scene


class PackState:
    """A pack folder's manifest plus the pack's jobs; every change is saved at once."""

    def __init__(self, manifest: Manifest, pack: Pack, *, max_retries: int) -> None:
        self.manifest = manifest
        self.pack = pack
        self.max_retries = max_retries
        self.dirty = False  # changed since the last save (see flush)
        self.jobs: dict[str, Job] = {job.key: job for job in expand(pack)}
        for key, job in self.jobs.items():
            if key not in manifest:
                manifest.put(_new_entry(job))

    @classmethod
    def open(cls, folder: Path, pack: Pack, *, max_retries: int) -> PackState:
        """A new pack folder, or the one at ``folder`` when it was made from this pack."""
        refs = references(pack)
        digest = pack_digest(pack, refs)
        if Manifest.exists(folder):
            manifest = Manifest.load(folder)
            made = manifest.header.get("pack") or {}
            if made.get("name") != pack.name or made.get("sha256") != digest:
                if not made_before_references(made, pack):
                    raise ManifestError(not_this_pack(folder, made, pack, digest, refs))
                # Made before reference files counted, from these settings: pin the files now.
                made.update(
                    {"sha256": digest, "settings_sha256": settings_digest(pack), "references": refs}
                )
            state = cls(manifest, pack, max_retries=max_retries)
            state._resume()
        else:
            manifest = Manifest.create(
                folder,
                pack={
                    "name": pack.name,
                    "character": pack.character_name,
                    "file": str(pack.path),
                    "sha256": digest,
                    "settings_sha256": settings_digest(pack),
                    "references": refs,
                    "scenes": [s.name for s in pack.scenes],
                },
                identity={
                    "enabled": pack.identity.enabled,
                    "threshold": pack.identity.threshold,
                    "max_attempts": pack.identity.max_attempts,
                },
            )
            state = cls(manifest, pack, max_retries=max_retries)
        return state

    @property
    def folder(self) -> Path:
        return self.manifest.folder

    @property
    def run_id(self) -> str:
        return self.manifest.run_id

    def entry(self, key: str) -> JobEntry:
        return self.manifest.job(key)

    def save(self) -> None:
        self.manifest.save()
        self.dirty = False

    def flush(self) -> None:
        """Save when anything changed since the last save (once per change, however many
        jobs it touched)."""
        if self.dirty:
            self.save()

    def close(self) -> None:
        """The run is over (finished, interrupted or failing): leave ``manifest.json`` whole,
        with a big pack's journal folded in. Never raises for the folder: when that write
        fails the journal stays, and every reader and the next run still see each save."""
        try:
            self.manifest.close()
        except CharpackError as exc:
            log.warning(
                "%s: manifest.json not rewritten (%s); manifest.journal holds the "
                "latest changes and the next run folds them in",
                self.folder,
                exc,
            )

    def _resume(self) -> None:
        for entry in self.manifest:
            if entry["key"] not in self.jobs:
                continue
            attempts = entry.get("attempts") or []
            if entry.get("status") == "failed":
                entry["budget_from"] = len(attempts)
                entry["status"], entry["error"] = "pending", None
            elif entry.get("status") == "submitted" and not active(entry):
                entry["status"] = "pending"
            self.manifest.put(entry)

    # -- what to do ------------------------------------------------------------------------

    def todo(self) -> list[str]:
        """Keys of the jobs waiting for a server, in pack order."""
        return [k for k in self.jobs if self.entry(k).get("status") == "pending"]

    def in_flight(self) -> Iterator[tuple[str, Attempt]]:
        """Attempts posted by an earlier run and not finished: look them up on their server."""
        for key in self.jobs:
            attempt = active(self.entry(key))
            if attempt is not None:
                yield key, attempt

    def seed_for(self, key: str) -> int:
        """The next attempt's seed: a new one after each judged attempt (error, below)."""
        judged = sum(
            a.get("status") in ("error", "below_threshold")
            for a in self.entry(key).get("attempts") or []
        )
        return retry_seed(self.jobs[key], judged + 1)

    # -- attempts --------------------------------------------------------------------------

    def begin(
        self, key: str, *, server: str, version: str | None, seed: int, workflow: dict[str, Any]
    ) -> str:
        """Record a new attempt and save the manifest; returns the prompt_id to post it under."""
        return self.begin_all([Begin(key, server, version, seed, workflow)])[0]

    def begin_all(self, begins: Sequence[Begin]) -> list[str]:
        """Record new attempts and save the manifest once, before any is posted; returns their
        prompt_ids. When the save fails none of them is recorded (none may be posted)."""
        ids, undo = [], []
        for b in begins:
            entry = self.entry(b.key)
            attempts = entry.setdefault("attempts", [])
            number = len(attempts) + 1
            prompt_id = prompt_id_for(self.run_id, b.key, number)
            attempts.append(
                {
                    "attempt": number,
                    "prompt_id": prompt_id,
                    "seed": b.seed,
                    "server": b.server,
                    "comfyui_version": b.version,
                    "workflow": b.workflow,
                    "submitted_at": time.time(),
                    "started_at": None,
                    "finished_at": None,
                    "queue_wait_s": None,
                    "execution_s": None,
                    "stage_timings": {},
                    "status": "submitted",
                    "score": None,
                    "error": None,
                    "files": [],
                }
            )
            undo.append((entry, attempts, {k: entry.get(k) for k in _SUMMARY}))
            entry.update(
                {"status": "submitted", "seed": b.seed, "prompt_id": prompt_id, "server": b.server}
            )
            self.manifest.put(entry)
            ids.append(prompt_id)
        try:
            self.save()
        except BaseException:
            # Not on disk, so never posted: a later save must not record them as in flight.
            for entry, attempts, before in reversed(undo):
                attempts.pop()
                entry.update(before)
                self.manifest.put(entry)
            raise
        return ids

    def attempt(self, key: str, prompt_id: str) -> Attempt | None:
        """The job's attempt ``prompt_id`` while it is the active one, else None (stale)."""
        current = active(self.entry(key))
        return current if current is not None and current["prompt_id"] == prompt_id else None

    def end(self, key: str, prompt_id: str, ending: Ending) -> Decision:
        """Record how the active attempt ``prompt_id`` ended; returns the job's next step."""
        attempt = self.attempt(key, prompt_id)
        if attempt is None:
            return Decision("ignored", message=f"{prompt_id} is not the active attempt of {key}")
        entry = self.entry(key)
        if ending.worker_s is not None:  # only endpoint attempts have it (their bill)
            cast(dict[str, Any], attempt)["worker_s"] = round(ending.worker_s, 3)
        attempt.update(
            {
                "score": ending.score,
                "files": ending.files,
                "error": ending.error,
                "started_at": ending.started_at,
                "finished_at": ending.finished_at
                if ending.finished_at is not None
                else time.time(),
                "queue_wait_s": ending.queue_wait_s,
                "execution_s": ending.execution_s,
                "stage_timings": ending.stage_timings,
            }
        )
        decision = judge(
            entry,
            attempt,
            ending,
            gate=self.pack.identity,
            max_retries=self.max_retries,
            next_seed=lambda: self.seed_for(key),
        )
        self._store(entry, decision)
        return decision

    def rejected(self, key: str, prompt_id: str, message: str) -> Decision:
        """The server refused the workflow: the job fails (retrying cannot help)."""
        attempt = self.attempt(key, prompt_id)
        if attempt is None:
            return Decision("ignored")
        attempt.update({"status": "error", "error": message, "finished_at": time.time()})
        decision = Decision("failed", message=message)
        self._store(self.entry(key), decision)
        return decision

    def cancelled(self, key: str, prompt_id: str) -> bool:
        """The user cancelled the active attempt on its server; the job waits for the next run."""
        attempt = self.attempt(key, prompt_id)
        if attempt is None:
            return False
        attempt.update({"status": "interrupted", "error": CANCELLED, "finished_at": time.time()})
        entry = self.entry(key)
        entry["status"] = "pending"
        self.manifest.put(entry)
        self.dirty = True
        return True

    def fail(self, key: str, message: str) -> None:
        """Fail a waiting job without running it (its scene's workflow was refused)."""
        self._store(self.entry(key), Decision("failed", message=message))

    def _store(self, entry: JobEntry, decision: Decision) -> None:
        settle(entry, decision)
        self.manifest.put(entry)
        self.dirty = True  # written by the next begin or flush, once for the whole change

    # -- counts ----------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        out = {"pending": 0, "submitted": 0, "done": 0, "below_threshold": 0, "failed": 0}
        for key in self.jobs:
            status = str(self.entry(key).get("status", "pending"))
            out[status] = out.get(status, 0) + 1
        return out


def _new_entry(job: Job) -> JobEntry:
    return {
        "key": job.key,
        "scene": job.scene,
        "index": job.index,
        "status": "pending",
        "seed": job.seed,
        "prompt_id": None,
        "server": None,
        "score": None,
        "error": None,
        "image": None,
        "attempts": [],
    }
