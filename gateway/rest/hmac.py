"""ACS access-key HMAC-SHA256 request authentication, sans I/O (ACS_REST.md section 2).

The client (the SDK's ``HMACCredentialsPolicy``) signs

    VERB "\\n" path_and_query "\\n" x-ms-date ";" host ";" x-ms-content-sha256

with HMAC-SHA256 under the base64-decoded access key, and sends
``Authorization: HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256&Signature=<b64>``.

Invariants of :func:`verify`:
- the content hash is recomputed from the raw received body bytes, never from re-serialised JSON;
- the path and query are the raw request-target, percent-encoding intact (pitfall 2);
- ``x-ms-date`` must be within ``skew`` seconds of ``now`` (±15 min, as Azure App Configuration);
- the signature is compared in constant time; every refusal is RestError(401, "Denied", reason);
- the signed host may carry an explicit ``:443`` that the Host header lacks, or the reverse
  (urllib3 drops the default port from Host; section 2 step 4): both forms are accepted.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import email.utils
import hashlib
import hmac
from collections.abc import Mapping
from typing import Final

from gateway.rest.errors import RestError

__all__ = [
    "SIGNED_HEADERS",
    "content_hash",
    "origin_form",
    "parse_http_date",
    "sign",
    "string_to_sign",
    "verify",
]

#: The only SignedHeaders list the SDK sends, in its order.
SIGNED_HEADERS: Final = "x-ms-date;host;x-ms-content-sha256"
#: Default allowed clock difference between x-ms-date and the server clock, in seconds.
DEFAULT_SKEW: Final = 900.0
_SCHEME: Final = "HMAC-SHA256"
_MAX_AUTHORIZATION: Final = 512  # the SDK's header is about 120 characters


def content_hash(body: bytes) -> str:
    """base64(SHA-256(body)), the ``x-ms-content-sha256`` value (section 2 step 5)."""
    return base64.b64encode(hashlib.sha256(body).digest()).decode("ascii")


def string_to_sign(method: str, path_and_query: str, date: str, host: str, hash_: str) -> str:
    """The signed string (section 2 step 6): the last line is joined with ';', not newlines."""
    return f"{method.upper()}\n{path_and_query}\n{date};{host};{hash_}"


def _signature(key: bytes, text: str) -> str:
    digest = hmac.new(key, text.encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def sign(
    method: str, target: str, host: str, body: bytes, key: bytes, now: float
) -> dict[str, str]:
    """The headers a client adds to sign a request, as the SDK policy does.

    `target` is the raw path and query as sent; `host` is "host[:port]" of the endpoint; `key`
    is the decoded access key. Returns ``x-ms-date``, ``x-ms-content-sha256`` and
    ``Authorization`` (the caller sends ``Host`` itself).
    """
    date = email.utils.formatdate(now, usegmt=True)
    hash_ = content_hash(body)
    signature = _signature(key, string_to_sign(method, target, date, host, hash_))
    return {
        "x-ms-date": date,
        "x-ms-content-sha256": hash_,
        "Authorization": f"{_SCHEME} SignedHeaders={SIGNED_HEADERS}&Signature={signature}",
    }


def verify(
    method: str,
    raw_target: str,
    headers: Mapping[str, str],
    body: bytes,
    key: bytes,
    now: float,
    skew: float = DEFAULT_SKEW,
) -> None:
    """Check a request's HMAC signature; raise RestError(401, "Denied", reason) if it fails.

    `raw_target` is the request-target exactly as received (``request.uri``); `headers` maps
    lower-case header names to values; `body` is the raw received body; `key` the decoded
    access key; `now` the server clock in seconds since the epoch.
    """
    signature = _parse_authorization(headers.get("authorization"))
    date = headers.get("x-ms-date")
    if date is None:
        raise _denied("Missing 'x-ms-date' header.")
    signed_at = parse_http_date(date)
    if signed_at is None:
        raise _denied(f"Unparsable 'x-ms-date' header {date[:64]!r}.")
    if abs(now - signed_at) > skew:
        raise _denied(
            f"Request 'x-ms-date' {date!r} is {now - signed_at:+.0f} s away from the server "
            f"clock (allowed ±{skew:.0f} s)."
        )
    claimed_hash = headers.get("x-ms-content-sha256")
    if claimed_hash is None:
        raise _denied("Missing 'x-ms-content-sha256' header.")
    actual_hash = content_hash(body)
    if not hmac.compare_digest(claimed_hash.encode("utf-8"), actual_hash.encode("ascii")):
        raise _denied("Request 'x-ms-content-sha256' differs from generated content hash.")
    host = headers.get("host")
    if not host:
        raise _denied("Missing 'Host' header.")
    path_and_query = origin_form(raw_target)
    given = signature.encode("utf-8")
    matched = False
    for form in _host_forms(host):
        expected = _signature(key, string_to_sign(method, path_and_query, date, form, claimed_hash))
        # every form is computed and compared, so the time taken does not depend on which matched
        matched |= hmac.compare_digest(given, expected.encode("ascii"))
    if not matched:
        raise _denied("Request signature does not match (wrong access key, host or path?).")


def parse_http_date(value: str) -> float | None:
    """Seconds since the epoch of an IMF-fixdate / RFC 1123 date, or None if unparsable.

    A date without a zone (``-0000``) is taken as UTC.
    """
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    try:
        return when.timestamp()
    except (OverflowError, OSError, ValueError):
        return None


def _denied(reason: str) -> RestError:
    return RestError(401, "Denied", reason)


def _parse_authorization(value: str | None) -> str:
    """The Signature of ``HMAC-SHA256 SignedHeaders=...&Signature=...``; RestError if garbled."""
    if value is None:
        raise _denied("Missing 'Authorization' header.")
    if len(value) > _MAX_AUTHORIZATION:
        raise _denied("Garbled 'Authorization' header (too long).")
    scheme, _, params = value.strip().partition(" ")
    if scheme.upper() != _SCHEME:
        raise _denied(f"Unsupported authorization scheme {scheme[:32]!r}; expected {_SCHEME}.")
    fields: dict[str, str] = {}
    for part in params.strip().split("&"):
        name, eq, field_value = part.partition("=")
        if not eq or name.strip().lower() in fields:
            raise _denied(
                "Garbled 'Authorization' header (expected SignedHeaders=...&Signature=...)."
            )
        fields[name.strip().lower()] = field_value.strip()
    signed_headers = fields.get("signedheaders")
    signature = fields.get("signature")
    if signed_headers is None or not signature:
        raise _denied("Garbled 'Authorization' header (SignedHeaders and Signature are required).")
    if signed_headers.lower() != SIGNED_HEADERS:
        raise _denied(f"SignedHeaders must be {SIGNED_HEADERS!r}, not {signed_headers[:80]!r}.")
    try:
        if len(base64.b64decode(signature, validate=True)) != hashlib.sha256().digest_size:
            raise ValueError("length")
    except (binascii.Error, ValueError):
        raise _denied(
            "Garbled 'Authorization' header (Signature is not a base64 SHA-256 MAC)."
        ) from None
    return signature


def origin_form(target: str) -> str:
    """Path and query of a request-target; an absolute-form target loses scheme and authority."""
    if target.startswith(("http://", "https://")):
        slash = target.find("/", target.index("//") + 2)
        return target[slash:] if slash >= 0 else "/"
    return target


def _host_forms(host: str) -> tuple[str, ...]:
    """The Host header as sent and with the default HTTPS port added or removed."""
    host = host.strip()
    bracket = host.rfind("]")
    if ":" not in host[bracket + 1 :]:
        return (host, host + ":443")
    if host.endswith(":443"):
        return (host, host[: -len(":443")])
    return (host,)
