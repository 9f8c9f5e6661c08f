"""VoIP users (issue 7, item 6) against the real gateway process: the registrar of
``[sip] users``, calls between users, calls from a carrier to ``user:NAME``.

Peers are real: baresip 1.0.0 softphones registering as gateway users (``auth_pass`` and a
non-zero ``regint`` in the account make baresip REGISTER to the AOR's host, here the
gateway), a baresip standing for a carrier trunk, and a raw UDP REGISTER client written
here with its own RFC 2617 MD5 digest (independent of ``gateway.sip.auth``) for the
registrar's rules on the wire (RFC 3261 section 10.3).

What is checked: REGISTER is challenged (401) then accepted (200); the status file
(``trunks.json`` -> ``gateway`` -> ``users``) lists each binding with the REGISTER's source
and a positive ``expires_in``; a user calls another by name through the gateway (its INVITE
challenged too) and a tone crosses each way; the CDR names the user trunks; a carrier's
call routed by ``action = "user:NAME"`` rings the user; an unregistered user gets 480; a
user's call to a carrier number goes out by the [[outbound]] route like any call; and
the registrar's answers: 403 (an unknown user, after a challenge like anyone's; a wrong
password; another user's credentials), 423 with Min-Expires, several contacts with their
expiries, 500 for an out-of-order CSeq, wildcard removal, removal of one contact, and RFC 3261
10.3's all-or-nothing binding updates; a REGISTER arriving while a call to the user is placed
does not re-point the call's remaining attempts.

baresip 1.0.0 (libre 1.1.0) answers only MD5 digest challenges, so the gateways here offer
MD5 only (``[sip] auth_algorithms = ["MD5"]``).
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import sqlite3
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .audio import assert_tone
from .baresip import Baresip, BaresipFleet, SipTrace
from .conftest import GatewayFactory
from .harness import LOOPBACK, GatewayProcess, TrunkSpec

pytestmark = pytest.mark.timeout(120)

USERS: Mapping[str, str] = {"alice": "alice-Pw-7", "bob": "bob-Pw-8", "carol": "carol-Pw-9"}
ALICE_TONE = 440
BOB_TONE = 1000
CARRIER_TONE = 700
DOMAIN = "gateway.local"  # the harness's [sip] domain: the digest realm
USER_NUMBER = "15550007777"  # the carrier's number the dial plan sends to user:alice
NOBODY_NUMBER = "15550008888"  # routed to user:bob, who never registers in that test
CARRIER_NUMBER = "15551112222"  # a carrier number users call out to
STATUS_WAIT_S = 15.0  # the status file is rewritten every 5 s


# --------------------------------------------------------------------------------------------
# helpers


def _gateway(gateway_factory: GatewayFactory, *, trunks: Sequence[TrunkSpec] = (),
             dialplan: str = "", **sip: Any) -> GatewayProcess:
    extra_sip: dict[str, Any] = {"users": dict(USERS), "auth_algorithms": ["MD5"],
                                 "user_codecs": ["PCMU"]}
    extra_sip.update(sip)
    return gateway_factory(trunks=list(trunks), dialplan=dialplan,
                           extra_config={"sip": extra_sip})


class UserPhone(Baresip):
    """A baresip whose account is a gateway user: AOR ``sip:USER@127.0.0.1:GATEWAY`` with
    ``auth_pass``, so that baresip registers at the gateway (every ``regint`` seconds)."""

    def __init__(self, workdir: Path, *, registrar_port: int, **kwargs: Any) -> None:
        self.registrar_port = registrar_port
        super().__init__(workdir, **kwargs)

    @property
    def aor(self) -> str:
        return f"sip:{self.user}@{LOOPBACK}:{self.registrar_port}"


def start_user(fleet: BaresipFleet, gw: GatewayProcess, name: str, *,
               password: str | None = None, regint: int = 600, **kwargs: Any) -> UserPhone:
    """Start baresip as gateway user ``name`` (stopped by the fleet's teardown)."""
    params = {"auth_pass": password or USERS[name], "regint": str(regint)}
    params.update(kwargs.pop("account_params", {}))
    phone = UserPhone(fleet.workdir / f"baresip-{name}-{len(fleet.phones)}",
                      registrar_port=gw.sip_udp, name=name, account_params=params, **kwargs)
    fleet.phones.append(phone)
    phone.start()
    return phone


def wait_registered(phone: Baresip, timeout_s: float = 10.0) -> SipTrace:
    """The gateway's 200 to ``phone``'s REGISTER, from baresip's SIP trace (baresip registers
    before ctrl_tcp is connected, so its REGISTER_OK event is not seen there)."""
    deadline = time.monotonic() + timeout_s
    while True:
        for m in phone.received():
            if status_of(m) == 200 and (m.header("CSeq") or "").endswith("REGISTER"):
                return m
        if time.monotonic() >= deadline or not phone.running():
            raise AssertionError(f"{phone.name}: no 200 to REGISTER within {timeout_s:g} s\n"
                                 f"{phone.describe()}")
        time.sleep(0.1)


def status_of(trace: SipTrace) -> int | None:
    match = re.match(r"SIP/2\.0 (\d{3})", trace.text)
    return int(match.group(1)) if match else None


def register_exchange(phone: Baresip, gw: GatewayProcess) -> list[str]:
    """The REGISTER traffic between ``phone`` and the gateway: "REGISTER" / "REGISTER+auth"
    for requests, the status code for responses, in order."""
    gw_addr = f"{LOOPBACK}:{gw.sip_udp}"
    out: list[str] = []
    for m in phone.sip_messages():
        cseq = (m.header("CSeq") or "").split()
        if cseq[-1:] != ["REGISTER"]:
            continue
        if m.method == "REGISTER" and m.dst == gw_addr:
            out.append("REGISTER+auth" if m.header("Authorization") else "REGISTER")
        elif m.method is None and m.src == gw_addr:
            out.append(str(status_of(m)))
    return out


def status_path(gw: GatewayProcess) -> Path:
    return gw.cdr_path.parent / "trunks.json"


def read_users(gw: GatewayProcess) -> dict[str, Any] | None:
    """``gateway`` -> ``users`` of the status file, None when absent or unreadable."""
    try:
        doc = json.loads(status_path(gw).read_text())
    except (OSError, ValueError):
        return None
    users: dict[str, Any] | None = doc.get("gateway", {}).get("users")
    return users


def wait_status(gw: GatewayProcess, check: Any, timeout_s: float = STATUS_WAIT_S
                ) -> dict[str, Any]:
    """The ``users`` figures of a status file written after this call, once ``check(users)``
    holds; AssertionError with the last seen."""
    def mtime() -> int:
        try:
            return status_path(gw).stat().st_mtime_ns
        except OSError:
            return 0

    before = mtime()
    deadline = time.monotonic() + timeout_s
    last: dict[str, Any] | None = None
    while True:
        if mtime() > before:
            last = read_users(gw)
            if last is not None and check(last):
                return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"no status matched within {timeout_s:g} s: {last!r}\n"
                                 f"{gw.log_tail(3000)}")
        time.sleep(0.2)


