"""The one shape of a check's result: a :class:`Finding` (code, location, message, fix).

``charpack validate`` (:mod:`charpack.check.validate`) and ``charpack preflight``
(:mod:`charpack.check.preflight`) both report in it, so a script reads either's ``--json`` the
same way, and preflight takes validate's findings apart by their fields (node, input, code)
rather than by parsing text. A finding reads as one line: ``location: message — fix``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

Level = Literal["error", "warning"]


@dataclass(frozen=True)
class Finding:
    """One thing a check found: an error (a server would refuse it, or lacks it) or a warning
    (it could not be confirmed)."""

    code: str  # "<area>.<what>", stable for scripts: "workflow.above_maximum", "node.missing"
    location: str  # where, as a person looks for it: "base.sampler (KSampler)", "models/loras/x"
    message: str  # what is wrong
    fix: str = ""  # what to do about it ("" where the message already lists the choices)
    level: Level = "error"
    node: str | None = None  # the graph node it is about (workflow findings)
    input: str | None = None  # that node's input it is about
    used_by: Iterable[str] = ()  # the jobs or scenes that have it; stored sorted, as a tuple

    def __post_init__(self) -> None:
        object.__setattr__(self, "used_by", tuple(sorted(set(self.used_by))))

    @property
    def area(self) -> str:
        """What was checked: ``workflow``, ``server``, ``version``, ``node``, ``model``, …"""
        return self.code.partition(".")[0]

    def __str__(self) -> str:
        text = f"{self.location}: {self.message}" if self.location else self.message
        return f"{text} — {self.fix}" if self.fix else text

    def to_json(self) -> dict[str, Any]:
        """The finding as ``--json`` prints it (docs/pack-format.md, "Findings")."""
        return {
            "code": self.code,
            "level": self.level,
            "location": self.location,
            "message": self.message,
            "fix": self.fix,
            "node": self.node,
            "input": self.input,
            "used_by": list(self.used_by),
        }
