"""Issue 4: [media] timeout. An answered call whose sending peer has sent no RTP for
``timeout`` seconds is ended by the gateway: BYE on both legs, CDR reason "media timeout",
release side "gateway". A stream whose peer's SDP says it does not send (recvonly,
inactive: on hold) is not watched; RTCP alone does not count as media; 0 turns it off.

The caller is :class:`~.test_media_relay.Caller`; it answers the gateway's BYE itself
(:func:`~.test_media_dtmf.caller_requests`). The callee is SIPp ``uas.xml`` with
``-rtp_echo`` (which sends only what it receives) or, where the callee must send while
the caller does not, the scripted :class:`~.test_media_dtmf.RawUas`.
"""

from __future__ import annotations

import sqlite3
import struct
import time

from .audio import dominant_frequency
from .conftest import GatewayFactory, SippServerFactory
from .harness import (
    GatewayProcess,
    SippServer,
    TrunkSpec,
    free_media_ports,
    route_all_dialplan,
)
from .rtppeer import sdp_offer
from .test_media_dtmf import (
    RawUas,
    SipRequest,
    answer_sdp,
    caller_requests,
    has,
    media_config,
    raw_uas_gateway,
    wait_for,
    wait_idle,
)
from .test_media_relay import Caller

TIMEOUT = 2  # [media] timeout of these tests, seconds


def echo_gateway(gateway_factory: GatewayFactory, sipp_server: SippServerFactory, **media: object
                 ) -> tuple[GatewayProcess, SippServer]:
    echo = sipp_server("uas", extra_args=["-rtp_echo", "-mp", str(free_media_ports())])
    gw = gateway_factory(trunks=[TrunkSpec("echo", echo.port)],
                         dialplan=route_all_dialplan(["echo"]),
                         extra_config=media_config(**media))
    return gw, echo


