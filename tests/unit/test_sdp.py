"""SDP codec: round trip, views, builders and every rejection (RFC 8866, RFC 4566, RFC 4568,
RFC 3605, RFC 3264).

The examples are those of RFC 8866 section 5, RFC 4566 section 5 and RFC 4568 section 4
(verbatim apart from line ends), plus descriptions shaped like what real peers send: a
carrier G.711 offer, baresip with SRTP and ICE, a WebRTC-style audio offer, audio+video, IPv6,
and an answer with rejected m= lines.
"""

from __future__ import annotations

import base64
import dataclasses

import pytest

from gateway.media.sdp import (
    CRYPTO_SUITES,
    MAX_MEDIA,
    MAX_SDP_SIZE,
    STATIC_PAYLOADS,
    Codec,
    Crypto,
    Media,
    Origin,
    SdpError,
    SessionDescription,
    check_address,
)


def sdp(*lines: str) -> bytes:
    """CRLF-terminated lines, as a peer sends them."""
    return "".join(f"{line}\r\n" for line in lines).encode()


# A carrier's G.711 offer with RFC 4733 telephone-event.
CARRIER_G711 = sdp(
    "v=0",
    "o=- 1718010000 1718010000 IN IP4 203.0.113.10",
    "s=SBC call",
    "c=IN IP4 203.0.113.10",
    "t=0 0",
    "m=audio 16384 RTP/AVP 8 0 18 101",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:18 G729/8000",
    "a=fmtp:18 annexb=no",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-16",
    "a=ptime:20",
    "a=maxptime:40",
    "a=sendrecv",
)

# baresip: Opus + G.722 + G.711 over SDES-SRTP, ICE, rtcp-mux, RFC 3605 a=rtcp.
BARESIP_SRTP = sdp(
    "v=0",
    "o=- 1193155963 2373186476 IN IP4 192.168.1.20",
    "s=-",
    "c=IN IP4 192.168.1.20",
    "t=0 0",
    "a=tool:baresip 3.10.1",
    "a=ice-lite",
    "m=audio 10004 RTP/SAVP 96 9 0 8 101",
    "b=AS:107",
    "a=rtpmap:96 opus/48000/2",
    "a=fmtp:96 stereo=1;sprop-stereo=1",
    "a=rtpmap:9 G722/8000",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-15",
    "a=rtcp:10005",
    "a=rtcp-mux",
    "a=sendrecv",
    "a=label:1",
    "a=ice-ufrag:Ojq3",
    "a=ice-pwd:w1xBVhOQ5N7W6pDiY8wDN0",
    "a=candidate:1 1 UDP 2113929471 192.168.1.20 10004 typ host",
    "a=candidate:1 2 UDP 2113929470 192.168.1.20 10005 typ host",
    "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz",
    "a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:32",
    "a=ptime:20",
)

# Browser-style audio offer: DTLS-SRTP, BUNDLE, extmap, ssrc lines with spaces in values.
WEBRTC_AUDIO = sdp(
    "v=0",
    "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
    "s=-",
    "t=0 0",
    "a=group:BUNDLE 0",
    "a=extmap-allow-mixed",
    "a=msid-semantic: WMS stream",
    "m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126",
    "c=IN IP4 0.0.0.0",
    "a=rtcp:9 IN IP4 0.0.0.0",
    "a=ice-ufrag:khLS",
    "a=ice-pwd:cxLzteJaJBou3DspNaPsJhlQ",
    "a=ice-options:trickle",
    "a=fingerprint:sha-256 FA:14:42:3B:C7:97:1B:E8:AE:0C:2E:E6:B8:B0:2A:FB:9A:8E:FB:40",
    "a=setup:actpass",
    "a=mid:0",
    "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
    "a=sendrecv",
    "a=msid:stream track",
    "a=rtcp-mux",
    "a=rtpmap:111 opus/48000/2",
    "a=rtcp-fb:111 transport-cc",
    "a=fmtp:111 minptime=10;useinbandfec=1",
    "a=rtpmap:63 red/48000/2",
    "a=fmtp:63 111/111",
    "a=rtpmap:9 G722/8000",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:13 CN/8000",
    "a=rtpmap:110 telephone-event/48000",
    "a=rtpmap:126 telephone-event/8000",
    "a=ssrc:3570614608 cname:4TOk42mSjXCkVIa6",
    "a=ssrc:3570614608 msid:stream track",
)

AUDIO_VIDEO = sdp(
    "v=0",
    "o=alice 2890844526 2890844526 IN IP4 198.51.100.7",
    "s=Video call",
    "c=IN IP4 198.51.100.7",
    "b=AS:2048",
    "t=0 0",
    "m=audio 49170 RTP/AVP 0 101",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-15",
    "m=video 51372 RTP/AVPF 97 98",
    "b=TIAS:1900000",
    "a=rtpmap:97 H264/90000",
    "a=fmtp:97 profile-level-id=42e01f;packetization-mode=1",
    "a=rtpmap:98 VP8/90000",
    "a=rtcp-fb:* nack",
    "a=rtcp-fb:* nack pli",
    "a=rtcp-fb:97 ccm fir",
    "a=sendonly",
)

IPV6_OFFER = sdp(
    "v=0",
    "o=- 20518 0 IN IP6 2001:db8::10",
    "s=-",
    "c=IN IP6 2001:db8::10",
    "t=0 0",
    "m=audio 30000 RTP/AVP 8 0 13",
    "a=rtcp:30001 IN IP6 2001:db8::10",
    "a=ptime:30",
    "a=maxptime:150",
)

# An answer rejecting video and T.38 with port 0 (RFC 3264 section 6).
REJECTED = sdp(
    "v=0",
    "o=- 3 4 IN IP4 203.0.113.5",
    "s=-",
    "c=IN IP4 203.0.113.5",
    "t=0 0",
    "m=audio 20000 RTP/AVP 0",
    "a=rtpmap:0 PCMU/8000",
    "m=video 0 RTP/AVP 31",
    "m=image 0 udptl t38",
)

# RFC 8866 section 5 example.
RFC8866_EXAMPLE = sdp(
    "v=0",
    "o=jdoe 3724394400 3724394405 IN IP4 198.51.100.1",
    "s=Call to John Smith",
    "i=SDP Offer #1",
    "u=http://www.jdoe.example.com/home.html",
    "e=Jane Doe <jane@jdoe.example.com>",
    "p=+1 617 555-6011",
    "c=IN IP4 198.51.100.1",
    "t=0 0",
    "m=audio 49170 RTP/AVP 0",
    "m=audio 49180 RTP/AVP 0",
    "m=video 51372 RTP/AVP 99",
    "c=IN IP6 2001:db8::2",
    "a=rtpmap:99 h263-1998/90000",
)

# RFC 4566 section 5 example: multicast c= with TTL, session-level recvonly.
RFC4566_EXAMPLE = sdp(
    "v=0",
    "o=jdoe 2890844526 2890842807 IN IP4 10.47.16.5",
    "s=SDP Seminar",
    "i=A Seminar on the session description protocol",
    "u=http://www.example.com/seminars/sdp.pdf",
    "e=j.doe@example.com (Jane Doe)",
    "c=IN IP4 224.2.17.12/127",
    "t=2873397496 2873404696",
    "a=recvonly",
    "m=audio 49170 RTP/AVP 0",
    "m=video 51372 RTP/AVP 99",
    "a=rtpmap:99 h263-1998/90000",
)

# RFC 4568 section 4 example offer.
RFC4568_EXAMPLE = sdp(
    "v=0",
    "o=sam 2890844526 2890842807 IN IP4 10.47.16.5",
    "s=SRTP Discussion",
    "i=A discussion of Secure RTP",
    "u=http://www.example.com/seminars/srtp.pdf",
    "e=marge@example.com (Marge Simpson)",
    "c=IN IP4 168.2.17.11",
    "t=2873397496 2873404696",
    "m=audio 49170 RTP/SAVP 0",
    "a=crypto:1 AES_CM_128_HMAC_SHA1_80 "
    "inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4 FEC_ORDER=FEC_SRTP",
)

