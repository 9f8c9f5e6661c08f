"""gateway.nat.server: the sans-I/O STUN/TURN server core (RFC 8489 Binding, RFC 8656 TURN),
driven by a small test client that builds its messages with gateway.nat.stun, with the clock
stepped by hand.
"""

from __future__ import annotations

import dataclasses
import itertools
import struct
from collections.abc import Callable, Sequence

import pytest

from gateway.media.ports import PortsExhausted
from gateway.nat import stun
from gateway.nat.allocation import (
    ClientRoute,
    CloseConnection,
    Output,
    ToClient,
    ToPeer,
    TurnSettings,
    TurnUsage,
)
from gateway.nat.credentials import TurnAuth, make_credentials
from gateway.nat.framing import ChannelData, StreamDeframer
from gateway.nat.longterm import Nonces
from gateway.nat.peers import parse_networks
from gateway.nat.server import TurnServer
from gateway.nat.stun import Address, Class, Message, Method

REALM = "gateway.local"
SECRET = "north"
USERS = {"alice": "wonderland", "bob": "builder"}
LISTEN: Address = ("192.0.2.1", 3478)
CLIENT: Address = ("198.51.100.7", 50000)
RELAY_IP = "192.0.2.1"
PEER: Address = ("203.0.113.5", 6000)
PEER2: Address = ("203.0.113.6", 6001)
T0 = 1_700_000_000.0

Build = Callable[[Message], Message]


def same(msg: Message) -> Message:
    return msg


def attribute(attr_type: int, value: bytes) -> Build:
    def add(msg: Message) -> Message:
        return msg.with_attribute(attr_type, value)

    return add


class Ports:
    """A relay port pool: the lowest free port that fits, even and paired on request."""

    def __init__(self, first: int = 49152, last: int = 49161, host: str = RELAY_IP) -> None:
        self.host = host
        self.free = set(range(first, last + 1))
        self.released: list[Address] = []
        self.calls: list[tuple[bool, bool]] = []

    def allocate(self, even: bool, pair: bool) -> Address:
        self.calls.append((even, pair))
        for port in sorted(self.free):
            if even and port % 2:
                continue
            if pair and port + 1 not in self.free:
                continue
            self.free.discard(port)
            if pair:
                self.free.discard(port + 1)
            return self.host, port
        raise PortsExhausted("no relay port")

    def release(self, address: Address) -> None:
        self.released.append(address)
        self.free.add(address[1])


def counting_random() -> Callable[[int], bytes]:
    counter = itertools.count(1)
    return lambda n: next(counter).to_bytes(n, "big")


def make_server(ports: Ports | None = None, **settings: object) -> tuple[TurnServer, Ports]:
    ports = ports or Ports()
    base = TurnSettings(relay_address=RELAY_IP)
    server = TurnServer(
        dataclasses.replace(base, **settings),  # type: ignore[arg-type]
        TurnAuth(REALM, SECRET, USERS),
        ports.allocate,
        ports.release,
        random=counting_random(),
    )
    return server, ports


class Client:
    """A TURN client over UDP or TCP that learns REALM and NONCE from a 401 and signs every
    later request with the long-term key."""

    def __init__(
        self,
        server: TurnServer,
        *,
        address: Address = CLIENT,
        transport: str = "udp",
        username: str = "alice",
        password: str = "wonderland",
        sha256: bool = False,
    ) -> None:
        self.server = server
        self.address = address
        self.transport = transport
        self.username = username
        self.password = password
        self.sha256 = sha256
        self.nonce: str | None = None
        self.deframer = StreamDeframer()
        self.ids = itertools.count(1)

    @property
    def key(self) -> bytes:
        return stun.long_term_key(self.username, REALM, self.password)

    @property
    def route(self) -> ClientRoute:
        return ClientRoute(self.transport, self.address, LISTEN)

    def tid(self) -> bytes:
        return b"T" + next(self.ids).to_bytes(11, "big")

    def build(
        self, method: int, build: Build = same, *, sign: bool = True, tid: bytes | None = None
    ) -> bytes:
        msg = build(Message(method, Class.REQUEST, tid or self.tid()))
        if sign and self.nonce is not None:
            msg = msg.with_username(self.username).with_realm(REALM).with_nonce(self.nonce)
            msg = (
                msg.with_integrity_sha256(self.key) if self.sha256 else msg.with_integrity(self.key)
            )
        return bytes(msg.with_fingerprint())

    def send(self, data: bytes, now: float) -> Sequence[Output]:
        return self.server.on_client(data, self.address, LISTEN, self.transport, now)

    def replies(self, outputs: Sequence[Output]) -> list[Message | ChannelData]:
        """What reached this client, decoded; anything else in ``outputs`` is an error."""
        frames: list[Message | ChannelData] = []
        for out in outputs:
            assert isinstance(out, ToClient), out
            assert out.route == self.route
            if self.transport == "tcp":
                self.deframer.feed(out.data)
                frames.extend(self.deframer.frames())
            elif out.data[0] >= 0x40:
                frames.append(ChannelData.parse(out.data))
            else:
                frames.append(Message.parse(out.data))
        return frames

    def request(self, method: int, build: Build = same, now: float = T0) -> Message:
        """One request and its one response; a first 401 challenge teaches the nonce and the
        request goes again, signed."""
        while True:
            signed = self.nonce is not None
            outputs = self.send(self.build(method, build), now)
            (reply,) = self.replies([o for o in outputs if isinstance(o, ToClient)])
            assert isinstance(reply, Message)
            code = reply.error_code()
            if signed or code is None or code.code != 401:
                return reply
            self.nonce = reply.nonce()

    def allocate(self, build: Build = same, now: float = T0) -> Message:
        return self.request(Method.ALLOCATE, lambda m: build(m.with_requested_transport()), now)

    def permit(self, *peers: Address, now: float = T0) -> Message:
        def add(msg: Message) -> Message:
            for host, port in peers:
                msg = msg.with_xor_address(stun.XOR_PEER_ADDRESS, host, port)
            return msg

        return self.request(Method.CREATE_PERMISSION, add, now)

    def bind(self, channel: int, peer: Address, now: float = T0) -> Message:
        return self.request(
            Method.CHANNEL_BIND,
            lambda m: m.with_channel_number(channel).with_xor_address(stun.XOR_PEER_ADDRESS, *peer),
            now,
        )

    def refresh(self, lifetime: int | None = None, now: float = T0) -> Message:
        return self.request(
            Method.REFRESH, lambda m: m if lifetime is None else m.with_lifetime(lifetime), now
        )

    def send_indication(self, peer: Address, data: bytes, now: float = T0) -> Sequence[Output]:
        msg = (
            Message(Method.SEND, Class.INDICATION, self.tid())
            .with_xor_address(stun.XOR_PEER_ADDRESS, *peer)
            .with_data(data)
        )
        return self.send(bytes(msg), now)

    def channel_data(self, channel: int, data: bytes, now: float = T0) -> Sequence[Output]:
        return self.send(ChannelData(channel, data).encode(pad=self.transport == "tcp"), now)