def cdr_rows(gw: GatewayProcess, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(f"file:{gw.cdr_path}?mode=ro", uri=True) as db:
        return db.execute(sql).fetchall()


# --------------------------------------------------------------------------------------------
# a raw REGISTER client with its own digest


def md5_hex(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()  # RFC 2617 digest


def parse_challenge(value: str) -> dict[str, str]:
    """The parameters of a ``Digest ...`` challenge (quoted or token values)."""
    scheme, _, rest = value.strip().partition(" ")
    assert scheme.lower() == "digest", value
    return {k.lower(): v1 if v1 else v2 for k, v1, v2 in
            re.findall(r'([A-Za-z0-9_-]+)\s*=\s*(?:"([^"]*)"|([^\s,]+))', rest)}


def digest_authorization(challenge: Mapping[str, str], method: str, uri: str,
                         username: str, password: str, nc: int = 1) -> str:
    """An RFC 2617 MD5 Authorization for ``challenge`` (qop=auth when offered)."""
    realm, nonce = challenge["realm"], challenge["nonce"]
    ha1 = md5_hex(f"{username}:{realm}:{password}")
    ha2 = md5_hex(f"{method}:{uri}")
    parts = [f'username="{username}"', f'realm="{realm}"', f'nonce="{nonce}"',
             f'uri="{uri}"', "algorithm=MD5"]
    qops = [q.strip() for q in challenge.get("qop", "").split(",") if q.strip()]
    if "auth" in qops:
        cnonce = uuid.uuid4().hex[:16]
        ncs = f"{nc:08x}"
        response = md5_hex(f"{ha1}:{nonce}:{ncs}:{cnonce}:auth:{ha2}")
        parts += [f'cnonce="{cnonce}"', f"nc={ncs}", "qop=auth"]
    else:
        response = md5_hex(f"{ha1}:{nonce}:{ha2}")
    parts.append(f'response="{response}"')
    if "opaque" in challenge:
        parts.append(f'opaque="{challenge["opaque"]}"')
    return "Digest " + ", ".join(parts)


@dataclass
class SipReply:
    status: int
    reason: str
    raw: str

    def headers(self, name: str) -> list[str]:
        """Every value of header ``name`` (compact forms for Contact: m), comma lists kept."""
        head = self.raw.split("\r\n\r\n", 1)[0].split("\r\n")[1:]
        names = {name.lower()} | ({"m"} if name.lower() == "contact" else set())
        return [line.partition(":")[2].strip() for line in head
                if line.partition(":")[0].strip().lower() in names]

    def header(self, name: str) -> str | None:
        values = self.headers(name)
        return values[0] if values else None

    def contacts(self) -> dict[str, int]:
        """Contact URI -> expires parameter, over every Contact header and comma item."""
        out: dict[str, int] = {}
        for value in self.headers("contact"):
            for item in re.findall(r"<([^>]*)>([^,]*)", value):
                uri, params = item
                m = re.search(r";\s*expires\s*=\s*(\d+)", params, re.I)
                out[uri] = int(m.group(1)) if m else -1
        return out


class RegisterClient:
    """REGISTERs for one AOR from one UDP socket; answers 401 challenges with MD5 digest."""

    def __init__(self, gw: GatewayProcess, user: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOOPBACK, 0))
        self.port: int = self.sock.getsockname()[1]
        self.gateway = (LOOPBACK, gw.sip_udp)
        self.user = user
        self.call_id = uuid.uuid4().hex + "@raw"
        self.cseq = 0
        self.tag = uuid.uuid4().hex[:10]
        self.sent: list[str] = []

    def close(self) -> None:
        self.sock.close()

    @property
    def request_uri(self) -> str:
        return f"sip:{LOOPBACK}:{self.gateway[1]}"

    def contact_uri(self, tag: str) -> str:
        return f"sip:{tag}@{LOOPBACK}:{self.port}"

    def message(self, contacts: Sequence[str], expires: int | None, extra: str,
                cseq: int) -> str:
        contact_lines = "".join(f"Contact: {c}\r\n" for c in contacts)
        expires_line = f"Expires: {expires}\r\n" if expires is not None else ""
        return (
            f"REGISTER {self.request_uri} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {LOOPBACK}:{self.port};branch=z9hG4bK{uuid.uuid4().hex};rport\r\n"
            f"Max-Forwards: 70\r\n"
            f"From: <sip:{self.user}@{DOMAIN}>;tag={self.tag}\r\n"
            f"To: <sip:{self.user}@{DOMAIN}>\r\n"
            f"Call-ID: {self.call_id}\r\n"
            f"CSeq: {cseq} REGISTER\r\n"
            f"{contact_lines}{expires_line}{extra}"
            f"User-Agent: acs-gateway-tests raw registrar client\r\n"
            f"Content-Length: 0\r\n\r\n"
        )

    def send(self, text: str) -> None:
        self.sent.append(text)
        self.sock.sendto(text.encode(), self.gateway)

    def reply(self, cseq: int, timeout_s: float = 5.0) -> SipReply:
        """The final response to CSeq ``cseq`` (provisionals and others skipped)."""
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no final answer to REGISTER CSeq {cseq} within "
                                     f"{timeout_s:g} s; sent:\n{self.sent[-1]}")
            self.sock.settimeout(left)
            try:
                data, _ = self.sock.recvfrom(65536)
            except TimeoutError:
                continue
            text = data.decode("utf-8", "replace")
            m = re.match(r"SIP/2\.0 (\d{3}) ([^\r\n]*)", text)
            if m is None:
                continue
            reply = SipReply(int(m.group(1)), m.group(2), text)
            if reply.status >= 200 and (reply.header("CSeq") or "").split()[:1] == [str(cseq)]:
                return reply

    def register(self, contacts: Sequence[str], expires: int | None = None, *,
                 auth: tuple[str, str] | None = None, cseq: int | None = None) -> SipReply:
        """REGISTER ``contacts`` (header values as written); with ``auth`` (username,
        password) a 401 is answered once with the digest. The final answer."""
        self.cseq = self.cseq + 1 if cseq is None else cseq
        self.send(self.message(contacts, expires, "", self.cseq))
        reply = self.reply(self.cseq)
        if reply.status != 401 or auth is None:
            return reply
        challenges = [parse_challenge(v) for v in reply.headers("www-authenticate")]
        md5 = [c for c in challenges if c.get("algorithm", "MD5").upper() == "MD5"]
        assert md5, f"no MD5 challenge in the 401:\n{reply.raw}"
        assert md5[0]["realm"] == DOMAIN, md5[0]
        value = digest_authorization(md5[0], "REGISTER", self.request_uri, *auth)
        self.cseq += 1
        self.send(self.message(contacts, expires, f"Authorization: {value}\r\n", self.cseq))
        return self.reply(self.cseq)