# Repeat times and time zones (RFC 8866 sections 5.10, 5.11); r= belongs to its own t=.
REPEATS = sdp(
    "v=0",
    "o=- 1 1 IN IP4 192.0.2.1",
    "s=Seminar series",
    "t=3034423619 3042462419",
    "r=604800 3600 0 90000",
    "r=7d 1h 0 25h",
    "t=3042462419 3050462419",
    "t=3050462419 3058462419",
    "r=604800 3600 0 90000",
    "z=2882844526 -1h 2898848070 0",
    "k=prompt",
    "m=audio 4000 RTP/AVP 0",
    "i=main audio",
    "c=IN IP4 192.0.2.1",
    "b=AS:64",
    "k=prompt",
    "a=sendrecv",
)

EXAMPLES = {
    "carrier_g711": CARRIER_G711,
    "baresip_srtp": BARESIP_SRTP,
    "webrtc_audio": WEBRTC_AUDIO,
    "audio_video": AUDIO_VIDEO,
    "ipv6": IPV6_OFFER,
    "rejected": REJECTED,
    "rfc8866": RFC8866_EXAMPLE,
    "rfc4566": RFC4566_EXAMPLE,
    "rfc4568": RFC4568_EXAMPLE,
    "repeats": REPEATS,
}

RFC4568_KEY = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz"


def parse(data: bytes) -> SessionDescription:
    return SessionDescription.parse(data)


def audio(data: bytes, index: int = 0) -> Media:
    return parse(data).media[index]


def expect_error(data: bytes, text: str) -> SdpError:
    with pytest.raises(SdpError) as info:
        parse(data)
    assert text in info.value.message, info.value.message
    return info.value


# --------------------------------------------------------------------------------------
# round trip
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("data", EXAMPLES.values(), ids=EXAMPLES.keys())
def test_round_trip_is_byte_exact(data: bytes) -> None:
    assert bytes(parse(data)) == data


@pytest.mark.parametrize("data", EXAMPLES.values(), ids=EXAMPLES.keys())
def test_lf_only_input_parses_the_same_and_is_written_with_crlf(data: bytes) -> None:
    lf = data.replace(b"\r\n", b"\n")
    assert parse(lf) == parse(data)
    assert bytes(parse(lf)) == data


@pytest.mark.parametrize("data", EXAMPLES.values(), ids=EXAMPLES.keys())
def test_reparse_of_output_is_equal(data: bytes) -> None:
    first = parse(data)
    assert parse(bytes(first)) == first


def test_mixed_line_ends_and_missing_final_line_end() -> None:
    data = CARRIER_G711.replace(b"\r\n", b"\n", 3).rstrip(b"\r\n")
    assert bytes(parse(data)) == CARRIER_G711


def test_trailing_empty_lines_are_ignored() -> None:
    assert bytes(parse(CARRIER_G711 + b"\r\n")) == CARRIER_G711
    assert bytes(parse(CARRIER_G711 + b"\n\n")) == CARRIER_G711


def test_values_keep_their_spacing() -> None:
    data = sdp(
        "v=0",
        "o=- 1 1 IN IP4 192.0.2.1",
        "s= two  spaces ",
        "t=0  0",
        "a=x-custom:  padded value  ",
        "m=audio 4000 RTP/AVP 96",
        "a=rtpmap:96  opus/48000/2",
        "a=fmtp:96 stereo=1; useinbandfec=1",
        "a=empty:",
    )
    desc = parse(data)
    assert bytes(desc) == data
    assert desc.name == " two  spaces "
    assert desc.times == ("0  0",)
    assert desc.attribute("x-custom") == "  padded value  "
    assert desc.media[0].attributes[-1] == ("empty", "")
    assert desc.media[0].codecs == (Codec(96, "opus", 48000, 2, "stereo=1; useinbandfec=1"),)


def test_empty_session_name_is_accepted_and_written_back() -> None:
    data = CARRIER_G711.replace(b"s=SBC call", b"s=")
    desc = parse(data)
    assert desc.name == ""
    assert bytes(desc) == data


def test_utf8_and_other_octets_round_trip() -> None:
    data = CARRIER_G711.replace(b"s=SBC call", "s=Café ☎".encode()).replace(
        b"a=sendrecv", b"a=x-raw:\xff\xfe"
    )
    desc = parse(data)
    assert desc.name == "Café ☎"
    assert bytes(desc) == data


def test_out_of_order_lines_are_accepted_and_written_in_rfc_order() -> None:
    data = sdp(
        "v=0",
        "o=- 1 1 IN IP4 192.0.2.1",
        "s=-",
        "t=0 0",
        "c=IN IP4 192.0.2.1",
        "m=audio 4000 RTP/AVP 0",
        "a=sendrecv",
        "c=IN IP4 192.0.2.2",
    )
    assert bytes(parse(data)) == sdp(
        "v=0",
        "o=- 1 1 IN IP4 192.0.2.1",
        "s=-",
        "c=IN IP4 192.0.2.1",
        "t=0 0",
        "m=audio 4000 RTP/AVP 0",
        "c=IN IP4 192.0.2.2",
        "a=sendrecv",
    )


def test_extra_spaces_in_o_c_m_lines_are_normalized() -> None:
    data = sdp(
        "v=0",
        "o=-  1 1 IN IP4 192.0.2.1",
        "s=-",
        "c=IN  IP4 192.0.2.1",
        "t=0 0",
        "m=audio  4000 RTP/AVP 0 ",
    )
    assert bytes(parse(data)) == sdp(
        "v=0",
        "o=- 1 1 IN IP4 192.0.2.1",
        "s=-",
        "c=IN IP4 192.0.2.1",
        "t=0 0",
        "m=audio 4000 RTP/AVP 0",
    )


# --------------------------------------------------------------------------------------
# parsed fields
# --------------------------------------------------------------------------------------
def test_carrier_offer_fields() -> None:
    desc = parse(CARRIER_G711)
    assert desc.version == 0
    assert desc.origin == Origin("-", "1718010000", 1718010000, "IN", "IP4", "203.0.113.10")
    assert desc.name == "SBC call"
    assert (desc.connection, desc.addrtype) == ("203.0.113.10", "IP4")
    assert desc.times == ("0 0",)
    assert desc.repeats == ()
    assert desc.attributes == ()
    (media,) = desc.media
    assert (media.kind, media.port, media.port_count, media.proto) == (
        "audio",
        16384,
        None,
        "RTP/AVP",
    )
    assert media.fmts == ("8", "0", "18", "101")
    assert media.connection is None
    assert media.is_rtp and not media.rejected
    assert media.codecs == (
        Codec(8, "PCMA", 8000),
        Codec(0, "PCMU", 8000),
        Codec(18, "G729", 8000, fmtp="annexb=no"),
        Codec(101, "telephone-event", 8000, fmtp="0-16"),
    )
    assert media.ptime == 20
    assert media.attribute("maxptime") == "40"
    assert media.direction == "sendrecv"
    assert media.rtcp is None and not media.rtcp_mux
    assert media.crypto == ()
    assert desc.connection_of(media) == "203.0.113.10"
    assert desc.addrtype_of(media) == "IP4"


