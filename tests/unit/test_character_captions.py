"""Captions: the trigger first, then what the picture shows; the pack's prefix, suffix,
attributes, quality words and prompt weights never reach the caption."""

from __future__ import annotations

from charpack.character.captions import Captioner, caption_for

CHARACTER = {
    "name": "Ava",
    "trigger": "vhtqv woman",
    "attributes": {"hair": "shoulder-length auburn hair", "eyes": "green eyes"},
    "prompt_prefix": "RAW photo",
    "prompt_suffix": "natural skin texture, 85mm lens, soft film grain",
}


def test_a_scene_prompt_becomes_trigger_plus_description() -> None:
    text = caption_for("sitting at a cafe terrace, linen shirt, morning light", "vhtqv woman")
    assert text == "vhtqv woman, sitting at a cafe terrace, linen shirt, morning light"


def test_a_whole_positive_prompt_loses_prefix_suffix_attributes_and_trigger() -> None:
    positive = (
        "RAW photo, vhtqv woman, shoulder-length auburn hair, green eyes, walking across a city "
        "square, camel trench coat, golden hour, natural skin texture, 85mm lens, soft film grain"
    )
    caption = Captioner.from_character(CHARACTER).caption(positive)
    assert caption == "vhtqv woman, walking across a city square, camel trench coat, golden hour"


def test_quality_words_weights_and_repeats_are_dropped() -> None:
    text = caption_for(
        "(masterpiece:1.2), best quality, 8k, (red summer dress:1.1), beach, Beach, 50mm, "
        "[sharp focus]",
        "zmrct",
    )
    assert text == "zmrct, red summer dress, beach"


def test_long_prompts_are_cut_to_the_word_limit() -> None:
    prompt = ", ".join(f"detail{i} word" for i in range(60))
    caption = caption_for(prompt, "zmrct", max_words=10)
    assert caption.startswith("zmrct, detail0 word") and len(caption.split(" ")) <= 11


def test_a_trigger_override_replaces_the_packs_trigger() -> None:
    captioner = Captioner.from_character(CHARACTER, trigger="bxkrt")
    assert captioner.caption("studio portrait, grey backdrop") == (
        "bxkrt, studio portrait, grey backdrop"
    )
