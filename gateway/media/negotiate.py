"""SDP offer/answer (RFC 3264) for an anchored call, as pure functions.

The gateway stands between two peers and speaks to each with its own SDP: its own address
and ports, its own origin line, its own SRTP keys. What it offers one side is derived from
what the other side offered; what it answers is derived from what the far side answered.

- ``read_peer`` pulls out of a peer's SDP what the media plane needs (the first usable audio
  stream: where to send, which codecs, telephone-event, SRTP keys, direction).
- ``offer_codecs`` picks what to offer toward a trunk: the codecs both the offerer and the
  trunk's ``codecs`` list have come first (so the call can be relayed without decoding), then
  the ones the gateway can transcode to.
- ``answer_codec`` picks the one codec to answer with: the far side's choice when the offerer
  has it (relay), else the offerer's first codec the gateway can transcode.
- ``render`` writes the gateway's SDP for one side.
"""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from gateway.media.sdp import Codec, Crypto, Media, SdpError, SessionDescription
from gateway.media.srtp import SUITES, generate_master

CodecKey = tuple[str, int, int]

PCMU: CodecKey = ("pcmu", 8000, 1)
PCMA: CodecKey = ("pcma", 8000, 1)
OPUS: CodecKey = ("opus", 48000, 2)
G722: CodecKey = ("g722", 8000, 1)
EVENT = "telephone-event"

#: Codecs the gateway decodes and encodes (and so can transcode between).
TRANSCODABLE: frozenset[CodecKey] = frozenset({PCMU, PCMA, OPUS})
#: Codecs the gateway only relays (both sides must share them).
RELAY_ONLY: frozenset[CodecKey] = frozenset({G722})

#: The gateway's own codec lines, used when the offerer did not bring the codec.
_OWN: dict[CodecKey, Codec] = {
    PCMU: Codec(0, "PCMU", 8000),
    PCMA: Codec(8, "PCMA", 8000),
    G722: Codec(9, "G722", 8000),
    OPUS: Codec(111, "opus", 48000, 2, "useinbandfec=1"),
}
_NAME_KEY: dict[str, CodecKey] = {"pcmu": PCMU, "pcma": PCMA, "opus": OPUS, "g722": G722}

#: SRTP suites the gateway offers, best first (RFC 4568 tags 1, 2, ...).
OFFER_SUITES: tuple[str, ...] = ("AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32")

_RTP_PROTOS = frozenset({"RTP/AVP", "RTP/SAVP", "RTP/AVPF", "RTP/SAVPF"})
_DIRECTIONS = frozenset({"sendrecv", "sendonly", "recvonly", "inactive"})
REVERSE_DIRECTION = {
    "sendrecv": "sendrecv",
    "sendonly": "recvonly",
    "recvonly": "sendonly",
    "inactive": "inactive",
}


def codec_key(name: str) -> CodecKey:
    """The codec key of a [trunk] codecs name (PCMU, PCMA, opus, G722)."""
    return _NAME_KEY[name.lower()]


@dataclass(frozen=True, slots=True)
class PeerMedia:
    """What one peer's SDP says about its audio stream."""

    index: int  # the audio m= line's position
    lines: int  # how many m= lines the SDP has (an answer has as many)
    address: str | None  # None: the peer wants nothing sent (c=0.0.0.0, RFC 3264 8.4)
    port: int
    rtcp_address: str | None
    rtcp_port: int
    rtcp_mux: bool
    codecs: tuple[Codec, ...]  # the audio codecs the gateway knows, in the peer's order
    events: tuple[Codec, ...]  # telephone-event payloads
    comfort_noise: int | None  # the CN/8000 payload type (RFC 3389), if offered
    secure: bool  # RTP/SAVP(F): SRTP or nothing
    crypto: tuple[Crypto, ...]  # a=crypto lines with a suite the gateway supports
    direction: str
    ptime: int | None
    sdp: SessionDescription

    def codec(self, key: CodecKey) -> Codec | None:
        for codec in self.codecs:
            if codec.key == key:
                return codec
        return None

    def event(self, clock: int) -> Codec | None:
        for codec in self.events:
            if codec.clock == clock:
                return codec
        return None

    @property
    def sends(self) -> bool:
        """The peer sends media (its direction is sendrecv or sendonly)."""
        return self.direction in ("sendrecv", "sendonly")

    @property
    def receives(self) -> bool:
        """The peer wants media (sendrecv or recvonly, at an address)."""
        return self.address is not None and self.direction in ("sendrecv", "recvonly")


def _address(text: str | None, where: str) -> str | None:
    if text is None:
        raise SdpError(f"{where}: no connection address (c=)")
    text = text.split("/", 1)[0]  # a multicast address's /ttl[/count] (RFC 8866 5.7)
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise SdpError(f"{where}: connection address {text!r} is not an IP address") from None
    if ip.is_unspecified:
        return None
    if ip.is_multicast:
        raise SdpError(f"{where}: multicast address {text} is not supported")
    return str(ip)


