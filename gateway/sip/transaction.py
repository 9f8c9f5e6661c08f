"""The SIP transaction layer (RFC 3261 section 17, with the RFC 6026 fixes), sans-I/O.

Invariants:
- No sockets, no reactor, no clock. Time is the ``now`` argument (seconds, any epoch);
  messages come in through ``receive``, go out through ``pop_outgoing``; timers are
  deadlines the caller reads with ``next_timer`` and fires with ``handle_timer``.
- Each of the four machines is a literal transition table (``CLIENT_INVITE``,
  ``CLIENT_NON_INVITE``, ``SERVER_INVITE``, ``SERVER_NON_INVITE``) mapping
  ``state -> input -> next state``. A message input the table does not list is absorbed
  (a late 1xx, an ACK in Proceeding); a TU call or a timer it does not list raises
  ``TransactionStateError``.
- A live transaction is in exactly one dict, keyed by its RFC 17.1.3 / 17.2.3 key; it leaves
  the dict the moment it reaches Terminated (timer D/I/J/K of 0 on reliable transports
  terminates at once), so ``client_count``/``server_count`` fall back to 0 when traffic stops.
- A transaction holds at most three timers, one per slot (retransmit, timeout, end). The
  heap holds ``(deadline, seq, txn, kind)``; an entry is live iff ``txn._seqs[slot] == seq``;
  cancelled entries stay in the heap (lazy invalidation) and are counted in ``_stale`` so the
  heap is compacted when they are the majority.
- Every message is serialized once; retransmissions reuse the same ``bytes`` object.
- Malformed input never raises out of ``receive``: a ``SipParseError`` while reading the
  headers the layer needs drops the message and counts it in ``dropped``.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from gateway.sip.errors import SipError, SipParseError
from gateway.sip.message import Request, Response, make_ack, make_cancel
from gateway.sip.uri import host_for_socket, split_commas

__all__ = [
    "ACCEPTED",
    "CALLING",
    "CLIENT_INVITE",
    "CLIENT_NON_INVITE",
    "COMPLETED",
    "CONFIRMED",
    "MAGIC_COOKIE",
    "PROCEEDING",
    "SERVER_INVITE",
    "SERVER_NON_INVITE",
    "TERMINATED",
    "TRYING",
    "AckReceived",
    "AckTimeout",
    "ClientTransaction",
    "Event",
    "RequestReceived",
    "ResponseReceived",
    "ServerTransaction",
    "StrayResponse",
    "Target",
    "Timers",
    "TransactionLayer",
    "TransactionStateError",
    "TransactionTimeout",
    "TransportFailed",
]

MAGIC_COOKIE = "z9hG4bK"  # RFC 3261 section 8.1.1.7
DEFAULT_SIP_PORT = 5060  # RFC 3261 section 18.2.2 (sent-by without a port)


class TransactionStateError(SipError):
    """A TU call (or an internal timer) that the transaction's state table does not allow."""


