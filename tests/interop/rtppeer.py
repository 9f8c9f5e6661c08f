"""A small RTP endpoint for interop tests: sends a paced G.711 tone, records what arrives.

Independent of the gateway's media code (its own μ-law/A-law tables, its own header
packing), so a test that passes proves the gateway, not a shared bug. Loopback only.
"""

from __future__ import annotations

import re
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

_HEADER = struct.Struct("!BBHII")


def ulaw_encode(pcm: np.ndarray) -> bytes:
    """ITU-T G.711 μ-law, straight from the segment definition (bias 0x84, clip 32635)."""
    x = pcm.astype(np.int32)
    sign = np.where(x < 0, 0x7F, 0xFF)
    mag = np.minimum(np.abs(x), 32635) + 0x84
    exponent = np.floor(np.log2(mag)).astype(np.int32) - 7
    exponent = np.clip(exponent, 0, 7)
    mantissa = (mag >> (exponent + 3)) & 0x0F
    code = (exponent << 4) | mantissa
    return (np.bitwise_and(sign, 0xFF) ^ code).astype(np.uint8).tobytes()


def ulaw_decode(data: bytes) -> np.ndarray:
    u = ~np.frombuffer(data, dtype=np.uint8).astype(np.int32) & 0xFF
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    mag = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(u & 0x80, -mag, mag).astype(np.int16)


def tone(hz: float, seconds: float, rate: int = 8000, amplitude: float = 8000.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def rtp_packet(pt: int, seq: int, ts: int, ssrc: int, payload: bytes, marker: bool = False
               ) -> bytes:
    return _HEADER.pack(0x80, pt | (0x80 if marker else 0), seq & 0xFFFF, ts & 0xFFFFFFFF,
                        ssrc) + payload


@dataclass
class Received:
    source: tuple[str, int]
    pt: int
    seq: int
    ts: int
    ssrc: int
    payload: bytes


def parse_rtp(data: bytes, source: tuple[str, int]) -> Received | None:
    """The RTP packet in a datagram from ``source``; None for RTCP or anything that is not RTP
    version 2."""
    if len(data) < 12 or data[0] >> 6 != 2 or 192 <= data[1] <= 223:
        return None
    _, second, seq, ts, ssrc = _HEADER.unpack_from(data)
    cc = data[0] & 0x0F
    return Received(source, second & 0x7F, seq, ts, ssrc, data[12 + 4 * cc:])


def read_rtp(sock: socket.socket, stop: threading.Event,
             handle: Callable[[Received, bytes], None],
             other: Callable[[bytes, tuple[str, int]], None] | None = None) -> None:
    """Until ``stop`` is set, hand every RTP packet that arrives on ``sock`` (which has a
    timeout, so that ``stop`` is seen) to ``handle(packet, datagram)``; RTCP and anything
    else go to ``other(datagram, source)`` when given, else are dropped. The loop of a
    reader thread."""
    while not stop.is_set():
        try:
            data, addr = sock.recvfrom(4096)
        except (TimeoutError, OSError):
            continue
        packet = parse_rtp(data, addr)
        if packet is not None:
            handle(packet, data)
        elif other is not None:
            other(data, addr)


@dataclass
class RtpPeer:
    host: str = "127.0.0.1"
    packets: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((self.host, 0))
        self.port = self.sock.getsockname()[1]
        self.sock.settimeout(0.2)
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.ssrc = 0x1234ABCD

    def _read(self) -> None:
        # looked up per datagram, so that an instance may replace _other after the start
        read_rtp(self.sock, self._stop, self._received, lambda d, a: self._other(d, a))

    def _other(self, data: bytes, source: tuple[str, int]) -> None:
        """A datagram that is not RTP (RTCP muxed on the RTP port, RFC 5761); a subclass or
        an instance may take it."""

    def _received(self, packet: Received, data: bytes) -> None:
        """One RTP packet arrived (``data``: the datagram); a subclass may do more with it."""
        self.packets.append(packet)

    def close(self) -> None:
        self._stop.set()
        self._reader.join(2)
        self.sock.close()

    def send_tone(self, dest: tuple[str, int], hz: float, seconds: float, *, pt: int = 0,
                  seq: int = 1000, ts: int = 160000) -> int:
        """Send ``seconds`` of a μ-law tone at 20 ms pace; returns the packets sent."""
        pcm = tone(hz, seconds)
        start = time.monotonic()
        sent = 0
        for i in range(len(pcm) // 160):
            payload = ulaw_encode(pcm[i * 160:(i + 1) * 160])
            self.sock.sendto(rtp_packet(pt, seq + i, ts + 160 * i, self.ssrc, payload,
                                        marker=i == 0), dest)
            sent += 1
            delay = start + (i + 1) * 0.02 - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        return sent

    def audio(self, pt: int = 0) -> np.ndarray:
        """The μ-law audio received with payload type ``pt``, in sequence order."""
        chosen = sorted((p for p in self.packets if p.pt == pt), key=lambda p: p.seq)
        if not chosen:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate([ulaw_decode(p.payload) for p in chosen])


def sdp_offer(port: int, *, codecs: str = "0 101", host: str = "127.0.0.1",
              extra: str = "") -> str:
    lines = [
        "v=0", f"o=test 1 1 IN IP4 {host}", "s=-", f"c=IN IP4 {host}", "t=0 0",
        f"m=audio {port} RTP/AVP {codecs}", "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-16", "a=sendrecv",
    ]
    return "\r\n".join(lines) + "\r\n" + extra


def sdp_media_address(raw: bytes) -> tuple[str, int]:
    """(c= address, audio port) of the SDP in a SIP message."""
    body = raw.split(b"\r\n\r\n", 1)[1].decode()
    host = re.search(r"^c=IN IP4 (\S+)", body, re.M)
    port = re.search(r"^m=audio (\d+)", body, re.M)
    assert host and port, body
    return host.group(1), int(port.group(1))
