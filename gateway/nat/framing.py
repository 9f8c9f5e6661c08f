"""TURN ChannelData (RFC 8656 section 12), a stream deframer for STUN/TURN over TCP (RFC 8656
section 12.5, RFC 6062), and RFC 7983 first-byte demultiplexing.

Invariants: sans-I/O; anything malformed raises exactly ``ValueError`` (see gateway.nat.stun).
A deframer whose stream broke (a bad frame header, too much buffered) stays broken: every later
call raises the same error, and the adapter closes the connection.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NoReturn

from gateway.nat.stun import _MAX_LENGTH, HEADER_SIZE, MAGIC_COOKIE, Buffer, Message

__all__ = [
    "CHANNEL_MAX",
    "CHANNEL_MIN",
    "DEFAULT_MAX_BUFFERED",
    "MAX_STREAM_FRAME",
    "ChannelData",
    "PacketKind",
    "StreamDeframer",
    "demultiplex",
]

# --- TURN ChannelData (RFC 8656 section 12) ---------------------------------------------------

# RFC 8656 section 12 allows 0x4000-0x4FFF and reserves the rest; RFC 5766 section 11 allowed
# 0x4000-0x7FFF, and RFC 5766 clients use it (coturn's turnutils_uclient picks numbers in all of
# it; coturn's server accepts it). A server compatible with both accepts the RFC 5766 range:
# every first octet 0x40-0x7F is ChannelData on a TURN socket, where nothing else is carried.
CHANNEL_MIN = 0x4000
CHANNEL_MAX = 0x7FFF
_CHANNEL_HEADER = struct.Struct("!HH")


@dataclass(frozen=True, slots=True)
class ChannelData:
    """A ChannelData message: channel number 0x4000-0x7FFF, 16-bit length, application data,
    padded to a multiple of 4 over TCP (RFC 8656 section 12.5)."""

    channel: int
    data: bytes

    def __post_init__(self) -> None:
        if not CHANNEL_MIN <= self.channel <= CHANNEL_MAX:
            raise ValueError(f"ChannelData channel 0x{self.channel:04x} is not in 0x4000-0x7FFF")
        if len(self.data) > 0xFFFF:
            raise ValueError(f"ChannelData of {len(self.data)} octets is too long")

    @classmethod
    def parse(cls, data: Buffer, *, stream: bool = False) -> ChannelData:
        """Parse one ChannelData message.

        Over UDP (``stream=False``) the datagram holds the data and at most the padding to 4
        (which RFC 8656 section 12.5 allows but does not require); a shorter datagram than the
        length claims, or more octets after it, is a ValueError. With ``stream=True`` the
        padding must be present and nothing may follow it.
        """
        if len(data) < 4:
            raise ValueError("ChannelData is shorter than its 4-octet header")
        channel, length = _CHANNEL_HEADER.unpack_from(data)
        if not CHANNEL_MIN <= channel <= CHANNEL_MAX:
            raise ValueError(f"ChannelData channel 0x{channel:04x} is not in 0x4000-0x7FFF")
        end = 4 + length
        padded = end + (-length % 4)
        if len(data) < (padded if stream else end):
            raise ValueError(f"ChannelData length {length} runs past the end")
        if len(data) > padded:
            raise ValueError(f"ChannelData has {len(data) - padded} octets after its padding")
        return cls(channel, bytes(data[4:end]))

    def encode(self, *, pad: bool = True) -> bytes:
        """The wire form; ``pad=False`` leaves out the padding (allowed over UDP only)."""
        head = _CHANNEL_HEADER.pack(self.channel, len(self.data)) + self.data
        return head + bytes(-len(self.data) % 4) if pad else head

    def __bytes__(self) -> bytes:
        return self.encode()


# --- stream framing (RFC 8656 section 12.5, RFC 6062) -----------------------------------------

MAX_STREAM_FRAME = HEADER_SIZE + _MAX_LENGTH
DEFAULT_MAX_BUFFERED = 256 * 1024


class StreamDeframer:
    """Splits a TCP byte stream into STUN messages and ChannelData frames, both kinds mixed.

    ``feed`` appends received octets; ``next_frame`` returns the next complete frame or None.
    The first two bits of each frame say its kind (RFC 8656 section 12.5): 0b00 STUN (its
    length field frames it), 0b01 ChannelData (length plus padding to 4).

    Errors: a frame whose framing is broken (another first byte, a reserved channel 0x5000+,
    a STUN header without the magic cookie or with a length not a multiple of 4), or more than
    ``max_buffered`` octets waiting, is fatal: the stream cannot be resynchronised, every later
    call raises the same ValueError, and the connection should be closed. A well-framed STUN
    message whose content is malformed is consumed, then reported by ValueError; the next call
    carries on with the following frame.
    """

    def __init__(self, max_buffered: int = DEFAULT_MAX_BUFFERED) -> None:
        if max_buffered < MAX_STREAM_FRAME:
            raise ValueError(f"max_buffered must be at least {MAX_STREAM_FRAME}")
        self.max_buffered = max_buffered
        self._buffer = bytearray()
        self._start = 0
        self._error: str | None = None

    @property
    def buffered(self) -> int:
        """Octets received but not yet returned as frames."""
        return len(self._buffer) - self._start

    def feed(self, data: Buffer) -> None:
        """Append received octets; ValueError when the bound is exceeded or after a fatal
        error."""
        self._raise_if_broken()
        if self.buffered + len(data) > self.max_buffered:
            self._fail(f"stream buffer over {self.max_buffered} octets")
        if self._start and self._start * 2 >= len(self._buffer):
            del self._buffer[: self._start]
            self._start = 0
        self._buffer += data

    def next_frame(self) -> Message | ChannelData | None:
        """The next complete frame, or None until more octets arrive."""
        self._raise_if_broken()
        available = self.buffered
        if available < 4:
            return None
        start = self._start
        first = self._buffer[start]
        kind = first >> 6
        if kind == 0b01:
            channel, length = _CHANNEL_HEADER.unpack_from(self._buffer, start)
            if channel > CHANNEL_MAX:
                self._fail(f"ChannelData channel 0x{channel:04x} is reserved")
            size = 4 + length + (-length % 4)
        elif kind == 0b00:
            if available < 8:
                return None
            _, length, cookie = struct.unpack_from("!HHI", self._buffer, start)
            if cookie != MAGIC_COOKIE:
                self._fail("STUN message on the stream has a bad magic cookie")
            if length % 4:
                self._fail(f"STUN message length {length} is not a multiple of 4")
            size = HEADER_SIZE + length
        else:
            self._fail(f"stream frame starts with 0x{first:02x}, neither STUN nor ChannelData")
        if available < size:
            return None
        frame = bytes(self._buffer[start : start + size])
        self._start += size
        if kind == 0b01:
            return ChannelData.parse(frame, stream=True)
        return Message.parse(frame)

    def frames(self) -> Iterator[Message | ChannelData]:
        """Yield every complete frame; see the class docstring for errors."""
        while (frame := self.next_frame()) is not None:
            yield frame

    def _fail(self, reason: str) -> NoReturn:
        self._error = reason
        raise ValueError(reason)

    def _raise_if_broken(self) -> None:
        if self._error is not None:
            raise ValueError(self._error)


# --- RFC 7983 demultiplexing ------------------------------------------------------------------


class PacketKind(enum.Enum):
    """What a packet's first octet says it is (RFC 7983 section 7)."""

    STUN = "stun"  # 0-3
    ZRTP = "zrtp"  # 16-19
    DTLS = "dtls"  # 20-63
    CHANNEL_DATA = "channel-data"  # 64-79, TURN channels
    RTP = "rtp"  # 128-191, RTP and RTCP
    UNKNOWN = "unknown"  # anything else, and an empty packet: drop


def demultiplex(data: Buffer) -> PacketKind:
    """Classify a packet by its first octet (RFC 7983 section 7, with RFC 8656's channel
    range 64-79)."""
    if not data:
        return PacketKind.UNKNOWN
    first = data[0]
    if first <= 3:
        return PacketKind.STUN
    if 16 <= first <= 19:
        return PacketKind.ZRTP
    if 20 <= first <= 63:
        return PacketKind.DTLS
    if 64 <= first <= 79:
        return PacketKind.CHANNEL_DATA
    if 128 <= first <= 191:
        return PacketKind.RTP
    return PacketKind.UNKNOWN
