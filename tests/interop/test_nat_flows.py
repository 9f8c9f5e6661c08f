"""Issue 7's Show, the four call flows of DESIGN.md on real network topologies.

Every test builds its own network namespaces (tests/interop/netns.py): the gateway runs in one
(``ip netns exec``), listening for SIP, STUN/TURN and media on that namespace's address
(10.71.0.2); a router namespace (forwarding on) joins it to one subnet per site; a site is a
client namespace, routed directly or behind a NAT namespace (iptables ``MASQUERADE``,
port-preserving, or ``MASQUERADE --random-fully``, symmetric). Clients are baresip 1.0.0
softphones (modules ice, stun, turn, g711, ausine, sndfile) run with ``ip netns exec``, and, for
case 4, a client written here (TURN over TCP, SIP over TCP) whose UDP is dropped by iptables.
Nothing runs in, or changes, the root namespace: the test process itself opens its sockets in a
namespace (``Netns.entered``) and every namespace is deleted afterwards.

Evidence beyond the tones (sine tones recorded by the receivers, checked by
:func:`.audio.assert_tone`): the router counts forwarded UDP per path with iptables rules that
only count (``-m comment``, no target): client to client, to/from the gateway's media ports,
to/from its TURN relay ports, to/from its STUN/TURN port; baresip's ``-v`` log has ICE's check
list once the checks complete, the selected pair marked ``*`` with both candidates' types and
addresses (``v2:relay:10.71.0.2:13150 <---> srflx:10.71.2.2:44586``); the gateway's status
file (``trunks.json``:
``gateway`` media counters, ``turn`` counters), ``calls.json`` and CDR database (``cdr_legs``,
``turn_usage``) are read after the gateway has stopped (its stop writes them last).

- Case 1: two users in two routed subnets register and call each other by name with ICE: the
  tone crosses both ways on the direct path; the gateway's media ports and TURN saw nothing.
- Case 2: the same users each behind a port-preserving NAT: the tone crosses on server-reflexive
  candidates (NAT to NAT at the router); TURN metered nothing.
- Case 3: one user behind a symmetric NAT (and TURN credentials), the other behind a
  port-preserving NAT: no direct path exists; the tone crosses through the gateway's TURN relay
  and ``turn_usage`` holds the bytes.
- Case 4: a client whose UDP is dropped joins a conference room over SIP/TCP, its media going
  through TURN over TCP (Allocate with time-limited credentials, ChannelBind to the gateway's
  media address from the SIP answer, RTP in ChannelData), relayed as UDP to the gateway's media
  port; a party on the gateway's side hears its tone and it hears theirs.

A missing prerequisite (root, ``ip``, ``iptables``, baresip) fails these tests; it never skips
them.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import secrets
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest

from gateway.nat.credentials import make_credentials
from gateway.nat.framing import ChannelData, StreamDeframer
from gateway.nat.stun import (
    CHANNEL_NUMBER,
    XOR_MAPPED_ADDRESS,
    XOR_PEER_ADDRESS,
    XOR_RELAYED_ADDRESS,
    Class,
    Message,
    Method,
    long_term_key,
    new_transaction_id,
)

from .audio import assert_tone, tone_power_ratio
from .baresip import Baresip, BaresipError, module_dir, require_baresip
from .confpeer import ConfParty, format_levels, tone_levels
from .harness import (
    TURN_SECRET,
    GatewayProcess,
    GatewayStartError,
    TrunkSpec,
    sip_options_ping,
)
from .netns import Netns, NetnsUnavailable, Topology, remove_leftovers, require_netns
from .rtppeer import ulaw_decode, ulaw_encode

pytestmark = pytest.mark.timeout(240)

GW_ADDR = "10.71.0.2"
ROUTER_GW_ADDR = "10.71.0.1"
DOMAIN = "gateway.local"
USERS: Mapping[str, str] = {"alice": "alice-Nat-1", "bob": "bob-Nat-2"}
TURN_USERS: Mapping[str, str] = {"alice-turn": "alice-Turn-3"}
ALICE_TONE = 440
BOB_TONE = 1000
ROOM_NUMBER = "+15557779000"
ROOM_PARTY_TONE = 700.0
TCP_CLIENT_TONE = 550.0
TALK_S = 4.0
#: UDP packets one way in TALK_S seconds at 50 packets/s, with margin for set-up.
MIN_MEDIA_PACKETS = 100
#: What may reach the gateway's media or relay ports in a path that must avoid them.
STRAY_PACKETS = 0

SiteKind = Literal["routed", "cone", "symmetric", "udp-blocked"]


# --------------------------------------------------------------------------------------------
# prerequisites


@pytest.fixture(scope="module")
def netns_ready() -> None:
    """Namespaces, iptables NAT and baresip must work here: fail (never skip) otherwise."""
    try:
        require_netns()
    except NetnsUnavailable as exc:
        pytest.fail(f"NAT flow tests need network namespaces: {exc}", pytrace=False)
    try:
        require_baresip()
    except BaresipError as exc:
        pytest.fail(str(exc), pytrace=False)
    for module in ("ice", "stun", "turn", "g711", "ausine", "sndfile", "aubridge"):
        if not (module_dir() / f"{module}.so").is_file():
            pytest.fail(f"baresip module {module}.so missing in {module_dir()} "
                        "(Debian baresip-core)", pytrace=False)
    removed = remove_leftovers()
    if removed:
        print(f"removed namespaces of earlier runs: {', '.join(removed)}")


# --------------------------------------------------------------------------------------------
# the network


@dataclass
class Site:
    """One client site: the client's namespace and address, the address the world sees
    (its NAT's outside address, or its own), the NAT namespace if any."""

    name: str
    kind: SiteKind
    client: Netns
    address: str
    public: str
    nat: Netns | None = None


@dataclass
class Network:
    topo: Topology
    gw: Netns
    router: Netns
    sites: dict[str, Site] = field(default_factory=dict)

    def describe(self) -> str:
        text = self.topo.describe()
        for site in self.sites.values():
            text += f"\n  site {site.name}: {site.kind}, {site.address} seen as {site.public}"
        return text


def build_network(topo: Topology, kinds: Mapping[str, SiteKind]) -> Network:
    """gw (10.71.0.2) -- router -- one subnet per site: 10.71.N.0/24 between the router (.1)
    and the client or its NAT (.2); behind a NAT, 10.71.(10+N).0/24 between the NAT (.1) and
    the client (.2). The router knows only its connected subnets: a client behind a NAT is
    unreachable at its own address."""
    gw = topo.namespace("gw")
    router = topo.namespace("router")
    topo.link(router, f"{ROUTER_GW_ADDR}/24", gw, f"{GW_ADDR}/24")
    topo.default_route(gw, ROUTER_GW_ADDR)
    topo.router(router)
    net = Network(topo, gw, router)
    for index, (name, kind) in enumerate(kinds.items(), start=1):
        if kind in ("cone", "symmetric"):
            nat = topo.namespace(f"nat{name}")
            client = topo.namespace(name)
            outside, _ = topo.link(router, f"10.71.{index}.1/24", nat, f"10.71.{index}.2/24")
            topo.default_route(nat, f"10.71.{index}.1")
            topo.link(nat, f"10.71.{10 + index}.1/24", client, f"10.71.{10 + index}.2/24")
            topo.default_route(client, f"10.71.{10 + index}.1")
            topo.nat(nat, outside, symmetric=kind == "symmetric")
            net.sites[name] = Site(name, kind, client, f"10.71.{10 + index}.2",
                                   f"10.71.{index}.2", nat)
        else:
            client = topo.namespace(name)
            topo.link(router, f"10.71.{index}.1/24", client, f"10.71.{index}.2/24")
            topo.default_route(client, f"10.71.{index}.1")
            if kind == "udp-blocked":
                topo.block_udp(client)
            net.sites[name] = Site(name, kind, client, f"10.71.{index}.2", f"10.71.{index}.2")
    return net


@pytest.fixture
def topology(netns_ready: None, request: pytest.FixtureRequest) -> Iterator[Topology]:
    """The test's namespaces, deleted at teardown (after the peers, which are stopped first
    by their own fixtures' teardown)."""
    topo = Topology(request.node.name)
    try:
        yield topo
    finally:
        leftover = topo.pids()
        topo.close()
        print(topo.describe())
        assert not leftover, f"processes left in the test's namespaces: {leftover}"


class PathCounters:
    """Counting-only iptables rules in the router's FORWARD chain (``-m comment``, no jump):
    forwarded UDP packets per path, read with ``iptables -L -v -x``."""

    def __init__(self, router: Netns) -> None:
        self.router = router
        self.names: list[str] = []

    def add(self, name: str, *match: str) -> None:
        self.router.run(["iptables", "-A", "FORWARD", "-p", "udp", *match, "-m", "comment",
                         "--comment", name])
        self.names.append(name)

    def read(self) -> dict[str, int]:
        text = self.router.run(["iptables", "-L", "FORWARD", "-v", "-n", "-x"]).stdout
        out = dict.fromkeys(self.names, 0)
        for line in text.splitlines():
            m = re.match(r"\s*(\d+)\s+(\d+)\s.*/\*\s*(\S+)\s*\*/", line)
            if m and m.group(3) in out:
                out[m.group(3)] += int(m.group(1))
        return out


def path_counters(net: Network, gw: GatewayProcess) -> PathCounters:
    counters = PathCounters(net.router)
    a, b = net.sites["alice"].public, net.sites["bob"].public
    media = f"{gw.media_port_range[0]}:{gw.media_port_range[1]}"
    relay = f"{gw.turn_relay_port_range[0]}:{gw.turn_relay_port_range[1]}"
    counters.add("alice-to-bob", "-s", a, "-d", b)
    counters.add("bob-to-alice", "-s", b, "-d", a)
    counters.add("to-gw-media", "-d", GW_ADDR, "--dport", media)
    counters.add("from-gw-media", "-s", GW_ADDR, "--sport", media)
    counters.add("to-gw-relay", "-d", GW_ADDR, "--dport", relay)
    counters.add("from-gw-relay", "-s", GW_ADDR, "--sport", relay)
    counters.add("to-gw-stun", "-d", GW_ADDR, "--dport", str(gw.turn_port))
    counters.add("from-gw-stun", "-s", GW_ADDR, "--sport", str(gw.turn_port))
    return counters


# --------------------------------------------------------------------------------------------
# the gateway in its namespace


class NsGateway(GatewayProcess):
    """The gateway run as ``ip netns exec NS python -m gateway.cli run -c CONF``, listening for
    SIP (UDP, TCP), STUN/TURN (UDP, TCP) and media on ``address``; REST stays on the
    namespace's own loopback. Readiness is an OPTIONS ping sent from inside the namespace."""

    def __init__(self, workdir: Path, ns: Netns, address: str, **kwargs: Any) -> None:
        self.ns = ns
        self.address = address
        super().__init__(
            workdir,
            tls=False,
            command=[*ns.exec_prefix, sys.executable, "-m", "gateway.cli", "run"],
            **kwargs,
        )

    def config(self) -> dict[str, dict[str, Any]]:
        tables = super().config()
        a = self.address
        tables["sip"]["listen"] = [f"udp:{a}:{self.sip_udp}", f"tcp:{a}:{self.sip_tcp}"]
        tables["media"]["address"] = a
        tables["turn"]["listen"] = [f"udp:{a}:{self.turn_port}", f"tcp:{a}:{self.turn_port}"]
        tables["turn"]["relay_address"] = a
        return tables

    @property
    def sip_target(self) -> str:
        return f"{self.address}:{self.sip_udp}"

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        last: bytes | None = None
        while time.monotonic() < deadline:
            if not self.running():
                raise GatewayStartError(
                    f"gateway exited before answering OPTIONS\ncommand: {' '.join(self.command)}"
                    f"\n--- {self.log_path} ---\n{self.log_tail()}")
            with self.ns.entered():
                last = sip_options_ping(self.sip_udp, timeout=0.5, host=self.address)
            if last is not None and last.startswith(b"SIP/2.0 200"):
                return
            time.sleep(0.1)
        raise GatewayStartError(
            f"gateway in {self.ns.name} did not answer OPTIONS on {self.sip_target} within "
            f"{timeout_s:g} s (last: {last[:60] if last else None!r})\n{self.log_tail()}")

    # -- what it recorded (read after stop()) ----------------------------------------------

    def status(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads((self.cdr_path.parent / "trunks.json").read_text())
        return doc

    def calls_status(self) -> dict[str, Any]:
        path = self.cdr_path.parent / "calls.json"
        if not path.is_file():
            return {}
        doc: dict[str, Any] = json.loads(path.read_text())
        return doc

    def rows(self, sql: str) -> list[dict[str, Any]]:
        with contextlib.closing(sqlite3.connect(f"file:{self.cdr_path}?mode=ro", uri=True)) \
                as db:
            db.row_factory = sqlite3.Row
            return [dict(r) for r in db.execute(sql).fetchall()]


@pytest.fixture
def gateways(tmp_path: Path) -> Iterator[list[NsGateway]]:
    """Gateways a test starts; stopped by PID at teardown, log tails printed."""
    started: list[NsGateway] = []
    yield started
    for gw in reversed(started):
        code = gw.stop()
        print(f"--- gateway {gw.workdir} (exit code {code}) ---\n{gw.log_tail(8000)}")


def start_gateway(gateways: list[NsGateway], tmp_path: Path, net: Network, *,
                  trunks: Sequence[TrunkSpec] = (), dialplan: str = "",
                  extra: Mapping[str, Mapping[str, Any]] | None = None) -> NsGateway:
    config: dict[str, dict[str, Any]] = {
        "sip": {"users": dict(USERS), "auth_algorithms": ["MD5"], "user_codecs": ["PCMU"]},
        "turn": {"users": dict(TURN_USERS), "allowed_peers": ["10.71.0.0/16"],
                 "auth_secret": TURN_SECRET},
        "log": {"level": "debug"},
    }
    for section, values in (extra or {}).items():
        config.setdefault(section, {}).update(values)
    gw = NsGateway(tmp_path / f"gateway-{len(gateways)}", net.gw, GW_ADDR, trunks=trunks,
                   dialplan=dialplan, extra_config=config)
    gateways.append(gw)
    gw.start()
    return gw


# --------------------------------------------------------------------------------------------
# baresip in a namespace


class NsPhone(Baresip):
    """baresip as gateway user ``name`` inside ``site``'s namespace: SIP and media on the
    site's address, ctrl_tcp on the namespace's loopback (the test connects from inside the
    namespace), ICE with the gateway's STUN (or TURN) server, started with ``ip netns exec``."""

    def __init__(self, workdir: Path, site: Site, gw: NsGateway, *, stun_uri: str,
                 stun_user: str = "", stun_pass: str = "", **kwargs: Any) -> None:
        self.site = site
        self.gw = gw
        params = {"auth_pass": USERS[kwargs["name"]], "regint": "600", "medianat": "ice",
                  "stunserver": stun_uri}
        if stun_user:
            params.update(stunuser=stun_user, stunpass=stun_pass)
        super().__init__(workdir, account_params=params, **kwargs)

    @property
    def aor(self) -> str:
        return f"sip:{self.user}@{self.gw.address}:{self.gw.sip_udp}"

    @property
    def uri(self) -> str:
        return f"sip:{self.user}@{self.site.address}:{self.sip_port}"

    def modules(self) -> list[str]:
        return [*super().modules(), "stun", "turn", "ice"]

    def config(self) -> dict[str, str]:
        values = super().config()
        values["sip_listen"] = f"{self.site.address}:{self.sip_port}"
        values["net_interface"] = self.site.address
        return values

    def start(self) -> NsPhone:
        """As :meth:`Baresip.start`, with the command prefixed by ``ip netns exec NS``."""
        if self._proc is not None:
            raise BaresipError(f"{self.name}: already started")
        binary = require_baresip()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.write_files()
        command = [*self.site.client.exec_prefix, binary, "-f", str(self.config_dir), "-v"]
        if self.sip_trace:
            command.append("-s")
        self.command = tuple(command)
        self._log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            self.command, cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT, env={**os.environ, "HOME": str(self.workdir)})
        try:
            self.wait_ready(self.ready_timeout_s)
        except BaresipError:
            self.stop(grace_s=2.0)
            raise
        return self

    def wait_ready(self, timeout_s: float | None = None) -> None:
        with self.site.client.entered():  # ctrl_tcp is on the namespace's 127.0.0.1
            super().wait_ready(timeout_s)

    # -- what the log says -----------------------------------------------------------------

    def registered(self) -> bool:
        """A 200 to a REGISTER came from the gateway (in the ``-s`` trace: the REGISTER_OK
        event may fire before ctrl_tcp is up)."""
        gw = f"{self.gw.address}:{self.gw.sip_udp}"
        return any(m.src == gw and m.text.startswith("SIP/2.0 200")
                   and (m.header("CSeq") or "").endswith("REGISTER")
                   for m in self.sip_messages())

    def wait_registered(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.registered():
            if time.monotonic() >= deadline or not self.running():
                raise AssertionError(f"{self.name}: not registered within {timeout_s:g} s\n"
                                     f"{self.describe()}")
            time.sleep(0.1)

    def selected_pair(self) -> tuple[str, str, str, str] | None:
        """The pair ICE selected, from the check list ``baresip -v`` prints when the checks
        complete (``*  {comp=1}  Succeeded {DVN} v2:relay:10.71.0.2:13150 <--->
        srflx:10.71.2.2:44586``: the line starting with ``*``): (local type, local address,
        remote type, remote address); None when no such line was logged."""
        found = re.findall(
            r"^\s*\*\s*\{comp=1\}\s+Succeeded\s+\{[^}]*\}\s+v\d+:(\w+):(\S+)\s+<--->\s+"
            r"(\w+):(\S+)", self.log_text(), re.M)
        return found[-1] if found else None

    def ice_lines(self) -> str:
        return "\n".join(line for line in self.log_text().splitlines()
                         if re.search(r"ice|ICE|turn|TURN|stun|STUN|cand", line))[-4000:]

    def sdp_candidates(self, direction: Literal["sent", "received"]) -> list[str]:
        out: list[str] = []
        for m in self.sip_messages():
            mine = m.src.endswith(f":{self.sip_port}") and self.site.address in m.src
            if (direction == "sent") == mine:
                out += re.findall(r"^a=candidate:.*$", m.body, re.M)
        return out


@pytest.fixture
def phones() -> Iterator[list[NsPhone]]:
    started: list[NsPhone] = []
    yield started
    for phone in reversed(started):
        code = phone.stop()
        print(f"--- baresip {phone.name} in {phone.site.client.name} (exit code {code}) ---")
        print(phone.log_tail(6000))


def start_phone(phones: list[NsPhone], tmp_path: Path, site: Site, gw: NsGateway, name: str,
                tone: int, *, turn: bool = False, auto_answer: bool = False) -> NsPhone:
    if turn:
        user, password = next(iter(TURN_USERS.items()))
        stun = {"stun_uri": f"turn:{gw.address}:{gw.turn_port}", "stun_user": user,
                "stun_pass": password}
    else:
        stun = {"stun_uri": f"stun:{gw.address}:{gw.turn_port}"}
    phone = NsPhone(tmp_path / f"baresip-{name}", site, gw, name=name, tone_hz=tone,
                    codecs=("PCMU",), auto_answer=auto_answer, rtcp_mux=True,
                    ready_timeout_s=15.0, **stun)
    phones.append(phone)
    phone.start()
    return phone


def call_and_talk(alice: NsPhone, bob: NsPhone, gw: NsGateway, net: Network) -> None:
    """alice calls bob by name; both hear the other's tone for TALK_S seconds; alice hangs up;
    the recordings are checked."""
    for phone in (alice, bob):
        phone.wait_registered(15.0)
    bob.mark()
    alice.dial(f"sip:bob@{gw.address}:{gw.sip_udp}")
    try:
        alice.wait_established(20.0)
        bob.wait_established(20.0)
        alice.wait_rtp(15.0)
        bob.wait_rtp(15.0)
    except BaresipError as exc:
        raise AssertionError(f"{exc}\n{net.describe()}\n--- alice ICE ---\n{alice.ice_lines()}"
                             f"\n--- bob ICE ---\n{bob.ice_lines()}") from exc
    time.sleep(TALK_S)
    alice.hangup()
    alice.wait_closed(10.0)
    bob.wait_closed(10.0)
    assert_tone(bob.received_wav(), ALICE_TONE, min_seconds=2.0, min_ratio=0.9)
    assert_tone(alice.received_wav(), BOB_TONE, min_seconds=2.0, min_ratio=0.9)


def user_calls(gw: NsGateway) -> list[dict[str, Any]]:
    return gw.rows("SELECT * FROM cdr_calls WHERE trunk_in LIKE '%alice%' ORDER BY started")


def legs_of(gw: NsGateway, call_id: str) -> list[dict[str, Any]]:
    return gw.rows(f"SELECT * FROM cdr_legs WHERE call_id = '{call_id}' ORDER BY leg_id")


def assert_not_anchored(gw: NsGateway) -> None:
    """The gateway's media side saw nothing: no RTP counted, no call in calls.json, the
    answered user call's legs without media figures."""
    status = gw.status()
    assert "turn" in status, f"no STUN/TURN counters in the status file: {list(status)}"
    figures = status["gateway"]
    assert "media_sessions" in figures, f"no media figures in the status file: {figures}"
    rtp = {k: v for k, v in figures.items() if k.startswith("rtp_") and v}
    assert not rtp, f"the gateway's media ports counted traffic: {rtp}"
    assert figures.get("media_sessions", 0) == 0, figures
    assert not gw.calls_status().get("calls"), gw.calls_status()
    calls = user_calls(gw)
    answered = [c for c in calls if c["status"] == 200 or c["answered"]]
    assert answered, f"no answered user call in the CDRs: {calls}"
    assert (answered[-1]["trunk_in"], answered[-1]["trunk_out"]) == ("user:alice", "user:bob"), \
        answered[-1]
    for leg in legs_of(gw, answered[-1]["call_id"]):
        assert not leg["packets_in"] and not leg["packets_out"], leg


# --------------------------------------------------------------------------------------------
# case 1: direct path


def test_case1_direct_path_between_routed_subnets(
    topology: Topology, gateways: list[NsGateway], phones: list[NsPhone], tmp_path: Path
) -> None:
    net = build_network(topology, {"alice": "routed", "bob": "routed"})
    gw = start_gateway(gateways, tmp_path, net)
    counters = path_counters(net, gw)
    alice = start_phone(phones, tmp_path, net.sites["alice"], gw, "alice", ALICE_TONE)
    bob = start_phone(phones, tmp_path, net.sites["bob"], gw, "bob", BOB_TONE,
                      auto_answer=True)
    call_and_talk(alice, bob, gw, net)
    seen = counters.read()
    pairs = {p.name: p.selected_pair() for p in (alice, bob)}
    gw.stop()
    evidence = f"{seen}\nselected pairs: {pairs}\n{net.describe()}"
    print(evidence)
    # media went straight from subnet to subnet, none of it to the gateway
    assert seen["alice-to-bob"] >= MIN_MEDIA_PACKETS, evidence
    assert seen["bob-to-alice"] >= MIN_MEDIA_PACKETS, evidence
    for name in ("to-gw-media", "from-gw-media", "to-gw-relay", "from-gw-relay"):
        assert seen[name] == STRAY_PACKETS, evidence
    # ICE selected host <-> host, each phone's own address to the other's
    for me, peer in (("alice", "bob"), ("bob", "alice")):
        pair = pairs[me]
        assert pair is not None, evidence
        assert pair[0] == "host" and pair[1].startswith(f"{net.sites[me].address}:"), evidence
        assert pair[2] == "host" and pair[3].startswith(f"{net.sites[peer].address}:"), evidence
    assert_not_anchored(gw)
    turn = gw.status().get("turn", {})
    assert turn.get("allocations_total", 0) == 0, turn
    assert turn.get("packets_to_peer", 0) == 0 and turn.get("packets_to_client", 0) == 0, turn
    assert gw.rows("SELECT * FROM turn_usage") == []


# --------------------------------------------------------------------------------------------
# case 2: through port-preserving NATs


def test_case2_server_reflexive_through_port_preserving_nats(
    topology: Topology, gateways: list[NsGateway], phones: list[NsPhone], tmp_path: Path
) -> None:
    net = build_network(topology, {"alice": "cone", "bob": "cone"})
    gw = start_gateway(gateways, tmp_path, net)
    counters = path_counters(net, gw)
    alice = start_phone(phones, tmp_path, net.sites["alice"], gw, "alice", ALICE_TONE)
    bob = start_phone(phones, tmp_path, net.sites["bob"], gw, "bob", BOB_TONE,
                      auto_answer=True)
    call_and_talk(alice, bob, gw, net)
    seen = counters.read()
    sent = {p.name: p.sdp_candidates("sent") for p in (alice, bob)}
    pairs = {p.name: p.selected_pair() for p in (alice, bob)}
    gw.stop()
    evidence = (f"{seen}\nselected pairs: {pairs}\noffered candidates: {sent}\n"
                f"{net.describe()}")
    print(evidence)
    # both learned their NAT's address from the gateway's STUN server...
    assert seen["to-gw-stun"] >= 2 and seen["from-gw-stun"] >= 2, evidence
    for name in ("alice", "bob"):
        site = net.sites[name]
        assert any("typ srflx" in c and f" {site.public} " in c for c in sent[name]), evidence
    # ICE selected srflx <-> srflx: each NAT's outside address to the other's
    for me, peer in (("alice", "bob"), ("bob", "alice")):
        pair = pairs[me]
        assert pair is not None, evidence
        assert pair[0] == "srflx" and pair[1].startswith(f"{net.sites[me].public}:"), evidence
        assert pair[2] == "srflx" and pair[3].startswith(f"{net.sites[peer].public}:"), evidence
    # ...and the media crossed NAT to NAT at the router (server-reflexive addresses)
    assert seen["alice-to-bob"] >= MIN_MEDIA_PACKETS, evidence
    assert seen["bob-to-alice"] >= MIN_MEDIA_PACKETS, evidence
    for name in ("to-gw-media", "from-gw-media", "to-gw-relay", "from-gw-relay"):
        assert seen[name] == STRAY_PACKETS, evidence
    # the registrar saw each REGISTER from the NAT's outside address (port preserved)
    users = gw.status()["gateway"].get("users", {})
    for name in ("alice", "bob"):
        (binding,) = users.get("bindings", {}).get(name, [None])
        assert binding and binding["via"].startswith(f"udp:{net.sites[name].public}:"), users
    assert_not_anchored(gw)
    turn = gw.status().get("turn", {})
    assert turn.get("allocations_total", 0) == 0, turn
    assert gw.rows("SELECT * FROM turn_usage") == []


# --------------------------------------------------------------------------------------------
# case 3: symmetric NAT, through TURN


def test_case3_symmetric_nat_goes_through_turn(
    topology: Topology, gateways: list[NsGateway], phones: list[NsPhone], tmp_path: Path
) -> None:
    net = build_network(topology, {"alice": "symmetric", "bob": "cone"})
    gw = start_gateway(gateways, tmp_path, net)
    counters = path_counters(net, gw)
    alice = start_phone(phones, tmp_path, net.sites["alice"], gw, "alice", ALICE_TONE,
                        turn=True)
    bob = start_phone(phones, tmp_path, net.sites["bob"], gw, "bob", BOB_TONE,
                      auto_answer=True)
    call_and_talk(alice, bob, gw, net)
    seen = counters.read()
    pairs = {p.name: p.selected_pair() for p in (alice, bob)}
    sent = {p.name: p.sdp_candidates("sent") for p in (alice, bob)}
    gw.stop()
    evidence = (f"{seen}\nselected pairs: {pairs}\noffered: {sent}\n{net.describe()}")
    print(evidence)
    assert any("typ relay" in c for c in sent["alice"]), evidence
    # the media went through the relay: bob <-> relay port, alice <-> the TURN port
    assert seen["to-gw-relay"] >= MIN_MEDIA_PACKETS, evidence
    assert seen["from-gw-relay"] >= MIN_MEDIA_PACKETS, evidence
    assert seen["to-gw-stun"] >= MIN_MEDIA_PACKETS, evidence
    assert seen["from-gw-stun"] >= MIN_MEDIA_PACKETS, evidence
    assert seen["to-gw-media"] == 0 and seen["from-gw-media"] == 0, evidence
    # NAT to NAT, only ICE's failed checks (a few retransmissions), never the media
    assert seen["alice-to-bob"] < MIN_MEDIA_PACKETS // 4, evidence
    assert seen["bob-to-alice"] < MIN_MEDIA_PACKETS // 4, evidence
    # ICE selected alice's relayed address on the gateway <-> bob's NAT's outside address
    alice_pair, bob_pair = pairs["alice"], pairs["bob"]
    assert alice_pair is not None and bob_pair is not None, evidence
    assert alice_pair[0] == "relay" and alice_pair[1].startswith(f"{GW_ADDR}:"), evidence
    assert alice_pair[2] == "srflx" and alice_pair[3].startswith(
        f"{net.sites['bob'].public}:"), evidence
    assert bob_pair[2] == "relay" and bob_pair[3] == alice_pair[1], evidence
    turn = gw.status().get("turn", {})
    assert turn.get("allocations_total", 0) >= 1, turn
    assert turn.get("packets_to_peer", 0) >= MIN_MEDIA_PACKETS, turn
    assert turn.get("packets_to_client", 0) >= MIN_MEDIA_PACKETS, turn
    usage = gw.rows("SELECT * FROM turn_usage")
    used = [u for u in usage if u["username"] == "alice-turn" and u["bytes_in"] > 0
            and u["bytes_out"] > 0]
    assert used, f"turn_usage: {usage}"
    best = max(used, key=lambda u: u["bytes_in"] + u["bytes_out"])
    assert best["packets_in"] >= MIN_MEDIA_PACKETS and best["packets_out"] >= MIN_MEDIA_PACKETS
    # at least MIN_MEDIA_PACKETS RTP packets of 12 + 160 octets (PCMU) each way
    assert min(best["bytes_in"], best["bytes_out"]) >= MIN_MEDIA_PACKETS * 172, best
    assert best["client"].startswith(net.sites["alice"].public + ":"), best
    assert best["relay"].startswith(GW_ADDR + ":"), best
    assert best["ended"] >= best["started"] > 0, best
    # the usage is tied to the call whose SDP offered the relayed candidate (issue 7 item 5)
    calls = gw.rows("SELECT call_id FROM cdr_calls WHERE status = 200")
    assert best["call_id"] in {c["call_id"] for c in calls}, (best, calls)
    assert_not_anchored(gw)


# --------------------------------------------------------------------------------------------
# case 4: a TCP-only client into a conference through TURN over TCP


class TurnTcpClient:
    """A TURN client over one TCP connection (RFC 8656 with RFC 6062's framing): Allocate with
    long-term credentials (401 then signed), CreatePermission, ChannelBind, Refresh; frames in
    and out through :class:`StreamDeframer` / ChannelData. A reader thread keeps every
    ChannelData payload with its arrival time and answers transactions."""

    def __init__(self, server: tuple[str, int], username: str, password: str) -> None:
        self.server = server
        self.username = username
        self.password = password
        self.sock = socket.create_connection(server, timeout=5.0)
        self.sock.settimeout(0.2)
        self.realm = ""
        self.nonce = ""
        self.key = b""
        self.relayed: tuple[str, int] | None = None
        self.mapped: tuple[str, int] | None = None
        self.data: list[tuple[float, bytes]] = []
        self.indications = 0
        self.errors: list[str] = []
        self._replies: dict[bytes, Message] = {}
        self._cond = threading.Condition()
        self._send_lock = threading.Lock()
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read, name="turn-tcp", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        deframer = StreamDeframer()
        while not self._stop.is_set():
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError as exc:
                self.errors.append(f"recv: {exc}")
                break
            if not chunk:
                self.errors.append("server closed the connection")
                break
            try:
                deframer.feed(chunk)
                for frame in deframer.frames():
                    if isinstance(frame, ChannelData):
                        with self._cond:
                            self.data.append((time.monotonic(), frame.data))
                    elif frame.cls == Class.INDICATION and frame.method == Method.DATA:
                        self.indications += 1
                        payload = frame.data()
                        if payload:
                            with self._cond:
                                self.data.append((time.monotonic(), payload))
                    else:
                        with self._cond:
                            self._replies[frame.transaction_id] = frame
                            self._cond.notify_all()
            except ValueError as exc:
                self.errors.append(f"framing: {exc}")
                break
        with self._cond:
            self._cond.notify_all()

    def send(self, data: bytes) -> None:
        with self._send_lock:
            self.sock.sendall(data)

    def transact(self, request: Message, timeout: float = 5.0) -> Message:
        self.send(bytes(request))
        deadline = time.monotonic() + timeout
        with self._cond:
            while request.transaction_id not in self._replies:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._reader.is_alive():
                    raise AssertionError(f"TURN/TCP: no answer to {Method(request.method).name}"
                                         f" within {timeout:g} s (errors: {self.errors})")
                self._cond.wait(min(remaining, 0.2))
            return self._replies.pop(request.transaction_id)

    def _signed(self, method: int, build: Any = None) -> Message:
        msg = Message(method, Class.REQUEST, new_transaction_id())
        if build is not None:
            msg = build(msg)
        msg = msg.with_username(self.username).with_realm(self.realm).with_nonce(self.nonce)
        return msg.with_integrity(self.key).with_fingerprint()

    def request(self, method: int, build: Any = None) -> Message:
        """A signed request; a 438 Stale Nonce is retried once with the new nonce."""
        reply = self.transact(self._signed(method, build))
        code = reply.error_code()
        if reply.cls == Class.ERROR and code is not None and code.code == 438:
            self.nonce = reply.nonce() or self.nonce
            reply = self.transact(self._signed(method, build))
        if reply.cls != Class.SUCCESS:
            code = reply.error_code()
            raise AssertionError(f"TURN/TCP {Method(method).name} refused: "
                                 f"{code.code if code else '?'} {code.reason if code else ''}")
        return reply

    def allocate(self) -> tuple[str, int]:
        first = self.transact(Message(Method.ALLOCATE, Class.REQUEST, new_transaction_id())
                              .with_requested_transport().with_fingerprint())
        code = first.error_code()
        assert first.cls == Class.ERROR and code is not None and code.code == 401, first
        self.realm, self.nonce = first.realm() or "", first.nonce() or ""
        self.key = long_term_key(self.username, self.realm, self.password)
        reply = self.request(Method.ALLOCATE,
                             lambda m: m.with_requested_transport().with_lifetime(600))
        self.relayed = reply.xor_address(XOR_RELAYED_ADDRESS)
        self.mapped = reply.xor_address(XOR_MAPPED_ADDRESS)
        assert self.relayed is not None, reply
        return self.relayed

    def permit_and_bind(self, peer: tuple[str, int], channel: int = 0x4000) -> None:
        self.request(Method.CREATE_PERMISSION,
                     lambda m: m.with_xor_address(XOR_PEER_ADDRESS, *peer))
        self.request(Method.CHANNEL_BIND,
                     lambda m: m.with_xor_address(XOR_PEER_ADDRESS, *peer)
                     .with_attribute(CHANNEL_NUMBER, struct.pack("!HH", channel, 0)))

    def release(self) -> None:
        with contextlib.suppress(AssertionError, OSError):
            self.request(Method.REFRESH, lambda m: m.with_lifetime(0))

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._reader.join(2.0)


class TcpSipClient:
    """A minimal SIP UAC over one TCP connection: INVITE with an SDP offer, ACK, BYE; answers
    200 to what the gateway sends in the dialog (BYE, re-INVITE with the same SDP, OPTIONS)."""

    def __init__(self, gateway: tuple[str, int], number: str) -> None:
        self.gateway = gateway
        self.number = number
        self.sock = socket.create_connection(gateway, timeout=5.0)
        self.local = self.sock.getsockname()
        self.sock.settimeout(0.2)
        self.call_id = f"{uuid.uuid4().hex}@tcpclient"
        self.tag = secrets.token_hex(5)
        self.remote_tag = ""
        self.remote_target = ""
        self.route: list[str] = []
        self.cseq = 0
        self.sdp = b""
        self.received: list[str] = []
        self._buffer = b""
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read, name="sip-tcp", daemon=True)
        self._reader.start()

    def _via(self) -> str:
        return (f"Via: SIP/2.0/TCP {self.local[0]}:{self.local[1]};branch=z9hG4bK"
                f"{secrets.token_hex(8)};rport")

    def _request(self, method: str, uri: str, cseq: int, body: bytes = b"",
                 ctype: str = "") -> bytes:
        to_tag = f";tag={self.remote_tag}" if self.remote_tag else ""
        lines = [f"{method} {uri} SIP/2.0", self._via(), "Max-Forwards: 70",
                 f"From: <sip:{self.number}@{self.local[0]}>;tag={self.tag}",
                 f"To: <sip:{ROOM_NUMBER}@{self.gateway[0]}>{to_tag}",
                 f"Call-ID: {self.call_id}", f"CSeq: {cseq} {method}",
                 f"Contact: <sip:{self.number}@{self.local[0]}:{self.local[1]};transport=tcp>",
                 *[f"Route: {r}" for r in self.route]]
        if ctype:
            lines.append(f"Content-Type: {ctype}")
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not chunk:
                break
            self._buffer += chunk
            while b"\r\n\r\n" in self._buffer:
                head, rest = self._buffer.split(b"\r\n\r\n", 1)
                m = re.search(rb"^(?:Content-Length|l)\s*:\s*(\d+)", head, re.M | re.I)
                length = int(m.group(1)) if m else 0
                if len(rest) < length:
                    break
                message = (head + b"\r\n\r\n" + rest[:length]).decode("utf-8", "replace")
                self._buffer = rest[length:]
                self._handle(message)

    def _handle(self, message: str) -> None:
        with self._cond:
            self.received.append(message)
            self._cond.notify_all()
        if message.startswith("SIP/2.0"):
            return
        method = message.split(" ", 1)[0]
        if method == "ACK":
            return
        head = message.split("\r\n\r\n", 1)[0].split("\r\n")
        keep = [h for h in head[1:] if re.match(r"(?i)(via|from|to|call-id|cseq|v|f|t|i)\s*:",
                                                 h)]
        body = self.sdp if method == "INVITE" else b""
        extra = ["Content-Type: application/sdp"] if body else []
        reply = "\r\n".join(["SIP/2.0 200 OK", *keep,
                             f"Contact: <sip:{self.number}@{self.local[0]}:{self.local[1]};"
                             "transport=tcp>", *extra, f"Content-Length: {len(body)}"])
        with contextlib.suppress(OSError):
            self.sock.sendall(reply.encode() + b"\r\n\r\n" + body)

    def _wait_final(self, cseq: int, method: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        cseq_line = re.compile(rf"^CSeq:\s*{cseq} {method}\s*$", re.M | re.I)
        with self._cond:
            while True:
                for message in self.received:
                    if (message.startswith("SIP/2.0") and not message.startswith("SIP/2.0 1")
                            and cseq_line.search(message.split("\r\n\r\n", 1)[0])):
                        return message
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"SIP/TCP: no final answer to {method} within "
                                         f"{timeout:g} s; received {self.received}")
                self._cond.wait(min(remaining, 0.2))

    def invite(self, sdp: bytes, timeout: float = 10.0) -> str:
        self.sdp = sdp
        self.cseq += 1
        uri = f"sip:{ROOM_NUMBER}@{self.gateway[0]}:{self.gateway[1]};transport=tcp"
        self.sock.sendall(self._request("INVITE", uri, self.cseq, sdp, "application/sdp"))
        final = self._wait_final(self.cseq, "INVITE", timeout)
        status = int(final.split(" ", 2)[1])
        head = final.split("\r\n\r\n", 1)[0]
        to = re.search(r"^(?:To|t)\s*:.*;tag=([^;\s>]+)", head, re.M | re.I)
        self.remote_tag = to.group(1) if to else ""
        contact = re.search(r"^(?:Contact|m)\s*:.*<([^>]+)>", head, re.M | re.I)
        self.remote_target = contact.group(1) if contact else uri
        self.route = list(reversed(re.findall(r"^Record-Route\s*:\s*(.+)$", head, re.M | re.I)))
        if status == 200:
            self.sock.sendall(self._request("ACK", self.remote_target, self.cseq))
        return final

    def bye(self, timeout: float = 5.0) -> str:
        self.cseq += 1
        self.sock.sendall(self._request("BYE", self.remote_target, self.cseq))
        return self._wait_final(self.cseq, "BYE", timeout)

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._reader.join(2.0)


class RtpOverTurn:
    """Sends a PCMU tone as RTP in ChannelData every 20 ms until stopped."""

    def __init__(self, turn: TurnTcpClient, channel: int, tone_hz: float) -> None:
        self.turn = turn
        self.channel = channel
        self.tone_hz = tone_hz
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rtp-over-turn", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        seq, ts, ssrc = secrets.randbelow(65536), secrets.randbelow(2**32), secrets.randbits(32)
        start = time.monotonic()
        index = 0
        while not self._stop.is_set() and index < 50 * 60:  # bounded: a minute at most
            t = (np.arange(160) + index * 160) / 8000.0
            pcm = np.round(5000.0 * np.sin(2 * np.pi * self.tone_hz * t)).astype(np.int16)
            rtp = struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc)
            try:
                self.turn.send(bytes(ChannelData(self.channel, rtp + ulaw_encode(pcm))))
            except OSError:
                return
            self.sent += 1
            seq, ts, index = seq + 1, ts + 160, index + 1
            delay = start + index * 0.02 - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2.0)


