"""Resumable HTTP downloads for provisioning (urllib only).

Owns one file transfer: resume a ``.part`` file with a Range request, hash while writing, retry
cut connections, and turn HTTP answers into `DownloadError` messages that say what to do.
Tokens travel only in an ``Authorization`` header to the host named in the manifest: never in a
URL, and never to the host a redirect points at (a CDN must not receive a CivitAI or HF token).
Whether a finished file is *right* (hash, size) is decided by the caller.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

CHUNK = 1 << 20
USER_AGENT = "charpack-provision/1"


class DownloadError(Exception):
    def __init__(self, message: str, fix: str) -> None:
        super().__init__(message)
        self.fix = fix


class _SameHostAuthRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects; carry the token only when the redirect stays on the same host."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        auth = req.unredirected_hdrs.get("Authorization")
        if new is not None and auth:
            old, nxt = urlsplit(req.full_url), urlsplit(newurl)
            if (old.scheme, old.hostname, old.port) == (nxt.scheme, nxt.hostname, nxt.port):
                new.add_unredirected_header("Authorization", auth)
        return new


_OPENER = urllib.request.build_opener(_SameHostAuthRedirects())


def download(
    *,
    url: str,
    part: Path,
    token: str | None,
    token_env: str | None,
    expected_size: int | None,
    retries: int,
    retry_wait: float,
    timeout: float = 60,
) -> str:
    """Fetch ``url`` into ``part`` (resuming what is there); return the file's sha256."""
    attempt = 0
    while True:
        try:
            return _attempt(url, part, token, token_env, expected_size, timeout)
        except _Retryable as exc:
            have = part.stat().st_size if part.exists() else 0
            if attempt >= retries and not have:
                raise DownloadError(
                    f"could not download from {urlsplit(url).hostname} ({exc})",
                    "check the pod's network and the url in the manifest, then rerun",
                ) from None
            if attempt >= retries:
                total = f" of {expected_size}" if expected_size else ""
                raise DownloadError(
                    f"interrupted after {have}{total} bytes ({exc}); the partial file is kept",
                    "rerun provisioning: it resumes where the transfer stopped",
                ) from None
            attempt += 1
            log.warning("download of %s cut at %d bytes (%s); retry %d", url, have, exc, attempt)
            time.sleep(retry_wait * attempt)


class _Retryable(Exception):
    pass


def _attempt(
    url: str,
    part: Path,
    token: str | None,
    token_env: str | None,
    expected_size: int | None,
    timeout: float,
) -> str:
    have = part.stat().st_size if part.exists() else 0
    if expected_size is not None and have > expected_size:
        part.unlink()
        have = 0
    if expected_size is not None and have == expected_size and have > 0:
        return _sha256_of(part)
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if token:
        req.add_unredirected_header("Authorization", f"Bearer {token}")
    if have:
        req.add_header("Range", f"bytes={have}-")
    try:
        resp = _OPENER.open(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and have:
            # Our partial file does not fit the server's file any more: start over.
            part.unlink()
            raise _Retryable("server refused the resume range; starting over") from None
        raise _http_error(exc.code, url, token, token_env) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise _Retryable(str(getattr(exc, "reason", exc))) from None
    with resp:
        if "text/html" in resp.headers.get("Content-Type", ""):
            raise DownloadError(
                f"{url} answered with an HTML page instead of the file "
                "(a login or error page: the token is missing or refused)",
                _token_fix(token_env) if token_env else "open the URL in a browser to see why",
            )
        hasher = hashlib.sha256()
        if resp.status == 206 and _range_start(resp.headers.get("Content-Range")) == have:
            _hash_into(part, hasher)
            mode = "ab"
        else:
            if have:
                log.info("server ignored the resume range for %s; starting over", url)
            have, mode = 0, "wb"
        length = resp.headers.get("Content-Length")
        got = 0
        try:
            with part.open(mode) as out:
                while chunk := resp.read(CHUNK):
                    out.write(chunk)
                    hasher.update(chunk)
                    got += len(chunk)
        except (OSError, http.client.HTTPException) as exc:  # TimeoutError is an OSError
            if isinstance(exc, OSError) and exc.errno == 28:  # ENOSPC
                raise DownloadError(
                    "the volume is full (no space left on device); the partial file is kept",
                    "free space on the volume (old outputs) or grow it, then rerun",
                ) from None
            raise _Retryable(type(exc).__name__ + (f": {exc}" if str(exc) else "")) from None
    # http.client returns a short body without complaint when the peer closes early.
    if length is not None and length.isdigit() and got < int(length):
        raise _Retryable(f"connection closed after {got} of {length} bytes")
    return hasher.hexdigest()


def _range_start(content_range: str | None) -> int | None:
    # "bytes 100-999/1000"
    if not content_range or not content_range.startswith("bytes "):
        return None
    try:
        return int(content_range[6:].split("-", 1)[0])
    except ValueError:
        return None


def _hash_into(path: Path, hasher: hashlib._Hash) -> None:
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            hasher.update(chunk)


def _sha256_of(path: Path) -> str:
    hasher = hashlib.sha256()
    _hash_into(path, hasher)
    return hasher.hexdigest()


def sha256_file(path: Path) -> str:
    return _sha256_of(path)


def _token_fix(token_env: str) -> str:
    where = {
        "CIVITAI_TOKEN": "https://civitai.com/user/account (API Keys)",
        "HF_TOKEN": "https://huggingface.co/settings/tokens (and accept the model's terms)",
    }.get(token_env, "the site's account settings")
    return f"create a token at {where} and export {token_env}=<token> before provisioning"


def _http_error(code: int, url: str, token: str | None, token_env: str | None) -> DownloadError:
    host = urlsplit(url).hostname
    if code in (401, 403):
        if token:
            return DownloadError(
                f"{host} refused the download with HTTP {code} although {token_env} was sent "
                "(token wrong, expired, or without access to this file)",
                _token_fix(token_env or "the token"),
            )
        env = token_env or ("CIVITAI_TOKEN" if host and "civitai" in host else "HF_TOKEN")
        return DownloadError(
            f"{host} refused the download with HTTP {code}: it needs a token",
            f'{_token_fix(env)}, and set token = "{"civitai" if "CIVITAI" in env else "hf"}" '
            "for this model in the manifest",
        )
    if code == 404:
        return DownloadError(
            f"{url} was not found (HTTP 404)",
            "the file moved upstream: correct its url in runpod/manifest.toml",
        )
    return DownloadError(
        f"{host} answered HTTP {code} for {url}",
        "retry later; if it persists, download the file by hand into its folder",
    )