def ok(reply: Message, method: int) -> Message:
    assert reply.method == method
    assert reply.cls == Class.SUCCESS, reply.error_code()
    return reply


def error(reply: Message) -> int:
    assert reply.cls == Class.ERROR
    code = reply.error_code()
    assert code is not None
    return code.code


def signed_by(reply: Message, key: bytes) -> bool:
    raw = bytes(reply)
    return stun.check_integrity(raw, key) and stun.check_fingerprint(raw)


def relay_of(reply: Message) -> Address:
    relay = reply.xor_address(stun.XOR_RELAYED_ADDRESS)
    assert relay is not None
    return relay


def to_peer(outputs: Sequence[Output]) -> ToPeer:
    (out,) = outputs
    assert isinstance(out, ToPeer)
    return out


@pytest.fixture
def server() -> TurnServer:
    return make_server()[0]


# --- Binding --------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_binding(server: TurnServer, transport: str) -> None:
    client = Client(server, transport=transport)
    request = client.build(Method.BINDING, sign=False)
    reply = ok(client.request(Method.BINDING), Method.BINDING)
    assert reply.xor_address() == CLIENT
    assert reply.software() == "acs-gateway"
    assert stun.check_fingerprint(bytes(reply))
    assert reply.get(stun.MESSAGE_INTEGRITY) is None
    assert len(request) == 28 and server.counters["binding_requests"] == 1


def test_binding_over_tcp_byte_by_byte_and_with_other_frames() -> None:
    server, _ = make_server()
    client = Client(server, transport="tcp")
    stream = client.build(Method.BINDING, sign=False) * 2
    outputs: list[Output] = []
    for i in range(len(stream)):
        outputs.extend(client.send(stream[i : i + 1], T0))
    replies = client.replies(outputs)
    assert len(replies) == 2
    assert all(isinstance(r, Message) and r.xor_address() == CLIENT for r in replies)


def test_binding_unknown_optional_attribute_is_ignored(server: TurnServer) -> None:
    client = Client(server)
    reply = client.request(Method.BINDING, lambda m: m.with_attribute(0x80AA, b"hi"))
    ok(reply, Method.BINDING)


def test_binding_unknown_required_attribute_gets_420(server: TurnServer) -> None:
    client = Client(server)
    request = client.build(
        Method.BINDING,
        lambda m: m.with_attribute(0x7777, bytes(16)).with_attribute(0x0003, bytes(4)),
        sign=False,
    )
    (out,) = client.send(request, T0)
    assert isinstance(out, ToClient)
    reply = Message.parse(out.data)
    assert error(reply) == 420
    assert reply.unknown_attributes() == (0x7777, 0x0003)
    assert len(out.data) <= len(request)


def test_binding_420_larger_than_the_request_is_not_sent(server: TurnServer) -> None:
    request = bytes(Message(Method.BINDING, Class.REQUEST, bytes(12)).with_attribute(0x7777, b""))
    assert server.on_client(request, CLIENT, LISTEN, "udp", T0) == []
    assert server.counters["drop_amplification"] == 1


def test_binding_indication_is_never_answered(server: TurnServer) -> None:
    keepalive = bytes(Message(Method.BINDING, Class.INDICATION, bytes(12)).with_fingerprint())
    assert server.on_client(keepalive, CLIENT, LISTEN, "udp", T0) == ()
    assert server.counters["binding_indications"] == 1


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "not_stun"),
        (b"\x80\x00\x00\x00rtp", "not_stun"),
        (b"\x16\xfe\xfd", "not_stun"),
        (b"\x00\x01\x00\x00" + bytes(16), "malformed"),  # no magic cookie
        (bytes(Message(Method.BINDING, Class.REQUEST, bytes(12)))[:-1] + b"", "malformed"),
        (bytes(Message(Method.BINDING, Class.REQUEST, bytes(12))) + b"\0\0\0\0", "malformed"),
        (b"\x40\x00\x00\x08abc", "malformed"),  # ChannelData shorter than its length
        (b"\x40\x00\x00\x01abcdefgh", "malformed"),  # more than the padding after it
        (b"\x40", "malformed"),
        (b"\x40\x00\x00\x00", "no_allocation"),
    ],
)
def test_garbage_is_dropped_and_counted(server: TurnServer, data: bytes, reason: str) -> None:
    assert list(server.on_client(data, CLIENT, LISTEN, "udp", T0)) == []
    assert server.counters[f"drop_{reason}"] == 1


def test_responses_from_clients_are_dropped(server: TurnServer) -> None:
    for cls in (Class.SUCCESS, Class.ERROR):
        data = bytes(Message(Method.BINDING, cls, bytes(12)))
        assert list(server.on_client(data, CLIENT, LISTEN, "udp", T0)) == []
    assert server.counters["drop_unexpected"] == 2


def test_unknown_transport_is_a_bug(server: TurnServer) -> None:
    with pytest.raises(ValueError, match="sctp"):
        server.on_client(b"", CLIENT, LISTEN, "sctp", T0)


# --- authentication (RFC 8489 section 9.2) ----------------------------------------------------


def test_allocate_without_credentials_gets_a_401_challenge(server: TurnServer) -> None:
    client = Client(server)
    (out,) = client.send(client.build(Method.ALLOCATE, lambda m: m.with_requested_transport()), T0)
    assert isinstance(out, ToClient)
    reply = Message.parse(out.data)
    assert error(reply) == 401
    assert reply.realm() == REALM
    nonce = reply.nonce()
    assert nonce and len(nonce) == 26
    assert reply.get(stun.MESSAGE_INTEGRITY) is None
    assert stun.check_fingerprint(out.data)
    assert server.counters["auth_challenges"] == 1 and server.counters["allocations"] == 0


