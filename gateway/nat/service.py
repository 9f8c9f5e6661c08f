"""The STUN/TURN service: the Twisted adapter around the sans-I/O ``TurnServer``
(gateway.nat.server), in the style of aioquic's asyncio adapter and Twisted's HTTP/2 shell.

It owns everything the core does not: the client sockets (a UDP port and a TCP listener per
``[turn] listen`` address), one UDP relay socket per allocation (and per reserved EVEN-PORT
partner) on ``[turn] relay_address`` within ``relay_port_range``, the clock (``reactor.seconds()``,
UTC epoch seconds, so credential expiries and ``turn_usage`` times are wall-clock times) and one
delayed call re-armed to the core's ``next_timer()``. It feeds the core, performs its outputs
(``ToClient``, ``ToPeer``, ``CloseConnection``) and hands every ``TurnUsage`` to the CDR store.

Invariants:
- No exception escapes a datagram or stream handler: a failed send is counted
  (``send_errors``), anything else is a bug, counted (``handler_errors``), logged with its
  traceback the first few times, and the datagram or chunk is dropped; the reactor and every
  other allocation carry on.
- Addresses given to the core are canonical ``(host, port)``: Twisted's IPv6 4-tuples are
  trimmed and IPv6 hosts printed as ``ipaddress`` prints them.
- Relay ports follow the core's ``allocate_port(even, pair)`` contract: an even port when
  asked, and with ``pair`` the port above it bound too, so that nobody else takes it before its
  RESERVATION-TOKEN is used or it is released. Every relay socket is bound before its address is
  handed out; a port someone else holds is skipped (and retried later).
- TCP: at most ``max_tcp_connections`` client connections (more are closed at once); a
  connection whose unsent data reaches ``tcp_max_buffer`` bytes has what the core sends to it
  dropped (counted ``drop_tcp_backlog``) until the kernel takes it, as a UDP client would lose
  it; what a client sends is capped by the core's stream deframer.
- The relay path (``datagramReceived`` of a relay socket, ChannelData from a client) does no
  logging and allocates nothing beyond what the core returns.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from twisted.internet import protocol, task
from twisted.internet.error import CannotListenError
from twisted.python.failure import Failure

from gateway.config import TurnConfig
from gateway.nat.allocation import (
    ClientRoute,
    CloseConnection,
    Output,
    ToClient,
    ToPeer,
    TurnSettings,
    TurnUsage,
    format_address,
)
from gateway.nat.credentials import TurnAuth
from gateway.nat.server import TurnServer
from gateway.nat.stun import Address
from gateway.sip.transport import grow_buffers

__all__ = ["RelayPorts", "TurnService", "canonical", "settings_from_config"]

log = logging.getLogger("gateway.nat")

#: Handler bugs logged with a traceback before the rest are only counted.
_LOGGED_ERRORS = 5
#: Ports tried (and skipped, when someone else holds them) before an Allocate gets 508.
_BIND_ATTEMPTS = 16
#: Socket buffers asked for on the client UDP sockets, which carry every client's traffic.
_UDP_BUFFER = 4 * 1024 * 1024
#: ...and on each relay socket (a burst toward one client is not dropped by the kernel).
_RELAY_BUFFER = 512 * 1024
_DEFAULTS = TurnSettings()


def _sweep_interval(timeout: int) -> float:
    """How often idle TCP clients are looked for: a quarter of the timeout, 1-5 s."""
    return min(5.0, max(1.0, timeout / 4))


def canonical(addr: Sequence[Any]) -> Address:
    """``(host, port)`` from what Twisted gives: an IPv4 pair as is, an IPv6 host (of a pair
    or a 4-tuple with flow info and scope) in ``ipaddress``'s canonical spelling."""
    host = addr[0]
    if ":" in host:
        host = str(ipaddress.ip_address(host.partition("%")[0]))
    return (host, int(addr[1]))


def settings_from_config(config: TurnConfig) -> TurnSettings:
    """The core's policy from ``[turn]``."""
    return TurnSettings(
        enabled=config.enabled,
        relay_address=config.relay_address,
        allowed_peers=tuple(config.allowed_peers),
        default_lifetime=min(_DEFAULTS.default_lifetime, config.max_lifetime),
        max_lifetime=config.max_lifetime,
        nonce_lifetime=config.nonce_lifetime,
        user_quota=config.user_quota,
        total_quota=config.total_quota,
        bandwidth=config.bandwidth,
        max_permissions=config.max_permissions,
    )


