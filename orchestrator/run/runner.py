"""``charpack run`` as a library call: a pack, a list of servers, options in; a summary out.

Public API (the CLI and the benchmarks use only this)::

    summary = run_pack(pack, servers=[ServerConfig.from_url(url)], options=RunOptions(out=dir))

:func:`run_pack` opens the pack folder (a new one, or resumes the folder the same pack made),
connects every server (health, uploads), then drives the run (:mod:`charpack.run.loop`)
until every job is finished, Ctrl-C asks it to stop, or no server has answered for
``give_up_s``; it saves the manifest, writes the contact sheet, and returns a
:class:`RunSummary`. Bad credentials, or no server reachable at the start, raise before the
pack folder is touched. The pack folder is locked for the whole run
(:class:`~charpack.folder.integrity.PackLock`: a second run on it raises
:class:`~charpack.errors.PackFolderBusy` at once; a lock left by a killed run is taken
over), a symbolic link where the run writes is refused, and the temp files a killed run left are
removed. A full disk stops the run as one Ctrl-C does and raises
:class:`~charpack.errors.DiskFull` saying how much to free. Ctrl-C (SIGINT, in the main
thread) or :meth:`RunControl.interrupt`: the first gives the downloads under way 2 s to finish,
saves the manifest and returns; the second also cancels this run's prompts on the servers; a
third raises ``KeyboardInterrupt`` at once.

``endpoints=`` adds RunPod Serverless endpoints beside (or instead of) the servers
(:mod:`charpack.serverless.backend`): each is one server of ``workers × (backlog + 1)`` slots
to the loop, its results fetched from S3 into the same pack folder.

``workflow=`` swaps the pack's pipeline graph for a prepared one per attempt, everything else
unchanged (scheduling, posting, waiting, downloads, manifest): ``bench/`` uses it to measure the
runner on a stand-in pipeline of fixed execution time.
"""

from __future__ import annotations

import logging
import queue
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..comfy.auth import ServerConfig
from ..errors import AuthError, CharpackError, DiskFull, ServerUnavailable
from ..folder.disk import HEADROOM, MB, mount_point
from ..folder.integrity import PackLock, refuse_links, remove_stale_temps
from ..folder.manifest import MANIFEST, Manifest
from ..pack.jobs import Job
from ..pack.packfile import Pack
from .events import RunEvent
from .fetcher import download_rules
from .fleet import Worker
from .loop import RunLoop
from .messages import ServerDown, ServerUp, Unusable
from .options import (
    EXIT_INTERRUPTED,
    RunControl,
    RunOptions,
    RunSummary,
    ServerSummary,
)
from .state import PackState
from .worker import ServerWorker

if TYPE_CHECKING:
    from ..serverless.backend import EndpointConfig

__all__ = [
    "EXIT_INTERRUPTED",
    "RunControl",
    "RunEvent",
    "RunOptions",
    "RunSummary",
    "ServerSummary",
    "Workflow",
    "run_pack",
]

log = logging.getLogger(__name__)

Workflow = Callable[[Job], dict[str, Any]]
"""Builds the API graph of one attempt from its job (whose ``seed`` and ``stem`` are the
attempt's)."""


@dataclass(frozen=True)
class _Prepared(Job):
    """A job whose attempts post ``build(job)`` instead of the pipeline graph; a retry's
    :meth:`~charpack.pack.jobs.Job.with_seed` keeps ``build``."""

    build: Workflow | None = field(default=None, compare=False, repr=False)

    @property
    def graph(self) -> dict[str, Any]:
        assert self.build is not None
        return self.build(self)


