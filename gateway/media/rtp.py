"""RTP (RFC 3550): the packet format, the relay's fast helpers and the per-source statistics.

Invariants:
- Sans-I/O: bytes and times in, bytes and numbers out. Nothing here reads a clock; arrival and
  send times are arguments (seconds, any one epoch per object).
- The hot path (``parse_header``, ``payload_end``, ``is_rtcp``, ``rewrite_header``, ``build``,
  ``ReceiverStats.update``, ``SenderStats.update``) allocates nothing but its result: one
  precompiled ``struct.Struct`` per layout, plain ints and tuples, no logging, no objects.
- Every length is checked before it is read. A datagram that is not valid RTP raises exactly
  ``ValueError``, each cause with its own message; the transport catches that, counts the
  packet and drops it.
- ``RtpPacket`` is the full, immutable view (CSRC list, header extension, padding) for tests,
  tools and the rare packet that needs it; ``parse(data)`` and ``bytes(packet)`` round-trip
  every field except the contents of padding octets other than the last (sent as zeros).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = [
    "MAX_DROPOUT",
    "MAX_MISORDER",
    "MIN_SEQUENTIAL",
    "RTP_HEADER_SIZE",
    "RTP_SEQ_MOD",
    "ReceiverStats",
    "RtpPacket",
    "SenderStats",
    "build",
    "is_rtcp",
    "parse_header",
    "payload_end",
    "rewrite_header",
]

Buffer = bytes | bytearray | memoryview

RTP_HEADER_SIZE = 12
RTP_VERSION = 2
RTP_SEQ_MOD = 1 << 16

# RFC 3550 appendix A.1: a source is valid after MIN_SEQUENTIAL packets in sequence; a jump of
# less than MAX_DROPOUT ahead is a gap, up to MAX_MISORDER behind is a late packet, anything
# else is a restart that needs two sequential packets to be believed.
MIN_SEQUENTIAL = 2
MAX_DROPOUT = 3000
MAX_MISORDER = 100

# V(2) P(1) X(1) CC(4) | M(1) PT(7) | sequence(16) | timestamp(32) | SSRC(32): section 5.1.
_HEADER = struct.Struct("!BBHII")
# Header extension: profile-defined 16 bits, length in 32-bit words (section 5.3.1).
_EXTENSION = struct.Struct("!HH")
_CSRC = tuple(struct.Struct(f"!{count}I") for count in range(16))

_U16 = 0xFFFF
_U32 = 0xFFFFFFFF


def parse_header(data: Buffer) -> tuple[int, int, int, int, bool, int]:
    """Validate an RTP datagram and return ``(payload_type, sequence, timestamp, ssrc, marker,
    payload_offset)``.

    ``payload_offset`` is the first octet after the fixed header, the CSRC list and the
    header extension. When the padding bit is set the payload ends before the padding:
    ``data[payload_offset:payload_end(data)]`` is the payload in every case.

    Raises ``ValueError`` for a datagram shorter than 12 octets, a version other than 2, a
    truncated CSRC list or header extension, and a padding count of 0 or larger than what
    follows the header (RFC 3550 section 5.1, appendix A.1).
    """
    length = len(data)
    if length < RTP_HEADER_SIZE:
        raise ValueError("RTP packet length is less than 12 bytes")
    first, second, sequence, timestamp, ssrc = _HEADER.unpack_from(data)
    if first >> 6 != RTP_VERSION:
        raise ValueError("RTP packet has invalid version")
    offset = RTP_HEADER_SIZE + (first & 0x0F) * 4
    if offset > length:
        raise ValueError("RTP packet has truncated CSRC")
    if first & 0x10:
        if offset + 4 > length:
            raise ValueError("RTP packet has truncated extension profile")
        offset += 4 + ((data[offset + 2] << 8) | data[offset + 3]) * 4
        if offset > length:
            raise ValueError("RTP packet has truncated extension value")
    if first & 0x20:
        # Section 5.1: the last octet counts the padding octets, itself included.
        padding = data[-1]
        if padding == 0:
            raise ValueError("RTP packet has zero padding length")
        if padding > length - offset:
            raise ValueError("RTP packet padding length exceeds the payload")
    return second & 0x7F, sequence, timestamp, ssrc, second > 0x7F, offset


def payload_end(data: Buffer) -> int:
    """The offset just past the payload: ``len(data)`` less the padding, if any.

    Only meaningful for a datagram ``parse_header`` accepted (it validated the padding count).
    """
    if data[0] & 0x20:
        return len(data) - data[-1]
    return len(data)


def is_rtcp(data: Buffer) -> bool:
    """True when a datagram on an rtcp-mux port is RTCP (RFC 5761 section 4).

    The second octet of RTCP is the packet type, 192..223 for every type defined so far
    (SR 200 .. XR 207, RTPFB 205, PSFB 206); in RTP the same octet is marker and payload
    type, and RFC 5761 keeps payload types 64..95 out of muxed sessions so the ranges never
    meet. A datagram shorter than 2 octets is not RTCP (and not RTP either).
    """
    return len(data) > 1 and 192 <= data[1] <= 223


def rewrite_header(data: bytes | bytearray, pt: int, seq: int, ts: int, ssrc: int) -> bytes:
    """Return ``data`` with a new payload type, sequence number, timestamp and SSRC.

    Everything else is copied unchanged: version, padding, extension and CSRC count, the
    marker bit, the CSRC list, the header extension, payload and padding. ``seq`` and ``ts``
    are taken modulo 2**16 and 2**32, so the relay can add its offsets without wrapping them
    itself; ``pt`` must be 0..127 and ``ssrc`` 0..2**32-1. ``data`` must be a datagram that
    ``parse_header`` accepted (only its length is checked here).
    """
    if len(data) < RTP_HEADER_SIZE:
        raise ValueError("RTP packet length is less than 12 bytes")
    second = (data[1] & 0x80) | pt
    return _HEADER.pack(data[0], second, seq & _U16, ts & _U32, ssrc) + data[RTP_HEADER_SIZE:]


def build(pt: int, seq: int, ts: int, ssrc: int, marker: bool, payload: Buffer) -> bytes:
    """Build a plain RTP packet (no CSRC, no extension, no padding) around ``payload``.

    ``seq`` and ``ts`` are taken modulo 2**16 and 2**32; ``pt`` must be 0..127.
    """
    second = pt | 0x80 if marker else pt
    return _HEADER.pack(0x80, second, seq & _U16, ts & _U32, ssrc) + payload


@dataclass(frozen=True, slots=True)
class RtpPacket:
    """One RTP packet, every header field (RFC 3550 section 5.1).

    ``extension`` is ``(profile, data)`` with ``data`` a multiple of 4 octets (section
    5.3.1; RFC 8285 one- and two-byte elements are left to the caller), or ``None``.
    ``padding`` is the number of padding octets including the count octet, 0 for none.
    """

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    marker: bool = False
    csrc: tuple[int, ...] = ()
    extension: tuple[int, bytes] | None = None
    payload: bytes = b""
    padding: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.payload_type <= 127:
            raise ValueError("RTP payload type must be 0..127")
        if not 0 <= self.sequence <= _U16:
            raise ValueError("RTP sequence number must be 0..65535")
        if not 0 <= self.timestamp <= _U32:
            raise ValueError("RTP timestamp must be 0..2**32-1")
        if not 0 <= self.ssrc <= _U32:
            raise ValueError("RTP SSRC must be 0..2**32-1")
        if len(self.csrc) > 15:
            raise ValueError("RTP packet has more than 15 CSRC")
        if any(not 0 <= csrc <= _U32 for csrc in self.csrc):
            raise ValueError("RTP CSRC must be 0..2**32-1")
        if self.extension is not None:
            profile, value = self.extension
            if not 0 <= profile <= _U16:
                raise ValueError("RTP extension profile must be 0..65535")
            if len(value) % 4:
                raise ValueError("RTP extension length is not a multiple of 4 bytes")
            if len(value) > _U16 * 4:
                raise ValueError("RTP extension is longer than 65535 words")
        if not 0 <= self.padding <= 255:
            raise ValueError("RTP padding must be 0..255 bytes")

    @classmethod
    def parse(cls, data: Buffer) -> RtpPacket:
        """Parse one RTP datagram; ``ValueError`` as in ``parse_header``."""
        payload_type, sequence, timestamp, ssrc, marker, offset = parse_header(data)
        first = data[0]
        count = first & 0x0F
        csrc: tuple[int, ...] = _CSRC[count].unpack_from(data, RTP_HEADER_SIZE) if count else ()
        extension = None
        if first & 0x10:
            position = RTP_HEADER_SIZE + count * 4
            profile, words = _EXTENSION.unpack_from(data, position)
            extension = (profile, bytes(data[position + 4 : position + 4 + words * 4]))
        padding = data[-1] if first & 0x20 else 0
        return cls(
            payload_type=payload_type,
            sequence=sequence,
            timestamp=timestamp,
            ssrc=ssrc,
            marker=marker,
            csrc=csrc,
            extension=extension,
            payload=bytes(data[offset : len(data) - padding]),
            padding=padding,
        )

    def __bytes__(self) -> bytes:
        first = 0x80 | len(self.csrc)
        if self.padding:
            first |= 0x20
        if self.extension is not None:
            first |= 0x10
        second = self.payload_type | 0x80 if self.marker else self.payload_type
        parts = [_HEADER.pack(first, second, self.sequence, self.timestamp, self.ssrc)]
        if self.csrc:
            parts.append(_CSRC[len(self.csrc)].pack(*self.csrc))
        if self.extension is not None:
            profile, value = self.extension
            parts.append(_EXTENSION.pack(profile, len(value) // 4))
            parts.append(value)
        parts.append(self.payload)
        if self.padding:
            parts.append(bytes(self.padding - 1) + bytes((self.padding,)))
        return b"".join(parts)


class ReceiverStats:
    """Reception statistics for one remote SSRC (RFC 3550 appendix A.1, A.3, A.8).

    Feed every RTP packet of the source to ``update``; read the counters for RTCP report
    blocks (section 6.4.1). Call ``reset(seq)`` when the SSRC changes, then ``update`` with
    the same packet. A fresh object resets itself on its first packet.

    - Sequence validation (A.1): a new source is on probation until ``MIN_SEQUENTIAL``
      packets arrive in sequence; a jump of ``MAX_DROPOUT`` or more ahead (or of
      ``MAX_MISORDER`` or more behind) is dropped unless the next packet follows it, in which case
      the sender restarted and the statistics start again from there. ``update`` returns
      False for every packet the validation discards; duplicates and late packets count as
      received (so ``lost`` can go negative, as the RFC says).
    - Loss (A.3): ``expected``, ``lost`` cumulative; ``report_fraction()`` per interval.
    - Jitter (A.8): in timestamp units, over accepted packets in order of arrival; the
      timestamp difference is taken modulo 2**32 so timestamp wrap does not disturb it.
    """

    __slots__ = (
        "_bad_seq",
        "_base_seq",
        "_clock_rate",
        "_cycles",
        "_expected_prior",
        "_jitter",
        "_last_arrival",
        "_last_ts",
        "_max_seq",
        "_probation",
        "_received",
        "_received_prior",
        "_started",
        "_timed",
    )

    def __init__(self) -> None:
        self._started = False
        self._base_seq = 0
        self._max_seq = 0
        self._bad_seq = RTP_SEQ_MOD + 1
        self._cycles = 0
        self._probation = MIN_SEQUENTIAL
        self._received = 0
        self._received_prior = 0
        self._expected_prior = 0
        self._jitter = 0.0
        self._timed = False
        self._last_arrival = 0.0
        self._last_ts = 0
        self._clock_rate = 0

    def reset(self, seq: int) -> None:
        """Start over for a new source whose first packet has sequence number ``seq``."""
        self._started = True
        self._init_seq(seq)
        self._max_seq = (seq - 1) & _U16
        self._probation = MIN_SEQUENTIAL
        self._jitter = 0.0

    def _init_seq(self, seq: int) -> None:
        # A.1 init_seq(): a new sequence number space (first valid packet or a resync).
        self._base_seq = seq
        self._max_seq = seq
        self._bad_seq = RTP_SEQ_MOD + 1  # never equal to a 16-bit sequence number
        self._cycles = 0
        self._received = 0
        self._received_prior = 0
        self._expected_prior = 0
        self._timed = False  # the old timeline says nothing about transit on the new one

    def update(self, seq: int, ts: int, arrival: float, clock_rate: int) -> bool:
        """Account one packet: ``seq`` and ``ts`` from its header, ``arrival`` in seconds,
        ``clock_rate`` in Hz. Returns False when the validation discards the packet."""
        if not self._started:
            self.reset(seq)
        max_seq = self._max_seq
        if self._probation:
            if seq != (max_seq + 1) & _U16:
                self._probation = MIN_SEQUENTIAL - 1
                self._max_seq = seq
                return False
            self._probation -= 1
            self._max_seq = seq
            if self._probation:
                return False
            self._init_seq(seq)
        else:
            udelta = (seq - max_seq) & _U16
            if udelta < MAX_DROPOUT:
                # In order, with a permissible gap; a smaller number means it wrapped.
                if seq < max_seq:
                    self._cycles += RTP_SEQ_MOD
                self._max_seq = seq
            elif udelta <= RTP_SEQ_MOD - MAX_MISORDER:
                # A very large jump: believe it only when the next packet follows it.
                if seq != self._bad_seq:
                    self._bad_seq = (seq + 1) & _U16
                    return False
                self._init_seq(seq)
            # else: a duplicate or a late packet, counted but not moving max_seq.
        self._received += 1
        # A.8: D(i-1, i) = (Rj - Ri) - (Sj - Si) in timestamp units; J += (|D| - J) / 16.
        if self._timed:
            delta_ts = (ts - self._last_ts) & _U32
            if delta_ts > 0x7FFFFFFF:
                delta_ts -= 1 << 32
            d = (arrival - self._last_arrival) * clock_rate - delta_ts
            if d < 0:
                d = -d
            self._jitter += (d - self._jitter) / 16.0
        else:
            self._timed = True
        self._last_arrival = arrival
        self._last_ts = ts
        self._clock_rate = clock_rate
        return True

    @property
    def received(self) -> int:
        """Packets accepted since the sequence space began (duplicates included)."""
        return self._received

    @property
    def extended_max_seq(self) -> int:
        """Highest sequence number seen, with the wrap count in the upper bits (A.3)."""
        return self._cycles + self._max_seq

    @property
    def expected(self) -> int:
        """Packets expected: extended highest sequence number less the first, plus 1 (A.3);
        0 while the source is on probation."""
        if not self._started or self._probation:
            return 0
        return self._cycles + self._max_seq - self._base_seq + 1

    @property
    def lost(self) -> int:
        """Cumulative packets lost, ``expected - received``: negative with duplicates.
        A report block carries it clamped to a signed 24-bit field."""
        return self.expected - self._received

    @property
    def jitter(self) -> float:
        """Interarrival jitter estimate in timestamp units (A.8)."""
        return self._jitter

    @property
    def jitter_ms(self) -> float:
        """Interarrival jitter in milliseconds, at the clock rate of the last packet."""
        if not self._clock_rate:
            return 0.0
        return self._jitter * 1000.0 / self._clock_rate

    def report_fraction(self) -> int:
        """Fraction of packets lost since the previous call, in 1/256 (0..255), and start a
        new interval (A.3). Duplicates that outnumber the losses give 0."""
        expected = self.expected
        expected_interval = expected - self._expected_prior
        self._expected_prior = expected
        received_interval = self._received - self._received_prior
        self._received_prior = self._received
        lost_interval = expected_interval - received_interval
        if expected_interval <= 0 or lost_interval <= 0:
            return 0
        return min((lost_interval << 8) // expected_interval, 255)


class SenderStats:
    """What this side sent on one SSRC, for the sender info of an SR (RFC 3550 section 6.4.1).

    ``packets`` and ``octets`` (payload octets: no header, no padding) are totals since the
    SSRC began; ``last_timestamp`` is the RTP timestamp of the last packet sent and
    ``last_time`` the wall-clock time it was sent (seconds), ``clock_rate`` its clock.
    """

    __slots__ = ("clock_rate", "last_time", "last_timestamp", "octets", "packets")

    def __init__(self) -> None:
        self.packets = 0
        self.octets = 0
        self.last_timestamp = 0
        self.last_time = 0.0
        self.clock_rate = 0

    def update(self, ts: int, payload_octets: int, now: float, clock_rate: int) -> None:
        """Account one packet sent at ``now`` with RTP timestamp ``ts``."""
        self.packets += 1
        self.octets += payload_octets
        self.last_timestamp = ts
        self.last_time = now
        self.clock_rate = clock_rate

    def timestamp_at(self, now: float) -> int:
        """The RTP timestamp that corresponds to wall-clock time ``now``, extrapolated from
        the last packet sent: the SR pairs it with the NTP time of ``now`` (section 6.4.1)."""
        elapsed = round((now - self.last_time) * self.clock_rate)
        return (self.last_timestamp + elapsed) & _U32
