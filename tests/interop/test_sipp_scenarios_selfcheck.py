"""The SIPp scenarios against each other, without the gateway, so that a scenario bug is never
taken for a gateway bug. Each pair runs over UDP and TCP; the negative cases prove that a
scenario really fails when the peer misbehaves (a check that cannot fail proves nothing).

Also checked here: the harness pieces the gateway tests stand on (the OPTIONS probe, the
generated gateway config, Sippy as a relay).
"""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .conftest import SippClient, SippServerFactory
from .harness import (
    LOOPBACK,
    REPO_ROOT,
    SCENARIO_DIR,
    GatewayProcess,
    SippTransport,
    SippyB2bua,
    TrunkSpec,
    free_port,
    parse_stat_csv,
    repo_env,
    route_all_dialplan,
    run_sipp,
    sip_options_ping,
)

TRANSPORTS: list[SippTransport] = ["u1", "t1"]
CALLEE = "+15551234567"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_uac_to_uas(
    transport: SippTransport, sipp_server: SippServerFactory, sipp_client: SippClient
) -> None:
    uas = sipp_server("uas", transport=transport)
    result = sipp_client(
        "uac", uas.address, service=CALLEE, calls=20, rate=50, transport=transport, timeout_s=20
    )
    assert result.ok, result.describe()
    assert result.successful == 20
    assert result.response_time_ms(1) < 1000, result.describe()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_uac_cancel_to_uas_ring(
    transport: SippTransport, sipp_server: SippServerFactory, sipp_client: SippClient
) -> None:
    uas = sipp_server("uas_ring", transport=transport)
    result = sipp_client(
        "uac_cancel",
        uas.address,
        service=CALLEE,
        calls=10,
        rate=20,
        transport=transport,
        timeout_s=20,
    )
    assert result.ok, result.describe()


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(
    ("uac", "uas", "variables"),
    [
        ("uac_expect_486", "uas_busy", {}),
        ("uac_expect_503", "uas_503", {}),
        ("uac_busy_expect", "uas_busy", {}),
        ("uac_busy_expect", "uas_503", {"expect": "503"}),
    ],
)
def test_uac_expecting_an_error(
    transport: SippTransport,
    uac: str,
    uas: str,
    variables: dict[str, str],
    sipp_server: SippServerFactory,
    sipp_client: SippClient,
) -> None:
    server = sipp_server(uas, transport=transport)
    result = sipp_client(
        uac,
        server.address,
        service=CALLEE,
        calls=10,
        rate=20,
        transport=transport,
        timeout_s=20,
        variables=variables,
    )
    assert result.ok, result.describe()
    # the UAS got its ACK for every rejection (its calls end only then)
    assert _wait_server_counts(server.stat_path, 10), server.log_text()[-2000:]


# -- negative cases: a wrong answer must fail the call --------------------------------------


@pytest.mark.parametrize(
    ("uac", "uas", "variables", "counters"),
    [
        # a 486 where a 200 is expected
        ("uac", "uas_busy", {}, {"FailedUnexpectedMessage"}),
        # a 486 where a 404 is expected (the $expect comparison)
        ("uac_busy_expect", "uas_busy", {"expect": "404"}, {"FailedStrcmpDoesntMatch"}),
        ("uac_expect_404", "uas_busy", {}, {"FailedUnexpectedMessage"}),
        # the callee answers at once: a 200 (INVITE) before the CANCEL is unexpected, one
        # after it fails the CSeq check (it must not pass for the 200 of the CANCEL)
        ("uac_cancel", "uas", {}, {"FailedUnexpectedMessage", "FailedRegexpDoesntMatch"}),
    ],
)
def test_wrong_answer_fails_the_call(
    uac: str,
    uas: str,
    variables: dict[str, str],
    counters: set[str],
    sipp_server: SippServerFactory,
    sipp_client: SippClient,
) -> None:
    server = sipp_server(uas)
    result = sipp_client(
        uac, server.address, service=CALLEE, calls=3, rate=10, timeout_s=20, variables=variables
    )
    assert not result.ok
    assert result.exit_code == 1, result.describe()
    assert result.successful == 0 and result.failed == 3, result.describe()
    assert set(result.failure_breakdown) <= counters, result.describe()
    assert sum(result.failure_breakdown.values()) >= 3, result.describe()


def test_caller_is_settable(sipp_server: SippServerFactory, sipp_client: SippClient) -> None:
    uas = sipp_server("uas")
    default = sipp_client(
        "uac", uas.address, service=CALLEE, calls=1, timeout_s=10, extra_args=["-trace_msg"]
    )
    chosen = sipp_client(
        "uac",
        uas.address,
        service=CALLEE,
        calls=1,
        timeout_s=10,
        variables={"caller": "+15557654321"},
        extra_args=["-trace_msg"],
    )
    assert default.ok and chosen.ok, default.describe() + chosen.describe()
    assert "From: <sip:+15550001111@" in _messages(default)
    assert "From: <sip:+15557654321@" in _messages(chosen)
    assert f"INVITE sip:{CALLEE}@{uas.address} SIP/2.0" in _messages(default)
    assert ";transport=udp>" in _messages(default)


