"""Outbound registration to a carrier (issue 3, item 2) through the real gateway process."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from .conftest import GatewayFactory, SippClient, SippServerFactory
from .harness import GatewayProcess, TrunkSpec, route_all_dialplan


def _registration(gw: GatewayProcess, name: str) -> dict[str, Any] | None:
    try:
        doc = json.loads((Path(gw.cdr_path).parent / "trunks.json").read_text())
    except (OSError, ValueError):
        return None
    for trunk in doc["trunks"]:
        if trunk["name"] == name:
            reg: dict[str, Any] | None = trunk["registration"]
            return reg
    return None


def _wait(gw: GatewayProcess, name: str, state: str, timeout: float) -> dict[str, Any] | None:
    deadline = time.monotonic() + timeout
    reg = _registration(gw, name)
    while (reg is None or reg["state"] != state) and time.monotonic() < deadline:
        time.sleep(0.2)
        reg = _registration(gw, name)
    return reg


def test_registers_refreshes_and_takes_the_carriers_calls(
    gateway_factory: GatewayFactory, sipp_server: SippServerFactory, sipp_client: SippClient
) -> None:
    registrar = sipp_server("uas_register")
    callee = sipp_server("uas")
    gw = gateway_factory(
        trunks=[
            TrunkSpec("carrier", registrar.port, username="gw", password="s3cret",
                      register=True, extra={"register_expires": 60}),
            TrunkSpec("pbx", callee.port, inbound_from=()),
        ],
        dialplan=route_all_dialplan(["pbx"]),
    )
    reg = _wait(gw, "carrier", "registered", 10)
    assert reg is not None and reg["state"] == "registered" and reg["expires"] == 3, reg
    # the registrar's scenario ends only after the challenged refresh was verified
    assert registrar.wait_counts(1, 15) == (1, 0)
    after = _registration(gw, "carrier")
    assert after is not None and after["state"] == "registered"
    assert after["registered_until"] > reg["registered_until"]  # refreshed
    # the carrier calls the registered contact (sip:gw@gateway): taken as this trunk's
    result = sipp_client("uac", gw.sip_target, service="gw", calls=2, rate=5)
    assert (result.successful, result.failed) == (2, 0), result.describe()


def test_a_refused_registration_is_reported_and_retried(
    gateway_factory: GatewayFactory, sipp_server: SippServerFactory
) -> None:
    registrar = sipp_server("uas_register_403")
    gw = gateway_factory(
        trunks=[TrunkSpec("carrier", registrar.port, username="gw", password="s3cret",
                          register=True)],
        dialplan=route_all_dialplan(["carrier"]),
    )
    reg = _wait(gw, "carrier", "failed", 10)
    assert reg is not None and reg["state"] == "failed" and reg["last_status"] == 403, reg
    assert "refused the registration (403); retry in 5.0s" in gw.log_text()
    # retried after the first backoff (5 s), on the same Call-ID (RFC 3261 section 10.2.4):
    # SIPp takes that REGISTER for a message of its ended call and counts it there
    deadline = time.monotonic() + 12
    dead = 0
    while dead < 1 and time.monotonic() < deadline:
        time.sleep(0.5)
        dead = int(registrar.stats().get("DeadCallMsgs(C)", "0") or 0)
    assert dead >= 1
