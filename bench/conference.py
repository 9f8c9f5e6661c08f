"""Conference rooms through the gateway: MCU participants per core in 10-party rooms with every
frame on time, SFU forwarded streams per core, and CPU per participant as one MCU room grows;
each against plain 2-party calls through the same gateway in the same run.

Topology (127.0.0.1; the gateway pinned to CPU 0, everything else to CPU 1)::

    party socket i --RTP (PCMU or Opus)--> gateway room port i   (dial plan conference:NAME)
          ^                                        |  MCU: N-1 mix in the party's codec
          +----------------------------------------+  SFU: the loudest parties' Opus packets

    reference: generator --PCMU--> gateway ==transcode or relay==> SIPp -rtp_echo (and back)

Parties are placed from one SIP socket (one INVITE each, its own RTP port; the dial plan sends
the room's number to ``conference:NAME``) and driven by one loop: paced 20 ms RTP on every
party, spread over 1 ms slots, each talking party a steady tone at its own frequency and level
(-16 to -20.5 dBov, so the loudest-speaker choice is stable), received packets counted per
party (kernel receive times for the MCU's timing, SSRCs per receiver for the SFU).

Two talk patterns for the MCU: *all talking* (every party its tone: the worst case, every
mixed party needs its own N-1 encode) and the *conversation* (``--talkers N``, default 2:
per room N parties talk, PCMU and Opus alternately, the others send line noise at -70 dBov,
Gaussian, 100-3400 Hz, in their codec, under the mixer's -65 dBov gate, so they hear the
common mix, encoded once per codec; checked at start with the gateway's own decoders).

A room run's measured window is from one status-file write to the one 10 s later, the parties
sending all along (warm-up before it): the CPU, late ticks and the rooms' ``shared_encodes``
are differences over exactly that window.

0. ``idle``: the gateway's own CPU with no call for a few seconds (status file, timers): the
   fixed cost under every figure below.
1. ``mcu`` (all talking) and ``mcu-talkers`` (the conversation), interleaved step by step:
   R rooms of 10 parties, R = 3, 6, 10, 15, 20, 30 (``--mix pcmu``: 10, 20, 30, 40, 50)
   until late ticks appear (a failing step is run once more at once; the series stops when
   that fails too), a party gets under 95% of its 50 packets/s, or the gateway's core
   saturates. Per step: the gateway's CPU (its core's share), its ``media_late_ticks`` over
   the window, the rooms' shared encodes, packets/s received per party, frames later than
   30 ms; then, back to back, one reference run for both series: P/2 transcoded PCMU <-> Opus
   calls (P streams decoded and encoded, as P parties). Participants per core = P / CPU share
   at the largest step with 0 late ticks, repeated there (median of ``--repeats``; py-spy
   profiles the last repeat of each series; the conversation's repeats have no reference runs
   of their own); also the marginal cost, the least-squares slope of CPU over participants
   across the passing steps (the fixed cost left out). ``--mix`` sets the rooms' composition:
   ``7pcmu3opus`` (default: 7 PCMU + 3 Opus, the rooms mix at 16 kHz, every PCMU party
   resampled 8 <-> 16 kHz), ``pcmu`` (10 PCMU: the rooms mix at 8 kHz, no resampling and no
   Opus) or ``opus`` (10 Opus: the rooms mix at 48 kHz); the growing room keeps its 30% Opus.
2. ``grow`` and ``grow-talkers``: one MCU room of 3, 5, 10, 20, 30, 50 parties (30% of them
   Opus), all talking, then with the conversation's talkers, ``max_mixed = 8``: CPU per
   participant should stay flat (speaker selection, one shared encode of the common mix per
   codec); reference transcoded calls at 10 and 50 streams.
3. ``sfu``: R rooms of 10 Opus parties in SFU mode (``[conferences.NAME] mode = "sfu"``), each
   sending the RFC 6464 audio level (``a=extmap:1 ...ssrc-audio-level``, one-byte 0xBEDE form)
   so nothing is decoded. Forwarded packets/s (the rooms' ``forwarded`` counters, and counted at
   the receivers) per CPU share; reference: relayed PCMU calls carrying the same packets/s
   through the gateway (in + out). Streams per core as for the MCU: at the largest passing
   step, and from the slope.

Usage: python bench/conference.py [--rooms 3,6,...] [--sfu-rooms 4,8,...] [--sizes 3,5,...]
       [--seconds 10] [--repeats 3] [--talkers 2] [--mix 7pcmu3opus|pcmu|opus]
       [--only mcu,mcu-talkers,grow,grow-talkers,sfu] [--quick]
"""

from __future__ import annotations

import math
import os
import random
import re
import select
import socket
import statistics
import struct
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import mediaload as ml
import numpy as np
from mediaload import LOOPBACK, harness

DEFAULT_ROOMS = (3, 6, 10, 15, 20, 30)
PCMU_ROOMS = (10, 20, 30, 40, 50)  # --mix pcmu's default ladder (no Opus: far cheaper rooms)
DEFAULT_SFU_ROOMS = (4, 8, 12, 16, 20)
DEFAULT_SIZES = (3, 5, 10, 20, 30, 50)
GROW_REFERENCE_SIZES = (10, 50)
QUICK_ROOMS = (1,)
QUICK_SFU_ROOMS = (1,)
QUICK_SIZES = (3, 10)
ROOM_SIZE = 10
# --mix: the Opus positions of each 10-party MCU room (the others PCMU), its description and
# the rate the gateway mixes it at (48 kHz all Opus, 8 kHz all G.711, 16 kHz otherwise)
MIXES: dict[str, tuple[frozenset[int], str, int]] = {
    "7pcmu3opus": (frozenset({7, 8, 9}), "7 PCMU + 3 Opus", 16000),
    "pcmu": (frozenset(), "10 PCMU", 8000),
    "opus": (frozenset(range(10)), "10 Opus", 48000),
}
DEFAULT_MIX = "7pcmu3opus"
GROW_OPUS = frozenset({2, 5, 8})  # position % 10 in the growing room: 30% Opus
MAX_MIXED = 8
MAX_ROOMS = 60
MAX_SIZE = 60
LATE_MS = 30.0
MIN_RX = 0.95  # a party must get this share of its expected packets/s
MAX_CPU = 0.95  # the gateway's core is saturated above this
LEVEL_EXT_ID = 1
AUDIO_LEVEL_URN = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
OPUS_PT = 111
PPS = 50.0  # packets per second of one 20 ms stream
DEFAULT_TALKERS = 2  # the conversation series: talkers per room, the rest send line noise
NOISE_DBOV = -70.0  # a quiet party's line noise (the mixer's gate: -65 dBov)
GATE_DBOV = -65.0  # gateway.media.mixer.SILENT_DBOV, checked against the decoded noise
STATUS_PERIOD = 5.0  # the gateway rewrites its status file every 5 s
WARMUP_TICKS = 25  # 0.5 s of load before a measured window may start

_RTP = struct.Struct("!BBHII")
_TIMESPEC = struct.Struct("qq")

MCU_BASE = 15557770000  # room m{i}: +1555777000i
SFU_BASE = 15557780000  # room s{i}
GROW_BASE = 15557790000  # room g{n}


# --------------------------------------------------------------------------------------------
# the parties' audio


def tone_hz(position: int) -> float:
    """A party's tone: distinct per position in its room, below 3 kHz, whole cycles per
    second (so one second of frames loops seamlessly)."""
    return float(200 + 53 * position)


def tone_dbfs(position: int) -> float:
    """A party's level: -16 dBFS for the first, 0.5 dB quieter for each next one, so the
    loudest-speaker order is stable and everyone is far above the speech floor."""
    return -16.0 - 0.5 * position


def tone_pcm(position: int, rate: int) -> np.ndarray:
    t = np.arange(rate) / rate
    amplitude = 32768.0 * math.sqrt(2.0) * 10 ** (tone_dbfs(position) / 20.0)  # RMS = level
    return np.clip(amplitude * np.sin(2 * np.pi * tone_hz(position) * t), -32768,
                   32767).astype(np.int16)


def noise_pcm(position: int, rate: int) -> np.ndarray:
    """A quiet party's line noise: one second of Gaussian noise band-limited to 100-3400 Hz
    (a telephone line's band, so an Opus party's noise is not mostly above what a 16 kHz room
    hears), ``NOISE_DBOV`` RMS, its own seed per position."""
    rng = np.random.default_rng(1000 + position)
    spectrum = np.fft.rfft(rng.standard_normal(rate))
    hz = np.fft.rfftfreq(rate, 1.0 / rate)
    spectrum[(hz < 100.0) | (hz > 3400.0)] = 0.0
    noise = np.fft.irfft(spectrum, rate)
    noise *= 32768.0 * 10 ** (NOISE_DBOV / 20.0) / math.sqrt(float(np.mean(noise * noise)))
    return np.clip(np.round(noise), -32768, 32767).astype(np.int16)


