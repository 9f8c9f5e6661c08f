"""gateway.sip.transaction: RFC 3261 section 17 (+ RFC 6026, RFC 3581) with a hand-stepped clock.

A client layer (UAC, 192.0.2.1) and a server layer (UAS, 192.0.2.2) are wired by an
in-memory network that delivers instantly, parses every message with the real codec, and
drops messages on request. Time only moves when ``Net.run`` steps it to the next deadline,
so retransmission instants are asserted exactly. Every scenario ends with ``assert_clean``:
no transaction and no timer left (no leaks).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from gateway.sip import transaction
from gateway.sip.message import (
    Request,
    Response,
    make_ack,
    make_cancel,
    make_request,
    make_response,
    parse_datagram,
)
from gateway.sip.transaction import (
    ACCEPTED,
    CALLING,
    COMPLETED,
    CONFIRMED,
    PROCEEDING,
    TERMINATED,
    TRYING,
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
    Timers,
    TransactionLayer,
    TransactionStateError,
    TransactionTimeout,
    TransportFailed,
)

UAC_HOST = "192.0.2.1"
UAS_HOST = "192.0.2.2"
T64 = 32.0  # 64*T1 with the default T1 = 0.5


# --------------------------------------------------------------------------
# message builders (real codec messages)
# --------------------------------------------------------------------------
def request(
    method: str = "INVITE",
    *,
    branch: str | None = "z9hG4bKinv1",
    transport: str = "UDP",
    sent_by: str = f"{UAC_HOST}:5060",
    rport: bool = True,
    cseq: int = 1,
    call_id: str = "call-1@192.0.2.1",
    from_tag: str = "ft1",
    uri: str = f"sip:bob@{UAS_HOST}",
    via: str | None = None,
) -> Request:
    if via is None:
        via = f"SIP/2.0/{transport} {sent_by}"
        if branch is not None:
            via += f";branch={branch}"
        if rport:
            via += ";rport"
    return make_request(
        method,
        uri,
        [
            ("Via", via),
            ("Max-Forwards", "70"),
            ("From", f"<sip:alice@example.com>;tag={from_tag}"),
            ("To", "<sip:bob@example.com>"),
            ("Call-ID", call_id),
            ("CSeq", f"{cseq} {method}"),
            ("Contact", f"<sip:alice@{UAC_HOST}:5060>"),
        ],
    )


def ack_for_2xx(invite: Request, response: Response, branch: str = "z9hG4bKack2xx") -> Request:
    """The TU's ACK for a 2xx (RFC 3261 section 13.2.2.4): new branch, To from the 2xx."""
    return make_request(
        "ACK",
        f"sip:bob@{UAS_HOST}:5060",
        [
            ("Via", f"SIP/2.0/UDP {UAC_HOST}:5060;branch={branch};rport"),
            ("Max-Forwards", "70"),
            ("From", invite.get("from") or ""),
            ("To", response.get("to") or ""),
            ("Call-ID", invite.call_id),
            ("CSeq", f"{invite.cseq.seq} ACK"),
        ],
    )


# --------------------------------------------------------------------------
# the in-memory network
# --------------------------------------------------------------------------
@dataclass
class Packet:
    time: float
    sender: str
    target: Target
    line: str  # start line
    data: bytes
    dropped: bool


@dataclass
class Side:
    name: str
    layer: TransactionLayer
    addr: Target  # how the peer sees this side
    events: list[tuple[float, Event]] = field(default_factory=list)
    tu: Callable[[Event], None] | None = None  # reacts to each event as it happens


class Net:
    def __init__(self, transport: str = "udp", timers: Timers | None = None) -> None:
        timers = timers or Timers()
        reliable = transport != "udp"
        self.now = 0.0
        self.transport = transport
        self.uac = Side(
            "uac",
            TransactionLayer(timers),
            Target(transport, UAC_HOST, 40000 if reliable else 5060, 1 if reliable else None),
        )
        self.uas = Side(
            "uas",
            TransactionLayer(timers),
            Target(transport, UAS_HOST, 5060, 1 if reliable else None),
        )
        self.to_uas = Target(transport, UAS_HOST, 5060)  # the UAC's target for requests
        self.wire: list[Packet] = []
        self.losses: list[str] = []  # drop the next message whose start line has this prefix
        self.blackhole: set[str] = set()  # senders whose every message is lost

    # -- plumbing -------------------------------------------------------
    def lose(self, prefix: str) -> None:
        self.losses.append(prefix)

    def _lost(self, sender: str, line: str) -> bool:
        if sender in self.blackhole:
            return True
        for i, prefix in enumerate(self.losses):
            if line.startswith(prefix):
                del self.losses[i]
                return True
        return False

    def flush(self) -> None:
        moved = True
        while moved:
            moved = False
            for side, peer in ((self.uac, self.uas), (self.uas, self.uac)):
                for data, target in side.layer.pop_outgoing():
                    moved = True
                    line = data.split(b"\r\n", 1)[0].decode("latin-1")
                    lost = self._lost(side.name, line)
                    self.wire.append(Packet(self.now, side.name, target, line, data, lost))
                    if lost:
                        continue
                    assert target.host == peer.addr.host, f"{line!r} sent to {target}"
                    for event in peer.layer.receive(parse_datagram(data), side.addr, self.now):
                        peer.events.append((self.now, event))
                        if peer.tu is not None:
                            peer.tu(event)

    def run(self, until: float) -> None:
        """Step the clock from deadline to deadline up to ``until``."""
        self.flush()
        while True:
            deadlines = [
                d
                for d in (self.uac.layer.next_timer(), self.uas.layer.next_timer())
                if d is not None
            ]
            if not deadlines or min(deadlines) > until:
                break
            self.now = min(deadlines)
            for side in (self.uac, self.uas):
                for event in side.layer.handle_timer(self.now):
                    side.events.append((self.now, event))
                    if side.tu is not None:
                        side.tu(event)
            self.flush()
        self.now = until

    # -- TU helpers -----------------------------------------------------
    def send(self, req: Request) -> ClientTransaction:
        txn = self.uac.layer.send_request(req, self.to_uas, self.now)
        self.flush()
        return txn

    def respond(self, txn: ServerTransaction, status: int, tag: str = "uas1") -> Response:
        response = make_response(txn.request, status, to_tag=tag)
        self.uas.layer.send_response(txn, response, self.now)
        self.flush()
        return response

    def server_txn(self, index: int = 0) -> ServerTransaction:
        txns = [e.txn for _, e in self.uas.events if isinstance(e, RequestReceived)]
        return txns[index]

    def sent(self, sender: str, prefix: str) -> list[float]:
        """Instants at which ``sender`` put a message starting with ``prefix`` on the wire."""
        return [p.time for p in self.wire if p.sender == sender and p.line.startswith(prefix)]

    def events(self, side: str, kind: type) -> list[tuple[float, Event]]:
        s = self.uac if side == "uac" else self.uas
        return [(t, e) for t, e in s.events if isinstance(e, kind)]

    def statuses(self, side: str = "uac") -> list[tuple[float, int, bool]]:
        out = []
        for t, e in self.events(side, ResponseReceived):
            assert isinstance(e, ResponseReceived)
            out.append((t, e.response.status, e.retransmission))
        return out

    def assert_clean(self) -> None:
        self.run(self.now + 1000.0)
        for side in (self.uac, self.uas):
            assert side.layer.client_count == 0, side.name
            assert side.layer.server_count == 0, side.name
            assert side.layer.next_timer() is None, side.name


