"""Parsing ComfyUI's websocket messages, history entries and rejections (recorded 0.3.75 shapes)."""

from __future__ import annotations

import json

import pytest

from charpack.comfy.events import (
    Done,
    Executing,
    ExecutionError,
    ExecutionInterrupted,
    ExecutionStart,
    ProgressState,
    Status,
    parse,
)
from charpack.comfy.rejections import rejection
from charpack.comfy.results import JobStatus, OutputRef, parse_history, parse_outputs
from charpack.errors import ExecutionFailed

P = "ea45099e-32fa-49fc-bea9-c234d16bf4b2"


def ev(kind: str, data: object) -> object:
    return parse(json.dumps({"type": kind, "data": data}), server="s", received=1.5)


def test_end_marker_is_done_only_with_a_prompt_id() -> None:
    assert ev("executing", {"node": None, "prompt_id": P}) == Done("s", 1.5, P)
    assert ev("executing", {"node": None}) is None
    # 0.3.75 re-sends the running node on reconnect without prompt_id: not an end marker.
    assert ev("executing", {"node": "7"}) == Executing("s", 1.5, None, "7", None)


def test_typed_events_carry_ids_and_receive_time() -> None:
    start = ev("execution_start", {"prompt_id": P, "timestamp": 1795237175006})
    assert start == ExecutionStart("s", 1.5, P, 1795237175006)
    status = ev("status", {"status": {"exec_info": {"queue_remaining": 2}}, "sid": "c"})
    assert status == Status("s", 1.5, 2, "c")
    state = ev(
        "progress_state",
        {"prompt_id": P, "nodes": {"4": {"value": 3, "max": 30, "state": "running"}}},
    )
    assert isinstance(state, ProgressState) and state.nodes["4"].value == 3.0
    error = ev(
        "execution_error",
        {
            "prompt_id": P,
            "node_id": "2",
            "node_type": "LoadImage",
            "exception_type": "ValueError",
            "exception_message": "bad file\n",
            "traceback": ["x"],
        },
    )
    assert error == ExecutionError("s", 1.5, P, "2", "LoadImage", "ValueError", "bad file")
    stop = ev("execution_interrupted", {"prompt_id": P, "node_id": "2", "node_type": "K"})
    assert stop == ExecutionInterrupted("s", 1.5, P, "2", "K")


@pytest.mark.parametrize(
    "frame",
    [
        json.dumps({"type": "crystools.monitor", "data": {"cpu": 3}}),
        json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": True}}),
        json.dumps({"type": "execution_success", "data": {}}),
        "not json",
        json.dumps(["list"]),
    ],
)
def test_unknown_or_malformed_frames_are_ignored(frame: str) -> None:
    assert parse(frame, server="s", received=0.0) is None


SUCCESS = {
    "prompt": [0, P, {}, {"client_id": "c"}, ["4"]],
    "outputs": {
        "4": {"images": [{"filename": "run_00001_.png", "subfolder": "probe", "type": "output"}]},
        "5": {
            "images": [{"filename": "ComfyUI_temp_x_00001_.png", "subfolder": "", "type": "temp"}]
        },
        "6": {"gifs": [{"filename": "clip.mp4", "subfolder": "v", "type": "output"}]},
        "7": {
            "scores": [0.83, 0.91],
            "images": [{"filename": "s.png", "subfolder": "", "type": "output"}],
        },
    },
    "status": {
        "status_str": "success",
        "completed": True,
        "messages": [
            ["execution_start", {"prompt_id": P, "timestamp": 1000}],
            ["execution_cached", {"nodes": [], "prompt_id": P, "timestamp": 1001}],
            ["execution_success", {"prompt_id": P, "timestamp": 1750}],
        ],
    },
}


def test_history_success_collects_every_output_key_but_temp_previews() -> None:
    result = parse_history(P, SUCCESS)
    assert result.status is JobStatus.SUCCESS and result.ok
    assert result.outputs == (
        OutputRef("run_00001_.png", "probe", "output", "4", "images"),
        OutputRef("clip.mp4", "v", "output", "6", "gifs"),
        OutputRef("s.png", "", "output", "7", "images"),
    )
    assert result.ui == {"7": {"scores": (0.83, 0.91)}}
    assert result.execution_s == pytest.approx(0.75)
    assert result.raise_for_status() is result


def test_history_error_and_interrupt_are_told_apart_by_the_last_message() -> None:
    failed = {
        "outputs": {},
        "status": {
            "status_str": "error",
            "completed": False,
            "messages": [
                ["execution_start", {"prompt_id": P, "timestamp": 1}],
                [
                    "execution_error",
                    {
                        "prompt_id": P,
                        "node_id": "2",
                        "node_type": "LoadImage",
                        "exception_type": "UnidentifiedImageError",
                        "exception_message": "cannot identify image file\n",
                        "timestamp": 5,
                    },
                ],
            ],
        },
    }
    result = parse_history(P, failed)
    assert result.status is JobStatus.ERROR
    assert result.failure is not None and result.failure.node_type == "LoadImage"
    with pytest.raises(ExecutionFailed) as caught:
        result.raise_for_status()
    assert caught.value.node_id == "2" and "cannot identify image file" in str(caught.value)

    stopped = {
        "outputs": {},
        "status": {
            "status_str": "error",
            "completed": False,
            "messages": [
                [
                    "execution_interrupted",
                    {
                        "prompt_id": P,
                        "node_id": "3",
                        "node_type": "ImageBlur",
                        "executed": ["1"],
                        "timestamp": 9,
                    },
                ]
            ],
        },
    }
    assert parse_history(P, stopped).status is JobStatus.INTERRUPTED


