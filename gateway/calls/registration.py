"""Outbound registration to carriers (``register = true``; RFC 3261 section 10).

Invariants:
- One registration per trunk, with a stable Call-ID and a CSeq that only grows
  (section 10.2.4: refreshes reuse the Call-ID).
- A registration is refreshed before it expires: at 80% of the granted expiry.
- A failed attempt (error response, timeout, transport failure, refused
  credentials) is retried with exponential backoff from 5 s up to 300 s; a 403
  is logged as a refusal and retried the same way (an operator may fix it on
  the carrier's side).
- State changes are reported through ``on_change`` (the trunk status file).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gateway.calls.trunks import TrunkState
from gateway.sip.ids import random_hex
from gateway.sip.message import HeaderField, Request, Response
from gateway.sip.transaction import ClientTransaction, Target

if TYPE_CHECKING:
    from gateway.calls.b2bua import B2BUA

log = logging.getLogger("gateway.register")

BACKOFF_FIRST = 5.0
BACKOFF_MAX = 300.0
REFRESH_AT = 0.8


class Registration:
    __slots__ = (
        "backoff", "call_id", "cseq", "expires", "last_status", "registered_until", "state",
        "timer",
    )

    def __init__(self, domain: str) -> None:
        self.call_id = f"{random_hex(10)}@{domain}"
        self.cseq = 0
        self.state = "unregistered"  # registering | registered | failed
        self.expires: int | None = None
        self.registered_until: float | None = None
        self.last_status: int | None = None
        self.backoff = BACKOFF_FIRST
        self.timer: Any = None


class Registrations:
    """Keeps every ``register = true`` trunk registered."""

    def __init__(self, b2bua: B2BUA, on_change: Callable[[], None]) -> None:
        self.b2bua = b2bua
        self.on_change = on_change
        self.by_trunk: dict[str, Registration] = {}
        for name, state in b2bua.trunk_states.items():
            if state.trunk.register:
                reg = Registration(b2bua.config.sip.domain)
                self.by_trunk[name] = reg
                state.registration = reg

    def start(self) -> None:
        for name in self.by_trunk:
            self._send(self.b2bua.trunk_states[name])

    def stop(self) -> None:
        for reg in self.by_trunk.values():
            if reg.timer is not None and reg.timer.active():
                reg.timer.cancel()
            reg.timer = None

    def _schedule(self, state: TrunkState, delay: float) -> None:
        reg = self.by_trunk[state.name]
        if reg.timer is not None and reg.timer.active():
            reg.timer.cancel()
        reg.timer = self.b2bua.call_later(delay, self._send, state)

    def _send(self, state: TrunkState) -> None:
        from gateway.calls.b2bua import Pending

        reg = self.by_trunk[state.name]
        reg.timer = None
        b2bua = self.b2bua
        if b2bua.draining:
            return
        trunk = state.trunk
        stack = b2bua.stack
        target = Target(trunk.transport, trunk.host, trunk.port)
        local = stack.local.get(trunk.transport) or next(iter(stack.local.values()))
        host = f"[{trunk.host}]" if ":" in trunk.host else trunk.host
        param = "" if trunk.transport == "udp" else f";transport={trunk.transport}"
        aor = f"<sip:{trunk.username}@{host}>"
        reg.cseq += 1
        fields: list[HeaderField] = [
            ("via", f"SIP/2.0/{trunk.transport.upper()} {local.sent_by};branch="
                    f"{stack.new_branch()};rport", None),
            ("max-forwards", "70", None),
            ("from", f"{aor};tag={random_hex(6)}", None),
            ("to", aor, None),
            ("call-id", reg.call_id, None),
            ("cseq", f"{reg.cseq} REGISTER", None),
            ("contact", f"<sip:{trunk.username}@{local.sent_by}{param}>", None),
            ("expires", str(trunk.register_expires), None),
            ("user-agent", b2bua.user_agent, None),
        ]
        request = b2bua.auth.preauthorize(
            Request("REGISTER", f"sip:{host}:{trunk.port}{param}", fields), trunk.name
        )
        if reg.state != "registered":
            reg.state = "registering"
        try:
            txn = b2bua.layer.send_request(request, target, stack.reactor.seconds())
        except Exception:
            log.exception("trunk %s: cannot send REGISTER", trunk.name)
            self._failed(state, None)
            return
        txn.owner = Pending("register", None, None, trunk=state)
        stack.flush()

    def on_response(self, state: TrunkState, txn: ClientTransaction, resp: Response) -> None:
        """A final response to a REGISTER (challenges were answered before this)."""
        reg = self.by_trunk.get(state.name)
        if reg is None or resp.status < 200:
            return
        reg.cseq = max(reg.cseq, txn.request.cseq.seq)
        reg.last_status = resp.status
        if resp.status >= 300:
            self._failed(state, resp.status)
            return
        expires = _granted_expiry(resp, state.trunk.register_expires)
        now = self.b2bua.stack.reactor.seconds()
        was = reg.state
        reg.state = "registered"
        reg.expires = expires
        reg.registered_until = now + expires
        reg.backoff = BACKOFF_FIRST
        if was != "registered":
            log.info("trunk %s registered for %ss", state.name, expires)
        self.on_change()  # registered_until moved (refreshes are rare: cheap)
        self._schedule(state, max(1.0, expires * REFRESH_AT))

    def on_failure(self, state: TrunkState) -> None:
        """No answer (timeout) or a transport failure."""
        if state.name in self.by_trunk:
            self._failed(state, None)

    def _failed(self, state: TrunkState, status: int | None) -> None:
        reg = self.by_trunk[state.name]
        was = reg.state
        reg.state = "failed"
        reg.last_status = status
        reg.registered_until = None
        delay = reg.backoff
        reg.backoff = min(BACKOFF_MAX, reg.backoff * 2)
        if status == 403:
            log.warning("trunk %s refused the registration (403); retry in %ss",
                        state.name, delay)
        else:
            log.warning("trunk %s registration failed (%s); retry in %ss", state.name,
                        status if status is not None else "no answer", delay)
        if was != "failed":
            self.on_change()
        self._schedule(state, delay)


def _granted_expiry(resp: Response, asked: int) -> int:
    """The expiry the registrar granted: our Contact's expires, else Expires, else asked."""
    for contact in resp.contacts:
        value = contact.param("expires")
        if value is not None and value.isdigit():
            return int(value)
    value = resp.get("expires")
    if value is not None and value.strip().isdigit():
        return int(value.strip())
    return asked