def test_lost_answer_fails_in_bounded_time(sipp_client: SippClient) -> None:
    """Nobody at the target: the run ends at -timeout (SIPp's exit code says so), not later."""
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind((LOOPBACK, 0))  # bound, so no ICMP error either: datagrams just vanish
    try:
        result = sipp_client(
            "uac", f"{LOOPBACK}:{silent.getsockname()[1]}", service=CALLEE, calls=1, timeout_s=3
        )
    finally:
        silent.close()
    assert not result.ok
    assert result.exit_code != 0
    assert result.successful == 0
    assert result.elapsed_s < 15, result.describe()


def test_stat_csv_is_parsed(sipp_server: SippServerFactory, sipp_client: SippClient) -> None:
    uas = sipp_server("uas")
    result = sipp_client("uac", uas.address, service=CALLEE, calls=5, rate=50, timeout_s=10)
    assert result.stat_path is not None
    stats = parse_stat_csv(result.stat_path)
    assert stats is not None
    assert stats["SuccessfulCall(C)"] == "5" and stats["FailedCall(C)"] == "0"
    assert stats["OutgoingCall(C)"] == "5"


def test_every_scenario_is_documented() -> None:
    readme = (SCENARIO_DIR / "README.md").read_text()
    for path in sorted(SCENARIO_DIR.glob("*.xml")):
        assert f"`{path.name}`" in readme, f"{path.name} is not described in README.md"


# -- scripted UDP peers: OPTIONS, and a callee that answers a BYE wrongly -----------------


Respond = Callable[[str], list[str]]


def sip_reply(request: str, status: str, *extra: str, body: str = "") -> str:
    """A response to ``request`` echoing Via, From, To (tagged), Call-ID, CSeq (RFC 3261
    8.2.6.2)."""
    head = request.split("\r\n\r\n", 1)[0].split("\r\n")
    keep = [h for h in head[1:] if re.match(r"(?i)(via|from|to|call-id|cseq)\s*:", h)]
    keep = [h + ";tag=peer" if h.lower().startswith("to:") and "tag=" not in h else h for h in keep]
    lines = [f"SIP/2.0 {status}", *keep, *extra, f"Content-Length: {len(body)}", "", body]
    return "\r\n".join(lines)


@contextlib.contextmanager
def scripted_udp_peer(respond: Respond) -> Iterator[int]:
    """A UDP peer on 127.0.0.1 sending ``respond(request)`` back for every request; its port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((LOOPBACK, 0))
    sock.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                data, peer = sock.recvfrom(65535)
            except TimeoutError:
                continue
            text = data.decode("latin-1")
            if text.startswith("SIP/2.0"):
                continue
            for reply in respond(text):
                sock.sendto(reply.encode("latin-1"), peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=2)
        sock.close()


def _answer_everything(request: str) -> list[str]:
    return [sip_reply(request, "200 OK")]


def test_options_scenario(sipp_client: SippClient) -> None:
    with scripted_udp_peer(_answer_everything) as port:
        result = sipp_client("options", f"{LOOPBACK}:{port}", calls=10, rate=50, timeout_s=10)
    assert result.ok, result.describe()


def test_options_probe() -> None:
    with scripted_udp_peer(_answer_everything) as port:
        reply = sip_options_ping(port, timeout=2.0)
    assert reply is not None and reply.startswith(b"SIP/2.0 200 OK\r\n")
    assert sip_options_ping(free_port("udp"), timeout=0.3) is None


def _answering_callee(on_bye: Callable[[str, str], list[str]], acks: list[str]) -> Respond:
    """A callee answering INVITE with 200 at once; ``on_bye(bye, invite_200)`` answers BYE."""
    answers: dict[str, str] = {}

    def callee(request: str) -> list[str]:
        call_id = re.search(r"(?im)^call-id:\s*(\S+)", request)
        key = call_id.group(1) if call_id else ""
        if request.startswith("INVITE"):
            sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            sdp += "m=audio 4000 RTP/AVP 0\r\n"
            answers[key] = sip_reply(
                request,
                "200 OK",
                f"Contact: <sip:peer@{LOOPBACK}:1>",
                "Content-Type: application/sdp",
                body=sdp,
            )
            return [answers[key]]
        if request.startswith("ACK"):
            acks.append(key)
        if request.startswith("BYE"):
            return on_bye(request, answers.get(key, ""))
        return []

    return callee


def test_uac_ignores_a_retransmitted_200_while_its_bye_waits(sipp_client: SippClient) -> None:
    """SIPp matches responses on the status code alone; uac.xml checks the CSeq method, so a
    retransmitted 200 of the INVITE (an overloaded far end that had not processed the ACK
    yet) is skipped instead of passing for the BYE's 200."""
    acks: list[str] = []
    stale_then_ok = _answering_callee(
        lambda bye, invite_200: [invite_200, sip_reply(bye, "200 OK")], acks
    )
    with scripted_udp_peer(stale_then_ok) as port:
        result = sipp_client(
            "uac", f"{LOOPBACK}:{port}", service=CALLEE, calls=3, rate=10, timeout_s=10
        )
    assert result.ok, result.describe()
    assert len(acks) == 3, acks


