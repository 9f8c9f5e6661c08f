"""TURN credentials over REST (gateway/rest/relayconfig.py, gateway/nat/secret.py and the route
in gateway/rest/server.py).

The pure parts first: request validation, the ICE URLs of a config, the issued body and its
credentials (checked against gateway.nat.credentials and an independent HMAC-SHA1), the shared
secret kept in var/. Then the route, served on loopback HTTPS by gateway.rest.server on its own
reactor thread (as tests/unit/test_rest_server.py does), driven by the official
``azure-communication-networktraversal`` client and by raw signed requests for what it cannot
send.
"""

from __future__ import annotations

import base64
import calendar
import hashlib
import hmac
import http.client
import json
import ssl
import stat
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from azure.communication.networktraversal import (  # type: ignore[attr-defined]
    CommunicationRelayClient,
    RouteType,
)
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from twisted.internet.epollreactor import EPollReactor
from twisted.internet.threads import blockingCallFromThread

from gateway.config import Config, HostPort, ListenAddr, MediaConfig, RestConfig, TurnConfig
from gateway.errors import ConfigError
from gateway.nat.credentials import check_credentials, parse_username
from gateway.nat.secret import TURN_SECRET_FILE, turn_secret
from gateway.rest.errors import RestError
from gateway.rest.hmac import sign
from gateway.rest.relayconfig import (
    DEFAULT_TTL,
    MAX_TTL,
    MIN_TTL,
    RelayIssuer,
    RelayRequest,
    ice_urls,
    parse_request,
    relay_issuer,
)
from gateway.rest.server import Reply, listen, route
from gateway.tlsutil import ensure_certificate

SECRET = "relay test secret"
KEY = b"relay config test access key 32"
KEY_B64 = base64.b64encode(KEY).decode("ascii")
VERSION = "api-version=2022-03-01-preview"
PATH = "/networkTraversal/:issueRelayConfiguration"
NOW = 1_700_000_000.25


def turn_config(*listen: str, **kwargs: Any) -> Config:
    addresses = tuple(_listen(text) for text in listen)
    media = MediaConfig(address=kwargs.pop("media_address", "127.0.0.1"))
    return Config(turn=TurnConfig(listen=addresses, **kwargs), media=media)


def _listen(text: str) -> ListenAddr:
    transport, rest = text.split(":", 1)
    host, _, port = rest.rpartition(":")
    assert transport in ("udp", "tcp", "tls")
    return ListenAddr(transport, host.strip("[]"), int(port))  # type: ignore[arg-type]


def hmac_sha1_b64(secret: str, text: str) -> str:
    digest = hmac.new(secret.encode(), text.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def iso_seconds(text: str) -> int:
    return calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ"))


# -- request validation ------------------------------------------------------------------------


def test_defaults() -> None:
    assert parse_request(None) == RelayRequest(None, None, DEFAULT_TTL) == parse_request({})
    assert parse_request({"id": None, "routeType": None, "ttl": None}) == RelayRequest()
    assert DEFAULT_TTL == MAX_TTL == 172800


def test_fields_are_taken() -> None:
    body = {"id": "8:acs:abc_123", "routeType": "Nearest", "ttl": 3600, "other": [1]}
    assert parse_request(body) == RelayRequest("8:acs:abc_123", "nearest", 3600)


@pytest.mark.parametrize(
    ("ttl", "effective"),
    [(0, MIN_TTL), (1, MIN_TTL), (MIN_TTL, MIN_TTL), (86400, 86400), (MAX_TTL, MAX_TTL),
     (MAX_TTL + 1, MAX_TTL), (10**30, MAX_TTL)],
)  # fmt: skip
def test_ttl_is_clamped(ttl: int, effective: int) -> None:
    assert parse_request({"ttl": ttl}).ttl == effective


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"ttl": -1}, "ttl must not be negative"),
        ({"ttl": 3600.0}, "ttl must be an integer"),
        ({"ttl": "3600"}, "ttl must be an integer"),
        ({"ttl": True}, "ttl must be an integer"),
        ({"routeType": "fastest"}, "routeType must be any or nearest"),
        ({"routeType": 1}, "routeType must be any or nearest"),
        ({"id": ""}, "id must be a non-empty string"),
        ({"id": 42}, "id must be a non-empty string"),
        ({"id": "has space"}, "printable ASCII"),
        ({"id": "new\nline"}, "printable ASCII"),
        ({"id": "caf\u00e9"}, "printable ASCII"),
        ({"id": "x" * 257}, "longer than 256"),
    ],
)
def test_bad_input_is_400_8523(body: Mapping[str, object], reason: str) -> None:
    with pytest.raises(RestError) as caught:
        parse_request(body)
    assert (caught.value.status, caught.value.code) == (400, "8523")
    assert reason in caught.value.message