def decode_pcmu(packets: Sequence[bytes]) -> np.ndarray:
    """The PCMU payloads of RTP packets (payload type 0) as float samples in [-1, 1]."""
    chunks = []
    for packet in packets:
        if len(packet) < 12 or packet[0] >> 6 != 2 or packet[1] & 0x7F != 0:
            continue
        cc = packet[0] & 0x0F
        header = 12 + 4 * cc
        if packet[0] & 0x10 and len(packet) >= header + 4:
            header += 4 + 4 * struct.unpack_from("!H", packet, header + 2)[0]
        chunks.append(ulaw_decode(packet[header:]).astype(np.float64) / 32768.0)
    return np.concatenate(chunks) if chunks else np.zeros(0)


CONF_DIALPLAN = """
[[inbound]]
name = "room"
match = '^\\+15557779\\d{3}$'
action = "conference:natroom"
"""


def test_case4_udp_blocked_client_joins_a_room_through_turn_over_tcp(
    topology: Topology, gateways: list[NsGateway], tmp_path: Path
) -> None:
    net = build_network(topology, {"tcp": "udp-blocked"})
    site = net.sites["tcp"]
    trunk = TrunkSpec("parties", 5999, codecs=("PCMU",),
                      inbound_from=("127.0.0.1/32", f"{site.address}/32"))
    gw = start_gateway(gateways, tmp_path, net, trunks=[trunk], dialplan=CONF_DIALPLAN,
                       extra={"media": {"conference_mode": "mcu"}})
    router_counts = PathCounters(net.router)
    router_counts.add("udp-from-client", "-s", site.address)
    router_counts.add("udp-to-client", "-d", site.address)
    router_counts.router.run(["iptables", "-A", "FORWARD", "-p", "tcp", "-s", site.address,
                              "-d", GW_ADDR, "--dport", str(gw.turn_port), "-m", "comment",
                              "--comment", "tcp-turn"])
    # UDP really is blocked for the client: a STUN Binding over UDP gets nowhere
    with site.client.entered():
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.settimeout(1.0)
        try:
            binding = Message(Method.BINDING, Class.REQUEST, new_transaction_id())
            with contextlib.suppress(OSError):
                probe.sendto(bytes(binding.with_fingerprint()), (GW_ADDR, gw.turn_port))
            with pytest.raises((TimeoutError, OSError)):
                probe.recvfrom(2048)
        finally:
            probe.close()
    # the party on the gateway's side joins the room first (plain SIP/RTP in the gateway's
    # namespace, on its loopback)
    with net.gw.entered():
        party = ConfParty("gwside", "+15550001001", ROOM_PARTY_TONE, "PCMU",
                          (GW_ADDR, gw.sip_udp))
    turn: TurnTcpClient | None = None
    sip: TcpSipClient | None = None
    sender: RtpOverTurn | None = None
    try:
        assert party.join(ROOM_NUMBER, 10.0) == 200, party.describe()
        username, password = make_credentials(TURN_SECRET, "tcpclient", 600, time.time())
        with site.client.entered():
            turn = TurnTcpClient((GW_ADDR, gw.turn_port), username, password)
            sip = TcpSipClient((GW_ADDR, gw.sip_tcp), "+15550002002")
        relay = turn.allocate()
        assert relay[0] == GW_ADDR, relay
        offer = "\r\n".join([
            "v=0", f"o=tcpclient 1 1 IN IP4 {relay[0]}", "s=tcp", f"c=IN IP4 {relay[0]}",
            "t=0 0", f"m=audio {relay[1]} RTP/AVP 0", "a=rtpmap:0 PCMU/8000", "a=ptime:20",
            "a=sendrecv", ""]).encode()
        final = sip.invite(offer, 10.0)
        assert final.startswith("SIP/2.0 200"), final
        answer = final.split("\r\n\r\n", 1)[1]
        host = re.search(r"^c=IN IP4 (\S+)", answer, re.M)
        port = re.search(r"^m=audio (\d+)", answer, re.M)
        assert host and port, answer
        media = (host.group(1), int(port.group(1)))
        assert media[0] == GW_ADDR, answer
        turn.permit_and_bind(media, 0x4000)
        sender = RtpOverTurn(turn, 0x4000, TCP_CLIENT_TONE)
        sender.start()
        t0 = time.monotonic()
        time.sleep(TALK_S)
        t1 = time.monotonic()
        sender.stop()
        # what the TCP client heard: the room party's tone
        with turn._cond:
            heard = [payload for at, payload in turn.data if t0 + 1.0 <= at <= t1]
        samples = decode_pcmu(heard)
        levels = tone_levels(samples, 8000, {"party": ROOM_PARTY_TONE, "own": TCP_CLIENT_TONE})
        evidence = (f"TCP client heard {len(heard)} packets ({len(samples) / 8000:.2f} s): "
                    f"{format_levels(levels)}; sent {sender.sent}, turn errors {turn.errors}")
        print(evidence)
        assert len(samples) >= 8000 * 2, evidence
        assert levels["party"] > -35.0, evidence
        assert tone_power_ratio(samples, 8000, ROOM_PARTY_TONE, skip_seconds=0.0) > 0.8, \
            evidence
        # what the party on the gateway's side heard: the TCP client's tone
        streams = party.media.streams(t0 + 1.0, t1)
        assert streams, party.describe()
        best = max(streams.values(), key=lambda s: s.seconds)
        party_levels = tone_levels(best.samples, best.rate, {"tcp": TCP_CLIENT_TONE,
                                                            "own": ROOM_PARTY_TONE})
        print(f"the room party heard {best.seconds:.2f} s: {format_levels(party_levels)}")
        assert best.seconds >= 2.0, party.describe()
        assert party_levels["tcp"] > -35.0, format_levels(party_levels)
        assert sip.bye(5.0).startswith("SIP/2.0 200")
        turn.release()
        assert party.leave(5.0) == 200
    finally:
        if sender is not None:
            sender.stop()
        for closing in (sip, turn):
            if closing is not None:
                closing.close()
        party.close()
    seen = router_counts.read()
    tcp_turn = router_counts.router.run(["iptables", "-L", "FORWARD", "-v", "-n", "-x"]).stdout
    gw.stop()
    # no UDP crossed the router to or from the client; its media reached the gateway by TCP
    assert seen["udp-from-client"] == 0 and seen["udp-to-client"] == 0, seen
    print(seen, [line for line in tcp_turn.splitlines() if "tcp-turn" in line])
    assert re.search(r"^\s*(\d{3,})\s.*tcp-turn", tcp_turn, re.M), tcp_turn
    turn_status = gw.status().get("turn", {})
    assert turn_status.get("packets_to_peer", 0) >= MIN_MEDIA_PACKETS, turn_status
    assert turn_status.get("packets_to_client", 0) >= MIN_MEDIA_PACKETS, turn_status
    usage = gw.rows("SELECT * FROM turn_usage")
    tcp_rows = [u for u in usage if u["transport"].lower() == "tcp" and u["bytes_in"] > 0
                and u["bytes_out"] > 0]
    assert tcp_rows, usage
    assert tcp_rows[0]["username"] == username, tcp_rows
    # tied to the room's call: its SDP's c=/m= was the relayed address
    room_calls = gw.rows("SELECT call_id FROM cdr_calls WHERE call_id LIKE 'conference-%'")
    assert tcp_rows[0]["call_id"] in {c["call_id"] for c in room_calls}, (tcp_rows, room_calls)
    # the gateway's media side did carry this call: anchored at the room
    rtp = {k: v for k, v in gw.status()["gateway"].items() if k.startswith("rtp_")}
    assert any(v for v in rtp.values()), rtp
    assert not math.isnan(levels["party"])
