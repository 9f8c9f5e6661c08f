"""Reliable provisional responses (RFC 3262; issue 3, item 4) through the real gateway, each
leg on its own: the gateway PRACKs a carrier's reliable 18x itself, and sends reliable 18x
(Require: 100rel, RSeq, retransmitted until PRACK) to callers that support 100rel.
"""

from __future__ import annotations

import pytest

from .conftest import GatewayFactory, SippClient, SippServerFactory
from .harness import TrunkSpec, free_port, route_all_dialplan

NUMBER = "+15551234567"


@pytest.mark.parametrize(
    ("caller", "callee"),
    [
        ("uac_100rel", "uas_100rel"),  # reliable on both legs
        ("uac", "uas_100rel"),  # only the carrier's leg: the caller gets a plain 183
        ("uac_100rel", "uas_183"),  # only the caller's leg: an unreliable 183 made reliable
    ],
)
def test_reliable_provisionals_on_each_leg(
    caller: str,
    callee: str,
    gateway_factory: GatewayFactory,
    sipp_server: SippServerFactory,
    sipp_client: SippClient,
) -> None:
    uas = sipp_server(callee)
    gw = gateway_factory(
        trunks=[TrunkSpec("out", uas.port, inbound_from=()), TrunkSpec("pbx", free_port())],
        dialplan=route_all_dialplan(["out"]),
    )
    result = sipp_client(caller, gw.sip_target, service=NUMBER, calls=5, rate=5)
    assert (result.successful, result.failed) == (5, 0), result.describe()
    assert uas.wait_counts(5, 15) == (5, 0)
