"""Sample-rate conversion: the streaming per-frame ``Resampler`` and whole-buffer ``resample``.

``Resampler`` converts 20 ms frames between the media loop's rates (8000, 16000, 48000 Hz: up
or down by 2, 3 or 6) for every party on every tick, so it is built for a small per-call cost;
``resample`` converts a whole prompt (WAV at any rate) once, off the reactor thread.

Resampler invariants:
- One linear-phase low-pass FIR at the higher rate: windowed sinc (Kaiser, beta for 62 dB),
  flat to 0.9 * low/2, at least 60 dB down from low/2 (low = the lower of the two rates), so
  going down nothing above the new Nyquist folds back and going up no image survives. Every
  ratio uses ``_TAPS`` taps per phase of the lower rate (the transition band scales with it);
  the group delay is constant, (taps - 1) / 2 samples of the higher rate, and a round trip
  (up, then down by the same ratio) delays by exactly ``_TAPS - 1`` samples of the lower rate.
  Any two rates in a ratio of 2, 3 or 6 work (48000 -> 24000 too); equal rates give a copy.
- Streaming: the last input samples the filter still needs are kept between calls, so any
  split of a signal into calls gives the same output samples as one call (frames join
  seamlessly); ``reset`` forgets them (silence before the next call).
- ``len(out) == len(pcm) * dst // src`` exactly; ``len(pcm)`` must be a multiple of
  ``src // gcd(src, dst)`` (the ratio's input group), else ``ValueError``. Output is int16,
  rounded to nearest, saturated rather than wrapped.
- The hot path is a handful of NumPy calls and no Python loop per sample: each call length has
  a cached plan (its input is cut into blocks; every block with the history it needs is one row
  of a matrix, and one float32 matrix product with a fixed banded matrix gives every output
  sample of the call).

resample invariants (prompts): one windowed-sinc (Kaiser, beta 8, about 80 dB) low-pass
evaluated at the output instants, a polyphase filter exact for any rational ratio (8000/22050,
8000/44100 too); cutoff 0.95 * low/2, reach 3 ms of an 8 kHz signal scaled to the lower rate;
unity gain at DC in every phase; the signal is taken as zero outside the buffer.
"""

from __future__ import annotations

import math
from functools import cache
from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = ["Resampler", "resample"]

Pcm = npt.NDArray[np.int16]
_F32 = npt.NDArray[np.float32]
_F64 = npt.NDArray[np.float64]

_LOW, _HIGH = -32768.0, 32767.0
_LOW32, _HIGH32 = np.float32(_LOW), np.float32(_HIGH)

# Resampler filter: _TAPS taps per phase of the lower rate. Kaiser's estimate for a 62 dB stop
# band and a transition of 0.1 * low/2 is 76 * ratio taps at the higher rate for every ratio.
_RATIOS: Final = frozenset({1, 2, 3, 6})
_STOP_DB: Final = 62.0
_TAPS: Final = 76
_PASS: Final = 0.9  # passband edge, fraction of the lower Nyquist
# A plan's rows: at least this many new input samples each (measured: a 20 ms frame's best
# split between matrix size and the product's per-row cost, for every ratio).
_ROW_UP: Final = 16
_ROW_DOWN: Final = 48
_PLANS: Final = 4  # call lengths a Resampler keeps plans for

# resample (whole buffers, any ratio)
_KAISER_BETA: Final = 8.0
_HALF_SPAN_LOW: Final = 24  # kernel reach each side, in samples of the lower rate (3 ms at 8k)
_CUTOFF: Final = 0.95  # -6 dB point, fraction of the lower Nyquist
_BLOCK: Final = 4096  # output samples computed per matrix product


# ---------------------------------------------------------------------------------------------
# Streaming resampler


