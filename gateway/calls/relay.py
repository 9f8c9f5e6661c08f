"""In-dialog requests of a relayed (two-leg) call: each request from one leg is answered
locally (BYE, PRACK, REFER, session refreshes, glare) or relayed to the other leg as a new
client transaction, its responses relayed back; the ACK of a late-offer 2xx carries the answer
the other leg's ACK brings (RFC 3261 section 13.2.1).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import gateway.calls.b2bua as b2bua_module
from gateway.calls.media import MediaRefused, side_of
from gateway.sip.ids import random_hex
from gateway.sip.message import HeaderField, Request, Response, make_response
from gateway.sip.transaction import ClientTransaction, ServerTransaction

if TYPE_CHECKING:
    from gateway.calls.b2bua import B2BUA, Deferred, Leg, Pending

log = logging.getLogger("gateway.calls")


class DialogRelay:
    """The in-dialog half of the B2BUA (``B2BUA.relay``)."""

    def __init__(self, b2b: B2BUA) -> None:
        self.b2b = b2b

    def in_dialog(self, txn: ServerTransaction, to_tag: str) -> None:
        b2b = self.b2b
        req = txn.request
        leg = b2b.dialogs.get((req.call_id, to_tag))
        if leg is None and b2b.apps is not None:
            party = b2b.apps.dialogs.get((req.call_id, to_tag))
            if party is not None:
                b2b.apps.in_dialog(txn, party)
                return
        if leg is None:
            b2b._respond(txn, 481, to_tag=None)
            return
        call = leg.call
        cseq = req.cseq.seq
        if cseq <= leg.remote_cseq and req.method != "ACK":
            b2b._respond(txn, 500, "CSeq out of order", to_tag=to_tag)
            return
        leg.remote_cseq = cseq
        other = call.b if leg is call.a else call.a
        if req.method == "BYE":
            b2b._respond(txn, 200, to_tag=to_tag)
            b2b._released(call, 200, "caller" if leg is call.a else "callee",
                           req.get("reason") or "BYE")
            if other is not None and other.confirmed and not call.ended:
                b2b._bye(other)
                b2b._detach(call)
            elif other is not None and not call.a_answered:
                b2b._fail(call, 480, "Callee Hung Up")
            else:
                b2b._end(call, "bye")
            return
        if req.method == "PRACK":
            b2b.provisionals.on_prack(txn, call, leg)
            return
        early = req.method in ("UPDATE", "INFO") and other is not None and bool(other.remote_tag)
        if other is None or not (other.confirmed or early) or call.ended:
            b2b._respond(txn, 481, to_tag=to_tag)
            return
        if req.method == "REFER":
            b2b.transfers.on_refer(txn, leg, other)
            return
        if leg.session is not None and req.method in ("INVITE", "UPDATE"):
            b2b.sessions.arm(leg)  # any re-INVITE or UPDATE from the peer refreshes
            if b2b.sessions.answer_refresh(txn, leg):
                return
        if req.method == "INVITE":
            if leg.invite_out is not None:
                # glare: our own re-INVITE toward this peer is pending (RFC 3261 14.1)
                b2b._respond(txn, 491, to_tag=to_tag)
                return
            if leg.invite_in is not None or other.invite_out is not None:
                # a second INVITE before the first got its final answer (RFC 3261 14.2)
                retry = str(int(random_hex(1), 16) % 11)  # random 0-10 s, RFC 3261 14.2
                b2b._respond(txn, 500, to_tag=to_tag, headers=(("Retry-After", retry),))
                return
        self.relay_request(txn, leg, other)

    def on_ack(self, request: Request, txn: ServerTransaction | None) -> None:
        """An ACK for a 2xx we sent; with a late offer it carries the answer to pass on."""
        b2b = self.b2b
        if txn is None:
            return
        owner = txn.owner
        party = b2b._app_party(owner)
        if party is not None and b2b.apps is not None:
            b2b.apps.on_ack(party)
            return
        deferred: Deferred | None = None
        if isinstance(owner, b2bua_module.Call):
            deferred, owner.deferred_ack = owner.deferred_ack, None
        elif isinstance(owner, b2bua_module.Deferred):
            deferred, txn.owner = owner, None
        if deferred is None:
            return
        extra: list[HeaderField] = []
        ctype = request.get("content-type")
        body = request.body
        call = deferred.leg.call
        origin = call.a if deferred.leg is call.b else call.b
        refused: MediaRefused | None = None
        if body and origin is not None:
            try:
                body = b2b.media.answer(call, side_of(call, origin), body)
            except MediaRefused as exc:
                refused, body = exc, b""
        if body and ctype is not None:
            extra.append(("content-type", ctype, None))
        ack = b2b._in_dialog_request(
            deferred.leg, "ACK", cseq=deferred.txn.request.cseq.seq, extra=extra, body=body,
        )
        if body:
            deferred.leg.local_sdp = body
            if origin is not None:
                origin.remote_sdp = request.body
        b2b.layer.send_ack_2xx(deferred.txn, ack)
        if refused is not None and not call.ended:
            log.info("call %s: the answer in the ACK was refused: %s", call.id, refused.text)
            b2b._released(call, refused.status, "gateway", refused.text)
            b2b._bye(call.a)
            if call.b is not None:
                b2b._bye(call.b)
            b2b._detach(call)

    def relay_request(self, txn: ServerTransaction, leg: Leg, other: Leg) -> None:
        b2b = self.b2b
        req = txn.request
        extra = [f for f in req.fields if f[0] not in b2bua_module.OWNED]
        body = req.body
        sdp = bool(body) and req.content_type == "application/sdp"
        if sdp:
            try:
                body = b2b.media.offer(leg.call, side_of(leg.call, leg), body, to_leg=other)
            except MediaRefused as exc:
                b2b._respond(txn, exc.status, None, (b2b.media.warning(exc.text),),
                              to_tag=req.to_tag)
                return
        out = b2b._in_dialog_request(other, req.method, extra=extra, body=body)
        client = b2b.layer.send_request(out, other.target, b2b.stack.reactor.seconds())
        client.owner = b2bua_module.Pending("relay", leg.call, other, txn)
        if sdp:
            leg.remote_sdp = req.body
            other.local_sdp = body
        if req.method == "INVITE":
            leg.invite_in = txn
            other.invite_out = client

    def relay_response(self, owner: Pending, txn: ClientTransaction, resp: Response) -> None:
        b2b = self.b2b
        srv = owner.server_txn
        if srv is None or resp.status == 100:
            return
        call = owner.call
        if txn.is_invite and resp.status >= 200 and owner.leg is not None and call is not None:
            owner.leg.invite_out = None
            origin = call.a if owner.leg is call.b else call.b
            if origin is not None:
                origin.invite_in = None
        if txn.is_invite and 200 <= resp.status < 300 and owner.leg is not None:
            if not txn.request.body and resp.body:
                # late offer: the ACK waits for the answer
                srv.owner = b2bua_module.Deferred(txn, owner.leg)
            else:
                ack = b2b._in_dialog_request(owner.leg, "ACK", cseq=txn.request.cseq.seq)
                b2b.layer.send_ack_2xx(txn, ack)
        body = resp.body
        if 200 <= resp.status < 300 and body and owner.leg is not None and call is not None:
            owner.leg.remote_sdp = body
            origin = call.a if owner.leg is call.b else call.b
            if origin is not None and resp.content_type == "application/sdp":
                side = side_of(call, owner.leg)
                try:
                    if txn.is_invite and not txn.request.body:
                        body = b2b.media.offer(call, side, body, to_leg=origin)
                    else:
                        body = b2b.media.answer(call, side, body, to_leg=origin)
                except MediaRefused as exc:
                    log.info("call %s: %s's SDP refused: %s", call.id, side, exc.text)
                    body = b2b.media.current(call, side_of(call, origin), body)
                origin.local_sdp = body
        out = make_response(srv.request, resp.status, resp.reason, to_tag=srv.request.to_tag)
        extra = [f for f in resp.fields
                 if f[0] not in b2bua_module.OWNED or f[0] in ("require", "supported")]
        if txn.is_invite and resp.status < 300 and owner.call is not None:
            _, contact = b2b._local(srv.source.transport)
            extra.append(("contact", contact, None))
        out = Response(out.status, out.reason, [*out.fields, *extra], body)
        b2b.layer.send_response(srv, out, b2b.stack.reactor.seconds())
