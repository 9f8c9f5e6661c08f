"""RTCP (RFC 3550 section 6): compound packets, report blocks, NTP time and round-trip time.

Invariants:
- Sans-I/O: bytes and times in, bytes and values out; ``now`` is always an argument. Times
  that go on the wire as NTP (the SR timestamp, LSR/DLSR arithmetic) are wall-clock Unix
  seconds.
- Wire types are frozen dataclasses that validate their fields on construction (so
  ``bytes(packet)`` cannot fail), parse with ``Type.parse(data)`` (exactly one packet of that
  type) or ``parse_compound(data)`` (a whole datagram), and serialize with ``bytes(packet)``.
- Every length is checked before it is read: the header's length field against the datagram,
  the report and source counts against the length, every SDES item and its chunk's
  terminating null octets. A malformed datagram raises ``ValueError`` with its own message,
  never ``struct.error`` or ``IndexError``.
- Packet types this module does not model (APP 204, RTPFB 205, PSFB 206, XR 207, ...) come
  back as ``UnknownRtcp`` holding the packet's octets verbatim, so a relay forwards them
  unchanged. Padding of known types is dropped on parse and not re-added.
- The compound rules of section 6.1 (SR or RR first, CNAME present) are not enforced on
  receive: reduced-size RTCP (RFC 5506) breaks them on purpose. ``build_report`` follows them.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from gateway.media.rtp import ReceiverStats, SenderStats

__all__ = [
    "APP",
    "BYE",
    "CNAME",
    "NTP_UNIX_OFFSET",
    "PSFB",
    "RR",
    "RTPFB",
    "SDES",
    "SR",
    "XR",
    "Bye",
    "ReceiverReport",
    "ReportBlock",
    "RtcpPacket",
    "SenderReport",
    "SourceDescription",
    "UnknownRtcp",
    "build_report",
    "ntp_from_unix",
    "ntp_middle32",
    "parse_compound",
    "round_trip_time",
    "serialize_compound",
    "unix_from_ntp",
]

# Packet types (RFC 3550 section 12.1; RFC 4585 section 6.1; RFC 3611).
SR = 200
RR = 201
SDES = 202
BYE = 203
APP = 204
RTPFB = 205
PSFB = 206
XR = 207

# SDES item types (section 6.5); END (0) terminates a chunk's item list.
CNAME = 1

# Seconds from the NTP epoch (1900-01-01) to the Unix epoch (1970-01-01).
NTP_UNIX_OFFSET = 2_208_988_800

_HEADER = struct.Struct("!BBH")
_SSRC = struct.Struct("!I")
# SSRC of sender, then sender info: NTP (64), RTP timestamp, packet and octet counts.
_SENDER = struct.Struct("!IQIII")
# SSRC, fraction lost (8) + cumulative lost (24), extended highest seq, jitter, LSR, DLSR.
_BLOCK = struct.Struct("!IIIIII")
_BLOCK_SIZE = _BLOCK.size
_MAX_COUNT = 31  # the 5-bit RC / SC field

_U32 = 0xFFFFFFFF
_U64 = 0xFFFFFFFFFFFFFFFF
_LOST_MIN = -(1 << 23)
_LOST_MAX = (1 << 23) - 1


# --- NTP time (RFC 3550 section 4; RFC 5905 section 6) -----------------------------------------


def ntp_from_unix(t: float) -> int:
    """The 64-bit NTP timestamp (32.32 fixed point since 1900) of Unix time ``t``.

    Seconds are taken modulo 2**32, so times after 2036-02-07 land in NTP era 1 as on the
    wire."""
    seconds = math.floor(t)
    fraction = int((t - seconds) * 4294967296.0)
    return (((seconds + NTP_UNIX_OFFSET) & _U32) << 32) | fraction


def ntp_middle32(ntp: int) -> int:
    """The middle 32 bits of a 64-bit NTP timestamp (16.16 seconds): the LSR of section
    6.4.1 and the unit of round-trip arithmetic."""
    return (ntp >> 16) & _U32


def unix_from_ntp(ntp: int) -> float:
    """Unix time of a 64-bit NTP timestamp. A seconds field below 2**31 is read as era 1
    (2036..2104), as RFC 4330 section 3 suggests, so the range is 1968..2104."""
    seconds = ntp >> 32
    if seconds < 0x80000000:
        seconds += 1 << 32
    return seconds - NTP_UNIX_OFFSET + (ntp & _U32) / 4294967296.0


# --- framing ------------------------------------------------------------------------------------


def _frame(data: bytes, position: int) -> tuple[int, int, int, int]:
    """Read the common header at ``position``: ``(packet_type, count, body_end, end)``.

    ``end`` is where the next packet starts; ``body_end`` is ``end`` less any padding."""
    available = len(data) - position
    if available < 4:
        raise ValueError("RTCP packet length is less than 4 bytes")
    first, packet_type, words = _HEADER.unpack_from(data, position)
    if first >> 6 != 2:
        raise ValueError("RTCP packet has invalid version")
    size = (words + 1) * 4
    if size > available:
        raise ValueError("RTCP packet length exceeds the datagram")
    end = position + size
    body_end = end
    if first & 0x20:
        padding = data[end - 1]
        if padding == 0:
            raise ValueError("RTCP packet has zero padding length")
        if padding > size - 4:
            raise ValueError("RTCP packet padding length exceeds the packet")
        body_end -= padding
    return packet_type, first & 0x1F, body_end, end


def _pack(packet_type: int, count: int, body: bytes) -> bytes:
    # The body is always a multiple of 4 octets here: the types pad their own fields.
    return _HEADER.pack(0x80 | count, packet_type, len(body) // 4) + body


def _check_u32(value: int, what: str) -> None:
    if not 0 <= value <= _U32:
        raise ValueError(f"RTCP {what} must be 0..2**32-1")


def _check_count(count: int, what: str) -> None:
    if count > _MAX_COUNT:
        raise ValueError(f"RTCP {what} has more than 31 entries")


def _check_extension(extension: bytes, what: str) -> None:
    if len(extension) % 4:
        raise ValueError(f"RTCP {what} profile extension is not a multiple of 4 bytes")


# --- packet types -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReportBlock:
    """One reception report block (section 6.4.1).

    ``fraction_lost`` is in 1/256 (0..255); ``cumulative_lost`` is signed 24-bit;
    ``jitter`` in timestamp units; ``lsr`` the middle 32 bits of the last SR's NTP time and
    ``dlsr`` the delay since it, in 1/65536 s (both 0 when no SR was received)."""

    ssrc: int
    fraction_lost: int
    cumulative_lost: int
    highest_seq: int
    jitter: int
    lsr: int
    dlsr: int

    def __post_init__(self) -> None:
        _check_u32(self.ssrc, "report block SSRC")
        if not 0 <= self.fraction_lost <= 255:
            raise ValueError("RTCP report block fraction lost must be 0..255")
        if not _LOST_MIN <= self.cumulative_lost <= _LOST_MAX:
            raise ValueError("RTCP report block cumulative lost must fit in signed 24 bits")
        _check_u32(self.highest_seq, "report block highest sequence number")
        _check_u32(self.jitter, "report block jitter")
        _check_u32(self.lsr, "report block LSR")
        _check_u32(self.dlsr, "report block DLSR")

    @classmethod
    def parse(cls, data: bytes, position: int = 0) -> ReportBlock:
        """Parse the 24-octet block at ``position``."""
        if len(data) - position < _BLOCK_SIZE:
            raise ValueError("RTCP report block is truncated")
        ssrc, loss, highest_seq, jitter, lsr, dlsr = _BLOCK.unpack_from(data, position)
        lost = loss & 0xFFFFFF
        if lost & 0x800000:
            lost -= 1 << 24
        return cls(ssrc, loss >> 24, lost, highest_seq, jitter, lsr, dlsr)

    def __bytes__(self) -> bytes:
        loss = (self.fraction_lost << 24) | (self.cumulative_lost & 0xFFFFFF)
        return _BLOCK.pack(self.ssrc, loss, self.highest_seq, self.jitter, self.lsr, self.dlsr)


def _parse_blocks(body: bytes, position: int, count: int, what: str) -> tuple[ReportBlock, ...]:
    if position + count * _BLOCK_SIZE > len(body):
        raise ValueError(f"RTCP {what} has truncated report blocks")
    blocks = tuple(ReportBlock.parse(body, position + i * _BLOCK_SIZE) for i in range(count))
    # What follows the blocks is a profile-specific extension, whole 32-bit words.
    if (len(body) - position - count * _BLOCK_SIZE) % 4:
        raise ValueError(f"RTCP {what} profile extension is not a multiple of 4 bytes")
    return blocks


@dataclass(frozen=True, slots=True)
class SenderReport:
    """SR (section 6.4.1): sender info, up to 31 report blocks, an optional profile-specific
    extension (kept as octets, a multiple of 4)."""

    TYPE: ClassVar[int] = SR

    ssrc: int
    ntp: int
    rtp_ts: int
    packets: int
    octets: int
    reports: tuple[ReportBlock, ...] = ()
    extension: bytes = b""

    def __post_init__(self) -> None:
        _check_u32(self.ssrc, "SR SSRC")
        if not 0 <= self.ntp <= _U64:
            raise ValueError("RTCP SR NTP timestamp must be 0..2**64-1")
        _check_u32(self.rtp_ts, "SR RTP timestamp")
        _check_u32(self.packets, "SR packet count")
        _check_u32(self.octets, "SR octet count")
        _check_count(len(self.reports), "SR")
        _check_extension(self.extension, "SR")

    @classmethod
    def parse(cls, data: bytes) -> SenderReport:
        """Parse exactly one SR packet."""
        return cls._from_body(*_single(data, SR, "SR"))

    @classmethod
    def _from_body(cls, count: int, body: bytes) -> SenderReport:
        if len(body) < _SENDER.size:
            raise ValueError("RTCP SR is truncated")
        ssrc, ntp, rtp_ts, packets, octets = _SENDER.unpack_from(body)
        reports = _parse_blocks(body, _SENDER.size, count, "SR")
        extension = body[_SENDER.size + count * _BLOCK_SIZE :]
        return cls(ssrc, ntp, rtp_ts, packets, octets, reports, extension)

    def __bytes__(self) -> bytes:
        body = _SENDER.pack(self.ssrc, self.ntp, self.rtp_ts, self.packets, self.octets)
        body += b"".join(bytes(report) for report in self.reports) + self.extension
        return _pack(SR, len(self.reports), body)


@dataclass(frozen=True, slots=True)
class ReceiverReport:
    """RR (section 6.4.2): up to 31 report blocks and an optional profile extension."""

    TYPE: ClassVar[int] = RR

    ssrc: int
    reports: tuple[ReportBlock, ...] = ()
    extension: bytes = b""

    def __post_init__(self) -> None:
        _check_u32(self.ssrc, "RR SSRC")
        _check_count(len(self.reports), "RR")
        _check_extension(self.extension, "RR")

    @classmethod
    def parse(cls, data: bytes) -> ReceiverReport:
        """Parse exactly one RR packet."""
        return cls._from_body(*_single(data, RR, "RR"))

    @classmethod
    def _from_body(cls, count: int, body: bytes) -> ReceiverReport:
        if len(body) < 4:
            raise ValueError("RTCP RR is truncated")
        (ssrc,) = _SSRC.unpack_from(body)
        reports = _parse_blocks(body, 4, count, "RR")
        return cls(ssrc, reports, body[4 + count * _BLOCK_SIZE :])

    def __bytes__(self) -> bytes:
        body = _SSRC.pack(self.ssrc) + b"".join(bytes(report) for report in self.reports)
        return _pack(RR, len(self.reports), body + self.extension)


SdesChunk = tuple[int, tuple[tuple[int, bytes], ...]]


@dataclass(frozen=True, slots=True)
class SourceDescription:
    """SDES (section 6.5): up to 31 chunks ``(ssrc, ((item_type, value), ...))``.

    Item types are 1..255 (0 is the END marker), values at most 255 octets."""

    TYPE: ClassVar[int] = SDES

    chunks: tuple[SdesChunk, ...] = ()

    def __post_init__(self) -> None:
        _check_count(len(self.chunks), "SDES")
        for ssrc, items in self.chunks:
            _check_u32(ssrc, "SDES chunk SSRC")
            for item_type, value in items:
                if not 1 <= item_type <= 255:
                    raise ValueError("RTCP SDES item type must be 1..255")
                if len(value) > 255:
                    raise ValueError("RTCP SDES item is longer than 255 bytes")

    @classmethod
    def parse(cls, data: bytes) -> SourceDescription:
        """Parse exactly one SDES packet."""
        return cls._from_body(*_single(data, SDES, "SDES"))

    @classmethod
    def _from_body(cls, count: int, body: bytes) -> SourceDescription:
        chunks: list[SdesChunk] = []
        end = len(body)
        position = 0
        for _ in range(count):
            if position + 4 > end:
                raise ValueError("RTCP SDES has truncated chunk SSRC")
            (ssrc,) = _SSRC.unpack_from(body, position)
            position += 4
            items: list[tuple[int, bytes]] = []
            while True:
                if position >= end:
                    raise ValueError("RTCP SDES chunk has no END item")
                item_type = body[position]
                if item_type == 0:
                    # END, then null octets up to the next 32-bit boundary (section 6.5).
                    position = (position + 4) & ~3
                    if position > end:
                        raise ValueError("RTCP SDES chunk padding is truncated")
                    break
                if position + 2 > end:
                    raise ValueError("RTCP SDES item is truncated")
                value_end = position + 2 + body[position + 1]
                if value_end > end:
                    raise ValueError("RTCP SDES item value is truncated")
                items.append((item_type, body[position + 2 : value_end]))
                position = value_end
            chunks.append((ssrc, tuple(items)))
        if position != end:
            raise ValueError("RTCP SDES has data after its chunks")
        return cls(tuple(chunks))

    def __bytes__(self) -> bytes:
        parts: list[bytes] = []
        for ssrc, items in self.chunks:
            chunk = _SSRC.pack(ssrc) + b"".join(
                bytes((item_type, len(value))) + value for item_type, value in items
            )
            # END plus padding: 1 to 4 null octets, ending on a 32-bit boundary.
            parts.append(chunk + bytes(4 - len(chunk) % 4))
        return _pack(SDES, len(self.chunks), b"".join(parts))

    def cname(self, ssrc: int) -> bytes | None:
        """The CNAME the packet gives for ``ssrc``, if any."""
        for chunk_ssrc, items in self.chunks:
            if chunk_ssrc == ssrc:
                for item_type, value in items:
                    if item_type == CNAME:
                        return value
        return None


@dataclass(frozen=True, slots=True)
class Bye:
    """BYE (section 6.6): up to 31 sources leaving and an optional reason (UTF-8 octets, at
    most 255)."""

    TYPE: ClassVar[int] = BYE

    sources: tuple[int, ...] = ()
    reason: bytes = b""

    def __post_init__(self) -> None:
        _check_count(len(self.sources), "BYE")
        for ssrc in self.sources:
            _check_u32(ssrc, "BYE SSRC")
        if len(self.reason) > 255:
            raise ValueError("RTCP BYE reason is longer than 255 bytes")

    @classmethod
    def parse(cls, data: bytes) -> Bye:
        """Parse exactly one BYE packet."""
        return cls._from_body(*_single(data, BYE, "BYE"))

    @classmethod
    def _from_body(cls, count: int, body: bytes) -> Bye:
        position = count * 4
        if position > len(body):
            raise ValueError("RTCP BYE has truncated source list")
        sources = struct.unpack_from(f"!{count}I", body)
        reason = b""
        if position < len(body):
            reason_end = position + 1 + body[position]
            if reason_end > len(body):
                raise ValueError("RTCP BYE reason is truncated")
            reason = body[position + 1 : reason_end]
        return cls(sources, reason)

    def __bytes__(self) -> bytes:
        body = b"".join(_SSRC.pack(ssrc) for ssrc in self.sources)
        if self.reason:
            reason = bytes((len(self.reason),)) + self.reason
            body += reason + bytes(-len(reason) % 4)
        return _pack(BYE, len(self.sources), body)


@dataclass(frozen=True, slots=True)
class UnknownRtcp:
    """A packet of a type this module does not model (APP, RTPFB, PSFB, XR, ...), kept whole:
    ``data`` is the packet's octets, header and padding included, and is what ``bytes()``
    gives back."""

    pt: int
    data: bytes

    def __post_init__(self) -> None:
        if len(self.data) < 4 or len(self.data) % 4:
            raise ValueError("RTCP packet length is not a positive multiple of 4 bytes")
        if self.data[1] != self.pt:
            raise ValueError("RTCP packet type does not match its header")
        if (_HEADER.unpack_from(self.data)[2] + 1) * 4 != len(self.data):
            raise ValueError("RTCP packet length field does not match its data")

    @property
    def count(self) -> int:
        """The 5-bit count / format field (FMT for RTPFB and PSFB)."""
        return self.data[0] & 0x1F

    @property
    def body(self) -> bytes:
        """The octets after the 4-octet header (padding included)."""
        return self.data[4:]

    def __bytes__(self) -> bytes:
        return self.data


RtcpPacket = SenderReport | ReceiverReport | SourceDescription | Bye | UnknownRtcp

_TYPES: dict[int, type[SenderReport | ReceiverReport | SourceDescription | Bye]] = {
    SR: SenderReport,
    RR: ReceiverReport,
    SDES: SourceDescription,
    BYE: Bye,
}


def _single(data: bytes, packet_type: int, name: str) -> tuple[int, bytes]:
    found, count, body_end, end = _frame(data, 0)
    if found != packet_type:
        raise ValueError(f"RTCP packet is not {name}")
    if end != len(data):
        raise ValueError("RTCP packet has data after its length")
    return count, data[4:body_end]


def parse_compound(data: bytes) -> list[RtcpPacket]:
    """Parse every packet of a (compound) RTCP datagram, in order (section 6.1).

    Raises ``ValueError`` when any packet is malformed; a datagram is taken or dropped
    whole, as appendix A.2's validity check does."""
    packets: list[RtcpPacket] = []
    position = 0
    while position < len(data):
        packet_type, count, body_end, end = _frame(data, position)
        known = _TYPES.get(packet_type)
        if known is None:
            packets.append(UnknownRtcp(packet_type, data[position:end]))
        else:
            packets.append(known._from_body(count, data[position + 4 : body_end]))
        position = end
    if not packets:
        raise ValueError("RTCP packet length is less than 4 bytes")
    return packets


