"""SDP offer/answer for an anchored call (gateway.media.negotiate): reading a peer's SDP,
choosing codecs to offer and to answer, and rendering the gateway's own SDP (RFC 3264,
RFC 3605, RFC 4568, RFC 5761; DESIGN.md "Contract details")."""

from __future__ import annotations

import base64

import pytest

from gateway.media import negotiate as neg
from gateway.media.sdp import Codec, Crypto, Media, SdpError, SessionDescription
from gateway.media.srtp import SUITES

KEY30 = base64.b64encode(bytes(range(30))).decode()
KEY30_B = base64.b64encode(bytes(range(100, 130))).decode()
KEY44 = base64.b64encode(bytes(range(44))).decode()


def sdp(*lines: str) -> bytes:
    return "".join(f"{line}\r\n" for line in lines).encode()


def offer(*media: str, address: str = "198.51.100.7", session: tuple[str, ...] = (),
          family: str = "IP4") -> bytes:
    """An SDP with a session-level c= and the given media lines (already split by \\n)."""
    head = ["v=0", f"o=- 42 1 IN {family} {address or '198.51.100.7'}", "s=-"]
    if address:
        head.append(f"c=IN {family} {address}")
    head.append("t=0 0")
    head.extend(session)
    body: list[str] = []
    for block in media:
        body.extend(block.split("\n"))
    return sdp(*head, *body)


def peer(*media: str, **kw: object) -> neg.PeerMedia:
    return neg.read_peer(SessionDescription.parse(offer(*media, **kw)))  # type: ignore[arg-type]


PCMU_TE = "m=audio 4000 RTP/AVP 0 101\na=rtpmap:101 telephone-event/8000\na=fmtp:101 0-16"


# ======================================================================================
# read_peer
# ======================================================================================
def test_read_peer_simple_g711_offer() -> None:
    p = peer(PCMU_TE + "\na=ptime:30")
    assert p.index == 0
    assert p.lines == 1
    assert p.address == "198.51.100.7"
    assert p.port == 4000
    assert p.rtcp_address == "198.51.100.7"
    assert p.rtcp_port == 4001
    assert p.rtcp_mux is False
    assert p.codecs == (Codec(0, "PCMU", 8000),)
    assert p.events == (Codec(101, "telephone-event", 8000, 1, "0-16"),)
    assert p.secure is False
    assert p.crypto == ()
    assert p.direction == "sendrecv"
    assert p.ptime == 30
    assert p.sends and p.receives
    assert isinstance(p.sdp, SessionDescription)


def test_read_peer_keeps_the_peer_codec_order_names_pts_and_fmtp() -> None:
    p = peer(
        "m=audio 4000 RTP/AVP 96 9 8 0 18 13 97 101\n"
        "a=rtpmap:96 OPUS/48000/2\na=fmtp:96 stereo=1;useinbandfec=1\n"
        "a=rtpmap:9 G722/8000\na=rtpmap:8 pcma/8000\na=rtpmap:18 G729/8000\n"
        "a=rtpmap:13 CN/8000\na=rtpmap:97 telephone-event/48000\n"
        "a=rtpmap:101 telephone-event/8000"
    )
    assert [c.pt for c in p.codecs] == [96, 9, 8, 0]  # G729 and CN are not kept
    assert p.codecs[0] == Codec(96, "OPUS", 48000, 2, "stereo=1;useinbandfec=1")
    assert p.codecs[2].name == "pcma"  # kept as written; compared by key
    assert [c.key for c in p.codecs] == [neg.OPUS, neg.G722, neg.PCMA, neg.PCMU]
    assert [(c.pt, c.clock) for c in p.events] == [(97, 48000), (101, 8000)]
    assert p.codec(neg.PCMA) == p.codecs[2]
    assert p.codec(("g729", 8000, 1)) is None
    assert p.event(48000) == p.events[0]
    assert p.event(8000) == p.events[1]
    assert p.event(16000) is None


def test_read_peer_ignores_events_at_other_clocks_and_mono_opus() -> None:
    p = peer(
        "m=audio 4000 RTP/AVP 0 100 111\na=rtpmap:100 telephone-event/16000\n"
        "a=rtpmap:111 opus/48000"
    )
    assert p.events == ()
    assert [c.key for c in p.codecs] == [neg.PCMU]