def read_peer(sdp: SessionDescription) -> PeerMedia:
    """The first audio stream of ``sdp`` the gateway can anchor (SdpError if none)."""
    why = "no audio stream"
    for index, media in enumerate(sdp.media):
        if media.kind != "audio" or media.port == 0:
            continue
        if media.proto not in _RTP_PROTOS:
            why = f"m= line {index + 1}: transport {media.proto} is not supported"
            continue
        where = f"m= line {index + 1}"
        address = _address(sdp.connection_of(media), where)
        codecs: list[Codec] = []
        events: list[Codec] = []
        comfort_noise = None
        for codec in media.codecs:
            key = codec.key
            if key == ("cn", 8000, 1):
                comfort_noise = codec.pt
            elif key[0] == EVENT:
                if codec.clock in (8000, 48000):
                    events.append(codec)
            elif key in TRANSCODABLE or key in RELAY_ONLY:
                codecs.append(codec)
        if not codecs:
            why = f"{where}: no supported codec (the gateway has PCMU, PCMA, opus, G722)"
            continue
        crypto = tuple(c for c in media.crypto if c.suite in SUITES)
        for c in crypto:
            c.master()  # SdpError for a bad key
        rtcp = media.rtcp
        rtcp_port = media.port + 1
        rtcp_address = address
        if rtcp is not None:
            rtcp_port = rtcp[0]
            if rtcp[1] is not None:
                rtcp_address = _address(rtcp[1], f"{where} a=rtcp")
        direction = sdp.direction_of(media)
        if direction not in _DIRECTIONS:
            direction = "sendrecv"
        if address is None:
            # c=0.0.0.0, the RFC 2543 way to hold: nothing is to be sent to this peer
            direction = {"sendrecv": "sendonly", "recvonly": "inactive"}.get(direction,
                                                                                direction)
        return PeerMedia(
            index=index,
            lines=len(sdp.media),
            address=address,
            port=media.port,
            rtcp_address=rtcp_address,
            rtcp_port=rtcp_port,
            rtcp_mux=media.rtcp_mux,
            codecs=tuple(codecs),
            events=tuple(events),
            comfort_noise=comfort_noise,
            secure=media.proto in ("RTP/SAVP", "RTP/SAVPF"),
            crypto=crypto,
            direction=direction,
            ptime=media.ptime,
            sdp=sdp,
        )
    raise SdpError(why)


def parse_peer(body: bytes) -> PeerMedia:
    return read_peer(SessionDescription.parse(body))


def _free_pt(used: set[int], preferred: int) -> int:
    if preferred not in used:
        return preferred
    for pt in range(96, 128):
        if pt not in used:
            return pt
    raise SdpError("no dynamic payload type left")


def offer_codecs(
    offerer: PeerMedia | None, allowed: Sequence[str]
) -> tuple[list[Codec], list[Codec]]:
    """(audio codecs, telephone-event codecs) to offer toward a side allowing ``allowed``.

    Shared codecs keep the offerer's payload numbers and fmtp, so the answer that comes
    back can be relayed untouched; ``offerer`` None (the gateway offers on its own) offers
    ``allowed`` as they are.
    """
    keys = [codec_key(name) for name in allowed]
    shared: list[Codec] = []
    own: list[Codec] = []
    used: set[int] = set()
    if offerer is not None:
        used.update(c.pt for c in offerer.codecs)
        used.update(c.pt for c in offerer.events)
    transcodable_in = offerer is None or any(c.key in TRANSCODABLE for c in offerer.codecs)
    for key in keys:
        theirs = offerer.codec(key) if offerer is not None else None
        if theirs is not None:
            shared.append(theirs)
        elif key in TRANSCODABLE and transcodable_in:
            codec = _OWN[key]
            pt = _free_pt(used, codec.pt)
            used.add(pt)
            own.append(Codec(pt, codec.name, codec.clock, codec.channels, codec.fmtp))
    codecs = shared + own
    if not codecs:
        raise SdpError(
            "no codec in common with the trunk ("
            + ", ".join(allowed)
            + ") and none the gateway can transcode to"
        )
    clocks = {8000} | ({48000} if any(c.key == OPUS for c in codecs) else set())
    events: list[Codec] = []
    for clock in sorted(clocks):
        theirs = offerer.event(clock) if offerer is not None else None
        if theirs is not None:
            events.append(theirs)
        else:
            pt = _free_pt(used, 101 if clock == 8000 else 110)
            used.add(pt)
            events.append(Codec(pt, EVENT, clock, 1, "0-16"))
    return codecs, events


