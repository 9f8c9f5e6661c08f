"""A call's media session: two anchored legs ("a" and "b"), joined by a relay or transcoders.

The B2BUA hands every SDP it receives to the session and sends what the session returns:

- ``offer(side, body)``: the peer on ``side`` made an offer; returns the gateway's offer
  toward the other side (the other side's ports, SRTP keys and codecs).
- ``answer(side, body)``: the peer on ``side`` answered the gateway's offer; returns the
  gateway's answer toward the offerer, and joins the legs: relayed when both use the same
  codec, transcoded otherwise.
- ``local_offer(side)`` / ``local_answer(side, body)``: an offer the gateway makes on its
  own toward ``side`` (a transfer target), built from what the other side already uses.
- ``current(side)``: the last SDP the gateway sent toward ``side`` (for session refreshes).

Errors are ``SdpError`` (the SIP layer answers 488 with a Warning) and ``PortsExhausted``
(503). A failed offer leaves the session as it was.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.media import negotiate as neg
from gateway.media.dtmf import Event, EventTracker, GoertzelDetector
from gateway.media.g711 import G711Codec
from gateway.media.icelite import IceLite, ice_lines, peer_credentials
from gateway.media.quality import mos
from gateway.media.rtp import payload_end
from gateway.media.sdp import Codec, Crypto, SdpError
from gateway.media.srtp import SrtpContext, SrtpError, generate_master
from gateway.media.stream import KIND_AUDIO, KIND_CN, KIND_EVENT, LegStream, Sink
from gateway.media.transcode import Transcoder
from gateway.sip.ids import random_hex

if TYPE_CHECKING:
    from gateway.media.manager import MediaManager

log = logging.getLogger(__name__)

SIDES = ("a", "b")


def _other(side: str) -> str:
    return "b" if side == "a" else "a"


@dataclass(slots=True)
class Policy:
    """What one side may use: its trunk's codecs and SRTP mode."""

    codecs: tuple[str, ...] = ("PCMU", "PCMA")
    srtp: str = "off"  # off | optional | mandatory
    inband: bool = False  # detect DTMF tones in this side's G.711 audio
    ice: bool = False  # offer ICE-lite toward this side (a registered user)


@dataclass(slots=True)
class Side:
    """The gateway's view of one leg's media negotiation."""

    policy: Policy
    stream: LegStream | None = None
    session_id: str = field(default_factory=neg.session_id)
    version: int = 0
    last_core: bytes = b""  # the last SDP sent, rendered at version 0 (change detection)
    last_body: bytes = b""
    peer: neg.PeerMedia | None = None  # the peer's last SDP (offer or answer)
    codec: Codec | None = None  # the codec on this leg, with the peer's payload number
    event: Codec | None = None  # telephone-event on this leg, if any (the peer's number)
    # the same two with the numbers the peer sends with: the gateway's, from its own SDP
    # (RFC 3264 6.1: each side sends with the numbers the receiver listed)
    recv_codec: Codec | None = None
    recv_event: Codec | None = None
    offered: tuple[list[Codec], list[Codec], list[Crypto]] | None = None  # our last offer
    answer_body: bytes = b""  # the peer's last answer to it, as received
    masters: dict[str, bytes] = field(default_factory=dict)  # our SRTP keys, per suite
    srtp: tuple[str, bytes, bytes] | None = None  # (suite, our key, the peer's key)
    ice: IceLite | None = None  # the gateway as an ICE-lite agent toward this side

    def ice_sdp(self, peer: neg.PeerMedia | None, offering: bool, address: str, port: int,
                rtcp_mux: bool) -> dict[str, list[str]]:
        """The render() arguments for ICE-lite toward this side: when the peer does ICE
        (its SDP has credentials), or when offering to a side whose policy says so."""
        creds = peer_credentials(peer) if peer is not None else None
        if creds is None and not (offering and self.policy.ice):
            return {}
        if self.ice is None:
            self.ice = IceLite.new()
        if creds is not None:
            self.ice.set_remote(*creds)
        session, media = ice_lines(self.ice, address, port, rtcp_mux)
        return {"session_extra": session, "extra": media}

    def key_for(self, suite: str) -> bytes:
        master = self.masters.get(suite)
        if master is None:
            master = self.masters[suite] = generate_master(suite)
        return master


