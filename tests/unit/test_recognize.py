"""DTMF collection for ACS recognize (gateway/media/recognize.py): every ending with its
resultInformation (ACS_REST.md section 9), the timing edges, and tones after the end."""

from __future__ import annotations

import dataclasses

import pytest

from gateway.media.recognize import (
    DTMF_TONES,
    DtmfCollector,
    Outcome,
    digit_of,
    tone_name,
)

POUND = frozenset({"pound"})


def collector(
    max_tones: int = 4,
    stop_tones: frozenset[str] = POUND,
    inter_tone: float = 5.0,
    initial_silence: float = 10.0,
    start: float = 100.0,
    *,
    prompt: bool = False,
) -> DtmfCollector:
    return DtmfCollector(max_tones, stop_tones, inter_tone, initial_silence, start, prompt=prompt)


# --- tone names --------------------------------------------------------------------------------


def test_tone_names_follow_rfc4733_event_order() -> None:
    # RFC 4733 section 3.2: events 0-9, *, #, A-D; ACS_REST.md section 6.1 DtmfTone strings.
    assert [tone_name(d) for d in "0123456789*#ABCD"] == list(DTMF_TONES)
    assert DTMF_TONES[:3] == ("zero", "one", "two")
    assert tone_name("*") == "asterisk"
    assert tone_name("#") == "pound"
    assert tone_name("a") == tone_name("A") == "a"


@pytest.mark.parametrize("digit", list("0123456789*#ABCD"))
def test_digit_round_trip(digit: str) -> None:
    assert digit_of(tone_name(digit)) == digit


def test_digit_of_accepts_any_case() -> None:
    assert digit_of("Pound") == "#"
    assert digit_of("ASTERISK") == "*"
    assert digit_of("D") == "D"


@pytest.mark.parametrize("bad", ["", "E", "10", "##", " ", "p"])
def test_tone_name_refuses_non_digits(bad: str) -> None:
    with pytest.raises(ValueError, match="not a DTMF digit"):
        tone_name(bad)


@pytest.mark.parametrize("bad", ["", "hash", "star", "10", "e", "#"])
def test_digit_of_refuses_unknown_names(bad: str) -> None:
    with pytest.raises(ValueError, match="not an ACS DtmfTone"):
        digit_of(bad)


