"""gateway.media.dtmf: RFC 4733 telephone-events, SIP INFO DTMF bodies, in-band detection.

The in-band tests run the detector on tones from `generate_dtmf`, also after a G.711 mu-law
round trip done here with NumPy (the textbook segment encoder of ITU-T G.711, checked
against a few known codes), so this file does not depend on gateway.media.g711.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest

from gateway.media.dtmf import (
    COLUMN_FREQUENCIES,
    DEFAULT_INFO_DURATION_MS,
    DIGITS,
    KEYPAD,
    ROW_FREQUENCIES,
    Event,
    EventPacket,
    EventSender,
    EventTracker,
    GoertzelDetector,
    digit_of,
    event_of,
    generate_dtmf,
    info_body,
    parse_info_body,
    rescale_duration,
)

# ---------------------------------------------------------------------------------------------
# Event payload (RFC 4733 section 2.3)


@pytest.mark.parametrize(
    ("payload", "event"),
    [
        (b"\x05\x0a\x00\xa0", Event(5, False, 10, 160)),
        (b"\x0b\x8a\x03\x20", Event(11, True, 10, 800)),
        (b"\x00\x00\x00\x00", Event(0, False, 0, 0)),
        (b"\xff\xbf\xff\xff", Event(255, True, 63, 0xFFFF)),
        (b"\x10\x3f\x01\x00", Event(16, False, 63, 256)),
    ],
)
def test_event_round_trip(payload: bytes, event: Event) -> None:
    assert Event.parse(payload) == event
    assert bytes(event) == payload


def test_event_reserved_bit_is_ignored_and_never_sent() -> None:
    event = Event.parse(b"\x05\xca\x00\xa0")  # E=1, R=1, volume 10
    assert event == Event(5, True, 10, 160)
    assert bytes(event) == b"\x05\x8a\x00\xa0"


def test_event_trailing_bytes_are_ignored() -> None:
    assert Event.parse(b"\x05\x0a\x00\xa0\x00\x00") == Event(5, False, 10, 160)


@pytest.mark.parametrize("length", [0, 1, 2, 3])
def test_event_truncated(length: int) -> None:
    with pytest.raises(ValueError, match=f"telephone-event payload truncated: {length} bytes"):
        Event.parse(b"\x05\x0a\x00\xa0"[:length])


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ((256, False, 10, 0), "code 256 is outside 0..255"),
        ((-1, False, 10, 0), "code -1 is outside 0..255"),
        ((5, False, 64, 0), "volume 64 is outside 0..63"),
        ((5, False, -1, 0), "volume -1 is outside 0..63"),
        ((5, False, 10, 0x10000), "duration 65536 is outside 0..65535"),
        ((5, False, 10, -1), "duration -1 is outside 0..65535"),
    ],
)
def test_event_out_of_range(fields: tuple[int, bool, int, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Event(*fields)


def test_event_is_frozen() -> None:
    event = Event(5, False, 10, 0)
    with pytest.raises(AttributeError):
        event.duration = 5  # type: ignore[misc]


def test_digits_and_events() -> None:
    assert DIGITS == "0123456789*#ABCD"
    assert [digit_of(code) for code in range(16)] == list(DIGITS)
    assert digit_of(16) is None and digit_of(255) is None and digit_of(-1) is None
    assert [event_of(d) for d in DIGITS] == list(range(16))
    assert event_of("*") == 10 and event_of("#") == 11 and event_of("d") == 15
    for bad in ("E", "", "12", "+"):
        with pytest.raises(ValueError, match="is not a DTMF digit"):
            event_of(bad)


@pytest.mark.parametrize(
    ("duration", "source", "target", "expected"),
    [
        (160, 8000, 48000, 960),
        (960, 48000, 8000, 160),
        (1, 48000, 8000, 0),  # 0.167 rounds down
        (3, 48000, 8000, 1),  # 0.5 rounds up
        (20000, 8000, 48000, 0xFFFF),  # clamped to the 16-bit field
        (0xFFFF, 48000, 8000, 10923),
        (400, 8000, 8000, 400),
        (0, 8000, 48000, 0),
    ],
)
def test_rescale_duration(duration: int, source: int, target: int, expected: int) -> None:
    assert rescale_duration(duration, source, target) == expected


def test_rescale_duration_errors() -> None:
    with pytest.raises(ValueError, match="clock rates must be positive"):
        rescale_duration(160, 0, 8000)
    with pytest.raises(ValueError, match="duration -1 is negative"):
        rescale_duration(-1, 8000, 48000)


# ---------------------------------------------------------------------------------------------
# EventTracker


def test_tracker_reports_once_despite_triple_end() -> None:
    tracker = EventTracker()
    ts = 1000
    assert tracker.feed(ts, Event(5, False, 10, 0), 0.0, marker=True) is None
    assert tracker.active == "5"
    assert tracker.feed(ts, Event(5, False, 10, 400), 0.05) is None
    assert tracker.feed(ts, Event(5, False, 10, 800), 0.10) is None
    assert tracker.feed(ts, Event(5, True, 10, 1280), 0.16) == ("5", 160)
    assert tracker.active is None
    assert tracker.feed(ts, Event(5, True, 10, 1280), 0.21) is None
    assert tracker.feed(ts, Event(5, True, 10, 1280), 0.26) is None
    assert tracker.poll(10.0) == []
    assert tracker.get_timer() is None


def test_tracker_retransmitted_start() -> None:
    tracker = EventTracker()
    for now in (0.0, 0.005, 0.01):  # a start sent more than once (RFC 4733 section 2.5.1)
        assert tracker.feed(50, Event(1, False, 10, 0), now, marker=True) is None
    assert tracker.feed(50, Event(1, True, 10, 800), 0.1) == ("1", 100)
    assert tracker.feed(50, Event(1, False, 10, 0), 0.12, marker=True) is None  # very late


def test_tracker_lost_end_times_out() -> None:
    tracker = EventTracker(timeout=0.3)
    tracker.feed(7, Event(9, False, 10, 0), 1.0, marker=True)
    tracker.feed(7, Event(9, False, 10, 400), 1.05)
    tracker.feed(7, Event(9, False, 10, 800), 1.10)
    deadline = tracker.get_timer()
    assert deadline == pytest.approx(1.40)
    assert tracker.poll(1.39) == []
    assert tracker.poll(deadline) == [("9", 100)]
    assert tracker.get_timer() is None
    # The end packets arriving after all do not report the digit again.
    assert tracker.feed(7, Event(9, True, 10, 1600), 1.5) is None
    assert tracker.feed(7, Event(9, False, 10, 1200), 1.5) is None


def test_tracker_two_same_digits_in_a_row() -> None:
    tracker = EventTracker()
    results = []
    for ts, base in ((8000, 0.0), (12000, 0.5)):
        results.append(tracker.feed(ts, Event(3, False, 10, 0), base, marker=True))
        results.append(tracker.feed(ts, Event(3, False, 10, 400), base + 0.05))
        for repeat in range(3):
            results.append(tracker.feed(ts, Event(3, True, 10, 640), base + 0.08 + repeat / 50))
    assert [r for r in results if r is not None] == [("3", 80), ("3", 80)]


def test_tracker_lost_end_shown_by_the_next_event() -> None:
    tracker = EventTracker()
    tracker.feed(100, Event(1, False, 10, 0), 0.0, marker=True)
    tracker.feed(100, Event(1, False, 10, 800), 0.1)
    assert tracker.feed(2000, Event(2, False, 10, 0), 0.2, marker=True) == ("1", 100)
    assert tracker.feed(2000, Event(2, True, 10, 400), 0.25) == ("2", 50)


def test_tracker_two_digits_completed_by_one_packet() -> None:
    """Only the end of the second digit arrives while the first is open: the first is
    returned at once, the second is held for the next poll, which is due immediately."""
    tracker = EventTracker()
    tracker.feed(100, Event(1, False, 10, 800), 0.0)
    assert tracker.feed(2000, Event(2, True, 10, 400), 0.2) == ("1", 100)
    assert tracker.get_timer() == 0.2
    assert tracker.poll(0.2) == [("2", 50)]
    assert tracker.get_timer() is None
    assert tracker.feed(2000, Event(2, True, 10, 400), 0.25) is None


def test_tracker_only_the_end_arrives() -> None:
    tracker = EventTracker()
    assert tracker.feed(100, Event(0, True, 10, 1600), 0.0) == ("0", 200)


def test_tracker_ignores_non_digit_events() -> None:
    tracker = EventTracker()
    assert tracker.feed(100, Event(16, False, 10, 0), 0.0, marker=True) is None  # flash
    assert tracker.feed(100, Event(16, True, 10, 800), 0.1) is None
    assert tracker.active is None and tracker.get_timer() is None


def test_tracker_uses_the_longest_duration_seen() -> None:
    tracker = EventTracker()
    tracker.feed(5, Event(4, False, 10, 800), 0.0)
    tracker.feed(5, Event(4, False, 10, 400), 0.01)  # reordered update
    assert tracker.poll(1.0) == [("4", 100)]


def test_tracker_48k_clock() -> None:
    tracker = EventTracker(48000)
    assert tracker.feed(0, Event(7, True, 10, 9600), 0.0) == ("7", 200)


def test_tracker_argument_errors() -> None:
    with pytest.raises(ValueError, match="clock rate must be positive"):
        EventTracker(0)
    with pytest.raises(ValueError, match="timeout must be positive"):
        EventTracker(timeout=0)


def _play(
    tracker: EventTracker, packets: list[EventPacket], start_ts: int, start: float
) -> list[tuple[str, int]]:
    got = []
    for packet in packets:
        now = start + packet.send_offset
        result = tracker.feed(
            (start_ts + packet.ts_offset) & 0xFFFFFFFF,
            Event.parse(packet.payload),
            now,
            marker=packet.marker,
        )
        if result is not None:
            got.append(result)
        got.extend(tracker.poll(now))
    return got


@pytest.mark.parametrize("clock", [8000, 48000])
def test_sender_to_tracker_every_digit(clock: int) -> None:
    sender = EventSender(clock)
    tracker = EventTracker(clock)
    got: list[tuple[str, int]] = []
    for i, digit in enumerate(DIGITS):
        got += _play(tracker, sender.packets(digit, 120), i * clock, float(i))
    assert got == [(digit, 120) for digit in DIGITS]
    assert tracker.poll(100.0) == []


@pytest.mark.parametrize(("clock", "ms"), [(48000, 2000), (48000, 4321), (8000, 9000)])
def test_long_event_in_segments_is_one_digit(clock: int, ms: int) -> None:
    packets = EventSender(clock).packets("#", ms)
    assert len({p.ts_offset for p in packets}) > 1
    tracker = EventTracker(clock)
    assert _play(tracker, packets, 0xFFFF0000, 5.0) == [("#", ms)]  # timestamps wrap, too
    assert tracker.poll(100.0) == []


# ---------------------------------------------------------------------------------------------
# EventSender


def test_sender_sequence_shape() -> None:
    sender = EventSender(8000, 101)
    packets = sender.packets("5", 200)
    assert sender.payload_type == 101
    expected = [
        (0.0, 0, True, Event(5, False, 10, 0)),
        (0.05, 0, False, Event(5, False, 10, 400)),
        (0.10, 0, False, Event(5, False, 10, 800)),
        (0.15, 0, False, Event(5, False, 10, 1200)),
        (0.20, 0, False, Event(5, True, 10, 1600)),
        (0.25, 0, False, Event(5, True, 10, 1600)),
        (0.30, 0, False, Event(5, True, 10, 1600)),
    ]
    got = [(p.send_offset, p.ts_offset, p.marker, Event.parse(p.payload)) for p in packets]
    assert [g[1:] for g in got] == [e[1:] for e in expected]
    assert [g[0] for g in got] == pytest.approx([e[0] for e in expected])
    assert all(isinstance(p, EventPacket) and len(p.payload) == 4 for p in packets)


def test_sender_duration_between_updates_and_48k() -> None:
    packets = EventSender(48000, 96, volume=7).packets("*", 130)
    events = [Event.parse(p.payload) for p in packets]
    assert [e.duration for e in events] == [0, 2400, 4800, 6240, 6240, 6240]
    assert [e.end for e in events] == [False] * 3 + [True] * 3
    assert {e.event for e in events} == {10} and {e.volume for e in events} == {7}
    assert [p.marker for p in packets] == [True] + [False] * 5
    assert [p.send_offset for p in packets] == pytest.approx([0, 0.05, 0.1, 0.13, 0.18, 0.23])


def test_sender_segments_long_events() -> None:
    packets = EventSender(48000).packets("1", 2000)
    offsets = [p.send_offset for p in packets]
    assert offsets == sorted(offsets)
    first, second = 0, 0xFFFF
    assert {p.ts_offset for p in packets} == {first, second}
    finals = [
        p for p in packets if p.ts_offset == first and Event.parse(p.payload).duration == 0xFFFF
    ]
    assert len(finals) == 3 and not any(Event.parse(p.payload).end for p in finals)
    ends = [Event.parse(p.payload) for p in packets if Event.parse(p.payload).end]
    assert len(ends) == 3 and {e.duration for e in ends} == {96000 - 0xFFFF}
    assert all(p.ts_offset == second for p in packets if Event.parse(p.payload).end)
    assert sum(p.marker for p in packets) == 1
    for ts_offset in (first, second):
        durations = [Event.parse(p.payload).duration for p in packets if p.ts_offset == ts_offset]
        assert durations == sorted(durations)


def test_sender_errors() -> None:
    sender = EventSender()
    with pytest.raises(ValueError, match="'E' is not a DTMF digit"):
        sender.packets("E", 100)
    with pytest.raises(ValueError, match=r"DTMF duration 0 ms is outside 1\.\.60000"):
        sender.packets("1", 0)
    with pytest.raises(ValueError, match="payload type 128"):
        EventSender(8000, 128)
    with pytest.raises(ValueError, match="volume 64"):
        EventSender(volume=64)
    with pytest.raises(ValueError, match="update interval"):
        EventSender(48000, interval=2.0)
    with pytest.raises(ValueError, match="at least once"):
        EventSender(end_repeats=0)


# ---------------------------------------------------------------------------------------------
# SIP INFO bodies


@pytest.mark.parametrize("digit", list(DIGITS))
def test_info_body_round_trip(digit: str) -> None:
    body = info_body(digit, 160)
    assert body == f"Signal={digit}\r\nDuration=160\r\n".encode()
    assert parse_info_body(body) == (digit, 160)
    assert parse_info_body(body, "application/dtmf-relay") == (digit, 160)


def test_info_body_exact_bytes_and_lowercase() -> None:
    assert info_body("5", 160) == b"Signal=5\r\nDuration=160\r\n"
    assert info_body("a", 100) == b"Signal=A\r\nDuration=100\r\n"


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        (b"Signal=5\nDuration=250\n", None, ("5", 250)),
        (b"signal = #\r\nDURATION = 90", None, ("#", 90)),
        (b"Signal=*\r\n", None, ("*", DEFAULT_INFO_DURATION_MS)),
        (b"Signal=d\r\nDuration=100\r\nVolume=10\r\n", None, ("D", 100)),
        (b"\r\nSignal=1\r\n\r\nDuration=40\r\n", "Application/DTMF-Relay; x=y", ("1", 40)),
        (b"5", None, ("5", DEFAULT_INFO_DURATION_MS)),
        (b" 5\r\n", "application/dtmf", ("5", DEFAULT_INFO_DURATION_MS)),
        (b"#", "application/dtmf", ("#", DEFAULT_INFO_DURATION_MS)),
    ],
)
def test_parse_info_body(body: bytes, content_type: str | None, expected: tuple[str, int]) -> None:
    assert parse_info_body(body, content_type) == expected


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b"", None, "application/dtmf body '' is not one DTMF digit"),
        (b"55", None, "application/dtmf body '55' is not one DTMF digit"),
        (b"Signal=", None, "dtmf-relay Signal '' is not one DTMF digit"),
        (b"Signal=55", None, "dtmf-relay Signal '55' is not one DTMF digit"),
        (b"Signal=X\r\n", None, "dtmf-relay Signal 'X' is not one DTMF digit"),
        (b"Signal=10\r\n", None, "dtmf-relay Signal '10' is not one DTMF digit"),
        (b"Duration=100\r\n", None, "dtmf-relay body has no Signal line"),
        (b"Signal=5\r\nDuration=abc\r\n", None, "dtmf-relay Duration 'abc' is not a number"),
        (b"Signal=5\r\nDuration=-5\r\n", None, "dtmf-relay Duration '-5' is not a number"),
        (b"Signal=5\r\nDuration=0\r\n", None, "dtmf-relay Duration 0 is outside 1..60000"),
        (b"Signal=5\r\nDuration=99999999\r\n", None, "is not a number of ms"),
        (b"Signal=5\r\nSignal=6\r\n", None, "more than one Signal line"),
        (b"Signal=5\r\nDuration=1\r\nDuration=2\r\n", None, "more than one Duration line"),
        (b"Signal=5\r\ngarbage\r\n", None, "dtmf-relay line has no '=': 'garbage'"),
        (b"Signal=\xc3\xa9", None, "not ASCII"),
        (b"Signal=5\r\n" + b"X=1\r\n" * 200, None, "more than 512"),
        (b"Signal=5", "application/dtmf", "application/dtmf body 'Signal=5' is not one"),
        (b"5", "text/plain", "'text/plain' is not a DTMF INFO content type"),
    ],
)
def test_parse_info_body_errors(body: bytes, content_type: str | None, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("*", r"\*")):
        parse_info_body(body, content_type)


def test_info_body_errors() -> None:
    with pytest.raises(ValueError, match="'%' is not a DTMF digit"):
        info_body("%", 100)
    with pytest.raises(ValueError, match="DTMF duration 0 ms is outside"):
        info_body("1", 0)


# ---------------------------------------------------------------------------------------------
# In-band detection

RATE = 8000
SILENCE = np.zeros(800, dtype=np.int16)


def mulaw_round_trip(pcm: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
    """Encode to G.711 mu-law and decode back (bias 0x84, clip 32635, inverted code)."""
    x = pcm.astype(np.int32)
    sign = (x < 0).astype(np.int32)
    magnitude = np.minimum(np.abs(x), 32635) + 0x84
    exponent = np.floor(np.log2(magnitude)).astype(np.int32) - 7
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    code = ~((sign << 7) | (exponent << 4) | mantissa) & 0xFF
    code = ~code & 0xFF
    exponent, mantissa = (code >> 4) & 0x07, code & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(code & 0x80, -magnitude, magnitude).astype(np.int16)


def test_mulaw_helper_known_values() -> None:
    pcm = np.array([0, 1000, -1000, 32767, -32768, 8], dtype=np.int16)
    assert mulaw_round_trip(pcm).tolist() == [0, 988, -988, 32124, -32124, 8]


def tone(frequency: float, ms: int, amplitude: float = 7000.0) -> npt.NDArray[np.int16]:
    t = np.arange(ms * RATE // 1000) / RATE
    return (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.int16)


def framed(*parts: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
    return np.concatenate([SILENCE, *parts, SILENCE])


def detect(pcm: npt.NDArray[np.int16], chunk: int = 160, **options: float) -> list[tuple[str, int]]:
    detector = GoertzelDetector(RATE, **options)  # type: ignore[arg-type]
    found: list[tuple[str, int]] = []
    for start in range(0, len(pcm), chunk):
        found += detector.feed(pcm[start : start + chunk])
    return found + detector.flush()


def test_generate_dtmf() -> None:
    pcm = generate_dtmf("5", 100)
    assert pcm.dtype == np.int16 and len(pcm) == 800
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64)))
    peaks = sorted(np.argsort(spectrum)[-2:] * RATE / len(pcm))
    assert peaks == [770.0, 1340.0]  # 10 Hz bins: 770 and 1336
    assert generate_dtmf("5", 100, 16000).shape == (1600,)
    with pytest.raises(ValueError, match="'E' is not a DTMF digit"):
        generate_dtmf("E", 100)


def test_keypad_layout() -> None:
    """ITU-T Q.23: row frequency by keypad row, column frequency by keypad column."""
    assert KEYPAD == ("123A", "456B", "789C", "*0#D")
    assert len(ROW_FREQUENCIES) == len(COLUMN_FREQUENCIES) == 4


def test_tone_levels_match_a_textbook_goertzel() -> None:
    detector = GoertzelDetector()
    n = detector.block_size
    block = np.random.default_rng(3).normal(0, 3000, n).astype(np.int16)
    expected = []
    for frequency in ROW_FREQUENCIES + COLUMN_FREQUENCIES:
        coefficient = 2 * math.cos(2 * math.pi * frequency / RATE)
        s1 = s2 = 0.0
        for sample in block.tolist():
            s1, s2 = sample + coefficient * s1 - s2, s1
        power = s1 * s1 + s2 * s2 - coefficient * s1 * s2  # |X(f)|^2
        expected.append(10 * math.log10(2 * power / n**2 / (22663.0**2 / 2)))
    assert detector.tone_levels(block) == pytest.approx(expected, abs=1e-6)
    assert detector.tone_levels(generate_dtmf("1", 1000)[:n])[[0, 4]] == pytest.approx(
        [20 * math.log10(7000 / 22663)] * 2, abs=0.3
    )
    with pytest.raises(ValueError, match="a block is 102 samples"):
        detector.tone_levels(block[:50])


@pytest.mark.parametrize("digit", list(DIGITS))
def test_detects_every_digit(digit: str) -> None:
    found = detect(framed(generate_dtmf(digit, 100)))
    assert [d for d, _ in found] == [digit]
    assert abs(found[0][1] - 100) <= 13


@pytest.mark.parametrize("digit", list(DIGITS))
def test_detects_every_digit_after_mulaw(digit: str) -> None:
    for amplitude in (7000.0, 1200.0):  # about -10 and -25 dBm0 per tone
        pcm = mulaw_round_trip(framed(generate_dtmf(digit, 60, amplitude=amplitude)))
        found = detect(pcm)
        assert [d for d, _ in found] == [digit], amplitude
        assert abs(found[0][1] - 60) <= 13


def test_detects_at_16_khz() -> None:
    detector = GoertzelDetector(16000)
    assert detector.block_size == 204
    pcm = np.concatenate([np.zeros(1600, np.int16), generate_dtmf("7", 100, 16000)])
    found = detector.feed(np.concatenate([pcm, np.zeros(1600, np.int16)]))
    assert [d for d, _ in found] == ["7"]


@pytest.mark.parametrize("chunk", [1, 37, 160, 1000, 100_000])
def test_detects_a_sequence_with_gaps(chunk: int) -> None:
    gap = np.zeros(60 * RATE // 1000, dtype=np.int16)
    parts = []
    for digit in "123#":
        parts += [generate_dtmf(digit, 80), gap]
    found = detect(framed(*parts), chunk)
    assert "".join(d for d, _ in found) == "123#"
    assert all(abs(ms - 80) <= 13 for _, ms in found)


def test_same_digit_twice_needs_a_gap() -> None:
    gap = np.zeros(50 * RATE // 1000, dtype=np.int16)
    five = generate_dtmf("5", 70)
    assert [d for d, _ in detect(framed(five, gap, five))] == ["5", "5"]
    dropout = np.zeros(10 * RATE // 1000, dtype=np.int16)  # shorter than the end debounce
    assert [d for d, _ in detect(framed(five, dropout, five))] == ["5"]


def test_too_short_a_tone_is_refused() -> None:
    assert detect(framed(generate_dtmf("8", 20))) == []  # under two whole blocks
    assert [d for d, _ in detect(framed(generate_dtmf("8", 40)))] == ["8"]


def test_flush_reports_a_digit_still_sounding() -> None:
    detector = GoertzelDetector()
    assert detector.feed(np.concatenate([SILENCE, generate_dtmf("0", 200)])) == []
    found = detector.flush()
    assert [d for d, _ in found] == ["0"] and abs(found[0][1] - 200) <= 26
    assert detector.flush() == []


def test_rejects_440_hz_and_dial_tone() -> None:
    assert detect(framed(tone(440, 2000))) == []
    dial = tone(350, 2000, 5000) + tone(440, 2000, 5000)  # North American dial tone
    assert detect(framed(dial)) == []


@pytest.mark.parametrize("frequency", ROW_FREQUENCIES + COLUMN_FREQUENCIES + (1000.0,))
def test_rejects_a_single_frequency(frequency: float) -> None:
    assert detect(framed(tone(frequency, 1000, 12000))) == []


def test_rejects_two_tones_of_one_group() -> None:
    assert detect(framed(tone(697, 500) + tone(852, 500))) == []
    assert detect(framed(tone(1209, 500) + tone(1477, 500))) == []


def test_level_threshold() -> None:
    assert [d for d, _ in detect(framed(generate_dtmf("3", 100, amplitude=1000)))] == ["3"]
    assert detect(framed(generate_dtmf("3", 100, amplitude=500))) == []  # -33 dBm0 a tone


def test_twist_limits() -> None:
    """Column (high group) louder: reverse twist, up to 4 dB; row louder: normal, up to 8 dB."""

    def hit(twist_db: float) -> bool:
        return bool(detect(framed(generate_dtmf("6", 100, amplitude=5000, twist_db=twist_db))))

    assert hit(3.0) and not hit(5.5)
    assert hit(-7.0) and not hit(-9.5)


def test_off_frequency_tones() -> None:
    """ITU-T Q.24: a tone 1.5 % off is a digit, one 3.5 % off is not."""

    def pair(digit: str, deviation: float) -> npt.NDArray[np.int16]:
        position = "".join(KEYPAD).index(digit)
        low = ROW_FREQUENCIES[position // 4] * (1 + deviation)
        high = COLUMN_FREQUENCIES[position % 4] * (1 + deviation)
        return tone(low, 100, 5000) + tone(high, 100, 5000)

    for digit in DIGITS:
        for deviation in (-0.015, 0.015):
            assert [d for d, _ in detect(framed(pair(digit, deviation)))] == [digit]
        for deviation in (-0.035, 0.035):
            assert detect(framed(pair(digit, deviation))) == []


def speech_like_noise(seconds: float, rng: np.random.Generator) -> npt.NDArray[np.int16]:
    """Noise with a speech-like long-term spectrum (a one-pole low-pass, peak near 500 Hz)
    switched on and off at a syllabic rate, after ITU-T G.227's conventional signal."""
    n = int(seconds * RATE)
    white = rng.normal(0, 1, n)
    spectrum = np.fft.rfft(white)
    f = np.fft.rfftfreq(n, 1 / RATE)
    shape = (f / 500) / (1 + (f / 500) ** 2)  # rises to 500 Hz, falls 6 dB/octave after
    shaped = np.fft.irfft(spectrum * shape, n)
    syllables = (np.sin(2 * np.pi * 4 * np.arange(n) / RATE) > -0.3).astype(np.float64)
    signal = shaped * syllables
    return (signal / np.abs(signal).max() * 16000).astype(np.int16)