class Frames:
    """One second (50 frames) of each position's tone (talking) or line noise (quiet), per
    codec, made once."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, int, bool], list[bytes]] = {}

    def get(self, codec: str, position: int, talking: bool = True) -> list[bytes]:
        key = (codec, position, talking)
        frames = self._cache.get(key)
        if frames is None:
            frames = self._cache[key] = self._make(codec, position, talking)
        return frames

    @staticmethod
    def _make(codec: str, position: int, talking: bool) -> list[bytes]:
        make = tone_pcm if talking else noise_pcm
        if codec == "PCMU":
            from rtppeer import ulaw_encode

            pcm = make(position, 8000)
            return [ulaw_encode(pcm[i : i + 160]) for i in range(0, 8000, 160)]
        import opuslib

        encoder = opuslib.Encoder(48000, 1, opuslib.APPLICATION_VOIP)
        pcm = make(position, 48000)
        return [encoder.encode(pcm[i : i + 960].tobytes(), 960) for i in range(0, 48000, 960)]


def noise_levels(positions: Sequence[int], rate: int = 16000) -> dict[str, float]:
    """The loudest decoded frame (dBov) of the quiet parties' noise, per codec, as a room
    mixing at ``rate`` measures it: the gateway's own μ-law decoder and 8 -> ``rate`` resampler,
    its Opus decoder at the room's rate, its level meter (the second pass over the looped
    second, so the decoder and resampler are warm). The gate passes nothing under -65 dBov
    (gateway.media.mixer.SILENT_DBOV), so each must be under it."""
    sys.path.insert(0, str(ml.REPO_ROOT))
    from gateway.media.g711 import ulaw_decode
    from gateway.media.opus import OpusDecoder
    from gateway.media.resample import Resampler
    from gateway.media.speakers import level_dbov

    loudest = {"PCMU": -127.0, "opus": -127.0}
    for position in positions:
        upsample, decoder = Resampler(8000, rate), OpusDecoder(rate)
        pcmu = FRAMES.get("PCMU", position, talking=False)
        opus = FRAMES.get("opus", position, talking=False)
        levels = {"PCMU": [level_dbov(upsample.process(ulaw_decode(b))) for b in pcmu * 2],
                  "opus": [level_dbov(decoder.decode(b)) for b in opus * 2]}
        for codec, values in levels.items():
            loudest[codec] = max(loudest[codec], *values[len(values) // 2 :])
    return loudest


def talk_order(codecs: Sequence[str]) -> list[int]:
    """The positions of a room in the order they are made talkers: PCMU and Opus alternately
    (the first PCMU party, the first Opus party, the second PCMU...), so 2 talkers are one of
    each, each needing its own N-1 encode in its codec besides the common mix's."""
    pcmu = [k for k, codec in enumerate(codecs) if codec == "PCMU"]
    opus = [k for k, codec in enumerate(codecs) if codec != "PCMU"]
    order: list[int] = []
    for k in range(max(len(pcmu), len(opus))):
        order += pcmu[k : k + 1] + opus[k : k + 1]
    return order


def level_extension(position: int) -> bytes:
    """RFC 8285 one-byte header extension (0xBEDE) with the RFC 6464 element: voice, the
    party's level as -dBov; padded to one 32-bit word."""
    level = max(0, min(127, round(-tone_dbfs(position))))
    return struct.pack("!HH", 0xBEDE, 1) + bytes([LEVEL_EXT_ID << 4, 0x80 | level, 0, 0])


# --------------------------------------------------------------------------------------------
# parties: SDP offers, joining the rooms


@dataclass(frozen=True)
class PartySpec:
    """One party: the room it calls (its number), its position there, its codec, whether it
    sends the RFC 6464 level."""

    room: str
    number: str
    position: int
    codec: str  # "PCMU" or "opus"
    level_ext: bool = False
    talking: bool = True  # its tone; else line noise at NOISE_DBOV

    @property
    def pt(self) -> int:
        return 0 if self.codec == "PCMU" else OPUS_PT

    @property
    def ts_step(self) -> int:
        return 160 if self.codec == "PCMU" else 960


def party_offer(port: int, spec: PartySpec) -> str:
    if spec.codec == "PCMU":
        lines = [f"m=audio {port} RTP/AVP 0 101", "a=rtpmap:0 PCMU/8000",
                 "a=rtpmap:101 telephone-event/8000"]
    else:
        lines = [f"m=audio {port} RTP/AVP {OPUS_PT} 101", f"a=rtpmap:{OPUS_PT} opus/48000/2",
                 f"a=fmtp:{OPUS_PT} minptime=10;useinbandfec=1",
                 "a=rtpmap:101 telephone-event/48000"]
    lines.append("a=fmtp:101 0-16")
    if spec.level_ext:
        lines.append(f"a=extmap:{LEVEL_EXT_ID} {AUDIO_LEVEL_URN}")
    head = ["v=0", f"o=bench {port} 1 IN IP4 {LOOPBACK}", "s=-", f"c=IN IP4 {LOOPBACK}",
            "t=0 0"]
    return "\r\n".join([*head, *lines, "a=ptime:20", "a=sendrecv"]) + "\r\n"


class RoomPlacer(ml.CallPlacer):
    """mediaload's CallPlacer with each call's own SDP offer (PCMU or Opus, maybe the RFC
    6464 extmap), calling one room's number."""

    def place_offers(self, ports: Sequence[int], offers: Sequence[str], *, window: int = 20,
                     timeout_s: float = 30.0) -> list[ml.Call]:
        calls = [ml.Call(i, uuid.uuid4().hex, port) for i, port in enumerate(ports)]
        by_id = {c.call_id: c for c in calls}
        pending: set[str] = set()
        queue = list(zip(calls, offers, strict=True))
        deadline = time.monotonic() + timeout_s
        while (queue or pending) and time.monotonic() < deadline:
            while queue and len(pending) < window:
                call, offer = queue.pop(0)
                call.branch = "z9hG4bK" + uuid.uuid4().hex
                req = self.uac.request("INVITE", self.number, call.call_id, call.branch, 1)
                self.uac.send(ml._with_body(req, offer))
                pending.add(call.call_id)
            reply = self.uac.recv(max(0.01, min(1.0, deadline - time.monotonic())))
            if reply is None or reply.status < 200:
                continue
            call_id = reply.header("Call-ID") or ""
            found = by_id.get(call_id)
            cseq = (reply.header("CSeq") or "").split()
            if found is None or cseq[-1:] != ["INVITE"]:
                continue
            self._final(found, reply)
            pending.discard(call_id)
        return calls


@dataclass
class Joined:
    """Parties in their rooms: the specs, their sockets, their calls (per room placer)."""

    specs: list[PartySpec]
    endpoints: ml.Endpoints
    calls: list[ml.Call]
    placers: dict[str, tuple[RoomPlacer, list[ml.Call]]]
    failed: int = 0
    statuses: list[int] = field(default_factory=list)

    def hangup(self) -> int:
        done = 0
        for placer, calls in self.placers.values():
            done += placer.hangup(calls)
        self.endpoints.close()
        return done


def join(rig: ConfRig, specs: list[PartySpec]) -> Joined:
    """Every party calls its room (room by room, 20 INVITEs unanswered at a time)."""
    endpoints = ml.Endpoints(len(specs))
    calls: list[ml.Call | None] = [None] * len(specs)
    placers: dict[str, tuple[RoomPlacer, list[ml.Call]]] = {}
    by_room: dict[str, list[int]] = {}
    for i, spec in enumerate(specs):
        by_room.setdefault(spec.number, []).append(i)
    try:
        for number, indexes in by_room.items():
            placer = RoomPlacer(rig.uacs["conf"], number)
            placed = placer.place_offers(
                [endpoints.ports[i] for i in indexes],
                [party_offer(endpoints.ports[i], specs[i]) for i in indexes])
            placers[number] = (placer, placed)
            for i, call in zip(indexes, placed, strict=True):
                call.index = i
                calls[i] = call
    except BaseException:
        endpoints.close()
        raise
    done = [c for c in calls if c is not None]
    failed = [c for c in done if c.status != 200 or not c.media[1]]
    return Joined(specs, endpoints, done, placers, len(failed),
                  sorted({c.status for c in failed}))


# --------------------------------------------------------------------------------------------
# the parties' load loop


@dataclass
class PartyLoad:
    """What one run of the parties sent and received (counted inside the send window)."""

    parties: int
    seconds: float
    sent: int = 0
    send_errors: int = 0
    window_s: float = 0.0
    elapsed_s: float = 0.0
    received: list[int] = field(default_factory=list)  # RTP packets per party in the window
    ssrcs: list[int] = field(default_factory=list)  # distinct SSRCs per party (>= 5 packets)
    rtcp: int = 0
    foreign: int = 0
    send_lag_ms: list[float] = field(default_factory=list)
    arrivals: list[list[tuple[int, int]]] = field(default_factory=list)


@dataclass
class Mark:
    """One status-file write seen during the load: when (monotonic, and the file's mtime),
    the gateway's CPU seconds and both cores' counters then, the status itself."""

    mono: float
    written: float
    cpu_s: float
    times: dict[str, list[int]]
    status: dict[str, Any]


class StatusWatch:
    """Polled once per tick by the load loop: a new status file (the gateway rewrites it every
    ``STATUS_PERIOD`` s) becomes a ``Mark``, so the measured window runs from one write to a
    later one with the parties sending all along: every counter difference (late ticks,
    shared encodes...) and the CPU are for the load alone, none of the idle ticks before or
    after it. ``on_start`` runs at the first mark (the profiler)."""

    def __init__(self, gw: harness.GatewayProcess,
                 on_start: Callable[[], None] | None = None) -> None:
        self.gw = gw
        self.path = ml.status_path(gw)
        try:
            self.mtime = self.path.stat().st_mtime_ns
        except OSError:
            self.mtime = 0
        self.marks: list[Mark] = []
        self.on_start = on_start

    def poll(self) -> bool:
        """True when a new status file has been read (and marked)."""
        try:
            mtime = self.path.stat().st_mtime_ns
        except OSError:
            return False
        if mtime == self.mtime:
            return False
        status = ml.read_status(self.gw)
        if not status:
            return False  # being replaced: the next tick reads it
        self.mtime = mtime
        self.marks.append(Mark(time.monotonic(), mtime / 1e9,
                               harness.proc_cpu_seconds(self.gw.pid), ml.cpu_times(), status))
        if len(self.marks) == 1 and self.on_start is not None:
            self.on_start()
        return True


