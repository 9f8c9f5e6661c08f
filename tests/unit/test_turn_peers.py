"""gateway.nat.peers: the TURN peer-address policy (RFC 8656 section 21: the relay must not
reach the server's own networks).

One table of refused addresses, each also written in every IPv6 spelling that carries an IPv4
address (mapped, compatible, translated, NAT64, 6to4, Teredo) and in several textual forms of
the same number; one table of public addresses that pass; then the allowed-networks holes.
"""

from __future__ import annotations

import ipaddress

import pytest

from gateway.nat.peers import is_refused, parse_networks

# (address, words the reason must contain)
REFUSED_V4 = [
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("0.0.0.0", "this network"),
    ("0.1.2.3", "this network"),
    ("10.0.0.1", "RFC 1918"),
    ("10.255.255.255", "RFC 1918"),
    ("172.16.0.1", "RFC 1918"),
    ("172.31.255.254", "RFC 1918"),
    ("192.168.1.1", "RFC 1918"),
    ("169.254.0.1", "link-local"),
    ("169.254.169.254", "metadata"),
    ("100.64.0.1", "CGNAT"),
    ("100.127.255.254", "CGNAT"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("255.255.255.255", "broadcast"),
    ("240.0.0.1", "reserved"),
]

PUBLIC_V4 = [
    "8.8.8.8",
    "1.1.1.1",
    "9.255.255.255",
    "11.0.0.0",
    "100.63.255.255",
    "100.128.0.0",
    "126.255.255.255",
    "128.0.0.1",
    "169.253.255.255",
    "169.255.0.0",
    "172.15.255.255",
    "172.32.0.0",
    "192.167.255.255",
    "192.169.0.0",
    "223.255.255.255",
    "192.0.2.1",
]

REFUSED_V6 = [
    ("::", "unspecified"),
    ("0:0:0:0:0:0:0:0", "unspecified"),
    ("::1", "loopback"),
    ("0000:0000:0000:0000:0000:0000:0000:0001", "loopback"),
    ("fe80::1", "link-local"),
    ("FE80::abcd", "link-local"),
    ("febf:ffff::1", "link-local"),
    ("fec0::1", "site-local"),
    ("fc00::1", "unique local"),
    ("fd12:3456:789a::1", "unique local"),
    ("ff02::1", "multicast"),
    ("ff05::1:3", "multicast"),
    ("64:ff9b:1::a00:1", "NAT64"),
]

PUBLIC_V6 = [
    "2001:4860:4860::8888",
    "2606:4700:4700::1111",
    "fe00::1",
    "fbff:ffff::1",
    "2001:db8::1",
    "::ffff:8.8.8.8",
    "::8.8.8.8",
    "64:ff9b::808:808",
    "2002:0808:0808::1",
]


def spellings(v4: str) -> list[tuple[str, str]]:
    """Every IPv6 form of an IPv4 address, each with the name the reason gives it."""
    n = int(ipaddress.IPv4Address(v4))
    hi, lo = n >> 16, n & 0xFFFF
    obfuscated = n ^ 0xFFFFFFFF
    forms = [
        (f"::ffff:{v4}", "IPv4-mapped"),
        (f"::FFFF:{hi:x}:{lo:x}", "IPv4-mapped"),
        (f"0:0:0:0:0:ffff:{v4}", "IPv4-mapped"),
        (f"0000:0000:0000:0000:0000:ffff:{hi:04x}:{lo:04x}", "IPv4-mapped"),
        (f"::ffff:0:{v4}", "IPv4-translated"),
        (f"64:ff9b::{v4}", "NAT64"),
        (f"64:ff9b::{hi:x}:{lo:x}", "NAT64"),
        (f"2002:{hi:x}:{lo:x}::", "6to4"),
        (f"2002:{hi:x}:{lo:x}:1:2:3:4:5", "6to4"),
        # Teredo: the IPv4 address as the server (bits 32-63) and as the client (the last 32
        # bits, inverted), with a public address in the other place.
        (f"2001:0:{hi:x}:{lo:x}::1", "Teredo server"),
        (f"2001:0:808:808:0:0:{obfuscated >> 16:x}:{obfuscated & 0xFFFF:x}", "Teredo client"),
    ]
    if n > 1:  # ::0.0.0.0 and ::0.0.0.1 are the unspecified and loopback addresses
        forms.append((f"::{v4}", "IPv4-compatible"))
    return forms


@pytest.mark.parametrize(("address", "reason"), REFUSED_V4 + REFUSED_V6)
def test_refused(address: str, reason: str) -> None:
    refusal = is_refused(address, [])
    assert refusal is not None and reason in refusal


@pytest.mark.parametrize(
    ("address", "spelling", "v4", "reason"),
    [
        pytest.param(form, spelling, v4, reason, id=form)
        for v4, reason in REFUSED_V4
        for form, spelling in spellings(v4)
    ],
)
def test_refused_in_every_ipv6_spelling(address: str, spelling: str, v4: str, reason: str) -> None:
    refusal = is_refused(address, [])
    assert refusal is not None
    assert spelling in refusal, refusal
    assert v4 in refusal, refusal
    assert reason in refusal, refusal


@pytest.mark.parametrize("address", PUBLIC_V4 + PUBLIC_V6)
def test_public_addresses_pass(address: str) -> None:
    assert is_refused(address, []) is None


@pytest.mark.parametrize(
    "address",
    [
        "",
        "localhost",
        "example.org",
        "127.1",
        "0x7f.0.0.1",
        "0177.0.0.1",
        "2130706433",
        "127.000.000.001",
        "[::1]",
        "::1%lo",
        "fe80::1%eth0",
        "::ffff:127.0.0.1%1",
        " 8.8.8.8",
        "8.8.8.8 ",
        "8.8.8.8/32",
        "1.2.3.4.5",
    ],
)
def test_not_plain_addresses_are_refused(address: str) -> None:
    refusal = is_refused(address, [])
    assert refusal is not None
    assert "not an IP address" in refusal or "scoped" in refusal


def test_allowed_networks_open_holes() -> None:
    allowed = parse_networks(["127.0.0.0/8", "10.1.0.0/16", "fd00::/8", "::1/128"])
    assert is_refused("127.0.0.1", allowed) is None
    assert is_refused("10.1.2.3", allowed) is None
    assert is_refused("10.2.0.1", allowed) is not None
    assert is_refused("fd00::5", allowed) is None
    assert is_refused("fc00::5", allowed) is not None
    assert is_refused("::1", allowed) is None
    # An allowed IPv4 network allows that address in its IPv6 spellings too ...
    assert is_refused("::ffff:127.0.0.1", allowed) is None
    assert is_refused("2002:a01:203::", allowed) is None
    assert is_refused("64:ff9b::10.1.2.3", allowed) is None
    # ... and nothing else: the other private ranges stay closed.
    assert is_refused("::ffff:192.168.0.1", allowed) is not None
    assert is_refused("169.254.169.254", allowed) is not None


def test_teredo_checks_both_addresses() -> None:
    allowed = parse_networks(["127.0.0.0/8"])
    # server 10.0.0.1, client 127.0.0.1 (inverted 80ff:fffe): the server stays refused.
    address = "2001:0:a00:1::80ff:fffe"
    refusal = is_refused(address, allowed)
    assert refusal is not None and "Teredo server" in refusal and "10.0.0.1" in refusal
    refusal = is_refused(address, parse_networks(["10.0.0.0/8"]))
    assert refusal is not None and "Teredo client" in refusal and "127.0.0.1" in refusal
    assert is_refused(address, parse_networks(["10.0.0.0/8", "127.0.0.0/8"])) is None


def test_an_allowed_ipv6_network_covers_its_spellings() -> None:
    allowed = parse_networks(["::ffff:0:0/96"])
    assert is_refused("::ffff:127.0.0.1", allowed) is None
    assert is_refused("127.0.0.1", allowed) is not None


def test_allow_everything() -> None:
    allowed = parse_networks(["0.0.0.0/0", "::/0"])
    for address, _ in REFUSED_V4 + REFUSED_V6:
        assert is_refused(address, allowed) is None


def test_parse_networks() -> None:
    assert parse_networks(["10.0.0.1/8"]) == [ipaddress.IPv4Network("10.0.0.0/8")]
    assert parse_networks(["2001:db8::/32", "192.0.2.7"]) == [
        ipaddress.IPv6Network("2001:db8::/32"),
        ipaddress.IPv4Network("192.0.2.7/32"),
    ]
    with pytest.raises(ValueError, match="not a CIDR network: 'nope'"):
        parse_networks(["nope"])
    with pytest.raises(ValueError, match="not a CIDR network"):
        parse_networks(["10.0.0.0/33"])