class RelayPorts:
    """Bookkeeping of ``relay_port_range``: which ports are free, handed out in the order they
    became free (a released port goes to the back, so late packets of an ended allocation
    rarely reach a new one). Sans-I/O; the service binds what it is given."""

    __slots__ = ("_free", "first", "last")

    def __init__(self, first: int, last: int) -> None:
        if not 0 < first <= last <= 65535:
            raise ValueError(f"relay port range {first}-{last} is empty")
        self.first = first
        self.last = last
        self._free: dict[int, None] = dict.fromkeys(range(first, last + 1))

    @property
    def size(self) -> int:
        return self.last - self.first + 1

    @property
    def free(self) -> int:
        return len(self._free)

    def candidates(self, even: bool, pair: bool) -> Iterable[int]:
        """Free ports fit for a request, oldest free first: any port; an even one (EVEN-PORT);
        an even one whose upper neighbour is free too (EVEN-PORT with the R bit)."""
        free = self._free
        for port in list(free):
            if port not in free:
                continue  # taken while iterating (a pair's upper port)
            if even and port & 1:
                continue
            if pair and port + 1 not in free:
                continue
            yield port

    def take(self, port: int) -> None:
        del self._free[port]

    def give_back(self, port: int) -> None:
        if self.first <= port <= self.last:
            self._free[port] = None


