"""Session timers (RFC 4028): header parsing and the per-leg timer state.

Each leg of a call negotiates its own session interval and refresher; the
B2BUA keeps one ``SessionTimer`` per leg. The side that refreshes does so at
half the interval (section 10); the other side ends the session when no
refresh arrives by ``interval - min(32, interval / 3)`` (section 10).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.sip.errors import SipParseError
from gateway.sip.ids import random_hex
from gateway.sip.message import HeaderField, Response, make_resend, make_response
from gateway.sip.transaction import ClientTransaction, ServerTransaction
from gateway.sip.uri import split_commas

if TYPE_CHECKING:
    from gateway.calls.b2bua import B2BUA, Call, Leg, Pending

log = logging.getLogger("gateway.calls")


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


def cancel_timer(timer: Any) -> None:
    if timer is not None and timer.active():
        timer.cancel()


class SessionTimers:
    """The B2BUA's session-timer work (RFC 4028), one ``SessionTimer`` per leg."""

    def __init__(self, b2bua: B2BUA) -> None:
        self.b2bua = b2bua

    def a_session(self, call: Call) -> SessionTimer | None:
        """The caller's leg timer, from its INVITE's Session-Expires (section 9)."""
        value = call.invite.get("session-expires")
        if value is None:
            return None
        interval, refresher = parse_session_expires(value)  # validated at INVITE
        if refresher is None:
            supported = has_option(call.invite.values("supported"), "timer")
            refresher = "uac" if supported else "uas"
        return SessionTimer(interval, refresher == "uas", refresher)

    def start_b(self, b: Leg, resp: Response) -> None:
        """The callee's leg timer, from its 2xx's Session-Expires (section 7.2)."""
        gw = self.b2bua
        value = resp.get("session-expires")
        if value is None or not gw.config.sip.session_expires:
            return
        try:
            interval, refresher = parse_session_expires(value)
        except SipParseError:
            return
        refresher = refresher or "uac"
        b.session = SessionTimer(interval, refresher == "uac", refresher)
        self.arm(b)

    def retry_interval(
        self, owner: Pending, txn: ClientTransaction, resp: Response
    ) -> bool:
        """422 Session Interval Too Small: ask again with the callee's Min-SE (section 7.3)."""
        gw = self.b2bua
        try:
            floor = parse_min_se(resp.get("min-se"))
        except SipParseError:
            return False
        if floor is None or owner.leg is None:
            return False
        req = txn.request
        leg = owner.leg
        leg.local_cseq = max(leg.local_cseq, req.cseq.seq) + 1
        interval = str(max(floor, gw.config.sip.session_expires))
        retry = make_resend(req, leg.local_cseq, gw.stack.new_branch(),
                            (("session-expires", interval), ("min-se", str(floor))))
        gw.resend(txn, owner, retry)
        return True

    def arm(self, leg: Leg) -> None:
        gw = self.b2bua
        session = leg.session
        if session is None:
            return
        cancel_timer(session.timer)
        if session.we_refresh:
            session.timer = gw.call_later(session.refresh_after, self.refresh, leg)
        else:
            session.timer = gw.call_later(session.expire_after, self.expired, leg)

    def refresh(self, leg: Leg) -> None:
        """Refresh the session on ``leg``: UPDATE if the peer allows it, else re-INVITE."""
        gw = self.b2bua
        from gateway.calls.b2bua import Pending

        session = leg.session
        call = leg.call
        if session is None or call.ended:
            return
        session.timer = None
        if leg.invite_out is not None or leg.invite_in is not None:
            session.timer = gw.call_later(2.0, self.refresh, leg)  # a re-INVITE is pending
            return
        we_are_uac = leg is call.b
        refresher = "uac" if we_are_uac else "uas"
        extra: list[HeaderField] = [
            ("session-expires", f"{session.interval};refresher={refresher}", None),
            ("supported", "timer", None),
        ]
        if leg.peer_update:
            req = gw._in_dialog_request(leg, "UPDATE", extra=extra)
        else:
            extra.append(("content-type", "application/sdp", None))
            req = gw._in_dialog_request(leg, "INVITE", extra=extra, body=leg.local_sdp)
        txn = gw.layer.send_request(req, leg.target, gw.stack.reactor.seconds())

        txn.owner = Pending("refresh", call, leg)
        if req.method == "INVITE":
            leg.invite_out = txn
        gw.stack.flush()

    def refresh_answered(self, leg: Leg, txn: ClientTransaction, resp: Response) -> None:
        gw = self.b2bua
        if resp.status < 200:
            return
        if txn.is_invite:
            leg.invite_out = None
            if resp.status < 300:
                ack = gw._in_dialog_request(leg, "ACK", cseq=txn.request.cseq.seq)
                gw.layer.send_ack_2xx(txn, ack)
        session = leg.session
        if session is None or leg.call.ended:
            return
        if resp.status < 300:
            value = resp.get("session-expires")
            if value is not None:
                try:
                    session.interval, _ = parse_session_expires(value)
                except SipParseError:
                    pass
            self.arm(leg)
        elif resp.status in (491, 500, 503):
            session.timer = gw.call_later(2.0 + int(random_hex(1), 16) / 128, self.refresh,
                                            leg)
        else:
            self.failed(leg, f"refresh {resp.status}")

    def answer_refresh(self, txn: ServerTransaction, leg: Leg) -> bool:
        """Answer a peer's session refresh here, without bothering the other leg.

        A refresh is an UPDATE without SDP, or a re-INVITE whose SDP is unchanged (same
        o= line, RFC 3264 section 8); anything else is a real change and is relayed.
        """
        gw = self.b2bua
        req = txn.request
        session = leg.session
        if session is None:
            return False
        if req.method == "UPDATE" and req.body:
            return False
        if req.method == "INVITE":
            if req.body and origin_line(req.body) != origin_line(leg.remote_sdp):
                return False
            if leg.invite_out is not None or leg.invite_in is not None:
                return False  # let the glare rules answer
        value = req.get("session-expires")
        if value is not None:
            try:
                interval, _ = parse_session_expires(value)
            except SipParseError:
                interval = session.interval
            if interval < gw.config.sip.min_se:
                gw._respond(txn, 422, headers=(("Min-SE", str(gw.config.sip.min_se)),),
                              to_tag=req.to_tag)
                return True
            session.interval = interval
        _, contact = gw._local(leg.target.transport)
        headers = [("Session-Expires", session.header()), ("Contact", contact)]
        if session.refresher == ("uac" if leg is leg.call.a else "uas"):
            headers.append(("Require", "timer"))
        body = b""
        if req.method == "INVITE":
            body = leg.local_sdp
            headers.append(("Content-Type", "application/sdp"))
        resp = make_response(req, 200, to_tag=req.to_tag, headers=headers, body=body)
        gw.layer.send_response(txn, resp, gw.stack.reactor.seconds())
        self.arm(leg)
        return True

    def expired(self, leg: Leg) -> None:
        if leg.session is not None:
            leg.session.timer = None
        self.failed(leg, "session timer expired")

    def failed(self, leg: Leg, why: str) -> None:
        """The session on ``leg`` is over: BYE both legs (RFC 4028 section 10)."""
        gw = self.b2bua
        call = leg.call
        if call.ended:
            return
        log.info("call %s: %s on leg %s, ending the call", call.id, why, leg.name)
        gw._released(call, 200, "gateway", why)
        for each in (call.a, call.b):
            if each is not None and each.confirmed:
                gw._bye(each)
        gw._detach(call)
        gw.stack.flush()
