"""Per-trunk state: call limits and OPTIONS probing (up/down).

Invariants:
- ``admit`` is the only way a call is counted against a trunk and ``release``
  the only way it is uncounted; every admitted call is released exactly once.
- The calls-per-second limit is a token bucket one second deep
  (``max_cps`` tokens, refilled continuously).
- A trunk with probing on starts up; ``options_fail_after`` probes in a row
  without an answer within ``options_timeout`` mark it down, and
  ``options_ok_after`` answered probes in a row mark it up again. Any final
  response counts as an answer (the trunk is alive, RFC 3261 section 11.2).
- Time is passed in; the B2BUA owns the timers and the SIP transactions.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.config import Trunk
from gateway.sip.ids import random_hex
from gateway.sip.message import HeaderField, Request
from gateway.sip.transaction import Target

if TYPE_CHECKING:
    from gateway.calls.b2bua import B2BUA
    from gateway.sip.transport import SipStack

log = logging.getLogger("gateway.trunks")


class TrunkState:
    __slots__ = (
        "active",
        "fails",
        "last_change",
        "last_probe",
        "last_status",
        "oks",
        "probe_seq",
        "refused",
        "registration",
        "stamp",
        "tokens",
        "trunk",
        "up",
    )

    def __init__(self, trunk: Trunk, now: float) -> None:
        self.trunk = trunk
        self.active = 0
        self.tokens = float(trunk.max_cps)
        self.stamp = now
        self.up = True
        self.fails = 0
        self.oks = 0
        self.probe_seq = 0  # identifies the probe in flight; late answers are ignored
        self.last_probe: float | None = None
        self.last_status: int | None = None
        self.last_change = now
        self.refused = 0
        self.registration: Any = None  # gateway.calls.registration.Registration

    @property
    def name(self) -> str:
        return self.trunk.name

    def admit(self, now: float) -> bool:
        """Count a new call against the trunk, or refuse it (limits reached)."""
        trunk = self.trunk
        if trunk.max_calls and self.active >= trunk.max_calls:
            self.refused += 1
            return False
        if trunk.max_cps:
            tokens = min(float(trunk.max_cps), self.tokens + (now - self.stamp) * trunk.max_cps)
            self.stamp = now
            if tokens < 1.0:
                self.tokens = tokens
                self.refused += 1
                return False
            self.tokens = tokens - 1.0
        self.active += 1
        return True

    def release(self) -> None:
        self.active -= 1

    # -- probing -----------------------------------------------------------
    def probe_answered(self, status: int, now: float) -> bool:
        """A probe got a final answer; returns True when the trunk came back up."""
        self.last_probe = now
        self.last_status = status
        self.fails = 0
        self.oks += 1
        if not self.up and self.oks >= self.trunk.options_ok_after:
            self.up = True
            self.last_change = now
            log.warning("trunk %s is up (OPTIONS answered %d)", self.name, status)
            return True
        return False

    def probe_failed(self, now: float) -> bool:
        """A probe got no answer in time; returns True when the trunk went down."""
        self.last_probe = now
        self.last_status = None
        self.oks = 0
        self.fails += 1
        if self.up and self.fails >= self.trunk.options_fail_after:
            self.up = False
            self.last_change = now
            log.warning("trunk %s is down (%d OPTIONS unanswered)", self.name, self.fails)
            return True
        return False

    def snapshot(self) -> dict[str, object]:
        return {
            "name": self.name,
            "uri": self.trunk.uri,
            "state": "up" if self.up else "down",
            "probing": self.trunk.options_interval > 0,
            "active_calls": self.active,
            "max_calls": self.trunk.max_calls,
            "max_cps": self.trunk.max_cps,
            "refused": self.refused,
            "last_probe": self.last_probe,
            "last_status": self.last_status,
            "since": self.last_change,
            "registration": None if self.registration is None else {
                "state": self.registration.state,
                "last_status": self.registration.last_status,
                "expires": self.registration.expires,
                "registered_until": self.registration.registered_until,
            },
        }


def status_doc(
    states: Iterable[TrunkState],
    now: float,
    gateway: dict[str, object] | None = None,
) -> dict[str, object]:
    """The trunks' state and the gateway's live counters: the status file's document, read
    by ``acs-gateway trunks`` and by benchmarks watching for growth."""
    return {"time": now, "trunks": [s.snapshot() for s in states], "gateway": gateway or {}}


def write_json(path: Path, doc: object) -> None:
    """Write ``doc`` as JSON to ``path`` atomically (a reader never sees half a file)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.")
        # compact: json's C encoder (indent falls back to the pure-Python one, which kept
        # the reactor busy for 16 ms per write with 300 calls' media in calls.json)
        text = json.dumps(doc, separators=(",", ":"))
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("cannot write status file %s: %s", path, exc)


class TrunkProbes:
    """OPTIONS keep-alive probes toward trunks (RFC 3261 section 11); state in TrunkState."""

    def __init__(self, b2bua: B2BUA) -> None:
        self.b2bua = b2bua

    def start(self) -> None:
        """Probe every trunk with ``options_interval`` > 0, staggered over the first second."""
        gw = self.b2bua
        probed = [s for s in gw.trunk_states.values() if s.trunk.options_interval > 0]
        for i, state in enumerate(probed):
            gw.call_later(i / max(len(probed), 1), self.probe, state)
        gw.write_status()

    def probe(self, state: TrunkState) -> None:
        gw = self.b2bua
        from gateway.calls.b2bua import Pending

        if gw.draining:
            return
        trunk = state.trunk
        target = Target(trunk.transport, trunk.host, trunk.port)
        state.probe_seq += 1
        seq = state.probe_seq
        try:
            request = make_options(gw.stack, target, gw.config.sip.domain, gw.user_agent)
            txn = gw.layer.send_request(request, target, gw.stack.reactor.seconds())
            txn.owner = Pending("probe", None, None, trunk=state, seq=seq)
        except Exception:  # a probe must never stop probing
            log.exception("trunk %s: cannot send OPTIONS", trunk.name)
        gw.stack.flush()
        gw.call_later(trunk.options_timeout, self.done, state, seq, None)
        gw.call_later(trunk.options_interval, self.probe, state)

    def done(self, state: TrunkState, seq: int, status: int | None) -> None:
        """A probe's outcome: its final status, or None for no answer in time."""
        gw = self.b2bua
        if seq != state.probe_seq:
            return  # already decided (answered, or timed out) or superseded
        state.probe_seq += 1  # later outcomes of this probe are ignored
        now = gw.stack.reactor.seconds()
        changed = (
            state.probe_answered(status, now) if status is not None else state.probe_failed(now)
        )
        if changed:
            gw.write_status()


def make_options(stack: SipStack, target: Target, domain: str, user_agent: str) -> Request:
    """An out-of-dialog OPTIONS probe toward a trunk (RFC 3261 section 11)."""
    sent_by = (stack.local.get(target.transport) or next(iter(stack.local.values()))).sent_by
    host = f"[{target.host}]" if ":" in target.host else target.host
    fields: list[HeaderField] = [
        ("via", f"SIP/2.0/{target.transport.upper()} {sent_by};branch={stack.new_branch()};rport",
         None),
        ("max-forwards", "70", None),
        ("from", f"<sip:ping@{domain}>;tag={random_hex(6)}", None),
        ("to", f"<sip:{host}:{target.port}>", None),
        ("call-id", f"{random_hex(10)}@{domain}", None),
        ("cseq", "1 OPTIONS", None),
        ("user-agent", user_agent, None),
    ]
    return Request("OPTIONS", f"sip:{host}:{target.port}", fields)
