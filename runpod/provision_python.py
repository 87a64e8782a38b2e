"""System packages and the pod's Python environment.

The venv lives on the volume and sees the image's CUDA torch (``--system-site-packages``);
torch, torchvision and torchaudio are constrained to the image's versions so no requirement can
replace them. ComfyUI's and the packs' requirement files are installed under those constraints
plus the manifest pins (pack lines named in ``exclude`` are dropped: the pins replace them);
insightface is built last against the numpy pip settled on. Nothing is installed again while
the inputs are unchanged (a fingerprint in the state file). pip's output goes to the log file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import subprocess
from pathlib import Path

from provision_manifest import PodManifest
from provision_models import State
from provision_report import Report

log = logging.getLogger(__name__)
_NAME_RE = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def ensure_apt(*, packages: tuple[str, ...], report: Report) -> None:
    missing = [p for p in packages if not _dpkg_installed(p)]
    if not missing:
        report.add("apt", ", ".join(packages), "ok", "already installed")
        return
    if os.geteuid() != 0:
        report.add(
            "apt",
            ", ".join(missing),
            "failed",
            "missing and provisioning is not running as root",
            f"run `apt-get install -y {' '.join(missing)}` as root, or pass --skip-apt",
        )
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends"]):
        args = cmd + (missing if "install" in cmd else [])
        proc = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            report.add(
                "apt",
                ", ".join(missing),
                "failed",
                f"`{' '.join(args)}` failed: {proc.stderr.strip()[-400:]}",
                "check the pod's network and rerun",
            )
            return
    report.add("apt", ", ".join(missing), "done", "installed")


def _dpkg_installed(package: str) -> bool:
    try:
        proc = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", package],
            capture_output=True,
            text=True,
            check=False,
        )
    except FileNotFoundError:
        return False
    return proc.stdout.strip().endswith("install ok installed")


def ensure_python(
    *,
    manifest: PodManifest,
    venv: Path,
    comfy_dir: Path,
    state: State,
    log_path: Path,
    report: Report,
) -> None:
    python = venv / "bin" / "python"
    if not python.exists():
        if not _run(["python3", "-m", "venv", "--system-site-packages", str(venv)], log_path):
            report.add(
                "python",
                str(venv),
                "failed",
                "could not create the venv",
                f"see {log_path}; the image needs python3-venv",
            )
            return
    image = _image_torch(python)
    if "torch" not in image:
        report.add(
            "python",
            "torch",
            "failed",
            "the image has no torch",
            "use a RunPod PyTorch image (manifest [pod].image)",
        )
        return
    state_dir = state.path.parent
    constraints = state_dir / "constraints.txt"
    lines = [f"{n}=={v}" for n, v in sorted(image.items())]
    lines += [p for p in manifest.pins + manifest.build_last if "==" in p]
    req_files = [comfy_dir / "requirements.txt"]
    req_files += [
        comfy_dir / "custom_nodes" / p.name / "requirements.txt"
        for p in manifest.node_packs
        if p.requirements
    ]
    filtered = []
    for src in req_files:
        if not src.is_file():
            report.add(
                "python",
                src.parent.name,
                "failed",
                f"{src} is missing",
                "fix the git step above first",
            )
            return
        dst = state_dir / f"requirements-{src.parent.name}.txt"
        dst.write_text(_filter(src.read_text(encoding="utf-8"), manifest.exclude))
        filtered.append(dst)
    constraints.write_text("\n".join(lines) + "\n")
    fingerprint = hashlib.sha256(
        b"\0".join(p.read_bytes() for p in [constraints, *filtered])
        + "\0".join(manifest.pins + manifest.build_last).encode()
    ).hexdigest()
    if state.data.get("python", {}).get("fingerprint") == fingerprint:
        report.add("python", str(venv), "ok", "requirements unchanged since the last install")
        return
    pip = [
        str(python),
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "-c",
        str(constraints),
    ]
    steps = [
        pip + [a for f in filtered for a in ("-r", str(f))] + list(manifest.pins),
        pip + ["--no-build-isolation", *manifest.build_last] if manifest.build_last else [],
    ]
    for cmd in filter(None, steps):
        if not _run(cmd, log_path):
            report.add(
                "python",
                "pip install",
                "failed",
                f"pip failed; see {log_path}",
                "fix the cause shown at the end of that log and rerun",
            )
            return
    if not _checks(python, manifest, log_path, report):
        return
    state.data["python"] = {"fingerprint": fingerprint}
    state.save()
    report.add("python", str(venv), "done", f"installed (torch {image['torch']} from the image)")


def _filter(text: str, exclude: tuple[str, ...]) -> str:
    drop = {_norm(n) for n in exclude}
    out = []
    for line in text.splitlines():
        m = _NAME_RE.match(line)
        if m and _norm(m.group(1)) in drop:
            out.append(f"# dropped by charpack (pinned in the manifest): {line.strip()}")
        else:
            out.append(line)
    return "\n".join(out) + "\n"


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _image_torch(python: Path) -> dict[str, str]:
    code = (
        "import json, importlib.metadata as m\n"
        "out = {}\n"
        "for n in ('torch', 'torchvision', 'torchaudio'):\n"
        "    try: out[n] = m.version(n)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(out))\n"
    )
    proc = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=False)
    try:
        return dict(json.loads(proc.stdout))
    except ValueError:
        return {}


def _checks(python: Path, manifest: PodManifest, log_path: Path, report: Report) -> bool:
    """Refuse forbidden versions; remove a CPU onnxruntime that would shadow the GPU one."""
    code = (
        "import json, importlib.metadata as m\n"
        "print(json.dumps({d.metadata['Name'].lower(): d.version for d in m.distributions()}))\n"
    )
    proc = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=False)
    installed = {_norm(k): v for k, v in json.loads(proc.stdout or "{}").items()}
    bad = [
        f for f in manifest.forbidden if installed.get(_norm(f.split("==")[0])) == f.split("==")[1]
    ]
    if bad:
        report.add(
            "python",
            ", ".join(bad),
            "failed",
            "a forbidden (compromised) version is installed",
            f"`{python} -m pip uninstall -y` it, fix the pins, rerun",
        )
        return False
    gpu_pin = next((p for p in manifest.pins if _norm(p.split("==")[0]) == "onnxruntime-gpu"), "")
    if "onnxruntime" in installed and gpu_pin:
        # Both wheels install the same `onnxruntime` package folder: removing the CPU one
        # deletes files of the GPU one, so the GPU wheel is reinstalled afterwards.
        ok = _run([str(python), "-m", "pip", "uninstall", "-y", "onnxruntime"], log_path) and _run(
            [str(python), "-m", "pip", "install", "--force-reinstall", "--no-deps", gpu_pin],
            log_path,
        )
        if not ok:
            report.add(
                "python",
                "onnxruntime",
                "failed",
                f"could not replace the CPU onnxruntime with {gpu_pin}; see {log_path}",
                "fix and rerun",
            )
            return False
        report.add(
            "python",
            "onnxruntime",
            "warning",
            f"a dependency pulled the CPU onnxruntime; replaced it with {gpu_pin}",
        )
    return True


def _run(cmd: list[str], log_path: Path) -> bool:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a", encoding="utf-8") as out:
        out.write(f"\n$ {' '.join(cmd)}\n")
        out.flush()
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, check=False)
        return proc.returncode == 0
