"""Readable messages for a workflow ComfyUI refused (``POST /prompt`` 400, or 200 with errors).

Owns the translation of ComfyUI's ``error`` / ``node_errors`` JSON into a
:class:`~charpack.errors.PromptRejected` whose per-node lines say what is wrong and how to fix
it. A model name the server lacks (``value_not_in_list`` on a loader) lists the files the server
has and the ``models/`` folder to put the file in. Server tracebacks are never shown, and every
line is redacted here, where the server's text enters charpack (a server may echo the request's
``Authorization`` header), so no message, log or manifest built from it can carry a secret.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from charpack_nodes.pipelines import catalog

from ..errors import PromptRejected
from .auth import redact

# (class_type, input) -> models/ folder: the catalogue owns them (one spelling).
LOADER_FOLDERS = catalog.LOADER_FOLDERS
_MAX_LISTED = 25

ModelLister = Callable[[str], Sequence[str]]


def _choices(input_config: Any) -> list[str] | None:
    """The allowed values from an error's ``input_config`` (V1 list or V3 ``COMBO`` dict)."""
    if not isinstance(input_config, list) or not input_config:
        return None
    head = input_config[0]
    if isinstance(head, list):
        return [str(c) for c in head]
    if head == "COMBO" and len(input_config) > 1 and isinstance(input_config[1], Mapping):
        options = input_config[1].get("options")
        if isinstance(options, list):
            return [str(c) for c in options]
    return None


def _listing(values: Sequence[str]) -> str:
    if not values:
        return "none"
    shown = ", ".join(values[:_MAX_LISTED])
    more = len(values) - _MAX_LISTED
    return f"{shown} and {more} more" if more > 0 else shown


def _not_in_list(class_type: str, err: Mapping[str, Any], models: ModelLister | None) -> str:
    extra = err.get("extra_info") or {}
    name = str(extra.get("input_name") or err.get("details") or "?").split(":")[0]
    received = extra.get("received_value")
    folder = LOADER_FOLDERS.get((class_type, name))
    choices = _choices(extra.get("input_config"))
    if choices is None and folder and models is not None:
        try:
            choices = list(models(folder))
        except Exception:  # the listing is a courtesy; the rejection itself must still surface
            choices = None
    has = f"; the server has: {_listing(choices)}" if choices is not None else ""
    if folder:
        return (
            f"{name}: {received!r} is not on the server{has}. Put the file in models/{folder}/ "
            "on the server (the runpod/ recipe lists every model) or fix the name in the pack."
        )
    return f"{name}: {received!r} is not an allowed value{has}."


def node_message(class_type: str, err: Mapping[str, Any], models: ModelLister | None) -> str:
    """One readable line for one entry of a node's ``errors`` list."""
    kind = err.get("type")
    extra = err.get("extra_info") or {}
    details = str(err.get("details") or "").strip()
    message = str(err.get("message") or kind or "invalid").strip()
    name = extra.get("input_name") or details
    if kind == "value_not_in_list":
        return _not_in_list(class_type, err, models)
    if kind == "required_input_missing":
        return f"required input {name!r} is missing; send every input of the node explicitly."
    if kind == "exception_during_validation":
        exc = extra.get("exception_type") or "an exception"
        return f"validation raised {exc} ({details or 'no details'}); check the node's links."
    if kind == "return_type_mismatch":
        return f"{details} (link from node {extra.get('linked_node')}); connect a matching output."
    if kind == "custom_validation_failed" and class_type.startswith(catalog.LOAD_IMAGE.class_type):
        return f"{details}; upload the image before submitting (ComfyClient.upload_image)."
    if kind in ("value_smaller_than_min", "value_bigger_than_max", "invalid_input_type"):
        return f"{name}: {message} (got {extra.get('received_value')!r})."
    return f"{message}: {details}" if details else message


def rejection(
    body: Any,
    *,
    server: str,
    prompt_id: str,
    models: ModelLister | None = None,
    queued: bool = False,
) -> PromptRejected:
    """The :class:`PromptRejected` for a ``/prompt`` answer body (400, or 200 with errors)."""
    body = body if isinstance(body, Mapping) else {}
    error = body.get("error")
    node_errors = body.get("node_errors") or {}
    per_node: dict[str, list[str]] = {}
    for node_id, entry in node_errors.items():
        if not isinstance(entry, Mapping):
            continue
        class_type = str(entry.get("class_type") or "?")
        lines = [
            f"[{class_type}] {node_message(class_type, e, models)}"
            for e in entry.get("errors") or []
            if isinstance(e, Mapping)
        ]
        per_node[redact(str(node_id))] = [
            redact(line) for line in lines or [f"[{class_type}] rejected (no details)"]
        ]
    if isinstance(error, Mapping):
        head = str(error.get("message") or error.get("type") or "rejected")
        details = str(error.get("details") or "").strip()
        if error.get("type") == "invalid_prompt" and "does not exist" in head:
            head += " Install the node pack that provides it on the server (runpod/ recipe)."
        elif error.get("type") == "no_prompt":
            head += " (the body needs the API-format graph under 'prompt')."
        elif details and not per_node:
            head = f"{head} ({details})"
    elif isinstance(error, str):
        head = error
    else:
        head = "some outputs failed validation"
    note = " The valid outputs were queued and then cancelled." if queued else ""
    message = redact(f"{server}: ComfyUI rejected prompt {prompt_id}: {head}{note}")
    return PromptRejected(message, per_node)
