"""The SIP error hierarchy: every error knows the answer the gateway gives.

Adapters catch exactly these. ``status`` is the SIP response code the element
answers with (RFC 3261 section 21); ``respond`` is false when the RFC says to
drop silently (a malformed response, or a request whose mandatory headers are
too broken to build a response from).
"""

from __future__ import annotations

from collections.abc import Sequence


class SipError(Exception):
    """Base of every SIP protocol error raised by the cores."""


class SipParseError(SipError):
    """A message that cannot be accepted as it is.

    ``status``/``reason`` are what a UAS answers with; ``extra_headers`` are
    header lines the answer must carry (``Unsupported`` for 420, ``Accept`` for
    415, ``Allow`` for 405/501). ``raw_headers`` are the header lines that could
    be recovered, used to build the response when the message itself could not
    be parsed (RFC 3261 section 8.2.6.2 copies Via, From, To, Call-ID, CSeq).
    """

    def __init__(
        self,
        message: str,
        status: int = 400,
        *,
        reason: str | None = None,
        respond: bool = True,
        extra_headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.reason = reason or message
        self.respond = respond
        self.extra_headers = tuple(extra_headers)
        self.start_line: str | None = None
        self.raw_headers: list[tuple[str, str]] = []


class TransportError(SipError):
    """A message could not be sent (connection refused, unreachable, closed)."""