def run_pack(
    pack: Pack,
    *,
    servers: Sequence[ServerConfig],
    options: RunOptions | None = None,
    workflow: Workflow | None = None,
    endpoints: Sequence[EndpointConfig] = (),
) -> RunSummary:
    """Run ``pack`` on ``servers`` into its pack folder; see the module docstring.

    ``endpoints``: RunPod Serverless endpoints that take part in the run beside (or instead
    of) ``servers``, each as one server of many GPUs (:mod:`charpack.serverless.backend`).

    ``workflow``, when given, builds each attempt's graph instead of the pack's pipeline (the
    manifest records what was posted). The graph's output node must list its files in its UI
    output, as ``SaveImage`` does; they are downloaded to ``<scene>/<stem>.<ext>``.

    Raises :class:`~charpack.folder.manifest.ManifestError` when the folder holds another pack
    (or the same pack with other reference files), :class:`~charpack.errors.PackFolderBusy`
    when another run holds the folder, :class:`~charpack.errors.PackFolderError` for a
    symbolic link where the run writes, :class:`AuthError` when a server refuses the
    credentials and :class:`ServerUnavailable` when none answers at the start, and
    :class:`~charpack.errors.DiskFull` when the disk filled (the run stopped, the manifest
    is the last one that fit); other problems during the run end up in the summary.
    """
    options = options or RunOptions()
    if not servers and not endpoints:
        raise ServerUnavailable(
            "no server given: pass --server URL (or set CHARPACK_SERVER) or --endpoint ID"
        )
    names = [s.name for s in servers] + [e.name for e in endpoints]
    if len(set(names)) != len(names):
        raise ServerUnavailable(f"a server is given twice ({', '.join(names)}); give each once")
    started = time.monotonic()
    folder = options.out or Path.cwd() / pack.name
    lock = PackLock.acquire(folder)  # a second run on this folder stops here
    try:
        return _run_locked(pack, folder, lock, servers, endpoints, options, workflow, started)
    finally:
        lock.release(remove_folder=True)  # the folder goes only when the run wrote nothing


def _run_locked(
    pack: Pack,
    folder: Path,
    lock: PackLock,
    servers: Sequence[ServerConfig],
    endpoints: Sequence[EndpointConfig],
    options: RunOptions,
    workflow: Workflow | None,
    started: float,
) -> RunSummary:
    refuse_links(folder, _written_paths(folder, pack))
    state = PackState.open(folder, pack, max_retries=options.max_retries)
    if lock.stale is not None:
        log.warning(
            "%s: took over the lock of a run that ended without releasing it (%s)",
            folder,
            lock.stale.describe(),
        )
        _event(options, "lock_taken_over", folder=str(folder), holder=vars(lock.stale))
    removed = remove_stale_temps(folder)
    if removed:
        names = [p.relative_to(folder).as_posix() for p in removed]
        log.info("%s: removed %d temp file(s) an earlier run left: %s", folder, len(names), names)
        _event(options, "temp_files_removed", files=names)
    if workflow is not None:
        state.jobs = {key: _prepared(job, workflow) for key, job in state.jobs.items()}
    control = options.control or RunControl()
    uploads = tuple(dict.fromkeys(u for job in state.jobs.values() for u in job.uploads))
    rules = download_rules(state.jobs, options, prepared=workflow is not None)
    workers: list[Worker] = [
        ServerWorker(
            config=config,
            inbox=control.inbox,
            folder=folder,
            uploads=uploads,
            gate=pack.identity,
            poll_interval=options.poll_interval,
            probe_interval=options.probe_interval,
            downloads=rules,
        )
        for config in servers
    ]
    if endpoints:
        from ..serverless.backend import EndpointWorker  # boto3: the serverless extra

        workers += [
            EndpointWorker(
                config=config,
                inbox=control.inbox,
                folder=folder,
                uploads=uploads,
                gate=pack.identity,
                run_id=state.run_id,
                backlog=options.backlog,
                downloads=rules,
                probe_interval=options.probe_interval,
            )
            for config in endpoints
        ]
    try:
        for worker in workers:
            worker.start()
        early = _first_contact(workers, control.inbox, deadline_s=options.connect_s)
        # From here on the pack folder exists and every change is saved at once.
        loop = RunLoop(state=state, workers=workers, control=control, options=options)
        for message in early:
            loop.handle(message)
        with _sigint(control, options.handle_signals):
            loop.run()
    finally:
        for worker in workers:
            worker.close()
        state.close()  # manifest.json whole again: a big pack's journal folded in
    summary = loop.summary(elapsed_s=time.monotonic() - started)
    if loop.disk_full is not None:
        raise _disk_full(folder, state)
    if options.contact_sheet and not summary.interrupted:
        _contact_sheet(folder, loop.emit, state.manifest)
    loop.emit("finished", **summary.to_json())
    return summary