@pytest.fixture
def raw_clients() -> Any:
    clients: list[RegisterClient] = []

    def make(gw: GatewayProcess, user: str) -> RegisterClient:
        client = RegisterClient(gw, user)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


# --------------------------------------------------------------------------------------------
# 1. baresip users register


def test_baresip_users_register_with_digest_and_show_in_the_status_file(
    baresips: BaresipFleet, gateway_factory: GatewayFactory
) -> None:
    gw = _gateway(gateway_factory)
    alice = start_user(baresips, gw, "alice")
    bob = start_user(baresips, gw, "bob")
    wait_registered(alice)
    wait_registered(bob)
    for phone in (alice, bob):
        exchange = register_exchange(phone, gw)
        assert exchange[:4] == ["REGISTER", "401", "REGISTER+auth", "200"], exchange
        ok = wait_registered(phone)
        assert re.search(r";\s*expires=\d+", ok.header("Contact") or ""), ok.text
    users = wait_status(gw, lambda u: set(u["bindings"]) == {"alice", "bob"})
    assert users["registered_users"] == 2, users
    assert users["registers"] >= 2, users
    assert users["register_refused"] == 0, users
    for phone in (alice, bob):
        (binding,) = users["bindings"][phone.name]
        assert binding["via"] == f"udp:{LOOPBACK}:{phone.sip_port}", binding
        assert f"@{LOOPBACK}:{phone.sip_port}" in binding["contact"], binding
        assert 0 < binding["expires_in"] <= 600, binding