class MediaSession:
    """The media of one call."""

    def __init__(
        self,
        manager: MediaManager,
        call_id: str,
        *,
        on_timeout: Callable[[str], None] | None = None,
        on_dtmf: Callable[[str, str, int], None] | None = None,
    ) -> None:
        self.manager = manager
        self.call_id = call_id
        self.sides = {"a": Side(Policy()), "b": Side(Policy())}
        self.pending: str | None = None  # the side whose offer awaits an answer
        self.mode = "none"  # none | relay | transcode
        self.transcoders: list[Transcoder] = []
        self.on_timeout = on_timeout
        self.on_dtmf = on_dtmf  # (side to send on, digit, duration ms): SIP INFO
        self.closed = False
        self.inband_digits = 0  # digits detected in audio
        # telephone-event trackers turning digits into SIP INFO, with the side to send on:
        # polled every second so a digit whose end packets were all lost is still reported
        self.trackers: list[tuple[EventTracker, str]] = []
        self.active = False  # answered: the media timeout applies
        self.cname = f"acs-gateway-{random_hex(4)}".encode()
        self.ssrc = int(random_hex(4), 16)

    # ------------------------------------------------------------------ policy
    def set_policy(self, side: str, codecs: Sequence[str], srtp: str, inband: bool = False,
                   ice: bool = False) -> None:
        self.sides[side].policy = Policy(tuple(codecs), srtp, inband, ice)

    def detector(self, side: str) -> Callable[[object], None] | None:
        """For a side with in-band DTMF detection on and a G.711 codec: a function taking
        that side's decoded audio (int16 PCM) and reporting each digit to the other side
        as SIP INFO; else None."""
        mine = self.sides[side]
        codec = mine.codec
        on_dtmf = self.on_dtmf
        if not mine.policy.inband or codec is None or on_dtmf is None:
            return None
        if codec.key not in (neg.PCMU, neg.PCMA):
            return None
        detector = GoertzelDetector(8000)
        to = _other(side)

        def feed(pcm: object) -> None:
            for digit, ms in detector.feed(pcm):  # type: ignore[arg-type]
                self.inband_digits += 1
                on_dtmf(to, digit, ms)

        return feed

    def activate(self) -> None:
        """The call is answered: silence from a sending peer now counts toward the timeout."""
        self.active = True
        now = self.manager.now()
        for side in self.sides.values():
            if side.stream is not None:
                side.stream.last_rx = now

    def stream(self, side: str) -> LegStream | None:
        return self.sides[side].stream

    def current(self, side: str) -> bytes:
        return self.sides[side].last_body

    # ------------------------------------------------------------------ offer/answer
    def check_offer(self, side: str, body: bytes) -> None:
        """Raise SdpError when ``side``'s offer cannot be taken (before routing the call)."""
        peer = neg.parse_peer(body)
        self._check_srtp_offer(side, peer)
        allowed = self.sides[side].policy.codecs
        keys = {neg.codec_key(name) for name in allowed}
        if not any(codec.key in keys for codec in peer.codecs):
            names = ", ".join(f"{c.name}/{c.clock}" for c in peer.codecs)
            raise SdpError(f"no acceptable codec: offered {names}, allowed {', '.join(allowed)}")

    def offer(self, side: str, body: bytes) -> bytes:
        """``side``'s peer offers ``body``; the gateway's offer toward the other side.

        Both legs' ports are taken here, so that a full port pool refuses the call before
        the far side is alerted."""
        peer = neg.parse_peer(body)
        mine = self.sides[side]
        self._check_srtp_offer(side, peer)
        neg.offer_codecs(peer, self.sides[_other(side)].policy.codecs)  # SdpError: nothing
        self._ensure_stream(side)
        to = _other(side)
        out = self._make_offer(to, peer)
        mine.peer = peer
        self.pending = side
        return out

    def local_offer(self, side: str) -> bytes:
        """An offer toward ``side`` made by the gateway itself, from the other side's media."""
        other = self.sides[_other(side)]
        self.pending = None
        return self._make_offer(side, other.peer)

    def answer(self, side: str, body: bytes) -> bytes:
        """``side``'s peer answers the gateway's offer; the answer toward the offerer.

        The same answer again (a 2xx repeating its 18x) changes nothing and gets the same
        body back; a different one (RFC 3261 13.2.1 lets a 2xx differ from an unreliable
        18x) is taken as the answer.
        """
        offerer = _other(side)
        mine = self.sides[side]
        if mine.offered is None or self.sides[offerer].peer is None:
            raise SdpError("an answer without an offer")
        if body == mine.answer_body and self.pending is None:
            return self.sides[offerer].last_body
        self._take_answer(side, body)
        direction = mine.peer.direction if mine.peer is not None else None
        out = self._make_answer(offerer, mine.codec, direction)
        self.pending = None
        self._join()
        return out

    def local_answer(self, side: str, body: bytes) -> None:
        """``side``'s peer answered ``local_offer``: join it to what the other side uses."""
        self._take_answer(side, body)
        self._join()

    # ------------------------------------------------------------------ internals
    def _check_srtp_offer(self, side: str, peer: neg.PeerMedia) -> None:
        mode = self.sides[side].policy.srtp
        if peer.secure and mode == "off":
            raise SdpError("SRTP offered but srtp is off for this trunk")
        if peer.secure and not peer.crypto:
            raise SdpError("RTP/SAVP without a usable a=crypto line (SDES)")
        if mode == "mandatory" and not peer.crypto:
            raise SdpError("SRTP (SDES a=crypto) is mandatory for this trunk")

    def _ensure_stream(self, side: str) -> LegStream:
        mine = self.sides[side]
        if mine.stream is None:
            mine.stream = self.manager.open_stream(self)
        return mine.stream

    def _render(self, side: str, **kwargs: object) -> bytes:
        mine = self.sides[side]
        core = neg.render(session_id=mine.session_id, version=0, **kwargs)  # type: ignore[arg-type]
        if core != mine.last_core:
            if mine.last_core:
                mine.version += 1
            mine.last_core = core
            mine.last_body = neg.render(
                session_id=mine.session_id, version=mine.version, **kwargs  # type: ignore[arg-type]
            )
        return mine.last_body

    def _make_offer(self, to: str, source: neg.PeerMedia | None) -> bytes:
        target = self.sides[to]
        codecs, events = neg.offer_codecs(source, target.policy.codecs)
        stream = self._ensure_stream(to)
        mode = target.policy.srtp
        crypto = neg.offer_crypto(target.key_for) if mode != "off" else []
        target.offered = (codecs, events, crypto)
        ice = target.ice_sdp(None, True, self.manager.address, stream.port, False)
        return self._render(
            to,
            address=self.manager.address,
            port=stream.port,
            codecs=[*codecs, *events],
            secure=mode == "mandatory",
            crypto=crypto,
            offer_mux=True,
            direction=source.direction if source is not None else "sendrecv",
            **ice,
        )

    def _take_answer(self, side: str, body: bytes) -> None:
        """Read the answer ``side``'s peer gave to the gateway's offer and set up its leg."""
        mine = self.sides[side]
        if mine.offered is None:
            raise SdpError("an answer to no offer of the gateway")
        codecs, events, crypto = mine.offered
        peer = neg.parse_peer(body)
        # matched by name/clock/channels: an answer SHOULD, not MUST, keep the offer's numbers
        by_key = {c.key: c for c in codecs}
        chosen = recv = None
        for codec in peer.codecs:
            ours = by_key.get(codec.key)
            if ours is not None:
                chosen, recv = codec, ours
                break
        if chosen is None:
            raise SdpError("the answer has none of the offered codecs")
        event = recv_event = None
        for codec in peer.events:
            ours_event = next((e for e in events if e.clock == codec.clock), None)
            if ours_event is not None:
                event, recv_event = codec, ours_event
                break
        srtp = None
        if crypto:
            for line in peer.crypto:
                for mine_line in crypto:
                    if mine_line.tag == line.tag and mine_line.suite == line.suite:
                        srtp = (mine_line.suite, mine_line.master(), line.master())
                        break
                if srtp is not None:
                    break
            if srtp is None and (mine.policy.srtp == "mandatory" or peer.secure):
                raise SdpError("the answer accepts none of the offered SRTP suites")
        mine.peer = peer
        mine.codec, mine.recv_codec = chosen, recv
        mine.event, mine.recv_event = event, recv_event
        mine.answer_body = body
        creds = peer_credentials(peer)
        if creds is not None and mine.ice is not None:
            mine.ice.set_remote(*creds)
        self._configure(side, peer, srtp)

    def _make_answer(self, side: str, far: Codec | None, far_direction: str | None = None
                     ) -> bytes:
        """The gateway's answer to ``side``'s pending offer, given the far side's codec and
        the direction the far side answered with (the answer is never wider than that)."""
        mine = self.sides[side]
        peer = mine.peer
        if peer is None:
            raise SdpError("no offer to answer")
        codec = neg.answer_codec(peer, mine.policy.codecs, far.key if far else None)
        event = neg.answer_event(peer, codec)
        chosen = neg.answer_crypto(peer, mine.key_for) if mine.policy.srtp != "off" else None
        crypto: list[Crypto] = []
        srtp = None
        if chosen is not None:
            theirs, ours = chosen
            crypto = [ours]
            srtp = (theirs.suite, ours.master(), theirs.master())
        mine.codec = mine.recv_codec = codec  # the answer mirrors the offer's numbers
        mine.event = mine.recv_event = event
        stream = self._ensure_stream(side)
        ice = mine.ice_sdp(peer, False, self.manager.address, stream.port, peer.rtcp_mux)
        self._configure(side, peer, srtp)
        rejected = [m for i, m in enumerate(peer.sdp.media) if i != peer.index]
        return self._render(
            side,
            address=self.manager.address,
            port=stream.port,
            codecs=[codec, *([event] if event else [])],
            secure=peer.secure,
            proto=peer.sdp.media[peer.index].proto,
            crypto=crypto,
            rtcp_mux=peer.rtcp_mux,
            direction=_narrow(neg.REVERSE_DIRECTION[peer.direction], far_direction),
            index=peer.index,
            lines=peer.lines,
            rejected=rejected,
            **ice,
        )

    def _configure(
        self, side: str, peer: neg.PeerMedia, srtp: tuple[str, bytes, bytes] | None
    ) -> None:
        configure_stream(self._ensure_stream(side), self.sides[side], peer, srtp,
                         self.manager.now())

    def _join(self) -> None:
        """Connect the legs: relay when both sides use one codec, else transcode."""
        a, b = self.sides["a"], self.sides["b"]
        sa, sb = a.stream, b.stream
        for t in self.transcoders:
            self.manager.remove_transcoder(t)
        self.transcoders = []
        self.trackers = []
        if sa is None or sb is None or a.codec is None or b.codec is None:
            self.mode = "none"
            return
        if a.codec.key == b.codec.key:
            self.mode = "relay"
            sa.sink = self._relay(sa, a, sb, b)
            sb.sink = self._relay(sb, b, sa, a)
        else:
            self.mode = "transcode"
            ab = Transcoder(self, sa, a.codec, sb, b.codec, b.event, "b", a.event,
                            self.detector("a"))
            ba = Transcoder(self, sb, b.codec, sa, a.codec, a.event, "a", b.event,
                            self.detector("b"))
            sa.sink = ab.push
            sb.sink = ba.push
            self.transcoders = [ab, ba]
            self.trackers.extend((t.tracker, t.dst_side) for t in self.transcoders
                                 if t.tracker is not None)
            for t in self.transcoders:
                self.manager.add_transcoder(t)
        log.debug("call %s: media %s (%s <-> %s)", self.call_id, self.mode, a.codec.name,
                  b.codec.name)

    def _relay(self, src: LegStream, src_side: Side, dst: LegStream, dst_side: Side) -> Sink:
        """The relay path src -> dst: payload types mapped, SRTP re-keyed, nothing decoded."""
        pt_map = bytearray(range(128))
        drop = bytearray(128)
        assert src_side.codec is not None and dst_side.codec is not None
        for codec in (src_side.codec, src_side.recv_codec):
            if codec is not None:
                pt_map[codec.pt] = dst_side.codec.pt
        src_event, dst_event = src_side.event, dst_side.event
        events_to_info = False
        for event in (src_event, src_side.recv_event):
            if event is None:
                continue
            if dst_event is not None and dst_event.clock == event.clock:
                pt_map[event.pt] = dst_event.pt
            else:
                drop[event.pt] = 1
                events_to_info = True
        for kind_pt, kind in enumerate(src.pt_kind):
            if kind == KIND_CN:
                drop[kind_pt] = 1  # comfort noise is not negotiated toward the other leg
        send_rtp = dst.send_rtp
        sender = dst.sender
        clock = dst_side.codec.clock
        tracker = None
        dst_name = "a" if dst_side is self.sides["a"] else "b"
        if events_to_info and self.on_dtmf is not None:
            tracker = EventTracker(src_event.clock if src_event else 8000)
            self.trackers.append((tracker, dst_name))
        on_dtmf = self.on_dtmf
        detect = self.detector("a" if dst_name == "b" else "b")
        decode = None
        if detect is not None:
            decode = G711Codec(src_side.codec.name.upper()).decode  # type: ignore[arg-type]

        def relay(data: bytes, pt: int, seq: int, ts: int, ssrc: int, marker: bool,
                  offset: int, kind: int, now: float) -> None:
            if drop[pt]:
                if tracker is not None and on_dtmf is not None:
                    try:
                        event = Event.parse(data[offset:payload_end(data)])
                        done = tracker.feed(ts, event, now, marker=marker)
                    except ValueError:
                        return
                    if done is not None:
                        on_dtmf(dst_name, done[0], done[1])
                return
            if detect is not None and decode is not None and kind == KIND_AUDIO:
                detect(decode(data[offset:payload_end(data)]))
            out = pt_map[pt]
            if out != pt:
                data = bytes((data[0], (data[1] & 0x80) | out)) + data[2:]
            if ssrc != dst.sender_ssrc:
                dst.sender_ssrc = ssrc
            sender.update(ts, len(data) - offset, now, clock)
            send_rtp(data)

        return relay

    # ------------------------------------------------------------------ end
    def poll_dtmf(self, now: float) -> None:
        """Report digits whose end never came (RFC 4733 end packets lost) as SIP INFO."""
        on_dtmf = self.on_dtmf
        if on_dtmf is None:
            return
        for tracker, side in self.trackers:
            for digit, ms in tracker.poll(now):
                on_dtmf(side, digit, ms)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for t in self.transcoders:
            self.manager.remove_transcoder(t)
        self.transcoders = []
        for side in self.sides.values():
            if side.stream is not None:
                self.manager.close_stream(side.stream)
                side.stream = None
        self.manager.session_closed(self)

    def quality(self, side: str) -> dict[str, object]:
        """The leg's media figures for the CDR and the live view: codec, packets and bytes
        each way, loss, jitter, round trip (from the peer's RTCP) and an E-model MOS."""
        mine = self.sides[side]
        return stream_quality(mine.stream, mine) if mine.stream is not None else {}

    def live(self) -> dict[str, object]:
        """The call's media as the status file shows it."""
        return {
            "mode": self.mode,
            "legs": {name: self.quality(name) for name in SIDES if self.sides[name].stream},
        }


