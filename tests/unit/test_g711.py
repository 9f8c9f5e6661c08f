"""G.711 μ-law and A-law (ITU-T G.711) against the shared vectors, and the G.711 packet loss
concealment (G.711 Appendix I).

The vectors (``tests/vectors/g711_*.tsv``, loaded, never retyped) were produced with the Sun
Microsystems ``g711.c`` algorithm as CPython's ``audioop`` ports it; ``g711_notes.md`` says
how. Decoding must match all 256 codes of both laws exactly, encoding every spot check. When
``audioop`` is importable (Python 3.11 and 3.12) the encoders are also compared with it on all
65536 inputs.
"""

from __future__ import annotations

import importlib
import warnings
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from gateway.media.g711 import (
    G711Codec,
    alaw_decode,
    alaw_encode,
    ulaw_decode,
    ulaw_encode,
)
from gateway.media.plc import G711Plc

VECTORS = Path(__file__).resolve().parent.parent / "vectors"
ALL_INPUTS = np.arange(-32768, 32768, dtype=np.int16)


def load_tsv(name: str, header: list[str]) -> list[list[str]]:
    lines = (VECTORS / name).read_text(encoding="utf-8").splitlines()
    assert lines[0].split("\t") == header
    return [line.split("\t") for line in lines[1:] if line]


DECODE_ROWS = load_tsv(
    "g711_decode_table.tsv", ["code_hex", "ulaw_to_linear16", "alaw_to_linear16"]
)
ENCODE_ROWS = load_tsv(
    "g711_encode_spotchecks.tsv",
    ["linear16", "ulaw_code", "alaw_code", "ulaw_roundtrip", "alaw_roundtrip"],
)


def pcm(*samples: int) -> np.ndarray:
    return np.array(samples, dtype=np.int16)


def audioop_module() -> ModuleType | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return importlib.import_module("audioop")
        except ImportError:
            return None


# --- the vector files themselves ---------------------------------------------------------------


def test_decode_table_has_every_code_once() -> None:
    assert sorted(int(row[0], 16) for row in DECODE_ROWS) == list(range(256))


def test_spotchecks_cover_zero_small_negatives_and_full_scale() -> None:
    inputs = {int(row[0]) for row in ENCODE_ROWS}
    assert {0, -1, 32767, -32767, -32768} <= inputs


# --- decoding: exhaustive (G.711 tables 1a and 2a) ----------------------------------------------


def test_ulaw_decode_matches_every_code() -> None:
    codes = bytes(int(row[0], 16) for row in DECODE_ROWS)
    expected = [int(row[1]) for row in DECODE_ROWS]
    assert ulaw_decode(codes).tolist() == expected


def test_alaw_decode_matches_every_code() -> None:
    codes = bytes(int(row[0], 16) for row in DECODE_ROWS)
    expected = [int(row[2]) for row in DECODE_ROWS]
    assert alaw_decode(codes).tolist() == expected


@pytest.mark.parametrize("row", DECODE_ROWS, ids=lambda row: row[0])
def test_decode_row_by_row(row: list[str]) -> None:
    code = bytes([int(row[0], 16)])
    assert int(ulaw_decode(code)[0]) == int(row[1])
    assert int(alaw_decode(code)[0]) == int(row[2])


def test_decode_returns_int16_one_sample_per_octet() -> None:
    out = ulaw_decode(b"\xff" * 160)
    assert out.dtype == np.int16
    assert out.shape == (160,)
    assert alaw_decode(b"").shape == (0,)


def test_decode_accepts_bytearray_and_memoryview() -> None:
    data = bytes(range(256))
    assert ulaw_decode(bytearray(data)).tolist() == ulaw_decode(data).tolist()
    assert alaw_decode(memoryview(data)[10:20]).tolist() == alaw_decode(data[10:20]).tolist()


def test_decode_anchors_from_the_notes() -> None:
    # g711_notes.md: two μ-law zeros, ±32124 at the ends, ±8 next to zero; A-law has no zero.
    assert ulaw_decode(b"\xff\x7f\x80\x00\xfe\x7e").tolist() == [0, 0, 32124, -32124, 8, -8]
    assert alaw_decode(b"\xd5\x55\xaa\x2a").tolist() == [8, -8, 32256, -32256]


# --- encoding: spot checks ------------------------------------------------------------------


@pytest.mark.parametrize("row", ENCODE_ROWS, ids=lambda row: row[0])
def test_encode_spotcheck(row: list[str]) -> None:
    linear, ulaw_code, alaw_code, ulaw_back, alaw_back = row
    sample = pcm(int(linear))
    assert ulaw_encode(sample) == bytes([int(ulaw_code, 16)])
    assert alaw_encode(sample) == bytes([int(alaw_code, 16)])
    assert int(ulaw_decode(ulaw_encode(sample))[0]) == int(ulaw_back)
    assert int(alaw_decode(alaw_encode(sample))[0]) == int(alaw_back)


