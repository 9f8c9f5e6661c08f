"""STUN messages (RFC 8489, wire-compatible with RFC 5389): the codec, attributes, integrity and
fingerprint, credentials' keys. ChannelData, TCP framing and RFC 7983 demultiplexing are in
gateway.nat.framing.

Invariants:
- Sans-I/O: bytes in, values and bytes out. No socket, no clock; the only randomness is
  ``new_transaction_id()``, which callers may bypass by passing their own ids.
- Every length is checked before it is read. Anything malformed raises exactly ``ValueError``
  (never ``struct.error``, ``IndexError``, ...), each cause with its own message. Adapters catch
  ``ValueError``, count the datagram and drop it (or answer 400 where RFC 8489 asks for it).
- ``Message`` and ``Attribute`` are immutable. ``bytes(Message.parse(data)) == data`` for every
  ``data`` that ``parse`` accepts: attribute order, duplicates, unknown attributes and the
  contents of padding octets are kept (RFC 5769's vectors pad with spaces), so integrity can be
  checked on a re-encoded message as well as on the received bytes.
- ``parse`` is strict on framing (RFC 8489 sections 5 and 14): two zero top bits, the magic
  cookie, a length that is a multiple of 4 and equals the bytes after the header, every
  attribute padded to 4 inside the message, FINGERPRINT last and correct, MESSAGE-INTEGRITY
  20 octets, MESSAGE-INTEGRITY-SHA256 16 to 32 octets in steps of 4. Attribute *values* are
  checked by the typed accessors, so an odd SOFTWARE never costs a whole message.
- Receivers ignore every attribute after MESSAGE-INTEGRITY except MESSAGE-INTEGRITY-SHA256 and
  FINGERPRINT, and every attribute after MESSAGE-INTEGRITY-SHA256 except FINGERPRINT (RFC 8489
  sections 14.5 and 14.6): ``Message.get`` and the typed getters see only what a receiver
  processes; ``Message.attributes`` holds everything that was on the wire.
- Credentials: ``long_term_key`` is MD5(username ":" realm ":" password) over the UTF-8 bytes
  of the strings as given. SASLprep (RFC 4013) / OpaqueString (RFC 8265) is NOT applied: it is
  the identity on printable ASCII, which is what the gateway's users and time-limited
  credentials are; callers with non-ASCII credentials pass them already prepared (RFC 5769
  section 2.4's password "The<U+00AD>M<U+00AA>tr<U+2168>" must be given as "TheMatrIX").
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import ipaddress
import secrets
import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

__all__ = [
    "ATTRIBUTE_NAMES",
    "CHANNEL_NUMBER",
    "DATA",
    "DONT_FRAGMENT",
    "ERROR_CODE",
    "EVEN_PORT",
    "FAMILY_IPV4",
    "FAMILY_IPV6",
    "FINGERPRINT",
    "HEADER_SIZE",
    "LIFETIME",
    "MAGIC_COOKIE",
    "MAPPED_ADDRESS",
    "MESSAGE_INTEGRITY",
    "MESSAGE_INTEGRITY_SHA256",
    "NONCE",
    "REALM",
    "REQUESTED_ADDRESS_FAMILY",
    "REQUESTED_TRANSPORT",
    "RESERVATION_TOKEN",
    "SOFTWARE",
    "TRANSPORT_TCP",
    "TRANSPORT_UDP",
    "UNKNOWN_ATTRIBUTES",
    "USERNAME",
    "XOR_MAPPED_ADDRESS",
    "XOR_PEER_ADDRESS",
    "XOR_RELAYED_ADDRESS",
    "Attribute",
    "Class",
    "ErrorCode",
    "Message",
    "Method",
    "check_fingerprint",
    "check_integrity",
    "check_integrity_sha256",
    "is_comprehension_required",
    "long_term_key",
    "long_term_key_sha256",
    "new_transaction_id",
    "short_term_key",
]

Buffer = bytes | bytearray | memoryview
Address = tuple[str, int]

HEADER_SIZE = 20
MAGIC_COOKIE = 0x2112A442
_COOKIE_BYTES = MAGIC_COOKIE.to_bytes(4, "big")
_FINGERPRINT_XOR = 0x5354554E  # "STUN", RFC 8489 section 14.7
_MAX_LENGTH = 0xFFFC  # the largest 16-bit length that is a multiple of 4

_HEADER = struct.Struct("!HHI12s")
_ATTR_HEADER = struct.Struct("!HH")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_U32_MAX = 0xFFFFFFFF


class Method(enum.IntEnum):
    """STUN methods (RFC 8489 section 18.2, RFC 8656 section 17, RFC 6062 section 6.1)."""

    BINDING = 0x001
    ALLOCATE = 0x003
    REFRESH = 0x004
    SEND = 0x006
    DATA = 0x007
    CREATE_PERMISSION = 0x008
    CHANNEL_BIND = 0x009
    CONNECT = 0x00A
    CONNECTION_BIND = 0x00B
    CONNECTION_ATTEMPT = 0x00C


class Class(enum.IntEnum):
    """The two class bits C1 C0 of the message type (RFC 8489 section 5)."""

    REQUEST = 0b00
    INDICATION = 0b01
    SUCCESS = 0b10
    ERROR = 0b11


# Attribute types. 0x0000-0x7FFF are comprehension-required, 0x8000-0xFFFF optional
# (RFC 8489 section 14 and 18.3; TURN's in RFC 8656 section 18; RFC 8445 for ICE's).
MAPPED_ADDRESS = 0x0001
USERNAME = 0x0006
MESSAGE_INTEGRITY = 0x0008
ERROR_CODE = 0x0009
UNKNOWN_ATTRIBUTES = 0x000A
CHANNEL_NUMBER = 0x000C
LIFETIME = 0x000D
XOR_PEER_ADDRESS = 0x0012
DATA = 0x0013
REALM = 0x0014
NONCE = 0x0015
XOR_RELAYED_ADDRESS = 0x0016
REQUESTED_ADDRESS_FAMILY = 0x0017
EVEN_PORT = 0x0018
REQUESTED_TRANSPORT = 0x0019
DONT_FRAGMENT = 0x001A
MESSAGE_INTEGRITY_SHA256 = 0x001C
PASSWORD_ALGORITHM = 0x001D
USERHASH = 0x001E
XOR_MAPPED_ADDRESS = 0x0020
RESERVATION_TOKEN = 0x0022
PRIORITY = 0x0024
USE_CANDIDATE = 0x0025
CONNECTION_ID = 0x002A
ADDITIONAL_ADDRESS_FAMILY = 0x8000
ADDRESS_ERROR_CODE = 0x8001
PASSWORD_ALGORITHMS = 0x8002
ALTERNATE_DOMAIN = 0x8003
ICMP = 0x8004
SOFTWARE = 0x8022
ALTERNATE_SERVER = 0x8023
FINGERPRINT = 0x8028
ICE_CONTROLLED = 0x8029
ICE_CONTROLLING = 0x802A

# Attribute type -> RFC name ("XOR-MAPPED-ADDRESS"), built from the constants just above.
ATTRIBUTE_NAMES: dict[int, str] = {
    value: name.replace("_", "-")
    for name, value in dict(globals()).items()
    if name.isupper()
    and isinstance(value, int)
    and not name.startswith("_")
    and name not in ("HEADER_SIZE", "MAGIC_COOKIE")
}

FAMILY_IPV4 = 0x01
FAMILY_IPV6 = 0x02
TRANSPORT_TCP = 6
TRANSPORT_UDP = 17

# RFC 8489 section 14: USERNAME fewer than 513 octets (RFC 5389; RFC 8489 says 509, we accept
# the older bound), REALM/NONCE/SOFTWARE/reason phrase fewer than 128 characters and at most
# 763 octets.
_TEXT_LIMITS: dict[int, tuple[int, int | None]] = {
    USERNAME: (512, None),
    REALM: (763, 127),
    NONCE: (763, 127),
    SOFTWARE: (763, 127),
}

REASONS: dict[int, str] = {
    300: "Try Alternate",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    420: "Unknown Attribute",
    437: "Allocation Mismatch",
    438: "Stale Nonce",
    440: "Address Family not Supported",
    441: "Wrong Credentials",
    442: "Unsupported Transport Protocol",
    443: "Peer Address Family Mismatch",
    486: "Allocation Quota Reached",
    487: "Role Conflict",
    500: "Server Error",
    508: "Insufficient Capacity",
}


def is_comprehension_required(attr_type: int) -> bool:
    """True for 0x0000-0x7FFF: an unknown one of these gets 420 (RFC 8489 section 14)."""
    return attr_type < 0x8000


def new_transaction_id() -> bytes:
    """96 random bits (RFC 8489 section 5)."""
    return secrets.token_bytes(12)


def short_term_key(password: str) -> bytes:
    """The short-term credential key: the password itself, UTF-8 (RFC 8489 section 9.1.1)."""
    return password.encode("utf-8")


def long_term_key(username: str, realm: str, password: str) -> bytes:
    """MD5(username ":" realm ":" password), the 16-octet long-term key (RFC 8489 section
    9.2.2, the MD5 password algorithm of RFC 5389).

    The strings are used as given (no SASLprep, see the module docstring).
    """
    text = f"{username}:{realm}:{password}".encode()
    return hashlib.md5(text, usedforsecurity=False).digest()


def long_term_key_sha256(username: str, realm: str, password: str) -> bytes:
    """SHA-256(username ":" realm ":" password), the key of PASSWORD-ALGORITHM SHA-256
    (RFC 8489 section 18.5.1.2). Same string handling as ``long_term_key``."""
    return hashlib.sha256(f"{username}:{realm}:{password}".encode()).digest()


# --- message type ---------------------------------------------------------------------------


def _message_type(method: int, cls: int) -> int:
    """Interleave M11..M0 and C1 C0 (RFC 8489 section 5, figure 3)."""
    return (
        (method & 0x000F)
        | ((method & 0x0070) << 1)
        | ((method & 0x0F80) << 2)
        | ((cls & 0b01) << 4)
        | ((cls & 0b10) << 7)
    )


def _split_type(message_type: int) -> tuple[int, int]:
    method = (message_type & 0x000F) | ((message_type & 0x00E0) >> 1)
    method |= (message_type & 0x3E00) >> 2
    return method, ((message_type >> 4) & 0b01) | ((message_type >> 7) & 0b10)


# --- attribute value codecs -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ErrorCode:
    """ERROR-CODE (RFC 8489 section 14.8): ``code`` 300-699 and its reason phrase."""

    code: int
    reason: str

    @property
    def error_class(self) -> int:
        """The hundreds digit (3-6)."""
        return self.code // 100

    @property
    def number(self) -> int:
        """The code modulo 100 (0-99)."""
        return self.code % 100


def _check_text(attr_type: int, text: str) -> bytes:
    max_octets, max_chars = _TEXT_LIMITS.get(attr_type, (763, 127))
    raw = text.encode("utf-8")
    name = ATTRIBUTE_NAMES.get(attr_type, f"0x{attr_type:04x}")
    if len(raw) > max_octets:
        raise ValueError(f"STUN {name} is {len(raw)} octets, more than {max_octets}")
    if max_chars is not None and len(text) > max_chars:
        raise ValueError(f"STUN {name} is {len(text)} characters, more than {max_chars}")
    return raw


def decode_text(attr_type: int, value: bytes) -> str:
    """USERNAME, REALM, NONCE, SOFTWARE: UTF-8 within the RFC 8489 section 14 bounds."""
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        name = ATTRIBUTE_NAMES.get(attr_type, f"0x{attr_type:04x}")
        raise ValueError(f"STUN {name} is not valid UTF-8") from None
    _check_text(attr_type, text)
    return text


def encode_address(host: str, port: int) -> bytes:
    """MAPPED-ADDRESS value (RFC 8489 section 14.1)."""
    ip = _ip(host)
    _check_port(port)
    family = FAMILY_IPV4 if ip.version == 4 else FAMILY_IPV6
    return struct.pack("!BBH", 0, family, port) + ip.packed


def decode_address(value: bytes) -> Address:
    """MAPPED-ADDRESS value to ``(host, port)``; the first octet is ignored."""
    if len(value) < 4:
        raise ValueError("STUN address attribute is shorter than 4 octets")
    family = value[1]
    port = _U16.unpack_from(value, 2)[0]
    packed = value[4:]
    if family == FAMILY_IPV4 and len(packed) == 4:
        return str(ipaddress.IPv4Address(packed)), port
    if family == FAMILY_IPV6 and len(packed) == 16:
        return str(ipaddress.IPv6Address(packed)), port
    raise ValueError(f"STUN address attribute has family {family} with {len(packed)} octets")


def _xor_mask(transaction_id: bytes) -> bytes:
    return _COOKIE_BYTES + transaction_id


def encode_xor_address(host: str, port: int, transaction_id: bytes) -> bytes:
    """XOR-MAPPED-ADDRESS / XOR-PEER-ADDRESS / XOR-RELAYED-ADDRESS value (RFC 8489 section
    14.2): port XOR the cookie's top 16 bits, address XOR the cookie (IPv4) or the cookie
    followed by the transaction id (IPv6)."""
    plain = encode_address(host, port)
    mask = _xor_mask(transaction_id)
    body = bytes(a ^ b for a, b in zip(plain[4:], mask))
    return plain[:2] + _U16.pack(port ^ (MAGIC_COOKIE >> 16)) + body


def decode_xor_address(value: bytes, transaction_id: bytes) -> Address:
    """The inverse of ``encode_xor_address``."""
    _, xport = decode_address(value)  # validates family and length
    mask = _xor_mask(transaction_id)
    packed = bytes(a ^ b for a, b in zip(value[4:], mask))
    ip = ipaddress.IPv4Address(packed) if len(packed) == 4 else ipaddress.IPv6Address(packed)
    return str(ip), xport ^ (MAGIC_COOKIE >> 16)


def encode_error_code(code: int, reason: str | None = None) -> bytes:
    """ERROR-CODE value: 21 zero bits, class (3 bits), number (8 bits), reason phrase."""
    if not 300 <= code <= 699:
        raise ValueError(f"STUN error code {code} is not in 300-699")
    phrase = REASONS.get(code, "Error") if reason is None else reason
    return struct.pack("!HBB", 0, code // 100, code % 100) + _check_text(ERROR_CODE, phrase)


def decode_error_code(value: bytes) -> ErrorCode:
    """ERROR-CODE value to ``ErrorCode``; class 3-6 and number 0-99 or ValueError."""
    if len(value) < 4:
        raise ValueError("STUN ERROR-CODE is shorter than 4 octets")
    error_class = value[2] & 0x07
    number = value[3]
    if not 3 <= error_class <= 6 or number > 99:
        raise ValueError(f"STUN ERROR-CODE has class {error_class} number {number}")
    return ErrorCode(error_class * 100 + number, decode_text(ERROR_CODE, value[4:]))


def decode_unknown_attributes(value: bytes) -> tuple[int, ...]:
    """UNKNOWN-ATTRIBUTES value: a list of 16-bit types (RFC 8489 section 14.9)."""
    if len(value) % 2:
        raise ValueError("STUN UNKNOWN-ATTRIBUTES has an odd length")
    return struct.unpack(f"!{len(value) // 2}H", value)


def _u32(name: str, value: bytes) -> int:
    if len(value) != 4:
        raise ValueError(f"STUN {name} is {len(value)} octets, not 4")
    result: int = _U32.unpack(value)[0]
    return result


def _first_octet(name: str, value: bytes) -> int:
    if len(value) != 4:
        raise ValueError(f"STUN {name} is {len(value)} octets, not 4")
    return value[0]


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"not an IP address: {host!r}") from None


def _check_port(port: int) -> None:
    _check_range("port", port, 0xFFFF)


def _check_range(name: str, value: int, maximum: int) -> int:
    if not 0 <= value <= maximum:
        raise ValueError(f"{name} {value} is not in 0-{maximum}")
    return value


# --- attributes and messages ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Attribute:
    """One TLV attribute. ``padding`` keeps the received padding octets (RFC 8489 section 14:
    their contents are ignored) so a parsed message re-encodes byte for byte; ``None`` pads
    with zeros. It takes no part in equality."""

    type: int
    value: bytes
    padding: bytes | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not 0 <= self.type <= 0xFFFF:
            raise ValueError(f"STUN attribute type {self.type} is not 16 bits")
        if len(self.value) > _MAX_LENGTH:
            raise ValueError(f"STUN attribute value of {len(self.value)} octets is too long")
        if self.padding is not None and len(self.padding) != -len(self.value) % 4:
            raise ValueError("STUN attribute padding does not pad its value to 4 octets")

    def encode(self) -> bytes:
        """Type, length, value and padding to a multiple of 4."""
        pad = self.padding if self.padding is not None else bytes(-len(self.value) % 4)
        return _ATTR_HEADER.pack(self.type, len(self.value)) + self.value + pad


def _walk(data: bytes) -> Iterator[tuple[int, int, int]]:
    """Validate the header and yield ``(type, offset, length)`` for each attribute, where
    ``offset`` is the attribute's first header octet. Raises ValueError on bad framing."""
    if len(data) < HEADER_SIZE:
        raise ValueError(f"STUN message is {len(data)} octets, shorter than its header")
    message_type, length, cookie, _ = _HEADER.unpack_from(data)
    if message_type & 0xC000:
        raise ValueError("STUN message type has a top bit set")
    if cookie != MAGIC_COOKIE:
        raise ValueError("STUN message has a bad magic cookie")
    if length % 4:
        raise ValueError(f"STUN message length {length} is not a multiple of 4")
    if length != len(data) - HEADER_SIZE:
        raise ValueError(
            f"STUN message length {length} does not match the {len(data) - HEADER_SIZE} "
            "octets after the header"
        )
    offset = HEADER_SIZE
    end = len(data)
    seen_fingerprint = False
    # ``offset`` and ``end`` stay multiples of 4, so an attribute header always fits and so
    # does the padding of a value that fits.
    while offset < end:
        attr_type, attr_length = _ATTR_HEADER.unpack_from(data, offset)
        if seen_fingerprint:
            raise ValueError("STUN attribute follows FINGERPRINT")
        value_end = offset + 4 + attr_length
        if value_end > end:
            raise ValueError(
                f"STUN attribute 0x{attr_type:04x} length {attr_length} runs past the end"
            )
        _check_fixed_length(attr_type, attr_length)
        seen_fingerprint = attr_type == FINGERPRINT
        yield attr_type, offset, attr_length
        offset = value_end + (-attr_length % 4)


