"""How tests start charpack as a user does: the installed ``charpack`` command.

``pip install -e '.[dev]'`` puts the console script beside the interpreter that runs the tests;
process tests (Ctrl-C, SIGKILL, secrets in output) drive that script, not a module path, so
they exercise exactly what users run.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def charpack_command() -> list[str]:
    """The installed ``charpack`` script (beside this interpreter, else on PATH)."""
    beside = Path(sys.executable).with_name("charpack")
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("charpack")
    if found is None:
        raise RuntimeError("the charpack command is not installed: run pip install -e '.[dev]'")
    return [found]


CHARPACK = charpack_command()
