#!/usr/bin/env python3
"""Provision a RunPod network volume for charpack: run on the pod, standard library only.

    python3 runpod/provision.py [--root /workspace] [--civitai-version KEY=ID] [--skip-pip] ...

Installs ComfyUI and the node packs at their pinned commits, the Python pins, every model with
resume and sha256 verification (CivitAI entries: the version the user chose, verified against
the SHA256 CivitAI's API lists for it), the InsightFace layout the packs expect, and links our
node pack. Idempotent and resumable: a second run changes nothing and downloads nothing. It never
stops at the first failure: the report at the end lists every failure with its fix (exit code 1
when there is one, 2 when the manifest or the arguments are unusable). Tokens (CIVITAI_TOKEN,
HF_TOKEN) are read from the environment and never printed or written.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from provision_civitai import DEFAULT_API
from provision_git import ensure_checkout
from provision_layout import (
    check_insightface,
    link_node_pack,
    skip_download_marker,
    training_folders,
    write_whitelist,
)
from provision_manifest import TOKEN_ENV, PodManifestError, load_manifest, parse_civitai_versions
from provision_models import Options, State, provision_models
from provision_python import ensure_apt, ensure_python
from provision_report import Report

HERE = Path(__file__).resolve().parent
# The CivitAI versions the user chose, as `charpack pod up --civitai-version` passes them.
CIVITAI_VERSIONS_ENV = "CHARPACK_CIVITAI_VERSIONS"
log = logging.getLogger("provision")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--manifest", type=Path, default=HERE / "manifest.toml")
    p.add_argument(
        "--root",
        type=Path,
        default=Path("/workspace"),
        help="the network volume's mount point (default /workspace)",
    )
    p.add_argument(
        "--repo",
        type=Path,
        default=HERE.parent,
        help="the charpack checkout whose node pack is linked (default: this one)",
    )
    p.add_argument(
        "--record-hashes",
        action="store_true",
        help="download entries you added without a sha256 and record theirs (trust on first "
        "use); later runs verify against the recorded value. The shipped entries need none",
    )
    p.add_argument(
        "--civitai-version",
        action="append",
        default=[],
        metavar="KEY=VERSION_ID",
        help=f"the CivitAI version of a CivitAI entry, e.g. biglove_xl=1744439 (repeatable; "
        f"default from ${CIVITAI_VERSIONS_ENV}, comma-separated)",
    )
    p.add_argument(
        "--civitai-api",
        default=DEFAULT_API,
        help=f"CivitAI's API base (default {DEFAULT_API}); the token is sent there",
    )
    p.add_argument("--skip-apt", action="store_true", help="do not install Debian packages")
    p.add_argument("--skip-pip", action="store_true", help="do not build the Python venv")
    p.add_argument("--skip-models", action="store_true", help="do not download models")
    p.add_argument("--only", default="", help="comma-separated model keys to handle")
    p.add_argument("--retries", type=int, default=3, help="retries of a cut download")
    p.add_argument("--retry-wait", type=float, default=5.0, help="seconds before a retry (x n)")
    p.add_argument(
        "--report-json",
        type=Path,
        default=None,
        help="also write the report as JSON here (default <root>/logs/...)",
    )
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    try:
        manifest = load_manifest(args.manifest)
    except PodManifestError as exc:
        sys.stderr.write(f"{exc}\n")
        return 2
    given = ",".join([os.environ.get(CIVITAI_VERSIONS_ENV, ""), *args.civitai_version])
    civitai_versions, problems = parse_civitai_versions(given, manifest)
    if problems:
        sys.stderr.write("".join(f"{p}\n" for p in problems))
        return 2
    root = args.root.resolve()
    if not root.is_dir():
        sys.stderr.write(
            f"--root {root} is not a directory: mount the network volume (RunPod mounts it "
            "at /workspace) or pass the right path\n"
        )
        return 2
    layout = manifest.layout
    comfy_dir = root / layout["comfyui_dir"]
    logs_dir = root / layout["logs_dir"]
    state = State(root / layout["state_dir"] / "state.json")
    models_dir = comfy_dir / "models"
    secrets = [os.environ.get(env, "") for env in TOKEN_ENV.values()]
    secrets.append(os.environ.get("CHARPACK_COMFY_TOKEN", ""))
    report = Report(secrets=secrets)
    _setup_logging(logs_dir, report)
    log.info("provisioning %s from %s", root, args.manifest)

    if args.skip_apt:
        report.add("apt", "system packages", "skipped", "--skip-apt")
    else:
        ensure_apt(packages=manifest.apt, report=report)

    comfy_ok = ensure_checkout(
        dest=comfy_dir,
        url=manifest.comfyui_repo,
        commit=manifest.comfyui_commit,
        label=f"ComfyUI {manifest.comfyui_version}",
        report=report,
    )
    if comfy_ok:
        for pack in manifest.node_packs:
            ensure_checkout(
                dest=comfy_dir / "custom_nodes" / pack.name,
                url=pack.repo,
                commit=pack.commit,
                label=pack.name,
                report=report,
            )
        skip_download_marker(comfy_dir=comfy_dir, report=report)
        link_node_pack(comfy_dir=comfy_dir, repo=args.repo.resolve(), report=report)
        training_folders(manifest=manifest, comfy_dir=comfy_dir, report=report)
    else:
        report.add("git", "node packs", "skipped", "ComfyUI itself is not in place")

    if args.skip_pip:
        report.add("python", "venv", "skipped", "--skip-pip")
    elif comfy_ok:
        ensure_python(
            manifest=manifest,
            venv=root / layout["venv_dir"],
            comfy_dir=comfy_dir,
            state=state,
            log_path=logs_dir / "pip.log",
            report=report,
        )

    if args.skip_models:
        report.add("model", "all", "skipped", "--skip-models")
    else:
        only = frozenset(k for k in args.only.split(",") if k)
        opts = Options(
            models_dir=models_dir,
            record_hashes=args.record_hashes,
            retries=args.retries,
            retry_wait=args.retry_wait,
            only=only,
            civitai_api=args.civitai_api,
            civitai_versions=civitai_versions,
        )
        provision_models(manifest=manifest, state=state, opts=opts, report=report)
        if not only:
            check_insightface(manifest=manifest, models_dir=models_dir, report=report)
        if comfy_ok:
            write_whitelist(manifest=manifest, comfy_dir=comfy_dir, state=state, report=report)

    # The script's own output (not logging): the report is what the user reads at the end.
    sys.stdout.write(report.render() + "\n")
    report.write_json(args.report_json or logs_dir / "provision-report.json")
    return 1 if report.failures else 0


class _RedactingFilter(logging.Filter):
    def __init__(self, report: Report) -> None:
        super().__init__()
        self.report = report

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.report.redact(record.getMessage())
        record.args = None
        return True


def _setup_logging(logs_dir: Path, report: Report) -> None:
    logs_dir.mkdir(parents=True, exist_ok=True)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handlers: list[logging.Handler] = [
        logging.StreamHandler(sys.stderr),
        logging.FileHandler(logs_dir / "provision.log", encoding="utf-8"),
    ]
    for h in handlers:
        h.setFormatter(fmt)
        h.addFilter(_RedactingFilter(report))
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True)


def main(argv: list[str] | None = None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