def test_read_peer_chooses_the_first_usable_audio_line() -> None:
    p = peer(
        "m=video 5000 RTP/AVP 96\na=rtpmap:96 H264/90000",
        "m=audio 0 RTP/AVP 0",  # rejected
        "m=audio 5002 UDP/TLS/RTP/SAVPF 0",  # DTLS-SRTP: not supported
        "m=audio 5004 RTP/AVP 18\na=rtpmap:18 G729/8000",  # no codec the gateway has
        "m=audio 5006 RTP/AVP 8",
        "m=audio 5008 RTP/AVP 0",
    )
    assert p.index == 4
    assert p.lines == 6
    assert p.port == 5006
    assert [c.key for c in p.codecs] == [neg.PCMA]


@pytest.mark.parametrize("proto", ["RTP/AVP", "RTP/SAVP", "RTP/AVPF", "RTP/SAVPF"])
def test_read_peer_accepts_the_rtp_profiles(proto: str) -> None:
    extra = f"\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}" if "S" in proto[4:] else ""
    p = peer(f"m=audio 4000 {proto} 0" + extra)
    assert p.secure == ("SAVP" in proto)


@pytest.mark.parametrize(
    ("media", "message"),
    [
        (("m=video 5000 RTP/AVP 96\na=rtpmap:96 H264/90000",), "no audio stream"),
        (("m=audio 0 RTP/AVP 0",), "no audio stream"),
        ((), "no audio stream"),
        (("m=audio 4000 UDP/TLS/RTP/SAVPF 0",),
         "m= line 1: transport UDP/TLS/RTP/SAVPF is not supported"),
        (("m=audio 4000 udp MP2T",), "m= line 1: transport udp is not supported"),
        (("m=audio 4000 RTP/AVP 18 13",),
         "m= line 1: no supported codec (the gateway has PCMU, PCMA, opus, G722)"),
        (("m=video 5000 RTP/AVP 96\na=rtpmap:96 H264/90000",
          "m=audio 4000 RTP/AVP 101\na=rtpmap:101 telephone-event/8000"),
         "m= line 2: no supported codec"),
    ],
)
def test_read_peer_errors_say_why(media: tuple[str, ...], message: str) -> None:
    with pytest.raises(SdpError) as info:
        peer(*media)
    assert message in str(info.value)
    assert info.value.status == 488


def test_read_peer_ipv4_hold_address_means_send_nothing() -> None:
    p = peer("m=audio 4000 RTP/AVP 0", address="0.0.0.0")
    assert p.address is None
    assert p.rtcp_address is None
    assert p.port == 4000
    assert p.sends is True  # sendrecv: it may still send
    assert p.receives is False  # but wants nothing sent (RFC 3264 section 8.4)
    assert p.direction == "sendonly"  # and says so toward the other leg


@pytest.mark.parametrize(("written", "meant"), [("sendrecv", "sendonly"),
                                                ("recvonly", "inactive"),
                                                ("sendonly", "sendonly"),
                                                ("inactive", "inactive")])
def test_zero_address_hold_becomes_a_direction(written: str, meant: str) -> None:
    """c=0.0.0.0 (RFC 2543 hold) is carried to the other leg as the direction it means."""
    p = peer(f"m=audio 4000 RTP/AVP 0\na={written}", address="0.0.0.0")
    assert p.direction == meant


def test_read_peer_ipv6_unspecified_address_means_send_nothing() -> None:
    p = peer("m=audio 4000 RTP/AVP 0", address="::", family="IP6")
    assert p.address is None
    assert p.receives is False


def test_read_peer_media_level_connection_wins() -> None:
    p = peer("m=audio 4000 RTP/AVP 0\nc=IN IP4 203.0.113.9")
    assert p.address == "203.0.113.9"
    assert p.rtcp_address == "203.0.113.9"
    p = peer("m=audio 4000 RTP/AVP 0\nc=IN IP4 0.0.0.0")
    assert p.address is None


def test_read_peer_ipv6() -> None:
    p = peer("m=audio 4000 RTP/AVP 0", address="2001:DB8::7", family="IP6")
    assert p.address == "2001:db8::7"  # normalized
    assert p.rtcp_address == "2001:db8::7"


def test_read_peer_without_connection_address() -> None:
    with pytest.raises(SdpError, match="m= line 1: no connection address"):
        peer("m=audio 4000 RTP/AVP 0", address="")


def test_read_peer_host_name_is_not_an_address() -> None:
    with pytest.raises(SdpError, match="is not an IP address"):
        peer("m=audio 4000 RTP/AVP 0", address="pbx.example.com")


