"""TURN server state and outputs (RFC 8656): settings, the allocation with its permissions and
channel bindings, port reservations, the usage record, and what the server asks its adapter to
send. gateway.nat.server holds the protocol logic that drives these.

Invariants:
- Plain state, no I/O and no clock: every deadline is an absolute time in the caller's seconds
  (the ``now`` passed to the server), never read here.
- Addresses are ``(host, port)`` with ``host`` an IP literal in canonical form (IPv4 dotted
  quad; IPv6 as ``ipaddress`` prints it, without brackets or scope). Adapters normalise what
  the socket layer gives them (Twisted's IPv6 4-tuples) before calling the server.
- Permissions are keyed by the peer's IP only (RFC 8656 section 9), channels by number and by
  peer transport address, both directions kept in step.
- The byte and packet counters of an allocation count application data actually relayed,
  seen from the server as coturn's session statistics do: ``in`` is received from the client
  and sent on to peers, ``out`` is received from peers and sent on to the client.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import NamedTuple

from gateway.nat.peers import Network
from gateway.nat.stun import (
    DATA,
    MAGIC_COOKIE,
    XOR_PEER_ADDRESS,
    Address,
    Class,
    Message,
    Method,
    encode_xor_address,
)

__all__ = [
    "Allocation",
    "Channel",
    "ClientRoute",
    "CloseConnection",
    "Output",
    "Reservation",
    "ToClient",
    "ToPeer",
    "TurnError",
    "TurnSettings",
    "TurnUsage",
    "format_address",
]


class TurnError(Exception):
    """A request the server answers with a STUN error response: ``code`` (400-599) and an
    optional reason phrase (the RFC's phrase when empty). Internal to the server core; the
    adapters never see it, they get the encoded error response."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"{code} {reason}".strip())
        self.code = code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class TurnSettings:
    """The server's policy. Times are seconds; quotas and the bandwidth cap 0 mean no limit.

    ``relay_address`` only fixes the relay's address family (REQUESTED-ADDRESS-FAMILY 440,
    peer family 443); the relay address itself comes from the port allocator.
    """

    enabled: bool = True
    relay_address: str = "127.0.0.1"
    allowed_peers: tuple[Network, ...] = ()
    software: str = "acs-gateway"
    default_lifetime: int = 600  # RFC 8656 section 3.2
    max_lifetime: int = 3600  # RFC 8656 section 7.2 (recommended maximum)
    permission_lifetime: int = 300  # RFC 8656 section 9, fixed by the RFC
    channel_lifetime: int = 600  # RFC 8656 section 12
    channel_quarantine: int = 300  # RFC 8656 section 12: no rebinding for 5 minutes
    nonce_lifetime: int = 3600
    reservation_lifetime: int = 30  # RFC 8656 section 7.2 (about 30 seconds)
    user_quota: int = 0  # allocations at once per user (486 beyond)
    total_quota: int = 0  # allocations at once in all (486 beyond)
    bandwidth: int = 0  # bytes per second per allocation, each direction separately
    max_permissions: int = 256  # peers per allocation (508 beyond)

    @property
    def relay_version(self) -> int:
        """4 or 6: the IP version of ``relay_address``."""
        return ipaddress.ip_address(self.relay_address).version


# --- outputs --------------------------------------------------------------------------------


class ClientRoute(NamedTuple):
    """Where a client is reached: ``transport`` "udp" or "tcp", the client's address and the
    server's own (listening) address the client talks to. On TCP it names the connection."""

    transport: str
    client: Address
    server: Address


class ToClient(NamedTuple):
    """Send ``data`` to the client: from the listening socket ``route.server`` over UDP, or on
    the TCP connection ``route`` (already framed; ChannelData padded)."""

    route: ClientRoute
    data: bytes


class ToPeer(NamedTuple):
    """Send the UDP datagram ``data`` from the relay socket ``relay`` to ``peer``."""

    relay: Address
    peer: Address
    data: bytes


class CloseConnection(NamedTuple):
    """Close the TCP connection ``route``: its byte stream broke and cannot be resynchronised
    (the server has already ended the connection's allocation; until ``on_close`` every
    further chunk on it is refused the same way)."""

    route: ClientRoute


def format_address(address: Address) -> str:
    """``host:port``, brackets around an IPv6 host."""
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True, slots=True)
class TurnUsage:
    """One ended allocation, for the CDR table ``turn_usage``. ``ended`` is when the lifetime
    ran out (expiry), or the time of the Refresh with LIFETIME 0 or of the connection's end.
    ``reason``: "expired", "deleted" (Refresh 0), "closed" (TCP) or "stopped" (shutdown).
    ``call_id`` is for the caller to fill in (``dataclasses.replace``)."""

    username: str
    relay: Address
    client: Address
    transport: str
    started: float
    ended: float
    bytes_in: int
    bytes_out: int
    packets_in: int
    packets_out: int
    reason: str = ""
    call_id: str | None = None

    def row(self) -> dict[str, str | float | int | None]:
        """The ``turn_usage`` columns, addresses as ``host:port`` text."""
        return {
            "username": self.username,
            "relay": format_address(self.relay),
            "client": format_address(self.client),
            "transport": self.transport,
            "started": self.started,
            "ended": self.ended,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "packets_in": self.packets_in,
            "packets_out": self.packets_out,
            "call_id": self.call_id,
        }


Output = ToClient | ToPeer | CloseConnection | TurnUsage


# --- state ----------------------------------------------------------------------------------

