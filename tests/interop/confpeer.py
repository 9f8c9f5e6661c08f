"""The test side of a conference room: a phone party that calls in over SIP/UDP, sends its own
tone as RTP at a 20 ms pace (PCMU, PCMA or Opus) and decodes what it receives per SSRC.

Independent of the gateway's code on purpose (so a passing test proves the gateway, not a
shared bug): its own SIP message text (like tests/interop/rawsip.py), its own A-law tables
(μ-law from tests/interop/rtppeer.py), libopus through opuslib's own ``Encoder``/``Decoder``
(not gateway.media.opus), its own RFC 6464 / RFC 8285 and RFC 4733 packing. Loopback only.

- :class:`MediaEndpoint`: one RTP socket (and its RTCP neighbour, bound so nothing else gets
  the gateway's reports). A sender thread emits one packet per 20 ms: the tone, digital
  silence, or nothing (``mode``), RFC 4733 events instead of audio while digits are keyed, and
  with ``level_ext`` the RFC 6464 client-to-mixer audio level in a one-byte RFC 8285 header
  extension. A reader thread keeps every RTP packet with its arrival time; decoding happens on
  demand per SSRC (one codec state per SSRC, packets in arrival order), so a test takes the
  audio of each SSRC that arrived within a time window (:meth:`MediaEndpoint.streams`).
- :class:`SipUa`: the UAC of one party. INVITE with its SDP offer (retransmitted on Timer A
  until any answer), ACK of the final response (RFC 3261 17.1.1.3 for non-2xx, a new
  transaction for 2xx, re-sent when the 2xx is retransmitted), BYE, and a UAS for what the
  gateway sends in the dialog (BYE -> 200 and :attr:`SipUa.bye_received`, re-INVITE -> 200
  with the same SDP, OPTIONS/INFO/UPDATE -> 200).
- :class:`ConfParty`: both, plus the party's name, number (the From user part, E.164) and tone.
- :func:`tone_levels`: the level (dBFS) of each named tone in a signal, via
  :func:`.audio.tone_power_ratio` (the tone's share of the energy within ±20 Hz) times the
  signal's RMS level. A tone at the parties' amplitude is about -19 dBFS; a tone that is not
  there measures -60 dBFS or less (codec noise), :data:`NO_TONE_DBFS` at the floor.
- :func:`continuity_problems`: per SSRC, sequence numbers +1 and timestamps increasing.
"""

from __future__ import annotations

import itertools
import math
import random
import re
import socket
import struct
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import opuslib

from .audio import rms_dbfs, tone_power_ratio
from .rtppeer import ulaw_decode, ulaw_encode

LOOPBACK = "127.0.0.1"
FRAME_S = 0.02
#: What Opus streams are decoded to (tones here stay below 3 kHz; 16 kHz keeps the FFTs and
#: the decoder cheap on a small test machine).
OPUS_DECODE_RATE = 16000
#: The tone amplitude (int16): 4 tones summed by a mixer stay below full scale.
AMPLITUDE = 5000.0
AUDIO_LEVEL_URN = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
#: The level :func:`tone_levels` reports for a tone with no energy at all (dBFS): its floor.
NO_TONE_DBFS = -120.0

FloatArray = npt.NDArray[np.float64]
Int16Array = npt.NDArray[np.int16]
CodecName = Literal["PCMU", "PCMA", "opus"]
Mode = Literal["tone", "silence", "off"]

_RTP = struct.Struct("!BBHII")

# --------------------------------------------------------------------------------------------
# G.711 A-law (ITU-T G.711 table 1a/1b), straight from the segment definition


def alaw_encode(pcm: Int16Array) -> bytes:
    """16-bit linear -> A-law (13-bit magnitude, 8 segments, even bits inverted: XOR 0x55)."""
    x = pcm.astype(np.int32) >> 3  # 13-bit
    sign = np.where(x >= 0, 0x80, 0x00)
    mag = np.where(x >= 0, x, -x - 1)
    mag = np.minimum(mag, 0xFFF)
    exponent = np.where(mag < 32, 0, np.floor(np.log2(np.maximum(mag, 1))).astype(np.int32) - 4)
    exponent = np.clip(exponent, 0, 7)
    mantissa = np.where(exponent == 0, mag >> 1, mag >> exponent) & 0x0F
    code = sign | (exponent << 4) | mantissa
    return bytes((code ^ 0x55).astype(np.uint8).tobytes())


def alaw_decode(data: bytes) -> Int16Array:
    a = np.frombuffer(data, dtype=np.uint8).astype(np.int32) ^ 0x55
    exponent = (a >> 4) & 0x07
    mantissa = a & 0x0F
    mag = np.where(
        exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0)
    )
    return np.where(a & 0x80, mag, -mag).astype(np.int16)


