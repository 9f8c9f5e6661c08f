"""The media of one REST-controlled call (ACS Call Automation): SIP legs joined by a mixer.

The gateway itself is a party of such a call (the "app leg": it plays prompts, collects DTMF,
records); SIP parties (legs) come and go, each negotiated on its own (``offer``/``answer``
for a leg the gateway calls, ``accept`` for one that called in, ``reoffer`` for hold and
resume), each on its own RTP/RTCP port pair, with its own codec and SRTP keys.

Media path (the sans-I/O parts are in gateway.media.mixer). A leg's RTP reaches its
``LegStream`` (source latching, SRTP, header checks, statistics: gateway.media.stream), then
its ``LegMedia``: audio into a jitter buffer, telephone-events into an ``EventTracker`` that
reports each digit once (``on_dtmf``); nothing is decoded per packet. On the manager's media
clock (one tick per 20 ms, in one of its 5 ms slices) the bridge pulls one 160-sample 8 kHz
frame out of each leg (decoded, or concealed), lets the ``Mixer`` build every leg's N-1 mix
plus the playback addressed to it, and has each leg's ``LegMedia`` send its frame in the
leg's own codec, SSRC, sequence and timestamps. This module is the adapter: SDP offer/answer
per leg (gateway.media.negotiate, as MediaSession does it), ports, the WAV file, RTCP
reports (LegStream.rtcp_report), media timeouts, and the owner's callbacks.

Invariants:
- Every leg is sent a frame every 20 ms while it wants media (silence when there is nothing
  to hear), except while a telephone-event it is sent covers that time (RFC 4733 2.5.1).
- Callbacks (``on_dtmf``, ``on_timeout``, ``done``) may change the bridge (remove a leg,
  close it); an exception in one is logged and counted, and never stops the tick or a port.
- Errors that carry a SIP answer are ``BridgeError`` (488 unusable SDP, 503 no ports); a
  failed ``offer`` or ``accept`` of a new leg holds no port afterwards.
- ``remove`` and ``close`` give every port back; ``close`` is idempotent.
"""

from __future__ import annotations

import logging
import wave
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from gateway.media import negotiate as neg
from gateway.media.legmedia import LegMedia, _Out, encoder_for
from gateway.media.mixer import TICK, Mix, Mixer, Pcm, Recording
from gateway.media.ports import PortsExhausted
from gateway.media.sdp import SdpError
from gateway.media.session import Policy, Side, _narrow, configure_stream, stream_quality
from gateway.media.sfuroom import AUDIO_LEVEL_URI, SfuPath
from gateway.media.stream import LegStream
from gateway.sip.ids import random_hex

if TYPE_CHECKING:
    from gateway.media.manager import MediaManager

log = logging.getLogger(__name__)

__all__ = ["Bridge", "BridgeError"]

HOUSEKEEPING_TICKS = 10  # lost-end digits, RTCP reports and timeouts every 200 ms
UNMIXED_CHANNELS = 5  # an unmixed recording's channels by default (ACS: channels 0-4)
_FLUSH_TICKS = 25  # recorded frames buffered before a write (0.5 s)
_HELD = frozenset({"sendonly", "inactive"})
_DIRECTIONS = frozenset({"sendrecv", "sendonly", "recvonly", "inactive"})
_EXTMAP_IDS = frozenset(str(n) for n in range(1, 15))  # RFC 8285 one-byte form