def run_parties(joined: Joined, *, seconds: float, timing: bool, slots: int = 20,
                drain_s: float = 0.2, watch: StatusWatch | None = None) -> PartyLoad:
    """``seconds`` of 20 ms RTP from every party to its room port (tone or noise frames
    cycled, the level extension where negotiated), parties spread over ``slots`` 1 ms slots;
    packets received are counted per party while the parties send (a room keeps sending, so
    no waiting for quiet: ``drain_s`` after the last send, then done). With ``timing``, kernel
    receive times and RTP timestamps per party (for frame lateness). Bounded: ``seconds * 50``
    ticks, at most ``seconds + 5`` s of sending.

    With ``watch``: the parties send from the start, but packets are counted from the first
    status write seen after ``WARMUP_TICKS`` ticks to the first one at least ``seconds - 1``
    s later (2 writes, 10 s, for 10 s), and sending stops there; bounded by ``seconds +
    3 * STATUS_PERIOD`` s of sending (without a closing write the window ends there)."""
    specs, socks = joined.specs, joined.endpoints.socks
    n = len(specs)
    result = PartyLoad(n, seconds)
    frames_of = FRAMES
    payloads = [frames_of.get(s.codec, s.position, s.talking) for s in specs]
    exts = [level_extension(s.position) if s.level_ext else b"" for s in specs]
    first = [0x80 | (0x10 if e else 0) for e in exts]
    dests = [c.media for c in joined.calls]
    ticks = max(1, round(seconds / ml.FRAME_S))
    poller = select.epoll()
    fd_index = {s.fileno(): i for i, s in enumerate(socks)}
    for s in socks:
        poller.register(s.fileno(), select.EPOLLIN)
    groups = [list(range(k, n, slots)) for k in range(slots)]
    slot_dt = ml.FRAME_S / slots
    ssrcs = [random.getrandbits(32) for _ in range(n)]
    seq0 = [random.randrange(0, 30000) for _ in range(n)]
    ts0 = [random.randrange(0, 1 << 30) for _ in range(n)]
    received = [0] * n
    per_ssrc: list[dict[bytes, int]] = [{} for _ in range(n)]
    arrivals: list[list[tuple[int, int]]] = [[] for _ in range(n)]
    counting = [False]
    other = {"rtcp": 0, "foreign": 0}
    header = _RTP.pack
    unhead = _RTP.unpack_from
    timespec = _TIMESPEC.unpack
    mono = time.monotonic
    now_ns = time.time_ns
    lag: list[float] = []

    def receive(events: list[tuple[int, int]]) -> None:
        for fd, _ in events:
            i = fd_index[fd]
            sock = socks[i]
            for _ in range(512):
                try:
                    if timing:
                        data, anc, _flags, _addr = sock.recvmsg(2048, 64)
                    else:
                        data = sock.recv(2048)
                except BlockingIOError:
                    break
                except OSError:
                    other["foreign"] += 1
                    continue
                if len(data) < 12:
                    other["foreign"] += 1
                    continue
                if 192 <= data[1] <= 223:
                    other["rtcp"] += 1
                    continue
                if not counting[0]:
                    continue
                received[i] += 1
                key = data[8:12]
                seen = per_ssrc[i]
                seen[key] = seen.get(key, 0) + 1
                if timing:
                    rx = 0
                    for level, kind, raw in anc:
                        if level == socket.SOL_SOCKET and kind == ml.SCM_TIMESTAMPNS:
                            sec, nsec = timespec(raw[:16])
                            rx = sec * 1_000_000_000 + nsec
                    arrivals[i].append((unhead(data)[3], rx or now_ns()))

    start = mono() + 0.05
    hard_stop = start + seconds + (5.0 if watch is None else 3 * STATUS_PERIOD)
    window_start = start if watch is None else math.nan
    counting[0] = watch is None
    if watch is not None:
        ticks = round((hard_stop - start) / ml.FRAME_S)
    sent = errors = 0
    try:
        for k in range(ticks):
            tick_at = start + k * ml.FRAME_S
            if watch is not None and k >= WARMUP_TICKS and watch.poll():
                if not counting[0]:
                    counting[0] = True
                    window_start = mono()
                elif mono() - window_start >= seconds - 1.0:
                    break
            for slot in range(slots):
                due = tick_at + slot * slot_dt
                while True:
                    left = due - mono()
                    if left <= 0:
                        break
                    receive(poller.poll(left))
                group = groups[slot]
                if not group:
                    continue
                lag.append((mono() - due) * 1000.0)
                for i in group:
                    spec = specs[i]
                    frames = payloads[i]
                    packet = header(first[i], spec.pt | (0x80 if k == 0 else 0),
                                    (seq0[i] + k) & 0xFFFF,
                                    (ts0[i] + spec.ts_step * k) & 0xFFFFFFFF,
                                    ssrcs[i]) + exts[i] + frames[k % len(frames)]
                    try:
                        socks[i].sendto(packet, dests[i])
                    except OSError:
                        errors += 1
                        continue
                    sent += 1
            if mono() > hard_stop:
                break
        # the last tick's frames are still on their way: count 20 ms more
        end = mono() + ml.FRAME_S
        while (left := end - mono()) > 0:
            receive(poller.poll(left))
        result.window_s = mono() - window_start if counting[0] else 0.0
        counting[0] = False
        drain_until = mono() + drain_s
        while (left := drain_until - mono()) > 0:
            receive(poller.poll(min(left, 0.05)))
    finally:
        poller.close()
    result.elapsed_s = mono() - start
    result.sent = sent
    result.send_errors = errors
    result.received = received
    result.ssrcs = [sum(1 for c in seen.values() if c >= 5) for seen in per_ssrc]
    result.rtcp = other["rtcp"]
    result.foreign = other["foreign"]
    result.arrivals = arrivals
    result.send_lag_ms = [ml.percentile(lag, 50), ml.percentile(lag, 99),
                          max(lag) if lag else 0.0]
    return result


FRAMES = Frames()


# --------------------------------------------------------------------------------------------
# the rig: the gateway with rooms, and the reference callers and callees


class ConfRig:
    """The gateway with its rooms (trunk ``conf``: the parties' SIP socket; rooms ``m0..``
    MCU, ``s0..`` SFU, ``g3..`` growing MCU), plus the reference: trunk ``tcaller`` (PCMU)
    routed to SIPp ``uas_opus`` (trunk ``uasopus``, Opus only: every call transcoded) and
    trunk ``rcaller`` (PCMU) routed to SIPp ``uas`` (trunk ``uaspcmu``: relayed); both SIPp
    callees echo RTP. The gateway on CPU 0, the rest on CPU 1."""

    def __init__(self, workdir: Path, *, fresh: bool = True) -> None:
        self.workdir = workdir
        self.fresh = fresh  # wait for a new status file around each run (late ticks exact)
        self.uacs = {name: ml.RawUac(1) for name in ("conf", "tcaller", "rcaller")}
        self.opus_callee: harness.SippServer | None = None
        self.pcmu_callee: harness.SippServer | None = None
        self.opus_echo = self.pcmu_echo = 0
        self.gateway: harness.GatewayProcess | None = None
        self.pinned = False
        self.log_tail = ""

    @staticmethod
    def dialplan() -> str:
        rules: list[str] = []

        def rule(name: str, number: str, action: str, trunk: str = "conf") -> None:
            rules.append(f'[[inbound]]\nname = "{name}"\nmatch = \'^\\+{number}$\'\n'
                         f'from_trunk = "{trunk}"\naction = "{action}"\n')

        for i in range(MAX_ROOMS):
            rule(f"m{i}", str(MCU_BASE + i), f"conference:m{i}")
            rule(f"s{i}", str(SFU_BASE + i), f"conference:s{i}")
        for n in range(1, MAX_SIZE + 1):
            rule(f"g{n}", str(GROW_BASE + n), f"conference:g{n}")
        rules.append('[[inbound]]\nname = "transcoded"\nmatch = \'.*\'\n'
                     'from_trunk = "tcaller"\naction = "trunk:uasopus"\n')
        rules.append('[[inbound]]\nname = "relayed"\nmatch = \'.*\'\n'
                     'from_trunk = "rcaller"\naction = "trunk:uaspcmu"\n')
        return "\n".join(rules)

    def start(self) -> ConfRig:
        self.opus_callee, self.opus_echo = ml.start_echo_callee("uas_opus",
                                                                 self.workdir / "uas_opus")
        self.pcmu_callee, self.pcmu_echo = ml.start_echo_callee("uas", self.workdir / "uas")
        conf, tcaller, rcaller = (self.uacs[n] for n in ("conf", "tcaller", "rcaller"))
        trunks = [
            harness.TrunkSpec("conf", conf.port, inbound_from=(f"{LOOPBACK}:{conf.port}",),
                              codecs=("PCMU", "PCMA", "opus")),
            ml.caller_trunk("tcaller", tcaller),
            ml.caller_trunk("rcaller", rcaller),
            harness.TrunkSpec("uasopus", self.opus_callee.port,
                              inbound_from=(f"{LOOPBACK}:{self.opus_callee.port}",),
                              codecs=("opus",)),
            harness.TrunkSpec("uaspcmu", self.pcmu_callee.port,
                              inbound_from=(f"{LOOPBACK}:{self.pcmu_callee.port}",),
                              codecs=("PCMU",)),
        ]
        media = {"address": LOOPBACK, "port_range": ml.media_port_range(),
                 "max_mixed": MAX_MIXED, "conference_mode": "mcu"}
        gateway = harness.GatewayProcess(
            self.workdir / "gateway", trunks=trunks, dialplan=self.dialplan(),
            extra_config={"log": {"level": "warning"}, "media": media,
                          "conferences": {f"s{i}": {"mode": "sfu"} for i in range(MAX_ROOMS)}})
        gateway.media_port_range = list(media["port_range"])  # type: ignore[arg-type]
        self.gateway = gateway.start()
        for uac in self.uacs.values():
            uac.gateway = (LOOPBACK, gateway.sip_udp)
        gw_cpus, other_cpus = ml.cpu_plan()
        self.pinned = (ml.pin(gateway.pid, gw_cpus) and ml.pin(self.opus_callee.pid, other_cpus)
                       and ml.pin(self.pcmu_callee.pid, other_cpus)
                       and ml.pin(os.getpid(), other_cpus))
        return self

    @property
    def gw(self) -> harness.GatewayProcess:
        if self.gateway is None:
            raise harness.HarnessError("the rig is not started")
        return self.gateway

    def status(self) -> dict[str, Any]:
        return ml.fresh_status(self.gw) if self.fresh else ml.read_status(self.gw)

    def running(self) -> bool:
        return self.gateway is not None and self.gateway.running()

    @property
    def cores(self) -> str:
        if self.pinned:
            return "gateway pinned to CPU 0; SIPp, the parties/generator and py-spy to CPU 1"
        return "not pinned (fewer than 2 CPUs, or refused)"

    def log_problems(self, limit: int = 30) -> list[str]:
        """WARNING/ERROR/CRITICAL lines and tracebacks of the gateway's log so far."""
        try:
            text = self.gw.log_path.read_text(errors="replace")
        except OSError:
            return []
        lines = [line for line in text.splitlines()
                 if re.search(r"\b(WARNING|ERROR|CRITICAL)\b|Traceback", line)]
        return lines[:limit]

    def stop(self) -> str:
        tail = ""
        if self.gateway is not None:
            self.gateway.stop(5.0)
            tail = self.gateway.log_tail(3000)
        for callee in (self.opus_callee, self.pcmu_callee):
            if callee is not None:
                callee.stop()
        for uac in self.uacs.values():
            uac.close()
        return tail