# --------------------------------------------------------------------------------------------
# 2. a user calls a user by name


def test_alice_calls_bob_by_name_and_the_tones_cross(
    baresips: BaresipFleet, gateway_factory: GatewayFactory
) -> None:
    gw = _gateway(gateway_factory)
    alice = start_user(baresips, gw, "alice", tone_hz=ALICE_TONE)
    bob = start_user(baresips, gw, "bob", tone_hz=BOB_TONE, auto_answer=True)
    wait_registered(alice)
    wait_registered(bob)
    bob.mark()
    alice.dial(f"sip:bob@{LOOPBACK}:{gw.sip_udp}")
    alice.wait_established(10.0)
    bob.wait_established(10.0)
    alice.wait_rtp(5.0)
    bob.wait_rtp(5.0)
    time.sleep(3.0)
    alice.hangup()
    alice.wait_closed(5.0)
    bob.wait_closed(5.0)
    assert_tone(bob.received_wav(), ALICE_TONE, min_seconds=1.5, min_ratio=0.9)
    assert_tone(alice.received_wav(), BOB_TONE, min_seconds=1.5, min_ratio=0.9)
    # alice's INVITE was challenged, then carried her credentials
    gw_addr = f"{LOOPBACK}:{gw.sip_udp}"
    invites = [m for m in alice.sent("INVITE") if m.dst == gw_addr]
    assert len(invites) >= 2 and invites[0].header("Authorization") is None, invites
    assert invites[1].header("Authorization") is not None
    challenged = [m for m in alice.received() if status_of(m) == 401
                  and (m.header("CSeq") or "").endswith("INVITE")]
    assert challenged, [m.first_line for m in alice.received()]
    # bob was called at his binding: the Request-URI is his Contact, To his AOR
    to_bob = bob.received("INVITE")
    assert to_bob, [m.first_line for m in bob.received()]
    assert to_bob[0].src == gw_addr
    registered = (bob.sent("REGISTER")[0].header("Contact") or "").split(">")[0].lstrip("<")
    assert to_bob[0].first_line == f"INVITE {registered} SIP/2.0", (registered, to_bob[0].text)
    assert "sip:bob@" in (to_bob[0].header("To") or ""), to_bob[0].text
    gw.stop()
    rows = cdr_rows(gw, "SELECT caller, callee, trunk_in, trunk_out, status FROM cdr_calls "
                        "WHERE answered IS NOT NULL")
    assert rows == [("alice", "bob", "user:alice", "user:bob", 200)], rows
    legs = cdr_rows(gw, "SELECT leg_id, trunk, codec FROM cdr_legs ORDER BY leg_id")
    assert [(leg, trunk) for leg, trunk, _ in legs] == [("a", "user:alice"),
                                                      ("b1", "user:bob")], legs


# --------------------------------------------------------------------------------------------
# 3. a carrier calls a user through the dial plan