def test_allocate_success(server: TurnServer) -> None:
    client = Client(server)
    reply = ok(client.allocate(), Method.ALLOCATE)
    assert relay_of(reply) == (RELAY_IP, 49152)
    assert reply.lifetime() == 600
    assert reply.xor_address(stun.XOR_MAPPED_ADDRESS) == CLIENT
    assert reply.software() == "acs-gateway"
    assert signed_by(reply, client.key)
    assert server.counters["allocations"] == 1
    assert server.allocation((RELAY_IP, 49152)) is not None


def test_integrity_sha256_is_answered_in_kind(server: TurnServer) -> None:
    client = Client(server, sha256=True)
    reply = ok(client.allocate(), Method.ALLOCATE)
    assert reply.get(stun.MESSAGE_INTEGRITY) is None
    assert stun.check_integrity_sha256(bytes(reply), client.key)


@pytest.mark.parametrize(
    ("username", "password"), [("alice", "wrong"), ("mallory", "x"), ("1700003600", "x")]
)
def test_bad_credentials_get_401(server: TurnServer, username: str, password: str) -> None:
    client = Client(server, username=username, password=password)
    assert error(client.allocate()) == 401
    assert server.counters["auth_failures"] == 1
    assert server.counters["allocations"] == 0


def test_time_limited_credentials() -> None:
    server, _ = make_server()
    username, password = make_credentials(SECRET, "carol", 60, T0)
    client = Client(server, username=username, password=password)
    ok(client.allocate(), Method.ALLOCATE)
    # Expired credentials cannot refresh (coturn behaves the same).
    assert error(client.refresh(now=T0 + 61)) == 401


@pytest.mark.parametrize("missing", [stun.USERNAME, stun.REALM, stun.NONCE])
def test_incomplete_credentials_get_400(server: TurnServer, missing: int) -> None:
    client = Client(server)
    client.allocate()  # learn the nonce
    values = {stun.USERNAME: b"bob", stun.REALM: REALM.encode(), stun.NONCE: client.nonce.encode()}  # type: ignore[union-attr]
    msg = Message(Method.REFRESH, Class.REQUEST, client.tid())
    for attr_type, value in values.items():
        if attr_type != missing:
            msg = msg.with_attribute(attr_type, value)
    request = bytes(msg.with_integrity(client.key))
    (out,) = client.send(request, T0)
    assert isinstance(out, ToClient)
    assert error(Message.parse(out.data)) == 400
    assert len(out.data) <= len(request)


def test_stale_nonce_gets_438_with_a_new_nonce() -> None:
    server, _ = make_server(nonce_lifetime=100)
    client = Client(server)
    ok(client.allocate(), Method.ALLOCATE)
    old = client.nonce
    request = client.build(Method.REFRESH)
    (out,) = client.send(request, T0 + 101)
    assert isinstance(out, ToClient)
    reply = Message.parse(out.data)
    assert error(reply) == 438
    assert reply.realm() == REALM
    assert reply.nonce() not in (None, old)
    assert signed_by(reply, client.key)
    client.nonce = reply.nonce()
    ok(client.refresh(now=T0 + 101), Method.REFRESH)
    assert server.counters["stale_nonces"] == 1


def test_nonce_is_bound_to_the_client_address(server: TurnServer) -> None:
    first = Client(server)
    first.allocate()
    second = Client(server, address=("198.51.100.8", 50000))
    second.nonce = first.nonce
    (out,) = second.send(second.build(Method.ALLOCATE, lambda m: m.with_requested_transport()), T0)
    assert isinstance(out, ToClient)
    assert error(Message.parse(out.data)) == 438


@pytest.mark.parametrize("nonce", ["x", "zzzzzzzzzz" + "a" * 16, "0" * 26, "+0000000ff" + "a" * 16])
def test_forged_nonce_is_stale(server: TurnServer, nonce: str) -> None:
    client = Client(server)
    client.nonce = nonce
    assert error(client.allocate()) == 438


# --- Allocate -------------------------------------------------------------------------------


def test_requested_transport(server: TurnServer) -> None:
    tcp = Client(server, address=("198.51.100.9", 1))
    reply = tcp.request(Method.ALLOCATE, lambda m: m.with_requested_transport(stun.TRANSPORT_TCP))
    assert error(reply) == 442
    bare = Client(server, address=("198.51.100.9", 2))
    assert error(bare.request(Method.ALLOCATE)) == 400
    assert server.counters["allocations"] == 0


def test_second_allocate_on_the_same_five_tuple_is_437(server: TurnServer) -> None:
    client = Client(server)
    ok(client.allocate(), Method.ALLOCATE)
    reply = client.allocate()
    assert error(reply) == 437
    assert signed_by(reply, client.key)


def test_retransmitted_allocate_gets_the_same_success() -> None:
    server, ports = make_server()
    client = Client(server)
    client.allocate()  # 401 and success; now retransmit a fresh request twice
    ok(client.refresh(0), Method.REFRESH)
    request = client.build(Method.ALLOCATE, lambda m: m.with_requested_transport())
    (first,) = client.send(request, T0)
    (again,) = client.send(request, T0 + 1.5)
    assert first == again
    assert len(ports.calls) == 2
    assert server.counters["allocate_retransmissions"] == 1


def test_even_port_with_reservation() -> None:
    server, ports = make_server(Ports(49153, 49170))
    client = Client(server)
    reply = ok(client.allocate(lambda m: m.with_even_port(True)), Method.ALLOCATE)
    assert relay_of(reply) == (RELAY_IP, 49154)
    token = reply.reservation_token()
    assert token is not None and len(token) == 8
    assert ports.calls == [(True, True)]
    assert server.counters["reservations"] == 1
    other = Client(server, address=("198.51.100.8", 4000), username="bob", password="builder")
    reply = ok(other.allocate(lambda m: m.with_reservation_token(token), now=T0 + 5), 3)
    assert relay_of(reply) == (RELAY_IP, 49155)
    assert len(ports.calls) == 1 and server.counters["reservations"] == 0
    # A token works once.
    third = Client(server, address=("198.51.100.9", 4000))
    assert error(third.allocate(lambda m: m.with_reservation_token(token))) == 508


def test_even_port_without_reservation() -> None:
    server, ports = make_server(Ports(49153, 49170))
    reply = ok(Client(server).allocate(lambda m: m.with_even_port(False)), Method.ALLOCATE)
    assert relay_of(reply) == (RELAY_IP, 49154)
    assert reply.reservation_token() is None
    assert ports.calls == [(True, False)]


