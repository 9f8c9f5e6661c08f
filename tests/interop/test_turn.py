"""The gateway's STUN/TURN server (issue 7 items 1, 2, 4, 5) against coturn's own clients.

Every test starts a real gateway (``python -m gateway.cli run``) on free loopback ports and
drives it with Debian coturn's ``turnutils_stunclient`` / ``turnutils_uclient``, relaying to
``turnutils_peer`` (an echo server) on 127.0.0.1, or with a small STUN client built on
gateway.nat.stun where the coturn tools cannot say what is needed (TCP Binding, each refused
peer address's exact error code). Traffic stays on 127.0.0.1; permissions for the refused
addresses of item 4 are only asked for, nothing is ever sent to them.

turnutils_uclient runs sessions of an RTP and an RTCP allocation each (EVEN-PORT with the R bit,
then RESERVATION-TOKEN) unless ``-c``; it uses channels (numbers anywhere in RFC 5766's
0x4000-0x7FFF) unless ``-s`` (Send and Data indications); ``-t`` is TCP to the server; ``-W``
makes coturn-style time-limited credentials from the shared secret (username "EXPIRY:USER").
"""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.nat.credentials import make_credentials
from gateway.nat.stun import (
    XOR_PEER_ADDRESS,
    XOR_RELAYED_ADDRESS,
    Class,
    Message,
    Method,
    long_term_key,
)

from .conftest import GatewayFactory, _missing_peer
from .harness import LOOPBACK, TURN_SECRET, GatewayProcess, free_port

USER, PASSWORD = "alice", "wonderland"
REALM = "gateway.local"
PACKETS = 60  # per client and allocation
SIZE = 120  # octets per relayed message (-l)

# Issue 7 item 4: every peer address a relay must refuse unless [turn] allowed_peers lets it
# through, with the IPv6 spellings that carry a refused IPv4 address.
REFUSED_PEERS = [
    "127.0.0.1", "127.255.255.254",  # loopback
    "0.0.0.0", "0.1.2.3",  # unspecified, "this network"
    "10.0.0.1", "172.16.0.1", "172.31.255.254", "192.168.1.1",  # RFC 1918
    "169.254.169.254", "169.254.1.1",  # link-local, cloud metadata
    "100.64.0.1", "100.127.255.254",  # CGNAT
    "224.0.0.1", "239.255.255.250",  # multicast
    "255.255.255.255",  # limited broadcast
    "::ffff:127.0.0.1", "::ffff:7f00:2", "0:0:0:0:0:ffff:10.0.0.1",  # IPv4-mapped
    "::ffff:169.254.169.254", "::ffff:100.64.0.1", "::ffff:192.168.0.1", "::ffff:0.0.0.0",
    "::ffff:224.0.0.1", "::ffff:255.255.255.255",
    "::127.0.0.1", "::10.0.0.1", "::169.254.169.254", "::a9fe:a9fe",  # IPv4-compatible
    "::ffff:0:127.0.0.1",  # IPv4-translated
    "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe",  # NAT64 of loopback and the metadata address
    "::1", "::", "fe80::1", "fc00::1", "ff02::1",  # IPv6 loopback, unspecified, local, multicast
]  # fmt: skip
PUBLIC_PEER = "198.51.100.7"  # let through by the default policy (a permission; nothing sent)


# --- coturn's tools ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def coturn() -> dict[str, str]:
    tools: dict[str, str] = {}
    for name in ("turnutils_uclient", "turnutils_stunclient", "turnutils_peer"):
        for directory in os.environ.get("PATH", "").split(os.pathsep):
            candidate = Path(directory) / name
            if candidate.is_file() and os.access(candidate, os.X_OK):
                tools[name] = str(candidate)
                break
        else:
            _missing_peer(f"{name} not found: install Debian coturn (apt-get install coturn)")
    return tools


