"""Trigger tokens: a rare, stable proposal per name, and warnings for common words, the
character's own name and tokens too short to be rare."""

from __future__ import annotations

import pytest

from charpack.character.trigger import COMMON_WORDS, propose_trigger, trigger_warnings


@pytest.mark.parametrize("name", ["Ava", "Zoë Martín", "Li", "Aaron", "Émile", "x"])
def test_a_proposal_is_vowel_free_stable_and_warning_free(name: str) -> None:
    token = propose_trigger(name)
    assert token == propose_trigger(name)
    assert len(token) == 5 and token.isalpha() and token.islower()
    assert not set(token) & set("aeiouy")
    assert token not in COMMON_WORDS
    assert trigger_warnings(token, name=name) == []
    assert trigger_warnings(f"{token} woman", name=name) == []


def test_the_proposal_starts_with_the_names_consonants() -> None:
    assert propose_trigger("Martina").startswith("mrt")
    assert propose_trigger("Ava").startswith("v")


def test_taken_tokens_are_skipped_and_length_is_honoured() -> None:
    first = propose_trigger("Ava")
    second = propose_trigger("Ava", taken=[first.upper()])
    assert second != first and len(second) == 5
    assert len(propose_trigger("Ava", length=7)) == 7
    with pytest.raises(ValueError, match="4 to 12"):
        propose_trigger("Ava", length=2)


def test_common_words_and_the_name_are_warned_about_with_a_proposal() -> None:
    [common] = trigger_warnings("woman")
    assert "common word" in common and "rare token such as" in common
    [only_common] = trigger_warnings("beautiful woman")
    assert "only common words" in only_common
    [named] = trigger_warnings("Martina", name="Martina")
    assert "character's name" in named
    assert any("character's name" in w for w in trigger_warnings("ava_cp woman", name="Ava"))


def test_short_and_missing_triggers_are_warned_about() -> None:
    assert any("shorter than 4" in w for w in trigger_warnings("zq"))
    [empty] = trigger_warnings("  ", name="Ava")
    assert "no trigger word" in empty and propose_trigger("Ava") in empty


def test_the_proposal_for_ava_is_the_one_the_example_character_quotes() -> None:
    """examples/character/character.yaml and the docs quote Ava's proposal; a change to the
    derivation would make them disagree with `charpack character check`."""
    assert propose_trigger("Ava") == "vhtqv"
