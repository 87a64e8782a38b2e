"""Reading a pack file's YAML in bounded time and memory, whatever the file holds.

Owns the limits of the file itself: a regular file of at most :data:`MAX_FILE_BYTES`, UTF-8, a
mapping at the top, at most :data:`MAX_DEPTH` levels of nesting, at most :data:`MAX_ALIASES`
aliases, at most :data:`MAX_VALUES` values and :data:`MAX_TEXT` characters of text once aliases
are expanded, no tags (``!!python/object`` and friends), no key given twice in a mapping.

A first pass over the parser's events checks depth, tags and aliases before any object is
built: composing a deeply nested document recurses, and an alias bomb (each level aliasing the
one below ten times) expands to billions of values in a few hundred bytes. The pass only sums
how large each anchored value is; nothing is expanded. The loader then builds the values and
refuses a duplicate key. Dates stay text (``pack: 2024-05-01`` is a name, not a date). Every
refusal is a :class:`~charpack.errors.PackError` naming the file, the place and the fix;
nothing else escapes for any input. What the values mean is ``packfile.py``'s business.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Any

import yaml

from charpack_nodes.pipelines.params import shown

from ..errors import PackError

MAX_FILE_BYTES = 8 * 1024 * 1024
MAX_DEPTH = 20
MAX_ALIASES = 100
MAX_VALUES = 500_000
MAX_TEXT = MAX_FILE_BYTES

_STR = "tag:yaml.org,2002:str"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"


class _Resolver(yaml.resolver.Resolver):
    """YAML 1.1's implicit types without timestamps: a date-like name stays text."""

    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != _TIMESTAMP]
        for first, resolvers in yaml.resolver.Resolver.yaml_implicit_resolvers.items()
    }


class _Refused(yaml.MarkedYAMLError):
    """A value the loader refuses; ``fix`` says what to do."""

    def __init__(self, problem: str, fix: str, mark: Any) -> None:
        super().__init__(problem=problem, problem_mark=mark)
        self.fix = fix


class _Constructor(yaml.constructor.SafeConstructor):
    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, Any] = {}
            for key_node, _value in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(
                    key_node, yaml.ScalarNode
                ):
                    continue  # merged keys may be overridden; unhashable keys are refused below
                key = self.construct_object(key_node)
                if key in seen:
                    first = seen[key].line + 1
                    raise _Refused(
                        f"the key {shown(key)} is given twice (first at line {first})",
                        "keep one of them",
                        key_node.start_mark,
                    )
                seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node: Any) -> int:
        try:
            return super().construct_yaml_int(node)
        except ValueError:  # more digits than Python converts (sys.get_int_max_str_digits)
            raise _Refused(
                "this number has too many digits (a seed has at most 20)",
                "shorten it",
                node.start_mark,
            ) from None

    yaml_constructors = {
        **yaml.constructor.SafeConstructor.yaml_constructors,
        "tag:yaml.org,2002:int": construct_yaml_int,
    }


def _make_loader() -> Any:
    """libyaml's parser when the PyYAML wheel has it (~20x faster), else the pure one, with
    :class:`_Constructor` and :class:`_Resolver`."""
    cparser: Any = getattr(yaml.cyaml, "CParser", None)
    if cparser is not None:

        class FastLoader(cparser, _Constructor, _Resolver):  # type: ignore[misc]
            def __init__(self, stream: str) -> None:
                cparser.__init__(self, stream)
                _Constructor.__init__(self)
                _Resolver.__init__(self)

        return FastLoader

    class PureLoader(  # pragma: no cover - PyYAML built without libyaml
        yaml.reader.Reader,
        yaml.scanner.Scanner,
        yaml.parser.Parser,
        yaml.composer.Composer,
        _Constructor,
        _Resolver,
    ):
        def __init__(self, stream: str) -> None:
            yaml.reader.Reader.__init__(self, stream)
            yaml.scanner.Scanner.__init__(self)
            yaml.parser.Parser.__init__(self)
            yaml.composer.Composer.__init__(self)
            _Constructor.__init__(self)
            _Resolver.__init__(self)

    return PureLoader


_Loader: Any = _make_loader()


def read_pack_yaml(path: Path, label: str) -> dict[str, Any]:
    """The pack file's top-level mapping; raise :class:`PackError` for anything else."""
    data = _read_bytes(path, label)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PackError(
            f"{label}: not UTF-8 text (byte {exc.start} cannot be decoded) — save the pack "
            "file as UTF-8 text"
        ) from None
    try:
        _check_events(text, label)
        loaded = yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a safe loader
    except yaml.YAMLError as exc:
        raise PackError(_yaml_message(label, exc)) from None
    if not isinstance(loaded, dict):
        raise PackError(
            f"{label}: the pack file must be a mapping with keys pack, character, scenes, "
            f"got {_kind(loaded)} — see examples/small-pack.yaml"
        )
    return loaded


def describe_file(path: Path) -> str | None:
    """Why ``path`` cannot be read as a file ("not found", "is a directory", …), or None."""
    try:
        info = path.stat()
    except ValueError:
        return "contains a NUL character"
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return "not found"
        if exc.errno == errno.ENAMETOOLONG:
            return "is a path too long for this system"
        if exc.errno == errno.ELOOP:
            return "is a symlink loop"
        return f"cannot be read ({exc.strerror})"
    if stat.S_ISDIR(info.st_mode):
        return "is a directory"
    if not stat.S_ISREG(info.st_mode):
        return "is not a regular file (a device, pipe or socket)"
    return None


