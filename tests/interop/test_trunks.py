"""Trunk protection and probing through the real gateway process (issue 3, items 3 and 10).

A SIPp callee plays each carrier; the gateway's view of its trunks is read from the status
file it keeps beside the CDR database (what ``acs-gateway trunks`` prints).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from .conftest import GatewayFactory, SippClient, SippServerFactory
from .harness import GatewayProcess, TrunkSpec, free_port, route_all_dialplan
from .rawsip import RawUac

NUMBER = "+15551234567"


def _trunk_state(gw: GatewayProcess, name: str) -> str | None:
    path = Path(gw.cdr_path).parent / "trunks.json"
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    for trunk in doc["trunks"]:
        if trunk["name"] == name:
            return str(trunk["state"])
    return None


def _wait_state(gw: GatewayProcess, name: str, state: str, timeout: float) -> str | None:
    deadline = time.monotonic() + timeout
    seen = _trunk_state(gw, name)
    while seen != state and time.monotonic() < deadline:
        time.sleep(0.2)
        seen = _trunk_state(gw, name)
    return seen


def test_inbound_trunk_call_limit_gives_503_with_retry_after(
    gateway_factory: GatewayFactory, sipp_server: SippServerFactory
) -> None:
    ringing = sipp_server("uas_ring")
    # calls come in from trunk "in" (limited) and go out to "ring"; a call in and out of the
    # same trunk would count twice there (two channels)
    gw = gateway_factory(
        trunks=[
            TrunkSpec("ring", ringing.port, inbound_from=()),
            TrunkSpec("in", free_port(), extra={"max_calls": 2}),
        ],
        dialplan=route_all_dialplan(["ring"]),
        extra_config={"sip": {"retry_after": 9}},
    )
    uac = RawUac(gw.sip_udp)
    try:
        calls = [uac.invite(f"+1555000000{i}") for i in (1, 2, 3)]
        reply = uac.final(method="INVITE", call_id=calls[2][0])
        assert reply is not None and reply.status == 503, reply
        assert reply.header("Retry-After") == "9"
        uac.ack_error("+15550000003", *calls[2], reply)
        for i, (call_id, branch) in zip((1, 2), calls[:2]):
            uac.cancel(f"+1555000000{i}", call_id, branch)
        finals = [uac.final(method="INVITE", call_id=cid) for cid, _ in calls[:2]]
        assert [f.status for f in finals if f is not None] == [487, 487]
        # the limit counts live calls: once they ended (the callee side's 487 ends each
        # call a moment after the caller's), a new call is admitted again
        time.sleep(0.5)
        call_id, branch = uac.invite("+15550000004")
        assert uac.recv(2.0) is not None  # 100 Trying, then ringing (not 503)
        uac.cancel("+15550000004", call_id, branch)
        final = uac.final(method="INVITE", call_id=call_id)
        assert final is not None and final.status == 487
    finally:
        uac.close()


def test_outbound_trunk_at_its_limit_is_skipped(
    gateway_factory: GatewayFactory, sipp_server: SippServerFactory, sipp_client: SippClient
) -> None:
    small = sipp_server("uas_busy")
    big = sipp_server("uas")
    gw = gateway_factory(
        trunks=[
            TrunkSpec("small", small.port, inbound_from=(), extra={"max_cps": 1}),
            TrunkSpec("big", big.port, inbound_from=()),
            TrunkSpec("caller", free_port()),
        ],
        dialplan=route_all_dialplan(["small", "big"]),
    )
    # 1 call per second to "small" (busy): the first call of the burst gets its 486, the
    # others find "small" over max_cps and go straight to "big"
    result = sipp_client("uac", gw.sip_target, service=NUMBER, calls=10, rate=50)
    assert result.successful == 9 and result.failed == 1, result.describe()
    assert small.wait_counts(1, 12) == (1, 0)
    assert big.wait_counts(9, 12) == (9, 0)


def test_options_probing_marks_a_trunk_down_then_up(
    gateway_factory: GatewayFactory, sipp_server: SippServerFactory, sipp_client: SippClient
) -> None:
    good = sipp_server("uas")
    flaky_port = free_port()
    probing = {"options_interval": 1, "options_timeout": 0.5}
    gw = gateway_factory(
        trunks=[
            TrunkSpec("flaky", flaky_port, inbound_from=(), extra=probing),
            TrunkSpec("good", good.port),
        ],
        dialplan=route_all_dialplan(["flaky", "good"]),
    )
    # nothing answers on the flaky port: 2 unanswered probes (the default) mark it down
    assert _wait_state(gw, "flaky", "down", 8) == "down"
    # calls now skip it: no INVITE waits for timer B on the dead trunk
    started = time.monotonic()
    result = sipp_client("uac", gw.sip_target, service=NUMBER, calls=3, rate=10)
    assert (result.successful, result.failed) == (3, 0), result.describe()
    assert time.monotonic() - started < 5
    assert result.response_time_ms(1) < 500
    # the carrier comes back: one answered probe (the default) marks it up
    sipp_server("uas_options", port=flaky_port)
    assert _wait_state(gw, "flaky", "up", 8) == "up"
