"""Request validation by a UAS, in the order of RFC 3261 section 8.2.

Each failed check raises ``SipParseError`` carrying the status the gateway
answers with: 400 for malformed requests, 405/501 for methods (section
8.2.1), 416 for URI schemes and 420 for Require (section 8.2.2), 415/406 for
bodies (section 8.2.3). RFC 4475 names the message that exercises each rule.
``validate_response`` checks what a UAC needs to match a response; a response
that fails is dropped, never answered (RFC 4475 section 3.1.2.5).
"""

from __future__ import annotations

from collections.abc import Collection

from gateway.sip.errors import SipParseError
from gateway.sip.headers import SINGLE_VALUED, canonical_name
from gateway.sip.message import Request, Response
from gateway.sip.uri import split_commas

# Methods of RFC 3261 and its extensions: known, so 405 (not 501) when not served.
KNOWN_METHODS = frozenset(
    {
        "INVITE",
        "ACK",
        "BYE",
        "CANCEL",
        "OPTIONS",
        "REGISTER",
        "PRACK",
        "UPDATE",
        "INFO",
        "REFER",
        "NOTIFY",
        "SUBSCRIBE",
        "MESSAGE",
        "PUBLISH",
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
    allow_header = (("Allow", ", ".join(sorted(allowed))),)
    _check_syntax(req, allow_header)
    method = req.method
    if method not in allowed:
        status = 405 if method in KNOWN_METHODS else 501
        raise SipParseError(f"method {method} not served", status, extra_headers=allow_header)
    uri = req.uri
    if uri.scheme not in URI_SCHEMES:
        raise SipParseError("unsupported URI scheme", 416)
    if uri.headers is not None:
        raise SipParseError("Request-URI carries escaped headers")  # RFC 4475 section 3.1.2.11
    if method not in ("ACK", "CANCEL"):
        # Option tags are tokens, compared case-insensitively (section 7.3.1); the
        # Unsupported header lists them as the request spelled them (section 8.2.2.3).
        required = req.get_all("require")
        if required:
            known = {t.lower() for t in supported}
            unknown = [t for t in required if t and t.lower() not in known]
            if unknown:
                raise SipParseError(
                    "unsupported extension",
                    420,
                    extra_headers=(("Unsupported", ", ".join(unknown)),),
                )
    if method == "INVITE":
        _check_invite_body(req)


def _check_syntax(req: Request, allow_header: tuple[tuple[str, str], ...]) -> None:
    for key in _MANDATORY:
        if not req.has(key):
            raise SipParseError(f"missing mandatory header {canonical_name(key)}")
    seen: set[str] = set()
    for key, _, _ in req.fields:  # RFC 4475 section 3.3.8: the first repeat is reported
        if key in SINGLE_VALUED:
            if key in seen:
                raise SipParseError(f"repeated single-valued header {canonical_name(key)}")
            seen.add(key)
    if not req.call_id.strip():
        raise SipParseError("empty Call-ID")
    vias = req.vias
    if not vias:
        raise SipParseError("missing Via")
    if vias[0].branch == "z9hG4bK":
        raise SipParseError("Via branch is only the magic cookie")  # RFC 4475 section 3.2.1
    cseq = req.cseq
    if cseq.method != req.method:
        if req.method in KNOWN_METHODS:  # RFC 4475 section 3.1.2.17
            raise SipParseError("CSeq method does not match the Request-Line")
        raise SipParseError(  # RFC 4475 section 3.1.2.18: 501 preferred, with Allow
            "CSeq method does not match the Request-Line", 501, extra_headers=allow_header
        )
    req.from_  # noqa: B018 - parse to validate
    req.to  # noqa: B018
    req.uri  # noqa: B018
    req.max_forwards  # noqa: B018
    req.contacts  # noqa: B018
    # A malformed or huge Expires / Contact expires is not an error: it reads as 3600 or
    # 2**32-1 where it is used (RFC 3261 sections 20.19, 10.2.1.1; RFC 4475 section 3.1.2.4).
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


def validate_response(resp: Response) -> None:
    """Raise SipParseError (``respond`` false: drop) if ``resp`` cannot be matched.

    A UAC matches a response by its top Via branch and CSeq (RFC 3261 section
    17.1.3); a response whose Via, From, To, Call-ID or CSeq is missing or does
    not parse (a CSeq past 2**32-1, RFC 4475 section 3.1.2.5) is silently
    discarded. Other Vias are not looked at: nothing is ever sent to them
    (RFC 4475 section 3.3.10).
    """
    try:
        for key in _MANDATORY:
            if not resp.has(key):
                raise SipParseError(f"missing mandatory header {canonical_name(key)}")
        resp.top_via  # noqa: B018 - parse to validate
        resp.cseq  # noqa: B018
        resp.from_  # noqa: B018
        resp.to  # noqa: B018
        if not resp.call_id.strip():
            raise SipParseError("empty Call-ID")
    except SipParseError as err:
        err.respond = False
        raise
