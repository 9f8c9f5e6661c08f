"""gateway.media.rtcp: RFC 3550 section 6 compound packets, NTP time, RTT and report building.

Two compounds captured from real endpoints are parsed field by field and must serialize back
to the same octets; every rejection is asserted by its exact message; every prefix of a
capture either parses to the packets it still holds whole or raises ``ValueError``.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime

import pytest

from gateway.media import rtcp
from gateway.media.rtcp import (
    CNAME,
    NTP_UNIX_OFFSET,
    Bye,
    ReceiverReport,
    ReportBlock,
    RtcpPacket,
    SenderReport,
    SourceDescription,
    UnknownRtcp,
    build_report,
    ntp_from_unix,
    ntp_middle32,
    parse_compound,
    round_trip_time,
    serialize_compound,
    unix_from_ntp,
)
from gateway.media.rtp import ReceiverStats, SenderStats

# --- captures ---------------------------------------------------------------------------------
# Both published as "from the wild" test data in openvocs' ov_rtcp tests (Apache-2.0).

# Linphone Desktop 4.4.10: SR without report blocks (72 PCMU packets of 160 octets), then
# SDES with CNAME and TOOL; the SDES chunk ends with END plus two null octets.
LINPHONE = bytes.fromhex(
    "80c800065ad5b67de7a1a2a0d821c044574968f60000004800002d0081ca0020"
    "5ad5b67d01187369703a34313031403139322e3136382e3130302e323035065d"
    "4c696e70686f6e65204465736b746f702f342e342e313020286d757370656c29"
    "2044656269616e20474e552f4c696e757820626f6f6b776f726d2f7369642c20"
    "517420352e31352e38204c696e70686f6e65436f72652f352e312e3635000000"
)
LINPHONE_TOOL = (
    b"Linphone Desktop/4.4.10 (muspel) Debian GNU/Linux bookworm/sid, Qt 5.15.8 "
    b"LinphoneCore/5.1.65"
)

# A WebRTC endpoint: SR with one report block, then SDES with a 36-octet UUID CNAME (END plus
# one null octet).
WEBRTC = bytes.fromhex(
    "81c8000c639eda7be840075b1cc56480000e7ed0000003de0001b052075bcd15"
    "0000000000001c280000002e000000000000000081ca000b639eda7b01243465"
    "3435333933332d653833622d346535642d623661342d34653336323631643532"
    "39350000"
)


def test_linphone_capture() -> None:
    assert len(LINPHONE) == 28 + 132
    packets = parse_compound(LINPHONE)
    assert packets == [
        SenderReport(
            ssrc=0x5AD5B67D,
            ntp=0xE7A1A2A0D821C044,
            rtp_ts=0x574968F6,
            packets=72,
            octets=72 * 160,
        ),
        SourceDescription(
            ((0x5AD5B67D, ((CNAME, b"sip:4101@192.168.100.205"), (6, LINPHONE_TOOL))),)
        ),
    ]
    sdes = packets[1]
    assert isinstance(sdes, SourceDescription)
    assert sdes.cname(0x5AD5B67D) == b"sip:4101@192.168.100.205"
    assert sdes.cname(1) is None
    assert serialize_compound(packets) == LINPHONE
    # The SR's NTP time is the capture's date.
    when = datetime.fromtimestamp(unix_from_ntp(0xE7A1A2A0D821C044), UTC)
    assert when.date() == date(2023, 2, 23)


def test_webrtc_capture() -> None:
    assert len(WEBRTC) == 52 + 48
    packets = parse_compound(WEBRTC)
    assert packets == [
        SenderReport(
            ssrc=0x639EDA7B,
            ntp=0xE840075B1CC56480,
            rtp_ts=0x000E7ED0,
            packets=990,
            octets=110674,
            reports=(ReportBlock(0x075BCD15, 0, 0, 7208, 46, 0, 0),),
        ),
        SourceDescription(((0x639EDA7B, ((CNAME, b"4e453933-e83b-4e5d-b6a4-4e36261d5295"),)),)),
    ]
    assert serialize_compound(packets) == WEBRTC
    assert [bytes(packet) for packet in packets] == [WEBRTC[:52], WEBRTC[52:]]
    assert SenderReport.parse(WEBRTC[:52]) == packets[0]
    assert SourceDescription.parse(WEBRTC[52:]) == packets[1]


@pytest.mark.parametrize("capture", [LINPHONE, WEBRTC], ids=["linphone", "webrtc"])
def test_every_prefix_parses_whole_packets_or_raises(capture: bytes) -> None:
    whole = parse_compound(capture)
    boundaries = {0}
    for packet in whole:
        boundaries.add(max(boundaries) + len(bytes(packet)))
    for end in range(len(capture)):
        if end in boundaries and end:
            assert parse_compound(capture[:end]) == whole[: sorted(boundaries).index(end)]
        else:
            with pytest.raises(ValueError):
                parse_compound(capture[:end])


def test_trailing_bytes_are_rejected() -> None:
    for extra in (b"\x80", b"\x80\xc9\x00"):
        with pytest.raises(ValueError) as caught:
            parse_compound(WEBRTC + extra)
        assert str(caught.value) == "RTCP packet length is less than 4 bytes"


# --- round trips ------------------------------------------------------------------------------

BLOCK_A = ReportBlock(0x11111111, 25, 1234, 0x0001_0203, 80, 0xAABBCCDD, 65536 * 3)
BLOCK_B = ReportBlock(0x22222222, 0, -2, 70000, 0, 0, 0)

RR_TWO_BLOCKS = bytes.fromhex(
    "82c9000d" "33333333"
    "11111111" "190004d2" "00010203" "00000050" "aabbccdd" "00030000"
    "22222222" "00fffffe" "00011170" "00000000" "00000000" "00000000"
)


def test_rr_with_two_blocks() -> None:
    packet = ReceiverReport(0x33333333, (BLOCK_A, BLOCK_B))
    assert bytes(packet) == RR_TWO_BLOCKS
    assert parse_compound(RR_TWO_BLOCKS) == [packet]
    assert ReceiverReport.parse(RR_TWO_BLOCKS) == packet
    assert packet.reports[1].cumulative_lost == -2


@pytest.mark.parametrize(
    ("lost", "wire"),
    [
        (0, "000000"),
        (1, "000001"),
        (-1, "ffffff"),
        ((1 << 23) - 1, "7fffff"),
        (-(1 << 23), "800000"),
    ],
)
def test_cumulative_lost_is_signed_24_bit(lost: int, wire: str) -> None:
    block = ReportBlock(1, 255, lost, 0, 0, 0, 0)
    data = bytes(block)
    assert data[4:8].hex() == "ff" + wire
    assert ReportBlock.parse(data) == block


BYES = [
    (Bye((0x01020304,), b"bye"), "81cb0002" "01020304" "03627965"),
    (Bye((0x01020304,), b"gone"), "81cb0003" "01020304" "04676f6e" "65000000"),
    (Bye((1, 2)), "82cb0002" "00000001" "00000002"),
    (Bye(), "80cb0000"),
]


@pytest.mark.parametrize(("packet", "wire"), BYES)
def test_bye(packet: Bye, wire: str) -> None:
    data = bytes.fromhex(wire)
    assert bytes(packet) == data
    assert parse_compound(data) == [packet]
    assert Bye.parse(data) == packet


SDESES = [
    SourceDescription(),
    SourceDescription(((1, ()),)),
    SourceDescription(((1, ((CNAME, b"ab"),)),)),  # items end on a boundary: 4 nulls
    SourceDescription(((1, ((CNAME, b"a"),)),)),
    SourceDescription(((1, ((CNAME, b""), (2, b"Alice"), (8, b"\x03priv"))),)),
    SourceDescription(((1, ((CNAME, b"x" * 255),)), (2, ((CNAME, b"y"),)), (3, ()))),
]


@pytest.mark.parametrize("packet", SDESES)
def test_sdes_round_trip(packet: SourceDescription) -> None:
    data = bytes(packet)
    assert len(data) % 4 == 0
    assert parse_compound(data) == [packet]


def test_sdes_chunk_padding_on_the_wire() -> None:
    assert bytes(SDESES[1]).hex() == "81ca0002" "00000001" "00000000"
    assert bytes(SDESES[2]).hex() == "81ca0003" "00000001" "01026162" "00000000"
    assert bytes(SDESES[3]).hex() == "81ca0002" "00000001" "01016100"


SR_FULL = SenderReport(
    ssrc=0xDEADBEEF,
    ntp=0xFFFFFFFFFFFFFFFF,
    rtp_ts=0xFFFFFFFF,
    packets=0,
    octets=0xFFFFFFFF,
    reports=tuple(replace(BLOCK_A, ssrc=i) for i in range(31)),
    extension=b"prof",
)


@pytest.mark.parametrize(
    "packet",
    [
        SR_FULL,
        replace(SR_FULL, reports=(), extension=b""),
        ReceiverReport(5),
        ReceiverReport(5, (BLOCK_B,), b"\x00" * 8),
    ],
    ids=["sr-31-blocks-extension", "sr-bare", "rr-empty", "rr-extension"],
)
def test_report_round_trip(packet: RtcpPacket) -> None:
    assert parse_compound(bytes(packet)) == [packet]


# PSFB PLI (RFC 4585 section 6.3.1), RTPFB generic NACK (6.2.1), APP (RFC 3550 section 6.7).
PLI = bytes.fromhex("81ce0002" "00000001" "00000002")
NACK = bytes.fromhex("81cd0003" "00000001" "00000002" "00050003")
APP = bytes.fromhex("82cc0003" "00000001" "6e616d65" "64617461")


def test_unknown_types_pass_through() -> None:
    data = RR_TWO_BLOCKS + PLI + NACK + bytes(SDESES[2]) + APP
    packets = parse_compound(data)
    assert [type(packet).__name__ for packet in packets] == [
        "ReceiverReport",
        "UnknownRtcp",
        "UnknownRtcp",
        "SourceDescription",
        "UnknownRtcp",
    ]
    assert packets[1] == UnknownRtcp(206, PLI)
    assert packets[2] == UnknownRtcp(205, NACK)
    assert packets[4] == UnknownRtcp(204, APP)
    assert (UnknownRtcp(206, PLI).count, UnknownRtcp(206, PLI).body) == (1, PLI[4:])
    assert (UnknownRtcp(204, APP).count, UnknownRtcp(204, APP).body) == (2, APP[4:])
    assert serialize_compound(packets) == data


def test_padding_is_stripped_from_known_types() -> None:
    # RR with no blocks, P set, 4 octets of padding (the last one counts them).
    data = RR_TWO_BLOCKS + bytes.fromhex("a0c90002" "00000007" "00000004")
    assert parse_compound(data) == [ReceiverReport.parse(RR_TWO_BLOCKS), ReceiverReport(7)]
    # SDES whose padding follows the chunk's own null octets.
    sdes = bytes.fromhex("a1ca0003" "00000001" "00000000" "00000004")
    assert parse_compound(sdes) == [SourceDescription(((1, ()),))]


# --- rejections -------------------------------------------------------------------------------

ERRORS = [
    ("", "RTCP packet length is less than 4 bytes"),
    ("80c900", "RTCP packet length is less than 4 bytes"),
    ("40c90001" "00000001", "RTCP packet has invalid version"),
    ("c0c90001" "00000001", "RTCP packet has invalid version"),
    ("80c90001" "000000", "RTCP packet length exceeds the datagram"),
    ("80c90002" "00000001", "RTCP packet length exceeds the datagram"),
    ("a0c90001" "00000000", "RTCP packet has zero padding length"),
    ("a0c90001" "00000005", "RTCP packet padding length exceeds the packet"),
    ("80c80005" + "00" * 20, "RTCP SR is truncated"),
    ("81c80006" + "00" * 24, "RTCP SR has truncated report blocks"),
    ("a0c80007" + "00" * 24 + "00000003", "RTCP SR profile extension is not a multiple of 4 bytes"),
    ("80c90000", "RTCP RR is truncated"),
    ("81c90001" "00000001", "RTCP RR has truncated report blocks"),
    ("82c90007" + "00" * 28, "RTCP RR has truncated report blocks"),
    ("a0c90002" "00000001" "00000002", "RTCP RR profile extension is not a multiple of 4 bytes"),
    ("81ca0000", "RTCP SDES has truncated chunk SSRC"),
    ("82ca0002" "00000001" "00000000", "RTCP SDES has truncated chunk SSRC"),
    ("81ca0001" "00000001", "RTCP SDES chunk has no END item"),
    ("81ca0002" "00000001" "01026162", "RTCP SDES chunk has no END item"),
    ("a1ca0002" "00000001" "01000003", "RTCP SDES item is truncated"),
    ("81ca0002" "00000001" "01056162", "RTCP SDES item value is truncated"),
    ("a1ca0002" "00000001" "00000003", "RTCP SDES chunk padding is truncated"),
    ("a1ca0002" "00000001" "01000001", "RTCP SDES chunk padding is truncated"),
    ("81ca0003" "00000001" "00000000" "00000000", "RTCP SDES has data after its chunks"),
    ("80ca0001" "00000000", "RTCP SDES has data after its chunks"),
    ("81cb0000", "RTCP BYE has truncated source list"),
    ("83cb0002" "00000001" "00000002", "RTCP BYE has truncated source list"),
    ("81cb0002" "00000001" "05616263", "RTCP BYE reason is truncated"),
]


@pytest.mark.parametrize(("wire", "message"), ERRORS, ids=[f"{m} {w[:8]}" for w, m in ERRORS])
def test_rejections(wire: str, message: str) -> None:
    data = bytes.fromhex(wire)
    with pytest.raises(ValueError) as caught:
        parse_compound(data)
    assert str(caught.value) == message
    if data:
        # The same packet after a valid one: the whole compound is refused.
        with pytest.raises(ValueError) as caught:
            parse_compound(RR_TWO_BLOCKS + data)
        assert str(caught.value) == message


@pytest.mark.parametrize(
    ("parse", "data", "message"),
    [
        (SenderReport.parse, RR_TWO_BLOCKS, "RTCP packet is not SR"),
        (ReceiverReport.parse, WEBRTC[:52], "RTCP packet is not RR"),
        (SourceDescription.parse, PLI, "RTCP packet is not SDES"),
        (Bye.parse, PLI, "RTCP packet is not BYE"),
        (SenderReport.parse, WEBRTC, "RTCP packet has data after its length"),
        (ReportBlock.parse, bytes(23), "RTCP report block is truncated"),
    ],
)
def test_single_packet_parsers(parse: object, data: bytes, message: str) -> None:
    assert callable(parse)
    with pytest.raises(ValueError) as caught:
        parse(data)
    assert str(caught.value) == message


INVALID = [
    (lambda: ReportBlock(-1, 0, 0, 0, 0, 0, 0), "RTCP report block SSRC must be 0..2**32-1"),
    (lambda: ReportBlock(0, 256, 0, 0, 0, 0, 0), "RTCP report block fraction lost must be 0..255"),
    (
        lambda: ReportBlock(0, 0, 1 << 23, 0, 0, 0, 0),
        "RTCP report block cumulative lost must fit in signed 24 bits",
    ),
    (
        lambda: ReportBlock(0, 0, 0, 1 << 32, 0, 0, 0),
        "RTCP report block highest sequence number must be 0..2**32-1",
    ),
    (lambda: ReportBlock(0, 0, 0, 0, -1, 0, 0), "RTCP report block jitter must be 0..2**32-1"),
    (lambda: ReportBlock(0, 0, 0, 0, 0, 1 << 32, 0), "RTCP report block LSR must be 0..2**32-1"),
    (lambda: ReportBlock(0, 0, 0, 0, 0, 0, 1 << 32), "RTCP report block DLSR must be 0..2**32-1"),
    (lambda: SenderReport(0, 1 << 64, 0, 0, 0), "RTCP SR NTP timestamp must be 0..2**64-1"),
    (lambda: SenderReport(0, 0, 1 << 32, 0, 0), "RTCP SR RTP timestamp must be 0..2**32-1"),
    (lambda: SenderReport(0, 0, 0, -1, 0), "RTCP SR packet count must be 0..2**32-1"),
    (lambda: SenderReport(0, 0, 0, 0, 1 << 32), "RTCP SR octet count must be 0..2**32-1"),
    (lambda: SenderReport(0, 0, 0, 0, 0, (BLOCK_B,) * 32), "RTCP SR has more than 31 entries"),
    (
        lambda: SenderReport(0, 0, 0, 0, 0, (), b"ab"),
        "RTCP SR profile extension is not a multiple of 4 bytes",
    ),
    (lambda: ReceiverReport(1 << 32), "RTCP RR SSRC must be 0..2**32-1"),
    (lambda: ReceiverReport(0, (BLOCK_B,) * 32), "RTCP RR has more than 31 entries"),
    (lambda: SourceDescription(((0, ()),) * 32), "RTCP SDES has more than 31 entries"),
    (lambda: SourceDescription(((-1, ()),)), "RTCP SDES chunk SSRC must be 0..2**32-1"),
    (lambda: SourceDescription(((0, ((0, b""),)),)), "RTCP SDES item type must be 1..255"),
    (
        lambda: SourceDescription(((0, ((1, bytes(256)),)),)),
        "RTCP SDES item is longer than 255 bytes",
    ),
    (lambda: Bye(tuple(range(32))), "RTCP BYE has more than 31 entries"),
    (lambda: Bye((1 << 32,)), "RTCP BYE SSRC must be 0..2**32-1"),
    (lambda: Bye((), bytes(256)), "RTCP BYE reason is longer than 255 bytes"),
    (
        lambda: UnknownRtcp(204, b"\x80\xcc\x00"),
        "RTCP packet length is not a positive multiple of 4 bytes",
    ),
    (lambda: UnknownRtcp(205, PLI), "RTCP packet type does not match its header"),
    (lambda: UnknownRtcp(206, PLI + bytes(4)), "RTCP packet length field does not match its data"),
]


@pytest.mark.parametrize(("make", "message"), INVALID, ids=[m for _, m in INVALID])
def test_invalid_fields(make: object, message: str) -> None:
    assert callable(make)
    with pytest.raises(ValueError) as caught:
        make()
    assert str(caught.value) == message


# --- NTP and RTT ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("unix", "ntp"),
    [
        (0.0, NTP_UNIX_OFFSET << 32),
        (1.5, ((NTP_UNIX_OFFSET + 1) << 32) | 0x80000000),
        (1700000000.25, ((1700000000 + NTP_UNIX_OFFSET) << 32) | 0x40000000),
        # 2036-02-07 06:28:16 UTC: NTP era 1 begins, the seconds field wraps to 0.
        (2085978496.0, 0),
        (2085978496.75, 0xC0000000),
    ],
)
def test_ntp_conversions(unix: float, ntp: int) -> None:
    assert ntp_from_unix(unix) == ntp
    assert unix_from_ntp(ntp) == unix


@pytest.mark.parametrize("unix", [1e9, 1700000000.123456, 1800000000.999999, 2100000000.5])
def test_ntp_round_trip(unix: float) -> None:
    assert unix_from_ntp(ntp_from_unix(unix)) == pytest.approx(unix, abs=1e-6)


def test_ntp_middle32() -> None:
    assert ntp_middle32(0x0123456789ABCDEF) == 0x456789AB
    assert ntp_middle32(ntp_from_unix(1.5)) == ((NTP_UNIX_OFFSET + 1) & 0xFFFF) << 16 | 0x8000


def block(lsr: int, dlsr: int) -> ReportBlock:
    return ReportBlock(1, 0, 0, 0, 0, lsr, dlsr)


@pytest.mark.parametrize(
    ("lsr", "dlsr", "arrival", "rtt"),
    [
        (0, 0, 0x12345678, None),  # no SR received yet
        (0, 65536, 0x12345678, None),
        (0x10000000, 0, 0x10000000, 0.0),
        (0x10000000, 65536 * 5, 0x10000000 + 65536 * 5 + 6554, 6554 / 65536),
        # RFC 3550 section 6.4.1's example: A = 0xb710:8000, LSR 0xb705:2000, DLSR 5.250 s.
        (0xB7052000, 0x00054000, 0xB7108000, 6.125),
        (0xFFFF0000, 0x8000, 0x00010000, 1.5),  # the middle 32 bits wrapped
        (0x10000000, 65536, 0x10000000, None),  # negative: clocks disagree
    ],
)
def test_round_trip_time(lsr: int, dlsr: int, arrival: int, rtt: float | None) -> None:
    assert round_trip_time(block(lsr, dlsr), arrival) == rtt


# --- building reports -------------------------------------------------------------------------


def received(seqs: range, start: float = 0.0) -> ReceiverStats:
    stats = ReceiverStats()
    for i, seq in enumerate(seqs):
        stats.update(seq & 0xFFFF, seq * 160, start + i * 0.02, 8000)
    return stats


def test_build_report_rr_when_nothing_sent() -> None:
    stats = received(range(0, 101))  # probation, then 1..100
    for seq in range(102, 111):  # 101 lost
        stats.update(seq, seq * 160, 3.0, 8000)
    data = build_report(0xABCD, b"gw@example", None, [(0x1234, stats, 0, None)], now=1000.0)
    assert parse_compound(data) == [
        ReceiverReport(
            0xABCD,
            (ReportBlock(0x1234, (1 << 8) // 110, 1, 110, int(stats.jitter), 0, 0),),
        ),
        SourceDescription(((0xABCD, ((CNAME, b"gw@example"),)),)),
    ]
    # The interval restarted: an immediate second report has no new loss. A sender that has
    # sent nothing still reports with an RR.
    sources = [(0x1234, stats, 0, None)]
    again = parse_compound(build_report(0xABCD, b"gw", SenderStats(), sources, 1001.0))
    assert isinstance(again[0], ReceiverReport)
    assert again[0].reports[0].fraction_lost == 0


def test_build_report_sr_with_dlsr() -> None:
    sender = SenderStats()
    for i in range(250):
        sender.update(5000 + 160 * i, 160, 1000.0 + 0.02 * i, 8000)
    stats = received(range(65500, 65500 + 100))  # wraps
    lsr = 0x12345678
    data = build_report(7, b"c", sender, [(9, stats, lsr, 1003.0)], now=1005.0)
    sr, sdes = parse_compound(data)
    assert sr == SenderReport(
        ssrc=7,
        ntp=ntp_from_unix(1005.0),
        rtp_ts=5000 + 160 * 249 + round(0.02 * 8000),
        packets=250,
        octets=250 * 160,
        reports=(ReportBlock(9, 0, 0, (65500 + 99) & 0xFFFFFFFF, 0, lsr, 2 * 65536),),
    )
    assert sdes == SourceDescription(((7, ((CNAME, b"c"),)),))


def test_build_report_negative_loss_and_clamps() -> None:
    stats = received(range(10, 20))
    stats.update(15, 15 * 160, 1.0, 8000)  # duplicate
    (rr, _) = parse_compound(build_report(1, b"c", None, [(2, stats, 0, None)], 0.0))
    assert isinstance(rr, ReceiverReport)
    assert rr.reports[0].cumulative_lost == -1
    assert rr.reports[0].fraction_lost == 0


def test_build_report_skips_sources_on_probation_and_spills_past_31() -> None:
    on_probation = ReceiverStats()
    on_probation.update(1, 160, 0.0, 8000)
    sources = [(i, received(range(100, 110)), 0, None) for i in range(40)]
    data = build_report(1, b"c", None, [(99, on_probation, 0, None), *sources], 0.0)
    packets = parse_compound(data)
    assert [type(packet) for packet in packets] == [
        ReceiverReport,
        ReceiverReport,
        SourceDescription,
    ]
    ssrcs = [
        report.ssrc
        for packet in packets
        if isinstance(packet, ReceiverReport)
        for report in packet.reports
    ]
    assert ssrcs == list(range(40))


def test_rtt_end_to_end() -> None:
    """A sends an SR at t0; B gets it 40 ms later, answers with an RR 1.25 s after that; the
    RR takes 60 ms back. A measures 100 ms whatever B's clock says."""
    t0 = 1_700_000_000.0
    sender = SenderStats()
    sender.update(0, 160, t0 - 0.02, 8000)
    (sr, _) = parse_compound(build_report(0xA, b"a", sender, [], t0))
    assert isinstance(sr, SenderReport)
    b_clock_skew = 3.7  # B's clock is off; only its own intervals matter
    sr_arrival_b = t0 + 0.040 + b_clock_skew
    b_stats = received(range(0, 10))
    rr_data = build_report(
        0xB, b"b", None, [(0xA, b_stats, ntp_middle32(sr.ntp), sr_arrival_b)], sr_arrival_b + 1.25
    )
    (rr, _) = parse_compound(rr_data)
    assert isinstance(rr, ReceiverReport)
    arrival_a = ntp_middle32(ntp_from_unix(t0 + 0.040 + 1.25 + 0.060))
    rtt = round_trip_time(rr.reports[0], arrival_a)
    assert rtt == pytest.approx(0.100, abs=2 / 65536)


def test_module_exports() -> None:
    for name in rtcp.__all__:
        assert hasattr(rtcp, name)
