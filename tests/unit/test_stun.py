"""gateway.nat.stun: the STUN codec (RFC 8489), MESSAGE-INTEGRITY and FINGERPRINT, the typed
attribute helpers, TURN ChannelData (RFC 8656 section 12), the TCP deframer and RFC 7983
demultiplexing.

The RFC 5769 vectors are loaded from tests/vectors/stun/ (copied from the shared set, see its
README.md), never retyped. Malformed input must raise exactly ValueError.
"""

from __future__ import annotations

import ipaddress
import random
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.nat import stun
from gateway.nat.framing import (
    MAX_STREAM_FRAME,
    ChannelData,
    PacketKind,
    StreamDeframer,
    demultiplex,
)
from gateway.nat.stun import (
    Attribute,
    Class,
    Message,
    Method,
    check_fingerprint,
    check_integrity,
    check_integrity_sha256,
    long_term_key,
    short_term_key,
)

VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "stun"

# RFC 5769 section 2: the short-term password of 2.1-2.3.
SHORT_TERM_PASSWORD = "VOkJxbRl1RmTxUk/WvJxBt"
# RFC 5769 section 2.4: the password after SASLprep ("The\u00adM\u00aatr\u2168" as given).
LONG_TERM_PASSWORD = "TheMatrIX"
LONG_TERM_PASSWORD_UNPREPPED = "The\u00adM\u00aatr\u2168"
TID_2_1 = bytes.fromhex("b7e7a701bc34d686fa87dfae")
TID_2_4 = bytes.fromhex("78ad3433c6ad72c029da412e")

NAMES = {
    "2.1": "rfc5769_2.1_sample_request",
    "2.2": "rfc5769_2.2_ipv4_response",
    "2.3": "rfc5769_2.3_ipv6_response",
    "2.4": "rfc5769_2.4_long_term_request",
}


def vector(section: str) -> bytes:
    return (VECTORS / f"{NAMES[section]}.bin").read_bytes()


def key_for(section: str) -> bytes:
    if section == "2.4":
        message = Message.parse(vector("2.4"))
        username, realm = message.username(), message.realm()
        assert username is not None and realm is not None
        return long_term_key(username, realm, LONG_TERM_PASSWORD)
    return short_term_key(SHORT_TERM_PASSWORD)


ALL = sorted(NAMES)
WITH_FINGERPRINT = ["2.1", "2.2", "2.3"]


# --- RFC 5769 vectors ---------------------------------------------------------------------------


@pytest.mark.parametrize("section", ALL)
def test_vector_hex_and_bin_agree(section: str) -> None:
    text = (VECTORS / f"{NAMES[section]}.hex").read_text()
    assert bytes.fromhex(text) == vector(section)


@pytest.mark.parametrize("section", ALL)
def test_vector_parses_and_reencodes_byte_for_byte(section: str) -> None:
    data = vector(section)
    message = Message.parse(data)
    assert bytes(message) == data
    assert message.encode() == data
    assert message.method == Method.BINDING
    assert message.transaction_id == (TID_2_4 if section == "2.4" else TID_2_1)


@pytest.mark.parametrize("section", ALL)
def test_vector_integrity(section: str) -> None:
    """RFC 5769 sections 2.1-2.4: MESSAGE-INTEGRITY verifies with the stated credentials."""
    data = vector(section)
    assert check_integrity(data, key_for(section))
    assert check_integrity(bytes(Message.parse(data)), key_for(section))
    assert not check_integrity(data, b"wrong password")


@pytest.mark.parametrize("section", ALL)
def test_vector_fingerprint(section: str) -> None:
    assert check_fingerprint(vector(section)) is (section in WITH_FINGERPRINT)


@pytest.mark.parametrize("section", ALL)
def test_with_integrity_and_fingerprint_recompute_the_vector(section: str) -> None:
    """Strip MESSAGE-INTEGRITY and FINGERPRINT and add them again: the RFC's bytes come back,
    which pins the length adjustment of RFC 8489 sections 14.5 and 14.7."""
    data = vector(section)
    message = Message.parse(data)
    kept = tuple(
        a for a in message.attributes if a.type not in (stun.MESSAGE_INTEGRITY, stun.FINGERPRINT)
    )
    rebuilt = Message(message.method, message.cls, message.transaction_id, kept)
    rebuilt = rebuilt.with_integrity(key_for(section))
    if section in WITH_FINGERPRINT:
        rebuilt = rebuilt.with_fingerprint()
    assert bytes(rebuilt) == data


def test_vector_2_1_fields() -> None:
    message = Message.parse(vector("2.1"))
    assert message.cls == Class.REQUEST
    assert message.software() == "STUN test client"
    assert message.username() == "evtj:h6vY"
    assert message.get(stun.PRIORITY) == bytes.fromhex("6e0001ff")
    assert message.get(stun.ICE_CONTROLLED) == bytes.fromhex("932ff9b151263b36")
    # The USERNAME padding is three spaces, kept as received (RFC 5769 section 2.1).
    username = next(a for a in message.attributes if a.type == stun.USERNAME)
    assert username.padding == b"   "
    assert username == Attribute(stun.USERNAME, b"evtj:h6vY")


