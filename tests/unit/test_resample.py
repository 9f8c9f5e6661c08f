"""gateway.media.resample: the streaming Resampler (per 20 ms frame) and whole-buffer resample.

Tones go through every ratio frame by frame: the frequency (FFT peak) and the level stay, the
frames join exactly as one whole-buffer call would, tones above the new Nyquist are gone, and
a round trip through the higher rate gives the signal back (delayed by the filter).

Cost of one ``Resampler.process`` of a 20 ms frame, measured on the development machine (AMD
EPYC, 2 cores, NumPy 2.4 with OpenBLAS; ``timeit``, best of 5 x 20,000 calls, warm plan):

    8000 -> 16000   160 -> 320 samples    5.1 us
    16000 -> 8000   320 -> 160            5.2 us
    16000 -> 48000  320 -> 960            7.1 us
    48000 -> 16000  960 -> 320            6.6 us
    8000 -> 48000   160 -> 960            7.0 us
    48000 -> 8000   960 -> 160            7.0 us

(the budget is 25 us for 160 <-> 320). To measure again:

    .venv/bin/python -m timeit -s "import numpy as np; from gateway.media.resample import \
Resampler; r = Resampler(8000, 16000); x = np.zeros(160, np.int16); r.process(x)" "r.process(x)"
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from gateway.media.resample import Resampler, resample

Pcm = npt.NDArray[np.int16]

RATIOS = [(8000, 16000), (16000, 8000), (16000, 48000), (48000, 16000), (8000, 48000),
          (48000, 8000)]  # fmt: skip
TAPS = 76  # filter taps per phase of the lower rate (resample._TAPS)


def tone(freq: float, rate: int, seconds: float = 0.5, amplitude: float = 10000.0) -> Pcm:
    t = np.arange(int(rate * seconds)) / rate
    return np.round(amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def frames(resampler: Resampler, pcm: Pcm, size: int) -> Pcm:
    return np.concatenate([resampler.process(pcm[i : i + size]) for i in range(0, len(pcm), size)])


def peak_hz(pcm: Pcm, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64) * np.hanning(len(pcm))))
    return float(np.argmax(spectrum) * rate / len(pcm))


def rms(pcm: Pcm) -> float:
    samples = pcm.astype(np.float64)
    return float(np.sqrt(np.mean(samples**2)))


def db(ratio: float) -> float:
    return float(20 * np.log10(max(ratio, 1e-12)))


# --- the streaming resampler ------------------------------------------------------------------


@pytest.mark.parametrize(("src", "dst"), RATIOS)
def test_1khz_tone_keeps_frequency_and_level_frame_by_frame(src: int, dst: int) -> None:
    pcm = tone(1000, src)
    out = frames(Resampler(src, dst), pcm, src // 50)
    assert out.dtype == np.int16
    assert len(out) == len(pcm) * dst // src
    steady = out[len(out) // 10 :]  # past the filter's start-up
    assert abs(peak_hz(steady, dst) - 1000) <= 5
    assert abs(db(rms(steady) / rms(pcm))) < 0.5


@pytest.mark.parametrize(("src", "dst"), RATIOS)
def test_frames_join_as_one_whole_call(src: int, dst: int) -> None:
    rng = np.random.default_rng(7)
    pcm = (rng.standard_normal(src // 5) * 6000).astype(np.int16)
    whole = Resampler(src, dst).process(pcm)
    by_frame = frames(Resampler(src, dst), pcm, src // 50)
    group = max(1, src // dst)
    mixed = Resampler(src, dst)  # changing call lengths (each length has its own plan)
    sizes = [group * n for n in (1, 7, 30, 3, 50, 2, 11)]
    parts: list[Pcm] = []
    start = 0
    while start < len(pcm):
        size = sizes[len(parts) % len(sizes)]
        parts.append(mixed.process(pcm[start : start + size]))
        start += size
    # float32 sums in another order may round a sample the other way: at most 1 LSB apart
    assert np.abs(by_frame.astype(int) - whole).max() <= 1
    assert np.abs(np.concatenate(parts).astype(int) - whole).max() <= 1


def test_no_click_at_frame_edges() -> None:
    # a low tone changes little from one output sample to the next: a discontinuity at a
    # frame edge would be a jump far above that
    out = frames(Resampler(8000, 16000), tone(200, 8000), 160)[200:]
    steps = np.abs(np.diff(out.astype(int)))
    limit = 10000 * 2 * np.pi * 200 / 16000 + 2
    assert steps.max() <= limit


@pytest.mark.parametrize(
    ("src", "dst", "freq"),
    [(16000, 8000, 4200), (16000, 8000, 6000), (48000, 16000, 8400), (48000, 16000, 15000),
     (48000, 8000, 4200), (48000, 8000, 11000), (48000, 8000, 23000)],
)  # fmt: skip
def test_tone_above_the_new_nyquist_is_attenuated_50_db(src: int, dst: int, freq: int) -> None:
    pcm = tone(freq, src)
    out = frames(Resampler(src, dst), pcm, src // 50)[len(pcm) * dst // src // 10 :]
    assert db(rms(out) / rms(pcm)) < -50


@pytest.mark.parametrize(("src", "dst"), [(8000, 16000), (16000, 48000), (8000, 48000)])
def test_going_up_leaves_no_image_above_the_old_nyquist(src: int, dst: int) -> None:
    out = frames(Resampler(src, dst), tone(3000, src, 1.0), src // 50)[dst // 10 :]
    spectrum = np.abs(np.fft.rfft(out.astype(np.float64) * np.kaiser(len(out), 14)))
    freqs = np.fft.rfftfreq(len(out), 1 / dst)
    image = spectrum[freqs >= src / 2].max()
    assert db(image / spectrum.max()) < -55


@pytest.mark.parametrize("low", [8000, 16000])
def test_round_trip_through_48khz_has_snr_above_40_db(low: int) -> None:
    rng = np.random.default_rng(3)
    t = np.arange(low) / low
    freqs = np.array([200, 700, 1300, 2100, 3100]) * (low // 8000)
    signal = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 6.3)) for f in freqs)
    pcm = np.round(3000 * signal).astype(np.int16)
    up, down = Resampler(low, 48000), Resampler(48000, low)
    back = np.concatenate(
        [down.process(up.process(pcm[i : i + low // 50])) for i in range(0, low, low // 50)]
    )
    delay = TAPS - 1  # both filters together: exactly TAPS - 1 samples of the lower rate
    original = pcm[: len(pcm) - delay].astype(np.float64)
    error = back[delay:].astype(np.float64) - original
    skip = 2 * TAPS  # the start-up of both filters
    snr = 10 * np.log10(np.sum(original[skip:] ** 2) / np.sum(error[skip:] ** 2))
    assert snr > 40


@pytest.mark.parametrize(("src", "dst"), RATIOS)
def test_output_length_is_exactly_the_ratio(src: int, dst: int) -> None:
    resampler = Resampler(src, dst)
    group = max(1, src // dst)
    for count in (0, 1, 2, 5, 160, 161, 320, 960, 1234):
        pcm = np.zeros(count * group, np.int16)
        assert len(resampler.process(pcm)) == count * group * dst // src


@pytest.mark.parametrize(("src", "dst", "count"), [(16000, 8000, 161), (48000, 16000, 322),
                                                   (48000, 8000, 963)])  # fmt: skip
def test_length_not_a_multiple_of_the_input_group_is_refused(
    src: int, dst: int, count: int
) -> None:
    with pytest.raises(ValueError, match="not a multiple"):
        Resampler(src, dst).process(np.zeros(count, np.int16))


@pytest.mark.parametrize(("src", "dst"), [(8000, 44100), (44100, 8000), (8000, 32000),
                                          (16000, 24000), (0, 8000), (8000, -16000)])  # fmt: skip
def test_other_ratios_are_refused(src: int, dst: int) -> None:
    with pytest.raises(ValueError):
        Resampler(src, dst)


def test_same_rate_is_a_copy() -> None:
    pcm = tone(1000, 16000, 0.02)
    out = Resampler(16000, 16000).process(pcm)
    assert np.array_equal(out, pcm) and out is not pcm


def test_full_scale_square_wave_saturates_instead_of_wrapping() -> None:
    square = np.where(np.arange(4800) // 40 % 2, 32767, -32768).astype(np.int16)
    for src, dst in ((48000, 16000), (16000, 48000)):
        pcm = square[: len(square) * src // 48000]
        out = frames(Resampler(src, dst), pcm, src // 50)[dst // 100 :]
        assert out.max() == 32767 and out.min() == -32768  # the Gibbs overshoot, clipped
        assert np.mean(np.abs(out.astype(int))) > 28000  # not wrapped to small values


def test_reset_starts_again_from_silence() -> None:
    pcm = tone(1000, 16000, 0.1)
    resampler = Resampler(16000, 8000)
    first = frames(resampler, pcm, 320)
    resampler.reset()
    assert np.array_equal(frames(resampler, pcm, 320), first)


def test_outputs_are_not_reused_buffers() -> None:
    resampler = Resampler(8000, 16000)
    first = resampler.process(tone(1000, 8000, 0.02))
    kept = first.copy()
    resampler.process(tone(3000, 8000, 0.02))
    assert np.array_equal(first, kept)


# --- whole buffers (prompts) --------------------------------------------------------------------


@pytest.mark.parametrize(("src", "dst"), [(8000, 16000), (16000, 48000), (44100, 16000),
                                          (22050, 48000), (8000, 44100)])  # fmt: skip
def test_resample_keeps_a_tone(src: int, dst: int) -> None:
    pcm = tone(1000, src, 1.0)
    out = resample(pcm, src, dst)
    assert len(out) == len(pcm) * dst // src
    inner = out[dst // 100 : -dst // 100]
    assert abs(peak_hz(inner, dst) - 1000) <= 5
    assert abs(db(rms(inner) / rms(pcm))) < 0.2


def test_resample_same_rate_is_a_copy() -> None:
    pcm = tone(500, 8000, 0.1)
    out = resample(pcm, 8000, 8000)
    assert np.array_equal(out, pcm) and out is not pcm


def test_resample_refuses_rates_that_are_not_positive() -> None:
    with pytest.raises(ValueError):
        resample(np.zeros(10, np.int16), 0, 8000)
