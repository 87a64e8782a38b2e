"""One error tree and one name per concept: every exception charpack defines is a CharpackError,
and no two of its types (nor a pod-side script's) share a name.

``except CharpackError`` is how a caller of the package catches what it raises on purpose, so an
exception outside the tree escapes it. Two unrelated types of one name (there were two
``ManifestError`` and two ``JobStatus``) make a newcomer guess which one a message or a
traceback means.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path
from types import ModuleType

import charpack
from charpack.errors import CharpackError

ROOT = Path(__file__).resolve().parents[2]


def _modules() -> list[ModuleType]:
    names = [m.name for m in pkgutil.walk_packages(charpack.__path__, "charpack.")]
    assert "charpack.comfy.downloads" in names and "charpack.run.scheduler" in names
    # __main__ runs the CLI; the recipe (runpod/) runs on the pod without charpack.
    return [
        importlib.import_module(n)
        for n in names
        if not n.endswith("__main__") and not n.startswith("charpack.recipe")
    ]


def _defined(module: ModuleType) -> list[tuple[str, object]]:
    """Every public class and ``Literal`` type ``module`` itself defines. Private ones (``_X``)
    never leave their module: each private exception is turned into a CharpackError there
    (``packyaml._Refused`` must be a YAML error for the loader to give it a line and column)."""
    out: list[tuple[str, object]] = []
    for name, value in vars(module).items():
        if inspect.isclass(value) and value.__module__ == module.__name__ and name[0] != "_":
            out.append((name, value))
    tree = ast.parse(Path(str(module.__file__)).read_text())
    for node in tree.body:  # ``JobStatus = Literal[...]`` is a status type too
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Subscript)
            and isinstance(node.value.value, ast.Name)
            and node.value.value.id == "Literal"
        ):
            out += [(t.id, node.value) for t in node.targets if isinstance(t, ast.Name)]
    return out


def test_every_exception_the_package_defines_is_a_charpack_error() -> None:
    outside = [
        f"{module.__name__}.{name}"
        for module in _modules()
        for name, value in _defined(module)
        if inspect.isclass(value)
        and issubclass(value, BaseException)
        and not issubclass(value, CharpackError)
    ]
    assert outside == []


def test_no_two_types_share_a_name() -> None:
    seen: dict[str, list[str]] = {}
    for module in _modules():
        for name, _ in _defined(module):
            seen.setdefault(name, []).append(module.__name__)
    # The pod-side scripts (runpod/) are read by people next to the package's messages.
    for script in sorted((ROOT / "runpod").glob("*.py")):
        for node in ast.parse(script.read_text()).body:
            if isinstance(node, ast.ClassDef) and node.name[0] != "_":
                seen.setdefault(node.name, []).append(f"runpod/{script.name}")
    twice = {name: where for name, where in seen.items() if len(where) > 1}
    assert twice == {}
