"""gateway.nat.service: the Twisted adapter of the TURN core, on a fake reactor (task.Clock
for time, in-memory ports and sockets): listeners, relay sockets per the EVEN-PORT contract,
outputs carried, the one timer, usage records, TCP limits and backpressure, bugs contained,
canonical addresses. The real-socket proof is tests/interop/test_turn.py."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from twisted.internet import task
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import CannotListenError

from gateway.config import ListenAddr, TurnConfig
from gateway.nat import stun
from gateway.nat.allocation import TurnUsage
from gateway.nat.framing import ChannelData
from gateway.nat.service import RelayPorts, TurnService, canonical
from gateway.nat.stun import Address, Class, Message, Method

T0 = 1_700_000_000.0
LISTEN_UDP: Address = ("127.0.0.1", 3478)
CLIENT: Address = ("127.0.0.1", 50000)
PEER: Address = ("127.0.0.1", 6000)
REALM = "gateway.local"
USERS = {"alice": "secret"}


class FakeSocket:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Address]] = []
        self.fail = False

    def sendto(self, data: bytes, addr: Address) -> int:
        if self.fail:
            raise OSError("ENOBUFS")
        self.sent.append((data, addr))
        return len(data)

    def setsockopt(self, *args: object) -> None:
        pass


class FakePort:
    def __init__(self, reactor: FakeReactor, kind: str, port: int, proto: Any, host: str) -> None:
        self.reactor = reactor
        self.kind = kind
        self.port = port
        self.protocol = proto
        self.host = host
        self.socket = FakeSocket()
        self.listening = True

    def getHost(self) -> IPv4Address:  # noqa: N802
        return IPv4Address("UDP" if self.kind == "udp" else "TCP", self.host, self.port)

    def stopListening(self) -> None:  # noqa: N802
        self.listening = False
        self.reactor.udp.pop((self.host, self.port), None)


class FakeReactor(task.Clock):
    """task.Clock plus listenUDP/listenTCP on in-memory ports; ``taken`` ports refuse."""

    def __init__(self) -> None:
        super().__init__()
        self.advance(T0)
        self.udp: dict[Address, FakePort] = {}
        self.tcp: list[FakePort] = []
        self.taken: set[int] = set()

    def listenUDP(  # noqa: N802
        self,
        port: int,
        proto: Any,
        interface: str = "",
        maxPacketSize: int = 8192,  # noqa: N803
    ) -> FakePort:
        if port in self.taken or (interface, port) in self.udp:
            raise CannotListenError(interface, port, OSError("in use"))
        fake = FakePort(self, "udp", port, proto, interface)
        self.udp[(interface, port)] = fake
        return fake

    def listenTCP(self, port: int, factory: Any, interface: str = "") -> FakePort:  # noqa: N802
        fake = FakePort(self, "tcp", port, factory, interface)
        self.tcp.append(fake)
        return fake


class FakeTransport:
    """Enough of a TCP transport for _ClientStream."""

    def __init__(self, peer: Address, host: Address) -> None:
        self.peer, self.host = peer, host
        self.written: list[bytes] = []
        self.producer: Any = None
        self.lost = False
        self.aborted = False
        self.bufferSize = 0

    def getPeer(self) -> IPv4Address | IPv6Address:  # noqa: N802
        kind = IPv6Address if ":" in self.peer[0] else IPv4Address
        return kind("TCP", *self.peer)

    def getHost(self) -> IPv4Address:  # noqa: N802
        return IPv4Address("TCP", *self.host)

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def registerProducer(self, producer: Any, streaming: bool) -> None:  # noqa: N802
        self.producer = producer

    def setTcpNoDelay(self, enabled: bool) -> None:  # noqa: N802
        pass

    def loseConnection(self) -> None:  # noqa: N802
        self.lost = True

    def abortConnection(self) -> None:  # noqa: N802
        self.lost = self.aborted = True


def make(**config: Any) -> tuple[TurnService, FakeReactor, list[TurnUsage]]:
    base = TurnConfig(
        listen=(ListenAddr("udp", *LISTEN_UDP), ListenAddr("tcp", *LISTEN_UDP)),
        relay_port_range=(40000, 40009),
        users=USERS,
        allowed_peers=(),
    )
    reactor = FakeReactor()
    usages: list[TurnUsage] = []
    service = TurnService(reactor, replace(base, **config), usages.append, os.urandom)
    service.start()
    return service, reactor, usages


class UdpClient:
    """A long-term-credentials client talking to the service's UDP listener."""

    def __init__(self, service: TurnService, reactor: FakeReactor, address: Address = CLIENT):
        self.service, self.reactor, self.address = service, reactor, address
        self.listener = reactor.udp[LISTEN_UDP]
        self.nonce: str | None = None
        self.key = stun.long_term_key("alice", REALM, "secret")

    def send_raw(self, data: bytes) -> list[bytes]:
        sent = self.listener.socket.sent
        before = len(sent)
        self.listener.protocol.datagramReceived(data, self.address)
        return [data for data, addr in sent[before:] if addr == self.address]

    def request(self, method: int, build: Callable[[Message], Message] = lambda m: m) -> Message:
        for _ in range(2):
            msg = build(Message(Method(method), Class.REQUEST, os.urandom(12)))
            if self.nonce is not None:
                msg = msg.with_username("alice").with_realm(REALM).with_nonce(self.nonce)
                msg = msg.with_integrity(self.key)
            (raw,) = self.send_raw(bytes(msg.with_fingerprint()))
            reply = Message.parse(raw)
            error = reply.error_code()
            if error is not None and error.code == 401 and self.nonce is None:
                self.nonce = reply.nonce()
                continue
            return reply
        raise AssertionError("challenged twice")

    def allocate(self, build: Callable[[Message], Message] = lambda m: m) -> Message:
        return self.request(Method.ALLOCATE, lambda m: build(m.with_requested_transport()))


