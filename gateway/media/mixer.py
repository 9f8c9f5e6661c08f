"""The sans-I/O core of a bridged call (MCU, gateway.media.bridge): mixing, legs, recording.

- ``Mixer`` is pure NumPy. Every 20 ms the bridge hands it one decoded frame (160 samples of
  8 kHz int16) per leg that has audio this tick, and gets back the frame to send each leg,
  the mono mix to record and each leg's own contribution (for an unmixed recording).
- ``LegMedia`` is one leg's media path around the mixer: per packet (``push``, the leg's
  ``LegStream`` sink) audio goes into a jitter buffer and telephone-events into an
  ``EventTracker``, nothing decoded; per tick ``pull`` gives the leg's decoded (or
  concealed) frame and ``send`` encodes what the leg is to hear in its own codec, with the
  leg's own SSRC, sequence numbers and timestamps (continuous: RFC 3550 section 5.1), or
  the due packets of a ``send_dtmf`` (RFC 4733 section 2.5.1).
- ``Recording`` lays each tick's mix out as WAV samples.

No reactor, no clock, no files: time is an argument, packets leave through the stream.

Mixer invariants:
- A leg *contributes* when it is a member, not muted, not held, and has a frame this tick.
- A leg that is not held hears every other contribution (never its own: N-1) plus every
  playback addressed to it (``to`` None addresses everyone). A held leg hears only the
  playback addressed to it (music on hold). A muted leg is not heard but still hears.
- Sums are int32, clipped once to int16 at the end: N-1 is the total minus the leg's own
  contribution, exact, so one pass over the legs serves N of them.
- ``mixed`` (the recording) is every contribution plus every playback, each counted once.
- A playback advances one frame per ``mix``; a finished one (the tick that played its last
  samples, zero-padded) is reported once in ``finished``; a looped one runs until cancelled.
  Play ids are positive and never reused by one mixer.

LegMedia invariants:
- Audio sent on a leg is one frame per tick while the peer wants media; the timestamp
  advances by one frame every tick even when nothing is sent (the far side sees the gap), and
  the marker bit starts every talk spurt. Events share the leg's SSRC and sequence numbers;
  a digit's packets all carry its start timestamp, and no audio goes out while its tone is
  on (from the start packet to the first end packet).
- Nothing raises out of ``push``: a bad telephone-event payload is a counted drop.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, cast

import numpy as np
import numpy.typing as npt

from gateway.media.dtmf import Event, EventSender, EventTracker, event_of
from gateway.media.jitter import JitterBuffer
from gateway.media.rtp import build, payload_end
from gateway.media.sdp import Codec
from gateway.media.stream import KIND_AUDIO, KIND_EVENT, LegStream
from gateway.media.transcode import _decoder, _encoder
from gateway.sip.ids import random_hex

if TYPE_CHECKING:
    from gateway.config import MediaConfig

__all__ = ["FRAME", "LegMedia", "Mix", "Mixer", "Pcm", "Recording"]

FRAME = 160  # samples per 20 ms at 8 kHz
TICK = 0.02  # seconds per frame
TONE_MS = 100  # send_dtmf: each digit's tone,
DIGIT_STEP = 0.15  # and the next digit 50 ms after its end
Pcm = npt.NDArray[np.int16]
Wide = npt.NDArray[np.int32]

_LOW, _HIGH = -32768, 32767


def clip(samples: Wide) -> Pcm:
    """int32 sums back to int16, saturating instead of wrapping."""
    return np.clip(samples, _LOW, _HIGH).astype(np.int16)


@dataclass(slots=True)
class _Member:
    muted: bool = False
    held: bool = False


@dataclass(slots=True)
class _Playback:
    pcm: Pcm
    to: frozenset[str] | None
    loop: bool
    position: int = 0

    def next_frame(self) -> tuple[Wide, bool]:
        """The next FRAME samples (int32) and whether this playback has now ended."""
        pcm, start = self.pcm, self.position
        size = len(pcm)
        if self.loop:
            chunk = np.take(pcm, np.arange(start, start + FRAME) % size).astype(np.int32)
            self.position = (start + FRAME) % size
            return chunk, False
        chunk = np.zeros(FRAME, dtype=np.int32)
        part = pcm[start : start + FRAME]
        chunk[: len(part)] = part
        self.position = start + FRAME
        return chunk, self.position >= size


@dataclass(frozen=True, slots=True)
class Mix:
    """One tick's result.

    ``out``: the frame to send each member (silence when there is nothing to hear).
    ``mixed``: the mono mix of everything (for a mixed recording).
    ``heard``: each contributing leg's own frame (for an unmixed recording; absent legs and
    muted or held ones are silent). ``finished``: playbacks that ended this tick.
    """

    out: dict[str, Pcm]
    mixed: Pcm
    heard: dict[str, Pcm]
    finished: tuple[int, ...]


class Mixer:
    """The members of one call, their mute and hold state, and what plays to them."""

    __slots__ = ("_ids", "_members", "_plays")

    def __init__(self) -> None:
        self._members: dict[str, _Member] = {}
        self._plays: dict[int, _Playback] = {}
        self._ids = itertools.count(1)

    # ------------------------------------------------------------------ members
    def add(self, leg: str) -> None:
        """``leg`` takes part from the next tick (a member already is left as it is)."""
        self._members.setdefault(leg, _Member())

    def discard(self, leg: str) -> None:
        self._members.pop(leg, None)

    def __contains__(self, leg: object) -> bool:
        return leg in self._members

    def set_muted(self, leg: str, muted: bool) -> None:
        self._members[leg].muted = muted

    def set_held(self, leg: str, held: bool) -> None:
        self._members[leg].held = held

    def muted(self, leg: str) -> bool:
        return self._members[leg].muted

    def held(self, leg: str) -> bool:
        return self._members[leg].held

    # ------------------------------------------------------------------ playback
    def play(self, pcm: npt.NDArray[np.int16], to: Collection[str] | None, loop: bool) -> int:
        """Queue ``pcm`` (8 kHz int16, mono) for ``to`` (None: everyone); its play id."""
        samples = np.asarray(pcm)
        if samples.ndim != 1:
            raise ValueError(f"playback must be mono (1-D), not shape {samples.shape}")
        play_id = next(self._ids)
        target = None if to is None else frozenset(to)
        self._plays[play_id] = _Playback(samples.astype(np.int16, copy=False), target,
                                         loop and len(samples) > 0)
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
    def mix(self, frames: Mapping[str, Pcm]) -> Mix:
        """One 20 ms tick: ``frames`` holds the decoded frame of each leg that has one."""
        members = self._members
        total = np.zeros(FRAME, dtype=np.int32)
        own: dict[str, Wide] = {}
        heard: dict[str, Pcm] = {}
        for leg, frame in frames.items():
            member = members.get(leg)
            if member is None or member.muted or member.held:
                continue
            wide = frame.astype(np.int32)
            total += wide
            own[leg] = wide
            heard[leg] = frame
        everyone = np.zeros(FRAME, dtype=np.int32)
        targeted: dict[str, Wide] = {}
        recorded = total.copy()
        finished: list[int] = []
        for play_id, playback in self._plays.items():
            chunk, ended = playback.next_frame()
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
        out: dict[str, Pcm] = {}
        for leg, member in members.items():
            if member.held:
                hears = everyone
            else:
                mine = own.get(leg)
                hears = total + everyone if mine is None else total - mine + everyone
            extra = targeted.get(leg)
            out[leg] = clip(hears if extra is None else hears + extra)
        return Mix(out, clip(recorded), heard, tuple(finished))


class Recording:
    """The sample layout of a recording: ``frame(mix)`` is one tick's WAV data.

    Mixed: one channel, ``Mix.mixed``. Unmixed: ``channels`` channels, each leg's own frame
    on the channel it got when it joined (``join``, in join order); a leg that joins when
    every channel is taken is not recorded, a channel whose leg left stays silent.
    """

    __slots__ = ("channels", "slots", "unmixed")

    def __init__(self, unmixed: bool, channels: int = 1) -> None:
        if channels < 1:
            raise ValueError(f"a recording needs at least one channel, not {channels}")
        self.unmixed = unmixed
        self.channels = channels if unmixed else 1
        self.slots: dict[str, int] = {}  # leg -> channel

    def join(self, leg: str) -> None:
        if self.unmixed and leg not in self.slots and len(self.slots) < self.channels:
            self.slots[leg] = len(self.slots)

    def frame(self, mix: Mix) -> bytes:
        if not self.unmixed:
            return mix.mixed.astype("<i2", copy=False).tobytes()
        frame = np.zeros((FRAME, self.channels), dtype="<i2")
        for leg, channel in self.slots.items():
            pcm = mix.heard.get(leg)
            if pcm is not None:
                frame[:, channel] = pcm
        return frame.tobytes()


class _Decoder(Protocol):
    def decode(self, payload: bytes) -> Pcm: ...
    def lost(self, samples: int, next_payload: bytes | None) -> Pcm: ...


class _Encoder(Protocol):
    def encode(self, pcm: Pcm) -> bytes: ...


@dataclass(slots=True)
class _Dtmf:
    """One send_dtmf call: its packets as (offset s, ts offset, marker, payload)."""

    packets: list[tuple[float, int, bool, bytes]]
    pt: int
    done: Callable[[bool], None]
    start: float | None = None  # media time of the first packet
    base_ts: int = 0
    sent: int = 0


class LegMedia:
    """One leg's media in the mix: what arrives (jitter buffer, decoder, digits) and what
    is sent (encoder, RTP sequence/timestamp/SSRC, telephone-events)."""

    __slots__ = ("clock", "codec_id", "decoder", "dtmf", "encoder", "jitter", "marker",
                 "on_digit", "out_pt", "out_ticks", "pending", "seq", "silent", "ssrc",
                 "stream", "tracker", "tracker_clock", "ts")

    def __init__(self, stream: LegStream, on_digit: Callable[[str], None]) -> None:
        """Becomes ``stream``'s sink; ``on_digit(digit)`` once per telephone-event."""
        self.stream = stream
        self.on_digit = on_digit
        self.codec_id: tuple[object, ...] | None = None
        self.decoder: _Decoder | None = None
        self.encoder: _Encoder | None = None
        self.jitter: JitterBuffer | None = None
        self.tracker: EventTracker | None = None
        self.tracker_clock = 0
        self.pending: Pcm = np.zeros(0, dtype=np.int16)
        self.out_pt = 0
        self.out_ticks = FRAME
        self.clock = 8000
        self.ssrc = int(random_hex(4), 16)
        self.seq = int(random_hex(2), 16)
        self.ts = int(random_hex(4), 16)
        self.marker = True
        self.dtmf: deque[_Dtmf] = deque()
        self.silent = False  # a telephone-event's tone covers this time: no audio
        stream.sender_ssrc = self.ssrc
        stream.sink = self.push

    # ------------------------------------------------------------------ codec
    def use(self, codec: Codec, event: Codec | None, config: MediaConfig) -> None:
        """Send and receive ``codec`` (with the peer's payload number) and receive ``event``
        (telephone-event); decoder, encoder and jitter buffer are kept when the codec did
        not change (a re-INVITE)."""
        codec_id = (codec.key, codec.fmtp)
        if codec_id != self.codec_id:
            self.codec_id = codec_id
            self.decoder = _decoder(codec)
            encoder, self.out_ticks = _encoder(codec, config.opus_bitrate,
                                               config.opus_complexity)
            self.encoder = cast(_Encoder, encoder)
            self.jitter = JitterBuffer(codec.clock, codec.clock // 50,
                                       min_delay=config.jitter_min, max_delay=config.jitter_max)
            self.pending = np.zeros(0, dtype=np.int16)
        self.out_pt = codec.pt
        self.clock = codec.clock
        if event is None:
            self.tracker = None
        elif self.tracker is None or self.tracker_clock != event.clock:
            self.tracker, self.tracker_clock = EventTracker(event.clock), event.clock

    # ------------------------------------------------------------------ per packet
    def push(self, data: bytes, pt: int, seq: int, ts: int, ssrc: int, marker: bool,
             offset: int, kind: int, now: float) -> None:
        """The stream's sink: audio into the jitter buffer, events into the tracker."""
        if kind == KIND_AUDIO:
            jitter = self.jitter
            if jitter is not None:
                jitter.push(seq, ts, ssrc, marker, data[offset:payload_end(data)], now)
        elif kind == KIND_EVENT and self.tracker is not None:
            try:
                event = Event.parse(data[offset:payload_end(data)])
            except ValueError:
                self.stream.counters.malformed += 1
                return
            done = self.tracker.feed(ts, event, now, marker=marker)
            if done is not None:
                self.on_digit(done[0])

    def poll_digits(self, now: float) -> None:
        """Report the digits whose end packets never came (RFC 4733 2.5.1.4 timeout)."""
        if self.tracker is not None:
            for digit, _ in self.tracker.poll(now):
                self.on_digit(digit)

    # ------------------------------------------------------------------ per tick
    def pull(self, now: float) -> Pcm | None:
        """This tick's 160 decoded samples, or None (nothing arrived: silence, DTX)."""
        jitter, decoder = self.jitter, self.decoder
        if jitter is None or decoder is None:
            return None
        pending = self.pending
        while len(pending) < FRAME:
            frame = jitter.pop(now)
            if frame is None or frame.kind == "empty":
                break
            if frame.kind == "lost":
                pcm = decoder.lost(FRAME, frame.next_payload)
            else:
                try:
                    pcm = decoder.decode(frame.payload)
                except (ValueError, RuntimeError):
                    self.stream.counters.malformed += 1
                    pcm = decoder.lost(FRAME, None)
            pending = np.concatenate((pending, pcm)) if len(pending) else pcm
        if len(pending) < FRAME:
            self.pending = pending
            return None
        out, self.pending = pending[:FRAME], pending[FRAME:]
        return out

    def send(self, pcm: Pcm, now: float) -> Callable[[bool], None] | None:
        """Send this tick's frame (or the due telephone-event packets); the ``done`` of a
        send_dtmf that has just sent its last packet."""
        finished = self._send_events(now) if self.dtmf else None
        stream, encoder = self.stream, self.encoder
        ts = self.ts
        self.ts = (ts + self.out_ticks) & 0xFFFFFFFF
        if self.silent or stream.remote is None or not stream.receives or encoder is None:
            self.marker = True
            return finished
        try:
            payload = encoder.encode(pcm)
        except (ValueError, RuntimeError):
            stream.counters.malformed += 1
            return finished
        stream.sender.update(ts, len(payload), now, self.clock)
        stream.send_rtp(build(self.out_pt, self.seq, ts, self.ssrc, self.marker, payload))
        self.seq = (self.seq + 1) & 0xFFFF
        self.marker = False
        return finished

    def _send_events(self, now: float) -> Callable[[bool], None] | None:
        job = self.dtmf[0]
        if job.start is None:
            job.start, job.base_ts = now, self.ts
        due = now - job.start + TICK / 2
        packets = job.packets
        while job.sent < len(packets) and packets[job.sent][0] <= due:
            _, ts_offset, marker, payload = packets[job.sent]
            job.sent += 1
            self.silent = not payload[1] & 0x80  # the tone is on until its end packet
            packet = build(job.pt, self.seq, job.base_ts + ts_offset, self.ssrc, marker, payload)
            self.seq = (self.seq + 1) & 0xFFFF
            self.stream.send_rtp(packet)
        if job.sent < len(packets):
            return None
        self.dtmf.popleft()
        self.silent = False
        return job.done

    # ------------------------------------------------------------------ DTMF out
    def queue_dtmf(self, digits: str, event: Codec, done: Callable[[bool], None]) -> None:
        """RFC 4733 digits with ``event`` (the peer's telephone-event): 100 ms tones, an
        update every 20 ms, the end packet three times, the next digit 50 ms after the
        tone; after any digits queued before. ValueError for a non-digit or none."""
        for digit in digits:
            event_of(digit)
        if not digits:
            raise ValueError("no DTMF digits to send")
        sender = EventSender(event.clock, event.pt, interval=TICK)
        packets: list[tuple[float, int, bool, bytes]] = []
        for i, digit in enumerate(digits):
            start = i * DIGIT_STEP
            ts = round(start * self.clock)
            packets += [(start + p.send_offset, ts + p.ts_offset, p.marker, p.payload)
                        for p in sender.packets(digit, TONE_MS)]
        self.dtmf.append(_Dtmf(packets, event.pt, done))

    def drop_dtmf(self) -> list[Callable[[bool], None]]:
        """Forget the queued digits; the ``done`` of each send_dtmf that had not finished."""
        jobs, self.dtmf = list(self.dtmf), deque()
        self.silent = False
        return [job.done for job in jobs]
