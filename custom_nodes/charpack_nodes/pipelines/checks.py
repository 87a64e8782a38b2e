"""The parameter types' checks: range, choice and name rules, and the error they raise.

Owns :class:`ParameterError` (naming the field, the allowed range and the value), the checks
``params.py``'s types run in ``__post_init__``, and :func:`ranged` / :func:`bounds`: a numeric
field declares its range once, on the field, and both its own check and the macro nodes' widgets
(``charpack_nodes/widgets.py``) read it from there. Standard library only.
"""

from __future__ import annotations

import reprlib
from collections.abc import Iterable
from dataclasses import field, fields
from typing import Any, TypeVar

T = TypeVar("T")

_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = 60
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = _REPR.maxfrozenset = 4
_REPR.maxlevel = 2


def shown(value: object, limit: int = 80) -> str:
    """``repr(value)`` cut to at most ``limit`` characters, computed without building the whole
    repr: an error message never embeds an unbounded value (a pasted novel, an alias bomb)."""
    try:
        text = _REPR.repr(value)
    except ValueError:  # an int too long to convert (sys.get_int_max_str_digits)
        return "<a number too long to show>"
    return text if len(text) <= limit else text[: limit - 1] + "…"


class ParameterError(ValueError):
    """A parameter is outside its allowed range; ``field`` is its dotted name."""

    def __init__(self, field_name: str, message: str) -> None:
        self.field = field_name
        self.message = message
        super().__init__(f"{field_name}: {message}")


def _range(name: str, value: float, lo: float, hi: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ParameterError(
            name, f"must be a number between {lo:g} and {hi:g}, got {shown(value)}"
        )
    if not lo <= value <= hi:
        raise ParameterError(name, f"must be between {lo:g} and {hi:g}, got {_number(value)}")


def _number(value: float) -> str:
    try:
        return f"{value:g}"
    except OverflowError:  # an int beyond any float: show its digits, cut
        return shown(value)


def _int_range(name: str, value: int, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ParameterError(
            name, f"must be a whole number between {lo} and {hi}, got {shown(value)}"
        )
    if not lo <= value <= hi:
        raise ParameterError(name, f"must be between {lo} and {hi}, got {shown(value)}")


def _choice(name: str, value: str, choices: Iterable[str]) -> None:
    options = tuple(choices)
    if value not in options:
        if len(options) > 10:
            listed = f"one of {len(options)} names such as {', '.join(options[:6])}"
        else:
            listed = f"one of {', '.join(options)}"
        raise ParameterError(name, f"must be {listed}; got {shown(value)}")


def _name(name: str, value: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ParameterError(name, "must be a non-empty file name")


def _text(name: str, value: str) -> None:
    if not isinstance(value, str):
        raise ParameterError(name, f"must be text, got {type(value).__name__}")


def ranged(default: T, lo: float, hi: float) -> T:
    """A dataclass field holding a number in ``[lo, hi]`` (a whole number when ``default`` is an
    int); :func:`check_range` checks it and :func:`bounds` hands the range to the widgets."""
    return field(default=default, metadata={"range": (lo, hi), "whole": type(default) is int})


def bounds(cls: type, name: str) -> tuple[float, float]:
    """The range a :func:`ranged` field ``name`` of the parameter type ``cls`` allows."""
    for f in fields(cls):
        if f.name == name and "range" in f.metadata:
            lo, hi = f.metadata["range"]
            return lo, hi
    raise KeyError(f"{cls.__name__}.{name} declares no range")


def check_range(label: str, obj: Any, name: str) -> None:
    """Check the :func:`ranged` field ``name`` of ``obj``; errors name it ``label``."""
    (f,) = (f for f in fields(obj) if f.name == name)
    lo, hi = f.metadata["range"]
    check = _int_range if f.metadata["whole"] else _range
    check(label, getattr(obj, name), lo, hi)
