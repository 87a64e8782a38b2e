"""Model files on the volume: plan, disk budget, download, sha256 verification, state.

Rules (runpod/README.md "Hashes"):
- a file is used only when its sha256 matches the manifest, the value CivitAI's API lists for
  the version the user chose (CivitAI entries), or a hash recorded on the volume by an earlier
  ``--record-hashes`` run; a mismatch is deleted and reported, never kept;
- a CivitAI entry without a chosen version is reported with how to choose one, and nothing is
  requested for it;
- a model with no known hash (an entry a user added without one) is downloaded only with
  ``--record-hashes`` (trust on first use, listed loudly in the report), otherwise it is
  reported and left alone;
- verified files are remembered by size and mtime in the state file, so a second run neither
  downloads nor re-hashes anything.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from provision_civitai import DEFAULT_API, choose_hint, resolve_version, same_origin
from provision_download import DownloadError, download, sha256_file
from provision_manifest import Model, PodManifest
from provision_report import Report

log = logging.getLogger(__name__)
GB = 1_000_000_000


class State:
    """``<volume>/.charpack/state.json``: what was verified, by size+mtime, with which hash."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            self.data = {}
        self.data.setdefault("models", {})

    def model(self, relpath: str) -> dict[str, Any] | None:
        return self.data["models"].get(relpath)

    def remember(self, relpath: str, path: Path, sha256: str, source: str) -> None:
        st = path.stat()
        self.data["models"][relpath] = {
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "sha256": sha256,
            "source": source,
        }
        self.save()

    def forget(self, relpath: str) -> None:
        if self.data["models"].pop(relpath, None) is not None:
            self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        tmp.replace(self.path)


@dataclass(frozen=True)
class Options:
    models_dir: Path
    record_hashes: bool
    retries: int
    retry_wait: float
    only: frozenset[str]  # model keys; empty = all
    civitai_api: str = DEFAULT_API
    civitai_versions: Mapping[str, int] = field(default_factory=dict)  # key -> chosen version


def provision_models(*, manifest: PodManifest, state: State, opts: Options, report: Report) -> None:
    models = [m for m in manifest.models if not opts.only or m.key in opts.only]
    unknown = opts.only - {m.key for m in manifest.models}
    for key in sorted(unknown):
        report.add("model", key, "failed", "no such model in the manifest", "check --only")
    todo: list[Model] = []
    for entry in models:
        m = _resolve_civitai(entry, state, opts, report)
        if m is None:
            continue
        if _check_present(m, state, opts, report):
            continue
        if _ready_to_download(m, state, opts, report):
            todo.append(m)
    if not todo:
        return
    if not _budget_ok(todo, manifest.reserve_bytes, opts.models_dir, report):
        for m in todo:
            report.add("model", m.key, "skipped", "not downloaded: the volume is too small")
        return
    for m in todo:
        _fetch(m, state, opts, report)


def _resolve_civitai(m: Model, state: State, opts: Options, report: Report) -> Model | None:
    """A CivitAI entry as a concrete download (url, sha256 and size from CivitAI's API for the
    chosen version), or None when it cannot be provisioned (reported). Other entries pass."""
    if m.civitai_model is None:
        return m
    version = opts.civitai_versions.get(m.key, m.civitai_version)
    final = opts.models_dir / m.relpath
    rec = state.model(m.relpath) or {}
    recorded = str(rec.get("source", ""))
    if version is None:
        if m.url and m.sha256:
            return m  # pinned by hand in the manifest
        if recorded.startswith(CIVITAI_SOURCE) and _unchanged(rec, final):
            # Chosen at an earlier start; the volume remembers which version it verified.
            return replace(m, sha256=str(rec["sha256"]), sha256_source=recorded)
        report.add(
            "model",
            m.key,
            "failed",
            "no CivitAI version chosen",
            choose_hint(m.key, m.civitai_model),
        )
        return None
    source = f"{CIVITAI_SOURCE}{version}"
    if recorded == source and _unchanged(rec, final):
        return replace(m, sha256=str(rec["sha256"]), sha256_source=source)
    token = os.environ.get(m.token_env, "") if m.token_env else ""
    if not token:
        _report_missing_token(m, report)
        return None
    try:
        found = resolve_version(
            api=opts.civitai_api,
            key=m.key,
            model_id=m.civitai_model,
            version_id=version,
            token=token,
        )
    except DownloadError as exc:
        report.add("model", m.key, "failed", str(exc), exc.fix)
        return None
    log.info(
        "%s: CivitAI version %d is %s (%s, %.2f GB, sha256 %s)",
        m.key,
        version,
        found.name,
        found.base_model or "base model not given",
        found.size_kb * 1024 / GB,
        found.sha256,
    )
    return replace(
        m,
        url=found.download_url,
        sha256=found.sha256,
        size=None,
        approx_size=round(found.size_kb * 1024),
        expected_kb=found.size_kb,
        sha256_source=source,
    )


