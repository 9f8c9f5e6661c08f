"""Audio checks for interop tests: did a clean tone of the right frequency arrive?

- :func:`read_wav` reads a PCM WAV (what baresip's ``sndfile`` filter writes: 16-bit
  little-endian, mono at 8 kHz for G.711, stereo at 48 kHz for opus) into floats in [-1, 1],
  stereo mixed down to mono. A WAV whose header sizes were never finalised (the writer was
  killed before closing it) is read up to the end of the file.
- :func:`dominant_frequency`: Hann-windowed FFT, peak bin refined by parabolic interpolation
  on the log magnitude (accurate to a small fraction of a bin for a pure tone).
- :func:`tone_power_ratio`: the fraction of the signal's energy (DC removed) within ±20 Hz of
  a frequency: near 1 for a clean tone, small for noise, silence-with-clicks or another tone.
- :func:`analyse_tone` / :func:`assert_tone`: both, plus level and how many seconds of the
  recording hold the tone (0.5 s segments), with a message that says what was found.
"""

from __future__ import annotations

import math
import struct
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

#: Below this RMS (dBFS) a segment counts as silence.
SILENCE_DBFS = -50.0


class WavFormatError(ValueError):
    """The file is not a PCM WAV this module can read."""


def _samples_from_bytes(raw: bytes, width: int, channels: int) -> npt.NDArray[np.float64]:
    usable = len(raw) - len(raw) % (width * channels)
    raw = raw[:usable]
    if width == 1:  # unsigned 8-bit
        data = (np.frombuffer(raw, dtype=np.uint8).astype(np.float64) - 128.0) / 128.0
    elif width == 2:
        data = np.frombuffer(raw, dtype="<i2").astype(np.float64) / 32768.0
    elif width == 3:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        ints = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        ints = np.where(ints >= 1 << 23, ints - (1 << 24), ints)
        data = ints.astype(np.float64) / float(1 << 23)
    elif width == 4:
        data = np.frombuffer(raw, dtype="<i4").astype(np.float64) / float(1 << 31)
    else:
        raise WavFormatError(f"unsupported sample width {width} bytes")
    return data.reshape(-1, channels)


def _read_riff_raw(path: Path) -> tuple[int, int, int, bytes]:
    """(rate, channels, sample width, data bytes) by walking the RIFF chunks by hand; the
    ``data`` chunk runs to the end of the file when its size is 0 or too large (a WAV whose
    writer never updated the header)."""
    blob = path.read_bytes()
    if len(blob) < 12 or blob[:4] != b"RIFF" or blob[8:12] != b"WAVE":
        raise WavFormatError(f"{path}: not a RIFF/WAVE file")
    pos = 12
    fmt: tuple[int, int, int, int] | None = None
    while pos + 8 <= len(blob):
        chunk_id, size = blob[pos : pos + 4], struct.unpack("<I", blob[pos + 4 : pos + 8])[0]
        body = pos + 8
        if chunk_id == b"fmt ":
            tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", blob[body : body + 16])
            fmt = (tag, channels, rate, bits)
        elif chunk_id == b"data":
            if fmt is None:
                raise WavFormatError(f"{path}: data chunk before fmt chunk")
            tag, channels, rate, bits = fmt
            if tag not in (1, 0xFFFE):
                raise WavFormatError(f"{path}: not PCM (format tag {tag:#x})")
            end = len(blob) if size == 0 or body + size > len(blob) else body + size
            return rate, channels, (bits + 7) // 8, blob[body:end]
        pos = body + size + (size & 1)
    raise WavFormatError(f"{path}: no data chunk")


def read_wav(path: str | Path, *, mono: bool = True) -> tuple[int, FloatArray]:
    """(sample rate, samples) of a PCM WAV, samples as float64 in [-1, 1).

    With ``mono`` (the default) the channels are averaged into shape ``(n,)``; otherwise the
    shape is ``(n, channels)``. Uses the stdlib :mod:`wave`; falls back to reading the RIFF
    chunks by hand when the header's sizes are unfinished (0, or beyond the file's end)."""
    path = Path(path)
    try:
        with wave.open(str(path), "rb") as wav:
            rate, channels, width = wav.getframerate(), wav.getnchannels(), wav.getsampwidth()
            nframes = wav.getnframes()
            raw = wav.readframes(nframes)
        complete = nframes > 0 and len(raw) == nframes * channels * width
    except (wave.Error, EOFError, struct.error):
        complete = False
    if not complete:
        rate, channels, width, raw = _read_riff_raw(path)
    if channels < 1 or rate < 1:
        raise WavFormatError(f"{path}: {channels} channels at {rate} Hz")
    frames = _samples_from_bytes(raw, width, channels)
    if mono:
        return rate, frames.mean(axis=1)
    return rate, frames


