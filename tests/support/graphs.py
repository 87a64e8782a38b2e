"""Weight-free API graphs and small waiting helpers for tests that drive a real ComfyUI.

Each graph takes a colour and a file prefix, so every test renders something new (the server's
cache would otherwise serve an identical graph without running it or writing a file).
"""

from __future__ import annotations

import queue
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from charpack.comfy.events import Event

E = TypeVar("E", bound=Event)


def fresh(tag: str) -> tuple[int, str, str]:
    """A colour, a ``SaveImage`` prefix and a prompt id nobody used before."""
    prompt_id = str(uuid.uuid4())
    return int(prompt_id[:6], 16), f"clienttest/{tag}_{prompt_id[:8]}", prompt_id


def invert_graph(*, color: int, prefix: str, size: int = 64) -> dict[str, Any]:
    """EmptyImage -> ImageInvert -> SaveImage (about 20 ms on CPU)."""
    return {
        "img": {
            "class_type": "EmptyImage",
            "inputs": {"width": size, "height": size, "batch_size": 1, "color": color},
        },
        "inv": {"class_type": "ImageInvert", "inputs": {"image": ["img", 0]}},
        "save": {
            "class_type": "SaveImage",
            "inputs": {"images": ["inv", 0], "filename_prefix": prefix},
        },
    }


def slow_graph(*, color: int, prefix: str, size: int = 1024) -> dict[str, Any]:
    """EmptyImage -> ImageBlur (radius 31) -> SaveImage: about a second of CPU work in ``blur``,
    long enough to act on the server while it runs (the blur node does not check interrupts,
    so an interrupt lands when it finishes)."""
    return {
        "img": {
            "class_type": "EmptyImage",
            "inputs": {"width": size, "height": size, "batch_size": 1, "color": color},
        },
        "blur": {
            "class_type": "ImageBlur",
            "inputs": {"image": ["img", 0], "blur_radius": 31, "sigma": 10.0},
        },
        "save": {
            "class_type": "SaveImage",
            "inputs": {"images": ["blur", 0], "filename_prefix": prefix},
        },
    }


def load_graph(*, image: str, prefix: str) -> dict[str, Any]:
    """LoadImage(uploaded name) -> ImageInvert -> SaveImage."""
    return {
        "load": {"class_type": "LoadImage", "inputs": {"image": image}},
        "inv": {"class_type": "ImageInvert", "inputs": {"image": ["load", 0]}},
        "save": {
            "class_type": "SaveImage",
            "inputs": {"images": ["inv", 0], "filename_prefix": prefix},
        },
    }


def next_event(
    events: queue.Queue[Event],
    kind: type[E],
    where: Callable[[E], bool] = lambda e: True,
    *,
    timeout: float = 60.0,
    seen: list[Event] | None = None,
) -> E:
    """The next event of ``kind`` matching ``where``; other events go to ``seen``."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no {kind.__name__} event within {timeout} s")
        try:
            event = events.get(timeout=remaining)
        except queue.Empty:
            continue
        if isinstance(event, kind) and where(event):
            return event
        if seen is not None:
            seen.append(event)