@pytest.mark.parametrize(("address", "family"), [("224.2.1.1", "IP4"), ("ff0e::101", "IP6")])
def test_read_peer_rejects_multicast(address: str, family: str) -> None:
    with pytest.raises(SdpError, match=r"multicast address .* is not supported"):
        peer("m=audio 4000 RTP/AVP 0", address=address, family=family)


def test_read_peer_rejects_multicast_with_ttl() -> None:
    # RFC 8866 section 5.7: an IPv4 multicast c= carries a TTL; it is refused all the same
    with pytest.raises(SdpError):
        peer("m=audio 4000 RTP/AVP 0", address="224.2.1.1/127")


def test_read_peer_multicast_with_ttl_is_reported_as_multicast() -> None:
    with pytest.raises(SdpError, match="multicast"):
        peer("m=audio 4000 RTP/AVP 0", address="224.2.1.1/127")


def test_read_peer_multicast_media_connection_is_rejected() -> None:
    with pytest.raises(SdpError, match="multicast"):
        peer("m=audio 4000 RTP/AVP 0\nc=IN IP4 239.1.1.1")


def test_read_peer_rtcp_port_only() -> None:
    p = peer("m=audio 4000 RTP/AVP 0\na=rtcp:4711")
    assert p.rtcp_port == 4711
    assert p.rtcp_address == "198.51.100.7"


def test_read_peer_rtcp_port_and_address() -> None:
    p = peer("m=audio 4000 RTP/AVP 0\na=rtcp:53020 IN IP4 126.16.64.4")
    assert (p.rtcp_address, p.rtcp_port) == ("126.16.64.4", 53020)
    assert p.address == "198.51.100.7"
    p = peer("m=audio 4000 RTP/AVP 0\na=rtcp:53020 IN IP6 2001:db8::9", address="2001:db8::1",
             family="IP6")
    assert (p.rtcp_address, p.rtcp_port) == ("2001:db8::9", 53020)


def test_read_peer_rtcp_address_unspecified_and_multicast() -> None:
    p = peer("m=audio 4000 RTP/AVP 0\na=rtcp:9 IN IP4 0.0.0.0")
    assert p.rtcp_address is None
    assert p.address == "198.51.100.7"
    with pytest.raises(SdpError, match="a=rtcp: multicast"):
        peer("m=audio 4000 RTP/AVP 0\na=rtcp:9 IN IP4 224.0.0.9")


def test_read_peer_rtcp_mux() -> None:
    p = peer("m=audio 4000 RTP/AVP 0\na=rtcp-mux\na=rtcp:4000")
    assert p.rtcp_mux is True
    assert p.rtcp_port == 4000
    assert peer("m=audio 4000 RTP/AVP 0").rtcp_mux is False


@pytest.mark.parametrize(
    ("session", "media", "expected"),
    [
        ((), "", "sendrecv"),
        (("a=sendonly",), "", "sendonly"),
        (("a=recvonly",), "", "recvonly"),
        (("a=inactive",), "", "inactive"),
        (("a=sendonly",), "\na=sendrecv", "sendrecv"),
        (("a=inactive",), "\na=recvonly", "recvonly"),
        ((), "\na=sendonly", "sendonly"),
    ],
)
def test_read_peer_direction_inherits_from_the_session(
    session: tuple[str, ...], media: str, expected: str
) -> None:
    p = peer("m=audio 4000 RTP/AVP 0" + media, session=session)
    assert p.direction == expected


@pytest.mark.parametrize(
    ("direction", "sends", "receives"),
    [("sendrecv", True, True), ("sendonly", True, False), ("recvonly", False, True),
     ("inactive", False, False)],
)
def test_peer_sends_and_receives(direction: str, sends: bool, receives: bool) -> None:
    p = peer(f"m=audio 4000 RTP/AVP 0\na={direction}")
    assert (p.sends, p.receives) == (sends, receives)
    held = peer(f"m=audio 4000 RTP/AVP 0\na={direction}", address="0.0.0.0")
    assert (held.sends, held.receives) == (sends, False)


def test_read_peer_savp_with_crypto() -> None:
    p = peer(
        "m=audio 4000 RTP/SAVP 0\n"
        f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}|2^20|1:32\n"
        f"a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{KEY30_B}"
    )
    assert p.secure is True
    assert [(c.tag, c.suite) for c in p.crypto] == [
        (1, "AES_CM_128_HMAC_SHA1_80"), (2, "AES_CM_128_HMAC_SHA1_32")]
    assert p.crypto[0].master() == bytes(range(30))
    assert p.crypto[1].master() == bytes(range(100, 130))