# -- URLs --------------------------------------------------------------------------------------


def test_urls_of_the_default_listen() -> None:
    assert ice_urls(Config()) == (
        "stun:127.0.0.1:3478",
        "turn:127.0.0.1:3478?transport=udp",
        "turn:127.0.0.1:3478?transport=tcp",
    )


def test_urls_order_dedup_and_ipv6() -> None:
    config = turn_config("tcp:192.0.2.1:443", "udp:192.0.2.1:3478", "udp:[2001:db8::1]:3479",
                         "udp:192.0.2.1:3478")  # fmt: skip
    assert ice_urls(config) == (
        "stun:192.0.2.1:3478",
        "stun:[2001:db8::1]:3479",
        "turn:192.0.2.1:3478?transport=udp",
        "turn:[2001:db8::1]:3479?transport=udp",
        "turn:192.0.2.1:443?transport=tcp",
    )


def test_unspecified_listen_takes_the_media_address() -> None:
    config = turn_config("udp:0.0.0.0:3478", "tcp:[::]:3478", media_address="198.51.100.7")
    assert ice_urls(config) == (
        "stun:198.51.100.7:3478",
        "turn:198.51.100.7:3478?transport=udp",
        "turn:198.51.100.7:3478?transport=tcp",
    )
    both_unspecified = turn_config("udp:0.0.0.0:3478", media_address="0.0.0.0")
    assert ice_urls(both_unspecified)[0] == "stun:127.0.0.1:3478"


def test_advertise_replaces_listen() -> None:
    advertise = (ListenAddr("udp", "turn.example.net", 3478), ListenAddr("tcp", "203.0.113.5", 443))
    config = turn_config("udp:0.0.0.0:3478", advertise=advertise)
    assert ice_urls(config) == (
        "stun:turn.example.net:3478",
        "turn:turn.example.net:3478?transport=udp",
        "turn:203.0.113.5:443?transport=tcp",
    )


def test_turn_disabled_gives_stun_only() -> None:
    config = turn_config("udp:127.0.0.1:3478", "tcp:127.0.0.1:3478", enabled=False)
    assert ice_urls(config) == ("stun:127.0.0.1:3478",)


# -- the issued body ---------------------------------------------------------------------------


def test_issue_with_an_id_and_a_route_type() -> None:
    issuer = relay_issuer(Config(), SECRET)
    body = issuer.issue({"id": "8:acs:alice", "routeType": "any", "ttl": 3600}, NOW)
    expiry = int(NOW) + 3600
    assert body["expiresOn"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expiry))
    assert iso_seconds(str(body["expiresOn"])) == expiry
    servers = body["iceServers"]
    assert isinstance(servers, list) and len(servers) == 1
    server = servers[0]
    assert server["routeType"] == "any"
    assert server["urls"] == list(ice_urls(Config()))
    assert server["username"] == f"{expiry}:8:acs:alice"
    assert parse_username(server["username"]) == (expiry, "8:acs:alice")
    assert server["credential"] == hmac_sha1_b64(SECRET, server["username"])
    assert check_credentials(SECRET, server["username"], server["credential"], expiry)
    assert not check_credentials(SECRET, server["username"], server["credential"], expiry + 1)
    assert not check_credentials("other", server["username"], server["credential"], NOW)


