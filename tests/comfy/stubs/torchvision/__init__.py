"""Import-only stand-in for torchvision, on the test server's PYTHONPATH only.

PyPI has no torchvision wheel that works with the CPU torch 2.13.0 build, yet ComfyUI 0.3.75 and
spandrel import it at module level (Stable Cascade, Cosmos, ACE, LaMa, RestoreFormer code). The
pipeline never reaches that code: what is not implemented raises ``NotImplementedError`` when
used, never when imported. See ``reference/cpu-test-server.md`` §5.
"""

from __future__ import annotations

from . import transforms  # noqa: F401

__version__ = "0.0.0+stub"


class _Missing:
    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> object:
        if attr.startswith("__"):
            raise AttributeError(attr)
        raise NotImplementedError(f"torchvision stub: torchvision.{self._name}.{attr} is missing")

    def __call__(self, *args: object, **kwargs: object) -> object:
        raise NotImplementedError(f"torchvision stub: torchvision.{self._name} is not available")


models = _Missing("models")
ops = _Missing("ops")