def test_read_peer_crypto_on_plain_avp_is_kept() -> None:
    # best-effort SDES on RTP/AVP: keys are read, but the stream is not "secure"
    p = peer(f"m=audio 4000 RTP/AVP 0\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}")
    assert p.secure is False
    assert len(p.crypto) == 1


def test_read_peer_ignores_unknown_crypto_suites() -> None:
    p = peer(
        "m=audio 4000 RTP/SAVP 0\n"
        f"a=crypto:1 AES_256_CM_HMAC_SHA1_80 inline:{KEY44}\n"  # SDP knows it, libsrtp here not
        "a=crypto:2 F8_128_HMAC_SHA1_80 inline:bm90LWEta2V5\n"  # unknown; its key not checked
        f"a=crypto:3 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}"
    )
    assert [c.tag for c in p.crypto] == [3]
    assert all(c.suite in SUITES for c in p.crypto)


def test_read_peer_savp_with_only_unknown_suites_has_no_crypto() -> None:
    p = peer("m=audio 4000 RTP/SAVP 0\na=crypto:1 F8_128_HMAC_SHA1_80 inline:bm90LWEta2V5")
    assert p.secure is True
    assert p.crypto == ()


@pytest.mark.parametrize(
    "key",
    [
        base64.b64encode(bytes(29)).decode(),  # too short
        base64.b64encode(bytes(31)).decode(),  # too long
        "not*base64!",
    ],
)
def test_read_peer_bad_crypto_key_is_an_sdp_error(key: str) -> None:
    with pytest.raises(SdpError, match="inline key"):
        peer(f"m=audio 4000 RTP/SAVP 0\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{key}")


def test_read_peer_bad_key_in_a_later_supported_line_is_an_error_too() -> None:
    with pytest.raises(SdpError):
        peer(
            "m=audio 4000 RTP/SAVP 0\n"
            f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}\n"
            "a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:AAAA"
        )


def test_parse_peer_parses_bytes() -> None:
    p = neg.parse_peer(offer("m=audio 4000 RTP/AVP 8"))
    assert p.codecs == (Codec(8, "PCMA", 8000),)
    with pytest.raises(SdpError):
        neg.parse_peer(b"not sdp")


def test_codec_key_is_case_insensitive() -> None:
    assert neg.codec_key("pcmu") == neg.codec_key("PCMU") == ("pcmu", 8000, 1)
    assert neg.codec_key("OPUS") == ("opus", 48000, 2)
    assert neg.codec_key("g722") == ("g722", 8000, 1)
    assert neg.codec_key("PcmA") == ("pcma", 8000, 1)
    with pytest.raises(KeyError):
        neg.codec_key("G729")


def test_codec_sets() -> None:
    assert neg.TRANSCODABLE == {neg.PCMU, neg.PCMA, neg.OPUS}
    assert neg.RELAY_ONLY == {neg.G722}
    assert neg.REVERSE_DIRECTION == {"sendrecv": "sendrecv", "sendonly": "recvonly",
                                     "recvonly": "sendonly", "inactive": "inactive"}


# ======================================================================================
# offer_codecs
# ======================================================================================
def pts_unique(codecs: list[Codec], events: list[Codec]) -> bool:
    pts = [c.pt for c in codecs + events]
    return len(pts) == len(set(pts))


def test_offer_shared_codecs_first_with_the_offerer_pt_and_fmtp() -> None:
    src = peer(
        "m=audio 4000 RTP/AVP 0 96 101\n"
        "a=rtpmap:96 opus/48000/2\na=fmtp:96 minptime=10;useinbandfec=1\n"
        "a=rtpmap:101 telephone-event/8000\na=fmtp:101 0-15"
    )
    codecs, events = neg.offer_codecs(src, ["PCMA", "opus", "PCMU"])
    # shared ones (in the trunk's order) keep the offerer's numbers and fmtp, then own ones
    assert codecs == [
        Codec(96, "opus", 48000, 2, "minptime=10;useinbandfec=1"),
        Codec(0, "PCMU", 8000),
        Codec(8, "PCMA", 8000),
    ]
    # 8000 from the offerer (its fmtp kept); 48000 the gateway's own, opus being offered
    assert events == [
        Codec(101, "telephone-event", 8000, 1, "0-15"),
        Codec(110, "telephone-event", 48000, 1, "0-16"),
    ]
    assert pts_unique(codecs, events)