def test_baresip_offer_fields() -> None:
    desc = parse(BARESIP_SRTP)
    assert desc.attributes == (("tool", "baresip 3.10.1"), ("ice-lite", None))
    assert desc.has_attribute("ice-lite") and desc.attribute("ice-lite") is None
    assert desc.attribute("tool") == "baresip 3.10.1"
    media = desc.media[0]
    assert media.proto == "RTP/SAVP"
    assert media.bandwidth == ("AS:107",)
    assert [c.key for c in media.codecs] == [
        ("opus", 48000, 2),
        ("g722", 8000, 1),
        ("pcmu", 8000, 1),
        ("pcma", 8000, 1),
        ("telephone-event", 8000, 1),
    ]
    assert media.codecs[0].fmtp == "stereo=1;sprop-stereo=1"
    assert media.rtcp == (10005, None)
    assert media.rtcp_mux
    assert media.attribute("ice-ufrag") == "Ojq3"
    assert len(media.attribute_values("candidate")) == 2
    assert [(c.tag, c.suite) for c in media.crypto] == [
        (1, "AES_CM_128_HMAC_SHA1_80"),
        (2, "AES_CM_128_HMAC_SHA1_32"),
    ]
    assert media.crypto[1].key_params == (
        "inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:32",
    )
    assert media.ptime == 20


def test_webrtc_offer_fields() -> None:
    desc = parse(WEBRTC_AUDIO)
    media = desc.media[0]
    assert desc.connection is None
    assert (media.connection, desc.connection_of(media)) == ("0.0.0.0", "0.0.0.0")
    assert media.rtcp == (9, "0.0.0.0")
    assert media.rtcp_mux
    assert desc.attribute("msid-semantic") == " WMS stream"
    assert media.attribute_values("ssrc") == (
        "3570614608 cname:4TOk42mSjXCkVIa6",
        "3570614608 msid:stream track",
    )
    assert [c.pt for c in media.codecs] == [111, 63, 9, 0, 8, 13, 110, 126]
    assert media.codecs[1] == Codec(63, "red", 48000, 2, "111/111")
    assert media.codecs[6].key == ("telephone-event", 48000, 1)


def test_audio_video_fields() -> None:
    desc = parse(AUDIO_VIDEO)
    assert desc.bandwidth == ("AS:2048",)
    sound, video = desc.media
    assert video.kind == "video" and video.proto == "RTP/AVPF"
    assert video.bandwidth == ("TIAS:1900000",)
    assert video.codecs == (
        Codec(97, "H264", 90000, fmtp="profile-level-id=42e01f;packetization-mode=1"),
        Codec(98, "VP8", 90000),
    )
    assert video.attribute_values("rtcp-fb") == ("* nack", "* nack pli", "97 ccm fir")
    assert desc.direction_of(sound) == "sendrecv"
    assert desc.direction_of(video) == "sendonly"


def test_ipv6_fields() -> None:
    desc = parse(IPV6_OFFER)
    media = desc.media[0]
    assert desc.origin.addrtype == "IP6"
    assert (desc.connection, desc.addrtype) == ("2001:db8::10", "IP6")
    assert desc.addrtype_of(media) == "IP6"
    assert media.rtcp == (30001, "2001:db8::10")
    assert media.ptime == 30
    assert [c.name for c in media.codecs] == ["PCMA", "PCMU", "CN"]


def test_rejected_media() -> None:
    desc = parse(REJECTED)
    sound, video, image = desc.media
    assert not sound.rejected
    assert video.rejected and image.rejected
    assert video.codecs == ()  # 31 (H261) is neither mapped nor in the static table
    assert not image.is_rtp
    assert image.fmts == ("t38",)
    assert image.codecs == ()


def test_rfc8866_example_fields() -> None:
    desc = parse(RFC8866_EXAMPLE)
    assert desc.other == (
        ("i", "SDP Offer #1"),
        ("u", "http://www.jdoe.example.com/home.html"),
        ("e", "Jane Doe <jane@jdoe.example.com>"),
        ("p", "+1 617 555-6011"),
    )
    first, second, video = desc.media
    assert desc.connection_of(first) == "198.51.100.1"
    assert (desc.connection_of(video), desc.addrtype_of(video)) == ("2001:db8::2", "IP6")
    assert video.codecs == (Codec(99, "h263-1998", 90000),)
    assert first.codecs == second.codecs == (Codec(0, "PCMU", 8000),)


def test_rfc4566_multicast_and_session_direction() -> None:
    desc = parse(RFC4566_EXAMPLE)
    assert desc.connection == "224.2.17.12/127"
    assert desc.direction == "recvonly"
    for media in desc.media:
        assert media.direction is None
        assert desc.direction_of(media) == "recvonly"


def test_repeats_stay_with_their_time() -> None:
    desc = parse(REPEATS)
    assert desc.times == (
        "3034423619 3042462419",
        "3042462419 3050462419",
        "3050462419 3058462419",
    )
    assert desc.repeats == (
        ("604800 3600 0 90000", "7d 1h 0 25h"),
        (),
        ("604800 3600 0 90000",),
    )
    assert desc.other == (("z", "2882844526 -1h 2898848070 0"), ("k", "prompt"))
    media = desc.media[0]
    assert media.other == (("i", "main audio"), ("k", "prompt"))
    assert media.bandwidth == ("AS:64",)


def test_port_count() -> None:
    data = CARRIER_G711.replace(b"m=audio 16384 RTP/AVP", b"m=audio 16384/2 RTP/AVP")
    media = audio(data)
    assert (media.port, media.port_count) == (16384, 2)
    assert bytes(parse(data)) == data


def test_fractional_ptime_is_rounded() -> None:
    media = audio(CARRIER_G711.replace(b"a=ptime:20", b"a=ptime:22.5"))
    assert media.ptime == 22


# --------------------------------------------------------------------------------------
# codecs
# --------------------------------------------------------------------------------------
def media_with(fmts: str, *attributes: str, proto: str = "RTP/AVP") -> Media:
    lines = ["v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", "t=0 0", f"m=audio 4000 {proto} {fmts}"]
    return audio(sdp(*lines, *attributes))


def test_static_table() -> None:
    assert STATIC_PAYLOADS == {
        0: ("PCMU", 8000, 1),
        3: ("GSM", 8000, 1),
        8: ("PCMA", 8000, 1),
        9: ("G722", 8000, 1),
        13: ("CN", 8000, 1),
        18: ("G729", 8000, 1),
    }
    media = media_with("0 3 8 9 13 18")
    assert [(c.pt, c.name, c.clock, c.channels) for c in media.codecs] == [
        (pt, *STATIC_PAYLOADS[pt]) for pt in (0, 3, 8, 9, 13, 18)
    ]


def test_static_fallback_with_fmtp_and_unmapped_dynamic_skipped() -> None:
    media = media_with("18 96 0 97", "a=fmtp:18 annexb=yes", "a=rtpmap:97 iLBC/8000")
    assert media.codecs == (
        Codec(18, "G729", 8000, fmtp="annexb=yes"),
        Codec(0, "PCMU", 8000),
        Codec(97, "iLBC", 8000),
    )


def test_rtpmap_overrides_the_static_table() -> None:
    media = media_with("0", "a=rtpmap:0 pcmu/8000")
    assert media.codecs == (Codec(0, "pcmu", 8000),)
    assert media.codecs[0].key == ("pcmu", 8000, 1)


def test_rtpmap_for_a_payload_not_in_the_m_line_is_ignored() -> None:
    media = media_with("0", "a=rtpmap:96 opus/48000/2", "a=fmtp:96 stereo=1")
    assert media.codecs == (Codec(0, "PCMU", 8000),)


def test_first_rtpmap_and_fmtp_win() -> None:
    media = media_with(
        "96", "a=rtpmap:96 opus/48000/2", "a=rtpmap:96 speex/8000", "a=fmtp:96 a", "a=fmtp:96 b"
    )
    assert media.codecs == (Codec(96, "opus", 48000, 2, "a"),)


def test_fmtp_without_parameters_is_none() -> None:
    assert media_with("101", "a=rtpmap:101 telephone-event/8000", "a=fmtp:101").codecs == (
        Codec(101, "telephone-event", 8000),
    )


