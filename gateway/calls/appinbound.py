"""Inbound app calls: an INVITE whose dial plan action is ``app`` is held (100 Trying) while the
IncomingCall event goes to the webhooks; ``answer_call``, ``reject_call`` and ``redirect_call``
act on it by its ``incomingCallContext``; no decision within [rest] incoming_call_timeout
releases the caller with 480 and expires the context; a CANCEL from the caller meanwhile gets
487.
"""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING

from gateway.calls.appmodel import AppCall, Incoming, Party
from gateway.calls.b2bua import ALLOW_HEADER, uas_names
from gateway.calls.sessiontimer import cancel_timer, has_option
from gateway.config import Trunk
from gateway.media.bridge import BridgeError
from gateway.rest.errors import RestError
from gateway.rest.events import phone_identifier
from gateway.sip.message import Response, make_response, reason_phrase
from gateway.sip.transaction import ServerTransaction

if TYPE_CHECKING:
    from gateway.calls.appcall import AppCalls
    from gateway.calls.trunks import TrunkState

log = logging.getLogger("gateway.app")


class AppInbound:
    """The inbound calls held for the app, by incomingCallContext."""

    def __init__(self, apps: AppCalls) -> None:
        self.apps = apps
        self.incoming: dict[str, Incoming] = {}

    def incoming_invite(self, txn: ServerTransaction, trunk: Trunk, trunk_in: TrunkState,
                        number: str) -> None:
        """An INVITE routed to the app: hold it and tell the webhooks."""
        b2b = self.apps.b2bua
        req = txn.request
        if len(self.apps.calls) >= self.apps.max_calls or self.apps.manager is None:
            trunk_in.release()
            b2b._respond(txn, 503, None, (("Retry-After", str(b2b.config.sip.retry_after)),))
            return
        from_addr = req.from_
        caller = from_addr.uri.user or "anonymous"
        call = AppCall(self.apps, number)
        call.trunk_in = trunk_in
        call.state = "connecting"
        party = self.apps._new_party(call, req.call_id, *uas_names(req), txn.source,
                                     trunk.name, _e164(caller), "in")
        party.take_invite(req)
        party.refer = has_option(req.values("allow"), "refer")
        party.invite_txn = txn
        txn.owner = party
        call.targets = [phone_identifier(number)]
        context = secrets.token_urlsafe(32)
        now = b2b.stack.reactor.seconds()
        self.incoming[context] = Incoming(call, party, txn, trunk, now + self.apps.timeout)
        party.timer = b2b.call_later(self.apps.timeout, self._not_answered, context)
        cdr = b2b.cdr
        if cdr is not None:
            cdr.call_started(call.event_key, caller, number, trunk.name, now)
            cdr.leg_started(call.event_key, party.cdr_id, "in", trunk.name, party.remote_uri, now,
                            req.call_id)
        data: dict[str, object] = {
            "to": phone_identifier(number),
            "from": phone_identifier(_e164(caller)),
            "serverCallId": call.server_call_id,
            "callerDisplayName": from_addr.display or "",
            "incomingCallContext": context,
            "correlationId": call.correlation_id,
        }
        custom = {k: v for k, v, _ in req.fields
                  if k.startswith("x-ms-custom-") or k == "user-to-user"}
        if custom:
            data["customContext"] = {"sipHeaders": custom, "voipHeaders": {}}
        subject = f"/caller/{phone_identifier(_e164(caller))['rawId']}/recipient/" \
                  f"{phone_identifier(number)['rawId']}"
        log.info("call %s: inbound %s -> %s held for the app", call.id, caller, number)
        self.apps.events.incoming_call(data, subject)

    def take_incoming(self, context: str) -> Incoming:
        entry = self.incoming.get(context)
        if entry is None:
            raise RestError(404, "8522", "incomingCallContext unknown or expired")
        return entry

    def answer(self, context: str, callback: str, op_context: str | None) -> AppCall:
        entry = self.take_incoming(context)
        call, party = entry.call, entry.party
        assert self.apps.manager is not None
        bridge = call.bridge or self.apps._bridge(call)
        try:
            sdp = bridge.accept(party.name, party.remote_sdp, entry.trunk.codecs,
                                entry.trunk.srtp)
        except BridgeError as exc:
            del self.incoming[context]
            cancel_timer(party.timer)
            self._reject_party(entry, exc.status, exc.text)
            raise RestError(400, "8523",
                            f"the caller's media cannot be answered: {exc.text}") from exc
        del self.incoming[context]
        cancel_timer(party.timer)
        call.callback_uri = callback
        call.context = op_context
        self.apps._register(call)
        self.send_answer(party, entry.txn, sdp)
        return call

    def send_answer(self, party: Party, txn: ServerTransaction, sdp: bytes) -> None:
        """The 200 answering ``party``'s INVITE with the gateway's ``sdp``; its ACK connects
        the party (``AppCalls.on_ack``)."""
        b2b = self.apps.b2bua
        party.local_sdp = sdp
        party.confirmed = True  # our 2xx is out: BYE, not CANCEL, ends it from now on
        _, contact = b2b._local(party.target.transport)
        headers = [("Contact", contact), ("Allow", ALLOW_HEADER),
                   ("Content-Type", "application/sdp")]
        # the dialog's route set (RFC 3261 section 12.1.1): proxies stay on the path
        headers.extend(("Record-Route", rr) for rr in txn.request.get_all("record-route"))
        resp = make_response(txn.request, 200, to_tag=party.local_tag, headers=headers)
        resp = Response(resp.status, resp.reason, resp.fields, sdp)
        b2b.layer.send_response(txn, resp, b2b.stack.reactor.seconds())
        b2b.stack.flush()

    def reject(self, context: str, reason: str) -> None:
        entry = self.take_incoming(context)
        del self.incoming[context]
        cancel_timer(entry.party.timer)
        status = {"busy": 486, "forbidden": 403}.get(reason, 603)
        self._reject_party(entry, status, None)

    def redirect(self, context: str, target: str) -> None:
        """``target`` a phone number: the gateway places the caller's call to it through the
        dial plan's outbound routes (a B2BUA call from now on, the app out of it); a SIP URI:
        302 with it as Contact."""
        entry = self.take_incoming(context)
        b2b = self.apps.b2bua
        if target.startswith(("sip:", "sips:")):
            del self.incoming[context]
            cancel_timer(entry.party.timer)
            self._reject_party(entry, 302, f"redirected to {target}",
                               (("Contact", f"<{target}>"),))
            return
        route = self.apps.route(target)  # 400 when no route: the caller stays held
        del self.incoming[context]
        party, call = entry.party, entry.call
        cancel_timer(party.timer)
        trunk_in, call.trunk_in = call.trunk_in, None
        call.cdr_status, call.release_side = 302, "app"
        call.reason = f"redirected to {target}"
        self.apps._party_gone(party, 302)
        self.apps._finish(call, quiet=True)
        assert trunk_in is not None
        log.info("call %s: redirected by the app to %s", call.id, target)
        b2b.start_call(entry.txn, entry.trunk, trunk_in, target, route)
        b2b.stack.flush()

    def _reject_party(self, entry: Incoming, status: int, text: str | None,
                      headers: tuple[tuple[str, str], ...] = ()) -> None:
        party = entry.party
        b2b = self.apps.b2bua
        b2b._respond(entry.txn, status, None, headers, to_tag=party.local_tag)
        b2b.stack.flush()
        call = entry.call
        call.cdr_status = status
        call.release_side = "gateway"
        call.reason = text or reason_phrase(status)
        self.apps._party_gone(party, status)
        self.apps._finish(call, quiet=True)

    def _not_answered(self, context: str) -> None:
        entry = self.incoming.pop(context, None)
        if entry is None:
            return
        entry.party.timer = None
        log.info("call %s: not answered by the app in %ss, 480", entry.call.id, self.apps.timeout)
        self._reject_party(entry, 480, "not answered by the app")

    def on_cancel(self, party: Party) -> None:
        """The caller gave up while the app was deciding (or before the ACK)."""
        b2b = self.apps.b2bua
        call = party.app
        for context, entry in list(self.incoming.items()):
            if entry.party is party:
                del self.incoming[context]
                cancel_timer(party.timer)
                b2b._respond(entry.txn, 487, None, (), to_tag=party.local_tag)
                call.cdr_status, call.release_side, call.reason = 487, "caller", "CANCEL"
                self.apps._party_gone(party, 487)
                self.apps._finish(call, quiet=True)
                return


    def stop(self) -> None:
        """Shutdown: every held caller gets 503."""
        for context in list(self.incoming):
            entry = self.incoming.pop(context)
            cancel_timer(entry.party.timer)
            self._reject_party(entry, 503, "gateway stopping")


def _e164(user: str) -> str:
    """A SIP user part as the E.164-ish number an identifier carries."""
    if user == "anonymous" or not user:
        return "anonymous"
    return user if user.startswith("+") else "+" + user
