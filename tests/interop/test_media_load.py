"""Issue 4 under load: every anchored call takes two RTP/RTCP port pairs from the pool (one
per leg) and gives them back when it ends; a call that finds the pool empty gets 503, and
the pool is whole again afterwards.

SIPp ``uac.xml`` (G.711 SDP offer) calls through the gateway to SIPp ``uas.xml``; the
gateway's live status (``trunks.json``) says what the media plane holds.
"""

from __future__ import annotations

import threading

from .conftest import GatewayFactory, SippClient, SippServerFactory
from .harness import SippResult, TrunkSpec, free_port, route_all_dialplan
from .test_media_dtmf import RawUas, answer_sdp, free_media_range, wait_idle
from .test_media_relay import Caller, wait_status

NUMBER = "+15551230000"


def test_hundred_calls_leave_no_media_behind(
    gateway_factory: GatewayFactory, sipp_server: SippServerFactory, sipp_client: SippClient
) -> None:
    """100 one-second calls at 20 calls/s (about 20 at once, 40 port pairs): all succeed;
    afterwards no media session or stream is left, the pool is full, no handler failed."""
    uas = sipp_server("uas")
    gw = gateway_factory(trunks=[TrunkSpec("carrier", uas.port)],
                         dialplan=route_all_dialplan(["carrier"]),
                         extra_config={"media": {"port_range": free_media_range(1000)}})
    result = sipp_client("uac", gw.sip_target, service=NUMBER, calls=100, rate=20,
                         duration_ms=1000, timeout_s=90, extra_args=["-pause_msg_ign"])
    assert result.ok, result.describe()
    assert uas.wait_counts(100, 20.0) == (100, 0), uas.log_text()[-3000:]
    live = wait_idle(gw, started=100)
    assert live["calls_answered"] == 100 and live["calls_failed"] == 0, live
    assert live["media_ports_free"] == live["media_ports_total"] == 500, live
    assert live["transcoders"] == 0 and live["media_timeouts"] == 0, live
    assert live["media_handler_errors"] == 0 and live["handler_errors"] == 0, live
    gw.stop()
    assert "handler bugs 0" in gw.log_text()


def test_calls_beyond_the_port_pool_get_503_and_the_pool_refills(
    gateway_factory: GatewayFactory, sipp_server: SippServerFactory, sipp_client: SippClient
) -> None:
    """[media] port_range of 10 ports: 5 RTP/RTCP pairs, room for 2 calls (2 pairs each).
    With 2 calls up, 5 more callers each get 503; when the 2 end, the pool is full again
    and a new call goes through."""
    first, last = free_media_range(10)
    uas = sipp_server("uas")
    gw = gateway_factory(trunks=[TrunkSpec("carrier", uas.port)],
                         dialplan=route_all_dialplan(["carrier"]),
                         extra_config={"media": {"port_range": [first, last]}})
    live = wait_status(gw, lambda s: "media_ports_total" in s)
    assert live["media_ports_total"] == 5 and live["media_ports_free"] == 5, live

    held: list[SippResult] = []

    def two_long_calls() -> None:
        held.append(sipp_client("uac", gw.sip_target, service=NUMBER, calls=2, rate=20,
                                duration_ms=8000, timeout_s=40,
                                extra_args=["-pause_msg_ign"]))

    runner = threading.Thread(target=two_long_calls, daemon=True)
    runner.start()
    try:
        live = wait_status(gw, lambda s: s.get("calls_answered", 0) >= 2 and s.get("calls") == 2,
                           timeout_s=6.0)
        assert live["media_ports_free"] == 1, live  # 4 of the 5 pairs in use
        refused = sipp_client("uac_expect_503", gw.sip_target, service=NUMBER, calls=5,
                              rate=10, timeout_s=30)
        assert refused.ok, refused.describe()
    finally:
        runner.join(60)
    assert held and held[0].ok, held[0].describe() if held else "the 2 calls never finished"
    live = wait_idle(gw, started=7)
    assert live["calls_answered"] == 2, live
    assert live["media_ports_free"] == live["media_ports_total"] == 5, live
    assert live["media_handler_errors"] == 0 and live["handler_errors"] == 0, live
    again = sipp_client("uac", gw.sip_target, service=NUMBER, calls=1, rate=1,
                        duration_ms=500, timeout_s=20)
    assert again.ok, again.describe()
    live = wait_idle(gw, started=8)
    assert live["media_ports_free"] == 5, live
    # the callee never failed a call (some of the refused ones reached it and got a BYE)
    successful, failed = uas.wait_counts(3, 15.0)
    assert failed == 0 and successful >= 3, uas.log_text()[-3000:]
    gw.stop()
    assert "handler bugs 0" in gw.log_text()


def test_calls_beyond_the_port_pool_are_refused_before_the_callee_is_alerted(
    gateway_factory: GatewayFactory,
) -> None:
    """The same full pool, seen from the callee: a call the gateway cannot anchor (no pair
    left for the caller's leg) is refused with 503 before any INVITE goes out, so the
    carrier never rings (and bills) a call that is hung up as soon as it is answered."""
    first, last = free_media_range(10)
    uas = RawUas(lambda offer, port: answer_sdp(port, [(0, "PCMU/8000", None)]))
    gw = gateway_factory(
        trunks=[TrunkSpec("phones", free_port()),
                TrunkSpec("carrier", uas.port, inbound_from=())],
        dialplan=route_all_dialplan(["carrier"]),
        extra_config={"media": {"port_range": [first, last]}})
    callers = [Caller(gw, NUMBER) for _ in range(4)]
    try:
        for caller in callers[:2]:
            reply = caller.invite()
            assert reply.status == 200, reply.raw
        for caller in callers[2:]:
            reply = caller.invite()
            assert reply.status == 503, reply.raw
        invites = {r.header("call-id") for r in uas.got("INVITE")}
        assert len(invites) == 2, f"{len(invites)} INVITEs reached the callee, 2 calls fit"
        for caller in callers[:2]:
            assert caller.bye() is not None
    finally:
        for caller in callers:
            caller.close()
        uas.close()
    live = wait_idle(gw, started=4)
    assert live["media_ports_free"] == live["media_ports_total"] == 5, live
