"""Media anchoring for the B2BUA: every SDP a leg receives is the gateway's own.

The B2BUA calls these hooks where an SDP body crosses from one leg to the other; each hook
returns the body to send instead (the gateway's address, ports, keys and codecs, from
``gateway.media.session``). With ``[media] anchor = false`` (or a call without a session)
every hook returns the body it was given, and SDP passes through as before.

Which leg is which side: the caller's leg is "a", the callee's "b"; a transfer target takes
the side of the leg it replaces.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from gateway.calls.registrar import user_of
from gateway.calls.sessiontimer import continue_origin
from gateway.media.ports import PortsExhausted
from gateway.media.sdp import SdpError

if TYPE_CHECKING:
    from gateway.calls.b2bua import B2BUA, Call, Leg
    from gateway.config import Trunk
    from gateway.media.manager import MediaManager

log = logging.getLogger("gateway.calls")

__all__ = ["CallMedia", "MediaRefused", "PortsExhausted", "SdpError"]


class MediaRefused(Exception):
    """An SDP the gateway cannot take: ``status`` (488 or 503) and a Warning text."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


def side_of(call: Call, leg: Leg) -> str:
    return "a" if leg is call.a else "b"


def _refused(exc: Exception) -> MediaRefused:
    if isinstance(exc, PortsExhausted):
        return MediaRefused(503, str(exc))
    return MediaRefused(488, str(exc))


class CallMedia:
    """The B2BUA's media hooks (one per gateway)."""

    def __init__(self, b2bua: B2BUA, manager: MediaManager | None) -> None:
        self.b2bua = b2bua
        self.manager = manager

    def warning(self, text: str) -> tuple[str, str]:
        """A Warning header (RFC 3261 20.43, code 399) carrying ``text``."""
        clean = text.replace("\\", "/").replace('"', "'")[:200]
        return ("Warning", f'399 {self.b2bua.config.sip.domain} "{clean}"')

    # ------------------------------------------------------------------ call lifetime
    def start(self, call: Call, body: bytes, trunk: Trunk) -> None:
        """A new call: its session, with the caller's offer checked (MediaRefused if bad)."""
        if self.manager is None:
            return
        session = self.manager.new_session(
            call.id,
            on_timeout=lambda why: self.b2bua.media_timeout(call, why),
            on_dtmf=lambda side, digit, ms: self.b2bua.send_dtmf_info(call, side, digit, ms),
        )
        session.set_policy("a", trunk.codecs, trunk.srtp, trunk.dtmf_inband)
        call.media = session
        if body:
            try:
                session.check_offer("a", body)
            except (SdpError, PortsExhausted) as exc:
                raise _refused(exc) from None

    def end(self, call: Call) -> None:
        session = call.media
        if session is not None:
            call.media = None
            session.close()

    def quality(self, call: Call, side: str) -> dict[str, object]:
        session = call.media
        return session.quality(side) if session is not None else {}

    # ------------------------------------------------------------------ SDP crossings
    def offer(self, call: Call, side: str, body: bytes, *, to_leg: Leg | None = None,
              toward: Trunk | None = None) -> bytes:
        """``side``'s peer offers ``body``: what to send the other side (MediaRefused)."""
        self.b2bua.sdp_seen(call.id, body)
        session = call.media
        if session is None or not body:
            return self._passthrough(body, to_leg)
        if toward is not None:  # a new leg on that trunk (an attempt of the route)
            session.set_policy("b" if side == "a" else "a", toward.codecs, toward.srtp,
                               toward.dtmf_inband, ice=user_of(toward.name) is not None)
        try:
            return session.offer(side, body)
        except (SdpError, PortsExhausted) as exc:
            raise _refused(exc) from None

    def answer(self, call: Call, side: str, body: bytes, *, to_leg: Leg | None = None) -> bytes:
        """``side``'s peer answers ``body``: what to send the offerer (MediaRefused)."""
        self.b2bua.sdp_seen(call.id, body)
        session = call.media
        if session is None or not body:
            return self._passthrough(body, to_leg)
        try:
            return session.answer(side, body)
        except (SdpError, PortsExhausted) as exc:
            raise _refused(exc) from None

    def local_offer(self, call: Call, side: str, fallback: bytes, toward: Trunk) -> bytes:
        session = call.media
        if session is None:
            return fallback
        session.set_policy(side, toward.codecs, toward.srtp, toward.dtmf_inband,
                           ice=user_of(toward.name) is not None)
        try:
            return session.local_offer(side)
        except (SdpError, PortsExhausted) as exc:
            raise _refused(exc) from None

    def local_answer(self, call: Call, side: str, body: bytes) -> None:
        session = call.media
        if session is None or not body:
            return
        try:
            session.local_answer(side, body)
        except (SdpError, PortsExhausted) as exc:
            log.warning("call %s: transfer target's answer refused: %s", call.id, exc)

    def current(self, call: Call, side: str, fallback: bytes) -> bytes:
        session = call.media
        if session is None:
            return fallback
        return session.current(side) or fallback

    @staticmethod
    def _passthrough(body: bytes, to_leg: Leg | None) -> bytes:
        if body and to_leg is not None and to_leg.local_sdp:
            return continue_origin(to_leg.local_sdp, body)
        return body