_STUN_HEADER = struct.Struct("!HHI12s")
_ATTR_HEADER = struct.Struct("!HH")
PADS = (b"", b"\0\0\0", b"\0\0", b"\0")  # padding to 4, indexed by length & 3
_DATA_INDICATION = int.from_bytes(Message(Method.DATA, Class.INDICATION, bytes(12)).encode()[:2])
_MAX_STUN_BODY = 0xFFFC
_PEER_ATTRIBUTE_CACHE = 64


class Channel:
    """A channel binding (RFC 8656 section 12). Relays while ``now < expires``; kept until
    ``expires + quarantine`` so neither its number nor its peer can be rebound elsewhere."""

    __slots__ = ("active", "expires", "number", "peer", "peer_ip")

    def __init__(self, number: int, peer: Address, expires: float) -> None:
        self.number = number
        self.peer = peer
        self.peer_ip = peer[0]
        self.expires = expires
        self.active = True  # False once the server's timer saw it expire


@dataclass(slots=True)
class Reservation:
    """A relay port held by EVEN-PORT's R bit for a later Allocate with RESERVATION-TOKEN
    (RFC 8656 section 7.2)."""

    token: bytes
    relay: Address
    expires: float


class Allocation:
    """One TURN allocation: the client's 5-tuple, its relay, credentials, lifetime,
    permissions, channels, traffic counters and token buckets.

    Mutable on purpose: the relay path updates counters and buckets in place, with no
    per-packet objects.
    """

    __slots__ = (
        "allocate_request",
        "allocate_response",
        "bytes_in",
        "bytes_out",
        "channel_by_peer",
        "channels",
        "expires",
        "key",
        "live",
        "packets_in",
        "packets_out",
        "peer_attributes",
        "permissions",
        "quota_key",
        "relay",
        "relay_version",
        "route",
        "stamp_in",
        "stamp_out",
        "started",
        "tokens_in",
        "tokens_out",
        "username",
    )

    def __init__(
        self,
        route: ClientRoute,
        username: str,
        quota_key: str,
        key: bytes,
        relay: Address,
        started: float,
        expires: float,
        burst: float,
    ) -> None:
        self.route = route
        self.username = username
        self.quota_key = quota_key
        self.key = key
        self.relay = relay
        self.relay_version = ipaddress.ip_address(relay[0]).version
        self.started = started
        self.expires = expires
        self.live = True
        self.permissions: dict[str, float] = {}  # peer IP -> expiry
        self.channels: dict[int, Channel] = {}
        self.channel_by_peer: dict[Address, Channel] = {}
        self.peer_attributes: dict[Address, bytes] = {}  # encoded XOR-PEER-ADDRESS (IPv4)
        self.bytes_in = self.bytes_out = self.packets_in = self.packets_out = 0
        self.tokens_in = self.tokens_out = burst
        self.stamp_in = self.stamp_out = started
        self.allocate_request = b""
        self.allocate_response = b""

    def take_in(self, size: int, now: float, rate: float) -> bool:
        """Token bucket client -> peers: ``rate`` bytes/s with one second of burst; False
        (and nothing taken) when ``size`` octets do not fit now."""
        tokens = self.tokens_in + (now - self.stamp_in) * rate
        self.stamp_in = now
        if tokens > rate:
            tokens = rate
        if tokens < size:
            self.tokens_in = tokens
            return False
        self.tokens_in = tokens - size
        return True

    def take_out(self, size: int, now: float, rate: float) -> bool:
        """Token bucket peers -> client, as ``take_in``."""
        tokens = self.tokens_out + (now - self.stamp_out) * rate
        self.stamp_out = now
        if tokens > rate:
            tokens = rate
        if tokens < size:
            self.tokens_out = tokens
            return False
        self.tokens_out = tokens - size
        return True

    def data_indication(self, peer: Address, data: bytes, tid: bytes) -> bytes | None:
        """A Data indication (RFC 8656 section 10.3): XOR-PEER-ADDRESS and DATA, no integrity;
        None when it would exceed STUN's 16-bit length. An IPv4 peer's XOR-PEER-ADDRESS does
        not depend on the transaction id, so it is encoded once per peer."""
        attribute = self.peer_attributes.get(peer)
        if attribute is None:
            value = encode_xor_address(peer[0], peer[1], tid)
            attribute = _ATTR_HEADER.pack(XOR_PEER_ADDRESS, len(value)) + value
            if ":" not in peer[0]:
                if len(self.peer_attributes) >= _PEER_ATTRIBUTE_CACHE:
                    self.peer_attributes.clear()
                self.peer_attributes[peer] = attribute
        size = len(data)
        body = len(attribute) + 4 + size + (-size & 3)
        if body > _MAX_STUN_BODY:
            return None
        header = _STUN_HEADER.pack(_DATA_INDICATION, body, MAGIC_COOKIE, tid)
        return b"".join((header, attribute, _ATTR_HEADER.pack(DATA, size), data, PADS[size & 3]))

    def usage(self, ended: float, reason: str) -> TurnUsage:
        """The usage record of this allocation ending at ``ended``."""
        return TurnUsage(
            username=self.username,
            relay=self.relay,
            client=self.route.client,
            transport=self.route.transport,
            started=self.started,
            ended=ended,
            bytes_in=self.bytes_in,
            bytes_out=self.bytes_out,
            packets_in=self.packets_in,
            packets_out=self.packets_out,
            reason=reason,
        )

    def active_channels(self) -> int:
        """Channels bound and not yet seen expiring by the timer."""
        return sum(1 for channel in self.channels.values() if channel.active)
