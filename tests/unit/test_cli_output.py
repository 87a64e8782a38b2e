"""One CLI output layer, through the installed ``charpack`` command: ``validate --json`` prints
its findings as objects (the same findings the text names), and every command's ``--json``
error is the one object ``{"ok": false, "error": {"type", "message", "exit_code"}}``."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from tests.support.commands import CHARPACK

REPO = Path(__file__).resolve().parents[2]
CORE_ONLY = REPO / "orchestrator" / "data" / "object_info" / "core-0.3.75.json"


def charpack(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CHARPACK, *args], capture_output=True, text=True, env=env)


def test_validate_json_prints_every_finding_as_an_object_and_keeps_the_exit_code(
    pack_file: Path,
) -> None:
    ok = charpack("validate", str(pack_file), "--json")
    assert ok.returncode == 0, ok.stderr
    data = json.loads(ok.stdout)
    assert data["ok"] is True and data["findings"] == []
    assert (data["kind"], data["scenes"], data["jobs"]) == ("pack", 2, 4)

    bad = charpack("validate", str(pack_file), "--object-info", str(CORE_ONLY), "--json")
    assert bad.returncode == 2 and bad.stderr == ""
    data = json.loads(bad.stdout)
    assert data["ok"] is False
    by_node = {f["node"]: f for f in data["findings"]}
    assert by_node["faceid.apply"] == {
        "code": "workflow.unknown_node",
        "level": "error",
        "location": "cafe/001: faceid.apply (IPAdapterFaceID)",
        "message": f"node type not found in {data['object_info']}",
        "fix": "install the ComfyUI_IPAdapter_plus node pack",
        "node": "faceid.apply",
        "input": None,
        "used_by": [],
    }
    # The text output names the same findings, each with its fix, and still exits 2.
    text = charpack("validate", str(pack_file), "--object-info", str(CORE_ONLY))
    assert text.returncode == 2 and text.stdout == ""
    lines = text.stderr.removeprefix("error: ").splitlines()
    assert lines == [f"{f['location']}: {f['message']} — {f['fix']}" for f in data["findings"]]


def test_validate_json_of_one_workflow_names_node_and_input(tmp_path: Path) -> None:
    graph = json.loads((REPO / "workflows" / "api" / "full.json").read_text())
    graph["base.sampler"]["inputs"]["cfg"] = 400
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(graph))
    result = charpack("validate", str(broken), "--json")
    assert result.returncode == 2
    data = json.loads(result.stdout)
    assert data["kind"] == "workflow" and data["nodes"] == len(graph)
    (finding,) = data["findings"]
    assert finding["code"] == "workflow.above_maximum"
    assert (finding["node"], finding["input"]) == ("base.sampler", "cfg")
    assert finding["location"] == "broken.json: base.sampler (KSampler)"
    assert finding["message"] == "cfg: 400 is above the maximum 100.0"
    assert finding["fix"] == "lower it"


def _error_of(stdout: str) -> dict[str, Any]:
    data = json.loads(stdout)
    assert set(data) >= {"ok", "error"} and data["ok"] is False, data
    error = data["error"]
    assert set(error) == {"type", "message", "exit_code"}, error
    assert isinstance(error["type"], str) and error["type"].endswith("Error")
    return dict(error)


def test_every_command_prints_the_one_json_error_shape(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("pack: x\n")
    folder = tmp_path / "not-a-pack-folder"
    folder.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "RUNPOD_API_KEY"}
    commands = {
        ("validate", str(tmp_path / "missing.yaml")): 2,
        ("validate", str(bad)): 2,
        ("preflight", str(bad), "--server", "http://127.0.0.1:9"): 2,
        ("report", str(folder)): 2,
        ("publish", str(folder)): 2,
        ("pod", "status"): 4,
    }
    for args, code in commands.items():
        result = charpack(*args, "--json", env=env)
        assert result.returncode == code, (args, result.stdout, result.stderr)
        error = _error_of(result.stdout)
        assert error["exit_code"] == code and error["message"], args
        assert "Traceback" not in result.stdout + result.stderr
    # `charpack run --json` streams events: its error is the same object, marked as an event.
    result = charpack("run", str(bad), "--json", "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    (line,) = result.stdout.splitlines()
    event = json.loads(line)
    assert event.pop("event") == "error"
    assert _error_of(json.dumps(event))["message"].startswith(f"{bad}: character:")


def test_without_json_an_error_is_one_message_on_stderr_with_its_exit_code(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("pack: x\n")
    for args in (("validate", str(bad)), ("plan", str(bad), "-o", str(tmp_path / "p"))):
        result = charpack(*args)
        assert result.returncode == 2 and result.stdout == ""
        assert result.stderr.startswith(f"error: {bad}: character: required field is missing")
        assert "Traceback" not in result.stderr
