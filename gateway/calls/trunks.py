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
from typing import Any

from gateway.config import Trunk

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


def write_status(
    path: Path,
    states: Iterable[TrunkState],
    now: float,
    gateway: dict[str, object] | None = None,
) -> None:
    """Write the trunks' state (and the gateway's live counters) as JSON, atomically.

    Read by ``acs-gateway trunks`` and by benchmarks watching for growth.
    """
    doc = {"time": now, "trunks": [s.snapshot() for s in states], "gateway": gateway or {}}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".trunks.")
        with os.fdopen(fd, "w") as out:
            json.dump(doc, out, indent=1)
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("cannot write trunk status %s: %s", path, exc)