def test_non_rtp_media_has_no_codecs() -> None:
    media = media_with("webrtc-datachannel", "a=sctp-port:5000", proto="UDP/DTLS/SCTP")
    assert not media.is_rtp
    assert media.codecs == ()
    assert media.fmts == ("webrtc-datachannel",)


def test_codec_key_and_rtpmap() -> None:
    codec = Codec(96, "OPUS", 48000, 2, "useinbandfec=1")
    assert codec.key == ("opus", 48000, 2)
    assert codec.rtpmap == "96 OPUS/48000/2"
    assert Codec(0, "PCMU", 8000).rtpmap == "0 PCMU/8000"
    assert Codec.from_rtpmap("101 telephone-event/8000") == Codec(101, "telephone-event", 8000)
    assert Codec.from_rtpmap("96 opus/48000/2").channels == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pt": 128}, "payload type 128 is out of range 0..127"),
        ({"pt": -1}, "payload type -1 is out of range 0..127"),
        ({"name": "PC MU"}, "encoding name 'PC MU' is not a token"),
        ({"name": ""}, "encoding name '' is not a token"),
        ({"clock": 0}, "clock rate and channels must be positive"),
        ({"channels": 0}, "clock rate and channels must be positive"),
        ({"fmtp": "a\r\na=evil"}, "fmtp contains a line break or NUL"),
    ],
)
def test_codec_validates_itself(kwargs: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {"pt": 0, "name": "PCMU", "clock": 8000} | kwargs
    with pytest.raises(SdpError, match=message):
        Codec(**fields)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------
# direction and connection
# --------------------------------------------------------------------------------------
def session_with(session_attr: str | None, media_attr: str | None) -> SessionDescription:
    lines = ["v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", "t=0 0"]
    if session_attr:
        lines.append(f"a={session_attr}")
    lines.append("m=audio 4000 RTP/AVP 0")
    if media_attr:
        lines.append(f"a={media_attr}")
    return parse(sdp(*lines))


@pytest.mark.parametrize(
    ("session_attr", "media_attr", "media_direction", "effective"),
    [
        (None, None, None, "sendrecv"),
        ("sendonly", None, None, "sendonly"),
        ("inactive", None, None, "inactive"),
        (None, "recvonly", "recvonly", "recvonly"),
        ("sendonly", "recvonly", "recvonly", "recvonly"),
        ("recvonly", "sendrecv", "sendrecv", "sendrecv"),
    ],
)
def test_direction_inheritance(
    session_attr: str | None, media_attr: str | None, media_direction: str | None, effective: str
) -> None:
    desc = session_with(session_attr, media_attr)
    assert desc.media[0].direction == media_direction
    assert desc.direction_of(desc.media[0]) == effective


def test_connection_of() -> None:
    desc = session_with(None, None)
    media = desc.media[0]
    assert desc.connection_of(media) is None
    assert desc.addrtype_of(media) == "IP4"
    desc = desc.with_connection("192.0.2.9")
    assert desc.connection_of(media) == "192.0.2.9"
    media = media.with_connection("2001:db8::9", "IP6")
    assert desc.connection_of(media) == "2001:db8::9"
    assert desc.addrtype_of(media) == "IP6"


# --------------------------------------------------------------------------------------
# crypto (RFC 4568)
# --------------------------------------------------------------------------------------
def test_crypto_parse_and_str() -> None:
    value = f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC4568_KEY}|2^20|1:4 FEC_ORDER=FEC_SRTP"
    crypto = Crypto.parse(value)
    assert crypto == Crypto(
        1,
        "AES_CM_128_HMAC_SHA1_80",
        (f"inline:{RFC4568_KEY}|2^20|1:4",),
        ("FEC_ORDER=FEC_SRTP",),
    )
    assert str(crypto) == value


def test_crypto_several_key_params_and_session_params() -> None:
    value = "7 AES_CM_128_HMAC_SHA1_32 inline:AAAA|1:4;inline:BBBB|2:4 KDR=1 UNENCRYPTED_SRTCP"
    crypto = Crypto.parse(value)
    assert crypto.key_params == ("inline:AAAA|1:4", "inline:BBBB|2:4")
    assert crypto.session_params == ("KDR=1", "UNENCRYPTED_SRTCP")
    assert str(crypto) == value


def test_crypto_parse_accepts_unknown_suites() -> None:
    crypto = Crypto.parse("3 F8_128_HMAC_SHA1_80 inline:MTIzNDU2Nzg5QUJDREUwMTIzNDU2Nzg5QUJjZGVm")
    assert crypto.suite == "F8_128_HMAC_SHA1_80"
    with pytest.raises(SdpError, match="crypto suite 'F8_128_HMAC_SHA1_80' is not supported"):
        crypto.master()


def test_crypto_master_of_rfc4568_key() -> None:
    crypto = audio(RFC4568_EXAMPLE).crypto[0]
    master = crypto.master()
    assert master == base64.b64decode(RFC4568_KEY)
    assert len(master) == 30


def test_crypto_master_strips_lifetime_and_mki() -> None:
    for suffix in ("", "|2^20", "|1:4", "|2^20|1:4", "|1048576|255:1"):
        crypto = Crypto.parse(f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC4568_KEY}{suffix}")
        assert crypto.master() == base64.b64decode(RFC4568_KEY)


def test_crypto_master_uses_the_first_inline_key() -> None:
    other = base64.b64encode(bytes(range(30))).decode()
    crypto = Crypto.parse(
        f"1 AES_CM_128_HMAC_SHA1_80 x-vendor:opaque;inline:{other};inline:{RFC4568_KEY}"
    )
    assert crypto.master() == bytes(range(30))


@pytest.mark.parametrize(("suite", "size"), [(s, k + n) for s, (k, n) in CRYPTO_SUITES.items()])
def test_crypto_make_and_master_per_suite(suite: str, size: int) -> None:
    master = bytes(range(size))
    crypto = Crypto.make(5, suite, master)
    assert crypto == Crypto(5, suite, ("inline:" + base64.b64encode(master).decode(),))
    assert crypto.master() == master
    assert Crypto.parse(str(crypto)) == crypto
    short = Crypto(5, suite, ("inline:" + base64.b64encode(master[:-1]).decode(),))
    with pytest.raises(SdpError, match=f"inline key for {suite} is {size - 1} bytes, expected"):
        short.master()


def test_crypto_suite_sizes() -> None:
    assert {s: k + n for s, (k, n) in CRYPTO_SUITES.items()} == {
        "AES_CM_128_HMAC_SHA1_80": 30,
        "AES_CM_128_HMAC_SHA1_32": 30,
        "AEAD_AES_128_GCM": 28,
        "AEAD_AES_256_GCM": 44,
        "AES_256_CM_HMAC_SHA1_80": 46,
        "AES_256_CM_HMAC_SHA1_32": 46,
    }


def test_crypto_master_accepts_missing_padding() -> None:
    master = bytes(range(46))
    text = base64.b64encode(master).decode()
    assert text.endswith("==")
    crypto = Crypto(1, "AES_256_CM_HMAC_SHA1_80", ("inline:" + text.rstrip("="),))
    assert crypto.master() == master


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("1 AES_CM_128_HMAC_SHA1_80", "expected '<tag> <suite> <key-params> [<session-params>]'"),
        ("", "expected '<tag> <suite> <key-params> [<session-params>]', got ''"),
        ("x AES_CM_128_HMAC_SHA1_80 inline:abcd", "tag 'x' is not a number of 1 to 9 digits"),
        ("1234567890 AES inline:abcd", "tag '1234567890' is not a number of 1 to 9 digits"),
        ("1 AES(CM) inline:abcd", "suite 'AES(CM)' is not a token"),
        ("1 AES_CM_128_HMAC_SHA1_80 abcd", "key parameter 'abcd' is not '<method>:<info>'"),
        ("1 AES_CM_128_HMAC_SHA1_80 inline:", "key parameter 'inline:' is not '<method>:<info>'"),
        ("1 AES_CM_128_HMAC_SHA1_80 :abcd", "key parameter ':abcd' is not '<method>:<info>'"),
        ("1 AES_CM_128_HMAC_SHA1_80 inline:a;", "key parameter '' is not '<method>:<info>'"),
    ],
)
def test_crypto_parse_errors(value: str, message: str) -> None:
    with pytest.raises(SdpError) as info:
        Crypto.parse(value)
    assert message in info.value.message