def test_reservation_expires_and_frees_its_port() -> None:
    server, ports = make_server()
    reply = Client(server).allocate(lambda m: m.with_even_port(True))
    token = reply.reservation_token()
    assert token is not None and server.next_timer() == T0 + 30
    assert server.tick(T0 + 30) == []
    assert ports.released == [(RELAY_IP, 49153)]
    other = Client(server, address=("198.51.100.8", 4000))
    reply = other.allocate(lambda m: m.with_reservation_token(token), now=T0 + 31)
    assert error(reply) == 508


@pytest.mark.parametrize(
    "build",
    [
        lambda m: m.with_reservation_token(bytes(8)).with_even_port(False),
        lambda m: m.with_reservation_token(bytes(8)).with_requested_address_family(1),
        lambda m: m.with_attribute(stun.EVEN_PORT, b"\x80\0"),
        lambda m: m.with_attribute(stun.LIFETIME, b"\0"),
        lambda m: m.with_attribute(stun.RESERVATION_TOKEN, b"short"),
    ],
)
def test_bad_allocate_attributes_get_400(server: TurnServer, build: Build) -> None:
    assert error(Client(server).allocate(build)) == 400


def test_unknown_reservation_token_is_508(server: TurnServer) -> None:
    assert error(Client(server).allocate(lambda m: m.with_reservation_token(b"12345678"))) == 508


def test_requested_address_family() -> None:
    server, _ = make_server()
    v6 = Client(server).allocate(lambda m: m.with_requested_address_family(stun.FAMILY_IPV6))
    assert error(v6) == 440
    v4 = Client(server, address=("198.51.100.8", 1))
    ok(v4.allocate(lambda m: m.with_requested_address_family(stun.FAMILY_IPV4)), 3)
    odd = Client(server, address=("198.51.100.8", 2))
    assert error(odd.allocate(lambda m: m.with_requested_address_family(9))) == 440


def test_ipv6_relay() -> None:
    server, _ = make_server(relay_address="2001:db8::1")
    assert error(Client(server).allocate()) == 440  # no family asked: IPv4 (RFC 8656 7.2)
    v6 = Client(server, address=("198.51.100.8", 1))
    ok(v6.allocate(lambda m: m.with_requested_address_family(stun.FAMILY_IPV6)), 3)


def test_additional_address_family_ipv6_is_refused_in_the_answer(server: TurnServer) -> None:
    reply = ok(Client(server).allocate(attribute(stun.ADDITIONAL_ADDRESS_FAMILY, b"\x02\0\0\0")), 3)
    assert reply.get(stun.ADDRESS_ERROR_CODE) == b"\x02\x00\x04\x28"
    bad = attribute(stun.ADDITIONAL_ADDRESS_FAMILY, b"\x01\0\0\0")
    assert error(Client(server, address=("198.51.100.8", 1)).allocate(bad)) == 400


def test_dont_fragment_is_accepted(server: TurnServer) -> None:
    ok(Client(server).allocate(lambda m: m.with_dont_fragment()), Method.ALLOCATE)


def test_unknown_required_attribute_in_allocate_gets_signed_420(server: TurnServer) -> None:
    client = Client(server)
    reply = client.allocate(lambda m: m.with_attribute(0x7F00, b"x"))
    assert error(reply) == 420
    assert reply.unknown_attributes() == (0x7F00,)
    assert signed_by(reply, client.key)
    assert server.counters["allocations"] == 0


def test_lifetime_is_capped_and_floored(server: TurnServer) -> None:
    assert Client(server).allocate(lambda m: m.with_lifetime(99999)).lifetime() == 3600
    short = Client(server, address=("198.51.100.8", 1))
    assert short.allocate(lambda m: m.with_lifetime(60)).lifetime() == 600


def test_user_quota() -> None:
    server, _ = make_server(user_quota=1)
    ok(Client(server).allocate(), Method.ALLOCATE)
    second = Client(server, address=("198.51.100.8", 1))
    reply = second.allocate()
    assert error(reply) == 486 and signed_by(reply, second.key)
    bob = Client(server, address=("198.51.100.8", 2), username="bob", password="builder")
    ok(bob.allocate(), Method.ALLOCATE)
    # Time-limited credentials of one user share the quota, whatever their expiry.
    for i, ttl in enumerate((60, 120)):
        username, password = make_credentials(SECRET, "carol", ttl, T0)
        carol = Client(server, address=("198.51.100.9", i), username=username, password=password)
        reply = carol.allocate()
        assert (reply.cls, i) in ((Class.SUCCESS, 0), (Class.ERROR, 1))
    # A deleted allocation gives its place back.
    first = Client(server)
    first.allocate()
    ok(first.refresh(0), Method.REFRESH)
    ok(second.allocate(), Method.ALLOCATE)


def test_total_quota() -> None:
    server, _ = make_server(total_quota=2)
    for port in (1, 2):
        ok(Client(server, address=("198.51.100.8", port)).allocate(), Method.ALLOCATE)
    bob = Client(server, address=("198.51.100.8", 3), username="bob", password="builder")
    assert error(bob.allocate()) == 486


def test_no_free_port_is_508() -> None:
    server, _ = make_server(Ports(49152, 49152))
    ok(Client(server).allocate(), Method.ALLOCATE)
    assert error(Client(server, address=("198.51.100.8", 1)).allocate()) == 508
    assert server.counters["error_508"] == 1


def test_disabled_turn_answers_403_and_still_serves_stun() -> None:
    server, ports = make_server(enabled=False)
    client = Client(server)
    request = client.build(Method.ALLOCATE, lambda m: m.with_requested_transport(), sign=False)
    (out,) = client.send(request, T0)
    assert isinstance(out, ToClient)
    assert error(Message.parse(out.data)) == 403
    assert len(out.data) <= len(request)
    for method in (Method.REFRESH, Method.CREATE_PERMISSION, Method.CHANNEL_BIND):
        assert error(client.request(method)) == 403
    ok(client.request(Method.BINDING), Method.BINDING)
    assert ports.calls == [] and server.counters["auth_challenges"] == 0


# --- the relay: permissions, Send and Data indications --------------------------------------


def allocated(server: TurnServer, **kwargs: object) -> tuple[Client, Address]:
    client = Client(server, **kwargs)  # type: ignore[arg-type]
    return client, relay_of(ok(client.allocate(), Method.ALLOCATE))