def test_vector_2_2_xor_mapped_ipv4() -> None:
    message = Message.parse(vector("2.2"))
    assert message.cls == Class.SUCCESS
    assert message.software() == "test vector"
    assert message.xor_address() == ("192.0.2.1", 32853)
    assert message.get(stun.XOR_MAPPED_ADDRESS) == stun.encode_xor_address(
        "192.0.2.1", 32853, TID_2_1
    )


def test_vector_2_3_xor_mapped_ipv6() -> None:
    message = Message.parse(vector("2.3"))
    address = ("2001:db8:1234:5678:11:2233:4455:6677", 32853)
    assert message.xor_address(stun.XOR_MAPPED_ADDRESS) == address
    assert message.get(stun.XOR_MAPPED_ADDRESS) == stun.encode_xor_address(*address, TID_2_1)


def test_vector_2_4_long_term_credentials() -> None:
    """RFC 5769 section 2.4: the key is MD5(username ":" realm ":" SASLprep(password))."""
    message = Message.parse(vector("2.4"))
    assert message.username() == "\u30de\u30c8\u30ea\u30c3\u30af\u30b9"
    assert message.realm() == "example.org"
    assert message.nonce() == "f//499k954d6OL34oL9FSTvy64sA"
    assert key_for("2.4").hex() == "e8ca7ad59d5eb0518e312911d2dab2a9"
    # No SASLprep inside: the password as the RFC prints it does not verify.
    username, realm = message.username(), message.realm()
    assert username is not None and realm is not None
    unprepped = long_term_key(username, realm, LONG_TERM_PASSWORD_UNPREPPED)
    assert not check_integrity(vector("2.4"), unprepped)


@pytest.mark.parametrize("section", WITH_FINGERPRINT)
def test_flipped_byte_before_integrity_fails_integrity(section: str) -> None:
    data = bytearray(vector(section))
    data[HEADER_END] ^= 0x01  # a SOFTWARE octet, before MESSAGE-INTEGRITY
    assert not check_integrity(bytes(data), key_for(section))
    assert not check_fingerprint(bytes(data))
    with pytest.raises(ValueError, match="FINGERPRINT does not match"):
        Message.parse(bytes(data))


HEADER_END = 24  # first value octet of the first attribute


@pytest.mark.parametrize("section", WITH_FINGERPRINT)
def test_flipped_byte_in_fingerprint_keeps_integrity(section: str) -> None:
    data = bytearray(vector(section))
    data[-1] ^= 0x01
    assert check_integrity(bytes(data), key_for(section))
    assert not check_fingerprint(bytes(data))
    with pytest.raises(ValueError, match="FINGERPRINT does not match"):
        Message.parse(bytes(data))


def test_attributes_after_integrity_are_ignored() -> None:
    """RFC 8489 section 14.5: after MESSAGE-INTEGRITY only MESSAGE-INTEGRITY-SHA256 and
    FINGERPRINT count; MESSAGE-INTEGRITY still verifies with more attributes behind it."""
    message = Message.parse(vector("2.2"))
    before_fp = message.attributes[:-1]
    extra = (*before_fp, Attribute(stun.SOFTWARE, b"later"), Attribute(stun.LIFETIME, bytes(4)))
    tampered = Message(message.method, message.cls, message.transaction_id, extra)
    tampered = tampered.with_fingerprint()
    data = bytes(tampered)
    assert Message.parse(data) == tampered
    assert check_integrity(data, key_for("2.2"))
    assert check_fingerprint(data)
    assert tampered.software() == "test vector"
    assert tampered.lifetime() is None
    assert len(tampered.attributes) == 6
    assert [a.type for a in tampered.effective_attributes()] == [
        stun.SOFTWARE,
        stun.XOR_MAPPED_ADDRESS,
        stun.MESSAGE_INTEGRITY,
        stun.FINGERPRINT,
    ]


def test_first_occurrence_wins() -> None:
    message = Message(Method.BINDING, Class.REQUEST, TID_2_1).with_username("a")
    message = message.with_username("b")
    assert message.username() == "a"
    assert message.get_all(stun.USERNAME) == [b"a", b"b"]


# --- message integrity with SHA-256 -----------------------------------------------------------


@pytest.mark.parametrize("length", [16, 20, 24, 28, 32])
def test_integrity_sha256(length: int) -> None:
    key = long_term_key("user", "realm", "pass")
    base = Message(Method.ALLOCATE, Class.REQUEST, TID_2_4).with_username("user")
    message = base.with_integrity_sha256(key, length).with_fingerprint()
    data = bytes(message)
    assert check_integrity_sha256(data, key)
    assert not check_integrity_sha256(data, b"other")
    assert not check_integrity(data, key)  # no SHA-1 integrity at all
    assert check_fingerprint(data)
    assert len(message.get(stun.MESSAGE_INTEGRITY_SHA256) or b"") == length