def rtcp_rr(ssrc: int, cname: bytes = b"test@127.0.0.1") -> bytes:
    """A compound RTCP packet: an empty receiver report and an SDES CNAME (RFC 3550 6.1)."""
    rr = struct.pack("!BBHI", 0x80, 201, 1, ssrc)
    chunk = struct.pack("!I", ssrc) + bytes((1, len(cname))) + cname + b"\x00"
    chunk += b"\x00" * (-len(chunk) % 4)
    sdes = struct.pack("!BBH", 0x81, 202, len(chunk) // 4) + chunk
    return rr + sdes


def cdr_call(gw: GatewayProcess) -> tuple[int, str, str]:
    """(status, release_side, reason) of the only call in the CDR (read after gw.stop())."""
    with sqlite3.connect(gw.cdr_path) as db:
        rows = db.execute("SELECT status, release_side, reason FROM cdr_calls").fetchall()
    assert len(rows) == 1, rows
    status, side, reason = rows[0]
    return status, side, reason


def byes(got: list[SipRequest]) -> list[SipRequest]:
    return [r for r in got if r.method == "BYE"]


def test_silent_call_ended_with_bye_on_both_legs(
    gateway_factory: GatewayFactory, sipp_server: SippServerFactory
) -> None:
    """RTP flows both ways for longer than the timeout (the call stays up), then the caller
    falls silent, sending only RTCP: within a few seconds both legs get a BYE, and the CDR
    says "media timeout", released by the gateway."""
    gw, echo = echo_gateway(gateway_factory, sipp_server, timeout=TIMEOUT, rtcp_interval=1)
    caller = Caller(gw)
    try:
        assert caller.invite().status == 200
        caller.rtp.send_tone(caller.media, 900.0, TIMEOUT + 1.5)
        silent_since = time.monotonic()
        assert abs(dominant_frequency(caller.rtp.audio(), 8000, skip_seconds=0.1) - 900) < 5
        assert not byes(caller_requests(caller, 0.1)), "ended while RTP was flowing"
        got: list[SipRequest] = []
        rtcp_to = (caller.media[0], caller.media[1] + 1)
        for _ in range(24):  # 12 s at most; RTCP keeps coming, it is not media
            caller.rtp.sock.sendto(rtcp_rr(caller.rtp.ssrc), rtcp_to)
            got += caller_requests(caller, 0.5, until=has("BYE"))
            if byes(got):
                break
        waited = time.monotonic() - silent_since
        assert byes(got), "no BYE from the gateway after 12 s of silence"
        assert waited >= TIMEOUT - 0.5, f"BYE {waited:.1f} s after the last packet"
        # the callee got its BYE too (uas.xml answers it, the call counts as successful)
        assert echo.wait_counts(1, 15.0) == (1, 0), echo.log_text()[-3000:]
    finally:
        caller.close()
    live = wait_idle(gw)
    assert live["media_timeouts"] == 1, live
    assert live["rtp_rtcp_in"] >= 1, live  # the caller's RTCP arrived, and did not count
    assert live["media_ports_free"] == live["media_ports_total"], live
    assert live["media_handler_errors"] == 0 and live["handler_errors"] == 0, live
    gw.stop()
    status, side, reason = cdr_call(gw)
    assert (side, reason) == ("gateway", "media timeout"), (status, side, reason)


def test_held_caller_is_exempt_but_the_sending_callee_is_watched(
    gateway_factory: GatewayFactory,
) -> None:
    """The caller's offer says a=recvonly: it will not send, and its silence must not end
    the call. The callee (answering sendonly) sends a tone for three times the timeout:
    the call stays up and the tone reaches the caller. Then the callee falls silent: its
    stream is watched, and the call ends with BYE on both legs, reason "media timeout"."""
    uas = RawUas(lambda offer, port: answer_sdp(port, [(0, "PCMU/8000", None)], "sendonly"))
    gw = raw_uas_gateway(gateway_factory, uas, media={"timeout": TIMEOUT, "rtcp_interval": 1})
    caller = Caller(gw)
    try:
        offer = sdp_offer(caller.rtp.port, codecs="0").replace("a=sendrecv", "a=recvonly")
        reply = caller.invite(offer)
        assert reply.status == 200, reply.raw
        assert "a=recvonly" in uas.offer, uas.offer  # the hold reaches the callee
        assert b"a=sendonly" in reply.raw, reply.raw  # and its answer the caller
        sent = uas.rtp.send_tone(uas.gateway_media, 650.0, 3 * TIMEOUT)
        assert not byes(caller_requests(caller, 0.2)), "the held call was ended"
        assert not uas.got("BYE"), "the held call was ended"
        assert len(caller.rtp.packets) >= sent * 0.95, (len(caller.rtp.packets), sent)
        freq = dominant_frequency(caller.rtp.audio(), 8000, skip_seconds=0.1)
        assert abs(freq - 650.0) < 5, freq
        silent_since = time.monotonic()
        got = caller_requests(caller, 12.0, until=has("BYE"))
        waited = time.monotonic() - silent_since
        assert byes(got), "the callee's silence did not end the call"
        assert waited >= TIMEOUT - 0.5, f"BYE {waited:.1f} s after the last packet"
        assert uas.wait("BYE", 1, 10.0), "the callee got no BYE"
    finally:
        caller.close()
        uas.close()
    live = wait_idle(gw)
    assert live["media_timeouts"] == 1, live
    assert live["media_ports_free"] == live["media_ports_total"], live
    gw.stop()
    status, side, reason = cdr_call(gw)
    assert (side, reason) == ("gateway", "media timeout"), (status, side, reason)


def test_timeout_zero_never_ends_a_silent_call(
    gateway_factory: GatewayFactory, sipp_server: SippServerFactory
) -> None:
    """timeout = 0 turns the check off: five seconds of silence after a second of RTP, and
    the call is still up; the caller's BYE ends it normally."""
    gw, echo = echo_gateway(gateway_factory, sipp_server, timeout=0, rtcp_interval=1)
    caller = Caller(gw)
    try:
        assert caller.invite().status == 200
        caller.rtp.send_tone(caller.media, 900.0, 1.0)
        assert wait_for(lambda: len(caller.rtp.packets) >= 40, 3.0), len(caller.rtp.packets)
        got = caller_requests(caller, 5.0, until=has("BYE"))
        assert not byes(got), "a silent call was ended with timeout = 0"
        reply = caller.bye()
        assert reply is not None and reply.status == 200, reply
        assert echo.wait_counts(1, 15.0) == (1, 0), echo.log_text()[-3000:]
    finally:
        caller.close()
    live = wait_idle(gw)
    assert live["media_timeouts"] == 0, live
    gw.stop()
    status, side, reason = cdr_call(gw)
    assert side == "caller" and reason != "media timeout", (status, side, reason)
