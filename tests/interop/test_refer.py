"""Blind transfer by REFER (RFC 3515) through the real gateway process, SIPp on all sides.

The call: a caller (SIPp, ``uac_transferred.xml`` or ``uac.xml``) dials the gateway, which
routes it to the callee behind trunk "carrier" (``uas_refer.xml`` or
``uas_refer_reject.xml``). Once the call is up, the callee sends an in-dialog REFER:

- ``Refer-To: <sip:+15559990000@127.0.0.1>``: the gateway answers 202, NOTIFYs the callee
  (``100 Trying``), routes the number by its dial plan to trunk "target" (a plain ``uas.xml``),
  re-INVITEs the caller with the target's SDP, NOTIFYs the callee ``200 OK`` (subscription
  terminated) and hangs the callee up; the caller's BYE then reaches the target, and the CDR
  records the transfer;
- a Refer-To carrying Replaces (attended transfer) gets 501, and one to a number no route
  matches gets 202 then a terminated NOTIFY with ``404 Not Found``; in both cases the call
  goes on untouched and the target never gets an INVITE.

Every scenario is first run SIPp to SIPp, without the gateway: the gateway's side of each leg
is played by a small stand-in scenario written below (``STANDINS``) into the test directory, so
that a scenario bug is never taken for a gateway bug; the negative cases prove the checks of
``uas_refer.xml``, ``uas_refer_reject.xml`` and ``uac_transferred.xml`` can fail. Every SIPp
here writes ``-trace_msg``: on a failure, the ``*_messages.log`` files in the directories the
assertion message names show each leg message by message.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from pathlib import Path

import pytest

from .conftest import GatewayFactory, SippClient, SippServerFactory
from .harness import SippResult, SippServer, TrunkSpec, free_port

NUMBER = "+15551234567"
TARGET_NUMBER = "+15559990000"
TRACE = ["-trace_msg"]

# --------------------------------------------------------------------------------------------
# the gateway's side of each leg, played by SIPp (only for the runs without the gateway)

_TPARAM = """
  <nop>
    <action>
      <assignstr assign_to="tparam" value="[transport]" />
      <strcmp assign_to="tparam_cmp" variable="tparam" value="UDP" />
      <test assign_to="tparam_udp" variable="tparam_cmp" compare="equal" value="0" />
      <assignstr assign_to="tparam" value="udp" />
    </action>
  </nop>
  <nop test="tparam_udp" next="tparam_done" />
  <nop>
    <action>
      <assignstr assign_to="tparam" value="tcp" />
    </action>
  </nop>
  <label id="tparam_done" />