def test_integrity_and_sha256_together() -> None:
    """RFC 8489 section 14.6: MESSAGE-INTEGRITY, then MESSAGE-INTEGRITY-SHA256 over it."""
    key = b"k"
    message = (
        Message(Method.BINDING, Class.REQUEST, TID_2_1)
        .with_username("u")
        .with_integrity(key)
        .with_integrity_sha256(key)
        .with_fingerprint()
    )
    data = bytes(message)
    assert check_integrity(data, key)
    assert check_integrity_sha256(data, key)
    assert check_fingerprint(data)
    assert Message.parse(data) == message


@pytest.mark.parametrize("length", [12, 18, 36])
def test_integrity_sha256_bad_length(length: int) -> None:
    with pytest.raises(ValueError, match="MESSAGE-INTEGRITY-SHA256"):
        Message(Method.BINDING, Class.REQUEST, TID_2_1).with_integrity_sha256(b"k", length)


def test_append_order_is_enforced() -> None:
    base = Message(Method.BINDING, Class.REQUEST, TID_2_1)
    with pytest.raises(ValueError, match="ignored"):
        base.with_integrity(b"k").with_username("late")
    with pytest.raises(ValueError, match="only FINGERPRINT"):
        base.with_integrity_sha256(b"k").with_integrity(b"k")
    with pytest.raises(ValueError, match="already ends with FINGERPRINT"):
        base.with_fingerprint().with_integrity(b"k")
    with pytest.raises(ValueError, match="already ends with FINGERPRINT"):
        base.with_fingerprint().with_fingerprint()


def test_no_integrity_or_fingerprint() -> None:
    data = bytes(Message(Method.BINDING, Class.REQUEST, TID_2_1))
    assert data == bytes.fromhex("000100002112a442") + TID_2_1
    assert not check_integrity(data, b"k")
    assert not check_integrity_sha256(data, b"k")
    assert not check_fingerprint(data)


# --- message type ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "cls", "wire"),
    [
        (Method.BINDING, Class.REQUEST, 0x0001),
        (Method.BINDING, Class.INDICATION, 0x0011),
        (Method.BINDING, Class.SUCCESS, 0x0101),
        (Method.BINDING, Class.ERROR, 0x0111),
        (Method.ALLOCATE, Class.REQUEST, 0x0003),
        (Method.ALLOCATE, Class.SUCCESS, 0x0103),
        (Method.ALLOCATE, Class.ERROR, 0x0113),
        (Method.REFRESH, Class.REQUEST, 0x0004),
        (Method.SEND, Class.INDICATION, 0x0016),
        (Method.DATA, Class.INDICATION, 0x0017),
        (Method.CREATE_PERMISSION, Class.REQUEST, 0x0008),
        (Method.CHANNEL_BIND, Class.SUCCESS, 0x0109),
        (0xFFF, Class.ERROR, 0x3FFF),
    ],
)
def test_message_type(method: int, cls: int, wire: int) -> None:
    data = bytes(Message(method, cls, TID_2_1))
    assert struct.unpack_from("!H", data)[0] == wire
    parsed = Message.parse(data)
    assert (parsed.method, parsed.cls) == (method, cls)


def test_every_method_and_class_round_trips() -> None:
    for method in range(0x1000):
        for cls in range(4):
            parsed = Message.parse(bytes(Message(method, cls, TID_2_1)))
            assert (parsed.method, parsed.cls) == (method, cls)


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"method": 0x1000}, "12 bits"),
        ({"cls": 4}, "2 bits"),
        ({"transaction_id": b"short"}, "12 octets"),
    ],
)
def test_message_constructor_validates(kwargs: dict[str, object], reason: str) -> None:
    fields: dict[str, object] = {"method": 1, "cls": 0, "transaction_id": TID_2_1}
    fields.update(kwargs)
    with pytest.raises(ValueError, match=reason):
        Message(**fields)  # type: ignore[arg-type]


# --- typed attributes -------------------------------------------------------------------------


def blank() -> Message:
    return Message(Method.ALLOCATE, Class.REQUEST, TID_2_4)


def round_trip(message: Message) -> Message:
    data = bytes(message)
    parsed = Message.parse(data)
    assert parsed == message
    assert bytes(parsed) == data
    return parsed