def test_offer_own_codecs_use_the_gateway_lines() -> None:
    src = peer("m=audio 4000 RTP/AVP 0")
    codecs, events = neg.offer_codecs(src, ["opus", "PCMA"])
    assert codecs == [Codec(111, "opus", 48000, 2, "useinbandfec=1"), Codec(8, "PCMA", 8000)]
    assert events == [Codec(101, "telephone-event", 8000, 1, "0-16"),
                      Codec(110, "telephone-event", 48000, 1, "0-16")]


def test_offer_own_dynamic_pts_avoid_the_offerer_numbers() -> None:
    src = peer(
        "m=audio 4000 RTP/AVP 0 96 111 101 110\n"
        "a=rtpmap:96 PCMA/8000\n"  # a dynamic number for a static codec
        "a=rtpmap:111 telephone-event/48000\n"
        "a=rtpmap:101 G722/8000\n"
        "a=rtpmap:110 telephone-event/8000"
    )
    codecs, events = neg.offer_codecs(src, ["PCMU", "opus"])
    assert codecs[0] == Codec(0, "PCMU", 8000)
    own_opus = codecs[1]
    assert own_opus.key == neg.OPUS
    assert own_opus.pt not in {0, 96, 111, 101, 110}
    assert own_opus.pt == 97  # first free dynamic number
    assert [(e.pt, e.clock) for e in events] == [(110, 8000), (111, 48000)]
    assert pts_unique(codecs, events)


def test_offer_own_event_pts_avoid_the_offerer_numbers() -> None:
    src = peer(
        "m=audio 4000 RTP/AVP 0 101 110 96\n"
        "a=rtpmap:101 PCMA/8000\na=rtpmap:110 opus/48000/2\na=rtpmap:96 G722/8000"
    )
    codecs, events = neg.offer_codecs(src, ["PCMU", "opus", "PCMA", "G722"])
    assert [c.pt for c in codecs] == [0, 110, 101, 96]
    assert [(e.clock, e.pt) for e in events] == [(8000, 97), (48000, 98)]
    assert pts_unique(codecs, events)


def test_offer_own_static_pt_moves_when_the_offerer_took_it() -> None:
    src = peer("m=audio 4000 RTP/AVP 8\na=rtpmap:8 opus/48000/2")
    codecs, events = neg.offer_codecs(src, ["opus", "PCMA"])
    assert codecs[0] == Codec(8, "opus", 48000, 2)
    assert codecs[1].key == neg.PCMA
    assert codecs[1].pt == 96
    assert pts_unique(codecs, events)


def test_offer_g722_only_when_the_offerer_has_it() -> None:
    without = peer("m=audio 4000 RTP/AVP 0")
    codecs, _ = neg.offer_codecs(without, ["G722", "PCMU"])
    assert [c.key for c in codecs] == [neg.PCMU]
    with_g722 = peer("m=audio 4000 RTP/AVP 9 0")
    codecs, _ = neg.offer_codecs(with_g722, ["G722", "PCMU"])
    assert codecs == [Codec(9, "G722", 8000), Codec(0, "PCMU", 8000)]


def test_offer_from_a_relay_only_offer_adds_nothing_to_transcode() -> None:
    # G722 cannot be decoded: with nothing transcodable offered, only shared codecs go out
    src = peer("m=audio 4000 RTP/AVP 9")
    codecs, events = neg.offer_codecs(src, ["G722", "PCMU", "opus"])
    assert codecs == [Codec(9, "G722", 8000)]
    assert [e.clock for e in events] == [8000]


def test_offer_nothing_possible_is_an_error() -> None:
    src = peer("m=audio 4000 RTP/AVP 9")
    with pytest.raises(SdpError) as info:
        neg.offer_codecs(src, ["PCMU", "PCMA"])
    assert str(info.value) == (
        "no codec in common with the trunk (PCMU, PCMA) and none the gateway can transcode to"
    )


def test_offer_telephone_event_at_8000_always_and_48000_with_opus() -> None:
    src = peer("m=audio 4000 RTP/AVP 0")
    _, events = neg.offer_codecs(src, ["PCMU"])
    assert events == [Codec(101, "telephone-event", 8000, 1, "0-16")]
    _, events = neg.offer_codecs(src, ["PCMU", "opus"])
    assert [e.clock for e in events] == [8000, 48000]
    # opus shared, nothing offered of the offerer's events at all
    src = peer("m=audio 4000 RTP/AVP 111\na=rtpmap:111 opus/48000/2")
    codecs, events = neg.offer_codecs(src, ["opus"])
    assert codecs == [Codec(111, "opus", 48000, 2)]
    assert [(e.pt, e.clock) for e in events] == [(101, 8000), (110, 48000)]