def test_carrier_call_routed_to_user_alice_rings_her_and_the_tones_cross(
    baresips: BaresipFleet, gateway_factory: GatewayFactory
) -> None:
    carrier = baresips.start("carrier", user="carrier", tone_hz=CARRIER_TONE)
    dialplan = (
        f"[[inbound]]\nname = \"to-alice\"\nmatch = '^{USER_NUMBER}$'\naction = \"user:alice\"\n\n"
        f"[[inbound]]\nname = \"to-bob\"\nmatch = '^{NOBODY_NUMBER}$'\naction = \"user:bob\"\n"
    )
    gw = _gateway(gateway_factory, dialplan=dialplan, trunks=[
        TrunkSpec("carrier", carrier.sip_port,
                  inbound_from=(f"{LOOPBACK}:{carrier.sip_port}",), codecs=("PCMU",)),
    ])
    alice = start_user(baresips, gw, "alice", tone_hz=ALICE_TONE)
    wait_registered(alice)
    alice.mark()
    carrier.dial(f"sip:{USER_NUMBER}@{LOOPBACK}:{gw.sip_udp}")
    alice.wait_incoming(10.0)
    alice.accept()
    carrier.wait_established(10.0)
    alice.wait_established(10.0)
    carrier.wait_rtp(5.0)
    alice.wait_rtp(5.0)
    time.sleep(3.0)
    carrier.hangup()
    carrier.wait_closed(5.0)
    alice.wait_closed(5.0)
    assert_tone(alice.received_wav(), CARRIER_TONE, min_seconds=1.5, min_ratio=0.9)
    assert_tone(carrier.received_wav(), ALICE_TONE, min_seconds=1.5, min_ratio=0.9)
    # the carrier was not challenged: its source is its trunk's
    assert not [m for m in carrier.received() if status_of(m) in (401, 407)]
    # bob has no binding: 480
    carrier.dial(f"sip:{NOBODY_NUMBER}@{LOOPBACK}:{gw.sip_udp}")
    closed = carrier.wait_closed(10.0)
    assert "480" in closed.param, closed.param
    finals = [status_of(m) for m in carrier.received()
              if (m.header("CSeq") or "").endswith("INVITE") and (status_of(m) or 0) >= 200]
    assert finals[-1] == 480, finals
    gw.stop()
    rows = cdr_rows(gw, "SELECT callee, trunk_in, trunk_out, status FROM cdr_calls "
                        "ORDER BY started")
    assert rows[0] == (USER_NUMBER, "carrier", "user:alice", 200), rows
    assert rows[-1][0] == NOBODY_NUMBER and rows[-1][3] == 480, rows


def test_a_user_calls_out_through_a_carrier_trunk_like_any_call(
    baresips: BaresipFleet, gateway_factory: GatewayFactory
) -> None:
    """Calls from users are routed by the dial plan like any other: alice dials a carrier
    number, [[outbound]] sends it to trunk "carrier" (a baresip answering as that number)."""
    carrier = baresips.start("carrier", user=CARRIER_NUMBER, tone_hz=CARRIER_TONE,
                             auto_answer=True)
    dialplan = (f"[[outbound]]\nname = \"pstn\"\nmatch = '^{CARRIER_NUMBER}$'\n"
                f"trunks = [\"carrier\"]\n")
    gw = _gateway(gateway_factory, dialplan=dialplan, trunks=[
        TrunkSpec("carrier", carrier.sip_port,
                  inbound_from=(f"{LOOPBACK}:{carrier.sip_port}",), codecs=("PCMU",)),
    ])
    alice = start_user(baresips, gw, "alice", tone_hz=ALICE_TONE)
    wait_registered(alice)
    alice.dial(f"sip:{CARRIER_NUMBER}@{LOOPBACK}:{gw.sip_udp}")
    alice.wait_established(10.0)
    carrier.wait_established(10.0)
    alice.wait_rtp(5.0)
    carrier.wait_rtp(5.0)
    time.sleep(3.0)
    alice.hangup()
    alice.wait_closed(5.0)
    carrier.wait_closed(5.0)
    assert_tone(carrier.received_wav(), ALICE_TONE, min_seconds=1.5, min_ratio=0.9)
    assert_tone(alice.received_wav(), CARRIER_TONE, min_seconds=1.5, min_ratio=0.9)
    gw.stop()
    rows = cdr_rows(gw, "SELECT caller, callee, trunk_in, trunk_out, status FROM cdr_calls "
                        "WHERE answered IS NOT NULL")
    assert rows == [("alice", CARRIER_NUMBER, "user:alice", "carrier", 200)], rows


# --------------------------------------------------------------------------------------------
# 4. the registrar's rules on the wire


def test_registrar_refuses_unknown_users_and_bad_credentials(
    gateway_factory: GatewayFactory, raw_clients: Any
) -> None:
    gw = _gateway(gateway_factory)
    # an unknown user: challenged like a known one, then 403 (no 404 to tell names apart)
    ghost = raw_clients(gw, "mallory")
    reply = ghost.register([f"<{ghost.contact_uri('m')}>"], 600)
    assert reply.status == 401 and reply.header("WWW-Authenticate"), reply.raw
    reply = ghost.register([f"<{ghost.contact_uri('m')}>"], 600, auth=("mallory", "x"))
    assert reply.status == 403, reply.raw

    # no credentials: 401 with an MD5 challenge in the realm
    alice = raw_clients(gw, "alice")
    reply = alice.register([f"<{alice.contact_uri('a1')}>"], 600)
    assert reply.status == 401, reply.raw
    challenge = parse_challenge(reply.header("WWW-Authenticate") or "")
    assert challenge["realm"] == DOMAIN and challenge.get("algorithm", "MD5").upper() == "MD5"

    # a wrong password: 403
    reply = alice.register([f"<{alice.contact_uri('a1')}>"], 600, auth=("alice", "wrong"))
    assert reply.status == 403, reply.raw
    # another user's (valid) credentials for alice's AOR: 403
    reply = alice.register([f"<{alice.contact_uri('a1')}>"], 600,
                           auth=("bob", USERS["bob"]))
    assert reply.status == 403, reply.raw
    # the right ones: 200 (three failures stay under the default auth_fail_limit)
    reply = alice.register([f"<{alice.contact_uri('a1')}>"], 600,
                           auth=("alice", USERS["alice"]))
    assert reply.status == 200, reply.raw
    users = wait_status(gw, lambda u: "alice" in u["bindings"])
    assert set(users["bindings"]) == {"alice"}, users
    assert users["registered_users"] == 1, users
    assert users["register_refused"] == 3, users  # 403 (unknown), 403, 403
    assert users["registers"] == 1, users


