"""gateway.media.rtp: RFC 3550 RTP packets (section 5.1), the relay helpers, RFC 5761
demultiplexing, and the reception statistics of appendix A.1 (sequence validation), A.3
(loss) and A.8 (jitter).

Every rejection is asserted by its exact message. Statistics are driven with hand-made
sequence numbers and arrival times; jitter is checked against a plain transcription of A.8.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pytest

from gateway.media import rtp
from gateway.media.rtp import (
    MAX_DROPOUT,
    MAX_MISORDER,
    ReceiverStats,
    RtpPacket,
    SenderStats,
    build,
    is_rtcp,
    parse_header,
    payload_end,
    rewrite_header,
)

# --- published packets ------------------------------------------------------------------------

# pion/rtp's basic packet (packet_test.go, TestBasic): marker, PT 96, extension profile 1 with
# one word, 5 payload octets.
PION_BASIC = bytes.fromhex("90e0698fd9c293da1c642782" "00010001ffffffff" "9836be889e")
# pion/rtp's one-byte header extension packet (RFC 8285 profile 0xBEDE, one word).
PION_BEDE = bytes.fromhex("90e0698fd9c293da1c642782" "bede000150aa0000" "9836be889e")


@pytest.mark.parametrize(
    ("data", "extension"),
    [
        (PION_BASIC, (0x0001, b"\xff\xff\xff\xff")),
        (PION_BEDE, (0xBEDE, b"\x50\xaa\x00\x00")),
    ],
    ids=["pion-basic", "pion-bede"],
)
def test_published_packets(data: bytes, extension: tuple[int, bytes]) -> None:
    assert parse_header(data) == (96, 27023, 3653407706, 476325762, True, 20)
    assert payload_end(data) == len(data)
    packet = RtpPacket.parse(data)
    assert packet == RtpPacket(
        payload_type=96,
        sequence=27023,
        timestamp=3653407706,
        ssrc=476325762,
        marker=True,
        extension=extension,
        payload=b"\x98\x36\xbe\x88\x9e",
    )
    assert bytes(packet) == data


# --- round trip -------------------------------------------------------------------------------

ROUND_TRIP = [
    RtpPacket(0, 0, 0, 0),
    RtpPacket(0, 1, 160, 0x11223344, payload=bytes(160)),
    RtpPacket(8, 65535, 0xFFFFFFFF, 0xFFFFFFFF, marker=True, payload=b"\xd5" * 160),
    RtpPacket(127, 42, 1, 2, csrc=(7,), payload=b"x"),
    RtpPacket(111, 42, 1, 2, csrc=tuple(range(1, 16)), payload=b"opus"),
    RtpPacket(96, 1, 2, 3, extension=(0xBEDE, b""), payload=b"abc"),
    RtpPacket(96, 1, 2, 3, extension=(0x1000, bytes(range(8))), payload=b"abc"),
    RtpPacket(0, 5, 6, 7, payload=b"abc", padding=1),
    RtpPacket(0, 5, 6, 7, payload=b"abc", padding=4),
    RtpPacket(0, 5, 6, 7, payload=b"", padding=255),
    RtpPacket(
        101,
        9,
        10,
        11,
        marker=True,
        csrc=(0xDEADBEEF, 1),
        extension=(0xBEDE, b"\x10\xaa\x20\xbb"),
        payload=b"\x05\x0a\x00\xa0",
        padding=3,
    ),
]


@pytest.mark.parametrize("packet", ROUND_TRIP)
def test_round_trip(packet: RtpPacket) -> None:
    data = bytes(packet)
    assert RtpPacket.parse(data) == packet
    pt, seq, ts, ssrc, marker, offset = parse_header(data)
    assert (pt, seq, ts, ssrc, marker) == (
        packet.payload_type,
        packet.sequence,
        packet.timestamp,
        packet.ssrc,
        packet.marker,
    )
    assert data[offset : payload_end(data)] == packet.payload
    assert len(data) == offset + len(packet.payload) + packet.padding


@pytest.mark.parametrize("packet", ROUND_TRIP)
def test_parse_accepts_bytearray_and_memoryview(packet: RtpPacket) -> None:
    data = bytes(packet)
    assert RtpPacket.parse(bytearray(data)) == packet
    assert RtpPacket.parse(memoryview(data)) == packet
    assert parse_header(memoryview(data)) == parse_header(data)


def test_padding_is_sent_as_zeros_with_the_count_last() -> None:
    data = bytes(RtpPacket(0, 1, 2, 3, payload=b"ab", padding=4))
    assert data[0] == 0xA0
    assert data[12:] == b"ab\x00\x00\x00\x04"
    # Padding octets other than the last are ignored on receive.
    assert RtpPacket.parse(data[:-4] + b"\xff\xff\xff\x04").payload == b"ab"


# --- rejections -------------------------------------------------------------------------------

HEADER = bytes.fromhex("80000001000000a0000004d2")  # V=2, PT 0, seq 1, ts 160, SSRC 1234
TRUNCATED_EXTENSION_VALUE = "RTP packet has truncated extension value"
PADDING_EXCEEDS = "RTP packet padding length exceeds the payload"

ERRORS = [
    (b"", "RTP packet length is less than 12 bytes"),
    (HEADER[:11], "RTP packet length is less than 12 bytes"),
    (b"\x00" + HEADER[1:], "RTP packet has invalid version"),
    (b"\x40" + HEADER[1:], "RTP packet has invalid version"),
    (b"\xc0" + HEADER[1:], "RTP packet has invalid version"),
    (b"\x81" + HEADER[1:], "RTP packet has truncated CSRC"),
    (b"\x81" + HEADER[1:] + b"\x00\x00\x00", "RTP packet has truncated CSRC"),
    (b"\x8f" + HEADER[1:] + bytes(56), "RTP packet has truncated CSRC"),
    (b"\x90" + HEADER[1:], "RTP packet has truncated extension profile"),
    (b"\x90" + HEADER[1:] + b"\xbe\xde\x00", "RTP packet has truncated extension profile"),
    (b"\x91" + HEADER[1:] + bytes(4) + b"\xbe\xde", "RTP packet has truncated extension profile"),
    (b"\x90" + HEADER[1:] + b"\xbe\xde\x00\x01", "RTP packet has truncated extension value"),
    (b"\x90" + HEADER[1:] + b"\xbe\xde\x00\x02" + bytes(7), TRUNCATED_EXTENSION_VALUE),
    (b"\xa0" + HEADER[1:] + b"ab\x00", "RTP packet has zero padding length"),
    (b"\xa0" + HEADER[1:] + b"ab\x04", "RTP packet padding length exceeds the payload"),
    (b"\xa0" + HEADER[1:-1] + b"\x01", "RTP packet padding length exceeds the payload"),
    (b"\xb0" + HEADER[1:] + b"\x00\x00\x00\x00\x02", PADDING_EXCEEDS),
]


@pytest.mark.parametrize(("data", "message"), ERRORS, ids=[m for _, m in ERRORS])
def test_rejections(data: bytes, message: str) -> None:
    for parse in (parse_header, RtpPacket.parse):
        with pytest.raises(ValueError) as caught:
            parse(data)
        assert str(caught.value) == message


def test_padding_may_fill_the_whole_payload() -> None:
    data = b"\xa0" + HEADER[1:] + b"\x00\x00\x03"
    assert parse_header(data)[5] == 12
    assert payload_end(data) == 12


def test_every_prefix_parses_or_raises_value_error() -> None:
    """A packet cut at any octet gives a result or a ValueError, never another exception."""
    data = bytes(ROUND_TRIP[-1])
    for end in range(len(data) + 1):
        try:
            RtpPacket.parse(data[:end])
        except ValueError:
            continue
        assert end >= 12


INVALID_FIELDS = [
    ({"payload_type": 128}, "RTP payload type must be 0..127"),
    ({"payload_type": -1}, "RTP payload type must be 0..127"),
    ({"sequence": 65536}, "RTP sequence number must be 0..65535"),
    ({"timestamp": 1 << 32}, "RTP timestamp must be 0..2**32-1"),
    ({"ssrc": -1}, "RTP SSRC must be 0..2**32-1"),
    ({"csrc": tuple(range(16))}, "RTP packet has more than 15 CSRC"),
    ({"csrc": (1 << 32,)}, "RTP CSRC must be 0..2**32-1"),
    ({"extension": (1 << 16, b"")}, "RTP extension profile must be 0..65535"),
    ({"extension": (1, b"abc")}, "RTP extension length is not a multiple of 4 bytes"),
    ({"extension": (1, bytes(0x40000))}, "RTP extension is longer than 65535 words"),
    ({"padding": 256}, "RTP padding must be 0..255 bytes"),
]


@pytest.mark.parametrize(("fields", "message"), INVALID_FIELDS, ids=[m for _, m in INVALID_FIELDS])
def test_invalid_fields(fields: dict[str, object], message: str) -> None:
    values: dict[str, object] = {"payload_type": 0, "sequence": 0, "timestamp": 0, "ssrc": 0}
    values.update(fields)
    with pytest.raises(ValueError) as caught:
        RtpPacket(**values)  # type: ignore[arg-type]
    assert str(caught.value) == message


# --- RFC 5761 demultiplexing ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", False),
        (b"\x80", False),
        (b"\x80\x00", False),  # RTP PT 0
        (b"\x80\x60", False),  # RTP PT 96
        (b"\x80\xe0", False),  # RTP PT 96 with marker: 224
        (b"\x80\x7f", False),
        (b"\x80\xbf", False),  # 191: RTP PT 63 with marker
        (b"\x80\xc0", True),  # 192: first RTCP value
        (b"\x80\xc8", True),  # SR (and RTP PT 72 with marker: why RFC 5761 forbids 64..95)
        (b"\x81\xc9\x00\x07", True),  # RR
        (b"\x81\xcd", True),  # RTPFB
        (b"\x81\xce", True),  # PSFB
        (b"\x80\xcf", True),  # XR
        (b"\x80\xdf", True),  # 223: last RTCP value
        (b"\x80\xe0\x00\x01", False),  # 224
    ],
)
def test_is_rtcp(data: bytes, expected: bool) -> None:
    assert is_rtcp(data) is expected
    assert is_rtcp(bytearray(data)) is expected


# --- relay helpers ----------------------------------------------------------------------------


@pytest.mark.parametrize("packet", ROUND_TRIP)
def test_rewrite_header_keeps_everything_else(packet: RtpPacket) -> None:
    data = bytes(packet)
    for source in (data, bytearray(data)):
        out = rewrite_header(source, 9, 4242, 123456, 0xCAFEBABE)
        assert type(out) is bytes
        assert RtpPacket.parse(out) == RtpPacket(
            payload_type=9,
            sequence=4242,
            timestamp=123456,
            ssrc=0xCAFEBABE,
            marker=packet.marker,
            csrc=packet.csrc,
            extension=packet.extension,
            payload=packet.payload,
            padding=packet.padding,
        )


def test_rewrite_header_wraps_sequence_and_timestamp() -> None:
    out = rewrite_header(bytes(ROUND_TRIP[2]), 0, 65536 + 5, (1 << 32) + 7, 1)
    assert parse_header(out)[:5] == (0, 5, 7, 1, True)


def test_rewrite_header_rejects_a_short_datagram() -> None:
    with pytest.raises(ValueError) as caught:
        rewrite_header(b"\x80" * 11, 0, 0, 0, 0)
    assert str(caught.value) == "RTP packet length is less than 12 bytes"


@pytest.mark.parametrize("marker", [False, True])
def test_build_matches_the_dataclass(marker: bool) -> None:
    payload = bytes(range(160))
    expected = bytes(RtpPacket(8, 7, 1600, 99, marker=marker, payload=payload))
    assert build(8, 7, 1600, 99, marker, payload) == expected
    assert build(8, 7, 1600, 99, marker, memoryview(payload)) == expected
    assert build(8, 65536 + 7, (1 << 32) + 1600, 99, marker, payload) == expected


# --- reception statistics (appendix A.1, A.3) -------------------------------------------------


def feed(stats: ReceiverStats, seqs: Sequence[int], start: int = 0) -> list[bool]:
    """Packets 20 ms apart at 8 kHz with timestamps that follow the sequence numbers."""
    return [
        stats.update(seq, (seq * 160) & 0xFFFFFFFF, (start + i) * 0.02, 8000)
        for i, seq in enumerate(seqs)
    ]


def counters(stats: ReceiverStats) -> tuple[int, int, int, int]:
    return stats.received, stats.expected, stats.lost, stats.extended_max_seq


def test_fresh_stats_report_nothing() -> None:
    stats = ReceiverStats()
    assert (stats.received, stats.expected, stats.lost) == (0, 0, 0)
    assert stats.jitter == 0.0
    assert stats.jitter_ms == 0.0
    assert stats.report_fraction() == 0


def test_probation_discards_the_first_packet() -> None:
    stats = ReceiverStats()
    assert feed(stats, [1000]) == [False]
    assert (stats.received, stats.expected) == (0, 0)
    assert feed(stats, [1001], start=1) == [True]
    assert counters(stats) == (1, 1, 0, 1001)


def test_probation_restarts_on_a_gap() -> None:
    stats = ReceiverStats()
    assert feed(stats, [10, 20, 21, 22]) == [False, False, True, True]
    assert counters(stats) == (2, 2, 0, 22)


def test_probation_across_the_wrap() -> None:
    stats = ReceiverStats()
    assert feed(stats, [65535, 0, 1]) == [False, True, True]
    assert counters(stats) == (2, 2, 0, 1)


def test_sequence_wrap_counts_a_cycle() -> None:
    stats = ReceiverStats()
    seqs = [(65530 + i) & 0xFFFF for i in range(20)]  # 65530 .. 65535, 0 .. 13
    assert all(feed(stats, seqs)[1:])
    assert counters(stats) == (19, 19, 0, 65536 + 13)


def test_two_wraps() -> None:
    stats = ReceiverStats()
    seqs = [(65000 + 1000 * i) & 0xFFFF for i in range(140)]  # gaps of 999, twice round
    assert feed(stats, [seqs[0], seqs[0] + 1]) == [False, True]
    assert all(feed(stats, seqs[1:], start=2))
    assert stats.extended_max_seq == 65000 + 1000 * 139
    assert stats.expected == 1000 * 139
    assert stats.lost == stats.expected - stats.received


def test_reordering_is_counted_but_does_not_move_the_maximum() -> None:
    stats = ReceiverStats()
    assert feed(stats, [1, 2, 3, 5, 4, 6]) == [False, True, True, True, True, True]
    assert counters(stats) == (5, 5, 0, 6)


def test_reordering_across_the_wrap() -> None:
    stats = ReceiverStats()
    assert all(feed(stats, [65533, 65534, 0, 65535, 1])[1:])
    assert counters(stats) == (4, 4, 0, 65536 + 1)


def test_duplicates_make_loss_negative() -> None:
    stats = ReceiverStats()
    feed(stats, [1, 2, 3, 3, 4, 4])
    assert counters(stats) == (5, 3, -2, 4)


@pytest.mark.parametrize(
    ("seqs", "received", "expected"),
    [
        ([1, 2, 3, 4, 5], 4, 4),
        ([1, 2, 4, 5], 3, 4),
        ([1, 2, 5, 9, 10], 4, 9),
        ([1, 2, 3, 2999 + 3], 3, 3001),  # a gap just under MAX_DROPOUT is loss
    ],
)
def test_loss_is_expected_minus_received(seqs: list[int], received: int, expected: int) -> None:
    stats = ReceiverStats()
    feed(stats, seqs)
    assert (stats.received, stats.expected, stats.lost) == (received, expected, expected - received)


def test_report_fraction_per_interval() -> None:
    stats = ReceiverStats()
    feed(stats, [0, 1, 2, 3, 4])  # probation, then 1..4
    assert stats.report_fraction() == 0
    feed(stats, [6, 8, 10, 14], start=5)  # expected 10 (5..14), received 4: lost 6
    assert stats.report_fraction() == (6 << 8) // 10
    assert stats.report_fraction() == 0  # nothing new
    feed(stats, [15, 16, 16, 16, 17], start=9)  # duplicates outnumber the losses
    assert stats.report_fraction() == 0
    feed(stats, [100], start=14)  # 82 expected, 1 received
    assert stats.report_fraction() == (81 << 8) // 82
    assert stats.lost == (100 - 1 + 1) - stats.received


def test_big_jump_needs_two_sequential_packets() -> None:
    stats = ReceiverStats()
    feed(stats, range(1000, 1011))
    before = counters(stats)
    jump = 1010 + MAX_DROPOUT
    assert feed(stats, [jump], start=11) == [False]
    assert counters(stats) == before
    # The stream carries on: the stray packet is forgotten.
    assert feed(stats, [1011], start=12) == [True]
    assert counters(stats) == (before[0] + 1, before[1] + 1, 0, 1011)
    # A sender restart: two in a row beyond MAX_DROPOUT resynchronize, counters start over.
    restart = 40000
    assert feed(stats, [restart, restart + 1], start=13) == [False, True]
    assert counters(stats) == (1, 1, 0, restart + 1)
    assert feed(stats, [restart + 2], start=15) == [True]
    assert counters(stats) == (2, 2, 0, restart + 2)


def test_late_packets_up_to_max_misorder() -> None:
    stats = ReceiverStats()
    feed(stats, range(1000, 1201))
    assert feed(stats, [1200 - (MAX_MISORDER - 1)], start=201) == [True]
    assert feed(stats, [1200 - MAX_MISORDER], start=202) == [False]
    assert stats.extended_max_seq == 1200


def test_reset_on_ssrc_change() -> None:
    stats = ReceiverStats()
    feed(stats, [5, 6, 7, 9])
    stats.reset(30000)
    assert (stats.received, stats.expected, stats.lost, stats.jitter) == (0, 0, 0, 0.0)
    assert feed(stats, [30000, 30001], start=4) == [False, True]
    assert counters(stats) == (1, 1, 0, 30001)


# --- jitter (appendix A.8) --------------------------------------------------------------------


def reference_jitter(timestamps: Sequence[int], arrivals: Sequence[float], rate: int) -> float:
    """A.8 as written: transit = arrival (in timestamp units) - timestamp; J += (|D| - J)/16."""
    jitter = 0.0
    transit = [arrival * rate - ts for ts, arrival in zip(timestamps, arrivals)]
    for previous, current in itertools.pairwise(transit):
        jitter += (abs(current - previous) - jitter) / 16
    return jitter


def run_stream(
    stats: ReceiverStats, arrivals: Sequence[float], rate: int = 8000, first_ts: int = 0
) -> list[int]:
    timestamps = [(first_ts + i * rate // 50) & 0xFFFFFFFF for i in range(len(arrivals))]
    for i, (ts, arrival) in enumerate(zip(timestamps, arrivals)):
        stats.update((100 + i) & 0xFFFF, ts, arrival, rate)
    return timestamps


def test_jitter_is_zero_for_constant_transit() -> None:
    stats = ReceiverStats()
    run_stream(stats, [1000.0 + 0.073 + i * 0.02 for i in range(500)])
    assert stats.jitter == pytest.approx(0.0, abs=1e-6)
    assert stats.jitter_ms == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("rate", [8000, 16000, 48000])
def test_jitter_for_alternating_delays_matches_the_reference(rate: int) -> None:
    arrivals = [i * 0.02 + (0.010 if i % 2 else 0.0) for i in range(400)]
    stats = ReceiverStats()
    timestamps = run_stream(stats, arrivals, rate)
    # The first packet is on probation; jitter starts from the first accepted one.
    assert stats.jitter == pytest.approx(
        reference_jitter(timestamps[1:], arrivals[1:], rate), rel=1e-9
    )
    # |D| is 10 ms every time, so J converges to 10 ms.
    assert stats.jitter == pytest.approx(rate / 100, rel=1e-6)
    assert stats.jitter_ms == pytest.approx(10.0, rel=1e-6)


def test_jitter_for_irregular_delays_matches_the_reference() -> None:
    delays = [0.0, 0.013, 0.002, 0.040, 0.007, 0.007, 0.031, 0.0, 0.019, 0.004] * 30
    arrivals = [i * 0.02 + delay for i, delay in enumerate(delays)]
    stats = ReceiverStats()
    timestamps = run_stream(stats, arrivals)
    assert stats.jitter == pytest.approx(
        reference_jitter(timestamps[1:], arrivals[1:], 8000), rel=1e-9
    )


def test_jitter_ignores_timestamp_wrap() -> None:
    stats = ReceiverStats()
    run_stream(stats, [i * 0.02 for i in range(100)], first_ts=(1 << 32) - 160 * 50)
    assert stats.jitter == pytest.approx(0.0, abs=1e-6)


# --- sender statistics ------------------------------------------------------------------------


def test_sender_stats() -> None:
    stats = SenderStats()
    for i in range(50):
        stats.update(1000 + 160 * i, 160, 100.0 + 0.02 * i, 8000)
    assert (stats.packets, stats.octets, stats.last_timestamp) == (50, 8000, 1000 + 160 * 49)
    assert stats.last_time == pytest.approx(100.98)
    # An SR 0.5 s after the last packet carries the timestamp of that instant.
    assert stats.timestamp_at(101.48) == 1000 + 160 * 49 + 4000
    stats.update(0xFFFFFFF0, 160, 200.0, 8000)
    assert stats.timestamp_at(200.01) == 80 - 16


def test_module_exports() -> None:
    for name in rtp.__all__:
        assert hasattr(rtp, name)
