"""Request validation by a UAS, in the order of RFC 3261 section 8.2.

Each failed check raises ``SipParseError`` carrying the status the gateway
answers with: 400 for malformed requests, 405/501 for methods (section
8.2.1), 416 for URI schemes and 420 for Require (section 8.2.2), 415/406 for
bodies (section 8.2.3). RFC 4475 names the message that exercises each rule.
"""

from __future__ import annotations

from collections.abc import Collection

from gateway.sip.errors import SipParseError
from gateway.sip.headers import SINGLE_VALUED, parse_uint
from gateway.sip.message import Request
from gateway.sip.uri import split_commas

# Methods of RFC 3261 and its extensions: known, so 405 (not 501) when not served.
KNOWN_METHODS = frozenset(
    {
        "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "UPDATE",
        "INFO", "REFER", "NOTIFY", "SUBSCRIBE", "MESSAGE", "PUBLISH",
    }
)
URI_SCHEMES = frozenset({"sip", "sips", "tel"})
SDP = "application/sdp"
_MANDATORY = ("via", "from", "to", "call-id", "cseq")


def validate_request(
    req: Request,
    allowed: Collection[str],
    supported: Collection[str] = (),
) -> None:
    """Raise SipParseError with the answer if ``req`` cannot be processed as is."""
    _check_syntax(req)
    method = req.method
    allow_header = (("Allow", ", ".join(sorted(allowed))),)
    if method not in allowed:
        status = 405 if method in KNOWN_METHODS else 501
        raise SipParseError(f"method {method} not served", status, extra_headers=allow_header)
    uri = req.uri
    if uri.scheme not in URI_SCHEMES:
        raise SipParseError("unsupported URI scheme", 416)
    if uri.headers is not None:
        raise SipParseError("Request-URI carries escaped headers")  # RFC 4475 section 3.1.2.11
    if method not in ("ACK", "CANCEL"):
        required = [t.lower() for t in req.get_all("require") if t]
        unknown = [t for t in required if t not in supported]
        if unknown:
            raise SipParseError(
                "unsupported extension",
                420,
                extra_headers=(("Unsupported", ", ".join(unknown)),),
            )
    if method == "INVITE":
        _check_invite_body(req)


def _check_syntax(req: Request) -> None:
    for key in _MANDATORY:
        if not req.has(key):
            raise SipParseError(f"missing mandatory header {key}")
    for key in SINGLE_VALUED:
        if req.count(key) > 1:
            raise SipParseError(f"repeated single-valued header {key}")
    if not req.call_id.strip():
        raise SipParseError("empty Call-ID")
    vias = req.vias
    if not vias:
        raise SipParseError("missing Via")
    if vias[0].branch == "z9hG4bK":
        raise SipParseError("Via branch is only the magic cookie")  # RFC 4475 section 3.2.1
    cseq = req.cseq
    if cseq.method != req.method:
        status = 400 if req.method in KNOWN_METHODS else 501
        raise SipParseError("CSeq method does not match the Request-Line", status)
    req.from_  # noqa: B018 - parse to validate
    req.to  # noqa: B018
    req.uri  # noqa: B018
    req.max_forwards  # noqa: B018
    req.contacts  # noqa: B018
    expires = req.get("expires")
    if expires is not None:
        parse_uint(expires, "Expires")
    for contact in req.contacts:
        value = contact.param("expires")
        if value is not None:
            parse_uint(value, "Contact expires")
    date = req.get("date")
    if date is not None and not date.rstrip().endswith("GMT"):
        raise SipParseError("Date must be in GMT")  # RFC 3261 section 20.17


def _check_invite_body(req: Request) -> None:
    if req.body:
        ctype = req.content_type
        if ctype is not None and ctype not in (SDP, "multipart/mixed"):
            raise SipParseError("unsupported body type", 415, extra_headers=(("Accept", SDP),))
    accept = req.get("accept")
    if accept is not None:
        types = [t.split(";", 1)[0].strip().lower() for t in split_commas(accept)]
        if types and not any(t in (SDP, "application/*", "*/*") for t in types if t):
            raise SipParseError("no acceptable answer body type", 406)