def _check_fixed_length(attr_type: int, length: int) -> None:
    if attr_type == MESSAGE_INTEGRITY and length != 20:
        raise ValueError(f"STUN MESSAGE-INTEGRITY is {length} octets, not 20")
    if attr_type == MESSAGE_INTEGRITY_SHA256 and (length % 4 or not 16 <= length <= 32):
        raise ValueError(f"STUN MESSAGE-INTEGRITY-SHA256 is {length} octets")
    if attr_type == FINGERPRINT and length != 4:
        raise ValueError(f"STUN FINGERPRINT is {length} octets, not 4")


def _fingerprint(data: bytes) -> bytes:
    return _U32.pack(zlib.crc32(data) ^ _FINGERPRINT_XOR)


def _with_length(data: bytes, end: int) -> bytes:
    """``data`` with its header length field set to ``end - HEADER_SIZE``."""
    return data[:2] + _U16.pack(end - HEADER_SIZE) + data[4:]


def _effective(attr_types: Iterable[int]) -> Iterator[bool]:
    """For each attribute type in order, whether a receiver processes it (RFC 8489 sections
    14.5 and 14.6)."""
    stage = 0  # 0: before MESSAGE-INTEGRITY, 1: after it, 2: after MESSAGE-INTEGRITY-SHA256
    for attr_type in attr_types:
        if stage == 0:
            yield True
        elif stage == 1:
            yield attr_type in (MESSAGE_INTEGRITY_SHA256, FINGERPRINT)
        else:
            yield attr_type == FINGERPRINT
        if attr_type == MESSAGE_INTEGRITY and stage == 0:
            stage = 1
        elif attr_type == MESSAGE_INTEGRITY_SHA256 and stage < 2:
            stage = 2


