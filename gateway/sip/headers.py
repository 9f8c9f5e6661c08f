"""Header names and the structured header values (RFC 3261 sections 7.3, 20).

Invariants:
- Header names are compared by their *key*: the lower-case long form
  (compact forms such as ``v`` and ``i`` are expanded, RFC 3261 section 7.3.3).
- Parsed values are immutable and render back to the text they came from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.sip.errors import SipParseError
from gateway.sip.uri import (
    WS,
    Params,
    get_param,
    is_digits,
    is_token,
    parse_host,
    parse_params,
    render_params,
    set_param,
)

# RFC 3261 section 7.3.3 and the IANA registry's compact forms.
COMPACT = {
    "a": "accept-contact",
    "b": "referred-by",
    "c": "content-type",
    "d": "request-disposition",
    "e": "content-encoding",
    "f": "from",
    "i": "call-id",
    "j": "reject-contact",
    "k": "supported",
    "l": "content-length",
    "m": "contact",
    "n": "identity-info",
    "o": "event",
    "r": "refer-to",
    "s": "subject",
    "t": "to",
    "u": "allow-events",
    "v": "via",
    "x": "session-expires",
    "y": "identity",
}

# How the gateway spells the headers it writes itself.
CANONICAL = {
    "call-id": "Call-ID",
    "cseq": "CSeq",
    "www-authenticate": "WWW-Authenticate",
    "mime-version": "MIME-Version",
    "min-se": "Min-SE",
    "session-id": "Session-ID",
    "rack": "RAck",
    "rseq": "RSeq",
    "sip-etag": "SIP-ETag",
    "sip-if-match": "SIP-If-Match",
}

# Headers whose value may be a comma-separated list (RFC 3261 section 7.3.1).
# Headers that are single-valued must appear once (RFC 4475 section 3.3.8).
SINGLE_VALUED = frozenset(
    {"call-id", "cseq", "from", "to", "max-forwards", "content-length", "content-type"}
)

MAX_UINT32 = 2**32 - 1
_COLON_LWS_RE = re.compile(r"[ \t]*:[ \t]*")


def _bounded_int(digits: str, limit: int) -> int | None:
    """``int(digits)`` if it is at most ``limit``, else None, without converting a huge
    string (a peer-controlled 5000-digit number would make ``int()`` raise ValueError)."""
    significant = digits.lstrip("0")
    if len(significant) > len(str(limit)):
        return None
    value = int(significant) if significant else 0
    return value if value <= limit else None


def header_key(name: str) -> str:
    key = name.lower()
    return COMPACT.get(key, key)


_NAMES: dict[str, str] = {}


def canonical_name(key: str) -> str:
    """How the gateway spells header ``key`` (memoized: it runs for every header written)."""
    name = _NAMES.get(key)
    if name is None:
        name = CANONICAL.get(key) or "-".join(part.capitalize() for part in key.split("-"))
        if len(_NAMES) < 4096:  # peers choose header names: bound the memo
            _NAMES[key] = name
    return name


# SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776;rport (hostname or IPv4 sent-by, token
# params). Anything else (LWS, IPv6, quoted values, odd ports) takes the general parser.
_VIA_FAST = re.compile(
    r"SIP/2\.0/([A-Za-z]{2,8}) "
    r"((?:\d{1,3}\.){3}\d{1,3}|[A-Za-z][A-Za-z0-9\-]*(?:\.[A-Za-z0-9\-]+)*)"
    r"(?::(6553[0-5]|655[0-2]\d|65[0-4]\d\d|6[0-4]\d{3}|[1-5]\d{4}|[1-9]\d{0,3}))?"
    r"((?:;[A-Za-z0-9\-.!%*_+`'~]+(?:=[A-Za-z0-9\-.!%*_+`'~]+)?)*)\Z"
)


def _fast_param(text: str) -> tuple[str, str | None]:
    name, eq, value = text.partition("=")
    return (name, value if eq else None)


@dataclass(frozen=True, slots=True)
class Via:
    """One Via value: ``SIP/2.0/UDP host:port;branch=...`` (RFC 3261 section 20.42)."""

    transport: str
    host: str
    port: int | None
    params: Params

    @classmethod
    def parse(cls, text: str) -> Via:
        m = _VIA_FAST.match(text)
        if m is not None:  # the common, tidy form: no LWS, simple params
            transport, host, port, ptext = m.groups()
            params = tuple(_fast_param(p) for p in ptext[1:].split(";")) if ptext else ()
            return cls(transport.upper(), host, int(port) if port else None, params)
        return cls._parse_general(text)

    @classmethod
    def _parse_general(cls, text: str) -> Via:
        proto, semi, ptext = text.partition(";")
        parts = [p.strip(WS) for p in proto.split("/", 2)]
        if len(parts) != 3:
            raise SipParseError("bad Via sent-protocol")
        name, version, rest = parts
        if not is_token(name) or not is_token(version):
            raise SipParseError("bad Via sent-protocol")
        transport, _, sent_by = rest.strip(WS).partition(" ")
        transport = transport.strip(WS)
        sent_by = sent_by.strip(WS)
        if "\t" in transport:
            transport, _, more = transport.partition("\t")
            sent_by = (more + sent_by).strip(WS)
        if not is_token(transport) or not sent_by:
            raise SipParseError("bad Via sent-by")
        if " " in sent_by or "\t" in sent_by:  # LWS is allowed around the colon only
            sent_by = _COLON_LWS_RE.sub(":", sent_by)
            if " " in sent_by or "\t" in sent_by:
                raise SipParseError("bad Via sent-by")
        host, port = parse_host(sent_by, "Via")
        params = parse_params(ptext, "Via") if semi else ()
        return cls(transport.upper(), host, port, params)

    @property
    def branch(self) -> str | None:
        return get_param(self.params, "branch")

    @property
    def received(self) -> str | None:
        return get_param(self.params, "received")

    @property
    def rport(self) -> str | None:
        """``None`` when absent, ``""`` when present without a value."""
        return get_param(self.params, "rport")

    def with_param(self, name: str, value: str | None) -> Via:
        return Via(self.transport, self.host, self.port, set_param(self.params, name, value))

    def __str__(self) -> str:
        port = f":{self.port}" if self.port is not None else ""
        return f"SIP/2.0/{self.transport} {self.host}{port}{render_params(self.params)}"


@dataclass(frozen=True, slots=True)
class CSeq:
    seq: int
    method: str

    @classmethod
    def parse(cls, text: str) -> CSeq:
        parts = text.split()
        if len(parts) != 2 or not is_digits(parts[0]) or not is_token(parts[1]):
            raise SipParseError("bad CSeq")
        seq = _bounded_int(parts[0], MAX_UINT32)
        if seq is None:
            raise SipParseError("CSeq number out of range")  # RFC 3261 section 8.1.1.5
        return cls(seq, parts[1])

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"


def parse_uint(text: str, what: str, limit: int = MAX_UINT32) -> int:
    """A decimal header value in ``0..limit``; leading zeros allowed (RFC 4475 section 3.1.1.1)."""
    text = text.strip(WS)
    value = _bounded_int(text, limit) if is_digits(text) else None
    if value is None:
        raise SipParseError(f"bad {what}")
    return value