# --- construction -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_tones": 0}, "max_tones"),
        ({"inter_tone": 0.0}, "inter_tone"),
        ({"initial_silence": -1.0}, "initial_silence"),
        ({"stop_tones": frozenset({"hash"})}, "unknown stop tones: hash"),
    ],
)
def test_construction_refuses_bad_options(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        collector(**kwargs)  # type: ignore[arg-type]


# --- the endings --------------------------------------------------------------------------


def test_max_tones_completes_with_8531() -> None:
    c = collector(max_tones=3)
    assert c.tone("one", 101.0) is None
    assert c.tone("two", 102.0) is None
    outcome = c.tone("three", 103.0)
    assert outcome == Outcome(
        True, ("one", "two", "three"), 200, 8531, "Action completed, max digits received."
    )
    assert c.outcome is outcome
    assert c.deadline() is None


def test_single_tone_max() -> None:
    outcome = collector(max_tones=1).tone("nine", 100.0)
    assert outcome is not None
    assert (outcome.completed, outcome.tones, outcome.sub_code) == (True, ("nine",), 8531)


def test_stop_tone_completes_with_8514_and_is_not_collected() -> None:
    c = collector()
    c.tone("one", 101.0)
    c.tone("two", 102.0)
    outcome = c.tone("pound", 103.0)
    assert outcome is not None
    assert outcome.completed
    assert outcome.tones == ("one", "two")
    assert (outcome.code, outcome.sub_code) == (200, 8514)
    assert "stop tone" in outcome.message


def test_stop_tone_first_completes_empty() -> None:
    outcome = collector().tone("pound", 100.5)
    assert outcome is not None
    assert (outcome.completed, outcome.tones, outcome.sub_code) == (True, (), 8514)


def test_stop_tone_wins_over_max_tones() -> None:
    c = collector(max_tones=2, stop_tones=frozenset({"asterisk", "pound"}))
    c.tone("one", 101.0)
    outcome = c.tone("asterisk", 102.0)
    assert outcome is not None
    assert (outcome.tones, outcome.sub_code) == (("one",), 8514)


def test_no_stop_tones_collects_pound_as_a_digit() -> None:
    c = collector(max_tones=2, stop_tones=frozenset())
    c.tone("pound", 101.0)
    outcome = c.tone("asterisk", 101.5)
    assert outcome is not None
    assert (outcome.tones, outcome.sub_code) == (("pound", "asterisk"), 8531)


def test_initial_silence_fails_with_8510() -> None:
    c = collector(initial_silence=10.0, start=100.0)
    assert c.deadline() == 110.0
    assert c.poll(109.999) is None
    outcome = c.poll(110.0)
    assert outcome == Outcome(
        False, (), 400, 8510, "Action failed, initial silence timeout reached."
    )
    assert c.deadline() is None


def test_inter_tone_timeout_completes_with_the_tones_so_far() -> None:
    c = collector(inter_tone=5.0)
    c.tone("four", 103.0)
    assert c.deadline() == 108.0
    c.tone("two", 104.0)
    assert c.deadline() == 109.0
    assert c.poll(108.5) is None
    outcome = c.poll(109.0)
    assert outcome is not None
    assert outcome.completed
    assert outcome.tones == ("four", "two")
    assert (outcome.code, outcome.sub_code) == (400, 8532)
    assert "inter-digit" in outcome.message


def test_first_tone_replaces_initial_silence_by_inter_tone() -> None:
    # Initial silence (10 s from 100) would end at 110; after a press at 109 only the
    # inter-tone timer (5 s) counts, even past the initial-silence deadline.
    c = collector(initial_silence=10.0, inter_tone=5.0)
    c.tone("one", 109.0)
    assert c.poll(110.0) is None
    assert c.deadline() == 114.0
    assert c.tone("two", 113.9) is None
    outcome = c.poll(118.9)
    assert outcome is not None
    assert outcome.sub_code == 8532


def test_inter_tone_can_be_longer_than_initial_silence() -> None:
    c = collector(initial_silence=1.0, inter_tone=30.0)
    c.tone("one", 100.5)
    assert c.poll(120.0) is None
    assert c.deadline() == 130.5


def test_zero_initial_silence_fails_at_once_without_a_prompt() -> None:
    c = collector(initial_silence=0.0, start=100.0)
    assert c.deadline() == 100.0
    outcome = c.poll(100.0)
    assert outcome is not None
    assert outcome.sub_code == 8510


# --- the prompt -------------------------------------------------------------------------------


def test_with_a_prompt_initial_silence_counts_from_its_end() -> None:
    c = collector(initial_silence=10.0, start=100.0, prompt=True)
    assert c.deadline() is None
    assert c.poll(500.0) is None  # a long prompt: nothing times out while it plays
    c.prompt_done(503.0)
    assert c.deadline() == 513.0
    assert c.poll(512.9) is None
    outcome = c.poll(513.0)
    assert outcome is not None
    assert (outcome.completed, outcome.sub_code) == (False, 8510)


def test_tone_during_the_prompt_starts_collection() -> None:
    c = collector(inter_tone=5.0, prompt=True)
    c.tone("seven", 101.0)
    assert c.deadline() == 106.0
    c.prompt_done(102.0)  # prompt interrupted by the press: no initial silence any more
    assert c.deadline() == 106.0
    outcome = c.poll(106.0)
    assert outcome is not None
    assert (outcome.tones, outcome.sub_code) == (("seven",), 8532)


def test_prompt_done_twice_or_without_prompt_changes_nothing() -> None:
    c = collector(initial_silence=10.0, start=100.0, prompt=True)
    c.prompt_done(101.0)
    c.prompt_done(105.0)
    assert c.deadline() == 111.0
    plain = collector(initial_silence=10.0, start=100.0)
    plain.prompt_done(105.0)
    assert plain.deadline() == 110.0


def test_prompt_done_after_the_end_is_ignored() -> None:
    c = collector(max_tones=1, prompt=True)
    c.tone("one", 101.0)
    c.prompt_done(102.0)
    assert c.deadline() is None


# --- after the end, and races -------------------------------------------------------------


def test_tones_after_completion_are_ignored() -> None:
    c = collector(max_tones=2)
    c.tone("one", 101.0)
    outcome = c.tone("two", 102.0)
    assert c.tone("three", 102.1) is None
    assert c.tone("pound", 102.2) is None
    assert c.poll(1000.0) is None
    assert c.outcome is outcome
    assert c.tones == ("one", "two")


def test_tones_after_a_timeout_are_ignored() -> None:
    c = collector(initial_silence=2.0, start=100.0)
    assert c.poll(102.0) is not None
    assert c.tone("one", 102.5) is None
    assert c.tones == ()


def test_unpolled_deadline_beats_a_late_tone() -> None:
    # The press arrives after the deadline but before the timer fired: the timeout wins and
    # the press is dropped, as if the timer had fired first.
    c = collector(inter_tone=5.0)
    c.tone("one", 101.0)
    outcome = c.tone("two", 106.0)
    assert outcome is not None
    assert (outcome.tones, outcome.sub_code) == (("one",), 8532)
    assert c.tone("three", 106.1) is None


def test_unpolled_initial_silence_beats_a_stop_tone() -> None:
    c = collector(initial_silence=3.0, start=100.0)
    outcome = c.tone("pound", 103.0)
    assert outcome is not None
    assert (outcome.completed, outcome.sub_code) == (False, 8510)


def test_tone_just_before_the_deadline_counts() -> None:
    c = collector(initial_silence=3.0, start=100.0)
    assert c.tone("one", 102.999) is None
    assert c.tones == ("one",)


def test_unknown_tone_is_a_programming_error() -> None:
    c = collector()
    with pytest.raises(ValueError, match="not an ACS DtmfTone"):
        c.tone("#", 101.0)
    assert c.tones == ()
    assert c.outcome is None


def test_outcome_is_frozen() -> None:
    outcome = collector(max_tones=1).tone("one", 100.0)
    assert outcome is not None
    with pytest.raises(dataclasses.FrozenInstanceError):
        outcome.code = 500  # type: ignore[misc]


def test_a_full_sixteen_key_sequence() -> None:
    c = collector(max_tones=16, stop_tones=frozenset())
    outcomes = [c.tone(name, 100.0 + i * 0.5) for i, name in enumerate(DTMF_TONES)]
    assert outcomes[:-1] == [None] * 15
    last = outcomes[-1]
    assert last is not None
    assert last.tones == DTMF_TONES
