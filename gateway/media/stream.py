"""One leg's anchored media stream: the packet path from a peer's RTP to the other leg.

A ``LegStream`` owns the gateway's ports toward one peer (RTP, and RTCP on the port above or
muxed) and everything the gateway knows about that peer's media: where to send, which
payload types it may send, its SRTP keys and the statistics of what it sent. It is sans-I/O:
the adapter (``gateway.media.manager``) hands it datagrams with the current time, and it
writes through a ``send`` callable the adapter provides.

The packet path (``on_rtp``), in order:
1. Source check (RTP latching, "symmetric RTP"): until the first valid packet arrives the
   stream is *learning* and sends where the SDP says; the first valid packet's source becomes
   the only one accepted afterwards. A packet from any other source is dropped and counted
   (no RTP bleed). A new offer or answer re-opens learning.
2. SRTP: unprotected with the peer's key; authentication and replay failures are counted.
3. RTP header checked; a payload type the leg did not negotiate is dropped and counted.
4. Statistics (RFC 3550 A.1/A.3/A.8), then the packet goes to ``sink``: the relay toward the
   other leg or the transcoder.

Nothing here raises out of ``on_rtp``/``on_rtcp``: every bad datagram is a counted drop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from gateway.media import rtcp as rtcp_mod
from gateway.media.rtp import ReceiverStats, SenderStats, parse_header
from gateway.media.srtp import SrtpContext, SrtpError

if TYPE_CHECKING:
    from gateway.media.icelite import IceLite

Address = tuple[str, int]
Send = Callable[[bytes, Address], None]

KIND_NONE: Final = 0
KIND_AUDIO: Final = 1
KIND_EVENT: Final = 2
KIND_CN: Final = 3  # comfort noise (RFC 3389): accepted, not relayed into a transcoder


class Counters:
    """Drops and totals of one stream (summed by the manager for the status file)."""

    __slots__ = (
        "bad_rtcp",
        "bytes_in",
        "bytes_out",
        "malformed",
        "packets_in",
        "packets_out",
        "replay",
        "rtcp_in",
        "rtcp_out",
        "srtp_auth",
        "stun_dropped",
        "stun_in",
        "unknown_pt",
        "wrong_source",
    )

    def __init__(self) -> None:
        self.packets_in = 0
        self.bytes_in = 0
        self.packets_out = 0
        self.bytes_out = 0
        self.wrong_source = 0
        self.malformed = 0
        self.unknown_pt = 0
        self.srtp_auth = 0
        self.replay = 0
        self.rtcp_in = 0
        self.rtcp_out = 0
        self.bad_rtcp = 0
        self.stun_in = 0  # ICE connectivity checks answered (gateway.media.icelite)
        self.stun_dropped = 0  # STUN on a leg without ICE, or not a check we answer

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


#: sink(data, pt, seq, ts, ssrc, marker, payload_offset, kind, now)
Sink = Callable[[bytes, int, int, int, int, bool, int, int, float], None]


def _no_sink(
    data: bytes, pt: int, seq: int, ts: int, ssrc: int, marker: bool, off: int, kind: int,
    now: float,
) -> None:
    return None


class LegStream:
    """The gateway's media toward one peer (one leg of a call)."""

    __slots__ = (
        "clock",
        "codec_name",
        "counters",
        "ice",
        "last_rx",
        "last_sr",
        "last_sr_arrival",
        "learning",
        "port",
        "pt_kind",
        "receives",
        "remote",
        "remote_jitter",
        "remote_loss",
        "remote_rtcp",
        "rtcp_mux",
        "rtcp_send",
        "rtt",
        "send",
        "sender",
        "sender_ssrc",
        "sends",
        "sink",
        "source",
        "srtp_in",
        "srtp_out",
        "ssrc",
        "stats",
    )

    def __init__(self, port: int, send: Send, rtcp_send: Send) -> None:
        self.port = port  # RTP port; RTCP is port + 1 unless muxed
        self.send = send  # writes a datagram from the RTP port
        self.rtcp_send = rtcp_send  # writes a datagram from the RTCP port
        self.remote: Address | None = None  # where RTP goes
        self.remote_rtcp: Address | None = None
        self.rtcp_mux = False
        self.source: Address | None = None  # the latched source
        self.learning = True
        self.pt_kind = bytearray(128)  # payload type -> KIND_*
        self.clock = 8000  # the clock of the audio codec the peer sends
        self.codec_name = ""
        self.srtp_in: SrtpContext | None = None
        self.srtp_out: SrtpContext | None = None
        self.sends = True  # the peer's SDP says it sends
        self.receives = True  # the peer's SDP says it wants media
        self.stats = ReceiverStats()
        self.ssrc = -1  # the SSRC the peer sends with (-1: none seen)
        self.sender = SenderStats()
        self.sender_ssrc = 0  # the SSRC of what the gateway sends on this leg
        self.counters = Counters()
        self.last_rx = 0.0
        self.last_sr = 0  # middle 32 bits of the NTP time of the peer's last SR
        self.last_sr_arrival = 0.0
        self.rtt: float | None = None  # seconds, from the peer's reception reports
        self.remote_loss = 0  # the peer's cumulative lost count for what we send
        self.remote_jitter = 0.0  # the peer's jitter for what we send, seconds
        self.sink: Sink = _no_sink
        self.ice: IceLite | None = None  # the peer does ICE: the gateway answers as lite

    def on_stun(self, data: bytes, addr: Address, rtcp: bool) -> None:
        """A STUN message on the RTP (or RTCP) port: an ICE connectivity check answered
        from the port it came to; a nominating check on the RTP port makes its source the
        address media goes to (RFC 8445 section 7.3.1.5, the lite agent's side)."""
        ice = self.ice
        counters = self.counters
        if ice is None:
            counters.stun_dropped += 1
            return
        response, nominated = ice.handle(data, addr)
        if response is None:
            counters.stun_dropped += 1
            return
        counters.stun_in += 1
        (self.rtcp_send if rtcp else self.send)(response, addr)
        if nominated and not rtcp:
            self.remote = self.source = addr
            self.learning = False
            if self.rtcp_mux:
                self.remote_rtcp = addr

    # ------------------------------------------------------------------ configuration
    def relearn(self) -> None:
        """A new offer or answer: the next valid packet may come from a new source."""
        self.learning = True

    # ------------------------------------------------------------------ receive path
    def on_rtp(self, data: bytes, addr: Address, now: float) -> None:
        counters = self.counters
        if addr != self.source and not self.learning:
            counters.wrong_source += 1
            return
        srtp = self.srtp_in
        if srtp is not None:
            try:
                data = srtp.unprotect(data)
            except SrtpError as exc:
                if exc.reason == "replay":
                    counters.replay += 1
                elif exc.reason == "auth":
                    counters.srtp_auth += 1
                else:
                    counters.malformed += 1
                return
        try:
            pt, seq, ts, ssrc, marker, offset = parse_header(data)
        except ValueError:
            counters.malformed += 1
            return
        kind = self.pt_kind[pt]
        if kind == KIND_NONE:
            counters.unknown_pt += 1
            return
        if self.learning:
            self.learning = False
            self.source = addr
            self.remote = addr  # symmetric RTP: answer where it comes from
            if self.remote_rtcp is not None and not self.rtcp_mux:
                self.remote_rtcp = (addr[0], self.remote_rtcp[1])
        counters.packets_in += 1
        counters.bytes_in += len(data)
        self.last_rx = now
        if kind == KIND_AUDIO:
            if ssrc != self.ssrc:
                self.ssrc = ssrc
                self.stats.reset(seq)
            self.stats.update(seq, ts, now, self.clock)
        self.sink(data, pt, seq, ts, ssrc, marker, offset, kind, now)

    # ------------------------------------------------------------------ send path
    def send_rtp(self, data: bytes) -> None:
        """Send one plain RTP packet to the peer (protected first when the leg is SRTP)."""
        remote = self.remote
        if remote is None or not self.receives:
            return
        srtp = self.srtp_out
        if srtp is not None:
            try:
                data = srtp.protect(data)
            except SrtpError:
                self.counters.malformed += 1
                return
        counters = self.counters
        counters.packets_out += 1
        counters.bytes_out += len(data)
        self.send(data, remote)

    # ------------------------------------------------------------------ RTCP
    def on_rtcp(self, data: bytes, addr: Address, now: float) -> None:
        """A compound RTCP packet from the peer: reception reports and SR times are kept."""
        counters = self.counters
        source = self.source
        if source is not None and addr[0] != source[0]:
            counters.wrong_source += 1  # RTCP only from the host the RTP was latched to
            return
        srtp = self.srtp_in
        try:
            if srtp is not None:
                data = srtp.unprotect_rtcp(data)
            packets = rtcp_mod.parse_compound(data)
        except (SrtpError, ValueError):
            counters.bad_rtcp += 1
            return
        counters.rtcp_in += 1
        if not self.rtcp_mux:
            self.remote_rtcp = addr  # symmetric RTCP as well
        for packet in packets:
            blocks: tuple[rtcp_mod.ReportBlock, ...] = ()
            if isinstance(packet, rtcp_mod.SenderReport):
                self.last_sr = rtcp_mod.ntp_middle32(packet.ntp)
                self.last_sr_arrival = now
                blocks = packet.reports
            elif isinstance(packet, rtcp_mod.ReceiverReport):
                blocks = packet.reports
            for block in blocks:
                if block.ssrc != self.sender_ssrc:
                    continue
                self.remote_loss = max(block.cumulative_lost, 0)
                if self.sender.clock_rate:
                    self.remote_jitter = block.jitter / self.sender.clock_rate
                rtt = rtcp_mod.round_trip_time(
                    block, rtcp_mod.ntp_middle32(rtcp_mod.ntp_from_unix(now))
                )
                if rtt is not None:
                    self.rtt = rtt

    def rtcp_report(self, now: float, cname: bytes, ssrc: int) -> None:
        """Send this leg's peer an SR (or RR) about what flows both ways."""
        remote = self.remote if self.rtcp_mux else self.remote_rtcp
        if remote is None:
            return
        receivers = []
        if self.ssrc >= 0 and self.stats.received:
            receivers.append((self.ssrc, self.stats, self.last_sr, self.last_sr_arrival))
        sender = self.sender if self.sender.packets else None
        data = rtcp_mod.build_report(self.sender_ssrc or ssrc, cname, sender, receivers, now)
        srtp = self.srtp_out
        if srtp is not None:
            try:
                data = srtp.protect_rtcp(data)
            except SrtpError:
                return
        self.counters.rtcp_out += 1
        if self.rtcp_mux:
            self.send(data, remote)
        else:
            self.rtcp_send(data, remote)