def test_encode_many_spotchecks_at_once() -> None:
    samples = pcm(*(int(row[0]) for row in ENCODE_ROWS))
    assert ulaw_encode(samples) == bytes(int(row[1], 16) for row in ENCODE_ROWS)
    assert alaw_encode(samples) == bytes(int(row[2], 16) for row in ENCODE_ROWS)


def test_small_negative_inputs_pin_the_arithmetic_shift() -> None:
    # The notes allow 0x7E or 0x7F for -1 … -4; this encoder pins the Sun/audioop answer.
    assert ulaw_encode(pcm(-1, -2, -3, -4)) == b"\x7e" * 4
    assert alaw_encode(pcm(-1, -2, -3, -4)) == b"\x55" * 4


def test_full_scale_saturates_and_does_not_wrap() -> None:
    assert ulaw_encode(pcm(32767, -32767, -32768)) == b"\x80\x00\x00"
    assert alaw_encode(pcm(32767, -32767, -32768)) == b"\xaa\x2a\x2a"


# --- round trips over all codes and all inputs ---------------------------------------------------


def test_ulaw_encode_decode_is_idempotent_on_every_code() -> None:
    codes = bytes(range(256))
    back = ulaw_encode(ulaw_decode(codes))
    # 0x7F (negative zero) comes back as 0xFF (positive zero); every other code is itself.
    expected = bytes(0xFF if code == 0x7F else code for code in codes)
    assert back == expected


def test_alaw_encode_decode_is_idempotent_on_every_code() -> None:
    codes = bytes(range(256))
    assert alaw_encode(alaw_decode(codes)) == codes


def test_encoders_are_monotonic_over_all_inputs() -> None:
    for encode, decode in ((ulaw_encode, ulaw_decode), (alaw_encode, alaw_decode)):
        decoded = decode(encode(ALL_INPUTS)).astype(np.int32)
        assert np.all(np.diff(decoded) >= 0)


def test_quantisation_error_is_about_half_a_step_over_the_unclipped_range() -> None:
    x = ALL_INPUTS.astype(np.int32)
    inside = np.abs(x) <= 32000
    u = ulaw_decode(ulaw_encode(ALL_INPUTS)).astype(np.int32)
    a = alaw_decode(alaw_encode(ALL_INPUTS)).astype(np.int32)
    # The top segment's step is 1024 linear units: the error stays near half of it (μ-law's
    # bias and the 2-bit truncation before it add a few units).
    assert int(np.max(np.abs(u - x)[inside])) <= 520
    assert int(np.max(np.abs(a - x)[inside])) <= 512
    small = np.abs(x) < 100
    assert int(np.max(np.abs(u - x)[small])) <= 8
    assert int(np.max(np.abs(a - x)[small])) <= 8


def test_encoders_match_audioop_on_every_input() -> None:
    audioop = audioop_module()
    if audioop is None:
        pytest.skip("audioop is gone (Python 3.13 and later)")
    raw = ALL_INPUTS.tobytes()
    assert ulaw_encode(ALL_INPUTS) == audioop.lin2ulaw(raw, 2)
    assert alaw_encode(ALL_INPUTS) == audioop.lin2alaw(raw, 2)


# --- input handling --------------------------------------------------------------------------


def test_encode_returns_one_octet_per_sample() -> None:
    frame = np.zeros(160, dtype=np.int16)
    assert ulaw_encode(frame) == b"\xff" * 160
    assert alaw_encode(frame) == b"\xd5" * 160
    assert ulaw_encode(np.zeros(0, dtype=np.int16)) == b""


def test_encode_takes_views_and_slices() -> None:
    frame = np.arange(-800, 800, 5, dtype=np.int16)
    assert ulaw_encode(frame[::2]) == ulaw_encode(frame[::2].copy())
    assert alaw_encode(frame.reshape(20, 16)) == alaw_encode(frame)


@pytest.mark.parametrize("bad", [np.zeros(4, dtype=np.int32), np.zeros(4), [0, 1, 2]])
def test_encode_refuses_anything_but_int16(bad: object) -> None:
    with pytest.raises(TypeError, match="int16"):
        ulaw_encode(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="int16"):
        alaw_encode(bad)  # type: ignore[arg-type]


def test_decoded_arrays_are_independent_of_the_tables() -> None:
    out = ulaw_decode(b"\x00")
    out[0] = 1
    assert int(ulaw_decode(b"\x00")[0]) == -32124


