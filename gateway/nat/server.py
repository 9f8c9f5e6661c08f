"""The STUN/TURN server core (RFC 8489 Binding, RFC 8656 TURN over UDP and TCP with a UDP
relay), sans-I/O: bytes, addresses and the current time in, outputs (gateway.nat.allocation)
out. The adapter owns the sockets, the relay ports (through ``allocate_port``/``release_port``)
and the clock: it feeds ``on_client``/``on_peer``, performs the outputs, and calls ``tick`` at
``next_timer()``.

Invariants:
- No socket, reactor, clock or logging inside; randomness only through the injected source.
- Garbage gets no answer (counted drop): no response ever goes to something that does not
  parse as a STUN request, and no response ever answers an indication (RFC 8489 section 6.3.2).
- No amplification (issue 7 item 4): an unauthenticated source gets a response larger than its
  request only for a Binding success or a 401 challenge. Other errors to unauthenticated
  requests (400, 403 when TURN is off, 420 to Binding) are sent in full when they fit, else
  without reason phrase and FINGERPRINT, else not at all (counted ``drop_amplification``).
- Every TURN request is authenticated (long-term credentials, RFC 8489 section 9.2) before
  anything else is looked at, except the byte-identical retransmission of an Allocate that
  succeeded, which gets the same response again (RFC 8656 section 7.2). Every response to an
  authenticated request carries MESSAGE-INTEGRITY (or -SHA256, as the request did) with the
  request's key, then FINGERPRINT.
- Nonces are stateless and bound to the client's address (gateway.nat.longterm).
- The relay path (``on_peer``, ChannelData and Send from the client) allocates nothing per
  packet but the bytes relayed and one output tuple; allocations, permissions and channels are
  checked against ``now`` there, so a late ``tick`` never relays past an expiry.
"""

from __future__ import annotations

import heapq
import itertools
import os
import struct
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

from gateway.media.ports import PortsExhausted
from gateway.nat import stun
from gateway.nat.allocation import (
    PADS,
    Allocation,
    Channel,
    ClientRoute,
    CloseConnection,
    Output,
    Reservation,
    ToClient,
    ToPeer,
    TurnError,
    TurnSettings,
    TurnUsage,
)
from gateway.nat.credentials import TurnAuth, parse_username
from gateway.nat.framing import CHANNEL_MAX, CHANNEL_MIN, ChannelData, StreamDeframer
from gateway.nat.longterm import (
    Authenticated,
    LongTermAuth,
    Nonces,
    bounded_error,
    signed,
)
from gateway.nat.peers import is_refused
from gateway.nat.stun import Address, Class, Message, Method

__all__ = ["AllocatePort", "ReleasePort", "TurnServer"]

AllocatePort = Callable[[bool, bool], Address]
"""``allocate_port(even, pair)``: a free relay address, its port even when ``even``; with
``pair`` the port above it is held too (EVEN-PORT R bit) and comes back through
``release_port`` or becomes an allocation's relay. Raises ``PortsExhausted`` or ``OSError``
when nothing fits (the client gets 508)."""

ReleasePort = Callable[[Address], None]
"""``release_port(address)``: a relay address (or a reserved one) is free again."""

# Comprehension-required attributes a request may carry without a 420 (RFC 8489 section 6.3):
# the ones the server acts on, and ICE's PRIORITY and USE-CANDIDATE, harmless in a Binding.
_KNOWN: frozenset[int] = frozenset(
    getattr(stun, name)
    for name in (
        "USERNAME MESSAGE_INTEGRITY MESSAGE_INTEGRITY_SHA256 REALM NONCE LIFETIME DATA "
        "XOR_PEER_ADDRESS CHANNEL_NUMBER REQUESTED_ADDRESS_FAMILY EVEN_PORT DONT_FRAGMENT "
        "REQUESTED_TRANSPORT RESERVATION_TOKEN PRIORITY USE_CANDIDATE"
    ).split()
)

_CHANNEL_HEADER = struct.Struct("!HH")
_U32 = struct.Struct("!I")
_VERSION_OF_FAMILY = {stun.FAMILY_IPV4: 4, stun.FAMILY_IPV6: 6}

