"""charpack: photo packs of one consistent character with ComfyUI.

The public API, for scripts that drive charpack without its command line::

    import charpack

    pack = charpack.load_pack("examples/small-pack.yaml")
    server = charpack.ServerConfig.from_url("https://<pod>-8188.proxy.runpod.net")
    summary = charpack.run_pack(pack, servers=[server], options=charpack.RunOptions(out=...))

What lives where (each sub-package's modules open with what they own):

- ``charpack.pack``: the pack file, its settings, jobs and the files it uploads;
- ``charpack.comfy``: the client of one ComfyUI server (HTTP, websocket, completion, results,
  uploads and downloads, authentication, ``/object_info``);
- ``charpack.run``: ``charpack run`` — runner, loop, server workers, downloads into the pack
  folder, retry rules, scheduler;
- ``charpack.folder``: the pack folder — manifest, integrity (lock, links, full disk), report,
  publish, contact sheet;
- ``charpack.check``: validate, preflight, plan, the generated workflow files;
- ``charpack.pod``: RunPod pods; ``charpack.cli``: the command line.

Every exception charpack raises on purpose derives from :class:`CharpackError`
(:mod:`charpack.errors` has the tree). Names are imported on first use, so ``import charpack``
stays cheap for the command line.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# One version for the client and its node pack (a unit test keeps both pyproject files equal).
from charpack_nodes import __version__

# Log redaction sits on the package's root logger from the first import of any charpack module
# (comfy.auth is small: the standard library and the error tree).
from .comfy import auth as _auth

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    # running a pack
    "run_pack": "charpack.run.runner",
    "RunOptions": "charpack.run.options",
    "RunControl": "charpack.run.options",
    "RunSummary": "charpack.run.options",
    "ServerSummary": "charpack.run.options",
    "RunEvent": "charpack.run.events",
    # pack files and jobs
    "load_pack": "charpack.pack.packfile",
    "Pack": "charpack.pack.packfile",
    "Scene": "charpack.pack.packfile",
    "IdentityGate": "charpack.pack.packfile",
    "Job": "charpack.pack.jobs",
    "expand": "charpack.pack.jobs",
    # checks before GPU time
    "validate_pack": "charpack.check.validate",
    "validate_graph": "charpack.check.validate",
    "Finding": "charpack.check.findings",
    "ObjectInfo": "charpack.comfy.objectinfo",
    "preflight": "charpack.check.preflight",
    "PreflightReport": "charpack.check.preflight",
    "write_plan": "charpack.check.plan",
    "PlanResult": "charpack.check.plan",
    # the ComfyUI client
    "ComfyClient": "charpack.comfy.client",
    "ServerConfig": "charpack.comfy.auth",
    # the pack folder
    "Manifest": "charpack.folder.manifest",
    "build_report": "charpack.folder.report",
    "PackReport": "charpack.folder.report",
    "publish": "charpack.folder.publish",
    "write_contact_sheets": "charpack.folder.contact_sheet",
    # the error tree
    "CharpackError": "charpack.errors",
    "PackError": "charpack.errors",
    "ValidationError": "charpack.errors",
    "ServerConfigError": "charpack.errors",
    "ServerUnavailable": "charpack.errors",
    "PromptNotTaken": "charpack.errors",
    "AuthError": "charpack.errors",
    "PromptRejected": "charpack.errors",
    "MissingOnServer": "charpack.errors",
    "ExecutionFailed": "charpack.errors",
    "JobLost": "charpack.errors",
    "TimeoutExceeded": "charpack.errors",
    "OutputRefused": "charpack.errors",
    "PackFolderError": "charpack.errors",
    "PackFolderBusy": "charpack.errors",
    "DiskFull": "charpack.errors",
    "PodError": "charpack.errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'charpack' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # what type checkers and editors see; nothing is imported at run time
    from .check.findings import Finding
    from .check.plan import PlanResult, write_plan
    from .check.preflight import PreflightReport, preflight
    from .check.validate import validate_graph, validate_pack
    from .comfy.auth import ServerConfig
    from .comfy.client import ComfyClient
    from .comfy.objectinfo import ObjectInfo
    from .errors import (
        AuthError,
        CharpackError,
        DiskFull,
        ExecutionFailed,
        JobLost,
        MissingOnServer,
        OutputRefused,
        PackError,
        PackFolderBusy,
        PackFolderError,
        PodError,
        PromptNotTaken,
        PromptRejected,
        ServerConfigError,
        ServerUnavailable,
        TimeoutExceeded,
        ValidationError,
    )
    from .folder.contact_sheet import write_contact_sheets
    from .folder.manifest import Manifest
    from .folder.publish import publish
    from .folder.report import PackReport, build_report
    from .pack.jobs import Job, expand
    from .pack.packfile import IdentityGate, Pack, Scene, load_pack
    from .run.events import RunEvent
    from .run.options import RunControl, RunOptions, RunSummary, ServerSummary
    from .run.runner import run_pack
