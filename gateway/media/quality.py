"""Call quality estimates: the E-model (ITU-T G.107) reduced to what RTCP can measure.

Invariants:
- Pure functions of numbers; no state, no clock, no I/O.
- The simplification is the usual one for VoIP monitoring (Cole and Rosenbluth, "Voice over
  IP performance monitoring", ACM SIGCOMM CCR 31(2), 2001): every G.107 parameter at its
  default value, so R0 - Is = 93.2 and the advantage factor A = 0; what is left is the delay
  impairment Id and the effective equipment impairment Ie_eff:

      R = 93.2 - Id - Ie_eff
      Id = 0.024 d + 0.11 (d - 177.3) H(d - 177.3)    d = one-way (mouth-to-ear) delay, ms
      Ie_eff = Ie + (95 - Ie) Ppl / (Ppl / BurstR + Bpl)    Ppl = packet loss, %

  H is the Heaviside step. R is clamped to 0..100 and mapped to MOS-CQE with G.107 annex B.
- Everything is on the narrowband (G.107) scale, wideband codecs included; G.107.1's
  wideband scale (R up to 129) is not used, so figures stay comparable across legs.
"""

from __future__ import annotations

import math

__all__ = [
    "EQUIPMENT",
    "R_DEFAULT",
    "UNKNOWN_EQUIPMENT",
    "mos",
    "mos_from_r",
    "r_factor",
]

# R0 - Is with every G.107 parameter at its default value (G.107 table 3).
R_DEFAULT = 93.2

# Codec name (lower case, as in SDP rtpmap) -> (Ie, Bpl).
# G.113 appendix I: G.711 with packet loss concealment Ie = 0, Bpl = 25.1 (Bpl = 4.3 without
# PLC; the gateway always conceals), G.729A with VAD Ie = 11, Bpl = 19.0.
# G.722 and Opus are wideband, which G.113 rates on the G.107.1 scale only; here they are put
# on the narrowband scale as an assumption: Ie = 0 (no worse than G.711 in narrowband terms)
# and a loss robustness like G.711 with PLC (G.722 with its appendix IV PLC: Bpl = 25) or a
# little below it for Opus (Bpl = 20: its PLC is good, but our 20 ms frames without in-band
# FEC lose whole frames; a conservative figure, not an ITU value).
EQUIPMENT: dict[str, tuple[float, float]] = {
    "pcmu": (0.0, 25.1),
    "pcma": (0.0, 25.1),
    "g722": (0.0, 25.0),
    "opus": (0.0, 20.0),
    "g729": (11.0, 19.0),
}

# A codec not in the table: Ie = 0 (no known coding distortion) and Bpl = 10, a robustness
# between G.711 without PLC (4.3) and with it (25.1): an assumption, stated as one.
UNKNOWN_EQUIPMENT = (0.0, 10.0)


def r_factor(
    one_way_delay_ms: float, loss_percent: float, codec: str, burst_ratio: float = 1.0
) -> float:
    """The transmission rating R (0..93.2) for a one-way delay, a packet loss percentage
    (0..100), a codec name (case-insensitive, e.g. "PCMU", "opus") and a burst ratio
    (1 for random loss, above 1 for bursty loss, as G.107 defines BurstR).

    Negative delays count as 0 and the loss is clamped to 0..100; NaN in any argument or a
    burst ratio that is not positive raises ``ValueError``."""
    if math.isnan(one_way_delay_ms):
        raise ValueError("one-way delay is not a number")
    if math.isnan(loss_percent):
        raise ValueError("loss percentage is not a number")
    if not burst_ratio > 0:
        raise ValueError("burst ratio must be positive")
    delay = max(one_way_delay_ms, 0.0)
    loss = min(max(loss_percent, 0.0), 100.0)
    ie, bpl = EQUIPMENT.get(codec.lower(), UNKNOWN_EQUIPMENT)
    # Id reduced to a fit of G.107's delay terms at default echo parameters (Cole and
    # Rosenbluth): slow growth up to 177.3 ms, steeper beyond.
    id_ = 0.024 * delay
    if delay > 177.3:
        id_ += 0.11 * (delay - 177.3)
    # G.107 Ie,eff: the equipment impairment grown by random (BurstR = 1) or bursty loss.
    ie_eff = ie + (95.0 - ie) * loss / (loss / burst_ratio + bpl)
    r = R_DEFAULT - id_ - ie_eff
    return min(max(r, 0.0), 100.0)


def mos_from_r(r: float) -> float:
    """MOS (conversational quality, 1..4.5) from R (G.107 annex B). NaN gives 1.

    The cubic dips just below 1 for 0 < R < 6.52 (to 0.989 at worst); the result is held
    at 1 there, so MOS never leaves 1..4.5 and never decreases as R grows."""
    if math.isnan(r) or r < 0:
        return 1.0
    if r > 100:
        return 4.5
    return max(1.0, 1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7e-6)


def mos(
    one_way_delay_ms: float, loss_percent: float, codec: str, burst_ratio: float = 1.0
) -> float:
    """MOS for a one-way delay (ms), a packet loss (%) and a codec: ``r_factor`` then
    ``mos_from_r``."""
    return mos_from_r(r_factor(one_way_delay_ms, loss_percent, codec, burst_ratio))
