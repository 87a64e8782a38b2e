"""The provisioning report: one line per item, every failure with its fix.

Provisioning never stops at the first failure; each step adds outcomes here and the script
prints the whole report at the end (and writes it as JSON for `charpack pod up` to read).
Every text passes through `redact` so a secret that slipped into a message never reaches the
console, the log or the JSON file.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

# ok: already as wanted, nothing done; done: changed now; skipped: not attempted on purpose;
# warning: usable but needs attention; failed: not usable, with a fix.
STATUSES = ("ok", "done", "skipped", "warning", "failed")


@dataclass(frozen=True)
class Outcome:
    step: str
    item: str
    status: str
    detail: str
    fix: str = ""


class Report:
    """Collects outcomes; renders them for people (text) and programs (JSON)."""

    def __init__(self, *, secrets: list[str]) -> None:
        self.outcomes: list[Outcome] = []
        self._secrets = [s for s in secrets if s]

    def add(self, step: str, item: str, status: str, detail: str, fix: str = "") -> Outcome:
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        outcome = Outcome(step, item, status, self.redact(detail), self.redact(fix))
        self.outcomes.append(outcome)
        return outcome

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "<redacted>")
        return text

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    def render(self) -> str:
        lines = ["charpack provisioning report"]
        for o in self.outcomes:
            lines.append(f"  {o.status.upper():8} {o.step:7} {o.item}: {o.detail}")
            if o.fix:
                lines.append(f"  {'':8} {'':7} fix: {o.fix}")
        summary = ", ".join(f"{self.count(s)} {s}" for s in STATUSES if self.count(s))
        lines.append(f"summary: {summary or 'nothing to do'}")
        if self.failures:
            lines.append(f"{len(self.failures)} failure(s): see the fix lines above")
        return "\n".join(lines)

    def to_json(self) -> dict[str, object]:
        return {
            "ok": not self.failures,
            "failures": len(self.failures),
            "outcomes": [asdict(o) for o in self.outcomes],
        }

    def write_json(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2) + "\n", encoding="utf-8")
        # nginx workers serve this file to the orchestrator (behind the token).
        os.chmod(tmp, 0o644)
        tmp.replace(path)
