"""Digest authentication toward carriers through the real gateway (issue 3, item 1).

The carrier is SIPp, which checks the gateway's Authorization with its own digest code
(``verifyauth``): an independent implementation of RFC 2617/7616 MD5 with qop=auth.
"""

from __future__ import annotations

from .conftest import GatewayFactory, SippClient, SippServerFactory
from .harness import TrunkSpec, free_port, route_all_dialplan

NUMBER = "+15551234567"


def test_gateway_answers_invite_and_bye_challenges_with_the_trunk_credentials(
    gateway_factory: GatewayFactory, sipp_server: SippServerFactory, sipp_client: SippClient
) -> None:
    carrier = sipp_server("uas_auth")
    gw = gateway_factory(
        trunks=[
            TrunkSpec("carrier", carrier.port, inbound_from=(), username="gw",
                      password="s3cret"),
            TrunkSpec("pbx", free_port()),
        ],
        dialplan=route_all_dialplan(["carrier"]),
    )
    result = sipp_client("uac", gw.sip_target, service=NUMBER, calls=5, rate=5)
    assert (result.successful, result.failed) == (5, 0), result.describe()
    assert carrier.wait_counts(5, 15) == (5, 0)


def test_wrong_credentials_fail_the_call_without_looping(
    gateway_factory: GatewayFactory, sipp_server: SippServerFactory, sipp_client: SippClient
) -> None:
    carrier = sipp_server("uas_auth")
    gw = gateway_factory(
        trunks=[
            TrunkSpec("carrier", carrier.port, inbound_from=(), username="gw",
                      password="wrong"),
            TrunkSpec("pbx", free_port()),
        ],
        dialplan=route_all_dialplan(["carrier"]),
    )
    # the carrier stops the call on a bad answer; the caller gets no 200
    result = sipp_client("uac", gw.sip_target, service=NUMBER, calls=1, timeout_s=40)
    assert result.successful == 0
