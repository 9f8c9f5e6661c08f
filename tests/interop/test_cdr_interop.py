"""CDRs written by the real gateway process (issue 3, item 9): one row per call and per leg,
the release side and reason, and durability of answered calls when the gateway is killed.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from .conftest import GatewayFactory, SippClient, SippServerFactory
from .harness import TrunkSpec, repo_env, route_all_dialplan

NUMBER = "+15551234567"


def _rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_answered_busy_and_cancelled_calls_have_their_rows(
    gateway_factory: GatewayFactory, sipp_server: SippServerFactory, sipp_client: SippClient
) -> None:
    uas = sipp_server("uas")
    busy = sipp_server("uas_busy")
    ring = sipp_server("uas_ring")
    plan = "".join(
        f'[[outbound]]\nname = "{name}"\nmatch = \'^\\+{prefix}\'\ntrunks = ["{name}"]\n'
        for name, prefix in (("ok", "1555"), ("busy", "1666"), ("ring", "1777"))
    )
    gw = gateway_factory(
        trunks=[
            TrunkSpec("ok", uas.port, inbound_from=()),
            TrunkSpec("busy", busy.port, inbound_from=()),
            TrunkSpec("ring", ring.port, inbound_from=()),
            TrunkSpec("pbx", 5999),  # the callers (127.0.0.1) arrive as trunk "pbx"
        ],
        dialplan=plan,
    )
    assert sipp_client("uac", gw.sip_target, service="+15551234567", calls=5, rate=10).ok
    assert sipp_client("uac_expect_486", gw.sip_target, service="+16660000000", calls=3).ok
    assert sipp_client("uac_cancel", gw.sip_target, service="+17770000000", calls=2).ok
    assert sipp_client("uac_expect_404", gw.sip_target, service="+19990000000", calls=1).ok
    time.sleep(1.0)
    gw.stop()
    out = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "cdr", "-c", str(gw.config_path), "--last", "50"],
        capture_output=True, text=True, timeout=30, env=repo_env(), cwd=gw.workdir,
    )
    assert out.returncode == 0, out.stderr
    calls = _rows(
        gw.cdr_path,
        "SELECT callee, trunk_in, trunk_out, status, release_side, answered IS NOT NULL, "
        "duration >= 0, ended IS NOT NULL FROM cdr_calls ORDER BY started",
    )
    assert len(calls) == 11, calls
    answered = [c for c in calls if c[0] == "+15551234567"]
    assert answered == [("+15551234567", "pbx", "ok", 200, "caller", 1, 1, 1)] * 5
    assert [c[3:5] for c in calls if c[0] == "+16660000000"] == [(486, "callee")] * 3
    assert [c[3:5] for c in calls if c[0] == "+17770000000"] == [(487, "caller")] * 2
    assert [c[3:5] for c in calls if c[0] == "+19990000000"] == [(404, "gateway")]
    legs = _rows(gw.cdr_path, "SELECT direction, COUNT(*) FROM cdr_legs GROUP BY direction")
    assert dict(legs) == {"in": 11, "out": 10}  # the 404 never had an outbound leg
    assert "+15551234567" in out.stdout and "486" in out.stdout


def test_answered_call_survives_a_killed_gateway(
    gateway_factory: GatewayFactory, sipp_server: SippServerFactory, sipp_client: SippClient
) -> None:
    uas = sipp_server("uas")
    gw = gateway_factory(
        trunks=[TrunkSpec("carrier", uas.port)], dialplan=route_all_dialplan(["carrier"])
    )
    # one long call: answered, then held 20 s; the gateway is killed in the middle of it
    caller = subprocess.Popen(
        ["sipp", "-sf", str(Path(__file__).parents[2] / "sipp-scenarios" / "uac.xml"),
         "-s", NUMBER, gw.sip_target, "-i", "127.0.0.1", "-m", "1", "-d", "20000",
         "-nostdin", "-timeout", "30", "-timeout_error"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        rows: list[tuple[object, ...]] = []
        while time.monotonic() < deadline and not rows:
            time.sleep(0.3)
            if gw.cdr_path.exists():
                rows = _rows(gw.cdr_path, "SELECT answered FROM cdr_calls")
        assert rows and rows[0][0] is not None, "the answered call was not written"
        os.kill(gw.pid, signal.SIGKILL)
        gw.stop()
    finally:
        caller.kill()
        caller.wait(10)
    rows = _rows(gw.cdr_path, "SELECT callee, answered IS NOT NULL, ended FROM cdr_calls")
    assert rows == [(NUMBER, 1, None)]
