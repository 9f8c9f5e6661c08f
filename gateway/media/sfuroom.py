"""The SFU side of a room (gateway.media.bridge in ``mode = "sfu"``).

Opus parties are *receivers*: instead of a mix they get the selected speakers' packets
forwarded as they arrive, payload untouched, each on an SSRC slot of its own
(gateway.media.sfu.Forwarder rewrites SSRC, sequence numbers and timestamps per receiver).
Every other source is turned into an Opus stream once per tick and forwarded the same way:
a G.711 party's decoded audio, the playback addressed to everyone (``@play``), the playback
addressed to one receiver alone (``@play:LEG``, forwarded to that receiver only). Parties with
another codec are not receivers: the bridge sends them the MCU mix as usual.

Who is forwarded is the mixer's speaker selection (gateway.media.speakers): levels come from
the RFC 6464 header extension when the party negotiated it, else from its decoded audio. An
Opus party with the extension is not decoded at all (``LegMedia.forward_only``) unless
someone needs its audio: a party that gets a mix, or a recording.

Invariants:
- A receiver never gets its own packets, and a held receiver gets only what plays to it.
- Nothing raises out of ``on_packet`` (it runs per datagram).
- Per tick: the levels of the packets seen since the last tick, then they are forgotten.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.media.legmedia import LegMedia
from gateway.media.mixer import Mix, Pcm
from gateway.media.opus import OpusEncoder, encoder_settings, parse_fmtp
from gateway.media.rtp import payload_end
from gateway.media.sfu import Forwarder
from gateway.media.speakers import audio_level
from gateway.sip.ids import random_hex

if TYPE_CHECKING:
    from gateway.config import MediaConfig

log = logging.getLogger(__name__)

__all__ = ["AUDIO_LEVEL_URI", "PLAY", "SfuPath"]

AUDIO_LEVEL_URI = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
PLAY = "@play"
_OPUS_TICKS = 960


@dataclass(slots=True)
class _Uplink:
    """A source the room encodes itself: its Opus encoder and RTP numbering."""

    encoder: OpusEncoder
    seq: int
    ts: int  # at ``start``: later ones follow the media clock, silent ticks included
    start: float
    marker: bool = True


class SfuPath:
    """Forwarding for one room: receivers, levels, the sources it encodes."""

    __slots__ = ("_config", "_held", "_legs", "_rate", "_uplinks", "errors", "ext",
                 "forwarder", "levels", "receivers")

    def __init__(self, legs: Mapping[str, LegMedia], held: Callable[[str], bool],
                 slots: int, config: MediaConfig, rate: int) -> None:
        self._legs = legs
        self._held = held
        self._config = config
        self._rate = rate
        self.forwarder = Forwarder(slots + 2)  # the speakers, @play and one @play:LEG
        self.receivers: set[str] = set()
        self.ext: dict[str, int] = {}  # leg -> its RFC 6464 extension id
        self.levels: dict[str, float] = {}  # dBov seen since the last tick
        self._uplinks: dict[str, _Uplink] = {}
        self.errors = 0  # packets whose forwarding failed (a bug: the first is logged)

    # ------------------------------------------------------------------ membership
    def configure(self, name: str, media: LegMedia, ext_id: int | None) -> None:
        """``name``'s codec is (re)negotiated: an Opus party becomes a receiver whose audio
        is forwarded as it arrives; any other party gets the mix."""
        if ext_id is None:
            self.ext.pop(name, None)
        else:
            self.ext[name] = ext_id
        if media.is_opus:
            if name in self.receivers:
                self.forwarder.set_pt(name, media.out_pt)
            else:
                self.receivers.add(name)
                self.forwarder.add_receiver(name, media.out_pt)
            media.on_audio = lambda data, offset, seq, ts, marker, now: self.on_packet(
                name, data, offset, seq, ts, marker, now)
        else:
            self.leave(name, forget=False)
            media.on_audio = None
            media.forward_only = False

    def leave(self, name: str, forget: bool = True) -> None:
        if name in self.receivers:
            self.receivers.discard(name)
            self.forwarder.remove_receiver(name)
        self._uplinks.pop(f"{PLAY}:{name}", None)
        if forget:
            self.forwarder.forget_source(name)
            self._uplinks.pop(name, None)
            self.ext.pop(name, None)
            self.levels.pop(name, None)

    def set_rate(self, rate: int) -> None:
        """The room's rate changed: the room's own encoders start again at it."""
        if rate != self._rate:
            self._rate = rate
            for source in self._uplinks:
                self.forwarder.restart_source(source)
            self._uplinks.clear()

    # ------------------------------------------------------------------ per packet
    def on_packet(self, name: str, data: bytes, offset: int, seq: int, ts: int, marker: bool,
                  now: float) -> None:
        """An Opus party's audio packet: its level noted, forwarded when it is selected."""
        try:
            ext_id = self.ext.get(name)
            if ext_id is not None:
                level = audio_level(data, ext_id)
                if level is not None:
                    dbov = -float(level)
                    if dbov > self.levels.get(name, -127.0):
                        self.levels[name] = dbov
            out = self.forwarder.forward(name, memoryview(data)[offset:payload_end(data)],
                                         seq, ts, marker, now)
            self._send(out, voice=True)
        except Exception:  # never out of a datagram handler; logged once, then counted
            self.errors += 1
            if self.errors == 1:
                log.exception("sfu: forwarding a packet of %s failed", name)

    def _send(self, out: list[tuple[str, bytes]], voice: bool, only: str | None = None
              ) -> None:
        legs = self._legs
        for receiver, packet in out:
            if only is not None and receiver != only:
                continue
            if voice and self._held(receiver):
                continue
            media = legs.get(receiver)
            if media is not None:
                media.stream.send_rtp(packet)

    # ------------------------------------------------------------------ per tick
    def take_levels(self) -> dict[str, float]:
        """The RFC 6464 levels of the forward-only parties this tick (others are measured
        on their decoded audio by the mixer)."""
        levels = {name: level for name, level in self.levels.items()
                  if (media := self._legs.get(name)) is not None and media.forward_only}
        self.levels = {}
        return levels

    def tick(self, mix: Mix, selected: frozenset[str], recording: bool, now: float) -> None:
        """Choose what is forwarded, encode and forward the sources the room makes itself,
        and decide which Opus parties must still be decoded."""
        legs = self._legs
        receivers = self.receivers
        sources = set(selected)
        plays = mix.plays
        if mix.play_common is not None:
            sources.add(PLAY)
            for name in receivers:
                if plays.get(name) is not mix.play_common:
                    sources.add(f"{PLAY}:{name}")
        self.forwarder.select(sources, now)
        for name in selected:
            if name not in receivers:
                pcm = mix.heard.get(name)
                if pcm is not None:
                    self._uplink(name, pcm, now, None, voice=True)
        if mix.play_common is not None:
            self._uplink(PLAY, mix.play_common, now, None, voice=False)
            for name in receivers:
                pcm = plays.get(name)
                if pcm is not None and pcm is not mix.play_common:
                    self._uplink(f"{PLAY}:{name}", pcm, now, name, voice=False)
        need_decode = recording or any(name not in receivers for name in legs)
        for name in receivers:
            media = legs.get(name)
            if media is not None:
                media.forward_only = not need_decode and name in self.ext

    def _uplink(self, source: str, pcm: Pcm, now: float, only: str | None, voice: bool
                ) -> None:
        uplink = self._uplinks.get(source)
        if uplink is None:
            settings = encoder_settings(parse_fmtp(None), input_rate=self._rate,
                                        bitrate=self._config.opus_bitrate,
                                        complexity=self._config.opus_complexity)
            self.forwarder.restart_source(source)
            uplink = self._uplinks[source] = _Uplink(OpusEncoder.from_settings(settings),
                                                     int(random_hex(2), 16),
                                                     int(random_hex(4), 16), now)
        try:
            payload = uplink.encoder.encode(pcm)
        except (ValueError, RuntimeError):
            return
        ts = (uplink.ts + round((now - uplink.start) / 0.02) * _OPUS_TICKS) & 0xFFFFFFFF
        out = self.forwarder.forward(source, payload, uplink.seq, ts, uplink.marker, now)
        uplink.seq = (uplink.seq + 1) & 0xFFFF
        uplink.marker = False
        self._send(out, voice=voice, only=only)