@cache
def _prototype(ratio: int, up: bool) -> _F64:
    """The low-pass at the higher rate (ratio * _TAPS taps), unity gain at DC; going up,
    each phase (taps p, p + ratio, ...) is scaled to sum to 1, so a constant stays constant."""
    taps = ratio * _TAPS
    cutoff = (1 + _PASS) / 4 / ratio  # cycles per high-rate sample: mid-transition
    beta = 0.1102 * (_STOP_DB - 8.7)  # Kaiser's rule for a stop band above 50 dB
    t = np.arange(taps, dtype=np.float64) - (taps - 1) / 2
    kernel = np.sinc(2 * cutoff * t) * np.kaiser(taps, beta)
    if up:
        phases = kernel.reshape(_TAPS, ratio)
        result: _F64 = (phases / phases.sum(axis=0)).reshape(-1)
    else:
        result = kernel / kernel.sum()
    return result


class _Plan:
    """One call length's matrix product: rows of (history + block) input, a banded matrix.

    ``ext`` holds ``history`` older input samples followed by the call's input; row i of
    ``rows`` is ``ext[i * step : i * step + width]`` and ``rows @ matrix`` is the output, row
    by row (``width = step + history``).
    """

    __slots__ = ("ext", "history", "matrix", "out", "rows", "source", "step")

    def __init__(self, up: int, down: int, length: int) -> None:
        kernel = _prototype(max(up, down), up > 1)
        if up > 1:  # out[j*up + p] = sum_k kernel[k*up + p] * x[j - k]
            history = _TAPS - 1
            group, per_group, least = 1, up, _ROW_UP
        else:  # out[i] = sum_k kernel[k] * x[i*down + down - 1 - k]
            history = len(kernel) - down
            group, per_group, least = down, 1, _ROW_DOWN // down
        groups = length // group
        count = _block(groups, least)
        step = count * group
        width = step + history
        # matrix[c, j*per_group + p]: weight of row sample c in output p of group j
        column = np.arange(width)[:, None]
        outputs = np.arange(count * per_group)[None, :]
        if up > 1:
            tap = (history + outputs // up - column) * up + outputs % up
        else:
            tap = history + outputs * down + down - 1 - column
        inside = (tap >= 0) & (tap < len(kernel))
        weights = np.where(inside, kernel[np.clip(tap, 0, len(kernel) - 1)], 0.0)
        self.matrix: _F32 = np.ascontiguousarray(weights, dtype=np.float32)
        self.history = history
        self.step = step
        self.ext: _F32 = np.zeros(history + length, dtype=np.float32)
        self.source = np.lib.stride_tricks.as_strided(
            self.ext, shape=(groups // count, width), strides=(step * 4, 4), writeable=False
        )
        self.rows: _F32 = np.empty((groups // count, width), dtype=np.float32)
        self.out: _F32 = np.empty((groups // count, count * per_group), dtype=np.float32)


def _block(groups: int, least: int) -> int:
    """The smallest divisor of ``groups`` that is at least ``least`` (else ``groups``)."""
    for count in range(max(1, least), groups):
        if groups % count == 0:
            return count
    return groups


class Resampler:
    """Streaming integer-ratio resampler for 20 ms frames: 8000<->16000, 16000<->48000,
    8000<->48000 (up or down by 2, 3 or 6). Polyphase windowed-sinc FIR (Kaiser window),
    passband to 0.9 * min(src, dst)/2 rolled off by min(src,dst)/2 (>= 60 dB stopband),
    history kept between calls so frames join seamlessly (no clicks at frame edges),
    constant group delay. int16 in, int16 out (saturating).

    ``src == dst`` is accepted too: a copy, no delay.
    """

    __slots__ = ("_plan", "_plans", "down", "dst", "src", "up")

    def __init__(self, src: int, dst: int) -> None:
        if src <= 0 or dst <= 0:
            raise ValueError(f"sample rates must be positive, not {src} and {dst}")
        high, low = max(src, dst), min(src, dst)
        if high % low or high // low not in _RATIOS:
            raise ValueError(f"cannot resample {src} Hz to {dst} Hz: not up or down by 2, 3, 6")
        self.src = src
        self.dst = dst
        self.up = max(1, dst // src)
        self.down = max(1, src // dst)
        self._plans: dict[int, _Plan] = {}
        self._plan: _Plan | None = None  # the plan whose ext holds the history; None: silence

    def process(self, pcm: Pcm) -> Pcm:
        """``len(pcm) * dst // src`` output samples; ``len(pcm)`` a multiple of src//gcd."""
        length = len(pcm)
        if length % self.down:
            raise ValueError(f"{length} samples is not a multiple of {self.down}")
        if self.up == self.down:
            return np.array(pcm, dtype=np.int16)
        if not length:
            return np.zeros(0, dtype=np.int16)
        plan = self._plans.get(length)
        if plan is None:
            if len(self._plans) >= _PLANS:  # a peer changing frame sizes: drop the oldest
                del self._plans[next(iter(self._plans))]
            plan = self._plans[length] = _Plan(self.up, self.down, length)
        ext, history = plan.ext, plan.history
        previous = self._plan
        if previous is plan:
            ext[:history] = ext[length:]
        elif previous is not None:
            ext[:history] = previous.ext[len(previous.ext) - history :]
        else:
            ext[:history] = 0.0
        self._plan = plan
        ext[history:] = pcm
        np.copyto(plan.rows, plan.source)
        out = plan.out
        np.matmul(plan.rows, plan.matrix, out=out)
        np.rint(out, out=out)
        np.maximum(out, _LOW32, out=out)  # two ufuncs: a third of np.clip's cost
        np.minimum(out, _HIGH32, out=out)
        result: Pcm = out.astype(np.int16).ravel()
        return result

    def reset(self) -> None:
        """Forget the history: the next call starts from silence."""
        self._plan = None


# ---------------------------------------------------------------------------------------------
# Whole buffers (prompts)


@cache
def _polyphase(src: int, dst: int) -> tuple[int, int, _F64]:
    """(up, down, coefficients[phase, tap]) taking ``src`` to ``dst`` (dst = src * up / down).

    Output n sits at input instant n*down/up = base + phase/up; its value is the sum over
    taps o in [-reach, reach] of x[base + o] * kernel(phase/up - o).
    """
    gcd = math.gcd(src, dst)
    up, down = dst // gcd, src // gcd
    low = min(src, dst)
    reach = math.ceil(_HALF_SPAN_LOW * src / low)
    offsets = np.arange(-reach, reach + 1, dtype=np.float64)
    tau = (np.arange(up, dtype=np.float64) / up)[:, None] - offsets[None, :]
    cutoff = _CUTOFF * low / 2 / src  # cycles per input sample
    window = np.i0(_KAISER_BETA * np.sqrt(np.clip(1.0 - (tau / (reach + 1)) ** 2, 0.0, 1.0)))
    kernel = 2.0 * cutoff * np.sinc(2.0 * cutoff * tau) * window
    kernel /= kernel.sum(axis=1, keepdims=True)  # unity DC gain in every phase
    return up, down, kernel


def _resample_float(x: _F64, src: int, dst: int) -> _F64:
    up, down, kernel = _polyphase(src, dst)
    taps = kernel.shape[1]
    reach = (taps - 1) // 2
    padded = np.concatenate((np.zeros(reach), x, np.zeros(reach)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, taps)  # windows[i] ~ x[i-r..i+r]
    count = len(x) * up // down
    out = np.empty(count, dtype=np.float64)
    for first in range(min(up, count)):  # outputs first, first+up, ... share one phase
        phase, base = first * down % up, first * down // up
        outputs = len(range(first, count, up))
        for block in range(0, outputs, _BLOCK):
            rows = min(_BLOCK, outputs - block)
            start = base + block * down
            out[first + block * up : first + (block + rows) * up : up] = (
                windows[start : start + rows * down : down] @ kernel[phase]
            )
    return out


def resample(pcm: Pcm, src: int, dst: int) -> Pcm:
    """Whole-buffer resampling at any rates (used for prompts): ``len(pcm) * dst // src``
    samples, int16 rounded and saturated. ``src == dst`` returns a copy."""
    if src <= 0 or dst <= 0:
        raise ValueError(f"sample rates must be positive, not {src} and {dst}")
    if src == dst:
        return np.array(pcm, dtype=np.int16)
    out = _resample_float(np.asarray(pcm, dtype=np.float64), src, dst)
    result: Pcm = np.clip(np.round(out), _LOW, _HIGH).astype(np.int16)
    return result