def serialize_compound(packets: Iterable[RtcpPacket]) -> bytes:
    """Concatenate packets into one compound datagram."""
    return b"".join(bytes(packet) for packet in packets)


# --- reports ------------------------------------------------------------------------------------


def round_trip_time(block: ReportBlock, arrival_ntp_middle32: int) -> float | None:
    """Round-trip time in seconds from a report block about our stream (section 6.4.1):
    ``A - LSR - DLSR`` in 1/65536 s, where A is the middle 32 bits of the NTP time the
    report arrived. None when the peer has not received an SR (LSR 0) or the result is
    negative (clock trouble). The subtraction is modulo 2**32, so the 18-hour wrap of the
    middle 32 bits does not matter."""
    if block.lsr == 0:
        return None
    delta = (arrival_ntp_middle32 - block.lsr - block.dlsr) & _U32
    if delta > 0x7FFFFFFF:
        return None
    return delta / 65536.0


def _report_block(
    ssrc: int, stats: ReceiverStats, lsr: int, sr_arrival: float | None, now: float
) -> ReportBlock:
    dlsr = 0
    if lsr and sr_arrival is not None:
        dlsr = min(max(round((now - sr_arrival) * 65536.0), 0), _U32)
    return ReportBlock(
        ssrc=ssrc,
        fraction_lost=stats.report_fraction(),
        cumulative_lost=min(max(stats.lost, _LOST_MIN), _LOST_MAX),
        highest_seq=stats.extended_max_seq & _U32,
        jitter=min(int(stats.jitter), _U32),
        lsr=lsr,
        dlsr=dlsr,
    )


