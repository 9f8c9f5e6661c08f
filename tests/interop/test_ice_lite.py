"""ICE-lite on an anchored call (issue 7, item 6): a registered user whose softphone does ICE
(baresip with ``medianat=ice`` and the gateway's STUN server) calls a PSTN number on a G.711
carrier. The gateway anchors the call, answers the user's ICE offer as a lite agent (RFC 8445
section 2.5: ``a=ice-lite``, credentials, host candidates), answers its connectivity checks on
the media port, and transcodes the user's Opus to the carrier's PCMU: the tones cross both
ways, the checks were answered (the status file's ``rtp_stun_in``), and baresip's ICE ended
on the gateway's host candidate.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest

from .audio import assert_tone
from .baresip import BaresipFleet
from .conftest import GatewayFactory
from .harness import LOOPBACK, TrunkSpec
from .test_users import (
    ALICE_TONE,
    CARRIER_NUMBER,
    CARRIER_TONE,
    USERS,
    UserPhone,
    cdr_rows,
    status_path,
    wait_registered,
)

pytestmark = pytest.mark.timeout(120)


class IcePhone(UserPhone):
    """A gateway user whose baresip does ICE (modules stun, turn, ice)."""

    def modules(self) -> list[str]:
        return [*super().modules(), "stun", "turn", "ice"]


def stun_answered(gw: Any, timeout_s: float = 15.0) -> dict[str, Any]:
    """The status file once it counts answered connectivity checks (rewritten every 5 s)."""
    deadline = time.monotonic() + timeout_s
    doc: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            doc = json.loads(status_path(gw).read_text())
        except (OSError, ValueError):
            doc = {}
        if doc.get("gateway", {}).get("rtp_stun_in", 0) > 0:
            return doc
        time.sleep(0.3)
    raise AssertionError(f"no ICE check answered within {timeout_s:g} s: {doc.get('gateway')}")


def test_a_user_doing_ice_reaches_a_g711_carrier_through_the_lite_agent(
    baresips: BaresipFleet, gateway_factory: GatewayFactory
) -> None:
    carrier = baresips.start("carrier", user=CARRIER_NUMBER, tone_hz=CARRIER_TONE,
                             auto_answer=True)
    dialplan = (f"[[outbound]]\nname = \"pstn\"\nmatch = '^{CARRIER_NUMBER}$'\n"
                f"trunks = [\"carrier\"]\n")
    gw = gateway_factory(
        trunks=[TrunkSpec("carrier", carrier.sip_port,
                          inbound_from=(f"{LOOPBACK}:{carrier.sip_port}",), codecs=("PCMU",))],
        dialplan=dialplan,
        extra_config={"sip": {"users": dict(USERS), "auth_algorithms": ["MD5"],
                              "user_codecs": ["opus", "PCMU"]}},
    )
    stun = f"stun:{LOOPBACK}:{gw.turn_port}"
    params: dict[str, Any] = {"medianat": "ice", "stunserver": stun}
    params.update(auth_pass=USERS["alice"], regint="600")
    alice = IcePhone(baresips.workdir / "baresip-alice-ice", registrar_port=gw.sip_udp,
                     name="alice", tone_hz=ALICE_TONE, codecs=("opus",), account_params=params)
    baresips.phones.append(alice)
    alice.start()
    wait_registered(alice)
    alice.dial(f"sip:{CARRIER_NUMBER}@{LOOPBACK}:{gw.sip_udp}")
    alice.wait_established(10.0)
    carrier.wait_established(10.0)
    alice.wait_rtp(8.0)
    carrier.wait_rtp(8.0)
    time.sleep(3.0)
    status = stun_answered(gw)
    alice.hangup()
    alice.wait_closed(5.0)
    carrier.wait_closed(5.0)
    assert_tone(carrier.received_wav(), ALICE_TONE, min_seconds=1.5, min_ratio=0.9)
    assert_tone(alice.received_wav(), CARRIER_TONE, min_seconds=1.5, min_ratio=0.9)
    # the gateway's answer to alice was a lite agent's, naming its own media port
    answers = [m.text for m in alice.received() if "a=ice-lite" in m.text]
    assert answers, alice.describe()
    assert re.search(r"a=ice-ufrag:\S{4,}", answers[0]) and re.search(
        r"a=candidate:\S+ 1 UDP \d+ 127\.0\.0\.1 \d+ typ host", answers[0]), answers[0]
    assert status["gateway"]["rtp_stun_in"] > 0, status["gateway"]
    gw.stop()
    rows = cdr_rows(gw, "SELECT trunk_in, trunk_out, status FROM cdr_calls "
                        "WHERE answered IS NOT NULL")
    assert rows == [("user:alice", "carrier", 200)], rows
    codecs = dict(cdr_rows(gw, "SELECT leg_id, codec FROM cdr_legs"))
    assert codecs["a"].lower() == "opus" and codecs["b1"].upper() == "PCMU", codecs