def test_permission_send_and_data_flow(server: TurnServer) -> None:
    client, relay = allocated(server)
    assert signed_by(ok(client.permit(PEER), Method.CREATE_PERMISSION), client.key)
    out = to_peer(client.send_indication(PEER, b"hello", T0 + 1))
    assert out == ToPeer(relay, PEER, b"hello")
    (reply,) = client.replies(server.on_peer(relay, b"world!", PEER, T0 + 2))
    assert isinstance(reply, Message)
    assert (reply.method, reply.cls) == (Method.DATA, Class.INDICATION)
    assert reply.xor_address(stun.XOR_PEER_ADDRESS) == PEER
    assert reply.data() == b"world!"
    # Another port of a permitted IP is welcome too (RFC 8656 section 9).
    (reply,) = client.replies(server.on_peer(relay, b"x", (PEER[0], 7), T0 + 2))
    assert isinstance(reply, Message) and reply.xor_address(stun.XOR_PEER_ADDRESS) == (PEER[0], 7)
    counters = server.counters
    assert counters["permissions"] == 1
    assert (counters["packets_to_peer"], counters["bytes_to_peer"]) == (1, 5)
    assert (counters["packets_to_client"], counters["bytes_to_client"]) == (2, 7)


def test_data_indications_have_distinct_transaction_ids(server: TurnServer) -> None:
    client, relay = allocated(server)
    client.permit(PEER)
    ids = set()
    for _ in range(3):
        (reply,) = client.replies(server.on_peer(relay, b"x", PEER, T0))
        assert isinstance(reply, Message)
        ids.add(reply.transaction_id)
    assert len(ids) == 3


def test_no_permission_no_relay(server: TurnServer) -> None:
    client, relay = allocated(server)
    assert client.send_indication(PEER, b"hello") == ()
    assert server.on_peer(relay, b"hi", PEER, T0) == ()
    assert server.on_peer((RELAY_IP, 1), b"hi", PEER, T0) == ()
    assert server.counters["drop_no_permission"] == 2
    assert server.counters["drop_no_allocation"] == 1


def test_send_indication_is_never_answered(server: TurnServer) -> None:
    client, _ = allocated(server)
    client.permit(PEER)
    missing_data = Message(Method.SEND, Class.INDICATION, client.tid()).with_xor_address(
        stun.XOR_PEER_ADDRESS, *PEER
    )
    unknown = missing_data.with_data(b"x").with_attribute(0x7F01, b"")
    assert client.send(bytes(missing_data), T0) == ()
    assert client.send(bytes(unknown), T0) == ()
    stranger = Client(server, address=("198.51.100.99", 9))
    assert stranger.send_indication(PEER, b"x") == ()
    counters = server.counters
    assert counters["drop_malformed"] == 1
    assert counters["drop_unknown_attribute"] == 1
    assert counters["drop_no_allocation"] == 1


def test_create_permission_for_several_peers_all_or_nothing(server: TurnServer) -> None:
    client, relay = allocated(server)
    ok(client.permit(PEER, PEER2), Method.CREATE_PERMISSION)
    assert server.counters["permissions"] == 2
    assert error(client.permit(("203.0.113.7", 1), ("10.0.0.1", 1))) == 403
    assert server.counters["permissions"] == 2
    assert server.on_peer(relay, b"x", ("203.0.113.7", 1), T0) == ()


def test_create_permission_needs_a_peer(server: TurnServer) -> None:
    client, _ = allocated(server)
    assert error(client.request(Method.CREATE_PERMISSION)) == 400


def test_permission_cap() -> None:
    server, _ = make_server(max_permissions=2)
    client, _ = allocated(server)
    ok(client.permit(PEER, PEER2), Method.CREATE_PERMISSION)
    ok(client.permit(PEER), Method.CREATE_PERMISSION)  # a refresh is not a new one
    assert error(client.permit(("203.0.113.9", 1))) == 508
    assert error(client.bind(0x4000, ("203.0.113.9", 1))) == 508


REFUSED = [
    "0.0.0.0",
    "10.0.0.1",
    "100.64.0.1",
    "127.0.0.1",
    "169.254.169.254",
    "169.254.1.1",
    "172.16.0.1",
    "192.168.1.1",
    "224.0.0.1",
    "239.255.255.250",
    "255.255.255.255",
    "240.0.0.1",
    "::",
    "::1",
    "::ffff:10.0.0.1",
    "::ffff:127.0.0.1",
    "::ffff:169.254.169.254",
    "::10.0.0.1",
    "::ffff:0:10.0.0.1",
    "64:ff9b::a9fe:a9fe",
    "2002:a00:1::1",
    "fe80::1",
    "fc00::1",
    "ff02::1",
]


@pytest.mark.parametrize("host", REFUSED)
def test_refused_peers_get_403(server: TurnServer, host: str) -> None:
    client, _ = allocated(server)
    reply = client.permit((host, 3478))
    assert error(reply) == 403
    assert signed_by(reply, client.key)
    assert error(client.bind(0x4000, (host, 3478))) == 403
    assert server.counters["permissions"] == 0
    assert server.counters["refused_peers"] == 2


def test_allowed_peers_open_the_default_deny() -> None:
    server, _ = make_server(allowed_peers=tuple(parse_networks(["10.0.0.0/8"])))
    client, relay = allocated(server)
    ok(client.permit(("10.1.2.3", 5)), Method.CREATE_PERMISSION)
    assert server.on_peer(relay, b"x", ("10.1.2.3", 5), T0) != ()
    assert error(client.permit(("192.168.0.1", 5))) == 403


@pytest.mark.parametrize("host", ["2001:db8::1", "2606:4700::1111"])
def test_ipv6_peer_on_an_ipv4_relay_is_443(server: TurnServer, host: str) -> None:
    client, _ = allocated(server)
    assert error(client.permit((host, 1))) == 443
    assert error(client.bind(0x4000, (host, 1))) == 443


def test_requests_on_someone_elses_allocation(server: TurnServer) -> None:
    allocated(server)
    stranger = Client(server, address=("198.51.100.99", 1))
    assert error(stranger.permit(PEER)) == 437
    assert error(stranger.refresh()) == 437
    impostor = Client(server, username="bob", password="builder")  # same 5-tuple, other user
    assert error(impostor.permit(PEER)) == 441
    assert error(impostor.bind(0x4000, PEER)) == 441
    assert error(impostor.refresh(0)) == 441
    assert server.counters["allocations"] == 1


