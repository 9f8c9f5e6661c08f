"""The sans-I/O core of a room (MCU, gateway.media.bridge): mixing, speakers, recording.

``Mixer`` is pure NumPy. Every 20 ms the bridge hands it one decoded frame (at the room's
rate: 8, 16 or 48 kHz, 20 ms each) per leg that has audio this tick, and gets back the frame
to send each leg, the mono mix to record and each leg's own contribution (for an unmixed
recording). ``Recording`` lays each tick's mix out as WAV samples. One leg's media path
around the mixer (jitter buffer, codecs, RTP out) is gateway.media.legmedia.

No reactor, no clock, no files: time is an argument, packets leave through the streams.

Mixer invariants:
- A leg is *eligible* when it is a member, not muted and not held; it *contributes* when it
  is eligible, has a frame this tick, is among the speakers selected (every eligible leg
  while there are at most ``max_mixed`` of them; else the ``max_mixed`` loudest, with
  hysteresis: gateway.media.speakers), and its smoothed level is above ``SILENT_DBOV``
  (a silent party adds nothing audible and shares the common mix); scaled by its gain.
- A leg that is not held hears every other contribution (never its own: N-1) plus every
  playback addressed to it (``to`` None addresses everyone). A held leg hears only the
  playback addressed to it (music on hold). A muted leg is not heard but still hears.
- Sums are int32, clipped once to int16 at the end: N-1 is the total minus the leg's own
  contribution, exact, so one pass over the legs serves N of them. Every leg that hears
  exactly the total (it contributes nothing, and no playback is addressed to it alone) gets
  the same array object, ``Mix.common``, so that its encoding can be shared.
- ``mixed`` (the recording) is every contribution plus every playback, each counted once.
- A playback advances one frame per ``mix``; a finished one (the tick that played its last
  samples, zero-padded) is reported once in ``finished``; a looped one runs until cancelled.
  Play ids are positive and never reused by one mixer. A change of rate resamples what is
  left of each playback, its position kept in time.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from gateway.media.resample import Resampler, resample
from gateway.media.speakers import ActiveSpeakers

__all__ = ["FRAME", "Mix", "Mixer", "Pcm", "Recording"]

FRAME = 160  # samples per 20 ms at 8 kHz
TICK = 0.02  # seconds per frame
Pcm = npt.NDArray[np.int16]
Wide = npt.NDArray[np.int32]

_LOW, _HIGH = -32768, 32767
_FULL_SCALE_POWER = 32768.0 * 32768.0  # dBov reference (gateway.media.speakers.level_dbov)
_SILENCE = -127.0
#: A party whose smoothed level stays under this is not mixed (a noise gate with the
#: speakers' one-second release as its hangover): about 30 dB under quiet speech.
SILENT_DBOV = -65.0


def clip(samples: Wide) -> Pcm:
    """int32 sums back to int16, saturating instead of wrapping."""
    return np.clip(samples, _LOW, _HIGH).astype(np.int16)


@dataclass(slots=True)
class _Member:
    muted: bool = False
    held: bool = False
    gain: float = 1.0


@dataclass(slots=True)
class _Playback:
    source: Pcm  # as given, at source_rate
    source_rate: int
    pcm: Pcm  # at the mixer's rate
    to: frozenset[str] | None
    loop: bool
    position: int = 0

    def next_frame(self, frame: int) -> tuple[Wide, bool]:
        """The next ``frame`` samples (int32) and whether this playback has now ended."""
        pcm, start = self.pcm, self.position
        size = len(pcm)
        if self.loop:
            chunk = np.take(pcm, np.arange(start, start + frame) % size).astype(np.int32)
            self.position = (start + frame) % size
            return chunk, False
        chunk = np.zeros(frame, dtype=np.int32)
        part = pcm[start : start + frame]
        chunk[: len(part)] = part
        self.position = start + frame
        return chunk, self.position >= size

    def set_rate(self, old: int, new: int) -> None:
        self.pcm = resample(self.source, self.source_rate, new)
        self.position = self.position * new // old


@dataclass(frozen=True, slots=True)
class Mix:
    """One tick's result.

    ``out``: the frame to send each member (silence when there is nothing to hear); the
    members hearing exactly ``common`` share that one array. ``mixed``: the mono mix of
    everything (for a mixed recording). ``heard``: each contributing leg's own frame (for an
    unmixed recording; absent legs and muted or held ones are silent). ``finished``:
    playbacks that ended this tick. ``plays``: what the playbacks give each member (the
    array ``play_common`` for those hearing only the playbacks addressed to everyone; empty
    when nothing plays). ``dominant_changed``: the dominant speaker changed this tick.
    """

    out: dict[str, Pcm]
    mixed: Pcm
    heard: dict[str, Pcm]
    finished: tuple[int, ...]
    common: Pcm
    plays: dict[str, Pcm]
    play_common: Pcm | None
    dominant_changed: bool


class Mixer:
    """The members of one room, their mute, hold and gain, who is heard, what plays."""

    __slots__ = ("_ids", "_members", "_plays", "frame", "gate", "rate", "speakers")

    def __init__(self, rate: int = 8000, max_mixed: int = 8,
                 gate: float | None = SILENT_DBOV) -> None:
        """``gate``: the level (dBov) a party must exceed to be mixed (None: no gate)."""
        self.gate = -1000.0 if gate is None else gate
        self.rate = rate
        self.frame = rate // 50
        self.speakers = ActiveSpeakers(max_mixed)
        self._members: dict[str, _Member] = {}
        self._plays: dict[int, _Playback] = {}
        self._ids = itertools.count(1)

    def set_rate(self, rate: int) -> None:
        """Mix at ``rate`` from the next tick (playbacks resampled, positions kept)."""
        if rate != self.rate:
            for playback in self._plays.values():
                playback.set_rate(self.rate, rate)
            self.rate, self.frame = rate, rate // 50

    # ------------------------------------------------------------------ members
    def add(self, leg: str) -> None:
        """``leg`` takes part from the next tick (a member already is left as it is)."""
        self._members.setdefault(leg, _Member())

    def discard(self, leg: str) -> None:
        self._members.pop(leg, None)
        self.speakers.discard(leg)

    def __contains__(self, leg: object) -> bool:
        return leg in self._members

    def set_muted(self, leg: str, muted: bool) -> None:
        self._members[leg].muted = muted

    def set_held(self, leg: str, held: bool) -> None:
        self._members[leg].held = held

    def set_gain(self, leg: str, gain: float) -> None:
        """``leg``'s contribution is scaled by ``gain`` (linear, 0..8; 1 as it comes)."""
        if not 0.0 <= gain <= 8.0:
            raise ValueError(f"gain {gain} is not within 0..8")
        self._members[leg].gain = gain

    def muted(self, leg: str) -> bool:
        return self._members[leg].muted

    def held(self, leg: str) -> bool:
        return self._members[leg].held

    def gain(self, leg: str) -> float:
        return self._members[leg].gain

    def eligible(self) -> list[str]:
        """The members that may be heard (not muted, not held), in join order."""
        return [leg for leg, m in self._members.items() if not m.muted and not m.held]

    # ------------------------------------------------------------------ playback
    def play(self, pcm: npt.NDArray[np.int16], to: Collection[str] | None, loop: bool,
             rate: int = 8000) -> int:
        """Queue ``pcm`` (int16 mono at ``rate``) for ``to`` (None: everyone); its play id."""
        samples = np.asarray(pcm)
        if samples.ndim != 1:
            raise ValueError(f"playback must be mono (1-D), not shape {samples.shape}")
        samples = samples.astype(np.int16, copy=False)
        play_id = next(self._ids)
        target = None if to is None else frozenset(to)
        self._plays[play_id] = _Playback(samples, rate, resample(samples, rate, self.rate),
                                         target, loop and len(samples) > 0)
        return play_id

    def cancel(self, play_id: int | None = None) -> list[int]:
        """Stop ``play_id`` (None: every playback); the ids actually stopped."""
        if play_id is None:
            stopped = list(self._plays)
            self._plays.clear()
            return stopped
        return [play_id] if self._plays.pop(play_id, None) is not None else []

    def playing(self) -> tuple[int, ...]:
        return tuple(self._plays)

    def targets(self, play_id: int) -> frozenset[str] | None:
        return self._plays[play_id].to

    # ------------------------------------------------------------------ the tick
    def mix(self, frames: Mapping[str, Pcm], levels: Mapping[str, float] | None = None
            ) -> Mix:
        """One 20 ms tick: ``frames`` holds the decoded frame of each leg that has one;
        ``levels`` the dBov of eligible legs whose audio was not decoded (an SFU room's
        RFC 6464 levels). Who is heard is chosen here (``speakers``). The arithmetic is one
        NumPy operation per step over all the legs at once (levels, N-1 sums, clipping),
        not one per leg."""
        members = self._members
        frame = self.frame
        eligible = self.eligible()
        heard_levels: dict[str, float] = dict(levels) if levels else {}
        talking = [leg for leg in eligible if leg in frames]
        if talking:
            rows = np.stack([frames[leg] for leg in talking]).astype(np.float64)
            power = np.einsum("ij,ij->i", rows, rows) / frame
            with np.errstate(divide="ignore"):
                dbov = np.clip(10.0 * np.log10(power / _FULL_SCALE_POWER), _SILENCE, 0.0)
            heard_levels.update(zip(talking, dbov.tolist(), strict=True))
        changed = self.speakers.update(eligible, heard_levels)
        selected = self.speakers.selected

        everyone = np.zeros(frame, dtype=np.int32)
        targeted: dict[str, Wide] = {}
        recorded = np.zeros(frame, dtype=np.int32)
        finished: list[int] = []
        for play_id, playback in self._plays.items():
            chunk, ended = playback.next_frame(frame)
            recorded += chunk
            if ended:
                finished.append(play_id)
            if playback.to is None:
                everyone += chunk
                continue
            for leg in playback.to:
                if leg in members:
                    extra = targeted.get(leg)
                    targeted[leg] = chunk if extra is None else extra + chunk
        for play_id in finished:
            del self._plays[play_id]
        playing = bool(self._plays) or bool(finished)

        # a selected leg that has been silent for a while (this frame and its smoothed level
        # under SILENT_DBOV: the release takes about a second) adds nothing audible: left out of the
        # sums and hears the common mix, so every quiet party shares one encode per codec
        smoothed = self.speakers.smoothed
        gate = self.gate
        speakers = [leg for leg in talking if leg in selected
                    and max(heard_levels[leg], smoothed(leg)) > gate]
        heard: dict[str, Pcm] = {}
        own: dict[str, int] = {}  # leg -> its row in ``stack``
        if speakers:
            stack = np.stack([frames[leg] for leg in speakers]).astype(np.int32)
            gains = [members[leg].gain for leg in speakers]
            if any(gain != 1.0 for gain in gains):
                stack = (stack * np.array(gains)[:, None]).astype(np.int32)
                scaled = clip(stack)
                heard = {leg: scaled[i] for i, leg in enumerate(speakers)}
            else:
                heard = {leg: frames[leg] for leg in speakers}
            total = stack.sum(axis=0, dtype=np.int32)
            own = {leg: i for i, leg in enumerate(speakers)}
            # every speaker's N-1 mix in one operation: the total less its own row
            n_minus_1 = clip(total[None, :] - stack + everyone[None, :])
        else:
            stack = np.zeros((0, frame), dtype=np.int32)
            n_minus_1 = np.zeros((0, frame), dtype=np.int16)
            total = np.zeros(frame, dtype=np.int32)
        recorded += total
        common = clip(total + everyone) if playing else clip(total)
        play_common = clip(everyone) if playing else None
        out: dict[str, Pcm] = {}
        plays: dict[str, Pcm] = {}
        for leg, member in members.items():
            extra = targeted.get(leg)
            if play_common is not None:
                plays[leg] = play_common if extra is None else clip(everyone + extra)
            if member.held:
                out[leg] = plays[leg] if playing else clip(everyone)
                continue
            row = own.get(leg)
            if extra is None:
                out[leg] = common if row is None else n_minus_1[row]
                continue
            hears = total + everyone if row is None else total - stack[row] + everyone
            out[leg] = clip(hears + extra)
        return Mix(out, clip(recorded), heard, tuple(finished), common, plays, play_common,
                   changed)


