"""The CLI's one output layer: where every ``charpack`` command writes, how it shows an error,
and the logging it installs.

- :data:`console` (stdout) carries a command's result: tables, or its ``--json`` object;
  :data:`err_console` (stderr) carries progress, notes, log records and errors.
- :func:`show_error` is the one error renderer: a :class:`~charpack.errors.CharpackError`
  becomes its message (``error: …`` on stderr, never a traceback) or, under ``--json``, the
  one error object :func:`error_json` makes; :func:`reported` wraps a command body with it and
  exits with the error's code.
- :func:`setup_logging` installs the CLI's log handler, with secret redaction on it, so every
  record that reaches it is masked whatever its logger is called.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, Literal

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape

from ..comfy.auth import install_log_redaction, log_redaction_filter
from ..errors import CharpackError

# Every command's --json switch: its result (or its error) as one JSON object on stdout.
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object (for scripts).")]

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

# text: a line on stderr; json: one JSON object on stdout; events: one JSON line in the event
# stream of `charpack run --json`.
Mode = Literal["text", "json", "events"]


def print_json(data: Any) -> None:
    """A command's ``--json`` result: one JSON object on stdout."""
    console.print_json(json.dumps(data))


def error_json(exc: CharpackError) -> dict[str, Any]:
    """The ``--json`` shape of an error, the same for every command (docs/pack-folder.md)."""
    return {
        "ok": False,
        "error": {"type": type(exc).__name__, "message": str(exc), "exit_code": exc.exit_code},
    }


def show_error(exc: CharpackError, mode: Mode = "text") -> int:
    """Show ``exc`` the one way for ``mode``; return the exit code it asks for."""
    if mode == "json":
        print_json(error_json(exc))
    elif mode == "events":
        console.print(json.dumps({"event": "error", **error_json(exc)}), highlight=False)
    else:
        err_console.print(f"[red]error:[/] {escape(str(exc))}", highlight=False)
    return exc.exit_code


@contextmanager
def reported(mode: Mode = "text") -> Iterator[None]:
    """Run a command body; a CharpackError it raises is shown and becomes the exit code."""
    try:
        yield
    except CharpackError as exc:
        raise typer.Exit(show_error(exc, mode)) from None


def setup_logging(verbose: bool) -> None:
    """Send log records to stderr through one redacting handler (``logging.basicConfig``: a
    root logger that already has handlers is left as it is, but given the redaction too)."""
    handler = RichHandler(console=err_console, show_path=False)
    handler.addFilter(log_redaction_filter())  # before any record can reach it
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[handler],
    )
    install_log_redaction()  # and the package roots, other root handlers, lastResort


def run_reported(json_out: bool, body: Callable[[], dict[str, Any]]) -> None:
    """Run a command body; print its result as JSON (``{"ok": true, ...}``) with ``--json``,
    or turn a CharpackError into its message and exit code (the pod and endpoint commands)."""
    with reported("json" if json_out else "text"):
        result = body()
    if json_out:
        print_json({"ok": True, **result})