@dataclass(frozen=True, slots=True)
class Timers:
    """RFC 3261 section 17.1.1.1 / table 4 base values, in seconds."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0

    def __post_init__(self) -> None:
        if not (self.t1 > 0 and self.t2 >= self.t1 and self.t4 >= 0):
            raise ValueError("timers need t1 > 0, t2 >= t1, t4 >= 0")

    @property
    def timeout(self) -> float:
        """Timers B, F, H, J (unreliable), L, M: 64*T1."""
        return 64 * self.t1

    @property
    def timer_d(self) -> float:
        """Timer D on unreliable transports: at least 32 s (RFC 3261 section 17.1.1.2)."""
        return max(32.0, 64 * self.t1)


DEFAULT_TIMERS = Timers()


@dataclass(frozen=True, slots=True)
class Target:
    """Where a message goes, or where it came from.

    ``conn`` is the transport adapter's opaque id of a stream connection; it is set on
    received messages, and ``None`` on a target means "any connection, or a new one".
    """

    transport: str  # "udp" | "tcp" | "tls"
    host: str  # IP address text, no brackets
    port: int
    conn: int | None = None

    @property
    def reliable(self) -> bool:
        return self.transport != "udp"


def _same_peer(a: Target, b: Target) -> bool:
    """Equal transport, host and port; ``conn`` only compared when both sides name one."""
    return (
        a.port == b.port
        and a.host == b.host
        and a.transport == b.transport
        and (a.conn is None or b.conn is None or a.conn == b.conn)
    )


# --------------------------------------------------------------------------
# states and transition tables
# --------------------------------------------------------------------------
CALLING = "Calling"
TRYING = "Trying"
PROCEEDING = "Proceeding"
COMPLETED = "Completed"
CONFIRMED = "Confirmed"
ACCEPTED = "Accepted"
TERMINATED = "Terminated"

# Inputs: received responses ("1xx", "2xx" (INVITE only), "final"), received requests
# ("request" = a retransmission, "ack"), TU calls ("send 1xx", "send 2xx", "send final"),
# and timers, named by their RFC letter ("cancel" is the RFC 9.1 64*T1 guard after a CANCEL,
# "retransmit 2xx" is the RFC 3261 section 13.3.1.4 2xx retransmission).
Table = dict[str, dict[str, str]]

# RFC 3261 section 17.1.1.2 (figure 5) as amended by RFC 6026 section 8.4 (figure 3).
CLIENT_INVITE: Table = {
    CALLING: {"1xx": PROCEEDING, "2xx": ACCEPTED, "final": COMPLETED,
              "A": CALLING, "B": TERMINATED},
    PROCEEDING: {"1xx": PROCEEDING, "2xx": ACCEPTED, "final": COMPLETED,
                 "cancel": TERMINATED},
    COMPLETED: {"final": COMPLETED, "D": TERMINATED},
    ACCEPTED: {"2xx": ACCEPTED, "M": TERMINATED},
    TERMINATED: {},
}  # fmt: skip

# RFC 3261 section 17.1.2.2 (figure 6).
CLIENT_NON_INVITE: Table = {
    TRYING: {"1xx": PROCEEDING, "final": COMPLETED, "E": TRYING, "F": TERMINATED},
    PROCEEDING: {"1xx": PROCEEDING, "final": COMPLETED, "E": PROCEEDING, "F": TERMINATED},
    COMPLETED: {"final": COMPLETED, "K": TERMINATED},
    TERMINATED: {},
}

# RFC 3261 section 17.2.1 (figure 7) as amended by RFC 6026 section 8.7 (figure 5).
SERVER_INVITE: Table = {
    PROCEEDING: {"request": PROCEEDING, "send 1xx": PROCEEDING, "send 2xx": ACCEPTED,
                 "send final": COMPLETED},
    COMPLETED: {"request": COMPLETED, "ack": CONFIRMED, "G": COMPLETED, "H": TERMINATED},
    CONFIRMED: {"request": CONFIRMED, "ack": CONFIRMED, "I": TERMINATED},
    ACCEPTED: {"request": ACCEPTED, "ack": ACCEPTED, "send 2xx": ACCEPTED,
               "retransmit 2xx": ACCEPTED, "L": TERMINATED},
    TERMINATED: {},
}  # fmt: skip

# RFC 3261 section 17.2.2 (figure 8).
SERVER_NON_INVITE: Table = {
    TRYING: {"request": TRYING, "send 1xx": PROCEEDING, "send final": COMPLETED},
    PROCEEDING: {"request": PROCEEDING, "send 1xx": PROCEEDING, "send final": COMPLETED},
    COMPLETED: {"request": COMPLETED, "J": TERMINATED},
    TERMINATED: {},
}

# Timer slots: a transaction runs at most one timer of each slot at a time.
_RETRANSMIT, _TIMEOUT, _END = 0, 1, 2
_SLOT = {
    "A": _RETRANSMIT, "E": _RETRANSMIT, "G": _RETRANSMIT, "retransmit 2xx": _RETRANSMIT,
    "B": _TIMEOUT, "F": _TIMEOUT, "H": _TIMEOUT, "cancel": _TIMEOUT,
    "D": _END, "I": _END, "J": _END, "K": _END, "L": _END, "M": _END,
}  # fmt: skip
_TIMEOUT_KINDS = frozenset({"B", "F", "H", "cancel"})
_COMPACT_MIN = 1024  # do not bother compacting small heaps

Key = tuple[object, ...]


# --------------------------------------------------------------------------
# transactions
# --------------------------------------------------------------------------
class _Transaction:
    __slots__ = (
        "_data",
        "_interval",
        "_seqs",
        "_table",
        "is_invite",
        "key",
        "owner",
        "request",
        "state",
    )

    key: Key
    request: Request
    is_invite: bool
    state: str
    owner: object | None
    _table: Table
    _seqs: list[int]  # live timer seq per slot, 0 = none
    _interval: float  # current retransmission interval
    _data: bytes | None  # what a retransmission re-sends

    def __init__(self, key: Key, request: Request, is_invite: bool, state: str) -> None:
        self.key = key
        self.request = request
        self.is_invite = is_invite
        self.state = state
        self.owner = None
        self._seqs = [0, 0, 0]
        self._interval = 0.0
        self._data = None


class ClientTransaction(_Transaction):
    """A request sent by the TU, and the responses it gets (RFC 3261 section 17.1).

    ``cancel`` is the CANCEL client transaction started by ``send_cancel`` (possibly
    later, when the first provisional response arrived).
    """

    __slots__ = ("_ack", "_acks_2xx", "_cancel_pending", "cancel", "target")

    target: Target
    cancel: ClientTransaction | None
    _cancel_pending: bool
    _ack: bytes | None  # the ACK of a non-2xx final (RFC 3261 section 17.1.1.3)
    # RFC 6026 Accepted: To tag of each 2xx seen -> the TU's ACK for it (bytes, where to)
    _acks_2xx: dict[str | None, tuple[bytes, Target] | None] | None

    def __init__(self, key: Key, request: Request, target: Target) -> None:
        is_invite = request.method == "INVITE"
        super().__init__(key, request, is_invite, CALLING if is_invite else TRYING)
        self._table = CLIENT_INVITE if is_invite else CLIENT_NON_INVITE
        self.target = target
        self.cancel = None
        self._cancel_pending = False
        self._ack = None
        self._acks_2xx = None

    def __repr__(self) -> str:
        return f"<ClientTransaction {self.request.method} {self.state} {self.key!r}>"


class ServerTransaction(_Transaction):
    """A request received, and the responses the TU sends to it (RFC 3261 section 17.2).

    ``request`` carries the RFC 3581 ``received``/``rport`` parameters in its top Via;
    ``reply_target`` is where responses go (RFC 3261 section 18.2.2, RFC 3581 section 4).
    """

    __slots__ = ("_ack_key", "_acked", "reply_target", "source")

    source: Target
    reply_target: Target
    _ack_key: tuple[str, int, str | None] | None  # Call-ID, CSeq number, From tag (INVITE)
    _acked: bool

    def __init__(
        self,
        key: Key,
        request: Request,
        source: Target,
        reply_target: Target,
        ack_key: tuple[str, int, str | None] | None,
    ) -> None:
        is_invite = request.method == "INVITE"
        super().__init__(key, request, is_invite, PROCEEDING if is_invite else TRYING)
        self._table = SERVER_INVITE if is_invite else SERVER_NON_INVITE
        self.source = source
        self.reply_target = reply_target
        self._ack_key = ack_key
        self._acked = False

    def __repr__(self) -> str:
        return f"<ServerTransaction {self.request.method} {self.state} {self.key!r}>"


# --------------------------------------------------------------------------
# events
# --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A new request (never an ACK); the TU answers it with ``send_response``.

    No 100 (Trying) is sent for an INVITE: the TU sends one unless it answers within
    200 ms (RFC 3261 section 17.2.1). For a CANCEL, ``find_invite`` gives the INVITE
    transaction; without one the TU answers 481 (RFC 3261 section 9.2).
    """

    txn: ServerTransaction