# --------------------------------------------------------------------------------------------
# codecs


@dataclass(frozen=True)
class Codec:
    """One codec of a party's offer: its name, RTP clock, samples per 20 ms at its PCM rate."""

    name: CodecName
    pt: int
    clock: int
    pcm_rate: int

    @property
    def rtpmap(self) -> str:
        if self.name == "opus":
            return f"a=rtpmap:{self.pt} opus/48000/2\r\na=fmtp:{self.pt} minptime=10;useinbandfec=1"
        return f"a=rtpmap:{self.pt} {self.name}/8000"

    @property
    def frame_ticks(self) -> int:
        return round(self.clock * FRAME_S)


def codec(name: CodecName, pt: int | None = None) -> Codec:
    if name == "PCMU":
        return Codec("PCMU", 0 if pt is None else pt, 8000, 8000)
    if name == "PCMA":
        return Codec("PCMA", 8 if pt is None else pt, 8000, 8000)
    return Codec("opus", 111 if pt is None else pt, 48000, 48000)


class _Decoder:
    """One SSRC's decoder: payload -> float samples in [-1, 1) at :attr:`rate`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.rate = OPUS_DECODE_RATE if name == "opus" else 8000
        self._opus = opuslib.Decoder(OPUS_DECODE_RATE, 1) if name == "opus" else None

    def decode(self, payload: bytes) -> FloatArray:
        if self.name == "PCMU":
            pcm = ulaw_decode(payload)
        elif self.name == "PCMA":
            pcm = alaw_decode(payload)
        else:
            assert self._opus is not None
            try:
                raw = self._opus.decode(payload, OPUS_DECODE_RATE * 120 // 1000)
            except Exception:  # opuslib raises OpusError for an undecodable payload
                return np.zeros(0, dtype=np.float64)
            pcm = np.frombuffer(raw, dtype="<i2")
        return np.asarray(pcm, dtype=np.float64) / 32768.0


# --------------------------------------------------------------------------------------------
# RTP: packets, RFC 8285 / RFC 6464 header extension, RFC 4733 events


@dataclass
class RtpIn:
    """One RTP packet as received."""

    at: float
    pt: int
    seq: int
    ts: int
    ssrc: int
    marker: bool
    extension: bytes | None  # profile (2 bytes) + the extension words, when X is set
    csrc_count: int
    payload: bytes
    pcm: FloatArray | None = None  # filled when decoded
    rate: int = 0


def parse_rtp(data: bytes, at: float) -> RtpIn | None:
    """The RTP packet in ``data``; None for RTCP (PT 192-223 in the second byte) or garbage."""
    if len(data) < 12 or data[0] >> 6 != 2 or 192 <= data[1] <= 223:
        return None
    first, second, seq, ts, ssrc = _RTP.unpack_from(data)
    pos = 12 + 4 * (first & 0x0F)
    extension = None
    if first & 0x10:
        if len(data) < pos + 4:
            return None
        words = struct.unpack_from("!H", data, pos + 2)[0]
        end = pos + 4 + 4 * words
        if len(data) < end:
            return None
        extension = data[pos:end]
        pos = end
    end = len(data)
    if first & 0x20 and len(data) > pos:  # padding
        end -= data[-1]
    return RtpIn(at, second & 0x7F, seq, ts, ssrc, bool(second & 0x80), extension,
                 first & 0x0F, data[pos:end])


def build_rtp(pt: int, seq: int, ts: int, ssrc: int, payload: bytes, *, marker: bool = False,
              extension: bytes = b"") -> bytes:
    """An RTP packet; ``extension`` = profile + length + words (sets the X bit)."""
    first = 0x80 | (0x10 if extension else 0)
    second = pt | (0x80 if marker else 0)
    return _RTP.pack(first, second, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + extension + payload


def audio_level_extension(ext_id: int, level: int, voice: bool) -> bytes:
    """RFC 8285 one-byte form (0xBEDE) holding one RFC 6464 element: V bit + level (0..127,
    -dBov), padded to a 32-bit word."""
    if not 1 <= ext_id <= 14:
        raise ValueError(f"one-byte extension ids are 1..14, not {ext_id}")
    element = bytes([ext_id << 4, (0x80 if voice else 0) | max(0, min(127, level))])
    body = element + b"\x00" * (-len(element) % 4)
    return struct.pack("!HH", 0xBEDE, len(body) // 4) + body


def parse_audio_level(extension: bytes | None, ext_id: int) -> tuple[bool, int] | None:
    """(voice, level) of the RFC 6464 element ``ext_id`` in a one-byte-form extension."""
    if extension is None or len(extension) < 4 or extension[:2] != b"\xbe\xde":
        return None
    body = extension[4:]
    pos = 0
    while pos < len(body):
        byte = body[pos]
        if byte == 0:  # padding
            pos += 1
            continue
        ident, length = byte >> 4, (byte & 0x0F) + 1
        if ident == 15 or pos + 1 + length > len(body):
            return None
        if ident == ext_id:
            value = body[pos + 1]
            return bool(value & 0x80), value & 0x7F
        pos += 1 + length
    return None


def dbov(pcm: FloatArray) -> int:
    """RFC 6464 level: -dBov of a frame (0 = full-scale square wave; 127 = silence)."""
    if pcm.size == 0:
        return 127
    rms = float(np.sqrt(np.mean(pcm**2)))
    if rms <= 0.0:
        return 127
    return max(0, min(127, round(-20.0 * math.log10(rms))))


@dataclass(frozen=True)
class DtmfEvent:
    """One RFC 4733 telephone-event packet as received."""

    code: int
    end: bool
    duration: int
    ts: int
    marker: bool


DIGIT_CODES = {**{str(d): d for d in range(10)}, "*": 10, "#": 11,
               **{c: 12 + i for i, c in enumerate("ABCD")}}


def dtmf_events(packets: Iterable[RtpIn], pt: int) -> list[DtmfEvent]:
    return [
        DtmfEvent(p.payload[0], bool(p.payload[1] & 0x80), struct.unpack("!H", p.payload[2:4])[0],
                  p.ts, p.marker)
        for p in packets if p.pt == pt and len(p.payload) >= 4
    ]


def digits_of(events: Sequence[DtmfEvent]) -> str:
    """The digits keyed, one per event timestamp (end packets repeat)."""
    names = {v: k for k, v in DIGIT_CODES.items()}
    out: list[str] = []
    seen: set[int] = set()
    for event in events:
        if event.ts not in seen:
            seen.add(event.ts)
            out.append(names.get(event.code, "?"))
    return "".join(out)


def continuity_problems(packets: Sequence[RtpIn]) -> list[str]:
    """Per SSRC, in arrival order: sequence numbers +1 each time (mod 2**16) and timestamps
    strictly increasing (mod 2**32, less than half the range ahead). One line per breach."""
    problems: list[str] = []
    by_ssrc: dict[int, list[RtpIn]] = {}
    for packet in packets:
        by_ssrc.setdefault(packet.ssrc, []).append(packet)
    for ssrc, chain in by_ssrc.items():
        for a, b in itertools.pairwise(chain):
            if (b.seq - a.seq) % 65536 != 1:
                problems.append(f"ssrc {ssrc:#010x}: seq {a.seq} -> {b.seq}")
            step = (b.ts - a.ts) % 2**32
            if not 0 < step < 2**31:
                problems.append(f"ssrc {ssrc:#010x}: ts {a.ts} -> {b.ts} (seq {b.seq})")
    return problems


# --------------------------------------------------------------------------------------------
# the media endpoint


def bind_rtp_pair(attempts: int = 100) -> tuple[socket.socket, socket.socket]:
    """Two UDP sockets on 127.0.0.1 at an even port and the next one (RTP, RTCP)."""
    for _ in range(attempts):
        rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rtp.bind((LOOPBACK, 0))
        port = rtp.getsockname()[1]
        if port % 2 == 0:
            rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                rtcp.bind((LOOPBACK, port + 1))
            except OSError:
                rtcp.close()
            else:
                return rtp, rtcp
        rtp.close()
    raise OSError(f"no even/odd UDP port pair on {LOOPBACK} after {attempts} attempts")


@dataclass
class Sending:
    """Where and how the sender sends (set once the SDP answer is known)."""

    remote: tuple[str, int]
    pt: int
    te_pt: int | None = None
    te_clock: int = 8000
    level_ext: int | None = None


@dataclass
class Stream:
    """The audio of one SSRC within a window."""

    ssrc: int
    rate: int
    samples: FloatArray
    packets: list[RtpIn] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.rate if self.rate else 0.0


class MediaEndpoint:
    """RTP for one party: sends ``tone_hz`` in ``codec`` once :meth:`start_sending` is called,
    records and decodes (on demand) every SSRC it receives."""

    def __init__(self, tone_hz: float, send_codec: Codec, *, amplitude: float = AMPLITUDE,
                 name: str = "", te_pt: int = 101) -> None:
        self.name = name or f"{tone_hz:g}Hz"
        self.tone_hz = tone_hz
        self.codec = send_codec
        self.te_pt = te_pt
        self.amplitude = amplitude
        self.sock, self.rtcp_sock = bind_rtp_pair()
        self.port: int = self.sock.getsockname()[1]
        self.sock.settimeout(0.1)
        self.mode: Mode = "tone"
        #: Every payload sent (Opus: to check that an SFU forwards them unchanged).
        self.sent_payloads: set[bytes] = set()
        self.sent_packets = 0
        self.ssrc = random.getrandbits(32)
        self._sending: Sending | None = None
        self._restart = False
        self._lock = threading.Lock()
        self._packets: list[RtpIn] = []
        self._decoded = 0
        self._decoders: dict[tuple[int, int], _Decoder] = {}
        self._digits: list[str] = []
        self._digits_done = threading.Event()
        self._digits_done.set()
        self._encoder: Any = None
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read, name=f"rtp-in {self.name}",
                                        daemon=True)
        self._sender = threading.Thread(target=self._send_loop, name=f"rtp-out {self.name}",
                                        daemon=True)
        self._reader.start()
        self._sender.start()

    # -- sending ---------------------------------------------------------------------------

    def start_sending(self, sending: Sending, *, new_ssrc: bool = False) -> None:
        """Send to ``sending.remote`` from the next 20 ms tick on."""
        with self._lock:
            if new_ssrc:
                self.ssrc = random.getrandbits(32)
            self._sending = sending
            self._restart = True

    def stop_sending(self) -> None:
        with self._lock:
            self._sending = None

    @property
    def sending(self) -> Sending | None:
        return self._sending

    def key(self, digits: str, *, timeout: float = 10.0) -> None:
        """Send ``digits`` as RFC 4733 events (100 ms each, 100 ms apart) and return once the
        last end packet is out."""
        if any(d not in DIGIT_CODES for d in digits):
            raise ValueError(f"not DTMF digits: {digits!r}")
        with self._lock:
            self._digits.extend(digits)
            self._digits_done.clear()
        if not self._digits_done.wait(timeout):
            raise AssertionError(f"{self.name}: digits {digits!r} not sent within {timeout} s")

    def _tone_frame(self, index: int) -> FloatArray:
        rate, n = self.codec.pcm_rate, round(self.codec.pcm_rate * FRAME_S)
        t = (np.arange(n) + index * n) / rate
        return self.amplitude / 32768.0 * np.sin(2 * np.pi * self.tone_hz * t)

    def _encode(self, frame: FloatArray) -> bytes:
        pcm = np.round(frame * 32768.0).clip(-32768, 32767).astype(np.int16)
        if self.codec.name == "PCMU":
            return ulaw_encode(pcm)
        if self.codec.name == "PCMA":
            return alaw_encode(pcm)
        if self._encoder is None:
            self._encoder = opuslib.Encoder(48000, 1, "audio")
        payload: bytes = self._encoder.encode(pcm.astype("<i2").tobytes(), len(pcm))
        return payload

    def _send_loop(self) -> None:
        """One tick per 20 ms: an RFC 4733 packet while digits are keyed, else the tone,
        silence or nothing (``mode``). Timestamps advance every tick, sent or not."""
        seq = random.randrange(0, 65536)
        ts = random.getrandbits(32)
        index = 0
        digit: list[bytes] = []  # the rest of the current digit's event payloads
        digit_ts = 0
        first_event = False
        first_audio = True
        gap = 0  # ticks of audio left before the next digit may start
        start = time.monotonic()
        tick = 0
        while not self._stop.is_set():
            tick += 1
            delay = start + tick * FRAME_S - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif delay < -0.2:  # stalled (GIL, loaded machine): restart the pace
                start, tick = time.monotonic(), 0
            with self._lock:
                sending, ssrc = self._sending, self.ssrc
                if self._restart:
                    self._restart, first_audio = False, True
                if not digit and not gap:
                    if self._digits and sending is not None and sending.te_pt is not None:
                        digit = _digit_packets(DIGIT_CODES[self._digits.pop(0)],
                                               sending.te_clock)
                        digit_ts, first_event = ts, True
                    elif not self._digits:
                        self._digits_done.set()
            mode = self.mode
            frame = self._tone_frame(index) if mode == "tone" else np.zeros(
                round(self.codec.pcm_rate * FRAME_S))
            index += 1
            if sending is not None and digit:
                body = digit.pop(0)
                repeat = 3 if not digit else 1  # the end packet goes three times
                for _ in range(repeat):
                    self._sendto(build_rtp(sending.te_pt or 0, seq, digit_ts, ssrc, body,
                                           marker=first_event), sending.remote)
                    seq += 1
                first_event = False
                if not digit:
                    gap = 5
            elif sending is not None and mode != "off":
                payload = self._encode(frame)
                extension = b""
                if sending.level_ext is not None:
                    level = dbov(frame)
                    extension = audio_level_extension(sending.level_ext, level, level < 127)
                self._sendto(build_rtp(sending.pt, seq, ts, ssrc, payload, marker=first_audio,
                                       extension=extension), sending.remote)
                first_audio = False
                if self.codec.name == "opus":
                    self.sent_payloads.add(payload)
                seq += 1
                gap = max(0, gap - 1)
            else:
                gap = max(0, gap - 1)
            ts += self.codec.frame_ticks

    def _sendto(self, data: bytes, remote: tuple[str, int]) -> None:
        try:
            self.sock.sendto(data, remote)
            self.sent_packets += 1
        except OSError:
            pass  # closed meanwhile

    # -- receiving -------------------------------------------------------------------------

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data, _ = self.sock.recvfrom(4096)
            except (TimeoutError, OSError):
                continue
            packet = parse_rtp(data, time.monotonic())
            if packet is not None:
                with self._lock:
                    self._packets.append(packet)

    def codec_of(self, pt: int) -> str | None:
        """The codec a received payload type stands for (this party's offer)."""
        if pt == self.codec.pt:
            return self.codec.name
        return None

    def packets(self, since: float = 0.0, until: float = math.inf,
                ssrc: int | None = None) -> list[RtpIn]:
        """Packets that arrived in [since, until), optionally of one SSRC, arrival order."""
        with self._lock:
            chosen = [p for p in self._packets if since <= p.at < until]
        return [p for p in chosen if ssrc is None or p.ssrc == ssrc]

    def _decode_new(self) -> None:
        with self._lock:
            new = self._packets[self._decoded:]
            self._decoded = len(self._packets)
        for packet in new:
            name = self.codec_of(packet.pt)
            if name is None:
                continue
            decoder = self._decoders.get((packet.ssrc, packet.pt))
            if decoder is None:
                decoder = self._decoders[(packet.ssrc, packet.pt)] = _Decoder(name)
            packet.pcm = decoder.decode(packet.payload)
            packet.rate = decoder.rate

    def streams(self, since: float = 0.0, until: float = math.inf) -> dict[int, Stream]:
        """The decoded audio of each SSRC whose audio packets arrived in [since, until)."""
        self._decode_new()
        out: dict[int, Stream] = {}
        for packet in self.packets(since, until):
            if packet.pcm is None:
                continue
            stream = out.get(packet.ssrc)
            if stream is None:
                stream = out[packet.ssrc] = Stream(packet.ssrc, packet.rate,
                                                   np.zeros(0, dtype=np.float64))
            stream.packets.append(packet)
        for stream in out.values():
            stream.samples = np.concatenate([p.pcm for p in stream.packets if p.pcm is not None])
        return out

    def close(self) -> None:
        self._stop.set()
        self._sender.join(2)
        self._reader.join(2)
        self.sock.close()
        self.rtcp_sock.close()


def _digit_packets(code: int, clock: int, volume: int = 10) -> list[bytes]:
    """RFC 4733 payloads of one 100 ms digit sent every 20 ms: durations 1..5 frames, the last
    with the E bit (sent three times, RFC 4733 section 2.5.1.4); the first goes with the
    marker bit, all with the timestamp of the digit's start (section 2.5.1.2)."""
    frame = round(clock * FRAME_S)
    out = [struct.pack("!BBH", code, volume, frame * i) for i in range(1, 5)]
    out.append(struct.pack("!BBH", code, 0x80 | volume, frame * 5))
    return out


# --------------------------------------------------------------------------------------------
# SIP


_STATUS = re.compile(r"^SIP/2\.0 (\d{3}) ([^\r\n]*)")
_REQUEST = re.compile(r"^([A-Z]+) (\S+) SIP/2\.0$")
_COMPACT = {"i": "call-id", "f": "from", "t": "to", "v": "via", "m": "contact",
            "l": "content-length", "c": "content-type"}


@dataclass
class SipMessage:
    """A parsed SIP message: start line, headers (lower-case names, in order), body."""

    start: str
    headers: list[tuple[str, str]]
    body: bytes
    raw: bytes

    @classmethod
    def parse(cls, data: bytes) -> SipMessage:
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("utf-8", "replace").split("\r\n")
        headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            if line[:1] in (" ", "\t") and headers:  # folded
                name, value = headers[-1]
                headers[-1] = (name, value + " " + line.strip())
                continue
            name, _, value = line.partition(":")
            key = name.strip().lower()
            headers.append((_COMPACT.get(key, key), value.strip()))
        return cls(lines[0], headers, body, data)

    def get(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self.headers if k == name]

    @property
    def status(self) -> int | None:
        m = _STATUS.match(self.start)
        return int(m.group(1)) if m else None

    @property
    def method(self) -> str | None:
        m = _REQUEST.match(self.start)
        return m.group(1) if m else None

    @property
    def cseq(self) -> tuple[int, str]:
        number, _, method = (self.get("cseq") or "0 ?").partition(" ")
        return int(number), method.strip()

    @property
    def to_tag(self) -> str:
        m = re.search(r";\s*tag=([^;\s>]+)", self.get("to") or "")
        return m.group(1) if m else ""


def _uri_of(value: str) -> str:
    m = re.search(r"<([^>]+)>", value)
    return m.group(1) if m else value.split(";")[0].strip()


class SipUa:
    """A UAC on its own UDP socket that places one call at a time to the gateway."""

    def __init__(self, number: str, gateway: tuple[str, int], name: str = "") -> None:
        self.number = number
        self.gateway = gateway
        self.name = name or number
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOOPBACK, 0))
        self.sock.settimeout(0.1)
        self.port: int = self.sock.getsockname()[1]
        self.bye_received = threading.Event()
        self.received: list[SipMessage] = []  # everything, for post-mortems
        self.call_id = ""
        self.local_tag = ""
        self.remote_tag = ""
        self.remote_target = ""
        self.route_set: list[str] = []
        self.cseq = 0
        self.called = ""
        self.sdp = b""
        self._ack: bytes | None = None
        self._cond = threading.Condition()
        self._responses: list[SipMessage] = []
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read, name=f"sip {self.name}", daemon=True)
        self._reader.start()

    @property
    def contact(self) -> str:
        return f"<sip:{self.number}@{LOOPBACK}:{self.port}>"

    def _send(self, data: bytes, dest: tuple[str, int] | None = None) -> None:
        self.sock.sendto(data, dest or self.gateway)

    def _request(self, method: str, uri: str, cseq: int, branch: str, body: bytes = b"",
                 extra: Sequence[str] = ()) -> bytes:
        gw = f"{self.gateway[0]}:{self.gateway[1]}"
        to_tag = f";tag={self.remote_tag}" if self.remote_tag else ""
        lines = [
            f"{method} {uri} SIP/2.0",
            f"Via: SIP/2.0/UDP {LOOPBACK}:{self.port};branch={branch};rport",
            "Max-Forwards: 70",
            f"From: <sip:{self.number}@{LOOPBACK}:{self.port}>;tag={self.local_tag}",
            f"To: <sip:{self.called}@{gw}>{to_tag}",
            f"Call-ID: {self.call_id}",
            f"CSeq: {cseq} {method}",
            f"Contact: {self.contact}",
            *(f"Route: {r}" for r in self.route_set),
            *extra,
            "User-Agent: confpeer",
        ]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    def _take(self, predicate: Any, timeout: float) -> SipMessage | None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i, msg in enumerate(self._responses):
                    if predicate(msg):
                        return self._responses.pop(i)
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(min(left, 0.1))

    def invite(self, called: str, sdp: bytes, timeout: float = 8.0) -> SipMessage | None:
        """Send an INVITE to ``called`` at the gateway; ACK the final response; return it
        (None when none arrived within ``timeout``)."""
        self.call_id = uuid.uuid4().hex + "@confpeer"
        self.local_tag = uuid.uuid4().hex[:12]
        self.remote_tag = ""
        self.route_set = []
        self.called = called
        self.sdp = sdp
        self.cseq = 1
        self._ack = None
        self.bye_received.clear()
        branch = "z9hG4bK" + uuid.uuid4().hex
        uri = f"sip:{called}@{self.gateway[0]}:{self.gateway[1]}"
        data = self._request("INVITE", uri, 1, branch, sdp)
        call_id = self.call_id

        def mine(msg: SipMessage) -> bool:
            return msg.get("call-id") == call_id and msg.cseq == (1, "INVITE")

        deadline = time.monotonic() + timeout
        interval, provisional = 0.5, False
        self._send(data)
        final: SipMessage | None = None
        while final is None and time.monotonic() < deadline:
            wait = min(interval, deadline - time.monotonic())
            msg = self._take(mine, wait)
            if msg is None:
                if not provisional:  # Timer A: retransmit until any response
                    self._send(data)
                    interval = min(interval * 2, 4.0)
                continue
            status = msg.status or 0
            if status < 200:
                provisional = True
            else:
                final = msg
        if final is None:
            return None
        self.remote_tag = final.to_tag
        if (final.status or 0) >= 300:
            ack = self._request("ACK", uri, 1, branch)  # same branch (17.1.1.3)
            self._send(ack)
            return final
        contact = final.get("contact")
        self.remote_target = _uri_of(contact) if contact else uri
        self.route_set = list(reversed([r.strip() for v in final.all("record-route")
                                        for r in v.split(",")]))
        self._ack = self._request("ACK", self.remote_target, 1, "z9hG4bK" + uuid.uuid4().hex)
        self._send(self._ack)
        return final

    def bye(self, timeout: float = 5.0) -> SipMessage | None:
        """BYE in the current dialog; the final response (None when none came)."""
        self.cseq += 1
        cseq, call_id = self.cseq, self.call_id
        data = self._request("BYE", self.remote_target, cseq, "z9hG4bK" + uuid.uuid4().hex)
        self._ack = None

        def mine(msg: SipMessage) -> bool:
            return msg.get("call-id") == call_id and msg.cseq == (cseq, "BYE") and (
                msg.status or 0) >= 200

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._send(data)
            msg = self._take(mine, min(0.5, max(0.0, deadline - time.monotonic())))
            if msg is not None:
                return msg
        return None

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data, source = self.sock.recvfrom(65536)
            except (TimeoutError, OSError):
                continue
            try:
                msg = SipMessage.parse(data)
            except ValueError:
                continue
            self.received.append(msg)
            if msg.status is not None:
                if (msg.cseq[1] == "INVITE" and 200 <= msg.status < 300 and self._ack is not None
                        and msg.get("call-id") == self.call_id):
                    self._send(self._ack)  # the 2xx was retransmitted: our ACK got lost
                    continue
                with self._cond:
                    self._responses.append(msg)
                    self._cond.notify_all()
            elif msg.method is not None:
                self._answer(msg, source)

    def _answer(self, req: SipMessage, source: tuple[str, int]) -> None:
        method = req.method
        if method == "ACK":
            return
        body = b""
        if method == "BYE":
            status, reason = (200, "OK") if req.get("call-id") == self.call_id else (
                481, "Call/Transaction Does Not Exist")
            if status == 200:
                self._ack = None
                self.bye_received.set()
        elif method == "INVITE":
            status, reason, body = 200, "OK", self.sdp
        elif method in ("OPTIONS", "INFO", "UPDATE", "NOTIFY"):
            status, reason = 200, "OK"
        else:
            status, reason = 501, "Not Implemented"
        to = req.get("to") or ""
        if ";tag=" not in to.replace(" ", ""):
            to += f";tag={self.local_tag or 'x'}"
        lines = [f"SIP/2.0 {status} {reason}",
                 *(f"Via: {v}" for v in req.all("via")),
                 f"From: {req.get('from')}", f"To: {to}",
                 f"Call-ID: {req.get('call-id')}", f"CSeq: {req.get('cseq')}"]
        if method == "INVITE":
            lines.append(f"Contact: {self.contact}")
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body)}")
        via = req.get("via") or ""
        m = re.search(r"SIP/2\.0/UDP\s+([^;:\s]+)(?::(\d+))?", via)
        dest = source
        if m and "rport" not in via:
            dest = (m.group(1), int(m.group(2) or 5060))
        self._send(("\r\n".join(lines) + "\r\n\r\n").encode() + body, dest)

    def close(self) -> None:
        self._stop.set()
        self._reader.join(2)
        self.sock.close()