def build_report(
    ssrc: int,
    cname: bytes,
    sender: SenderStats | None,
    sources: Sequence[tuple[int, ReceiverStats, int, float | None]],
    now: float,
) -> bytes:
    """One compound report for our SSRC: SR (when we have sent) or RR, then SDES CNAME.

    ``sources`` lists each remote SSRC heard with ``(ssrc, stats, lsr, sr_arrival)``:
    ``lsr`` the middle 32 bits of the NTP time in the last SR from it (0 if none) and
    ``sr_arrival`` when that SR arrived, on the same clock as ``now``. Sources still on
    probation (nothing accepted) get no block. More than 31 blocks spill into further RRs
    (section 6.4.2). ``now`` is Unix time: it becomes the SR's NTP timestamp. Each call
    starts a new loss interval on every listed source (``ReceiverStats.report_fraction``).
    """
    blocks = [
        _report_block(remote, stats, lsr, sr_arrival, now)
        for remote, stats, lsr, sr_arrival in sources
        if stats.received
    ]
    first_blocks = tuple(blocks[:_MAX_COUNT])
    packets: list[RtcpPacket]
    if sender is not None and sender.packets:
        packets = [
            SenderReport(
                ssrc=ssrc,
                ntp=ntp_from_unix(now),
                rtp_ts=sender.timestamp_at(now),
                packets=sender.packets & _U32,
                octets=sender.octets & _U32,
                reports=first_blocks,
            )
        ]
    else:
        packets = [ReceiverReport(ssrc, first_blocks)]
    for start in range(_MAX_COUNT, len(blocks), _MAX_COUNT):
        packets.append(ReceiverReport(ssrc, tuple(blocks[start : start + _MAX_COUNT])))
    packets.append(SourceDescription(((ssrc, ((CNAME, cname),)),)))
    return serialize_compound(packets)