class BridgeError(Exception):
    """An SDP or a leg the bridge cannot take: ``status`` (488 unusable SDP, 503 no ports)
    and a text for the SIP Warning or the REST error."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


def _policy(codecs: Sequence[str], srtp: str) -> Policy:
    if srtp not in ("off", "optional", "mandatory"):
        raise BridgeError(488, f"srtp mode {srtp!r} is not off, optional or mandatory")
    for name in codecs:
        try:
            neg.codec_key(name)
        except KeyError:
            raise BridgeError(488, f"unknown codec {name!r}") from None
    return Policy(tuple(codecs), srtp)


def _check_srtp_offer(mode: str, peer: neg.PeerMedia) -> None:
    if peer.secure and mode == "off":
        raise SdpError("SRTP offered but srtp is off for this leg")
    if peer.secure and not peer.crypto:
        raise SdpError("RTP/SAVP without a usable a=crypto line (SDES)")
    if mode == "mandatory" and not peer.crypto:
        raise SdpError("SRTP (SDES a=crypto) is mandatory for this leg")


@dataclass(slots=True)
class _Leg:
    """One SIP party of the bridge: its negotiation and its media path."""

    name: str
    side: Side  # policy, SDP versions, codecs, SRTP keys (as MediaSession keeps them)
    media: LegMedia
    direction: str = "sendrecv"  # what the gateway's SDP says toward this leg
    timed_out: bool = False
    level_ext: int | None = None  # the RFC 6464 extension id the peer negotiated

    @property
    def stream(self) -> LegStream:
        return self.media.stream


class _Recorder:
    """A WAV file (16-bit, the room's rate when it started) written in half-second batches;
    ``wave`` keeps its header sizes right after every batch, so a crash leaves a readable
    file."""

    def __init__(self, path: Path, layout: Recording) -> None:
        self.layout = layout
        self.paused = False
        self.buffer: list[bytes] = []
        self.wav = wave.open(str(path), "wb")
        self.wav.setnchannels(layout.channels)
        self.wav.setsampwidth(2)
        self.wav.setframerate(layout.rate)

    def write(self, mix: Mix, rate: int) -> None:
        if not self.paused:
            self.buffer.append(self.layout.frame(mix, rate))
            if len(self.buffer) >= _FLUSH_TICKS:
                self.flush()

    def flush(self) -> None:
        data = b"".join(self.buffer)
        self.buffer.clear()
        self.wav.writeframes(data)

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self.wav.close()


class Bridge:
    """The media of one call whose parties are joined by the gateway's mixer."""

    def __init__(self, manager: MediaManager, call_id: str, *,
                 on_dtmf: Callable[[str, str], None],
                 on_timeout: Callable[[str, str], None] | None = None,
                 on_speakers: Callable[[list[str]], None] | None = None,
                 mode: str = "mcu", max_mixed: int | None = None) -> None:
        """``on_dtmf(leg, digit)`` once per RFC 4733 event a leg sends; ``on_timeout(leg,
        reason)`` once when a sending leg has sent nothing for ``[media] timeout`` s;
        ``on_speakers(legs)`` when the dominant speaker changes (the selected speakers,
        dominant first; [] when no one speaks). ``mode`` "mcu" mixes for everyone, "sfu"
        forwards the Opus parties' packets (gateway.media.sfuroom); ``max_mixed``: the most
        parties heard at once (default [media] max_mixed)."""
        if mode not in ("mcu", "sfu"):
            raise ValueError(f"room mode {mode!r} is not mcu or sfu")
        self.manager = manager
        self.call_id = call_id
        self.on_dtmf = on_dtmf
        self.on_timeout = on_timeout
        self.on_speakers = on_speakers
        self.mode = mode
        mixed = max_mixed or manager.config.max_mixed
        self.mixer = Mixer(8000, mixed)
        self._media: dict[str, LegMedia] = {}  # each leg's media path (for the SFU)
        self.sfu = (SfuPath(self._media, self.mixer.held, mixed, manager.config, 8000)
                    if mode == "sfu" else None)
        self.dominant_changes = 0
        self.on_sdp: Callable[[bytes], None] | None = None  # every SDP a party sends
        self.shared_encodes = 0  # frames encoded once for several listeners
        self.cname = f"acs-gateway-{random_hex(4)}".encode()
        self.ticks = 0
        self.callback_errors = 0
        self.closed = False
        self._legs: dict[str, _Leg] = {}  # in join order
        self._common: dict[tuple[object, ...], _Out] = {}  # codec: the common mix's encoder
        self._done: dict[int, Callable[[bool], None]] = {}  # play id -> done
        self._recorder: _Recorder | None = None
        manager.bridges.add(self)
        manager.add_transcoder(self)

    # ------------------------------------------------------------------ legs: SDP
    def offer(self, leg: str, codecs: Sequence[str], srtp: str) -> bytes:
        """A new outbound leg (ports taken): the gateway's SDP offer toward it. ``codecs``
        in order, then telephone-event; SDES keys for ``srtp`` optional or mandatory."""
        policy = _policy(codecs, srtp)
        try:
            offered, events = neg.offer_codecs(None, policy.codecs)
        except SdpError as exc:
            raise BridgeError(488, str(exc)) from None
        mine = self._legs.get(leg) or self._open(leg, Side(policy))
        side = mine.side
        side.policy = policy
        crypto = neg.offer_crypto(side.key_for) if srtp != "off" else []
        side.offered = (offered, events, crypto)
        side.answer_body = b""
        extra = [f"a=extmap:1 {AUDIO_LEVEL_URI}"] if self.sfu is not None else []
        return self._render(mine, codecs=[*offered, *events], secure=srtp == "mandatory",
                            crypto=crypto, offer_mux=True, direction=mine.direction,
                            extra=extra)

    def answer(self, leg: str, sdp: bytes) -> None:
        """The peer's answer to the gateway's last offer toward ``leg`` (BridgeError 488)."""
        if self.on_sdp is not None:
            self._call(self.on_sdp, sdp)
        mine = self._leg(leg)
        side = mine.side
        if side.offered is None:
            raise BridgeError(488, "an answer to no offer of the gateway")
        if sdp == side.answer_body:  # a 2xx repeating its 18x
            mine.stream.last_rx = self.manager.now()
            return
        try:
            peer = neg.parse_peer(sdp)
            srtp = self._take_answer(side, peer)
            side.answer_body = sdp
            mine.level_ext = _level_ext(peer) if self.sfu is not None else None
            self._configure(mine, peer, srtp)
        except SdpError as exc:
            raise BridgeError(488, str(exc)) from None

    def accept(self, leg: str, sdp: bytes, codecs: Sequence[str], srtp: str) -> bytes:
        """An inbound leg's offer (or a leg's re-INVITE): the gateway's answer."""
        if self.on_sdp is not None:
            self._call(self.on_sdp, sdp)
        policy = _policy(codecs, srtp)
        mine = self._legs.get(leg)
        side = mine.side if mine is not None else Side(policy)
        side.policy = policy
        try:
            peer = neg.parse_peer(sdp)
            _check_srtp_offer(srtp, peer)
            prefer = side.codec.key if mine is not None and side.codec is not None else None
            codec = neg.answer_codec(peer, policy.codecs, prefer)
        except SdpError as exc:
            raise BridgeError(488, str(exc)) from None
        new = mine is None
        mine = mine or self._open(leg, side)
        chosen = neg.answer_crypto(peer, side.key_for) if srtp != "off" else None
        keys = None
        if chosen is not None:
            theirs, ours = chosen
            keys = (theirs.suite, ours.master(), theirs.master())
        side.peer, side.offered, side.answer_body = peer, None, b""
        side.codec = side.recv_codec = codec  # the answer mirrors the offer's numbers
        side.event = side.recv_event = neg.answer_event(peer, codec)
        mine.level_ext = _level_ext(peer) if self.sfu is not None else None
        try:
            self._configure(mine, peer, keys)
        except SdpError as exc:
            if new:
                self.remove(leg)
            raise BridgeError(488, str(exc)) from None
        media = peer.sdp.media
        return self._render(
            mine, codecs=[codec, *([side.event] if side.event else [])], secure=peer.secure,
            proto=media[peer.index].proto, crypto=[chosen[1]] if chosen else [],
            rtcp_mux=peer.rtcp_mux,
            direction=_narrow(neg.REVERSE_DIRECTION[peer.direction], mine.direction),
            index=peer.index, lines=peer.lines,
            rejected=[m for i, m in enumerate(media) if i != peer.index],
            extra=([f"a=extmap:{mine.level_ext} {AUDIO_LEVEL_URI}"]
                   if mine.level_ext is not None else []))

    def reoffer(self, leg: str, direction: str) -> bytes:
        """A re-INVITE's SDP toward ``leg`` with ``direction`` (hold: "sendonly", resume:
        "sendrecv"), the current codec kept; the o= version goes up when the SDP changes.
        A held leg contributes nothing and hears only what plays to it (music on hold)."""
        if direction not in _DIRECTIONS:
            raise ValueError(f"direction {direction!r} is not one of {sorted(_DIRECTIONS)}")
        mine = self._leg(leg)
        side = mine.side
        codec = side.recv_codec or side.codec
        if codec is None:
            raise BridgeError(488, f"leg {leg} has no negotiated media to re-offer")
        mine.direction = direction
        self.mixer.set_held(leg, direction in _HELD)
        event = side.recv_event or side.event
        events = [event] if event is not None else []
        mode = side.policy.srtp
        crypto = neg.offer_crypto(side.key_for) if mode != "off" else []
        side.offered = ([codec], events, crypto)
        side.answer_body = b""
        secure = mode == "mandatory" or (side.peer is not None and side.peer.secure)
        return self._render(mine, codecs=[codec, *events], secure=secure, crypto=crypto,
                            offer_mux=True, direction=direction)

    def remove(self, leg: str) -> dict[str, object]:
        """``leg`` leaves: its ports are freed, its pending send_dtmf calls fail, playback
        addressed only to legs no longer here is cancelled; its CDR quality figures (the
        keys of MediaSession.quality; {} for an unknown leg)."""
        mine = self._legs.pop(leg, None)
        if mine is None:
            return {}
        figures = stream_quality(mine.stream, mine.side)
        self.mixer.discard(leg)
        self._media.pop(leg, None)
        if self.sfu is not None:
            self.sfu.leave(leg)
        self.manager.close_stream(mine.stream)
        for done in mine.media.drop_dtmf():
            self._call(done, False)
        for play_id in self.mixer.playing():
            to = self.mixer.targets(play_id)
            if to is not None and not any(name in self._legs for name in to):
                self.cancel_play(play_id)
        log.debug("call %s leg %s: left the bridge", self.call_id, leg)
        if not self.closed:
            self._retune()
        return figures

    def mute(self, leg: str, muted: bool) -> None:
        """A muted leg is not heard by the others (it still hears them)."""
        self._leg(leg)
        self.mixer.set_muted(leg, muted)

    def set_waiting(self, leg: str, waiting: bool) -> None:
        """A waiting leg (a conference PIN not keyed yet) is not heard and hears only what
        plays to it, like a held one; its SDP does not change."""
        self._leg(leg)
        self.mixer.set_held(leg, waiting)

    def set_gain(self, leg: str, gain: float) -> None:
        """``leg`` is heard by the others scaled by ``gain`` (linear 0..8; ValueError)."""
        self._leg(leg)
        self.mixer.set_gain(leg, gain)

    def legs(self) -> tuple[str, ...]:
        """The legs, in join order."""
        return tuple(self._legs)

    @property
    def rate(self) -> int:
        """The room's internal rate: 48 kHz when every party is Opus, 8 kHz when every one
        is G.711, 16 kHz otherwise."""
        return self.mixer.rate

    def speakers(self) -> list[str]:
        """The parties heard now, the dominant speaker first."""
        ranking = self.mixer.speakers.ranking()
        dominant = self.mixer.speakers.dominant
        if dominant is not None and dominant in ranking:
            ranking.remove(dominant)
            ranking.insert(0, dominant)
        return ranking

    def status(self) -> dict[str, object]:
        """Figures for the status file: mode, rate, parties, who is heard."""
        speakers = self.mixer.speakers
        return {"mode": self.mode, "rate": self.rate, "parties": len(self._legs),
                "mixed": len(speakers.selected), "dominant": speakers.dominant,
                "dominant_changes": self.dominant_changes,
                "shared_encodes": self.shared_encodes,
                "forwarded": self.sfu.forwarder.forwarded if self.sfu is not None else 0}

    # ------------------------------------------------------------------ the app's media
    def play(self, pcm: npt.NDArray[np.int16], *, to: Collection[str] | None, loop: bool,
             done: Callable[[bool], None], rate: int = 8000) -> int:
        """Play int16 mono ``pcm`` at ``rate`` to the legs ``to`` (None or empty: everyone, as ACS
        reads an empty playTo) from the next tick; ``done(True)`` when it has played,
        ``done(False)`` when cancelled (or when every leg it is for has left). Its id."""
        if to is not None and not to:
            to = None
        if to is not None:
            unknown = [name for name in to if name not in self._legs]
            if unknown:
                raise KeyError(f"call {self.call_id}: no leg {', '.join(unknown)}")
        play_id = self.mixer.play(pcm, to, loop, rate)
        self._done[play_id] = done
        return play_id

    def cancel_play(self, play_id: int | None = None) -> None:
        """Stop one playback (None: all of them); each one stopped gets ``done(False)``."""
        for stopped in self.mixer.cancel(play_id):
            done = self._done.pop(stopped, None)
            if done is not None:
                self._call(done, False)

    def send_dtmf(self, leg: str, digits: str, done: Callable[[bool], None]) -> None:
        """RFC 4733 digits toward ``leg`` with its negotiated telephone-event: 100 ms tones
        (updates every 20 ms, the end packet three times), 50 ms apart; after any earlier
        send_dtmf to the leg. ``done(True)`` after the last packet; ``done(False)`` at once
        when the leg has no telephone-event, or later if the leg leaves first."""
        mine = self._leg(leg)
        event = mine.side.event
        if event is None:
            self._call(done, False)
            return
        mine.media.queue_dtmf(digits, event, done)  # ValueError for a non-digit or none

    def record_start(self, path: Path, unmixed: bool, *, channels: int | None = None) -> None:
        """Record to a WAV at ``path`` (16-bit, at the room's rate when it starts: 8, 16 or
        48 kHz): mixed, the mono sum of every leg and
        every playback; unmixed, one channel per leg in join order (``channels`` of them,
        by default UNMIXED_CHANNELS or the legs present if more; later legs take the free
        channels, legs beyond them are not recorded). ValueError if already recording."""
        if self._recorder is not None:
            raise ValueError(f"call {self.call_id}: already recording")
        layout = Recording(unmixed, max(len(self._legs), channels or UNMIXED_CHANNELS),
                           self.mixer.rate)
        for leg in self._legs:
            layout.join(leg)
        self._recorder = _Recorder(path, layout)

    def record_pause(self) -> None:
        """Nothing is written until ``record_resume`` (the file is left open)."""
        if self._recorder is not None:
            self._recorder.paused = True

    def record_resume(self) -> None:
        if self._recorder is not None:
            self._recorder.paused = False

    def record_stop(self) -> None:
        """The WAV is completed and closed (nothing happens when not recording)."""
        recorder, self._recorder = self._recorder, None
        if recorder is not None:
            try:
                recorder.close()
            except OSError:
                log.exception("call %s: recording could not be finished", self.call_id)

    def close(self) -> None:
        """Every playback cancelled, every leg removed (ports back), the recording closed."""
        if self.closed:
            return
        self.closed = True
        self.manager.remove_transcoder(self)
        self.manager.bridges.discard(self)
        self.cancel_play()
        for leg in list(self._legs):
            self.remove(leg)
        self.record_stop()

    # ------------------------------------------------------------------ the media clock
    def tick(self, now: float) -> None:
        """One 20 ms frame: pull, mix, send, record; housekeeping every 200 ms."""
        if self.closed:
            return
        self.ticks += 1
        legs = self._legs
        sfu = self.sfu
        frame = self.mixer.frame
        frames: dict[str, Pcm] = {}
        for name, leg in legs.items():
            media = leg.media
            if media.forward_only:
                continue  # forwarded as it came, its level from RFC 6464
            pcm = media.pull(now)
            if pcm is not None and leg.stream.sends and len(pcm) == frame:
                frames[name] = pcm
        mix = self.mixer.mix(frames, sfu.take_levels() if sfu is not None else None)
        if sfu is not None:
            sfu.tick(mix, self.mixer.speakers.selected, self._recorder is not None, now)
        receivers = sfu.receivers if sfu is not None else ()
        common = mix.common
        shared: dict[tuple[object, ...], bytes] = {}
        for name, pcm in mix.out.items():
            leg_now = legs.get(name)
            if leg_now is None:
                continue
            media = leg_now.media
            if name in receivers:
                finished = media.send(None, now)  # forwarded streams; its own for DTMF
            elif pcm is common and media.codec_id is not None and media.wants_audio():
                key = media.codec_id
                payload = shared.get(key)
                if payload is None:
                    payload = self._encode_common(media, pcm)
                    if payload is not None:
                        shared[key] = payload
                else:
                    self.shared_encodes += 1
                finished = media.send(pcm, now, payload)
            else:
                finished = media.send(pcm, now)
            if finished is not None:
                self._call(finished, True)
        if mix.dominant_changed:
            self.dominant_changes += 1
            if self.on_speakers is not None:
                self._call(self.on_speakers, self.speakers())
        if self._recorder is not None:
            self._record(mix)
        for play_id in mix.finished:
            done = self._done.pop(play_id, None)
            if done is not None:
                self._call(done, True)
        if self.ticks % HOUSEKEEPING_TICKS == 0:
            self._housekeeping(now)

    def _record(self, mix: Mix) -> None:
        recorder = self._recorder
        assert recorder is not None
        try:
            recorder.write(mix, self.mixer.rate)
        except OSError:
            log.exception("call %s: recording failed, stopped", self.call_id)
            self.record_stop()

    def _housekeeping(self, now: float) -> None:
        """Digits whose end packets were lost, RTCP reports (every ``rtcp_interval`` s per
        leg, staggered), and media timeouts."""
        config = self.manager.config
        turns = max(1, round(config.rtcp_interval / (TICK * HOUSEKEEPING_TICKS)))
        turn = (self.ticks // HOUSEKEEPING_TICKS) % turns
        for name, leg in list(self._legs.items()):
            if self._legs.get(name) is not leg:
                continue  # a callback removed it
            stream = leg.stream
            leg.media.poll_digits(now)
            if leg.side.codec is None:
                continue
            if hash(stream) % turns == turn:
                stream.rtcp_report(now, self.cname, leg.media.ssrc)
            if (config.timeout > 0 and stream.sends and not leg.timed_out
                    and now - stream.last_rx > config.timeout and self.on_timeout is not None):
                leg.timed_out = True
                self._call(self.on_timeout, name, "media timeout")

    # ------------------------------------------------------------------ internals
    def _call(self, callback: Callable[..., None], *args: object) -> None:
        """Run a callback of the owner; its exception is logged and counted, not raised."""
        try:
            callback(*args)
        except Exception:
            self.callback_errors += 1
            log.exception("call %s: bridge callback %r failed", self.call_id, callback)

    def _leg(self, leg: str) -> _Leg:
        try:
            return self._legs[leg]
        except KeyError:
            raise KeyError(f"call {self.call_id}: no leg {leg}") from None

    def _open(self, name: str, side: Side) -> _Leg:
        if self.closed:
            raise BridgeError(503, f"call {self.call_id}: the bridge is closed")
        try:
            stream = self.manager.open_stream(self)
        except PortsExhausted as exc:
            raise BridgeError(503, str(exc)) from None
        side.stream = stream
        media = LegMedia(stream, lambda digit: self._call(self.on_dtmf, name, digit),
                         self.mixer.rate)
        leg = self._legs[name] = _Leg(name, side, media)
        self._media[name] = media
        self.mixer.add(name)
        if self._recorder is not None:
            self._recorder.layout.join(name)
        log.debug("call %s leg %s: joined the bridge on port %d", self.call_id, name,
                  stream.port)
        return leg

    def _render(self, leg: _Leg, **kwargs: object) -> bytes:
        """The gateway's SDP toward ``leg``; the o= version goes up only when it changed."""
        side = leg.side
        kwargs.update(address=self.manager.address, port=leg.stream.port)
        core = neg.render(session_id=side.session_id, version=0, **kwargs)  # type: ignore[arg-type]
        if core != side.last_core:
            if side.last_core:
                side.version += 1
            side.last_core = core
            side.last_body = neg.render(session_id=side.session_id, version=side.version,
                                        **kwargs)  # type: ignore[arg-type]
        return side.last_body

    @staticmethod
    def _take_answer(side: Side, peer: neg.PeerMedia) -> tuple[str, bytes, bytes] | None:
        """Match the peer's answer to the gateway's offer (codec by name/clock/channels:
        an answer SHOULD, not MUST, keep the offer's numbers); the SRTP keys agreed."""
        assert side.offered is not None
        codecs, events, crypto = side.offered
        by_key = {c.key: c for c in codecs}
        chosen = next((c for c in peer.codecs if c.key in by_key), None)
        if chosen is None:
            raise SdpError("the answer has none of the offered codecs")
        event = recv_event = None
        for theirs in peer.events:
            ours = next((e for e in events if e.clock == theirs.clock), None)
            if ours is not None:
                event, recv_event = theirs, ours
                break
        srtp = None
        for line in peer.crypto if crypto else ():
            mine = next((c for c in crypto if (c.tag, c.suite) == (line.tag, line.suite)), None)
            if mine is not None:
                srtp = (mine.suite, mine.master(), line.master())
                break
        if srtp is None and crypto and (side.policy.srtp == "mandatory" or peer.secure):
            raise SdpError("the answer accepts none of the offered SRTP suites")
        side.peer = peer
        side.codec, side.recv_codec = chosen, by_key[chosen.key]
        side.event, side.recv_event = event, recv_event
        return srtp

    def _configure(self, leg: _Leg, peer: neg.PeerMedia,
                   srtp: tuple[str, bytes, bytes] | None) -> None:
        """Point ``leg``'s stream at what the peer's SDP says (as MediaSession does)."""
        side = leg.side
        configure_stream(leg.stream, side, peer, srtp, self.manager.now())
        assert side.codec is not None
        leg.media.use(side.codec, side.recv_event or side.event, self.manager.config)
        leg.timed_out = False
        self._retune()
        if self.sfu is not None:
            self.sfu.configure(leg.name, leg.media, leg.level_ext)

    def _retune(self) -> None:
        """The room's rate follows its parties' codecs (``rate``); every path follows it."""
        codecs = [leg.media.codec for leg in self._legs.values() if leg.media.codec is not None]
        if not codecs:
            return
        opus = sum(1 for codec in codecs if codec.key[0] == "opus")
        rate = 48000 if opus == len(codecs) else 8000 if opus == 0 else 16000
        if rate == self.mixer.rate:
            return
        log.debug("call %s: the room mixes at %d Hz from now", self.call_id, rate)
        self.mixer.set_rate(rate)
        self._common.clear()
        for leg in self._legs.values():
            leg.media.set_rate(rate)
        if self.sfu is not None:
            self.sfu.set_rate(rate)

    def _encode_common(self, media: LegMedia, pcm: Pcm) -> bytes | None:
        """The common mix in ``media``'s codec, by the room's one encoder for that codec."""
        assert media.codec_id is not None and media.codec is not None
        encoder = self._common.get(media.codec_id)
        if encoder is None:
            encoder = self._common[media.codec_id] = encoder_for(
                media.codec, self.mixer.rate, self.manager.config)[0]
        try:
            return encoder.encode(pcm)
        except (ValueError, RuntimeError):
            return None  # the leg's own encoder tries


def _level_ext(peer: neg.PeerMedia) -> int | None:
    """The id of the RFC 6464 client-to-mixer audio level extension in the peer's SDP
    (``a=extmap:ID[/direction] URI``, RFC 8285), if it offered it."""
    for value in peer.sdp.media[peer.index].attribute_values("extmap"):
        parts = value.split()
        if len(parts) >= 2 and parts[1] == AUDIO_LEVEL_URI:
            number = parts[0].split("/", 1)[0]
            if number in _EXTMAP_IDS:
                return int(number)
    return None


