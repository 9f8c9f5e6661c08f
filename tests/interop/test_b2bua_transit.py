"""B2BUA transit through the real gateway process, with SIPp as carrier and caller.

Issue 2's "Show" list: UDP load, TCP, TLS, CANCEL, busy, failover, OPTIONS on every
transport, 404/482/483/503 answers, dial plan reload. Every test starts its own gateway
on free loopback ports (tests/interop/harness.py).
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest

from .conftest import GatewayFactory, SippClient, SippServerFactory
from .harness import (
    GatewayProcess,
    TrunkSpec,
    free_port,
    route_all_dialplan,
    sip_options_ping,
)
from .rawsip import RawUac
from .tls_uac import TlsUac, run_calls

NUMBER = "+15551234567"


def assert_no_leftovers(gw: GatewayProcess) -> None:
    """Stop the gateway and check that every call left every table (its last log line)."""
    gw.stop()
    text = gw.log_text()
    assert "live calls 0 dialogs 0 " in text, text[-3000:]
    assert "handler bugs 0" in text, text[-3000:]


def _gateway(
    gateway_factory: GatewayFactory,
    trunks: list[TrunkSpec],
    route: list[str],
    **kwargs: object,
) -> object:
    return gateway_factory(trunks=trunks, dialplan=route_all_dialplan(route), **kwargs)


def test_udp_2000_calls_at_100_cps(
    gateway_factory: GatewayFactory, sipp_server: SippServerFactory, sipp_client: SippClient
) -> None:
    uas = sipp_server("uas")
    gw = gateway_factory(
        trunks=[TrunkSpec("carrier", uas.port)], dialplan=route_all_dialplan(["carrier"])
    )
    result = sipp_client(
        "uac", gw.sip_target, service=NUMBER, calls=2000, rate=100, timeout_s=120
    )
    assert result.failed == 0, result.describe()
    assert result.successful == 2000, result.describe()
    assert uas.wait_counts(2000, 12) == (2000, 0)
    assert sip_options_ping(gw.sip_udp) is not None  # still serving
    assert_no_leftovers(gw)  # nothing left behind by 2,000 calls


def test_tcp_200_calls(
    gateway_factory: GatewayFactory, sipp_server: SippServerFactory, sipp_client: SippClient
) -> None:
    uas = sipp_server("uas", transport="t1")
    gw = gateway_factory(
        trunks=[TrunkSpec("carrier", uas.port, transport="tcp")],
        dialplan=route_all_dialplan(["carrier"]),
    )
    result = sipp_client(
        "uac", gw.sip_target, service=NUMBER, calls=200, rate=50, transport="t1", timeout_s=60
    )
    assert (result.successful, result.failed) == (200, 0), result.describe()
    assert uas.wait_counts(200, 12) == (200, 0)


def test_tls_100_calls(gateway_factory: GatewayFactory, sipp_server: SippServerFactory) -> None:
    uas = sipp_server("uas")
    gw = gateway_factory(
        trunks=[TrunkSpec("carrier", uas.port)], dialplan=route_all_dialplan(["carrier"])
    )
    result = run_calls("127.0.0.1", gw.sip_tls, str(gw.cert_path), NUMBER, 100)
    assert (result.successful, result.failed) == (100, 0), result.statuses
    assert uas.wait_counts(100, 12) == (100, 0)


def test_options_answered_on_every_transport(
    gateway_factory: GatewayFactory, sipp_client: SippClient
) -> None:
    gw = gateway_factory()
    for transport in ("u1", "t1"):
        result = sipp_client("options", gw.sip_target, calls=5, rate=10, transport=transport)
        assert (result.successful, result.failed) == (5, 0), result.describe()
    uac = TlsUac("127.0.0.1", gw.sip_tls, str(gw.cert_path))
    try:
        assert uac.options() == 200
    finally:
        uac.close()


def test_cancel_from_caller_gives_487_and_cancels_the_callee(
    gateway_factory: GatewayFactory, sipp_server: SippServerFactory, sipp_client: SippClient
) -> None:
    uas = sipp_server("uas_ring")
    gw = gateway_factory(
        trunks=[TrunkSpec("carrier", uas.port)], dialplan=route_all_dialplan(["carrier"])
    )
    result = sipp_client("uac_cancel", gw.sip_target, service=NUMBER, calls=20, rate=10)
    assert (result.successful, result.failed) == (20, 0), result.describe()
    # the callee saw a CANCEL, answered 487 and got its ACK, for every call
    assert uas.wait_counts(20, 12) == (20, 0)
    assert_no_leftovers(gw)


def test_busy_is_relayed_without_failover(
    gateway_factory: GatewayFactory, sipp_server: SippServerFactory, sipp_client: SippClient
) -> None:
    busy = sipp_server("uas_busy")
    spare = sipp_server("uas")
    gw = gateway_factory(
        trunks=[TrunkSpec("busy", busy.port), TrunkSpec("spare", spare.port)],
        dialplan=route_all_dialplan(["busy", "spare"]),
    )
    result = sipp_client("uac_expect_486", gw.sip_target, service=NUMBER, calls=10, rate=10)
    assert (result.successful, result.failed) == (10, 0), result.describe()
    assert busy.wait_counts(10, 12) == (10, 0)
    assert spare.wait_counts(0, 12) == (0, 0)  # 486 never fails over
    assert_no_leftovers(gw)


def test_decline_603_is_relayed_without_failover(
    gateway_factory: GatewayFactory, sipp_server: SippServerFactory, sipp_client: SippClient
) -> None:
    decline = sipp_server("uas_603")
    spare = sipp_server("uas")
    gw = gateway_factory(
        trunks=[TrunkSpec("decline", decline.port), TrunkSpec("spare", spare.port)],
        dialplan=route_all_dialplan(["decline", "spare"]),
    )
    result = sipp_client(
        "uac_busy_expect", gw.sip_target, service=NUMBER, calls=5, rate=10,
        variables={"expect": "603"},
    )
    assert (result.successful, result.failed) == (5, 0), result.describe()
    assert spare.wait_counts(0, 12) == (0, 0)


def test_failover_on_503(
    gateway_factory: GatewayFactory, sipp_server: SippServerFactory, sipp_client: SippClient
) -> None:
    refusing = sipp_server("uas_503")
    good = sipp_server("uas")
    gw = gateway_factory(
        trunks=[TrunkSpec("refusing", refusing.port), TrunkSpec("good", good.port)],
        dialplan=route_all_dialplan(["refusing", "good"]),
    )
    result = sipp_client("uac", gw.sip_target, service=NUMBER, calls=20, rate=10)
    assert (result.successful, result.failed) == (20, 0), result.describe()
    assert refusing.wait_counts(20, 12) == (20, 0)  # each call tried it first
    assert good.wait_counts(20, 12) == (20, 0)
    assert_no_leftovers(gw)


def test_failover_on_transport_failure_and_on_timeout(
    gateway_factory: GatewayFactory, sipp_server: SippServerFactory, sipp_client: SippClient
) -> None:
    good = sipp_server("uas")
    closed_tcp = free_port("tcp")  # nothing listens: connection refused
    silent_udp = free_port("udp")  # nothing answers: timer B (64*T1 = 3.2 s at T1 = 50 ms)
    gw = gateway_factory(
        trunks=[
            TrunkSpec("refused", closed_tcp, transport="tcp"),
            TrunkSpec("silent", silent_udp),
            TrunkSpec("good", good.port),
        ],
        dialplan=route_all_dialplan(["refused", "silent", "good"]),
        extra_config={"sip": {"t1": 0.05, "t2": 0.4}},
    )
    result = sipp_client("uac", gw.sip_target, service=NUMBER, calls=3, rate=3, timeout_s=30)
    assert (result.successful, result.failed) == (3, 0), result.describe()
    assert good.wait_counts(3, 12) == (3, 0)
    assert_no_leftovers(gw)


def test_all_trunks_failing_gives_the_last_error(
    gateway_factory: GatewayFactory, sipp_server: SippServerFactory, sipp_client: SippClient
) -> None:
    one = sipp_server("uas_503")
    two = sipp_server("uas_503")
    gw = gateway_factory(
        trunks=[TrunkSpec("one", one.port), TrunkSpec("two", two.port)],
        dialplan=route_all_dialplan(["one", "two"]),
    )
    result = sipp_client("uac_expect_503", gw.sip_target, service=NUMBER, calls=5, rate=10)
    assert (result.successful, result.failed) == (5, 0), result.describe()
    assert one.wait_counts(5, 12) == (5, 0)
    assert two.wait_counts(5, 12) == (5, 0)


def test_unrouted_number_gets_404(
    gateway_factory: GatewayFactory, sipp_server: SippServerFactory, sipp_client: SippClient
) -> None:
    uas = sipp_server("uas")
    gw = gateway_factory(
        trunks=[TrunkSpec("carrier", uas.port)],
        dialplan=route_all_dialplan(["carrier"], match=r"^\+1\d{10}$"),
    )
    result = sipp_client("uac_expect_404", gw.sip_target, service="+4420123", calls=5, rate=10)
    assert (result.successful, result.failed) == (5, 0), result.describe()
    assert uas.wait_counts(0, 12) == (0, 0)


def test_max_forwards_loop_and_call_limit(
    interop_dir: Path, sipp_server: SippServerFactory
) -> None:
    ringing = sipp_server("uas_ring")
    plan = (
        route_all_dialplan(["ring"], match=r"^\+1555\d+$")
        + '\n[[outbound]]\nname = "loop"\nmatch = \'^\\+1666\'\ntrunks = ["self"]\n'
    )
    gw = GatewayProcess(
        interop_dir / "gw",
        dialplan=plan,
        extra_config={"sip": {"max_calls": 2, "retry_after": 7}},
    )
    # the "self" trunk is the gateway's own SIP port: a routing loop
    gw.trunks = (TrunkSpec("ring", ringing.port), TrunkSpec("self", gw.sip_udp))
    with gw:
        _loop_and_limit(gw.sip_udp)


def _loop_and_limit(gw_port: int) -> None:
    uac = RawUac(gw_port)
    try:
        # Max-Forwards: 0 -> 483 (RFC 3261 section 16.3 step 3)
        call_id, branch = uac.invite("+15550000001", max_forwards=0)
        reply = uac.final()
        assert reply is not None and reply.status == 483
        uac.ack_error("+15550000001", call_id, branch, reply)
        # A call routed back to the gateway itself comes back with our own Via: 482
        call_id, branch = uac.invite("+16660000001")
        reply = uac.final()
        assert reply is not None and reply.status == 482, reply
        uac.ack_error("+16660000001", call_id, branch, reply)
        # Two calls ringing fill max_calls = 2; the third gets 503 with Retry-After
        ringing_calls = [uac.invite(f"+1555000000{i}") for i in (1, 2)]
        time.sleep(0.5)
        call_id, branch = uac.invite("+15550000003")
        reply = uac.final(call_id=call_id)
        assert reply is not None and reply.status == 503
        assert reply.header("Retry-After") == "7"
        uac.ack_error("+15550000003", call_id, branch, reply)
        for i, (cid, br) in zip((1, 2), ringing_calls):
            uac.cancel(f"+1555000000{i}", cid, br)
        statuses = []
        for cid, _ in ringing_calls:
            final = uac.final(method="INVITE", call_id=cid)
            assert final is not None
            statuses.append(final.status)
        assert statuses == [487, 487]
    finally:
        uac.close()


INVALID = sorted(
    p for p in (Path(__file__).parent.parent / "vectors" / "rfc4475").glob("*.dat")
)


def test_invalid_vectors_over_udp_never_stop_the_gateway(
    gateway_factory: GatewayFactory, sipp_server: SippServerFactory, sipp_client: SippClient
) -> None:
    uas = sipp_server("uas")
    gw = gateway_factory(
        trunks=[TrunkSpec("carrier", uas.port, inbound_from=("127.0.0.2/32",))],
        dialplan=route_all_dialplan(["carrier"]),
    )
    vectors = sorted((Path(__file__).parent.parent / "vectors").glob("rfc*/**/*.dat"))
    assert len(vectors) > 60
    answered: dict[str, int] = {}
    for i, path in enumerate(vectors):
        # One socket per vector, so a late answer is never taken for the next one's. The
        # vectors' Vias carry no rport, so answers would go to the Via's port 5060 (RFC 3261
        # section 18.2.2): ";rport" on the first Via brings them back to this socket. Several
        # vectors share a branch and sent-by, which makes a later one a retransmission of an
        # earlier one's transaction (section 17.2.3): a suffix keeps each branch unique.
        data = re.sub(rb"^(Via|v)([ \t]*:[^\r\n]*?)(\r?\n)", rb"\1\2;rport\3",
                      path.read_bytes(), count=1, flags=re.M | re.I)
        data = re.sub(rb"(branch=z9hG4bK[^;\s,]+)", rb"\1-v%d" % i, data, count=1)
        uac = RawUac(gw.sip_udp)
        try:
            uac.send(data)
            reply = uac.recv(0.25)
            if reply is not None:
                answered[path.name] = reply.status
        finally:
            uac.close()
    # the RFC's answers, spot-checked from the index (section 3 of RFC 4475)
    assert answered.get("badvers.dat") == 505
    assert answered.get("unkscm.dat") == 416
    assert answered.get("bext01.dat") == 420
    assert answered.get("insuf.dat") == 400
    assert answered.get("mcl01.dat") == 400
    assert answered.get("ltgtruri.dat") == 400
    assert answered.get("scalar02.dat") == 400
    assert "bigcode.dat" not in answered  # a response: dropped, never answered
    # the gateway still serves calls (the trunk accepts only 127.0.0.2, so use it)
    result = sipp_client(
        "uac", gw.sip_target, service=NUMBER, calls=10, rate=10,
        extra_args=["-i", "127.0.0.2"],
    )
    assert (result.successful, result.failed) == (10, 0), result.describe()


def test_sighup_reloads_the_dial_plan_and_keeps_it_when_invalid(
    gateway_factory: GatewayFactory, sipp_server: SippServerFactory, sipp_client: SippClient
) -> None:
    uas = sipp_server("uas")
    gw = gateway_factory(
        trunks=[TrunkSpec("carrier", uas.port)],
        dialplan=route_all_dialplan(["carrier"], match=r"^\+1"),
    )
    assert sipp_client("uac_expect_404", gw.sip_target, service="+4420", calls=1).ok
    gw.write_dialplan(route_all_dialplan(["carrier"], match=r"^\+44"))
    os.kill(gw.pid, signal.SIGHUP)
    time.sleep(0.5)
    result = sipp_client("uac", gw.sip_target, service="+4420", calls=1)
    assert result.ok, result.describe()
    gw.write_dialplan('[[outbound]]\nmatch = "(unclosed"\ntrunks = ["carrier"]\n')
    os.kill(gw.pid, signal.SIGHUP)
    time.sleep(0.5)
    result = sipp_client("uac", gw.sip_target, service="+4420", calls=1)
    assert result.ok, result.describe()  # the old plan still routes
    assert "keeping the old plan" in gw.log_text()


def test_gateway_refuses_to_start_with_a_bad_dial_plan(tmp_path: Path) -> None:
    import subprocess
    import sys

    plan = tmp_path / "plan.toml"
    plan.write_text('[[outbound]]\nmatch = "(unclosed"\ntrunks = []\n')
    conf = tmp_path / "gw.toml"
    conf.write_text(
        f'[sip]\nlisten = ["udp:127.0.0.1:{free_port()}"]\n'
        f'[dialplan]\nfiles = ["{plan}"]\n'
        f'[turn]\nenabled = false\nlisten = []\n'
    )
    proc = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "run", "-c", str(conf)],
        capture_output=True, text=True, timeout=30, cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert str(plan) in proc.stderr and "outbound" in proc.stderr


@pytest.mark.parametrize("transport", ["u1", "t1"])
def test_bye_from_callee_ends_both_legs(
    transport: str,
    gateway_factory: GatewayFactory,
    sipp_server: SippServerFactory,
    sipp_client: SippClient,
) -> None:
    """The caller hangs up in uac.xml; here the callee side sends BYE (uas_bye.xml)."""
    uas = sipp_server("uas_bye", transport=transport)
    gw = gateway_factory(
        trunks=[TrunkSpec("carrier", uas.port, transport="udp" if transport == "u1" else "tcp")],
        dialplan=route_all_dialplan(["carrier"]),
    )
    result = sipp_client(
        "uac_wait_bye", gw.sip_target, service=NUMBER, calls=10, rate=10, transport=transport
    )
    assert (result.successful, result.failed) == (10, 0), result.describe()
    assert uas.wait_counts(10, 12) == (10, 0)
    assert_no_leftovers(gw)
