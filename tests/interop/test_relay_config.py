"""Issue 7 item 3's Show: the official ``azure-communication-networktraversal`` client
(``CommunicationRelayClient.get_relay_configuration``), built from the real
``acs-gateway connection-string`` with only ``connection_verify`` added (the gateway's
self-signed certificate), gets TURN credentials from the real gateway process; and coturn's
``turnutils_uclient`` then allocates with them on the gateway's TURN server and relays data.

- the ICE URLs name [turn] listen; the credential is base64(HMAC-SHA1(secret, username)) for
  the configured [turn] auth_secret, or for the one the gateway generated into
  var/turn_auth_secret when auth_secret is empty; expiry (in the username and ``expiresOn``)
  is now + ttl;
- a wrong access key gets 401 (through the SDK and raw), a bad body 400 "8523", another
  api-version 400;
- turnutils_uclient (Debian ``coturn``) over UDP and over TCP, two clients relaying to each
  other (``-y``, peers on loopback let through by [turn] allowed_peers), every message back,
  none lost; with a wrong password it cannot allocate. These run once the TURN service
  (``gateway.nat.service``) exists, and need turnutils_uclient (skipped without it on a
  developer machine, failed under CI).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import importlib.util
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from azure.communication.networktraversal import (  # type: ignore[attr-defined]
    CommunicationRelayClient,
    RouteType,
)
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError

from .acs import SignedRequest, cli_connection_string, signed_request
from .conftest import GatewayFactory, running_under_ci
from .harness import LOOPBACK, TURN_SECRET, GatewayProcess, binary_path

PATH = "/networkTraversal/:issueRelayConfiguration"
RELAY_VERSION = "api-version=2022-03-01-preview"
#: loopback peers (the two uclient relays talk to each other) are refused unless let through
LOOPBACK_PEERS = {"turn": {"allowed_peers": ["127.0.0.0/8"]}}


def relay_client(gateway: GatewayProcess, *, access_key: str | None = None) -> Any:
    """``CommunicationRelayClient.from_connection_string(<the CLI's string>,
    connection_verify=<the gateway's certificate>)`` (typed Any: the SDK's annotations are
    type comments)."""
    conn = cli_connection_string(gateway)
    if access_key is not None:
        conn = f"{conn.split(';', 1)[0]};accesskey={access_key}"
    client_class: Any = CommunicationRelayClient
    return client_class.from_connection_string(
        conn, connection_verify=str(gateway.cert_path), connection_timeout=5, read_timeout=15,
        retry_total=0,
    )


def hmac_sha1_b64(secret: str, username: str) -> str:
    digest = hmac.new(secret.encode("utf-8"), username.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def expected_urls(gateway: GatewayProcess) -> list[str]:
    port = gateway.turn_port
    return [
        f"stun:{LOOPBACK}:{port}",
        f"turn:{LOOPBACK}:{port}?transport=udp",
        f"turn:{LOOPBACK}:{port}?transport=tcp",
    ]


def check_ice_server(server: Any, gateway: GatewayProcess, secret: str, ttl: int,
                     before: float, after: float) -> int:
    """Assert one ICE server's URLs and credentials; returns the expiry."""
    assert server.urls == expected_urls(gateway)
    expiry_text, _, _ = server.username.partition(":")
    expiry = int(expiry_text)
    assert int(before) + ttl <= expiry <= int(after) + ttl
    assert server.credential == hmac_sha1_b64(secret, server.username)
    return expiry


@pytest.fixture
def gateway(gateway_factory: GatewayFactory) -> GatewayProcess:
    return gateway_factory(extra_config=LOOPBACK_PEERS)


# -- the SDK against the gateway ---------------------------------------------------------------


def test_sdk_gets_a_relay_configuration(gateway: GatewayProcess) -> None:
    client = relay_client(gateway)
    before = time.time()
    config = client.get_relay_configuration(route_type=RouteType.ANY, ttl=3600)
    after = time.time()
    assert [s.route_type for s in config.ice_servers] == ["any"]
    server = config.ice_servers[0]
    expiry = check_ice_server(server, gateway, TURN_SECRET, 3600, before, after)
    assert int(config.expires_on.timestamp()) == expiry
    assert re.fullmatch(r"[0-9]+:[0-9a-f]{16}", server.username), server.username

    default = client.get_relay_configuration()  # the SDK's ttl 172800, both route types
    assert [s.route_type for s in default.ice_servers] == ["any", "nearest"]
    for each in default.ice_servers:
        check_ice_server(each, gateway, TURN_SECRET, 172800, before, time.time())


def test_sdk_wrong_key_is_401(gateway: GatewayProcess) -> None:
    wrong = base64.b64encode(b"not the gateway's access key!!!!").decode("ascii")
    with pytest.raises(ClientAuthenticationError) as caught:
        relay_client(gateway, access_key=wrong).get_relay_configuration()
    assert caught.value.status_code == 401
    raw = signed_request(
        gateway, SignedRequest("POST", PATH, b"{}", query=RELAY_VERSION, access_key=wrong)
    )
    assert (raw.status, raw.error["code"]) == (401, "Denied"), raw.describe()


