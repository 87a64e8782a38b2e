"""Every value charpack emits survives the graph editor's widgets unchanged.

The editor (ComfyUI frontend 1.32.9) rounds a number it loads into a FLOAT or INT widget
(``charpack.check.widget_values`` models how, from the bundle's code). Opened there, a preset the
widget cannot hold becomes another value, and the prompt queued from the editor carries it: the
InstantID ``noise`` preset 0.35 became 0.3 (reference/graph-editor.md §11). So every widget input
of every node of every graph charpack emits (every example pack's jobs as ``charpack plan``
writes them, ``workflows/api/`` and the node pack's example graphs) is checked against the
recorded ``/object_info``, and so is every default of charpack's own nodes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from charpack.check import node_examples, widget_values, workflows
from charpack.check.widget_values import changed_widgets, loaded, survives
from charpack.comfy.objectinfo import InputSpec, ObjectInfo
from charpack_nodes.ops.specs import SETTINGS
from tests.golden.plan_golden import EXAMPLES, planned

REPO = Path(__file__).resolve().parents[2]
INFO = ObjectInfo.recorded()
CHARPACK = json.loads((REPO / "orchestrator/data/object_info/charpack.json").read_text())


def float_input(**options: object) -> InputSpec:
    return InputSpec("x", "FLOAT", True, options)


def int_input(**options: object) -> InputSpec:
    return InputSpec("x", "INT", True, options)


def test_the_model_gives_what_the_editor_was_measured_doing() -> None:
    # cubiq's InstantID noise: step 0.1, no round; measured in the real editor: 0.35 -> 0.3.
    noise = INFO.get("InstantIDAttentionPatch").inputs["noise"]  # type: ignore[union-attr]
    assert loaded(noise, 0.35) == 0.3 and not survives(noise, 0.35)
    assert survives(noise, 0.3) and survives(noise, 0.4)
    # Core KSampler cfg: step 0.1, round 0.01 -> the step's one decimal is what is kept.
    cfg = INFO.get("KSampler").inputs["cfg"]  # type: ignore[union-attr]
    assert survives(cfg, 4.0) and loaded(cfg, 4.0) == 4.0
    assert loaded(cfg, 4.25) != 4.25


def test_float_precision_comes_from_the_step_and_the_grid_from_round() -> None:
    assert widget_values.float_widget({"step": 0.05}) == (0.01, 2)
    assert widget_values.float_widget({"step": 0.1, "round": 0.01}) == (0.01, 1)
    assert widget_values.float_widget({}) == (0.1, 1)  # no step: 0.5 -> one decimal
    assert widget_values.float_widget({"step": 1}) == (None, 0)  # whole steps: not rounded
    assert loaded(float_input(step=0.05), 0.85) == 0.85
    assert loaded(float_input(step=0.05, round=0.05), 0.83) == 0.85
    assert loaded(float_input(step=1), 2.5) == 2.5
    assert loaded(float_input(step=0.1, min=0.5, max=1.0), 1.26) == 1.0  # clamped to max


def test_js_rounding_is_half_up_like_the_browser() -> None:
    assert widget_values.js_round(2.5) == 3 and widget_values.js_round(-2.5) == -2
    assert widget_values.js_to_fixed(0.125, 2) == 0.13  # an exact half: away from zero
    assert widget_values.js_to_fixed(1.005, 2) == 1.0  # 1.005 is 1.00499… as a double


def test_int_widgets_snap_to_their_step_and_lose_what_a_double_cannot_hold() -> None:
    assert loaded(int_input(step=8, min=256), 832) == 832
    assert loaded(int_input(step=8, min=256), 830) == 832
    assert loaded(int_input(step=8, min=4), 838) == 836  # the grid starts at min
    assert survives(int_input(), 2**53) and not survives(int_input(), 2**53 + 1)


def emitted_graphs() -> dict[str, dict]:
    """Every API graph charpack emits, by a name that says where it comes from."""
    graphs: dict[str, dict] = {}
    for pack_file in EXAMPLES:
        for name, graph in planned(pack_file).items():
            graphs[f"plan {pack_file.name}: {name}"] = graph  # type: ignore[assignment]
    for path in sorted((REPO / "workflows" / "api").glob("*.json")):
        graphs[f"workflows/api/{path.name}"] = json.loads(path.read_text())
    graphs["example whole pipeline"] = node_examples.whole_pipeline(workflows.EXAMPLE, INFO)
    for stage in node_examples.STAGE_NODES:
        graphs[f"example stage {stage}"] = node_examples.stage_alone(stage, workflows.EXAMPLE, INFO)
    graphs["example identity test"] = node_examples.identity_test(
        workflows.identity_test_specs(), INFO
    )
    return graphs


GRAPHS = emitted_graphs()


def test_the_emitted_graphs_cover_every_example_pack_and_every_workflow() -> None:
    assert {name.split(":")[0] for name in GRAPHS if name.startswith("plan ")} == {
        f"plan {p.name}" for p in EXAMPLES
    }
    widget_inputs = sum(
        1
        for graph in GRAPHS.values()
        for node in graph.values()
        for name, value in node["inputs"].items()
        if not isinstance(value, list) and INFO.get(node["class_type"]).inputs[name].is_widget  # type: ignore[union-attr]
    )
    assert widget_inputs > 1000  # the check below really looked at the values


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_every_widget_value_of_every_emitted_graph_survives_the_editor(name: str) -> None:
    assert changed_widgets(GRAPHS[name], INFO) == []


@pytest.mark.parametrize("class_type", sorted(CHARPACK))
def test_every_default_of_charpacks_nodes_survives_the_editor(class_type: str) -> None:
    node = INFO.get(class_type)
    assert node is not None
    for spec in node.inputs.values():
        if spec.type in ("INT", "FLOAT") and "default" in spec.options:
            default = spec.options["default"]
            assert survives(spec, default), (
                f"{class_type}.{spec.name}: {default} -> {loaded(spec, default)}"
            )


def test_charpacks_macro_float_widgets_declare_their_round() -> None:
    """The macros' FLOAT settings (widgets.setting) declare ``round``; presets lie on its grid."""
    settings = set(SETTINGS)
    checked = 0
    for class_type in CHARPACK:
        node = INFO.get(class_type)
        assert node is not None
        for spec in node.inputs.values():
            if spec.type == "FLOAT" and spec.name in settings:
                rounding = spec.options.get("round")
                assert rounding, f"{class_type}.{spec.name} declares no round"
                assert widget_values.float_widget(spec.options)[0] == rounding
                steps = spec.options["default"] / rounding
                assert abs(steps - round(steps)) < 1e-9, f"{class_type}.{spec.name}"
                checked += 1
    assert checked >= 10
