"""Reliable provisional responses (RFC 3262), handled on each leg on its own.

Toward a carrier (the gateway is UAC) a reliable 18x is PRACKed by the gateway itself. Toward
a caller that supports 100rel (the gateway is UAS) relayed 18x are sent reliably: one
unacknowledged at a time with an RSeq, retransmitted with T1 doubling until its PRACK,
later ones queued; no PRACK within 64*T1 ends the call with a 5xx (section 3).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.calls.sessiontimer import cancel_timer
from gateway.sip.message import HeaderField, Response
from gateway.sip.transaction import ClientTransaction, ServerTransaction

if TYPE_CHECKING:
    from gateway.calls.b2bua import B2BUA, Call, Leg

log = logging.getLogger("gateway.calls")


@dataclass(slots=True)
class Reliable:
    """Reliable provisionals toward the caller (RFC 3262 section 3): one unacknowledged at
    a time, retransmitted with T1 doubling until its PRACK, later ones queued."""

    rseq: int
    pending: Response | None = None
    interval: float = 0.0
    elapsed: float = 0.0
    timer: Any = None
    queue: list[Response] = field(default_factory=list)


class ReliableProvisionals:
    def __init__(self, b2bua: B2BUA) -> None:
        self.b2bua = b2bua

    def prack(self, leg: Leg, txn: ClientTransaction, resp: Response) -> bool:
        """PRACK a trunk's reliable provisional; False for a retransmission (section 4)."""
        gw = self.b2bua
        value = resp.get("rseq")
        if value is None or not value.strip().isdigit():
            return False  # RFC 3262 section 4: a reliable provisional without RSeq is ignored
        rseq = int(value.strip())
        if leg.rseq_seen and rseq <= leg.rseq_seen:
            return False
        leg.rseq_seen = rseq
        invite = txn.request
        extra: list[HeaderField] = [("rack", f"{rseq} {invite.cseq.seq} INVITE", None)]
        from gateway.calls.b2bua import Pending

        prack = gw._in_dialog_request(leg, "PRACK", extra=extra)
        out = gw.layer.send_request(prack, leg.target, gw.stack.reactor.seconds())
        out.owner = Pending("notify", leg.call, leg)  # its answer needs nothing more
        return True

    def send(self, call: Call, reliable: Reliable, out: Response) -> None:
        gw = self.b2bua
        if reliable.pending is not None:
            reliable.queue.append(out)  # one at a time (section 3)
            return
        reliable.rseq += 1
        out = out.with_header("require", "100rel").with_header("rseq", str(reliable.rseq))
        reliable.pending = out
        reliable.interval = gw.config.sip.t1
        reliable.elapsed = 0.0
        gw.layer.send_response(call.a_txn, out, gw.stack.reactor.seconds())
        reliable.timer = gw.call_later(reliable.interval, self.resend, call)

    def resend(self, call: Call) -> None:
        gw = self.b2bua
        reliable = call.reliable
        if reliable is None or reliable.pending is None or call.a_answered or call.ended:
            return
        reliable.elapsed += reliable.interval
        if reliable.elapsed >= 64 * gw.config.sip.t1:
            log.info("call %s: no PRACK from the caller", call.id)
            reliable.pending = None
            gw._released(call, 504, "gateway", "no PRACK")
            gw._fail(call, 504, "No PRACK")  # section 3: reject with a 5xx
            if call.b_txn is not None:
                gw.layer.send_cancel(call.b_txn, gw.stack.reactor.seconds())
            gw.stack.flush()
            return
        gw.layer.send_response(call.a_txn, reliable.pending, gw.stack.reactor.seconds())
        reliable.interval = min(reliable.interval * 2, gw.config.sip.t2)
        reliable.timer = gw.call_later(reliable.interval, self.resend, call)
        gw.stack.flush()

    def stop(self, reliable: Reliable) -> None:
        cancel_timer(reliable.timer)
        reliable.timer = None
        reliable.pending = None
        reliable.queue.clear()

    def on_prack(self, txn: ServerTransaction, call: Call, leg: Leg) -> None:
        gw = self.b2bua
        req = txn.request
        reliable = call.reliable
        rack = (req.get("rack") or "").split()
        pending = reliable.pending if reliable is not None else None
        if (
            leg is not call.a
            or reliable is None
            or pending is None
            or len(rack) != 3
            or rack[0] != str(reliable.rseq)
            or rack[1] != str(call.invite.cseq.seq)
        ):
            gw._respond(txn, 481, to_tag=req.to_tag)  # section 3: no match
            return
        gw._respond(txn, 200, to_tag=req.to_tag)
        cancel_timer(reliable.timer)
        reliable.timer = None
        reliable.pending = None
        if reliable.queue and not call.a_answered:
            self.send(call, reliable, reliable.queue.pop(0))