@pytest.mark.parametrize(
    ("crypto", "message"),
    [
        (
            Crypto(1, "AES_CM_128_HMAC_SHA1_80", ("x-vendor:abc",)),
            "crypto attribute has no inline key",
        ),
        (
            Crypto(1, "AES_CM_128_HMAC_SHA1_80", ("inline:not*base64!",)),
            "inline key 'not*base64!' is not valid base64",
        ),
        (
            Crypto(1, "AES_CM_128_HMAC_SHA1_80", ("inline:abcde",)),
            "inline key 'abcde' is not valid base64",
        ),
        (
            Crypto(1, "AES_CM_128_HMAC_SHA1_80", ("inline:" + "A" * 44,)),
            "inline key for AES_CM_128_HMAC_SHA1_80 is 33 bytes, expected 30",
        ),
        (
            Crypto(1, "AEAD_AES_128_GCM", (f"inline:{RFC4568_KEY}",)),
            "inline key for AEAD_AES_128_GCM is 30 bytes, expected 28",
        ),
        (
            Crypto(1, "NULL_HMAC_SHA1_80", (f"inline:{RFC4568_KEY}",)),
            "crypto suite 'NULL_HMAC_SHA1_80' is not supported",
        ),
    ],
)
def test_crypto_master_errors(crypto: Crypto, message: str) -> None:
    with pytest.raises(SdpError) as info:
        crypto.master()
    assert message in info.value.message


@pytest.mark.parametrize(
    ("tag", "suite", "master", "message"),
    [
        (
            1,
            "F8_128_HMAC_SHA1_80",
            bytes(30),
            "crypto suite 'F8_128_HMAC_SHA1_80' is not supported",
        ),
        (1, "AES_CM_128_HMAC_SHA1_80", bytes(29), "is 29 bytes, expected 30"),
        (1, "AEAD_AES_256_GCM", bytes(46), "is 46 bytes, expected 44"),
        (-1, "AES_CM_128_HMAC_SHA1_80", bytes(30), "tag -1 is out of range 0..999999999"),
        (10**9, "AES_CM_128_HMAC_SHA1_80", bytes(30), "tag 1000000000 is out of range"),
    ],
)
def test_crypto_make_errors(tag: int, suite: str, master: bytes, message: str) -> None:
    with pytest.raises(SdpError, match=message):
        Crypto.make(tag, suite, master)


# --------------------------------------------------------------------------------------
# origin
# --------------------------------------------------------------------------------------
def test_origin_parse_and_str() -> None:
    origin = Origin.parse("jdoe 3724394400 3724394405 IN IP4 198.51.100.1")
    assert origin == Origin("jdoe", "3724394400", 3724394405, "IN", "IP4", "198.51.100.1")
    assert str(origin) == "jdoe 3724394400 3724394405 IN IP4 198.51.100.1"
    assert str(dataclasses.replace(origin, version=origin.version + 1)).endswith(
        "3724394406 IN IP4 198.51.100.1"
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("- 1 1 IN IP4", "expected 6 fields, got 5"),
        ("- 1 1 IN IP4 192.0.2.1 extra", "expected 6 fields, got 7"),
        ("- 1 v2 IN IP4 192.0.2.1", "version 'v2' is not a number"),
        ("- 1 -1 IN IP4 192.0.2.1", "version '-1' is not a number"),
        ("- 1 " + "9" * 21 + " IN IP4 192.0.2.1", "is not a number"),
    ],
)
def test_origin_errors(value: str, message: str) -> None:
    with pytest.raises(SdpError, match=message):
        Origin.parse(value)


# --------------------------------------------------------------------------------------
# addresses
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("addrtype", "address"),
    [
        ("IP4", "192.0.2.1"),
        ("IP4", "0.0.0.0"),
        ("IP4", "sbc.example.com"),
        ("IP4", "host-1.example.com."),
        ("IP4", "localhost"),
        ("IP4", "224.2.17.12/127"),
        ("IP4", "224.2.1.1/127/3"),
        ("IP6", "2001:db8::1"),
        ("IP6", "::ffff:192.0.2.1"),
        ("IP6", "ff15::101/3"),
        ("IP6", "media.example.com"),
    ],
)
def test_valid_addresses(addrtype: str, address: str) -> None:
    check_address(addrtype, address)


@pytest.mark.parametrize(
    ("addrtype", "address", "message"),
    [
        ("IP5", "192.0.2.1", "address type 'IP5' is not IP4 or IP6"),
        ("IP4", "2001:db8::1", "'2001:db8::1' is not an IPv4 address"),
        ("IP6", "192.0.2.1", "'192.0.2.1' is not an IPv6 address"),
        ("IP4", "300.1.1.1", "'300.1.1.1' is not a valid IPv4 address"),
        ("IP4", "1.2.3", "'1.2.3' is not a valid IPv4 address"),
        ("IP6", "2001:db8:::1", "'2001:db8:::1' is not a valid IPv6 address"),
        ("IP4", "bad_host.example", "'bad_host.example' is not an IP address or a host name"),
        ("IP4", "-lead.example", "is not an IP address or a host name"),
        ("IP4", "a" * 64 + ".example", "is not an IP address or a host name"),
        ("IP4", "192.0.2.1/127", "a '/' suffix is only allowed on a multicast address"),
        ("IP4", "ff15::1/3", "a '/' suffix is only allowed on a multicast address"),
        ("IP4", "224.2.1.1/300", "TTL '300' is out of range 0..255"),
        ("IP4", "224.2.1.1/ttl", "TTL 'ttl' is not a number"),
        ("IP4", "224.2.1.1/1/2/3", "has more than '/<ttl>/<count>'"),
        ("IP4", "224.2.1.1/1/0", "address count '0' is out of range 1..65535"),
        ("IP6", "ff15::1/1/2", "has more than '/<count>'"),
        ("IP6", "ff15::1/x", "address count 'x' is not a number"),
    ],
)
def test_invalid_addresses(addrtype: str, address: str, message: str) -> None:
    with pytest.raises(SdpError) as info:
        check_address(addrtype, address)
    assert message in info.value.message


# --------------------------------------------------------------------------------------
# rejections
# --------------------------------------------------------------------------------------
BASE = [
    "v=0",
    "o=- 1 1 IN IP4 192.0.2.1",
    "s=-",
    "c=IN IP4 192.0.2.1",
    "t=0 0",
    "m=audio 4000 RTP/AVP 0 101",
    "a=rtpmap:101 telephone-event/8000",
]


def with_line(index: int, line: str | None) -> bytes:
    """BASE with line ``index`` (0-based) replaced, or removed when ``line`` is None."""
    lines = list(BASE)
    if line is None:
        del lines[index]
    else:
        lines[index] = line
    return sdp(*lines)


def appended(*lines: str) -> bytes:
    return sdp(*BASE, *lines)


