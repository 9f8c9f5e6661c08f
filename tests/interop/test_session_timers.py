"""Session timers (RFC 4028; issue 3, item 6) through the real gateway, each leg on its own.

The intervals are 4 s so the tests are short: the gateway's [sip] min_se is lowered to 2
for them (RFC 4028 requires at least 90 in service).
"""

from __future__ import annotations

import sqlite3

from .conftest import GatewayFactory, SippClient, SippServerFactory
from .harness import TrunkSpec, free_port, route_all_dialplan

NUMBER = "+15551234567"
TIMERS = {"sip": {"min_se": 2, "session_expires": 4}}


def _gateway(gateway_factory: GatewayFactory, callee_port: int) -> object:
    return gateway_factory(
        trunks=[TrunkSpec("out", callee_port, inbound_from=()), TrunkSpec("pbx", free_port())],
        dialplan=route_all_dialplan(["out"]),
        extra_config=TIMERS,
    )


def test_refreshes_from_the_caller_are_answered_by_the_gateway(
    gateway_factory: GatewayFactory, sipp_server: SippServerFactory, sipp_client: SippClient
) -> None:
    callee = sipp_server("uas")  # fails on any re-INVITE/UPDATE reaching it
    gw = _gateway(gateway_factory, callee.port)
    result = sipp_client("uac_timer_refresh", gw.sip_target, service=NUMBER, calls=3, rate=5)
    assert (result.successful, result.failed) == (3, 0), result.describe()
    assert callee.wait_counts(3, 15) == (3, 0)


def test_a_missing_refresh_ends_the_call_on_both_legs(
    gateway_factory: GatewayFactory, sipp_server: SippServerFactory, sipp_client: SippClient
) -> None:
    callee = sipp_server("uas")  # gets the gateway's BYE
    gw = _gateway(gateway_factory, callee.port)
    result = sipp_client("uac_timer_norefresh", gw.sip_target, service=NUMBER, calls=2, rate=5,
                         timeout_s=30)
    assert (result.successful, result.failed) == (2, 0), result.describe()
    assert callee.wait_counts(2, 15) == (2, 0)
    gw.stop()
    con = sqlite3.connect(f"file:{gw.cdr_path}?mode=ro", uri=True)
    rows = con.execute("SELECT release_side, reason FROM cdr_calls").fetchall()
    con.close()
    assert rows == [("gateway", "session timer expired")] * 2


def test_the_gateway_refreshes_when_the_callee_makes_it_the_refresher(
    gateway_factory: GatewayFactory, sipp_server: SippServerFactory, sipp_client: SippClient
) -> None:
    callee = sipp_server("uas_timer")
    gw = _gateway(gateway_factory, callee.port)
    result = sipp_client("uac", gw.sip_target, service=NUMBER, calls=3, rate=5,
                         duration_ms=3000)
    assert (result.successful, result.failed) == (3, 0), result.describe()
    assert callee.wait_counts(3, 15) == (3, 0)


def test_too_short_an_interval_gets_422_with_min_se(
    gateway_factory: GatewayFactory, sipp_server: SippServerFactory
) -> None:
    from .rawsip import RawUac

    callee = sipp_server("uas")
    gw = gateway_factory(
        trunks=[TrunkSpec("out", callee.port, inbound_from=()), TrunkSpec("pbx", free_port())],
        dialplan=route_all_dialplan(["out"]),
    )
    uac = RawUac(gw.sip_udp)
    try:
        call_id, branch = uac.invite(NUMBER, extra="Session-Expires: 30\r\nSupported: timer\r\n")
        reply = uac.final(call_id=call_id)
        assert reply is not None and reply.status == 422
        assert reply.header("Min-SE") == "90"
        uac.ack_error(NUMBER, call_id, branch, reply)
    finally:
        uac.close()


def test_the_gateway_keeps_refreshing_a_long_call(
    gateway_factory: GatewayFactory, sipp_server: SippServerFactory, sipp_client: SippClient
) -> None:
    callee = sipp_server("uas_timer_long")  # grants what is asked, gateway refreshes
    gw = _gateway(gateway_factory, callee.port)  # asks for 4 s: refreshes every 2 s
    result = sipp_client("uac", gw.sip_target, service=NUMBER, calls=2, rate=5,
                         duration_ms=7000, timeout_s=40)
    assert (result.successful, result.failed) == (2, 0), result.describe()
    assert callee.wait_counts(2, 15) == (2, 0)
    callee.stop()
    # SIPp's last screen counts each step's messages: UPDATEs came, one per refresh
    rows = [line for line in callee.log_text().splitlines() if "----------> UPDATE" in line]
    assert rows and int(rows[-1].split()[2]) >= 4, rows  # 2 calls x at least 2 refreshes


def test_a_callees_422_is_answered_with_its_min_se(
    gateway_factory: GatewayFactory, sipp_server: SippServerFactory, sipp_client: SippClient
) -> None:
    callee = sipp_server("uas_422")  # wants >= 30 s; the gateway first asks for 4 s
    gw = _gateway(gateway_factory, callee.port)
    result = sipp_client("uac", gw.sip_target, service=NUMBER, calls=3, rate=5)
    assert (result.successful, result.failed) == (3, 0), result.describe()
    assert callee.wait_counts(3, 15) == (3, 0)