def _skip(samples: FloatArray, rate: int, skip_seconds: float) -> FloatArray:
    data = np.asarray(samples, dtype=np.float64)
    if data.ndim == 2:
        data = data.mean(axis=1)
    return data[round(skip_seconds * rate) :]


def _power_spectrum(data: FloatArray) -> FloatArray:
    """|FFT|² of the Hann-windowed, DC-removed signal."""
    data = data - data.mean()
    spectrum = np.fft.rfft(data * np.hanning(len(data)))
    return np.asarray(spectrum.real**2 + spectrum.imag**2, dtype=np.float64)


def dominant_frequency(samples: FloatArray, rate: int, skip_seconds: float = 0.5) -> float:
    """The frequency (Hz) of the strongest spectral peak after the first ``skip_seconds``
    (codec start-up, jitter-buffer fill). Hann window, parabolic interpolation of the peak
    on the log magnitude. ValueError when fewer than 64 samples remain or all are equal."""
    data = _skip(samples, rate, skip_seconds)
    if len(data) < 64:
        raise ValueError(
            f"{len(data)} samples after skipping {skip_seconds:g} s at {rate} Hz: too short"
        )
    power = _power_spectrum(data)
    power[0] = 0.0  # DC
    k = int(np.argmax(power))
    if power[k] <= 0.0:
        raise ValueError("silent signal: no spectral peak")
    offset = 0.0
    if 0 < k < len(power) - 1:
        floor = power[k] * 1e-12
        a, b, c = (math.log(max(float(v), floor)) for v in power[k - 1 : k + 2])
        denominator = a - 2.0 * b + c
        if denominator < 0.0:
            offset = 0.5 * (a - c) / denominator
    return (k + offset) * rate / len(data)


def tone_power_ratio(
    samples: FloatArray,
    rate: int,
    hz: float,
    *,
    bandwidth_hz: float = 20.0,
    skip_seconds: float = 0.5,
) -> float:
    """The fraction (0..1) of the signal's energy, DC removed, within ±``bandwidth_hz`` of
    ``hz`` (Hann-windowed power spectrum, after the first ``skip_seconds``). 0.0 for
    silence."""
    data = _skip(samples, rate, skip_seconds)
    if len(data) < 64:
        raise ValueError(
            f"{len(data)} samples after skipping {skip_seconds:g} s at {rate} Hz: too short"
        )
    power = _power_spectrum(data)
    total = float(power.sum())
    if total <= 0.0:
        return 0.0
    freqs = np.fft.rfftfreq(len(data), d=1.0 / rate)
    band = np.abs(freqs - hz) <= bandwidth_hz
    return float(power[band].sum()) / total


def rms_dbfs(samples: FloatArray) -> float:
    """RMS level in dB relative to full scale (a full-scale sine is -3 dBFS); -inf for
    digital silence."""
    data = np.asarray(samples, dtype=np.float64)
    if data.size == 0:
        return float("-inf")
    rms = float(np.sqrt(np.mean(data**2)))
    return 20.0 * math.log10(rms) if rms > 0.0 else float("-inf")