@pytest.mark.parametrize(
    "attr_type", [stun.XOR_MAPPED_ADDRESS, stun.XOR_PEER_ADDRESS, stun.XOR_RELAYED_ADDRESS]
)
@pytest.mark.parametrize(
    "address",
    [
        ("192.0.2.1", 32853),
        ("0.0.0.0", 0),
        ("255.255.255.255", 65535),
        ("2001:db8::1", 3478),
        ("::ffff:192.0.2.1", 1),
        ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 49152),
    ],
)
def test_xor_address(attr_type: int, address: tuple[str, int]) -> None:
    message = round_trip(blank().with_xor_address(attr_type, *address))
    host, port = address
    decoded = message.xor_address(attr_type)
    assert decoded is not None
    assert (ipaddress.ip_address(decoded[0]), decoded[1]) == (ipaddress.ip_address(host), port)
    assert message.xor_addresses(attr_type) == [decoded]
    value = message.get(attr_type)
    assert value is not None
    family = stun.FAMILY_IPV4 if ipaddress.ip_address(host).version == 4 else stun.FAMILY_IPV6
    assert value[1] == family
    assert value[2:4] == struct.pack("!H", port ^ 0x2112)  # X-Port, RFC 8489 section 14.2


def test_xor_address_depends_on_transaction_id_for_ipv6_only() -> None:
    v4 = stun.encode_xor_address("192.0.2.1", 1, TID_2_1)
    assert v4 == stun.encode_xor_address("192.0.2.1", 1, TID_2_4)
    v6 = stun.encode_xor_address("2001:db8::1", 1, TID_2_1)
    assert v6 != stun.encode_xor_address("2001:db8::1", 1, TID_2_4)
    assert stun.decode_xor_address(v6, TID_2_4) != ("2001:db8::1", 1)


def test_several_peer_addresses() -> None:
    message = (
        blank()
        .with_xor_address(stun.XOR_PEER_ADDRESS, "192.0.2.1", 1)
        .with_xor_address(stun.XOR_PEER_ADDRESS, "2001:db8::2", 2)
    )
    assert round_trip(message).xor_addresses(stun.XOR_PEER_ADDRESS) == [
        ("192.0.2.1", 1),
        ("2001:db8::2", 2),
    ]


@pytest.mark.parametrize("address", [("192.0.2.7", 5060), ("2001:db8::7", 5061)])
def test_mapped_address(address: tuple[str, int]) -> None:
    message = round_trip(blank().with_mapped_address(*address))
    assert message.mapped_address() == address
    value = message.get(stun.MAPPED_ADDRESS)
    assert value is not None and value[2:4] == struct.pack("!H", address[1])


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"\x00\x01\x00", "shorter than 4"),
        (b"\x00\x01\x00\x01\x01\x02\x03", "family 1 with 3"),
        (b"\x00\x02\x00\x01" + bytes(4), "family 2 with 4"),
        (b"\x00\x03\x00\x01" + bytes(4), "family 3"),
    ],
)
def test_bad_address_values(value: bytes, reason: str) -> None:
    message = blank().with_attribute(stun.XOR_PEER_ADDRESS, value)
    message = message.with_attribute(stun.MAPPED_ADDRESS, value)
    with pytest.raises(ValueError, match=reason):
        message.xor_address(stun.XOR_PEER_ADDRESS)
    with pytest.raises(ValueError, match=reason):
        message.mapped_address()


@pytest.mark.parametrize(
    ("host", "port"), [("example.org", 1), ("192.0.2.1", -1), ("192.0.2.1", 65536)]
)
def test_bad_address_arguments(host: str, port: int) -> None:
    with pytest.raises(ValueError):
        blank().with_xor_address(stun.XOR_PEER_ADDRESS, host, port)


def test_text_attributes() -> None:
    message = round_trip(
        blank()
        .with_username("alice")
        .with_realm("gateway.local")
        .with_nonce("n0nce")
        .with_software("acs-gateway 1.0")
    )
    assert message.username() == "alice"
    assert message.realm() == "gateway.local"
    assert message.nonce() == "n0nce"
    assert message.software() == "acs-gateway 1.0"
    assert message.text(stun.REALM) == "gateway.local"


@pytest.mark.parametrize(
    ("setter", "text", "reason"),
    [
        ("with_username", "u" * 513, "513 octets"),
        ("with_realm", "r" * 128, "128 characters"),
        ("with_nonce", "\u00e9" * 127 + "x" * 0, None),
        ("with_nonce", "\u20ac" * 255, "765 octets"),
        ("with_software", "s" * 128, "128 characters"),
    ],
)
def test_text_limits(setter: str, text: str, reason: str | None) -> None:
    build: Callable[[str], Message] = getattr(blank(), setter)
    if reason is None:
        build(text)
        return
    with pytest.raises(ValueError, match=reason):
        build(text)


def test_text_limits_on_receive() -> None:
    message = blank().with_attribute(stun.REALM, b"r" * 200)
    with pytest.raises(ValueError, match="REALM is 200 characters"):
        message.realm()
    message = blank().with_attribute(stun.USERNAME, b"\xff\xfe")
    with pytest.raises(ValueError, match="USERNAME is not valid UTF-8"):
        message.username()