"""

#: The start of a call toward a callee scenario: INVITE -> [100] [180] 200 -> ACK, keeping
#: the callee's Contact (remote_target) and the To of its 200 (peer_to, with its tag).
_UAC_CALL = (
    _TPARAM
    + """
  <send retrans="500">
    <![CDATA[

      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:+15550001111@[local_ip]:[local_port]>;tag=[pid]GwTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:gw@[local_ip]:[local_port];transport=[$tparam]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=- [pid][call_number] 1 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000

    ]]>
  </send>
  <recv response="100" optional="true" timeout="16000" />
  <recv response="180" optional="true" timeout="16000" />
  <recv response="200" rrs="true" timeout="16000">
    <action>
      <ereg regexp="sips?:[^&lt;&gt;,[:space:]]+" search_in="hdr" header="Contact:"
            check_it="true" assign_to="remote_target" />
      <ereg regexp="[^[:space:]].*" search_in="hdr" header="To:" check_it="true"
            assign_to="peer_to" />
    </action>
  </recv>
  <send>
    <![CDATA[

      ACK [$remote_target] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      [routes]
      From: <sip:+15550001111@[local_ip]:[local_port]>;tag=[pid]GwTag00[call_number]
      To: [$peer_to]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
"""
)


#: The end of a stand-in caller: over TCP, SIPp closes its connection when its last call
#: ends, which fails the callee's calls still in their 4 s timewait (FailedTcpClosed).
_LINGER = '  <pause milliseconds="4500" />\n'


def _uac_request(method: str, cseq: int, headers: str = "", body: str = "") -> str:
    """An in-dialog request of the stand-in caller leg, then its 200 (CSeq checked)."""
    length = "[len]" if body else "0"
    return f"""
  <send retrans="500">
    <![CDATA[

      {method} [$remote_target] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      [routes]
      From: <sip:+15550001111@[local_ip]:[local_port]>;tag=[pid]GwTag00[call_number]
      To: [$peer_to]
      Call-ID: [call_id]
      CSeq: {cseq} {method}
      Contact: <sip:gw@[local_ip]:[local_port];transport=[$tparam]>
      Max-Forwards: 70
{headers}      Content-Length: {length}

{body}
    ]]>
  </send>
  <recv response="200" timeout="16000">
    <action>
      <ereg regexp="{cseq} {method}" search_in="hdr" header="CSeq:" check_it="true"
            assign_to="_" />
    </action>
  </recv>
"""


def _notify(cseq: int, state: str, frag: str) -> str:
    return _uac_request(
        "NOTIFY",
        cseq,
        "      Event: refer\n"
        f"      Subscription-State: {state}\n"
        "      Content-Type: message/sipfrag;version=2.0\n",
        f"      {frag}\n",
    )


def _recv_refer(checks: str) -> str:
    """The callee's REFER, in this dialog (Request-URI our Contact, our tag in its To)."""
    return f"""
  <recv request="REFER" crlf="true" timeout="16000">
    <action>
      <ereg regexp="^REFER sip:gw@" search_in="msg" check_it="true" assign_to="_" />
      <ereg regexp="GwTag00" search_in="hdr" header="To:" check_it="true" assign_to="_" />
      <ereg regexp="REFER" search_in="hdr" header="CSeq:" check_it="true" assign_to="_" />
      <ereg regexp="SIPpTag01" search_in="hdr" header="From:" check_it="true" assign_to="_" />
{checks}
    </action>
  </recv>
"""


def _reply(status: str) -> str:
    return f"""
  <send>
    <![CDATA[

      SIP/2.0 {status}
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:gw@[local_ip]:[local_port];transport=[$tparam]>
      Content-Length: 0

    ]]>
  </send>
"""


def _scenario(name: str, body: str, global_vars: str = "") -> str:
    globals_line = f'  <Global variables="{global_vars}" />\n' if global_vars else ""
    return (
        '<?xml version="1.0" encoding="ISO-8859-1" ?>\n'
        '<!DOCTYPE scenario SYSTEM "sipp.dtd">\n'
        f'<scenario name="{name}">\n{globals_line}{body}</scenario>\n'
    )


_REFER_TO_TARGET = (
    '      <ereg regexp="^[[:space:]]*&lt;sip:\\+15559990000@127\\.0\\.0\\.1&gt;" '
    'search_in="hdr" header="Refer-To:" check_it="true" assign_to="_" />'
)

#: Toward uas_refer.xml: the transfer succeeds (-set frag "SIP/2.0 200 OK"), or not.
GW_TO_REFER_CALLEE = _scenario(
    "gateway stand-in toward uas_refer",
    _UAC_CALL
    + _recv_refer(_REFER_TO_TARGET)
    + _reply("202 Accepted")
    + _notify(2, "active;expires=60", "SIP/2.0 100 Trying")
    + '  <pause milliseconds="300" />\n'
    + _notify(3, "terminated;reason=noresource", "[$frag]")
    + _uac_request("BYE", 4)
    + _LINGER,
    "frag",
)

#: Toward uas_refer_reject.xml: 501 to the Replaces REFER, 202 then NOTIFYs to the other
#: (-set trying yes|no: the 100-Trying NOTIFY or not; -set frag: the final one's sipfrag);
#: BYE after -d ms.
GW_TO_REJECT_CALLEE = _scenario(
    "gateway stand-in toward uas_refer_reject",
    _UAC_CALL
    + _recv_refer(
        '      <ereg regexp="\\?Replaces=" search_in="hdr" header="Refer-To:" check_it="true"'
        ' assign_to="_" />'
    )
    + _reply("501 Not Implemented")
    + _recv_refer(
        '      <ereg regexp="^[[:space:]]*&lt;sip:\\+4400000000@127\\.0\\.0\\.1&gt;" '
        'search_in="hdr" header="Refer-To:" check_it="true" assign_to="_" />'
    )
    + _reply("202 Accepted")
    + """
  <nop>
    <action>
      <strcmp assign_to="trying_cmp" variable="trying" value="yes" />
      <test assign_to="no_trying" variable="trying_cmp" compare="not_equal" value="0" />
    </action>
  </nop>
  <nop test="no_trying" next="final_notify" />
"""
    + _notify(2, "active;expires=60", "SIP/2.0 100 Trying")
    + '  <label id="final_notify" />\n'
    + _notify(3, "terminated;reason=noresource", "[$frag]")
    + "  <pause />\n"
    + _uac_request("BYE", 4)
    + _LINGER,
    "trying,frag",
)

#: Toward uac_transferred.xml: answers, then re-INVITEs the caller with new SDP
#: (-set reinvite sdp; "-set reinvite nosdp" sends it without a body) and takes its BYE.
GW_TO_TRANSFERRED_CALLER = _scenario(
    "gateway stand-in toward uac_transferred",
    """
  <recv request="INVITE" crlf="true">
    <action>
      <ereg regexp="sips?:[^&lt;&gt;,[:space:]]+" search_in="hdr" header="Contact:"
            check_it="true" assign_to="remote_target" />
      <ereg regexp="[^[:space:]].*" search_in="hdr" header="From:" check_it="true"
            assign_to="inv_from" />
      <ereg regexp="[^[:space:]].*" search_in="hdr" header="To:" check_it="true"
            assign_to="inv_to" />
    </action>
  </recv>
"""
    + _TPARAM
    + """
  <send>
    <![CDATA[

      SIP/2.0 180 Ringing
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]GwTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:gw@[local_ip]:[local_port];transport=[$tparam]>
      Content-Length: 0

    ]]>
  </send>
  <send retrans="500">
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]GwTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:gw@[local_ip]:[local_port];transport=[$tparam]>
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=- [pid][call_number] 1 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000

    ]]>
  </send>
  <recv request="ACK" crlf="true" timeout="16000" />
  <nop>
    <action>
      <strcmp assign_to="reinvite_cmp" variable="reinvite" value="sdp" />
      <test assign_to="no_sdp" variable="reinvite_cmp" compare="not_equal" value="0" />
    </action>
  </nop>
  <pause milliseconds="300" />
  <nop test="no_sdp" next="reinvite_nosdp" />
  <send retrans="500" next="reinvite_sent">
    <![CDATA[

      INVITE [$remote_target] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: [$inv_to];tag=[pid]GwTag01[call_number]
      To: [$inv_from]
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:gw@[local_ip]:[local_port];transport=[$tparam]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=- [pid][call_number] 2 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio 40000 RTP/AVP 0
      a=rtpmap:0 PCMU/8000

    ]]>
  </send>
  <label id="reinvite_nosdp" />
  <send retrans="500">
    <![CDATA[

      INVITE [$remote_target] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: [$inv_to];tag=[pid]GwTag01[call_number]
      To: [$inv_from]
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:gw@[local_ip]:[local_port];transport=[$tparam]>
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <label id="reinvite_sent" />
  <recv response="200" timeout="16000">
    <action>
      <ereg regexp="1 INVITE" search_in="hdr" header="CSeq:" check_it="true" assign_to="_" />
      <ereg regexp="m=audio" search_in="body" check_it="true" assign_to="_" />
    </action>
  </recv>
  <send>
    <![CDATA[

      ACK [$remote_target] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: [$inv_to];tag=[pid]GwTag01[call_number]
      To: [$inv_from]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv request="BYE" timeout="16000">
    <action>
      <ereg regexp="2 BYE" search_in="hdr" header="CSeq:" check_it="true" assign_to="_" />
      <ereg regexp="GwTag01" search_in="hdr" header="To:" check_it="true" assign_to="_" />
    </action>
  </recv>
  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
""",
    "reinvite",
)

STANDINS = {
    "gw_to_refer_callee": GW_TO_REFER_CALLEE,
    "gw_to_reject_callee": GW_TO_REJECT_CALLEE,
    "gw_to_transferred_caller": GW_TO_TRANSFERRED_CALLER,
}


def _standin(interop_dir: Path, name: str) -> Path:
    path = interop_dir / f"{name}.xml"
    path.write_text(STANDINS[name], encoding="iso-8859-1")
    return path


def _detail(result: SippResult, *servers: SippServer, counts: Mapping[str, object]) -> str:
    parts = [result.describe()]
    for server in servers:
        parts.append(
            f"--- {server.scenario.name} :{server.port} in {server.rundir} "
            f"(successful, failed) = {counts.get(server.scenario.name)} ---\n"
            f"{server.log_text()[-2000:]}"
        )
    return "\n".join(parts)


def _check_callee(
    result: SippResult,
    callee: SippServer,
    counts: tuple[int, int],
    failure: str | None,
    detail: str,
) -> None:
    """The stand-in's calls all succeed; the callee's too, or all fail with ``failure``."""
    assert (result.successful, result.failed) == (3, 0), detail
    if failure is None:
        assert counts == (3, 0), detail
    else:
        assert counts == (0, 3), detail
        assert callee.stats().get(f"{failure}(C)") == "3", f"{callee.stats()}\n{detail}"


# --------------------------------------------------------------------------------------------
# the scenarios without the gateway


@pytest.mark.parametrize(
    ("variables", "failure"),
    [
        ({"frag": "SIP/2.0 200 OK"}, None),
        # the transfer failed: the callee must not take it for a success
        ({"frag": "SIP/2.0 404 Not Found"}, "FailedRegexpDoesntMatch"),
    ],
    ids=["transferred", "target-404"],
)
def test_uas_refer_against_a_standin(
    variables: dict[str, str],
    failure: str | None,
    interop_dir: Path,
    sipp_server: SippServerFactory,
    sipp_client: SippClient,
) -> None:
    callee = sipp_server("uas_refer", extra_args=TRACE)
    result = sipp_client(
        str(_standin(interop_dir, "gw_to_refer_callee")),
        callee.address,
        service=NUMBER,
        calls=3,
        rate=5,
        timeout_s=30,
        variables=variables,
        extra_args=TRACE,
    )
    counts = callee.wait_counts(3, 15)
    detail = _detail(result, callee, counts={callee.scenario.name: counts})
    _check_callee(result, callee, counts, failure, detail)


@pytest.mark.parametrize(
    ("variables", "duration_ms", "failure"),
    [
        ({"trying": "yes", "frag": "SIP/2.0 404 Not Found"}, 3000, None),
        ({"trying": "no", "frag": "SIP/2.0 404 Not Found"}, 3000, None),
        # the transfer went through after all
        ({"trying": "yes", "frag": "SIP/2.0 200 OK"}, 3000, "FailedRegexpDoesntMatch"),
        ({"trying": "no", "frag": "SIP/2.0 200 OK"}, 3000, "FailedRegexpDoesntMatch"),
        # a BYE right after the failed transfer: the call did not go on
        ({"trying": "yes", "frag": "SIP/2.0 404 Not Found"}, 0, "FailedUnexpectedMessage"),
    ],
    ids=["with-trying", "without-trying", "final-200", "final-200-alone", "bye-at-once"],
)
def test_uas_refer_reject_against_a_standin(
    variables: dict[str, str],
    duration_ms: int,
    failure: str | None,
    interop_dir: Path,
    sipp_server: SippServerFactory,
    sipp_client: SippClient,
) -> None:
    callee = sipp_server("uas_refer_reject", extra_args=TRACE)
    result = sipp_client(
        str(_standin(interop_dir, "gw_to_reject_callee")),
        callee.address,
        service=NUMBER,
        calls=3,
        rate=5,
        timeout_s=30,
        duration_ms=duration_ms,
        variables=variables,
        extra_args=TRACE,
    )
    counts = callee.wait_counts(3, 15)
    detail = _detail(result, callee, counts={callee.scenario.name: counts})
    _check_callee(result, callee, counts, failure, detail)


@pytest.mark.parametrize(
    ("reinvite", "caller_ok"),
    [("sdp", True), ("nosdp", False)],
    ids=["reinvite-with-sdp", "reinvite-without-sdp"],
)
def test_uac_transferred_against_a_standin(
    reinvite: str,
    caller_ok: bool,
    interop_dir: Path,
    sipp_server: SippServerFactory,
    sipp_client: SippClient,
) -> None:
    """The stand-in answers, then re-INVITEs the caller: with SDP the call completes; a
    re-INVITE without SDP fails the caller's call (FailedRegexpDoesntMatch)."""
    standin = sipp_server(
        _standin(interop_dir, "gw_to_transferred_caller"),
        variables={"reinvite": reinvite},
        extra_args=TRACE,
    )
    result = sipp_client(
        "uac_transferred",
        standin.address,
        service=NUMBER,
        calls=3,
        rate=5,
        timeout_s=30,
        duration_ms=500,
        extra_args=TRACE,
    )
    counts = standin.wait_counts(3, 15)
    detail = _detail(result, standin, counts={standin.scenario.name: counts})
    if caller_ok:
        assert (result.successful, result.failed) == (3, 0), detail
        assert result.exit_code == 0, detail
        assert counts == (3, 0), detail
    else:
        assert (result.successful, result.failed) == (0, 3), detail
        assert result.failure_breakdown.get("FailedRegexpDoesntMatch") == 3, detail


@pytest.mark.parametrize(
    ("callee_scenario", "standin", "variables", "duration_ms"),
    [
        ("uas_refer", "gw_to_refer_callee", {"frag": "SIP/2.0 200 OK"}, None),
        (
            "uas_refer_reject",
            "gw_to_reject_callee",
            {"trying": "yes", "frag": "SIP/2.0 404 Not Found"},
            3000,
        ),
    ],
    ids=["uas_refer", "uas_refer_reject"],
)
def test_callee_scenarios_over_tcp(
    callee_scenario: str,
    standin: str,
    variables: dict[str, str],
    duration_ms: int | None,
    interop_dir: Path,
    sipp_server: SippServerFactory,
    sipp_client: SippClient,
) -> None:
    callee = sipp_server(callee_scenario, transport="t1", extra_args=TRACE)
    result = sipp_client(
        str(_standin(interop_dir, standin)),
        callee.address,
        service=NUMBER,
        calls=3,
        rate=5,
        transport="t1",
        timeout_s=30,
        duration_ms=duration_ms,
        variables=variables,
        extra_args=TRACE,
    )
    counts = callee.wait_counts(3, 15)
    _check_callee(result, callee, counts, None, _detail(result, callee, counts={"": counts}))


def test_uac_transferred_over_tcp(
    interop_dir: Path, sipp_server: SippServerFactory, sipp_client: SippClient
) -> None:
    standin = sipp_server(
        _standin(interop_dir, "gw_to_transferred_caller"),
        transport="t1",
        variables={"reinvite": "sdp"},
        extra_args=TRACE,
    )
    result = sipp_client(
        "uac_transferred",
        standin.address,
        service=NUMBER,
        calls=3,
        rate=5,
        transport="t1",
        timeout_s=30,
        duration_ms=500,
        extra_args=TRACE,
    )
    counts = standin.wait_counts(3, 15)
    detail = _detail(result, standin, counts={"": counts})
    assert result.ok, detail
    assert counts == (3, 0), detail


# --------------------------------------------------------------------------------------------
# through the gateway


def _dialplan(carrier_match: str) -> str:
    """+1555999... to trunk "target" (the transfer target), ``carrier_match`` to "carrier"."""
    return (
        "[[outbound]]\n"
        'name = "transfer-target"\n'
        "match = '^\\+1555999'\n"
        'trunks = ["target"]\n'
        "\n"
        "[[outbound]]\n"
        'name = "carrier"\n'
        f"match = '{carrier_match}'\n"
        'trunks = ["carrier"]\n'
    )


def _trunks(callee: SippServer, target: SippServer) -> list[TrunkSpec]:
    # the callers' calls come from 127.0.0.1: trunk "pbx" takes them (carrier and target
    # accept no inbound calls), and the dial plan routes them out
    return [
        TrunkSpec("carrier", callee.port, inbound_from=()),
        TrunkSpec("target", target.port, inbound_from=()),
        TrunkSpec("pbx", free_port()),
    ]


def _gateway_detail(
    result: SippResult, gw: object, servers: Mapping[str, tuple[SippServer, tuple[int, int]]]
) -> str:
    parts = [f"--- caller ---\n{result.describe()}"]
    for role, (server, counts) in servers.items():
        parts.append(
            f"--- {role}: {server.scenario.name} :{server.port} in {server.rundir} "
            f"(successful, failed) = {counts} ---\n{server.log_text()[-2000:]}"
        )
    parts.append(f"--- gateway {gw.workdir} ---\n{gw.log_tail(3000)}")  # type: ignore[attr-defined]
    return "\n".join(parts)


def test_blind_transfer_by_refer_from_the_callee(
    gateway_factory: GatewayFactory, sipp_server: SippServerFactory, sipp_client: SippClient
) -> None:
    """REFER from the callee: 202, NOTIFY 100 Trying, INVITE to the target (routed by the dial
    plan), re-INVITE of the caller with the target's SDP (in the caller's dialog: its To
    carries the caller's tag, once), NOTIFY 200 OK (terminated), BYE to the callee; the
    caller's BYE reaches the target, and the CDR records the transfer."""
    callee = sipp_server("uas_refer", extra_args=TRACE)
    target = sipp_server("uas", extra_args=TRACE)
    gw = gateway_factory(trunks=_trunks(callee, target), dialplan=_dialplan(".*"))
    result = sipp_client(
        "uac_transferred",
        gw.sip_target,
        service=NUMBER,
        calls=3,
        rate=1,
        duration_ms=1000,
        timeout_s=40,
        extra_args=TRACE,
    )
    callee_counts = callee.wait_counts(3, 15)
    target_counts = target.wait_counts(3, 15)
    detail = _gateway_detail(
        result, gw, {"callee": (callee, callee_counts), "target": (target, target_counts)}
    )
    assert (result.successful, result.failed) == (3, 0), detail
    assert result.exit_code == 0, detail
    assert callee_counts == (3, 0), detail
    assert target_counts == (3, 0), detail

    gw.stop()
    con = sqlite3.connect(f"file:{gw.cdr_path}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT call_id, callee, transfer FROM cdr_calls").fetchall()
    finally:
        con.close()
    calls = [row for row in rows if row[1] == NUMBER]
    assert len(calls) == 3, rows
    assert all(transfer for _, _, transfer in calls), rows


def test_refer_with_replaces_or_to_an_unrouted_number_is_refused_and_the_call_goes_on(
    gateway_factory: GatewayFactory, sipp_server: SippServerFactory, sipp_client: SippClient
) -> None:
    """REFER with Replaces: 501. REFER to +4400000000 (only ^\\+1 is routed): 202, then a
    terminated NOTIFY with 404 Not Found. The call goes on (no BYE to the callee), the
    caller hangs up after 3 s, and the transfer target never sees an INVITE."""
    callee = sipp_server("uas_refer_reject", extra_args=TRACE)
    target = sipp_server("uas", extra_args=TRACE)
    gw = gateway_factory(trunks=_trunks(callee, target), dialplan=_dialplan("^\\+1"))
    result = sipp_client(
        "uac",
        gw.sip_target,
        service=NUMBER,
        calls=3,
        rate=1,
        duration_ms=3000,
        timeout_s=40,
        extra_args=TRACE,
    )
    callee_counts = callee.wait_counts(3, 15)
    target_stats = target.stats()
    detail = _gateway_detail(
        result, gw, {"callee": (callee, callee_counts), "target": (target, target.counts())}
    )
    assert (result.successful, result.failed) == (3, 0), detail
    assert result.exit_code == 0, detail
    assert callee_counts == (3, 0), detail
    assert target_stats, f"no statistics from the target yet\n{detail}"
    assert target_stats.get("IncomingCall(C)") == "0", detail