# --------------------------------------------------------------------------------------------
# SDP


def sdp_offer(port: int, send_codec: Codec, *, te_pt: int = 101, level_ext: int | None = None,
              session: int | None = None) -> bytes:
    """An offer of one audio codec plus telephone-event (at the codec's clock), sendrecv."""
    session = session if session is not None else random.randrange(1, 2**31)
    te_clock = 48000 if send_codec.name == "opus" else 8000
    lines = [
        "v=0", f"o=confpeer {session} 1 IN IP4 {LOOPBACK}", "s=confpeer",
        f"c=IN IP4 {LOOPBACK}", "t=0 0",
        f"m=audio {port} RTP/AVP {send_codec.pt} {te_pt}",
        send_codec.rtpmap,
        f"a=rtpmap:{te_pt} telephone-event/{te_clock}", f"a=fmtp:{te_pt} 0-16",
    ]
    if level_ext is not None:
        lines.append(f"a=extmap:{level_ext} {AUDIO_LEVEL_URN}")
    lines += ["a=ptime:20", "a=sendrecv"]
    return ("\r\n".join(lines) + "\r\n").encode()


@dataclass(frozen=True)
class Answer:
    """What a party needs from the gateway's SDP answer."""

    address: str
    port: int
    payload_types: tuple[int, ...]
    rtpmap: Mapping[int, str]  # pt -> "opus/48000/2"
    extmap: Mapping[str, int]  # urn -> id
    text: str

    @classmethod
    def parse(cls, body: bytes) -> Answer:
        text = body.decode("utf-8", "replace")
        host = re.search(r"^c=IN IP4 (\S+)", text, re.M)
        media = re.search(r"^m=audio (\d+) \S+((?: \d+)*)", text, re.M)
        if not host or not media:
            raise ValueError(f"no audio c=/m= line in the answer:\n{text}")
        rtpmap = {int(pt): enc for pt, enc in re.findall(r"^a=rtpmap:(\d+) (\S+)", text, re.M)}
        extmap = {urn: int(ident)
                  for ident, urn in re.findall(r"^a=extmap:(\d+)(?:/\w+)? (\S+)", text, re.M)}
        pts = tuple(int(p) for p in media.group(2).split())
        return cls(host.group(1), int(media.group(1)), pts, rtpmap, extmap, text)

    def pt_of(self, encoding: str) -> int | None:
        """The payload type whose rtpmap encoding name is ``encoding`` (case-insensitive), or
        the static 0/8 for PCMU/PCMA listed without rtpmap."""
        for pt in self.payload_types:
            name = self.rtpmap.get(pt, {0: "PCMU/8000", 8: "PCMA/8000"}.get(pt, ""))
            if name.split("/")[0].lower() == encoding.lower():
                return pt
        return None

    def clock_of(self, pt: int) -> int:
        parts = self.rtpmap.get(pt, "x/8000").split("/")
        return int(parts[1]) if len(parts) > 1 else 8000


