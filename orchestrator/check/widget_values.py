"""What the graph editor does to a number it loads into a widget (ComfyUI frontend 1.32.9).

Opening an API workflow (``app.loadApiJson``) sets each widget with ``widget.value = v`` and then
calls the widget's callback with ``v``; the callbacks round (bundle ``static/assets/index-*.js``
of ``comfyui-frontend-package==1.32.9``):

* FLOAT (``useFloatWidget``): ``precision = setting "Comfy.FloatRoundingPrecision" (0 = auto) ||
  max(0, -floor(log10(step ?? 0.5)))``; ``round = the input's round`` when it declares one,
  else ``10 ** -precision`` (unless the setting "Comfy.DisableFloatRounding" is on, or precision
  is 0). The callback (``onFloatValueChange``) stores ``clamp(Number((Math.round(v / round) *
  round).toFixed(precision)), min ?? 0, max ?? 2048)``; without a round it stores ``v``. So a
  declared ``round`` sets the grid, the step still sets the decimals kept.
* INT (``useIntWidget`` / ``onValueChange``): ``step = step ?? 1``; step 1 stores
  ``Math.round(v)``, another step ``Math.round((v - m) / step) * step + m`` with ``m = (min ?? 0)
  % step``. Every number is a JavaScript double, so an integer above 2**53 changes too.

Loading a UI workflow (``loadGraphData``) sets ``widgets_values`` without the callbacks, but any
edit goes through them; charpack's presets must survive both. The model assumes the settings'
defaults (auto precision, rounding on).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from charpack.comfy.objectinfo import InputSpec, ObjectInfo

FLOAT_STEP_DEFAULT = 0.5  # useFloatWidget: n.step ?? .5
WIDGET_MIN_DEFAULT = 0  # addWidget options: min: n.min ?? 0
WIDGET_MAX_DEFAULT = 2048  # addWidget options: max: n.max ?? 2048


def js_round(x: float) -> float:
    """JavaScript ``Math.round``: halves go towards +infinity."""
    low = math.floor(x)
    return float(low + 1 if x - low >= 0.5 else low)


def js_to_fixed(x: float, digits: int) -> float:
    """``Number(x.toFixed(digits))``: the exact binary value rounded half away from zero."""
    quantum = Decimal(1).scaleb(-digits)
    return float(Decimal(x).quantize(quantum, rounding=ROUND_HALF_UP))


def float_precision(step: float) -> int:
    return max(0, -math.floor(math.log10(step)))


def float_widget(options: Mapping[str, Any]) -> tuple[float | None, int]:
    """(round, precision) the frontend gives a FLOAT widget with these input options."""
    step = options.get("step", FLOAT_STEP_DEFAULT)
    precision = float_precision(step)
    declared = options.get("round")
    rounding = 10.0**-precision if precision and not declared else declared
    return (rounding or None), precision


def loaded_float(options: Mapping[str, Any], value: float) -> float:
    rounding, precision = float_widget(options)
    if not rounding:
        return float(value)
    snapped = js_to_fixed(js_round(value / rounding) * rounding, precision)
    low = options.get("min", WIDGET_MIN_DEFAULT)
    high = options.get("max", WIDGET_MAX_DEFAULT)
    return min(max(snapped, low), high)


def loaded_int(options: Mapping[str, Any], value: int) -> float:
    as_js = float(value)  # JSON.parse: every number is a double
    step = options.get("step", 1) or 1
    if step == 1:
        return js_round(as_js)
    offset = math.fmod(options.get("min", WIDGET_MIN_DEFAULT), step)
    return js_round((as_js - offset) / step) * step + offset


def loaded(spec: InputSpec, value: Any) -> Any:
    """The value the widget holds after the editor loaded ``value`` into it."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    if spec.type == "FLOAT":
        return loaded_float(spec.options, value)
    if spec.type == "INT":
        return loaded_int(spec.options, value)
    return value


def survives(spec: InputSpec, value: Any) -> bool:
    """The editor keeps ``value`` exactly (same number; an INT stays that integer)."""
    after = loaded(spec, value)
    if spec.type == "INT" and isinstance(value, int) and not isinstance(value, bool):
        return after == value and float(value) == value and int(after) == value
    return after == value


def changed_widgets(graph: Mapping[str, Any], info: ObjectInfo) -> list[str]:
    """One line per widget value of an API graph that the editor would change."""
    problems = []
    for node_id, node in graph.items():
        node_info = info.get(node["class_type"])
        if node_info is None:
            problems.append(f"{node_id}: {node['class_type']} is not in the recorded object_info")
            continue
        for name, value in node.get("inputs", {}).items():
            spec = node_info.inputs.get(name)
            if spec is None or not spec.is_widget or isinstance(value, list):
                continue
            if not survives(spec, value):
                problems.append(
                    f"{node_id} ({node['class_type']}).{name}: {value!r} becomes "
                    f"{loaded(spec, value)!r} in the editor (step {spec.options.get('step')}, "
                    f"round {spec.options.get('round')})"
                )
    return problems