def answer_with(net: Net, *statuses: int) -> None:
    """A UAS TU that answers every new INVITE at once with ``statuses`` (in order)."""

    def tu(event: Event) -> None:
        if isinstance(event, RequestReceived) and event.txn.request.method == "INVITE":
            for status in statuses:
                response = make_response(event.txn.request, status, to_tag="uas1")
                net.uas.layer.send_response(event.txn, response, net.now)

    net.uas.tu = tu


def ack_every_2xx(net: Net) -> None:
    """A UAC TU that ACKs each new 2xx (the layer re-sends it on retransmissions)."""

    def tu(event: Event) -> None:
        if (
            isinstance(event, ResponseReceived)
            and 200 <= event.response.status < 300
            and event.txn.is_invite
            and not event.retransmission
        ):
            ack = ack_for_2xx(event.txn.request, event.response)
            net.uac.layer.send_ack_2xx(event.txn, ack)

    net.uac.tu = tu


# --------------------------------------------------------------------------
# client INVITE (RFC 3261 section 17.1.1)
# --------------------------------------------------------------------------
def test_invite_over_udp_retransmits_with_timer_a_and_times_out_with_timer_b() -> None:
    net = Net()
    net.blackhole.add("uac")
    txn = net.send(request())
    assert txn.state == CALLING
    net.run(100.0)
    assert net.sent("uac", "INVITE") == [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert net.uac.events == [(32.0, TransactionTimeout(txn))]
    assert txn.state == TERMINATED
    net.assert_clean()


def test_timer_a_and_b_scale_with_t1() -> None:
    net = Net(timers=Timers(t1=1.0, t2=8.0))
    net.blackhole.add("uac")
    txn = net.send(request())
    net.run(100.0)
    assert net.sent("uac", "INVITE") == [0.0, 1.0, 3.0, 7.0, 15.0, 31.0, 63.0]
    assert net.uac.events == [(64.0, TransactionTimeout(txn))]
    net.assert_clean()


def test_invite_over_tcp_is_not_retransmitted() -> None:
    net = Net("tcp")
    net.blackhole.add("uac")
    txn = net.send(request(transport="TCP"))
    net.run(100.0)
    assert net.sent("uac", "INVITE") == [0.0]
    assert net.uac.events == [(32.0, TransactionTimeout(txn))]
    net.assert_clean()


def test_provisional_stops_retransmissions_and_timer_b() -> None:
    net = Net()
    txn = net.send(request())
    net.run(0.2)
    net.respond(net.server_txn(), 180)
    assert txn.state == PROCEEDING
    assert net.uac.layer.next_timer() is None  # neither A nor B in Proceeding
    net.run(100.0)
    assert net.sent("uac", "INVITE") == [0.0]
    assert net.statuses() == [(0.2, 180, False)]
    net.respond(net.server_txn(), 486)  # let both sides finish
    net.assert_clean()


def test_retransmitted_invite_is_absorbed_when_no_response_yet() -> None:
    net = Net()
    net.send(request())
    net.run(2.0)
    assert net.sent("uac", "INVITE") == [0.0, 0.5, 1.5]
    assert net.sent("uas", "") == []  # nothing to re-send
    assert len(net.events("uas", RequestReceived)) == 1
    net.respond(net.server_txn(), 486)
    net.assert_clean()


def test_non_2xx_final_is_acked_by_the_transaction() -> None:
    net = Net()
    invite = request()
    txn = net.send(invite)
    server = net.server_txn()
    net.respond(server, 180)
    net.run(2.0)
    response = net.respond(server, 486)
    assert txn.state == COMPLETED
    assert server.state == CONFIRMED
    (ack,) = [p for p in net.wire if p.line.startswith("ACK")]
    assert ack.time == 2.0 and ack.target == net.to_uas
    parsed = parse_datagram(ack.data)
    assert isinstance(parsed, Request)
    assert parsed.top_via.branch == "z9hG4bKinv1"  # same branch (RFC 3261 section 17.1.1.3)
    assert str(parsed.cseq) == "1 ACK"
    assert parsed.to.tag == "uas1" == response.to.tag
    assert parsed.uri_text == invite.uri_text
    # the ACK for a non-2xx stays inside the transactions: no event on either side
    assert net.events("uas", AckReceived) == []
    assert net.statuses() == [(0.0, 180, False), (2.0, 486, False)]
    # timer I = T4 on the server, timer D = 32 s on the client
    net.run(6.99)
    assert net.uas.layer.server_count == 1
    net.run(7.0)
    assert net.uas.layer.server_count == 0
    net.run(33.99)
    assert net.uac.layer.client_count == 1
    net.run(34.0)
    assert net.uac.layer.client_count == 0
    net.assert_clean()


def test_lost_ack_for_non_2xx_final_timer_g_and_ack_resent() -> None:
    net = Net()
    answer_with(net, 486)
    net.lose("ACK")
    net.send(request())
    net.run(100.0)
    assert net.sent("uas", "SIP/2.0 486") == [0.0, 0.5]
    assert net.sent("uac", "ACK") == [0.0, 0.5]
    assert net.statuses() == [(0.0, 486, False)]  # the final goes up once
    assert net.server_txn().state == TERMINATED
    net.assert_clean()


def test_timer_h_when_no_ack_comes() -> None:
    net = Net()
    answer_with(net, 486)
    for _ in range(20):
        net.lose("ACK")  # every ACK is lost
    txn = net.send(request())
    net.run(100.0)
    assert net.sent("uas", "SIP/2.0 486") == [
        0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5,
    ]  # fmt: skip
    # the client re-sends its ACK for every retransmitted final, passes it up once
    assert net.sent("uac", "ACK") == net.sent("uas", "SIP/2.0 486")
    assert net.statuses() == [(0.0, 486, False)]
    assert net.uas.events[1:] == [(32.0, TransactionTimeout(net.server_txn()))]
    assert txn.state == TERMINATED
    net.assert_clean()


def test_late_provisional_after_final_is_absorbed() -> None:
    layer = TransactionLayer()
    invite = request()
    txn = layer.send_request(invite, Target("udp", UAS_HOST, 5060), 0.0)
    source = Target("udp", UAS_HOST, 5060)
    assert len(layer.receive(make_response(invite, 486, to_tag="x"), source, 0.1)) == 1
    assert layer.receive(make_response(invite, 180, to_tag="x"), source, 0.2) == []
    assert txn.state == COMPLETED


def test_retransmissions_reuse_the_same_bytes() -> None:
    layer = TransactionLayer()
    layer.send_request(request(), Target("udp", UAS_HOST, 5060), 0.0)
    ((first, _),) = layer.pop_outgoing()
    layer.handle_timer(0.5)
    ((second, _),) = layer.pop_outgoing()
    assert first is second


# --------------------------------------------------------------------------
# 2xx: RFC 6026 Accepted on both sides, RFC 3261 section 13.3.1.4 retransmission
# --------------------------------------------------------------------------
def test_2xx_acked_at_once_no_retransmission_timers_l_and_m() -> None:
    net = Net()
    answer_with(net, 180, 200)
    ack_every_2xx(net)
    txn = net.send(request())
    server = net.server_txn()
    assert txn.state == ACCEPTED and server.state == ACCEPTED
    assert net.sent("uas", "SIP/2.0 200") == [0.0]
    assert net.sent("uac", "ACK") == [0.0]
    ((when, acked),) = net.events("uas", AckReceived)
    assert isinstance(acked, AckReceived)
    assert when == 0.0 and acked.txn is server and acked.source == net.uac.addr
    assert acked.request.top_via.branch == "z9hG4bKack2xx"  # a new branch, matched anyway
    net.run(31.99)
    assert net.uas.layer.server_count == 1 and net.uac.layer.client_count == 1
    net.run(32.0)  # timers L and M
    assert net.uas.layer.server_count == 0 and net.uac.layer.client_count == 0
    assert net.sent("uas", "SIP/2.0 200") == [0.0]
    assert net.events("uas", AckTimeout) == []
    net.assert_clean()


def test_2xx_retransmitted_until_ack_timeout() -> None:
    net = Net()
    answer_with(net, 200)  # and the UAC TU never ACKs
    txn = net.send(request())
    net.run(100.0)
    times = [0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert net.sent("uas", "SIP/2.0 200") == times
    server = net.server_txn()
    assert net.uas.events == [(0.0, RequestReceived(server)), (32.0, AckTimeout(server))]
    # every 2xx goes up on the client, retransmissions flagged
    assert net.statuses() == [(t, 200, t > 0) for t in times]
    assert txn.state == TERMINATED
    net.assert_clean()


def test_2xx_is_retransmitted_even_over_tcp() -> None:
    net = Net("tcp")
    answer_with(net, 200)
    net.send(request(transport="TCP"))
    net.run(100.0)
    assert net.sent("uas", "SIP/2.0 200") == [
        0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5,
    ]  # fmt: skip
    assert [type(e) for _, e in net.uas.events] == [RequestReceived, AckTimeout]
    net.assert_clean()


def test_lost_first_200() -> None:
    net = Net()
    answer_with(net, 200)
    ack_every_2xx(net)
    net.lose("SIP/2.0 200")
    txn = net.send(request())
    net.run(100.0)
    # the client is still Calling: timer A re-sends the INVITE, which Accepted absorbs
    assert net.sent("uac", "INVITE") == [0.0, 0.5]
    assert net.sent("uas", "SIP/2.0 200") == [0.0, 0.5]  # the timer, not the INVITE
    assert net.statuses() == [(0.5, 200, False)]
    assert net.sent("uac", "ACK") == [0.5]
    assert [t for t, _ in net.events("uas", AckReceived)] == [0.5]
    assert len(net.events("uas", RequestReceived)) == 1
    assert txn.state == TERMINATED
    net.assert_clean()


def test_lost_ack_for_200_resent_by_the_layer() -> None:
    net = Net()
    answer_with(net, 200)
    ack_every_2xx(net)
    net.lose("ACK")
    net.send(request())
    net.run(100.0)
    assert net.sent("uas", "SIP/2.0 200") == [0.0, 0.5]
    assert net.statuses() == [(0.0, 200, False), (0.5, 200, True)]
    assert net.sent("uac", "ACK") == [0.0, 0.5]  # the second one by the layer itself
    assert [t for t, _ in net.events("uas", AckReceived)] == [0.5]
    assert net.events("uas", AckTimeout) == []
    net.assert_clean()


def test_duplicate_2xx_ack_is_absorbed_and_unknown_ack_goes_up() -> None:
    layer = TransactionLayer()
    source = Target("udp", UAC_HOST, 5060)
    invite = request()
    (event,) = layer.receive(invite, source, 0.0)
    assert isinstance(event, RequestReceived)
    ok = make_response(event.txn.request, 200, to_tag="t")
    layer.send_response(event.txn, ok, 0.0)
    ack = ack_for_2xx(invite, ok)
    assert layer.receive(ack, source, 0.1) == [AckReceived(ack, source, event.txn)]
    assert layer.receive(ack, source, 0.2) == []
    other = ack_for_2xx(request(call_id="other"), ok)
    assert layer.receive(other, source, 0.3) == [AckReceived(other, source, None)]


def test_forked_2xx_are_told_apart_by_to_tag() -> None:
    layer = TransactionLayer()
    target = Target("udp", UAS_HOST, 5060)
    invite = request()
    txn = layer.send_request(invite, target, 0.0)
    layer.pop_outgoing()
    ok_a = make_response(invite, 200, to_tag="a")
    ok_b = make_response(invite, 200, to_tag="b")
    assert layer.receive(ok_a, target, 0.1) == [ResponseReceived(txn, ok_a, False)]
    layer.send_ack_2xx(txn, ack_for_2xx(invite, ok_a))
    ((ack_a, to),) = layer.pop_outgoing()
    assert to == target
    assert layer.receive(ok_b, target, 0.2) == [ResponseReceived(txn, ok_b, False)]
    assert layer.pop_outgoing() == []  # fork b has no ACK yet
    assert layer.receive(ok_a, target, 0.3) == [ResponseReceived(txn, ok_a, True)]
    assert layer.pop_outgoing() == [(ack_a, target)]
    assert layer.receive(ok_b, target, 0.4) == [ResponseReceived(txn, ok_b, True)]
    assert layer.pop_outgoing() == []
    # an ACK can go somewhere else (the dialog's remote target)
    remote = Target("udp", "198.51.100.9", 5080)
    layer.send_ack_2xx(txn, ack_for_2xx(invite, ok_b, "z9hG4bKackb"), remote)
    ((ack_b, to),) = layer.pop_outgoing()
    assert to == remote
    layer.receive(ok_b, target, 0.5)
    assert layer.pop_outgoing() == [(ack_b, remote)]


def test_2xx_after_timer_m_is_stray() -> None:
    layer = TransactionLayer()
    target = Target("udp", UAS_HOST, 5060)
    invite = request()
    layer.send_request(invite, target, 0.0)
    ok = make_response(invite, 200, to_tag="a")
    layer.receive(ok, target, 1.0)
    assert layer.next_timer() == 33.0  # timer M
    assert layer.handle_timer(33.0) == []
    assert layer.client_count == 0
    assert layer.receive(ok, target, 34.0) == [StrayResponse(ok, target)]


# --------------------------------------------------------------------------
# loss of the request; server retransmission handling (RFC 3261 section 17.2)
# --------------------------------------------------------------------------
def test_lost_first_invite() -> None:
    net = Net()
    answer_with(net, 180)
    net.lose("INVITE")
    txn = net.send(request())
    net.run(10.0)
    assert net.sent("uac", "INVITE") == [0.0, 0.5]
    assert [t for t, _ in net.events("uas", RequestReceived)] == [0.5]
    assert net.statuses() == [(0.5, 180, False)]
    assert txn.state == PROCEEDING
    net.respond(net.server_txn(), 603)
    net.assert_clean()


def test_retransmitted_invite_resends_the_last_provisional() -> None:
    net = Net()
    answer_with(net, 100)
    net.lose("SIP/2.0 100")
    txn = net.send(request())
    net.run(10.0)
    assert net.sent("uas", "SIP/2.0 100") == [0.0, 0.5]
    assert net.sent("uac", "INVITE") == [0.0, 0.5]
    assert len(net.events("uas", RequestReceived)) == 1
    assert txn.state == PROCEEDING
    net.respond(net.server_txn(), 180)
    net.respond(net.server_txn(), 486)
    net.assert_clean()


def test_retransmitted_invite_resends_the_non_2xx_final() -> None:
    net = Net()
    answer_with(net, 486)
    net.lose("SIP/2.0 486")
    net.send(request())
    net.run(0.5)
    # at 0.5 both the INVITE retransmission and timer G re-send the 486
    assert net.sent("uac", "INVITE") == [0.0, 0.5]
    assert net.sent("uas", "SIP/2.0 486") == [0.0, 0.5, 0.5]
    assert net.statuses() == [(0.5, 486, False)]
    net.assert_clean()


# --------------------------------------------------------------------------
# non-INVITE (RFC 3261 sections 17.1.2, 17.2.2)
# --------------------------------------------------------------------------
def test_non_invite_over_udp_timer_e_capped_at_t2_and_timer_f() -> None:
    net = Net()
    net.blackhole.add("uac")
    txn = net.send(request("OPTIONS", branch="z9hG4bKopt"))
    net.run(100.0)
    assert net.sent("uac", "OPTIONS") == [
        0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5,
    ]  # fmt: skip
    assert net.uac.events == [(32.0, TransactionTimeout(txn))]
    net.assert_clean()


def test_non_invite_proceeding_retransmits_every_t2_then_timer_k_and_j() -> None:
    net = Net()
    txn = net.send(request("BYE", branch="z9hG4bKbye"))
    server = net.server_txn()
    net.respond(server, 100)
    assert txn.state == PROCEEDING and server.state == PROCEEDING
    net.run(10.0)
    assert net.sent("uac", "BYE") == [0.0, 0.5, 4.5, 8.5]
    assert net.sent("uas", "SIP/2.0 100") == [0.0, 0.5, 4.5, 8.5]  # re-sent on each
    assert [t for t, *_ in net.statuses()] == [0.0, 0.5, 4.5, 8.5]  # every 1xx goes up
    net.respond(server, 200)
    assert txn.state == COMPLETED and server.state == COMPLETED
    assert net.statuses()[-1] == (10.0, 200, False)
    net.run(14.99)
    assert net.uac.layer.client_count == 1
    net.run(15.0)  # timer K = T4
    assert net.uac.layer.client_count == 0
    net.run(41.99)
    assert net.uas.layer.server_count == 1
    net.run(42.0)  # timer J = 64*T1
    assert net.uas.layer.server_count == 0
    net.assert_clean()


def test_non_invite_retransmission_absorbed_in_trying_and_answered_in_completed() -> None:
    net = Net()
    txn = net.send(request("OPTIONS", branch="z9hG4bKopt"))
    net.run(0.5)
    server = net.server_txn()
    assert server.state == TRYING
    assert net.sent("uas", "") == []  # a retransmission in Trying is absorbed
    net.lose("SIP/2.0 200")
    net.respond(server, 200)
    net.run(2.0)
    assert net.sent("uac", "OPTIONS") == [0.0, 0.5, 1.5]
    assert net.sent("uas", "SIP/2.0 200") == [0.5, 1.5]  # the retransmission re-sends it
    assert net.statuses() == [(1.5, 200, False)]
    assert txn.state == COMPLETED
    assert len(net.events("uas", RequestReceived)) == 1
    net.assert_clean()


def test_reliable_transport_timers_k_and_j_are_zero() -> None:
    net = Net("tcp")
    txn = net.send(request("OPTIONS", branch="z9hG4bKopt", transport="TCP"))
    server = net.server_txn()
    assert net.uac.layer.next_timer() == 32.0  # timer F only, no E
    net.respond(server, 200)
    assert txn.state == TERMINATED and server.state == TERMINATED
    assert net.uac.layer.client_count == 0 and net.uas.layer.server_count == 0
    net.assert_clean()


def test_reliable_transport_timers_d_and_i_are_zero_and_no_timer_g() -> None:
    net = Net("tcp")
    answer_with(net, 486)
    txn = net.send(request(transport="TCP"))
    server = net.server_txn()
    assert txn.state == TERMINATED and server.state == TERMINATED
    assert net.sent("uac", "ACK") == [0.0]
    assert net.uac.layer.client_count == 0 and net.uas.layer.server_count == 0
    net.assert_clean()
    assert net.sent("uas", "SIP/2.0 486") == [0.0]


def test_reliable_timer_h_still_runs() -> None:
    net = Net("tcp")
    answer_with(net, 486)
    net.lose("ACK")
    net.send(request(transport="TCP"))
    net.run(100.0)
    assert net.sent("uas", "SIP/2.0 486") == [0.0]
    assert [(t, type(e)) for t, e in net.uas.events] == [
        (0.0, RequestReceived),
        (32.0, TransactionTimeout),
    ]
    net.assert_clean()


# --------------------------------------------------------------------------
# CANCEL (RFC 3261 section 9)
# --------------------------------------------------------------------------
def cancel_answerer(net: Net) -> None:
    """A UAS TU that answers CANCEL with 200 and the INVITE with 487 (RFC 3261 section 9.2)."""

    def tu(event: Event) -> None:
        if isinstance(event, RequestReceived) and event.txn.request.method == "CANCEL":
            invite = net.uas.layer.find_invite(event.txn.request)
            assert invite is not None and invite.state == PROCEEDING
            layer = net.uas.layer
            layer.send_response(event.txn, make_response(event.txn.request, 200), net.now)
            layer.send_response(invite, make_response(invite.request, 487, to_tag="u"), net.now)

    net.uas.tu = tu


def test_cancel_before_provisional_waits_for_the_first_1xx() -> None:
    net = Net()
    cancel_answerer(net)
    txn = net.send(request())
    net.run(0.1)
    assert net.uac.layer.send_cancel(txn, net.now) is None
    assert net.uac.layer.send_cancel(txn, net.now) is None  # idempotent
    net.run(1.0)
    assert net.sent("uac", "CANCEL") == []
    net.respond(net.server_txn(), 180)
    assert txn.cancel is not None and txn.cancel.request.method == "CANCEL"
    assert net.sent("uac", "CANCEL") == [1.0]
    assert net.sent("uac", "ACK") == [1.0]  # for the 487
    statuses = [
        (e.txn.request.method, e.response.status)
        for _, e in net.uac.events
        if isinstance(e, ResponseReceived)
    ]
    assert len(statuses) == len(net.uac.events)
    assert statuses == [("INVITE", 180), ("CANCEL", 200), ("INVITE", 487)]
    net.assert_clean()


def test_cancel_after_provisional_is_sent_at_once() -> None:
    net = Net()
    cancel_answerer(net)
    invite = request()
    txn = net.send(invite)
    net.respond(net.server_txn(), 180)
    net.run(3.0)
    cancel = net.uac.layer.send_cancel(txn, net.now)
    assert cancel is not None and txn.cancel is cancel
    net.flush()
    (packet,) = [p for p in net.wire if p.line.startswith("CANCEL")]
    assert packet.time == 3.0 and packet.target == net.to_uas
    sent = parse_datagram(packet.data)
    assert sent.top_via.branch == invite.top_via.branch  # RFC 3261 section 9.1
    assert str(sent.cseq) == "1 CANCEL"
    assert net.uac.layer.send_cancel(txn, net.now) is None
    assert txn.state == COMPLETED  # the 487 came
    net.assert_clean()


def test_cancel_after_final_does_nothing() -> None:
    net = Net()
    answer_with(net, 486)
    txn = net.send(request())
    before = len(net.wire)
    assert net.uac.layer.send_cancel(txn, net.now) is None
    net.flush()
    assert len(net.wire) == before
    net.assert_clean()


def test_cancelled_invite_without_final_ends_64_t1_after_the_cancel() -> None:
    net = Net()
    answer_with(net, 180)
    txn = net.send(request())
    net.run(5.0)
    net.blackhole.add("uas")  # neither the CANCEL's 200 nor a 487 ever arrives
    cancel = net.uac.layer.send_cancel(txn, net.now)
    assert cancel is not None
    net.run(100.0)
    timeouts = {(t, e.txn) for t, e in net.uac.events if isinstance(e, TransactionTimeout)}
    assert timeouts == {(37.0, txn), (37.0, cancel)}  # RFC 9.1 guard, and the CANCEL's F
    net.respond(net.server_txn(1), 200)  # the CANCEL
    net.respond(net.server_txn(0), 487)  # never ACKed: timer H
    net.assert_clean()


def test_find_invite_and_cancel_is_its_own_transaction() -> None:
    layer = TransactionLayer()
    source = Target("udp", UAC_HOST, 5060)
    invite = request()
    (event,) = layer.receive(invite, source, 0.0)
    assert isinstance(event, RequestReceived)
    cancel = make_cancel(invite)
    (cancel_event,) = layer.receive(cancel, source, 0.1)
    assert isinstance(cancel_event, RequestReceived)
    assert cancel_event.txn is not event.txn and not cancel_event.txn.is_invite
    assert layer.find_invite(cancel) is event.txn
    assert layer.find_invite(make_cancel(request(branch="z9hG4bKother"))) is None
    assert layer.server_count == 2


def test_send_cancel_requires_an_invite() -> None:
    layer = TransactionLayer()
    txn = layer.send_request(request("OPTIONS"), Target("udp", UAS_HOST, 5060), 0.0)
    with pytest.raises(ValueError):
        layer.send_cancel(txn, 0.0)


# --------------------------------------------------------------------------
# RFC 3581 / RFC 3261 section 18.2 received, rport and response targets
# --------------------------------------------------------------------------
def serve(req: Request, source: Target) -> tuple[TransactionLayer, ServerTransaction]:
    layer = TransactionLayer()
    (event,) = layer.receive(req, source, 0.0)
    assert isinstance(event, RequestReceived)
    return layer, event.txn


def test_rport_filled_and_received_added_response_to_source_port() -> None:
    source = Target("udp", "198.51.100.7", 40001)
    layer, txn = serve(request(sent_by="client.example.com:5070"), source)
    via = txn.request.top_via
    assert via.received == "198.51.100.7" and via.rport == "40001"
    assert txn.reply_target == source
    response = make_response(txn.request, 180, to_tag="x")
    assert response.top_via.received == "198.51.100.7"
    assert response.top_via.rport == "40001"
    layer.send_response(txn, response, 0.0)
    assert layer.pop_outgoing() == [(bytes(response), source)]


def test_received_without_rport_responds_to_sent_by_port() -> None:
    source = Target("udp", "198.51.100.7", 40001)
    _, txn = serve(request(sent_by="client.example.com:5070", rport=False), source)
    assert txn.request.top_via.received == "198.51.100.7"
    assert txn.request.top_via.rport is None
    assert txn.reply_target == Target("udp", "198.51.100.7", 5070)


def test_sent_by_without_port_defaults_to_5060() -> None:
    source = Target("udp", "198.51.100.7", 40001)
    _, txn = serve(request(sent_by="client.example.com", rport=False), source)
    assert txn.reply_target == Target("udp", "198.51.100.7", 5060)


def test_matching_sent_by_without_rport_leaves_the_request_alone() -> None:
    source = Target("udp", UAC_HOST, 5060)
    req = request(rport=False)
    _, txn = serve(req, source)
    assert txn.request is req
    assert txn.request.top_via.received is None


def test_rport_forces_received_even_when_the_address_matches() -> None:
    source = Target("udp", UAC_HOST, 5062)  # a NAT kept the address, changed the port
    _, txn = serve(request(), source)
    assert txn.request.top_via.received == UAC_HOST  # RFC 3581 section 4
    assert txn.request.top_via.rport == "5062"
    assert txn.reply_target == source


def test_ipv6_source_matching_bracketed_sent_by() -> None:
    source = Target("udp", "2001:db8::1", 5060)
    _, txn = serve(request(sent_by="[2001:db8::1]:5060", rport=False), source)
    assert txn.request.top_via.received is None
    assert txn.reply_target == source


def test_stream_responses_go_back_on_the_connection() -> None:
    source = Target("tcp", "198.51.100.7", 51234, conn=42)
    _, txn = serve(request(transport="TCP", sent_by="198.51.100.7:5060", rport=False), source)
    assert txn.reply_target == source


def test_only_the_top_via_is_stamped() -> None:
    source = Target("udp", "198.51.100.7", 40001)
    via = (
        "SIP/2.0/UDP proxy.example.com;branch=z9hG4bKp1;rport, SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK"
    )
    _, txn = serve(request(via=via), source)
    vias = txn.request.vias
    assert [v.branch for v in vias] == ["z9hG4bKp1", "z9hG4bK"]
    assert vias[0].received == "198.51.100.7" and vias[0].rport == "40001"
    assert vias[1].received is None


def test_the_ack_of_a_non_2xx_matches_after_stamping() -> None:
    source = Target("udp", "198.51.100.7", 40001)
    invite = request(sent_by="client.example.com:5070")
    layer, txn = serve(invite, source)
    final = make_response(txn.request, 404, to_tag="x")
    layer.send_response(txn, final, 0.0)
    assert layer.receive(make_ack(invite, final), source, 0.1) == []
    assert txn.state == CONFIRMED


# --------------------------------------------------------------------------
# matching (RFC 3261 sections 17.1.3, 17.2.3)
# --------------------------------------------------------------------------
def test_same_branch_different_sent_by_are_different_transactions() -> None:
    layer = TransactionLayer()
    a = Target("udp", "198.51.100.1", 5060)
    b = Target("udp", "198.51.100.2", 5060)
    assert len(layer.receive(request(sent_by="198.51.100.1:5060"), a, 0.0)) == 1
    assert len(layer.receive(request(sent_by="198.51.100.2:5060"), b, 0.0)) == 1
    assert layer.receive(request(sent_by="198.51.100.1:5060"), a, 0.1) == []
    assert layer.server_count == 2


def test_response_matched_by_branch_and_cseq_method() -> None:
    layer = TransactionLayer()
    target = Target("udp", UAS_HOST, 5060)
    invite = request()
    txn = layer.send_request(invite, target, 0.0)
    unknown = make_response(request(branch="z9hG4bKnope"), 180)
    assert layer.receive(unknown, target, 0.1) == [StrayResponse(unknown, target)]
    wrong_method = make_response(request("OPTIONS"), 200)  # same branch, CSeq OPTIONS
    assert layer.receive(wrong_method, target, 0.1) == [StrayResponse(wrong_method, target)]
    upper = make_response(request(branch="Z9HG4BKINV1"), 180)  # tokens: case-insensitive
    assert layer.receive(upper, target, 0.2) == [ResponseReceived(txn, upper, False)]


def test_rfc2543_request_without_branch() -> None:
    layer = TransactionLayer()
    source = Target("udp", UAC_HOST, 5060)
    invite = request(branch=None, rport=False)
    (event,) = layer.receive(invite, source, 0.0)
    assert isinstance(event, RequestReceived)
    txn = event.txn
    assert layer.receive(request(branch=None, rport=False), source, 0.5) == []  # retransmission
    layer.send_response(txn, make_response(txn.request, 100), 0.5)
    layer.pop_outgoing()
    assert layer.receive(invite, source, 0.6) == []
    assert len(layer.pop_outgoing()) == 1  # the 100 again
    assert layer.find_invite(make_cancel(invite)) is txn
    final = make_response(txn.request, 486, to_tag="x")
    layer.send_response(txn, final, 1.0)
    assert layer.receive(make_ack(invite, final), source, 1.1) == []
    assert txn.state == CONFIRMED
    # another CSeq, another Request-URI, another From tag: new transactions
    assert len(layer.receive(request(branch=None, rport=False, cseq=2), source, 2.0)) == 1
    other_uri = request(branch=None, rport=False, uri="sip:carol@192.0.2.2")
    assert len(layer.receive(other_uri, source, 2.0)) == 1
    other_tag = request(branch=None, rport=False, from_tag="ft2")
    assert len(layer.receive(other_tag, source, 2.0)) == 1
    assert layer.server_count == 4


def test_rfc2543_branch_without_magic_cookie() -> None:
    layer = TransactionLayer()
    source = Target("udp", UAC_HOST, 5060)
    assert len(layer.receive(request(branch="1234"), source, 0.0)) == 1
    assert layer.receive(request(branch="1234"), source, 0.5) == []
    # another CSeq number is another transaction
    assert len(layer.receive(request(branch="1234", cseq=2), source, 0.6)) == 1


# --------------------------------------------------------------------------
# malformed input, TU misuse
# --------------------------------------------------------------------------
def test_malformed_messages_are_dropped_and_counted() -> None:
    layer = TransactionLayer()
    source = Target("udp", UAS_HOST, 5060)
    invite = request()
    layer.send_request(invite, source, 0.0)
    bad_via = make_response(invite, 200).with_header("via", "garbage")
    no_cseq = make_response(invite, 200).without_header("cseq")
    no_via_request = request().without_header("via")
    bad_from_ack = request("ACK", branch="z9hG4bKx").with_header("from", "<sip:")
    for msg in (bad_via, no_cseq, bad_from_ack):
        assert layer.receive(msg, source, 0.1) == []
    assert layer.dropped == 3
    # a request that cannot open a transaction goes up for a stateless answer, not a drop
    (event,) = layer.receive(no_via_request, source, 0.1)
    assert isinstance(event, BadRequest)
    assert event.request is no_via_request and event.source == source
    assert event.error.status == 400
    assert layer.dropped == 3
    assert layer.server_count == 0 and layer.client_count == 1


def test_illegal_tu_actions_raise() -> None:
    layer = TransactionLayer()
    source = Target("udp", UAC_HOST, 5060)
    (event,) = layer.receive(request("OPTIONS"), source, 0.0)
    assert isinstance(event, RequestReceived)
    layer.send_response(event.txn, make_response(event.txn.request, 200), 0.0)
    with pytest.raises(TransactionStateError):
        layer.send_response(event.txn, make_response(event.txn.request, 500), 0.0)
    (invite_event,) = layer.receive(request(), source, 0.0)
    assert isinstance(invite_event, RequestReceived)
    txn = invite_event.txn
    layer.send_response(txn, make_response(txn.request, 200, to_tag="a"), 0.0)
    layer.send_response(txn, make_response(txn.request, 200, to_tag="a"), 0.0)  # allowed
    with pytest.raises(TransactionStateError):
        layer.send_response(txn, make_response(txn.request, 180, to_tag="a"), 0.0)
    with pytest.raises(TransactionStateError):
        layer.send_response(txn, make_response(txn.request, 486, to_tag="a"), 0.0)


def test_send_request_misuse() -> None:
    layer = TransactionLayer()
    target = Target("udp", UAS_HOST, 5060)
    with pytest.raises(ValueError):
        layer.send_request(request("ACK"), target, 0.0)
    with pytest.raises(ValueError):
        layer.send_request(request(branch=None), target, 0.0)
    layer.send_request(request(), target, 0.0)
    with pytest.raises(ValueError):
        layer.send_request(request(), target, 0.0)


def test_send_stateless() -> None:
    layer = TransactionLayer()
    target = Target("udp", UAS_HOST, 5060)
    msg = request("ACK")
    layer.send_stateless(msg, target)
    assert layer.pop_outgoing() == [(bytes(msg), target)]
    assert layer.client_count == 0 and layer.next_timer() is None


def test_timers_values() -> None:
    assert Timers() == Timers(0.5, 4.0, 5.0)
    assert Timers().timeout == 32.0 and Timers().timer_d == 32.0
    assert Timers(t1=0.1).timer_d == 32.0
    assert Timers(t1=1.0, t2=4.0).timer_d == 64.0
    with pytest.raises(ValueError):
        Timers(t1=0.0)
    assert Target("tls", "h", 1).reliable and not Target("udp", "h", 1).reliable


# --------------------------------------------------------------------------
# transport errors (RFC 3261 sections 17.1.4, 17.2.4)
# --------------------------------------------------------------------------
def test_transport_error_fails_client_transactions_to_that_target() -> None:
    layer = TransactionLayer()
    bad = Target("udp", UAS_HOST, 5060)
    good = Target("udp", "198.51.100.9", 5060)
    invite = layer.send_request(request(), bad, 0.0)
    options = layer.send_request(request("OPTIONS", branch="z9hG4bKo1"), bad, 0.0)
    other = layer.send_request(request("OPTIONS", branch="z9hG4bKo2"), good, 0.0)
    events = layer.transport_error(bad, 0.1)
    assert events == [TransportFailed(invite), TransportFailed(options)]
    assert layer.client_count == 1
    assert invite.state == TERMINATED
    assert layer.handle_timer(0.5) == []
    assert layer.pop_outgoing()[-1][1] == good  # only the live one retransmits
    assert layer.transport_error(good, 1.0) == [TransportFailed(other)]
    assert layer.next_timer() is None


def test_transport_error_fails_server_transactions_on_that_connection() -> None:
    layer = TransactionLayer()
    source = Target("tcp", "198.51.100.7", 51234, conn=7)
    (event,) = layer.receive(request(transport="TCP"), source, 0.0)
    assert isinstance(event, RequestReceived)
    layer.send_response(event.txn, make_response(event.txn.request, 200, to_tag="a"), 0.0)
    assert layer.transport_error(Target("tcp", "198.51.100.7", 51234, conn=8), 0.1) == []
    assert layer.transport_error(source, 0.1) == [TransportFailed(event.txn)]
    assert layer.server_count == 0 and layer.next_timer() is None
    # the 2xx's ACK no longer matches a transaction
    ack = ack_for_2xx(event.txn.request, make_response(event.txn.request, 200, to_tag="a"))
    assert layer.receive(ack, source, 0.2) == [AckReceived(ack, source, None)]


# --------------------------------------------------------------------------
# many calls: no leaks, the lazily invalidated heap stays small
# --------------------------------------------------------------------------
def test_many_calls_leave_nothing_behind() -> None:
    net = Net()
    answer_with(net, 100, 180, 200)
    ack_every_2xx(net)
    calls = 1500
    for i in range(calls):
        net.run(i * 0.01)
        if i % 7 == 0:
            net.lose("SIP/2.0 200")
        if i % 11 == 0:
            net.lose("ACK")
        net.send(request(branch=f"z9hG4bKc{i}", call_id=f"c{i}"))
        bye = request("BYE", branch=f"z9hG4bKb{i}", call_id=f"c{i}", cseq=2)
        txn = net.send(bye)
        _, event = net.uas.events[-1]
        assert isinstance(event, RequestReceived) and event.txn.request.method == "BYE"
        net.uas.layer.send_response(event.txn, make_response(event.txn.request, 200), net.now)
        net.flush()
        assert txn.state == COMPLETED
    assert net.uac.layer.client_count > 0 and net.uas.layer.server_count > 0
    net.assert_clean()
    assert net.events("uas", AckTimeout) == []
    assert len(net.events("uas", AckReceived)) == calls
    assert net.uas.layer._heap == [] and net.uac.layer._heap == []
    assert net.uac.layer.dropped == 0 and net.uas.layer.dropped == 0


def test_cancelled_timers_are_compacted_out_of_the_heap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transaction, "_COMPACT_MIN", 10)
    layer = TransactionLayer()
    target = Target("udp", UAS_HOST, 5060)
    invites = [request(branch=f"z9hG4bK{i}") for i in range(100)]
    for invite in invites:
        layer.send_request(invite, target, 0.0)
    for invite in invites:  # a 1xx cancels timers A and B: 200 stale heap entries
        layer.receive(make_response(invite, 180, to_tag="x"), target, 0.1)
    assert len(layer._heap) >= 100
    layer.send_request(request("OPTIONS", branch="z9hG4bKo"), target, 0.2)
    assert len(layer._heap) == 2  # compacted, then E and F pushed
    assert layer.next_timer() == 0.7


def live_and_stale(layer: TransactionLayer) -> tuple[int, int]:
    live = sum(1 for _, seq, txn, kind in layer._heap if seq in txn._seqs)
    return live, len(layer._heap) - live


def test_compaction_while_timers_fire(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transaction, "_COMPACT_MIN", 10)
    layer = TransactionLayer()
    target = Target("udp", UAS_HOST, 5060)
    invites = [request(branch=f"z9hG4bK{i}") for i in range(100)]
    for invite in invites:
        layer.send_request(invite, target, 0.0)
    for i in range(3):
        layer.send_request(request("OPTIONS", branch=f"z9hG4bKo{i}"), target, 0.0)
    for invite in invites:
        layer.receive(make_response(invite, 180, to_tag="x"), target, 0.1)
    layer.pop_outgoing()
    assert layer.handle_timer(0.5) == []
    assert [line.split(b" ", 1)[0] for line, _ in layer.pop_outgoing()] == [b"OPTIONS"] * 3
    assert live_and_stale(layer) == (6, layer._stale)
    assert layer.next_timer() == 1.5
    assert layer.handle_timer(1.5) == []
    assert len(layer.pop_outgoing()) == 3


def test_2xx_after_a_non_2xx_final_is_passed_up_as_stray() -> None:
    layer = TransactionLayer()
    target = Target("udp", UAS_HOST, 5060)
    invite = request()
    layer.send_request(invite, target, 0.0)
    layer.receive(make_response(invite, 486, to_tag="a"), target, 0.1)
    ok = make_response(invite, 200, to_tag="b")
    assert layer.receive(ok, target, 0.2) == [StrayResponse(ok, target)]