# --------------------------------------------------------------------------------------------
# the party


class ConfParty:
    """One phone party of a room: SIP UAC + RTP endpoint, with a name, number and tone."""

    def __init__(self, name: str, number: str, tone_hz: float, codec_name: CodecName = "PCMU",
                 gateway: tuple[str, int] = (LOOPBACK, 5060), *, pt: int | None = None,
                 level_ext: int | None = None, mode: Mode = "tone") -> None:
        self.name = name
        self.number = number
        self.tone_hz = tone_hz
        self.level_ext_offered = level_ext
        self.media = MediaEndpoint(tone_hz, codec(codec_name, pt), name=name)
        self.media.mode = mode
        self.ua = SipUa(number, gateway, name)
        self.answer: Answer | None = None
        self.last_status: int | None = None
        self.joins = 0

    @property
    def codec(self) -> Codec:
        return self.media.codec

    def join(self, called: str, timeout: float = 8.0) -> int:
        """Call ``called`` at the gateway; on 200, start sending to the answer's address.
        Returns the final status (0: no final response)."""
        offer = sdp_offer(self.media.port, self.codec, te_pt=self.media.te_pt,
                          level_ext=self.level_ext_offered)
        final = self.ua.invite(called, offer, timeout)
        self.last_status = final.status if final is not None else 0
        if final is None or self.last_status != 200:
            return self.last_status or 0
        answer = Answer.parse(final.body)
        self.answer = answer
        pt = answer.pt_of(self.codec.name)
        if pt is None:
            raise AssertionError(f"{self.name}: the answer has no {self.codec.name}:\n"
                                 f"{answer.text}")
        te_pt = answer.pt_of("telephone-event")
        level_ext = answer.extmap.get(AUDIO_LEVEL_URN) if self.level_ext_offered else None
        self.media.start_sending(
            Sending((answer.address, answer.port), pt, te_pt,
                    answer.clock_of(te_pt) if te_pt is not None else 8000, level_ext),
            new_ssrc=self.joins > 0)
        self.joins += 1
        return 200

    def leave(self, timeout: float = 5.0) -> int:
        """BYE; returns the status of its final response (0: none)."""
        self.media.stop_sending()
        reply = self.ua.bye(timeout)
        return (reply.status or 0) if reply is not None else 0

    def key(self, digits: str) -> None:
        self.media.key(digits)

    def set_mode(self, mode: Mode) -> None:
        self.media.mode = mode

    def close(self) -> None:
        self.media.close()
        self.ua.close()

    def describe(self) -> str:
        sent = self.media.sending
        return (f"{self.name} ({self.number}, {self.codec.name}/{self.codec.pt}, "
                f"{self.tone_hz:g} Hz): sip :{self.ua.port} rtp :{self.media.port} -> "
                f"{sent.remote if sent else None}, status {self.last_status}, "
                f"{self.media.sent_packets} packets sent, {len(self.media.packets())} received")


# --------------------------------------------------------------------------------------------
# measuring


def tone_levels(samples: FloatArray, rate: int, tones: Mapping[str, float]) -> dict[str, float]:
    """The level (dBFS, sine convention of :func:`.audio.rms_dbfs`) of each tone within
    ±20 Hz; :data:`NO_TONE_DBFS` when there is none (or no signal)."""
    data = np.asarray(samples, dtype=np.float64)
    if len(data) < 64:
        return dict.fromkeys(tones, NO_TONE_DBFS)
    total = rms_dbfs(data - data.mean())
    out: dict[str, float] = {}
    for name, hz in tones.items():
        ratio = tone_power_ratio(data, rate, hz, skip_seconds=0.0) if math.isfinite(total) else 0
        out[name] = total + 10 * math.log10(ratio) if ratio > 0 else NO_TONE_DBFS
        out[name] = max(out[name], NO_TONE_DBFS)
    return out


def format_levels(levels: Mapping[str, float]) -> str:
    return ", ".join(f"{k} {v:.1f}" for k, v in levels.items())