def test_issue_without_anything() -> None:
    body = relay_issuer(Config(), SECRET).issue(None, NOW)
    servers: Any = body["iceServers"]
    assert [s["routeType"] for s in servers] == ["any", "nearest"]
    first, second = servers
    assert first["username"] == second["username"]
    assert first["credential"] == second["credential"]
    expiry, user = parse_username(first["username"])
    assert expiry == int(NOW) + DEFAULT_TTL
    assert len(user) == 16 and int(user, 16) >= 0
    other = relay_issuer(Config(), SECRET).issue(None, NOW)["iceServers"]
    assert parse_username(other[0]["username"])[1] != user  # type: ignore[index]


def test_issuer_needs_a_secret() -> None:
    with pytest.raises(ValueError, match="empty"):
        relay_issuer(Config(), "")


# -- the shared secret -------------------------------------------------------------------------


def test_configured_secret_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = Config(turn=TurnConfig(auth_secret="configured"))
    assert turn_secret(config) == "configured"
    assert relay_issuer(config).secret == "configured"
    assert not (tmp_path / TURN_SECRET_FILE).exists()


def test_secret_is_generated_once_into_var(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    first = turn_secret(Config())
    path = tmp_path / TURN_SECRET_FILE
    assert path.read_text() == first + "\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) >= 40 and first.isascii()
    assert turn_secret(Config()) == first
    assert relay_issuer(Config()).secret == first
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left


def test_concurrent_generation_agrees(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    seen: list[str] = []
    threads = [threading.Thread(target=lambda: seen.append(turn_secret(Config())))
               for _ in range(8)]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == 8 and len(set(seen)) == 1


def test_empty_secret_file_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / TURN_SECRET_FILE
    path.parent.mkdir()
    path.write_text("\n")
    with pytest.raises(ConfigError, match="empty TURN auth secret"):
        turn_secret(Config())


# -- the route, served -------------------------------------------------------------------------


class NoApi:
    """The Call Automation Api: the relay route must never reach it."""

    def handle(self, op: str, ids: Mapping[str, str], body: Mapping[str, object] | None) -> Reply:
        raise AssertionError(f"the Api got {op}")

    def recording_file(self, recording_id: str) -> Path | None:
        raise AssertionError("the Api got a download")


@dataclass
class Served:
    port: int
    cert: Path

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self, key: str = KEY_B64) -> Any:
        """The SDK's client (untyped: the package's annotations are type comments)."""
        client_class: Any = CommunicationRelayClient
        return client_class.from_connection_string(
            f"endpoint=https://{self.host}/;accesskey={key}",
            connection_verify=str(self.cert),
            retry_total=0,
        )

    def raw(self, target: str, body: bytes, key: bytes = KEY) -> tuple[int, bytes]:
        context = ssl.create_default_context(cafile=str(self.cert))
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=context, timeout=10)
        try:
            headers = sign("POST", target, self.host, body, key, time.time())
            headers["Content-Type"] = "application/json"
            conn.request("POST", target, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()


@pytest.fixture(scope="module")
def reactor() -> Iterator[Any]:
    own = EPollReactor()  # type: ignore[no-untyped-call]
    thread = threading.Thread(target=own.run, kwargs={"installSignalHandlers": False}, daemon=True)
    thread.start()
    yield own
    own.callFromThread(own.stop)
    thread.join(10)


def _serve(reactor: Any, tmp: Path, relay: RelayIssuer | None) -> Iterator[Served]:
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    ensure_certificate(cert, key, ["127.0.0.1"])
    rest = RestConfig(listen=HostPort("127.0.0.1", 0))
    port = blockingCallFromThread(reactor, lambda: listen(reactor, rest, cert, key, NoApi(), KEY,
                                                          relay=relay))
    yield Served(port.getHost().port, cert)  # type: ignore[attr-defined]
    blockingCallFromThread(reactor, port.stopListening)


@pytest.fixture(scope="module")
def gw(reactor: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    config = turn_config("udp:127.0.0.1:3478", "tcp:127.0.0.1:3478")
    yield from _serve(reactor, tmp_path_factory.mktemp("relay"), relay_issuer(config, SECRET))


def error_of(body: bytes) -> tuple[str, str]:
    error = json.loads(body)["error"]
    return error["code"], error["message"]


def test_route_table() -> None:
    assert route("POST", PATH).op == "issue_relay_configuration"
    assert route("POST", "/networkTraversal/%3AissueRelayConfiguration").op == (
        "issue_relay_configuration"
    )
    with pytest.raises(RestError) as caught:
        route("GET", PATH)
    assert caught.value.status == 405


def test_sdk_gets_a_relay_configuration(gw: Served) -> None:
    before = time.time()
    config = gw.client().get_relay_configuration(route_type=RouteType.NEAREST, ttl=7200)
    after = time.time()
    assert len(config.ice_servers) == 1
    server = config.ice_servers[0]
    assert server.route_type == "nearest"
    assert server.urls == [
        "stun:127.0.0.1:3478",
        "turn:127.0.0.1:3478?transport=udp",
        "turn:127.0.0.1:3478?transport=tcp",
    ]
    expiry, user = parse_username(server.username)
    assert int(before) + 7200 <= expiry <= int(after) + 7200
    assert len(user) == 16
    assert int(config.expires_on.timestamp()) == expiry
    assert server.credential == hmac_sha1_b64(SECRET, server.username)


def test_sdk_default_gives_both_route_types(gw: Served) -> None:
    config = gw.client().get_relay_configuration()
    assert [s.route_type for s in config.ice_servers] == ["any", "nearest"]
    expiry, _ = parse_username(config.ice_servers[0].username)
    assert abs(expiry - (time.time() + DEFAULT_TTL)) < 5


def test_sdk_with_a_user(gw: Served) -> None:
    from azure.communication.networktraversal._shared.models import CommunicationUserIdentifier

    config = gw.client().get_relay_configuration(
        user=CommunicationUserIdentifier("8:acs:resource_user-1"), route_type="any"
    )
    assert parse_username(config.ice_servers[0].username)[1] == "8:acs:resource_user-1"


def test_sdk_with_a_wrong_key_is_401(gw: Served) -> None:
    wrong = base64.b64encode(b"w" * 32).decode("ascii")
    with pytest.raises(ClientAuthenticationError) as caught:
        gw.client(wrong).get_relay_configuration()
    assert caught.value.status_code == 401


def test_sdk_sees_the_400(gw: Served) -> None:
    with pytest.raises(HttpResponseError) as caught:
        gw.client().get_relay_configuration(user=_Ident("bad id"))
    assert caught.value.status_code == 400
    assert caught.value.error is not None and caught.value.error.code == "8523"


class _Ident:
    def __init__(self, raw: str) -> None:
        self.properties = {"id": raw}


@pytest.mark.parametrize(
    "body", [b'{"ttl": -5}', b'{"ttl": 1.5}', b'{"routeType": "x"}', b'{"id": ""}', b"[1]", b"{"]
)
def test_bad_bodies_are_400(gw: Served, body: bytes) -> None:
    status, answer = gw.raw(f"{PATH}?{VERSION}", body)
    assert (status, error_of(answer)[0]) == (400, "8523")


def test_empty_body_takes_defaults(gw: Served) -> None:
    status, answer = gw.raw(f"{PATH}?{VERSION}", b"")
    assert status == 200
    assert len(json.loads(answer)["iceServers"]) == 2


def test_api_versions_are_per_route(gw: Served) -> None:
    status, answer = gw.raw(f"{PATH}?api-version=2026-03-12", b"{}")
    code, message = error_of(answer)
    assert (status, code) == (400, "UnsupportedApiVersion")
    assert "2022-03-01-preview" in message
    status, answer = gw.raw(f"/calling/callConnections?{VERSION}", b"{}")
    assert (status, error_of(answer)[0]) == (400, "UnsupportedApiVersion")


def test_raw_bad_signature_is_401(gw: Served) -> None:
    status, answer = gw.raw(f"{PATH}?{VERSION}", b"{}", key=b"wrong")
    assert (status, error_of(answer)[0]) == (401, "Denied")


def test_without_an_issuer_the_route_is_404(
    reactor: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    for served in _serve(reactor, tmp_path_factory.mktemp("norelay"), None):
        status, answer = served.raw(f"{PATH}?{VERSION}", b"{}")
        assert (status, error_of(answer)[0]) == (404, "NotFound")
