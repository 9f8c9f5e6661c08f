"""Issue 4: the gateway anchors media. RTP from each leg goes to the gateway's own ports and is
relayed to the other leg; what comes back is checked by the tone's frequency.

The callee is SIPp with ``-rtp_echo`` (it sends every RTP packet back to where it came
from), the caller a test RTP endpoint: a tone goes caller -> gateway -> SIPp -> gateway ->
caller, two relays in each direction through the real gateway process.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .audio import dominant_frequency
from .conftest import GatewayFactory, SippServerFactory
from .harness import GatewayProcess, TrunkSpec, free_media_ports, free_port, route_all_dialplan
from .rawsip import RawUac, Reply
from .rtppeer import RtpPeer, rtp_packet, sdp_media_address, sdp_offer, tone, ulaw_encode

NUMBER = "+15551230000"


def status(gw: GatewayProcess) -> dict[str, Any]:
    path = Path(gw.cdr_path).parent / "trunks.json"
    doc: dict[str, Any] = json.loads(path.read_text())
    live: dict[str, Any] = doc["gateway"]
    return live


def wait_status(gw: GatewayProcess, ok: Callable[[dict[str, Any]], bool],
                timeout_s: float = 12.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            last = status(gw)
        except (OSError, ValueError):
            last = {}
        if last and ok(last):
            return last
        time.sleep(0.25)
    raise AssertionError(f"status never matched: {last}")


class Caller:
    """A SIP caller (RawUac) with an RTP endpoint, for one call through the gateway."""

    def __init__(self, gw: GatewayProcess, number: str = NUMBER) -> None:
        self.uac = RawUac(gw.sip_udp)
        self.rtp = RtpPeer()
        self.number = number
        self.call_id = uuid.uuid4().hex
        self.to_tag = ""
        self.cseq = 1
        self.media: tuple[str, int] = ("", 0)

    def invite(self, sdp: str | None = None) -> Reply:
        body = sdp if sdp is not None else sdp_offer(self.rtp.port)
        branch = "z9hG4bK" + uuid.uuid4().hex
        req = self.uac.request("INVITE", self.number, self.call_id, branch, self.cseq)
        req = req.replace(
            b"Content-Length: 0\r\n\r\n",
            b"Content-Type: application/sdp\r\nContent-Length: %d\r\n\r\n" % len(body)
            + body.encode(),
        )
        self.uac.send(req)
        reply = self.uac.final(10, call_id=self.call_id)
        assert reply is not None, "no final answer to the INVITE"
        if reply.status >= 300:
            self.uac.ack_error(self.number, self.call_id, branch, reply)
            return reply
        self.to_tag = reply.to_tag
        self.media = sdp_media_address(reply.raw)
        self.uac.send(self.uac.request("ACK", self.number, self.call_id,
                                       "z9hG4bK" + uuid.uuid4().hex, self.cseq, self.to_tag))
        return reply

    def bye(self) -> Reply | None:
        self.cseq += 1
        self.uac.send(self.uac.request("BYE", self.number, self.call_id,
                                       "z9hG4bK" + uuid.uuid4().hex, self.cseq, self.to_tag))
        return self.uac.final(5, method="BYE", call_id=self.call_id)

    def close(self) -> None:
        self.uac.close()
        self.rtp.close()


def echo_gateway(gateway_factory: GatewayFactory, sipp_server: SippServerFactory,
                 **kwargs: Any) -> GatewayProcess:
    echo = sipp_server("uas", extra_args=["-rtp_echo", "-mp", str(free_media_ports())])
    return gateway_factory(trunks=[TrunkSpec("echo", echo.port)],
                           dialplan=route_all_dialplan(["echo"]), **kwargs)


def test_tone_relayed_both_ways_and_ports_back_in_the_pool(
    gateway_factory: GatewayFactory, sipp_server: SippServerFactory
) -> None:
    gw = echo_gateway(gateway_factory, sipp_server)
    caller = Caller(gw)
    try:
        reply = caller.invite()
        assert reply.status == 200, reply.raw
        host, port = caller.media
        assert host == "127.0.0.1"
        assert port in range(gw.media_port_range[0], gw.media_port_range[1] + 1), port
        sent = caller.rtp.send_tone((host, port), 1000.0, 2.0)
        time.sleep(0.5)
        back = [p for p in caller.rtp.packets if p.pt == 0]
        # symmetric RTP: everything comes from the port the gateway advertised to us
        assert back and {p.source for p in back} == {(host, port)}, back[:3]
        assert len(back) >= sent * 0.95, (len(back), sent)
        freq = dominant_frequency(caller.rtp.audio(), 8000, skip_seconds=0.1)
        assert abs(freq - 1000.0) < 5, freq
        assert caller.bye() is not None
    finally:
        caller.close()
    live = wait_status(gw, lambda s: s.get("calls_started", 0) >= 1 and s.get("calls") == 0
                       and s.get("media_streams") == 0)
    assert live["media_ports_free"] == live["media_ports_total"], live
    assert live["media_handler_errors"] == 0, live
    gw.stop()
    with sqlite3.connect(gw.cdr_path) as db:
        rows = db.execute(
            "SELECT leg_id, codec, packets_in, packets_out, lost, mos FROM cdr_legs "
            "ORDER BY leg_id").fetchall()
    legs = {row[0]: row for row in rows}
    assert legs["a"][1] == "PCMU" and legs["b1"][1] == "PCMU", rows
    assert legs["a"][2] >= sent * 0.95 and legs["b1"][2] >= sent * 0.95, rows
    assert legs["a"][4] == 0 and legs["a"][5] is not None and legs["a"][5] > 4.0, rows


def test_strict_source_after_latching_drops_rtp_bleed(
    gateway_factory: GatewayFactory, sipp_server: SippServerFactory
) -> None:
    gw = echo_gateway(gateway_factory, sipp_server)
    caller = Caller(gw)
    intruder = RtpPeer()
    try:
        assert caller.invite().status == 200
        dest = caller.media
        caller.rtp.send_tone(dest, 600.0, 0.6)
        # another source sends a different tone to the same gateway port: dropped, counted
        pcm = tone(3000.0, 1.0)
        for i in range(50):
            intruder.sock.sendto(rtp_packet(0, 7000 + i, 9000 + 160 * i, 0xBAD,
                                            ulaw_encode(pcm[i * 160:(i + 1) * 160])), dest)
            time.sleep(0.005)
        caller.rtp.send_tone(dest, 600.0, 0.6, seq=2000, ts=400000)
        time.sleep(0.5)
        freq = dominant_frequency(caller.rtp.audio(), 8000, skip_seconds=0.1)
        assert abs(freq - 600.0) < 5, freq
        assert not intruder.packets, "the intruder got media back"
        live = wait_status(gw, lambda s: s.get("rtp_wrong_source", 0) >= 50)
        assert live["rtp_wrong_source"] == 50, live
        caller.bye()
    finally:
        caller.close()
        intruder.close()
    gw.stop()
    assert "handler bugs 0" in gw.log_text()


def test_bad_sdp_gets_488_with_warning_and_calls_go_on(
    gateway_factory: GatewayFactory, sipp_server: SippServerFactory
) -> None:
    gw = echo_gateway(gateway_factory, sipp_server)
    bad_offers = {
        "bad port": sdp_offer(5000).replace("m=audio 5000", "m=audio 99999"),
        "unknown codec only": sdp_offer(5000, codecs="96").replace(
            "a=rtpmap:0 PCMU/8000", "a=rtpmap:96 FOO/8000"),
        "bad crypto key": sdp_offer(5000).replace("RTP/AVP", "RTP/SAVP")
        + "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:c2hvcnQ=\r\n",
        "no audio": sdp_offer(5000).replace("m=audio", "m=video"),
    }
    for what, sdp in bad_offers.items():
        caller = Caller(gw)
        try:
            reply = caller.invite(sdp)
            assert reply.status == 488, (what, reply.raw)
            warning = reply.header("Warning") or ""
            assert warning.startswith("399 "), (what, warning)
        finally:
            caller.close()
    caller = Caller(gw)
    try:
        assert caller.invite().status == 200
        caller.rtp.send_tone(caller.media, 800.0, 1.0)
        time.sleep(0.4)
        assert abs(dominant_frequency(caller.rtp.audio(), 8000, skip_seconds=0.1) - 800) < 5
        caller.bye()
    finally:
        caller.close()
    gw.stop()
    assert "handler bugs 0" in gw.log_text()


def test_malformed_rtp_is_dropped_and_counted(
    gateway_factory: GatewayFactory, sipp_server: SippServerFactory
) -> None:
    gw = echo_gateway(gateway_factory, sipp_server)
    caller = Caller(gw)
    try:
        assert caller.invite().status == 200
        dest = caller.media
        sock = caller.rtp.sock
        junk = [
            b"",  # empty datagram
            b"\x80",  # truncated header
            b"\x40" + bytes(20),  # version 1
            b"\x8f\x00" + bytes(10),  # 15 CSRCs announced, none there
            b"\x90\x00" + bytes(10) + b"\x00\x00\x00\x09",  # extension longer than the packet
            rtp_packet(77, 1, 1, 1, b"x" * 160),  # a payload type nobody negotiated
            b"\x81\xc9\x00\x09" + bytes(8),  # RTCP RR with a length past its end
        ]
        for data in junk:
            sock.sendto(data, dest)
        caller.rtp.send_tone(dest, 1200.0, 1.0)
        time.sleep(0.4)
        assert abs(dominant_frequency(caller.rtp.audio(), 8000, skip_seconds=0.1) - 1200) < 5
        live = wait_status(gw, lambda s: s.get("rtp_unknown_pt", 0) >= 1)
        assert live["rtp_malformed"] >= 4 and live["rtp_bad_rtcp"] >= 1, live
        assert live["media_handler_errors"] == 0, live
        caller.bye()
    finally:
        caller.close()
    gw.stop()


def test_srtp_leg_rekeyed_and_wrong_keys_dropped(
    gateway_factory: GatewayFactory, sipp_server: SippServerFactory
) -> None:
    """The caller's leg is SDES-SRTP (trunk srtp = mandatory), the callee's plain RTP: the
    gateway decrypts, relays, re-encrypts with the key it announced; packets protected with
    a wrong key are dropped and counted, and never reach the other leg."""
    import base64
    import os
    import re

    import pylibsrtp

    echo = sipp_server("uas", extra_args=["-rtp_echo", "-mp", str(free_media_ports())])
    gw = gateway_factory(
        trunks=[
            TrunkSpec("phones", free_port(), extra={"srtp": "mandatory"}),
            TrunkSpec("echo", echo.port, inbound_from=()),
        ],
        dialplan=route_all_dialplan(["echo"]),
    )
    caller = Caller(gw)
    key = os.urandom(30)
    sdp = sdp_offer(caller.rtp.port).replace("RTP/AVP", "RTP/SAVP") + (
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" + base64.b64encode(key).decode() + "\r\n"
    )
    try:
        reply = caller.invite(sdp)
        assert reply.status == 200, reply.raw
        body = reply.raw.split(b"\r\n\r\n", 1)[1].decode()
        assert "m=audio" in body and "RTP/SAVP" in body, body
        found = re.search(r"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:([A-Za-z0-9+/=]+)", body)
        assert found, body
        theirs = base64.b64decode(found.group(1))
        assert theirs != key
        out = pylibsrtp.Session(pylibsrtp.Policy(
            key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND))
        wrong = pylibsrtp.Session(pylibsrtp.Policy(
            key=os.urandom(30), ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND))
        inbound = pylibsrtp.Session(pylibsrtp.Policy(
            key=theirs, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND))
        dest = caller.media
        pcm = tone(700.0, 1.5)
        for i in range(20):  # a wrong key first: nothing may get through
            caller.rtp.sock.sendto(wrong.protect(rtp_packet(
                0, 100 + i, 1000 + 160 * i, 0x5EC, ulaw_encode(pcm[i * 160:(i + 1) * 160]))),
                dest)
        time.sleep(0.3)
        assert not caller.rtp.packets, "media came back for wrongly keyed SRTP"
        for i in range(75):
            caller.rtp.sock.sendto(out.protect(rtp_packet(
                0, 200 + i, 50000 + 160 * i, 0x5EC, ulaw_encode(pcm[i * 160:(i + 1) * 160]))),
                dest)
            time.sleep(0.02)
        time.sleep(0.5)
        back = sorted(caller.rtp.packets, key=lambda p: p.seq)
        assert len(back) >= 70, len(back)
        from .rtppeer import ulaw_decode

        plain = []
        for p in back:
            raw = rtp_packet(p.pt, p.seq, p.ts, p.ssrc, p.payload)
            plain.append(ulaw_decode(inbound.unprotect(raw)[12:]))
        import numpy as np

        freq = dominant_frequency(np.concatenate(plain), 8000, skip_seconds=0.1)
        assert abs(freq - 700.0) < 5, freq
        live = wait_status(gw, lambda s: s.get("rtp_srtp_auth", 0) >= 20)
        assert live["rtp_srtp_auth"] == 20, live
        caller.bye()
    finally:
        caller.close()
    gw.stop()
    assert "handler bugs 0" in gw.log_text()