@dataclass(frozen=True, slots=True)
class AckReceived:
    """An ACK for a 2xx (RFC 3261 section 13.3.1.4), for the dialog layer.

    ``txn`` is the Accepted INVITE server transaction it acknowledges, or None (no match:
    the dialog layer decides). Duplicates of an ACK already reported are absorbed. The
    ACK's top Via is passed on as received (no received/rport: it is never answered).
    """

    request: Request
    source: Target
    txn: ServerTransaction | None


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """A response for ``txn``: each 1xx, the final once, and for INVITE every 2xx.

    ``retransmission`` is true for a 2xx with the same To tag as an earlier 2xx.
    """

    txn: ClientTransaction
    response: Response
    retransmission: bool


@dataclass(frozen=True, slots=True)
class StrayResponse:
    """A response that matches no client transaction (e.g. a 2xx after timer M)."""

    response: Response
    source: Target


@dataclass(frozen=True, slots=True)
class BadRequest:
    """A request too broken to open a transaction (e.g. no Call-ID): the TU answers it
    statelessly with ``error``'s status (RFC 3261 section 8.2, RFC 4475 section 3.3.1)."""

    request: Request
    error: SipParseError
    source: Target


@dataclass(frozen=True, slots=True)
class TransactionTimeout:
    """Timer B/F (or the RFC 9.1 guard after CANCEL): the TU treats it as a 408.

    For a server INVITE transaction: timer H, the ACK for a non-2xx final never came.
    """

    txn: ClientTransaction | ServerTransaction


