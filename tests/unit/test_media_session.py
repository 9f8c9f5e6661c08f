"""MediaSession, the sans-I/O core of media anchoring, driven with an in-memory stand-in for
MediaManager: every SDP a leg sends goes in, the gateway's SDP comes out, and RTP fed into one
leg's stream comes out of the other leg's captured ``send`` (RFC 3264, RFC 3550, RFC 4568,
DESIGN.md "Contract details" and "Symmetric RTP")."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

import pytest

from gateway.config import MediaConfig
from gateway.media import negotiate as neg
from gateway.media.dtmf import Event
from gateway.media.ports import PortsExhausted
from gateway.media.rtp import build, parse_header
from gateway.media.sdp import Codec, Crypto, SdpError, SessionDescription
from gateway.media.session import MediaSession
from gateway.media.srtp import SrtpContext
from gateway.media.stream import KIND_AUDIO, KIND_CN, KIND_EVENT, LegStream

GW = "192.0.2.1"
A_IP, B_IP = "198.51.100.10", "203.0.113.20"
A_ADDR, B_ADDR = (A_IP, 4000), (B_IP, 5000)
SUITE80 = "AES_CM_128_HMAC_SHA1_80"
A_KEY = bytes(range(30))
A_KEY_B64 = base64.b64encode(A_KEY).decode()


# ======================================================================================
# the stand-in for MediaManager
# ======================================================================================
@dataclass
class Captured:
    rtp: list[tuple[bytes, tuple[str, int]]] = field(default_factory=list)
    rtcp: list[tuple[bytes, tuple[str, int]]] = field(default_factory=list)


class FakeManager:
    """What MediaSession needs of the adapter, with every datagram captured."""

    def __init__(self, address: str = GW, ports: int = 100) -> None:
        self.address = address
        self.config = MediaConfig()
        self.t = 1000.0
        self._next = 30000
        self._left = ports
        self.opened: list[LegStream] = []
        self.closed: list[LegStream] = []
        self.out: dict[int, Captured] = {}
        self.transcoders: list[object] = []
        self.removed: list[object] = []
        self.sessions_closed: list[MediaSession] = []

    def now(self) -> float:
        return self.t

    def open_stream(self, session: MediaSession) -> LegStream:
        if self._left == 0:
            raise PortsExhausted("test: no ports")
        self._left -= 1
        port, self._next = self._next, self._next + 2
        cap = self.out[port] = Captured()
        stream = LegStream(port, lambda d, a: cap.rtp.append((d, a)),
                           lambda d, a: cap.rtcp.append((d, a)))
        self.opened.append(stream)
        return stream

    def close_stream(self, stream: LegStream) -> None:
        self.closed.append(stream)

    def add_transcoder(self, transcoder: object) -> None:
        self.transcoders.append(transcoder)

    def remove_transcoder(self, transcoder: object) -> None:
        self.removed.append(transcoder)
        if transcoder in self.transcoders:
            self.transcoders.remove(transcoder)

    def session_closed(self, session: MediaSession) -> None:
        self.sessions_closed.append(session)


# ======================================================================================
# helpers
# ======================================================================================
def sdp(*lines: str) -> bytes:
    return "".join(f"{line}\r\n" for line in lines).encode()


def peer_sdp(ip: str, port: int, fmts: str, *attrs: str, proto: str = "RTP/AVP",
             version: int = 1, sid: str = "777", conn: str | None = None,
             before: tuple[str, ...] = ()) -> bytes:
    return sdp(
        "v=0", f"o=- {sid} {version} IN IP4 {ip}", "s=-", f"c=IN IP4 {conn or ip}", "t=0 0",
        *before, f"m=audio {port} {proto} {fmts}", *attrs,
    )


TE101 = ("a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-16")


def a_offer(*attrs: str, fmts: str = "0 101", **kw: object) -> bytes:
    return peer_sdp(A_IP, A_ADDR[1], fmts, *(attrs or TE101), **kw)  # type: ignore[arg-type]


def b_answer(*attrs: str, fmts: str = "0 101", **kw: object) -> bytes:
    return peer_sdp(B_IP, B_ADDR[1], fmts, *(attrs or TE101), sid="888",
                    **kw)  # type: ignore[arg-type]


def parse(body: bytes) -> SessionDescription:
    return SessionDescription.parse(body)


def new_session(a: tuple[str, ...] = ("PCMU", "PCMA"), b: tuple[str, ...] = ("PCMU", "PCMA"),
                a_srtp: str = "off", b_srtp: str = "off",
                **kw: object) -> tuple[FakeManager, MediaSession]:
    manager = FakeManager()
    session = MediaSession(manager, "call-1", **kw)  # type: ignore[arg-type]
    session.set_policy("a", a, a_srtp)
    session.set_policy("b", b, b_srtp)
    return manager, session


def connect(session: MediaSession, offer: bytes | None = None,
            answer: bytes | None = None) -> tuple[bytes, bytes]:
    to_b = session.offer("a", offer or a_offer())
    to_a = session.answer("b", answer or b_answer())
    return to_b, to_a


def rtp(pt: int, seq: int, ts: int = 0, ssrc: int = 0x11223344, payload: bytes = b"\xff" * 160,
        marker: bool = False) -> bytes:
    return build(pt, seq, ts, ssrc, marker, payload)


def out_of(manager: FakeManager, side_stream: LegStream) -> Captured:
    return manager.out[side_stream.port]


def streams(session: MediaSession) -> tuple[LegStream, LegStream]:
    sa, sb = session.stream("a"), session.stream("b")
    assert sa is not None and sb is not None
    return sa, sb


# ======================================================================================
# offer and answer
# ======================================================================================
def test_caller_offer_becomes_the_gateway_offer_toward_b() -> None:
    manager, session = new_session(b=("PCMU", "PCMA"))
    body = session.offer("a", a_offer())
    desc = parse(body)
    sb = session.stream("b")
    assert sb is not None
    assert session.stream("a") is not None  # both legs' ports are taken with the offer
    assert desc.origin.username == "acs-gateway"
    assert desc.origin.address == GW
    assert desc.origin.version == 0
    assert desc.connection == GW
    assert len(desc.media) == 1
    m = desc.media[0]
    assert m.port == sb.port
    assert m.proto == "RTP/AVP"
    assert m.codecs == (Codec(0, "PCMU", 8000), Codec(8, "PCMA", 8000),
                        Codec(101, "telephone-event", 8000, 1, "0-16"))
    assert m.rtcp == (sb.port + 1, None)
    assert m.direction == "sendrecv"
    assert m.crypto == ()
    assert session.pending == "a"
    assert session.mode == "none"
    assert session.current("b") == body
    assert session.current("a") == b""
    assert len(manager.opened) == 2


def test_b_policy_decides_the_codecs_offered_toward_b() -> None:
    _, session = new_session(b=("PCMA",))
    m = parse(session.offer("a", a_offer())).media[0]
    # PCMA is not in a's offer: the gateway's own line, transcodable from a's PCMU
    assert [c.key for c in m.codecs] == [neg.PCMA, ("telephone-event", 8000, 1)]


def test_answer_to_a_mirrors_a_payload_numbers_and_uses_a_port() -> None:
    offer = peer_sdp(A_IP, 4000, "109 100", "a=rtpmap:109 opus/48000/2",
                     "a=fmtp:109 useinbandfec=1", "a=rtpmap:100 telephone-event/48000")
    _, session = new_session(a=("opus",), b=("opus",))
    to_b = parse(session.offer("a", offer)).media[0]
    assert [c.pt for c in to_b.codecs] == [109, 101, 100]  # 8000 event the gateway's own
    answer = peer_sdp(B_IP, 5000, "109 100", "a=rtpmap:109 opus/48000/2",
                      "a=rtpmap:100 telephone-event/48000")
    to_a = parse(session.answer("b", answer))
    sa, sb = streams(session)
    m = to_a.media[0]
    assert m.port == sa.port != sb.port
    assert to_a.connection == GW
    assert m.codecs == (Codec(109, "opus", 48000, 2, "useinbandfec=1"),
                        Codec(100, "telephone-event", 48000))
    assert m.rtcp == (sa.port + 1, None)
    assert session.mode == "relay"
    assert session.pending is None
    assert session.sides["a"].codec.pt == 109
    assert session.sides["b"].codec.pt == 109


def test_answer_reverses_a_direction() -> None:
    _, session = new_session()
    _, to_a = connect(session, a_offer(*TE101, "a=sendonly"), b_answer(*TE101, "a=recvonly"))
    assert parse(to_a).media[0].direction == "recvonly"


def test_relay_mode_sets_up_both_streams() -> None:
    _, session = new_session()
    connect(session)
    sa, sb = streams(session)
    assert session.mode == "relay"
    assert sa.remote == A_ADDR and sa.remote_rtcp == (A_IP, 4001)
    assert sb.remote == B_ADDR and sb.remote_rtcp == (B_IP, 5001)
    assert sa.pt_kind[0] == KIND_AUDIO and sa.pt_kind[101] == KIND_EVENT
    assert sb.pt_kind[0] == KIND_AUDIO and sb.pt_kind[101] == KIND_EVENT
    assert sa.pt_kind[8] == 0
    assert sa.codec_name == "PCMU" and sa.clock == 8000
    assert sa.srtp_in is None and sa.srtp_out is None
    assert sa.learning and sb.learning


def test_answer_keeps_the_offer_m_line_count_and_position() -> None:
    offer = sdp(
        "v=0", f"o=- 1 1 IN IP4 {A_IP}", "s=-", f"c=IN IP4 {A_IP}", "t=0 0",
        "m=video 6000 RTP/AVP 96", "a=rtpmap:96 H264/90000",
        "m=audio 4000 RTP/AVP 8 0", "a=rtcp-mux",
        "m=application 6002 UDP/BFCP *",
    )
    _, session = new_session()
    to_b = parse(session.offer("a", offer))
    assert len(to_b.media) == 1  # toward b only the audio stream
    to_a = parse(session.answer("b", b_answer(fmts="8")))
    assert [(m.kind, m.port == 0) for m in to_a.media] == [
        ("video", True), ("audio", False), ("application", True)]
    audio = to_a.media[1]
    assert audio.codecs == (Codec(8, "PCMA", 8000),)
    assert audio.rtcp_mux is True  # a asked for rtcp-mux
    assert audio.rtcp is None
    assert session.stream("a").rtcp_mux is True


@pytest.mark.parametrize("proto", ["RTP/AVPF", "RTP/SAVPF"])
def test_answer_keeps_the_offered_rtp_profile(proto: str) -> None:
    crypto = (f"a=crypto:1 {SUITE80} inline:{A_KEY_B64}",) if "S" in proto[4:] else ()
    _, session = new_session(a_srtp="optional")
    _, to_a = connect(session, a_offer(*TE101, *crypto, proto=proto))
    assert parse(to_a).media[0].proto == proto


def test_answer_without_offer_is_refused() -> None:
    _, session = new_session()
    with pytest.raises(SdpError, match="an answer without an offer"):
        session.answer("b", b_answer())


def test_answer_with_codecs_not_offered_is_refused() -> None:
    _, session = new_session(b=("PCMU",))
    session.offer("a", a_offer())
    with pytest.raises(SdpError, match="none of the offered codecs"):
        session.answer("b", b_answer(fmts="8"))


def test_bad_offer_leaves_the_session_untouched() -> None:
    manager, session = new_session(b=("PCMU",))
    with pytest.raises(SdpError):
        session.offer("a", peer_sdp(A_IP, 4000, "18", "a=rtpmap:18 G729/8000"))
    with pytest.raises(SdpError):
        session.offer("a", b"v=0\r\n")
    with pytest.raises(SdpError):  # only G722, not allowed toward b: nothing to offer
        session.offer("a", peer_sdp(A_IP, 4000, "9"))
    assert session.pending is None
    assert session.sides["a"].peer is None
    assert manager.opened == []
    assert session.current("b") == b""


def test_ports_exhausted_is_raised_and_leaves_no_pending_offer() -> None:
    manager, session = new_session()
    manager._left = 0
    with pytest.raises(PortsExhausted):
        session.offer("a", a_offer())
    assert session.pending is None
    assert session.sides["a"].peer is None


def test_check_offer_accepts_and_refuses_without_side_effects() -> None:
    manager, session = new_session(a_srtp="mandatory")
    with pytest.raises(SdpError, match="mandatory"):
        session.check_offer("a", a_offer())
    session.check_offer("a", a_offer(
        f"a=crypto:1 {SUITE80} inline:{A_KEY_B64}", proto="RTP/SAVP", fmts="0"))
    assert manager.opened == []
    assert session.pending is None


def test_check_offer_refuses_an_offer_with_no_codec_the_trunk_allows() -> None:
    _, session = new_session(a=("PCMU",), b=("PCMU",))
    with pytest.raises(SdpError):
        session.check_offer("a", peer_sdp(A_IP, 4000, "111", "a=rtpmap:111 opus/48000/2"))


# ======================================================================================
# relay: RTP path, payload mapping, latching
# ======================================================================================
def test_rtp_from_a_reaches_b_and_back() -> None:
    manager, session = new_session()
    connect(session)
    sa, sb = streams(session)
    packet = rtp(0, 1000, 160)
    sa.on_rtp(packet, A_ADDR, manager.t)
    assert out_of(manager, sb).rtp == [(packet, B_ADDR)]
    assert out_of(manager, sa).rtp == []
    back = rtp(0, 7, 320, ssrc=0x55)
    sb.on_rtp(back, B_ADDR, manager.t)
    assert out_of(manager, sa).rtp == [(back, A_ADDR)]
    assert (sa.counters.packets_in, sa.counters.packets_out) == (1, 1)
    assert (sb.counters.packets_in, sb.counters.packets_out) == (1, 1)
    assert sb.sender_ssrc == 0x11223344  # the relay passes the SSRC through
    assert sb.counters.bytes_out == len(packet)


def test_events_are_relayed_with_the_same_numbers() -> None:
    manager, session = new_session()
    connect(session)
    sa, sb = streams(session)
    event = rtp(101, 5, 800, payload=bytes(Event(5, False, 10, 160)), marker=True)
    sa.on_rtp(event, A_ADDR, manager.t)
    assert out_of(manager, sb).rtp == [(event, B_ADDR)]


def test_unnegotiated_payload_type_is_dropped_and_does_not_latch() -> None:
    manager, session = new_session()
    connect(session)
    sa, sb = streams(session)
    sa.on_rtp(rtp(8, 1), ("10.9.9.9", 1), manager.t)
    assert sa.counters.unknown_pt == 1
    assert sa.learning and sa.source is None
    sa.on_rtp(b"\x80\x00", A_ADDR, manager.t)
    assert sa.counters.malformed == 1
    assert out_of(manager, sb).rtp == []


def test_relay_maps_payload_types_between_legs() -> None:
    """White box: the relay path with different numbers on each leg (101 on a, 96 on b).

    Negotiation mirrors numbers, so the different ones are set on the sides directly."""
    manager, session = new_session()
    connect(session)
    session.sides["b"].event = Codec(96, "telephone-event", 8000)
    session._join()
    sa, sb = streams(session)
    payload = bytes(Event(1, False, 10, 160))
    sa.on_rtp(rtp(101, 9, 1600, payload=payload, marker=True), A_ADDR, manager.t)
    (data, addr), = out_of(manager, sb).rtp
    assert addr == B_ADDR
    pt, seq, ts, _ssrc, marker, off = parse_header(data)
    assert (pt, seq, ts, marker, data[off:]) == (96, 9, 1600, True, payload)
    sb.pt_kind[96] = KIND_EVENT
    sb.on_rtp(rtp(96, 3, 80, ssrc=7, payload=payload), B_ADDR, manager.t)
    (data, _), = out_of(manager, sa).rtp
    assert parse_header(data)[0] == 101
    assert data[1] & 0x80 == 0  # marker kept (clear)


def test_answer_with_another_event_number_is_mapped() -> None:
    manager, session = new_session()
    connect(session, a_offer(), b_answer("a=rtpmap:96 telephone-event/8000", fmts="0 96"))
    assert session.sides["b"].event == Codec(96, "telephone-event", 8000)
    sa, sb = streams(session)
    sa.on_rtp(rtp(101, 9, payload=bytes(Event(1, False, 10, 160))), A_ADDR, manager.t)
    assert [parse_header(d)[0] for d, _ in out_of(manager, sb).rtp] == [96]


def test_answer_with_another_codec_number_is_accepted() -> None:
    _, session = new_session(a=("opus",), b=("opus",))
    session.offer("a", peer_sdp(A_IP, 4000, "111", "a=rtpmap:111 opus/48000/2"))
    session.answer("b", peer_sdp(B_IP, 5000, "96", "a=rtpmap:96 opus/48000/2"))
    assert session.sides["b"].codec.pt == 96
    assert session.mode == "relay"


def test_dtmf_becomes_info_when_the_far_leg_has_no_telephone_event() -> None:
    calls: list[tuple[str, str, int]] = []
    manager, session = new_session(on_dtmf=lambda side, d, ms: calls.append((side, d, ms)))
    connect(session, a_offer(), b_answer(fmts="0"))
    assert session.sides["b"].event is None
    sa, sb = streams(session)
    for i, (end, dur) in enumerate([(False, 160), (False, 320), (True, 800), (True, 800)]):
        sa.on_rtp(rtp(101, 20 + i, 4000, payload=bytes(Event(5, end, 10, dur)),
                      marker=i == 0), A_ADDR, manager.t + i * 0.02)
    assert calls == [("b", "5", 100)]
    assert out_of(manager, sb).rtp == []


def test_first_valid_packet_latches_its_source() -> None:
    manager, session = new_session()
    connect(session)
    sa, sb = streams(session)
    nat = ("192.168.99.1", 61000)  # not where a's SDP said
    sa.on_rtp(rtp(0, 1), nat, manager.t)
    assert not sa.learning
    assert sa.source == nat
    assert sa.remote == nat  # symmetric RTP: replies go where a sends from
    assert sa.remote_rtcp == ("192.168.99.1", 4001)
    sa.on_rtp(rtp(0, 2), A_ADDR, manager.t)  # the SDP address, but not the latched one
    sa.on_rtp(rtp(0, 3), ("192.168.99.1", 61002), manager.t)
    assert sa.counters.wrong_source == 2
    assert len(out_of(manager, sb).rtp) == 1
    sb.on_rtp(rtp(0, 1, ssrc=9), B_ADDR, manager.t)
    assert out_of(manager, sa).rtp[-1][1] == nat


def test_relearn_after_a_new_offer_and_answer() -> None:
    manager, session = new_session()
    connect(session)
    sa, sb = streams(session)
    sa.on_rtp(rtp(0, 1), A_ADDR, manager.t)
    moved = ("198.51.100.11", 4100)
    sa.on_rtp(rtp(0, 2), moved, manager.t)
    assert sa.counters.wrong_source == 1
    session.offer("a", peer_sdp("198.51.100.11", 4100, "0 101", *TE101, version=2))
    assert not sa.learning  # an offer alone changes nothing yet
    session.answer("b", b_answer())
    assert sa.learning and sb.learning
    assert sa.remote == moved
    sa.on_rtp(rtp(0, 3), moved, manager.t)
    assert sa.source == moved
    assert sa.counters.wrong_source == 1
    assert len(out_of(manager, sb).rtp) == 2


def test_stream_relearn_reopens_learning() -> None:
    manager, session = new_session()
    connect(session)
    sa, _ = streams(session)
    sa.on_rtp(rtp(0, 1), A_ADDR, manager.t)
    sa.relearn()
    other = ("198.51.100.99", 4000)
    sa.on_rtp(rtp(0, 2), other, manager.t)
    assert sa.source == other
    assert sa.counters.wrong_source == 0


# ======================================================================================
# SRTP
# ======================================================================================
def savp_offer(*crypto: str, ip: str = A_IP) -> bytes:
    return peer_sdp(ip, 4000, "0 101", *TE101, *crypto, proto="RTP/SAVP")


CRYPTO_A = f"a=crypto:1 {SUITE80} inline:{A_KEY_B64}"


def test_srtp_mandatory_answer_has_our_own_key_for_their_tag_and_suite() -> None:
    _, session = new_session(a_srtp="mandatory")
    to_b = parse(session.offer("a", savp_offer(CRYPTO_A)))
    assert to_b.media[0].proto == "RTP/AVP"  # b's trunk is plain
    assert to_b.media[0].crypto == ()
    to_a = parse(session.answer("b", b_answer())).media[0]
    assert to_a.proto == "RTP/SAVP"
    (line,) = to_a.crypto
    assert (line.tag, line.suite) == (1, SUITE80)
    assert len(line.master()) == 30
    assert line.master() != A_KEY
    sa, sb = streams(session)
    assert sa.srtp_in is not None and sa.srtp_out is not None
    assert sb.srtp_in is None and sb.srtp_out is None


def test_srtp_answer_picks_the_first_supported_line() -> None:
    _, session = new_session(a_srtp="mandatory")
    session.offer("a", savp_offer(
        f"a=crypto:1 AES_256_CM_HMAC_SHA1_80 inline:{base64.b64encode(bytes(46)).decode()}",
        f"a=crypto:4 AES_CM_128_HMAC_SHA1_32 inline:{A_KEY_B64}",
    ))
    (line,) = parse(session.answer("b", b_answer())).media[0].crypto
    assert (line.tag, line.suite) == (4, "AES_CM_128_HMAC_SHA1_32")


def test_srtp_from_a_is_relayed_plain_to_b_and_back_protected() -> None:
    manager, session = new_session(a_srtp="mandatory")
    session.offer("a", savp_offer(CRYPTO_A))
    (ours,) = parse(session.answer("b", b_answer())).media[0].crypto
    sa, sb = streams(session)
    a_tx = SrtpContext(SUITE80, A_KEY, inbound=False)
    plain = rtp(0, 100, 16000, payload=b"\x11" * 160)
    sa.on_rtp(a_tx.protect(plain), A_ADDR, manager.t)
    assert out_of(manager, sb).rtp == [(plain, B_ADDR)]
    # and b's plain RTP reaches a under the gateway's answered key
    back = rtp(0, 5, 800, ssrc=0xBEEF, payload=b"\x22" * 160)
    sb.on_rtp(back, B_ADDR, manager.t)
    (protected, addr), = out_of(manager, sa).rtp
    assert addr == A_ADDR
    assert protected != back
    a_rx = SrtpContext(SUITE80, ours.master(), inbound=True)
    assert a_rx.unprotect(protected) == back


def test_srtp_with_a_wrong_key_is_counted_and_does_not_latch() -> None:
    manager, session = new_session(a_srtp="mandatory")
    connect(session, savp_offer(CRYPTO_A))
    sa, sb = streams(session)
    wrong = SrtpContext(SUITE80, bytes(30), inbound=False)
    sa.on_rtp(wrong.protect(rtp(0, 1)), ("10.6.6.6", 666), manager.t)
    assert sa.counters.srtp_auth == 1
    assert sa.learning
    assert out_of(manager, sb).rtp == []
    right = SrtpContext(SUITE80, A_KEY, inbound=False)
    sa.on_rtp(right.protect(rtp(0, 2)), A_ADDR, manager.t)
    assert sa.source == A_ADDR
    assert len(out_of(manager, sb).rtp) == 1
    # a replayed packet is counted as such
    packet = right.protect(rtp(0, 3))
    sa.on_rtp(packet, A_ADDR, manager.t)
    sa.on_rtp(packet, A_ADDR, manager.t)
    assert sa.counters.replay == 1
    assert len(out_of(manager, sb).rtp) == 2


def test_srtp_toward_b_when_b_trunk_requires_it() -> None:
    manager, session = new_session(b_srtp="mandatory")
    to_b = parse(session.offer("a", a_offer())).media[0]
    assert to_b.proto == "RTP/SAVP"
    offered = {c.tag: c for c in to_b.crypto}
    assert [(c.tag, c.suite) for c in to_b.crypto] == [(1, SUITE80),
                                                         (2, "AES_CM_128_HMAC_SHA1_32")]
    b_key = bytes(range(50, 80))
    answer = b_answer(*TE101, f"a=crypto:2 AES_CM_128_HMAC_SHA1_32 "
                      f"inline:{base64.b64encode(b_key).decode()}", proto="RTP/SAVP")
    to_a = parse(session.answer("b", answer)).media[0]
    assert to_a.proto == "RTP/AVP" and to_a.crypto == ()
    sa, sb = streams(session)
    assert session.sides["b"].srtp == ("AES_CM_128_HMAC_SHA1_32", offered[2].master(), b_key)
    plain = rtp(0, 1)
    sa.on_rtp(plain, A_ADDR, manager.t)
    (protected, _), = out_of(manager, sb).rtp
    assert SrtpContext("AES_CM_128_HMAC_SHA1_32", offered[2].master(),
                       inbound=True).unprotect(protected) == plain
    b_tx = SrtpContext("AES_CM_128_HMAC_SHA1_32", b_key, inbound=False)
    sb.on_rtp(b_tx.protect(rtp(0, 9, ssrc=3)), B_ADDR, manager.t)
    assert out_of(manager, sa).rtp == [(rtp(0, 9, ssrc=3), A_ADDR)]


def test_srtp_mandatory_toward_b_refuses_a_plain_answer() -> None:
    _, session = new_session(b_srtp="mandatory")
    session.offer("a", a_offer())
    with pytest.raises(SdpError, match="none of the offered SRTP suites"):
        session.answer("b", b_answer())


def test_srtp_optional_toward_b_offers_keys_on_plain_rtp_and_accepts_plain() -> None:
    _, session = new_session(b_srtp="optional")
    to_b = parse(session.offer("a", a_offer())).media[0]
    assert to_b.proto == "RTP/AVP"
    assert len(to_b.crypto) == 2
    session.answer("b", b_answer())
    assert session.sides["b"].srtp is None
    assert session.mode == "relay"


def test_srtp_keys_stay_the_same_across_re_offers() -> None:
    _, session = new_session(b_srtp="mandatory")
    first = parse(session.offer("a", a_offer())).media[0].crypto
    session.answer("b", b_answer(*TE101, "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"
                                 + base64.b64encode(bytes(30)).decode(), proto="RTP/SAVP"))
    again = parse(session.offer("a", a_offer(version=2))).media[0].crypto
    assert [c.master() for c in again] == [c.master() for c in first]


def test_srtp_policy_off_refuses_savp() -> None:
    _, session = new_session(a_srtp="off")
    with pytest.raises(SdpError, match="srtp is off"):
        session.offer("a", savp_offer(CRYPTO_A))
    with pytest.raises(SdpError, match="srtp is off"):
        session.check_offer("a", savp_offer(CRYPTO_A))
    assert session.pending is None


def test_srtp_policy_mandatory_refuses_plain() -> None:
    _, session = new_session(a_srtp="mandatory")
    with pytest.raises(SdpError, match="mandatory"):
        session.offer("a", a_offer())


def test_srtp_savp_without_usable_crypto_is_refused() -> None:
    _, session = new_session(a_srtp="optional")
    with pytest.raises(SdpError, match="without a usable a=crypto"):
        session.offer("a", savp_offer())


def test_srtp_policy_off_with_crypto_on_avp_answers_plain() -> None:
    _, session = new_session(a_srtp="off")
    _, to_a = connect(session, peer_sdp(A_IP, 4000, "0 101", *TE101, CRYPTO_A))
    m = parse(to_a).media[0]
    assert (m.proto, m.crypto) == ("RTP/AVP", ())
    assert session.stream("a").srtp_in is None


def test_srtp_optional_answers_best_effort_crypto_on_avp() -> None:
    _, session = new_session(a_srtp="optional")
    _, to_a = connect(session, peer_sdp(A_IP, 4000, "0 101", *TE101, CRYPTO_A))
    m = parse(to_a).media[0]
    assert m.proto == "RTP/AVP"
    assert [(c.tag, c.suite) for c in m.crypto] == [(1, SUITE80)]
    assert session.stream("a").srtp_in is not None


# ======================================================================================
# hold and direction
# ======================================================================================
def test_hold_with_sendonly_and_resume() -> None:
    manager, session = new_session()
    connect(session)
    hold = a_offer(*TE101, "a=sendonly", version=2)
    to_b = parse(session.offer("a", hold))
    assert to_b.media[0].direction == "sendonly"
    to_a = parse(session.answer("b", b_answer(*TE101, "a=recvonly", version=2)))
    assert to_a.media[0].direction == "recvonly"
    sa, sb = streams(session)
    assert (sb.sends, sb.receives) == (False, True)
    assert (sa.sends, sa.receives) == (True, False)
    # music on hold from a reaches b; nothing is sent to a
    sa.on_rtp(rtp(0, 1), A_ADDR, manager.t)
    sb.on_rtp(rtp(0, 1, ssrc=5), B_ADDR, manager.t)
    assert len(out_of(manager, sb).rtp) == 1
    assert out_of(manager, sa).rtp == []
    # resume
    to_b = parse(session.offer("a", a_offer(version=3)))
    assert to_b.media[0].direction == "sendrecv"
    to_a = parse(session.answer("b", b_answer(version=3)))
    assert to_a.media[0].direction == "sendrecv"
    assert (sa.sends, sa.receives, sb.sends, sb.receives) == (True, True, True, True)


def test_inactive_offer() -> None:
    _, session = new_session()
    to_b, to_a = connect(session, a_offer(*TE101, "a=inactive"),
                         b_answer(*TE101, "a=inactive"))
    assert parse(to_b).media[0].direction == "inactive"
    assert parse(to_a).media[0].direction == "inactive"
    sa, sb = streams(session)
    assert not (sa.sends or sa.receives or sb.sends or sb.receives)


def test_zero_address_hold_reaches_b_as_sendonly() -> None:
    _, session = new_session()
    connect(session)
    to_b = session.offer("a", a_offer(conn="0.0.0.0", version=2))
    assert parse(to_b).media[0].direction == "sendonly"


def test_offers_propose_rtcp_mux_with_the_rtcp_port_as_fallback() -> None:
    _, session = new_session()
    to_b, _ = connect(session)
    media = parse(to_b).media[0]
    assert media.rtcp_mux is True  # RFC 5761 section 5.1.1
    assert media.rtcp is not None and media.rtcp[0] == media.port + 1
    _, sb = streams(session)
    assert sb.rtcp_mux is False  # b answered without it: RTCP stays on the odd port
    _, session = new_session()
    connect(session, answer=b_answer(*TE101, "a=rtcp-mux"))
    _, sb = streams(session)
    assert sb.rtcp_mux is True


def test_hold_with_zero_address_sends_nothing_to_a() -> None:
    manager, session = new_session()
    connect(session)
    session.offer("a", a_offer(conn="0.0.0.0", version=2))
    session.answer("b", b_answer(version=2))
    sa, sb = streams(session)
    assert sa.remote is None
    assert sa.receives is False
    sb.on_rtp(rtp(0, 1, ssrc=5), B_ADDR, manager.t)
    assert out_of(manager, sa).rtp == []


@pytest.mark.parametrize(("b_dir", "expected"), [("inactive", "inactive"),
                                                 ("sendonly", "sendonly"),
                                                 ("recvonly", "recvonly")])
def test_answer_to_a_reflects_b_answered_direction(b_dir: str, expected: str) -> None:
    _, session = new_session()
    _, to_a = connect(session, a_offer(), b_answer(*TE101, f"a={b_dir}"))
    assert parse(to_a).media[0].direction == expected


# ======================================================================================
# o= versions (RFC 3264 section 8) and repeated answers
# ======================================================================================
def test_repeated_answer_returns_the_same_body() -> None:
    manager, session = new_session()
    _, to_a = connect(session)
    again = session.answer("b", b_answer())  # the 2xx repeating the 18x
    assert again == to_a
    assert parse(again).origin.version == 0
    assert len(manager.opened) == 2


def test_changed_answer_with_the_same_result_keeps_the_version() -> None:
    _, session = new_session()
    _, to_a = connect(session)
    # the 2xx differs from the 18x (another port at b), the answer toward a does not
    again = session.answer("b", peer_sdp(B_IP, 5002, "0 101", *TE101, version=2, sid="888"))
    assert again == to_a
    assert session.stream("b").remote == (B_IP, 5002)


def test_changed_answer_codec_bumps_the_version_by_one() -> None:
    _, session = new_session()
    offer = a_offer(*TE101, fmts="0 8 101")
    _, first = connect(session, offer, b_answer(fmts="0 101"))
    second = session.answer("b", b_answer(fmts="8 101", version=2))
    d1, d2 = parse(first), parse(second)
    assert [c.pt for c in d2.media[0].codecs] == [8, 101]
    assert d2.origin.session_id == d1.origin.session_id
    assert d2.origin.version == d1.origin.version + 1
    assert session.sides["a"].codec.key == neg.PCMA


def test_re_offer_versions_bump_once_per_change_session_ids_stay() -> None:
    _, session = new_session()
    to_b0, to_a0 = connect(session)
    # an unchanged re-offer (session refresh) gives unchanged SDP, same version
    to_b1 = session.offer("a", a_offer(version=2))
    assert to_b1 == to_b0
    to_a1 = session.answer("b", b_answer(version=2))
    assert to_a1 == to_a0
    # hold: both directions change, each by exactly one
    to_b2 = parse(session.offer("a", a_offer(*TE101, "a=sendonly", version=3)))
    to_a2 = parse(session.answer("b", b_answer(*TE101, "a=recvonly", version=3)))
    assert to_b2.origin.version == parse(to_b0).origin.version + 1
    assert to_a2.origin.version == parse(to_a0).origin.version + 1
    assert to_b2.origin.session_id == parse(to_b0).origin.session_id
    assert to_a2.origin.session_id == parse(to_a0).origin.session_id
    # resume: one more
    to_b3 = parse(session.offer("a", a_offer(version=4)))
    to_a3 = parse(session.answer("b", b_answer(version=4)))
    assert (to_b3.origin.version, to_a3.origin.version) == (2, 2)
    assert session.current("a") == bytes(to_a3)
    assert session.current("b") == bytes(to_b3)


def test_each_side_has_its_own_session_id() -> None:
    _, session = new_session()
    to_b, to_a = connect(session)
    assert parse(to_b).origin.session_id != parse(to_a).origin.session_id


def test_re_offer_from_b_goes_to_a_with_a_origin() -> None:
    manager, session = new_session()
    _, to_a0 = connect(session)
    b_offer = peer_sdp(B_IP, 5000, "0 101", *TE101, "a=sendonly", version=2, sid="888")
    to_a = parse(session.offer("b", b_offer))
    assert session.pending == "b"
    assert to_a.origin.session_id == parse(to_a0).origin.session_id
    assert to_a.origin.version == 1
    assert to_a.media[0].direction == "sendonly"
    assert to_a.media[0].port == session.stream("a").port
    to_b = parse(session.answer("a", a_offer(*TE101, "a=recvonly", version=2)))
    assert to_b.media[0].direction == "recvonly"
    assert to_b.media[0].port == session.stream("b").port
    assert session.mode == "relay"
    assert len(manager.opened) == 2  # same ports throughout


# ======================================================================================
# transcoding
# ======================================================================================
def opus_offer(*extra: str) -> bytes:
    return peer_sdp(A_IP, 4000, "111 110", "a=rtpmap:111 opus/48000/2",
                    "a=fmtp:111 useinbandfec=1", "a=rtpmap:110 telephone-event/48000", *extra)


def test_codec_mismatch_is_transcoded() -> None:
    manager, session = new_session(a=("opus", "PCMU"), b=("PCMU",))
    to_b = parse(session.offer("a", opus_offer())).media[0]
    # the gateway's own PCMU; 8000 event only (no opus toward b)
    assert [(c.pt, c.name, c.clock) for c in to_b.codecs] == [
        (0, "PCMU", 8000), (101, "telephone-event", 8000)]
    to_a = parse(session.answer("b", b_answer())).media[0]
    assert [(c.pt, c.name) for c in to_a.codecs] == [(111, "opus"), (110, "telephone-event")]
    assert session.sides["a"].codec.key == neg.OPUS
    assert session.sides["b"].codec.key == neg.PCMU
    assert session.mode == "transcode"
    assert len(session.transcoders) == 2
    assert manager.transcoders == session.transcoders


def test_transcoded_audio_flows_on_the_media_clock() -> None:
    manager, session = new_session(a=("opus",), b=("PCMU",))
    connect(session, opus_offer())
    sa, sb = streams(session)
    b_to_a = next(t for t in session.transcoders if t.src is sb)
    for i in range(10):
        sb.on_rtp(rtp(0, 100 + i, 160 * i, ssrc=0xB, payload=b"\xd5" * 160), B_ADDR,
                  manager.t + i * 0.02)
    for i in range(15):
        b_to_a.tick(manager.t + i * 0.02)
    sent = out_of(manager, sa).rtp
    assert sent, "no opus frame reached a"
    for data, addr in sent:
        assert addr == A_ADDR
        assert parse_header(data)[0] == 111
    assert out_of(manager, sb).rtp == []


def test_transcoder_rescales_events_to_the_far_clock() -> None:
    manager, session = new_session(a=("opus",), b=("PCMU",))
    connect(session, opus_offer())
    sa, sb = streams(session)
    sa.on_rtp(rtp(110, 1, 48000, payload=bytes(Event(7, False, 10, 960)), marker=True),
              A_ADDR, manager.t)
    (data, addr), = out_of(manager, sb).rtp
    pt, _, _, _, marker, off = parse_header(data)
    assert (addr, pt, marker) == (B_ADDR, 101, True)
    assert Event.parse(data[off:]) == Event(7, False, 10, 160)


def test_relay_back_after_transcoding_removes_the_transcoders() -> None:
    manager, session = new_session(a=("opus", "PCMU"), b=("PCMU", "opus"))
    # b's answer takes the gateway's own PCMU: transcode
    connect(session, opus_offer(), b_answer(fmts="0 101"))
    assert session.mode == "transcode"
    old = list(session.transcoders)
    session.offer("a", opus_offer())
    session.answer("b", peer_sdp(B_IP, 5000, "111 110", "a=rtpmap:111 opus/48000/2",
                                 "a=rtpmap:110 telephone-event/48000", version=2))
    assert session.mode == "relay"
    assert session.transcoders == []
    assert manager.transcoders == []
    assert all(t in manager.removed for t in old)


# ======================================================================================
# local offers (transfer), activation, CN
# ======================================================================================
def test_local_offer_and_answer_move_b_to_a_new_target() -> None:
    manager, session = new_session()
    _, _ = connect(session)
    body = parse(session.local_offer("b"))
    assert session.pending is None
    assert body.media[0].port == session.stream("b").port
    assert [c.pt for c in body.media[0].codecs] == [0, 8, 101]
    target = peer_sdp("203.0.113.99", 7000, "0 101", *TE101, sid="999")
    session.local_answer("b", target)
    sa, sb = streams(session)
    assert sb.remote == ("203.0.113.99", 7000)
    assert session.mode == "relay"
    sa.on_rtp(rtp(0, 1), A_ADDR, manager.t)
    assert out_of(manager, sb).rtp[-1][1] == ("203.0.113.99", 7000)


def test_activate_stamps_last_rx() -> None:
    manager, session = new_session()
    connect(session)
    manager.t = 2000.0
    session.activate()
    assert session.active
    sa, sb = streams(session)
    assert sa.last_rx == sb.last_rx == 2000.0


def test_comfort_noise_offered_by_the_peer_is_accepted() -> None:
    _, session = new_session()
    connect(session, a_offer(*TE101, fmts="0 13 101"), b_answer(fmts="0 13 101"))
    sa, _ = streams(session)
    assert sa.pt_kind[13] == KIND_CN


# ======================================================================================
# close and quality
# ======================================================================================
def test_close_closes_both_streams_and_tells_the_manager_once() -> None:
    manager, session = new_session(a=("opus",), b=("PCMU",))
    connect(session, opus_offer())
    sa, sb = streams(session)
    transcoders = list(session.transcoders)
    session.close()
    assert session.closed
    assert set(manager.closed) == {sa, sb}
    assert manager.sessions_closed == [session]
    assert session.stream("a") is None and session.stream("b") is None
    assert manager.transcoders == [] and session.transcoders == []
    assert all(t in manager.removed for t in transcoders)
    session.close()
    assert len(manager.closed) == 2
    assert manager.sessions_closed == [session]


def test_close_before_any_answer() -> None:
    manager, session = new_session()
    session.offer("a", a_offer())
    session.close()
    assert manager.closed == manager.opened
    assert manager.sessions_closed == [session]


def test_quality_reports_the_leg_figures() -> None:
    manager, session = new_session()
    assert session.quality("a") == {}
    connect(session)
    sa, _ = streams(session)
    assert session.quality("a")["mos"] is None
    for i in range(50):
        if i == 20:
            continue  # one lost
        sa.on_rtp(rtp(0, 500 + i, 160 * i), A_ADDR, manager.t + i * 0.02)
    q = session.quality("a")
    # the CDR's columns (DESIGN.md "Contract details") are all there
    assert {"codec", "packets_in", "packets_out", "lost", "jitter_ms", "mos"} <= set(q)
    assert q["codec"] == "PCMU"
    assert q["packets_in"] == 49
    assert q["packets_out"] == 0
    assert q["bytes_in"] == 49 * 172
    assert q["bytes_out"] == 0
    assert q["rtt_ms"] is None  # no RTCP from a yet
    assert q["srtp"] is None
    assert q["lost"] == 1
    assert q["jitter_ms"] == pytest.approx(0.0, abs=0.01)
    assert isinstance(q["mos"], float) and 1.0 <= q["mos"] <= 4.5
    qb = session.quality("b")
    assert (qb["codec"], qb["packets_in"], qb["packets_out"], qb["lost"]) == ("PCMU", 0, 49, 0)
    assert qb["mos"] is None
    assert qb["bytes_out"] == 49 * 172
    live = session.live()
    assert live["mode"] == "relay"
    assert live["legs"] == {"a": session.quality("a"), "b": qb}


def test_quality_names_the_srtp_suite() -> None:
    _, session = new_session(a_srtp="mandatory")
    connect(session, savp_offer(CRYPTO_A))
    assert session.quality("a")["srtp"] == SUITE80
    assert session.quality("b")["srtp"] is None


def test_live_lists_only_legs_with_a_stream() -> None:
    _, session = new_session()
    assert session.live() == {"mode": "none", "legs": {}}
    session.offer("a", a_offer())
    assert set(session.live()["legs"]) == {"a", "b"}


def test_crypto_line_helper_round_trip() -> None:
    # a sanity check on the test's own SRTP fixture
    line = Crypto.parse(CRYPTO_A.split(":", 1)[1])
    assert line.master() == A_KEY