# --- the codec object ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "payload_type", "encode", "decode"),
    [("PCMU", 0, ulaw_encode, ulaw_decode), ("PCMA", 8, alaw_encode, alaw_decode)],
)
def test_codec_wraps_the_law(name: str, payload_type: int, encode: object, decode: object) -> None:
    codec = G711Codec(name)  # type: ignore[arg-type]
    assert codec.name == name
    assert codec.payload_type == payload_type
    assert codec.clock == 8000
    frame = (8000 * np.sin(2 * np.pi * 440 * np.arange(160) / 8000)).astype(np.int16)
    payload = codec.encode(frame)
    assert len(payload) == 160
    assert payload == encode(frame)  # type: ignore[operator]
    assert codec.decode(payload).tolist() == decode(payload).tolist()  # type: ignore[operator]


def test_codec_refuses_other_names() -> None:
    with pytest.raises(ValueError, match="PCMU or PCMA"):
        G711Codec("G722")  # type: ignore[arg-type]


def test_codec_round_trip_keeps_a_tone() -> None:
    t = np.arange(1600) / 8000
    tone = (10000 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16)
    for name in ("PCMU", "PCMA"):
        codec = G711Codec(name)  # type: ignore[arg-type]
        back = codec.decode(codec.encode(tone)).astype(np.float64)
        noise = back - tone
        snr = 10 * np.log10(np.sum(tone.astype(np.float64) ** 2) / np.sum(noise**2))
        assert snr > 30  # G.711 gives about 38 dB on a loud tone


# --- packet loss concealment (G.711 Appendix I, gateway.media.plc) ---------------------------


def sine(freq: float, samples: int, amplitude: float = 8000.0, rate: int = 8000) -> np.ndarray:
    return (amplitude * np.sin(2 * np.pi * freq * np.arange(samples) / rate)).astype(np.int16)


def primed(signal: np.ndarray, frames: int, rate: int = 8000) -> G711Plc:
    """A PLC that has been fed ``frames`` good 20 ms frames of ``signal``."""
    plc, size = G711Plc(rate), rate // 50
    for i in range(frames):
        assert plc.good(signal[i * size : (i + 1) * size]) is not None
    return plc


def block_rms(pcm: np.ndarray, block: int = 80) -> list[float]:
    x = pcm.astype(np.float64)
    return [float(np.sqrt(np.mean(x[i : i + block] ** 2))) for i in range(0, len(x), block)]


def max_step(pcm: np.ndarray) -> int:
    return int(np.max(np.abs(np.diff(pcm.astype(np.int32)))))


def test_plc_keeps_48_75_ms_of_history() -> None:
    assert G711Plc().history_ms == pytest.approx(48.75)
    assert G711Plc(16000).history_ms == pytest.approx(48.75)


@pytest.mark.parametrize("samples", [160, 80, 1, 37, 320, 1000])
def test_plc_lost_gives_the_length_asked(samples: int) -> None:
    plc = primed(sine(200, 1600), 10)
    out = plc.lost(samples)
    assert out.dtype == np.int16
    assert out.shape == (samples,)
    assert plc.concealing


def test_plc_lost_zero_and_negative() -> None:
    plc = G711Plc()
    assert plc.lost(0).shape == (0,)
    assert not plc.concealing
    with pytest.raises(ValueError):
        plc.lost(-1)


def test_plc_good_returns_the_frame_untouched_without_a_loss() -> None:
    plc = G711Plc()
    frame = sine(300, 160)
    assert plc.good(frame) is frame
    with pytest.raises(TypeError, match="int16"):
        plc.good(frame.astype(np.float64))  # type: ignore[arg-type]


def test_plc_rejects_rates_that_are_not_multiples_of_8000() -> None:
    with pytest.raises(ValueError):
        G711Plc(11025)


def test_plc_before_any_good_frame_is_silence() -> None:
    assert not np.any(G711Plc().lost(160))


@pytest.mark.parametrize(("freq", "period"), [(100.0, 80), (200.0, 40), (8000 / 120, 120)])
def test_plc_finds_the_pitch_period(freq: float, period: int) -> None:
    plc = primed(sine(freq, 1600), 10)
    plc.lost(160)
    assert plc.pitch % period == 0  # the period or a multiple of it within 5..15 ms
    assert 40 <= plc.pitch <= 120


@pytest.mark.parametrize("freq", [100.0, 150.0, 200.0, 333.0, 1000.0])
def test_plc_continues_a_periodic_signal_without_a_click(freq: float) -> None:
    signal = sine(freq, 2400)
    plc = primed(signal, 10)
    out = plc.lost(80)  # the first 10 ms, before any attenuation
    truth = signal[1600:1680]
    assert np.corrcoef(out.astype(np.float64), truth.astype(np.float64))[0, 1] > 0.99
    joined = np.concatenate([signal[1500:1600], out])
    assert max_step(joined) <= max_step(signal) + 50


