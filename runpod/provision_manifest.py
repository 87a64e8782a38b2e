"""Loading and checking runpod/manifest.toml (standard library only; runs on a bare pod).

Owns the manifest's typed view (`PodManifest`, `Model`, `NodePack`, ...) and its validation: every
problem is collected and reported at once, each naming the key and the fix. It does not touch
the network or the volume.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the pod image and the project both run 3.11
    try:
        import tomli as tomllib
    except ImportError as exc:
        raise SystemExit(
            "charpack provisioning needs Python 3.11+ (tomllib) or the 'tomli' package: "
            "run it with python3.11, or `pip install tomli` first"
        ) from exc

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
# Token kinds a model may need, and the environment variable each one is read from.
TOKEN_ENV = {"hf": "HF_TOKEN", "civitai": "CIVITAI_TOKEN"}


class PodManifestError(Exception):
    """The pod manifest (``manifest.toml``) cannot be used; ``problems`` holds one line per
    problem. Not the pack folder's ``charpack.folder.manifest.ManifestError``; a plain Exception
    because these scripts run on the pod with the standard library only (no charpack there)."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"manifest {path} is not usable:\n{lines}")


@dataclass(frozen=True)
class NodePack:
    name: str
    repo: str
    commit: str
    requirements: bool


@dataclass(frozen=True)
class Model:
    key: str
    file: str
    folder: str
    url: str
    size: int | None  # exact bytes, checked after download
    approx_size: int | None  # for the disk budget only
    sha256: str  # "" when no published value is known
    licence: str
    token: str  # "" or a key of TOKEN_ENV
    pickle_whitelist: bool
    # CivitAI entries: the user chooses the version; its file, sha256 and size come from
    # CivitAI's API at provisioning time (provision_civitai.py).
    civitai_model: int | None = None
    civitai_version: int | None = None  # chosen in the manifest itself (else by the user)
    # Where ``sha256`` comes from, as reports and the state file name it.
    sha256_source: str = "manifest"
    # CivitAI reports a size in KB with two decimals, not exact bytes: checked within 1 KB.
    expected_kb: float | None = None

    @property
    def relpath(self) -> str:
        """Path under ComfyUI/models/."""
        return f"{self.folder}/{self.file}"

    @property
    def budget_bytes(self) -> int:
        return self.size if self.size is not None else (self.approx_size or 0)

    @property
    def token_env(self) -> str | None:
        return TOKEN_ENV.get(self.token)


@dataclass(frozen=True)
class PodManifest:
    path: Path
    raw: dict[str, Any]
    comfyui_repo: str
    comfyui_commit: str
    comfyui_version: str
    node_packs: tuple[NodePack, ...]
    models: tuple[Model, ...]
    pins: tuple[str, ...]
    build_last: tuple[str, ...]
    exclude: tuple[str, ...]
    forbidden: tuple[str, ...]
    apt: tuple[str, ...]
    reserve_bytes: int
    layout: dict[str, str]
    pod: dict[str, Any]
    training: dict[str, Any] = field(default_factory=lambda: dict(TRAINING_DEFAULTS))
    serverless: dict[str, Any] = field(default_factory=dict)


