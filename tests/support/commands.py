"""How tests start charpack as a user does: the installed ``charpack`` command.

``pip install -e '.[dev]'`` puts the console script beside the interpreter that runs the tests;
process tests (Ctrl-C, SIGKILL, secrets in output) drive that script, not a module path, so
they exercise exactly what users run.
"""

from __future__ import annotations

import json
import queue
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any


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


class JsonLines:
    """A child process's stdout read as JSON lines on a daemon thread (``None`` marks its end),
    for tests that act on a ``--json`` process's events while it runs."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self._lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(json.loads(line))
        self._lines.put(None)

    def get(self, timeout: float) -> dict[str, Any] | None:
        """The next event, ``None`` once the output ended; ``queue.Empty`` after ``timeout``."""
        return self._lines.get(timeout=timeout)

    def join(self, timeout: float) -> None:
        self._reader.join(timeout)
