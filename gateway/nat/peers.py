"""Peer-address policy for TURN permissions and channels (RFC 8656 sections 9 and 21: a relay
must not become a way into the server's own networks).

Invariants:
- Default deny for every address that is not a public unicast destination: loopback,
  unspecified, private (RFC 1918), CGNAT (RFC 6598), link-local (169.254/16, which holds the
  cloud metadata address 169.254.169.254), "this network" 0/8, multicast, reserved 240/4 and
  broadcast; for IPv6 loopback, unspecified, link-local, site-local, unique local fc00::/7,
  multicast and the local-use NAT64 prefix 64:ff9b:1::/48.
- An IPv6 address that carries an IPv4 address is refused when the IPv4 address is: IPv4-mapped
  ::ffff:a.b.c.d, IPv4-compatible ::a.b.c.d, IPv4-translated ::ffff:0:a.b.c.d, NAT64
  64:ff9b::/96 (RFC 6052), 6to4 2002:AABB:CCDD::/48 (RFC 3056) and Teredo 2001::/32 (both the
  server address and the de-obfuscated client address, RFC 4380). Textual spellings do not
  matter: addresses are compared as numbers (``ipaddress``), so "::FFFF:7f00:1" and
  "0:0:0:0:0:ffff:127.0.0.1" are the same address.
- ``allowed`` networks punch holes in the deny list: an address inside one is let through; for
  an IPv6 address carrying an IPv4 address, the IPv4 address inside an allowed IPv4 network is.
- Anything that is not a plain IP address (a host name, "127.1", a scoped "fe80::1%eth0") is
  refused. Pure functions, no I/O.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

__all__ = ["Network", "is_refused", "parse_networks"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Most specific first: the first match names the reason.
_REFUSED_V4: tuple[tuple[ipaddress.IPv4Network, str], ...] = tuple(
    (ipaddress.IPv4Network(net), reason)
    for net, reason in (
        ("0.0.0.0/8", "'this network' (0.0.0.0/8, includes the unspecified address)"),
        ("10.0.0.0/8", "private network (RFC 1918)"),
        ("100.64.0.0/10", "shared address space / CGNAT (RFC 6598)"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.169.254/32", "link-local cloud metadata service"),
        ("169.254.0.0/16", "link-local"),
        ("172.16.0.0/12", "private network (RFC 1918)"),
        ("192.168.0.0/16", "private network (RFC 1918)"),
        ("224.0.0.0/4", "multicast"),
        ("255.255.255.255/32", "limited broadcast"),
        ("240.0.0.0/4", "reserved (240.0.0.0/4)"),
    )
)
_REFUSED_V6: tuple[tuple[ipaddress.IPv6Network, str], ...] = tuple(
    (ipaddress.IPv6Network(net), reason)
    for net, reason in (
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "site-local (deprecated)"),
        ("fc00::/7", "unique local (fc00::/7)"),
        ("ff00::/8", "multicast"),
        ("64:ff9b:1::/48", "local-use NAT64 prefix (RFC 8215)"),
    )
)

_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_COMPATIBLE = ipaddress.IPv6Network("::/96")
_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def parse_networks(cidrs: Iterable[str]) -> list[Network]:
    """``[turn] allowed_peers`` entries as networks; ValueError names a bad entry."""
    networks: list[Network] = []
    for cidr in cidrs:
        try:
            networks.append(ipaddress.ip_network(cidr, strict=False))
        except ValueError:
            raise ValueError(f"not a CIDR network: {cidr!r}") from None
    return networks


def _embedded_v4(address: ipaddress.IPv6Address) -> list[tuple[str, ipaddress.IPv4Address]]:
    """The IPv4 addresses an IPv6 address carries, each with the name of its spelling."""
    value = int(address)
    low = ipaddress.IPv4Address(value & 0xFFFFFFFF)
    found: list[tuple[str, ipaddress.IPv4Address]] = []
    if address in _MAPPED:
        found.append(("IPv4-mapped", low))
    elif address in _TRANSLATED:
        found.append(("IPv4-translated", low))
    elif address in _COMPATIBLE:
        found.append(("IPv4-compatible", low))
    elif address in _NAT64:
        found.append(("NAT64", low))
    if address.sixtofour is not None:
        found.append(("6to4", address.sixtofour))
    if address.teredo is not None:
        server, client = address.teredo
        found.extend((("Teredo server", server), ("Teredo client", client)))
    return found


def _category(address: IPAddress) -> str | None:
    table: Sequence[tuple[Network, str]] = (
        _REFUSED_V4 if isinstance(address, ipaddress.IPv4Address) else _REFUSED_V6
    )
    for network, reason in table:
        if address in network:
            return reason
    return None


def _allowed(address: IPAddress, allowed: Sequence[Network]) -> bool:
    return any(address.version == net.version and address in net for net in allowed)


def is_refused(address: str, allowed: Sequence[Network] = ()) -> str | None:
    """Why a TURN client may not reach ``address``, or None when it may.

    ``allowed`` lists networks let through despite the default deny (``parse_networks`` of
    ``[turn] allowed_peers``). The TURN server answers a refusal with 403 (RFC 8656 section
    9.1 leaves the policy to the server).
    """
    if "%" in address:
        return f"scoped address {address!r} refused"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return f"{address!r} is not an IP address"
    if _allowed(ip, allowed):
        return None
    category = _category(ip)
    if category is not None:
        return f"{ip} is {category}"
    if isinstance(ip, ipaddress.IPv6Address):
        for spelling, inner in _embedded_v4(ip):
            inner_category = _category(inner)
            if inner_category is not None and not _allowed(inner, allowed):
                return f"{ip} is the {spelling} form of {inner}, {inner_category}"
    return None
