"""The pack file and the macro nodes name a setting the same way, through one documented mapping.

Every macro widget (``charpack_nodes/ops/specs.SETTINGS``) is set once through the pack file's
spelling of the same field (:func:`charpack.pack.settings.pack_key`) and once through the widget;
both must give the same ``PipelineSpec``. The only names that differ are the documented ones.
"""

from __future__ import annotations

from typing import Any

import pytest

from charpack.pack.settings import TOP_LEVEL, Settings, apply_settings, pack_key
from charpack_nodes.ops import specs
from charpack_nodes.pipelines import ParameterError

# A valid value other than the preset, per macro widget.
VALUES: dict[str, Any] = {
    "steps": 31, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal", "width": 1024,
    "height": 1024, "faceid": False, "faceid_weight": 0.5, "instantid": False,
    "instantid_weight": 0.5, "instantid_mode": "img2img", "instantid_steps": 12,
    "face_detailer": False, "detailer_denoise": 0.3, "detailer_steps": 12, "upscale": False,
    "upscale_model": "other.pth", "output_scale": 0.5, "pag": True, "pag_scale": 2.5,
}  # fmt: skip
# Widgets a pack file sets elsewhere: the seed comes from the pack's seed or a scene's seeds.
NOT_IN_DEFAULTS = {"seed"}
# The one pack-file name that is not the widget's: kept so existing pack files keep working.
RENAMED = {"sampler_name": "sampler"}


def _settings(key: str, value: Any) -> Settings:
    head, _, rest = key.partition(".")
    if head != "stages":
        return Settings(**{key: value})
    stage, _, name = rest.partition(".")
    return Settings(stages={stage: {name: value}})


@pytest.mark.parametrize("widget", sorted(set(specs.SETTINGS) - NOT_IN_DEFAULTS))
def test_a_widget_and_its_pack_file_key_set_the_same_field(widget: str) -> None:
    key = pack_key(*specs.SETTINGS[widget])
    assert key is not None, f"a pack file cannot set the widget {widget!r}"
    value = VALUES[widget]
    problems: list[tuple[str, str, str]] = []
    from_pack = apply_settings(specs.DEFAULTS, _settings(key, value), problems, where="defaults")
    assert problems == []
    assert from_pack == specs.pipeline_spec(**{widget: value})
    assert from_pack != specs.DEFAULTS


def test_pack_file_names_differ_from_widget_names_only_where_documented() -> None:
    differ = {}
    for widget, target in specs.SETTINGS.items():
        key = pack_key(*target)
        if key is None or key.startswith("stages."):
            continue  # a stage setting is written stages.<stage>.<field>, nested, not flat
        if key != widget:
            differ[widget] = key
    assert differ == RENAMED
    assert TOP_LEVEL["sampler"] == specs.SETTINGS["sampler_name"]


def test_seed_is_not_a_defaults_setting() -> None:
    assert pack_key(*specs.SETTINGS["seed"]) is None


@pytest.mark.parametrize(
    "widget",
    sorted(w for w in specs.SETTINGS if not isinstance(specs.preset(w), bool) and w != "seed"),
)
def test_a_widgets_range_error_is_traced_back_to_the_widget(widget: str) -> None:
    # Range errors spell a field as the pack file does ("sampler", "faceid.weight"); the macro
    # nodes translate it back to the input the user sees.
    wrong: Any = "no such name" if isinstance(specs.preset(widget), str) else 10**6
    if widget == "upscale_model":
        wrong = ""  # any file name is allowed; an empty one is not
    with pytest.raises(ParameterError) as caught:
        specs.pipeline_spec(**{widget: wrong})
    assert specs.widget_of(caught.value.field) == widget
