"""RTP captures for SIPp's ``<exec play_pcap_audio="FILE"/>``: write a tone, read one back.

SIPp (Debian sip-tester 3.6) replays a classic libpcap file (Ethernet / IPv4 / UDP) toward the
media address in the peer's SDP, keeping each packet's RTP header and payload and the capture's
pacing (``prepare_pcap.c``: it skips non-IPv4/IPv6 frames; the destination port is the peer's
port plus the packet's offset from the lowest destination port in the file). A SIPp scenario
takes the file by keyword (``play_pcap_audio="[tone]"`` with ``-key tone /path/to.pcap``; SIPp
substitutes a keyword only when it is the whole attribute value).

- :func:`write_tone_pcap` writes ``seconds`` of a G.711 tone (PCMU by default), 20 ms packets
  (160 samples at 8 kHz), one SSRC, sequence and timestamp running on, marker on the first.
- :func:`write_rtp_pcap` writes any list of (time, RTP datagram) as such a capture.
- :func:`read_rtp_pcap` reads the RTP packets of a capture (the Debian DTMF files included),
  e.g. to check the payload type a scenario must offer as telephone-event.

The μ-law encoder and the tone come from :mod:`.rtppeer` (independent of the gateway's media
code). Everything written is self-consistent (IPv4 header checksum, UDP length and checksum),
so Wireshark and tcpdump read the files too.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .rtppeer import rtp_packet, tone, ulaw_encode

#: Classic libpcap, microsecond timestamps, host byte order written as little endian.
PCAP_MAGIC = 0xA1B2C3D4
LINKTYPE_ETHERNET = 1
#: Where the Debian package puts its RFC 4733 captures (dtmf_2833_<digit>.pcap).
SIPP_PCAP_DIR = Path("/usr/share/sip-tester")

_GLOBAL = struct.Struct("<IHHiIII")
_RECORD = struct.Struct("<IIII")
_ETHERNET = bytes.fromhex("020000000002" "020000000001") + b"\x08\x00"  # dst, src, IPv4
_FRAME_RATE = 8000
_FRAME_SAMPLES = 160  # 20 ms at 8 kHz


@dataclass(frozen=True)
class PcapRtp:
    """One RTP packet found in a capture."""

    time: float
    src_port: int
    dst_port: int
    payload_type: int
    marker: bool
    seq: int
    timestamp: int
    ssrc: int
    payload: bytes


def _checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``."""
    if len(data) % 2:
        data += b"\x00"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _udp_ipv4(payload: bytes, src: tuple[str, int], dst: tuple[str, int], ident: int) -> bytes:
    """An IPv4 packet (no options, TTL 64) carrying one UDP datagram, checksums filled in."""
    src_ip = bytes(int(part) for part in src[0].split("."))
    dst_ip = bytes(int(part) for part in dst[0].split("."))
    udp_len = 8 + len(payload)
    pseudo = src_ip + dst_ip + struct.pack("!BBH", 0, 17, udp_len)
    udp = struct.pack("!HHHH", src[1], dst[1], udp_len, 0) + payload
    udp_sum = _checksum(pseudo + udp) or 0xFFFF  # 0 means "no checksum" in UDP over IPv4
    udp = udp[:6] + struct.pack("!H", udp_sum) + udp[8:]
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, ident & 0xFFFF, 0x4000, 64, 17,
                         0, src_ip, dst_ip)
    header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    return header + udp