def vowel(f0: float, formants: tuple[float, float], seconds: float) -> npt.NDArray[np.int16]:
    """A voiced vowel: the harmonics of `f0` shaped by two formant resonances."""
    t = np.arange(int(seconds * RATE)) / RATE
    vibrato = f0 * (1 + 0.02 * np.sin(2 * np.pi * 5 * t))
    phase = 2 * np.pi * np.cumsum(vibrato) / RATE
    signal = np.zeros_like(t)
    for k in range(1, int(3800 / f0)):
        gain = sum(1 / (1 + ((k * f0 - formant) / 100) ** 2) for formant in formants)
        signal += (gain + 0.05) / k * np.sin(k * phase + k)
    return (signal / np.abs(signal).max() * 12000).astype(np.int16)


def test_rejects_speech_like_noise() -> None:
    rng = np.random.default_rng(2024)
    assert detect(speech_like_noise(10.0, rng)) == []
    assert detect(rng.normal(0, 4000, 10 * RATE).astype(np.int16)) == []  # white noise


# Peterson and Barney's average formants (F1, F2) of ten American English vowels, in Hz.
VOWELS = {
    "i": (270, 2290),
    "I": (390, 1990),
    "e": (530, 1840),
    "ae": (660, 1720),
    "a": (730, 1090),
    "o": (570, 840),
    "U": (440, 1020),
    "u": (300, 870),
    "V": (640, 1190),
    "3": (490, 1350),
}


@pytest.mark.parametrize("name", list(VOWELS))
def test_rejects_vowels(name: str) -> None:
    for f0 in (95.0, 120.0, 150.0, 210.0, 260.0):
        pcm = vowel(f0, VOWELS[name], 0.5)
        assert detect(pcm) == [], f0
        assert detect(mulaw_round_trip(pcm)) == [], f0


def test_detects_digit_over_speech_like_noise() -> None:
    rng = np.random.default_rng(5)
    pcm = framed(generate_dtmf("9", 100)).astype(np.int32)
    pcm += speech_like_noise(len(pcm) / RATE, rng) // 16  # peaks 24 dB under the speech's
    pcm = pcm.astype(np.int16)
    assert [d for d, _ in detect(pcm)] == ["9"]


def test_detector_argument_errors() -> None:
    with pytest.raises(ValueError, match="sample rate 2000 Hz cannot carry DTMF"):
        GoertzelDetector(2000)
    with pytest.raises(ValueError, match="at least 1"):
        GoertzelDetector(hits_to_start=0)
