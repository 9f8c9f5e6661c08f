"""Twisted adapters for SIP over UDP, TCP and TLS around the sans-I/O cores.

The adapter is thin (STYLE.md, the h2 / aioquic pattern): it stamps
``reactor.seconds()``, parses bytes with the codec, feeds the transaction
layer, hands events to the transaction user, writes what the layer wants sent
and re-arms one delayed call for the layer's next timer.

Invariants:
- No exception escapes a datagram or stream handler: parse errors are answered
  (when a response can be built) or dropped and counted; any other exception
  is a bug, logged with the message that caused it, and the socket keeps serving.
- Stream connections are capped in buffered bytes; an unframeable stream is
  answered once with 400 where possible and closed.
- Nothing is ever sent to a broadcast, multicast or unspecified address.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from twisted.internet import protocol
from twisted.internet.interfaces import IDelayedCall
from twisted.python.failure import Failure

from gateway.sip.errors import SipParseError
from gateway.sip.ids import random_hex
from gateway.sip.message import (
    Request,
    SipMessage,
    StreamFramer,
    make_response_from_error,
    parse_datagram,
)
from gateway.sip.transaction import Event, Target, TransactionLayer

log = logging.getLogger("gateway.sip.transport")


@dataclass
class Counters:
    """What the transport saw and dropped; exposed for tests, logs and metrics."""

    received: int = 0
    sent: int = 0
    parse_errors: int = 0
    answered_errors: int = 0
    dropped: int = 0
    refused_destinations: int = 0
    handler_errors: int = 0
    tcp_closed_overflow: int = 0
    by_status: dict[int, int] = field(default_factory=dict)


class TransactionUser(Protocol):
    """What the stack calls with each event (the B2BUA core implements it)."""

    def handle_event(self, event: Event, now: float) -> None: ...

    def invalid_request(self, request: Request, error: SipParseError, source: Target) -> None: ...


@dataclass(frozen=True, slots=True)
class LocalAddress:
    """A listening socket's address as written in Via and Contact."""

    transport: str
    host: str
    port: int

    @property
    def sent_by(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def grow_buffers(sock: socket.socket, size: int) -> None:
    """Ask for ``size``-byte socket buffers so bursts are not dropped by the kernel.

    SO_RCVBUFFORCE (root) passes the rmem_max cap; otherwise the kernel clamps.
    """
    for force, plain in ((33, socket.SO_RCVBUF), (32, socket.SO_SNDBUF)):  # *BUFFORCE
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, size)
        except OSError:
            try:
                sock.setsockopt(socket.SOL_SOCKET, plain, size)
            except OSError as exc:
                log.warning("cannot set UDP socket buffer to %d bytes: %s", size, exc)


_FORBIDDEN: dict[str, bool] = {}


def _forbidden_destination(host: str) -> bool:
    """Broadcast, multicast and unspecified addresses are never sent to (memoized)."""
    verdict = _FORBIDDEN.get(host)
    if verdict is None:
        verdict = _classify_destination(host)
        if len(_FORBIDDEN) < 65536:
            _FORBIDDEN[host] = verdict
    return verdict


def _classify_destination(host: str) -> bool:
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False  # names are resolved elsewhere; only literals reach here
    if addr.is_multicast or addr.is_unspecified:
        return True
    return isinstance(addr, ipaddress.IPv4Address) and addr == ipaddress.IPv4Address(
        "255.255.255.255"
    )


