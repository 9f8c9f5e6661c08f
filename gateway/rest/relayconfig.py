"""TURN credentials over REST, as ACS Network Traversal issues them.

``POST /networkTraversal/:issueRelayConfiguration?api-version=2022-03-01-preview`` (the one
version the PyPI client ``azure-communication-networktraversal`` sends; gateway.rest.server
routes it, with the same HMAC auth as the rest of the surface) takes
``{"id"?: str, "routeType"?: "any" | "nearest", "ttl"?: int}`` and answers 200 with
``{"expiresOn": ISO-8601 UTC, "iceServers": [{"urls", "username", "credential", "routeType"}]}``.

Invariants:
- The credentials are time-limited ones (gateway.nat.credentials.make_credentials, coturn's
  ``use-auth-secret`` scheme) made with the TURN shared secret (gateway.nat.secret.turn_secret):
  username ``"EXPIRY:USER"``, credential base64(HMAC-SHA1(secret, username)); ``expiresOn`` is
  EXPIRY, i.e. ``int(now) + ttl``. USER is ``id`` when given, else a random 16-hex-digit name.
- ``ttl`` is whole seconds: default and maximum 172800 (48 h, as ACS; a larger value is lowered
  to it, as ACS does), minimum :data:`MIN_TTL` (a smaller one is raised to it); a negative or
  non-integer ttl is a 400.
- ``id`` is 1 to 256 printable ASCII characters without spaces (it becomes part of the TURN
  USERNAME attribute); ``routeType`` is "any" or "nearest" (any case). Absent or null fields take
  their defaults; unknown fields are ignored. Every refusal is RestError(400, "8523", reason).
- The URLs name [turn] advertise when set, else [turn] listen, an unspecified listen address
  (0.0.0.0, ::) being replaced by [media] address (by loopback if that is unspecified too):
  ``stun:H:P`` and ``turn:H:P?transport=udp`` for each UDP address, ``turn:H:P?transport=tcp``
  for each TCP one, ``turns:H:P?transport=tcp`` for each TLS one, STUN first, then TURN over
  UDP, TCP and TLS, without duplicates. With ``[turn] enabled = false`` only the ``stun:`` URLs
  are given (the server answers Allocate with an error).
- With ``routeType`` given, one ICE server of that route type is answered; without it, one per
  route type ("any", then "nearest"), as ACS does; here both have the same URLs and credentials,
  the gateway having only one relay.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from gateway.config import Config, ListenAddr
from gateway.nat.credentials import make_credentials
from gateway.nat.secret import turn_secret
from gateway.rest.errors import RestError

__all__ = [
    "API_VERSIONS",
    "DEFAULT_TTL",
    "MAX_TTL",
    "MIN_TTL",
    "OP",
    "RelayIssuer",
    "RelayRequest",
    "ice_urls",
    "parse_request",
    "relay_issuer",
]

#: The Api op name gateway.rest.server routes the endpoint to.
OP: Final = "issue_relay_configuration"
#: api-version values accepted on this route only (what the networktraversal SDK sends).
API_VERSIONS: Final = frozenset({"2022-03-01-preview"})
DEFAULT_TTL: Final = 172800  # seconds: ACS's default, and its maximum
MAX_TTL: Final = DEFAULT_TTL
MIN_TTL: Final = 60  # shorter credentials could expire before ICE even gathers
MAX_ID: Final = 256  # characters; the USERNAME attribute holds at most 513 bytes (RFC 8489)
ROUTE_TYPES: Final = ("any", "nearest")

log = logging.getLogger("gateway.rest")


@dataclass(frozen=True, slots=True)
class RelayRequest:
    """A validated request body."""

    user: str | None = None  # None: generate one
    route_type: str | None = None  # None: every route type
    ttl: int = DEFAULT_TTL  # already clamped to [MIN_TTL, MAX_TTL]


def parse_request(body: Mapping[str, object] | None) -> RelayRequest:
    """Validate ``{id?, routeType?, ttl?}``; RestError(400, "8523") on bad input."""
    if body is None:
        return RelayRequest()
    user = body.get("id")
    if user is not None:
        if not isinstance(user, str) or not user:
            raise _bad("id must be a non-empty string")
        if len(user) > MAX_ID:
            raise _bad(f"id is longer than {MAX_ID} characters")
        if not all("!" <= ch <= "~" for ch in user):
            raise _bad("id must be printable ASCII without spaces")
    route_type = body.get("routeType")
    if route_type is not None:
        if not isinstance(route_type, str) or route_type.lower() not in ROUTE_TYPES:
            raise _bad("routeType must be any or nearest")
        route_type = route_type.lower()
    ttl = body.get("ttl")
    if ttl is None:
        ttl = DEFAULT_TTL
    elif not isinstance(ttl, int) or isinstance(ttl, bool):
        raise _bad("ttl must be an integer number of seconds")
    elif ttl < 0:
        raise _bad("ttl must not be negative")
    return RelayRequest(user, route_type, max(MIN_TTL, min(ttl, MAX_TTL)))


def _bad(reason: str) -> RestError:
    return RestError(400, "8523", reason)


def ice_urls(config: Config) -> tuple[str, ...]:
    """The iceServers URLs of [turn] advertise, else [turn] listen (see the module doc)."""
    turn = config.turn
    addresses = turn.advertise or turn.listen
    fallback = _usable(config.media.address, "127.0.0.1")
    stun: list[str] = []
    relays: dict[str, list[str]] = {"udp": [], "tcp": [], "tls": []}
    for address in addresses:
        hostport = _hostport(address, fallback)
        if address.transport == "udp":
            stun.append(f"stun:{hostport}")
            relays["udp"].append(f"turn:{hostport}?transport=udp")
        elif address.transport == "tcp":
            relays["tcp"].append(f"turn:{hostport}?transport=tcp")
        else:
            relays["tls"].append(f"turns:{hostport}?transport=tcp")
    urls = stun
    if turn.enabled:
        urls += relays["udp"] + relays["tcp"] + relays["tls"]
    return tuple(dict.fromkeys(urls))


def _usable(host: str, fallback: str) -> str:
    """`host`, or `fallback` when it is an unspecified address (0.0.0.0, ::)."""
    try:
        unspecified = ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return host  # a hostname ([turn] advertise)
    return fallback if unspecified else host


def _hostport(address: ListenAddr, fallback: str) -> str:
    host = _usable(address.host, fallback)
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{address.port}"


@dataclass(frozen=True, slots=True)
class RelayIssuer:
    """Answers the endpoint: `secret` is the TURN shared secret, `urls` the ICE URLs."""

    secret: str
    urls: tuple[str, ...]

    def issue(self, body: Mapping[str, object] | None, now: float) -> dict[str, object]:
        """The 200 body for a request `body` at `now` (unix seconds); RestError on bad input."""
        request = parse_request(body)
        user = request.user if request.user is not None else secrets.token_hex(8)
        username, credential = make_credentials(self.secret, user, request.ttl, now)
        expiry = int(now) + request.ttl
        routes = ROUTE_TYPES if request.route_type is None else (request.route_type,)
        servers = [
            {"urls": list(self.urls), "username": username, "credential": credential,
             "routeType": route}
            for route in routes
        ]  # fmt: skip
        log.info("issued TURN credentials %r for %d s", username, request.ttl)
        return {"expiresOn": _iso_utc(expiry), "iceServers": servers}


def relay_issuer(config: Config, secret: str | None = None) -> RelayIssuer:
    """The issuer for `config`; `secret` defaults to gateway.nat.secret.turn_secret(config)
    (which generates it into var/ when [turn] auth_secret is empty)."""
    if secret is None:
        secret = turn_secret(config)
    if not secret:
        raise ValueError("TURN auth secret is empty")
    return RelayIssuer(secret, ice_urls(config))


def _iso_utc(t: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
