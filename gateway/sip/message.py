"""SIP messages: parse, access, build, serialize (RFC 3261 sections 7, 18.3, 20, 25).

Invariants:
- A message is immutable. Changes return a new message (``with_*`` methods).
- Every header keeps the exact text it arrived with (folding included); a header
  the gateway did not change goes out byte-identical. Structured values (Via,
  CSeq, From, To, ...) are parsed on first access and cached.
- ``parse_datagram`` frames the body by Content-Length, or by the end of the
  datagram when the header is absent (RFC 3261 section 18.3); ``StreamFramer``
  requires Content-Length and caps what it buffers.
- Text is latin-1 decoded, so any octet sequence round-trips.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from typing import Any

from gateway.sip.errors import SipParseError
from gateway.sip.headers import (
    CSeq,
    Via,
    canonical_name,
    header_key,
    parse_uint,
)
from gateway.sip.uri import NameAddr, SipUri, is_digits, is_token, split_commas

SIP_VERSION = "SIP/2.0"
MAX_HEADERS = 256

# (key, value, raw-line-or-None). ``raw`` is the header line exactly as received.
HeaderField = tuple[str, str, str | None]

REASONS = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    421: "Extension Required",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    491: "Request Pending",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}


def reason_phrase(status: int) -> str:
    return REASONS.get(status, "Unknown")


class Message:
    """Common part of requests and responses. Immutable by convention (slots, no setters)."""

    __slots__ = ("_cache", "body", "fields")

    fields: tuple[HeaderField, ...]
    body: bytes
    _cache: dict[str, Any]

    def __init__(self, fields: Iterable[HeaderField], body: bytes = b"") -> None:
        self.fields = tuple(fields)
        self.body = body
        self._cache = {}

    # -- generic access -------------------------------------------------
    def get(self, name: str) -> str | None:
        """The first value of a header (by any spelling), or None."""
        key = header_key(name)
        for k, v, _ in self.fields:
            if k == key:
                return v
        return None

    def get_all(self, name: str) -> list[str]:
        """Every value of a header, comma-separated lists split (RFC 3261 section 7.3.1)."""
        key = header_key(name)
        out: list[str] = []
        for k, v, _ in self.fields:
            if k == key:
                out.extend(split_commas(v))
        return out

    def values(self, name: str) -> list[str]:
        """Every instance of a header, unsplit: for headers whose values contain commas
        that do not separate values (WWW-Authenticate, Authorization, Date, ...)."""
        key = header_key(name)
        return [v for k, v, _ in self.fields if k == key]

    def count(self, name: str) -> int:
        key = header_key(name)
        return sum(1 for k, _, _ in self.fields if k == key)

    def has(self, name: str) -> bool:
        key = header_key(name)
        return any(k == key for k, _, _ in self.fields)

    def _cached(self, key: str, build: Any) -> Any:
        try:
            return self._cache[key]
        except KeyError:
            value = self._cache[key] = build()
            return value

    def _required(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise SipParseError(f"missing {canonical_name(header_key(name))} header")
        return value

    # -- structured headers (parsed on access) -------------------------
    @property
    def vias(self) -> list[Via]:
        vias: list[Via] = self._cached("via", lambda: [Via.parse(v) for v in self.get_all("via")])
        return vias

    @property
    def top_via(self) -> Via:
        top: Via = self._cached("top_via", self._parse_top_via)
        return top

    def _parse_top_via(self) -> Via:
        value = self._required("via")
        first = split_commas(value)[0] if "," in value else value
        return Via.parse(first)

    @property
    def cseq(self) -> CSeq:
        cseq: CSeq = self._cached("cseq", lambda: CSeq.parse(self._required("cseq")))
        return cseq

    @property
    def call_id(self) -> str:
        return self._required("call-id")

    @property
    def from_(self) -> NameAddr:
        value: NameAddr = self._cached(
            "from", lambda: NameAddr.parse(self._required("from"), "From")
        )
        return value

    @property
    def to(self) -> NameAddr:
        value: NameAddr = self._cached("to", lambda: NameAddr.parse(self._required("to"), "To"))
        return value

    @property
    def to_tag(self) -> str | None:
        """The To tag, read without parsing the whole To header (hot path)."""
        return _fast_tag(self.get("to"))

    @property
    def from_tag(self) -> str | None:
        return _fast_tag(self.get("from"))

    @property
    def contacts(self) -> list[NameAddr]:
        """Contact values; ``*`` (REGISTER wildcard) is not returned here."""
        value: list[NameAddr] = self._cached(
            "contact",
            lambda: [NameAddr.parse(c, "Contact") for c in self.get_all("contact") if c != "*"],
        )
        return value

    @property
    def record_routes(self) -> list[NameAddr]:
        return [NameAddr.parse(v, "Record-Route") for v in self.get_all("record-route")]

    @property
    def routes(self) -> list[NameAddr]:
        return [NameAddr.parse(v, "Route") for v in self.get_all("route")]

    @property
    def content_type(self) -> str | None:
        value = self.get("content-type")
        return None if value is None else value.split(";", 1)[0].strip().lower()

    # -- building -------------------------------------------------------
    def header_lines(self) -> list[str]:
        return [
            raw if raw is not None else f"{canonical_name(k)}: {v}" for k, v, raw in self.fields
        ]

    def _with(self, fields: Iterable[HeaderField], body: bytes | None = None) -> Any:
        raise NotImplementedError

    def with_header(self, name: str, value: str) -> Any:
        """Replace every instance of a header with one value (or add it at the end)."""
        key = header_key(name)
        out: list[HeaderField] = []
        placed = False
        for field in self.fields:
            if field[0] == key:
                if not placed:
                    out.append((key, value, None))
                    placed = True
            else:
                out.append(field)
        if not placed:
            out.append((key, value, None))
        return self._with(out)

    def without_header(self, name: str) -> Any:
        key = header_key(name)
        return self._with(f for f in self.fields if f[0] != key)

    def with_prepended(self, name: str, value: str) -> Any:
        """Add a header before any existing instance (Via, Record-Route)."""
        key = header_key(name)
        out = list(self.fields)
        for i, field in enumerate(out):
            if field[0] == key:
                out.insert(i, (key, value, None))
                break
        else:
            out.append((key, value, None))
        return self._with(out)

    def without_top_via(self) -> Any:
        out: list[HeaderField] = []
        done = False
        for key, value, raw in self.fields:
            if key == "via" and not done:
                done = True
                rest = split_commas(value)[1:] if "," in value else []
                if rest:
                    out.append((key, ", ".join(rest), None))
                continue
            out.append((key, value, raw))
        return self._with(out)

    def with_body(self, body: bytes, content_type: str | None = None) -> Any:
        """A copy with ``body``; Content-Length follows it (kept byte-exact if still right)."""
        fields: list[HeaderField] = []
        placed = False
        for field in self.fields:
            if field[0] == "content-length":
                if placed:
                    continue
                placed = True
                if not _length_matches(field[1], len(body)):
                    field = ("content-length", str(len(body)), None)
            fields.append(field)
        msg = self._with(fields, body)
        if content_type is not None:
            msg = msg.with_header("content-type", content_type)
        elif not body:
            msg = msg.without_header("content-type")
        return msg

    def _serialize(self, start_line: str) -> bytes:
        lines = [start_line]
        body = self.body
        have_length = False
        for key, value, raw in self.fields:
            if key == "content-length":
                if have_length:
                    continue
                have_length = True
                if raw is None or not _length_matches(value, len(body)):
                    lines.append(f"Content-Length: {len(body)}")
                    continue
            lines.append(raw if raw is not None else f"{canonical_name(key)}: {value}")
        if not have_length:
            lines.append(f"Content-Length: {len(body)}")
        lines.append("\r\n")
        return "\r\n".join(lines).encode("latin-1") + body


_TAG_RE = re.compile(r";[ \t]*tag[ \t]*=[ \t]*([^;,\s>]+)", re.I)


def _fast_tag(value: str | None) -> str | None:
    """The ``tag`` header parameter of a From/To value (after the URI's closing ``>``)."""
    if value is None:
        return None
    gt = value.rfind(">")
    m = _TAG_RE.search(value, gt + 1 if gt >= 0 else 0)
    return m.group(1) if m else None


class Request(Message):
    __slots__ = ("method", "uri_text")

    def __init__(
        self, method: str, uri: str, fields: Iterable[HeaderField], body: bytes = b""
    ) -> None:
        super().__init__(fields, body)
        self.method = method
        self.uri_text = uri

    is_request = True

    @property
    def uri(self) -> SipUri:
        value: SipUri = self._cached("uri", lambda: SipUri.parse(self.uri_text))
        return value

    @property
    def max_forwards(self) -> int | None:
        value = self.get("max-forwards")
        return None if value is None else parse_uint(value, "Max-Forwards", 255)

    def _with(self, fields: Iterable[HeaderField], body: bytes | None = None) -> Request:
        return Request(self.method, self.uri_text, fields, self.body if body is None else body)

    def with_uri(self, uri: str) -> Request:
        return Request(self.method, uri, self.fields, self.body)

    def __bytes__(self) -> bytes:
        return self._serialize(f"{self.method} {self.uri_text} {SIP_VERSION}")

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri_text}>"