class SipStack:
    """Owns the transaction layer, the sockets and the layer's timer."""

    def __init__(
        self,
        reactor: Any,
        layer: TransactionLayer,
        tcp_max_buffer: int = 65536,
        udp_buffer: int = 4194304,
    ) -> None:
        self.reactor = reactor
        self.layer = layer
        self.user: TransactionUser | None = None
        self.counters = Counters()
        self.tcp_max_buffer = tcp_max_buffer
        self.udp_buffer = udp_buffer
        self.local: dict[str, LocalAddress] = {}
        self._udp: dict[str, Any] = {}  # family ("4"/"6") -> UDP port (for sending)
        self._conns: dict[int, SipStreamProtocol] = {}
        self._conn_by_peer: dict[tuple[str, str, int], int] = {}
        self._pending_conn: dict[tuple[str, str, int], list[bytes]] = {}
        self._next_conn = 1
        self._timer: IDelayedCall | None = None
        self._timer_at: float | None = None
        self._listening: list[Any] = []
        self.tls_server_options: Any = None
        self.tls_client_options: Callable[[str], Any] | None = None
        self.branch_prefix = "z9hG4bK" + secrets.token_hex(3)

    # -- listening ------------------------------------------------------
    def listen(self, transport: str, host: str, port: int) -> LocalAddress:
        if transport == "udp":
            listener = self.reactor.listenUDP(port, SipDatagramProtocol(self), interface=host)
            grow_buffers(listener.getHandle(), self.udp_buffer)
            self._udp["6" if ":" in host else "4"] = listener
        elif transport == "tcp":
            listener = self.reactor.listenTCP(port, SipStreamFactory(self, "tcp"), interface=host)
        elif transport == "tls":
            if self.tls_server_options is None:
                raise ValueError("TLS listener without a certificate")
            listener = self.reactor.listenSSL(
                port, SipStreamFactory(self, "tls"), self.tls_server_options, interface=host
            )
        else:
            raise ValueError(f"unknown transport {transport}")
        self._listening.append(listener)
        actual = listener.getHost().port
        local = LocalAddress(transport, host, actual)
        self.local.setdefault(transport, local)
        return local

    def stop_listening(self) -> None:
        for listener in self._listening:
            listener.stopListening()
        self._listening.clear()
        for conn in list(self._conns.values()):
            conn.tx.loseConnection()

    def new_branch(self) -> str:
        return f"{self.branch_prefix}.{random_hex(8)}"

    # -- receiving ------------------------------------------------------
    def datagram_received(self, data: bytes, source: Target) -> None:
        now = self.reactor.seconds()
        self.counters.received += 1
        if len(data) <= 4 and not data.strip():
            return  # CRLF keep-alive over UDP (RFC 5626 section 4.4.1)
        try:
            msg = parse_datagram(data)
        except SipParseError as err:
            self._parse_error(err, source)
            return
        except Exception:
            self.counters.handler_errors += 1
            log.exception("bug while parsing a datagram from %s:%s", source.host, source.port)
            return
        self.message_received(msg, source, now)

    def message_received(self, msg: SipMessage, source: Target, now: float) -> None:
        try:
            events = self.layer.receive(msg, source, now)
            user = self.user
            if user is not None:
                for event in events:
                    user.handle_event(event, now)
        except SipParseError as err:
            self.counters.parse_errors += 1
            if isinstance(msg, Request) and self.user is not None and err.respond:
                self.user.invalid_request(msg, err, source)
            else:
                self.counters.dropped += 1
        except Exception:
            self.counters.handler_errors += 1
            log.exception("bug while handling %r from %s:%s", msg, source.host, source.port)
        self.flush()

    def _parse_error(self, err: SipParseError, source: Target) -> None:
        self.counters.parse_errors += 1
        answer = make_response_from_error(err)
        if answer is None:
            self.counters.dropped += 1
            log.debug("dropped unparseable message from %s:%s: %s", source.host, source.port, err)
            return
        self.counters.answered_errors += 1
        self.counters.by_status[err.status] = self.counters.by_status.get(err.status, 0) + 1
        log.debug("answered %s to %s:%s: %s", err.status, source.host, source.port, err)
        self.write(answer, self._reply_target(source))

    def _reply_target(self, source: Target) -> Target:
        return source

    # -- sending ----------------------------------------------------------
    def flush(self) -> None:
        for data, target in self.layer.pop_outgoing():
            self.write(data, target)
        self._rearm()

    def write(self, data: bytes, target: Target) -> None:
        if _forbidden_destination(target.host):
            self.counters.refused_destinations += 1
            return
        self.counters.sent += 1
        if target.transport == "udp":
            port = self._udp.get("6" if ":" in target.host else "4")
            if port is None:
                self.counters.dropped += 1
                return
            try:
                port.write(data, (target.host, target.port))
            except OSError as exc:
                log.debug("UDP send to %s:%s failed: %s", target.host, target.port, exc)
                self._transport_failed(target)
            return
        conn_id = target.conn
        if conn_id is None or conn_id not in self._conns:
            conn_id = self._conn_by_peer.get((target.transport, target.host, target.port))
        conn = self._conns.get(conn_id) if conn_id is not None else None
        if conn is not None:
            conn.tx.write(data)
            return
        self._connect(data, target)

    def _connect(self, data: bytes, target: Target) -> None:
        peer = (target.transport, target.host, target.port)
        pending = self._pending_conn.get(peer)
        if pending is not None:
            pending.append(data)
            return
        self._pending_conn[peer] = [data]
        factory = SipClientFactory(self, target)
        if target.transport == "tls":
            if self.tls_client_options is None:
                self._connect_failed(target)
                return
            options = self.tls_client_options(target.host)
            self.reactor.connectSSL(target.host, target.port, factory, options, timeout=5)
        else:
            self.reactor.connectTCP(target.host, target.port, factory, timeout=5)

    def _connect_failed(self, target: Target) -> None:
        self._pending_conn.pop((target.transport, target.host, target.port), None)
        self._transport_failed(target)

    def _transport_failed(self, target: Target) -> None:
        now = self.reactor.seconds()
        try:
            events = self.layer.transport_error(target, now)
            if self.user is not None:
                for event in events:
                    self.user.handle_event(event, now)
        except Exception:
            self.counters.handler_errors += 1
            log.exception("bug while handling a transport failure to %s", target)
        self.flush()

    # -- stream connections ---------------------------------------------
    def connection_made(self, conn: SipStreamProtocol) -> int:
        conn_id = self._next_conn
        self._next_conn += 1
        self._conns[conn_id] = conn
        peer = (conn.kind, conn.peer_host, conn.peer_port)
        self._conn_by_peer[peer] = conn_id
        queued = self._pending_conn.pop(peer, None)
        if queued:
            for data in queued:
                conn.tx.write(data)
        return conn_id

    def connection_lost(self, conn: SipStreamProtocol) -> None:
        self._conns.pop(conn.conn_id, None)
        peer = (conn.kind, conn.peer_host, conn.peer_port)
        if self._conn_by_peer.get(peer) == conn.conn_id:
            del self._conn_by_peer[peer]

    # -- timer ------------------------------------------------------------
    def _rearm(self) -> None:
        when = self.layer.next_timer()
        if when == self._timer_at and self._timer is not None and self._timer.active():
            return
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._timer_at = when
        if when is not None:
            delay = max(0.0, when - self.reactor.seconds())
            self._timer = self.reactor.callLater(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        now = self.reactor.seconds()
        try:
            events = self.layer.handle_timer(now)
            if self.user is not None:
                for event in events:
                    self.user.handle_event(event, now)
        except Exception:
            self.counters.handler_errors += 1
            log.exception("bug in a transaction timer")
        self.flush()


class SipDatagramProtocol(protocol.DatagramProtocol):
    def __init__(self, stack: SipStack) -> None:
        self.stack = stack

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:  # noqa: N802
        try:
            self.stack.datagram_received(datagram, Target("udp", addr[0], addr[1]))
        except Exception:  # last line of defence: the socket keeps serving
            self.stack.counters.handler_errors += 1
            log.exception("bug in the UDP handler")


class SipStreamProtocol(protocol.Protocol):
    """One TCP or TLS connection, inbound or outbound."""

    def __init__(self, stack: SipStack, kind: str) -> None:
        self.stack = stack
        self.kind = kind
        self.framer = StreamFramer(stack.tcp_max_buffer)
        self.conn_id = 0
        self.peer_host = ""
        self.peer_port = 0

    @property
    def tx(self) -> Any:
        """The connection's transport (always set once connected)."""
        return self.transport

    def connectionMade(self) -> None:  # noqa: N802
        peer = self.tx.getPeer()
        self.peer_host = peer.host
        self.peer_port = peer.port
        self.conn_id = self.stack.connection_made(self)

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        stack = self.stack
        source = Target(self.kind, self.peer_host, self.peer_port, self.conn_id)
        pings = self.framer.pings
        try:
            messages = self.framer.feed(data)
        except SipParseError as err:
            stack.counters.tcp_closed_overflow += 1
            stack._parse_error(err, source)
            self.tx.loseConnection()
            return
        except Exception:
            stack.counters.handler_errors += 1
            log.exception("bug while framing a stream from %s:%s", self.peer_host, self.peer_port)
            self.tx.loseConnection()
            return
        if self.framer.pings != pings:
            self.tx.write(b"\r\n")  # pong (RFC 5626 section 4.4.1)
        now = stack.reactor.seconds()
        for msg in messages:
            stack.counters.received += 1
            stack.message_received(msg, source, now)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:  # noqa: N802
        self.stack.connection_lost(self)


class SipStreamFactory(protocol.ServerFactory):
    def __init__(self, stack: SipStack, kind: str) -> None:
        self.stack = stack
        self.kind = kind

    def buildProtocol(self, addr: Any) -> SipStreamProtocol:  # noqa: N802
        return SipStreamProtocol(self.stack, self.kind)


class SipClientFactory(protocol.ClientFactory):
    def __init__(self, stack: SipStack, target: Target) -> None:
        self.stack = stack
        self.target = target

    def buildProtocol(self, addr: Any) -> SipStreamProtocol:  # noqa: N802
        return SipStreamProtocol(self.stack, self.target.transport)

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:  # noqa: N802
        log.info("connection to %s:%s failed: %s", self.target.host, self.target.port,
                 reason.getErrorMessage())
        self.stack._connect_failed(self.target)