@dataclass(frozen=True, slots=True)
class Message:
    """A STUN message (RFC 8489 section 5). ``attributes`` keeps wire order and duplicates.

    Build with the constructor and the ``with_*`` methods (each returns a new message); finish
    with ``with_integrity`` and/or ``with_fingerprint``; send ``bytes(message)``.
    """

    method: int
    cls: int
    transaction_id: bytes
    attributes: tuple[Attribute, ...] = ()

    def __post_init__(self) -> None:
        if not 0 <= self.method <= 0xFFF:
            raise ValueError(f"STUN method {self.method} is not 12 bits")
        if not 0 <= self.cls <= 3:
            raise ValueError(f"STUN class {self.cls} is not 2 bits")
        if len(self.transaction_id) != 12:
            raise ValueError("STUN transaction id is not 12 octets")
        if not isinstance(self.attributes, tuple):
            object.__setattr__(self, "attributes", tuple(self.attributes))

    @classmethod
    def parse(cls, data: Buffer) -> Message:
        """Parse one STUN message (a whole datagram or one framed stream message).

        Raises ``ValueError`` for any framing error listed in the module docstring and for a
        FINGERPRINT that does not match.
        """
        raw = bytes(data)
        attributes = []
        fingerprint_offset = -1
        for attr_type, offset, length in _walk(raw):
            value_end = offset + 4 + length
            padding = raw[value_end : value_end + (-length % 4)]
            attributes.append(Attribute(attr_type, raw[offset + 4 : value_end], padding))
            if attr_type == FINGERPRINT:
                fingerprint_offset = offset
        if fingerprint_offset >= 0 and _fingerprint(raw[:fingerprint_offset]) != raw[-4:]:
            raise ValueError("STUN FINGERPRINT does not match")
        message_type, _, _, transaction_id = _HEADER.unpack_from(raw)
        method, klass = _split_type(message_type)
        return cls(method, klass, transaction_id, tuple(attributes))

    def encode(self) -> bytes:
        """The wire form; raises ValueError if the attributes exceed 65532 octets."""
        body = b"".join(attribute.encode() for attribute in self.attributes)
        if len(body) > _MAX_LENGTH:
            raise ValueError(f"STUN message body of {len(body)} octets is too long")
        message_type = _message_type(self.method, self.cls)
        return _HEADER.pack(message_type, len(body), MAGIC_COOKIE, self.transaction_id) + body

    def __bytes__(self) -> bytes:
        return self.encode()

    # --- generic access ---------------------------------------------------------------------

    def effective_attributes(self) -> tuple[Attribute, ...]:
        """The attributes a receiver processes: all of them up to MESSAGE-INTEGRITY, then only
        MESSAGE-INTEGRITY-SHA256 and FINGERPRINT (RFC 8489 sections 14.5, 14.6)."""
        keep = _effective(attribute.type for attribute in self.attributes)
        return tuple(attribute for attribute, kept in zip(self.attributes, keep) if kept)

    def get(self, attr_type: int) -> bytes | None:
        """The value of the first processed attribute of this type (RFC 8489 section 14:
        only the first occurrence counts), or None."""
        for attribute in self.effective_attributes():
            if attribute.type == attr_type:
                return attribute.value
        return None

    def get_all(self, attr_type: int) -> list[bytes]:
        """Every processed value of this type, in order (XOR-PEER-ADDRESS may repeat)."""
        return [a.value for a in self.effective_attributes() if a.type == attr_type]

    def with_attribute(self, attr_type: int, value: bytes) -> Message:
        """A copy with one attribute appended. Raises ValueError where the appended attribute
        would be ignored or misplaced: anything after FINGERPRINT, anything but
        MESSAGE-INTEGRITY-SHA256 or FINGERPRINT after MESSAGE-INTEGRITY."""
        types = [attribute.type for attribute in self.attributes]
        if FINGERPRINT in types:
            raise ValueError("STUN message already ends with FINGERPRINT")
        if MESSAGE_INTEGRITY_SHA256 in types and attr_type != FINGERPRINT:
            raise ValueError("only FINGERPRINT may follow MESSAGE-INTEGRITY-SHA256")
        if MESSAGE_INTEGRITY in types and attr_type not in (
            MESSAGE_INTEGRITY_SHA256,
            FINGERPRINT,
        ):
            raise ValueError("attributes after MESSAGE-INTEGRITY would be ignored")
        return Message(
            self.method,
            self.cls,
            self.transaction_id,
            (*self.attributes, Attribute(attr_type, bytes(value))),
        )

    # --- typed getters ----------------------------------------------------------------------

    def xor_address(self, attr_type: int = XOR_MAPPED_ADDRESS) -> Address | None:
        """XOR-MAPPED-ADDRESS (default), XOR-PEER-ADDRESS or XOR-RELAYED-ADDRESS."""
        value = self.get(attr_type)
        return None if value is None else decode_xor_address(value, self.transaction_id)

    def xor_addresses(self, attr_type: int) -> list[Address]:
        """Every processed XOR address of this type (CreatePermission may carry several)."""
        return [decode_xor_address(v, self.transaction_id) for v in self.get_all(attr_type)]

    def mapped_address(self) -> Address | None:
        """MAPPED-ADDRESS (RFC 8489 section 14.1)."""
        value = self.get(MAPPED_ADDRESS)
        return None if value is None else decode_address(value)

    def text(self, attr_type: int) -> str | None:
        """USERNAME, REALM, NONCE or SOFTWARE as text."""
        value = self.get(attr_type)
        return None if value is None else decode_text(attr_type, value)

    def username(self) -> str | None:
        """USERNAME (RFC 8489 section 14.3)."""
        return self.text(USERNAME)

    def realm(self) -> str | None:
        """REALM (RFC 8489 section 14.9)."""
        return self.text(REALM)

    def nonce(self) -> str | None:
        """NONCE (RFC 8489 section 14.10)."""
        return self.text(NONCE)

    def software(self) -> str | None:
        """SOFTWARE (RFC 8489 section 14.14)."""
        return self.text(SOFTWARE)

    def error_code(self) -> ErrorCode | None:
        """ERROR-CODE (RFC 8489 section 14.8)."""
        value = self.get(ERROR_CODE)
        return None if value is None else decode_error_code(value)

    def unknown_attributes(self) -> tuple[int, ...] | None:
        """UNKNOWN-ATTRIBUTES (RFC 8489 section 14.13)."""
        value = self.get(UNKNOWN_ATTRIBUTES)
        return None if value is None else decode_unknown_attributes(value)

    def lifetime(self) -> int | None:
        """LIFETIME in seconds (RFC 8656 section 18.4)."""
        value = self.get(LIFETIME)
        return None if value is None else _u32("LIFETIME", value)

    def requested_transport(self) -> int | None:
        """REQUESTED-TRANSPORT protocol number, 17 for UDP (RFC 8656 section 18.11)."""
        value = self.get(REQUESTED_TRANSPORT)
        return None if value is None else _first_octet("REQUESTED-TRANSPORT", value)

    def requested_address_family(self) -> int | None:
        """REQUESTED-ADDRESS-FAMILY: 1 IPv4, 2 IPv6 (RFC 8656 section 18.8)."""
        value = self.get(REQUESTED_ADDRESS_FAMILY)
        return None if value is None else _first_octet("REQUESTED-ADDRESS-FAMILY", value)

    def data(self) -> bytes | None:
        """DATA (RFC 8656 section 18.6)."""
        return self.get(DATA)

    def channel_number(self) -> int | None:
        """CHANNEL-NUMBER (RFC 8656 section 18.2); the range is the server's to check."""
        value = self.get(CHANNEL_NUMBER)
        return None if value is None else _u32("CHANNEL-NUMBER", value) >> 16

    def even_port(self) -> bool | None:
        """EVEN-PORT: None when absent, else its R bit (RFC 8656 section 18.9)."""
        value = self.get(EVEN_PORT)
        if value is None:
            return None
        if len(value) != 1:
            raise ValueError(f"STUN EVEN-PORT is {len(value)} octets, not 1")
        return bool(value[0] & 0x80)

    def reservation_token(self) -> bytes | None:
        """RESERVATION-TOKEN, 8 octets (RFC 8656 section 18.13)."""
        value = self.get(RESERVATION_TOKEN)
        if value is not None and len(value) != 8:
            raise ValueError(f"STUN RESERVATION-TOKEN is {len(value)} octets, not 8")
        return value

    def dont_fragment(self) -> bool:
        """Whether DONT-FRAGMENT is present (RFC 8656 section 18.10)."""
        return self.get(DONT_FRAGMENT) is not None

    # --- typed setters ----------------------------------------------------------------------

    def with_xor_address(self, attr_type: int, host: str, port: int) -> Message:
        """Append an XOR address attribute (XOR-MAPPED/PEER/RELAYED-ADDRESS)."""
        return self.with_attribute(attr_type, encode_xor_address(host, port, self.transaction_id))

    def with_mapped_address(self, host: str, port: int) -> Message:
        """Append MAPPED-ADDRESS."""
        return self.with_attribute(MAPPED_ADDRESS, encode_address(host, port))

    def with_text(self, attr_type: int, text: str) -> Message:
        """Append USERNAME, REALM, NONCE or SOFTWARE, within its RFC 8489 bounds."""
        return self.with_attribute(attr_type, _check_text(attr_type, text))

    def with_username(self, username: str) -> Message:
        """Append USERNAME."""
        return self.with_text(USERNAME, username)

    def with_realm(self, realm: str) -> Message:
        """Append REALM."""
        return self.with_text(REALM, realm)

    def with_nonce(self, nonce: str) -> Message:
        """Append NONCE."""
        return self.with_text(NONCE, nonce)

    def with_software(self, software: str) -> Message:
        """Append SOFTWARE."""
        return self.with_text(SOFTWARE, software)

    def with_error_code(self, code: int, reason: str | None = None) -> Message:
        """Append ERROR-CODE; the reason defaults to the RFC's phrase for the code."""
        return self.with_attribute(ERROR_CODE, encode_error_code(code, reason))

    def with_unknown_attributes(self, attr_types: Iterable[int]) -> Message:
        """Append UNKNOWN-ATTRIBUTES."""
        types = tuple(_check_range("attribute type", t, 0xFFFF) for t in attr_types)
        return self.with_attribute(UNKNOWN_ATTRIBUTES, struct.pack(f"!{len(types)}H", *types))

    def with_lifetime(self, seconds: int) -> Message:
        """Append LIFETIME."""
        return self.with_attribute(LIFETIME, _U32.pack(_check_range("LIFETIME", seconds, _U32_MAX)))

    def with_requested_transport(self, protocol: int = TRANSPORT_UDP) -> Message:
        """Append REQUESTED-TRANSPORT."""
        _check_range("protocol", protocol, 0xFF)
        return self.with_attribute(REQUESTED_TRANSPORT, bytes((protocol, 0, 0, 0)))

    def with_requested_address_family(self, family: int) -> Message:
        """Append REQUESTED-ADDRESS-FAMILY (FAMILY_IPV4 or FAMILY_IPV6)."""
        _check_range("address family", family, 0xFF)
        return self.with_attribute(REQUESTED_ADDRESS_FAMILY, bytes((family, 0, 0, 0)))

    def with_data(self, data: bytes) -> Message:
        """Append DATA."""
        return self.with_attribute(DATA, data)

    def with_channel_number(self, channel: int) -> Message:
        """Append CHANNEL-NUMBER (16-bit number, 16 RFFU bits)."""
        _check_range("channel number", channel, 0xFFFF)
        return self.with_attribute(CHANNEL_NUMBER, struct.pack("!HH", channel, 0))

    def with_even_port(self, reserve_next: bool) -> Message:
        """Append EVEN-PORT with the R bit set when the next port is to be reserved."""
        return self.with_attribute(EVEN_PORT, b"\x80" if reserve_next else b"\x00")

    def with_reservation_token(self, token: bytes) -> Message:
        """Append RESERVATION-TOKEN (8 octets)."""
        if len(token) != 8:
            raise ValueError("STUN RESERVATION-TOKEN must be 8 octets")
        return self.with_attribute(RESERVATION_TOKEN, token)

    def with_dont_fragment(self) -> Message:
        """Append DONT-FRAGMENT."""
        return self.with_attribute(DONT_FRAGMENT, b"")

    def with_integrity(self, key: bytes) -> Message:
        """Append MESSAGE-INTEGRITY: HMAC-SHA1 over the message so far, its length field
        counting the MESSAGE-INTEGRITY attribute (RFC 8489 section 14.5)."""
        encoded = self.encode()
        digest = hmac.new(key, _with_length(encoded, len(encoded) + 24), "sha1").digest()
        return self.with_attribute(MESSAGE_INTEGRITY, digest)

    def with_integrity_sha256(self, key: bytes, length: int = 32) -> Message:
        """Append MESSAGE-INTEGRITY-SHA256, truncated to ``length`` (16-32, multiple of 4)
        octets (RFC 8489 section 14.6)."""
        _check_fixed_length(MESSAGE_INTEGRITY_SHA256, length)
        encoded = self.encode()
        adjusted = _with_length(encoded, len(encoded) + 4 + length)
        digest = hmac.new(key, adjusted, "sha256").digest()[:length]
        return self.with_attribute(MESSAGE_INTEGRITY_SHA256, digest)

    def with_fingerprint(self) -> Message:
        """Append FINGERPRINT: CRC-32 XOR 0x5354554e over the message so far, its length field
        counting the FINGERPRINT attribute (RFC 8489 section 14.7)."""
        encoded = self.encode()
        crc = _fingerprint(_with_length(encoded, len(encoded) + 8))
        return self.with_attribute(FINGERPRINT, crc)