@dataclass(frozen=True, slots=True)
class AckTimeout:
    """A 2xx was retransmitted for 64*T1 without an ACK (RFC 3261 section 13.3.1.4).

    The TU should end the session (send BYE).
    """

    txn: ServerTransaction


@dataclass(frozen=True, slots=True)
class TransportFailed:
    """The transport reported an error for the transaction's peer; it is gone."""

    txn: ClientTransaction | ServerTransaction


Event = (
    RequestReceived
    | AckReceived
    | ResponseReceived
    | StrayResponse
    | BadRequest
    | TransactionTimeout
    | AckTimeout
    | TransportFailed
)


# --------------------------------------------------------------------------
# keys and Via handling
# --------------------------------------------------------------------------
def _client_key(branch: str, method: str) -> Key:
    """RFC 3261 section 17.1.3: top Via branch and CSeq method.

    Branch values are tokens, compared case-insensitively (RFC 3261 section 7.3.1).
    """
    return (branch.lower(), method)


def _server_key(request: Request, method: str) -> Key:
    """RFC 3261 section 17.2.3. ``method`` is INVITE for an ACK (and for a CANCEL's target)."""
    via = request.top_via
    branch = via.branch
    if branch is not None and branch.startswith(MAGIC_COOKIE):
        return (branch.lower(), via.host.lower(), via.port, method)
    # RFC 2543 compatibility (section 17.2.3, second part): no magic cookie.
    return (request.call_id, request.from_.tag, request.cseq.seq, via, request.uri_text, method)


def _to_tag(msg: Request | Response) -> str | None:
    return msg.to_tag


def _stamp_via(request: Request, source: Target) -> tuple[Request, Target]:
    """Add received/rport to the top Via; return the request and where responses go.

    RFC 3261 section 18.2.1: ``received`` when the sent-by host is not the source address.
    RFC 3581 section 4: an empty ``rport`` gets the source port, and then ``received`` is
    added even when the address is the same.
    RFC 3261 section 18.2.2 / RFC 3581 section 4: responses go back on the connection for
    stream transports; over UDP to the source address, at the source port when the request
    had ``rport``, else at the sent-by port (default 5060). (``maddr`` is not supported.)
    """
    via = request.top_via
    rport = via.rport
    stamped = via
    if rport == "":
        stamped = stamped.with_param("rport", str(source.port))
    if rport == "" or host_for_socket(via.host).lower() != source.host.lower():
        stamped = stamped.with_param("received", source.host)
    if source.reliable or rport is not None:
        reply = source
    else:
        reply = Target(source.transport, source.host, via.port or DEFAULT_SIP_PORT, source.conn)
    if stamped is via:
        return request, reply
    fields = list(request.fields)
    for i, (key, value, _raw) in enumerate(fields):
        if key == "via":
            if "," in value:
                rest = split_commas(value)[1:]
                fields[i] = (key, ", ".join([str(stamped), *rest]), None)
            else:
                fields[i] = (key, str(stamped), None)
            break
    return Request(request.method, request.uri_text, fields, request.body), reply


# --------------------------------------------------------------------------
# the layer
# --------------------------------------------------------------------------
_HeapEntry = tuple[float, int, ClientTransaction | ServerTransaction, str]


