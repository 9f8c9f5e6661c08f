"""The B2BUA core: a call is two SIP dialogs joined by the gateway.

An INVITE from a trunk becomes a Call with an inbound leg (``a``, the gateway is
its UAS) and, after the dial plan decides, an outbound leg (``b``, the gateway
is its UAC) with its own Call-ID, tags, CSeq and Via. Each SIP event from the
transaction layer is dispatched here (``handle_event``).

Invariants:
- Every request the gateway receives gets exactly one final answer.
- A call is removed from every table on every end path (BYE either side,
  CANCEL, error, timeout, transport failure); ``len(calls)`` returns to 0.
- Failover along the route's trunks happens on 408, 5xx, 6xx other than 603,
  a transaction timeout or a transport failure; never on 486 or 603 (or any
  other 4xx), never after the caller cancelled.
- Headers the gateway does not own are copied byte-exact to the other leg.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from gateway.calls.auth import TrunkAuth
from gateway.calls.media import CallMedia, MediaRefused
from gateway.calls.registrar import Registrar, user_of
from gateway.calls.registration import Registrations
from gateway.calls.relay import DialogRelay
from gateway.calls.reliable import Reliable, ReliableProvisionals
from gateway.calls.sessiontimer import (
    SessionTimer,
    SessionTimers,
    cancel_timer,
    has_option,
    parse_session_expires,
)
from gateway.calls.transfer import Transfer, Transfers
from gateway.calls.trunks import TrunkProbes, TrunkState, status_doc, write_json
from gateway.config import Config, Trunk, trunk_for_source
from gateway.dialplan.plan import DialPlan
from gateway.media.dtmf import info_body
from gateway.sip.errors import SipParseError
from gateway.sip.ids import random_hex
from gateway.sip.message import (
    HeaderField,
    Request,
    Response,
    error_response,
    make_response,
    reason_phrase,
)
from gateway.sip.transaction import (
    AckReceived,
    AckTimeout,
    BadRequest,
    ClientTransaction,
    Event,
    RequestReceived,
    ResponseReceived,
    ServerTransaction,
    StrayResponse,
    Target,
    TransactionTimeout,
    TransportFailed,
)
from gateway.sip.transport import SipStack
from gateway.sip.uri import NameAddr, unescape
from gateway.sip.validate import validate_request
from gateway.store.cdr import CdrStore

if TYPE_CHECKING:
    from gateway.calls.appcall import AppCalls
    from gateway.calls.appmodel import Party
    from gateway.media.manager import MediaManager
    from gateway.media.session import MediaSession

log = logging.getLogger("gateway.calls")

ALLOWED = frozenset(
    {"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "INFO", "UPDATE", "MESSAGE", "NOTIFY", "REFER",
     "PRACK", "REGISTER"}
)
ALLOW_HEADER = "INVITE, ACK, BYE, CANCEL, OPTIONS, PRACK, INFO, UPDATE, MESSAGE, NOTIFY, REFER"
SUPPORTED: frozenset[str] = frozenset({"100rel", "timer"})
# Identity headers a registered user may not set on its own calls (it calls as itself)
_ASSERTED_IDENTITY = frozenset(
    {"p-asserted-identity", "p-preferred-identity", "remote-party-id", "privacy"})

# Headers the B2BUA writes itself on each leg; every other header is copied.
OWNED = frozenset(
    {
        "via", "from", "to", "call-id", "cseq", "contact", "max-forwards", "content-length",
        "route", "record-route", "authorization", "proxy-authorization", "www-authenticate",
        "proxy-authenticate", "require", "supported", "allow", "rseq", "rack", "user-agent",
        "server", "session-expires", "min-se", "proxy-require", "expires",
    }
)
# Headers carried back with an error response mapped across.
ERROR_COPY = frozenset({"reason", "warning", "retry-after"})
DEFAULT_MAX_FORWARDS = 70


def _failover_status(status: int) -> bool:
    return status == 408 or 500 <= status <= 599 or (600 <= status <= 699 and status != 603)


def _map_error(status: int) -> int:
    """The status the caller sees for a final error from the callee side."""
    if status in (401, 407):
        return 403  # the trunk's credentials are not the caller's business
    if 300 <= status <= 399:
        return 480  # a B2BUA does not hand the trunk's redirect targets to the caller
    return status


def _token() -> str:
    return random_hex(6)


class Dialog:
    """One SIP dialog the gateway is a party to: what in-dialog requests are built from."""

    __slots__ = (
        "call_id",
        "cdr_id",
        "confirmed",
        "local_cseq",
        "local_sdp",
        "local_tag",
        "local_uri",
        "name",
        "remote_cseq",
        "remote_sdp",
        "remote_tag",
        "remote_target",
        "remote_uri",
        "route_set",
        "target",
        "trunk",
    )

    def __init__(
        self,
        name: str,
        call_id: str,
        local_uri: str,
        remote_uri: str,
        target: Target,
        trunk: str | None,
    ) -> None:
        self.name = name
        self.call_id = call_id
        self.local_tag = _token()
        self.remote_tag: str | None = None
        self.local_uri = local_uri  # From/To value naming the gateway's side, without tag
        self.remote_uri = remote_uri  # From/To value naming the peer, without tag
        self.local_cseq = 0
        self.remote_cseq = -1
        self.remote_target = ""  # the peer's Contact URI
        self.route_set: list[str] = []
        self.target = target
        self.trunk = trunk
        self.confirmed = False
        self.cdr_id = name  # the leg's id in cdr_legs ("a", then "b1", "b2"... per attempt)
        self.local_sdp = b""  # the last SDP the gateway sent on this leg
        self.remote_sdp = b""  # the last SDP the peer sent

    @property
    def key(self) -> tuple[str, str]:
        return (self.call_id, self.local_tag)

    def take_invite(self, req: Request) -> None:
        """The UAS side of a dialog an INVITE creates: the peer's tag, CSeq, target, route
        set and offer (RFC 3261 section 12.1.1)."""
        self.remote_tag = req.from_.tag
        self.remote_cseq = req.cseq.seq
        contacts = req.contacts
        self.remote_target = str(contacts[0].uri) if contacts else req.uri_text
        self.route_set = req.get_all("record-route")
        self.remote_sdp = req.body


def uas_names(req: Request) -> tuple[str, str]:
    """(local, remote) From/To values of the dialog an INVITE creates, as the gateway's UAS
    side sees them: each party without its tag (tags are kept apart, per dialog)."""
    caller = req.from_
    remote = NameAddr.build(caller.uri, display=caller.display,
                            params=tuple(p for p in caller.params if p[0].lower() != "tag"))
    return str(NameAddr.build(req.to.uri, display=req.to.display)), str(remote)


class Leg(Dialog):
    """One SIP dialog of a relayed (two-leg) call."""

    __slots__ = (
        "call",
        "invite_in",
        "invite_out",
        "peer_update",
        "rseq_seen",
        "session",
    )

    def __init__(
        self,
        call: Call,
        name: str,
        call_id: str,
        local_uri: str,
        remote_uri: str,
        target: Target,
        trunk: str | None,
    ) -> None:
        super().__init__(name, call_id, local_uri, remote_uri, target, trunk)
        self.call = call
        self.peer_update = False  # the peer allows UPDATE (session refreshes without SDP)
        self.rseq_seen = 0  # the last RSeq of the peer's reliable provisionals we PRACKed
        self.session: SessionTimer | None = None  # RFC 4028, per leg
        self.invite_in: ServerTransaction | None = None  # re-INVITE from the peer, unanswered
        self.invite_out: ClientTransaction | None = None  # re-INVITE to the peer, unanswered


class Call:
    __slots__ = (
        "a",
        "a_answered",
        "a_txn",
        "attempt",
        "b",
        "b_txn",
        "cancelled",
        "deferred_ack",
        "ended",
        "id",
        "invite",
        "media",
        "no_answer_timer",
        "number",
        "pinned",
        "reason",
        "release_side",
        "reliable",
        "status",
        "transfer",
        "transfer_info",
        "trunk_in",
        "trunk_out",
        "trunks",
    )

    def __init__(self, call_id: str, invite: Request, number: str, trunks: Sequence[str]) -> None:
        self.id = call_id
        self.invite = invite
        self.number = number
        self.trunks = tuple(trunks)
        # a registered user's bindings when the call was routed: trunk name -> Contact. A
        # REGISTER during the attempts must not re-point the ones still to come (user trunks
        # are named by position); each is looked up again by its Contact when its turn comes
        self.pinned: Mapping[str, str] = {}
        self.attempt = -1
        self.a: Leg
        self.b: Leg | None = None
        self.a_txn: ServerTransaction
        self.b_txn: ClientTransaction | None = None
        self.a_answered = False
        self.cancelled = False
        self.ended = False
        self.no_answer_timer: Any = None
        self.status: int | None = None  # the caller's final status (CDR)
        self.release_side: str | None = None  # caller | callee | gateway
        self.reason: str | None = None
        # late offer (INVITE without SDP): the callee's 2xx carries the offer, so the ACK
        # toward it waits for the caller's ACK, which carries the answer (RFC 3261 13.2.1)
        self.deferred_ack: Deferred | None = None
        self.reliable: Reliable | None = None  # 100rel toward the caller (RFC 3262)
        self.transfer: Transfer | None = None  # a REFER being carried out
        self.transfer_info: str | None = None  # for the CDR
        self.trunk_in: TrunkState | None = None  # counted against its limits until the end
        self.trunk_out: TrunkState | None = None
        self.media: MediaSession | None = None  # anchored media ([media] anchor)


@dataclass(slots=True)
class Deferred:
    """An ACK for a 2xx that must carry the answer the other leg's ACK brings."""

    txn: ClientTransaction
    leg: Leg