def answer_codec(
    offerer: PeerMedia, allowed: Sequence[str], prefer: CodecKey | None
) -> Codec:
    """The one codec to answer ``offerer`` with.

    ``prefer`` (the codec the other side uses) wins when the offerer has it and ``allowed``
    lists it: the call is then relayed. Otherwise the offerer's first allowed codec the
    gateway can transcode; SdpError (488) when there is none.
    """
    keys = {codec_key(name) for name in allowed}
    if prefer is not None and prefer in keys:
        theirs = offerer.codec(prefer)
        if theirs is not None:
            return theirs
    can_bridge = prefer is None or prefer in TRANSCODABLE
    for codec in offerer.codecs:
        if codec.key in keys and codec.key in TRANSCODABLE and can_bridge:
            return codec
    names = ", ".join(f"{c.name}/{c.clock}" for c in offerer.codecs) or "none"
    raise SdpError(f"no acceptable codec: offered {names}, allowed {', '.join(allowed)}")


def answer_event(offerer: PeerMedia, codec: Codec) -> Codec | None:
    """The offerer's telephone-event at the answered codec's clock (or at 8000)."""
    return offerer.event(codec.clock) or offerer.event(8000)


KeySource = Callable[[str], bytes]  # suite -> master key+salt


def new_crypto(tag: int, suite: str, key_for: KeySource = generate_master) -> Crypto:
    return Crypto.make(tag, suite, key_for(suite))


def offer_crypto(key_for: KeySource = generate_master) -> list[Crypto]:
    """The a=crypto lines of an offer: every suite of OFFER_SUITES, keyed by ``key_for``
    (fresh keys by default; a session passes its per-leg keys so re-offers keep them)."""
    return [new_crypto(tag, suite, key_for) for tag, suite in enumerate(OFFER_SUITES, 1)]


def answer_crypto(
    offerer: PeerMedia, key_for: KeySource = generate_master
) -> tuple[Crypto, Crypto] | None:
    """(the offerer's line chosen, the gateway's answering line), or None without SDES."""
    for theirs in offerer.crypto:
        return theirs, new_crypto(theirs.tag, theirs.suite, key_for)
    return None


def _fmtp_line(codec: Codec) -> str | None:
    return f"a=fmtp:{codec.pt} {codec.fmtp}" if codec.fmtp else None


def render(
    *,
    session_id: str,
    version: int,
    address: str,
    port: int,
    codecs: Iterable[Codec],
    secure: bool,
    proto: str | None = None,
    crypto: Iterable[Crypto] = (),
    rtcp_mux: bool = False,
    offer_mux: bool = False,
    direction: str = "sendrecv",
    ptime: int | None = 20,
    index: int = 0,
    lines: int = 1,
    rejected: Sequence[Media] = (),
    extra: Sequence[str] = (),
    session_extra: Sequence[str] = (),
) -> bytes:
    """The gateway's SDP toward one side: one audio stream at ``index`` among ``lines``
    m= lines, the others copied from ``rejected`` with port 0 (RFC 3264 section 6);
    ``extra``: more attribute lines of the audio stream (``a=extmap:...``, ICE), and
    ``session_extra`` of the session (``a=ice-lite``)."""
    ip6 = ":" in address
    family = "IP6" if ip6 else "IP4"
    codecs = list(codecs)
    out = [
        "v=0",
        f"o=acs-gateway {session_id} {version} IN {family} {address}",
        "s=acs-gateway",
        f"c=IN {family} {address}",
        "t=0 0",
        *session_extra,
    ]
    others = iter(rejected)
    for i in range(lines):
        if i != index:
            other = next(others, None)
            if other is None:
                out.append("m=audio 0 RTP/AVP 0")
            else:
                out.append(f"m={other.kind} 0 {other.proto} {' '.join(other.fmts)}")
            continue
        if proto is None:
            proto = "RTP/SAVP" if secure else "RTP/AVP"
        out.append(f"m=audio {port} {proto} {' '.join(str(c.pt) for c in codecs)}")
        for codec in codecs:
            channels = f"/{codec.channels}" if codec.channels != 1 else ""
            out.append(f"a=rtpmap:{codec.pt} {codec.name}/{codec.clock}{channels}")
            fmtp = _fmtp_line(codec)
            if fmtp:
                out.append(fmtp)
        if ptime:
            out.append(f"a=ptime:{ptime}")
        if rtcp_mux:
            out.append("a=rtcp-mux")
        else:
            out.append(f"a=rtcp:{port + 1}")
            if offer_mux:  # RFC 5761 5.1.1: offered, with the RTCP port as the fallback
                out.append("a=rtcp-mux")
        out.extend(f"a=crypto:{c}" for c in crypto)
        out.extend(extra)
        out.append(f"a={direction}")
    return ("\r\n".join(out) + "\r\n").encode()


def session_id() -> str:
    """A fresh o= session id: 63 random bits as decimal (RFC 8866 5.2 suggests NTP time)."""
    return str(int.from_bytes(base64.b16decode(_hex16()), "big") >> 1)


def _hex16() -> bytes:
    from gateway.sip.ids import random_hex

    return random_hex(8).upper().encode()