def code(reply: Message) -> int:
    error = reply.error_code()
    return error.code if error is not None else 0


# --- listeners and STUN ----------------------------------------------------------------------


def test_start_listens_on_every_address_and_answers_binding() -> None:
    service, reactor, _ = make()
    assert service.listening == [("udp", LISTEN_UDP), ("tcp", LISTEN_UDP)]
    client = UdpClient(service, reactor)
    (raw,) = client.send_raw(bytes(Message(Method.BINDING, Class.REQUEST, bytes(12))))
    assert Message.parse(raw).xor_address() == CLIENT


def test_ipv6_addresses_are_canonical() -> None:
    assert canonical(("::FFFF:7f00:1", 5, 0, 0)) == ("::ffff:7f00:1", 5)
    assert canonical(("0:0:0:0:0:0:0:1", 5)) == ("::1", 5)
    assert canonical(("fe80::1%eth0", 5, 0, 2)) == ("fe80::1", 5)
    assert canonical(("127.0.0.1", 5)) == ("127.0.0.1", 5)


# --- relay sockets ---------------------------------------------------------------------------


def test_even_port_pair_binds_both_sockets_and_relays_both_ways() -> None:
    service, reactor, usages = make(allowed_peers=(ipaddress.ip_network("127.0.0.0/8"),))
    client = UdpClient(service, reactor)
    reply = client.allocate(lambda m: m.with_even_port(True))
    relay = reply.xor_address(stun.XOR_RELAYED_ADDRESS)
    assert relay == ("127.0.0.1", 40000)
    assert ("127.0.0.1", 40001) in reactor.udp  # the reserved partner is held
    token = reply.reservation_token()
    assert token is not None
    ok = client.request(
        Method.CHANNEL_BIND,
        lambda m: m.with_channel_number(0x4001).with_xor_address(stun.XOR_PEER_ADDRESS, *PEER),
    )
    assert code(ok) == 0
    assert client.send_raw(ChannelData(0x4001, b"media").encode(pad=False)) == []
    relay_port = reactor.udp[relay]
    assert relay_port.socket.sent == [(b"media", PEER)]
    relay_port.protocol.datagramReceived(b"back", PEER)
    assert client.listener.socket.sent[-1] == (
        ChannelData(0x4001, b"back").encode(pad=False),
        CLIENT,
    )
    # a second client takes the reservation: its relay is the odd partner
    other = UdpClient(service, reactor, ("127.0.0.1", 50002))
    reply2 = other.allocate(lambda m: m.with_reservation_token(token))
    assert reply2.xor_address(stun.XOR_RELAYED_ADDRESS) == ("127.0.0.1", 40001)
    # Refresh 0 ends the first: its socket closes, its port is free again, a usage record
    assert code(client.request(Method.REFRESH, lambda m: m.with_lifetime(0))) == 0
    assert relay not in reactor.udp and not relay_port.listening
    assert [(u.reason, u.bytes_in, u.bytes_out) for u in usages] == [("deleted", 5, 4)]
    assert service.counters["relay_sockets"] == 1


def test_ports_held_by_others_are_skipped() -> None:
    service, reactor, _ = make()
    reactor.taken = {40000, 40001, 40002}
    client = UdpClient(service, reactor)
    relay = client.allocate().xor_address(stun.XOR_RELAYED_ADDRESS)
    assert relay == ("127.0.0.1", 40003)
    assert service.counters["bind_failures"] == 3