class Response(Message):
    __slots__ = ("reason", "status")

    def __init__(
        self, status: int, reason: str, fields: Iterable[HeaderField], body: bytes = b""
    ) -> None:
        super().__init__(fields, body)
        self.status = status
        self.reason = reason

    is_request = False

    def _with(self, fields: Iterable[HeaderField], body: bytes | None = None) -> Response:
        return Response(self.status, self.reason, fields, self.body if body is None else body)

    def __bytes__(self) -> bytes:
        return self._serialize(f"{SIP_VERSION} {self.status} {self.reason}")

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"


SipMessage = Request | Response


# --------------------------------------------------------------------------
# parsing
# --------------------------------------------------------------------------
def parse_content_length(value: str) -> int:
    return parse_uint(value, "Content-Length", 2**31)


def _length_matches(value: str, length: int) -> bool:
    try:
        return parse_content_length(value) == length
    except SipParseError:
        return False


def _is_response_line(start: str) -> bool:
    """A status line: "SIP/" (the version is case-insensitive, RFC 3261 section 7.1)."""
    return start.startswith("SIP/") or start[:4].upper() == "SIP/"


def _fail(err: SipParseError, start: str, fields: Sequence[HeaderField]) -> SipParseError:
    """Attach what was recovered, so a 4xx/5xx can still be built (section 8.2.6.2)."""
    if err.start_line is None:
        err.start_line = start
        err.raw_headers = [(k, v) for k, v, _ in fields]
    if _is_response_line(err.start_line):
        err.respond = False  # a response is never answered, only dropped
    return err