@pytest.mark.parametrize(
    ("code", "reason", "expected_reason"),
    [
        (401, None, "Unauthorized"),
        (438, None, "Stale Nonce"),
        (403, "Forbidden IP", "Forbidden IP"),
        (300, None, "Try Alternate"),
        (699, None, "Error"),
        (508, "", ""),
    ],
)
def test_error_code(code: int, reason: str | None, expected_reason: str) -> None:
    message = round_trip(
        Message(Method.ALLOCATE, Class.ERROR, TID_2_1).with_error_code(code, reason)
    )
    error = message.error_code()
    assert error is not None
    assert (error.code, error.reason) == (code, expected_reason)
    assert (error.error_class, error.number) == (code // 100, code % 100)
    value = message.get(stun.ERROR_CODE)
    assert value is not None and value[:4] == bytes((0, 0, code // 100, code % 100))


@pytest.mark.parametrize("code", [299, 700, 0, 1000])
def test_error_code_out_of_range(code: int) -> None:
    with pytest.raises(ValueError, match="not in 300-699"):
        blank().with_error_code(code)


@pytest.mark.parametrize(
    "value", [b"\x00\x00\x02\x00", b"\x00\x00\x07\x00", b"\x00\x00\x04\x64", b"\x00\x00\x04"]
)
def test_bad_error_code_values(value: bytes) -> None:
    with pytest.raises(ValueError, match="ERROR-CODE"):
        blank().with_attribute(stun.ERROR_CODE, value).error_code()


def test_unknown_attributes() -> None:
    message = round_trip(blank().with_unknown_attributes([0x0024, 0x7FFF, 0x0003]))
    assert message.unknown_attributes() == (0x0024, 0x7FFF, 0x0003)
    value = message.get(stun.UNKNOWN_ATTRIBUTES)
    assert value is not None and len(value) == 6
    with pytest.raises(ValueError, match="odd length"):
        blank().with_attribute(stun.UNKNOWN_ATTRIBUTES, b"\x00").unknown_attributes()


def test_turn_attributes() -> None:
    message = round_trip(
        blank()
        .with_lifetime(600)
        .with_requested_transport()
        .with_requested_address_family(stun.FAMILY_IPV6)
        .with_data(b"\x01\x02\x03")
        .with_channel_number(0x4001)
        .with_even_port(True)
        .with_reservation_token(b"12345678")
        .with_dont_fragment()
    )
    assert message.lifetime() == 600
    assert message.requested_transport() == stun.TRANSPORT_UDP
    assert message.requested_address_family() == stun.FAMILY_IPV6
    assert message.data() == b"\x01\x02\x03"
    assert message.channel_number() == 0x4001
    assert message.even_port() is True
    assert message.reservation_token() == b"12345678"
    assert message.dont_fragment() is True
    assert message.get(stun.REQUESTED_TRANSPORT) == b"\x11\x00\x00\x00"
    assert message.get(stun.CHANNEL_NUMBER) == b"\x40\x01\x00\x00"
    assert message.get(stun.EVEN_PORT) == b"\x80"


def test_turn_attributes_absent() -> None:
    message = blank()
    assert message.lifetime() is None
    assert message.requested_transport() is None
    assert message.requested_address_family() is None
    assert message.data() is None
    assert message.channel_number() is None
    assert message.even_port() is None
    assert message.reservation_token() is None
    assert message.dont_fragment() is False
    assert message.xor_address() is None
    assert message.mapped_address() is None
    assert message.error_code() is None
    assert message.unknown_attributes() is None
    assert message.username() is None
    assert blank().with_even_port(False).even_port() is False
    assert blank().with_requested_transport(stun.TRANSPORT_TCP).requested_transport() == 6


@pytest.mark.parametrize(
    ("attr_type", "value", "getter", "reason"),
    [
        (stun.LIFETIME, b"\x00\x00\x01", "lifetime", "LIFETIME is 3 octets"),
        (stun.REQUESTED_TRANSPORT, b"\x11", "requested_transport", "REQUESTED-TRANSPORT"),
        (stun.REQUESTED_ADDRESS_FAMILY, b"\x01\x00", "requested_address_family", "FAMILY"),
        (stun.CHANNEL_NUMBER, b"\x40\x00", "channel_number", "CHANNEL-NUMBER is 2"),
        (stun.EVEN_PORT, b"\x80\x00\x00\x00", "even_port", "EVEN-PORT is 4"),
        (stun.RESERVATION_TOKEN, b"1234", "reservation_token", "RESERVATION-TOKEN is 4"),
    ],
)
def test_bad_turn_attribute_values(attr_type: int, value: bytes, getter: str, reason: str) -> None:
    message = round_trip(blank().with_attribute(attr_type, value))
    with pytest.raises(ValueError, match=reason):
        getattr(message, getter)()


@pytest.mark.parametrize(
    ("build", "reason"),
    [
        (lambda m: m.with_lifetime(-1), "LIFETIME -1"),
        (lambda m: m.with_lifetime(1 << 32), "LIFETIME 4294967296"),
        (lambda m: m.with_channel_number(0x10000), "channel number 65536"),
        (lambda m: m.with_requested_transport(256), "protocol 256"),
        (lambda m: m.with_requested_address_family(-1), "address family -1"),
        (lambda m: m.with_unknown_attributes([1, 0x10000]), "attribute type 65536"),
        (lambda m: m.with_mapped_address("192.0.2.1", 70000), "port 70000"),
    ],
)
def test_setters_reject_out_of_range(build: Callable[[Message], Message], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        build(blank())


def test_reservation_token_setter_checks_length() -> None:
    with pytest.raises(ValueError, match="8 octets"):
        blank().with_reservation_token(b"short")


def test_comprehension_required() -> None:
    assert stun.is_comprehension_required(stun.PRIORITY)
    assert stun.is_comprehension_required(stun.XOR_PEER_ADDRESS)
    assert not stun.is_comprehension_required(stun.SOFTWARE)
    assert not stun.is_comprehension_required(stun.FINGERPRINT)
    assert stun.ATTRIBUTE_NAMES[stun.XOR_MAPPED_ADDRESS] == "XOR-MAPPED-ADDRESS"


def test_keys() -> None:
    assert short_term_key(SHORT_TERM_PASSWORD) == SHORT_TERM_PASSWORD.encode()
    assert long_term_key("user", "realm", "pass").hex() == "8493fbc53ba582fb4c044c456bdc40eb"
    assert len(stun.long_term_key_sha256("user", "realm", "pass")) == 32
    assert len(stun.new_transaction_id()) == 12


def test_attribute_validation() -> None:
    with pytest.raises(ValueError, match="16 bits"):
        Attribute(0x10000, b"")
    with pytest.raises(ValueError, match="padding"):
        Attribute(stun.USERNAME, b"abc", b"")
    with pytest.raises(ValueError, match="too long"):
        Attribute(stun.DATA, bytes(0x10000))
    with pytest.raises(ValueError, match="too long"):
        bytes(blank().with_data(bytes(40000)).with_data(bytes(40000)))


# --- malformed messages -------------------------------------------------------------------------


def with_length(data: bytes, length: int) -> bytes:
    return data[:2] + struct.pack("!H", length) + data[4:]


def malformed_cases() -> list[tuple[str, bytes, str]]:
    v22 = vector("2.2")
    v24 = vector("2.4")
    header = bytes(Message(Method.BINDING, Class.REQUEST, TID_2_1))
    software = bytes.fromhex("8022000b") + b"test vector" + b" "
    cases = [
        ("empty", b"", "shorter than its header"),
        ("short header", v22[:19], "shorter than its header"),
        ("top bits", b"\x40" + v22[1:], "top bit"),
        ("top bit 0x80", b"\x80" + v22[1:], "top bit"),
        ("bad cookie", v22[:4] + b"\x21\x12\xa4\x43" + v22[8:], "magic cookie"),
        ("rfc 3489 style", v22[:4] + bytes(4) + v22[8:], "magic cookie"),
        ("length not multiple of 4", with_length(v22, 0x3D), "not a multiple of 4"),
        ("length over the datagram", with_length(v22, 0x40), "does not match"),
        ("length under the datagram", with_length(v22, 0x38), "does not match"),
        ("trailing octets", v24 + bytes(4), "does not match"),
        ("truncated datagram", v24[:-4], "does not match"),
        ("attribute header cut", with_length(header + b"\x80\x22", 2), "not a multiple"),
        (
            "attribute length over the end",
            with_length(header + bytes.fromhex("80220010") + b"abcd", 8),
            "runs past the end",
        ),
        (
            "attribute missing its padding",
            with_length(header + bytes.fromhex("80220005") + b"abcde" + b"xxx", 12)[:-4],
            "does not match",
        ),
        (
            # USERNAME of 5 octets with no padding before the next attribute: the next header
            # is read from the wrong place and its length runs past the end.
            "bad padding",
            with_length(
                header + bytes.fromhex("00060005") + b"abcde" + bytes.fromhex("80220003") + b"abc",
                16,
            ),
            "runs past the end",
        ),
        (
            "last attribute unpadded",
            with_length(header + software[:-1], 15),
            "not a multiple of 4",
        ),
        ("fingerprint wrong", v22[:-1] + bytes([v22[-1] ^ 0xFF]), "FINGERPRINT does not match"),
        (
            "attribute after fingerprint",
            with_length(vector("2.1") + bytes.fromhex("00240000"), 0x5C),
            "follows FINGERPRINT",
        ),
        (
            "fingerprint of 8 octets",
            with_length(header + bytes.fromhex("80280008") + bytes(8), 12),
            "FINGERPRINT is 8",
        ),
        (
            "message-integrity of 16 octets",
            with_length(header + bytes.fromhex("00080010") + bytes(16), 20),
            "MESSAGE-INTEGRITY is 16",
        ),
        (
            "message-integrity-sha256 of 8 octets",
            with_length(header + bytes.fromhex("001c0008") + bytes(8), 12),
            "MESSAGE-INTEGRITY-SHA256 is 8",
        ),
    ]
    return cases


@pytest.mark.parametrize(
    ("data", "reason"),
    [pytest.param(data, reason, id=name) for name, data, reason in malformed_cases()],
)
def test_malformed(data: bytes, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        Message.parse(data)


@pytest.mark.parametrize("section", ALL)
def test_every_truncation_is_a_value_error(section: str) -> None:
    data = vector(section)
    for end in range(len(data)):
        with pytest.raises(ValueError):
            Message.parse(data[:end])
        with pytest.raises(ValueError):
            check_integrity(data[:end], b"k")
        with pytest.raises(ValueError):
            check_fingerprint(data[:end])


def exercise(message: Message) -> None:
    """Call every getter; each may only raise ValueError."""
    getters: list[Callable[[], object]] = [
        message.xor_address,
        message.mapped_address,
        message.username,
        message.realm,
        message.nonce,
        message.software,
        message.error_code,
        message.unknown_attributes,
        message.lifetime,
        message.requested_transport,
        message.requested_address_family,
        message.data,
        message.channel_number,
        message.even_port,
        message.reservation_token,
        message.dont_fragment,
    ]
    for getter in getters:
        try:
            getter()
        except ValueError:
            pass


def test_random_corruption_raises_only_value_error() -> None:
    rng = random.Random(5769)
    samples = [vector(section) for section in ALL]
    samples.append(
        bytes(
            blank()
            .with_xor_address(stun.XOR_PEER_ADDRESS, "2001:db8::1", 9)
            .with_error_code(420)
            .with_unknown_attributes([1, 2])
            .with_lifetime(1)
            .with_requested_transport()
            .with_channel_number(0x4000)
            .with_even_port(True)
            .with_reservation_token(bytes(8))
            .with_integrity(b"k")
            .with_fingerprint()
        )
    )
    parsed = 0
    for _ in range(3000):
        data = bytearray(rng.choice(samples))
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        raw = bytes(data)
        for check in (check_fingerprint, lambda d: check_integrity(d, b"k")):
            try:
                check(raw)
            except ValueError:
                pass
        try:
            message = Message.parse(raw)
        except ValueError:
            continue
        parsed += 1
        assert bytes(message) == raw
        exercise(message)
    assert parsed > 0


# --- ChannelData (RFC 8656 section 12) ------------------------------------------------------------


@pytest.mark.parametrize("payload", [b"", b"a", b"ab", b"abc", b"abcd", b"abcde", bytes(1000)])
def test_channel_data_round_trip(payload: bytes) -> None:
    frame = ChannelData(0x4000, payload)
    padded = frame.encode()
    assert len(padded) % 4 == 0
    assert padded[:4] == struct.pack("!HH", 0x4000, len(payload))
    assert bytes(frame) == padded
    unpadded = frame.encode(pad=False)
    assert unpadded == padded[: 4 + len(payload)]
    assert ChannelData.parse(padded) == frame
    assert ChannelData.parse(unpadded) == frame
    assert ChannelData.parse(padded, stream=True) == frame
    assert ChannelData.parse(memoryview(padded)) == frame


@pytest.mark.parametrize(
    ("data", "stream", "reason"),
    [
        (b"\x40\x00\x00", False, "shorter than its 4-octet header"),
        (b"\x3f\xff\x00\x00", False, "0x3fff is not in"),
        (b"\x80\x00\x00\x00", False, "0x8000 is not in"),
        (b"\x40\x00\x00\x05abcd", False, "runs past the end"),
        (b"\x40\x00\x00\x05abcde", True, "runs past the end"),
        (b"\x40\x00\x00\x05abcde\x00\x00\x00\x00", False, "1 octets after its padding"),
        (b"\x40\x00\x00\x04abcd\x00", True, "1 octets after its padding"),
    ],
)
def test_channel_data_malformed(data: bytes, stream: bool, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        ChannelData.parse(data, stream=stream)


@pytest.mark.parametrize("channel", [0x3FFF, 0x8000, 0xFFFF])
def test_channel_data_constructor_range(channel: int) -> None:
    with pytest.raises(ValueError, match="not in 0x4000-0x7FFF"):
        ChannelData(channel, b"")


# --- stream deframer ----------------------------------------------------------------------------


def mixed_stream() -> tuple[bytes, list[Message | ChannelData]]:
    frames: list[Message | ChannelData] = [
        Message.parse(vector("2.1")),
        ChannelData(0x4001, b"abc"),
        ChannelData(0x4FFF, b""),
        Message.parse(vector("2.4")),
        ChannelData(0x4000, b"hello, peer"),
        Message.parse(vector("2.3")),
    ]
    return b"".join(bytes(frame) for frame in frames), frames


def test_deframer_whole_stream() -> None:
    data, frames = mixed_stream()
    deframer = StreamDeframer()
    deframer.feed(data)
    assert list(deframer.frames()) == frames
    assert deframer.buffered == 0
    assert deframer.next_frame() is None


def test_deframer_one_byte_at_a_time() -> None:
    data, frames = mixed_stream()
    deframer = StreamDeframer()
    received: list[Message | ChannelData] = []
    for index in range(len(data)):
        deframer.feed(data[index : index + 1])
        received.extend(deframer.frames())
    assert received == frames
    # The STUN messages come back byte for byte (integrity checked on the re-encoding).
    stun_frames = [frame for frame in received if isinstance(frame, Message)]
    assert bytes(stun_frames[0]) == vector("2.1")
    assert check_integrity(bytes(stun_frames[1]), key_for("2.4"))


def test_deframer_random_chunks_and_trailing_partial() -> None:
    data, frames = mixed_stream()
    rng = random.Random(8656)
    for _ in range(50):
        deframer = StreamDeframer()
        received: list[Message | ChannelData] = []
        tail = vector("2.2")[: rng.randrange(1, 80)]
        stream = data + tail
        offset = 0
        while offset < len(stream):
            size = rng.randint(1, 64)
            deframer.feed(memoryview(stream)[offset : offset + size])
            offset += size
            received.extend(deframer.frames())
        assert received == frames
        assert deframer.buffered == len(tail)


def test_deframer_malformed_stun_frame_is_skipped() -> None:
    bad = bytearray(vector("2.2"))
    bad[-1] ^= 0xFF
    deframer = StreamDeframer()
    deframer.feed(bytes(bad) + bytes(ChannelData(0x4002, b"after")))
    with pytest.raises(ValueError, match="FINGERPRINT does not match"):
        deframer.next_frame()
    assert deframer.next_frame() == ChannelData(0x4002, b"after")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x16\xfe\xfd\x00\x00\x00\x00\x00", "magic cookie"),  # a DTLS record
        (b"\x80\x00\x00\x01", "starts with 0x80"),  # RTP
        (b"\xc0\x00\x00\x01", "starts with 0xc0"),
        (vector("2.2")[:4] + bytes(4) + vector("2.2")[8:], "magic cookie"),
        (b"\x00\x01\x00\x03\x21\x12\xa4\x42", "not a multiple of 4"),
    ],
)
def test_deframer_fatal_errors(data: bytes, reason: str) -> None:
    deframer = StreamDeframer()
    deframer.feed(data)
    with pytest.raises(ValueError, match=reason):
        deframer.next_frame()
    with pytest.raises(ValueError, match=reason):
        deframer.feed(bytes(ChannelData(0x4000, b"")))
    with pytest.raises(ValueError, match=reason):
        deframer.next_frame()


def test_deframer_bound() -> None:
    deframer = StreamDeframer(max_buffered=MAX_STREAM_FRAME)
    big = bytes(Message(Method.SEND, Class.INDICATION, TID_2_1).with_data(bytes(65528)))
    assert len(big) == MAX_STREAM_FRAME
    deframer.feed(big[:-1])
    deframer.feed(big[-1:])
    frame = deframer.next_frame()
    assert isinstance(frame, Message) and frame.data() == bytes(65528)
    deframer.feed(big)
    with pytest.raises(ValueError, match="stream buffer over"):
        deframer.feed(b"\x40")
    with pytest.raises(ValueError, match="stream buffer over"):
        deframer.next_frame()
    with pytest.raises(ValueError, match="at least"):
        StreamDeframer(max_buffered=1000)


def test_deframer_waits_for_the_stun_header() -> None:
    deframer = StreamDeframer()
    deframer.feed(vector("2.1")[:6])
    assert deframer.next_frame() is None
    deframer.feed(vector("2.1")[6:])
    assert deframer.next_frame() == Message.parse(vector("2.1"))


# --- RFC 7983 demultiplexing --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "kind"),
    [
        (0, PacketKind.STUN),
        (1, PacketKind.STUN),
        (3, PacketKind.STUN),
        (4, PacketKind.UNKNOWN),
        (15, PacketKind.UNKNOWN),
        (16, PacketKind.ZRTP),
        (19, PacketKind.ZRTP),
        (20, PacketKind.DTLS),
        (22, PacketKind.DTLS),
        (63, PacketKind.DTLS),
        (64, PacketKind.CHANNEL_DATA),
        (79, PacketKind.CHANNEL_DATA),
        (80, PacketKind.UNKNOWN),
        (127, PacketKind.UNKNOWN),
        (128, PacketKind.RTP),
        (191, PacketKind.RTP),
        (192, PacketKind.UNKNOWN),
        (255, PacketKind.UNKNOWN),
    ],
)
def test_demultiplex(first: int, kind: PacketKind) -> None:
    assert demultiplex(bytes([first, 0, 0, 0])) is kind


def test_demultiplex_empty_and_real_packets() -> None:
    assert demultiplex(b"") is PacketKind.UNKNOWN
    assert demultiplex(vector("2.1")) is PacketKind.STUN
    assert demultiplex(bytes(ChannelData(0x4ABC, b"x"))) is PacketKind.CHANNEL_DATA
    assert demultiplex(memoryview(b"\x80\x00")) is PacketKind.RTP