# --------------------------------------------------------------------------------------------
# one measured run (rooms or reference calls)


@dataclass
class Run:
    """One measured load run through the gateway."""

    kind: str  # mcu, sfu, grow, transcoded, relayed
    label: str  # e.g. "6 rooms x 10"
    parties: int  # participants (rooms) or calls (reference)
    streams: int  # inbound streams the gateway handles (parties, or 2 per call)
    seconds: float
    setup_failed: int = 0
    cpu_s: float = 0.0
    elapsed_s: float = 0.0
    window_s: float = 0.0
    cpu0: dict[str, float] = field(default_factory=dict)
    cpu1_busy: float = math.nan  # the other core's busy share (the parties' generator, SIPp)
    late_ticks: int = -1
    status: dict[str, Any] = field(default_factory=dict)
    rooms: list[dict[str, Any]] = field(default_factory=list)
    forwarded: int = 0  # the rooms' forwarded counters over the run (SFU)
    shared_encodes: int = 0  # over the run
    status_span_s: float = 0.0
    sent: int = 0
    rx_pps_min: float = math.nan  # per party (rooms) or per call (reference)
    rx_pps_median: float = math.nan
    rx_total: int = 0
    ssrcs_min: int = 0
    ssrcs_max: int = 0
    timing: dict[str, float] = field(default_factory=dict)
    send_lag_p99_ms: float = math.nan
    expected_pps: float = PPS
    talkers: int | None = None  # parties per room sending their tone (None: all of them)
    mix: str = DEFAULT_MIX  # MCU rooms' composition (MIXES)
    note: str = ""

    @property
    def pattern(self) -> str:
        return talk_pattern(self.talkers)

    @property
    def shared_pps(self) -> float:
        """The rooms' shared encodes per second over the measured window (with the status
        watch: between two status writes, all under load)."""
        return self.shared_encodes / self.status_span_s if self.status_span_s else math.nan

    @property
    def cpu_share(self) -> float:
        return self.cpu_s / self.elapsed_s if self.elapsed_s else math.nan

    @property
    def ms_per_stream_second(self) -> float:
        """Gateway CPU ms per participant-second (rooms) or per stream-second (reference:
        2 streams per call, each decoded/encoded or relayed once)."""
        span = self.window_s or self.elapsed_s
        return self.cpu_s * 1000.0 / (self.streams * span) if span and self.streams else math.nan

    @property
    def per_core(self) -> float:
        """Participants (streams) per core, extrapolated linearly from the CPU share."""
        return self.streams / self.cpu_share if self.cpu_share else math.nan

    @property
    def forwarded_pps(self) -> float:
        return self.forwarded / self.window_s if self.window_s else math.nan

    @property
    def rx_ok(self) -> bool:
        return self.rx_pps_min >= MIN_RX * self.expected_pps

    @property
    def passed(self) -> bool:
        return (self.setup_failed == 0 and self.late_ticks == 0 and self.rx_ok
                and not self.status.get("media_handler_errors", 0))

    @property
    def saturated(self) -> bool:
        return self.cpu_share > MAX_CPU


def _rooms_delta(before: Sequence[dict[str, Any]], after: Sequence[dict[str, Any]],
                 key: str) -> int:
    old = {r.get("name"): r.get(key, 0) for r in before}
    return sum(int(r.get(key, 0)) - int(old.get(r.get("name"), 0)) for r in after)


def measure_rooms(rig: ConfRig, run: Run, specs: list[PartySpec], *, timing: bool,
                  expected_pps: Callable[[Run], float] | None = None,
                  profiler_out: Path | None = None, profile_s: float = 0.0) -> tuple[Run, Any]:
    """Parties join, the load runs; the window measured (CPU, status counters, packets) is
    from one status-file write to a later one while everyone sends (``StatusWatch``); with
    ``rig.fresh`` off (--quick) it is the load itself, the status read before and after
    without waiting for fresh ones. Then everyone hangs up."""
    gw = rig.gw
    top: Any = None
    joined = join(rig, specs)
    try:
        run.setup_failed = joined.failed
        if joined.failed:
            run.note = f"{joined.failed} parties not joined (statuses {joined.statuses})"
            return run, None
        joined.endpoints.drain()
        profilers: list[ml.Profiler] = []

        def start_profiler() -> None:
            if profiler_out is not None:
                profilers.append(ml.Profiler(gw.pid, profile_s, profiler_out,
                                             ml.cpu_plan()[1]))

        if rig.fresh:
            watch = StatusWatch(gw, start_profiler)
            load = run_parties(joined, seconds=run.seconds, timing=timing, watch=watch)
            if len(watch.marks) < 2 or not load.window_s:
                run.note = (f"no measured window: {len(watch.marks)} status writes seen "
                            "during the load")
                for profiler in profilers:
                    profiler.wait()
                return run, None
            first, last = watch.marks[0], watch.marks[-1]
        else:
            t0 = time.monotonic()
            before = rig.status()
            start_profiler()
            first = Mark(time.monotonic(), 0.0, harness.proc_cpu_seconds(gw.pid),
                         ml.cpu_times(), before)
            load = run_parties(joined, seconds=run.seconds, timing=timing)
            last = Mark(time.monotonic(), 0.0, harness.proc_cpu_seconds(gw.pid),
                        ml.cpu_times(), {})
            last.status = rig.status()
            first.written, last.written = t0, time.monotonic()
        before, after = first.status, last.status
        run.cpu_s = last.cpu_s - first.cpu_s
        times0, times1 = first.times, last.times
        run.cpu0 = ml.cpu_breakdown(times0, times1, f"cpu{min(ml.cpu_plan()[0])}")
        run.cpu1_busy = ml.cpu_breakdown(times0, times1, f"cpu{min(ml.cpu_plan()[1])}").get(
            "busy", math.nan)
        run.elapsed_s = last.mono - first.mono
        run.window_s = load.window_s
        for profiler in profilers:
            if profiler.wait() and profiler_out is not None:
                top = ml.profile_top(profiler_out)
            else:
                run.note = f"profile failed: {profiler.error}"
        run.status_span_s = last.written - first.written
        run.status = ml.status_delta(before, after)
        run.late_ticks = int(run.status.get("media_late_ticks", -1))
        rooms_before = before.get("rooms", []) or []
        rooms_after = [r for r in after.get("rooms", []) or []
                       if r.get("name") in {s.room for s in specs}]
        run.rooms = rooms_after
        run.forwarded = _rooms_delta(rooms_before, rooms_after, "forwarded")
        run.shared_encodes = _rooms_delta(rooms_before, rooms_after, "shared_encodes")
        run.sent = load.sent
        run.send_lag_p99_ms = load.send_lag_ms[1]
        window = load.window_s or 1.0
        pps = [r / window for r in load.received]
        run.rx_total = sum(load.received)
        run.rx_pps_min = min(pps) if pps else math.nan
        run.rx_pps_median = statistics.median(pps) if pps else math.nan
        run.ssrcs_min = min(load.ssrcs) if load.ssrcs else 0
        run.ssrcs_max = max(load.ssrcs) if load.ssrcs else 0
        if timing:
            pcmu = [a for a, s in zip(load.arrivals, specs, strict=True) if s.codec == "PCMU"]
            opus = [a for a, s in zip(load.arrivals, specs, strict=True) if s.codec == "opus"]
            t_pcmu = ml.frame_timing(pcmu, clock=8000, late_ms=LATE_MS)
            t_opus = ml.frame_timing(opus, clock=48000, late_ms=LATE_MS)
            run.timing = {
                "frames": t_pcmu["frames"] + t_opus["frames"],
                "late": t_pcmu["late"] + t_opus["late"],
                "p99_ms": max(t_pcmu["p99_ms"], t_opus["p99_ms"]) if t_opus["frames"]
                else t_pcmu["p99_ms"],
                "max_ms": np.nanmax([t_pcmu["max_ms"], t_opus["max_ms"]]).item(),
            }
        if expected_pps is not None:
            run.expected_pps = expected_pps(run)
    finally:
        joined.hangup()
    return run, top


