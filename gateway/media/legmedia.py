"""One party's media path in a mixed or forwarded room (gateway.media.bridge).

``LegMedia`` sits between a leg's ``LegStream`` (source latching, SRTP, header checks) and
the room: per packet (``push``, the stream's sink) audio goes into a jitter buffer and
telephone-events into an ``EventTracker``, nothing decoded (a room in SFU mode may also see
each audio packet first, ``on_audio``, to forward it as it is); per tick ``pull`` gives the
leg's decoded (or concealed) frame at the room's rate and ``send`` encodes what the leg is to
hear in its own codec, with the leg's own SSRC, sequence numbers and timestamps (continuous:
RFC 3550 section 5.1), or the due packets of a ``send_dtmf`` (RFC 4733 section 2.5.1).

The room's rate (8, 16 or 48 kHz) is the leg's internal rate: G.711 is decoded at 8 kHz and
resampled to it (and back before encoding); Opus is decoded at the room's rate and encoded
from it by libopus itself (resampled only when the peer's maxplaybackrate asks for less).

Invariants:
- Audio sent on a leg is one frame per tick while the peer wants media; the timestamp
  advances by one frame every tick even when nothing is sent (the far side sees the gap), and
  the marker bit starts every talk spurt. Events share the leg's SSRC and sequence numbers;
  a digit's packets all carry its start timestamp, and no audio goes out while its tone is
  on (from the start packet to the first end packet).
- Nothing raises out of ``push`` or ``on_audio``: a bad telephone-event payload is a
  counted drop.
- ``set_rate`` keeps the jitter buffer (no packet is lost by a room changing its rate).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np
import numpy.typing as npt

from gateway.media.dtmf import Event, EventSender, EventTracker, event_of
from gateway.media.g711 import G711Codec
from gateway.media.jitter import JitterBuffer
from gateway.media.opus import OpusDecoder, OpusEncoder, encoder_settings, parse_fmtp
from gateway.media.plc import G711Plc
from gateway.media.resample import Resampler
from gateway.media.rtp import build, payload_end
from gateway.media.sdp import Codec
from gateway.media.stream import KIND_AUDIO, KIND_EVENT, LegStream
from gateway.sip.ids import random_hex

if TYPE_CHECKING:
    from gateway.config import MediaConfig

__all__ = ["LegMedia", "OnAudio", "frame_of"]

TICK = 0.02  # seconds per frame
TONE_MS = 100  # send_dtmf: each digit's tone,
DIGIT_STEP = 0.15  # and the next digit 50 ms after its end
Pcm = npt.NDArray[np.int16]
#: ``on_audio(data, offset, seq, ts, marker, now)``: an audio packet as it arrives
OnAudio = Callable[[bytes, int, int, int, bool, float], None]


def frame_of(rate: int) -> int:
    """Samples per 20 ms at ``rate``."""
    return rate // 50


class _In(Protocol):
    def decode(self, payload: bytes) -> Pcm: ...
    def lost(self, next_payload: bytes | None) -> Pcm: ...


class _Out(Protocol):
    def encode(self, pcm: Pcm) -> bytes: ...


class _G711In:
    """G.711 at 8 kHz (Appendix I style concealment), resampled to the room's rate."""

    __slots__ = ("codec", "plc", "up")

    def __init__(self, name: str, rate: int) -> None:
        self.codec = G711Codec(name)  # type: ignore[arg-type]
        self.plc = G711Plc(8000)
        self.up = Resampler(8000, rate) if rate != 8000 else None

    def decode(self, payload: bytes) -> Pcm:
        pcm = self.plc.good(self.codec.decode(payload))
        return pcm if self.up is None else self.up.process(pcm)

    def lost(self, next_payload: bytes | None) -> Pcm:
        pcm = self.plc.lost(160)
        return pcm if self.up is None else self.up.process(pcm)


class _OpusIn:
    """Opus decoded straight at the room's rate; FEC from the next packet, else PLC."""

    __slots__ = ("decoder", "frame")

    def __init__(self, rate: int) -> None:
        self.decoder = OpusDecoder(rate)
        self.frame = frame_of(rate)

    def decode(self, payload: bytes) -> Pcm:
        return self.decoder.decode(payload)

    def lost(self, next_payload: bytes | None) -> Pcm:
        if next_payload:
            try:
                return self.decoder.decode_fec(next_payload, self.frame)
            except (ValueError, RuntimeError):
                pass
        return self.decoder.conceal(self.frame)


class _G711Out:
    __slots__ = ("codec", "down")

    def __init__(self, name: str, rate: int) -> None:
        self.codec = G711Codec(name)  # type: ignore[arg-type]
        self.down = Resampler(rate, 8000) if rate != 8000 else None

    def encode(self, pcm: Pcm) -> bytes:
        return self.codec.encode(pcm if self.down is None else self.down.process(pcm))


class _OpusOut:
    __slots__ = ("down", "encoder")

    def __init__(self, codec: Codec, rate: int, bitrate: int, complexity: int) -> None:
        settings = encoder_settings(parse_fmtp(codec.fmtp), input_rate=rate, bitrate=bitrate,
                                    complexity=complexity)
        self.down = None
        if settings.sample_rate != rate:
            try:  # the peer's maxplaybackrate asks for less than the room's rate
                self.down = Resampler(rate, settings.sample_rate)
            except ValueError:  # 12 or 24 kHz: let libopus take the room's rate instead
                settings = encoder_settings(parse_fmtp(None), input_rate=rate,
                                            bitrate=settings.bitrate, complexity=complexity)
        self.encoder = OpusEncoder.from_settings(settings)

    def encode(self, pcm: Pcm) -> bytes:
        return self.encoder.encode(pcm if self.down is None else self.down.process(pcm))