@dataclass(frozen=True)
class ToneReport:
    """What :func:`analyse_tone` found in one recording."""

    path: Path
    expected_hz: float
    rate: int
    duration_s: float
    skip_seconds: float
    dominant_hz: float
    ratio: float
    level_dbfs: float
    #: Dominant frequency of each ``segment_s`` segment after the skip (nan: silent segment).
    segment_hz: tuple[float, ...]
    segment_s: float
    tolerance_hz: float

    @property
    def tone_seconds(self) -> float:
        """Seconds of segments whose dominant frequency is within tolerance."""
        hits = sum(1 for f in self.segment_hz if abs(f - self.expected_hz) <= self.tolerance_hz)
        return hits * self.segment_s

    def describe(self) -> str:
        segments = ", ".join("silent" if math.isnan(f) else f"{f:.0f}" for f in self.segment_hz)
        return (
            f"{self.path}: {self.duration_s:.2f} s at {self.rate} Hz; after skipping "
            f"{self.skip_seconds:g} s: dominant {self.dominant_hz:.1f} Hz (expected "
            f"{self.expected_hz:g} ±{self.tolerance_hz:g}), {self.ratio:.1%} of the energy "
            f"within ±20 Hz of {self.expected_hz:g} Hz, level {self.level_dbfs:.1f} dBFS, "
            f"{self.tone_seconds:.1f} s of tone; per {self.segment_s:g} s segment (Hz): "
            f"[{segments}]"
        )


def analyse_tone(
    path: str | Path,
    hz: float,
    *,
    tolerance_hz: float = 5.0,
    skip_seconds: float = 0.5,
    segment_s: float = 0.5,
) -> ToneReport:
    """Read ``path`` and measure it against an expected tone of ``hz``."""
    path = Path(path)
    rate, samples = read_wav(path)
    duration = len(samples) / rate
    data = _skip(samples, rate, skip_seconds)
    if len(data) >= 64:
        dominant = dominant_frequency(data, rate, 0.0) if np.any(data != data[0]) else math.nan
        ratio = tone_power_ratio(data, rate, hz, skip_seconds=0.0)
    else:
        dominant, ratio = math.nan, 0.0
    step = max(64, round(segment_s * rate))
    segments: list[float] = []
    for start in range(0, len(data) - step + 1, step):
        chunk = data[start : start + step]
        if rms_dbfs(chunk - chunk.mean()) < SILENCE_DBFS:
            segments.append(math.nan)
        else:
            segments.append(dominant_frequency(chunk, rate, 0.0))
    return ToneReport(
        path=path,
        expected_hz=float(hz),
        rate=rate,
        duration_s=duration,
        skip_seconds=skip_seconds,
        dominant_hz=dominant,
        ratio=ratio,
        level_dbfs=rms_dbfs(data),
        segment_hz=tuple(segments),
        segment_s=step / rate,
        tolerance_hz=tolerance_hz,
    )


def assert_tone(
    path: str | Path,
    hz: float,
    tolerance_hz: float = 5.0,
    min_seconds: float = 1.0,
    *,
    min_ratio: float = 0.8,
    min_dbfs: float = -40.0,
    skip_seconds: float = 0.5,
) -> ToneReport:
    """Assert that the WAV at ``path`` holds a clean tone of ``hz``: the dominant frequency
    (after ``skip_seconds``) within ``tolerance_hz``, at least ``min_ratio`` of the energy
    within ±20 Hz of it, a level of at least ``min_dbfs`` and at least ``min_seconds`` of
    0.5 s segments whose own dominant frequency is within tolerance. Returns the report."""
    path = Path(path)
    if not path.is_file():
        raise AssertionError(f"no recording at {path}")
    report = analyse_tone(path, hz, tolerance_hz=tolerance_hz, skip_seconds=skip_seconds)
    problems: list[str] = []
    if report.duration_s < skip_seconds + min_seconds:
        problems.append(
            f"only {report.duration_s:.2f} s recorded (need {skip_seconds:g} s skipped + "
            f"{min_seconds:g} s)"
        )
    if math.isnan(report.dominant_hz) or abs(report.dominant_hz - hz) > tolerance_hz:
        problems.append(f"dominant frequency {report.dominant_hz:.1f} Hz, not {hz:g} Hz")
    if report.ratio < min_ratio:
        problems.append(f"only {report.ratio:.1%} of the energy near {hz:g} Hz (< {min_ratio:.0%})")
    if report.level_dbfs < min_dbfs:
        problems.append(f"level {report.level_dbfs:.1f} dBFS (< {min_dbfs:g}): (near) silence")
    if report.tone_seconds < min_seconds:
        problems.append(f"tone present for {report.tone_seconds:.1f} s (< {min_seconds:g} s)")
    if problems:
        raise AssertionError(
            f"no clean {hz:g} Hz tone: " + "; ".join(problems) + "\n" + report.describe()
        )
    return report