# --- checks on received bytes -----------------------------------------------------------------


def _find_effective(data: bytes, wanted: int) -> tuple[int, int] | None:
    """``(offset, length)`` of the first processed attribute of type ``wanted``."""
    walked = list(_walk(data))
    for (attr_type, offset, length), kept in zip(walked, _effective(t for t, _, _ in walked)):
        if kept and attr_type == wanted:
            return offset, length
    return None


def check_integrity(raw: Buffer, key: bytes) -> bool:
    """Whether the received message's MESSAGE-INTEGRITY matches ``key`` (RFC 8489 section
    14.5). The HMAC-SHA1 covers the octets before the attribute, with the header length
    field set to end at the attribute, so attributes after it (FINGERPRINT) do not count.

    False when there is no MESSAGE-INTEGRITY; ValueError when the framing is bad.
    """
    data = bytes(raw)
    found = _find_effective(data, MESSAGE_INTEGRITY)
    if found is None:
        return False
    offset, length = found
    covered = _with_length(data[:offset], offset + 4 + length)
    expected = hmac.new(key, covered, "sha1").digest()
    return hmac.compare_digest(expected, data[offset + 4 : offset + 4 + length])


def check_integrity_sha256(raw: Buffer, key: bytes) -> bool:
    """As ``check_integrity`` for MESSAGE-INTEGRITY-SHA256 (RFC 8489 section 14.6); a
    truncated value is compared with the same prefix of the HMAC-SHA256."""
    data = bytes(raw)
    found = _find_effective(data, MESSAGE_INTEGRITY_SHA256)
    if found is None:
        return False
    offset, length = found
    covered = _with_length(data[:offset], offset + 4 + length)
    expected = hmac.new(key, covered, "sha256").digest()[:length]
    return hmac.compare_digest(expected, data[offset + 4 : offset + 4 + length])


def check_fingerprint(raw: Buffer) -> bool:
    """Whether the message ends with a FINGERPRINT that matches (RFC 8489 section 14.7).
    False when there is none; ValueError when the framing is bad."""
    data = bytes(raw)
    walked = list(_walk(data))
    if not walked or walked[-1][0] != FINGERPRINT:
        return False
    return hmac.compare_digest(_fingerprint(data[: walked[-1][1]]), data[-4:])