def test_no_bindable_port_is_508() -> None:
    service, reactor, _ = make(relay_port_range=(40000, 40001))
    reactor.taken = {40000, 40001}
    assert code(UdpClient(service, reactor).allocate()) == 508


def test_relay_port_pool_order_and_pairs() -> None:
    ports = RelayPorts(10, 15)
    assert list(ports.candidates(even=True, pair=True)) == [10, 12, 14]
    ports.take(10)
    ports.take(13)
    assert list(ports.candidates(even=True, pair=True)) == [14]
    assert list(ports.candidates(even=False, pair=False)) == [11, 12, 14, 15]
    ports.give_back(10)
    assert list(ports.candidates(even=False, pair=False))[-1] == 10  # the back of the queue


# --- timer and usage -------------------------------------------------------------------------


def test_one_timer_expires_allocations_and_records_usage() -> None:
    service, reactor, usages = make()
    client = UdpClient(service, reactor)
    client.allocate()
    assert len(reactor.getDelayedCalls()) == 1
    reactor.advance(599)
    assert usages == []
    reactor.advance(2)
    assert [u.reason for u in usages] == ["expired"]
    assert service.counters["allocations"] == 0 and service.counters["relay_sockets"] == 0


def test_stop_records_live_allocations_and_closes_everything() -> None:
    service, reactor, usages = make()
    UdpClient(service, reactor).allocate()
    service.stop()
    assert [u.reason for u in usages] == ["stopped"]
    assert reactor.udp == {} and all(not p.listening for p in reactor.tcp)
    assert [c for c in reactor.getDelayedCalls() if c.active()] == []
    service.stop()  # idempotent


# --- errors are contained --------------------------------------------------------------------


