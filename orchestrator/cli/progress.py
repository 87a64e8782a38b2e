"""Showing a run as it goes: a rich progress display, or one JSON object per line.

Owns the two renderers of :class:`~charpack.run.events.RunEvent`:

- :class:`JsonLines` (``charpack run --json``): every event as one line of JSON on stdout, in
  the order it happened (``{"event": "done", "time": ..., "job": "cafe/001", ...}``), made for
  scripts; ``step`` events (sampler steps) included;
- :class:`RichProgress`: an overall bar (images finished of the pack, with ETA), one line per
  server (its current job, pipeline stage and sampler step), and a line per job that finishes
  below the threshold or fails; server outages are printed as they happen.

Both are callables taking one event, used from the runner's single loop thread. Neither shows
a credential: events name servers by display name only.
"""

from __future__ import annotations

import json
from types import TracebackType
from typing import IO, Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from ..run.events import RunEvent

FINAL = ("done", "below_threshold", "failed")


class JsonLines:
    """``--json``: one JSON object per event and line, flushed at once."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def __call__(self, event: RunEvent) -> None:
        self.stream.write(json.dumps(event.to_json(), default=str) + "\n")
        self.stream.flush()

    def __enter__(self) -> JsonLines:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stream.flush()


class RichProgress:
    """The interactive display; use as a context manager around the run."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(bar_width=30),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.overall: TaskID | None = None
        self.servers: dict[str, TaskID] = {}
        self.jobs: dict[str, str] = {}  # server -> job it runs now

    def __enter__(self) -> RichProgress:
        self.progress.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.progress.stop()

    def __call__(self, event: RunEvent) -> None:
        handler = getattr(self, f"_on_{event.kind}", None)
        if handler is not None:
            handler(event.data)

    def _say(self, text: str) -> None:
        self.progress.console.print(text, highlight=False)

    def _server(self, name: str) -> TaskID:
        if name not in self.servers:
            self.servers[name] = self.progress.add_task(f"  {escape(name)}", total=None)
        return self.servers[name]

    def _on_run_started(self, d: dict[str, Any]) -> None:
        finished = int(d.get("done", 0))
        self.overall = self.progress.add_task(
            f"[bold]{escape(str(d['pack']))}[/]", total=int(d["jobs"]), completed=finished
        )
        if finished or d.get("in_flight"):
            self._say(
                f"resuming {escape(str(d['folder']))}: {finished} image(s) already done, "
                f"{d.get('in_flight', 0)} prompt(s) still on the servers"
            )
        for name in d.get("servers", []):
            self._server(str(name))

    def _on_server_up(self, d: dict[str, Any]) -> None:
        version = d.get("version") or "?"
        self.progress.update(
            self._server(d["server"]),
            description=f"  {escape(d['server'])} [dim](ComfyUI {version})[/]",
        )

    def _on_server_down(self, d: dict[str, Any]) -> None:
        self._say(
            f"[yellow]server {escape(d['server'])} is not answering:[/] "
            f"{escape(str(d.get('reason', '')))}"
        )
        self.progress.update(
            self._server(d["server"]), description=f"  {escape(d['server'])} [yellow](down)[/]"
        )

    def _on_started(self, d: dict[str, Any]) -> None:
        self.jobs[d["server"]] = d["job"]
        self.progress.update(
            self._server(d["server"]),
            total=None,
            completed=0,
            description=f"  {escape(d['server'])}: {escape(d['job'])}",
        )

    def _on_node(self, d: dict[str, Any]) -> None:
        self.progress.update(
            self._server(d["server"]),
            description=f"  {escape(d['server'])}: "
            f"{escape(d['job'])} [cyan]{escape(str(d['stage']))}[/]",
        )

    def _on_step(self, d: dict[str, Any]) -> None:
        if d.get("max"):
            self.progress.update(
                self._server(d["server"]), total=float(d["max"]), completed=float(d["value"])
            )

    def _advance(self) -> None:
        if self.overall is not None:
            self.progress.advance(self.overall)

    def _on_done(self, d: dict[str, Any]) -> None:
        self._advance()

    def _on_below_threshold(self, d: dict[str, Any]) -> None:
        self._advance()
        self._say(
            f"[yellow]{escape(d['job'])}[/]: {escape(str(d.get('reason', '')))}; kept the "
            f"best ({d.get('score')}) as {escape(str(d.get('image')))}"
        )

    def _on_failed(self, d: dict[str, Any]) -> None:
        self._advance()
        self._say(f"[red]{escape(d['job'])} failed:[/] {escape(str(d.get('error', '')))}")

    def _on_retry(self, d: dict[str, Any]) -> None:
        self._say(
            f"[dim]{escape(d['job'])}: {escape(str(d.get('reason', '')))}; "
            f"retrying with seed {d.get('seed')}[/]"
        )

    def _on_stopping(self, d: dict[str, Any]) -> None:
        self._say(
            "[yellow]stopping:[/] finishing the downloads under way (2 s at most), then saving the "
            "manifest; the prompts already queued keep running on the servers and the next "
            "run collects them. Press Ctrl-C again to cancel them on the servers."
        )

    def _on_cancelling(self, d: dict[str, Any]) -> None:
        self._say(f"[yellow]cancelling[/] {d.get('prompts', 0)} prompt(s) on the servers")

    def _on_contact_sheet(self, d: dict[str, Any]) -> None:
        self._say(f"contact sheet: {escape(str(d['path']))}")


class TrainingProgress:
    """``charpack character train``: one bar of training steps with the loss of the last
    finished chunk and the ETA from this process's step rate; every other training event
    (upload, chunk saved, server lost, resumed, download) is printed as a line. A callable
    taking :class:`~charpack.character.training.TrainingEvent`."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(bar_width=30),
            MofNCompleteColumn(),
            TextColumn("{task.fields[loss]}"),
            TextColumn("{task.fields[eta]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self.task: TaskID | None = None

    def __enter__(self) -> TrainingProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def __call__(self, event: Any) -> None:
        if event.kind != "progress":
            self.progress.console.print(escape(event.message), highlight=False)
        if event.total is None:
            return
        loss = f"loss {event.loss:.4f}" if event.loss is not None else "loss –"
        eta = f"ETA {_duration(event.eta_s)}" if event.eta_s is not None else "ETA –"
        if self.task is None:
            self.task = self.progress.add_task(
                "[bold]training[/]", total=event.total, loss=loss, eta=eta
            )
        self.progress.update(
            self.task, total=event.total, completed=event.step or 0, loss=loss, eta=eta
        )


class TrainingJsonLines:
    """``charpack character train --json``: one JSON object per training event."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def __call__(self, event: Any) -> None:
        fields = {k: v for k, v in vars(event).items() if v is not None}
        self.stream.write(json.dumps({"event": fields.pop("kind"), **fields}, default=str) + "\n")
        self.stream.flush()


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"