def _read_bytes(path: Path, label: str) -> bytes:
    problem = describe_file(path)
    if problem == "not found":
        raise PackError(f"{label}: pack file not found — check the path (relative to {Path.cwd()})")
    if problem == "is a directory":
        raise PackError(f"{label}: is a directory — give the pack file (YAML) inside it")
    if problem is not None:
        raise PackError(f"{label}: {problem} — give a pack file (YAML)")
    try:
        # Opened without following a FIFO swapped in since the check, and read one byte past
        # the limit, so a file that grows (or lies about its size) is still bounded.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                raise PackError(f"{label}: is not a regular file — give a pack file (YAML)")
            data = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise PackError(f"{label}: cannot read the pack file ({exc.strerror}) — check it") from None
    if len(data) > MAX_FILE_BYTES:
        raise PackError(
            f"{label}: the pack file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB — "
            "a pack file holds settings, not pictures; split it into several packs"
        )
    return data


_TOO_DEEP = (
    f"nested more than {MAX_DEPTH} levels deep — a pack file needs at most 6 "
    "(scenes[0].overrides.stages.faceid.weight)"
)


def _check_events(text: str, label: str) -> None:
    """Refuse deep nesting, tags and alias expansion beyond the limits, from events alone."""
    anchored: dict[str, tuple[int, int]] = {}  # anchor -> (values, characters) it expands to
    open_: list[list[Any]] = []  # per open collection: [values, characters, anchor, mark]
    done = [0, 0]
    aliases = 0

    def add(values: int, chars: int, mark: Any) -> None:
        target = open_[-1] if open_ else done
        target[0] += values
        target[1] += chars
        # A part already over the limit makes the whole over it: stop before summing more.
        if target[0] > MAX_VALUES or target[1] > MAX_TEXT:
            raise _Limit(
                f"{_at(mark)}the file expands to more than {MAX_VALUES:,} values or "
                f"{MAX_TEXT // (1024 * 1024)} MiB of text (aliases repeat what they name) — "
                "write the values out, or use fewer aliases",
            )

    try:
        event: Any
        for event in yaml.parse(text, Loader=_Loader):
            kind = type(event)
            if kind in (yaml.ScalarEvent, yaml.SequenceStartEvent, yaml.MappingStartEvent):
                tag = event.tag
                if tag is not None and tag not in (_STR, "!"):
                    raise _Limit(
                        f"{_at(event.start_mark)}the tag {_tag(tag)} is not used in pack files "
                        "— remove it (quote a value to make it text)"
                    )
            if kind is yaml.ScalarEvent:
                size = (1, len(event.value) + 1)
                if event.anchor is not None:
                    anchored[event.anchor] = size
                add(*size, event.start_mark)
            elif kind is yaml.AliasEvent:
                aliases += 1
                if aliases > MAX_ALIASES:
                    raise _Limit(
                        f"{_at(event.start_mark)}more than {MAX_ALIASES} aliases (*name) — "
                        "write the values out instead"
                    )
                add(*anchored.get(event.anchor, (1, 1)), event.start_mark)
            elif kind in (yaml.SequenceStartEvent, yaml.MappingStartEvent):
                if len(open_) >= MAX_DEPTH:
                    raise _Limit(f"{_at(event.start_mark)}{_TOO_DEEP}")
                open_.append([0, 0, event.anchor, event.start_mark])
            elif kind in (yaml.SequenceEndEvent, yaml.MappingEndEvent):
                values, chars, anchor, mark = open_.pop()
                if anchor is not None:
                    anchored[anchor] = (values + 1, chars + 1)
                add(values + 1, chars + 1, mark)
    except _Limit as exc:
        raise PackError(f"{label}: {exc}") from None
    except yaml.MarkedYAMLError as exc:
        # libyaml (PyYAML >= 6.0.4) stops at 1,000 levels while scanning ahead, before this
        # pass sees level 21: the same limit, said the same way.
        if "maximum nesting depth" not in str(exc.problem):
            raise
        raise PackError(f"{label}: {_at(exc.problem_mark)}{_TOO_DEEP}") from None


class _Limit(Exception):
    """A limit of :func:`_check_events` was crossed; the message is the problem and the fix."""


def _at(mark: Any) -> str:
    if mark is None:
        return ""
    return f"line {mark.line + 1}, column {mark.column + 1}: "


def _yaml_message(label: str, exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None) or (str(exc).splitlines() or ["unreadable"])[0]
    problem = problem if len(problem) <= 200 else problem[:199] + "…"
    if isinstance(exc, _Refused):
        return f"{label}: {_at(mark)}{problem} — {exc.fix}"
    return f"{label}: not valid YAML{where}: {problem} — check indentation and quoting there"


def _kind(value: object) -> str:
    if value is None:
        return "an empty file"
    if isinstance(value, list):
        return "a list"
    return f"a single value ({shown(value, 40)})"


def _tag(tag: str) -> str:
    """A tag as it was written (``!!python/object``, not ``tag:yaml.org,2002:python/object``)."""
    if tag.startswith("tag:yaml.org,2002:"):
        tag = "!!" + tag[len("tag:yaml.org,2002:") :]
    return shown(tag, 60)