def test_a_bug_in_the_core_is_counted_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    service, reactor, _ = make()

    def boom(*args: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(service.server, "on_client", boom)
    monkeypatch.setattr(service.server, "on_peer", boom)
    reactor.udp[LISTEN_UDP].protocol.datagramReceived(b"\x00\x01", CLIENT)
    service.peer_data(("127.0.0.1", 40000), b"x", PEER)
    assert service.counters["handler_errors"] == 2


def test_send_errors_are_counted() -> None:
    service, reactor, _ = make()
    reactor.udp[LISTEN_UDP].socket.fail = True
    reactor.udp[LISTEN_UDP].protocol.datagramReceived(
        bytes(Message(Method.BINDING, Class.REQUEST, bytes(12))), CLIENT
    )
    assert service.counters["send_errors"] == 1


def test_garbage_and_odd_addresses_are_dropped_quietly() -> None:
    service, reactor, _ = make()
    proto = reactor.udp[LISTEN_UDP].protocol
    proto.datagramReceived(b"\xff" * 30, CLIENT)
    proto.datagramReceived(b"", CLIENT)
    proto.datagramReceived(b"\x00\x01", ("not:an:address", 5))
    assert service.counters["handler_errors"] == 0


# --- TCP -------------------------------------------------------------------------------------


def connect(service: TurnService, reactor: FakeReactor, peer: Address) -> tuple[Any, FakeTransport]:
    factory = reactor.tcp[0].protocol
    proto = factory.buildProtocol(None)
    if proto is None:
        return None, FakeTransport(peer, LISTEN_UDP)
    transport = FakeTransport(peer, LISTEN_UDP)
    proto.makeConnection(transport)
    return proto, transport


def test_tcp_binding_limit_and_close() -> None:
    service, reactor, _ = make(max_tcp_connections=2)
    first, transport = connect(service, reactor, ("127.0.0.1", 1000))
    second, _ = connect(service, reactor, ("::FFFF:127.0.0.1", 1001))
    third, _ = connect(service, reactor, ("127.0.0.1", 1002))
    assert third is None and service.counters["tcp_refused"] == 1
    assert service.counters["tcp_connections"] == 2
    assert second.route.client == (str(ipaddress.ip_address("::ffff:127.0.0.1")), 1001)
    binding = bytes(Message(Method.BINDING, Class.REQUEST, bytes(12)))
    for i in range(len(binding)):  # one byte at a time
        first.dataReceived(binding[i : i + 1])
    (reply,) = transport.written
    assert Message.parse(reply).xor_address() == ("127.0.0.1", 1000)
    first.connectionLost()
    assert service.counters["tcp_connections"] == 1


def test_tcp_backlog_drops_while_paused() -> None:
    service, reactor, _ = make()
    proto, transport = connect(service, reactor, ("127.0.0.1", 1000))
    assert transport.producer is proto and transport.bufferSize == 262144
    proto.pauseProducing()
    proto.dataReceived(bytes(Message(Method.BINDING, Class.REQUEST, bytes(12))))
    assert transport.written == [] and service.counters["drop_tcp_backlog"] == 1
    proto.resumeProducing()
    proto.dataReceived(bytes(Message(Method.BINDING, Class.REQUEST, bytes(12))))
    assert len(transport.written) == 1


def test_a_broken_tcp_stream_is_closed() -> None:
    service, reactor, _ = make()
    proto, transport = connect(service, reactor, ("127.0.0.1", 1000))
    proto.dataReceived(b"\x80" * 8)  # RTP on a TURN stream: framing lost
    assert transport.lost and not transport.aborted  # gracefully first
    # a client that never reads keeps a graceful close from finishing: a sweep later, aborted
    for _ in range(10):
        reactor.advance(1)
    assert transport.aborted
    assert service.counters["tcp_idle_closed"] == 0  # not an idle client


def tcp_allocate(proto: Any, transport: FakeTransport) -> Message:
    """Allocate (challenge, then signed) over a TCP connection; the final answer."""
    key = stun.long_term_key("alice", REALM, "secret")
    nonce: str | None = None
    for _ in range(2):
        msg = Message(Method.ALLOCATE, Class.REQUEST, os.urandom(12)).with_requested_transport()
        if nonce is not None:
            msg = msg.with_username("alice").with_realm(REALM).with_nonce(nonce)
            msg = msg.with_integrity(key)
        before = len(transport.written)
        proto.dataReceived(bytes(msg.with_fingerprint()))
        (raw,) = transport.written[before:]
        reply = Message.parse(raw)
        if code(reply) == 401 and nonce is None:
            nonce = reply.nonce()
            continue
        return reply
    raise AssertionError("challenged twice")


def test_tcp_clients_without_an_allocation_are_closed_after_the_idle_timeout() -> None:
    service, reactor, usages = make(tcp_idle_timeout=60)
    assert reactor.getDelayedCalls() == []  # no TCP client, no sweep
    idle, idle_tx = connect(service, reactor, ("127.0.0.1", 1000))
    busy, busy_tx = connect(service, reactor, ("127.0.0.1", 1001))
    reply = tcp_allocate(busy, busy_tx)
    assert reply.cls == Class.SUCCESS
    idle.dataReceived(bytes(Message(Method.BINDING, Class.REQUEST, bytes(12))))  # not enough

    def run(seconds: int) -> None:  # second by second, as a real reactor's clock goes
        for _ in range(seconds):
            reactor.advance(1)

    run(59)
    assert not idle_tx.lost and not busy_tx.lost
    run(6)  # the sweep runs every 5 s at this timeout
    assert idle_tx.aborted and not busy_tx.lost  # aborted: a graceful close waits for reads
    assert service.counters["tcp_idle_closed"] == 1
    idle.connectionLost()
    # the allocation lives its 600 s; then the connection has 60 s to make another
    run(600 - 65 + 1)
    assert len(usages) == 1 and not busy_tx.lost
    run(58)
    assert not busy_tx.lost
    run(8)
    assert busy_tx.aborted and service.counters["tcp_idle_closed"] == 2
    busy.connectionLost()
    run(5)  # the last client gone, the sweep stops with it
    assert [c for c in reactor.getDelayedCalls() if c.active()] == []


def test_turn_disabled_answers_allocate_403() -> None:
    service, reactor, _ = make(enabled=False)
    client = UdpClient(service, reactor)
    assert code(client.allocate()) == 403


# --- [turn] config (gateway.config) ---------------------------------------------------------


def _load(tmp_path: Any, text: str) -> Any:
    from gateway.config import load_config

    path = tmp_path / "gw.toml"
    path.write_text(text)
    return load_config(path), str(path)


def test_turn_config_keys_and_defaults(tmp_path: Any) -> None:
    from gateway.config import default_config

    d = default_config().turn
    assert (d.user_quota, d.total_quota, d.bandwidth, d.max_lifetime) == (0, 0, 0, 3600)
    assert (d.nonce_lifetime, d.max_permissions) == (3600, 256)
    assert (d.max_tcp_connections, d.tcp_max_buffer, d.tcp_idle_timeout) == (1024, 262144, 60)
    config, _ = _load(
        tmp_path,
        "[turn]\nuser_quota = 4\ntotal_quota = 100\nbandwidth = 64000\nmax_lifetime = 1200\n"
        "nonce_lifetime = 600\nmax_permissions = 8\nmax_tcp_connections = 10\n"
        "tcp_max_buffer = 65536\ntcp_idle_timeout = 30\n",
    )
    turn = config.turn
    assert (turn.user_quota, turn.total_quota, turn.bandwidth) == (4, 100, 64000)
    assert (turn.max_lifetime, turn.nonce_lifetime, turn.max_permissions) == (1200, 600, 8)
    assert (turn.max_tcp_connections, turn.tcp_max_buffer, turn.tcp_idle_timeout) == (10, 65536, 30)
    from gateway.nat.service import settings_from_config

    settings = settings_from_config(turn)
    assert (settings.user_quota, settings.total_quota, settings.bandwidth) == (4, 100, 64000)
    assert (settings.max_lifetime, settings.default_lifetime, settings.nonce_lifetime) == (
        1200, 600, 600,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("user_quota = -1", "turn.user_quota: must be at least 0"),
        ("bandwidth = 100", "turn.bandwidth: must be 0 (no cap) or at least 1500 (bytes/s)"),
        ("max_lifetime = 60", "turn.max_lifetime: must be at least 600"),
        ("nonce_lifetime = 5", "turn.nonce_lifetime: must be at least 30"),
        ("max_tcp_connections = 0", "turn.max_tcp_connections: must be at least 1"),
        ("tcp_max_buffer = 10", "turn.tcp_max_buffer: must be at least 4096"),
        ("tcp_idle_timeout = 1", "turn.tcp_idle_timeout: must be at least 5"),
        ('total_quota = "many"', "turn.total_quota: expected an integer"),
        ('listen = ["tls:127.0.0.1:5349"]', "turn.listen[0]: TURN listens on udp or tcp, not tls"),
    ],
)
def test_turn_config_problems_name_file_key_reason(tmp_path: Any, line: str, problem: str) -> None:
    from gateway.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        _load(tmp_path, f"[turn]\n{line}\n")
    path = str(tmp_path / "gw.toml")
    assert any(
        str(p) == f"{path}: {problem}" or str(p).startswith(f"{path}: {problem}")
        for p in info.value.problems
    ), [str(p) for p in info.value.problems]


