"""The CivitAI version a user chose, as a file to download and the values to verify it with.

Owns one API call: ``GET <api>/api/v1/model-versions/<versionId>`` (documented at
https://developer.civitai.com/site/reference/model-versions), read with the user's token. From
its ``files[]`` it picks the primary safetensors file (never a pickle: ``.ckpt``/``.pt`` can run
code when loaded) and returns its ``downloadUrl``, ``hashes.SHA256`` and ``sizeKB``. The
provisioner then downloads that URL and verifies the bytes against these values, so the file
on the volume is exactly the one CivitAI lists for the chosen version.

The API base is ``https://civitai.com`` unless provisioning is given ``--civitai-api`` (tests
point it at a local stand-in). Standard library only; no download happens here.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from urllib.parse import urlsplit

from provision_download import USER_AGENT, DownloadError

DEFAULT_API = "https://civitai.com"
SHA256_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class CivitaiFile:
    version_id: int
    name: str  # CivitAI's file name (the volume keeps the manifest's `file` name)
    sha256: str  # lowercase hex
    size_kb: float
    download_url: str
    base_model: str


def versions_page(model_id: int) -> str:
    return f"https://civitai.com/models/{model_id}"


def choose_hint(key: str, model_id: int) -> str:
    """The one line that says how to choose a version."""
    return (
        f"choose a version on {versions_page(model_id)} (the number after modelVersionId= "
        f"in its URL) and pass it: charpack pod up --civitai-version {key}=<versionId>"
    )


def same_origin(a: str, b: str) -> bool:
    x, y = urlsplit(a), urlsplit(b)
    return (x.scheme, x.hostname, x.port) == (y.scheme, y.hostname, y.port)


def resolve_version(
    *, api: str, key: str, model_id: int, version_id: int, token: str | None, timeout: float = 60
) -> CivitaiFile:
    """Read version ``version_id`` and pick its file; raise `DownloadError` with the fix."""
    url = f"{api.rstrip('/')}/api/v1/model-versions/{version_id}"
    data = _get_json(url, key=key, model_id=model_id, version_id=version_id, token=token,
                     timeout=timeout)  # fmt: skip
    if not isinstance(data, dict):
        raise DownloadError(
            f"CivitAI's API answered for version {version_id} with something other than a "
            "model version",
            "retry later; if it persists, check the version on the CivitAI site",
        )
    other = data.get("modelId")
    if isinstance(other, int) and other != model_id:
        raise DownloadError(
            f"CivitAI version {version_id} belongs to model {other}, not to model {model_id} "
            f"({key})",
            choose_hint(key, model_id),
        )
    files = [f for f in data.get("files") or [] if isinstance(f, dict)]
    chosen = _pick_safetensors(files)
    if chosen is None:
        names = ", ".join(str(f.get("name", "?")) for f in files) or "no files"
        raise DownloadError(
            f"CivitAI version {version_id} has no safetensors file ({names}); charpack does not "
            "load pickled checkpoints",
            choose_hint(key, model_id) + " (one that offers a SafeTensor file)",
        )
    sha = str((chosen.get("hashes") or {}).get("SHA256", "")).lower()
    size_kb = chosen.get("sizeKB")
    download_url = str(chosen.get("downloadUrl") or data.get("downloadUrl") or "")
    if len(sha) != 64 or not set(sha) <= SHA256_HEX:
        raise DownloadError(
            f"CivitAI lists no SHA256 for {chosen.get('name')} of version {version_id}, so the "
            "download could not be verified; nothing was downloaded",
            "retry later (CivitAI hashes new uploads after a while) or choose another version",
        )
    if not isinstance(size_kb, (int, float)) or isinstance(size_kb, bool) or size_kb <= 0:
        raise DownloadError(
            f"CivitAI lists no size for {chosen.get('name')} of version {version_id}",
            "retry later or choose another version",
        )
    if not download_url.startswith(("https://", "http://")):
        raise DownloadError(
            f"CivitAI lists no download URL for version {version_id}",
            "retry later or choose another version",
        )
    return CivitaiFile(
        version_id=version_id,
        name=str(chosen.get("name", "")),
        sha256=sha,
        size_kb=float(size_kb),
        download_url=download_url,
        base_model=str(data.get("baseModel", "")),
    )


def _pick_safetensors(files: list[dict[str, object]]) -> dict[str, object] | None:
    def is_safetensors(f: dict[str, object]) -> bool:
        meta = f.get("metadata")
        fmt = meta.get("format") if isinstance(meta, dict) else None
        return fmt == "SafeTensor" or str(f.get("name", "")).lower().endswith(".safetensors")

    candidates = [f for f in files if is_safetensors(f) and f.get("type", "Model") == "Model"]
    primary = [f for f in candidates if f.get("primary") is True]
    return (primary or candidates or [None])[0]


def _get_json(
    url: str, *, key: str, model_id: int, version_id: int, token: str | None, timeout: float
) -> object:
    req = urllib.request.Request(
        url, headers={"User-Agent": USER_AGENT, "Accept": "application/json"}
    )
    if token:
        # Not carried across a redirect (urllib drops unredirected headers there).
        req.add_unredirected_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body = resp.read(8 << 20)  # a version's JSON is a few KB; never read without bound
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 404:
            raise DownloadError(
                f"CivitAI has no published version {version_id} (HTTP 404)",
                choose_hint(key, model_id),
            ) from None
        if exc.code in (401, 403):
            raise DownloadError(
                f"CivitAI refused to show version {version_id} (HTTP {exc.code}): the token is "
                "wrong, expired, or has no access to it",
                "create a token at https://civitai.com/user/account (API Keys) and export "
                "CIVITAI_TOKEN=<token>",
            ) from None
        raise DownloadError(
            f"CivitAI's API answered HTTP {exc.code} for version {version_id}",
            "retry later; CivitAI may be down",
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(
            f"could not reach CivitAI's API at {urlsplit(url).hostname} ({reason})",
            "check the pod's network, then rerun",
        ) from None
    try:
        return json.loads(body)
    except ValueError:
        raise DownloadError(
            f"CivitAI's API answered for version {version_id} with something that is not JSON "
            "(an error or login page)",
            "retry later; check the version on the CivitAI site",
        ) from None