@pytest.mark.parametrize(
    "body", [b'{"ttl": -1}', b'{"ttl": "3600"}', b'{"routeType": "fastest"}', b'{"id": 7}', b"{"]
)
def test_bad_body_is_400(gateway: GatewayProcess, body: bytes) -> None:
    raw = signed_request(gateway, SignedRequest("POST", PATH, body, query=RELAY_VERSION))
    assert (raw.status, raw.error["code"]) == (400, "8523"), raw.describe()


def test_bad_body_through_the_sdk_is_400(gateway: GatewayProcess) -> None:
    user = SimpleNamespace(properties={"id": "no spaces allowed"})  # as a CommunicationUser...
    with pytest.raises(HttpResponseError) as caught:
        relay_client(gateway).get_relay_configuration(user=user)
    assert caught.value.status_code == 400


def test_other_api_versions_are_400(gateway: GatewayProcess) -> None:
    raw = signed_request(gateway, SignedRequest("POST", PATH, b"{}"))  # Call Automation's
    assert (raw.status, raw.error["code"]) == (400, "UnsupportedApiVersion"), raw.describe()


# -- the credentials on the gateway's TURN -----------------------------------------------------


def turn_service_exists() -> bool:
    return importlib.util.find_spec("gateway.nat.service") is not None


@pytest.fixture
def uclient() -> str:
    """turnutils_uclient ($TURNUTILS_UCLIENT overrides PATH); skip or, under CI, fail."""
    if not turn_service_exists():
        pytest.skip("the TURN service (gateway.nat.service) is not there yet")
    path = binary_path("turnutils_uclient", "TURNUTILS_UCLIENT")
    if path is None:
        message = "turnutils_uclient not found: apt-get install coturn"
        if running_under_ci():
            pytest.fail(f"{message} (CI=true: interop peers are required)", pytrace=False)
        pytest.skip(message)
    return path


def run_uclient(path: str, gateway: GatewayProcess, username: str, password: str, *,
                tcp: bool, workdir: Path, name: str = "uclient") -> tuple[int, str]:
    """Two clients (``-y``) allocate and relay 10 messages to each other; (exit code, output),
    also kept in ``workdir/NAME-udp.log`` (or -tcp)."""
    command = [path, "-y", "-c", "-n", "10", "-l", "120", "-u", username, "-w", password,
               "-p", str(gateway.turn_port)]  # fmt: skip
    if tcp:
        command.append("-t")
    command.append(LOOPBACK)
    out = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False,
                         cwd=workdir)  # fmt: skip
    text = out.stdout + out.stderr
    (workdir / f"{name}-{'tcp' if tcp else 'udp'}.log").write_text(text)
    return out.returncode, text


def assert_relayed(code: int, text: str) -> None:
    totals = re.search(r"start_mclient: tot_send_msgs=(\d+), tot_recv_msgs=(\d+)", text)
    assert code == 0 and totals is not None, f"uclient exited {code}\n{text[-3000:]}"
    sent, received = int(totals.group(1)), int(totals.group(2))
    assert sent == received == 20, text[-3000:]  # 2 clients x 10 messages, each came back
    assert re.search(r"Total lost packets 0 \(", text), text[-3000:]


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_uclient_allocates_with_sdk_credentials(
    gateway: GatewayProcess, uclient: str, interop_dir: Path, tcp: bool
) -> None:
    config = relay_client(gateway).get_relay_configuration(route_type="nearest", ttl=600)
    server = config.ice_servers[0]
    assert f"turn:{LOOPBACK}:{gateway.turn_port}?transport={'tcp' if tcp else 'udp'}" in (
        server.urls
    )
    assert_relayed(*run_uclient(uclient, gateway, server.username, server.credential, tcp=tcp,
                                workdir=interop_dir))  # fmt: skip
    code, text = run_uclient(uclient, gateway, server.username, "wrong" + server.credential,
                             tcp=tcp, workdir=interop_dir, name="wrong")  # fmt: skip
    assert code != 0 and "tot_recv_msgs=20" not in text, text[-3000:]


# -- a generated secret ------------------------------------------------------------------------


@pytest.fixture
def generated(gateway_factory: GatewayFactory) -> Iterator[GatewayProcess]:
    yield gateway_factory(extra_config={"turn": {"auth_secret": "", "allowed_peers":
                                                 ["127.0.0.0/8"]}})  # fmt: skip


def test_generated_secret_is_shared(generated: GatewayProcess, interop_dir: Path) -> None:
    """[turn] auth_secret empty: the gateway generates var/turn_auth_secret (mode 0600) at
    start; the SDK's credentials are made with it, and the TURN server accepts them."""
    path = generated.workdir / "var" / "turn_auth_secret"
    before = time.time()
    config = relay_client(generated).get_relay_configuration(route_type="any", ttl=900)
    assert path.stat().st_mode & 0o777 == 0o600
    secret = path.read_text().strip()
    assert len(secret) >= 40 and secret != TURN_SECRET
    server = config.ice_servers[0]
    check_ice_server(server, generated, secret, 900, before, time.time())
    if not turn_service_exists():
        return
    path_uclient = binary_path("turnutils_uclient", "TURNUTILS_UCLIENT")
    if path_uclient is None:
        return  # the uclient tests above report the missing binary
    assert_relayed(*run_uclient(path_uclient, generated, server.username, server.credential,
                                tcp=False, workdir=interop_dir))  # fmt: skip
