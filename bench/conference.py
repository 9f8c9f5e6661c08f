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
party, spread over 1 ms slots, each party a steady tone at its own frequency and level (so all
are talking and the loudest-speaker choice is stable), received packets counted per party
(kernel receive times for the MCU's timing, SSRCs per receiver for the SFU).

0. ``idle``: the gateway's own CPU with no call for a few seconds (status file, timers): the
   fixed cost under every figure below.
1. ``mcu``: R rooms of 10 parties (7 PCMU + 3 Opus: the rooms mix at 16 kHz), R = 3, 6, 10,
   15, 20, 30 until late ticks appear, a party gets under 95% of its 50 packets/s, or the
   gateway's core saturates. Per step: the gateway's CPU (its core's share), its
   ``media_late_ticks`` over the step, packets/s received per party, frames later than 30 ms;
   then, back to back, P/2 transcoded PCMU <-> Opus calls (P streams decoded and encoded, as P
   parties) as the reference cost per stream. Participants per core = P / CPU share at the
   largest step with 0 late ticks, repeated there (median of ``--repeats``; py-spy profiles
   the last repeat); also the marginal cost, the least-squares slope of CPU over participants
   across the passing steps (the fixed cost left out).
2. ``grow``: one MCU room of 3, 5, 10, 20, 30, 50 parties (30% of them Opus), all talking,
   ``max_mixed = 8``: CPU per participant should stay flat (speaker selection, one shared
   encode of the common mix per codec); reference transcoded calls at 10 and 50 streams.
3. ``sfu``: R rooms of 10 Opus parties in SFU mode (``[conferences.NAME] mode = "sfu"``), each
   sending the RFC 6464 audio level (``a=extmap:1 ...ssrc-audio-level``, one-byte 0xBEDE form)
   so nothing is decoded. Forwarded packets/s (the rooms' ``forwarded`` counters, and counted at
   the receivers) per CPU share; reference: relayed PCMU calls carrying the same packets/s
   through the gateway (in + out). Streams per core as for the MCU: at the largest passing
   step, and from the slope.

Usage: python bench/conference.py [--rooms 3,6,...] [--sfu-rooms 4,8,...] [--sizes 3,5,...]
       [--seconds 10] [--repeats 3] [--only mcu,grow,sfu] [--quick]
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
DEFAULT_SFU_ROOMS = (4, 8, 12, 16, 20)
DEFAULT_SIZES = (3, 5, 10, 20, 30, 50)
GROW_REFERENCE_SIZES = (10, 50)
QUICK_ROOMS = (1,)
QUICK_SFU_ROOMS = (1,)
QUICK_SIZES = (3, 10)
ROOM_SIZE = 10
OPUS_POSITIONS = frozenset({7, 8, 9})  # 7 PCMU + 3 Opus in each 10-party MCU room
GROW_OPUS = frozenset({2, 5, 8})  # position % 10 in the growing room: 30% Opus
MAX_MIXED = 8
MAX_ROOMS = 40
MAX_SIZE = 60
LATE_MS = 30.0
MIN_RX = 0.95  # a party must get this share of its expected packets/s
MAX_CPU = 0.95  # the gateway's core is saturated above this
LEVEL_EXT_ID = 1
AUDIO_LEVEL_URN = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
OPUS_PT = 111
PPS = 50.0  # packets per second of one 20 ms stream

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


class Frames:
    """One second (50 frames) of each position's tone, per codec, made once."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, int], list[bytes]] = {}

    def get(self, codec: str, position: int) -> list[bytes]:
        key = (codec, position)
        frames = self._cache.get(key)
        if frames is None:
            frames = self._cache[key] = self._make(codec, position)
        return frames

    @staticmethod
    def _make(codec: str, position: int) -> list[bytes]:
        if codec == "PCMU":
            from rtppeer import ulaw_encode

            pcm = tone_pcm(position, 8000)
            return [ulaw_encode(pcm[i : i + 160]) for i in range(0, 8000, 160)]
        import opuslib

        encoder = opuslib.Encoder(48000, 1, opuslib.APPLICATION_VOIP)
        pcm = tone_pcm(position, 48000)
        return [encoder.encode(pcm[i : i + 960].tobytes(), 960) for i in range(0, 48000, 960)]


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


def run_parties(joined: Joined, *, seconds: float, timing: bool, slots: int = 20,
                drain_s: float = 0.2) -> PartyLoad:
    """``seconds`` of 20 ms RTP from every party to its room port (tone frames cycled, the
    level extension where negotiated), parties spread over ``slots`` 1 ms slots; packets
    received are counted per party while the parties send (a room keeps sending, so no
    waiting for quiet: ``drain_s`` after the last send, then done). With ``timing``, kernel
    receive times and RTP timestamps per party (for frame lateness). Bounded: ``seconds * 50``
    ticks, at most ``seconds + 5`` s of sending."""
    specs, socks = joined.specs, joined.endpoints.socks
    n = len(specs)
    result = PartyLoad(n, seconds)
    frames_of = FRAMES
    payloads = [frames_of.get(s.codec, s.position) for s in specs]
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
    hard_stop = start + seconds + 5.0
    sent = errors = 0
    try:
        for k in range(ticks):
            tick_at = start + k * ml.FRAME_S
            for slot in range(slots):
                due = tick_at + slot * slot_dt
                while True:
                    left = due - mono()
                    if left <= 0:
                        break
                    receive(poller.poll(left))
                counting[0] = True
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
        counting[0] = False
        result.window_s = mono() - start
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
    note: str = ""

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
    """Parties join, the status is read, the load runs (CPU measured), the status is read
    again, everyone hangs up."""
    gw = rig.gw
    top: Any = None
    joined = join(rig, specs)
    try:
        run.setup_failed = joined.failed
        if joined.failed:
            run.note = f"{joined.failed} parties not joined (statuses {joined.statuses})"
            return run, None
        joined.endpoints.drain()
        t0 = time.monotonic()
        before = rig.status()
        profiler = (ml.Profiler(gw.pid, profile_s, profiler_out, ml.cpu_plan()[1])
                    if profiler_out is not None else None)
        times0 = ml.cpu_times()
        cpu0 = harness.proc_cpu_seconds(gw.pid)
        load = run_parties(joined, seconds=run.seconds, timing=timing)
        run.cpu_s = harness.proc_cpu_seconds(gw.pid) - cpu0
        times1 = ml.cpu_times()
        run.cpu0 = ml.cpu_breakdown(times0, times1, f"cpu{min(ml.cpu_plan()[0])}")
        run.cpu1_busy = ml.cpu_breakdown(times0, times1, f"cpu{min(ml.cpu_plan()[1])}").get(
            "busy", math.nan)
        run.elapsed_s = load.elapsed_s
        run.window_s = load.window_s
        if profiler is not None and profiler_out is not None:
            if profiler.wait():
                top = ml.profile_top(profiler_out)
            else:
                run.note = f"profile failed: {profiler.error}"
        after = rig.status()
        run.status_span_s = time.monotonic() - t0
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
        times0 = ml.cpu_times()
        cpu0 = harness.proc_cpu_seconds(gw.pid)
        dests = [c.media for c in calls]
        load = (ml.run_load(endpoints, dests, seconds=run.seconds, mode="audio", audio=ULAW)
                if transcoded else ml.run_load(endpoints, dests, seconds=run.seconds))
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


def mcu_specs(rooms: int) -> list[PartySpec]:
    return [PartySpec(f"m{r}", f"+{MCU_BASE + r}", k,
                      "opus" if k in OPUS_POSITIONS else "PCMU")
            for r in range(rooms) for k in range(ROOM_SIZE)]


def sfu_specs(rooms: int) -> list[PartySpec]:
    return [PartySpec(f"s{r}", f"+{SFU_BASE + r}", k, "opus", level_ext=True)
            for r in range(rooms) for k in range(ROOM_SIZE)]


def grow_specs(size: int) -> list[PartySpec]:
    return [PartySpec(f"g{size}", f"+{GROW_BASE + size}", k,
                      "opus" if k % 10 in GROW_OPUS else "PCMU") for k in range(size)]


def sfu_expected_out(size: int) -> int:
    """Streams a room of ``size`` talking Opus parties forwards: each receiver gets the
    max_mixed selected parties but itself."""
    selected = min(MAX_MIXED, size)
    return selected * (selected - 1) + (size - selected) * selected


def mcu_run(rig: ConfRig, rooms: int, seconds: float, **kw: Any) -> tuple[Run, Any]:
    run = Run("mcu", f"{rooms} x {ROOM_SIZE}", rooms * ROOM_SIZE, rooms * ROOM_SIZE,
              seconds)
    return measure_rooms(rig, run, mcu_specs(rooms), timing=True, **kw)


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


def grow_run(rig: ConfRig, size: int, seconds: float) -> tuple[Run, Any]:
    run = Run("grow", f"1 room x {size}", size, size, seconds)
    return measure_rooms(rig, run, grow_specs(size), timing=True)


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
                repeats: Sequence[tuple[Run, Run | None]]) -> tuple[list[str], dict[str, Any]]:
    lines = ["## 1. MCU: participants per core, 10-party rooms (7 PCMU + 3 Opus), all talking",
             ""]
    lines += [
        "| rooms x 10 | participants | gw CPU (core busy) | late ticks | party rx pkt/s min / "
        "median | late > 30 ms / frames (p99 ms) | ms per participant-s | participants per "
        "core | ref: transcoded calls | ref CPU | ref late ticks | ref ms per stream-s "
        "| MCU / ref cost |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run, ref in pairs:
        t = run.timing
        row = (f"| {run.label} | {run.parties} | {pct(run.cpu_share)} "
               f"({pct(run.cpu0.get('busy', math.nan))}) | {run.late_ticks} "
               f"| {f(run.rx_pps_min, 1)} / {f(run.rx_pps_median, 1)} "
               f"| {t.get('late', '-')} / {t.get('frames', '-')} "
               f"({f(t.get('p99_ms', math.nan), 1)}) "
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
        doc = {"participants": best[0].parties, "per_core_runs": per_core,
               "per_core_median": median(per_core), "ratio_runs": ratio,
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
            f"(budget >= 300: {budget}).",
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


def grow_section(runs: Sequence[Run], refs: dict[int, Run],
                 idle: Run | None) -> tuple[list[str], dict[str, Any]]:
    lines = [f"## 2. One MCU room growing (30% Opus, all talking, max_mixed = {MAX_MIXED})", ""]
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
        shared = run.shared_encodes / run.status_span_s if run.status_span_s else math.nan
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
    doc = {"ms_per_participant": {r.parties: r.ms_per_stream_second for r in runs},
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
    parser.add_argument("--rooms", default=",".join(map(str, DEFAULT_ROOMS)),
                        help="MCU steps: rooms of 10 parties, increasing")
    parser.add_argument("--sfu-rooms", default=",".join(map(str, DEFAULT_SFU_ROOMS)),
                        help="SFU steps: rooms of 10 Opus parties, increasing")
    parser.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)),
                        help="sizes of the growing MCU room")
    parser.add_argument("--seconds", type=float, default=10.0, help="load per run")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs (room + reference) at the largest passing MCU step")
    parser.add_argument("--profile-seconds", type=float, default=8.0,
                        help="py-spy at the largest passing MCU step (0: none)")
    parser.add_argument("--only", default="mcu,grow,sfu", help="which measures, comma-separated")
    parser.add_argument("--budget", type=float, default=560.0, help="seconds for the whole run")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 1 MCU room, 1 SFU room, rooms of 3 and 10; 3 s each")
    ml.add_output_args(parser, "conference")
    args = parser.parse_args(argv)

    only = {w.strip() for w in args.only.split(",") if w.strip()}
    if args.quick:
        rooms, sfu_rooms, sizes = list(QUICK_ROOMS), list(QUICK_SFU_ROOMS), list(QUICK_SIZES)
        seconds, repeats, profile_s, budget = 3.0, 1, 2.0, 50.0
        grow_refs: tuple[int, ...] = ()
    else:
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
    for k in range(max([ROOM_SIZE, *sizes])):  # the tones, before any timing
        FRAMES.get("PCMU", k)
        FRAMES.get("opus", k)
    workdir = Path(tempfile.mkdtemp(prefix="bench-conference-"))
    rig = ConfRig(workdir, fresh=not args.quick)
    errors: list[str] = []
    notes: list[str] = []
    idle: Run | None = None
    mcu_pairs: list[tuple[Run, Run | None]] = []
    mcu_repeats: list[tuple[Run, Run | None]] = []
    sfu_pairs: list[tuple[Run, Run | None]] = []
    grow_runs: list[Run] = []
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
        if "mcu" in only:
            for r in rooms:
                if overdue(f"{r} MCU rooms"):
                    break
                run, _ = mcu_run(rig, r, seconds)
                ref = transcoded_run(rig, run.streams, seconds) if rig.running() else None
                mcu_pairs.append((run, ref))
                print(line(run, ref), flush=True)
                if not run.passed or run.saturated:
                    break
            best = best_pass(mcu_pairs)
            if best is not None:
                b = best[0].parties // ROOM_SIZE
                profiling = profile_s > 0 and ml.py_spy_path() is not None
                if profile_s > 0 and not profiling:
                    profile_md = ["(no profile: py-spy is not installed)", ""]
                count = max(repeats - 1, 1 if profiling else 0)
                for i in range(count):
                    if overdue("an MCU repeat"):
                        break
                    raw = args.out.with_name(args.out.stem + "_profile.txt")
                    last = profiling and i == count - 1
                    run, top = mcu_run(rig, b, seconds, profiler_out=raw if last else None,
                                       profile_s=min(profile_s, seconds - 1.0) if last else 0.0)
                    ref = transcoded_run(rig, run.streams, seconds)
                    if i < repeats - 1:
                        mcu_repeats.append((run, ref))
                    print(("profiled repeat " if last else "repeat ") + line(run, ref),
                          flush=True)
                    if last and top:
                        profile_md = [
                            f"## Profile: the gateway mixing {run.label}, py-spy "
                            f"{min(profile_s, seconds - 1.0):g} s, "
                            f"{int(top['samples'][0][1])} samples", "",
                            f"Gateway CPU during the profiled run: {pct(run.cpu_share)} of one "
                            f"core (late ticks {run.late_ticks}; py-spy --nonblocking on the "
                            f"other core). Raw stacks: `{ml.shown(raw)}`.", "",
                            *ml.render_profile(top), ""]
                    elif last:
                        errors.append(f"no profile ({run.note})")
        if "grow" in only:
            for n in sizes:
                if overdue(f"a room of {n}"):
                    break
                run, _ = grow_run(rig, n, seconds)
                grow_runs.append(run)
                ref = None
                if n in grow_refs and rig.running():
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
        "runs": f"{seconds:g} s of load per run; each room step followed at once by its "
                "reference calls through the same gateway",
        "cores": rig.cores,
        "parties": "each a steady tone at its own frequency (200 + 53 k Hz) and level "
                   "(-16 - 0.5 k dBFS), 20 ms packets, spread over 1 ms slots",
        "pass": f"0 media_late_ticks over the run (status file before and after), every party "
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
    if mcu_pairs:
        md, doc["mcu"] = mcu_section(mcu_pairs, mcu_repeats)
        lines += md
        if mcu_repeats:
            lines += ["Repeats at that step:", ""]
            lines += [f"- {line(r, ref)}" for r, ref in mcu_repeats]
            lines.append("")
    if grow_runs:
        md, doc["grow"] = grow_section(grow_runs, grow_ref, idle)
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

    doc["runs"] = {
        "idle": run_doc(idle),
        "mcu": [[run_doc(a), run_doc(b)] for a, b in mcu_pairs],
        "mcu_repeats": [[run_doc(a), run_doc(b)] for a, b in mcu_repeats],
        "sfu": [[run_doc(a), run_doc(b)] for a, b in sfu_pairs],
        "grow": [run_doc(r) for r in grow_runs],
        "grow_reference": {n: run_doc(r) for n, r in grow_ref.items()},
    }
    doc["gateway_log_problems"] = log_problems
    doc["gateway_log_tail"] = rig.log_tail
    ml.publish(args.out, "\n".join(lines), doc, workdir, args.keep)
    broken = any("Traceback" in p for p in log_problems)
    return 1 if errors or broken or not (mcu_pairs or sfu_pairs or grow_runs) else 0


if __name__ == "__main__":
    sys.exit(main())