def measure_reference(rig: ConfRig, run: Run, *, transcoded: bool) -> Run:
    """``run.parties`` 2-party calls (PCMU from the generator; transcoded to Opus toward SIPp
    ``uas_opus``, or relayed to SIPp ``uas``), both echoed back: the load through the gateway
    only, CPU and status around it."""
    gw = rig.gw
    placer = ml.CallPlacer(rig.uacs["tcaller" if transcoded else "rcaller"])
    endpoints = ml.Endpoints(run.parties)
    try:
        calls = placer.place(endpoints.ports)
        ok = [c for c in calls if c.status == 200 and c.media[1]]
        run.setup_failed = run.parties - len(ok)
        if run.setup_failed:
            run.note = (f"{run.setup_failed} calls not set up (statuses "
                        f"{sorted({c.status for c in calls if c not in ok})})")
            placer.hangup(calls)
            return run
        endpoints.drain()
        t0 = time.monotonic()
        before = rig.status()
        seconds = run.seconds
        if rig.fresh:
            # end the load before the second status write from here (not just after it):
            # the run then takes 2 status periods instead of 3
            with_tail = 0.8  # run_load's quiet time after the last send, and margin
            written = status_written(rig.gw) or time.time()
            seconds = max(3.0, min(seconds,
                                   written + 2 * STATUS_PERIOD - time.time() - with_tail))
        times0 = ml.cpu_times()
        cpu0 = harness.proc_cpu_seconds(gw.pid)
        dests = [c.media for c in calls]
        load = (ml.run_load(endpoints, dests, seconds=seconds, mode="audio", audio=ULAW)
                if transcoded else ml.run_load(endpoints, dests, seconds=seconds))
        run.cpu_s = harness.proc_cpu_seconds(gw.pid) - cpu0
        times1 = ml.cpu_times()
        run.cpu0 = ml.cpu_breakdown(times0, times1, f"cpu{min(ml.cpu_plan()[0])}")
        run.cpu1_busy = ml.cpu_breakdown(times0, times1, f"cpu{min(ml.cpu_plan()[1])}").get(
            "busy", math.nan)
        run.elapsed_s = load.elapsed_s
        run.window_s = (load.last_send_ns - load.first_send_ns) / 1e9 + ml.FRAME_S
        after = rig.status()
        run.status_span_s = time.monotonic() - t0
        run.status = ml.status_delta(before, after)
        run.late_ticks = int(run.status.get("media_late_ticks", -1))
        run.sent = load.sent
        run.send_lag_p99_ms = load.send_lag_ms[1]
        run.rx_total = load.received
        window = run.window_s or 1.0
        if transcoded:
            run.timing = ml.frame_timing(load.arrivals, late_ms=LATE_MS)
            per_call = [len(a) / window for a in load.arrivals]
        else:
            lat = ml.latency_summary(load)
            run.timing = {"lost": load.lost, "p50_ms": lat["p50"], "p99_ms": lat["p99"]}
            per_call = []
        if per_call:
            run.rx_pps_min = min(per_call)
            run.rx_pps_median = statistics.median(per_call)
        else:
            run.rx_pps_min = run.rx_pps_median = load.received / max(1, run.parties) / window
        placer.hangup(calls)
    finally:
        endpoints.close()
    return run


ULAW: list[bytes] = []


def status_written(gw: harness.GatewayProcess) -> float:
    """When the status file was last written (epoch seconds; 0 when there is none)."""
    try:
        return ml.status_path(gw).stat().st_mtime_ns / 1e9
    except OSError:
        return 0.0


def idle_run(rig: ConfRig, seconds: float) -> Run:
    """The gateway with no call at all for ``seconds``: its own CPU (timers, status file)."""
    run = Run("idle", "no calls", 0, 0, seconds)
    times0 = ml.cpu_times()
    cpu0 = harness.proc_cpu_seconds(rig.gw.pid)
    t0 = time.monotonic()
    time.sleep(seconds)
    run.elapsed_s = run.window_s = time.monotonic() - t0
    run.cpu_s = harness.proc_cpu_seconds(rig.gw.pid) - cpu0
    times1 = ml.cpu_times()
    run.cpu0 = ml.cpu_breakdown(times0, times1, f"cpu{min(ml.cpu_plan()[0])}")
    run.cpu1_busy = ml.cpu_breakdown(times0, times1, f"cpu{min(ml.cpu_plan()[1])}").get(
        "busy", math.nan)
    return run


def marginal(points: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """(slope, intercept) of the least-squares line through (count, CPU share) points; NaN
    with fewer than two distinct counts."""
    xs = [x for x, _ in points]
    if len(set(xs)) < 2:
        return math.nan, math.nan
    slope, intercept = np.polyfit(xs, [y for _, y in points], 1)
    return float(slope), float(intercept)


# --------------------------------------------------------------------------------------------
# the three measures


def mcu_specs_codecs(mix: str = DEFAULT_MIX) -> list[str]:
    opus = MIXES[mix][0]
    return ["opus" if k in opus else "PCMU" for k in range(ROOM_SIZE)]


def talk_pattern(talkers: int | None) -> str:
    return "all talking" if talkers is None else f"{talkers} talking"


def talking_positions(codecs: Sequence[str], talkers: int | None) -> set[int]:
    """Who sends a tone in a room whose positions have ``codecs`` (the rest: line noise)."""
    if talkers is None:
        return set(range(len(codecs)))
    return set(talk_order(codecs)[:talkers])


def mcu_specs(rooms: int, talkers: int | None = None,
              mix: str = DEFAULT_MIX) -> list[PartySpec]:
    codecs = mcu_specs_codecs(mix)
    talking = talking_positions(codecs, talkers)
    return [PartySpec(f"m{r}", f"+{MCU_BASE + r}", k, codecs[k], talking=k in talking)
            for r in range(rooms) for k in range(ROOM_SIZE)]


def sfu_specs(rooms: int) -> list[PartySpec]:
    return [PartySpec(f"s{r}", f"+{SFU_BASE + r}", k, "opus", level_ext=True)
            for r in range(rooms) for k in range(ROOM_SIZE)]


def grow_specs(size: int, talkers: int | None = None) -> list[PartySpec]:
    codecs = ["opus" if k % 10 in GROW_OPUS else "PCMU" for k in range(size)]
    talking = talking_positions(codecs, talkers)
    return [PartySpec(f"g{size}", f"+{GROW_BASE + size}", k, codecs[k], talking=k in talking)
            for k in range(size)]


def sfu_expected_out(size: int) -> int:
    """Streams a room of ``size`` talking Opus parties forwards: each receiver gets the
    max_mixed selected parties but itself."""
    selected = min(MAX_MIXED, size)
    return selected * (selected - 1) + (size - selected) * selected


def mcu_run(rig: ConfRig, rooms: int, seconds: float, talkers: int | None = None,
            mix: str = DEFAULT_MIX, **kw: Any) -> tuple[Run, Any]:
    run = Run("mcu", f"{rooms} x {ROOM_SIZE}", rooms * ROOM_SIZE, rooms * ROOM_SIZE,
              seconds, talkers=talkers, mix=mix)
    return measure_rooms(rig, run, mcu_specs(rooms, talkers, mix), timing=True, **kw)


def transcoded_run(rig: ConfRig, streams: int, seconds: float) -> Run:
    calls = max(1, math.ceil(streams / 2))
    run = Run("transcoded", f"{calls} calls", calls, 2 * calls, seconds)
    return measure_reference(rig, run, transcoded=True)


def sfu_run(rig: ConfRig, rooms: int, seconds: float) -> tuple[Run, Any]:
    run = Run("sfu", f"{rooms} x {ROOM_SIZE}", rooms * ROOM_SIZE, rooms * ROOM_SIZE,
              seconds)
    selected = min(MAX_MIXED, ROOM_SIZE)
    return measure_rooms(rig, run, sfu_specs(rooms), timing=False,
                         expected_pps=lambda r: PPS * (selected - 1))


def relayed_run(rig: ConfRig, rooms: int, seconds: float) -> Run:
    """Relayed calls moving the packets/s of ``rooms`` SFU rooms (in + out; 4 streams per
    relayed call, 2 in and 2 out)."""
    through = rooms * (ROOM_SIZE + sfu_expected_out(ROOM_SIZE))
    calls = max(1, min(500, round(through / 4)))
    run = Run("relayed", f"{calls} calls", calls, 2 * calls, seconds)
    return measure_reference(rig, run, transcoded=False)


def grow_run(rig: ConfRig, size: int, seconds: float,
             talkers: int | None = None) -> tuple[Run, Any]:
    run = Run("grow", f"1 room x {size}", size, size, seconds, talkers=talkers)
    return measure_rooms(rig, run, grow_specs(size, talkers), timing=True)


# --------------------------------------------------------------------------------------------
# the report


def median(values: Sequence[float]) -> float:
    clean = [v for v in values if not math.isnan(v)]
    return statistics.median(clean) if clean else math.nan


def f(value: float, digits: int = 2) -> str:
    return ml.fmt(value, digits)


def pct(value: float) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.0%}"


def best_pass(pairs: Sequence[tuple[Run, Run | None]]) -> tuple[Run, Run | None] | None:
    found = None
    for pair in pairs:
        if not pair[0].passed:
            break
        found = pair
    return found