def test_registrar_answers_423_with_min_expires_and_caps_long_expiries(
    gateway_factory: GatewayFactory, raw_clients: Any
) -> None:
    gw = _gateway(gateway_factory)
    alice = raw_clients(gw, "alice")
    auth = ("alice", USERS["alice"])
    c1 = alice.contact_uri("a1")
    reply = alice.register([f"<{c1}>"], 10, auth=auth)
    assert reply.status == 423, reply.raw
    assert (reply.header("Min-Expires") or "").strip() == "60", reply.raw
    reply = alice.register([f"<{c1}>;expires=59"], 3600, auth=auth)  # the contact's own
    assert reply.status == 423, reply.raw
    reply = alice.register([f"<{c1}>"], 60, auth=auth)  # the floor itself is accepted
    assert reply.status == 200, reply.raw
    assert 55 <= reply.contacts()[c1] <= 60, reply.raw
    reply = alice.register([f"<{c1}>"], 100000, auth=auth)  # capped at 7200
    assert reply.status == 200, reply.raw
    assert 7190 <= reply.contacts()[c1] <= 7200, reply.raw


def test_a_refused_register_leaves_no_empty_user_in_the_status(
    gateway_factory: GatewayFactory, raw_clients: Any
) -> None:
    """carol never gets a binding (423): she must not count as a registered user."""
    gw = _gateway(gateway_factory)
    carol = raw_clients(gw, "carol")
    reply = carol.register([f"<{carol.contact_uri('c1')}>"], 10, auth=("carol", USERS["carol"]))
    assert reply.status == 423, reply.raw
    users = wait_status(gw, lambda u: True)
    assert users["bindings"].get("carol", []) == [], users
    assert "carol" not in users["bindings"] and users["registered_users"] == 0, users


def test_registrar_keeps_several_contacts_in_cseq_order_and_removes_one(
    gateway_factory: GatewayFactory, raw_clients: Any
) -> None:
    gw = _gateway(gateway_factory)
    alice = raw_clients(gw, "alice")
    auth = ("alice", USERS["alice"])

    # two contacts in one REGISTER: the 200 lists both with their own expiries
    c1, c2 = alice.contact_uri("a1"), alice.contact_uri("a2")
    reply = alice.register([f"<{c1}>", f"<{c2}>;expires=300"], 600, auth=auth)
    assert reply.status == 200, reply.raw
    listed = reply.contacts()
    assert set(listed) == {c1, c2}, reply.raw
    assert 590 <= listed[c1] <= 600 and 290 <= listed[c2] <= 300, listed

    # a third one from another REGISTER (same Call-ID, next CSeq): all three listed
    c3 = alice.contact_uri("a3")
    reply = alice.register([f"<{c3}>"], 120, auth=auth)
    assert reply.status == 200, reply.raw
    assert set(reply.contacts()) == {c1, c2, c3}, reply.raw
    users = wait_status(gw, lambda u: len(u["bindings"].get("alice", [])) == 3)
    bindings = {b["contact"]: b for b in users["bindings"]["alice"]}
    assert set(bindings) == {c1, c2, c3}, users
    assert all(b["via"] == f"udp:{LOOPBACK}:{alice.port}" and b["expires_in"] > 0
               for b in bindings.values()), users
    assert bindings[c3]["expires_in"] <= 120 < bindings[c1]["expires_in"], users

    # the same Call-ID again with the CSeq of c3's REGISTER (not above it): 500
    last = alice.cseq
    value = digest_authorization(fresh_challenge(gw, "alice"), "REGISTER", alice.request_uri,
                                 *auth)
    alice.send(alice.message([f"<{c3}>"], 900, f"Authorization: {value}\r\n", last))
    reply = alice.reply(last)
    assert reply.status == 500, reply.raw

    # Expires: 0 on one contact removes only it
    reply = alice.register([f"<{c2}>;expires=0"], None, auth=auth)
    assert reply.status == 200, reply.raw
    listed = reply.contacts()
    assert set(listed) == {c1, c3}, reply.raw
    assert listed[c3] <= 120, reply.raw  # the 500 changed nothing
    users = wait_status(gw, lambda u: {b["contact"] for b in u["bindings"].get("alice", [])}
                        == {c1, c3})
    assert users["registered_users"] == 1, users

    # a REGISTER without Contact is a query: the 200 lists the bindings, changes nothing
    reply = alice.register([], None, auth=auth)
    assert reply.status == 200, reply.raw
    assert set(reply.contacts()) == {c1, c3}, reply.raw


