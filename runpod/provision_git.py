"""Pinned git checkouts of ComfyUI and the node packs on the volume.

A checkout already at its pin is left alone (no network); one at another commit is moved to the
pin when it has no local changes; a folder that is not a git checkout, or has local changes, is
reported and never overwritten.
"""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

from provision_report import Report

log = logging.getLogger(__name__)

# Never ask for credentials on a terminal: a wrong URL must fail, not hang the pod's start.
_GIT_ENV = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "/bin/true"}


class GitError(Exception):
    pass


def _git(*args: str, cwd: Path, timeout: float = 900) -> str:
    proc = subprocess.run(
        ["git", *args],
        cwd=cwd,
        env=_GIT_ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise GitError(f"git {' '.join(args)}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout.strip()


def _has_commit(dest: Path, commit: str) -> bool:
    try:
        _git("cat-file", "-e", f"{commit}^{{commit}}", cwd=dest)
    except GitError:
        return False
    return True


def _fetch(dest: Path, url: str, commit: str) -> None:
    """Fetch just the pinned commit; fall back to a full fetch for servers that refuse that."""
    _git("remote", "set-url", "origin", url, cwd=dest)
    try:
        _git("fetch", "--quiet", "--depth", "1", "origin", commit, cwd=dest)
    except GitError as exc:
        log.info("shallow fetch of %s refused (%s); fetching everything", commit[:12], exc)
        _git("fetch", "--quiet", "origin", cwd=dest)


def ensure_checkout(*, dest: Path, url: str, commit: str, label: str, report: Report) -> bool:
    """Make ``dest`` a checkout of ``url`` at ``commit``; return True when it is there."""
    short = commit[:12]
    try:
        if not dest.exists():
            dest.mkdir(parents=True)
            _git("init", "--quiet", cwd=dest)
            _git("remote", "add", "origin", url, cwd=dest)
            _fetch(dest, url, commit)
            _git("checkout", "--quiet", "--detach", commit, cwd=dest)
            report.add("git", label, "done", f"cloned at {short}")
            return True
        if not (dest / ".git").exists():
            report.add(
                "git",
                label,
                "failed",
                f"{dest} exists but is not a git checkout",
                f"move it away (e.g. `mv {dest} {dest}.old`) and provision again",
            )
            return False
        head = _git("rev-parse", "HEAD", cwd=dest) if _has_head(dest) else ""
        if head == commit:
            report.add("git", label, "ok", f"already at {short}")
            return True
        if _git("status", "--porcelain", "--untracked-files=no", cwd=dest):
            report.add(
                "git",
                label,
                "failed",
                f"{dest} has local changes (at {head[:12] or 'no commit'}, pin is {short})",
                f"inspect with `git -C {dest} status`; discard with `git -C {dest} checkout .`",
            )
            return False
        if not _has_commit(dest, commit):
            _fetch(dest, url, commit)
        _git("checkout", "--quiet", "--detach", commit, cwd=dest)
        report.add("git", label, "done", f"moved from {head[:12] or 'nothing'} to {short}")
        return True
    except (GitError, subprocess.TimeoutExpired, OSError) as exc:
        report.add(
            "git",
            label,
            "failed",
            f"could not check out {url} at {short}: {exc}",
            "check the repo URL and commit in the manifest and the pod's network, then rerun",
        )
        return False


def _has_head(dest: Path) -> bool:
    try:
        _git("rev-parse", "--verify", "--quiet", "HEAD", cwd=dest)
    except GitError:
        return False
    return True