def decoder_for(codec: Codec, rate: int) -> _In:
    """A decoder of ``codec`` giving ``rate`` audio."""
    return _OpusIn(rate) if codec.key[0] == "opus" else _G711In(codec.name.upper(), rate)


def encoder_for(codec: Codec, rate: int, config: MediaConfig) -> tuple[_Out, int]:
    """(an encoder of ``rate`` audio into ``codec``, RTP ticks per 20 ms frame)."""
    if codec.key[0] == "opus":
        return _OpusOut(codec, rate, config.opus_bitrate, config.opus_complexity), 960
    return _G711Out(codec.name.upper(), rate), 160


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
    """One leg's media in the room: what arrives (jitter buffer, decoder, digits) and what
    is sent (encoder, RTP sequence/timestamp/SSRC, telephone-events)."""

    __slots__ = ("clock", "codec", "codec_id", "config", "decoder", "dtmf", "encoder",
                 "forward_only", "frame", "jitter", "marker", "on_audio", "on_digit",
                 "out_pt", "out_ticks", "pending", "rate", "seq", "silent", "ssrc", "stream",
                 "tracker", "tracker_clock", "ts")

    def __init__(self, stream: LegStream, on_digit: Callable[[str], None],
                 rate: int = 8000) -> None:
        """Becomes ``stream``'s sink; ``on_digit(digit)`` once per telephone-event."""
        self.stream = stream
        self.on_digit = on_digit
        self.on_audio: OnAudio | None = None  # an SFU room sees each audio packet first
        self.forward_only = False  # audio is only forwarded: no jitter buffer, no decoding
        self.rate = rate
        self.frame = frame_of(rate)
        self.codec: Codec | None = None
        self.config: MediaConfig | None = None
        self.codec_id: tuple[object, ...] | None = None
        self.decoder: _In | None = None
        self.encoder: _Out | None = None
        self.jitter: JitterBuffer | None = None
        self.tracker: EventTracker | None = None
        self.tracker_clock = 0
        self.pending: Pcm = np.zeros(0, dtype=np.int16)
        self.out_pt = 0
        self.out_ticks = 160
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
        self.config = config
        if codec_id != self.codec_id:
            self.codec_id, self.codec = codec_id, codec
            self._codecs()
            self.jitter = JitterBuffer(codec.clock, codec.clock // 50,
                                       min_delay=config.jitter_min, max_delay=config.jitter_max)
        self.out_pt = codec.pt
        self.clock = codec.clock
        if event is None:
            self.tracker = None
        elif self.tracker is None or self.tracker_clock != event.clock:
            self.tracker, self.tracker_clock = EventTracker(event.clock), event.clock

    def set_rate(self, rate: int) -> None:
        """The room now mixes at ``rate``: new decoder and encoder, the jitter buffer kept."""
        if rate != self.rate:
            self.rate, self.frame = rate, frame_of(rate)
            self._codecs()

    def _codecs(self) -> None:
        codec, config = self.codec, self.config
        self.pending = np.zeros(0, dtype=np.int16)
        if codec is None or config is None:
            return
        self.decoder = decoder_for(codec, self.rate)
        self.encoder, self.out_ticks = encoder_for(codec, self.rate, config)

    @property
    def is_opus(self) -> bool:
        return self.codec is not None and self.codec.key[0] == "opus"

    # ------------------------------------------------------------------ per packet
    def push(self, data: bytes, pt: int, seq: int, ts: int, ssrc: int, marker: bool,
             offset: int, kind: int, now: float) -> None:
        """The stream's sink: audio into the jitter buffer, events into the tracker."""
        if kind == KIND_AUDIO:
            if self.on_audio is not None:
                self.on_audio(data, offset, seq, ts, marker, now)
                if self.forward_only:
                    return
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
        """This tick's decoded frame at the room's rate, or None (nothing arrived: silence,
        DTX)."""
        jitter, decoder = self.jitter, self.decoder
        if jitter is None or decoder is None:
            return None
        frame = self.frame
        pending = self.pending
        while len(pending) < frame:
            got = jitter.pop(now)
            if got is None or got.kind == "empty":
                break
            if got.kind == "lost":
                pcm = decoder.lost(got.next_payload)
            else:
                try:
                    pcm = decoder.decode(got.payload)
                except (ValueError, RuntimeError):
                    self.stream.counters.malformed += 1
                    pcm = decoder.lost(None)
            pending = np.concatenate((pending, pcm)) if len(pending) else pcm
        if len(pending) < frame:
            self.pending = pending
            return None
        out, self.pending = pending[:frame], pending[frame:]
        return out

    def wants_audio(self) -> bool:
        """This tick's audio would be sent (the peer wants media, no digit's tone is on)."""
        stream = self.stream
        return (not self.silent and stream.remote is not None and stream.receives
                and self.encoder is not None)

    def send(self, pcm: Pcm | None, now: float, payload: bytes | None = None
             ) -> Callable[[bool], None] | None:
        """Send this tick's frame (``payload`` when already encoded, e.g. shared by every
        listener of the same mix and codec; ``pcm`` None: no audio this tick) or the due
        telephone-event packets; the ``done`` of a send_dtmf that has just sent its last
        packet."""
        finished = self._send_events(now) if self.dtmf else None
        stream, encoder = self.stream, self.encoder
        ts = self.ts
        self.ts = (ts + self.out_ticks) & 0xFFFFFFFF
        if (pcm is None or self.silent or stream.remote is None or not stream.receives
                or encoder is None):
            self.marker = True
            return finished
        if payload is None:
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
