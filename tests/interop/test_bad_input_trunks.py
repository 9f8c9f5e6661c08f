"""Issue 3's bad input, against the real gateway while a normal call load runs beside it:
each gets its RFC answer and the other calls are not disturbed.
"""

from __future__ import annotations

import threading

from .conftest import GatewayFactory, SippClient, SippServerFactory
from .harness import SippResult, TrunkSpec, free_port
from .rawsip import RawUac

NUMBER = "+15551234567"


def test_bad_input_gets_its_answer_and_other_calls_go_on(
    gateway_factory: GatewayFactory, sipp_server: SippServerFactory, sipp_client: SippClient
) -> None:
    good = sipp_server("uas")
    bad = sipp_server("uas_bad_challenge")
    plan = (
        '[[outbound]]\nname = "bad"\nmatch = \'^\\+1666\'\ntrunks = ["bad"]\n'
        '[[outbound]]\nname = "good"\nmatch = \'^\\+1\'\ntrunks = ["good"]\n'
    )
    gw = gateway_factory(
        trunks=[
            TrunkSpec("good", good.port, inbound_from=()),
            TrunkSpec("bad", bad.port, inbound_from=(), username="gw", password="pw"),
            TrunkSpec("pbx", free_port(), inbound_from=("127.0.0.2/32",), username="pbx",
                      password="pw"),
        ],
        dialplan=plan,
    )
    # the load the bad input must not disturb: 40 calls over ~4 s, sent from 127.0.0.2 (the
    # "pbx" trunk's inbound_from) so they are that trunk's without authentication
    background: list[SippResult] = []
    load = threading.Thread(target=lambda: background.append(sipp_client(
        "uac", gw.sip_target, service=NUMBER, calls=40, rate=10, timeout_s=60,
        extra_args=["-i", "127.0.0.2"],
    )))
    load.start()
    uac = RawUac(gw.sip_udp)
    try:
        # an in-dialog request for a dialog that does not exist: 481 (RFC 3261 12.2.2)
        for method in ("INVITE", "BYE", "REFER"):
            req = uac.request(method, NUMBER, "no-such-call", "z9hG4bKnone" + method, 5,
                              to_tag="nosuchtag")
            uac.send(req)
            reply = uac.final(call_id="no-such-call")
            assert reply is not None and reply.status == 481, (method, reply)
            if method == "INVITE":
                uac.send(uac.request("ACK", NUMBER, "no-such-call", "z9hG4bKnoneINVITE", 5,
                                     to_tag=reply.to_tag))
        # an unknown authorization scheme from an unlisted address: refused, not crashed
        call_id, branch = uac.invite(
            NUMBER, extra="Authorization: NoOneKnowsThisScheme a=b\r\n")
        reply = uac.final(call_id=call_id)
        assert reply is not None and reply.status in (401, 403), reply
        uac.ack_error(NUMBER, call_id, branch, reply)
    finally:
        uac.close()
    # a carrier's unusable challenge: the call fails cleanly (403), no retry loop
    refused = sipp_client("uac_busy_expect", gw.sip_target, service="+16660000000", calls=2,
                          variables={"expect": "403"}, extra_args=["-i", "127.0.0.2"])
    assert (refused.successful, refused.failed) == (2, 0), refused.describe()
    assert bad.wait_counts(2, 15) == (2, 0)
    # one INVITE each: a retry would arrive on the ended SIPp call as a dead-call message
    assert int(bad.stats().get("DeadCallMsgs(C)", "0") or 0) == 0
    load.join(90)
    assert background and (background[0].successful, background[0].failed) == (40, 0), (
        background[0].describe() if background else "no result")
    gw.stop()
    assert "handler bugs 0" in gw.log_text()