def _split_fields(head: str) -> tuple[str, list[HeaderField]]:
    lines = head.split("\r\n")
    if len(lines) == 1 and "\n" in head:
        lines = head.split("\n")  # bare-LF sender: tolerated (RFC 3261 section 7 robustness)
    start = lines[0]
    fields: list[HeaderField] = []
    i = 1
    n = len(lines)
    while i < n:
        line = lines[i]
        raw = line
        i += 1
        while i < n and lines[i][:1] in (" ", "\t"):  # folding (RFC 3261 section 7.3.1)
            raw += "\r\n" + lines[i]
            line += " " + lines[i].strip(" \t")
            i += 1
        if not line:
            continue
        name, colon, value = line.partition(":")
        name = name.rstrip(" \t")
        if not colon or not is_token(name):
            raise _fail(SipParseError("malformed header line"), start, fields)
        fields.append((header_key(name), value.strip(" \t"), raw))
        if len(fields) > MAX_HEADERS:
            raise _fail(SipParseError("too many headers", 413), start, fields)
    return start, fields


def _parse_start(start: str, fields: list[HeaderField], body: bytes) -> SipMessage:
    if _is_response_line(start):
        version, _, rest = start.partition(" ")
        code, _, reason = rest.partition(" ")
        if version.upper() != SIP_VERSION:
            raise _fail(SipParseError("SIP version not supported"), start, fields)
        if len(code) != 3 or not is_digits(code) or not 100 <= int(code) <= 699:
            raise _fail(SipParseError("bad status code"), start, fields)  # RFC 4475 3.1.2.19
        return Response(int(code), reason, fields, body)
    parts = start.split(" ")
    if len(parts) != 3 or not all(parts):
        raise _fail(SipParseError("malformed Request-Line"), start, fields)
    method, uri, version = parts
    if not is_token(method):
        raise _fail(SipParseError("bad method", respond=False), start, fields)
    if version != SIP_VERSION:
        upper = version.upper()
        if not upper.startswith("SIP/"):
            raise _fail(SipParseError("not a SIP request", respond=False), start, fields)
        if upper != SIP_VERSION:  # RFC 3261 21.5.7, RFC 4475 3.1.2.16
            raise _fail(SipParseError("SIP version not supported", 505), start, fields)
    return Request(method, uri, fields, body)