class TransactionLayer:
    """All client and server transactions of one SIP element."""

    def __init__(self, timers: Timers = DEFAULT_TIMERS) -> None:
        self.timers = timers
        self.dropped = 0  # malformed messages dropped by receive()
        self._t1 = timers.t1
        self._t2 = timers.t2
        self._t4 = timers.t4
        self._t64 = timers.timeout
        self._timer_d = timers.timer_d
        self._clients: dict[Key, ClientTransaction] = {}
        self._servers: dict[Key, ServerTransaction] = {}
        # RFC 3261 section 13.3.1.4: 2xx ACKs (new branch) are matched by dialog and CSeq.
        self._accepted: dict[tuple[str, int, str | None], ServerTransaction] = {}
        self._out: list[tuple[bytes, Target]] = []
        self._heap: list[_HeapEntry] = []
        self._seq = 0
        self._stale = 0

    # -- counters -------------------------------------------------------
    @property
    def client_count(self) -> int:
        return len(self._clients)

    @property
    def server_count(self) -> int:
        return len(self._servers)

    # -- input ----------------------------------------------------------
    def receive(self, msg: Request | Response, source: Target, now: float) -> list[Event]:
        """Feed one received message; returns what the TU must handle.

        Never raises on malformed input: a request that cannot open a transaction comes
        back as ``BadRequest`` for a stateless answer; a malformed response or ACK is
        dropped and counted in ``dropped``.
        """
        try:
            if isinstance(msg, Response):
                return self._receive_response(msg, source, now)
            if msg.method == "ACK":
                return self._receive_ack(msg, source, now)
            return self._receive_request(msg, source, now)
        except SipParseError as err:
            if isinstance(msg, Request) and msg.method != "ACK" and err.respond:
                return [BadRequest(msg, err, source)]
            self.dropped += 1
            return []

    def _receive_request(self, request: Request, source: Target, now: float) -> list[Event]:
        method = request.method
        key = _server_key(request, method)
        txn = self._servers.get(key)
        if txn is not None:
            # A retransmission (RFC 3261 sections 17.2.1, 17.2.2): re-send the last response
            # in Proceeding/Completed; absorbed in Trying, Confirmed and Accepted (RFC 6026
            # section 8.7). Never a second RequestReceived.
            txn.state = txn._table[txn.state]["request"]
            if txn._data is not None and txn.state in (PROCEEDING, COMPLETED):
                self._out.append((txn._data, txn.reply_target))
            return []
        ack_key = None
        if method == "INVITE":
            ack_key = (request.call_id, request.cseq.seq, request.from_.tag)
        stamped, reply = _stamp_via(request, source)
        txn = ServerTransaction(key, stamped, source, reply, ack_key)
        self._servers[key] = txn
        return [RequestReceived(txn)]

    def _receive_ack(self, ack: Request, source: Target, now: float) -> list[Event]:
        # RFC 3261 section 17.2.3: an ACK matches the INVITE's transaction (non-2xx ACK).
        txn = self._servers.get(_server_key(ack, "INVITE"))
        if txn is not None and txn.is_invite:
            state = txn.state
            if state == COMPLETED:
                # RFC 3261 section 17.2.1: Confirmed; stop G and H; timer I (T4 / 0).
                txn.state = txn._table[state]["ack"]
                self._disarm(txn, _RETRANSMIT)
                self._disarm(txn, _TIMEOUT)
                if txn.source.reliable:
                    self._terminate(txn)
                else:
                    self._arm(txn, "I", now + self._t4)
                return []
            if state == CONFIRMED:
                return []  # absorbed (RFC 3261 section 17.2.1)
            if state == ACCEPTED:
                return self._ack_2xx(txn, ack, source)
        # RFC 6026 section 8.7 / RFC 3261 section 13.3.1.4: the ACK of a 2xx has its own
        # branch; match it by Call-ID, CSeq number and From tag.
        accepted = self._accepted.get((ack.call_id, ack.cseq.seq, ack.from_.tag))
        if accepted is not None:
            return self._ack_2xx(accepted, ack, source)
        return [AckReceived(ack, source, None)]

    def _ack_2xx(self, txn: ServerTransaction, ack: Request, source: Target) -> list[Event]:
        if txn._acked:
            return []  # a duplicate ACK (one per 2xx retransmission): absorbed
        txn._acked = True
        self._disarm(txn, _RETRANSMIT)  # RFC 3261 section 13.3.1.4: stop retransmitting
        return [AckReceived(ack, source, txn)]

    def _receive_response(self, response: Response, source: Target, now: float) -> list[Event]:
        branch = response.top_via.branch
        method = response.cseq.method
        txn = self._clients.get(_client_key(branch, method)) if branch else None
        if txn is None:
            return [StrayResponse(response, source)]  # RFC 3261 section 17.1.3 / 18.1.2
        status = response.status
        if status < 200:
            inp = "1xx"
        elif status < 300 and txn.is_invite:
            inp = "2xx"
        else:
            inp = "final"
        old = txn.state
        new = txn._table[old].get(inp)
        if new is None:
            if inp == "2xx":
                # A 2xx after a non-2xx final (another fork): the transaction cannot take it,
                # the TU must still ACK and BYE it (RFC 3261 section 13.2.2.4).
                return [StrayResponse(response, source)]
            return []  # e.g. a 1xx after the final: absorbed
        txn.state = new
        if txn.is_invite:
            return self._client_invite_response(txn, response, inp, old, now)
        if inp == "1xx":
            # RFC 3261 section 17.1.2.2: every provisional goes up; timer E keeps running
            # and is reset to T2 from now on.
            return [ResponseReceived(txn, response, False)]
        if old == COMPLETED:
            return []  # retransmitted final: absorbed (RFC 3261 section 17.1.2.2)
        self._disarm(txn, _RETRANSMIT)
        self._disarm(txn, _TIMEOUT)
        if txn.target.reliable:
            self._terminate(txn)  # timer K = 0 (RFC 3261 section 17.1.2.2)
        else:
            self._arm(txn, "K", now + self._t4)
        return [ResponseReceived(txn, response, False)]

    def _client_invite_response(
        self, txn: ClientTransaction, response: Response, inp: str, old: str, now: float
    ) -> list[Event]:
        if inp == "1xx":
            if old == CALLING:
                # RFC 3261 section 17.1.1.2: no more retransmissions; timer B only in Calling.
                self._disarm(txn, _RETRANSMIT)
                self._disarm(txn, _TIMEOUT)
                if txn._cancel_pending:  # RFC 3261 section 9.1: CANCEL waited for a 1xx
                    txn._cancel_pending = False
                    self._start_cancel(txn, now)
            return [ResponseReceived(txn, response, False)]
        if inp == "final":
            if old == COMPLETED:
                # RFC 3261 section 17.1.1.2: a retransmitted final gets the ACK again.
                if txn._ack is not None:
                    self._out.append((txn._ack, txn.target))
                return []
            txn._cancel_pending = False
            self._disarm(txn, _RETRANSMIT)
            self._disarm(txn, _TIMEOUT)
            # RFC 3261 section 17.1.1.3: the transaction itself ACKs a non-2xx final.
            ack = bytes(make_ack(txn.request, response))
            txn._ack = ack
            self._out.append((ack, txn.target))
            event = ResponseReceived(txn, response, False)
            if txn.target.reliable:
                self._terminate(txn)  # timer D = 0
            else:
                self._arm(txn, "D", now + self._timer_d)
            return [event]
        # 2xx: RFC 6026 section 8.4, Accepted; every 2xx goes up, the TU ACKs each.
        tag = _to_tag(response)
        acks = txn._acks_2xx
        if old == ACCEPTED and acks is not None:
            if tag in acks:
                sent = acks[tag]
                if sent is not None:
                    self._out.append(sent)  # re-send the TU's ACK (section 13.2.2.4)
                return [ResponseReceived(txn, response, True)]
            acks[tag] = None  # another fork's 2xx
            return [ResponseReceived(txn, response, False)]
        txn._cancel_pending = False
        txn._acks_2xx = {tag: None}
        self._disarm(txn, _RETRANSMIT)
        self._disarm(txn, _TIMEOUT)
        self._arm(txn, "M", now + self._t64)
        return [ResponseReceived(txn, response, False)]

    # -- output ---------------------------------------------------------
    def send_request(self, request: Request, target: Target, now: float) -> ClientTransaction:
        """Start a client transaction and queue the request (RFC 3261 section 17.1).

        The request must carry a top Via with a branch (RFC 3261 section 8.1.1.7). ACKs
        are not sent through transactions: use ``send_ack_2xx`` or ``send_stateless``.
        """
        if request.method == "ACK":
            raise ValueError("ACK goes through send_ack_2xx or send_stateless, not a transaction")
        branch = request.top_via.branch
        if not branch:
            raise ValueError("request has no Via branch (RFC 3261 section 8.1.1.7)")
        key = _client_key(branch, request.method)
        if key in self._clients:
            raise ValueError(f"a client transaction with branch {branch!r} already exists")
        txn = ClientTransaction(key, request, target)
        data = bytes(request)
        txn._data = data
        self._clients[key] = txn
        self._out.append((data, target))
        if not target.reliable:  # timer A / E (RFC 3261 sections 17.1.1.2, 17.1.2.2)
            txn._interval = self._t1
            self._arm(txn, "A" if txn.is_invite else "E", now + self._t1)
        self._arm(txn, "B" if txn.is_invite else "F", now + self._t64)
        return txn

    def send_response(self, txn: ServerTransaction, response: Response, now: float) -> None:
        """Queue a response of ``txn`` to its ``reply_target``.

        Raises ``TransactionStateError`` when the state does not allow it (e.g. a second
        final response, or any response after the transaction ended).
        """
        status = response.status
        if status < 200:
            inp = "send 1xx"
        elif status < 300 and txn.is_invite:
            inp = "send 2xx"
        else:
            inp = "send final"
        old = txn.state
        self._step(txn, inp)
        data = bytes(response)
        txn._data = data
        self._out.append((data, txn.reply_target))
        if inp == "send 1xx":
            return
        if not txn.is_invite:
            # RFC 3261 section 17.2.2: Completed; timer J (64*T1 unreliable, 0 reliable).
            if txn.source.reliable:
                self._terminate(txn)
            else:
                self._arm(txn, "J", now + self._t64)
            return
        if inp == "send 2xx":
            if old == PROCEEDING:
                # RFC 6026 section 8.7: Accepted, timer L. RFC 3261 section 13.3.1.4: the
                # 2xx is retransmitted (T1 doubling to T2, even on reliable transports)
                # until its ACK arrives or 64*T1 passes.
                txn._interval = self._t1
                self._arm(txn, "retransmit 2xx", now + self._t1)
                self._arm(txn, "L", now + self._t64)
                if txn._ack_key is not None:
                    self._accepted[txn._ack_key] = txn
            return
        # RFC 3261 section 17.2.1: non-2xx final, Completed; timers G (unreliable) and H.
        if not txn.reply_target.reliable:
            txn._interval = self._t1
            self._arm(txn, "G", now + self._t1)
        self._arm(txn, "H", now + self._t64)

    def send_cancel(self, txn: ClientTransaction, now: float) -> ClientTransaction | None:
        """Cancel a pending INVITE (RFC 3261 section 9.1).

        Returns the CANCEL client transaction, or None when it cannot be sent now: before
        any provisional response it is remembered and sent when the first 1xx arrives (then
        ``txn.cancel`` holds it); after a final response, or when a CANCEL was already sent
        or is pending, nothing happens.
        """
        if not txn.is_invite:
            raise ValueError("only INVITE transactions can be cancelled (RFC 3261 section 9.1)")
        if txn.cancel is not None or txn._cancel_pending:
            return None
        if txn.state == CALLING:
            txn._cancel_pending = True
            return None
        if txn.state == PROCEEDING:
            return self._start_cancel(txn, now)
        return None

    def _start_cancel(self, txn: ClientTransaction, now: float) -> ClientTransaction:
        cancel = self.send_request(make_cancel(txn.request), txn.target, now)
        txn.cancel = cancel
        # RFC 3261 section 9.1: without a final response 64*T1 after the CANCEL, the INVITE
        # transaction is considered cancelled and destroyed.
        self._arm(txn, "cancel", now + self._t64)
        return cancel

    def send_ack_2xx(
        self, txn: ClientTransaction, ack: Request, target: Target | None = None
    ) -> None:
        """Queue the TU's ACK for a 2xx of ``txn`` (RFC 3261 section 13.2.2.4).

        It goes to ``target`` (default ``txn.target``) and is re-sent whenever the 2xx
        with the same To tag is retransmitted while ``txn`` is Accepted.
        """
        dest = target if target is not None else txn.target
        data = bytes(ack)
        self._out.append((data, dest))
        if txn.state == ACCEPTED and txn._acks_2xx is not None:
            txn._acks_2xx[_to_tag(ack)] = (data, dest)

    def send_stateless(self, msg: Request | Response, target: Target) -> None:
        """Queue a message outside any transaction (RFC 3261 sections 8.2.7, 16.11)."""
        self._out.append((bytes(msg), target))

    def find_invite(self, cancel: Request) -> ServerTransaction | None:
        """The INVITE server transaction a CANCEL targets (RFC 3261 section 9.2)."""
        try:
            txn = self._servers.get(_server_key(cancel, "INVITE"))
        except SipParseError:
            return None
        return txn if txn is not None and txn.is_invite else None

    def pop_outgoing(self) -> list[tuple[bytes, Target]]:
        """Everything to write now, in order."""
        out = self._out
        self._out = []
        return out

    # -- timers ---------------------------------------------------------
    def next_timer(self) -> float | None:
        """The earliest live deadline, or None."""
        heap = self._heap
        while heap:
            _deadline, seq, txn, kind = heap[0]
            if txn._seqs[_SLOT[kind]] == seq:
                return heap[0][0]
            heapq.heappop(heap)
            self._stale -= 1
        return None

    def handle_timer(self, now: float) -> list[Event]:
        """Fire every timer whose deadline is at or before ``now``."""
        events: list[Event] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            _deadline, seq, txn, kind = heapq.heappop(heap)
            seqs = txn._seqs
            slot = _SLOT[kind]
            if seqs[slot] != seq:
                self._stale -= 1
                continue
            seqs[slot] = 0
            self._fire(txn, kind, now, events)
        return events

    def _fire(
        self,
        txn: ClientTransaction | ServerTransaction,
        kind: str,
        now: float,
        events: list[Event],
    ) -> None:
        if self._step(txn, kind) == TERMINATED:
            if kind in _TIMEOUT_KINDS:
                events.append(TransactionTimeout(txn))  # B, F, H, RFC 9.1 guard
            elif kind == "L" and isinstance(txn, ServerTransaction) and not txn._acked:
                events.append(AckTimeout(txn))  # RFC 3261 section 13.3.1.4
            self._terminate(txn)
            return
        # A retransmission timer: A, E, G or the 2xx retransmission.
        interval = txn._interval * 2
        if kind == "A":
            pass  # RFC 3261 section 17.1.1.2: timer A doubles without a cap
        elif kind == "E" and txn.state == PROCEEDING:
            interval = self._t2  # RFC 3261 section 17.1.2.2
        elif interval > self._t2:
            interval = self._t2  # E, G (section 17.2.1), 2xx (section 13.3.1.4)
        txn._interval = interval
        data = txn._data
        if data is not None:
            self._out.append(
                (data, txn.target if isinstance(txn, ClientTransaction) else txn.reply_target)
            )
        self._arm(txn, kind, now + interval)

    def _step(self, txn: ClientTransaction | ServerTransaction, inp: str) -> str:
        try:
            new = txn._table[txn.state][inp]
        except KeyError:
            raise TransactionStateError(
                f"{inp!r} is not allowed in state {txn.state} of {txn!r}"
            ) from None
        txn.state = new
        return new

    def _arm(self, txn: ClientTransaction | ServerTransaction, kind: str, deadline: float) -> None:
        slot = _SLOT[kind]
        if txn._seqs[slot]:
            self._stale += 1
        if self._stale > _COMPACT_MIN and self._stale * 2 > len(self._heap):
            self._compact()
        self._seq += 1
        txn._seqs[slot] = self._seq
        heapq.heappush(self._heap, (deadline, self._seq, txn, kind))

    def _disarm(self, txn: ClientTransaction | ServerTransaction, slot: int) -> None:
        if txn._seqs[slot]:
            txn._seqs[slot] = 0
            self._stale += 1

    def _compact(self) -> None:
        # In place: handle_timer may be iterating over this very list.
        heap = self._heap
        heap[:] = [e for e in heap if e[2]._seqs[_SLOT[e[3]]] == e[1]]
        heapq.heapify(heap)
        self._stale = 0

    def discard(self, txn: ServerTransaction) -> None:
        """Forget a server transaction the TU leaves unanswered on purpose (a request from
        an address it ignores). Nothing is sent; a retransmission opens a new one."""
        self._terminate(txn)

    def _terminate(self, txn: ClientTransaction | ServerTransaction) -> None:
        for slot in (_RETRANSMIT, _TIMEOUT, _END):
            self._disarm(txn, slot)
        txn.state = TERMINATED
        if isinstance(txn, ClientTransaction):
            if self._clients.get(txn.key) is txn:
                del self._clients[txn.key]
            return
        if self._servers.get(txn.key) is txn:
            del self._servers[txn.key]
        ack_key = txn._ack_key
        if ack_key is not None and self._accepted.get(ack_key) is txn:
            del self._accepted[ack_key]

    # -- transport errors -----------------------------------------------
    def transport_error(self, target: Target, now: float) -> list[Event]:
        """Fail every transaction talking to ``target`` (RFC 3261 sections 17.1.4, 17.2.4).

        Matches client transactions by ``target`` and server transactions by ``source``
        or ``reply_target``; ``conn`` is compared only when both sides carry one.
        """
        events: list[Event] = []
        for ctx in [t for t in self._clients.values() if _same_peer(t.target, target)]:
            events.append(TransportFailed(ctx))
            self._terminate(ctx)
        for stx in [
            t
            for t in self._servers.values()
            if _same_peer(t.source, target) or _same_peer(t.reply_target, target)
        ]:
            events.append(TransportFailed(stx))
            self._terminate(stx)
        return events