@pytest.fixture
def echo_peer(coturn: dict[str, str]) -> Iterator[int]:
    """turnutils_peer on 127.0.0.1 (it echoes every datagram); its UDP port."""
    for _ in range(5):
        port = free_port("udp")
        proc = subprocess.Popen(
            [coturn["turnutils_peer"], "-L", LOOPBACK, "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.3)
        if proc.poll() is None:
            break
    else:
        pytest.fail("turnutils_peer did not start")
    try:
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class UclientResult:
    """What turnutils_uclient printed at the end of its run."""

    def __init__(self, text: str, code: int) -> None:
        self.text = text
        self.code = code
        totals = re.findall(r"start_mclient: tot_send_msgs=(\d+), tot_recv_msgs=(\d+)", text)
        lost = re.search(r"Total lost packets (\d+)", text)
        self.sent = int(totals[-1][0]) if totals else -1
        self.received = int(totals[-1][1]) if totals else -1
        self.lost = int(lost.group(1)) if lost else -1
        self.errors = re.findall(r"error \d+ \([^)]*\)", text)


def uclient(
    coturn: dict[str, str], gw: GatewayProcess, peer_port: int, *flags: str, timeout: float = 60
) -> UclientResult:
    args = [
        coturn["turnutils_uclient"], *flags, "-p", str(gw.turn_port), "-e", LOOPBACK,
        "-r", str(peer_port), "-n", str(PACKETS), "-l", str(SIZE), "-z", "5", LOOPBACK,
    ]  # fmt: skip
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    return UclientResult(proc.stdout + proc.stderr, proc.returncode)


def usage_rows(gw: GatewayProcess) -> list[dict[str, object]]:
    with sqlite3.connect(gw.cdr_path) as db:
        db.row_factory = sqlite3.Row
        return [dict(row) for row in db.execute("SELECT * FROM turn_usage ORDER BY started")]


def turn_status(gw: GatewayProcess) -> dict[str, int]:
    doc = json.loads((gw.cdr_path.parent / "trunks.json").read_text())
    turn: dict[str, int] = doc["turn"]
    return turn


# --- a small STUN/TURN client on gateway.nat.stun ------------------------------------------


class StunClient:
    """Requests over UDP or TCP to the gateway; long-term credentials answered on 401."""

    def __init__(
        self, port: int, transport: str = "udp", username: str = USER, password: str = PASSWORD
    ) -> None:
        kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
        self.sock = socket.socket(socket.AF_INET, kind)
        self.sock.settimeout(3.0)
        self.sock.connect((LOOPBACK, port))
        self.transport = transport
        self.username = username
        self.key = long_term_key(username, REALM, password)
        self.nonce: str | None = None

    def close(self) -> None:
        self.sock.close()

    def exchange(self, msg: Message) -> Message:
        self.sock.sendall(bytes(msg))
        if self.transport == "udp":
            return Message.parse(self.sock.recv(65535))
        header = self._read(20)
        (length,) = struct.unpack_from("!H", header, 2)
        return Message.parse(header + self._read(length))

    def _read(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                raise ConnectionError("the gateway closed the connection")
            data += chunk
        return data

    def request(self, method: int, build: object = None) -> Message:
        """A TURN request with credentials (a first 401 gives realm and nonce)."""
        for _ in range(3):
            msg = Message(Method(method), Class.REQUEST, os.urandom(12))
            if callable(build):
                msg = build(msg)
            if self.nonce is not None:
                msg = (
                    msg.with_username(self.username).with_realm(REALM).with_nonce(self.nonce)
                    .with_integrity(self.key).with_fingerprint()
                )  # fmt: skip
            reply = self.exchange(msg)
            error = reply.error_code()
            if error is not None and error.code in (401, 438) and reply.nonce():
                if self.nonce is not None and error.code == 401:
                    return reply  # wrong credentials
                self.nonce = reply.nonce()
                continue
            return reply
        raise AssertionError("no answer past the challenges")

    def allocate(self) -> Message:
        return self.request(Method.ALLOCATE, lambda m: m.with_requested_transport())

    def permit(self, host: str, port: int = 9) -> Message:
        return self.request(
            Method.CREATE_PERMISSION,
            lambda m: m.with_xor_address(XOR_PEER_ADDRESS, host, port),
        )

    def bind(self, channel: int, host: str, port: int = 9) -> Message:
        return self.request(
            Method.CHANNEL_BIND,
            lambda m: m.with_channel_number(channel).with_xor_address(XOR_PEER_ADDRESS, host, port),
        )


def code_of(reply: Message) -> int:
    error = reply.error_code()
    return 0 if error is None and reply.cls == Class.SUCCESS else (error.code if error else -1)


def relay_gateway(factory: GatewayFactory, **turn: object) -> GatewayProcess:
    config: dict[str, object] = {"users": {USER: PASSWORD}, "allowed_peers": ["127.0.0.0/8"]}
    config.update(turn)
    return factory(tls=False, extra_config={"turn": config})


# --- STUN ----------------------------------------------------------------------------------


def test_stunclient_gets_its_mapped_address_over_udp_and_tcp(
    gateway_factory: GatewayFactory, coturn: dict[str, str]
) -> None:
    gw = gateway_factory(tls=False)
    local = free_port("udp")
    out = subprocess.run(
        [coturn["turnutils_stunclient"], "-p", str(gw.turn_port), "-L", LOOPBACK, LOOPBACK],
        capture_output=True, text=True, timeout=20, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert re.search(r"UDP reflexive addr: 127\.0\.0\.1:\d+", out.stdout), out.stdout
    # turnutils_stunclient speaks UDP only: the TCP Binding with our own client, and a UDP one
    # from a known port to check the mapped address is the source address exactly
    for transport in ("tcp", "udp"):
        client = StunClient(gw.turn_port, transport)
        if transport == "udp":
            client.sock.close()
            client.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            client.sock.settimeout(3.0)
            client.sock.bind((LOOPBACK, local))
            client.sock.connect((LOOPBACK, gw.turn_port))
        reply = client.exchange(Message(Method.BINDING, Class.REQUEST, os.urandom(12)))
        mapped = reply.xor_address()
        assert reply.cls == Class.SUCCESS and mapped == client.sock.getsockname()
        assert reply.software() == "acs-gateway"
        client.close()


# --- TURN relaying with coturn's client ------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "flags"),
    [
        ("udp channels rtp+rtcp", []),
        ("udp channels no rtcp", ["-c"]),
        ("udp send/data indications", ["-s"]),
        ("tcp channels rtp+rtcp", ["-t"]),
        ("tcp channels no rtcp", ["-t", "-c"]),
        ("tcp send/data indications", ["-t", "-s"]),
    ],
)
@pytest.mark.parametrize("credentials", ["static", "time-limited"])
def test_uclient_relays_with_no_loss(
    gateway_factory: GatewayFactory,
    coturn: dict[str, str],
    echo_peer: int,
    name: str,
    flags: list[str],
    credentials: str,
) -> None:
    gw = relay_gateway(gateway_factory)
    auth = (
        ["-u", USER, "-w", PASSWORD]
        if credentials == "static"
        else ["-W", TURN_SECRET, "-u", "bob"]
    )
    result = uclient(coturn, gw, echo_peer, "-m", "2", *flags, *auth)
    assert result.code == 0, result.text[-3000:]
    assert result.errors == [], result.text[-3000:]
    assert result.sent >= 2 * PACKETS, result.text[-3000:]
    assert result.received == result.sent and result.lost == 0, result.text[-3000:]
    time.sleep(0.5)
    # the same figures through the Prometheus endpoint, before the gateway stops
    metrics = gw.metrics()
    relayed = {d: metrics.get(("acs_gateway_turn_relayed_packets_total", (("direction", d),)))
               for d in ("to_peer", "to_client")}
    assert relayed == {"to_peer": result.sent, "to_client": result.received}, relayed
    assert metrics.get(("acs_gateway_turn_relayed_bytes_total", (("direction", "to_peer"),))) \
        == SIZE * result.sent
    assert (metrics.get(("acs_gateway_turn_allocations_created_total", ())) or 0) >= 2
    assert metrics.get(("acs_gateway_turn_error_responses_total", (("code", "401"),))), \
        "the first Allocate of each client is challenged"
    status = turn_status_after_stop(gw)
    rows = usage_rows(gw)
    assert rows, "no turn_usage rows"
    transport = "tcp" if "-t" in flags else "udp"
    assert {row["transport"] for row in rows} == {transport}
    if credentials == "static":
        assert {row["username"] for row in rows} == {USER}
    else:
        assert all(re.fullmatch(r"\d+:bob", str(row["username"])) for row in rows), rows
    sent_in = sum(int(str(row["packets_in"])) for row in rows)
    echoed = sum(int(str(row["packets_out"])) for row in rows)
    assert sent_in == result.sent and echoed == result.received, (result.sent, rows)
    assert sum(int(str(row["bytes_in"])) for row in rows) == SIZE * result.sent
    assert sum(int(str(row["bytes_out"])) for row in rows) == SIZE * result.received
    for row in rows:
        assert row["relay"] and str(row["client"]).startswith(f"{LOOPBACK}:")
        started, ended = float(str(row["started"])), float(str(row["ended"]))
        assert abs(started - time.time()) < 120 and started <= ended
    assert status["packets_to_peer"] == result.sent
    assert status["packets_to_client"] == result.received
    assert status["handler_errors"] == 0 and status["allocations"] == 0


def turn_status_after_stop(gw: GatewayProcess) -> dict[str, int]:
    """Stop the gateway (usage rows of the allocations still live are written as it stops)
    and read the last status it wrote."""
    assert gw.stop() == 0, gw.log_tail()
    return turn_status(gw)


def test_uclient_with_a_wrong_password_gets_401(
    gateway_factory: GatewayFactory, coturn: dict[str, str], echo_peer: int
) -> None:
    gw = relay_gateway(gateway_factory)
    result = uclient(coturn, gw, echo_peer, "-c", "-u", USER, "-w", "not-the-password", timeout=30)
    assert result.sent <= 0 and "Cannot complete Allocation" in result.text, result.text[-2000:]
    assert gw.stop() == 0
    status = turn_status(gw)
    assert status["auth_failures"] >= 1 and status["allocations_total"] == 0
    assert usage_rows(gw) == []


def test_loopback_peer_refused_by_default_policy_for_uclient(
    gateway_factory: GatewayFactory, coturn: dict[str, str], echo_peer: int
) -> None:
    gw = relay_gateway(gateway_factory, allowed_peers=[])
    result = uclient(coturn, gw, echo_peer, "-c", "-u", USER, "-w", PASSWORD, timeout=30)
    assert re.search(r"error 403", result.text), result.text[-2000:]
    assert result.received <= 0


# --- peer policy (issue 7 item 4) ----------------------------------------------------------


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_every_refused_peer_probe_gets_403(gateway_factory: GatewayFactory, transport: str) -> None:
    gw = relay_gateway(gateway_factory, allowed_peers=[])
    client = StunClient(gw.turn_port, transport)
    try:
        allocated = client.allocate()
        assert code_of(allocated) == 0, allocated.error_code()
        assert allocated.xor_address(XOR_RELAYED_ADDRESS) is not None
        codes = {peer: code_of(client.permit(peer)) for peer in REFUSED_PEERS}
        assert codes == dict.fromkeys(REFUSED_PEERS, 403)
        for channel, peer in enumerate(("127.0.0.1", "169.254.169.254", "::ffff:10.0.0.1")):
            assert code_of(client.bind(0x4000 + channel, peer)) == 403
        assert code_of(client.permit(PUBLIC_PEER)) == 0  # the policy lets the Internet through
        assert gw.metric("acs_gateway_turn_error_responses_total", code="403") \
            == len(REFUSED_PEERS) + 3
        assert gw.metric("acs_gateway_turn_allocations") == 1
        assert gw.metric("acs_gateway_turn_permissions") == 1
    finally:
        client.close()
    assert gw.stop() == 0
    status = turn_status(gw)
    assert status["refused_peers"] == len(REFUSED_PEERS) + 3
    assert status["error_403"] == len(REFUSED_PEERS) + 3


def test_time_limited_credentials_made_like_coturn(gateway_factory: GatewayFactory) -> None:
    """username "EXPIRY:USER", password base64(HMAC-SHA1(secret, username)); expired: 401."""
    gw = relay_gateway(gateway_factory)
    username, password = make_credentials(TURN_SECRET, "carol", 600, time.time())
    client = StunClient(gw.turn_port, "udp", username, password)
    assert code_of(client.allocate()) == 0
    client.close()
    username, password = make_credentials(TURN_SECRET, "carol", 600, time.time() - 1200)
    expired = StunClient(gw.turn_port, "udp", username, password)
    assert code_of(expired.allocate()) == 401
    expired.close()


# --- TCP clients without an allocation -----------------------------------------------------


def test_idle_tcp_clients_are_closed_and_allocated_ones_kept(
    gateway_factory: GatewayFactory,
) -> None:
    """[turn] tcp_idle_timeout: a TCP client that never allocates is closed by the gateway
    after it (so idle connections cannot hold the max_tcp_connections slots); one holding an
    allocation stays, and is still served."""
    gw = relay_gateway(gateway_factory, tcp_idle_timeout=5)
    started = time.monotonic()
    idle = StunClient(gw.turn_port, "tcp")
    busy = StunClient(gw.turn_port, "tcp")
    try:
        binding = idle.exchange(Message(Method.BINDING, Class.REQUEST, os.urandom(12)))
        assert binding.cls == Class.SUCCESS  # a Binding is no allocation
        assert code_of(busy.allocate()) == 0
        idle.sock.settimeout(15.0)
        try:
            closed = idle.sock.recv(1) == b""
        except ConnectionResetError:  # the gateway aborts it: nothing is owed to an idle client
            closed = True
        assert closed
        waited = time.monotonic() - started
        assert 4.0 <= waited <= 12.0, waited  # 5 s, checked every 1.25 s
        # the allocated client is still served on its connection
        assert code_of(busy.permit(LOOPBACK)) == 0
    finally:
        idle.close()
        busy.close()
    assert gw.stop() == 0
    status = turn_status(gw)
    assert status["tcp_idle_closed"] == 1, status


# --- [turn] enabled = false ----------------------------------------------------------------


def test_turn_disabled_serves_stun_and_answers_allocate_403(
    gateway_factory: GatewayFactory, coturn: dict[str, str], echo_peer: int
) -> None:
    gw = gateway_factory(tls=False, turn=False, extra_config={"turn": {"users": {USER: PASSWORD}}})
    assert re.search(r"STUN \(TURN off\) listening on udp:", gw.log_text())
    out = subprocess.run(
        [coturn["turnutils_stunclient"], "-p", str(gw.turn_port), LOOPBACK],
        capture_output=True, text=True, timeout=20, check=False,
    )  # fmt: skip
    assert re.search(r"UDP reflexive addr: 127\.0\.0\.1:\d+", out.stdout), out.stdout
    for transport in ("udp", "tcp"):
        client = StunClient(gw.turn_port, transport)
        binding = client.exchange(Message(Method.BINDING, Class.REQUEST, os.urandom(12)))
        assert binding.cls == Class.SUCCESS
        # 403 at once: no challenge, with or without credentials
        assert code_of(client.allocate()) == 403
        client.nonce = "made-up"
        assert code_of(client.allocate()) == 403
        client.close()
    result = uclient(coturn, gw, echo_peer, "-c", "-u", USER, "-w", PASSWORD, timeout=30)
    assert result.received <= 0 and "403" in result.text, result.text[-2000:]
    assert gw.stop() == 0
    assert usage_rows(gw) == []
    assert turn_status(gw)["allocations_total"] == 0
