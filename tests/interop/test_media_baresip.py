"""Issue 4 with a real softphone on each side: baresip -> gateway -> baresip.

Each phone sends its own tone (caller 440 Hz, callee 1000 Hz) and records what it hears;
each recording must hold the other side's tone. The gateway anchors both legs and, per
case, relays (same codec), re-keys (RTP on one leg, SDES-SRTP on the other) or transcodes
(PCMU on one leg, Opus on the other).
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

import pytest

from .audio import assert_tone
from .baresip import Baresip, BaresipFleet, SrtpMode
from .conftest import GatewayFactory
from .harness import GatewayProcess, TrunkSpec, route_all_dialplan

CALLER_TONE = 440
CALLEE_TONE = 1000
NUMBER = "15551230000"


@dataclass(frozen=True)
class Leg:
    codecs: tuple[str, ...]  # the phone's codecs
    trunk_codecs: tuple[str, ...]  # its trunk's [trunk] codecs
    srtp: SrtpMode | None = None  # the phone's mediaenc
    trunk_srtp: str = "off"


CASES = {
    "relay-pcmu": (Leg(("PCMU",), ("PCMU",)), Leg(("PCMU",), ("PCMU",))),
    "srtp-to-rtp": (
        Leg(("PCMU",), ("PCMU",), "srtp-mand", "mandatory"),
        Leg(("PCMU",), ("PCMU",)),
    ),
    "opus-to-pcmu": (Leg(("opus",), ("opus",)), Leg(("PCMU",), ("PCMU",))),
    "pcmu-to-srtp-opus": (
        Leg(("PCMU",), ("PCMU",)),
        Leg(("opus",), ("opus",), "srtp-mand", "mandatory"),
    ),
}


def _gateway(gateway_factory: GatewayFactory, a: Baresip, b: Baresip, ca: Leg, cb: Leg
             ) -> GatewayProcess:
    trunks = [
        TrunkSpec("phone-a", a.sip_port, extra={"codecs": list(ca.trunk_codecs),
                                                 "srtp": ca.trunk_srtp}),
        TrunkSpec("phone-b", b.sip_port, inbound_from=(),
                  extra={"codecs": list(cb.trunk_codecs), "srtp": cb.trunk_srtp}),
    ]
    return gateway_factory(trunks=trunks, dialplan=route_all_dialplan(["phone-b"]))


@pytest.mark.parametrize("case_id", list(CASES))
def test_tone_crosses_the_gateway_both_ways(
    case_id: str, baresips: BaresipFleet, gateway_factory: GatewayFactory
) -> None:
    ca, cb = CASES[case_id]
    a = baresips.start("caller", codecs=ca.codecs, srtp=ca.srtp, tone_hz=CALLER_TONE)
    b = baresips.start("callee", user=NUMBER, codecs=cb.codecs, srtp=cb.srtp,
                       tone_hz=CALLEE_TONE, auto_answer=True)
    gw = _gateway(gateway_factory, a, b, ca, cb)
    a.dial(f"sip:{NUMBER}@127.0.0.1:{gw.sip_udp}")
    a.wait_established(10.0)
    b.wait_established(10.0)
    a.wait_rtp(5.0)
    b.wait_rtp(5.0)
    time.sleep(3.0)
    a.hangup()
    a.wait_closed(5.0)
    b.wait_closed(5.0)
    assert_tone(b.received_wav(), CALLER_TONE, min_seconds=1.5, min_ratio=0.9)
    assert_tone(a.received_wav(), CALLEE_TONE, min_seconds=1.5, min_ratio=0.9)
    # the callee was offered the gateway's port, never the caller's
    offer = a.sent_invite_sdp() or ""
    a_rtp = next(line.split()[1] for line in offer.splitlines() if line.startswith("m=audio"))
    offer_to_b = b.received("INVITE")
    assert offer_to_b and "c=IN IP4 127.0.0.1" in offer_to_b[0].text, offer_to_b
    assert f"m=audio {a_rtp}" not in offer_to_b[0].text
    gw.stop()
    assert "handler bugs 0" in gw.log_text()
    with sqlite3.connect(gw.cdr_path) as db:
        legs = dict(db.execute("SELECT leg_id, codec FROM cdr_legs").fetchall())
    assert legs["a"].lower() == ca.codecs[0].lower(), legs
    assert legs["b1"].lower() == cb.codecs[0].lower(), legs