_WIDTH = {"sendrecv": 3, "sendonly": 1, "recvonly": 2, "inactive": 0}


def _narrow(ours: str, far: str | None) -> str:
    """``ours`` limited to what the far side answered (both as the gateway's directions)."""
    if far is None:
        return ours
    bits = _WIDTH[ours] & _WIDTH.get(far, 3)
    return next(name for name, value in _WIDTH.items() if value == bits)


def configure_stream(stream: LegStream, mine: Side, peer: neg.PeerMedia,
                     srtp: tuple[str, bytes, bytes] | None, now: float) -> None:
    """Point a leg's stream at what the peer's SDP says: where to send RTP/RTCP (re-latching),
    directions, rtcp-mux, which payload types are audio/events/comfort noise, SRTP contexts
    (re-keyed only when the keys changed). Shared by MediaSession and the app calls' Bridge."""
    stream.relearn()
    if peer.address is not None:
        stream.remote = (peer.address, peer.port)
        stream.remote_rtcp = (peer.rtcp_address or peer.address, peer.rtcp_port)
    else:
        stream.remote = None
    stream.rtcp_mux = peer.rtcp_mux
    stream.sends = peer.sends
    stream.receives = peer.receives
    kinds = bytearray(128)
    if peer.comfort_noise is not None:
        kinds[peer.comfort_noise] = KIND_CN
    # what the peer sends with: the numbers the gateway listed, and (leniently) the
    # peer's own numbers for the same codec where they do not clash
    for event in (mine.event, mine.recv_event):
        if event is not None:
            kinds[event.pt] = KIND_EVENT
    for codec in (mine.codec, mine.recv_codec):
        if codec is not None:
            kinds[codec.pt] = KIND_AUDIO
            stream.clock = codec.clock
            stream.codec_name = codec.name
    stream.pt_kind = kinds
    if srtp != mine.srtp:
        mine.srtp = srtp
        if srtp is None:
            stream.srtp_in = stream.srtp_out = None
        else:
            suite, ours, theirs = srtp
            try:
                stream.srtp_out = SrtpContext(suite, ours, inbound=False)
                stream.srtp_in = SrtpContext(suite, theirs, inbound=True)
            except SrtpError as exc:
                raise SdpError(f"unusable SRTP key: {exc}") from None
    stream.last_rx = now
    stream.ice = mine.ice if mine.ice is not None and mine.ice.remote_ufrag else None