def parse_datagram(data: bytes) -> SipMessage:
    """Parse one message from one datagram (RFC 3261 section 18.3).

    A body longer than Content-Length is truncated (trailing octets discarded);
    a shorter one is an error (400). Without Content-Length the body runs to the
    end of the datagram.
    """
    if data[:1] in (b"\r", b"\n"):
        data = data.lstrip(b"\r\n")  # CRLFs before the start-line are ignored (section 7.5)
        if not data:
            raise SipParseError("empty message", respond=False)
    head_end = data.find(b"\r\n\r\n")
    sep = 4
    if head_end < 0:
        head_end = data.find(b"\n\n")
        sep = 2
        if head_end < 0:
            head_end = len(data)
            sep = 0
    head = data[:head_end].decode("latin-1")
    start, fields = _split_fields(head)
    body = data[head_end + sep :]
    lengths = [v for k, v, _ in fields if k == "content-length"]
    if lengths:
        if len(lengths) > 1 and len(set(lengths)) > 1:
            raise _fail(SipParseError("conflicting Content-Length headers"), start, fields)
        try:
            length = parse_content_length(lengths[0])
        except SipParseError:
            raise _fail(SipParseError("bad Content-Length"), start, fields) from None
        if length > len(body):
            raise _fail(SipParseError("body shorter than Content-Length"), start, fields)
        body = body[:length]
    return _parse_start(start, fields, body)


class StreamFramer:
    """Frames messages from a byte stream (TCP/TLS); RFC 3261 section 18.3.

    Content-Length is mandatory on streams. CRLFs before a start-line are
    skipped (section 7.5); each CRLFCRLF keep-alive ping (RFC 5626 section
    3.5.1) adds one to ``pings``, however the octets were split. Buffered octets
    are capped: past ``max_buffer`` the framer raises (the caller closes). After
    any error the stream cannot be re-synchronised: the caller closes it.
    """

    def __init__(self, max_buffer: int = 65536) -> None:
        self._buf = bytearray()
        self.max_buffer = max_buffer
        self.pings = 0
        self._crlfs = 0  # CRLF pairs seen since the last message or ping
        self._scanned = 0  # octets of the buffer already searched for the blank line
        self._head: tuple[str, list[HeaderField], int, int] | None = None

    def feed(self, data: bytes) -> list[SipMessage]:
        """Add received octets; return the messages they complete, in order."""
        buf = self._buf
        buf += data
        out: list[SipMessage] = []
        while True:
            if self._head is None:
                skip = 0
                while buf[skip : skip + 2] == b"\r\n":
                    skip += 2
                    self._crlfs += 1
                    if self._crlfs == 2:
                        self.pings += 1
                        self._crlfs = 0
                if skip:
                    del buf[:skip]
                    self._scanned = 0
                if not buf or buf == b"\r":
                    return out  # nothing yet, or half a CRLF
                self._crlfs = 0
                head = self._find_head()
                if head is None:
                    return out
                self._head = head
            start, fields, body_at, total = self._head
            if len(buf) < total:
                return out
            body = bytes(buf[body_at:total])
            del buf[:total]
            self._head = None
            out.append(_parse_start(start, fields, body))

    def _find_head(self) -> tuple[str, list[HeaderField], int, int] | None:
        buf = self._buf
        head_end = buf.find(b"\r\n\r\n", max(self._scanned - 3, 0))
        if head_end < 0:
            self._scanned = len(buf)
            if len(buf) > self.max_buffer:
                raise SipParseError("header block too large", 413)
            return None
        self._scanned = 0
        start, fields = _split_fields(bytes(buf[:head_end]).decode("latin-1"))
        lengths = [v for k, v, _ in fields if k == "content-length"]
        if not lengths:
            err = SipParseError("missing Content-Length on a stream transport")
            raise _fail(err, start, fields)
        if len(set(lengths)) > 1:
            raise _fail(SipParseError("conflicting Content-Length headers"), start, fields)
        try:
            length = parse_content_length(lengths[0])
        except SipParseError:
            raise _fail(SipParseError("bad Content-Length"), start, fields) from None
        total = head_end + 4 + length
        if total > self.max_buffer:
            raise _fail(SipParseError("message too large", 513), start, fields)
        return start, fields, head_end + 4, total

    @property
    def buffered(self) -> int:
        return len(self._buf)