def test_base_is_valid() -> None:
    assert bytes(parse(sdp(*BASE))) == sdp(*BASE)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        # framing (RFC 8866 section 5)
        (b"", "SDP body is empty"),
        (b"\r\n\r\n", "SDP body is empty"),
        (with_line(0, "o=- 1 1 IN IP4 192.0.2.1"), "line 1: expected v=0 first, got o="),
        (with_line(0, "v=1"), "line 1, v=: version '1' is not 0"),
        (with_line(0, "v=00"), "line 1, v=: version '00' is not 0"),
        (appended("x=unknown"), "line 8: unknown line type 'x='"),
        (appended("A=upper"), "line 8: 'A=upper' is not a <type>=<value> line"),
        (appended("a"), "line 8: 'a' is not a <type>=<value> line"),
        (appended("a =spaced"), "line 8: 'a =spaced' is not a <type>=<value> line"),
        (appended("=novalue"), "line 8: '=novalue' is not a <type>=<value> line"),
        (sdp(*BASE[:3], "", *BASE[3:]), "line 4: empty line"),
        (sdp(*BASE[:3], " ", *BASE[3:]), "line 4: ' ' is not a <type>=<value> line"),
        (sdp(*BASE).replace(b"s=-\r\n", b"s=-\rc"), "line 3: contains a CR or NUL"),
        (sdp(*BASE).replace(b"s=-", b"s=-\x00"), "line 3: contains a CR or NUL"),
        # v o s t presence and uniqueness
        (with_line(1, None), "missing o= line"),
        (with_line(2, None), "missing s= line"),
        (with_line(4, None), "missing t= line"),
        (sdp(*BASE[:2], "v=0", *BASE[2:]), "line 3, v=: more than one v= line"),
        (sdp(*BASE[:2], BASE[1], *BASE[2:]), "line 3, o=: more than one o= line"),
        (sdp(*BASE[:3], "s=again", *BASE[3:]), "line 4, s=: more than one s= line"),
        (sdp(*BASE[:4], BASE[3], *BASE[4:]), "line 5, c=: more than one c= line"),
        (
            appended("c=IN IP4 192.0.2.2", "c=IN IP4 192.0.2.3"),
            "line 9, m= line 1, c=: more than one c=",
        ),
        (sdp(*BASE[:4], "r=1 2 3", *BASE[4:]), "line 5, r=: r= must follow a t= line"),
        # o=
        (with_line(1, "o=- 1 1 IN IP4"), "line 2, o=: expected 6 fields, got 5"),
        (with_line(1, "o=- 1 x IN IP4 192.0.2.1"), "line 2, o=: version 'x' is not a number"),
        # c=
        (with_line(3, "c=IN IP4"), "line 4, c=: expected 'IN <addrtype> <address>', got 'IN IP4'"),
        (with_line(3, "c=ATM NSAP 47.0091"), "line 4, c=: network type 'ATM' is not IN"),
        (with_line(3, "c=IN IPX 192.0.2.1"), "line 4, c=: address type 'IPX' is not IP4 or IP6"),
        (with_line(3, "c=IN IP4 192.0.2.256"), "line 4, c=: '192.0.2.256' is not a valid IPv4"),
        (with_line(3, "c=IN IP6 192.0.2.1"), "line 4, c=: '192.0.2.1' is not an IPv6 address"),
        (with_line(3, "c=IN IP4 ::1"), "line 4, c=: '::1' is not an IPv4 address"),
        (with_line(3, "c=IN IP4 a..b"), "line 4, c=: 'a..b' is not an IP address or a host name"),
        (appended("c=IN IP4 x y"), "line 8, m= line 1, c=: expected 'IN <addrtype> <address>'"),
        # b= and t=
        (appended("b=AS"), "line 8, m= line 1, b=: expected '<bwtype>:<bandwidth>', got 'AS'"),
        (appended("b=AS:lots"), "line 8, m= line 1, b=: bandwidth 'lots' is not a number"),
        (
            appended("b=A S:64"),
            "line 8, m= line 1, b=: expected '<bwtype>:<bandwidth>', got 'A S:64'",
        ),
        (with_line(4, "t=0"), "line 5, t=: expected '<start> <stop>' with two numbers, got '0'"),
        (with_line(4, "t=now later"), "line 5, t=: expected '<start> <stop>' with two numbers"),
        # m=
        (
            with_line(5, "m=audio 4000 RTP/AVP"),
            "line 6, m= line 1: expected '<media> <port> <proto>",
        ),
        (with_line(5, "m=audio abc RTP/AVP 0"), "line 6, m= line 1: port 'abc' is not a number"),
        (
            with_line(5, "m=audio 65536 RTP/AVP 0"),
            "line 6, m= line 1: port '65536' is out of range",
        ),
        (with_line(5, "m=audio -1 RTP/AVP 0"), "line 6, m= line 1: port '-1' is not a number"),
        (
            with_line(5, "m=audio 4000/0 RTP/AVP 0"),
            "line 6, m= line 1: port count '0' is out of range",
        ),
        (
            with_line(5, "m=audio 4000/x RTP/AVP 0"),
            "line 6, m= line 1: port count 'x' is not a number",
        ),
        (
            with_line(5, "m=audio 4000 RTP/AVP 0 PCMU"),
            "line 6, m= line 1: payload type 'PCMU' is not",
        ),
        (
            with_line(5, "m=audio 4000 RTP/AVP 128"),
            "line 6, m= line 1: payload type '128' is out of",
        ),
        (
            with_line(5, "m=au(dio 4000 RTP/AVP 0"),
            "line 6, m= line 1: media type 'au(dio' is not a token",
        ),
        (
            with_line(5, "m=audio 4000 RTP//AVP 0"),
            "line 6, m= line 1: transport 'RTP//AVP' is not a",
        ),
        (
            with_line(5, "m=image 4000 udptl t:38"),
            "line 6, m= line 1: format 't:38' is not a token",
        ),
        # lines that belong to the session only
        (appended("t=0 0"), "line 8, m= line 1, t=: t= is not allowed in a media description"),
        (
            appended("o=- 1 1 IN IP4 192.0.2.1"),
            "line 8, m= line 1, o=: o= is not allowed in a media",
        ),
        (appended("s=x"), "line 8, m= line 1, s=: s= is not allowed in a media description"),
        (appended("v=0"), "line 8, m= line 1, v=: v= is not allowed in a media description"),
        # a=
        (appended("a=bad name"), "line 8, m= line 1, a=: attribute name 'bad name' is not a token"),
        (appended("a="), "line 8, m= line 1, a=: attribute name '' is not a token"),
        (appended("a=:value"), "line 8, m= line 1, a=: attribute name '' is not a token"),
        (appended("a=rtpmap"), "line 8, m= line 1, a=rtpmap: value is missing"),
        (
            appended("a=rtpmap:x PCMU/8000"),
            "line 8, m= line 1, a=rtpmap: payload type 'x' is not a number",
        ),
        (
            appended("a=rtpmap:200 X/8000"),
            "line 8, m= line 1, a=rtpmap: payload type '200' is out of range",
        ),
        (
            appended("a=rtpmap:96 opus"),
            "line 8, m= line 1, a=rtpmap: expected '<pt> <name>/<clock>",
        ),
        (appended("a=rtpmap:96"), "line 8, m= line 1, a=rtpmap: expected '<pt> <name>/<clock>"),
        (
            appended("a=rtpmap:96 /8000"),
            "line 8, m= line 1, a=rtpmap: expected '<pt> <name>/<clock>",
        ),
        (
            appended("a=rtpmap:96 a/1/2/3"),
            "line 8, m= line 1, a=rtpmap: expected '<pt> <name>/<clock>",
        ),
        (
            appended("a=rtpmap:96 op(us/48000"),
            "line 8, m= line 1, a=rtpmap: encoding name 'op(us' is not",
        ),
        (
            appended("a=rtpmap:96 opus/0"),
            "line 8, m= line 1, a=rtpmap: clock rate '0' is out of range",
        ),
        (
            appended("a=rtpmap:96 opus/fast"),
            "line 8, m= line 1, a=rtpmap: clock rate 'fast' is not a number",
        ),
        (
            appended("a=rtpmap:96 opus/48000/0"),
            "line 8, m= line 1, a=rtpmap: channels '0' is out of range",
        ),
        (
            appended("a=rtpmap:96 opus/48000/st"),
            "line 8, m= line 1, a=rtpmap: channels 'st' is not a number",
        ),
        (appended("a=fmtp"), "line 8, m= line 1, a=fmtp: value is missing"),
        (appended("a=fmtp: 0-15"), "line 8, m= line 1, a=fmtp: format '' is not a token"),
        (
            appended("a=ptime:twenty"),
            "line 8, m= line 1, a=ptime: ptime 'twenty' is not a number of ms",
        ),
        (appended("a=ptime:-20"), "line 8, m= line 1, a=ptime: ptime '-20' is not a number"),
        (appended("a=rtcp:x"), "line 8, m= line 1, a=rtcp: port 'x' is not a number"),
        (
            appended("a=rtcp:70000"),
            "line 8, m= line 1, a=rtcp: port '70000' is out of range 0..65535",
        ),
        (
            appended("a=rtcp:4001 IN IP4"),
            "line 8, m= line 1, a=rtcp: expected '<port> [IN <addrtype>",
        ),
        (
            appended("a=rtcp:4001 IN IP4 ::1"),
            "line 8, m= line 1, a=rtcp: '::1' is not an IPv4 address",
        ),
        (
            appended("a=crypto:1 AES_CM_128_HMAC_SHA1_80"),
            "line 8, m= line 1, a=crypto: expected '<tag>",
        ),
        (appended("a=crypto:x S inline:a"), "line 8, m= line 1, a=crypto: tag 'x' is not a number"),
    ],
)
def test_rejections(data: bytes, message: str) -> None:
    error = expect_error(data, message.replace("number of ms", "number of milliseconds"))
    assert error.status == 488
    assert error.warning == error.message


