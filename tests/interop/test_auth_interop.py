"""Digest authentication toward carriers through the real gateway (issue 3, item 1).

The carrier is SIPp, which checks the gateway's Authorization with its own digest code
(``verifyauth``): an independent implementation of RFC 2617/7616 MD5 with qop=auth.
"""

from __future__ import annotations

from .conftest import GatewayFactory, SippClient, SippServerFactory
from .harness import TrunkSpec, free_port, route_all_dialplan
from .rawsip import RawUac

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


def test_unknown_source_is_challenged_and_authenticates_as_its_trunk(
    gateway_factory: GatewayFactory, sipp_server: SippServerFactory, sipp_client: SippClient
) -> None:
    uas = sipp_server("uas")
    gw = gateway_factory(
        trunks=[
            TrunkSpec("out", uas.port, inbound_from=()),
            # its calls come from an address its inbound_from does not list: challenged
            TrunkSpec("pbx", free_port(), inbound_from=("127.0.0.2/32",), username="pbx1",
                      password="pw-of-pbx1"),
        ],
        dialplan=route_all_dialplan(["out"]),
        extra_config={"sip": {"auth_algorithms": ["MD5"]}},  # Debian's SIPp 3.6: MD5 only
    )
    result = sipp_client(
        "uac_auth", gw.sip_target, service=NUMBER, calls=3, rate=5,
        extra_args=["-au", "pbx1", "-ap", "pw-of-pbx1"],
    )
    assert (result.successful, result.failed) == (3, 0), result.describe()
    assert uas.wait_counts(3, 15) == (3, 0)
    gw.stop()
    db = gw.cdr_path
    import sqlite3

    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    trunks = con.execute("SELECT DISTINCT trunk_in FROM cdr_calls WHERE status = 200").fetchall()
    con.close()
    assert trunks == [("pbx",)]


def test_repeated_failures_make_the_gateway_ignore_the_address(
    gateway_factory: GatewayFactory, sipp_server: SippServerFactory
) -> None:
    uas = sipp_server("uas")
    gw = gateway_factory(
        trunks=[
            TrunkSpec("out", uas.port, inbound_from=()),
            TrunkSpec("pbx", free_port(), inbound_from=("127.0.0.2/32",), username="pbx1",
                      password="pw-of-pbx1"),
        ],
        dialplan=route_all_dialplan(["out"]),
        extra_config={"sip": {"auth_fail_limit": 3, "auth_block": 60}},
    )
    uac = RawUac(gw.sip_udp)
    bogus = (
        'Authorization: Digest username="pbx1", realm="gateway.local", nonce="00", '
        'uri="sip:x", response="00000000000000000000000000000000", qop=auth, nc=00000001, '
        'cnonce="c"\r\n'
    )
    try:
        call_id, branch = uac.invite(NUMBER)
        first = uac.final(call_id=call_id)
        assert first is not None and first.status == 401
        assert first.header("WWW-Authenticate") is not None
        uac.ack_error(NUMBER, call_id, branch, first)
        statuses = []
        for _ in range(3):  # three bad answers: 403 each, and the third blocks the address
            call_id, branch = uac.invite(NUMBER, extra=bogus)
            reply = uac.final(call_id=call_id)
            assert reply is not None
            statuses.append(reply.status)
            uac.ack_error(NUMBER, call_id, branch, reply)
        assert statuses == [403, 403, 403]
        call_id, branch = uac.invite(NUMBER)
        assert uac.recv(1.5) is None  # not even 100 Trying: ignored
        assert "failed authentications, ignored" in gw.log_text()
    finally:
        uac.close()