def test_offer_keeps_the_offerer_events_at_both_clocks() -> None:
    src = peer(
        "m=audio 4000 RTP/AVP 111 126 120\na=rtpmap:111 opus/48000/2\n"
        "a=rtpmap:126 telephone-event/8000\na=rtpmap:120 telephone-event/48000\n"
        "a=fmtp:120 0-15"
    )
    _, events = neg.offer_codecs(src, ["opus", "PCMU"])
    assert events == [Codec(126, "telephone-event", 8000), Codec(120, "telephone-event", 48000,
                                                                 1, "0-15")]


def test_offer_without_an_offerer_offers_the_allowed_list() -> None:
    codecs, events = neg.offer_codecs(None, ["PCMU", "PCMA", "opus"])
    assert codecs == [Codec(0, "PCMU", 8000), Codec(8, "PCMA", 8000),
                      Codec(111, "opus", 48000, 2, "useinbandfec=1")]
    assert [(e.pt, e.clock) for e in events] == [(101, 8000), (110, 48000)]


def test_offer_trunk_names_are_case_insensitive() -> None:
    src = peer("m=audio 4000 RTP/AVP 8")
    codecs, _ = neg.offer_codecs(src, ["pcma", "Pcmu"])
    assert codecs == [Codec(8, "PCMA", 8000), Codec(0, "PCMU", 8000)]


# ======================================================================================
# answer_codec, answer_event, crypto helpers
# ======================================================================================
OFFER_MIX = peer(
    "m=audio 4000 RTP/AVP 8 96 0 9 101 102\na=rtpmap:96 opus/48000/2\na=fmtp:96 useinbandfec=1\n"
    "a=rtpmap:101 telephone-event/8000\na=rtpmap:102 telephone-event/48000"
)


def test_answer_prefers_the_far_codec_for_relay() -> None:
    codec = neg.answer_codec(OFFER_MIX, ["PCMA", "PCMU", "opus"], neg.PCMU)
    assert codec == Codec(0, "PCMU", 8000)
    codec = neg.answer_codec(OFFER_MIX, ["PCMA", "opus"], neg.OPUS)
    assert codec == Codec(96, "opus", 48000, 2, "useinbandfec=1")  # the offerer's pt/fmtp
    codec = neg.answer_codec(OFFER_MIX, ["G722"], neg.G722)
    assert codec == Codec(9, "G722", 8000)


def test_answer_far_codec_not_allowed_here_falls_back_to_transcoding() -> None:
    codec = neg.answer_codec(OFFER_MIX, ["opus", "PCMA"], neg.PCMU)
    assert codec.key == neg.PCMA  # the offerer's first allowed transcodable one


def test_answer_far_codec_not_offered_transcodes_in_offerer_order() -> None:
    src = peer("m=audio 4000 RTP/AVP 8 96\na=rtpmap:96 opus/48000/2")
    codec = neg.answer_codec(src, ["opus", "PCMA"], neg.PCMU)
    assert codec == Codec(8, "PCMA", 8000)


def test_answer_without_far_codec_takes_the_first_transcodable() -> None:
    codec = neg.answer_codec(OFFER_MIX, ["G722", "PCMU"], None)
    assert codec == Codec(0, "PCMU", 8000)  # G722 skipped: it cannot be bridged


def test_answer_relay_only_far_codec_cannot_be_transcoded() -> None:
    src = peer("m=audio 4000 RTP/AVP 0")
    with pytest.raises(SdpError):
        neg.answer_codec(src, ["PCMU", "G722"], neg.G722)
    # G722 offered but not allowed on this side: no relay, no bridge
    with pytest.raises(SdpError):
        neg.answer_codec(OFFER_MIX, ["PCMU"], neg.G722)


def test_answer_error_lists_the_offered_codecs() -> None:
    src = peer("m=audio 4000 RTP/AVP 8 9 96\na=rtpmap:96 opus/48000/2")
    with pytest.raises(SdpError) as info:
        neg.answer_codec(src, ["PCMU"], neg.PCMU)
    assert str(info.value) == (
        "no acceptable codec: offered PCMA/8000, G722/8000, opus/48000, allowed PCMU"
    )