def test_errors_name_the_body_line_and_the_m_line() -> None:
    """The body line number first, then which m= line (counted from 1) and which attribute."""
    second_m = [*BASE, "m=video abc RTP/AVP 31"]
    error = expect_error(sdp(*second_m), "m= line 2: port 'abc' is not a number")
    assert error.message == "line 8, m= line 2: port 'abc' is not a number"
    under_second = [*BASE, "m=video 5000 RTP/AVP 31", "a=sendonly", "a=rtpmap:31 H261/0"]
    error = expect_error(sdp(*under_second), "clock rate '0'")
    assert (
        error.message
        == "line 10, m= line 2, a=rtpmap: clock rate '0' is out of range 1..4294967295"
    )
    session_attr = [*BASE[:5], "a=ptime:x", *BASE[5:]]
    error = expect_error(sdp(*session_attr), "ptime 'x'")
    assert error.message == "line 6, a=ptime: ptime 'x' is not a number of milliseconds"


def test_error_is_a_value_error_with_488_and_warning() -> None:
    error = SdpError("m= line 2: port 'abc' is not a number")
    assert isinstance(error, ValueError)
    assert error.status == 488
    assert error.message == error.warning == str(error) == "m= line 2: port 'abc' is not a number"


def test_echoed_peer_text_is_safe_for_a_warning_header() -> None:
    error = expect_error(appended('a=rtpmap:"\\\x01 PCMU/8000'), "payload type '???' is not")
    assert '"' not in error.warning and "\\" not in error.warning
    long_port = "9" * 100
    error = expect_error(with_line(5, f"m=audio {long_port} RTP/AVP 0"), "9...' is out of range")
    assert len(error.warning) < 120


def test_non_ascii_echo_is_replaced() -> None:
    expect_error(with_line(5, "m=audio ४० RTP/AVP 0"), "port '??' is not a number")


def test_unknown_attributes_and_flags_are_kept_verbatim() -> None:
    data = appended("a=X-Vendor_thing:;;weird;; values", "a=flag-only", "a=tricky::colon")
    media = audio(data)
    assert media.attributes[-3:] == (
        ("X-Vendor_thing", ";;weird;; values"),
        ("flag-only", None),
        ("tricky", ":colon"),
    )
    assert bytes(parse(data)) == data


def test_size_limit() -> None:
    padding = "a=x-pad:" + "p" * 1000
    lines = [*BASE]
    while len(sdp(*lines)) <= MAX_SDP_SIZE - 1010:
        lines.append(padding)
    fits = sdp(*lines, "a=x:" + "p" * (MAX_SDP_SIZE - len(sdp(*lines)) - 6))
    assert len(fits) == MAX_SDP_SIZE
    parse(fits)
    expect_error(fits + b"a=x\r\n", f"SDP body of {MAX_SDP_SIZE + 5} bytes exceeds the 65536")


def test_media_count_limit() -> None:
    many = [*BASE[:5], *["m=audio 4000 RTP/AVP 0"] * MAX_MEDIA]
    assert len(parse(sdp(*many)).media) == MAX_MEDIA
    expect_error(
        sdp(*many, "m=audio 4000 RTP/AVP 0"),
        f"line {5 + MAX_MEDIA + 1}, m= line {MAX_MEDIA + 1}: more than 64 m= lines",
    )


# --------------------------------------------------------------------------------------
# builders
# --------------------------------------------------------------------------------------
def test_with_codecs_rewrites_m_line_and_maps_in_place() -> None:
    media = audio(CARRIER_G711)
    pcmu, g729, dtmf = media.codecs[1], media.codecs[2], media.codecs[3]
    chosen = media.with_codecs([pcmu, g729, dtmf])
    assert chosen.fmts == ("0", "18", "101")
    assert chosen.codecs == (pcmu, g729, dtmf)
    assert chosen.sdp_lines() == [
        "m=audio 16384 RTP/AVP 0 18 101",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:18 G729/8000",
        "a=fmtp:18 annexb=no",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-16",
        "a=ptime:20",
        "a=maxptime:40",
        "a=sendrecv",
    ]


def test_with_codecs_places_maps_after_attributes_before_the_first_map() -> None:
    media = audio(WEBRTC_AUDIO)
    chosen = media.with_codecs([Codec(0, "PCMU", 8000), Codec(126, "telephone-event", 8000)])
    lines = chosen.sdp_lines()
    assert lines[0] == "m=audio 9 UDP/TLS/RTP/SAVPF 0 126"
    start = lines.index("a=rtcp-mux") + 1
    assert lines[start : start + 3] == [
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:126 telephone-event/8000",
        "a=rtcp-fb:111 transport-cc",  # unknown attributes stay, even about dropped formats
    ]
    assert not any(line.startswith(("a=fmtp", "a=rtpmap:111")) for line in lines)


def test_with_codecs_puts_maps_first_when_there_were_none() -> None:
    media = media_with("0 8", "a=sendonly", "a=ptime:20")
    chosen = media.with_codecs([Codec(8, "PCMA", 8000), Codec(96, "opus", 48000, 2, "x=1")])
    assert chosen.sdp_lines() == [
        "m=audio 4000 RTP/AVP 8 96",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:96 opus/48000/2",
        "a=fmtp:96 x=1",
        "a=sendonly",
        "a=ptime:20",
    ]


def test_with_codecs_uses_the_fmtp_position_when_only_fmtp_existed() -> None:
    media = media_with("18", "a=sendrecv", "a=fmtp:18 annexb=no", "a=ptime:20")
    chosen = media.with_codecs(media.codecs)
    assert chosen.sdp_lines()[1:] == [
        "a=sendrecv",
        "a=rtpmap:18 G729/8000",
        "a=fmtp:18 annexb=no",
        "a=ptime:20",
    ]


def test_with_codecs_rejects_empty_and_repeated_payload_types() -> None:
    media = audio(CARRIER_G711)
    with pytest.raises(ValueError, match="at least one codec"):
        media.with_codecs([])
    with pytest.raises(ValueError, match="payload types repeat"):
        media.with_codecs([Codec(0, "PCMU", 8000), Codec(0, "PCMA", 8000)])