class Recording:
    """The sample layout of a recording: ``frame(mix, rate)`` is one tick's WAV data at the
    recording's own ``rate`` (the room's when it started; a room changing its rate later is
    resampled to it).

    Mixed: one channel, ``Mix.mixed``. Unmixed: ``channels`` channels, each leg's own frame
    on the channel it got when it joined (``join``, in join order); a leg that joins when
    every channel is taken is not recorded, a channel whose leg left stays silent.
    """

    __slots__ = ("_resamplers", "channels", "rate", "slots", "unmixed")

    def __init__(self, unmixed: bool, channels: int = 1, rate: int = 8000) -> None:
        if channels < 1:
            raise ValueError(f"a recording needs at least one channel, not {channels}")
        self.unmixed = unmixed
        self.channels = channels if unmixed else 1
        self.rate = rate
        self.slots: dict[str, int] = {}  # leg -> channel
        self._resamplers: dict[tuple[int, int], Resampler] = {}  # (channel, from rate)

    def join(self, leg: str) -> None:
        if self.unmixed and leg not in self.slots and len(self.slots) < self.channels:
            self.slots[leg] = len(self.slots)

    def _at_rate(self, pcm: Pcm, channel: int, rate: int) -> Pcm:
        if rate == self.rate:
            return pcm
        key = (channel, rate)
        resampler = self._resamplers.get(key)
        if resampler is None:
            resampler = self._resamplers[key] = Resampler(rate, self.rate)
        return resampler.process(pcm)

    def frame(self, mix: Mix, rate: int | None = None) -> bytes:
        rate = rate or self.rate
        if not self.unmixed:
            return self._at_rate(mix.mixed, 0, rate).astype("<i2", copy=False).tobytes()
        frame = np.zeros((self.rate // 50, self.channels), dtype="<i2")
        for leg, channel in self.slots.items():
            pcm = mix.heard.get(leg)
            if pcm is not None:
                frame[:, channel] = self._at_rate(pcm, channel, rate)
        return frame.tobytes()