def test_answer_event_matches_the_codec_clock() -> None:
    assert neg.answer_event(OFFER_MIX, Codec(96, "opus", 48000, 2)).pt == 102
    assert neg.answer_event(OFFER_MIX, Codec(0, "PCMU", 8000)).pt == 101
    only8k = peer("m=audio 4000 RTP/AVP 96 101\na=rtpmap:96 opus/48000/2\n"
                  "a=rtpmap:101 telephone-event/8000")
    assert neg.answer_event(only8k, only8k.codecs[0]).pt == 101  # falls back to 8000
    assert neg.answer_event(peer("m=audio 4000 RTP/AVP 0"), Codec(0, "PCMU", 8000)) is None


def test_offer_crypto_two_suites_fresh_keys() -> None:
    lines = neg.offer_crypto()
    assert [(c.tag, c.suite) for c in lines] == [
        (1, "AES_CM_128_HMAC_SHA1_80"), (2, "AES_CM_128_HMAC_SHA1_32")]
    assert all(len(c.master()) == 30 for c in lines)
    assert lines[0].master() != neg.offer_crypto()[0].master()


def test_answer_crypto_takes_the_first_supported_line() -> None:
    src = peer(
        "m=audio 4000 RTP/SAVP 0\n"
        f"a=crypto:5 AES_256_CM_HMAC_SHA1_80 inline:{KEY44}\n"
        f"a=crypto:7 AES_CM_128_HMAC_SHA1_32 inline:{KEY30}|2^31"
    )
    chosen = neg.answer_crypto(src)
    assert chosen is not None
    theirs, ours = chosen
    assert (theirs.tag, theirs.suite) == (7, "AES_CM_128_HMAC_SHA1_32")
    assert (ours.tag, ours.suite) == (7, "AES_CM_128_HMAC_SHA1_32")
    assert ours.master() != theirs.master()
    assert len(ours.master()) == 30
    assert neg.answer_crypto(peer("m=audio 4000 RTP/AVP 0")) is None


def test_new_crypto() -> None:
    c = neg.new_crypto(3, "AEAD_AES_128_GCM")
    assert (c.tag, c.suite, len(c.master())) == (3, "AEAD_AES_128_GCM", 28)


def test_session_id_is_a_63_bit_decimal() -> None:
    ids = {neg.session_id() for _ in range(20)}
    assert len(ids) == 20
    for value in ids:
        assert value.isdigit()
        assert 0 <= int(value) < 2**63


# ======================================================================================
# render
# ======================================================================================
def render(**kw: object) -> bytes:
    args: dict[str, object] = {
        "session_id": "1234567890",
        "version": 3,
        "address": "192.0.2.10",
        "port": 30000,
        "codecs": [Codec(0, "PCMU", 8000), Codec(101, "telephone-event", 8000, 1, "0-16")],
        "secure": False,
    }
    args.update(kw)
    return neg.render(**args)  # type: ignore[arg-type]


def test_render_parses_back_field_by_field() -> None:
    body = render()
    assert body.endswith(b"\r\n")
    assert b"\n" not in body.replace(b"\r\n", b"")
    desc = SessionDescription.parse(body)
    assert desc.version == 0
    o = desc.origin
    assert (o.username, o.session_id, o.version, o.nettype, o.addrtype, o.address) == (
        "acs-gateway", "1234567890", 3, "IN", "IP4", "192.0.2.10")
    assert desc.name == "acs-gateway"
    assert (desc.connection, desc.addrtype) == ("192.0.2.10", "IP4")
    assert desc.times == ("0 0",)
    assert len(desc.media) == 1
    m = desc.media[0]
    assert (m.kind, m.port, m.proto, m.fmts) == ("audio", 30000, "RTP/AVP", ("0", "101"))
    assert m.codecs == (Codec(0, "PCMU", 8000), Codec(101, "telephone-event", 8000, 1, "0-16"))
    assert m.ptime == 20
    assert m.rtcp == (30001, None)
    assert m.rtcp_mux is False
    assert m.crypto == ()
    assert m.direction == "sendrecv"
    assert m.connection is None
    assert bytes(desc) == body  # nothing the parser would reorder or rewrite


def test_render_is_read_back_by_read_peer() -> None:
    opus = Codec(111, "opus", 48000, 2, "useinbandfec=1")
    body = render(codecs=[opus, Codec(110, "telephone-event", 48000, 1, "0-16")],
                  direction="recvonly", ptime=40)
    p = neg.parse_peer(body)
    assert p.codecs == (opus,)
    assert p.events == (Codec(110, "telephone-event", 48000, 1, "0-16"),)
    assert (p.address, p.port, p.rtcp_port, p.direction, p.ptime) == (
        "192.0.2.10", 30000, 30001, "recvonly", 40)
    assert b"a=rtpmap:111 opus/48000/2\r\na=fmtp:111 useinbandfec=1\r\n" in body
    assert b"a=rtpmap:0 PCMU" not in body


