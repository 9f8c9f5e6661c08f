"""Blind transfer: a REFER from one party of a call, executed by the gateway (RFC 3515).

The transferor (the leg that sent REFER) asks the gateway to connect the other
party, the transferee, to the Refer-To target. The gateway answers 202, keeps
the transferor informed by NOTIFY with message/sipfrag bodies (section 2.4.4),
places a new leg to the target through the dial plan (with failover along the
route's trunks), and when the target answers it re-INVITEs the transferee with
the target's SDP, reports "200 OK" and releases the transferor with BYE. The
target's leg then takes the transferor's place in the call.

REFER with Replaces (attended transfer) is refused with 501. A target the dial
plan does not route, or one that fails, ends the subscription with that status;
the call goes on as it was.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.calls.sessiontimer import continue_origin
from gateway.calls.trunks import TrunkState
from gateway.sip.errors import SipParseError
from gateway.sip.message import HeaderField, Response, reason_phrase
from gateway.sip.transaction import ClientTransaction, ServerTransaction
from gateway.sip.uri import NameAddr, unescape

if TYPE_CHECKING:
    from gateway.calls.b2bua import B2BUA, Call, Leg

log = logging.getLogger("gateway.transfer")

SIPFRAG = "message/sipfrag;version=2.0"


@dataclass(slots=True)
class Transfer:
    transferor: Leg
    transferee: Leg
    number: str
    trunks: tuple[str, ...]
    attempt: int = -1
    target: Leg | None = None
    txn: ClientTransaction | None = None
    trunk: TrunkState | None = None
    count: int = 0  # target legs tried (CDR leg ids t1, t2, ...)


class Transfers:
    def __init__(self, b2bua: B2BUA) -> None:
        self.b2bua = b2bua

    # -- the REFER ---------------------------------------------------------
    def on_refer(self, txn: ServerTransaction, leg: Leg, other: Leg) -> None:
        b2bua = self.b2bua
        req = txn.request
        call = leg.call
        to_tag = req.to_tag
        values = req.values("refer-to")
        if len(values) != 1:
            b2bua._respond(txn, 400, "Exactly One Refer-To", to_tag=to_tag)
            return
        try:
            refer_to = NameAddr.parse(values[0], "Refer-To")
        except SipParseError as err:
            b2bua._respond(txn, 400, err.message, to_tag=to_tag)
            return
        uri = refer_to.uri
        if uri.headers is not None and "replaces" in uri.headers.lower():
            log.info("call %s: REFER with Replaces (attended transfer): 501", call.id)
            b2bua._respond(txn, 501, "Attended Transfer Not Supported", to_tag=to_tag)
            return
        if uri.scheme == "tel":
            number = uri.raw[4:].split(";", 1)[0]
        elif uri.is_sip and uri.user:
            number = unescape(uri.user.split(";", 1)[0])
        else:
            b2bua._respond(txn, 416 if not uri.is_sip else 400, to_tag=to_tag)
            return
        if call.transfer is not None:
            b2bua._respond(txn, 491, to_tag=to_tag)  # one transfer at a time
            return
        _, contact = b2bua._local(leg.target.transport)
        b2bua._respond(txn, 202, headers=(("Contact", contact),), to_tag=to_tag)
        self._notify(leg, "SIP/2.0 100 Trying", final=False)
        decision = b2bua.plan.route(number, leg.trunk)
        if decision.action not in ("outbound", "trunk") or not decision.trunks:
            status = 404 if decision.action == "none" else 480
            log.info("call %s: REFER to %s: %s", call.id, number, status)
            self._notify(leg, f"SIP/2.0 {status} {reason_phrase(status)}", final=True)
            return
        transfer = Transfer(leg, other, decision.number, decision.trunks)
        call.transfer = transfer
        log.info("call %s: leg %s transfers to %s", call.id, leg.name, decision.number)
        self._next(call, transfer, 0, "")

    def _notify(self, leg: Leg, frag: str, *, final: bool) -> None:
        from gateway.calls.b2bua import Pending

        b2bua = self.b2bua
        state = "terminated;reason=noresource" if final else "active;expires=60"
        extra: list[HeaderField] = [
            ("event", "refer", None),
            ("subscription-state", state, None),
            ("content-type", SIPFRAG, None),
        ]
        req = b2bua._in_dialog_request(leg, "NOTIFY", extra=extra, body=frag.encode() + b"\r\n")
        notify = b2bua.layer.send_request(req, leg.target, b2bua.stack.reactor.seconds())
        notify.owner = Pending("notify", leg.call, leg)

    # -- the target leg ------------------------------------------------------
    def _next(self, call: Call, transfer: Transfer, status: int, reason: str) -> None:
        b2bua = self.b2bua
        if transfer.trunk is not None:
            transfer.trunk.release()
            transfer.trunk = None
        now = b2bua.stack.reactor.seconds()
        while True:
            transfer.attempt += 1
            if call.ended:
                call.transfer = None
                return
            if transfer.attempt >= len(transfer.trunks):
                status = status or 503
                self._failed(call, transfer, status, reason or reason_phrase(status))
                return
            name = transfer.trunks[transfer.attempt]
            trunk = b2bua.trunks.get(name)
            state = b2bua.trunk_states.get(name)
            if trunk is None or state is None or not state.up or not state.admit(now):
                continue
            transfer.trunk = state
            break
        self._invite(call, transfer, trunk.name)

    def _invite(self, call: Call, transfer: Transfer, trunk_name: str) -> None:
        from gateway.calls.b2bua import DEFAULT_MAX_FORWARDS

        b2bua = self.b2bua
        transferee = transfer.transferee
        try:
            who = NameAddr.parse(transferee.remote_uri, "From").uri.user or "anonymous"
        except SipParseError:
            who = "anonymous"
        transfer.count += 1
        body = transferee.remote_sdp
        if body and call.media is not None:
            from gateway.calls.media import MediaRefused, side_of

            try:
                # anchored: the target gets the gateway's offer on the transferor's side
                body = b2bua.media.local_offer(call, side_of(call, transfer.transferor), body,
                                               b2bua.trunks[trunk_name])
            except MediaRefused as exc:
                log.info("call %s: no offer for the transfer target: %s", call.id, exc.text)
                self._failed(call, transfer, exc.status, "Not Acceptable Here")
                return
        copied: list[HeaderField] = (
            [("content-type", "application/sdp", None)] if body else []
        )
        transfer.target, transfer.txn = b2bua.outbound_invite(
            call, b2bua.trunks[trunk_name], transfer.number,
            cdr_id=f"t{transfer.count}",
            caller=(who, None),
            max_forwards=DEFAULT_MAX_FORWARDS,
            body=body,
            copied=copied,
            timers=False,
            purpose="transfer",
        )

    def on_response(self, call: Call, leg: Leg, txn: ClientTransaction, resp: Response,
                    retransmission: bool) -> None:
        transfer = call.transfer
        if transfer is None or transfer.target is not leg:
            return
        status = resp.status
        if status < 200:
            leg.remote_tag = resp.to_tag or leg.remote_tag
            return
        if status >= 300:
            self._target_failed(call, transfer, leg, status, resp.reason)
            return
        if retransmission:
            return
        self._connect(call, transfer, leg, txn, resp)

    def on_failure(self, call: Call, leg: Leg, status: int, reason: str) -> None:
        transfer = call.transfer
        if transfer is not None and transfer.target is leg:
            self._target_failed(call, transfer, leg, status, reason)

    def _target_failed(self, call: Call, transfer: Transfer, leg: Leg, status: int,
                       reason: str) -> None:
        from gateway.calls.b2bua import _failover_status

        b2bua = self.b2bua
        b2bua.dialogs.pop(leg.key, None)
        transfer.target = None
        transfer.txn = None
        if b2bua.cdr is not None:
            b2bua.cdr.leg_ended(call.id, leg.cdr_id, b2bua.stack.reactor.seconds(), status)
        if _failover_status(status) and transfer.attempt + 1 < len(transfer.trunks):
            self._next(call, transfer, status, reason)
            return
        if transfer.trunk is not None:
            transfer.trunk.release()
            transfer.trunk = None
        self._failed(call, transfer, status, reason)

    def _failed(self, call: Call, transfer: Transfer, status: int, reason: str) -> None:
        call.transfer = None
        log.info("call %s: transfer to %s failed: %s", call.id, transfer.number, status)
        if not call.ended:
            self._notify(transfer.transferor, f"SIP/2.0 {status} {reason}", final=True)

    def _connect(self, call: Call, transfer: Transfer, leg: Leg, txn: ClientTransaction,
                 resp: Response) -> None:
        """The target answered: it takes the transferor's place in the call."""
        from gateway.calls.b2bua import Pending

        b2bua = self.b2bua
        now = b2bua.stack.reactor.seconds()
        leg.remote_tag = resp.to_tag
        contacts = resp.contacts
        leg.remote_target = str(contacts[0].uri) if contacts else leg.remote_target
        leg.route_set = list(reversed(resp.get_all("record-route")))
        leg.confirmed = True
        leg.remote_sdp = resp.body or leg.remote_sdp
        b2bua.layer.send_ack_2xx(txn, b2bua._in_dialog_request(leg, "ACK",
                                                                 cseq=txn.request.cseq.seq))
        transferor, transferee = transfer.transferor, transfer.transferee
        call.transfer = None
        # the transferee now talks to the target: offer it the target's SDP (anchored: the
        # gateway's ports stay, the target's media is joined to them; the transferee gets
        # its unchanged SDP again, which RFC 3264 section 8 allows)
        if resp.body:
            extra: list[HeaderField] = [("content-type", "application/sdp", None)]
            if call.media is not None:
                from gateway.calls.media import side_of

                b2bua.media.local_answer(call, side_of(call, transferor), resp.body)
                offer = b2bua.media.current(call, side_of(call, transferee),
                                            transferee.local_sdp)
            else:
                offer = continue_origin(transferee.local_sdp, resp.body)
            reoffer = b2bua._in_dialog_request(transferee, "INVITE", extra=extra, body=offer)
            transferee.local_sdp = offer
            out = b2bua.layer.send_request(reoffer, transferee.target, now)
            out.owner = Pending("reoffer", call, transferee)
            transferee.invite_out = out
        self._notify(transferor, "SIP/2.0 200 OK", final=True)
        release = b2bua._in_dialog_request(transferor, "BYE")
        bye = b2bua.layer.send_request(release, transferor.target, now)
        bye.owner = Pending("release", call, transferor)
        # the target's leg replaces the transferor's, with its trunk's accounting
        if transferor is call.a:
            call.a = leg
            old, call.trunk_in = call.trunk_in, transfer.trunk
        else:
            call.b = leg
            old, call.trunk_out = call.trunk_out, transfer.trunk
        if old is not None:
            old.release()
        transfer.trunk = None
        call.transfer_info = (
            f"blind transfer by leg {transferor.cdr_id} to {transfer.number} ({leg.cdr_id})"
        )
        cdr = b2bua.cdr
        if cdr is not None:
            cdr.leg_ended(call.id, transferor.cdr_id, now, 200)
            cdr.leg_answered(call.id, leg.cdr_id, now)
        log.info("call %s: transferred to %s", call.id, transfer.number)

    def on_reoffer_answer(self, leg: Leg, txn: ClientTransaction, resp: Response) -> None:
        b2bua = self.b2bua
        if resp.status < 200:
            return
        leg.invite_out = None
        if resp.status < 300:
            b2bua.layer.send_ack_2xx(txn, b2bua._in_dialog_request(leg, "ACK",
                                                                     cseq=txn.request.cseq.seq))
            if resp.body:
                leg.remote_sdp = resp.body
        else:
            log.warning("call %s: the transferee refused the new media (%d)", leg.call.id,
                        resp.status)

    def call_ended(self, call: Call) -> None:
        """The call ended during a transfer: give up the target leg."""
        transfer = call.transfer
        if transfer is None:
            return
        call.transfer = None
        b2bua = self.b2bua
        if transfer.txn is not None:
            b2bua.layer.send_cancel(transfer.txn, b2bua.stack.reactor.seconds())
        if transfer.target is not None:
            b2bua.dialogs.pop(transfer.target.key, None)
        if transfer.trunk is not None:
            transfer.trunk.release()
            transfer.trunk = None
