"""runpod/start.sh moves the pod's charpack checkout to the client's version before anything runs.

The real start.sh runs from a clone on a temporary "volume", as on a pod, with a local bare
repository as the charpack remote; the checkout's own runpod/start.py is a stand-in that
records which commit it was started from (the real one needs nginx and ComfyUI: see
test_pod_boot.py), so the test sees that the code that runs is the one at CHARPACK_REF.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from .conftest import REPO, Remote, _git

STUB = """import subprocess, sys
from pathlib import Path
here = Path(__file__).resolve().parent
head = subprocess.run(["git", "-C", str(here.parent), "rev-parse", "HEAD"],
                      capture_output=True, text=True).stdout.strip()
Path(sys.argv[sys.argv.index("--root") + 1], "started-at").write_text(head)
"""


@pytest.fixture
def charpack_remote(make_remote) -> Remote:
    files = {"runpod/start.sh": (REPO / "runpod" / "start.sh").read_text(), "runpod/start.py": STUB}
    return make_remote("charpack", n=3, files=files)


def _volume(tmp_path: Path, remote: Remote, at: str) -> Path:
    volume = tmp_path / "workspace"
    volume.mkdir()
    _git("clone", "-q", remote.url, str(volume / "charpack"), cwd=tmp_path)
    _git("checkout", "-q", "--detach", at, cwd=volume / "charpack")
    return volume


def _start(volume: Path, ref: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHARPACK_")}
    env.update(CHARPACK_REF=ref, CHARPACK_ROOT=str(volume))
    env.pop("PUBLIC_KEY", None)
    return subprocess.run(
        ["bash", str(volume / "charpack" / "runpod" / "start.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _head(volume: Path) -> str:
    return _git("rev-parse", "HEAD", cwd=volume / "charpack")


def test_the_checkout_moves_to_the_clients_commit_and_runs_its_code(tmp_path, charpack_remote):
    first, second, _ = charpack_remote.commits
    volume = _volume(tmp_path, charpack_remote, first)

    run = _start(volume, second)

    assert run.returncode == 0, run.stderr
    assert _head(volume) == second
    assert (volume / "started-at").read_text() == second  # start.py of that commit ran
    assert f"charpack at {second}" in (volume / "logs" / "start.log").read_text()


def test_a_release_tag_is_checked_out_for_a_client_installed_from_an_index(
    tmp_path, charpack_remote
):
    first, _, third = charpack_remote.commits
    _git("tag", "v0.1.0", first, cwd=Path(charpack_remote.url.removeprefix("file://")))
    volume = _volume(tmp_path, charpack_remote, third)

    assert _start(volume, "v0.1.0").returncode == 0
    assert _head(volume) == first


def test_a_commit_the_remote_lacks_or_local_changes_keep_the_checkout_and_say_so(
    tmp_path, charpack_remote
):
    first, second, _ = charpack_remote.commits
    volume = _volume(tmp_path, charpack_remote, first)

    unpushed = _start(volume, "f" * 40)

    assert unpushed.returncode == 0  # the pod still starts; charpack pod up reports the version
    assert _head(volume) == first
    log = (volume / "logs" / "start.log").read_text()
    assert f"could not fetch {'f' * 40}" in log and "never pushed" in log

    (volume / "charpack" / "version.txt").write_text("edited on the pod\n")
    _start(volume, second)
    assert _head(volume) == first
    assert "has local changes" in (volume / "logs" / "start.log").read_text()
    assert (volume / "charpack" / "version.txt").read_text() == "edited on the pod\n"