CIVITAI_SOURCE = "CivitAI version "


def _unchanged(rec: dict[str, Any], final: Path) -> bool:
    """The file is the one the state file recorded (same size and mtime)."""
    try:
        st = final.stat()
    except OSError:
        return False
    return bool(rec.get("sha256")) and (rec.get("size"), rec.get("mtime_ns")) == (
        st.st_size,
        st.st_mtime_ns,
    )


def _report_missing_token(m: Model, report: Report) -> None:
    site = "CivitAI" if m.token == "civitai" else "Hugging Face"
    report.add(
        "model",
        m.key,
        "failed",
        f"needs a {site} token and {m.token_env} is not set",
        f"create a token ({site} account settings) and export {m.token_env}=<token> "
        "(for `charpack pod up`, export it on your machine: it is passed to the pod)",
    )


def _expected(m: Model, state: State) -> tuple[str, str]:
    """The hash to check against and where it comes from ("manifest", "CivitAI version N",
    "recorded", "")."""
    if m.sha256:
        return m.sha256, m.sha256_source
    rec = state.model(m.relpath)
    if rec and rec.get("source") == "recorded":
        return str(rec["sha256"]), "recorded"
    return "", ""


def _check_present(m: Model, state: State, opts: Options, report: Report) -> bool:
    """Handle a file already in place; return True when nothing more is needed."""
    final = opts.models_dir / m.relpath
    if not final.is_file():
        return False
    expected, source = _expected(m, state)
    rec = state.model(m.relpath)
    st = final.stat()
    if (
        rec
        and expected
        and rec.get("sha256") == expected
        and rec.get("size") == st.st_size
        and rec.get("mtime_ns") == st.st_mtime_ns
    ):
        report.add("model", m.key, "ok", f"already verified ({source} sha256)")
        return True
    actual = sha256_file(final)
    if expected and actual == expected:
        state.remember(m.relpath, final, actual, source)
        report.add("model", m.key, "ok", f"present; sha256 matches the {source} value")
        return True
    if expected:
        final.unlink()
        state.forget(m.relpath)
        report.add(
            "model",
            m.key,
            "warning",
            f"the file on the volume had sha256 {actual[:16]}..., expected {expected[:16]}... "
            f"({source}); deleted it and will download it again",
        )
        return False
    if opts.record_hashes:
        state.remember(m.relpath, final, actual, "recorded")
        report.add(
            "model",
            m.key,
            "warning",
            f"present; no published sha256, recorded {actual} (trust on first use)",
            f"check it against the publisher and set models.{m.key}.sha256 in the manifest",
        )
        return True
    report.add(
        "model",
        m.key,
        "failed",
        "present but cannot be verified: no sha256 in the manifest and none recorded",
        f"set models.{m.key}.sha256 in runpod/manifest.toml, or run provisioning once with "
        "--record-hashes (trust on first use)",
    )
    return True