def test_a_register_answered_500_changes_no_binding(
    gateway_factory: GatewayFactory, raw_clients: Any
) -> None:
    """RFC 3261 10.3: binding updates are committed if and only if all of them succeed. A
    REGISTER adding a new contact and refreshing an old one with a CSeq not above the old
    one's is answered 500: the new contact must not be bound either."""
    gw = _gateway(gateway_factory)
    alice = raw_clients(gw, "alice")
    auth = ("alice", USERS["alice"])
    c1, c2 = alice.contact_uri("a1"), alice.contact_uri("a2")
    reply = alice.register([f"<{c1}>"], 600, auth=auth)
    assert reply.status == 200, reply.raw
    last = alice.cseq
    value = digest_authorization(fresh_challenge(gw, "alice"), "REGISTER", alice.request_uri,
                                 *auth)
    alice.send(alice.message([f"<{c2}>", f"<{c1}>"], 600, f"Authorization: {value}\r\n",
                             last))
    reply = alice.reply(last)
    assert reply.status == 500, reply.raw
    reply = alice.register([], None, auth=auth)  # a query
    assert reply.status == 200, reply.raw
    assert set(reply.contacts()) == {c1}, reply.raw


def test_wildcard_contact_removes_every_binding_of_the_user(
    gateway_factory: GatewayFactory, raw_clients: Any
) -> None:
    gw = _gateway(gateway_factory)
    alice = raw_clients(gw, "alice")
    bob = raw_clients(gw, "bob")
    auth = ("alice", USERS["alice"])
    c1, c2 = alice.contact_uri("a1"), alice.contact_uri("a2")
    assert alice.register([f"<{c1}>", f"<{c2}>"], 600, auth=auth).status == 200
    reply = bob.register([f"<{bob.contact_uri('b1')}>"], 600, auth=("bob", USERS["bob"]))
    assert reply.status == 200, reply.raw
    wait_status(gw, lambda u: len(u["bindings"].get("alice", [])) == 2 and "bob" in u["bindings"])
    # "*" needs Expires: 0
    reply = alice.register(["*"], 600, auth=auth)
    assert reply.status == 400, reply.raw
    reply = alice.register(["*"], 0, auth=auth)
    assert reply.status == 200, reply.raw
    assert reply.contacts() == {}, reply.raw
    # bob's binding stays; alice has none and is no registered user any more
    users = wait_status(gw, lambda u: u["bindings"].get("alice", []) == [])
    assert [b["contact"] for b in users["bindings"]["bob"]] == [bob.contact_uri("b1")], users
    assert users["registered_users"] == 1, users
    assert "alice" not in users["bindings"], users


def fresh_challenge(gw: GatewayProcess, user: str) -> dict[str, str]:
    """A fresh MD5 challenge: an unauthenticated REGISTER from another socket and Call-ID."""
    probe = RegisterClient(gw, user)
    try:
        reply = probe.register([f"<{probe.contact_uri('probe')}>"], 600)
        assert reply.status == 401, reply.raw
        return parse_challenge(reply.header("WWW-Authenticate") or "")
    finally:
        probe.close()


# --------------------------------------------------------------------------------------------
# 5. a REGISTER while a call to the user is being placed


