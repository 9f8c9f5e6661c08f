"""gateway.media.speakers: levels of known signals, the RFC 6464 level in RFC 8285 header
extensions, and ActiveSpeakers' selection and dominant-speaker rules, tick by tick.

The expected ticks follow from the smoothing (attack 0.5, release 0.05): a member talking at
L from silence is at L - (L + 127) / 2**n after n ticks; one falling silent from L is at
-127 + (L + 127) * 0.95**n.

Cost of ``ActiveSpeakers.update`` for a 50-member room with 3 talkers (max_mixed 8), measured
with ``timeit`` on the development machine (AMD EPYC, Python 3.11): about 40 us per tick.
"""

from __future__ import annotations

import random
import struct

import numpy as np
import numpy.typing as npt
import pytest

from gateway.media.rtp import RtpPacket
from gateway.media.speakers import ActiveSpeakers, audio_level, level_dbov

# --- level_dbov -------------------------------------------------------------------------------


def sine(amplitude: float, count: int = 1600, freq: float = 1000) -> npt.NDArray[np.int16]:
    t = np.arange(count) / 8000
    return np.round(amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def test_full_scale_square_wave_is_0_dbov() -> None:
    square = np.where(np.arange(160) % 2, 32767, -32768).astype(np.int16)
    assert level_dbov(square) == pytest.approx(0.0, abs=0.001)
    assert level_dbov(np.full(160, -32768, np.int16)) == 0.0


@pytest.mark.parametrize(("amplitude", "expected"), [(32767, -3.01), (3277, -23.01),
                                                     (328, -43.01), (1036, -33.01)])  # fmt: skip
def test_sine_levels(amplitude: float, expected: float) -> None:
    assert level_dbov(sine(amplitude)) == pytest.approx(expected, abs=0.05)


def test_silence_and_empty_are_the_floor() -> None:
    assert level_dbov(np.zeros(160, np.int16)) == -127.0
    assert level_dbov(np.zeros(0, np.int16)) == -127.0
    assert level_dbov(np.array([1], np.int16)) == pytest.approx(-90.31, abs=0.01)


# --- audio_level: RFC 6464 in RFC 8285 extensions ------------------------------------------------


def packet(profile: int, elements: bytes, csrc: tuple[int, ...] = ()) -> bytes:
    """An RTP packet with an extension block ``elements`` (zero-padded to a word)."""
    data = elements + b"\x00" * (-len(elements) % 4)
    return bytes(RtpPacket(111, 1, 2, 3, csrc=csrc, extension=(profile, data), payload=b"opus"))


# RFC 8285 section 4.2's one-byte example: ID 1 L=0, ID 2 L=1, two padding bytes, ID 3 L=3
ONE_BYTE = bytes([0x10, 0x85, 0x21, 0x3A, 0x3B, 0x00, 0x00, 0x33, 0x40, 0x41, 0x42, 0x43])
# RFC 8285 section 4.3's two-byte example: ID 1 L=0, ID 2 L=1, one padding byte, ID 3 L=4
TWO_BYTE = bytes([0x01, 0x00, 0x02, 0x01, 0x99, 0x00, 0x03, 0x04, 0xD0, 0xD1, 0xD2, 0xD3])
# pion/rtp's one-byte extension packet (packet_test.go): ID 5 L=0, data 0xAA (V=1, level 42)
PION_BEDE = bytes.fromhex("90e0698fd9c293da1c642782 bede000150aa0000 9836be889e")


def test_pion_packet() -> None:
    assert audio_level(PION_BEDE, 5) == 42
    assert audio_level(PION_BEDE, 1) is None


def test_rfc_8285_one_byte_example() -> None:
    data = packet(0xBEDE, ONE_BYTE)
    assert audio_level(data, 1) == 5  # L=0: one data byte, 0x85 (V=1, level 5)
    assert audio_level(data, 2) == 0x3A  # first data byte of a 2-byte element
    assert audio_level(data, 3) == 0x40  # after the two padding bytes
    assert audio_level(data, 4) is None  # absent


def test_rfc_8285_two_byte_example() -> None:
    data = packet(0x1000, TWO_BYTE)
    assert audio_level(data, 1) is None  # a zero-length element carries no level
    assert audio_level(data, 2) == 0x19  # 0x99: V=1, level 25
    assert audio_level(data, 3) == 0x50  # after the padding byte: 0xD0 & 0x7F
    assert audio_level(data, 9) is None
    assert audio_level(packet(0x100F, TWO_BYTE), 2) == 0x19  # the 4 "appbits" are free


def test_rfc_6464_element_with_csrcs_and_voice_bit() -> None:
    data = packet(0xBEDE, bytes([0x10, 0x80 | 45]), csrc=(7, 8, 9))
    assert audio_level(data, 1) == 45
    assert audio_level(packet(0xBEDE, bytes([0xA0, 127])), 10) == 127


def test_several_elements_with_padding_between() -> None:
    elements = bytes([0x00, 0x00, 0x21, 1, 2, 0x00, 0x10, 33, 0x00])
    assert audio_level(packet(0xBEDE, elements), 1) == 33
    assert audio_level(packet(0xBEDE, elements), 2) == 1


def test_id_15_stops_the_parse() -> None:
    assert audio_level(packet(0xBEDE, bytes([0xF0, 0x10, 0x22])), 1) is None


def test_wrong_profile_no_extension_bad_version() -> None:
    assert audio_level(packet(0xABCD, bytes([0x10, 40])), 1) is None
    plain = bytes(RtpPacket(111, 1, 2, 3, payload=b"\x10\x28\x00\x00opus"))
    assert audio_level(plain, 1) is None
    data = bytearray(packet(0xBEDE, bytes([0x10, 40])))
    assert audio_level(bytes(data), 1) == 40
    data[0] = (data[0] & 0x3F) | 0x40  # version 1
    assert audio_level(bytes(data), 1) is None


def test_element_running_past_the_block_is_malformed() -> None:
    data = bytearray(packet(0xBEDE, bytes([0x10, 40, 0x00, 0x33])))  # ID 3 L=3: 4 bytes, 0 left
    assert audio_level(bytes(data), 3) is None
    assert audio_level(bytes(data), 1) == 40
    two = packet(0x1000, bytes([0x05, 0x09, 0x01]))
    assert audio_level(two, 5) is None


def test_block_length_past_the_packet_is_malformed() -> None:
    data = bytearray(packet(0xBEDE, bytes([0x10, 40])))
    struct.pack_into("!H", data, 14, 50)
    assert audio_level(bytes(data), 1) is None


def test_every_truncation_and_random_bytes_never_raise() -> None:
    whole = packet(0xBEDE, ONE_BYTE, csrc=(1, 2))
    for end in range(len(whole) + 1):
        result = audio_level(whole[:end], 3)
        assert result is None or result == 0x40
    generator = random.Random(6464)
    for _ in range(3000):
        noise = bytes(generator.getrandbits(8) for _ in range(generator.randrange(40)))
        for data in (noise, b"\x90" + noise, b"\x90\x00" + bytes(10) + b"\xbe\xde" + noise):
            level = audio_level(data, generator.randrange(16))
            assert level is None or 0 <= level <= 127
    assert audio_level(memoryview(whole), 3) == 0x40  # type: ignore[arg-type]


# --- ActiveSpeakers ------------------------------------------------------------------------------


def run(
    speakers: ActiveSpeakers, members: list[str], levels: dict[str, float], ticks: int
) -> list[bool]:
    return [speakers.update(members, levels) for _ in range(ticks)]


def test_smoothing_attack_and_release() -> None:
    speakers = ActiveSpeakers(8)
    speakers.update(["a"], {"a": -27.0})
    assert speakers.smoothed("a") == pytest.approx(-77.0)  # -127 + 0.5 * 100
    speakers.update(["a"], {"a": -27.0})
    assert speakers.smoothed("a") == pytest.approx(-52.0)
    speakers.update(["a"], {})  # absent from levels: silent
    assert speakers.smoothed("a") == pytest.approx(-52.0 + 0.05 * -75.0)
    speakers.update(["a"], {"a": 10.0})  # clamped to 0 dBov
    assert speakers.smoothed("a") == pytest.approx((-55.75 + 0) / 2)
    assert speakers.smoothed("nobody") == -127.0


def test_everyone_selected_up_to_max_mixed() -> None:
    speakers = ActiveSpeakers(3)
    speakers.update(["a", "b", "c"], {"a": -30.0})
    assert speakers.selected == {"a", "b", "c"}
    assert speakers.ranking() == ["a", "b", "c"]  # a loudest, then join order


def test_silent_room_selects_in_join_order() -> None:
    speakers = ActiveSpeakers(2)
    speakers.update(["c", "a", "b"], {})
    assert speakers.selected == {"c", "a"}
    run(speakers, ["c", "a", "b"], {}, 10)
    assert speakers.selected == {"c", "a"}


def test_hysteresis_tick_by_tick() -> None:
    speakers = ActiveSpeakers(2)
    members = ["a", "b", "c"]
    run(speakers, members, {"a": -20.0, "b": -20.0}, 20)
    assert speakers.selected == {"a", "b"}
    # c talks as loud as a and b: never 3 dB above them, so it stays out
    run(speakers, members, {"a": -20.0, "b": -20.0, "c": -20.0}, 30)
    assert speakers.selected == {"a", "b"}
    # b stops: one tick of release takes it to -127 + 107 * 0.95 = -25.35, 5.35 dB under c
    speakers.update(members, {"a": -20.0, "c": -20.0})
    assert speakers.selected == {"a", "c"}
    assert speakers.ranking()[1] == "c"


def test_hysteresis_needs_3_db_not_2() -> None:
    speakers = ActiveSpeakers(1)
    run(speakers, ["a", "b"], {"a": -20.0}, 30)
    run(speakers, ["a", "b"], {"a": -20.0, "b": -17.5}, 30)  # 2.5 dB louder: not enough
    assert speakers.selected == {"a"}
    speakers.update(["a", "b"], {"a": -20.0, "b": -17.0})  # b's smoothed level moves to -17.25
    assert speakers.selected == {"a"}
    speakers.update(["a", "b"], {"a": -20.0, "b": -17.0})  # -17.125: not yet 3 dB
    assert speakers.selected == {"a"}
    run(speakers, ["a", "b"], {"a": -20.0, "b": -16.0}, 1)  # -16.56: 3.44 dB above a
    assert speakers.selected == {"b"}


def test_fifty_members_three_talk() -> None:
    members = [f"party{n}" for n in range(50)]
    talkers = {"party17": -25.0, "party33": -15.0, "party49": -20.0}
    speakers = ActiveSpeakers(8)
    run(speakers, members, talkers, 10)
    assert set(talkers) <= speakers.selected and len(speakers.selected) == 8
    assert speakers.ranking()[:3] == ["party33", "party49", "party17"]
    speakers.max_mixed = 3
    speakers.update(members, talkers)
    assert speakers.selected == set(talkers)
    assert speakers.dominant == "party33"


def test_dominant_appears_when_above_minus_60() -> None:
    speakers = ActiveSpeakers(8)
    # a at -20: -73.5 after one tick (under -60), -46.75 after two
    assert run(speakers, ["a", "b"], {"a": -20.0}, 3) == [False, True, False]
    assert speakers.dominant == "a"


def test_dominant_changes_after_15_ticks_3_db_louder() -> None:
    speakers = ActiveSpeakers(8)
    run(speakers, ["a", "b"], {"a": -20.0}, 30)
    assert speakers.dominant == "a"
    # b at -10 from silence: -68.5, -39.25, -24.6, -17.3, -13.7 (tick 5: >= -17), so 15
    # consecutive louder ticks end at tick 19
    changes = run(speakers, ["a", "b"], {"a": -20.0, "b": -10.0}, 25)
    assert changes.index(True) == 18 and changes.count(True) == 1
    assert speakers.dominant == "b"


def test_interrupted_challenge_starts_again() -> None:
    speakers = ActiveSpeakers(8)
    run(speakers, ["a", "b"], {"a": -20.0}, 30)
    both = {"a": -20.0, "b": -10.0}
    assert not any(run(speakers, ["a", "b"], both, 14))  # 10 louder ticks so far
    # a shouts for one tick (attack 0.5: -12.5): b is no longer 3 dB above, the count restarts
    assert not any(run(speakers, ["a", "b"], {"a": -5.0, "b": -10.0}, 1))
    assert speakers.smoothed("b") < speakers.smoothed("a") + 3
    changes = run(speakers, ["a", "b"], both, 30)
    assert changes.count(True) == 1 and changes.index(True) >= 15
    assert speakers.dominant == "b"


def test_dominant_leaving_changes_at_once() -> None:
    speakers = ActiveSpeakers(8)
    run(speakers, ["a", "b", "c"], {"a": -20.0, "b": -30.0}, 30)
    assert speakers.dominant == "a"
    assert speakers.update(["b", "c"], {"b": -30.0}) is True  # a muted or left
    assert speakers.dominant == "b"
    assert speakers.update(["c"], {}) is True  # b gone, c silent: nobody
    assert speakers.dominant is None
    assert speakers.update(["c"], {}) is False


def test_quiet_dominant_dropped_after_50_ticks_below_minus_60() -> None:
    speakers = ActiveSpeakers(8)
    run(speakers, ["a", "b"], {"a": -20.0}, 30)
    # silent from -20: -127 + 107 * 0.95**n is under -60 from n = 10; 50 such ticks end at 59
    changes = run(speakers, ["a", "b"], {}, 70)
    assert speakers.smoothed("a") < -60
    assert changes.index(True) == 58 and changes.count(True) == 1
    assert speakers.dominant is None


def test_quiet_dominant_replaced_by_the_one_above_minus_60() -> None:
    speakers = ActiveSpeakers(8)
    run(speakers, ["a", "b"], {"a": -20.0}, 30)
    run(speakers, ["a", "b"], {}, 40)  # a quiet (under -60 from tick 10)
    run(speakers, ["a", "b"], {"b": -62.0}, 5)  # b: still under -60
    assert speakers.dominant == "a"
    changes = run(speakers, ["a", "b"], {"b": -50.0}, 30)
    assert speakers.dominant == "b" and changes.count(True) == 1


def test_discard() -> None:
    speakers = ActiveSpeakers(2)
    members = ["a", "b", "c"]
    run(speakers, members, {"a": -20.0, "b": -25.0, "c": -40.0}, 30)
    assert speakers.selected == {"a", "b"} and speakers.dominant == "a"
    speakers.discard("a")
    assert speakers.selected == {"b"}
    assert speakers.update(["b", "c"], {"b": -25.0, "c": -40.0}) is True
    assert speakers.dominant == "b" and speakers.selected == {"b", "c"}
    speakers.discard("nobody")


def test_muted_member_starts_again_from_silence() -> None:
    speakers = ActiveSpeakers(8)
    run(speakers, ["a"], {"a": -20.0}, 30)
    speakers.update([], {})
    speakers.update(["a"], {"a": -20.0})
    assert speakers.smoothed("a") == pytest.approx(-73.5)


def test_max_mixed_lowered_keeps_the_loudest() -> None:
    speakers = ActiveSpeakers(4)
    levels = {"a": -40.0, "b": -10.0, "c": -30.0, "d": -20.0, "e": -50.0}
    run(speakers, list(levels), levels, 20)
    assert speakers.selected == {"b", "d", "c", "a"}
    speakers.max_mixed = 2
    speakers.update(list(levels), levels)
    assert speakers.selected == {"b", "d"}


def test_no_selection_churn_with_equal_levels() -> None:
    speakers = ActiveSpeakers(3)
    members = [f"p{n}" for n in range(10)]
    levels = dict.fromkeys(members, -30.0)
    seen = set()
    for _ in range(50):
        speakers.update(members, levels)
        seen.add(speakers.selected)
    assert seen == {frozenset({"p0", "p1", "p2"})}


@pytest.mark.parametrize("seed", range(5))
def test_invariants_under_random_traffic(seed: int) -> None:
    generator = random.Random(seed)
    speakers = ActiveSpeakers(4)
    everyone = [f"p{n}" for n in range(12)]
    for _ in range(400):
        members = [m for m in everyone if generator.random() < 0.9]
        levels = {m: generator.uniform(-90, 0) for m in members if generator.random() < 0.5}
        changed = speakers.dominant
        assert speakers.update(members, levels) == (speakers.dominant != changed)
        assert speakers.selected <= set(members)
        assert len(speakers.selected) == min(4, len(members))
        assert speakers.dominant is None or speakers.dominant in members
        ranking = speakers.ranking()
        assert set(ranking) == speakers.selected
        levels_ranked = [speakers.smoothed(m) for m in ranking]
        assert levels_ranked == sorted(levels_ranked, reverse=True)


def test_ranking_orders_ties_by_join_order() -> None:
    speakers = ActiveSpeakers(8)
    speakers.update(["x", "y", "z"], {"z": -20.0, "x": -30.0, "y": -30.0})
    assert speakers.ranking() == ["z", "x", "y"]