# --- channels -------------------------------------------------------------------------------


def test_channel_bind_and_channel_data_both_ways(server: TurnServer) -> None:
    client, relay = allocated(server)
    reply = ok(client.bind(0x4001, PEER), Method.CHANNEL_BIND)
    assert signed_by(reply, client.key)
    assert to_peer(client.channel_data(0x4001, b"abcde")) == ToPeer(relay, PEER, b"abcde")
    (out,) = server.on_peer(relay, b"12345", PEER, T0)
    assert isinstance(out, ToClient)
    assert out.data == b"\x40\x01\x00\x05" + b"12345"  # unpadded over UDP
    # Padded ChannelData from a UDP client is fine too.
    padded = ChannelData(0x4001, b"xyz").encode(pad=True)
    assert to_peer(client.send(padded, T0)).data == b"xyz"
    # The bind installed the permission; the peer's other ports get Data indications.
    (other,) = client.replies(server.on_peer(relay, b"p", (PEER[0], 1), T0))
    assert isinstance(other, Message) and other.method == Method.DATA
    counters = server.counters
    assert (counters["channels"], counters["permissions"]) == (1, 1)


def test_channel_data_on_an_unbound_channel_is_dropped(server: TurnServer) -> None:
    client, _ = allocated(server)
    client.permit(PEER)
    assert client.channel_data(0x4002, b"x") == ()
    assert server.counters["drop_no_channel"] == 1


@pytest.mark.parametrize("number", [0x0000, 0x3FFF, 0x8000, 0xFFFF])
def test_channel_number_out_of_range_is_400(server: TurnServer, number: int) -> None:
    client, _ = allocated(server)
    assert error(client.bind(number, PEER)) == 400


def test_channel_bind_needs_number_and_peer(server: TurnServer) -> None:
    client, _ = allocated(server)
    reply = client.request(Method.CHANNEL_BIND, lambda m: m.with_channel_number(0x4000))
    assert error(reply) == 400
    peer = stun.encode_xor_address(*PEER, bytes(12))  # the peer alone
    assert error(client.request(Method.CHANNEL_BIND, attribute(stun.XOR_PEER_ADDRESS, peer))) == 400


def test_channel_conflicts_are_400(server: TurnServer) -> None:
    client, _ = allocated(server)
    ok(client.bind(0x4000, PEER), Method.CHANNEL_BIND)
    assert error(client.bind(0x4000, PEER2)) == 400  # channel bound to another peer
    assert error(client.bind(0x4001, PEER)) == 400  # peer bound to another channel
    ok(client.bind(0x4000, PEER, now=T0 + 100), Method.CHANNEL_BIND)  # a refresh
    assert server.counters["channels"] == 1


def test_channel_expiry_quarantine_and_rebinding() -> None:
    server, _ = make_server()
    client, relay = allocated(server)
    client.bind(0x4000, PEER)
    client.refresh(now=T0 + 500)
    client.permit(PEER, now=T0 + 400)  # the permission outlives the channel
    server.tick(T0 + 600)
    assert server.counters["channels"] == 0
    assert client.channel_data(0x4000, b"x", now=T0 + 600) == ()
    (reply,) = client.replies(server.on_peer(relay, b"d", PEER, T0 + 600))
    assert isinstance(reply, Message) and reply.method == Method.DATA
    # RFC 8656 section 12: neither the number nor the peer moves for 5 minutes ...
    assert error(client.bind(0x4000, PEER2, now=T0 + 650)) == 400
    assert error(client.bind(0x4001, PEER, now=T0 + 650)) == 400
    server.tick(T0 + 900)
    # ... then they are free again.
    ok(client.bind(0x4000, PEER2, now=T0 + 901), Method.CHANNEL_BIND)
    assert server.counters["channels"] == 1


def test_expired_channel_can_be_rebound_to_its_own_peer(server: TurnServer) -> None:
    client, _ = allocated(server)
    client.bind(0x4000, PEER)
    client.refresh(now=T0 + 500)
    server.tick(T0 + 600)
    assert server.counters["channels"] == 0
    ok(client.bind(0x4000, PEER, now=T0 + 601), Method.CHANNEL_BIND)
    assert server.counters["channels"] == 1
    assert to_peer(client.channel_data(0x4000, b"x", now=T0 + 602)).peer == PEER


# --- timers and usage -----------------------------------------------------------------------


def test_permission_expires_after_300_seconds(server: TurnServer) -> None:
    client, relay = allocated(server)
    client.permit(PEER, now=T0 + 10)
    assert server.on_peer(relay, b"x", PEER, T0 + 309) != ()
    assert server.on_peer(relay, b"x", PEER, T0 + 310) == ()  # even before the timer runs
    assert client.send_indication(PEER, b"x", T0 + 310) == ()
    assert server.counters["permissions"] == 1
    server.tick(T0 + 310)
    assert server.counters["permissions"] == 0


def test_permission_refresh_pushes_its_expiry(server: TurnServer) -> None:
    client, relay = allocated(server)
    client.permit(PEER)
    client.permit(PEER, now=T0 + 200)
    server.tick(T0 + 300)
    assert server.counters["permissions"] == 1
    assert server.on_peer(relay, b"x", PEER, T0 + 499) != ()


def test_allocation_expiry_gives_a_usage_record() -> None:
    server, ports = make_server()
    client, relay = allocated(server)
    client.bind(0x4000, PEER)
    client.channel_data(0x4000, b"abc", now=T0 + 1)
    client.send_indication(PEER, b"defgh", T0 + 2)
    server.on_peer(relay, b"1234567", PEER, T0 + 3)
    assert server.next_timer() == T0 + 300  # the permission's first
    assert server.tick(T0 + 599) == []
    assert server.on_peer(relay, b"x", PEER, T0 + 600) == ()  # expired before the timer runs
    (usage,) = server.tick(T0 + 700)
    assert usage == TurnUsage(
        username="alice",
        relay=relay,
        client=CLIENT,
        transport="udp",
        started=T0,
        ended=T0 + 600,
        bytes_in=8,
        bytes_out=7,
        packets_in=2,
        packets_out=1,
        reason="expired",
    )
    assert usage.row() == {
        "username": "alice",
        "relay": f"{RELAY_IP}:49152",
        "client": "198.51.100.7:50000",
        "transport": "udp",
        "started": T0,
        "ended": T0 + 600,
        "bytes_in": 8,
        "bytes_out": 7,
        "packets_in": 2,
        "packets_out": 1,
        "call_id": None,
    }
    assert ports.released == [relay]
    counters = server.counters
    assert (counters["allocations"], counters["permissions"], counters["channels"]) == (0, 0, 0)
    assert server.tick(T0 + 10_000) == [] and server.next_timer() is None