def stream_quality(stream: LegStream, mine: Side) -> dict[str, object]:
    """A leg's media figures for the CDR and the live view: codec, packets and bytes each
    way, loss, jitter, round trip (from the peer's RTCP) and an E-model MOS."""
    stats = stream.stats
    heard = stream.ssrc >= 0
    expected = stats.expected if heard else 0
    lost = max(stats.lost, 0) if heard else 0
    loss_pct = 100.0 * lost / expected if expected > 0 else 0.0
    rtt = stream.rtt
    # one-way delay: half the round trip, plus a 20 ms packet and the jitter buffer
    delay_ms = (rtt or 0.0) * 500.0 + 20.0 + 2.0 * stats.jitter_ms
    codec = mine.codec.name if mine.codec else None
    counters = stream.counters
    return {
        "codec": codec,
        "packets_in": counters.packets_in,
        "packets_out": counters.packets_out,
        "bytes_in": counters.bytes_in,
        "bytes_out": counters.bytes_out,
        "lost": lost,
        "jitter_ms": round(stats.jitter_ms, 3) if heard else 0.0,
        "rtt_ms": round(rtt * 1000.0, 3) if rtt is not None else None,
        "mos": round(mos(delay_ms, loss_pct, codec or "PCMU"), 2)
        if counters.packets_in else None,
        "srtp": mine.srtp[0] if mine.srtp else None,
    }