def load_manifest(path: Path) -> PodManifest:
    """Read and validate ``path``; raise `PodManifestError` listing every problem."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PodManifestError(path, ["file not found: pass --manifest PATH"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise PodManifestError(path, [f"not valid TOML: {exc}"]) from None
    problems: list[str] = []
    get = _Getter(raw, problems)
    if raw.get("schema") != 1:
        problems.append("schema: expected `schema = 1` at the top")
    comfy_commit = get.str("comfyui", "commit")
    if comfy_commit and not COMMIT_RE.match(comfy_commit):
        problems.append("comfyui.commit: must be a full 40-hex commit id")
    packs = []
    for name, table in _tables(raw, "node_packs", problems):
        commit = str(table.get("commit", ""))
        if not COMMIT_RE.match(commit):
            problems.append(f"node_packs.{name}.commit: must be a full 40-hex commit id")
        if not table.get("repo"):
            problems.append(f"node_packs.{name}.repo: missing (a git URL)")
        packs.append(
            NodePack(name, str(table.get("repo", "")), commit, bool(table.get("requirements")))
        )
    models = [_model(key, table, problems) for key, table in _tables(raw, "models", problems)]
    _check_unique_paths(models, problems)
    python = raw.get("python", {})
    layout = {k: str(v) for k, v in raw.get("layout", {}).items()}
    for name in ("comfyui_dir", "venv_dir", "logs_dir", "state_dir", "repo_dir"):
        if not _is_relative_clean(layout.get(name, "")):
            problems.append(f"layout.{name}: must be a relative path inside the volume")
    training = _training(raw.get("training", {}), problems)
    serverless = _serverless(raw.get("serverless", {}), problems)
    reserve_gb = raw.get("volume", {}).get("reserve_gb", 0)
    if not isinstance(reserve_gb, (int, float)) or reserve_gb < 0:
        problems.append("volume.reserve_gb: must be a number of GB >= 0")
        reserve_gb = 0
    if problems:
        raise PodManifestError(path, problems)
    return PodManifest(
        path=path,
        raw=raw,
        comfyui_repo=get.str("comfyui", "repo"),
        comfyui_commit=comfy_commit,
        comfyui_version=get.str("comfyui", "version"),
        node_packs=tuple(packs),
        models=tuple(models),
        pins=tuple(python.get("pins", [])),
        build_last=tuple(python.get("build_last", [])),
        exclude=tuple(python.get("exclude", [])),
        forbidden=tuple(python.get("forbidden", [])),
        apt=tuple(python.get("apt", [])),
        reserve_bytes=int(reserve_gb * 1_000_000_000),
        layout=layout,
        pod=dict(raw.get("pod", {})),
        training=training,
        serverless=serverless,
    )


TRAINING_DEFAULTS: dict[str, Any] = {
    "lora_folder": "charpack", "dataset_folder": "charpack_train", "reserve_gb": 8,
}  # fmt: skip


def _training(table: Any, problems: list[str]) -> dict[str, Any]:
    """The ``[training]`` table with its defaults; folders must stay inside their parents."""
    if not isinstance(table, dict):
        problems.append("training: must be a table ([training])")
        return dict(TRAINING_DEFAULTS)
    out = {**TRAINING_DEFAULTS, **table}
    for name, parent in (("lora_folder", "models/loras"), ("dataset_folder", "input")):
        if not isinstance(out[name], str) or not _is_relative_clean(out[name]):
            problems.append(f"training.{name}: a relative folder under ComfyUI/{parent}/")
    if not isinstance(out["reserve_gb"], (int, float)) or out["reserve_gb"] < 0:
        problems.append("training.reserve_gb: must be a number of GB >= 0")
    unknown = sorted(set(table) - set(TRAINING_DEFAULTS))
    if unknown:
        problems.append(f"training: unknown key(s) {', '.join(unknown)}")
    return out


# The [serverless] table (`charpack endpoint up`): key -> (type, check, what a good value is).
_SERVERLESS: dict[str, tuple[type | tuple[type, ...], Any, str]] = {
    "name": (str, lambda v: 0 < len(v) <= 191, "a name of 1-191 characters"),
    "image": (str, lambda v: bool(v.strip()) and " " not in v, "a container image reference"),
    "gpu_type": (str, bool, 'a RunPod GPU type id, e.g. "NVIDIA GeForce RTX 4090"'),
    "price_per_s": ((int, float), lambda v: 0 < v < 1, "USD per second, e.g. 0.00031"),
    "max_workers": (int, lambda v: 1 <= v <= 1000, "a whole number of workers >= 1"),
    "min_workers": (int, lambda v: v >= 0, "a whole number of workers >= 0"),
    "idle_timeout_s": (int, lambda v: 1 <= v <= 3600, "seconds from 1 to 3600 (RunPod's range)"),
    "execution_timeout_s": (int, lambda v: 5 < v <= 86400, "seconds, > 5 and at most 24 h"),
    "queue_delay_s": ((int, float), lambda v: v >= 0.5, "seconds >= 0.5 (RunPod's minimum)"),
    "flashboot": (bool, lambda v: True, "true or false"),
    "container_disk_gb": (int, lambda v: v >= 5, "GB >= 5"),
    "allowed_cuda_versions": (list, lambda v: all(re.fullmatch(r"\d+\.\d+", str(x)) for x in v),
                              'CUDA versions as "major.minor"'),
    "volume_mount": (str, lambda v: v == "/runpod-volume",
                     '"/runpod-volume" (where Serverless mounts the network volume)'),
}  # fmt: skip


def _serverless(table: Any, problems: list[str]) -> dict[str, Any]:
    """The ``[serverless]`` table, when there is one: every key present and of its kind (the
    endpoint's settings are pinned like everything else). A pod-only manifest may omit it."""
    if not isinstance(table, dict):
        problems.append("serverless: must be a table ([serverless])")
        return {}
    if not table:
        return {}
    for key, (kind, ok, good) in _SERVERLESS.items():
        value = table.get(key)
        if value is None:
            problems.append(f"serverless.{key}: missing ({good})")
        elif isinstance(value, bool) is not (kind is bool) or not isinstance(value, kind):
            problems.append(f"serverless.{key}: {value!r} is not {good}")
        elif not ok(value):
            problems.append(f"serverless.{key}: {value!r} is not {good}")
    if isinstance(table.get("min_workers"), int) and isinstance(table.get("max_workers"), int):
        if table["min_workers"] > table["max_workers"]:
            problems.append("serverless.min_workers: more than max_workers")
    unknown = sorted(set(table) - set(_SERVERLESS))
    if unknown:
        problems.append(f"serverless: unknown key(s) {', '.join(unknown)}")
    return dict(table)


def _model(key: str, t: dict[str, Any], problems: list[str]) -> Model:
    where = f"models.{key}"
    for name in ("file", "folder", "licence"):
        if not isinstance(t.get(name), str) or not t.get(name):
            problems.append(f"{where}.{name}: missing")
    file, folder = str(t.get("file", "")), str(t.get("folder", ""))
    if file and ("/" in file or file in (".", "..")):
        problems.append(f"{where}.file: a bare file name, without folders")
    if folder and not _is_relative_clean(folder):
        problems.append(f"{where}.folder: a relative folder under ComfyUI/models/, without '..'")
    size, approx = t.get("size"), t.get("approx_size")
    if size is None and approx is None:
        problems.append(f"{where}: give `size` (exact bytes) or `approx_size` (for the budget)")
    for name, value in (("size", size), ("approx_size", approx)):
        if value is not None and (not isinstance(value, int) or value <= 0):
            problems.append(f"{where}.{name}: a positive number of bytes")
    sha = str(t.get("sha256", ""))
    if sha and not SHA256_RE.match(sha):
        problems.append(f'{where}.sha256: 64 lowercase hex characters, or "" when unknown')
    token = str(t.get("token", ""))
    if token and token not in TOKEN_ENV:
        problems.append(f'{where}.token: one of "", {", ".join(map(repr, TOKEN_ENV))}')
    url = str(t.get("url", ""))
    if url and not re.match(r"^(https?|file)://", url):
        problems.append(f'{where}.url: an http(s) URL (or "" when not chosen yet)')
    civitai_model = _positive_int(t, "civitai_model", where, problems)
    civitai_version = _positive_int(t, "civitai_version", where, problems)
    if civitai_model is not None and token != "civitai":
        problems.append(f'{where}.token: "civitai" for a CivitAI entry (civitai_model)')
    if civitai_version is not None and civitai_model is None:
        problems.append(f"{where}.civitai_version: needs civitai_model (the CivitAI model id)")
    return Model(
        key=key,
        file=file,
        folder=folder,
        url=url,
        size=size if isinstance(size, int) else None,
        approx_size=approx if isinstance(approx, int) else None,
        sha256=sha,
        licence=str(t.get("licence", "")),
        token=token,
        pickle_whitelist=bool(t.get("pickle_whitelist", False)),
        civitai_model=civitai_model,
        civitai_version=civitai_version,
    )


def _positive_int(t: dict[str, Any], name: str, where: str, problems: list[str]) -> int | None:
    value = t.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        problems.append(f"{where}.{name}: a positive whole number (a CivitAI id)")
        return None
    return value


def parse_civitai_versions(text: str, manifest: PodManifest) -> tuple[dict[str, int], list[str]]:
    """``"biglove_xl=1744439,other=12"`` -> ({key: versionId}, problems); keys must name
    CivitAI entries of ``manifest``."""
    civitai = sorted(m.key for m in manifest.models if m.civitai_model is not None)
    chosen: dict[str, int] = {}
    problems: list[str] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not value.isdigit() or int(value) <= 0:
            problems.append(
                f"civitai version {item!r}: expected KEY=VERSION_ID with a numeric CivitAI "
                "version id, e.g. biglove_xl=1744439"
            )
        elif key not in civitai:
            problems.append(
                f"civitai version {item!r}: {key!r} is not a CivitAI entry of the manifest "
                f"(CivitAI entries: {', '.join(civitai) or 'none'})"
            )
        else:
            chosen[key] = int(value)
    return chosen, problems


def _check_unique_paths(models: list[Model], problems: list[str]) -> None:
    seen: dict[str, str] = {}
    for m in models:
        if m.relpath in seen:
            problems.append(f"models.{m.key}: same destination as models.{seen[m.relpath]}")
        seen[m.relpath] = m.key


def _tables(raw: dict[str, Any], name: str, problems: list[str]) -> list[tuple[str, Any]]:
    section = raw.get(name, {})
    if not isinstance(section, dict):
        problems.append(f"{name}: must be a table of tables ([{name}.<key>])")
        return []
    out = []
    for key, table in section.items():
        if not isinstance(table, dict):
            problems.append(f"{name}.{key}: must be a table")
            continue
        out.append((key, table))
    return out


def _is_relative_clean(p: str) -> bool:
    pp = PurePosixPath(p)
    return bool(p) and not pp.is_absolute() and ".." not in pp.parts


class _Getter:
    def __init__(self, raw: dict[str, Any], problems: list[str]) -> None:
        self.raw, self.problems = raw, problems

    def str(self, section: str, key: str) -> str:
        value = self.raw.get(section, {}).get(key)
        if not isinstance(value, str) or not value:
            self.problems.append(f"{section}.{key}: missing")
            return ""
        return value