@dataclass(slots=True)
class Pending:
    """What a client transaction is for (its ``owner``)."""

    purpose: str  # "invite" | "bye" | "relay" | "probe"
    call: Call | None
    leg: Leg | None
    server_txn: ServerTransaction | None = None
    trunk: TrunkState | None = None  # probes: the trunk probed
    seq: int = 0  # probes: which probe of that trunk
    auth: int = 0  # challenges answered for this request (RFC 3261 section 22.2)


@dataclass
class CallStats:
    started: int = 0
    answered: int = 0
    failed: int = 0
    rejected: int = 0
    ended: int = 0


class B2BUA:
    """Joins inbound and outbound legs; the stack's transaction user."""

    def __init__(
        self,
        stack: SipStack,
        config: Config,
        plan: DialPlan,
        call_later: Callable[..., Any],
        cdr: CdrStore | None = None,
        media: MediaManager | None = None,
    ) -> None:
        self.stack = stack
        self.layer = stack.layer
        self.config = config
        self.plan = plan
        self.call_later = call_later
        self.cdr = cdr
        self.calls: dict[str, Call] = {}
        self.dialogs: dict[tuple[str, str], Leg] = {}
        self.trunks: dict[str, Trunk] = {t.name: t for t in config.trunks}
        now = stack.reactor.seconds()
        self.trunk_states: dict[str, TrunkState] = {
            t.name: TrunkState(t, now) for t in config.trunks
        }
        self.status_path = config.storage.cdr.parent / "trunks.json"
        # more sections of the status document, by name (app.py adds "turn")
        self.status_sections: dict[str, Callable[[], object]] = {}
        self.registrations = Registrations(self, self.write_status)
        self.transfers = Transfers(self)
        self.sessions = SessionTimers(self)
        self.auth = TrunkAuth(self)
        self.registrar = Registrar(self)  # [sip] users' bindings (gateway.calls.registrar)
        self.user_trunks: dict[str, Trunk] = {}  # their bindings as trunks, by name
        # every SDP a party sends, with its call's CDR key (the TURN usage's call: app.py)
        self.sdp_seen: Callable[[str, bytes], None] = lambda key, body: None
        self.probes = TrunkProbes(self)
        self.provisionals = ReliableProvisionals(self)
        self.media = CallMedia(self, media)
        self.relay = DialogRelay(self)
        # the carrier calls a registered trunk at sip:USERNAME@gateway: the number is in To
        self.registered_users = frozenset(
            t.username for t in config.trunks if t.register and t.username
        )
        self.apps: AppCalls | None = None  # REST-controlled calls (gateway.calls.appcall)
        self.draining = False
        self.stats = CallStats()
        self.on_idle: Callable[[], None] | None = None
        self.user_agent = config.sip.user_agent

    # ------------------------------------------------------------------
    # dispatch
    # ------------------------------------------------------------------
    def handle_event(self, event: Event, now: float) -> None:
        if isinstance(event, ResponseReceived):
            self._on_response(event.txn, event.response, event.retransmission)
        elif isinstance(event, RequestReceived):
            self._on_request(event.txn)
        elif isinstance(event, AckReceived):
            self.relay.on_ack(event.request, event.txn)
        elif isinstance(event, TransactionTimeout):
            if isinstance(event.txn, ClientTransaction):
                self._on_client_failure(event.txn, 408, "Request Timeout")
        elif isinstance(event, TransportFailed):
            if isinstance(event.txn, ClientTransaction):
                self._on_client_failure(event.txn, 503, "Transport Failure")
        elif isinstance(event, AckTimeout):
            owner = event.txn.owner
            party = self._app_party(owner)
            if party is not None and self.apps is not None:
                self.apps.remove(party.app, party)
            elif isinstance(owner, Call) and not owner.ended:
                log.info("call %s: no ACK for our 2xx, ending", owner.id)
                self._released(owner, 200, "gateway", "no ACK")
                self._bye(owner.a)
                if owner.b is not None:
                    self._bye(owner.b)
                self._end(owner, "no ACK")
        elif isinstance(event, BadRequest):
            self.invalid_request(event.request, event.error, event.source)
        elif isinstance(event, StrayResponse):
            pass

    def invalid_request(self, request: Request, error: SipParseError, source: Target) -> None:
        """A request the layer could not take (e.g. a broken Via on a new request)."""
        if request.method == "ACK":
            return
        answer = error_response(request, error)
        if answer is not None:
            self.stack.write(answer, source)

    # ------------------------------------------------------------------
    # requests
    # ------------------------------------------------------------------
    def _respond(
        self,
        txn: ServerTransaction,
        status: int,
        reason: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
        to_tag: str | None = None,
    ) -> None:
        resp = make_response(
            txn.request, status, reason, to_tag=to_tag or _token(), headers=headers
        )
        self.layer.send_response(txn, resp, self.stack.reactor.seconds())

    def _on_request(self, txn: ServerTransaction) -> None:
        req = txn.request
        try:
            validate_request(req, ALLOWED, SUPPORTED)
        except SipParseError as err:
            log.debug("rejecting %s %s: %s", req.method, err.status, err)
            self._respond(txn, err.status, None, err.extra_headers)
            return
        to_tag = req.to_tag
        if to_tag is not None:
            self.relay.in_dialog(txn, to_tag)
            return
        method = req.method
        if method == "INVITE":
            self._new_call(txn)
        elif method == "CANCEL":
            self._on_cancel(txn)
        elif method == "REGISTER":
            self.registrar.on_register(txn)
        elif method == "OPTIONS":
            self._respond(
                txn,
                200,
                headers=(
                    ("Allow", ALLOW_HEADER),
                    ("Accept", "application/sdp"),
                    ("Server", self.user_agent),
                ),
            )
        else:
            self._respond(txn, 481 if method == "BYE" else 405, headers=(("Allow", ALLOW_HEADER),))

    def _called_number(self, req: Request) -> str:
        uri = req.uri
        user = uri.user if uri.is_sip else None
        if user is None or user in self.registered_users:
            if uri.scheme == "tel":
                user = uri.raw[4:]
            else:
                user = req.to.uri.user or ""
        return unescape(user.split(";", 1)[0])

    def _new_call(self, txn: ServerTransaction) -> None:
        req = txn.request
        source = txn.source
        seconds = self.stack.reactor.seconds()
        if self.auth.failures.blocked(source.host, seconds):
            self.layer.discard(txn)  # an address that failed to authenticate too often
            return
        self._respond_100(txn, seconds)
        if self.draining:
            self._reject(txn, 503, (("Retry-After", str(self.config.sip.retry_after)),))
            return
        prefix = self.stack.branch_prefix
        if any((v.branch or "").startswith(prefix) for v in req.vias):
            self._reject(txn, 482)
            return
        max_forwards = req.max_forwards
        if max_forwards is not None and max_forwards <= 0:
            self._reject(txn, 483)
            return
        if len(self.calls) >= self.config.sip.max_calls:
            self._reject(txn, 503, (("Retry-After", str(self.config.sip.retry_after)),))
            return
        trunk = trunk_for_source(self.config, source.host, source.port)
        if trunk is None:
            trunk = self.auth.authenticate(txn, seconds)
            if trunk is None:
                return  # answered (401/403) or ignored (a blocked address)
        session_expires = req.get("session-expires")
        if session_expires is not None:
            try:
                interval, _ = parse_session_expires(session_expires)
            except SipParseError:
                self._reject(txn, 400)
                return
            if interval < self.config.sip.min_se:
                # too short: tell the caller our floor (RFC 4028 section 9)
                self._reject(txn, 422, (("Min-SE", str(self.config.sip.min_se)),))
                return
        trunk_in = self.trunk_states.get(trunk.name) or self.registrar.state(trunk.name)
        assert trunk_in is not None
        if not trunk_in.admit(seconds):
            log.info("INVITE from trunk %s over its limits: 503", trunk.name)
            self._reject(txn, 503, (("Retry-After", str(self.config.sip.retry_after)),),
                         trunk.name)
            return
        number = self._called_number(req)
        if number in self.config.sip.users:  # a user's name: ring its bindings
            self._call_user(txn, trunk, trunk_in, number, number)
            return
        decision = self.plan.route(number, trunk.name)
        if decision.action == "user" and decision.target:
            self._call_user(txn, trunk, trunk_in, decision.target, decision.number)
            return
        if decision.action == "none":
            trunk_in.release()
            self._reject(txn, 404, (), trunk.name)
            return
        if decision.action == "app" and self.apps is not None:
            self.apps.inbound.incoming_invite(txn, trunk, trunk_in, decision.number)
            return
        if decision.action == "conference" and self.apps is not None and decision.target:
            self.apps.conferences.join(txn, trunk, trunk_in, decision.target, decision.number)
            return
        if decision.action not in ("outbound", "trunk") or not decision.trunks:
            log.info("call to %s: action %s not available yet", number, decision.action)
            trunk_in.release()
            self._reject(txn, 480, (), trunk.name)
            return
        self.start_call(txn, trunk, trunk_in, decision.number, decision.trunks)

    def _call_user(self, txn: ServerTransaction, trunk: Trunk, trunk_in: TrunkState, user: str,
                   number: str) -> None:
        """A call to registered user ``user``: its bindings are tried in turn. A call from a
        user to a user whose offer carries ICE is not anchored: the SDP (candidates and all)
        crosses untouched and ICE finds the path (direct, reflexive or through TURN)."""
        route = self.registrar.route(user)
        if not route:
            log.info("call to user %s: not registered, 480", user)
            trunk_in.release()
            self._reject(txn, 480, (), trunk.name)
            return
        req = txn.request
        ice = (user_of(trunk.name) is not None and req.content_type == "application/sdp"
               and b"a=ice-ufrag" in req.body)
        pinned = {name: self.user_trunks[name].contact or "" for name in route
                  if name in self.user_trunks}
        self.start_call(txn, trunk, trunk_in, number, route, anchor=not ice, pinned=pinned)

    def start_call(self, txn: ServerTransaction, trunk: Trunk, trunk_in: TrunkState,
                   number: str, trunks: Sequence[str], *, anchor: bool = True,
                   pinned: Mapping[str, str] | None = None) -> None:
        """Place the call of the INVITE ``txn`` (from ``trunk``) to ``number`` over ``trunks``
        (a dial plan decision, or an app's redirect_call to a phone number); ``anchor``
        False leaves its media unanchored (SDP relayed as it is); ``pinned`` gives the
        Contact some trunk names stood for (a registered user's bindings at routing time)."""
        req = txn.request
        source = txn.source
        seconds = self.stack.reactor.seconds()
        call = Call(random_hex(8), req, number, trunks)
        if pinned:
            call.pinned = pinned
        call.trunk_in = trunk_in
        try:
            offer = req.body if req.content_type == "application/sdp" else b""
            if anchor:
                self.media.start(call, offer, trunk)
        except MediaRefused as exc:
            self.media.end(call)
            trunk_in.release()
            self._reject(txn, exc.status, (self.media.warning(exc.text),), trunk.name)
            return
        from_addr = req.from_
        a = Leg(call, "a", req.call_id, *uas_names(req), source, trunk.name)
        a.take_invite(req)
        a.peer_update = has_option(req.values("allow"), "update")
        if has_option(req.values("supported") + req.values("require"), "100rel"):
            call.reliable = Reliable(int(random_hex(3), 16) % 1000000 + 1)
        call.a = a
        call.a_txn = txn
        txn.owner = call
        self.calls[call.id] = call
        self.dialogs[a.key] = a
        self.stats.started += 1
        if self.cdr is not None:
            self.cdr.call_started(call.id, self._caller(req), number, trunk.name, seconds)
            self.cdr.leg_started(call.id, "a", "in", trunk.name, a.remote_uri, seconds,
                                 req.call_id)
        timeout = self.config.sip.no_answer_timeout
        if timeout > 0:
            call.no_answer_timer = self.call_later(timeout, self._no_answer, call)
        log.debug(
            "call %s: %s -> %s from trunk %s via %s",
            call.id, from_addr.uri.user, number, trunk.name, ",".join(trunks),
        )
        self._next_attempt(call, 0, "")

    def _respond_100(self, txn: ServerTransaction, now: float) -> None:
        self.layer.send_response(txn, make_response(txn.request, 100), now)

    def _reject(
        self,
        txn: ServerTransaction,
        status: int,
        headers: Sequence[tuple[str, str]] = (),
        trunk: str | None = None,
    ) -> None:
        """Refuse a new INVITE before any call exists; it still gets its CDR row."""
        self.stats.rejected += 1
        self._respond(txn, status, None, headers)
        cdr = self.cdr
        if cdr is not None:
            req = txn.request
            now = self.stack.reactor.seconds()
            call_id = "r" + random_hex(8)
            cdr.call_started(call_id, self._caller(req), self._called_number(req), trunk, now)
            cdr.leg_started(call_id, "a", "in", trunk, req.get("from") or "", now, req.call_id)
            cdr.leg_ended(call_id, "a", now, status)
            cdr.call_ended(call_id, now, status, "gateway", reason_phrase(status))

    @staticmethod
    def _caller(req: Request) -> str:
        try:
            return unescape(req.from_.uri.user or "anonymous")
        except SipParseError:
            return "anonymous"

    def _released(self, call: Call, status: int, side: str, reason: str | None) -> None:
        """Record why the call ended (the first cause wins)."""
        if call.release_side is None:
            call.status = status
            call.release_side = side
            call.reason = reason

    # ------------------------------------------------------------------
    # the outbound leg
    # ------------------------------------------------------------------
    def _next_attempt(self, call: Call, last_status: int, last_reason: str) -> None:
        """Try the next usable trunk of the route, or give the caller the final answer.

        Trunks that are down (OPTIONS) or at their limits are skipped; when no trunk
        was even tried, the caller gets 503 with Retry-After.
        """
        if call.trunk_out is not None:
            call.trunk_out.release()
            call.trunk_out = None
        now = self.stack.reactor.seconds()
        while True:
            call.attempt += 1
            if call.cancelled or call.ended:
                return
            if call.attempt >= len(call.trunks):
                if last_status:
                    status = _map_error(last_status)
                    self._fail(call, status, last_reason or reason_phrase(status))
                else:
                    self._fail(call, 503, "No Trunk Available",
                               (("Retry-After", str(self.config.sip.retry_after)),))
                return
            name = call.trunks[call.attempt]
            contact = call.pinned.get(name)
            if contact is not None:  # the binding routed, wherever it is now (if still live)
                now_name = self.registrar.current(name, contact)
                if now_name is None:
                    log.info("call %s: %s unregistered since the call was routed, skipped",
                             call.id, contact)
                    continue
                name = now_name
            trunk = self.trunks.get(name) or self.user_trunks.get(name)
            state = self.trunk_states.get(name) or self.registrar.state(name)
            if trunk is None or state is None:
                continue
            if not state.up:
                log.debug("call %s: trunk %s is down, skipped", call.id, name)
                continue
            if not state.admit(now):
                log.info("call %s: trunk %s over its limits, skipped", call.id, name)
                continue
            call.trunk_out = state
            break
        self._send_invite(call, trunk)

    def _local(self, transport: str) -> tuple[str, str]:
        """(sent-by, contact URI) for a leg on ``transport``."""
        local = self.stack.local.get(transport) or next(iter(self.stack.local.values()))
        param = "" if transport == "udp" else f";transport={transport}"
        return local.sent_by, f"<sip:{local.sent_by}{param}>"

    def _send_invite(self, call: Call, trunk: Trunk) -> None:
        a_req = call.invite
        caller = a_req.from_
        max_forwards = a_req.max_forwards
        try:
            body = self.media.offer(call, "a", a_req.body, toward=trunk)
        except MediaRefused as exc:
            log.info("call %s: no media offer for trunk %s: %s", call.id, trunk.name, exc.text)
            if exc.status == 503:
                self._fail(call, 503, "Media Ports Exhausted",
                           (("Retry-After", str(self.config.sip.retry_after)),))
            else:
                self._next_attempt(call, 488, exc.text)
            return
        copied = [f for f in a_req.fields if f[0] not in OWNED]
        user = user_of(call.trunk_in.trunk.name) if call.trunk_in is not None else None
        identity = (caller.uri.user or "anonymous", caller.display)
        if user is not None:  # a registered user calls as itself, whatever its From says
            identity = (user, caller.display)
            copied = [f for f in copied if f[0] not in _ASSERTED_IDENTITY]
        b, txn = self.outbound_invite(
            call, trunk, call.number,
            cdr_id=f"b{call.attempt + 1}",
            caller=identity,
            max_forwards=DEFAULT_MAX_FORWARDS if max_forwards is None else max_forwards - 1,
            body=body,
            copied=copied,
            timers=True,
            purpose="invite",
        )
        call.b = b
        call.b_txn = txn

    def outbound_invite(
        self,
        call: Call,
        trunk: Trunk,
        number: str,
        *,
        cdr_id: str,
        caller: tuple[str, str | None],
        max_forwards: int,
        body: bytes,
        copied: Sequence[HeaderField],
        timers: bool,
        purpose: str,
    ) -> tuple[Leg, ClientTransaction]:
        """A new outbound leg toward ``number`` on ``trunk`` and its INVITE, sent.

        The leg gets its own Call-ID and tag, is entered in the dialog table and the CDR;
        the INVITE carries the standard headers, the ``copied`` ones (byte-exact) and,
        with ``timers``, the 100rel/session-timer offer of [sip].
        """
        call_id, local_uri, remote_uri, target = self.outbound_names(trunk, number, caller)
        leg = Leg(call, cdr_id[0], call_id, local_uri, remote_uri, target, trunk.name)
        leg.cdr_id = cdr_id
        self.dialogs[leg.key] = leg
        if self.cdr is not None:
            self.cdr.leg_started(call.id, cdr_id, "out", trunk.name, remote_uri,
                                 self.stack.reactor.seconds(), leg.call_id)
        txn = self.send_invite(leg, trunk, number, max_forwards=max_forwards, body=body,
                               copied=copied, timers=timers)
        txn.owner = Pending(purpose, call, leg)
        return leg, txn

    def outbound_names(
        self, trunk: Trunk, number: str, caller: tuple[str, str | None]
    ) -> tuple[str, str, str, Target]:
        """(Call-ID, local From value, remote To value, target) of a new dialog toward
        ``number`` on ``trunk``, calling as ``caller`` (user, display name)."""
        host = f"[{trunk.host}]" if ":" in trunk.host else trunk.host
        domain = self.config.sip.domain
        user, display = caller
        from_uri = f"sip:{user}@{domain}"
        local_uri = f"{display} <{from_uri}>" if display else f"<{from_uri}>"
        callee = user_of(trunk.name)  # a registered user: To is its address of record
        to_uri = f"<sip:{callee}@{domain}>" if callee is not None else f"<sip:{number}@{host}>"
        return (f"{random_hex(10)}@{domain}", local_uri, to_uri,
                Target(trunk.transport, trunk.host, trunk.port))

    def send_invite(
        self,
        leg: Dialog,
        trunk: Trunk,
        number: str,
        *,
        max_forwards: int = DEFAULT_MAX_FORWARDS,
        body: bytes,
        copied: Sequence[HeaderField] = (),
        timers: bool = True,
    ) -> ClientTransaction:
        """Send the initial INVITE of the outbound dialog ``leg`` (see outbound_names)."""
        host = f"[{trunk.host}]" if ":" in trunk.host else trunk.host
        leg.local_cseq = 1
        leg.remote_target = trunk.contact or f"sip:{number}@{host}:{trunk.port}"
        if trunk.transport != "udp" and not trunk.contact:
            leg.remote_target += f";transport={trunk.transport}"
        leg.local_sdp = body
        now = self.stack.reactor.seconds()
        sent_by, contact = self._local(trunk.transport)
        fields: list[HeaderField] = [
            ("via", f"SIP/2.0/{trunk.transport.upper()} {sent_by};branch="
                    f"{self.stack.new_branch()};rport", None),
            ("max-forwards", str(max_forwards), None),
            ("from", f"{leg.local_uri};tag={leg.local_tag}", None),
            ("to", leg.remote_uri, None),
            ("call-id", leg.call_id, None),
            ("cseq", "1 INVITE", None),
            ("contact", contact, None),
            ("allow", ALLOW_HEADER, None),
            ("user-agent", self.user_agent, None),
        ]
        sip = self.config.sip
        if timers:
            fields.append(("supported", "100rel, timer" if sip.session_expires else "100rel",
                           None))
            if sip.session_expires:
                fields.append(("session-expires", str(sip.session_expires), None))
                fields.append(("min-se", str(sip.min_se), None))
        fields.extend(copied)
        if body and not any(f[0] == "content-type" for f in copied):
            fields.append(("content-type", "application/sdp", None))
        invite = Request("INVITE", leg.remote_target, fields, body)
        if timers:
            invite = self.auth.preauthorize(invite, trunk.name)
        return self.layer.send_request(invite, leg.target, now)

    def _app_party(self, owner: object) -> Party | None:
        """``owner`` when it is a party of an app call (gateway.calls.appcall)."""
        if self.apps is None or not isinstance(owner, Dialog) or isinstance(owner, Leg):
            return None
        return cast("Party", owner)  # the only other kind of dialog owning transactions

    def _on_response(self, txn: ClientTransaction, resp: Response, retransmission: bool) -> None:
        owner = txn.owner
        party = self._app_party(owner)
        if party is not None and self.apps is not None:
            self.apps.on_response(party, txn, resp, retransmission)
            return
        if not isinstance(owner, Pending):
            return
        if resp.status in (401, 407) and self.auth.retry(txn, resp, owner):
            return
        if owner.purpose == "invite":
            self._on_invite_response(owner, txn, resp, retransmission)
        elif owner.purpose == "relay":
            self.relay.relay_response(owner, txn, resp)
        elif owner.purpose == "bye":
            if resp.status >= 200 and owner.call is not None:
                self._end(owner.call, "bye")
        elif owner.purpose == "probe":
            if resp.status >= 200 and owner.trunk is not None:
                self.probes.done(owner.trunk, owner.seq, resp.status)
        elif owner.purpose == "register" and owner.trunk is not None:
            self.registrations.on_response(owner.trunk, txn, resp)
        elif owner.purpose == "refresh" and owner.leg is not None:
            self.sessions.refresh_answered(owner.leg, txn, resp)
        elif owner.purpose == "transfer" and owner.call is not None and owner.leg is not None:
            self.transfers.on_response(owner.call, owner.leg, txn, resp, retransmission)
        elif owner.purpose == "reoffer" and owner.leg is not None:
            self.transfers.on_reoffer_answer(owner.leg, txn, resp)
        elif owner.purpose == "release" and owner.leg is not None and resp.status >= 200:
            self.dialogs.pop(owner.leg.key, None)  # the transferor is gone

    def resend(self, txn: ClientTransaction, owner: Pending, request: Request) -> None:
        """Send a challenged or refused request again (``make_resend``) as a new
        transaction that takes the old one's place for its call and leg."""
        new_txn = self.layer.send_request(request, txn.target, self.stack.reactor.seconds())
        owner.auth += 1
        new_txn.owner = owner
        call = owner.call
        if call is not None and call.b_txn is txn:
            call.b_txn = new_txn
        if owner.leg is not None and owner.leg.invite_out is txn:
            owner.leg.invite_out = new_txn

    def _on_invite_response(
        self, owner: Pending, txn: ClientTransaction, resp: Response, retransmission: bool
    ) -> None:
        call = owner.call
        b = owner.leg
        if call is None or b is None:
            return
        status = resp.status
        if status < 200:
            if status == 100 or call.a_answered or call.cancelled:
                return
            b.remote_tag = resp.to_tag or b.remote_tag
            contacts = resp.contacts
            if contacts:
                b.remote_target = str(contacts[0].uri)
                b.route_set = list(reversed(resp.get_all("record-route")))
            if has_option(resp.values("require"), "100rel"):
                if not self.provisionals.prack(b, txn, resp):
                    return  # a retransmission: PRACKed and relayed already
            early = resp.body
            if early and txn.request.body:
                try:
                    early = self.media.answer(call, "b", early)
                except MediaRefused as exc:
                    log.info("call %s: early media answer refused: %s", call.id, exc.text)
                    early = b""
            self._relay_to_a(call, resp, early)
            return
        if status == 422 and not (call.cancelled or call.a_answered) and owner.auth < 2:
            if self.sessions.retry_interval(owner, txn, resp):
                return
        if status >= 300:
            if call.b_txn is txn:
                call.b_txn = None
            self.dialogs.pop(b.key, None)
            if self.cdr is not None:
                self.cdr.leg_ended(call.id, b.cdr_id, self.stack.reactor.seconds(), status)
            if call.cancelled or call.a_answered:
                self._end(call, "cancelled")  # the caller already has its final answer
                return
            if _failover_status(status) and call.attempt + 1 < len(call.trunks):
                log.info("call %s: %s from trunk %s, failing over", call.id, status, b.trunk)
                self._next_attempt(call, status, resp.reason)
                return
            extra = [(k, v) for k, v, _ in resp.fields if k in ERROR_COPY]
            self._released(call, _map_error(status), "callee", resp.get("reason") or resp.reason)
            self._fail(call, _map_error(status), resp.reason, extra)
            return
        # 2xx
        if retransmission:
            return  # the layer re-sends our ACK itself
        b.remote_tag = resp.to_tag
        contacts = resp.contacts
        b.remote_target = str(contacts[0].uri) if contacts else b.remote_target
        b.route_set = list(reversed(resp.get_all("record-route")))
        b.confirmed = True
        if resp.body:
            b.remote_sdp = resp.body
        b.peer_update = has_option(resp.values("allow"), "update")
        late_offer = not txn.request.body and bool(resp.body)
        body = resp.body
        refused: MediaRefused | None = None
        if body and not (call.cancelled or call.ended or call.a_answered):
            try:
                if late_offer:
                    body = self.media.offer(call, "b", body)
                else:
                    body = self.media.answer(call, "b", body)
            except MediaRefused as exc:
                refused = exc
                late_offer = False  # nothing to wait for: the call ends
        if late_offer and not (call.cancelled or call.ended or call.a_answered):
            call.deferred_ack = Deferred(txn, b)
        else:
            ack = self._in_dialog_request(b, "ACK", cseq=txn.request.cseq.seq)
            self.layer.send_ack_2xx(txn, ack)
        if call.b_txn is txn:
            call.b_txn = None
        if call.cancelled or call.ended or call.a_answered:
            self._bye(b)
            return
        if refused is not None:
            log.info("call %s: callee's SDP refused: %s", call.id, refused.text)
            b.confirmed = False
            self._bye(b)
            headers = [self.media.warning(refused.text)]
            if refused.status == 503:
                headers.append(("Retry-After", str(self.config.sip.retry_after)))
            self._fail(call, refused.status, reason_phrase(refused.status), headers)
            return
        self._cancel_no_answer(call)
        call.a_answered = True
        call.a.confirmed = True
        if call.media is not None:
            call.media.activate()  # from now on, silence ends the call ([media] timeout)
        self.stats.answered += 1
        self.sessions.start_b(b, resp)
        if self.cdr is not None:
            now = self.stack.reactor.seconds()
            self.cdr.leg_answered(call.id, b.cdr_id, now)
            self.cdr.leg_answered(call.id, "a", now)
            self.cdr.call_answered(call.id, now, b.trunk)
        self._relay_to_a(call, resp, body)

    def _relay_to_a(self, call: Call, resp: Response, body: bytes) -> None:
        """Relay a provisional or 2xx response of the outbound INVITE to the caller, with
        ``body`` (the gateway's SDP toward the caller, or the callee's when not anchored)."""
        a = call.a
        _, contact = self._local(a.target.transport)
        headers: list[tuple[str, str]] = [("Contact", contact)]
        headers.extend(("Record-Route", rr) for rr in call.invite.get_all("record-route"))
        if resp.status >= 200:
            headers.append(("Allow", ALLOW_HEADER))
            session = self.sessions.a_session(call)
            if session is not None:
                a.session = session
                headers.append(("Session-Expires", session.header()))
                if session.refresher == "uac":
                    headers.append(("Require", "timer"))
                self.sessions.arm(a)
            if body:
                a.local_sdp = body
        out = make_response(call.invite, resp.status, resp.reason, to_tag=a.local_tag,
                            headers=headers)
        extra = [f for f in resp.fields
                 if f[0] not in OWNED and (body or f[0] != "content-type")]
        out = Response(out.status, out.reason, [*out.fields, *extra], body)
        reliable = call.reliable
        if reliable is not None:
            if resp.status < 200:
                self.provisionals.send(call, reliable, out)
                return
            self.provisionals.stop(reliable)  # the final answer ends them (RFC 3262 section 3)
        self.layer.send_response(call.a_txn, out, self.stack.reactor.seconds())

    def _fail(
        self,
        call: Call,
        status: int,
        reason: str,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        if not call.a_answered and not call.cancelled:
            call.a_answered = True
            self._respond(call.a_txn, status, reason, headers, to_tag=call.a.local_tag)
        self._released(call, status, "gateway", reason)
        self.stats.failed += 1
        self._end(call, f"failed {status}")

    def _on_client_failure(self, txn: ClientTransaction, status: int, reason: str) -> None:
        owner = txn.owner
        party = self._app_party(owner)
        if party is not None and self.apps is not None:
            self.apps.on_failure(party, txn, status, reason)
            return
        if isinstance(owner, Pending) and owner.purpose == "probe" and owner.trunk is not None:
            self.probes.done(owner.trunk, owner.seq, None)
            return
        if isinstance(owner, Pending) and owner.purpose == "register" and owner.trunk is not None:
            self.registrations.on_failure(owner.trunk)
            return
        if not isinstance(owner, Pending) or owner.call is None:
            return
        call = owner.call
        if owner.purpose == "invite":
            if call.b_txn is txn:
                call.b_txn = None
            if owner.leg is not None:
                self.dialogs.pop(owner.leg.key, None)
                if self.cdr is not None:
                    self.cdr.leg_ended(call.id, owner.leg.cdr_id, self.stack.reactor.seconds(),
                                       status)
            if call.cancelled or call.a_answered or call.ended:
                self._end(call, "cancelled")
                return
            log.info("call %s: %s towards trunk %s", call.id, reason,
                     owner.leg.trunk if owner.leg else "?")
            self._next_attempt(call, status, reason)
        elif owner.purpose == "relay" and owner.server_txn is not None:
            if txn.is_invite and owner.leg is not None:
                owner.leg.invite_out = None
                origin = call.a if owner.leg is call.b else call.b
                if origin is not None:
                    origin.invite_in = None
            self._respond(owner.server_txn, status, reason, to_tag=self._our_tag(owner))
        elif owner.purpose == "bye":
            self._end(call, "bye timeout")
        elif owner.purpose == "refresh" and owner.leg is not None:
            self.sessions.failed(owner.leg, f"refresh {status}")
        elif owner.purpose == "transfer" and owner.leg is not None:
            self.transfers.on_failure(call, owner.leg, status, reason)
        elif owner.purpose == "release" and owner.leg is not None:
            self.dialogs.pop(owner.leg.key, None)
        elif owner.purpose == "reoffer" and owner.leg is not None:
            owner.leg.invite_out = None

    def _our_tag(self, owner: Pending) -> str | None:
        srv = owner.server_txn
        if srv is None:
            return None
        return srv.request.to_tag

    def _no_answer(self, call: Call) -> None:
        call.no_answer_timer = None
        if call.a_answered or call.cancelled or call.ended:
            return
        log.info("call %s: no answer after %ss", call.id, self.config.sip.no_answer_timeout)
        call.cancelled = True
        self._released(call, 480, "gateway", "no answer")
        self._respond(call.a_txn, 480, "No Answer", to_tag=call.a.local_tag)
        call.a_answered = True
        self._cancel_b(call)
        self.stack.flush()

    def _cancel_no_answer(self, call: Call) -> None:
        timer = call.no_answer_timer
        if timer is not None:
            call.no_answer_timer = None
            if timer.active():
                timer.cancel()

    def _cancel_b(self, call: Call) -> None:
        if call.b_txn is not None:
            self.layer.send_cancel(call.b_txn, self.stack.reactor.seconds())
        else:
            self._end(call, "cancelled")

    # ------------------------------------------------------------------
    # CANCEL, BYE and other in-dialog requests
    # ------------------------------------------------------------------
    def _on_cancel(self, txn: ServerTransaction) -> None:
        invite_txn = self.layer.find_invite(txn.request)
        party = self._app_party(invite_txn.owner if invite_txn is not None else None)
        if party is not None and self.apps is not None:
            self._respond(txn, 200, to_tag=party.local_tag)
            self.apps.inbound.on_cancel(party)
            return
        if invite_txn is None or not isinstance(invite_txn.owner, Call):
            self._respond(txn, 481)
            return
        call = invite_txn.owner
        self._respond(txn, 200, to_tag=call.a.local_tag)
        if call.a_answered or call.cancelled:
            return
        call.cancelled = True
        call.a_answered = True
        self._cancel_no_answer(call)
        self._released(call, 487, "caller", txn.request.get("reason") or "CANCEL")
        self._respond(invite_txn, 487, to_tag=call.a.local_tag)
        self._cancel_b(call)

    def _in_dialog_request(
        self,
        leg: Dialog,
        method: str,
        *,
        cseq: int | None = None,
        extra: Sequence[HeaderField] = (),
        body: bytes = b"",
    ) -> Request:
        if cseq is None:
            leg.local_cseq += 1
            cseq = leg.local_cseq
        transport = leg.target.transport
        sent_by, contact = self._local(transport)
        remote = leg.remote_uri
        if leg.remote_tag:
            remote = f"{remote};tag={leg.remote_tag}"
        fields: list[HeaderField] = [
            ("via", f"SIP/2.0/{transport.upper()} {sent_by};branch={self.stack.new_branch()}"
                    ";rport", None),
            ("max-forwards", str(DEFAULT_MAX_FORWARDS), None),
            ("from", f"{leg.local_uri};tag={leg.local_tag}", None),
            ("to", remote, None),
            ("call-id", leg.call_id, None),
            ("cseq", f"{cseq} {method}", None),
        ]
        fields.extend(("route", r, None) for r in leg.route_set)
        if method in ("INVITE", "UPDATE", "REFER", "NOTIFY", "SUBSCRIBE"):
            fields.append(("contact", contact, None))
        fields.extend(extra)
        request = Request(method, leg.remote_target or leg.remote_uri, fields, body)
        if method != "ACK" and leg.trunk is not None:
            request = self.auth.preauthorize(request, leg.trunk)
        return request

    def _bye(self, leg: Leg) -> None:
        req = self._in_dialog_request(leg, "BYE")
        txn = self.layer.send_request(req, leg.target, self.stack.reactor.seconds())
        txn.owner = Pending("bye", leg.call, leg)

    def _detach(self, call: Call) -> None:
        """The call is ending: wait for the BYE answer, but accept no new work."""
        call.ended = True
        self._cancel_no_answer(call)

    def _end(self, call: Call, why: str) -> None:
        if self.calls.pop(call.id, None) is None:
            return
        call.ended = True
        self._cancel_no_answer(call)
        self.dialogs.pop(call.a.key, None)
        if call.b is not None:
            self.dialogs.pop(call.b.key, None)
        self.transfers.call_ended(call)
        if call.reliable is not None:
            self.provisionals.stop(call.reliable)
        for leg in (call.a, call.b):
            if leg is not None and leg.session is not None:
                cancel_timer(leg.session.timer)
                leg.session = None
        if call.trunk_in is not None:
            call.trunk_in.release()
            call.trunk_in = None
        if call.trunk_out is not None:
            call.trunk_out.release()
            call.trunk_out = None
        self.stats.ended += 1
        log.debug("call %s ended: %s", call.id, why)
        cdr = self.cdr
        if cdr is not None:
            now = self.stack.reactor.seconds()
            status = call.status if call.status is not None else (200 if call.a.confirmed else 0)
            cdr.leg_ended(call.id, call.a.cdr_id, now, status, **self.media.quality(call, "a"))
            b = call.b
            if b is not None and b.confirmed:
                cdr.leg_ended(call.id, b.cdr_id, now, 200, **self.media.quality(call, "b"))
            cdr.call_ended(call.id, now, status, call.release_side or "gateway",
                           call.reason or why, call.transfer_info)
        self.media.end(call)
        if not self.calls and self.on_idle is not None and not (self.apps and self.apps.calls):
            self.on_idle()

    def media_timeout(self, call: Call, why: str) -> None:
        """A leg's peer stopped sending RTP ([media] timeout): the call ends (BYE both)."""
        if call.ended:
            return
        log.info("call %s: %s, ending", call.id, why)
        self._released(call, 200, "gateway", why)
        for leg in (call.a, call.b):
            if leg is not None and leg.confirmed:
                self._bye(leg)
        self._detach(call)
        self.stack.flush()

    def send_dtmf_info(self, call: Call, side: str, digit: str, duration_ms: int) -> None:
        """A digit for a leg that negotiated no telephone-event: SIP INFO (dtmf-relay)."""
        leg = call.a if side == "a" else call.b
        if leg is None or not leg.confirmed or call.ended:
            return
        req = self._in_dialog_request(
            leg, "INFO", extra=[("content-type", "application/dtmf-relay", None)],
            body=info_body(digit, duration_ms),
        )
        txn = self.layer.send_request(req, leg.target, self.stack.reactor.seconds())
        txn.owner = Pending("info", call, leg)
        self.stack.flush()

    # ------------------------------------------------------------------
    # trunk probing (OPTIONS) and status
    # ------------------------------------------------------------------
    def status(self) -> dict[str, object]:
        """The status document: trunk states, the gateway's live figures under "gateway" and
        each of ``status_sections`` under its name (the status file, `acs-gateway trunks`, and
        the metrics endpoint, gateway.observe.metrics, read it)."""
        counters = self.stack.counters
        live: dict[str, object] = {
            "calls": len(self.calls),
            "dialogs": len(self.dialogs),
            "client_transactions": self.layer.client_count,
            "server_transactions": self.layer.server_count,
            "calls_started": self.stats.started,
            "calls_answered": self.stats.answered,
            "calls_failed": self.stats.failed,
            "calls_rejected": self.stats.rejected,
            "calls_ended": self.stats.ended,
            "sip_received": counters.received,
            "sip_sent": counters.sent,
            "parse_errors": counters.parse_errors,
            "answered_errors": counters.answered_errors,
            "dropped": counters.dropped,
            "refused_destinations": counters.refused_destinations,
            "tcp_closed_overflow": counters.tcp_closed_overflow,
            "handler_errors": counters.handler_errors,
            "rss_bytes": _rss_bytes(),
        }
        if self.apps is not None:
            live.update(self.apps.status())
        manager = self.media.manager
        now = self.stack.reactor.seconds()
        if self.config.sip.users:
            live["users"] = self.registrar.status(now)
        if manager is not None:
            live.update(manager.status())
        doc = status_doc(self.trunk_states.values(), now, live)
        for name, section in self.status_sections.items():
            doc[name] = section()
        return doc

    def write_status(self) -> None:
        """trunks.json (``status``) and, with media anchored, calls.json (each call's live
        media, for `acs-gateway calls`), both beside the CDR database; expired user bindings
        are swept first (``status`` itself only reads)."""
        if self.config.sip.users:
            self.registrar.sweep(self.stack.reactor.seconds())
        doc = self.status()
        manager = self.media.manager
        if manager is not None:
            write_json(self.status_path.with_name("calls.json"),
                       {"time": doc["time"], "calls": manager.calls()})
        write_json(self.status_path, doc)


def _rss_bytes() -> int:
    """Resident set size of this process (Linux /proc), or 0 where unavailable."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0