# Drop reasons (counters "drop_<reason>").
MALFORMED = "malformed"
NOT_STUN = "not_stun"
UNEXPECTED = "unexpected"
NO_ALLOCATION = "no_allocation"
NO_CHANNEL = "no_channel"
NO_PERMISSION = "no_permission"
BANDWIDTH = "bandwidth"
TOO_BIG = "too_big"
UNKNOWN_ATTRIBUTE = "unknown_attribute"
AMPLIFICATION = "amplification"
STREAM_BROKEN = "stream_broken"

_NOTHING: tuple[Output, ...] = ()


class _Request(NamedTuple):
    msg: Message
    raw: bytes
    route: ClientRoute
    now: float


_TimerEntry = tuple[float, int, Allocation | None, object]


class TurnServer:
    """The STUN/TURN server state machine: every allocation, reservation and TCP stream.

    ``random(n)`` gives ``n`` random octets (nonce secret, reservation tokens, indication
    transaction ids); inject a deterministic one in tests.
    """

    def __init__(
        self,
        settings: TurnSettings,
        auth: TurnAuth,
        allocate_port: AllocatePort,
        release_port: ReleasePort,
        random: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.settings = settings
        self.auth = auth
        self._allocate_port = allocate_port
        self._release_port = release_port
        self._random = random
        nonces = Nonces(random(20), settings.nonce_lifetime)
        self._auth = LongTermAuth(auth, nonces, settings.software)
        self._tid_prefix = random(4)
        self._tid_counter = 0
        self._relay_version = settings.relay_version
        self._rate = float(settings.bandwidth)
        self._by_client: dict[Address, list[Allocation]] = {}
        self._by_relay: dict[Address, Allocation] = {}
        self._per_user: dict[str, int] = {}
        self._reservations: dict[bytes, Reservation] = {}
        self._streams: dict[ClientRoute, StreamDeframer] = {}
        self._timers: list[_TimerEntry] = []
        self._seq = itertools.count()
        self._events: Counter[str] = Counter()
        self._drops: Counter[str] = Counter()
        self._permissions = 0
        self._channels = 0
        self._packets_to_peer = self._bytes_to_peer = 0
        self._packets_to_client = self._bytes_to_client = 0

    # --- public API -------------------------------------------------------------------------

    def on_client(
        self, data: bytes, client: Address, server: Address, transport: str, now: float
    ) -> Sequence[Output]:
        """Octets from a client: one UDP datagram, or the next chunk of a TCP stream (the
        server deframes it, RFC 8656 section 12.5). ``transport`` is "udp" or "tcp"."""
        if transport == "udp":
            if not data:
                return self._dropped(NOT_STUN)
            first = data[0]
            if 0x40 <= first <= 0x7F:  # ChannelData, RFC 5766's channel range (framing.py)
                return self._udp_channel_data(data, client, server, now)
            if first > 3:  # RFC 7983: neither STUN nor ChannelData
                return self._dropped(NOT_STUN)
            raw = bytes(data)
            try:
                msg = Message.parse(raw)
            except ValueError:
                return self._dropped(MALFORMED)
            return self._on_message(msg, raw, ClientRoute("udp", client, server), now)
        if transport == "tcp":
            return self._on_stream(data, ClientRoute("tcp", client, server), now)
        raise ValueError(f"unknown TURN client transport {transport!r}")

    def on_peer(self, relay: Address, data: bytes, peer: Address, now: float) -> Sequence[Output]:
        """A UDP datagram from ``peer`` at relay address ``relay``: relayed to the client as
        ChannelData when a channel is bound to ``peer``, else as a Data indication (RFC 8656
        sections 10.3 and 12.6), or dropped and counted without a permission for its IP."""
        alloc = self._by_relay.get(relay)
        if alloc is None or alloc.expires <= now:
            return self._dropped(NO_ALLOCATION)
        expiry = alloc.permissions.get(peer[0])
        if expiry is None or expiry <= now:
            return self._dropped(NO_PERMISSION)
        size = len(data)
        if self._rate and not alloc.take_out(size, now, self._rate):
            return self._dropped(BANDWIDTH)
        route = alloc.route
        channel = alloc.channel_by_peer.get(peer)
        if channel is not None and channel.expires > now and size <= 0xFFFF:
            if route.transport == "udp":
                message = _CHANNEL_HEADER.pack(channel.number, size) + data
            else:
                header = _CHANNEL_HEADER.pack(channel.number, size)
                message = b"".join((header, data, PADS[size & 3]))
        else:
            self._tid_counter += 1
            tid = self._tid_prefix + self._tid_counter.to_bytes(8, "big")
            indication = alloc.data_indication(peer, data, tid)
            if indication is None:
                return self._dropped(TOO_BIG)
            message = indication
        alloc.packets_out += 1
        alloc.bytes_out += size
        self._packets_to_client += 1
        self._bytes_to_client += size
        return (ToClient(route, message),)

    def on_close(self, client: Address, server: Address, now: float) -> list[TurnUsage]:
        """The TCP connection from ``client`` to ``server`` ended: its allocation goes with it
        (RFC 8656 section 7.1's 5-tuple no longer exists)."""
        route = ClientRoute("tcp", client, server)
        self._streams.pop(route, None)
        alloc = self._find(client, server, "tcp")
        return [] if alloc is None else [self._delete(alloc, now, "closed")]

    def tick(self, now: float) -> list[TurnUsage]:
        """Run every timer due at ``now``: allocations (one usage record each), permissions,
        channel bindings and their quarantine, reservations."""
        ended: list[TurnUsage] = []
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, _, alloc, what = heapq.heappop(timers)
            if alloc is None:
                if isinstance(what, bytes):
                    self._expire_reservation(what, now)
            elif not alloc.live:
                continue
            elif what is None:
                if alloc.expires <= now:
                    ended.append(self._delete(alloc, alloc.expires, "expired"))
            elif isinstance(what, str):
                self._expire_permission(alloc, what, now)
            elif isinstance(what, Channel):
                self._expire_channel(alloc, what, now)
        return ended

    def next_timer(self) -> float | None:
        """When ``tick`` has something to do next (possibly nothing: timers are lazy)."""
        return self._timers[0][0] if self._timers else None

    def stop(self, now: float) -> list[TurnUsage]:
        """End every allocation (usage records with reason "stopped") and release every
        relay and reserved port."""
        ended = [self._delete(alloc, now, "stopped") for alloc in list(self._by_relay.values())]
        for reservation in self._reservations.values():
            self._release_port(reservation.relay)
        self._reservations.clear()
        self._streams.clear()
        self._timers.clear()
        return ended

    def has_allocation(self, client: Address, server: Address, transport: str) -> bool:
        """Whether the 5-tuple (``client``, ``server``, ``transport``) holds a live allocation."""
        return self._find(client, server, transport) is not None

    def allocation(self, relay: Address) -> Allocation | None:
        """The live allocation at relay address ``relay`` (read-only use, e.g. to tie a relay
        to the call it serves)."""
        return self._by_relay.get(relay)

    @property
    def counters(self) -> dict[str, int]:
        """Status counters: live allocations/permissions/channels/reservations/TCP streams,
        relayed packets and bytes each way, events (``auth_challenges``, ``auth_failures``,
        ``stale_nonces``, ``error_<code>``, ...) and drops (``drop_<reason>``)."""
        counters = {
            "allocations": len(self._by_relay),
            "permissions": self._permissions,
            "channels": self._channels,
            "reservations": len(self._reservations),
            "tcp_streams": len(self._streams),
            "packets_to_peer": self._packets_to_peer,
            "bytes_to_peer": self._bytes_to_peer,
            "packets_to_client": self._packets_to_client,
            "bytes_to_client": self._bytes_to_client,
            "allocations_total": 0,
            "auth_challenges": 0,
            "auth_failures": 0,
            "stale_nonces": 0,
        }
        counters.update(self._events)
        counters.update((f"drop_{reason}", count) for reason, count in self._drops.items())
        return counters

    # --- relay path -------------------------------------------------------------------------

    def _dropped(self, reason: str) -> tuple[Output, ...]:
        self._drops[reason] += 1
        return _NOTHING

    def _find(self, client: Address, server: Address, transport: str) -> Allocation | None:
        """The allocation of a 5-tuple (RFC 8656 section 2), without building a key."""
        allocs = self._by_client.get(client)
        if allocs is not None:
            for alloc in allocs:
                route = alloc.route
                if route.server == server and route.transport == transport:
                    return alloc
        return None

    def _udp_channel_data(
        self, data: bytes, client: Address, server: Address, now: float
    ) -> Sequence[Output]:
        """ChannelData in a datagram, padding optional (RFC 8656 section 12.5)."""
        size = len(data)
        if size < 4:
            return self._dropped(MALFORMED)
        length = (data[2] << 8) | data[3]
        end = 4 + length
        if size < end or size > end + (-length & 3):
            return self._dropped(MALFORMED)
        number = (data[0] << 8) | data[1]
        return self._channel_to_peer(client, server, "udp", number, data[4:end], now)

    def _channel_to_peer(
        self,
        client: Address,
        server: Address,
        transport: str,
        number: int,
        payload: bytes,
        now: float,
    ) -> Sequence[Output]:
        """ChannelData from the client, relayed to the channel's peer (RFC 8656 section
        12.4) while the channel and the peer's permission last."""
        alloc = self._find(client, server, transport)
        if alloc is None or alloc.expires <= now:
            return self._dropped(NO_ALLOCATION)
        channel = alloc.channels.get(number)
        if channel is None or channel.expires <= now:
            return self._dropped(NO_CHANNEL)
        expiry = alloc.permissions.get(channel.peer_ip)
        if expiry is None or expiry <= now:
            return self._dropped(NO_PERMISSION)
        return self._to_peer(alloc, channel.peer, payload, now)

    def _to_peer(
        self, alloc: Allocation, peer: Address, payload: bytes, now: float
    ) -> Sequence[Output]:
        size = len(payload)
        if self._rate and not alloc.take_in(size, now, self._rate):
            return self._dropped(BANDWIDTH)
        alloc.packets_in += 1
        alloc.bytes_in += size
        self._packets_to_peer += 1
        self._bytes_to_peer += size
        return (ToPeer(alloc.relay, peer, payload),)

    # --- TCP streams ------------------------------------------------------------------------

    def _on_stream(self, data: bytes, route: ClientRoute, now: float) -> list[Output]:
        deframer = self._streams.get(route)
        if deframer is None:
            deframer = self._streams[route] = StreamDeframer()
        try:
            deframer.feed(data)
        except ValueError:
            return self._broken(route, now)
        outputs: list[Output] = []
        while True:
            before = deframer.buffered
            try:
                frame = deframer.next_frame()
            except ValueError:
                if deframer.buffered == before:  # framing lost: fatal for the stream
                    outputs.extend(self._broken(route, now))
                    return outputs
                self._drops[MALFORMED] += 1  # one bad message, consumed; carry on
                continue
            if frame is None:
                return outputs
            if isinstance(frame, ChannelData):
                outputs.extend(
                    self._channel_to_peer(
                        route.client, route.server, "tcp", frame.channel, frame.data, now
                    )
                )
            else:
                outputs.extend(self._on_message(frame, frame.encode(), route, now))

    def _broken(self, route: ClientRoute, now: float) -> list[Output]:
        self._drops[STREAM_BROKEN] += 1  # the deframer stays, broken, until on_close
        outputs: list[Output] = [CloseConnection(route)]
        alloc = self._find(route.client, route.server, "tcp")
        if alloc is not None:
            outputs.append(self._delete(alloc, now, "closed"))
        return outputs

    # --- STUN messages ----------------------------------------------------------------------

    def _on_message(
        self, msg: Message, raw: bytes, route: ClientRoute, now: float
    ) -> Sequence[Output]:
        if msg.cls == Class.REQUEST:
            outputs: list[Output] = []
            alloc = self._find(route.client, route.server, route.transport)
            if alloc is not None and alloc.expires <= now:  # expired, the timer not yet run
                outputs.append(self._delete(alloc, alloc.expires, "expired"))
            handler = _REQUESTS.get(msg.method, TurnServer._unknown_method)
            outputs.extend(handler(self, _Request(msg, raw, route, now)))
            return outputs
        if msg.cls == Class.INDICATION:
            if msg.method == Method.SEND:
                return self._send_indication(msg, route, now)
            if msg.method == Method.BINDING:  # keepalive (RFC 8489 section 6.3.2)
                self._events["binding_indications"] += 1
                return _NOTHING
        return self._dropped(UNEXPECTED)

    def _send_indication(self, msg: Message, route: ClientRoute, now: float) -> Sequence[Output]:
        """Send indication (RFC 8656 section 10.2): relayed with a permission, else dropped;
        never answered."""
        alloc = self._find(route.client, route.server, route.transport)
        if alloc is None or alloc.expires <= now:
            return self._dropped(NO_ALLOCATION)
        if _unknown_attributes(msg):
            return self._dropped(UNKNOWN_ATTRIBUTE)
        try:
            peer = msg.xor_address(stun.XOR_PEER_ADDRESS)
            data = msg.data()
        except ValueError:
            return self._dropped(MALFORMED)
        if peer is None or data is None:
            return self._dropped(MALFORMED)
        expiry = alloc.permissions.get(peer[0])
        if expiry is None or expiry <= now:
            return self._dropped(NO_PERMISSION)
        return self._to_peer(alloc, peer, data, now)

    # --- responses --------------------------------------------------------------------------

    def _reply(
        self,
        req: _Request,
        auth: Authenticated,
        attributes: Iterable[tuple[int, bytes]] = (),
        code: int = 0,
    ) -> list[Output]:
        """A success (``code`` 0) or error response to an authenticated request."""
        if code:
            self._events[f"error_{code}"] += 1
        return [
            ToClient(req.route, signed(req.msg, auth, self.settings.software, attributes, code))
        ]

    def _bounded_error(
        self, req: _Request, code: int, attributes: Sequence[tuple[int, bytes]] = ()
    ) -> list[Output]:
        """An error to an unauthenticated request, never larger than it (else dropped)."""
        self._events[f"error_{code}"] += 1
        data = bounded_error(req.msg, code, len(req.raw), attributes)
        if data is None:
            self._drops[AMPLIFICATION] += 1
            return []
        return [ToClient(req.route, data)]

    def _authenticate(self, req: _Request) -> Authenticated | list[Output]:
        """The credentials of an authenticated request, or the answer that refuses it."""
        result = self._auth.check(req.msg, req.raw, req.route.client, req.now)
        if isinstance(result, Authenticated):
            return result
        self._events[result.reason] += 1
        self._events[f"error_{result.code}"] += 1
        if result.response is None:
            self._drops[AMPLIFICATION] += 1
            return []
        return [ToClient(req.route, result.response)]

    def _turn(
        self, req: _Request, body: Callable[[_Request, Authenticated], list[Output]]
    ) -> list[Output]:
        """Run a TURN request's ``body`` once the request is authenticated and has no unknown
        comprehension-required attribute; a TurnError becomes its error response."""
        if not self.settings.enabled:
            return self._bounded_error(req, 403)
        auth = self._authenticate(req)
        if not isinstance(auth, Authenticated):
            return auth
        unknown = _unknown_attributes(req.msg)
        if unknown:
            value = struct.pack(f"!{len(unknown)}H", *unknown)
            return self._reply(req, auth, [(stun.UNKNOWN_ATTRIBUTES, value)], code=420)
        try:
            return body(req, auth)
        except TurnError as error:
            return self._reply(req, auth, code=error.code)

    def _owned(self, req: _Request, auth: Authenticated) -> Allocation:
        """The request's allocation, which the same user must own (437, 441)."""
        route = req.route
        alloc = self._find(route.client, route.server, route.transport)
        if alloc is None:
            raise TurnError(437)
        if alloc.username != auth.username:
            raise TurnError(441)
        return alloc

    # --- requests ---------------------------------------------------------------------------

    def _unknown_method(self, req: _Request) -> list[Output]:
        return self._bounded_error(req, 400)

    def _binding(self, req: _Request) -> list[Output]:
        """Binding (RFC 8489 section 7.3): XOR-MAPPED-ADDRESS, SOFTWARE, FINGERPRINT."""
        self._events["binding_requests"] += 1
        msg = req.msg
        unknown = _unknown_attributes(msg)
        if unknown:
            value = struct.pack(f"!{len(unknown)}H", *unknown)
            return self._bounded_error(req, 420, [(stun.UNKNOWN_ATTRIBUTES, value)])
        host, port = req.route.client
        reply = (
            Message(Method.BINDING, Class.SUCCESS, msg.transaction_id)
            .with_xor_address(stun.XOR_MAPPED_ADDRESS, host, port)
            .with_software(self.settings.software)
            .with_fingerprint()
        )
        return [ToClient(req.route, bytes(reply))]

    def _allocate(self, req: _Request) -> list[Output]:
        """Allocate (RFC 8656 section 7.2); a byte-identical retransmission of the request
        that created this 5-tuple's allocation gets the same success response."""
        if not self.settings.enabled:
            return self._bounded_error(req, 403)
        route = req.route
        alloc = self._find(route.client, route.server, route.transport)
        if alloc is not None and alloc.allocate_request == req.raw:
            self._events["allocate_retransmissions"] += 1
            return [ToClient(route, alloc.allocate_response)]
        return self._turn(req, self._allocate_body)

    def _allocate_body(self, req: _Request, auth: Authenticated) -> list[Output]:
        msg, route, now = req.msg, req.route, req.now
        if self._find(route.client, route.server, route.transport) is not None:
            raise TurnError(437)
        try:
            transport = msg.requested_transport()
            family = msg.requested_address_family()
            even = msg.even_port()
            token = msg.reservation_token()
            lifetime = msg.lifetime()
        except ValueError:
            raise TurnError(400) from None
        additional = msg.get(stun.ADDITIONAL_ADDRESS_FAMILY)
        if transport is None:
            raise TurnError(400)
        if transport != stun.TRANSPORT_UDP:
            raise TurnError(442)
        if token is not None and (even is not None or family is not None):
            raise TurnError(400)
        if additional is not None and (
            family is not None or len(additional) != 4 or additional[0] != stun.FAMILY_IPV6
        ):
            raise TurnError(400)
        if (
            token is None
            and _VERSION_OF_FAMILY.get(family or stun.FAMILY_IPV4) != self._relay_version
        ):
            raise TurnError(440)
        quota_key = self._quota_key(auth.username)
        settings = self.settings
        if settings.total_quota and len(self._by_relay) >= settings.total_quota:
            raise TurnError(486)
        if settings.user_quota and self._per_user.get(quota_key, 0) >= settings.user_quota:
            raise TurnError(486)
        relay, reservation = self._take_relay(token, even, now)
        seconds = self._lifetime(lifetime)
        alloc = Allocation(
            route, auth.username, quota_key, auth.key, relay, now, now + seconds, self._rate
        )
        self._by_client.setdefault(route.client, []).append(alloc)
        self._by_relay[relay] = alloc
        self._per_user[quota_key] = self._per_user.get(quota_key, 0) + 1
        self._schedule(alloc.expires, alloc, None)
        self._events["allocations_total"] += 1
        tid = msg.transaction_id
        attributes = [
            (stun.XOR_RELAYED_ADDRESS, stun.encode_xor_address(relay[0], relay[1], tid)),
            (stun.LIFETIME, _U32.pack(seconds)),
        ]
        if reservation is not None:
            attributes.append((stun.RESERVATION_TOKEN, reservation.token))
        attributes.append((stun.XOR_MAPPED_ADDRESS, stun.encode_xor_address(*route.client, tid)))
        if additional is not None:  # RFC 8656 section 18.12: the IPv6 half is refused
            attributes.append((stun.ADDRESS_ERROR_CODE, bytes((stun.FAMILY_IPV6, 0, 4, 40))))
        alloc.allocate_request = req.raw
        alloc.allocate_response = signed(req.msg, auth, self.settings.software, attributes)
        return [ToClient(route, alloc.allocate_response)]

    def _take_relay(
        self, token: bytes | None, even: bool | None, now: float
    ) -> tuple[Address, Reservation | None]:
        """The relay address of a new allocation: a reserved one (RESERVATION-TOKEN), or a
        new port, even for EVEN-PORT, with the next one reserved for its R bit (RFC 8656
        section 7.2). 508 when none."""
        if token is not None:
            held = self._reservations.pop(token, None)
            if held is None:
                raise TurnError(508)
            if held.expires <= now:
                self._release_port(held.relay)
                raise TurnError(508)
            return held.relay, None
        try:
            relay = self._allocate_port(even is not None, bool(even))
        except (PortsExhausted, OSError):
            raise TurnError(508) from None
        if not even:
            return relay, None
        token = self._random(8)
        while token in self._reservations:
            token = self._random(8)
        reservation = Reservation(
            token, (relay[0], relay[1] + 1), now + self.settings.reservation_lifetime
        )
        self._reservations[token] = reservation
        self._schedule(reservation.expires, None, token)
        return relay, reservation

    def _refresh(self, req: _Request) -> list[Output]:
        return self._turn(req, self._refresh_body)

    def _refresh_body(self, req: _Request, auth: Authenticated) -> list[Output]:
        """Refresh (RFC 8656 section 7.3): LIFETIME 0 deletes the allocation."""
        alloc = self._owned(req, auth)
        try:
            lifetime = req.msg.lifetime()
            family = req.msg.requested_address_family()
        except ValueError:
            raise TurnError(400) from None
        if family is not None and _VERSION_OF_FAMILY.get(family) != alloc.relay_version:
            raise TurnError(443)
        if lifetime == 0:
            usage = self._delete(alloc, req.now, "deleted")
            outputs = self._reply(req, auth, [(stun.LIFETIME, _U32.pack(0))])
            outputs.append(usage)
            return outputs
        seconds = self._lifetime(lifetime)
        alloc.expires = req.now + seconds
        self._schedule(alloc.expires, alloc, None)
        return self._reply(req, auth, [(stun.LIFETIME, _U32.pack(seconds))])

    def _create_permission(self, req: _Request) -> list[Output]:
        return self._turn(req, self._create_permission_body)

    def _create_permission_body(self, req: _Request, auth: Authenticated) -> list[Output]:
        """CreatePermission (RFC 8656 section 9.2): every XOR-PEER-ADDRESS or none."""
        alloc = self._owned(req, auth)
        try:
            peers = req.msg.xor_addresses(stun.XOR_PEER_ADDRESS)
        except ValueError:
            raise TurnError(400) from None
        if not peers:
            raise TurnError(400)
        hosts = {host for host, _ in peers}
        for host in hosts:
            self._check_peer(alloc, host)
        new = sum(1 for host in hosts if host not in alloc.permissions)
        if len(alloc.permissions) + new > self.settings.max_permissions:
            raise TurnError(508)
        for host in hosts:
            self._permit(alloc, host, req.now)
        return self._reply(req, auth)

    def _channel_bind(self, req: _Request) -> list[Output]:
        return self._turn(req, self._channel_bind_body)

    def _channel_bind_body(self, req: _Request, auth: Authenticated) -> list[Output]:
        """ChannelBind (RFC 8656 section 11.2): binds or refreshes, and installs or refreshes
        the peer's permission."""
        alloc = self._owned(req, auth)
        try:
            number = req.msg.channel_number()
            peer = req.msg.xor_address(stun.XOR_PEER_ADDRESS)
        except ValueError:
            raise TurnError(400) from None
        if number is None or peer is None or not CHANNEL_MIN <= number <= CHANNEL_MAX:
            raise TurnError(400)
        self._check_peer(alloc, peer[0])
        channel = alloc.channels.get(number)
        if channel is not None and channel.peer != peer:
            raise TurnError(400)
        other = alloc.channel_by_peer.get(peer)
        if other is not None and other.number != number:
            raise TurnError(400)
        if peer[0] not in alloc.permissions:
            if len(alloc.permissions) >= self.settings.max_permissions:
                raise TurnError(508)
        expires = req.now + self.settings.channel_lifetime
        if channel is None:
            channel = Channel(number, peer, expires)
            alloc.channels[number] = channel
            alloc.channel_by_peer[peer] = channel
            self._channels += 1
        else:
            channel.expires = expires
            if not channel.active:
                channel.active = True
                self._channels += 1
        self._schedule(expires, alloc, channel)
        self._permit(alloc, peer[0], req.now)
        return self._reply(req, auth)

    # --- state helpers ----------------------------------------------------------------------

    def _check_peer(self, alloc: Allocation, host: str) -> None:
        """403 for a refused peer (gateway.nat.peers), 443 for the other address family."""
        if is_refused(host, self.settings.allowed_peers) is not None:
            self._events["refused_peers"] += 1
            raise TurnError(403)
        if (6 if ":" in host else 4) != alloc.relay_version:
            raise TurnError(443)

    def _permit(self, alloc: Allocation, host: str, now: float) -> None:
        expires = now + self.settings.permission_lifetime
        if host not in alloc.permissions:
            self._permissions += 1
        alloc.permissions[host] = expires
        self._schedule(expires, alloc, host)

    def _lifetime(self, requested: int | None) -> int:
        """RFC 8656 sections 7.2 and 7.3: the requested lifetime capped at the maximum, and
        never below the default."""
        settings = self.settings
        if requested is None:
            return settings.default_lifetime
        return max(settings.default_lifetime, min(requested, settings.max_lifetime))

    def _quota_key(self, username: str) -> str:
        """Whose quota an allocation counts against: a time-limited username's user part
        (every expiry of one user is one user), else the username."""
        if self.auth.secret:
            try:
                _, user = parse_username(username)
            except ValueError:
                return username
            return user or username
        return username

    def _schedule(self, when: float, alloc: Allocation | None, what: object) -> None:
        heapq.heappush(self._timers, (when, next(self._seq), alloc, what))

    def _delete(self, alloc: Allocation, ended: float, reason: str) -> TurnUsage:
        """Remove an allocation everywhere, give its relay port back, and say what it used."""
        alloc.live = False
        route = alloc.route
        allocs = self._by_client.get(route.client)
        if allocs is not None:
            allocs.remove(alloc)
            if not allocs:
                del self._by_client[route.client]
        del self._by_relay[alloc.relay]
        left = self._per_user[alloc.quota_key] - 1
        if left:
            self._per_user[alloc.quota_key] = left
        else:
            del self._per_user[alloc.quota_key]
        self._permissions -= len(alloc.permissions)
        self._channels -= alloc.active_channels()
        self._release_port(alloc.relay)
        return alloc.usage(ended, reason)

    def _expire_permission(self, alloc: Allocation, host: str, now: float) -> None:
        expiry = alloc.permissions.get(host)
        if expiry is not None and expiry <= now:
            del alloc.permissions[host]
            self._permissions -= 1

    def _expire_channel(self, alloc: Allocation, channel: Channel, now: float) -> None:
        if channel.expires > now or alloc.channels.get(channel.number) is not channel:
            return  # refreshed since, or already gone
        if channel.active:
            channel.active = False
            self._channels -= 1
        quarantine_end = channel.expires + self.settings.channel_quarantine
        if quarantine_end > now:
            self._schedule(quarantine_end, alloc, channel)
            return
        del alloc.channels[channel.number]
        del alloc.channel_by_peer[channel.peer]

    def _expire_reservation(self, token: bytes, now: float) -> None:
        reservation = self._reservations.get(token)
        if reservation is not None and reservation.expires <= now:
            del self._reservations[token]
            self._release_port(reservation.relay)


def _unknown_attributes(msg: Message) -> list[int]:
    """Comprehension-required attribute types the server does not understand, each once."""
    unknown: list[int] = []
    for attribute in msg.effective_attributes():
        attr_type = attribute.type
        if attr_type < 0x8000 and attr_type not in _KNOWN and attr_type not in unknown:
            unknown.append(attr_type)
    return unknown


_REQUESTS: dict[int, Callable[[TurnServer, _Request], list[Output]]] = {
    Method.BINDING: TurnServer._binding,
    Method.ALLOCATE: TurnServer._allocate,
    Method.REFRESH: TurnServer._refresh,
    Method.CREATE_PERMISSION: TurnServer._create_permission,
    Method.CHANNEL_BIND: TurnServer._channel_bind,
}
"""Where each request method is handled (STYLE.md habit 2); any other method gets 400."""