# --------------------------------------------------------------------------
# building (RFC 3261 sections 8.1.1, 8.2.6, 9.1, 17.1.1.3)
# --------------------------------------------------------------------------
def make_request(
    method: str,
    uri: str,
    headers: Sequence[tuple[str, str]],
    body: bytes = b"",
) -> Request:
    fields = [(header_key(name), value, None) for name, value in headers]
    return Request(method, uri, fields, body)


def make_response(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
) -> Response:
    """A response to ``request``: Via, From, To, Call-ID, CSeq copied (section 8.2.6.2)."""
    fields: list[HeaderField] = [
        f for f in request.fields if f[0] in ("via", "from", "call-id", "cseq")
    ]
    to_value = request.get("to")
    if to_value is not None:
        if to_tag is not None and status != 100 and not _has_tag(to_value):
            to_value = f"{to_value};tag={to_tag}"
        fields.insert(_to_position(fields), ("to", to_value, None))
    if status == 100:
        fields.extend(f for f in request.fields if f[0] == "timestamp")
    fields.extend((header_key(n), v, None) for n, v in headers)
    return Response(status, reason or reason_phrase(status), fields, body)


def _has_tag(to_value: str) -> bool:
    try:
        return NameAddr.parse(to_value, "To").tag is not None
    except SipParseError:
        return "tag=" in to_value.lower()


def _to_position(fields: list[HeaderField]) -> int:
    """Keep the usual order: To right after From."""
    for i, field in enumerate(fields):
        if field[0] == "from":
            return i + 1
    return len(fields)


def make_response_from_error(err: SipParseError) -> bytes | None:
    """Bytes of the answer to an unparseable request, or None if none can be built.

    The answer is routed by Via and matched by CSeq, so those two must have
    been recovered; From, To and Call-ID are copied when present. Responses and
    ACKs are never answered; ``err.respond`` false means drop (RFC 4475 3.1.2.19).
    """
    if not err.respond or not err.start_line:
        return None
    return _error_answer(err, err.start_line, err.raw_headers)


def error_response(request: Request | None, err: SipParseError) -> bytes | None:
    """Bytes of the stateless answer to a request that failed, or None to drop it.

    ``request`` is None when parsing failed (the answer is built from what
    ``err`` recovered), or the parsed request when validation failed (e.g.
    ``validate_request``): then the answer copies its Via, From, To, Call-ID and
    CSeq (RFC 3261 section 8.2.6.2) even when those do not parse.
    """
    if request is None:
        return make_response_from_error(err)
    if not err.respond:
        return None
    start = f"{request.method} {request.uri_text} {SIP_VERSION}"
    return _error_answer(err, start, [(k, v) for k, v, _ in request.fields])


