"""One direction of a transcoded call: src leg's codec in, dst leg's codec out.

Packets from the source go into an adaptive jitter buffer as they arrive (``push``); the
media clock calls ``tick`` every 20 ms, which takes one frame's worth out, decodes it (or
conceals a lost one: Opus PLC or in-band FEC from the next packet, G.711 Appendix I style
PLC), re-encodes it and sends it with the gateway's own SSRC, sequence and timestamps.

Internally audio is 8 kHz mono int16: the G.711 legs' rate. Opus decodes straight to 8 kHz
and encodes from it (libopus resamples), so a wideband Opus peer is heard in narrowband on
the G.711 side, and gets narrowband Opus (maxplaybackrate honoured) the other way.

telephone-event packets skip the jitter buffer: they are re-stamped onto the outgoing
stream (payload type, timestamp and duration rescaled between 8000 and 48000 Hz clocks), or
turned into SIP INFO when the destination leg negotiated no telephone-event.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from gateway.media.dtmf import Event, EventTracker, rescale_duration
from gateway.media.g711 import G711Codec
from gateway.media.jitter import JitterBuffer
from gateway.media.opus import OpusDecoder, OpusEncoder, encoder_settings, parse_fmtp
from gateway.media.plc import G711Plc
from gateway.media.rtp import build, payload_end
from gateway.media.sdp import Codec
from gateway.media.stream import KIND_AUDIO, KIND_EVENT, LegStream
from gateway.sip.ids import random_hex

if TYPE_CHECKING:
    from gateway.media.session import MediaSession

RATE = 8000
FRAME = RATE // 50  # 160 samples: 20 ms

Pcm = np.ndarray


class _G711In:
    def __init__(self, name: str) -> None:
        self.codec = G711Codec(name)  # type: ignore[arg-type]
        self.plc = G711Plc(RATE)

    def decode(self, payload: bytes) -> Pcm:
        return self.plc.good(self.codec.decode(payload))

    def lost(self, samples: int, next_payload: bytes | None) -> Pcm:
        return self.plc.lost(samples)


class _OpusIn:
    def __init__(self) -> None:
        self.decoder = OpusDecoder(RATE)

    def decode(self, payload: bytes) -> Pcm:
        return self.decoder.decode(payload)

    def lost(self, samples: int, next_payload: bytes | None) -> Pcm:
        if next_payload:
            try:
                return self.decoder.decode_fec(next_payload, samples)
            except (ValueError, RuntimeError):
                pass
        return self.decoder.conceal(samples)


def _decoder(codec: Codec) -> _G711In | _OpusIn:
    if codec.key[0] == "opus":
        return _OpusIn()
    return _G711In(codec.name.upper())


def _encoder(codec: Codec, bitrate: int, complexity: int) -> tuple[object, int]:
    """(an object with encode(pcm) -> bytes, RTP ticks per 20 ms frame)."""
    if codec.key[0] == "opus":
        settings = encoder_settings(parse_fmtp(codec.fmtp), input_rate=RATE, bitrate=bitrate,
                                    complexity=complexity)
        return OpusEncoder.from_settings(settings), 960
    return G711Codec(codec.name.upper()), FRAME  # type: ignore[arg-type]


class Transcoder:
    __slots__ = (
        "decoder",
        "detect",
        "dst",
        "dst_event",
        "dst_side",
        "encoder",
        "ev_in",
        "ev_out_ts",
        "frames",
        "in_ticks",
        "jitter",
        "lost",
        "marker",
        "out_pt",
        "out_ticks",
        "pending",
        "sender_clock",
        "seq",
        "session",
        "src",
        "src_event",
        "ssrc",
        "tracker",
        "ts",
    )

    def __init__(
        self,
        session: MediaSession,
        src: LegStream,
        src_codec: Codec,
        dst: LegStream,
        dst_codec: Codec,
        dst_event: Codec | None,
        dst_side: str,
        src_event: Codec | None = None,
        detect: Callable[[object], None] | None = None,
    ) -> None:
        self.session = session
        self.detect = detect  # in-band DTMF detection on the decoded source audio
        self.src = src
        self.dst = dst
        self.dst_side = dst_side
        self.decoder = _decoder(src_codec)
        config = session.manager.config
        encoder, self.out_ticks = _encoder(dst_codec, config.opus_bitrate,
                                           config.opus_complexity)
        self.encoder = encoder
        self.out_pt = dst_codec.pt
        self.sender_clock = dst_codec.clock
        self.dst_event = dst_event
        self.src_event = src_event
        self.in_ticks = src_codec.clock // 50
        self.jitter = JitterBuffer(
            src_codec.clock, self.in_ticks, min_delay=config.jitter_min,
            max_delay=config.jitter_max,
        )
        self.pending = np.zeros(0, dtype=np.int16)  # decoded audio not yet re-encoded
        self.ssrc = int(random_hex(4), 16)
        self.seq = int(random_hex(2), 16)
        self.ts = int(random_hex(4), 16)
        self.marker = True
        self.frames = 0
        self.lost = 0
        self.ev_in: int | None = None  # the timestamp of the event being relayed
        self.ev_out_ts = 0
        self.tracker: EventTracker | None = None
        if dst_event is None:
            self.tracker = EventTracker(src_event.clock if src_event else 8000)
        dst.sender_ssrc = self.ssrc

    # ------------------------------------------------------------------ in
    def push(self, data: bytes, pt: int, seq: int, ts: int, ssrc: int, marker: bool,
             offset: int, kind: int, now: float) -> None:
        if kind == KIND_AUDIO:
            self.jitter.push(seq, ts, ssrc, marker, data[offset:payload_end(data)], now)
        elif kind == KIND_EVENT:
            self._event(data[offset:payload_end(data)], ts, marker, now)

    def _event(self, payload: bytes, ts: int, marker: bool, now: float) -> None:
        try:
            event = Event.parse(payload)
        except ValueError:
            self.src.counters.malformed += 1
            return
        if self.tracker is not None:
            done = self.tracker.feed(ts, event, now, marker=marker)
            on_dtmf = self.session.on_dtmf
            if done is not None and on_dtmf is not None:
                on_dtmf(self.dst_side, done[0], done[1])
            return
        dst_event = self.dst_event
        if dst_event is None:
            return
        first = ts != self.ev_in
        if first:
            self.ev_in = ts
            self.ev_out_ts = self.ts
        src_clock = self.src_event.clock if self.src_event else 8000
        out = Event(event.event, event.end, event.volume,
                    rescale_duration(event.duration, src_clock, dst_event.clock))
        packet = build(dst_event.pt, self.seq, self.ev_out_ts, self.ssrc, first, bytes(out))
        self.seq = (self.seq + 1) & 0xFFFF
        self.dst.send_rtp(packet)

    # ------------------------------------------------------------------ out
    def tick(self, now: float) -> None:
        """One 20 ms frame out (called by the media clock)."""
        pending = self.pending
        while len(pending) < FRAME:
            frame = self.jitter.pop(now)
            if frame is None or frame.kind == "empty":
                break
            if frame.kind == "lost":
                self.lost += 1
                pcm = self.decoder.lost(FRAME, frame.next_payload)
            else:
                try:
                    pcm = self.decoder.decode(frame.payload)
                except (ValueError, RuntimeError):
                    self.src.counters.malformed += 1
                    pcm = self.decoder.lost(FRAME, None)
            if self.detect is not None:
                self.detect(pcm)
            pending = np.concatenate((pending, pcm)) if len(pending) else pcm
        if len(pending) < FRAME:
            # nothing to play (silence suppression, DTX, before the first packet): send
            # nothing, keep the clock running so the far side sees the gap
            self.pending = pending
            self.ts = (self.ts + self.out_ticks) & 0xFFFFFFFF
            self.marker = True
            return
        out, self.pending = pending[:FRAME], pending[FRAME:]
        payload = self.encoder.encode(out)  # type: ignore[attr-defined]
        packet = build(self.out_pt, self.seq, self.ts, self.ssrc, self.marker, payload)
        self.dst.sender.update(self.ts, len(payload), now, self.sender_clock)
        self.marker = False
        self.seq = (self.seq + 1) & 0xFFFF
        self.ts = (self.ts + self.out_ticks) & 0xFFFFFFFF
        self.frames += 1
        self.dst.send_rtp(packet)
