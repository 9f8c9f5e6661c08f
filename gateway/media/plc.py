"""Packet loss concealment for G.711, after ITU-T G.711 Appendix I (pitch waveform replication).

How it works, per Appendix I:
- A short history of the output is kept: 48.75 ms (three of the longest pitch periods plus a
  quarter of one: 390 samples at 8 kHz).
- When a frame is lost, the pitch period is estimated on the last 20 ms of history: the lag
  between 5 and 15 ms (200 to 66 Hz) with the largest normalised correlation. The last period
  is then repeated; its last quarter period is cross-faded with the quarter period before it,
  so that the repetitions join up.
- After 10 ms of loss the repeated segment grows to two periods, after 20 ms to three (each
  change cross-faded over a quarter period), so a long loss does not buzz on one period.
- From 10 ms on the output is attenuated linearly by 20 % per 10 ms; it is silent from 60 ms.
- On the first good frame after a loss the synthetic signal is continued and cross-faded into
  the real one, over a quarter period plus 4 ms per extra 10 ms lost (at most 10 ms).

Where this differs: Appendix I delays its output by 3.75 ms so that it can overlap-add the
start of the loss into real samples not yet played. This module adds no delay (the jitter
buffer is where delay belongs). The repeated periods already continue the real signal when the
pitch is right (they start one period back, so their predecessor matches the last real
sample); what is left, the difference between that predecessor and the last real sample, is
added to the first quarter period as an offset fading to zero (a cross-fade from a copy of the
synthetic signal shifted to meet the real one).

Invariants: sans-I/O and deterministic (no clock, no randomness); PCM in and out is NumPy
``int16`` mono at ``rate``; every step is a NumPy vector operation, the only Python loops are
over the few 10 ms stages of a loss, never over samples.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

__all__ = ["G711Plc"]

Pcm = npt.NDArray[np.int16]
Signal = npt.NDArray[np.float64]

# G.711 Appendix I constants at 8 kHz; they scale with the rate.
_PITCH_MIN_8K = 40  # 5 ms: 200 Hz
_PITCH_MAX_8K = 120  # 15 ms: 66.7 Hz
_CORR_LEN_8K = 160  # 20 ms correlation window
_STAGE_8K = 80  # 10 ms: the unit of attenuation and of growing the pitch buffer
_END_OVERLAP_STEP_8K = 32  # 4 ms more end overlap per extra 10 ms of loss
_ATTENUATION = 0.2  # per 10 ms after the first 10 ms
_MAX_PERIODS = 3
_MIN_POWER = 250.0  # floor of the correlation energy (Appendix I CORRMINPOWER)


class G711Plc:
    """Conceals lost G.711 frames from the history of good ones.

    Feed every decoded frame through ``good(pcm)`` (it returns the frame to play, cross-faded
    when it ends a loss) and ask ``lost(samples)`` for each missing one. Frames may have any
    length; 20 ms (160 samples at 8 kHz) is the usual.
    """

    def __init__(self, rate: int = 8000) -> None:
        if rate <= 0 or rate % 8000:
            raise ValueError(f"PLC rate must be a multiple of 8000 Hz, not {rate}")
        scale = rate // 8000
        self.rate: Final = rate
        self._pitch_min = _PITCH_MIN_8K * scale
        self._pitch_max = _PITCH_MAX_8K * scale
        self._corr_len = _CORR_LEN_8K * scale
        self._stage = _STAGE_8K * scale
        self._end_step = _END_OVERLAP_STEP_8K * scale
        self._history_len = 3 * self._pitch_max + self._pitch_max // 4
        self._history: Signal = np.zeros(self._history_len)
        self._erased = 0  # samples concealed so far in the current loss
        self._pitch = 0
        self._overlap = 0  # a quarter pitch period
        self._periods = 0
        self._snapshot: Signal = self._history  # the history when the loss began
        self._loop: Signal = self._history  # the periods being repeated
        self._phase = 0  # position in _loop
        self._fade_from: Signal | None = None  # the old signal to cross-fade away from
        self._fade_pos = 0

    @property
    def concealing(self) -> bool:
        """True from a ``lost`` call until the next ``good`` one."""
        return self._erased > 0

    @property
    def pitch(self) -> int:
        """The pitch period (in samples) estimated at the start of the last loss; 0 before."""
        return self._pitch

    @property
    def history_ms(self) -> float:
        return 1000 * self._history_len / self.rate

    # --- the public steps ---------------------------------------------------------------------

    def good(self, pcm: Pcm) -> Pcm:
        """Take a good (decoded) frame into the history and return the frame to play: the same
        frame, or after a loss a copy whose start is cross-faded from the synthetic signal."""
        if not isinstance(pcm, np.ndarray) or pcm.dtype != np.int16 or pcm.ndim != 1:
            raise TypeError("PLC takes one-dimensional NumPy int16 frames")
        if not self._erased:
            self._remember(pcm.astype(np.float64))
            return pcm
        stages = -(-self._erased // self._stage)  # 10 ms stages lost, rounded up
        length = min(self._overlap + (stages - 1) * self._end_step, self._stage, len(pcm))
        frame = pcm.astype(np.float64)
        if length > 0:
            synthetic = self._synthesize(length)
            fade_in = np.arange(1, length + 1) / (length + 1)
            frame[:length] = synthetic * (1.0 - fade_in) + frame[:length] * fade_in
        self._erased = 0
        self._fade_from = None
        self._remember(frame)
        return _to_pcm(frame)

    def lost(self, samples: int) -> Pcm:
        """Return ``samples`` samples to play in place of a lost frame."""
        if samples < 0:
            raise ValueError(f"cannot conceal {samples} samples")
        if samples == 0:
            return np.zeros(0, dtype=np.int16)
        if not self._erased:
            self._begin()
        out = self._synthesize(samples)
        self._remember(out)
        return _to_pcm(out)

    # --- the loss --------------------------------------------------------------------------

    def _begin(self) -> None:
        self._pitch = self._estimate_pitch()
        self._overlap = max(self._pitch // 4, 1)
        self._snapshot = self._history.copy()
        self._periods = 1
        self._loop = self._make_loop(1)
        self._phase = 0
        # Join the real signal without added delay: start from a copy of the loop offset so
        # that it continues the last real sample, and cross-fade to the loop itself.
        offset = self._history[-1] - self._loop[-1]
        self._start_fade(self._loop[: self._overlap] + offset)

    def _estimate_pitch(self) -> int:
        """The lag in [pitch_min, pitch_max] whose window best matches the last 20 ms,
        by normalised cross-correlation (G.711 Appendix I, without its 2:1 decimation)."""
        span = self._history[-(self._corr_len + self._pitch_max) :]
        target = span[-self._corr_len :]
        windows = sliding_window_view(span, self._corr_len)  # row i starts pitch_max - i back
        rows = windows[: self._pitch_max - self._pitch_min + 1]  # lags pitch_max down to pitch_min
        energy = np.maximum(np.einsum("ij,ij->i", rows, rows), _MIN_POWER)
        score = (rows @ target) / np.sqrt(energy)
        return int(self._pitch_max - int(np.argmax(score)))

    def _make_loop(self, periods: int) -> Signal:
        """The last ``periods`` pitch periods of the snapshot, their last quarter period
        cross-faded with the quarter period before their start so that they loop smoothly."""
        length, overlap = periods * self._pitch, self._overlap
        loop = self._snapshot[-length:].copy()
        before = self._snapshot[-length - overlap : -length]
        fade_in = np.arange(1, overlap + 1) / (overlap + 1)
        loop[-overlap:] = loop[-overlap:] * (1.0 - fade_in) + before * fade_in
        return loop

    def _start_fade(self, old: Signal) -> None:
        self._fade_from = old
        self._fade_pos = 0

    def _grow(self) -> None:
        """Add a period to the repeated segment; cross-fade from the old one (Appendix I)."""
        phase = self._phase
        old = self._take(self._overlap)
        self._periods += 1
        self._loop = self._make_loop(self._periods)
        self._phase = phase % self._pitch
        self._start_fade(old)

    def _take(self, count: int) -> Signal:
        size = len(self._loop)
        index = (self._phase + np.arange(count)) % size
        self._phase = (self._phase + count) % size
        return self._loop[index]

    def _synthesize(self, count: int) -> Signal:
        """The next ``count`` samples of the synthetic signal, attenuated, by stages."""
        out = np.empty(count)
        done = 0
        while done < count:
            if self._periods < _MAX_PERIODS and self._erased >= self._periods * self._stage:
                self._grow()
            end_of_stage = (
                self._periods * self._stage
                if self._periods < _MAX_PERIODS
                else self._erased + count
            )
            chunk = min(count - done, max(end_of_stage - self._erased, 1))
            raw = self._take(chunk)
            self._apply_fade(raw)
            out[done : done + chunk] = raw * self._gain(self._erased, chunk)
            self._erased += chunk
            done += chunk
        return out

    def _apply_fade(self, raw: Signal) -> None:
        old = self._fade_from
        if old is None:
            return
        total, start = len(old), self._fade_pos
        count = min(len(raw), total - start)
        weight = np.arange(start + 1, start + count + 1) / (total + 1)
        raw[:count] = old[start : start + count] * (1.0 - weight) + raw[:count] * weight
        self._fade_pos += count
        if self._fade_pos >= total:
            self._fade_from = None

    def _gain(self, first: int, count: int) -> Signal:
        """1 for the first 10 ms of loss, then down 20 % per 10 ms, 0 from 60 ms."""
        position = np.arange(first, first + count, dtype=np.float64)
        return np.clip(1.0 - _ATTENUATION * (position - self._stage) / self._stage, 0.0, 1.0)

    def _remember(self, signal: Signal) -> None:
        keep = self._history_len
        if len(signal) >= keep:
            self._history = signal[-keep:].copy()
        else:
            self._history = np.concatenate((self._history[len(signal) :], signal))


def _to_pcm(signal: Signal) -> Pcm:
    return np.clip(np.rint(signal), -32768, 32767).astype(np.int16)
