"""Which charpack the client is, and the ref a pod checks out to run the same nodes."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

import charpack_nodes
from charpack.pod import version as pod_version
from charpack.pod.lifecycle import load_pod_spec
from charpack.pod.version import CharpackVersion

from .conftest import REPO, _git

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def test_the_node_pack_version_is_the_projects() -> None:
    root = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    pack = tomllib.loads((REPO / "custom_nodes/charpack_nodes/pyproject.toml").read_text())
    assert charpack_nodes.__version__ == root == pack["project"]["version"]
    assert metadata.version("charpack") == root  # what pip reports once installed


def test_a_client_run_from_a_checkout_knows_its_commit() -> None:
    head = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert pod_version._checkout_commit() == head  # an editable install, as in this checkout


def test_the_pod_checks_out_the_clients_commit_or_its_release_tag(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    commit = "4" * 40
    monkeypatch.setattr(pod_version, "client_version", lambda: CharpackVersion("0.1.0", commit))
    assert load_pod_spec().repo_ref == commit
    # Installed from an index: no commit, so the release tag.
    monkeypatch.setattr(pod_version, "client_version", lambda: CharpackVersion("0.1.0"))
    assert load_pod_spec().repo_ref == "v0.1.0"
    assert load_pod_spec(repo_ref="my-branch").repo_ref == "my-branch"  # --ref, for development


def test_versions_match_on_the_release_and_on_the_commit_when_both_know_it() -> None:
    a, b = "a" * 40, "b" * 40
    assert CharpackVersion("0.1.0", a).matches(CharpackVersion("0.1.0", a))
    assert CharpackVersion("0.1.0").matches(CharpackVersion("0.1.0", a))
    assert not CharpackVersion("0.1.0", a).matches(CharpackVersion("0.1.0", b))
    assert not CharpackVersion("0.1.0").matches(CharpackVersion("0.2.0"))
    assert str(CharpackVersion("0.1.0", a)) == "0.1.0 (commit aaaaaaaaaaaa)"


def test_a_node_pack_copied_into_another_checkout_reports_no_commit(tmp_path: Path) -> None:
    # e.g. ComfyUI/custom_nodes/charpack_nodes copied by hand: ComfyUI's commit is not ours.
    comfy = tmp_path / "ComfyUI"
    (comfy / "custom_nodes" / "charpack_nodes").mkdir(parents=True)
    (comfy / "main.py").write_text("")
    _git("init", "-q", cwd=comfy)
    _git("add", "-A", cwd=comfy)
    _git("commit", "-q", "-m", "comfy", cwd=comfy)
    assert charpack_nodes.checkout_commit(comfy) is None
    assert charpack_nodes.checkout_commit(REPO) is not None


def test_a_server_answer_is_read_strictly() -> None:
    commit = "c" * 40
    parse = pod_version.parse_version
    assert parse({"version": "0.1.0", "commit": commit}) == CharpackVersion("0.1.0", commit)
    assert parse({"version": "0.1.0", "commit": "main"}) == CharpackVersion("0.1.0")
    assert parse({"commit": commit}) is None and parse(["0.1.0"]) is None
