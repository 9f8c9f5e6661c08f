"""gateway.media.quality: the simplified E-model (ITU-T G.107) and its MOS mapping.

Values are checked against hand-computed points of the formulas, then for the properties a
monitoring figure needs: bounds, monotonic in loss and delay, burstiness only hurts.
"""

from __future__ import annotations

import itertools
import math

import pytest

from gateway.media.quality import (
    EQUIPMENT,
    R_DEFAULT,
    UNKNOWN_EQUIPMENT,
    mos,
    mos_from_r,
    r_factor,
)

CODECS = [*EQUIPMENT, "PCMU", "Opus", "telephone-event", "AMR-WB"]
DELAYS = [0.0, 20.0, 100.0, 150.0, 177.3, 200.0, 300.0, 400.0, 600.0, 1000.0, 5000.0]
LOSSES = [0.0, 0.1, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0, 100.0]


def test_no_impairment_is_93_2_and_mos_4_41() -> None:
    for codec in ("PCMU", "PCMA", "G722", "opus", "unknown"):
        assert r_factor(0.0, 0.0, codec) == R_DEFAULT == 93.2
        assert mos(0.0, 0.0, codec) == pytest.approx(4.41, abs=0.005)
    assert mos_from_r(93.2) == pytest.approx(4.4093, abs=1e-4)


@pytest.mark.parametrize(
    ("delay", "loss", "codec", "burst", "expected"),
    [
        # Id only: 0.024 d below the knee, plus 0.11 (d - 177.3) above it.
        (100.0, 0.0, "PCMU", 1.0, 93.2 - 2.4),
        (177.3, 0.0, "PCMU", 1.0, 93.2 - 0.024 * 177.3),
        (277.3, 0.0, "PCMU", 1.0, 93.2 - 0.024 * 277.3 - 11.0),
        # Ie_eff only: Ie + (95 - Ie) Ppl / (Ppl / BurstR + Bpl).
        (0.0, 1.0, "PCMU", 1.0, 93.2 - 95.0 / 26.1),
        (0.0, 1.0, "pcma", 1.0, 93.2 - 95.0 / 26.1),
        (0.0, 2.0, "G722", 1.0, 93.2 - 95.0 * 2 / 27.0),
        (0.0, 5.0, "opus", 1.0, 93.2 - 95.0 * 5 / 25.0),
        (0.0, 0.0, "G729", 1.0, 93.2 - 11.0),
        (0.0, 1.0, "G729", 1.0, 93.2 - 11.0 - 84.0 / 20.0),
        (0.0, 5.0, "whatever", 1.0, 93.2 - 95.0 * 5 / 15.0),
        (0.0, 2.0, "PCMU", 2.0, 93.2 - 95.0 * 2 / (1.0 + 25.1)),
        # Both.
        (200.0, 3.0, "PCMU", 1.0, 93.2 - 4.8 - 0.11 * 22.7 - 95.0 * 3 / 28.1),
        # Floored at 0.
        (2000.0, 50.0, "PCMU", 1.0, 0.0),
    ],
)
def test_r_factor_points(
    delay: float, loss: float, codec: str, burst: float, expected: float
) -> None:
    assert r_factor(delay, loss, codec, burst) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize(
    ("r", "expected"),
    [
        (-10.0, 1.0),
        (-1e-9, 1.0),
        (0.0, 1.0),
        (3.0, 1.0),  # the cubic alone gives 0.9889: held at 1
        (6.5, 1.0),  # 0.9999
        (7.0, 1.0 + 0.035 * 7 + 7 * -53 * 93 * 7e-6),
        (50.0, 1.0 + 1.75 + 50 * -10 * 50 * 7e-6),
        (60.0, 1.0 + 2.1),
        (80.0, 1.0 + 2.8 + 80 * 20 * 20 * 7e-6),
        (100.0, 4.5),
        (100.1, 4.5),
        (1e9, 4.5),
        (math.inf, 4.5),
        (-math.inf, 1.0),
        (math.nan, 1.0),
    ],
)
def test_mos_from_r(r: float, expected: float) -> None:
    assert mos_from_r(r) == pytest.approx(expected, abs=1e-12)


def test_mos_from_r_is_continuous_and_increasing_over_0_to_100() -> None:
    values = [mos_from_r(r / 10) for r in range(-10, 1011)]
    assert all(b >= a for a, b in itertools.pairwise(values))
    assert all(abs(b - a) < 0.01 for a, b in itertools.pairwise(values))
    # Above 100 the formula would dip (the cubic term turns negative); the cap keeps it flat.
    assert mos_from_r(100.0) == mos_from_r(120.0) == 4.5


@pytest.mark.parametrize("codec", CODECS)
def test_bounds(codec: str) -> None:
    for delay, loss in itertools.product(DELAYS, LOSSES):
        for burst in (0.5, 1.0, 2.0):
            r = r_factor(delay, loss, codec, burst)
            assert 0.0 <= r <= R_DEFAULT
            assert 1.0 <= mos_from_r(r) <= 4.5
            assert mos(delay, loss, codec, burst) == mos_from_r(r)


@pytest.mark.parametrize("codec", CODECS)
def test_monotonic_in_loss(codec: str) -> None:
    for delay in DELAYS[:6]:
        values = [r_factor(delay, loss, codec) for loss in LOSSES]
        assert all(b < a or b == 0.0 for a, b in itertools.pairwise(values))
        moses = [mos(delay, loss, codec) for loss in LOSSES]
        assert all(b <= a for a, b in itertools.pairwise(moses))


@pytest.mark.parametrize("codec", CODECS)
def test_monotonic_in_delay(codec: str) -> None:
    for loss in LOSSES[:7]:
        values = [r_factor(delay, loss, codec) for delay in DELAYS]
        assert all(b < a or b == 0.0 for a, b in itertools.pairwise(values))


def test_burstiness_only_hurts() -> None:
    for loss in LOSSES[1:]:
        values = [r_factor(50.0, loss, "PCMU", burst) for burst in (1.0, 1.5, 2.0, 4.0)]
        assert all(b < a or b == 0.0 for a, b in itertools.pairwise(values))


def test_codec_lookup() -> None:
    assert r_factor(0, 3, "PCMU") == r_factor(0, 3, "pcmu") == r_factor(0, 3, "PcMu")
    assert UNKNOWN_EQUIPMENT == (0.0, 10.0)
    assert r_factor(0, 3, "speex") == pytest.approx(93.2 - 95.0 * 3 / 13.0)
    # With PLC G.711 tolerates loss better than an unknown codec is assumed to.
    assert r_factor(0, 3, "PCMU") > r_factor(0, 3, "speex")


def test_inputs_are_clamped() -> None:
    assert r_factor(-50.0, 0.0, "PCMU") == r_factor(0.0, 0.0, "PCMU")
    assert r_factor(0.0, -1.0, "PCMU") == r_factor(0.0, 0.0, "PCMU")
    assert r_factor(0.0, 150.0, "PCMU") == r_factor(0.0, 100.0, "PCMU")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0.0, 1.0, "PCMU", 0.0), "burst ratio must be positive"),
        ((0.0, 1.0, "PCMU", -1.0), "burst ratio must be positive"),
        ((0.0, 1.0, "PCMU", math.nan), "burst ratio must be positive"),
        ((math.nan, 1.0, "PCMU", 1.0), "one-way delay is not a number"),
        ((0.0, math.nan, "PCMU", 1.0), "loss percentage is not a number"),
    ],
)
def test_rejections(args: tuple[float, float, str, float], message: str) -> None:
    with pytest.raises(ValueError) as caught:
        r_factor(*args)
    assert str(caught.value) == message
