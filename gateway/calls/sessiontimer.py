"""Session timers (RFC 4028): header parsing and the per-leg timer state.

Each leg of a call negotiates its own session interval and refresher; the
B2BUA keeps one ``SessionTimer`` per leg. The side that refreshes does so at
half the interval (section 10); the other side ends the session when no
refresh arrives by ``interval - min(32, interval / 3)`` (section 10).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.sip.errors import SipParseError
from gateway.sip.uri import split_commas


@dataclass(slots=True)
class SessionTimer:
    interval: int
    we_refresh: bool  # the gateway is this leg's refresher
    refresher: str  # "uac" or "uas", as written in Session-Expires on this leg
    timer: Any = None  # the refresh (we_refresh) or expiry deadline (IDelayedCall)

    @property
    def refresh_after(self) -> float:
        return self.interval / 2

    @property
    def expire_after(self) -> float:
        return self.interval - min(32.0, self.interval / 3)

    def header(self) -> str:
        return f"{self.interval};refresher={self.refresher}"


def parse_session_expires(value: str) -> tuple[int, str | None]:
    """``Session-Expires: 1800;refresher=uac`` -> (1800, "uac"); section 4."""
    delta, _, params = value.partition(";")
    delta = delta.strip()
    if not delta.isascii() or not delta.isdigit() or len(delta) > 10:
        raise SipParseError("bad Session-Expires")
    refresher: str | None = None
    for param in params.split(";") if params else ():
        name, _, val = param.partition("=")
        if name.strip().lower() == "refresher":
            refresher = val.strip().lower()
            if refresher not in ("uac", "uas"):
                raise SipParseError("bad Session-Expires refresher")
    return int(delta), refresher


def parse_min_se(value: str | None) -> int | None:
    if value is None:
        return None
    text = value.partition(";")[0].strip()
    if not text.isascii() or not text.isdigit() or len(text) > 10:
        raise SipParseError("bad Min-SE")
    return int(text)


def has_option(values: list[str], tag: str) -> bool:
    """Whether a Supported/Require header list names ``tag``."""
    return any(t.strip().lower() == tag for v in values for t in split_commas(v))


def origin_line(sdp: bytes) -> bytes | None:
    """The SDP o= line: unchanged when the session is unchanged (RFC 3264 section 8)."""
    for line in sdp.splitlines():
        if line.startswith(b"o="):
            return line.strip()
    return None


def continue_origin(previous: bytes, body: bytes) -> bytes:
    """``body`` for a leg that last received ``previous``: same origin, next version.

    RFC 3264 section 8: within a session the o= line keeps its username, session id and
    address, and the version grows when the description changes. SDP relayed from
    another party (after a transfer) carries that party's origin: it is rewritten.
    """
    old = origin_line(previous)
    new = origin_line(body)
    if old is None or new is None or old == new:
        return body
    old_fields = old[2:].split()
    new_fields = new[2:].split()
    if len(old_fields) != 6 or len(new_fields) != 6:
        return body
    if old_fields[:2] == new_fields[:2] and old_fields[3:] == new_fields[3:]:
        return body  # the same session, a new version: as it should be
    try:
        version = int(old_fields[2]) + 1
    except ValueError:
        return body
    line = b"o=" + b" ".join([*old_fields[:2], str(version).encode(), *old_fields[3:]])
    return body.replace(new, line, 1)