def test_plc_attenuates_20_percent_per_10_ms_after_the_first_10_ms() -> None:
    signal = sine(200, 1600)
    plc = primed(signal, 10)
    out = np.concatenate([plc.lost(160) for _ in range(5)])  # 100 ms
    level = block_rms(signal[:800])[0]
    ratios = [r / level for r in block_rms(out)]
    # mean gain per 10 ms block: 1, then a ramp 1 -> 0 from 10 to 60 ms, then 0
    expected = [1.0, 0.9, 0.7, 0.5, 0.3, 0.1, 0.0, 0.0, 0.0, 0.0]
    assert ratios == pytest.approx(expected, abs=0.04)
    assert not np.any(out[480:])  # silent from 60 ms


def test_plc_output_does_not_depend_on_how_the_loss_is_cut_into_calls() -> None:
    signal = sine(180, 1600)
    whole = primed(signal, 10).lost(560)
    by_frames = primed(signal, 10)
    framed = np.concatenate([by_frames.lost(160) for _ in range(3)] + [by_frames.lost(80)])
    by_odd = primed(signal, 10)
    odd = np.concatenate([by_odd.lost(n) for n in (1, 79, 81, 13, 200, 186)])
    assert whole.tolist() == framed.tolist() == odd.tolist()


def test_plc_grows_the_repeated_segment_to_two_then_three_periods() -> None:
    # three pitch periods of 10 ms (100 Hz) with amplitudes 4, 2 and 1: the first 10 ms of a
    # loss repeat the last (1), the next 10 ms reach back to the one before (2), then to the
    # oldest (4), each scaled by the attenuation ramp
    base = sine(100, 80, amplitude=2000.0)
    signal = np.concatenate([np.tile(base * 4, 3), base * 4, base * 2, base]).astype(np.int16)
    plc = G711Plc()
    plc.good(signal)
    out = plc.lost(240)
    levels = block_rms(out)
    unit = block_rms(base)[0]
    # (the last quarter period of the repeated one is cross-faded with the one before it)
    assert levels[0] / unit == pytest.approx(1.0, abs=0.15)
    assert levels[1] / unit / 0.9 == pytest.approx(2.0, abs=0.25)
    assert levels[2] / unit / 0.7 == pytest.approx(4.0, abs=0.5)


def test_plc_smooths_the_junction_into_the_first_good_frame() -> None:
    signal = sine(200, 2400)
    plc = primed(signal, 10)
    concealed = plc.lost(160)
    # the real signal comes back a quarter period out of step: a hard cut would jump
    back = np.roll(signal[1760:1920], 10)
    played = plc.good(back)
    assert played is not back
    hard_jump = abs(int(back[0]) - int(concealed[-1]))
    soft_jump = abs(int(played[0]) - int(concealed[-1]))
    assert soft_jump < hard_jump / 4
    overlap = plc.pitch // 4 + 32  # a quarter period, plus 4 ms for the second 10 ms lost
    assert played[overlap:].tolist() == back[overlap:].tolist()
    assert played[: overlap - 1].tolist() != back[: overlap - 1].tolist()


def test_plc_fades_in_after_a_loss_longer_than_60_ms() -> None:
    signal = sine(200, 2400)
    plc = primed(signal, 10)
    plc.lost(640)
    back = signal[2240:2400]
    played = plc.good(back)
    assert abs(int(played[0])) < 200  # from silence
    assert played[80:].tolist() == back[80:].tolist()  # a 10 ms fade, then the real signal
    assert not plc.concealing


def test_plc_conceals_again_after_recovering() -> None:
    low, high = sine(100, 1600), sine(250, 1600)
    plc = primed(low, 10)
    plc.lost(160)
    for i in range(10):
        plc.good(high[i * 160 : (i + 1) * 160])
    plc.lost(160)
    assert plc.pitch % 32 == 0  # 250 Hz: the new pitch, from the new history


def test_plc_at_16_khz() -> None:
    signal = sine(200, 4800, rate=16000)
    plc = primed(signal, 10, rate=16000)
    out = plc.lost(320)
    assert out.shape == (320,)
    assert np.corrcoef(out[:160].astype(float), signal[3200:3360].astype(float))[0, 1] > 0.99


def test_plc_noise_is_concealed_at_the_same_level() -> None:
    rng = np.random.default_rng(5)
    noise = (3000 * rng.standard_normal(1600)).astype(np.int16)
    plc = primed(noise, 10)
    out = plc.lost(80)
    assert 0.5 < block_rms(out)[0] / block_rms(noise, 1600)[0] < 1.5


def test_plc_is_cheap_per_frame() -> None:
    import time

    signal = sine(150, 160 * 400)
    plc = G711Plc()
    started = time.perf_counter()
    for i in range(400):
        frame = signal[i * 160 : (i + 1) * 160]
        if i % 4 == 3:
            plc.lost(160)
        else:
            plc.good(frame)
    per_frame = (time.perf_counter() - started) / 400
    assert per_frame < 0.002  # generous: the budget is a small part of 20 ms