def test_executed_event_outputs_parse_like_history() -> None:
    refs, ui = parse_outputs(
        {"9": {"images": [{"filename": "a.png", "subfolder": "", "type": "temp"}]}},
        include_temp=True,
    )
    assert refs == (OutputRef("a.png", "", "temp", "9"),) and ui == {}


NOT_IN_LIST_V1 = {
    "error": {
        "type": "prompt_outputs_failed_validation",
        "message": "Prompt outputs failed validation",
        "details": "",
        "extra_info": {},
    },
    "node_errors": {
        "2": {
            "errors": [
                {
                    "type": "value_not_in_list",
                    "message": "Value not in list",
                    "details": "upscale_method: 'magic' not in [...]",
                    "extra_info": {
                        "input_name": "upscale_method",
                        "input_config": [["nearest-exact", "bilinear", "area"], {}],
                        "received_value": "magic",
                    },
                }
            ],
            "dependent_outputs": ["3"],
            "class_type": "ImageScale",
        }
    },
}


def test_rejection_lists_allowed_values() -> None:
    err = rejection(NOT_IN_LIST_V1, server="pod-a", prompt_id=P)
    assert err.node_messages == {
        "2": [
            "[ImageScale] upscale_method: 'magic' is not an allowed value; the server has: "
            "nearest-exact, bilinear, area."
        ]
    }
    assert str(err).startswith(f"pod-a: ComfyUI rejected prompt {P}: Prompt outputs failed")


def test_rejected_model_name_lists_server_files_and_folder() -> None:
    body = {
        "error": {"type": "prompt_outputs_failed_validation", "message": "failed"},
        "node_errors": {
            "base.ckpt": {
                "class_type": "CheckpointLoaderSimple",
                "errors": [
                    {
                        "type": "value_not_in_list",
                        "message": "Value not in list",
                        "details": "ckpt_name: 'bigLove.safetensors' not in []",
                        "extra_info": {
                            "input_name": "ckpt_name",
                            "received_value": "bigLove.safetensors",
                        },
                    }
                ],
            }
        },
    }
    asked: list[str] = []

    def models(folder: str) -> list[str]:
        asked.append(folder)
        return ["bigLoveXL.safetensors", "other.safetensors"]

    err = rejection(body, server="pod-a", prompt_id=P, models=models)
    (line,) = err.node_messages["base.ckpt"]
    assert asked == ["checkpoints"]
    assert "'bigLove.safetensors' is not on the server" in line
    assert "bigLoveXL.safetensors, other.safetensors" in line
    assert "models/checkpoints/" in line


def test_v3_combo_choices_and_other_error_kinds() -> None:
    body = {
        "error": {"type": "prompt_outputs_failed_validation", "message": "failed"},
        "node_errors": {
            "u": {
                "class_type": "UpscaleModelLoader",
                "errors": [
                    {
                        "type": "value_not_in_list",
                        "message": "Value not in list",
                        "details": "",
                        "extra_info": {
                            "input_name": "model_name",
                            "received_value": "4x.pth",
                            "input_config": ["COMBO", {"options": ["tiny.safetensors"]}],
                        },
                    },
                    {
                        "type": "required_input_missing",
                        "message": "Required input is missing",
                        "details": "color",
                        "extra_info": {"input_name": "color"},
                    },
                    {
                        "type": "exception_during_validation",
                        "message": "Exception",
                        "details": "Exception when validating node: '99'",
                        "extra_info": {
                            "exception_type": "KeyError",
                            "traceback": ["/srv/secret.py"],
                        },
                    },
                ],
            }
        },
    }
    lines = rejection(body, server="s", prompt_id=P).node_messages["u"]
    assert "the server has: tiny.safetensors" in lines[0] and "models/upscale_models/" in lines[0]
    assert "required input 'color' is missing" in lines[1]
    assert "KeyError" in lines[2] and "/srv/secret.py" not in lines[2]


def test_unknown_node_type_says_to_install_the_pack() -> None:
    body = {
        "error": {
            "type": "invalid_prompt",
            "details": "Node ID '#1'",
            "extra_info": {},
            "message": "Cannot execute because node NoSuchNode does not exist.",
        },
        "node_errors": {},
    }
    err = rejection(body, server="s", prompt_id=P)
    assert "NoSuchNode does not exist" in str(err) and "Install the node pack" in str(err)