def _error_answer(
    err: SipParseError, start_line: str, raw_headers: Sequence[tuple[str, str]]
) -> bytes | None:
    if _is_response_line(start_line) or start_line.split(" ", 1)[0] == "ACK":
        return None  # an ACK is never answered (RFC 3261 section 8.2.7)
    vias = [v for k, v in raw_headers if k == "via"]
    first: dict[str, str] = {}
    for key, value in raw_headers:
        if key in ("from", "to", "call-id", "cseq") and key not in first:
            first[key] = value  # a repeated single-valued header: the first one
    if not vias or "cseq" not in first:
        return None
    lines = [f"{SIP_VERSION} {err.status} {reason_phrase(err.status)}"]
    lines.extend(f"Via: {v}" for v in vias)
    if "from" in first:
        lines.append(f"From: {first['from']}")
    if "to" in first:
        lines.append(f"To: {_to_with_stateless_tag(first['to'], vias[0], first)}")
    if "call-id" in first:
        lines.append(f"Call-ID: {first['call-id']}")
    lines.append(f"CSeq: {first['cseq']}")
    if err.status == 400:
        lines.append(f'Warning: 399 acs-gateway "{_sanitize(err.message)}"')
    lines.extend(f"{n}: {v}" for n, v in err.extra_headers)
    lines.append("Content-Length: 0")
    lines.append("\r\n")
    return "\r\n".join(lines).encode("latin-1")


def _to_with_stateless_tag(to_value: str, top_via: str, first: dict[str, str]) -> str:
    """To with a tag added when it has none (section 8.2.6.2), the same tag for every
    retransmission of the request (stateless UAS, section 8.2.7). A To that does not
    parse is copied as it is."""
    try:
        if NameAddr.parse(to_value, "To").tag is not None:
            return to_value
    except SipParseError:
        return to_value
    seed = "\0".join((top_via, first.get("from", ""), first.get("call-id", ""), first["cseq"]))
    tag = hashlib.blake2s(seed.encode("latin-1"), digest_size=8).hexdigest()
    return f"{to_value};tag={tag}"


def _sanitize(text: str) -> str:
    return text.replace('"', "'").replace("\\", "/")


def make_resend(
    request: Request, seq: int, branch: str, headers: Sequence[tuple[str, str]] = ()
) -> Request:
    """``request`` again as a new transaction: a new top-Via branch, CSeq ``seq``, and
    ``headers`` replacing their namesakes (a challenge answered, RFC 3261 section 22.2; a
    422 answered, RFC 4028 section 7.3)."""
    via = request.top_via
    out: Request = request.with_header("via", str(via.with_param("branch", branch)))
    out = out.with_header("cseq", f"{seq} {request.method}")
    for name, value in headers:
        out = out.with_header(name, value)
    return out


def make_ack(request: Request, response: Response) -> Request:
    """ACK for a non-2xx final response, sent by the INVITE client transaction.

    RFC 3261 section 17.1.1.3: same Request-URI, Call-ID, From, CSeq number and
    top Via as the INVITE, To from the response, Route from the INVITE.
    """
    fields: list[HeaderField] = []
    top_via_done = False
    for key, value, raw in request.fields:
        if key == "via":
            if not top_via_done:
                top_via_done = True
                first = split_commas(value)[0] if "," in value else value
                fields.append((key, first, raw if first == value else None))
        elif key in ("from", "call-id", "route", "max-forwards"):
            fields.append((key, value, raw))
        elif key == "cseq":
            fields.append((key, f"{request.cseq.seq} ACK", None))
    to_value = response.get("to") or request._required("to")
    fields.insert(2, ("to", to_value, None))
    return Request("ACK", request.uri_text, fields, b"")


def make_cancel(request: Request) -> Request:
    """CANCEL for a pending INVITE (RFC 3261 section 9.1)."""
    fields: list[HeaderField] = []
    top_via_done = False
    for key, value, raw in request.fields:
        if key == "via":
            if not top_via_done:
                top_via_done = True
                first = split_commas(value)[0] if "," in value else value
                fields.append((key, first, None))
        elif key in ("from", "to", "call-id", "route", "max-forwards"):
            fields.append((key, value, raw))
        elif key == "cseq":
            fields.append((key, f"{request.cseq.seq} CANCEL", None))
    return Request("CANCEL", request.uri_text, fields, b"")
