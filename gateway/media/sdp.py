"""SDP: parse, inspect, rewrite and write session descriptions (RFC 8866, RFC 4566).

Invariants:
- Every type is an immutable value; changes return a new value (``with_*`` methods,
  ``dataclasses.replace``). ``parse()`` is separate from the constructor.
- ``bytes(SessionDescription.parse(x)) == x`` for any well-formed CRLF description: every
  value is kept as written (attribute values, b=, t=, i=, ...), only o=, c= and m= are
  re-joined with single spaces, and lines are written in RFC 8866 section 5 order.
- Unknown attributes are kept verbatim and in order; the attributes the gateway reads
  (rtpmap, fmtp, ptime, rtcp, crypto) are validated by ``parse()``, so the views on a parsed
  description (``Media.codecs``, ``Media.crypto``, ...) do not raise.
- Every rejection is an ``SdpError`` (SIP 488) whose message names the line: its number in
  the body, then where it is ("line 9, m= line 2: port 'abc' is not a number", "line 12,
  m= line 2, a=rtpmap: ...", "line 4, c=: ..."); m= lines count from 1. Peer text
  echoed in a message is cut to 40 characters and limited to printable ASCII without
  quotes or backslashes, so the message fits a Warning header's quoted string.
- A peer controls the size: at most ``MAX_SDP_SIZE`` bytes and ``MAX_MEDIA`` m= lines.
- Text is UTF-8 (RFC 8866 section 5) decoded with ``surrogateescape``, so any octets round
  trip.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

MAX_SDP_SIZE = 64 * 1024
MAX_MEDIA = 64

# The line types of RFC 8866 section 5, in the order a description writes them.
SESSION_TYPES = "vosiuepcbtrzka"
MEDIA_TYPES = "icbka"

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")  # RFC 8866 section 6.7

# RFC 3551 section 6, table 4: the static payload types the gateway knows by number.
STATIC_PAYLOADS: dict[int, tuple[str, int, int]] = {
    0: ("PCMU", 8000, 1),
    3: ("GSM", 8000, 1),
    8: ("PCMA", 8000, 1),
    9: ("G722", 8000, 1),  # RFC 3551 section 4.5.2: the RTP clock is 8000 by mistake
    13: ("CN", 8000, 1),
    18: ("G729", 8000, 1),
}

# SRTP crypto suites: (master key bytes, master salt bytes).
CRYPTO_SUITES: dict[str, tuple[int, int]] = {
    "AES_CM_128_HMAC_SHA1_80": (16, 14),  # RFC 4568 section 6.2.1
    "AES_CM_128_HMAC_SHA1_32": (16, 14),  # RFC 4568 section 6.2.2
    "AEAD_AES_128_GCM": (16, 12),  # RFC 7714 section 12
    "AEAD_AES_256_GCM": (32, 12),  # RFC 7714 section 12
    "AES_256_CM_HMAC_SHA1_80": (32, 14),  # RFC 6188 section 7.1
    "AES_256_CM_HMAC_SHA1_32": (32, 14),  # RFC 6188 section 7.1
}

# RFC 8866 section 9: token = 1*(token-char); token-char excludes SP " ( ) , / : ; < = > ? @
# [ \ ] and controls.
_TOKEN_RE = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")
_PROTO_RE = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+(?:/[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+)*")
_DIGITS_RE = re.compile(r"[0-9]+")
_PTIME_RE = re.compile(r"[0-9]{1,6}(?:\.[0-9]{1,6})?")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME_RE = re.compile(rf"(?:{_LABEL}\.)*{_LABEL}\.?")
_NUMERIC_HOST_RE = re.compile(r"[0-9.]+")


class SdpError(ValueError):
    """A session description the gateway cannot accept; answered with 488 Not Acceptable Here.

    ``warning`` is the text for ``Warning: 399 <host> "<text>"`` (RFC 3261 section 20.43).
    """

    status = 488

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.warning = message


# --------------------------------------------------------------------------------------
# small checks shared by the line parsers
# --------------------------------------------------------------------------------------
def _show(text: str, limit: int = 40) -> str:
    """Peer text quoted for an error message: printable ASCII, no quotes, at most ``limit``."""
    clean = "".join(ch if " " <= ch <= "~" and ch not in '"\\' else "?" for ch in text[:limit])
    return f"'{clean}...'" if len(text) > limit else f"'{clean}'"


def _is_token(text: str) -> bool:
    return _TOKEN_RE.fullmatch(text) is not None


def _number(text: str, what: str, low: int, high: int) -> int:
    """``text`` as a decimal integer in ``low..high``, or SdpError naming ``what``."""
    if _DIGITS_RE.fullmatch(text) is None:
        raise SdpError(f"{what} {_show(text)} is not a number")
    if len(text.lstrip("0")) > len(str(high)) or not low <= int(text) <= high:
        raise SdpError(f"{what} {_show(text)} is out of range {low}..{high}")
    return int(text)


def _check_multicast(addrtype: str, address: str) -> None:
    """RFC 8866 section 5.7: ``IP4 <multicast>/<ttl>[/<count>]``, ``IP6 <multicast>[/<count>]``."""
    base, _, suffix = address.partition("/")
    parts = suffix.split("/")
    try:
        ip = ipaddress.ip_address(base)
    except ValueError:
        ip = None
    if ip is None or not ip.is_multicast or ip.version != (4 if addrtype == "IP4" else 6):
        raise SdpError(f"{_show(address)}: a '/' suffix is only allowed on a multicast address")
    if addrtype == "IP4":
        if len(parts) > 2:
            raise SdpError(f"{_show(address)} has more than '/<ttl>/<count>'")
        _number(parts[0], "TTL", 0, 255)
        if len(parts) == 2:
            _number(parts[1], "address count", 1, 65535)
    else:
        if len(parts) > 1:
            raise SdpError(f"{_show(address)} has more than '/<count>'")
        _number(parts[0], "address count", 1, 65535)


def check_address(addrtype: str, address: str) -> None:
    """Check a connection address: an IPv4 or IPv6 literal matching ``addrtype``, a host name
    (RFC 8866 section 5.7), or a multicast address with its TTL and count suffix."""
    if addrtype not in ("IP4", "IP6"):
        raise SdpError(f"address type {_show(addrtype)} is not IP4 or IP6")
    if "/" in address:
        _check_multicast(addrtype, address)
        return
    if addrtype == "IP6" and ":" in address:
        try:
            ipaddress.IPv6Address(address)
        except ValueError:
            raise SdpError(f"{_show(address)} is not a valid IPv6 address") from None
        return
    if ":" in address:
        raise SdpError(f"{_show(address)} is not an IPv4 address")
    if _NUMERIC_HOST_RE.fullmatch(address):
        if addrtype == "IP6":
            raise SdpError(f"{_show(address)} is not an IPv6 address")
        try:
            ipaddress.IPv4Address(address)
        except ValueError:
            raise SdpError(f"{_show(address)} is not a valid IPv4 address") from None
        return
    if len(address) > 253 or _HOSTNAME_RE.fullmatch(address) is None:
        raise SdpError(f"{_show(address)} is not an IP address or a host name")


def _parse_connection(value: str) -> tuple[str, str]:
    """RFC 8866 section 5.7: ``c=IN <addrtype> <address>`` -> (address, addrtype)."""
    fields = value.split()
    if len(fields) != 3:
        raise SdpError(f"expected 'IN <addrtype> <address>', got {_show(value)}")
    nettype, addrtype, address = fields
    if nettype != "IN":
        raise SdpError(f"network type {_show(nettype)} is not IN")
    check_address(addrtype, address)
    return address, addrtype


def _check_bandwidth(value: str) -> None:
    """RFC 8866 section 5.8: ``b=<bwtype>:<bandwidth>``."""
    bwtype, sep, amount = value.partition(":")
    if not sep or not _is_token(bwtype):
        raise SdpError(f"expected '<bwtype>:<bandwidth>', got {_show(value)}")
    if _DIGITS_RE.fullmatch(amount) is None:
        raise SdpError(f"bandwidth {_show(amount)} is not a number")


def _check_timing(value: str) -> None:
    """RFC 8866 section 5.9: ``t=<start-time> <stop-time>``."""
    fields = value.split()
    if len(fields) != 2 or not all(_DIGITS_RE.fullmatch(f) for f in fields):
        raise SdpError(f"expected '<start> <stop>' with two numbers, got {_show(value)}")


def _attribute_line(name: str, value: str | None) -> str:
    return f"a={name}" if value is None else f"a={name}:{value}"


def _parse_attribute(value: str) -> tuple[str, str | None]:
    """RFC 8866 section 5.13: ``a=<name>`` or ``a=<name>:<value>``; known values checked."""
    name, sep, rest = value.partition(":")
    if not _is_token(name):
        raise SdpError(f"attribute name {_show(name)} is not a token")
    attribute_value = rest if sep else None
    check = ATTRIBUTE_CHECKS.get(name)
    if check is not None:
        if attribute_value is None:
            raise SdpError("value is missing")
        check(attribute_value)
    return name, attribute_value


# --------------------------------------------------------------------------------------
# o=
# --------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Origin:
    """RFC 8866 section 5.2: ``o=<username> <sess-id> <sess-version> <nettype> <addrtype>
    <unicast-address>``. Only the version is checked (a number); the rest is kept as written."""

    username: str
    session_id: str
    version: int
    nettype: str
    addrtype: str
    address: str

    @classmethod
    def parse(cls, value: str) -> Origin:
        """Parse the value of an o= line (the text after ``o=``)."""
        fields = value.split()
        if len(fields) != 6:
            raise SdpError(f"expected 6 fields, got {len(fields)}")
        username, session_id, version, nettype, addrtype, address = fields
        if _DIGITS_RE.fullmatch(version) is None or len(version) > 20:
            raise SdpError(f"version {_show(version)} is not a number")
        return cls(username, session_id, int(version), nettype, addrtype, address)

    def __str__(self) -> str:
        return (
            f"{self.username} {self.session_id} {self.version} "
            f"{self.nettype} {self.addrtype} {self.address}"
        )


# --------------------------------------------------------------------------------------
# rtpmap, fmtp, ptime, rtcp
# --------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Codec:
    """One RTP payload format of an m= line: its rtpmap (RFC 8866 section 6.6) and fmtp
    (section 6.15) merged. ``name`` is kept as written; compare codecs by ``key``."""

    pt: int
    name: str
    clock: int
    channels: int = 1
    fmtp: str | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.pt <= 127:
            raise SdpError(f"payload type {self.pt} is out of range 0..127")
        if not _is_token(self.name):
            raise SdpError(f"encoding name {_show(self.name)} is not a token")
        if self.clock <= 0 or self.channels <= 0:
            raise SdpError(f"{self.name}: clock rate and channels must be positive")
        if self.fmtp is not None and any(ch in self.fmtp for ch in "\r\n\0"):
            raise SdpError(f"{self.name}: fmtp contains a line break or NUL")

    @property
    def key(self) -> tuple[str, int, int]:
        """(lower-case name, clock rate, channels): what makes two codecs the same."""
        return (self.name.lower(), self.clock, self.channels)

    @property
    def rtpmap(self) -> str:
        """The a=rtpmap value; channels are written only when not 1."""
        suffix = f"/{self.channels}" if self.channels != 1 else ""
        return f"{self.pt} {self.name}/{self.clock}{suffix}"

    @classmethod
    def from_rtpmap(cls, value: str) -> Codec:
        """Parse ``<pt> <name>/<clock>[/<channels>]`` (RFC 8866 section 6.6)."""
        pt_text, _, encoding = value.strip().partition(" ")
        pt = _number(pt_text, "payload type", 0, 127)
        parts = encoding.strip().split("/")
        if len(parts) not in (2, 3) or not parts[0]:
            raise SdpError(f"expected '<pt> <name>/<clock>[/<channels>]', got {_show(value)}")
        if not _is_token(parts[0]):
            raise SdpError(f"encoding name {_show(parts[0])} is not a token")
        clock = _number(parts[1], "clock rate", 1, 2**32 - 1)
        channels = _number(parts[2], "channels", 1, 255) if len(parts) == 3 else 1
        return cls(pt, parts[0], clock, channels)


def _check_rtpmap(value: str) -> None:
    Codec.from_rtpmap(value)


def _check_fmtp(value: str) -> None:
    """RFC 8866 section 6.15: ``a=fmtp:<format> <format specific parameters>``."""
    fmt = value.partition(" ")[0]
    if not _is_token(fmt):
        raise SdpError(f"format {_show(fmt)} is not a token")


def _check_ptime(value: str) -> None:
    """RFC 8866 section 6.4: packet time in milliseconds."""
    if _PTIME_RE.fullmatch(value) is None:
        raise SdpError(f"ptime {_show(value)} is not a number of milliseconds")


def _parse_rtcp(value: str) -> tuple[int, str | None]:
    """RFC 3605 section 2.1: ``a=rtcp:<port> [<nettype> <addrtype> <connection-address>]``."""
    fields = value.split()
    if len(fields) not in (1, 4):
        raise SdpError(f"expected '<port> [IN <addrtype> <address>]', got {_show(value)}")
    port = _number(fields[0], "port", 0, 65535)
    if len(fields) == 1:
        return port, None
    address, _ = _parse_connection(" ".join(fields[1:]))
    return port, address


def _check_rtcp(value: str) -> None:
    _parse_rtcp(value)


def _check_crypto(value: str) -> None:
    Crypto.parse(value)


# --------------------------------------------------------------------------------------
# a=crypto (RFC 4568)
# --------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Crypto:
    """RFC 4568 section 9.1: ``a=crypto:<tag> <crypto-suite> <key-params> [<session-params>]``.

    ``key_params`` are the raw ``<method>:<info>`` strings (``inline:<key||salt>[|<lifetime>]
    [|<MKI>:<length>]``); ``parse()`` accepts any suite, ``master()`` only known ones.
    """

    tag: int
    suite: str
    key_params: tuple[str, ...]
    session_params: tuple[str, ...] = ()

    @classmethod
    def parse(cls, value: str) -> Crypto:
        """Parse the value of an a=crypto attribute."""
        fields = value.split()
        if len(fields) < 3:
            raise SdpError(
                f"expected '<tag> <suite> <key-params> [<session-params>]', got {_show(value)}"
            )
        tag_text, suite, keys, *session_params = fields
        if _DIGITS_RE.fullmatch(tag_text) is None or len(tag_text) > 9:
            raise SdpError(f"tag {_show(tag_text)} is not a number of 1 to 9 digits")
        if not _is_token(suite):
            raise SdpError(f"suite {_show(suite)} is not a token")
        key_params = tuple(keys.split(";"))
        for param in key_params:
            method, sep, info = param.partition(":")
            if not sep or not info or not _is_token(method):
                raise SdpError(f"key parameter {_show(param)} is not '<method>:<info>'")
        return cls(int(tag_text), suite, key_params, tuple(session_params))

    @classmethod
    def make(cls, tag: int, suite: str, master: bytes) -> Crypto:
        """A crypto attribute offering ``master`` (key || salt) inline (RFC 4568 section 6.1)."""
        if not 0 <= tag <= 999_999_999:
            raise SdpError(f"tag {tag} is out of range 0..999999999")
        _check_master(suite, master)
        return cls(tag, suite, ("inline:" + base64.b64encode(master).decode("ascii"),))

    def master(self) -> bytes:
        """The key || salt of the first inline key parameter, its length checked for the suite."""
        if self.suite not in CRYPTO_SUITES:
            raise SdpError(f"crypto suite {_show(self.suite)} is not supported")
        for param in self.key_params:
            method, _, info = param.partition(":")
            if method == "inline":
                break
        else:
            raise SdpError("crypto attribute has no inline key")
        key_text = info.split("|", 1)[0]
        try:  # RFC 4568 section 6.1 says base64 with padding; accept it left out
            master = base64.b64decode(key_text + "=" * (-len(key_text) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise SdpError(f"inline key {_show(key_text)} is not valid base64") from None
        _check_master(self.suite, master)
        return master

    def __str__(self) -> str:
        text = f"{self.tag} {self.suite} {';'.join(self.key_params)}"
        return " ".join((text, *self.session_params))


def _check_master(suite: str, master: bytes) -> None:
    sizes = CRYPTO_SUITES.get(suite)
    if sizes is None:
        raise SdpError(f"crypto suite {_show(suite)} is not supported")
    if len(master) != sum(sizes):
        raise SdpError(f"inline key for {suite} is {len(master)} bytes, expected {sum(sizes)}")


# Attributes whose values parse() validates, so that the Media views never raise on them.
ATTRIBUTE_CHECKS: dict[str, Callable[[str], None]] = {
    "rtpmap": _check_rtpmap,
    "fmtp": _check_fmtp,
    "ptime": _check_ptime,
    "rtcp": _check_rtcp,
    "crypto": _check_crypto,
}


# --------------------------------------------------------------------------------------
# attribute lists, shared by the session and media levels
# --------------------------------------------------------------------------------------
Attributes = tuple[tuple[str, str | None], ...]


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(name.startswith(p[:-1]) if p.endswith("*") else name == p for p in patterns)


def _edit_attributes(
    attributes: Attributes,
    replace: Mapping[str, Sequence[str | None]],
    drop: Iterable[str],
) -> Attributes:
    """Replace every attribute named in ``replace`` by its new values (placed where the first
    old one was, else at the end) and remove those matching ``drop`` ("name" or "prefix*")."""
    patterns = tuple(drop)
    for name, values in replace.items():
        if not _is_token(name):
            raise ValueError(f"attribute name {name!r} is not a token")
        for value in values:
            if value is not None and any(ch in value for ch in "\r\n\0"):
                raise ValueError(f"a={name} value {value!r} contains a line break or NUL")
    out: list[tuple[str, str | None]] = []
    placed: set[str] = set()
    for name, value in attributes:
        if name in replace:
            if name not in placed:
                placed.add(name)
                out.extend((name, v) for v in replace[name])
        elif not _matches(name, patterns):
            out.append((name, value))
    for name, values in replace.items():
        if name not in placed:
            out.extend((name, v) for v in values)
    return tuple(out)


def _first(attributes: Attributes, name: str) -> str | None:
    return next((v for n, v in attributes if n == name), None)


def _direction(attributes: Attributes) -> str | None:
    return next((n for n, _ in attributes if n in DIRECTIONS), None)


# --------------------------------------------------------------------------------------
# m=
# --------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Media:
    """One media description: the m= line (RFC 8866 section 5.14) and the lines under it.

    ``connection``/``addrtype`` come from the media-level c= (the address as written, with a
    multicast ``/ttl`` suffix if any); ``bandwidth`` holds raw b= values; ``attributes`` every
    a= line in order, (name, value) or (name, None) for a flag; ``other`` the i= and k= lines
    as (type, value).
    """

    kind: str
    port: int
    proto: str
    fmts: tuple[str, ...]
    port_count: int | None = None
    connection: str | None = None
    addrtype: str = "IP4"
    bandwidth: tuple[str, ...] = ()
    attributes: Attributes = ()
    other: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse_line(cls, value: str) -> Media:
        """Parse the value of an m= line: ``<media> <port>[/<count>] <proto> <fmt> ...``."""
        fields = value.split()
        if len(fields) < 4:
            raise SdpError(f"expected '<media> <port> <proto> <fmt> ...', got {len(fields)} fields")
        kind, port_text, proto, *fmts = fields
        if not _is_token(kind):
            raise SdpError(f"media type {_show(kind)} is not a token")
        port_part, sep, count_part = port_text.partition("/")
        port = _number(port_part, "port", 0, 65535)
        count = _number(count_part, "port count", 1, 65535) if sep else None
        if _PROTO_RE.fullmatch(proto) is None:
            raise SdpError(f"transport {_show(proto)} is not a token")
        for fmt in fmts:
            if "RTP" in proto:  # RFC 8866 section 5.14: RTP formats are payload type numbers
                _number(fmt, "payload type", 0, 127)
            elif not _is_token(fmt):
                raise SdpError(f"format {_show(fmt)} is not a token")
        return cls(kind, port, proto, tuple(fmts), port_count=count)

    # ---- views -------------------------------------------------------------------------
    @property
    def is_rtp(self) -> bool:
        """True for RTP transports (RTP/AVP, RTP/SAVP, UDP/TLS/RTP/SAVPF, ...)."""
        return "RTP" in self.proto

    @property
    def rejected(self) -> bool:
        """A port of 0 rejects or disables the stream (RFC 3264 section 6)."""
        return self.port == 0

    @property
    def codecs(self) -> tuple[Codec, ...]:
        """The RTP payload formats in m= line order, rtpmap and fmtp merged; a format without
        rtpmap uses the static table (RFC 3551) or is skipped. Empty for non-RTP transports."""
        if not self.is_rtp:
            return ()
        rtpmaps: dict[int, Codec] = {}
        fmtps: dict[str, str] = {}
        for name, value in self.attributes:
            if value is None:
                continue
            if name == "rtpmap":
                codec = Codec.from_rtpmap(value)
                rtpmaps.setdefault(codec.pt, codec)
            elif name == "fmtp":
                fmt, _, params = value.partition(" ")
                fmtps.setdefault(fmt, params.strip())
        out: list[Codec] = []
        for fmt in self.fmts:
            if _DIGITS_RE.fullmatch(fmt) is None or len(fmt) > 3:
                continue
            pt = int(fmt)
            codec_or_none = rtpmaps.get(pt)
            if codec_or_none is None and pt in STATIC_PAYLOADS:
                codec_or_none = Codec(pt, *STATIC_PAYLOADS[pt])
            if codec_or_none is not None:
                out.append(dataclasses.replace(codec_or_none, fmtp=fmtps.get(fmt) or None))
        return tuple(out)

    @property
    def direction(self) -> str | None:
        """sendrecv, sendonly, recvonly or inactive at media level, None if absent."""
        return _direction(self.attributes)

    @property
    def ptime(self) -> int | None:
        """a=ptime in whole milliseconds (rounded), None if absent."""
        value = self.attribute("ptime")
        return None if value is None else round(float(value))

    @property
    def rtcp(self) -> tuple[int, str | None] | None:
        """RFC 3605 a=rtcp as (port, address or None), None if absent."""
        value = self.attribute("rtcp")
        return None if value is None else _parse_rtcp(value)

    @property
    def rtcp_mux(self) -> bool:
        """RFC 5761 section 5.1.1: a=rtcp-mux is present."""
        return self.has_attribute("rtcp-mux")

    @property
    def crypto(self) -> tuple[Crypto, ...]:
        """Every a=crypto, in order (RFC 4568)."""
        return tuple(Crypto.parse(v) for v in self.attribute_values("crypto"))

    def has_attribute(self, name: str) -> bool:
        """True when an attribute ``name`` is present, as a flag or with a value."""
        return any(n == name for n, _ in self.attributes)

    def attribute(self, name: str) -> str | None:
        """The value of the first attribute ``name``; None if absent or a flag."""
        return _first(self.attributes, name)

    def attribute_values(self, name: str) -> tuple[str, ...]:
        """The values of every attribute ``name`` that has a value, in order."""
        return tuple(v for n, v in self.attributes if n == name and v is not None)

    # ---- builders ----------------------------------------------------------------------
    def with_codecs(self, codecs: Sequence[Codec]) -> Media:
        """These codecs, in this order: the m= formats become their payload types, and every
        rtpmap/fmtp is replaced by an rtpmap per codec (static ones included) followed by its
        fmtp when set, placed where the first old rtpmap or fmtp was, else first."""
        if not codecs:
            raise ValueError("with_codecs needs at least one codec")
        pts = [c.pt for c in codecs]
        if len(set(pts)) != len(pts):
            raise ValueError(f"with_codecs: payload types repeat: {pts}")
        new: list[tuple[str, str | None]] = []
        for codec in codecs:
            new.append(("rtpmap", codec.rtpmap))
            if codec.fmtp is not None:
                new.append(("fmtp", f"{codec.pt} {codec.fmtp}"))
        kept: list[tuple[str, str | None]] = []
        at: int | None = None
        for name, value in self.attributes:
            if name in ("rtpmap", "fmtp"):
                if at is None:
                    at = len(kept)
            else:
                kept.append((name, value))
        at = 0 if at is None else at
        attributes = (*kept[:at], *new, *kept[at:])
        return dataclasses.replace(self, fmts=tuple(str(p) for p in pts), attributes=attributes)

    def with_attributes(
        self,
        replace: Mapping[str, Sequence[str | None]] | None = None,
        *,
        drop: Iterable[str] = (),
    ) -> Media:
        """Set attributes by name and drop others.

        Each name in ``replace`` gets exactly the given values (None for a flag) where its
        first old occurrence was, else at the end; an empty list removes it. ``drop`` lists
        names to remove, a trailing ``*`` matching a prefix (``"ice-*"``).
        """
        attributes = _edit_attributes(self.attributes, replace or {}, drop)
        return dataclasses.replace(self, attributes=attributes)

    def with_direction(self, direction: str) -> Media:
        """Set the direction attribute, removing any other one (RFC 3264 section 6.1)."""
        if direction not in DIRECTIONS:
            raise ValueError(f"direction {direction!r} is not one of {DIRECTIONS}")
        attributes: list[tuple[str, str | None]] = []
        placed = False
        for name, value in self.attributes:
            if name not in DIRECTIONS:
                attributes.append((name, value))
            elif not placed:
                attributes.append((direction, None))
                placed = True
        if not placed:
            attributes.append((direction, None))
        return dataclasses.replace(self, attributes=tuple(attributes))

    def with_port(self, port: int) -> Media:
        """The same media on another port (0 rejects the stream)."""
        if not 0 <= port <= 65535:
            raise ValueError(f"port {port} is out of range 0..65535")
        return dataclasses.replace(self, port=port)

    def with_connection(self, address: str | None, addrtype: str = "IP4") -> Media:
        """Set the media-level c= (None removes it, so the session-level one applies)."""
        if address is not None:
            check_address(addrtype, address)
        return dataclasses.replace(self, connection=address, addrtype=addrtype)

    def sdp_lines(self) -> list[str]:
        """The m= line and the lines under it, in RFC 8866 order (m i c b k a)."""
        count = "" if self.port_count is None else f"/{self.port_count}"
        out = [f"m={self.kind} {self.port}{count} {self.proto} {' '.join(self.fmts)}"]
        out.extend(f"i={v}" for t, v in self.other if t == "i")
        if self.connection is not None:
            out.append(f"c=IN {self.addrtype} {self.connection}")
        out.extend(f"b={v}" for v in self.bandwidth)
        out.extend(f"k={v}" for t, v in self.other if t == "k")
        out.extend(_attribute_line(n, v) for n, v in self.attributes)
        return out


# --------------------------------------------------------------------------------------
# the whole description
# --------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SessionDescription:
    """A session description (RFC 8866 section 5).

    ``connection``/``addrtype`` come from the session-level c=; ``times`` are the raw t=
    values (at least one) and ``repeats`` either empty or, for each t=, its raw r= values;
    ``other`` the i=, u=, e=, p=, z= and k= lines as (type, value) in the order read;
    ``attributes`` the session-level a= lines as in ``Media``.
    """

    origin: Origin
    name: str = "-"
    connection: str | None = None
    addrtype: str = "IP4"
    bandwidth: tuple[str, ...] = ()
    times: tuple[str, ...] = ("0 0",)
    repeats: tuple[tuple[str, ...], ...] = ()
    other: tuple[tuple[str, str], ...] = ()
    attributes: Attributes = ()
    media: tuple[Media, ...] = ()
    version: int = 0

    def __post_init__(self) -> None:
        if not self.times:
            raise ValueError("a session description needs at least one t= line")
        if self.repeats and len(self.repeats) != len(self.times):
            raise ValueError("repeats must be empty or hold one tuple per t= line")

    @classmethod
    def parse(cls, data: bytes) -> SessionDescription:
        """Parse an SDP body (CRLF or LF line ends); SdpError names the offending line."""
        if len(data) > MAX_SDP_SIZE:
            raise SdpError(f"SDP body of {len(data)} bytes exceeds the {MAX_SDP_SIZE}-byte limit")
        lines = _split_lines(data)
        if not lines:
            raise SdpError("SDP body is empty")
        if lines[0][1] != "v":
            raise SdpError(f"line 1: expected v=0 first, got {lines[0][1]}=")
        session = _SessionDraft()
        media: list[_MediaDraft] = []
        for number, letter, value in lines:
            try:
                if letter == "m":
                    if len(media) == MAX_MEDIA:
                        raise SdpError(f"more than {MAX_MEDIA} m= lines")
                    media.append(_MediaDraft(media=Media.parse_line(value)))
                elif media:
                    media[-1].add(letter, value)
                else:
                    session.add(letter, value)
            except SdpError as exc:
                where = _where(letter, value, len(media) + (letter == "m"))
                raise SdpError(f"line {number}, {where}: {exc.message}") from None
        return session.build(tuple(m.build() for m in media))

    def __bytes__(self) -> bytes:
        return "".join(f"{line}\r\n" for line in self.sdp_lines()).encode(
            "utf-8", "surrogateescape"
        )

    def sdp_lines(self) -> list[str]:
        """Every line, in RFC 8866 section 5 order (v o s i u e p c b t r z k a, then m=)."""
        out = [f"v={self.version}", f"o={self.origin}", f"s={self.name}"]
        out.extend(f"{t}={v}" for letter in "iuep" for t, v in self.other if t == letter)
        if self.connection is not None:
            out.append(f"c=IN {self.addrtype} {self.connection}")
        out.extend(f"b={v}" for v in self.bandwidth)
        for index, timing in enumerate(self.times):
            out.append(f"t={timing}")
            if self.repeats:
                out.extend(f"r={v}" for v in self.repeats[index])
        out.extend(f"{t}={v}" for letter in "zk" for t, v in self.other if t == letter)
        out.extend(_attribute_line(n, v) for n, v in self.attributes)
        for media in self.media:
            out.extend(media.sdp_lines())
        return out

    # ---- views -------------------------------------------------------------------------
    @property
    def direction(self) -> str | None:
        """The session-level direction attribute, None if absent."""
        return _direction(self.attributes)

    def direction_of(self, media: Media) -> str:
        """The direction of ``media``: its own, else the session's, else sendrecv
        (RFC 8866 section 6.7)."""
        return media.direction or self.direction or "sendrecv"

    def connection_of(self, media: Media) -> str | None:
        """The address ``media`` is sent to: its c=, else the session c= (RFC 8866 5.7)."""
        return media.connection if media.connection is not None else self.connection

    def addrtype_of(self, media: Media) -> str:
        """The address type of ``connection_of(media)`` (IP4 when there is no c= at all)."""
        return media.addrtype if media.connection is not None else self.addrtype

    def has_attribute(self, name: str) -> bool:
        """True when a session-level attribute ``name`` is present."""
        return any(n == name for n, _ in self.attributes)

    def attribute(self, name: str) -> str | None:
        """The value of the first session-level attribute ``name``; None if absent or a flag."""
        return _first(self.attributes, name)

    def attribute_values(self, name: str) -> tuple[str, ...]:
        """The values of every session-level attribute ``name`` that has a value."""
        return tuple(v for n, v in self.attributes if n == name and v is not None)

    # ---- builders ----------------------------------------------------------------------
    def with_media(self, media: Sequence[Media]) -> SessionDescription:
        """The same session with these media descriptions."""
        if len(media) > MAX_MEDIA:
            raise ValueError(f"more than {MAX_MEDIA} media descriptions")
        return dataclasses.replace(self, media=tuple(media))

    def with_origin(self, origin: Origin) -> SessionDescription:
        """The same session with another o= (RFC 3264 section 8: bump the version on change)."""
        return dataclasses.replace(self, origin=origin)

    def with_connection(self, address: str | None, addrtype: str = "IP4") -> SessionDescription:
        """Set the session-level c= (None removes it)."""
        if address is not None:
            check_address(addrtype, address)
        return dataclasses.replace(self, connection=address, addrtype=addrtype)

    def with_attributes(
        self,
        replace: Mapping[str, Sequence[str | None]] | None = None,
        *,
        drop: Iterable[str] = (),
    ) -> SessionDescription:
        """Set and drop session-level attributes, as ``Media.with_attributes``."""
        attributes = _edit_attributes(self.attributes, replace or {}, drop)
        return dataclasses.replace(self, attributes=attributes)


# --------------------------------------------------------------------------------------
# the parser's private parts
# --------------------------------------------------------------------------------------
def _split_lines(data: bytes) -> list[tuple[int, str, str]]:
    """(line number, type letter, value) for each line; trailing empty lines are ignored
    (RFC 8866 section 5: ``<type>=<value>``, type one lower-case letter, CRLF or LF)."""
    text = data.decode("utf-8", "surrogateescape")
    raw = text.split("\n")
    while raw and raw[-1] in ("", "\r"):
        raw.pop()
    out: list[tuple[int, str, str]] = []
    for number, line in enumerate(raw, 1):
        if line.endswith("\r"):
            line = line[:-1]
        if not line:
            raise SdpError(f"line {number}: empty line")
        if "\r" in line or "\0" in line:
            raise SdpError(f"line {number}: contains a CR or NUL inside the line")
        letter = line[0]
        if len(line) < 2 or line[1] != "=" or not "a" <= letter <= "z":
            raise SdpError(f"line {number}: {_show(line)} is not a <type>=<value> line")
        if letter not in SESSION_TYPES and letter != "m":
            raise SdpError(f"line {number}: unknown line type '{letter}='")
        out.append((number, letter, line[2:]))
    return out


def _where(letter: str, value: str, media: int) -> str:
    """How an error names a line after its number: ``c=``, ``a=rtpmap``, ``m= line 2`` (the
    second m= line), ``m= line 2, a=rtpmap`` (an attribute under it)."""
    label = f"{letter}="
    if letter == "a":
        name = value.partition(":")[0]
        label = f"a={name}" if _is_token(name) and len(name) <= 40 else "a="
    if letter == "m":
        return f"m= line {media}"
    return f"m= line {media}, {label}" if media else label


@dataclass(slots=True)
class _Section:
    """The lines common to both levels, collected while parsing."""

    connection: tuple[str, str] | None = None
    bandwidth: list[str] = field(default_factory=list)
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    other: list[tuple[str, str]] = field(default_factory=list)

    def add_common(self, letter: str, value: str) -> bool:
        """Take a c=, b= or a= line; False for any other type."""
        if letter == "c":
            if self.connection is not None:
                raise SdpError("more than one c= line")
            self.connection = _parse_connection(value)
        elif letter == "b":
            _check_bandwidth(value)
            self.bandwidth.append(value)
        elif letter == "a":
            self.attributes.append(_parse_attribute(value))
        else:
            return False
        return True


@dataclass(slots=True)
class _SessionDraft(_Section):
    seen_version: bool = False
    origin: Origin | None = None
    name: str | None = None
    times: list[str] = field(default_factory=list)
    repeats: list[list[str]] = field(default_factory=list)

    def add(self, letter: str, value: str) -> None:
        if self.add_common(letter, value):
            return
        if letter == "v":
            if self.seen_version:
                raise SdpError("more than one v= line")
            if value != "0":
                raise SdpError(f"version {_show(value)} is not 0")
            self.seen_version = True
        elif letter == "o":
            if self.origin is not None:
                raise SdpError("more than one o= line")
            self.origin = Origin.parse(value)
        elif letter == "s":
            if self.name is not None:
                raise SdpError("more than one s= line")
            self.name = value
        elif letter == "t":
            _check_timing(value)
            self.times.append(value)
            self.repeats.append([])
        elif letter == "r":
            if not self.times:
                raise SdpError("r= must follow a t= line")
            self.repeats[-1].append(value)
        else:  # i u e p z k: kept as written
            self.other.append((letter, value))

    def build(self, media: tuple[Media, ...]) -> SessionDescription:
        if self.origin is None:
            raise SdpError("missing o= line")
        if self.name is None:
            raise SdpError("missing s= line")
        if not self.times:
            raise SdpError("missing t= line")
        address, addrtype = self.connection or (None, "IP4")
        return SessionDescription(
            origin=self.origin,
            name=self.name,
            connection=address,
            addrtype=addrtype,
            bandwidth=tuple(self.bandwidth),
            times=tuple(self.times),
            repeats=tuple(map(tuple, self.repeats)) if any(self.repeats) else (),
            other=tuple(self.other),
            attributes=tuple(self.attributes),
            media=media,
        )


@dataclass(slots=True)
class _MediaDraft(_Section):
    media: Media = field(kw_only=True)

    def add(self, letter: str, value: str) -> None:
        if self.add_common(letter, value):
            return
        if letter not in MEDIA_TYPES:
            raise SdpError(f"{letter}= is not allowed in a media description")
        self.other.append((letter, value))

    def build(self) -> Media:
        address, addrtype = self.connection or (None, "IP4")
        return dataclasses.replace(
            self.media,
            connection=address,
            addrtype=addrtype,
            bandwidth=tuple(self.bandwidth),
            attributes=tuple(self.attributes),
            other=tuple(self.other),
        )