def test_with_attributes_replaces_in_place_appends_and_drops() -> None:
    media = audio(BARESIP_SRTP)
    new_key = Crypto.make(1, "AES_CM_128_HMAC_SHA1_80", bytes(30))
    changed = media.with_attributes(
        {"crypto": [str(new_key)], "rtcp": ["20001"], "x-anchor": [None]},
        drop=["ice-*", "candidate", "rtcp-mux", "label"],
    )
    assert changed.attributes == (
        ("rtpmap", "96 opus/48000/2"),
        ("fmtp", "96 stereo=1;sprop-stereo=1"),
        ("rtpmap", "9 G722/8000"),
        ("rtpmap", "0 PCMU/8000"),
        ("rtpmap", "8 PCMA/8000"),
        ("rtpmap", "101 telephone-event/8000"),
        ("fmtp", "101 0-15"),
        ("rtcp", "20001"),
        ("sendrecv", None),
        ("crypto", "1 AES_CM_128_HMAC_SHA1_80 inline:" + base64.b64encode(bytes(30)).decode()),
        ("ptime", "20"),
        ("x-anchor", None),
    )
    assert changed.crypto == (new_key,)
    assert changed.rtcp == (20001, None)
    assert not changed.rtcp_mux
    assert media.rtcp_mux  # the original is unchanged


def test_with_attributes_empty_list_removes_and_drop_only() -> None:
    media = audio(BARESIP_SRTP)
    assert media.with_attributes({"crypto": []}).crypto == ()
    assert media.with_attributes(drop=["crypto"]).crypto == ()
    assert media.with_attributes() == media
    assert media.with_attributes(drop=["no-such"]) == media


@pytest.mark.parametrize(
    ("replace", "message"),
    [
        ({"bad name": ["x"]}, "attribute name 'bad name' is not a token"),
        ({"x": ["a\r\na=evil"]}, "contains a line break or NUL"),
        ({"x": ["a\x00"]}, "contains a line break or NUL"),
    ],
)
def test_with_attributes_rejects_injection(
    replace: dict[str, list[str | None]], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        audio(CARRIER_G711).with_attributes(replace)


def test_with_direction() -> None:
    media = audio(CARRIER_G711)
    held = media.with_direction("sendonly")
    assert held.direction == "sendonly"
    assert held.attributes[-1] == ("sendonly", None)
    assert [n for n, _ in held.attributes].count("sendrecv") == 0
    bare = media_with("0", "a=ptime:20")
    assert bare.with_direction("inactive").attributes == (("ptime", "20"), ("inactive", None))
    twice = media_with("0", "a=sendonly", "a=ptime:20", "a=recvonly")
    assert twice.with_direction("sendrecv").attributes == (("sendrecv", None), ("ptime", "20"))
    with pytest.raises(ValueError, match="direction 'both'"):
        media.with_direction("both")


def test_with_port() -> None:
    media = audio(CARRIER_G711)
    assert media.with_port(30000).sdp_lines()[0] == "m=audio 30000 RTP/AVP 8 0 18 101"
    assert media.with_port(0).rejected
    for bad in (-1, 65536):
        with pytest.raises(ValueError, match=r"out of range 0\.\.65535"):
            media.with_port(bad)


def test_with_connection() -> None:
    media = audio(CARRIER_G711)
    lines = media.with_connection("198.51.100.99").sdp_lines()
    assert lines[:2] == ["m=audio 16384 RTP/AVP 8 0 18 101", "c=IN IP4 198.51.100.99"]
    six = media.with_connection("2001:db8::99", "IP6")
    assert six.sdp_lines()[1] == "c=IN IP6 2001:db8::99"
    assert six.with_connection(None).connection is None
    assert "c=" not in "".join(six.with_connection(None).sdp_lines())
    with pytest.raises(SdpError, match="is not an IPv4 address"):
        media.with_connection("2001:db8::99")
    with pytest.raises(SdpError, match="address type 'IP9'"):
        media.with_connection("192.0.2.1", "IP9")


def test_anchoring_rewrite_of_the_carrier_offer() -> None:
    """What the media anchor does: own address and port, bumped version, chosen codecs."""
    desc = parse(CARRIER_G711)
    media = desc.media[0]
    keep = [c for c in media.codecs if c.key in {("pcma", 8000, 1), ("telephone-event", 8000, 1)}]
    new_media = media.with_codecs(keep).with_port(40000).with_direction("sendrecv")
    origin = dataclasses.replace(desc.origin, address="192.0.2.50", version=desc.origin.version + 1)
    out = desc.with_origin(origin).with_connection("192.0.2.50").with_media([new_media])
    assert bytes(out) == sdp(
        "v=0",
        "o=- 1718010000 1718010001 IN IP4 192.0.2.50",
        "s=SBC call",
        "c=IN IP4 192.0.2.50",
        "t=0 0",
        "m=audio 40000 RTP/AVP 8 101",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-16",
        "a=ptime:20",
        "a=maxptime:40",
        "a=sendrecv",
    )


def test_srtp_to_rtp_rewrite_of_the_baresip_offer() -> None:
    desc = parse(BARESIP_SRTP)
    media = desc.media[0]
    plain = dataclasses.replace(media, proto="RTP/AVP").with_attributes(
        drop=["crypto", "ice-*", "candidate", "rtcp", "rtcp-mux"]
    )
    out = desc.with_attributes(drop=["ice-lite"]).with_media([plain])
    text = bytes(out).decode()
    assert "m=audio 10004 RTP/AVP 96 9 0 8 101\r\n" in text
    for gone in ("a=crypto", "a=ice-", "a=candidate", "a=rtcp"):
        assert gone not in text
    assert "a=tool:baresip 3.10.1\r\n" in text
    assert parse(out.__bytes__()) == out


def test_session_with_attributes_and_media_limit() -> None:
    desc = parse(BARESIP_SRTP)
    changed = desc.with_attributes({"tool": ["acs-gateway"], "sendonly": [None]})
    assert changed.attributes == (("tool", "acs-gateway"), ("ice-lite", None), ("sendonly", None))
    assert changed.direction == "sendonly"
    assert changed.attribute_values("tool") == ("acs-gateway",)
    with pytest.raises(ValueError, match="more than 64"):
        desc.with_media([desc.media[0]] * (MAX_MEDIA + 1))
    with pytest.raises(SdpError, match="not a valid IPv4 address"):
        desc.with_connection("1.2.3.999")
    assert desc.with_connection(None).connection is None


def test_build_from_scratch() -> None:
    media = Media("audio", 40000, "RTP/AVP", ()).with_codecs(
        [Codec(0, "PCMU", 8000), Codec(101, "telephone-event", 8000, fmtp="0-16")]
    )
    desc = SessionDescription(
        origin=Origin("acs-gateway", "42", 1, "IN", "IP4", "192.0.2.50"),
        connection="192.0.2.50",
        media=(media.with_direction("sendrecv"),),
    )
    data = sdp(
        "v=0",
        "o=acs-gateway 42 1 IN IP4 192.0.2.50",
        "s=-",
        "c=IN IP4 192.0.2.50",
        "t=0 0",
        "m=audio 40000 RTP/AVP 0 101",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-16",
        "a=sendrecv",
    )
    assert bytes(desc) == data
    assert parse(data) == desc


def test_session_validates_times_and_repeats() -> None:
    origin = Origin("-", "1", 1, "IN", "IP4", "192.0.2.1")
    with pytest.raises(ValueError, match="at least one t= line"):
        SessionDescription(origin=origin, times=())
    with pytest.raises(ValueError, match="one tuple per t= line"):
        SessionDescription(origin=origin, times=("0 0",), repeats=((), ()))
