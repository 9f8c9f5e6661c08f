"""The registrar of the gateway's VoIP users (``[sip] users``, RFC 3261 section 10).

A user registers as ``sip:NAME@DOMAIN`` (digest authentication with its password, the
realm being ``[sip] domain``); each Contact becomes a binding with its own expiry. Calls to
``user:NAME`` (dial plan) or to a Request-URI whose user part is a user's name ring the
user's bindings one after another (newest first, higher ``q`` first); calls from a user
(an INVITE carrying the user's credentials) are routed by the dial plan like any other.

Each binding is reached where its REGISTER came from (the source address, port and
transport, so a user behind NAT is reached through the mapping its REGISTER opened, as
RFC 5626's flows do) with the Contact URI as the Request-URI. Toward the B2BUA a binding
looks like a trunk named ``user:NAME`` (``user:NAME~2`` for the second binding, ...):
its codecs are ``[sip] user_codecs``, its SRTP mode ``[sip] user_srtp``.

Invariants:
- A REGISTER is answered 200 with every binding of the AOR (Contact with expires=) after
  the change, 401 until it carries the user's credentials, 403 for another user's
  credentials, a wrong password or an unknown user (challenged first like a known one, so
  the answers do not tell which names exist), 423 with Min-Expires for an expiry under
  MIN_EXPIRES, 400 for ``*`` with other contacts or a non-zero expiry, 500 for a CSeq not
  above the last one of the same Call-ID (RFC 3261 10.3 step 7).
- Expired bindings are gone at the latest ``SWEEP`` seconds after their expiry, and never
  used for a call after it.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.calls.trunks import TrunkState
from gateway.config import Transport, Trunk
from gateway.sip.auth import AuthResult
from gateway.sip.errors import SipParseError
from gateway.sip.transaction import ServerTransaction, Target
from gateway.sip.uri import get_param

if TYPE_CHECKING:
    from gateway.calls.b2bua import B2BUA

log = logging.getLogger("gateway.registrar")

__all__ = [
    "DEFAULT_EXPIRES",
    "MAX_EXPIRES",
    "MIN_EXPIRES",
    "USER_PREFIX",
    "Binding",
    "Registrar",
]

USER_PREFIX = "user:"
DEFAULT_EXPIRES = 3600
MIN_EXPIRES = 60
MAX_EXPIRES = 7200
MAX_BINDINGS = 10  # per user
SWEEP = 10.0
_EXPIRES = re.compile(r"[0-9]{1,10}")  # delta-seconds (RFC 3261 25.1), ASCII digits only


@dataclass(slots=True)
class Binding:
    """One Contact of a user."""

    contact: str  # the Contact URI as registered
    source: Target  # where the REGISTER came from: where calls go
    expires: float  # absolute (reactor seconds)
    call_id: str
    cseq: int
    q: float
    registered: float


class Registrar:
    """Users' bindings, the REGISTER handler, and the user trunks the B2BUA routes to."""

    def __init__(self, b2bua: B2BUA) -> None:
        self.b2bua = b2bua
        self.bindings: dict[str, list[Binding]] = {}
        self.states: dict[str, TrunkState] = {}
        self.registers = 0
        self.refused = 0

    @property
    def users(self) -> frozenset[str]:
        return frozenset(self.b2bua.config.sip.users)

    # ------------------------------------------------------------------ REGISTER
    def on_register(self, txn: ServerTransaction) -> None:
        b2b = self.b2bua
        req = txn.request
        now = b2b.stack.reactor.seconds()
        source = txn.source
        if b2b.auth.failures.blocked(source.host, now):
            b2b.layer.discard(txn)
            return
        try:
            user = req.to.uri.user or ""
        except SipParseError:
            b2b._respond(txn, 400, "Bad To")
            return
        users = b2b.config.sip.users
        # an unknown user is challenged and refused like a wrong password (no 404: the
        # answers must not tell an attacker which names exist)
        result, username = b2b.auth.digest.verify(
            "REGISTER", req.get("authorization"), lambda name: users.get(name), now, req.body)
        if result in (AuthResult.MISSING, AuthResult.STALE):
            headers = [("WWW-Authenticate", value) for value in
                       b2b.auth.digest.challenge_headers(now, stale=result is AuthResult.STALE)]
            b2b._respond(txn, 401, headers=headers)
            return
        if result is not AuthResult.OK or username != user:
            self.refused += 1
            if b2b.auth.failures.record_failure(source.host, now):
                log.warning("%s: too many failed REGISTERs, ignored for a while", source.host)
            log.info("REGISTER for %s from %s: %s", user, source.host,
                     "another user's credentials" if result is AuthResult.OK
                     else "unknown user" if user not in users else result.name.lower())
            b2b._respond(txn, 403)
            return
        b2b.auth.failures.record_success(source.host)
        try:
            answer = self._update(user, txn, now)
        except SipParseError as exc:
            b2b._respond(txn, 400, str(exc)[:100])
            return
        if answer is not None:
            status, reason, headers = answer
            b2b._respond(txn, status, reason, headers)
            return
        self.registers += 1
        self._publish(user)
        headers = [("Contact", f"<{b.contact}>;expires={max(0, round(b.expires - now))}")
                   for b in self.bindings.get(user, ())]
        headers.append(("Date", time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime())))
        b2b._respond(txn, 200, headers=headers)

    def _update(self, user: str, txn: ServerTransaction, now: float
                ) -> tuple[int, str | None, list[tuple[str, str]]] | None:
        """Apply the REGISTER to ``user``'s bindings; an error answer, or None for 200."""
        req = txn.request
        default = DEFAULT_EXPIRES
        header = req.get("expires")
        if header is not None:
            if not _EXPIRES.fullmatch(header.strip()):
                return 400, "Bad Expires", []
            default = int(header.strip())
        call_id, cseq = req.call_id, req.cseq.seq
        current = self.bindings.get(user, [])
        raw = [value.strip() for value in req.get_all("contact")]
        if "*" in raw:
            if len(raw) != 1 or default != 0:
                return 400, "Wildcard Contact needs Expires: 0 and no other Contact", []
            if any(b.call_id == call_id and cseq <= b.cseq for b in current):
                return 500, "CSeq not above the last REGISTER's", []
            self.bindings.pop(user, None)
            log.info("user %s: every binding removed", user)
            return None
        # every change is checked before any is made (RFC 3261 10.3: all or nothing)
        changes: list[tuple[str, int, float]] = []
        for contact in req.contacts:
            text = get_param(contact.params, "expires")
            if text is not None and not _EXPIRES.fullmatch(text):
                return 400, "Bad expires parameter", []
            expires = int(text) if text is not None else default
            if 0 < expires < MIN_EXPIRES:
                self.refused += 1
                return 423, "Interval Too Brief", [("Min-Expires", str(MIN_EXPIRES))]
            q_text = get_param(contact.params, "q")
            try:
                q = float(q_text) if q_text is not None else 1.0
            except ValueError:
                q = 1.0
            uri = str(contact.uri)
            old = next((b for b in current if b.contact == uri), None)
            if old is not None and old.call_id == call_id and cseq <= old.cseq:
                return 500, "CSeq not above the last REGISTER's", []
            changes.append((uri, min(expires, MAX_EXPIRES), q))
        current = list(current)
        for uri, expires, q in changes:
            current = [b for b in current if b.contact != uri]
            if expires == 0:
                log.info("user %s: %s removed", user, uri)
                continue
            if len(current) >= MAX_BINDINGS:
                current.sort(key=lambda b: b.registered)
                current.pop(0)  # the oldest binding makes room
            current.append(Binding(uri, txn.source, now + expires, call_id, cseq, q, now))
            log.info("user %s: %s via %s:%s:%d for %ds", user, uri, txn.source.transport,
                     txn.source.host, txn.source.port, expires)
        if current:
            self.bindings[user] = current
        else:
            self.bindings.pop(user, None)
        return None

    # ------------------------------------------------------------------ routing
    def route(self, user: str) -> tuple[str, ...]:
        """The user trunks of ``user``'s live bindings, in the order they are tried."""
        self.sweep(self.b2bua.stack.reactor.seconds())
        self._publish(user)
        count = len(self.bindings.get(user, ()))
        return tuple(_trunk_name(user, i) for i in range(count))

    def current(self, name: str, contact: str) -> str | None:
        """The user trunk that reaches ``contact`` now, for a call routed when it was trunk
        ``name``: the binding may have moved in the order (a REGISTER in between), or be gone
        (removed or expired: None)."""
        user = user_of(name)
        if user is None:
            return None
        for candidate in self.route(user):  # (expired bindings swept first)
            trunk = self.b2bua.user_trunks.get(candidate)
            if trunk is not None and trunk.contact == contact:
                return candidate
        return None

    def _publish(self, user: str) -> None:
        """Keep the user's trunks (B2BUA.trunks) in step with its bindings."""
        b2b = self.b2bua
        sip = b2b.config.sip
        ordered = sorted(self.bindings.get(user, ()), key=lambda b: (-b.q, -b.registered))
        for i in range(MAX_BINDINGS):
            name = _trunk_name(user, i)
            if i >= len(ordered):
                b2b.user_trunks.pop(name, None)
                continue
            binding = ordered[i]
            source = binding.source
            trunk = Trunk(name=name, uri=binding.contact, host=source.host, port=source.port,
                          transport=_transport(source), codecs=sip.user_codecs,
                          srtp=sip.user_srtp, options_interval=0.0, contact=binding.contact)
            b2b.user_trunks[name] = trunk
            state = self.states.get(name)
            if state is None:
                state = self.states[name] = TrunkState(trunk, b2b.stack.reactor.seconds())
            state.trunk = trunk

    def caller_trunk(self, user: str, source: Target) -> Trunk:
        """The trunk a call from ``user`` (authenticated) at ``source`` comes from."""
        b2b = self.b2bua
        sip = b2b.config.sip
        name = USER_PREFIX + user
        trunk = Trunk(name=name, uri=f"sip:{user}@{source.host}", host=source.host,
                      port=source.port, transport=_transport(source), codecs=sip.user_codecs,
                      srtp=sip.user_srtp, options_interval=0.0)
        if name not in self.states:
            self.states[name] = TrunkState(trunk, b2b.stack.reactor.seconds())
        return trunk

    def state(self, name: str) -> TrunkState | None:
        return self.states.get(name)

    def sweep(self, now: float) -> None:
        """Forget expired bindings."""
        for user in list(self.bindings):
            live = [b for b in self.bindings[user] if b.expires > now]
            if len(live) != len(self.bindings[user]):
                log.info("user %s: %d binding(s) expired", user,
                         len(self.bindings[user]) - len(live))
                if live:
                    self.bindings[user] = live
                else:
                    del self.bindings[user]
                self._publish(user)

    def status(self, now: float) -> dict[str, object]:
        """Figures for the status file: each user's live contacts (a binding past its expiry
        that the next sweep will drop is left out; nothing is changed here)."""
        live = {user: [b for b in bindings if b.expires > now]
                for user, bindings in self.bindings.items()}
        live = {user: bindings for user, bindings in live.items() if bindings}
        return {
            "registered_users": len(live),
            "contacts": sum(len(bindings) for bindings in live.values()),
            "bindings": {user: [{"contact": b.contact, "via": f"{b.source.transport}:"
                                 f"{b.source.host}:{b.source.port}",
                                 "expires_in": max(0, round(b.expires - now))}
                                for b in bindings]
                         for user, bindings in live.items()},
            "registers": self.registers,
            "register_refused": self.refused,
        }


def _transport(source: Target) -> Transport:
    return "tcp" if source.transport == "tcp" else "tls" if source.transport == "tls" else "udp"


def _trunk_name(user: str, index: int) -> str:
    return f"{USER_PREFIX}{user}" if index == 0 else f"{USER_PREFIX}{user}~{index + 1}"


def user_of(trunk_name: str | None) -> str | None:
    """The user a user trunk's name belongs to (None for a carrier trunk)."""
    if trunk_name is None or not trunk_name.startswith(USER_PREFIX):
        return None
    return trunk_name[len(USER_PREFIX):].split("~", 1)[0]