def test_refresh_extends_and_zero_deletes() -> None:
    server, ports = make_server()
    client, relay = allocated(server)
    reply = ok(client.refresh(1200, now=T0 + 500), Method.REFRESH)
    assert reply.lifetime() == 1200 and signed_by(reply, client.key)
    assert server.tick(T0 + 1000) == []
    assert server.allocation(relay) is not None
    outputs = client.send(client.build(Method.REFRESH, lambda m: m.with_lifetime(0)), T0 + 1100)
    reply_out, usage = outputs
    assert isinstance(reply_out, ToClient) and isinstance(usage, TurnUsage)
    assert ok(Message.parse(reply_out.data), Method.REFRESH).lifetime() == 0
    assert (usage.started, usage.ended, usage.reason) == (T0, T0 + 1100, "deleted")
    assert ports.released == [relay]
    assert error(client.refresh(0, now=T0 + 1101)) == 437
    assert server.tick(T0 + 5000) == []


def test_refresh_with_the_other_family_is_443(server: TurnServer) -> None:
    client, _ = allocated(server)
    reply = client.request(Method.REFRESH, attribute(stun.REQUESTED_ADDRESS_FAMILY, b"\x02\0\0\0"))
    assert error(reply) == 443


def test_an_expired_allocation_makes_way_for_a_new_one() -> None:
    server, _ = make_server()
    client, _ = allocated(server)
    outputs = client.send(
        client.build(Method.ALLOCATE, lambda m: m.with_requested_transport()), T0 + 601
    )
    usage, reply = outputs
    assert isinstance(usage, TurnUsage) and usage.ended == T0 + 600
    assert isinstance(reply, ToClient)
    ok(Message.parse(reply.data), Method.ALLOCATE)


def test_stop_releases_everything() -> None:
    server, ports = make_server()
    allocated(server)
    Client(server, address=("198.51.100.8", 1)).allocate(lambda m: m.with_even_port(True))
    usages = server.stop(T0 + 5)
    assert sorted(u.reason for u in usages) == ["stopped", "stopped"]
    assert len(ports.released) == 3
    assert server.counters["allocations"] == 0 and server.next_timer() is None


# --- bandwidth ------------------------------------------------------------------------------


def test_bandwidth_cap_each_way() -> None:
    server, _ = make_server(bandwidth=1000)
    client, relay = allocated(server)
    client.bind(0x4000, PEER)
    packet = bytes(600)
    assert client.channel_data(0x4000, packet, now=T0 + 1) != ()
    assert client.channel_data(0x4000, packet, now=T0 + 1.1) == ()
    assert server.on_peer(relay, packet, PEER, T0 + 1.1) != ()  # the other way has its own
    assert server.on_peer(relay, packet, PEER, T0 + 1.2) == ()
    assert client.channel_data(0x4000, packet, now=T0 + 1.7) != ()
    assert server.counters["drop_bandwidth"] == 2
    (usage,) = server.stop(T0 + 2)
    assert (usage.packets_in, usage.bytes_in, usage.packets_out) == (2, 1200, 1)


# --- TCP ------------------------------------------------------------------------------------


def test_tcp_allocation_relays_as_udp_with_padded_channel_data() -> None:
    server, _ = make_server()
    client, relay = allocated(server, transport="tcp")
    ok(client.bind(0x4000, PEER), Method.CHANNEL_BIND)
    stream = ChannelData(0x4000, b"abcde").encode(pad=True) * 2
    outputs: list[Output] = []
    for i in range(0, len(stream), 3):
        outputs.extend(client.send(stream[i : i + 3], T0))
    assert outputs == [ToPeer(relay, PEER, b"abcde")] * 2
    (out,) = server.on_peer(relay, b"12345", PEER, T0)
    assert isinstance(out, ToClient) and out.route == ClientRoute("tcp", CLIENT, LISTEN)
    assert out.data == b"\x40\x00\x00\x05" + b"12345" + b"\0\0\0"
    client.permit(PEER2)
    (indication,) = client.replies(server.on_peer(relay, b"xy", PEER2, T0))
    assert isinstance(indication, Message) and indication.data() == b"xy"


def test_tcp_stream_that_breaks_is_closed_with_its_allocation() -> None:
    server, ports = make_server()
    client, relay = allocated(server, transport="tcp")
    close, usage = client.send(b"\xff\xff\xff\xff", T0 + 1)
    assert close == CloseConnection(ClientRoute("tcp", CLIENT, LISTEN))
    assert isinstance(usage, TurnUsage) and usage.reason == "closed"
    assert ports.released == [relay]
    assert server.counters["drop_stream_broken"] == 1
    assert client.send(b"\x00\x01", T0 + 1) == [close]
    assert server.on_close(CLIENT, LISTEN, T0 + 2) == []
    assert server.counters["tcp_streams"] == 0


def test_tcp_malformed_message_is_skipped_not_fatal() -> None:
    server, _ = make_server()
    client = Client(server, transport="tcp")
    bad = bytearray(client.build(Method.BINDING, sign=False))
    bad[-1] ^= 1  # a FINGERPRINT that does not match
    good = client.build(Method.BINDING, sign=False)
    (reply,) = client.replies(client.send(bytes(bad) + good, T0))
    assert isinstance(reply, Message) and reply.cls == Class.SUCCESS
    assert server.counters["drop_malformed"] == 1


def test_tcp_close_ends_the_allocation() -> None:
    server, ports = make_server()
    _, relay = allocated(server, transport="tcp")
    assert server.counters["tcp_streams"] == 1
    (usage,) = server.on_close(CLIENT, LISTEN, T0 + 9)
    assert (usage.transport, usage.ended, usage.reason) == ("tcp", T0 + 9, "closed")
    assert ports.released == [relay] and server.counters["tcp_streams"] == 0


def test_udp_and_tcp_from_the_same_address_are_different_five_tuples(server: TurnServer) -> None:
    _, udp_relay = allocated(server)
    _, tcp_relay = allocated(server, transport="tcp")
    assert udp_relay != tcp_relay and server.counters["allocations"] == 2


