"""Mid-call signalling through the real gateway process, SIPp on both sides.

Each test runs one pair of scenarios from ``sipp-scenarios/`` (the caller dials the gateway,
the callee plays the carrier behind a trunk) over UDP: hold by re-INVITE (RFC 3264 section
8.4), late offer (RFC 3261 section 13.2.1: the answer travels in the ACK), DTMF in INFO
(issue item 8), early media in a 183 (issue item 4) and re-INVITE glare, where the gateway
must answer the callee's re-INVITE with 491 while its own toward that callee is pending
(RFC 3261 section 14.1).

The same pairs run SIPp to SIPp, without the gateway, first (``test_pair_without_gateway``),
so that a scenario bug is never taken for a gateway bug. Every SIPp here writes
``-trace_msg`` (a handful of calls): on a failure, the ``*_messages.log`` files in the
directories the assertion message names show both legs message by message.
"""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from .conftest import GatewayFactory, SippClient, SippServerFactory
from .harness import SippResult, SippServer, TrunkSpec, route_all_dialplan

NUMBER = "+15551234567"
TRACE = ["-trace_msg"]

#: (caller scenario, callee scenario, calls, caller variables when SIPp talks to SIPp)
PAIRS: dict[str, tuple[str, str, int, Mapping[str, str]]] = {
    "hold": ("uac_hold", "uas_hold", 10, {}),
    "late_offer": ("uac_late_offer", "uas_late_offer", 10, {}),
    "info_dtmf": ("uac_info", "uas_info", 10, {}),
    "early_media": ("uac_early_media", "uas_183", 10, {}),
    # without the gateway, the caller itself answers the callee's re-INVITE with 491
    "glare": ("uac_hold", "uas_reinvite_slow", 5, {"glare": "yes"}),
}


def _both_sides(
    result: SippResult, callee: SippServer, calls: int, timeout_s: float = 15.0
) -> tuple[tuple[int, int], tuple[int, int], str]:
    """(caller counts, callee counts, a message naming both SIPp runs for assertions).

    The callee's statistics lag: it writes them once a second, and its calls end only after
    their 4 s timewait."""
    callee_counts = callee.wait_counts(calls, timeout_s=timeout_s)
    detail = (
        f"{result.describe()}\n--- callee {callee.scenario.name} in {callee.rundir} "
        f"(successful, failed) = {callee_counts} ---\n{callee.log_text()[-2000:]}"
    )
    return (result.successful, result.failed), callee_counts, detail


@pytest.mark.parametrize("pair", sorted(PAIRS))
def test_pair_without_gateway(
    pair: str, sipp_server: SippServerFactory, sipp_client: SippClient
) -> None:
    uac, uas, calls, variables = PAIRS[pair]
    callee = sipp_server(uas, extra_args=TRACE)
    result = sipp_client(
        uac,
        callee.address,
        service=NUMBER,
        calls=calls,
        rate=10,
        timeout_s=30,
        variables=variables,
        extra_args=TRACE,
    )
    caller_counts, callee_counts, detail = _both_sides(result, callee, calls)
    assert result.exit_code == 0, detail
    assert caller_counts == (calls, 0), detail
    assert callee_counts == (calls, 0), detail


def _through_gateway(
    pair: str,
    gateway_factory: GatewayFactory,
    sipp_server: SippServerFactory,
    sipp_client: SippClient,
) -> None:
    uac, uas, calls, _ = PAIRS[pair]
    callee = sipp_server(uas, extra_args=TRACE)
    gw = gateway_factory(
        trunks=[TrunkSpec("carrier", callee.port)], dialplan=route_all_dialplan(["carrier"])
    )
    result = sipp_client(
        uac,
        gw.sip_target,
        service=NUMBER,
        calls=calls,
        rate=10,
        timeout_s=40,
        extra_args=TRACE,
    )
    caller_counts, callee_counts, detail = _both_sides(result, callee, calls)
    detail += f"\n--- gateway {gw.workdir} ---\n{gw.log_tail(3000)}"
    assert caller_counts == (calls, 0), detail
    assert result.exit_code == 0, detail
    assert callee_counts == (calls, 0), detail


def test_hold_reinvite_is_relayed_both_ways(
    gateway_factory: GatewayFactory, sipp_server: SippServerFactory, sipp_client: SippClient
) -> None:
    """re-INVITE with a=sendonly reaches the callee; its a=recvonly 200 reaches the caller."""
    _through_gateway("hold", gateway_factory, sipp_server, sipp_client)


def test_late_offer_answer_reaches_the_callee_in_the_ack(
    gateway_factory: GatewayFactory, sipp_server: SippServerFactory, sipp_client: SippClient
) -> None:
    """INVITE without SDP: the callee's 200 carries the offer to the caller, and the
    caller's ACK carries the answer, which the gateway must pass on in its ACK."""
    _through_gateway("late_offer", gateway_factory, sipp_server, sipp_client)


def test_info_dtmf_is_relayed_with_its_content_type_and_body(
    gateway_factory: GatewayFactory, sipp_server: SippServerFactory, sipp_client: SippClient
) -> None:
    """INFO application/dtmf-relay (Signal=5, Duration=160), then application/dtmf "5"."""
    _through_gateway("info_dtmf", gateway_factory, sipp_server, sipp_client)


def test_early_media_183_with_sdp_is_relayed(
    gateway_factory: GatewayFactory, sipp_server: SippServerFactory, sipp_client: SippClient
) -> None:
    """The callee's 183 with SDP reaches the caller, 300 ms before the 200."""
    _through_gateway("early_media", gateway_factory, sipp_server, sipp_client)


def test_reinvite_glare_gets_491_from_the_gateway(
    gateway_factory: GatewayFactory, sipp_server: SippServerFactory, sipp_client: SippClient
) -> None:
    """The callee sends its own re-INVITE while the caller's (relayed by the gateway) waits
    2 s for its answer: the gateway must answer it 491 (the callee's call fails on anything
    else) and not pass it to the caller (whose call fails if a re-INVITE reaches it); the
    caller's re-INVITE then completes normally."""
    _through_gateway("glare", gateway_factory, sipp_server, sipp_client)