def _sip_messages(sock: socket.socket, until: float) -> list[str]:
    """Every SIP message ``sock`` receives until the monotonic time ``until``."""
    out: list[str] = []
    while (left := until - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data, _ = sock.recvfrom(65536)
        except TimeoutError:
            break
        out.append(data.decode("utf-8", "replace"))
    return out


def _response_to(request: str, status: int, reason: str, to_tag: str) -> str:
    """A response to ``request`` (Via, From, To + tag, Call-ID, CSeq copied)."""
    lines = request.split("\r\n\r\n", 1)[0].split("\r\n")[1:]
    keep = [line for line in lines
            if line.partition(":")[0].strip().lower() in ("via", "v", "from", "f", "call-id",
                                                          "i", "cseq")]
    to = next(line for line in lines if line.partition(":")[0].strip().lower() in ("to", "t"))
    if ";tag=" not in to:
        to += f";tag={to_tag}"
    return (f"SIP/2.0 {status} {reason}\r\n" + "\r\n".join([*keep, to])
            + "\r\nContent-Length: 0\r\n\r\n")


def _invites(messages: Sequence[str]) -> list[str]:
    """The Request-URIs of the INVITEs among ``messages``, retransmissions counted once."""
    seen: dict[str, str] = {}
    for text in messages:
        if text.startswith("INVITE "):
            branch = re.search(r"branch=([^;\s,]+)", text)
            seen.setdefault(branch.group(1) if branch else text, text.split()[1])
    return list(seen.values())


@pytest.mark.parametrize("remove_first", [False, True], ids=["added", "added-and-removed"])
def test_a_register_during_a_calls_attempts_does_not_re_point_them(
    gateway_factory: GatewayFactory, raw_clients: Any, remove_first: bool
) -> None:
    """A call to a user rings the bindings it was routed to, in their order then: a REGISTER
    in between that adds a contact (first in the order now) neither makes the call ring a
    contact twice nor skips one, nor rings the new one; a contact removed in between is not
    rung."""
    carrier = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    carrier.bind((LOOPBACK, 0))
    cport = carrier.getsockname()[1]
    dialplan = (f"[[inbound]]\nname = \"to-alice\"\nmatch = '^{USER_NUMBER}$'\n"
                "action = \"user:alice\"\n")
    gw = _gateway(gateway_factory, dialplan=dialplan, trunks=[
        TrunkSpec("carrier", cport, inbound_from=(f"{LOOPBACK}:{cport}",), codecs=("PCMU",)),
    ])
    phone = raw_clients(gw, "alice")
    auth = ("alice", USERS["alice"])
    first, second, third = (phone.contact_uri(t) for t in ("first", "second", "third"))
    for contact in (first, second):  # one REGISTER each: "second" is the newer, rung first
        assert phone.register([f"<{contact}>"], 600, auth=auth).status == 200
    try:
        call_id, tag = uuid.uuid4().hex, uuid.uuid4().hex[:8]
        branch = "z9hG4bK" + uuid.uuid4().hex
        sdp = (f"v=0\r\no=- 1 1 IN IP4 {LOOPBACK}\r\ns=-\r\nc=IN IP4 {LOOPBACK}\r\nt=0 0\r\n"
               f"m=audio {cport + 2} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
        head = (f"Via: SIP/2.0/UDP {LOOPBACK}:{cport};branch={branch};rport\r\n"
                f"From: <sip:carrier@{LOOPBACK}>;tag={tag}\r\n"
                f"Call-ID: {call_id}\r\n")
        carrier.sendto((
            f"INVITE sip:{USER_NUMBER}@{LOOPBACK}:{gw.sip_udp} SIP/2.0\r\n{head}"
            f"To: <sip:{USER_NUMBER}@{LOOPBACK}>\r\nMax-Forwards: 70\r\nCSeq: 1 INVITE\r\n"
            f"Contact: <sip:carrier@{LOOPBACK}:{cport}>\r\n"
            f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n{sdp}"
        ).encode(), (LOOPBACK, gw.sip_udp))

        # the newest binding rings first: say 180, then a third contact registers
        got = _sip_messages(phone.sock, time.monotonic() + 3.0)
        assert _invites(got) == [second], got
        ringing = next(m for m in got if m.startswith("INVITE "))
        phone.sock.sendto(_response_to(ringing, 180, "Ringing", "t1").encode(), phone.gateway)
        assert phone.register([f"<{third}>"], 600, auth=auth).status == 200
        if remove_first:
            assert phone.register([f"<{first}>"], 0, auth=auth).status == 200
        # the rung contact gives up: the call goes on to the other binding of its route
        phone.sock.sendto(_response_to(ringing, 503, "Service Unavailable", "t1").encode(),
                          phone.gateway)
        got = _sip_messages(phone.sock, time.monotonic() + 3.0)
        if remove_first:
            assert _invites(got) == [], got  # "first" is gone; "third" came after the routing
        else:
            assert _invites(got) == [first], got  # not "second" again, not the new "third"
            last = next(m for m in got if m.startswith("INVITE "))
            phone.sock.sendto(_response_to(last, 503, "Service Unavailable", "t2").encode(),
                              phone.gateway)
        # no binding left: the carrier gets the error
        answers = _sip_messages(carrier, time.monotonic() + 3.0)
        finals = [int(m.split()[1]) for m in answers
                  if m.startswith("SIP/2.0 ") and not m.startswith("SIP/2.0 1")]
        assert finals and finals[0] == 503, answers
        to = next(line for line in answers[-1].split("\r\n") if line.lower().startswith("to:"))
        carrier.sendto((
            f"ACK sip:{USER_NUMBER}@{LOOPBACK}:{gw.sip_udp} SIP/2.0\r\n{head}{to}\r\n"
            f"Max-Forwards: 70\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
        ).encode(), (LOOPBACK, gw.sip_udp))
    finally:
        carrier.close()
    assert gw.stop() == 0