def _event(options: RunOptions, kind: str, **data: Any) -> None:
    if options.on_event is not None:
        options.on_event(RunEvent(kind, data))


def _written_paths(folder: Path, pack: Pack) -> list[Path]:
    """What a run writes below its pack folder: no symbolic link may stand in for any."""
    paths = [folder / MANIFEST, folder / "contact-sheet.jpg", folder / "rejected"]
    paths.append(folder / "serverless-jobs.jsonl")  # an endpoint's job ids (serverless.backend)
    for scene in pack.scenes:
        paths += [folder / scene.name, folder / "rejected" / scene.name]
    return paths


def _disk_full(folder: Path, state: PackState) -> DiskFull:
    """The run's full-disk error: how much to free to finish the pack, from the files its
    finished jobs took."""
    sizes = [
        sum(int(f.get("bytes") or 0) for f in attempt.get("files") or [])
        for key in state.jobs
        for attempt in state.entry(key).get("attempts") or []
        if attempt.get("files")
    ]
    counts = state.counts()
    left = counts.get("pending", 0) + counts.get("submitted", 0)
    per_job = max(sizes) if sizes else 0
    needed = left * per_job + 2 * len(state.manifest.to_json())
    try:
        mount = mount_point(folder)
        free = shutil.disk_usage(mount).free
    except OSError:
        mount, free = folder, 0
    short = max(0, needed - free) + HEADROOM
    waiting = counts.get("submitted", 0)
    return DiskFull(
        f"no space left on {mount} — free {-(-short // MB)} MB ({free / MB:.1f} MB free now; "
        f"{left} job(s) left, up to {per_job / MB:.1f} MB each), then run the same command "
        f"again to resume. The run stopped and generated nothing again; the {waiting} "
        "prompt(s) already on the servers are downloaded by the next run, not run again."
    )


def _prepared(job: Job, build: Workflow) -> _Prepared:
    values = {name: getattr(job, name) for name in Job.__dataclass_fields__}
    return _Prepared(**values, build=build)


def _first_contact(
    workers: list[Worker], inbox: queue.SimpleQueue[Any], *, deadline_s: float
) -> list[Any]:
    """Wait until every server answered or failed once; raise when none can be used."""
    heard: dict[str, Any] = {}
    early: list[Any] = []
    deadline = time.monotonic() + deadline_s
    while len(heard) < len(workers):
        remaining = deadline - time.monotonic()
        try:
            message = inbox.get(timeout=max(0.05, remaining))
        except queue.Empty:
            break
        early.append(message)
        if isinstance(message, (ServerUp, ServerDown, Unusable)):
            heard.setdefault(message.server, message)
        if remaining <= 0:
            break
    refused = [m for m in heard.values() if isinstance(m, Unusable) and m.auth]
    if refused:
        raise AuthError("\n".join(m.message for m in refused))
    if not any(isinstance(m, ServerUp) for m in heard.values()):
        reasons = []
        for worker in workers:
            message = heard.get(worker.name)
            why = getattr(message, "reason", None) or getattr(message, "message", None)
            reasons.append(why or f"{worker.config.label}: no answer in {deadline_s:.0f} s")
        raise ServerUnavailable(
            "no ComfyUI server answered; check the URL(s) and that the server (pod) runs:\n"
            + "\n".join(reasons)
        )
    return early


@contextmanager
def _sigint(control: RunControl, wanted: bool) -> Iterator[None]:
    if not wanted or threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if control.interrupt() >= 3:
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _contact_sheet(folder: Path, emit: Callable[..., None], manifest: Manifest) -> None:
    """The sheet from the run's own manifest (saved, so the same as on disk): not read back."""
    try:
        from ..folder.contact_sheet import write_contact_sheet
    except ImportError:  # the pack-folder tools are optional for a run
        return
    try:
        path = write_contact_sheet(folder, manifest=manifest)
    except (CharpackError, OSError, ValueError) as exc:
        log.warning("contact sheet not written: %s", exc)
        return
    emit("contact_sheet", path=str(path))