def mcu_section(pairs: Sequence[tuple[Run, Run | None]],
                repeats: Sequence[tuple[Run, Run | None]], number: str = "1",
                talkers: int | None = None, mix: str = DEFAULT_MIX
                ) -> tuple[list[str], dict[str, Any]]:
    who = ("all talking (the worst case)" if talkers is None else
           f"{talkers} talking per room, the others sending line noise at "
           f"{NOISE_DBOV:g} dBov")
    lines = [f"## {number}. MCU: participants per core, 10-party rooms ({MIXES[mix][1]}, "
             f"mixed at {MIXES[mix][2] // 1000} kHz), {who}", ""]
    lines += [
        "| rooms x 10 | participants | gw CPU (core busy) | late ticks | party rx pkt/s min / "
        "median | late > 30 ms / frames (p99 ms) | shared encodes/s per room "
        "| ms per participant-s | participants per "
        "core | ref: transcoded calls | ref CPU | ref late ticks | ref ms per stream-s "
        "| MCU / ref cost |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run, ref in pairs:
        t = run.timing
        rooms = max(1, run.parties // ROOM_SIZE)
        row = (f"| {run.label} | {run.parties} | {pct(run.cpu_share)} "
               f"({pct(run.cpu0.get('busy', math.nan))}) | {run.late_ticks} "
               f"| {f(run.rx_pps_min, 1)} / {f(run.rx_pps_median, 1)} "
               f"| {t.get('late', '-')} / {t.get('frames', '-')} "
               f"({f(t.get('p99_ms', math.nan), 1)}) | {f(run.shared_pps / rooms, 0)} "
               f"| {f(run.ms_per_stream_second, 3)} | {f(run.per_core, 0)} ")
        if ref is not None:
            row += (f"| {ref.parties} | {pct(ref.cpu_share)} | {ref.late_ticks} "
                    f"| {f(ref.ms_per_stream_second, 3)} "
                    f"| {f(run.ms_per_stream_second / ref.ms_per_stream_second, 2)} |")
        else:
            row += "| - | - | - | - | - |"
        if run.note:
            row += f" {run.note}"
        lines.append(row)
    best = best_pass(pairs)
    doc: dict[str, Any] = {}
    lines.append("")
    if best is None:
        lines.append("**No step passed** (0 late ticks, every party >= 95% of 50 packets/s).")
    else:
        chosen = [best, *repeats]
        per_core = [r.per_core for r, _ in chosen]
        ratio = [r.ms_per_stream_second / ref.ms_per_stream_second for r, ref in chosen
                 if ref is not None]
        late = [r.late_ticks for r, _ in chosen]
        ref_core = [ref.per_core for _, ref in chosen if ref is not None]
        shared = [r.shared_pps / max(1, r.parties // ROOM_SIZE) for r, _ in chosen]
        doc = {"talkers": talkers, "mix": mix, "participants": best[0].parties,
               "per_core_runs": per_core,
               "per_core_median": median(per_core), "ratio_runs": ratio,
               "shared_encodes_per_s_per_room_runs": shared,
               "ratio_median": median(ratio), "late_ticks_runs": late,
               "ref_streams_per_core_median": median(ref_core)}
        budget = "met" if median(per_core) >= 300 else "NOT met"
        passing = [(r.parties, r.cpu_share) for r, _ in pairs if r.passed]
        passing += [(r.parties, r.cpu_share) for r, _ in repeats if r.passed]
        slope, intercept = marginal(passing)
        ref_slope, ref_intercept = marginal(
            [(ref.streams, ref.cpu_share) for r, ref in [*pairs, *repeats]
             if ref is not None and r.passed])
        per_core_marginal = 1 / slope if slope > 0 else math.nan
        ref_marginal = 1 / ref_slope if ref_slope > 0 else math.nan
        doc |= {"marginal_per_core": per_core_marginal,
                "fixed_share": intercept,
                "ref_marginal_per_core": 1 / ref_slope if ref_slope > 0 else math.nan}
        lines += [
            f"Largest step with 0 late ticks: **{best[0].label} = {best[0].parties} "
            f"participants**, gateway CPU {pct(best[0].cpu_share)} of its core.",
            f"Participants per core (participants / CPU share, {len(chosen)} run(s) at that "
            f"step: {', '.join(f(v, 0) for v in per_core)}; late ticks "
            f"{', '.join(map(str, late))}): **median {f(median(per_core), 0)}** "
            f"(budget >= 300: {budget}, {talk_pattern(talkers)}, {MIXES[mix][1]}). Shared "
            f"encodes per second per room: {', '.join(f(v, 0) for v in shared)}.",
            f"Reference, transcoded PCMU <-> Opus streams per core at the same stream count: "
            f"median {f(median(ref_core), 0)}; CPU per MCU participant / CPU per transcoded "
            f"stream: median {f(median(ratio), 2)} (runs {', '.join(f(v, 2) for v in ratio)}).",
            f"Marginal cost (least-squares line of CPU share over participants, passing steps): "
            f"{f(slope * 100, 3)}% of the core per participant, fixed {pct(intercept)}: "
            f"**{f(per_core_marginal, 0)} participants per core** on top of the fixed cost; "
            f"transcoded reference {f(ref_marginal, 0)} streams per core (fixed "
            f"{pct(ref_intercept)}).",
        ]
    lines.append("")
    return lines, doc


def sfu_section(pairs: Sequence[tuple[Run, Run | None]]) -> tuple[list[str], dict[str, Any]]:
    lines = ["## 3. SFU: forwarded streams per core, 10-party Opus rooms with RFC 6464 levels",
             ""]
    lines += [
        "| rooms x 10 | gw CPU (core busy) | late ticks | forwarded pkt/s (status) | rx pkt/s "
        "at parties | SSRCs per receiver | receiver pkt/s min / median | forwarded streams "
        "| streams per core | gw us per pkt out | generator core busy | ref: relayed calls "
        "| ref CPU | ref lost | ref us per pkt out | SFU / ref per pkt out |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    docs: list[dict[str, Any]] = []
    for run, ref in pairs:
        window = run.window_s or math.nan
        rx_pps = run.rx_total / window
        streams = rx_pps / PPS  # counted at the receivers, inside the send window
        out_pkts = run.status.get("rtp_packets_out", 0)
        us_out = run.cpu_s * 1e6 / out_pkts if out_pkts else math.nan
        row = (f"| {run.label} | {pct(run.cpu_share)} ({pct(run.cpu0.get('busy', math.nan))}) "
               f"| {run.late_ticks} | {f(run.forwarded_pps, 0)} | {f(rx_pps, 0)} "
               f"| {run.ssrcs_min}-{run.ssrcs_max} "
               f"| {f(run.rx_pps_min, 0)} / {f(run.rx_pps_median, 0)} | {f(streams, 0)} "
               f"| {f(streams / run.cpu_share if run.cpu_share else math.nan, 0)} "
               f"| {f(us_out, 1)} | {pct(run.cpu1_busy)} ")
        ref_us = math.nan
        if ref is not None:
            ref_out = ref.status.get("rtp_packets_out", 0)
            ref_us = ref.cpu_s * 1e6 / ref_out if ref_out else math.nan
            row += (f"| {ref.parties} | {pct(ref.cpu_share)} | {ref.timing.get('lost', '-')} "
                    f"| {f(ref_us, 1)} | {f(us_out / ref_us, 2)} |")
        else:
            row += "| - | - | - | - | - |"
        if run.note:
            row += f" {run.note}"
        lines.append(row)
        docs.append({"rooms": run.parties // ROOM_SIZE, "streams": streams,
                     "streams_per_core": streams / run.cpu_share if run.cpu_share else math.nan,
                     "us_per_pkt_out": us_out, "ref_us_per_pkt_out": ref_us,
                     "passed": run.passed})
    best = best_pass(pairs)
    lines.append("")
    doc: dict[str, Any] = {"steps": docs}
    if best is None:
        lines.append("**No step passed** (0 late ticks, every receiver >= 95% of 7 x 50 "
                     "packets/s).")
    else:
        run = best[0]
        streams = run.rx_total / run.window_s / PPS
        points = [(r.rx_total / r.window_s / PPS, r.cpu_share) for r, _ in pairs
                  if r.passed and r.window_s]
        slope, intercept = marginal(points)
        ref_points = [(ref.status.get("rtp_packets_out", 0) / ref.window_s, ref.cpu_share)
                      for r, ref in pairs if ref is not None and r.passed and ref.window_s]
        ref_slope, ref_intercept = marginal(ref_points)
        doc["best"] = {"rooms": run.parties // ROOM_SIZE, "streams": streams,
                       "streams_per_core": streams / run.cpu_share,
                       "marginal_streams_per_core": 1 / slope if slope > 0 else math.nan,
                       "fixed_share": intercept,
                       "ref_marginal_pkts_out_per_core": (1 / ref_slope if ref_slope > 0
                                                          else math.nan)}
        lines.append(
            f"Largest step passing (0 late ticks, every receiver >= 95% of 7 x 50 pkt/s): "
            f"**{run.label}**, {f(streams, 0)} forwarded streams ({f(streams * PPS, 0)} "
            f"pkt/s received; the rooms' counters: {f(run.forwarded_pps, 0)}) at "
            f"{pct(run.cpu_share)} of the core: **{f(streams / run.cpu_share, 0)} "
            f"forwarded streams per core** (linear extrapolation, fixed cost included).")
        lines.append(
            f"Marginal cost (least-squares line of CPU share over forwarded streams, passing "
            f"steps): fixed {pct(intercept)}, then **"
            f"{f(1 / slope if slope > 0 else math.nan, 0)} forwarded streams per core** "
            f"({f(PPS / slope if slope > 0 else math.nan, 0)} forwarded pkt/s); relayed "
            f"reference: {f(1 / ref_slope if ref_slope > 0 else math.nan, 0)} pkt/s sent per "
            f"core (fixed {pct(ref_intercept)}).")
    lines.append("")
    return lines, doc


def net_ms(run: Run, idle: Run | None) -> float:
    """CPU ms per participant-second (stream-second) with the idle gateway's share taken
    out."""
    if idle is None or not idle.elapsed_s or not run.streams:
        return math.nan
    span = run.window_s or run.elapsed_s
    extra = run.cpu_s - idle.cpu_share * run.elapsed_s
    return extra * 1000.0 / (run.streams * span) if span else math.nan


def grow_section(runs: Sequence[Run], refs: dict[int, Run], idle: Run | None,
                 number: str = "2", talkers: int | None = None
                 ) -> tuple[list[str], dict[str, Any]]:
    lines = [f"## {number}. One MCU room growing (30% Opus, {talk_pattern(talkers)}, "
             f"max_mixed = {MAX_MIXED})", ""]
    lines += [
        "| parties | room rate | mixed | gw CPU (core busy) | late ticks | party rx pkt/s min "
        "/ median | late > 30 ms / frames | shared encodes/s | ms per participant-s "
        "| vs 10 parties | net of idle: ms per participant-s | vs 10 | ref transcoded: ms per "
        "stream-s (net) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    at10 = next((r.ms_per_stream_second for r in runs if r.parties == 10), math.nan)
    net10 = next((net_ms(r, idle) for r in runs if r.parties == 10), math.nan)
    for run in runs:
        room = run.rooms[0] if run.rooms else {}
        ref = refs.get(run.parties)
        t = run.timing
        shared = run.shared_pps
        net = net_ms(run, idle)
        lines.append(
            f"| {run.parties} | {room.get('rate', '-')} | {room.get('mixed', '-')} "
            f"| {pct(run.cpu_share)} ({pct(run.cpu0.get('busy', math.nan))}) | {run.late_ticks} "
            f"| {f(run.rx_pps_min, 1)} / {f(run.rx_pps_median, 1)} "
            f"| {t.get('late', '-')} / {t.get('frames', '-')} | {f(shared, 0)} "
            f"| {f(run.ms_per_stream_second, 3)} | {f(run.ms_per_stream_second / at10, 2)} "
            f"| {f(net, 3)} | {f(net / net10, 2)} "
            f"| {f'{ref.ms_per_stream_second:.3f} ({net_ms(ref, idle):.3f})' if ref else '-'} |"
            + (f" {run.note}" if run.note else ""))
    at50 = next((r.ms_per_stream_second for r in runs if r.parties == 50), math.nan)
    net50 = next((net_ms(r, idle) for r in runs if r.parties == 50), math.nan)
    slope, intercept = marginal([(r.parties, r.cpu_share) for r in runs if r.parties >= 10])
    doc = {"talkers": talkers,
           "ms_per_participant": {r.parties: r.ms_per_stream_second for r in runs},
           "shared_encodes_per_s": {r.parties: r.shared_pps for r in runs},
           "net_ms_per_participant": {r.parties: net_ms(r, idle) for r in runs},
           "ratio_50_vs_10": at50 / at10, "net_ratio_50_vs_10": net50 / net10,
           "slope_share_per_participant": slope, "intercept": intercept}
    lines += ["", f"CPU per participant at 50 parties / at 10 parties: **{f(at50 / at10, 2)}** "
              f"(net of the idle gateway: {f(net50 / net10, 2)}). Least-squares line of CPU "
              f"over parties from 10 up: {f(slope * 1000, 3)} ms CPU per "
              f"participant per second, fixed {pct(intercept)}.", ""]
    return lines, doc


# --------------------------------------------------------------------------------------------
# main


def ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = ml.bench_parser(__doc__)
    parser.add_argument("--rooms", default=None,
                        help="MCU steps: rooms of 10 parties, increasing (default "
                             f"{','.join(map(str, DEFAULT_ROOMS))}; with --mix pcmu "
                             f"{','.join(map(str, PCMU_ROOMS))})")
    parser.add_argument("--mix", default=DEFAULT_MIX, choices=sorted(MIXES),
                        help="the MCU rooms' composition: 7pcmu3opus (7 PCMU + 3 Opus, mixed "
                             "at 16 kHz), pcmu (10 PCMU, 8 kHz), opus (10 Opus, 48 kHz)")
    parser.add_argument("--sfu-rooms", default=",".join(map(str, DEFAULT_SFU_ROOMS)),
                        help="SFU steps: rooms of 10 Opus parties, increasing")
    parser.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)),
                        help="sizes of the growing MCU room")
    parser.add_argument("--seconds", type=float, default=10.0, help="load per run")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs (room + reference) at the largest passing MCU step")
    parser.add_argument("--profile-seconds", type=float, default=8.0,
                        help="py-spy at the largest passing MCU step (0: none)")
    parser.add_argument("--talkers", type=int, default=DEFAULT_TALKERS,
                        help="the conversation series (mcu-talkers, grow-talkers): parties "
                             "per room sending their tone, the others line noise at "
                             f"{NOISE_DBOV:g} dBov (0-{ROOM_SIZE - 1})")
    parser.add_argument("--only", default="mcu,mcu-talkers,grow,grow-talkers,sfu",
                        help="which measures, comma-separated: mcu and grow all talking, "
                             "mcu-talkers and grow-talkers with --talkers, sfu")
    parser.add_argument("--budget", type=float, default=690.0, help="seconds for the whole run")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 1 MCU room, 1 SFU room, rooms of 3 and 10; 3 s each")
    ml.add_output_args(parser, "conference")
    args = parser.parse_args(argv)

    only = {w.strip() for w in args.only.split(",") if w.strip()}
    unknown = only - {"mcu", "mcu-talkers", "grow", "grow-talkers", "sfu"}
    if unknown:
        parser.error(f"unknown measure(s) in --only: {', '.join(sorted(unknown))}")
    talkers = args.talkers
    mix = args.mix
    mix_codecs, mix_rate = mcu_specs_codecs(mix), MIXES[mix][2]
    if not 0 <= talkers < ROOM_SIZE:
        parser.error(f"--talkers must be 0 to {ROOM_SIZE - 1}")
    if args.quick:
        rooms, sfu_rooms, sizes = list(QUICK_ROOMS), list(QUICK_SFU_ROOMS), list(QUICK_SIZES)
        seconds, repeats, profile_s, budget = 3.0, 1, 2.0, 70.0
        grow_refs: tuple[int, ...] = ()
    else:
        if args.rooms is None:
            args.rooms = ",".join(map(str, PCMU_ROOMS if mix == "pcmu" else DEFAULT_ROOMS))
        rooms, sfu_rooms, sizes = ints(args.rooms), ints(args.sfu_rooms), ints(args.sizes)
        seconds, repeats, profile_s, budget = (args.seconds, max(1, args.repeats),
                                               args.profile_seconds, args.budget)
        grow_refs = GROW_REFERENCE_SIZES
    if max(rooms + sfu_rooms, default=0) > MAX_ROOMS or max(sizes, default=0) > MAX_SIZE:
        parser.error(f"at most {MAX_ROOMS} rooms and {MAX_SIZE} parties in a room")
    deadline = time.monotonic() + budget
    started = time.monotonic()

    harness.require_sipp()
    ULAW.extend(ml.ulaw_frames(1.0))
    for k in range(max([ROOM_SIZE, *sizes])):  # the tones and noise, before any timing
        for codec in ("PCMU", "opus"):
            FRAMES.get(codec, k)
            FRAMES.get(codec, k, talking=False)
    # the quiet parties must be under the mixer's gate as the gateway decodes them: at the
    # growing room's 16 kHz, and at the MCU rooms' own rate (--mix)
    noise = noise_levels(range(max([ROOM_SIZE, *sizes])))
    mix_noise = noise if mix_rate == 16000 else noise_levels(range(ROOM_SIZE), mix_rate)
    mix_noise = {c: v for c, v in mix_noise.items() if c in mix_codecs}
    print("quiet parties' noise, loudest decoded 20 ms frame at 16 kHz: "
          + ", ".join(f"{codec} {level:.1f} dBov" for codec, level in noise.items())
          + (f"; in the {MIXES[mix][1]} rooms at {mix_rate // 1000} kHz: " + ", ".join(
              f"{codec} {level:.1f} dBov" for codec, level in mix_noise.items())
             if mix_rate != 16000 else ""), flush=True)
    if max([*noise.values(), *mix_noise.values()]) >= GATE_DBOV:
        print(f"the noise is not under the gate ({GATE_DBOV:g} dBov)", file=sys.stderr)
        return 1
    workdir = Path(tempfile.mkdtemp(prefix="bench-conference-"))
    rig = ConfRig(workdir, fresh=not args.quick)
    errors: list[str] = []
    notes: list[str] = []
    idle: Run | None = None
    mcu_pairs: dict[int | None, list[tuple[Run, Run | None]]] = {}  # by talkers (None: all)
    mcu_repeats: dict[int | None, list[tuple[Run, Run | None]]] = {}
    retried: dict[int | None, list[Run]] = {}  # failed first tries of a ladder step
    sfu_pairs: list[tuple[Run, Run | None]] = []
    grow_runs: dict[int | None, list[Run]] = {}
    grow_ref: dict[int, Run] = {}
    profile_md: list[str] = []
    log_problems: list[str] = []

    def overdue(what: str) -> bool:
        if time.monotonic() > deadline:
            notes.append(f"time budget ({budget:g} s) spent before {what}")
            return True
        if not rig.running():
            errors.append(f"the gateway exited before {what}")
            return True
        return False

    def line(run: Run, ref: Run | None = None) -> str:
        text = (f"{run.kind:>5} {run.label:<14} CPU {pct(run.cpu_share):>4} late ticks "
                f"{run.late_ticks} rx min {f(run.rx_pps_min, 1)} pkt/s "
                f"ms/participant-s {f(run.ms_per_stream_second, 3)}")
        if run.kind in ("mcu", "grow"):
            text += f" ({run.pattern}; shared encodes {f(run.shared_pps, 0)}/s)"
        if run.kind == "sfu":
            text += f" forwarded {f(run.forwarded_pps, 0)} pkt/s SSRCs {run.ssrcs_min}-" \
                    f"{run.ssrcs_max}"
        if run.timing.get("late") is not None:
            text += f" late>30ms {run.timing['late']}/{run.timing['frames']}"
        if ref is not None:
            text += (f" | ref {ref.kind} {ref.label}: CPU {pct(ref.cpu_share)} late ticks "
                     f"{ref.late_ticks} ms/stream-s {f(ref.ms_per_stream_second, 3)}")
        if run.note:
            text += f" [{run.note}]"
        return text

    try:
        rig.start()
        idle = idle_run(rig, 2.0 if args.quick else 6.0)
        print(f"idle gateway: CPU {pct(idle.cpu_share)}", flush=True)
        # the MCU ladder: at each step every series still passing runs (all talking, then
        # the conversation), then one reference run serves both
        ladders = [t for t, name in ((None, "mcu"), (talkers, "mcu-talkers")) if name in only]
        going = list(ladders)
        for r in rooms:
            if not going or overdue(f"{r} MCU rooms"):
                break
            ran: list[Run] = []
            for t in list(going):
                run, _ = mcu_run(rig, r, seconds, t, mix)
                if not run.passed and not run.saturated and rig.running():
                    # other work on the machine can cost a few late ticks: a failing step
                    # is run once more at once, the series stops when that fails too
                    print("retry after " + line(run), flush=True)
                    retried.setdefault(t, []).append(run)
                    run, _ = mcu_run(rig, r, seconds, t, mix)
                    run.note = (run.note + "; " if run.note else "") + "second try"
                ran.append(run)
                if not run.passed or run.saturated:
                    going.remove(t)
            ref = transcoded_run(rig, r * ROOM_SIZE, seconds) if rig.running() else None
            for run in ran:
                mcu_pairs.setdefault(run.talkers, []).append((run, ref))
                print(line(run, ref), flush=True)
        profiling = profile_s > 0 and ml.py_spy_path() is not None
        if profile_s > 0 and not profiling:
            profile_md = ["(no profile: py-spy is not installed)", ""]
        for t in ladders:
            best = best_pass(mcu_pairs.get(t, []))
            if best is None:
                continue
            b = best[0].parties // ROOM_SIZE
            count = max(repeats - 1, 1 if profiling else 0)
            for i in range(count):
                if overdue(f"an MCU repeat ({talk_pattern(t)})"):
                    break
                raw = args.out.with_name(
                    args.out.stem + ("" if t is None else "_talkers") + "_profile.txt")
                last = profiling and i == count - 1
                run, top = mcu_run(rig, b, seconds, t, mix,
                                   profiler_out=raw if last else None,
                                   profile_s=min(profile_s, seconds - 1.0) if last else 0.0)
                # the all-talking repeats keep their reference (the ratio's runs); the
                # conversation's compare with the same step's reference in the ladder
                ref = transcoded_run(rig, run.streams, seconds) if t is None else None
                if i < repeats - 1:
                    mcu_repeats.setdefault(t, []).append((run, ref))
                print(("profiled repeat " if last else "repeat ") + line(run, ref), flush=True)
                if last and top:
                    profile_md += [
                        f"## Profile: the gateway mixing {run.label}, {run.pattern}, py-spy "
                        f"{min(profile_s, seconds - 1.0):g} s, "
                        f"{int(top['samples'][0][1])} samples", "",
                        f"Gateway CPU during the profiled run: {pct(run.cpu_share)} of one "
                        f"core (late ticks {run.late_ticks}; py-spy --nonblocking on the "
                        f"other core). Raw stacks: `{ml.shown(raw)}`.", "",
                        *ml.render_profile(top), ""]
                elif last:
                    errors.append(f"no profile ({run.pattern}: {run.note})")
        # the growing room: each size all talking (references at 10 and 50 streams), then
        # with the conversation's talkers
        patterns = [t for t, name in ((None, "grow"), (talkers, "grow-talkers")) if name in only]
        for n in sizes if patterns else []:
            if overdue(f"a room of {n}"):
                break
            for t in patterns:
                run, _ = grow_run(rig, n, seconds, t)
                grow_runs.setdefault(t, []).append(run)
                ref = None
                if t is None and n in grow_refs and rig.running():
                    ref = grow_ref[n] = transcoded_run(rig, n, seconds)
                print(line(run, ref), flush=True)
        if "sfu" in only:
            for r in sfu_rooms:
                if overdue(f"{r} SFU rooms"):
                    break
                run, _ = sfu_run(rig, r, seconds)
                ref = relayed_run(rig, r, seconds) if rig.running() else None
                sfu_pairs.append((run, ref))
                print(line(run, ref), flush=True)
                if not run.passed or run.saturated:
                    break
    except harness.HarnessError as exc:
        errors.append(str(exc).splitlines()[0])
        print(exc, file=sys.stderr)
    finally:
        if rig.gateway is not None:
            log_problems = rig.log_problems()
        rig.log_tail = rig.stop()

    meta = ml.machine_meta() | {
        "runs": f"{seconds:g} s of load per run; each MCU step (both talk patterns) followed "
                "at once by one reference run of transcoded calls through the same gateway, "
                "each SFU step by relayed calls",
        "cores": rig.cores,
        "MCU rooms": f"--mix {mix}: {MIXES[mix][1]} per 10-party room, mixed at "
                     f"{mix_rate // 1000} kHz (the growing room: 30% Opus, 16 kHz)",
        "parties": "each a steady tone at its own frequency (200 + 53 k Hz) and level "
                   "(-16 - 0.5 k dBov), 20 ms packets, spread over 1 ms slots",
        "talk patterns": f"all talking (every party its tone), and {talkers} talking per room "
                         f"(MCU rooms: positions "
                         f"{sorted(talking_positions(mix_codecs, talkers))} of 10, PCMU and "
                         f"Opus alternately where both), the others line noise at "
                         f"{NOISE_DBOV:g} dBov (Gaussian, 100-3400 Hz) in their codec; loudest "
                         "decoded noise frame at 16 kHz: " + ", ".join(
                             f"{c} {v:.1f} dBov" for c, v in noise.items())
                         + (f"; at the MCU rooms' {mix_rate // 1000} kHz: " + ", ".join(
                             f"{c} {v:.1f} dBov" for c, v in mix_noise.items())
                            if mix_rate != 16000 else "")
                         + f" (the mixer's gate: {GATE_DBOV:g})",
        "window": "rooms: from one status-file write to the one 10 s later with the parties "
                  "sending all along (CPU, late ticks, shared encodes over exactly that); "
                  "references: the load between two status writes",
        "pass": f"0 media_late_ticks over the measured window, every party "
                f">= {MIN_RX:.0%} of its expected packets/s, no media handler error",
        "total time": f"{time.monotonic() - started:.0f} s",
    }
    if args.quick:
        meta["quick"] = ("smoke run: the status file is read without waiting for a fresh one, "
                         "so late ticks, room figures and gateway counters are not exact")
    if idle is not None:
        meta["idle gateway"] = (f"{pct(idle.cpu_share)} of its core with no call "
                                f"({idle.elapsed_s:.0f} s)")
    if notes:
        meta["notes"] = "; ".join(notes)
    if errors:
        meta["errors"] = "; ".join(errors)
    lines = ["# Conference rooms: MCU and SFU through the gateway, against 2-party calls", ""]
    lines += [f"- {k}: {v}" for k, v in meta.items()]
    lines.append("")
    doc: dict[str, Any] = {"meta": meta}
    for t, number in ((None, "1a"), (talkers, "1b")):
        if mcu_pairs.get(t):
            md, doc["mcu" if t is None else "mcu_talkers"] = mcu_section(
                mcu_pairs[t], mcu_repeats.get(t, []), number, t, mix)
            lines += md
            if mcu_repeats.get(t):
                lines += ["Repeats at that step:", ""]
                lines += [f"- {line(r, ref)}" for r, ref in mcu_repeats[t]]
                lines.append("")
            if retried.get(t):
                lines += ["Failed first tries (each step run again at once, its second try "
                          "in the table):", ""]
                lines += [f"- {line(r)}" for r in retried[t]]
                lines.append("")
    for t, number in ((None, "2a"), (talkers, "2b")):
        if grow_runs.get(t):
            md, doc["grow" if t is None else "grow_talkers"] = grow_section(
                grow_runs[t], grow_ref, idle, number, t)
            lines += md
    if sfu_pairs:
        md, doc["sfu"] = sfu_section(sfu_pairs)
        lines += md
    lines += profile_md
    if log_problems:
        lines += ["## Gateway log: warnings and errors", "", "```", *log_problems, "```", ""]

    def run_doc(run: Run | None) -> dict[str, Any] | None:
        if run is None:
            return None
        return asdict(run) | {"cpu_share": run.cpu_share, "passed": run.passed,
                              "ms_per_stream_second": run.ms_per_stream_second,
                              "per_core": run.per_core, "forwarded_pps": run.forwarded_pps}

    def series(t: int | None) -> str:
        return "" if t is None else "_talkers"

    doc["runs"] = {"idle": run_doc(idle),
                   "sfu": [[run_doc(a), run_doc(b)] for a, b in sfu_pairs],
                   "grow_reference": {n: run_doc(r) for n, r in grow_ref.items()}}
    for t, pairs in mcu_pairs.items():
        doc["runs"]["mcu" + series(t)] = [[run_doc(a), run_doc(b)] for a, b in pairs]
    for t, pairs in mcu_repeats.items():
        doc["runs"]["mcu" + series(t) + "_repeats"] = [[run_doc(a), run_doc(b)]
                                                       for a, b in pairs]
    for t, runs in retried.items():
        doc["runs"]["mcu" + series(t) + "_failed_first_tries"] = [run_doc(r) for r in runs]
    for t, runs in grow_runs.items():
        doc["runs"]["grow" + series(t)] = [run_doc(r) for r in runs]
    doc["gateway_log_problems"] = log_problems
    doc["gateway_log_tail"] = rig.log_tail
    ml.publish(args.out, "\n".join(lines), doc, workdir, args.keep)
    broken = any("Traceback" in p for p in log_problems)
    return 1 if errors or broken or not (mcu_pairs or sfu_pairs or grow_runs) else 0


if __name__ == "__main__":
    sys.exit(main())