# --- turn_usage rows (gateway.store.cdr) ----------------------------------------------------


def test_cdr_store_writes_turn_usage_in_its_flushes(tmp_path: Any) -> None:
    import sqlite3

    from gateway.store.cdr import TURN_USAGE_COLUMNS, CdrStore

    store = CdrStore(tmp_path / "cdr.sqlite3")
    usage = TurnUsage(
        "1700000600:bob",
        ("127.0.0.1", 40000),
        ("192.0.2.1", 5000),
        "tcp",
        T0,
        T0 + 60,
        1000,
        2000,
        10,
        20,
        "expired",
    )
    store.turn_usage(usage.row())
    store.turn_usage(replace(usage, call_id="call-1", transport="udp").row())
    assert store.pending == 2
    assert store.flush() == 2 and store.pending == 0
    with pytest.raises(TypeError, match="turn_usage bytes_in must be int"):
        store.turn_usage({**usage.row(), "bytes_in": "many"})
    store.close()
    with sqlite3.connect(tmp_path / "cdr.sqlite3") as db:
        rows = db.execute(f"SELECT {', '.join(TURN_USAGE_COLUMNS)} FROM turn_usage").fetchall()
    assert rows == [
        ("1700000600:bob", "127.0.0.1:40000", "192.0.2.1:5000", "tcp", T0, T0 + 60,
         1000, 2000, 10, 20, None),
        ("1700000600:bob", "127.0.0.1:40000", "192.0.2.1:5000", "udp", T0, T0 + 60,
         1000, 2000, 10, 20, "call-1"),
    ]  # fmt: skip


def test_cdr_turn_usage_queue_is_bounded_and_survives_a_failed_flush(tmp_path: Any) -> None:
    from gateway.store.cdr import CdrStore

    store = CdrStore(tmp_path / "cdr.sqlite3", max_pending=2)
    usage = TurnUsage(
        "alice", ("127.0.0.1", 40000), ("192.0.2.1", 5000), "udp", T0, T0 + 1, 1, 1, 1, 1
    )
    for _ in range(3):
        store.turn_usage(usage.row())
    assert store.pending == 2 and store.dropped == 1
    store._db.close()  # type: ignore[union-attr]
    store._db = None
    store.path = tmp_path / "nowhere" / "x" / "cdr.sqlite3"
    (tmp_path / "nowhere").write_text("a file, not a directory")
    assert store.flush() == 0 and store.pending == 2  # kept for the next flush
    store.path = tmp_path / "cdr2.sqlite3"
    assert store.flush() == 2
    store.close()