def _ready_to_download(m: Model, state: State, opts: Options, report: Report) -> bool:
    if not m.url:
        report.add(
            "model",
            m.key,
            "failed",
            "no download URL chosen in the manifest",
            f"set models.{m.key}.url (and sha256) in runpod/manifest.toml, or copy "
            f"{m.file} into {opts.models_dir / m.folder} yourself",
        )
        return False
    if m.token_env and not os.environ.get(m.token_env):
        _report_missing_token(m, report)
        return False
    if not _expected(m, state)[0] and not opts.record_hashes:
        report.add(
            "model",
            m.key,
            "failed",
            "not downloaded: no sha256 in the manifest to verify it against",
            f"set models.{m.key}.sha256 in runpod/manifest.toml, or run provisioning once with "
            "--record-hashes (trust on first use)",
        )
        return False
    return True


def _budget_ok(todo: list[Model], reserve: int, models_dir: Path, report: Report) -> bool:
    models_dir.mkdir(parents=True, exist_ok=True)
    need = 0
    for m in todo:
        part = models_dir / (m.relpath + ".part")
        have = part.stat().st_size if part.is_file() else 0
        need += max(m.budget_bytes - have, 0)
    free = shutil.disk_usage(models_dir).free
    if free >= need + reserve:
        return True
    report.add(
        "volume",
        str(models_dir),
        "failed",
        f"not enough space: {len(todo)} file(s) need {need / GB:.2f} GB plus "
        f"{reserve / GB:.2f} GB kept free for outputs (volume.reserve_gb), "
        f"but only {free / GB:.2f} GB are free",
        "grow the network volume in the RunPod console, or delete old outputs "
        "(ComfyUI/output) and rerun; nothing was downloaded",
    )
    return False


def _fetch(m: Model, state: State, opts: Options, report: Report) -> None:
    final = opts.models_dir / m.relpath
    part = final.with_name(final.name + ".part")
    final.parent.mkdir(parents=True, exist_ok=True)
    expected, source = _expected(m, state)
    token_env = m.token_env
    token = os.environ.get(token_env) if token_env else None
    if m.civitai_model is not None and not same_origin(m.url, opts.civitai_api):
        # The download URL came from the API's answer: the token goes to CivitAI only.
        token = None
    log.info("downloading %s (%.1f MB) from %s", m.key, m.budget_bytes / 1e6, m.url)
    try:
        actual = download(
            url=m.url,
            part=part,
            token=token,
            token_env=token_env,
            expected_size=m.size,
            retries=opts.retries,
            retry_wait=opts.retry_wait,
        )
    except DownloadError as exc:
        report.add("model", m.key, "failed", str(exc), exc.fix)
        return
    size = part.stat().st_size
    if m.size is not None and size != m.size:
        part.unlink()
        report.add(
            "model",
            m.key,
            "failed",
            f"downloaded {size} bytes, the manifest says {m.size}; the file was deleted",
            "the upstream file changed: check it, then correct size and sha256 in the manifest",
        )
        return
    if m.expected_kb is not None and abs(size - m.expected_kb * 1024) > 1024:
        part.unlink()
        report.add(
            "model",
            m.key,
            "failed",
            f"downloaded {size} bytes, {source} lists {m.expected_kb} KB; the file was deleted",
            "CivitAI served another file than its API lists for this version: rerun later, "
            "or choose another version",
        )
        return
    if expected and actual != expected:
        part.unlink()
        fix = (
            "CivitAI served another file than its API lists for this version (or the download "
            "was tampered with): rerun later; if it persists, choose another version"
            if source.startswith(CIVITAI_SOURCE)
            else "the upstream file changed or the download was tampered with: check the "
            "source, then correct the url/sha256 in the manifest and rerun"
        )
        report.add(
            "model",
            m.key,
            "failed",
            f"sha256 mismatch: got {actual}, expected {expected} ({source}); "
            "the download was deleted and is not used",
            fix,
        )
        return
    part.replace(final)
    if expected:
        state.remember(m.relpath, final, actual, source)
        report.add("model", m.key, "done", f"downloaded and verified ({source} sha256)")
    else:
        state.remember(m.relpath, final, actual, "recorded")
        report.add(
            "model",
            m.key,
            "warning",
            f"downloaded; no published sha256, recorded {actual} (trust on first use)",
            f"check it against the publisher and set models.{m.key}.sha256 in the manifest",
        )