def write_rtp_pcap(
    path: Path,
    datagrams: Iterable[tuple[float, bytes]],
    *,
    src: tuple[str, int] = ("127.0.0.1", 40000),
    dst: tuple[str, int] = ("127.0.0.1", 40002),
) -> Path:
    """Write (seconds since the start, RTP datagram) pairs as an Ethernet/IPv4/UDP capture
    from ``src`` to ``dst`` (SIPp replaces both addresses; one destination port keeps every
    packet on the peer's media port). Returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    base = 1_700_000_000.0
    out = [_GLOBAL.pack(PCAP_MAGIC, 2, 4, 0, 0, 65535, LINKTYPE_ETHERNET)]
    for index, (offset, datagram) in enumerate(datagrams):
        frame = _ETHERNET + _udp_ipv4(datagram, src, dst, index)
        micros = round((base + offset) * 1_000_000)
        out.append(_RECORD.pack(micros // 1_000_000, micros % 1_000_000, len(frame), len(frame)))
        out.append(frame)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(b"".join(out))
    tmp.replace(path)
    return path


def write_tone_pcap(
    path: Path,
    hz: float = 1000.0,
    seconds: float = 5.0,
    *,
    payload_type: int = 0,
    amplitude: float = 8000.0,
    ssrc: int = 0x70CE7011,
    seq: int = 4000,
    timestamp: int = 320000,
) -> Path:
    """``seconds`` of a ``hz`` sine as 20 ms PCMU RTP packets (payload type ``payload_type``,
    0 = PCMU/8000), written to ``path`` for ``play_pcap_audio``. Returns ``path``."""
    pcm = tone(hz, seconds, _FRAME_RATE, amplitude)
    frames = len(pcm) // _FRAME_SAMPLES
    datagrams = []
    for i in range(frames):
        chunk = pcm[i * _FRAME_SAMPLES:(i + 1) * _FRAME_SAMPLES]
        datagram = rtp_packet(payload_type, seq + i, timestamp + _FRAME_SAMPLES * i, ssrc,
                              ulaw_encode(chunk), marker=i == 0)
        datagrams.append((i * _FRAME_SAMPLES / _FRAME_RATE, datagram))
    return write_rtp_pcap(path, datagrams)


def read_rtp_pcap(path: Path) -> list[PcapRtp]:
    """The RTP packets (version 2) in a classic libpcap capture of Ethernet frames carrying
    IPv4/UDP; other frames are skipped. ValueError for a file that is not such a capture."""
    blob = Path(path).read_bytes()
    if len(blob) < _GLOBAL.size:
        raise ValueError(f"{path}: {len(blob)} bytes, shorter than a pcap header")
    magic, _, _, _, _, _, linktype = _GLOBAL.unpack_from(blob)
    if magic != PCAP_MAGIC:
        raise ValueError(f"{path}: magic {magic:#x}: not a little-endian microsecond pcap")
    if linktype != LINKTYPE_ETHERNET:
        raise ValueError(f"{path}: link type {linktype}, not Ethernet")
    packets: list[PcapRtp] = []
    pos = _GLOBAL.size
    while pos + _RECORD.size <= len(blob):
        sec, usec, incl, _ = _RECORD.unpack_from(blob, pos)
        frame = blob[pos + _RECORD.size:pos + _RECORD.size + incl]
        pos += _RECORD.size + incl
        if len(frame) < 14 + 20 + 8 + 12 or frame[12:14] != b"\x08\x00":
            continue
        ip = frame[14:]
        ihl = (ip[0] & 0x0F) * 4
        if ip[9] != 17 or len(ip) < ihl + 8 + 12:
            continue
        src_port, dst_port = struct.unpack_from("!HH", ip, ihl)
        rtp = ip[ihl + 8:]
        if rtp[0] >> 6 != 2:
            continue
        seq, ts, ssrc = struct.unpack_from("!HII", rtp, 2)
        cc = rtp[0] & 0x0F
        packets.append(PcapRtp(sec + usec / 1e6, src_port, dst_port, rtp[1] & 0x7F,
                               bool(rtp[1] & 0x80), seq, ts, ssrc, rtp[12 + 4 * cc:]))
    return packets


def sipp_dtmf_pcap(digit: str) -> Path:
    """The Debian sip-tester capture of one RFC 4733 digit (``0``-``9``, ``*``, ``#``)."""
    name = {"*": "star", "#": "pound"}.get(digit, digit)
    return SIPP_PCAP_DIR / f"dtmf_2833_{name}.pcap"