def test_render_without_ptime() -> None:
    m = SessionDescription.parse(render(ptime=None)).media[0]
    assert m.ptime is None
    assert not m.has_attribute("ptime")


@pytest.mark.parametrize("direction", ["sendrecv", "sendonly", "recvonly", "inactive"])
def test_render_direction(direction: str) -> None:
    body = render(direction=direction)
    desc = SessionDescription.parse(body)
    assert desc.media[0].direction == direction
    assert desc.direction is None  # only at media level
    assert body.count(f"a={direction}".encode()) == 1


def test_render_rtcp_mux_replaces_the_rtcp_line() -> None:
    m = SessionDescription.parse(render(rtcp_mux=True)).media[0]
    assert m.rtcp_mux is True
    assert m.rtcp is None
    m = SessionDescription.parse(render(rtcp_mux=False)).media[0]
    assert m.rtcp_mux is False
    assert m.rtcp == (30001, None)


def test_render_secure_with_crypto_lines() -> None:
    lines = [Crypto.make(1, "AES_CM_128_HMAC_SHA1_80", bytes(range(30))),
             Crypto.make(2, "AES_CM_128_HMAC_SHA1_32", bytes(range(1, 31)))]
    desc = SessionDescription.parse(render(secure=True, crypto=lines))
    m = desc.media[0]
    assert m.proto == "RTP/SAVP"
    assert m.crypto == tuple(lines)
    assert [c.master() for c in m.crypto] == [bytes(range(30)), bytes(range(1, 31))]
    p = neg.read_peer(desc)
    assert p.secure is True
    assert p.crypto == tuple(lines)


def test_render_crypto_on_plain_avp() -> None:
    line = Crypto.make(1, "AES_CM_128_HMAC_SHA1_80", bytes(30))
    m = SessionDescription.parse(render(secure=False, crypto=[line])).media[0]
    assert m.proto == "RTP/AVP"
    assert m.crypto == (line,)


def test_render_ipv6() -> None:
    body = render(address="2001:db8::10")
    assert b"o=acs-gateway 1234567890 3 IN IP6 2001:db8::10\r\n" in body
    assert b"c=IN IP6 2001:db8::10\r\n" in body
    desc = SessionDescription.parse(body)
    assert desc.origin.addrtype == "IP6"
    assert (desc.connection, desc.addrtype) == ("2001:db8::10", "IP6")
    assert neg.read_peer(desc).address == "2001:db8::10"


def test_render_rejected_lines_in_their_positions() -> None:
    src = SessionDescription.parse(offer(
        "m=video 5000 RTP/AVP 96 97\na=rtpmap:96 H264/90000\na=rtpmap:97 VP8/90000",
        "m=audio 4000 RTP/AVP 0",
        "m=application 5002 UDP/DTLS/SCTP webrtc-datachannel",
        "m=audio 4004 RTP/AVP 8",
    ))
    p = neg.read_peer(src)
    assert (p.index, p.lines) == (1, 4)
    others = [m for i, m in enumerate(src.media) if i != p.index]
    desc = SessionDescription.parse(render(index=p.index, lines=p.lines, rejected=others))
    kinds = [(m.kind, m.port, m.proto, m.fmts) for m in desc.media]
    assert kinds == [
        ("video", 0, "RTP/AVP", ("96", "97")),
        ("audio", 30000, "RTP/AVP", ("0", "101")),
        ("application", 0, "UDP/DTLS/SCTP", ("webrtc-datachannel",)),
        ("audio", 0, "RTP/AVP", ("8",)),
    ]
    assert [m.rejected for m in desc.media] == [True, False, True, True]
    assert all(m.attributes == () for i, m in enumerate(desc.media) if i != 1)


def test_render_rejected_placeholder_when_fewer_given() -> None:
    desc = SessionDescription.parse(render(index=2, lines=3, rejected=[
        Media("video", 5000, "RTP/AVP", ("31",))]))
    assert [(m.kind, m.port, m.fmts) for m in desc.media] == [
        ("video", 0, ("31",)), ("audio", 0, ("0",)), ("audio", 30000, ("0", "101"))]


def test_render_audio_last_of_two() -> None:
    desc = SessionDescription.parse(render(index=1, lines=2))
    assert [m.port for m in desc.media] == [0, 30000]
    assert neg.read_peer(desc).index == 1