# --- no amplification -----------------------------------------------------------------------


UNAUTHENTICATED: list[tuple[int, Build]] = [
    (Method.BINDING, same),
    (Method.BINDING, lambda m: m.with_attribute(0x7777, b"")),
    (Method.BINDING, lambda m: m.with_attribute(0x7777, bytes(40))),
    (Method.ALLOCATE, same),
    (Method.ALLOCATE, lambda m: m.with_requested_transport()),
    (Method.ALLOCATE, lambda m: m.with_integrity(b"k")),
    (Method.ALLOCATE, lambda m: m.with_username("alice").with_integrity(b"k")),
    (Method.REFRESH, same),
    (Method.CREATE_PERMISSION, same),
    (Method.CHANNEL_BIND, same),
    (Method.CONNECT, same),
    (0x0ABC, same),
    (0x0ABC, lambda m: m.with_software("a long enough software name to fit")),
]


@pytest.mark.parametrize("enabled", [True, False])
@pytest.mark.parametrize("fingerprint", [True, False])
def test_no_amplification(enabled: bool, fingerprint: bool) -> None:
    server, _ = make_server(enabled=enabled)
    for method, build in UNAUTHENTICATED:
        msg = build(Message(method, Class.REQUEST, bytes(12)))
        request = bytes(msg.with_fingerprint() if fingerprint else msg)
        for out in server.on_client(request, CLIENT, LISTEN, "udp", T0):
            assert isinstance(out, ToClient)
            reply = Message.parse(out.data)
            code = reply.error_code()
            exempt = reply.cls == Class.SUCCESS and method == Method.BINDING
            exempt = exempt or (code is not None and code.code == 401)
            assert exempt or len(out.data) <= len(request), (method, code)
            assert reply.get(stun.MESSAGE_INTEGRITY) is None
    assert server.counters["drop_amplification"] >= 1


def test_counters_start_at_zero(server: TurnServer) -> None:
    counters = server.counters
    for name in (
        "allocations",
        "permissions",
        "channels",
        "packets_to_peer",
        "bytes_to_peer",
        "packets_to_client",
        "bytes_to_client",
        "auth_failures",
    ):
        assert counters[name] == 0


def test_channel_data_header_is_built_like_the_codec(server: TurnServer) -> None:
    client, relay = allocated(server)
    client.bind(0x4FFF, PEER)
    data = bytes(range(7))
    (out,) = server.on_peer(relay, data, PEER, T0)
    assert isinstance(out, ToClient)
    assert out.data == ChannelData(0x4FFF, data).encode(pad=False)
    assert struct.unpack("!HH", out.data[:4]) == (0x4FFF, 7)


def test_ipv6_relay_end_to_end() -> None:
    server, _ = make_server(Ports(host="2001:db8::1"), relay_address="2001:db8::1")
    client = Client(server, address=("2001:db8:2::7", 5000))
    reply = client.allocate(lambda m: m.with_requested_address_family(stun.FAMILY_IPV6))
    relay = relay_of(ok(reply, Method.ALLOCATE))
    assert relay == ("2001:db8::1", 49152)
    peer = ("2001:db8:3::5", 9)
    ok(client.permit(peer), Method.CREATE_PERMISSION)
    assert error(client.permit(PEER)) == 443
    assert to_peer(client.send_indication(peer, b"v6")) == ToPeer(relay, peer, b"v6")
    for _ in range(2):  # the IPv6 XOR-PEER-ADDRESS depends on each transaction id
        (indication,) = client.replies(server.on_peer(relay, b"back", peer, T0))
        assert isinstance(indication, Message)
        assert indication.xor_address(stun.XOR_PEER_ADDRESS) == peer


def test_data_indication_too_big_for_stun_is_dropped(server: TurnServer) -> None:
    client, relay = allocated(server)
    client.permit(PEER)
    assert server.on_peer(relay, bytes(65_520), PEER, T0) == ()
    assert server.counters["drop_too_big"] == 1
    client.bind(0x4000, PEER)  # ChannelData has room for it
    (out,) = server.on_peer(relay, bytes(65_520), PEER, T0)
    assert isinstance(out, ToClient) and len(out.data) == 65_524


@pytest.mark.parametrize("method", [Method.REFRESH, Method.CREATE_PERMISSION, Method.CHANNEL_BIND])
def test_turn_requests_without_credentials_are_challenged(server: TurnServer, method: int) -> None:
    client = Client(server)
    (out,) = client.send(client.build(method, sign=False), T0)
    assert isinstance(out, ToClient)
    reply = Message.parse(out.data)
    assert error(reply) == 401 and reply.nonce() is not None


def test_nonces() -> None:
    nonces = Nonces(b"secret", 100)
    nonce = nonces.issue(CLIENT, T0)
    assert len(nonce) == 26 and not nonce.startswith("obMatJos2")
    assert nonces.valid(nonce, CLIENT, T0 + 100)
    assert not nonces.valid(nonce, CLIENT, T0 + 100.5)
    assert not nonces.valid(nonce, (CLIENT[0], CLIENT[1] + 1), T0)
    assert not Nonces(b"other", 100).valid(nonce, CLIENT, T0)
    assert not nonces.valid(nonce[:-1], CLIENT, T0)
    assert not nonces.valid("é" * 26, CLIENT, T0)


def test_auth_counters(server: TurnServer) -> None:
    client = Client(server, password="wrong")
    client.allocate()
    counters = server.counters
    assert (counters["auth_challenges"], counters["auth_failures"]) == (1, 1)
    assert counters["error_401"] == 2


@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest.mark.parametrize("number", [0x5000, 0x7FFF])
def test_rfc5766_channel_numbers_bind_and_relay(transport: str, number: int) -> None:
    """RFC 5766 section 11 allowed channels 0x4000-0x7FFF, and its clients use the whole range
    (coturn's turnutils_uclient picks numbers at random in it): they bind and relay both ways,
    over UDP and over TCP, as RFC 8656's 0x4000-0x4FFF do."""
    server, _ = make_server()
    client, relay = allocated(server, transport=transport)
    ok(client.bind(number, PEER), Method.CHANNEL_BIND)
    assert list(client.channel_data(number, b"abcde")) == [ToPeer(relay, PEER, b"abcde")]
    (out,) = server.on_peer(relay, b"12345", PEER, T0)
    assert isinstance(out, ToClient)
    assert out.data == ChannelData(number, b"12345").encode(pad=transport == "tcp")
