"""RTCP end to end: the gateway's sender reports reach a real peer on its RTP port (rtcp-mux),
and the round-trip time the peer's receiver report gives (LSR/DLSR, RFC 3550 section 6.4.1)
ends up in the leg's CDR row.

The caller is a test RTP endpoint that offers a=rtcp-mux, sends a tone, reads RTCP from its
RTP socket and answers each sender report with a receiver report holding that report's LSR and
the delay since it arrived; the callee is SIPp with -rtp_echo.
"""

from __future__ import annotations

import sqlite3
import struct
import threading
import time
from dataclasses import dataclass, field

from .conftest import GatewayFactory, SippServerFactory
from .rtppeer import sdp_offer
from .test_media_relay import Caller, echo_gateway

CNAME = b"rtcp-test@127.0.0.1"


@dataclass
class SenderReportSeen:
    ssrc: int
    ntp_middle: int
    packets: int
    arrived: float
    source: tuple[str, int]


@dataclass
class Reports:
    """RTCP sender reports seen on the caller's RTP socket, answered with receiver reports."""

    seen: list[SenderReportSeen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def receiver_report(own_ssrc: int, sr: SenderReportSeen, delay: float) -> bytes:
    """RR (one report block about ``sr.ssrc``) + SDES CNAME, as RFC 3550 6.4.2 and 6.5 lay out."""
    dlsr = int(delay * 65536) & 0xFFFFFFFF
    block = struct.pack("!IIIIII", sr.ssrc, 0, 1000, 0, sr.ntp_middle, dlsr)
    rr = struct.pack("!BBHI", 0x81, 201, 7, own_ssrc) + block
    item = bytes([1, len(CNAME)]) + CNAME
    chunk = struct.pack("!I", own_ssrc) + item + b"\x00"
    chunk += b"\x00" * (-len(chunk) % 4)
    sdes = struct.pack("!BBH", 0x81, 202, len(chunk) // 4) + chunk
    return rr + sdes


class RtcpCaller(Caller):
    """A Caller whose RTP socket also takes RTCP (rtcp-mux) and answers sender reports."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.reports = Reports()
        peer = self.rtp

        def other(data: bytes, source: tuple[str, int]) -> None:
            if len(data) < 28 or data[1] != 200:
                return  # not a sender report (RR, SDES, BYE alone)
            ssrc, ntp_hi, ntp_lo, _, packets = struct.unpack("!IIIII", data[4:24])
            sr = SenderReportSeen(ssrc, ((ntp_hi & 0xFFFF) << 16) | (ntp_lo >> 16), packets,
                                  time.monotonic(), source)
            with self.reports.lock:
                self.reports.seen.append(sr)
            time.sleep(0.01)  # a measurable DLSR: the report is held 10 ms
            peer.sock.sendto(receiver_report(peer.ssrc, sr, time.monotonic() - sr.arrived),
                             source)

        peer._other = other  # type: ignore[method-assign]


def test_sender_reports_reach_the_peer_and_its_receiver_reports_give_rtt(
    gateway_factory: GatewayFactory, sipp_server: SippServerFactory
) -> None:
    gw = echo_gateway(gateway_factory, sipp_server, extra_config={"media": {"rtcp_interval": 1}})
    caller = RtcpCaller(gw)
    try:
        reply = caller.invite(sdp_offer(caller.rtp.port, extra="a=rtcp-mux\r\n"))
        assert reply.status == 200, reply.raw
        assert b"a=rtcp-mux" in reply.raw, reply.raw  # the gateway took the offered mux
        caller.rtp.send_tone(caller.media, 1000.0, 4.0)
        with caller.reports.lock:
            seen = list(caller.reports.seen)
        # an SR about every second, from the port the gateway advertised (symmetric, muxed)
        assert len(seen) >= 2, seen
        assert {sr.source for sr in seen} == {caller.media}, seen
        assert seen[-1].packets > 0, seen  # the gateway reports what it sent us
        assert caller.bye() is not None
    finally:
        caller.close()
    gw.stop()
    with sqlite3.connect(gw.cdr_path) as db:
        (rtt,) = db.execute("SELECT rtt_ms FROM cdr_legs WHERE leg_id = 'a'").fetchone()
    # loopback: the round trip minus the 10 ms the peer held each report is well under 50 ms;
    # a NULL here means no receiver report was taken into account
    assert rtt is not None and 0.0 <= rtt < 50.0, rtt