class TurnService:
    """The gateway's STUN/TURN server on a reactor: ``start`` listens, ``stop`` ends every
    allocation (usage records to ``record``), closes every socket and connection.
    ``secret`` is the time-limited credentials' shared secret ("" = none; default
    ``config.auth_secret``)."""

    def __init__(
        self,
        reactor: Any,
        config: TurnConfig,
        record: Callable[[TurnUsage], None] | None = None,
        random: Callable[[int], bytes] = os.urandom,
        secret: str | None = None,
    ) -> None:
        self.reactor = reactor
        self.config = config
        self.record = record
        # the TURN REST API secret: the app passes gateway.nat.secret.turn_secret's (the one
        # the REST relay configuration issues credentials with); else [turn] auth_secret
        secret = config.auth_secret if secret is None else secret
        auth = TurnAuth(config.realm, secret, dict(config.users))
        self.server = TurnServer(
            settings_from_config(config), auth, self._allocate_port, self._release_port, random
        )
        self.ports = RelayPorts(*config.relay_port_range)
        self.listening: list[tuple[str, Address]] = []  # (transport, bound address)
        self._udp: dict[Address, Any] = {}  # bound client UDP address -> Twisted port
        self._udp_send: dict[Address, Callable[[bytes, Address], None]] = {}  # -> its sendto
        self._tcp_ports: list[Any] = []
        self._connections: dict[ClientRoute, _ClientStream] = {}
        self._relays: dict[Address, tuple[Any, Callable[[bytes, Address], None]]] = {}
        self._timer: Any = None
        self._timer_at: float | None = None
        self._idle_sweep: Any = None  # the LoopingCall closing TCP clients without allocations
        self.handler_errors = 0
        self.send_errors = 0
        self.tcp_refused = 0
        self.tcp_backlog_drops = 0
        self.tcp_idle_closed = 0
        self.bind_failures = 0
        self.usage_records = 0
        self._stopped = False

    # --- life cycle -------------------------------------------------------------------------

    def start(self) -> list[tuple[str, Address]]:
        """Listen on every ``[turn] listen`` address; returns ``(transport, address)`` as bound
        (port 0 replaced by the port the OS chose). Raises CannotListenError."""
        try:
            for listen in self.config.listen:
                if listen.transport == "udp":
                    port = self.reactor.listenUDP(
                        listen.port,
                        _ClientDatagrams(self),
                        interface=listen.host,
                        maxPacketSize=65535,
                    )
                    grow_buffers(port.socket, _UDP_BUFFER)
                    bound = canonical((port.getHost().host, port.getHost().port))
                    port.protocol.server_address = bound
                    self._udp[bound] = port
                    self._udp_send[bound] = self._sender(port)
                else:
                    port = self.reactor.listenTCP(
                        listen.port, _ClientStreams(self), interface=listen.host
                    )
                    bound = canonical((port.getHost().host, port.getHost().port))
                    self._tcp_ports.append(port)
                self.listening.append((listen.transport, bound))
        except BaseException:
            self._close_listeners()
            raise
        return list(self.listening)

    def stop(self) -> None:
        """End every allocation ("stopped" usage records), release every relay port, close
        the listeners and the TCP connections, cancel the timer. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._idle_sweep is not None and self._idle_sweep.running:
            self._idle_sweep.stop()
        self._idle_sweep = None
        self._guard(lambda: self._records(self.server.stop(self.reactor.seconds())))
        for port, _ in list(self._relays.values()):
            port.stopListening()
        self._relays.clear()
        self._close_listeners()
        for conn in list(self._connections.values()):
            conn.tx.abortConnection()

    def _close_listeners(self) -> None:
        for port in [*self._udp.values(), *self._tcp_ports]:
            port.stopListening()
        self._udp.clear()
        self._udp_send.clear()
        self._tcp_ports.clear()

    @property
    def counters(self) -> dict[str, int]:
        """The core's counters and the adapter's: TCP connections, relay ports, errors."""
        counters = self.server.counters
        counters.update(
            tcp_connections=len(self._connections),
            tcp_refused=self.tcp_refused,
            drop_tcp_backlog=self.tcp_backlog_drops,
            tcp_idle_closed=self.tcp_idle_closed,
            relay_sockets=len(self._relays),
            relay_ports_free=self.ports.free,
            bind_failures=self.bind_failures,
            send_errors=self.send_errors,
            handler_errors=self.handler_errors,
            usage_records=self.usage_records,
        )
        return counters

    # --- feeding the core -------------------------------------------------------------------

    def client_data(self, data: bytes, client: Address, server: Address, transport: str) -> None:
        """A datagram or stream chunk from a client: to the core, outputs performed."""
        try:
            outputs = self.server.on_client(data, client, server, transport, self.reactor.seconds())
            if outputs:
                self._perform(outputs)
            self._arm()
        except Exception:
            self._bug("client data from %s", client)

    def peer_data(self, relay: Address, data: bytes, peer: Address) -> None:
        """A datagram from a peer at a relay socket (the hot path: a UDP client's relayed
        packet goes straight to its listening socket's ``sendto``)."""
        try:
            for output in self.server.on_peer(relay, data, peer, self.reactor.seconds()):
                if type(output) is ToClient:
                    route = output.route
                    send = self._udp_send.get(route.server) if route.transport == "udp" else None
                    if send is not None:
                        send(output.data, route.client)
                        continue
                self._perform_one(output)
        except Exception:
            self._bug("peer data from %s at relay %s", peer, relay)

    def _watch_idle(self) -> None:
        """Run the idle sweep while there are TCP clients (none: no timer at all)."""
        if self._stopped or (self._idle_sweep is not None and self._idle_sweep.running):
            return
        sweep = task.LoopingCall(self._sweep_idle)
        sweep.clock = self.reactor
        sweep.start(_sweep_interval(self.config.tcp_idle_timeout), now=False)
        self._idle_sweep = sweep

    def _sweep_idle(self) -> None:
        """Close the TCP clients that have been without a live allocation for
        ``[turn] tcp_idle_timeout`` (never allocated, or their allocation ended), at once:
        nothing is owed to them, and a client that does not read would keep a graceful close
        from ever finishing. A connection the core closed gracefully and that is still there a
        sweep later is aborted too."""
        try:
            now = self.reactor.seconds()
            timeout = self.config.tcp_idle_timeout
            has_allocation = self.server.has_allocation
            for route, conn in list(self._connections.items()):
                if conn.closing_since is not None:
                    if now - conn.closing_since >= _sweep_interval(timeout):
                        conn.tx.abortConnection()
                    continue
                if has_allocation(route.client, route.server, "tcp"):
                    conn.idle_since = None
                elif conn.idle_since is None:
                    conn.idle_since = now
                elif now - conn.idle_since >= timeout:
                    self.tcp_idle_closed += 1
                    conn.closing_since = now
                    conn.tx.abortConnection()
            if not self._connections and self._idle_sweep is not None:
                self._idle_sweep.stop()
                self._idle_sweep = None
        except Exception:
            self._bug("%s", "idle TCP sweep")

    def connection_closed(self, route: ClientRoute) -> None:
        self._connections.pop(route, None)
        try:
            self._records(self.server.on_close(route.client, route.server, self.reactor.seconds()))
        except Exception:
            self._bug("close of %s", route.client)

    def _perform(self, outputs: Sequence[Output]) -> None:
        for output in outputs:
            self._perform_one(output)

    def _perform_one(self, output: Output) -> None:
        kind = type(output)
        if kind is ToClient:
            assert isinstance(output, ToClient)
            route = output.route
            if route.transport == "udp":
                send = self._udp_send.get(route.server)
                if send is not None:
                    send(output.data, route.client)
            else:
                conn = self._connections.get(route)
                if conn is not None:
                    conn.send(output.data)
        elif kind is ToPeer:
            assert isinstance(output, ToPeer)
            relay = self._relays.get(output.relay)
            if relay is not None:
                relay[1](output.data, output.peer)
        elif kind is CloseConnection:
            assert isinstance(output, CloseConnection)
            conn = self._connections.get(output.route)
            if conn is not None and conn.closing_since is None:
                # gracefully (what was answered goes first); the idle sweep aborts it if the
                # client does not read it
                conn.closing_since = self.reactor.seconds()
                conn.tx.loseConnection()
        elif isinstance(output, TurnUsage):
            self._records((output,))

    def _records(self, usages: Iterable[TurnUsage]) -> None:
        for usage in usages:
            self.usage_records += 1
            log.info(
                "turn: allocation ended (%s): user=%s client=%s/%s relay=%s in=%dB/%dp out=%dB/%dp",
                usage.reason,
                usage.username,
                usage.transport,
                format_address(usage.client),
                format_address(usage.relay),
                usage.bytes_in,
                usage.packets_in,
                usage.bytes_out,
                usage.packets_out,
            )
            if self.record is not None:
                try:
                    self.record(usage)
                except Exception:
                    self._bug("usage record of relay %s", usage.relay)

    def _bug(self, what: str, *args: object) -> None:
        self.handler_errors += 1
        if self.handler_errors <= _LOGGED_ERRORS:
            log.exception("turn: bug handling " + what + " (dropped)", *args)

    def _guard(self, action: Callable[[], None]) -> None:
        try:
            action()
        except Exception:
            self._bug("%s", "shutdown")

    # --- the one timer ----------------------------------------------------------------------

    def _arm(self) -> None:
        """Re-arm the delayed call when the core's next timer is earlier than the armed one."""
        when = self.server.next_timer()
        if when is None or self._stopped:
            return
        at = self._timer_at
        if at is not None and at <= when and self._timer is not None:
            return
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer_at = when
        self._timer = self.reactor.callLater(max(0.0, when - self.reactor.seconds()), self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._timer_at = None
        try:
            self._records(self.server.tick(self.reactor.seconds()))
        except Exception:
            self._bug("%s", "timers")
        self._arm()

    # --- relay ports (the core's allocate_port / release_port) -----------------------------

    def _allocate_port(self, even: bool, pair: bool) -> Address:
        host = self.config.relay_address
        tried = 0
        for port in self.ports.candidates(even, pair):
            if tried >= _BIND_ATTEMPTS:
                break
            tried += 1
            if not self._bind_relay(host, port):
                continue
            if pair and not self._bind_relay(host, port + 1):
                self._release_port((host, port))
                continue
            return (host, port)
        raise OSError(f"no bindable relay port on {host} in {tried} attempts")

    def _bind_relay(self, host: str, port: int) -> bool:
        address = (host, port)
        try:
            listening = self.reactor.listenUDP(
                port, _RelayDatagrams(self, address), interface=host, maxPacketSize=65535
            )
        except CannotListenError:
            self.bind_failures += 1
            self.ports.take(port)  # someone else holds it: to the back of the queue
            self.ports.give_back(port)
            return False
        self.ports.take(port)
        grow_buffers(listening.socket, _RELAY_BUFFER)
        self._relays[address] = (listening, self._sender(listening))
        return True

    def _release_port(self, address: Address) -> None:
        relay = self._relays.pop(address, None)
        if relay is not None:
            relay[0].protocol.relay = None
            relay[0].stopListening()
            self.ports.give_back(address[1])

    def _sender(self, port: Any) -> Callable[[bytes, Address], None]:
        sendto = port.socket.sendto

        def send(data: bytes, addr: Address) -> None:
            try:
                sendto(data, addr)
            except OSError:
                self.send_errors += 1

        return send



# --- Twisted protocols (thin shells) ---------------------------------------------------------


class _ClientDatagrams(protocol.DatagramProtocol):
    """A ``[turn] listen`` UDP socket: every datagram goes to the core."""

    def __init__(self, service: TurnService) -> None:
        self.service = service
        self.server_address: Address = ("", 0)

    def datagramReceived(self, data: bytes, addr: Any) -> None:  # noqa: N802
        client = addr if ":" not in addr[0] else _safe_canonical(addr)
        if client is not None:
            self.service.client_data(data, client, self.server_address, "udp")


class _RelayDatagrams(protocol.DatagramProtocol):
    """An allocation's relay socket: every datagram from a peer goes to the core."""

    def __init__(self, service: TurnService, relay: Address) -> None:
        self.service = service
        self.relay: Address | None = relay

    def datagramReceived(self, data: bytes, addr: Any) -> None:  # noqa: N802
        relay = self.relay
        if relay is None:
            return
        # an IPv4 peer's address is Twisted's (host, port) tuple as is
        peer = addr if ":" not in addr[0] else _safe_canonical(addr)
        if peer is not None:
            self.service.peer_data(relay, data, peer)


def _safe_canonical(addr: Any) -> Address | None:
    try:
        return canonical(addr)
    except (ValueError, TypeError, IndexError):
        return None


class _ClientStreams(protocol.Factory):
    """A ``[turn] listen`` TCP listener, with the connection limit."""

    def __init__(self, service: TurnService) -> None:
        self.service = service

    def buildProtocol(self, addr: Any) -> _ClientStream | None:  # noqa: N802
        service = self.service
        if len(service._connections) >= service.config.max_tcp_connections:
            service.tcp_refused += 1
            return None  # Twisted closes the connection
        return _ClientStream(service)


class _ClientStream(protocol.Protocol):
    """One TCP client connection: a byte stream the core deframes (RFC 8656 section 12.5,
    RFC 6062), and a push producer so a connection that stops reading is noticed."""

    def __init__(self, service: TurnService) -> None:
        self.service = service
        self.route: ClientRoute | None = None
        # since when the connection has had no live allocation (None: it has one)
        self.idle_since: float | None = service.reactor.seconds()
        self.closing_since: float | None = None  # when the gateway closed it (None: open)
        self.paused = False
        self.tx: Any = None  # the transport, typed loosely (ITCPTransport and producer API)

    def connectionMade(self) -> None:  # noqa: N802
        transport: Any = self.transport
        self.tx = transport
        try:
            peer, host = transport.getPeer(), transport.getHost()
            self.route = ClientRoute(
                "tcp", canonical((peer.host, peer.port)), canonical((host.host, host.port))
            )
        except (ValueError, TypeError):
            transport.abortConnection()
            return
        self.service._connections[self.route] = self
        self.service._watch_idle()
        transport.bufferSize = self.service.config.tcp_max_buffer
        transport.registerProducer(self, True)
        try:
            transport.setTcpNoDelay(True)
        except OSError:
            pass

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        route = self.route
        if route is not None:
            self.service.client_data(data, route.client, route.server, "tcp")

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:  # noqa: N802
        route, self.route = self.route, None
        if route is not None:
            self.service.connection_closed(route)

    def send(self, data: bytes) -> None:
        if self.paused:
            self.service.tcp_backlog_drops += 1
            return
        self.tx.write(data)

    # IPushProducer: Twisted pauses us when the connection's send buffer is full.
    def pauseProducing(self) -> None:  # noqa: N802
        self.paused = True

    def resumeProducing(self) -> None:  # noqa: N802
        self.paused = False

    def stopProducing(self) -> None:  # noqa: N802
        self.paused = True