def test_uac_does_not_take_the_invites_200_for_the_byes(sipp_client: SippClient) -> None:
    acks: list[str] = []
    stale_only = _answering_callee(lambda bye, invite_200: [invite_200], acks)
    with scripted_udp_peer(stale_only) as port:
        result = sipp_client(
            "uac", f"{LOOPBACK}:{port}", service=CALLEE, calls=2, rate=10, timeout_s=3
        )
    assert result.successful == 0, result.describe()
    assert not result.ok


def test_uac_ignores_a_late_provisional(sipp_client: SippClient) -> None:
    """A 180 after the 200 (Sippy's sender threads reorder them under load), or while the
    BYE waits for its 200, is ignored, as a real UA does (the first with -pause_msg_ign)."""

    def late_180s(bye: str, invite_200: str) -> list[str]:
        invite = re.sub(r"(?m)^CSeq: \d+ BYE", "CSeq: 1 INVITE", bye)
        return [sip_reply(invite, "180 Ringing"), sip_reply(bye, "200 OK")]

    callee = _answering_callee(late_180s, [])

    def with_late_180(request: str) -> list[str]:
        replies = callee(request)
        if request.startswith("INVITE"):
            replies.append(sip_reply(request, "180 Ringing"))
        return replies

    with scripted_udp_peer(with_late_180) as port:
        result = sipp_client(
            "uac",
            f"{LOOPBACK}:{port}",
            service=CALLEE,
            calls=5,
            rate=20,
            timeout_s=10,
            extra_args=["-pause_msg_ign"],
        )
    assert result.ok, result.describe()


# -- the generated gateway config ---------------------------------------------------------


def test_gateway_config_follows_the_contract(tmp_path: Path) -> None:
    gateway = GatewayProcess(
        tmp_path / "gw",
        trunks=[TrunkSpec("uas", 5999), TrunkSpec("tcp-peer", 5998, transport="tcp")],
        dialplan=route_all_dialplan(["uas", "tcp-peer"]),
        extra_config={"sip": {"users": {"alice": "secret"}}, "log": {"level": "warning"}},
    )
    gateway.write_files()
    config = tomllib.loads(gateway.config_path.read_text())
    assert config["sip"]["listen"] == [
        f"udp:{LOOPBACK}:{gateway.sip_udp}",
        f"tcp:{LOOPBACK}:{gateway.sip_tcp}",
        f"tls:{LOOPBACK}:{gateway.sip_tls}",
    ]
    assert config["sip"]["users"] == {"alice": "secret"}
    assert config["rest"]["incoming_call_webhooks"] == []
    assert config["trunk"][1]["uri"] == f"sip:{LOOPBACK}:5998;transport=tcp"
    for path in [config["tls"]["cert"], config["storage"]["cdr"], *config["dialplan"]["files"]]:
        assert Path(path).is_absolute()
    plan = tomllib.loads(gateway.dialplan_path.read_text())
    assert plan["outbound"][0]["trunks"] == ["uas", "tcp-peer"]
    if not (REPO_ROOT / "gateway" / "cli.py").exists():
        pytest.skip("gateway.cli not there yet: the config is not checked by the gateway")
    check = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "check", "-c", str(gateway.config_path)],
        cwd=gateway.workdir,
        env=repo_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.returncode == 0, check.stderr + check.stdout


# -- Sippy relays SIPp to SIPp (the bench's reference peer) --------------------------------


def test_sippy_relays_calls(
    sippy_available: str, sipp_server: SippServerFactory, interop_dir: Path
) -> None:
    uas = sipp_server("uas")
    with SippyB2bua(uas.address, interop_dir / "sippy", python=sippy_available) as sippy:
        result = run_sipp(
            "uac",
            sippy.sip_target,
            service=CALLEE,
            calls=10,
            rate=10,
            timeout_s=20,
            workdir=interop_dir,
        )
        assert result.ok, result.describe() + "\n" + sippy.log_text()[-3000:]
    # the callee side saw every call through to its BYE (uas.xml holds 4 s of timewait)
    assert _wait_server_counts(uas.stat_path, 10, timeout_s=8), uas.log_text()[-2000:]
    assert "Traceback" not in sippy.log_text()


# -- helpers ---------------------------------------------------------------------------------


def _wait_server_counts(stat_path: Path | None, successful: int, timeout_s: float = 6.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        stats = parse_stat_csv(stat_path) if stat_path else None
        if stats and int(stats.get("SuccessfulCall(C)", "0")) >= successful:
            return True
        time.sleep(0.2)
    return False


def _messages(result: object) -> str:
    workdir = getattr(result, "workdir", None)
    assert isinstance(workdir, Path)
    return "\n".join(p.read_text(errors="replace") for p in workdir.glob("*_messages.log"))
