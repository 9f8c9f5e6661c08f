"""Calls driven by an app over REST (ACS Call Automation): the SIP side.

An app call is a conference the gateway is itself a party to: the app's own leg (it plays,
collects DTMF, records) plus one SIP dialog per phone party, each ending at the gateway, their
media joined by a ``Bridge`` (N-1 mixing). Parties come and go (add/remove participant,
transfer) without the call ending; the call ends when no phone party is left, or when the app
terminates it.

Inbound: an INVITE whose dial plan action is ``app`` is held (100 Trying) while the IncomingCall
event goes to the webhooks; answer/reject/redirect act on it by its ``incomingCallContext``; no
decision within [rest] incoming_call_timeout releases the caller with 480.
Outbound: create_call and add_participant dial phone numbers through the dial plan's outbound
routes, with trunk failover on 408, 5xx and 6xx other than 603.

Events are emitted in causal order per call (``Delivery`` keeps the order); CallDisconnected is
the last event of a call.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from gateway.calls.appinbound import AppInbound
from gateway.calls.appmodel import AppCall, EventSink, Party
from gateway.calls.b2bua import ALLOW_HEADER, Dialog
from gateway.calls.conference import Conferences
from gateway.calls.sessiontimer import cancel_timer, has_option
from gateway.config import Trunk
from gateway.media.bridge import Bridge, BridgeError
from gateway.rest.errors import RestError
from gateway.rest.events import phone_identifier, result_information
from gateway.sip.message import Request, Response, make_response, reason_phrase
from gateway.sip.transaction import ClientTransaction, ServerTransaction, Target

if TYPE_CHECKING:
    from gateway.calls.b2bua import B2BUA
    from gateway.media.manager import MediaManager

log = logging.getLogger("gateway.app")

#: Statuses on which an outbound attempt moves to the route's next trunk.
_FAILOVER = frozenset({408, 500, 502, 503, 504})


def _failover(status: int) -> bool:
    return status in _FAILOVER or (status >= 600 and status != 603)


class AppCalls:
    """Every app call; the B2BUA hands app dialogs, responses and CANCELs here."""

    def __init__(self, b2bua: B2BUA, manager: MediaManager | None, events: EventSink,
                 timeout: float, max_calls: int) -> None:
        self.b2bua = b2bua
        self.manager = manager
        self.events = events
        self.timeout = timeout
        self.max_calls = max_calls
        self.resource = "gateway"
        self.calls: dict[str, AppCall] = {}
        self.by_server_id: dict[str, AppCall] = {}
        self.dialogs: dict[tuple[str, str], Party] = {}
        self.inbound = AppInbound(self)
        self.conferences = Conferences(self)
        self.on_end: Callable[[AppCall], None] | None = None

    # ------------------------------------------------------------------ events
    def emit(self, call: AppCall, name: str, data: Mapping[str, object] | None = None, *,
             context: str | None = None, url: str | None = None, with_context: bool = True
             ) -> None:
        """One callback event for ``call`` (to ``url`` when the operation named one)."""
        if call.app_left and name != "CallDisconnected":
            return
        body: dict[str, object] = {
            "callConnectionId": call.id,
            "serverCallId": call.server_call_id,
            "correlationId": call.correlation_id,
        }
        if with_context and context is not None:
            body["operationContext"] = context
        if data:
            body.update(data)
        if "resultInformation" not in body and with_context:
            body["resultInformation"] = result_information(200, 0, "Action completed successfully.")
        target = url or call.callback_uri
        if target:
            self.events.call_event(call.event_key, target, name, body)

    def speakers_changed(self, call: AppCall, legs: list[str]) -> None:
        """The room's dominant speaker changed: DominantSpeakersChanged lists the parties
        heard now, the dominant one first."""
        call.speaker_sequence += 1
        speakers = [party.identifier() for leg in legs
                    if (party := call.parties.get(leg)) is not None and party.state != "ended"]
        self.emit(call, "DominantSpeakersChanged",
                  {"speakers": speakers, "sequenceNumber": call.speaker_sequence},
                  with_context=False)

    def participants_updated(self, call: AppCall) -> None:
        call.sequence += 1
        self.emit(call, "ParticipantsUpdated",
                  {"sequenceNumber": call.sequence, "participants": call.participants()},
                  with_context=False)

    def on_ack(self, party: Party) -> None:
        """The caller's ACK for our 200: the app's call is connected."""
        if party.state != "ringing":
            return
        self._connected(party)


    # ------------------------------------------------------------------ outbound
    def create(self, numbers: list[str], callback: str, op_context: str | None,
               source: str, display: str | None) -> AppCall:
        if self.b2bua.draining:
            raise RestError(503, "8500", "the gateway is shutting down")
        if len(self.calls) >= self.max_calls or self.manager is None:
            raise RestError(503, "8500", "the gateway takes no more app calls now "
                            "(max_app_calls reached, or [media] anchor is off)")
        routes = [(n, self.route(n)) for n in numbers]
        call = AppCall(self, source)
        call.callback_uri = callback
        call.context = op_context
        call.source_display = display
        call.targets = [phone_identifier(n) for n in numbers]
        self._bridge(call)
        self._register(call)
        now = self.b2bua.stack.reactor.seconds()
        if self.b2bua.cdr is not None:
            self.b2bua.cdr.call_started(call.event_key, source or "app", numbers[0], None, now)
        for number, route in routes:
            if call.ended:  # every target so far failed at once: CreateCallFailed went out
                break
            self.dial(call, number, route, purpose="target")
        self.b2bua.stack.flush()
        return call

    def route(self, number: str) -> tuple[str, ...]:
        decision = self.b2bua.plan.route_outbound(number)
        if not decision.trunks:
            raise RestError(400, "8523", f"no outbound route for {number}")
        return tuple(decision.trunks)

    def _first_trunk(self, number: str) -> Trunk:
        for name in self.route(number):
            trunk = self.b2bua.trunks.get(name)
            if trunk is not None:
                return trunk
        raise RestError(400, "8523", f"no usable trunk for {number}")

    def dial(self, call: AppCall, number: str, route: tuple[str, ...], *, purpose: str,
             timeout: float | None = None, op_context: str | None = None,
             op_callback: str | None = None, invitation_id: str | None = None) -> Party:
        """A new outbound party toward ``number``: INVITE on the first usable trunk."""
        b2b = self.b2bua
        call.counter += 1
        name = f"p{call.counter}"
        party = Party(call, name, "", "", "", Target("udp", "0.0.0.0", 0), None, number, "out")
        party.purpose = purpose
        party.route = route
        party.attempt = -1
        party.op_context = op_context
        party.op_callback = op_callback
        party.invitation_id = invitation_id
        call.parties[name] = party
        if timeout:
            party.timer = b2b.call_later(timeout, self._invitation_timeout, party)
        self._next_trunk(party, 0, "")
        return party

    def _next_trunk(self, party: Party, last_status: int, last_reason: str) -> None:
        b2b = self.b2bua
        call = party.app
        now = b2b.stack.reactor.seconds()
        if party.trunk_state is not None:
            party.trunk_state.release()
            party.trunk_state = None
        while True:
            party.attempt += 1
            if party.attempt >= len(party.route):
                status = last_status or 503
                self._dial_failed(party, status, last_reason or reason_phrase(status))
                return
            trunk = b2b.trunks.get(party.route[party.attempt])
            state = b2b.trunk_states.get(party.route[party.attempt])
            if trunk is None or state is None or not state.up or not state.admit(now):
                continue
            party.trunk_state = state
            break
        call_id, local_uri, remote_uri, target = b2b.outbound_names(
            trunk, party.number, (call.source_number or "app", call.source_display))
        self.dialogs.pop(party.key, None)
        Dialog.__init__(party, party.name, call_id, local_uri, remote_uri, target, trunk.name)
        party.cdr_id = f"{party.name}.{party.attempt + 1}"
        assert call.bridge is not None
        try:
            body = call.bridge.offer(party.name, trunk.codecs, trunk.srtp)
        except BridgeError as exc:
            self._dial_failed(party, exc.status, exc.text)
            return
        self.dialogs[party.key] = party
        if b2b.cdr is not None:
            b2b.cdr.leg_started(call.event_key, party.cdr_id, "out", trunk.name, remote_uri, now,
                                call_id)
        txn = b2b.send_invite(party, trunk, party.number, body=body, timers=False)
        txn.owner = party
        party.invite_txn = txn

    def on_invite_response(self, party: Party, txn: ClientTransaction, resp: Response,
                           retransmission: bool) -> None:
        b2b = self.b2bua
        status = resp.status
        call = party.app
        if status < 200:
            if resp.to_tag:
                party.remote_tag = resp.to_tag
            return
        if status >= 300:
            if party.invite_txn is txn:
                party.invite_txn = None
            self.dialogs.pop(party.key, None)
            now = b2b.stack.reactor.seconds()
            if b2b.cdr is not None:
                b2b.cdr.leg_ended(call.event_key, party.cdr_id, now, status)
            if call.bridge is not None and party.name in call.bridge.legs():
                call.bridge.remove(party.name)
            if (_failover(status) and party.cancel_reason is None and not call.ended
                    and party.attempt + 1 < len(party.route)):
                self._next_trunk(party, status, resp.reason)
                return
            self._dial_failed(party, status, resp.get("reason") or resp.reason)
            return
        if retransmission:
            return
        if party.confirmed and party.remote_tag and resp.to_tag != party.remote_tag:
            self._drop_fork(party, txn, resp)
            return
        party.remote_tag = resp.to_tag
        contacts = resp.contacts
        if contacts:
            party.remote_target = str(contacts[0].uri)
        party.route_set = list(reversed(resp.get_all("record-route")))
        party.refer = has_option(resp.values("allow"), "refer")
        ack = b2b._in_dialog_request(party, "ACK", cseq=txn.request.cseq.seq)
        b2b.layer.send_ack_2xx(txn, ack)
        party.invite_txn = None
        if party.cancel_reason is not None or call.ended or party.state != "ringing":
            party.confirmed = True
            self._bye(party)  # answered as our CANCEL crossed it (RFC 3261 section 9.1)
            if party.state == "ringing":
                if b2b.cdr is not None:
                    b2b.cdr.leg_ended(call.event_key, party.cdr_id,
                                      b2b.stack.reactor.seconds(), 487)
                self._dial_failed(party, 487, "Request Terminated")
            return
        party.remote_sdp = resp.body
        try:
            assert call.bridge is not None
            call.bridge.answer(party.name, resp.body)
        except BridgeError as exc:
            log.info("call %s: %s's answer refused: %s", call.id, party.name, exc.text)
            party.confirmed = True
            self._bye(party)
            self._dial_failed(party, 488, exc.text, sent_bye=True)
            return
        party.confirmed = True
        self._connected(party)
        b2b.stack.flush()

    def _drop_fork(self, party: Party, txn: ClientTransaction, resp: Response) -> None:
        """A second 2xx from another fork of an INVITE already answered: its dialog is
        ACKed and ended with BYE (RFC 3261 section 13.2.2.4); the party keeps its own."""
        b2b = self.b2bua
        fork = Dialog(party.name, party.call_id, party.local_uri, party.remote_uri,
                      party.target, party.trunk)
        fork.local_tag = party.local_tag
        fork.remote_tag = resp.to_tag
        contacts = resp.contacts
        fork.remote_target = str(contacts[0].uri) if contacts else party.remote_target
        fork.route_set = list(reversed(resp.get_all("record-route")))
        fork.local_cseq = txn.request.cseq.seq
        b2b.layer.send_ack_2xx(txn, b2b._in_dialog_request(fork, "ACK",
                                                           cseq=txn.request.cseq.seq))
        bye = b2b._in_dialog_request(fork, "BYE")
        b2b.layer.send_request(bye, fork.target, b2b.stack.reactor.seconds())
        log.info("call %s: %s answered by a second fork (tag %s): ACK and BYE", party.app.id,
                 party.name, resp.to_tag)
        b2b.stack.flush()

    def on_failure(self, party: Party, txn: ClientTransaction, status: int, reason: str) -> None:
        """A transaction of the party's timed out or could not be sent."""
        if txn is party.refer_txn:
            party.refer_txn = None
            if party.transfer_to is not None:
                party.transfer_to = None
                self._transfer_failed(party, status, reason)
            return
        if txn is party.hold_txn:
            self._hold_failed(party, status, reason)
            return
        if party.invite_txn is txn:
            party.invite_txn = None
            self.dialogs.pop(party.key, None)
            call = party.app
            if self.b2bua.cdr is not None:
                self.b2bua.cdr.leg_ended(call.event_key, party.cdr_id,
                                         self.b2bua.stack.reactor.seconds(), status)
            if party.cancel_reason is None and party.attempt + 1 < len(party.route):
                self._next_trunk(party, status, reason)
            else:
                self._dial_failed(party, status, reason)
        elif party.state != "ended" and txn.request.method == "BYE":
            self._party_gone(party, 200)
            self._maybe_end(party.app)

    def _invitation_timeout(self, party: Party) -> None:
        party.timer = None
        if party.state == "ringing":
            self.cancel(party, "timeout")

    def cancel(self, party: Party, reason: str) -> None:
        """CANCEL a party still ringing (cancel_add_participant, a group call answered)."""
        txn = party.invite_txn
        party.cancel_reason = party.cancel_reason or reason
        if isinstance(txn, ClientTransaction):
            self.b2bua.layer.send_cancel(txn, self.b2bua.stack.reactor.seconds())
            self.b2bua.stack.flush()

    def _dial_failed(self, party: Party, status: int, reason: str, sent_bye: bool = False
                     ) -> None:
        call = party.app
        cancel_timer(party.timer)
        party.timer = None
        why = party.cancel_reason
        party.state = "ended"
        if party.trunk_state is not None:
            party.trunk_state.release()
            party.trunk_state = None
        if call.bridge is not None and party.name in call.bridge.legs():
            call.bridge.remove(party.name)
        if why == "timeout":  # the gateway gave up itself: not the callee's answer
            info = result_information(408, 500001, "invitation timed out", sip=(status, reason))
        else:
            info = result_information(status, 560000 + status if status < 700 else status,
                                      reason, sip=(status, reason))
        if party.purpose == "target":
            ringing = any(p.state == "ringing" for p in call.parties.values())
            if call.state == "connecting" and not ringing:
                call.cdr_status, call.release_side, call.reason = status, "callee", reason
                self.emit(call, "CreateCallFailed", {"resultInformation": info},
                          context=call.context)
                self._finish(call)
            else:  # a group call answered elsewhere, or a call the app ended meanwhile
                self._maybe_end(call)
            return
        if party.purpose == "add":
            if why == "app":
                self.emit(call, "CancelAddParticipantSucceeded",
                          {"invitationId": party.invitation_id},
                          context=party.cancel_context, url=party.cancel_callback)
            self.emit(call, "AddParticipantFailed",
                      {"participant": party.identifier(), "resultInformation": info},
                      context=party.op_context, url=party.op_callback)
        elif party.purpose == "transfer":
            self.emit(call, "CallTransferFailed", {"resultInformation": info},
                      context=party.op_context, url=party.op_callback)
        self._maybe_end(call)  # the last party of a call the app ended or left

    def _connected(self, party: Party) -> None:
        b2b = self.b2bua
        call = party.app
        cancel_timer(party.timer)
        party.timer = None
        party.state = "connected"
        party.confirmed = True
        now = b2b.stack.reactor.seconds()
        if b2b.cdr is not None:
            b2b.cdr.leg_answered(call.event_key, party.cdr_id, now)
        if call.room is not None:
            self.participants_updated(call)
            return
        if party.purpose == "target" or party.direction == "in":
            if call.state != "connecting":
                return
            call.state = "connected"
            if b2b.cdr is not None:
                b2b.cdr.call_answered(call.event_key, now, party.trunk)
            for other in call.parties.values():
                if other is not party and other.state == "ringing":
                    self.cancel(other, "answered")  # a group call: the first answer wins
            self.emit(call, "CallConnected", context=call.context)
            self.participants_updated(call)
        elif party.purpose == "add":
            self.emit(call, "AddParticipantSucceeded", {"participant": party.identifier()},
                      context=party.op_context, url=party.op_callback)
            self.participants_updated(call)
        elif party.purpose == "transfer":
            self.emit(call, "CallTransferAccepted",
                      {"transferTarget": party.identifier(),
                       "transferee": (call.phones()[0].identifier() if call.phones()
                                      else party.identifier())},
                      context=party.op_context, url=party.op_callback)
            self.app_leaves(call)

    # ------------------------------------------------------------------ mid-call
    def add(self, call: AppCall, number: str, *, timeout: float | None, op_context: str | None,
            op_callback: str | None) -> Party:
        self.require_connected(call)
        party = self.dial(call, number, self.route(number), purpose="add", timeout=timeout,
                          op_context=op_context, op_callback=op_callback,
                          invitation_id=str(uuid.uuid4()))
        self.b2bua.stack.flush()
        return party

    def remove(self, call: AppCall, party: Party, *, context: str | None = None,
               callback: str | None = None, event: bool = False) -> None:
        """Hang up one party: CANCEL while it rings (outbound), else BYE; with ``event``,
        RemoveParticipantSucceeded (before the call's end, if it is the last party)."""
        if party.state == "ringing" and party.direction == "out":
            self.cancel(party, "remove")
        elif party.state != "ended":
            self._bye(party)  # connected, or answered by us and waiting for its ACK
            self._party_gone(party, 200)
        if event:
            self.emit(call, "RemoveParticipantSucceeded", {"participant": party.identifier()},
                      context=context, url=callback)
        if call.phones():
            self.participants_updated(call)
        self._maybe_end(call)

    def hold(self, call: AppCall, party: Party, on: bool) -> None:
        if party.state != "connected" or call.bridge is None:
            raise RestError(400, "8585", "the participant is not connected")
        if party.hold_txn is not None:
            raise RestError(409, "8519", "a hold or unhold of this participant is in progress")
        body = call.bridge.reoffer(party.name, "sendonly" if on else "sendrecv")
        b2b = self.b2bua
        req = b2b._in_dialog_request(party, "INVITE", body=body,
                                     extra=[("content-type", "application/sdp", None)])
        party.local_sdp = body
        txn = b2b.layer.send_request(req, party.target, b2b.stack.reactor.seconds())
        txn.owner = party
        party.hold_txn = txn
        party.on_hold = on
        b2b.stack.flush()
        self.participants_updated(call)

    def on_reinvite_response(self, party: Party, txn: ClientTransaction, resp: Response) -> None:
        if resp.status < 200:
            return
        party.hold_txn = None
        b2b = self.b2bua
        if 200 <= resp.status < 300:
            b2b.layer.send_ack_2xx(txn, b2b._in_dialog_request(party, "ACK",
                                                               cseq=txn.request.cseq.seq))
            if resp.body and party.app.bridge is not None:
                try:
                    party.app.bridge.answer(party.name, resp.body)
                except BridgeError as exc:
                    log.info("call %s: re-INVITE answer refused: %s", party.app.id, exc.text)
            return
        self._hold_failed(party, resp.status, resp.reason)

    def _hold_failed(self, party: Party, status: int, reason: str) -> None:
        """The hold/unhold re-INVITE failed: the party's state goes back, HoldFailed."""
        party.hold_txn = None
        party.on_hold = not party.on_hold
        self.emit(party.app, "HoldFailed", {"resultInformation": result_information(
            status, 560000 + status if status < 700 else status, reason, sip=(status, reason))})
        if party.app.phones():
            self.participants_updated(party.app)

    def transfer(self, call: AppCall, number: str, op_context: str | None,
                 op_callback: str | None) -> None:
        """Transfer the call's phone party to ``number``: by REFER when it is the only party
        and its Allow lists REFER (the carrier places the new call; RFC 3515), otherwise the
        gateway dials ``number`` itself, joins the transferee to it and leaves."""
        self.require_connected(call)
        route = self.route(number)
        phones = call.phones()
        if any(p.transfer_to for p in phones):
            raise RestError(409, "8519", "a transfer is already in progress")
        if len(phones) == 1 and phones[0].refer and not call.phones("ringing"):
            self._refer(phones[0], number, op_context, op_callback)
            return
        self._bridged_transfer(call, number, route, op_context, op_callback)

    def _bridged_transfer(self, call: AppCall, number: str, route: tuple[str, ...],
                          op_context: str | None, op_callback: str | None) -> None:
        party = self.dial(call, number, route, purpose="transfer")
        party.op_context = op_context
        party.op_callback = op_callback
        self.b2bua.stack.flush()

    def _refer(self, party: Party, number: str, op_context: str | None,
               op_callback: str | None) -> None:
        b2b = self.b2bua
        trunk = self._first_trunk(number)
        host = f"[{trunk.host}]" if ":" in trunk.host else trunk.host
        refer_to = f"<sip:{number}@{host}:{trunk.port}"
        refer_to += ">" if trunk.transport == "udp" else f";transport={trunk.transport}>"
        req = b2b._in_dialog_request(party, "REFER", extra=[
            ("refer-to", refer_to, None),
            ("referred-by", f"<sip:{party.app.source_number or 'app'}@{b2b.config.sip.domain}>",
             None),
        ])
        txn = b2b.layer.send_request(req, party.target, b2b.stack.reactor.seconds())
        txn.owner = party
        party.refer_txn = txn
        party.transfer_to = number
        party.op_context = op_context
        party.op_callback = op_callback
        log.info("call %s: REFER %s to %s", party.app.id, party.name, number)

    def _refer_answered(self, party: Party, resp: Response) -> None:
        """The transferee's answer to our REFER: 2xx waits for NOTIFY; a refusal falls back
        to the gateway-bridged transfer."""
        if resp.status < 200:
            return
        party.refer_txn = None
        number = party.transfer_to
        if resp.status < 300 or number is None:
            return
        party.transfer_to = None
        log.info("call %s: REFER refused (%d), bridging the transfer", party.app.id,
                 resp.status)
        try:
            self._bridged_transfer(party.app, number, self.route(number), party.op_context,
                                   party.op_callback)
        except RestError as exc:
            self._transfer_failed(party, 500, exc.message)

    def _refer_progress(self, party: Party, req: Request) -> None:
        """A NOTIFY (Event: refer) with the sipfrag of the transferee's new call."""
        frag = req.body.decode("utf-8", "replace").split("\r\n", 1)[0].split("\n", 1)[0]
        parts = frag.split(" ", 2)
        if len(parts) < 2 or not parts[1].isdigit() or party.transfer_to is None:
            return
        status = int(parts[1])
        if status < 200:
            return
        call, number = party.app, party.transfer_to
        party.transfer_to = None
        if status >= 300:
            self._transfer_failed(party, status, parts[2] if len(parts) > 2 else "")
            return
        self.emit(call, "CallTransferAccepted",
                  {"transferTarget": phone_identifier(number),
                   "transferee": party.identifier()},
                  context=party.op_context, url=party.op_callback)
        call.release_side, call.reason = "app", f"transferred to {number}"
        self._bye(party)  # the transferor's part is done (RFC 5589 section 6.1)
        self._party_gone(party, 200)
        self._maybe_end(call)

    def _transfer_failed(self, party: Party, status: int, reason: str) -> None:
        self.emit(party.app, "CallTransferFailed", {"resultInformation": result_information(
            status, 560000 + status if status < 700 else status, reason,
            sip=(status, reason))}, context=party.op_context, url=party.op_callback)

    def app_leaves(self, call: AppCall) -> None:
        """hang_up by the app (or a finished transfer): the phones stay joined when two or
        more remain; otherwise the call ends. A conference room has no app participant:
        nothing leaves (terminate ends it)."""
        if call.room is not None:
            return
        if len(call.phones()) + len(call.phones("ringing")) < 2:
            self.terminate(call)
            return
        if call.media is not None:
            call.media.cancel_all(quiet=True)
        call.release_side = call.release_side or "app"
        self.emit(call, "CallDisconnected", context=None)
        call.app_left = True
        self.events.call_closed(call.event_key)

    def terminate(self, call: AppCall) -> None:
        if call.ended:
            return
        call.state = "disconnecting"
        call.release_side = call.release_side or "app"
        call.reason = call.reason or "terminated by the app"
        for party in list(call.parties.values()):
            if party.state == "ringing" and party.direction == "out":
                self.cancel(party, "ended")
            elif party.state != "ended" and party.confirmed:
                self._bye(party)  # connected, or answered and waiting for its ACK
                self._party_gone(party, 200)
        self.b2bua.stack.flush()
        self._maybe_end(call)

    def require_connected(self, call: AppCall) -> None:
        if call.ended or call.state != "connected" or call.app_left:
            raise RestError(400, "8501", f"call {call.id} is not established")

    # ------------------------------------------------------------------ in-dialog requests
    def in_dialog(self, txn: ServerTransaction, party: Party) -> None:
        b2b = self.b2bua
        req = txn.request
        call = party.app
        if req.cseq.seq <= party.remote_cseq:
            b2b._respond(txn, 500, "CSeq out of order", to_tag=party.local_tag)
            return
        party.remote_cseq = req.cseq.seq
        method = req.method
        if party.state == "ended":
            b2b._respond(txn, 481, to_tag=party.local_tag)
            return
        if method == "BYE":
            b2b._respond(txn, 200, to_tag=party.local_tag)
            if party.state != "ended":
                if call.release_side is None:
                    call.release_side, call.reason = "caller" if party.direction == "in" \
                        else "callee", req.get("reason") or "BYE"
                self._party_gone(party, 200)
                if call.phones() and not call.ended:
                    self.participants_updated(call)
                self._maybe_end(call)
            return
        if method == "INVITE" and call.bridge is not None and req.body:
            try:
                trunk = (b2b.trunks.get(party.trunk or "")
                         or b2b.user_trunks.get(party.trunk or ""))
                codecs = trunk.codecs if trunk is not None else b2b.config.sip.user_codecs
                srtp = trunk.srtp if trunk is not None else b2b.config.sip.user_srtp
                sdp = call.bridge.accept(party.name, req.body, codecs, srtp)
            except BridgeError as exc:
                b2b._respond(txn, exc.status, None, (("Warning", f'399 gateway "{exc.text}"'),),
                             to_tag=party.local_tag)
                return
            _, contact = b2b._local(party.target.transport)
            resp = make_response(req, 200, to_tag=party.local_tag,
                                 headers=[("Contact", contact), ("Allow", ALLOW_HEADER),
                                          ("Content-Type", "application/sdp")])
            b2b.layer.send_response(txn, Response(200, resp.reason, resp.fields, sdp),
                                    b2b.stack.reactor.seconds())
            party.local_sdp = sdp
            return
        if method == "INVITE":
            _, contact = b2b._local(party.target.transport)
            resp = make_response(req, 200, to_tag=party.local_tag,
                                 headers=[("Contact", contact),
                                          ("Content-Type", "application/sdp")])
            b2b.layer.send_response(txn, Response(200, resp.reason, resp.fields,
                                                  party.local_sdp), b2b.stack.reactor.seconds())
            return
        if method in ("UPDATE", "OPTIONS", "INFO", "NOTIFY"):
            b2b._respond(txn, 200, to_tag=party.local_tag)
            if method == "INFO" and call.media is not None:
                call.media.info(party, req)
            elif method == "NOTIFY" and (req.get("event") or "").lower().startswith("refer"):
                self._refer_progress(party, req)
            return
        b2b._respond(txn, 405, None, (("Allow", ALLOW_HEADER),), to_tag=party.local_tag)

    def on_response(self, party: Party, txn: ClientTransaction, resp: Response,
                    retransmission: bool) -> None:
        method = txn.request.method
        if method == "REFER":
            self._refer_answered(party, resp)
        elif method == "INVITE" and txn is party.hold_txn:
            self.on_reinvite_response(party, txn, resp)
        elif method == "INVITE":
            self.on_invite_response(party, txn, resp, retransmission)
        elif method == "BYE" and resp.status >= 200:
            self.dialogs.pop(party.key, None)

    # ------------------------------------------------------------------ endings
    def _bye(self, party: Party) -> None:
        b2b = self.b2bua
        req = b2b._in_dialog_request(party, "BYE")
        txn = b2b.layer.send_request(req, party.target, b2b.stack.reactor.seconds())
        txn.owner = party

    def _party_gone(self, party: Party, status: int) -> None:
        call = party.app
        was = party.state
        party.state = "ended"
        cancel_timer(party.timer)
        party.timer = None
        if was != "connected" and party.direction == "in":
            self.dialogs.pop(party.key, None)
        if party.trunk_state is not None:
            party.trunk_state.release()
            party.trunk_state = None
        quality: dict[str, object] = {}
        if call.bridge is not None and party.name in call.bridge.legs():
            quality = call.bridge.remove(party.name)
        if call.media is not None:
            call.media.party_gone(party)
        if call.room is not None:
            self.conferences.party_gone(call, party)
        cdr = self.b2bua.cdr
        if cdr is not None:
            cdr.leg_ended(call.event_key, party.cdr_id, self.b2bua.stack.reactor.seconds(),
                          status if was != "connected" else 200, **quality)

    def _maybe_end(self, call: AppCall) -> None:
        if call.ended:
            return
        live = [p for p in call.parties.values() if p.state != "ended"]
        if not live:
            self._finish(call)
        elif call.app_left and len(call.phones()) == 1 and not call.phones("ringing"):
            # the app left and only one phone is still in the call: nothing to join it to
            for party in call.phones():
                self._bye(party)
                self._party_gone(party, 200)
            self._finish(call)

    def _finish(self, call: AppCall, quiet: bool = False) -> None:
        if call.ended:
            return
        call.ended = True
        call.state = "disconnected"
        if call.media is not None:
            call.media.cancel_all(quiet=True)
            call.media.close()
        if not quiet and not call.app_left:
            self.emit(call, "CallDisconnected", context=None)
        if not call.app_left:
            self.events.call_closed(call.event_key)
        if call.bridge is not None:
            call.bridge.close()
        if call.room is not None:
            self.conferences.ended(call)
        # SIP transactions outlive the call (RFC 3261 timers, 32 s) and reference its parties:
        # let go of the media objects now, so that they do not linger in the collector's view
        call.bridge = None
        call.media = None
        if call.trunk_in is not None:
            call.trunk_in.release()
            call.trunk_in = None
        self.calls.pop(call.id, None)
        self.by_server_id.pop(call.server_call_id, None)
        for party in call.parties.values():
            self.dialogs.pop(party.key, None)
        b2b = self.b2bua
        if b2b.cdr is not None:
            b2b.cdr.call_ended(call.event_key, b2b.stack.reactor.seconds(), call.cdr_status or 200,
                               call.release_side or "gateway", call.reason or "ended", None)
        if self.on_end is not None:
            self.on_end(call)
        if not self.calls and not b2b.calls and b2b.on_idle is not None:
            b2b.on_idle()  # draining: the last call is gone
        log.info("app call %s ended (%s)", call.id, call.reason or "ended")

    def stop(self) -> None:
        """Shutdown: every call ends (BYE), every held caller gets 503."""
        self.inbound.stop()
        for call in list(self.calls.values()):
            self.terminate(call)
        for call in list(self.calls.values()):  # parties still ringing: no answer to wait for
            call.release_side = call.release_side or "gateway"
            call.reason = "gateway stopping"
            self._finish(call)

    # ------------------------------------------------------------------ helpers
    def _new_party(self, call: AppCall, call_id: str, local_uri: str, remote_uri: str,
                   target: Target, trunk: str | None, number: str, direction: str) -> Party:
        call.counter += 1
        name = f"p{call.counter}"
        party = Party(call, name, call_id, local_uri, remote_uri, target, trunk, number,
                      direction)
        call.parties[name] = party
        self.dialogs[party.key] = party
        return party

    def _bridge(self, call: AppCall) -> Bridge:
        assert self.manager is not None
        call.bridge = Bridge(self.manager, call.id,
                             on_dtmf=lambda leg, digit: self._dtmf(call, leg, digit),
                             on_timeout=lambda leg, why: self._media_timeout(call, leg, why),
                             on_speakers=lambda legs: self.speakers_changed(call, legs))
        call.bridge.on_sdp = lambda body: self.b2bua.sdp_seen(call.event_key, body)
        return call.bridge

    def _media_timeout(self, call: AppCall, leg: str, why: str) -> None:
        """A party sent no RTP for [media] timeout seconds: it is hung up (BYE)."""
        party = call.parties.get(leg)
        if party is not None:
            self.drop(call, party, why)

    def drop(self, call: AppCall, party: Party, why: str) -> None:
        """The gateway hangs ``party`` up (BYE) for ``why``; the call goes on without it."""
        leg = party.name
        if party.state != "connected" or call.ended:
            return
        log.info("call %s: %s %s, hanging it up", call.id, leg, why)
        if call.release_side is None:
            call.release_side, call.reason = "gateway", why
        self._bye(party)
        self._party_gone(party, 200)
        if call.phones():
            self.participants_updated(call)
        self._maybe_end(call)
        self.b2bua.stack.flush()

    def _dtmf(self, call: AppCall, leg: str, digit: str) -> None:
        party = call.parties.get(leg)
        if party is None or call.ended:
            return
        if call.room is not None and self.conferences.is_waiting(call, party):
            self.conferences.digit(call, party, digit)
        elif call.media is not None:
            call.media.dtmf(party, digit)

    def _register(self, call: AppCall) -> None:
        self.calls[call.id] = call
        self.by_server_id[call.server_call_id] = call

    def status(self) -> dict[str, object]:
        """Live figures for trunks.json (`acs-gateway trunks`): app calls and event delivery."""
        out: dict[str, object] = {
            "app_calls": len(self.calls),
            "app_incoming": len(self.inbound.incoming),
            "app_dialogs": len(self.dialogs),
            "rooms": self.conferences.status(),
        }
        stats = getattr(self.events, "stats", None)
        if stats is not None:
            out.update({f"events_{k}": v for k, v in stats().items()})
        return out

    def find(self, call_id: str) -> AppCall:
        call = self.calls.get(call_id)
        if call is None:
            raise RestError(404, "8522", f"call {call_id} not found")
        return call
