"""Shared tools of the media benches (media_relay, media_transcode, media_quality); no main.

What they share, all on 127.0.0.1:

- the rig: a SIPp callee whose answer points its media at SIPp's own RTP echo
  (``-rtp_echo -mp PORT``: every packet goes back to where it came from), and the gateway
  (``harness.GatewayProcess``) between a caller trunk and that callee, with a media port range
  wide enough for 1000 calls; :func:`pin` puts the gateway on one core and everything else on
  the other;
- :class:`CallPlacer`: one SIP socket placing many calls with SDP offers (each call's own RTP
  port; optionally SDES-SRTP) through the gateway, and hanging them up;
- :class:`Endpoints` and :func:`run_load`: the load generator and sink in one loop, one UDP
  socket per call (so the gateway latches each call's source), paced 20 ms RTP on every call,
  sent in 1 ms slots (the calls' phases spread over the 20 ms, as independent phones'
  would be), receive times from the kernel (``SO_TIMESTAMPNS``), so the generator's own
  scheduling never shows up as latency;
- :class:`LoadStep` and :func:`run_step`: one step of a load bench (N calls placed, the load
  straight to SIPp's echo, then through the gateway with its CPU and counters measured);
- the gateway's status file (``trunks.json``, rewritten every 5 s), the kernel's UDP drop
  counters, py-spy profiles summarised as self and inclusive shares;
- the benches' common options (:func:`add_sweep_args`, :func:`add_output_args`), the sweep
  (:class:`Sweep`), the rig's lifetime (:meth:`Rig.stopped_after`), the report's profile
  section (:func:`profile_section`) and counters (:func:`counters_text`), and its writing
  (:func:`publish`).

Every loop here is bounded in count and in time; every process is started and stopped by the
bench that uses them (harness: by PID).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import math
import os
import random
import re
import select
import shutil
import socket
import struct
import subprocess
import sys
import time
import uuid
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
OUT_DIR = BENCH_DIR / "out"
sys.path.insert(0, str(REPO_ROOT / "tests" / "interop"))

import harness  # noqa: E402  (tests/interop/harness.py)
from rawsip import RawUac, Reply  # noqa: E402  (tests/interop/rawsip.py)

LOOPBACK = harness.LOOPBACK
FRAME_S = 0.02
FRAME_NS = 20_000_000
PCMU_BYTES = 160  # one 20 ms μ-law frame
SOCKET_BUFFER = 4 * 1024 * 1024  # SIPp's SIP sockets (-buff_size)
ENDPOINT_RCVBUF = 1024 * 1024  # each generator socket (the kernel caps it at rmem_max)
MEDIA_PORTS = 4400  # the gateway's [media] port_range width: 1100 RTP/RTCP pairs, 550 calls
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux; Python does not export it
SCM_TIMESTAMPNS = SO_TIMESTAMPNS
NUMBER = "+15551230000"

_RTP = struct.Struct("!BBHII")
# the relay bench's packet: RTP header, then magic, call index, sequence, send time (ns,
# CLOCK_REALTIME like the kernel's receive stamps), zero padding: 12 + 160 = 172 bytes
_STAMPED = struct.Struct("!BBHII4sIIq140x")
_STAMP = struct.Struct("!4sIIq")
MAGIC = b"ACSB"
_TIMESPEC = struct.Struct("qq")


# --------------------------------------------------------------------------------------------
# the rig


def pin(pid: int, cpus: Iterable[int]) -> bool:
    """Put every thread of process ``pid`` on ``cpus`` (threads it starts later inherit it);
    False when the machine has fewer CPUs or the call is refused."""
    wanted = {c for c in cpus if c < (os.cpu_count() or 1)}
    if not wanted:
        return False
    ok = True
    try:
        tasks = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        tasks = [pid]
    for tid in tasks:
        try:
            os.sched_setaffinity(tid, wanted)
        except OSError:
            ok = False
    return ok


def cpu_plan() -> tuple[set[int], set[int]]:
    """(the gateway's CPUs, everyone else's): one core each on a 2-core machine."""
    count = os.cpu_count() or 1
    if count < 2:
        return {0}, {0}
    return {0}, set(range(1, count))


def start_echo_callee(
    scenario: str,
    workdir: Path,
    *,
    echo: bool = True,
    media_port: int | None = None,
    variables: Mapping[str, str] | None = None,
    extra_args: Sequence[str] = (),
) -> tuple[harness.SippServer, int]:
    """A SIPp callee (``uas``, ``uas_opus``) answering with its media port ``-mp``, and that
    port; with ``echo`` SIPp sends every RTP packet back to its source (``-rtp_echo``)."""
    port = media_port if media_port is not None else harness.free_port()
    args = ["-mp", str(port), *(["-rtp_echo"] if echo else []), *extra_args]
    server = harness.SippServer(
        scenario,
        workdir=workdir,
        extra_args=args,
        variables=variables,
        buff_size=SOCKET_BUFFER,
    )
    return server.start(), port


def media_port_range(width: int = MEDIA_PORTS) -> list[int]:
    """A random even [first, last] block below Linux's ephemeral ports (32768...)."""
    first = random.randrange(20000, 32000 - width, 2)
    return [first, first + width - 1]


def start_gateway(
    workdir: Path,
    callers: Sequence[harness.TrunkSpec],
    callee: harness.SippServer,
    *,
    callee_codecs: Sequence[str] = ("PCMU", "PCMA"),
    media: Mapping[str, harness.TomlValue] | None = None,
    log_level: str = "warning",
) -> harness.GatewayProcess:
    """The gateway with the caller trunks (listed first: each accepts only its caller's SIP
    port) and the callee trunk ``uas``, every number routed to ``uas``."""
    trunks = [
        *callers,
        harness.TrunkSpec(
            "uas",
            callee.port,
            inbound_from=(f"{LOOPBACK}:{callee.port}",),
            codecs=tuple(callee_codecs),
        ),
    ]
    media_table: dict[str, harness.TomlValue] = {
        "address": LOOPBACK,
        "port_range": media_port_range(),
    }
    media_table.update(media or {})
    gateway = harness.GatewayProcess(
        workdir,
        trunks=trunks,
        dialplan=harness.route_all_dialplan(["uas"]),
        extra_config={"log": {"level": log_level}, "media": media_table},
    )
    gateway.media_port_range = list(media_table["port_range"])  # type: ignore[arg-type]
    return gateway.start()


def caller_trunk(
    name: str, uac: RawUac, codecs: Sequence[str] = ("PCMU",), srtp: str = "off"
) -> harness.TrunkSpec:
    """A trunk for calls from ``uac``'s SIP port only (so two callers on 127.0.0.1 can be two
    trunks with different policies)."""
    return harness.TrunkSpec(
        name,
        uac.port,
        inbound_from=(f"{LOOPBACK}:{uac.port}",),
        codecs=tuple(codecs),
        srtp=srtp,  # type: ignore[arg-type]
    )


# --------------------------------------------------------------------------------------------
# the gateway's status file and the kernel's UDP counters


def status_path(gw: harness.GatewayProcess) -> Path:
    return Path(gw.cdr_path).parent / "trunks.json"


def read_status(gw: harness.GatewayProcess) -> dict[str, Any]:
    """The ``gateway`` object of the status file ({} when there is none yet)."""
    try:
        doc = json.loads(status_path(gw).read_text())
    except (OSError, ValueError):
        return {}
    live = doc.get("gateway", {})
    return live if isinstance(live, dict) else {}


def fresh_status(gw: harness.GatewayProcess, timeout_s: float = 7.0) -> dict[str, Any]:
    """The first status written after this call (the gateway rewrites it every 5 s)."""
    path = status_path(gw)
    try:
        before = path.stat().st_mtime_ns
    except OSError:
        before = 0
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if path.stat().st_mtime_ns != before:
                time.sleep(0.05)  # let the writer finish (it replaces the file)
                live = read_status(gw)
                if live:
                    return live
        except OSError:
            pass
        time.sleep(0.05)
    return read_status(gw)


def status_delta(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """Counters as differences (``rtp_*``, late ticks, errors); gauges as ``after``."""
    gauges = {"media_sessions", "media_streams", "media_ports_free", "media_ports_total",
              "transcoders", "calls", "dialogs", "rss_bytes"}
    out: dict[str, Any] = {}
    for key, value in after.items():
        if not isinstance(value, int | float):
            continue
        if key in gauges or key.endswith("_transactions"):
            out[key] = value
        else:
            out[key] = value - before.get(key, 0)
    return out


def udp_counters() -> dict[str, int]:
    """The kernel's UDP counters (/proc/net/snmp): InErrors, RcvbufErrors, SndbufErrors..."""
    lines = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines()
             if line.startswith("Udp:")]
    if len(lines) < 2:
        return {}
    return {k: int(v) for k, v in zip(lines[0][1:], lines[1][1:])}


def cpu_times() -> dict[str, list[int]]:
    """Per-CPU jiffies from /proc/stat: user, nice, system, idle, iowait, irq, softirq,
    steal."""
    out: dict[str, list[int]] = {}
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu") and line[3:4].isdigit():
            name, *values = line.split()
            out[name] = [int(v) for v in values[:8]]
    return out


def cpu_breakdown(before: Mapping[str, list[int]], after: Mapping[str, list[int]],
                  cpu: str) -> dict[str, float]:
    """Shares of one CPU's time between two ``cpu_times`` reads: busy (everything but idle
    and iowait), system, softirq, steal."""
    b, a = before.get(cpu), after.get(cpu)
    if not b or not a:
        return {}
    d = [y - x for x, y in zip(b, a)]
    total = sum(d) or 1
    return {
        "busy": (total - d[3] - d[4]) / total,
        "user": (d[0] + d[1]) / total,
        "system": d[2] / total,
        "softirq": (d[5] + d[6]) / total,
        "steal": d[7] / total if len(d) > 7 else 0.0,
    }


def udp_socket_drops() -> dict[int, int]:
    """Datagrams dropped so far by each UDP socket on 127.0.0.1, by local port (the last
    column of /proc/net/udp: its receive buffer was full)."""
    out: dict[int, int] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
            fields = line.split()
            if len(fields) < 13:
                continue
            host, _, port = fields[1].partition(":")
            if host != "0100007F":
                continue
            out[int(port, 16)] = out.get(int(port, 16), 0) + int(fields[-1])
    return out


def drops_by_owner(before: Mapping[int, int], after: Mapping[int, int],
                   owners: Mapping[str, Iterable[int] | range]) -> dict[str, int]:
    """Socket drops between two ``udp_socket_drops`` reads, summed per owner (a name and its
    ports); the rest as "other". A socket closed in between is not counted."""
    sets = {name: set(ports) for name, ports in owners.items()}
    out = {name: 0 for name in [*sets, "other"]}
    for port, value in after.items():
        delta = value - before.get(port, 0)
        if delta <= 0:
            continue
        owner = next((name for name, ports in sets.items() if port in ports), "other")
        out[owner] += delta
    return out


def udp_drops(before: Mapping[str, int], after: Mapping[str, int]) -> int:
    """Datagrams the kernel dropped on receive (socket buffers full) between two reads."""
    return (after.get("RcvbufErrors", 0) - before.get("RcvbufErrors", 0)) + (
        after.get("SndbufErrors", 0) - before.get("SndbufErrors", 0)
    )


# --------------------------------------------------------------------------------------------
# SDP and SDES keys


def sdp_offer(port: int, *, crypto_key: bytes | None = None) -> str:
    """A caller's offer: PCMU and telephone-event at ``port``; RTP/SAVP with one SDES line
    (AES_CM_128_HMAC_SHA1_80) when ``crypto_key`` (30 bytes) is given."""
    proto = "RTP/SAVP" if crypto_key is not None else "RTP/AVP"
    lines = [
        "v=0", f"o=bench 1 1 IN IP4 {LOOPBACK}", "s=-", f"c=IN IP4 {LOOPBACK}", "t=0 0",
        f"m=audio {port} {proto} 0 101", "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-16", "a=ptime:20",
    ]
    if crypto_key is not None:
        inline = base64.b64encode(crypto_key).decode()
        lines.append(f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{inline}")
    lines.append("a=sendrecv")
    return "\r\n".join(lines) + "\r\n"


def sdp_media(body: bytes | str) -> tuple[str, int]:
    """(c= address, audio port) of an SDP body."""
    text = body.decode() if isinstance(body, bytes) else body
    host = re.search(r"^c=IN IP4 (\S+)", text, re.M)
    port = re.search(r"^m=audio (\d+)", text, re.M)
    if not host or not port:
        raise ValueError(f"no audio stream in SDP:\n{text}")
    return host.group(1), int(port.group(1))


def sdp_crypto_key(body: bytes | str) -> bytes | None:
    """The key and salt of the AES_CM_128_HMAC_SHA1_80 a=crypto line, if any."""
    text = body.decode() if isinstance(body, bytes) else body
    m = re.search(r"^a=crypto:\d+ AES_CM_128_HMAC_SHA1_80 inline:([A-Za-z0-9+/=]+)", text, re.M)
    return base64.b64decode(m.group(1)) if m else None


def srtp_session(key: bytes, outbound: bool) -> Any:
    """A pylibsrtp session (AES_CM_128_HMAC_SHA1_80) for any SSRC in one direction."""
    import pylibsrtp

    policy = pylibsrtp.Policy(
        key=key,
        ssrc_type=(
            pylibsrtp.Policy.SSRC_ANY_OUTBOUND if outbound else pylibsrtp.Policy.SSRC_ANY_INBOUND
        ),
        srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    )
    return pylibsrtp.Session(policy)


# --------------------------------------------------------------------------------------------
# placing calls


@dataclass
class Call:
    """One call through the gateway, as the caller sees it."""

    index: int
    call_id: str
    rtp_port: int  # the caller's RTP port (in its offer)
    key: bytes | None = None  # the caller's SRTP key (its offer)
    status: int = 0
    to_tag: str = ""
    media: tuple[str, int] = ("", 0)  # the gateway's a-leg address (its answer)
    gateway_key: bytes | None = None  # the gateway's SRTP key toward the caller
    branch: str = ""


def _with_body(request: bytes, body: str) -> bytes:
    return request.replace(
        b"Content-Length: 0\r\n\r\n",
        b"Content-Type: application/sdp\r\nContent-Length: %d\r\n\r\n" % len(body)
        + body.encode(),
    )


class CallPlacer:
    """Places calls from one SIP UDP socket (``RawUac``) through the gateway, many at once."""

    def __init__(self, uac: RawUac, number: str = NUMBER) -> None:
        self.uac = uac
        self.number = number

    def place(
        self,
        ports: Sequence[int],
        *,
        srtp: bool = False,
        window: int = 20,
        timeout_s: float = 30.0,
    ) -> list[Call]:
        """One call per RTP port, at most ``window`` INVITEs unanswered at a time; every
        answered call is ACKed. Calls without a final answer after ``timeout_s`` keep
        status 0."""
        calls = [
            Call(i, uuid.uuid4().hex, port, os.urandom(30) if srtp else None)
            for i, port in enumerate(ports)
        ]
        by_id = {c.call_id: c for c in calls}
        pending: set[str] = set()
        queue = list(calls)
        deadline = time.monotonic() + timeout_s
        while (queue or pending) and time.monotonic() < deadline:
            while queue and len(pending) < window:
                call = queue.pop(0)
                call.branch = "z9hG4bK" + uuid.uuid4().hex
                req = self.uac.request("INVITE", self.number, call.call_id, call.branch, 1)
                self.uac.send(_with_body(req, sdp_offer(call.rtp_port, crypto_key=call.key)))
                pending.add(call.call_id)
            reply = self.uac.recv(max(0.01, min(1.0, deadline - time.monotonic())))
            if reply is None or reply.status < 200:
                continue
            call_id = reply.header("Call-ID") or ""
            call = by_id.get(call_id)
            cseq = (reply.header("CSeq") or "").split()
            if call is None or cseq[-1:] != ["INVITE"]:
                continue
            self._final(call, reply)
            pending.discard(call_id)
        return calls

    def _final(self, call: Call, reply: Reply) -> None:
        if reply.status >= 300:
            call.status = reply.status
            self.uac.ack_error(self.number, call.call_id, call.branch, reply)
            return
        call.to_tag = reply.to_tag
        if not call.status:
            body = reply.raw.split(b"\r\n\r\n", 1)[1]
            call.media = sdp_media(body)
            call.gateway_key = sdp_crypto_key(body)
        call.status = reply.status
        self.uac.send(self.uac.request("ACK", self.number, call.call_id,
                                       "z9hG4bK" + uuid.uuid4().hex, 1, call.to_tag))

    def hangup(self, calls: Sequence[Call], *, window: int = 50, timeout_s: float = 20.0) -> int:
        """BYE every answered call; the number of 200s to them."""
        live = [c for c in calls if 200 <= c.status < 300]
        pending: set[str] = set()
        done = 0
        queue = list(live)
        deadline = time.monotonic() + timeout_s
        while (queue or pending) and time.monotonic() < deadline:
            while queue and len(pending) < window:
                call = queue.pop(0)
                self.uac.send(self.uac.request("BYE", self.number, call.call_id,
                                               "z9hG4bK" + uuid.uuid4().hex, 2, call.to_tag))
                pending.add(call.call_id)
            reply = self.uac.recv(max(0.01, min(1.0, deadline - time.monotonic())))
            if reply is None or reply.status < 200:
                continue
            cseq = (reply.header("CSeq") or "").split()
            call_id = reply.header("Call-ID") or ""
            if cseq[-1:] == ["BYE"] and call_id in pending:
                pending.discard(call_id)
                done += reply.status == 200
            elif cseq[-1:] == ["INVITE"] and reply.status == 200:
                # a retransmitted 200 of the INVITE: our ACK was late; ACK it again
                call = next((c for c in live if c.call_id == call_id), None)
                if call is not None:
                    self.uac.send(self.uac.request("ACK", self.number, call.call_id,
                                                   "z9hG4bK" + uuid.uuid4().hex, 1, call.to_tag))
        return done


class Rig:
    """A SIPp callee (``scenario``; its RTP echo on unless ``echo`` is false) behind trunk
    ``uas`` (``callee_codecs``), the gateway, and caller trunks, each a ``RawUac`` of its own
    (``callers``: name -> srtp mode, every caller offering PCMU). The gateway gets one core,
    the rest (SIPp, this process and what it starts later) the others."""

    def __init__(
        self,
        workdir: Path,
        *,
        scenario: str = "uas",
        callee_codecs: Sequence[str] = ("PCMU",),
        callers: Mapping[str, str] | None = None,
        callee_variables: Mapping[str, str] | None = None,
        echo: bool = True,
        callee_args: Sequence[str] = (),
    ) -> None:
        self.workdir = workdir
        self.scenario = scenario
        self.echo = echo
        self.callee_args = tuple(callee_args)
        self.callee_codecs = tuple(callee_codecs)
        self.callee_variables = callee_variables
        self.callee: harness.SippServer | None = None
        self.gateway: harness.GatewayProcess | None = None
        self.uacs = {name: RawUac(1) for name in (callers or {"caller": "off"})}
        self.srtp = dict(callers or {"caller": "off"})
        self.echo_port = 0
        self.pinned = False
        self.log_tail = ""  # the gateway's, once stopped

    def start(self) -> Rig:
        self.callee, self.echo_port = start_echo_callee(
            self.scenario,
            self.workdir / self.scenario,
            echo=self.echo,
            variables=self.callee_variables,
            extra_args=self.callee_args,
        )
        self.gateway = start_gateway(
            self.workdir / "gateway",
            [caller_trunk(name, uac, srtp=self.srtp[name]) for name, uac in self.uacs.items()],
            self.callee,
            callee_codecs=self.callee_codecs,
        )
        for uac in self.uacs.values():
            uac.gateway = (LOOPBACK, self.gateway.sip_udp)
        gw_cpus, other_cpus = cpu_plan()
        self.pinned = (
            pin(self.gateway.pid, gw_cpus)
            and pin(self.callee.pid, other_cpus)
            and pin(os.getpid(), other_cpus)
        )
        return self

    @property
    def gw(self) -> harness.GatewayProcess:
        if self.gateway is None:
            raise harness.HarnessError("the rig is not started")
        return self.gateway

    @contextlib.contextmanager
    def stopped_after(self, errors: list[str]) -> Iterator[None]:
        """For a ``with`` block that starts the rig and uses it: stops the rig when the block
        ends, whatever happens (the gateway's log tail then in :attr:`log_tail`); a
        HarnessError ends the block early, its first line into ``errors``, all of it to
        stderr."""
        try:
            yield
        except harness.HarnessError as exc:
            errors.append(str(exc).splitlines()[0])
            print(exc, file=sys.stderr)
        finally:
            self.log_tail = self.stop()

    def running(self) -> bool:
        """The gateway was started and still runs."""
        return self.gateway is not None and self.gateway.running()

    @property
    def cores(self) -> str:
        """Where the load benches' processes run, for their reports."""
        if self.pinned:
            return "gateway pinned to CPU 0; SIPp, generator and py-spy to CPU 1"
        return "not pinned (fewer than 2 CPUs, or refused)"

    def placer(self, caller: str = "caller") -> CallPlacer:
        return CallPlacer(self.uacs[caller])

    def stop(self) -> str:
        """Stop everything (by PID); the gateway's log tail."""
        tail = ""
        if self.gateway is not None:
            self.gateway.stop(5.0)
            tail = self.gateway.log_tail(3000)
        if self.callee is not None:
            self.callee.stop()
        for uac in self.uacs.values():
            uac.close()
        return tail


# --------------------------------------------------------------------------------------------
# the generator and sink


class Endpoints:
    """``n`` UDP sockets on 127.0.0.1, one per call: non-blocking, kernel receive times on."""

    def __init__(self, n: int) -> None:
        self.socks: list[socket.socket] = []
        try:
            for _ in range(n):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                self.socks.append(sock)
                sock.bind((LOOPBACK, 0))
                sock.setblocking(False)
                sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, ENDPOINT_RCVBUF)
        except BaseException:
            self.close()
            raise
        self.ports = [s.getsockname()[1] for s in self.socks]

    def __len__(self) -> int:
        return len(self.socks)

    def drain(self) -> int:
        """Read and forget whatever is queued (between runs); how many datagrams."""
        count = 0
        for sock in self.socks:
            for _ in range(10_000):
                try:
                    sock.recv(4096)
                except OSError:
                    break
                count += 1
        return count

    def close(self) -> None:
        for sock in self.socks:
            sock.close()
        self.socks = []


@dataclass
class LoadResult:
    """What one generator run sent and what came back."""

    mode: str
    calls: int
    seconds: float
    sent: int = 0
    send_errors: int = 0
    received: int = 0  # RTP packets back on the calls' sockets (not RTCP)
    unique: int = 0  # distinct (call, sequence) of ours back (stamped mode)
    duplicates: int = 0
    rtcp: int = 0  # RTCP that reached a generator socket (the gateway's reports)
    foreign: int = 0  # undecodable or failed SRTP
    elapsed_s: float = 0.0
    send_lag_ms: list[float] = field(default_factory=list)  # p50, p99, max of slot lateness
    latency_ns: array = field(default_factory=lambda: array("q"))  # stamped mode
    rx_ns: array = field(default_factory=lambda: array("q"))  # its receive times
    arrivals: list[list[tuple[int, int]]] = field(default_factory=list)  # (rtp ts, rx ns)
    first_send_ns: int = 0
    last_send_ns: int = 0

    @property
    def lost(self) -> int:
        return self.sent - self.unique

    @property
    def offered_pps(self) -> float:
        return self.calls / FRAME_S

    @property
    def send_rate(self) -> float:
        span = (self.last_send_ns - self.first_send_ns) / 1e9
        return (self.sent - self.calls) / span if span > 0 else 0.0


def percentile(values: Sequence[float] | np.ndarray, q: float) -> float:
    if len(values) == 0:
        return math.nan
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def run_load(
    endpoints: Endpoints,
    dests: Sequence[tuple[str, int]],
    *,
    seconds: float,
    mode: str = "stamped",
    audio: Sequence[bytes] = (),
    srtp_out: Sequence[Any] | None = None,
    srtp_in: Sequence[Any] | None = None,
    slots: int = 20,
    drain_s: float = 5.0,
    quiet_s: float = 0.3,
) -> LoadResult:
    """Send ``seconds`` of 20 ms RTP (PCMU, 172-byte packets) from every socket to its
    destination and record what comes back, until ``drain_s`` after the last send.

    ``mode="stamped"``: each payload carries magic, call index, sequence and send time
    (CLOCK_REALTIME ns); what comes back gives latency (kernel receive time - send time) and
    loss per (call, sequence). ``mode="audio"``: the payloads are ``audio`` frames (μ-law,
    cycled), for a gateway that decodes them; what comes back is recorded as (RTP timestamp,
    kernel receive time) per call for the timing analysis. Calls are spread over ``slots``
    1 ms sub-slots of each 20 ms tick (call i in slot i % slots). Bounded: ``seconds * 50``
    ticks, never longer than ``seconds + 5`` s of sending, then receiving until nothing came
    for ``quiet_s`` (an overloaded gateway is still emptying its queues), ``drain_s`` at most.
    """
    n = len(endpoints)
    socks = endpoints.socks
    result = LoadResult(mode, n, seconds)
    if n == 0:
        return result
    if mode == "audio" and not audio:
        raise ValueError("audio mode needs frames")
    ticks = max(1, round(seconds / FRAME_S))
    fd_index = {s.fileno(): i for i, s in enumerate(socks)}
    poller = select.epoll()
    for s in socks:
        poller.register(s.fileno(), select.EPOLLIN)
    groups = [list(range(s, n, slots)) for s in range(slots)]
    slot_dt = FRAME_S / slots
    ssrcs = [0x10000000 + i for i in range(n)]
    seq0 = [random.randrange(0, 30000) for _ in range(n)]
    ts0 = [random.randrange(0, 1 << 30) for _ in range(n)]
    seen = [bytearray(ticks) for _ in range(n)] if mode == "stamped" else []
    latency = result.latency_ns
    rx_times = result.rx_ns
    arrivals: list[list[tuple[int, int]]] = [[] for _ in range(n)]
    result.arrivals = arrivals
    lag: list[float] = []
    stamped = _STAMPED.pack
    header = _RTP.pack
    unstamp = _STAMP.unpack_from
    unhead = _RTP.unpack_from
    timespec = _TIMESPEC.unpack
    now_ns = time.time_ns
    mono = time.monotonic
    frames = list(audio)
    n_frames = len(frames)
    counts = Counter[str]()

    def receive(events: list[tuple[int, int]]) -> None:
        for fd, _ in events:
            i = fd_index[fd]
            sock = socks[i]
            for _ in range(256):
                try:
                    data, anc, _flags, _addr = sock.recvmsg(2048, 64)
                except BlockingIOError:
                    break
                except OSError:  # ICMP errors queued on the socket (RTCP to closed ports)
                    counts["icmp"] += 1
                    continue
                rx = 0
                for level, kind, raw in anc:
                    if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPNS:
                        sec, nsec = timespec(raw[:16])
                        rx = sec * 1_000_000_000 + nsec
                if rx == 0:
                    rx = now_ns()
                if len(data) > 1 and 192 <= data[1] <= 223:
                    counts["rtcp"] += 1
                    continue
                if srtp_in is not None:
                    try:
                        data = srtp_in[i].unprotect(data)
                    except Exception:
                        counts["foreign"] += 1
                        continue
                if len(data) < 12:
                    counts["foreign"] += 1
                    continue
                counts["received"] += 1
                if mode == "stamped":
                    if len(data) < 12 + _STAMP.size:
                        counts["foreign"] += 1
                        continue
                    magic, index, seq, sent_ns = unstamp(data, 12)
                    if magic != MAGIC or index >= n:
                        counts["foreign"] += 1
                        continue
                    k = seq - seq0[index]
                    if 0 <= k < ticks:
                        if seen[index][k]:
                            counts["duplicates"] += 1
                        else:
                            seen[index][k] = 1
                            counts["unique"] += 1
                            latency.append(rx - sent_ns)
                            rx_times.append(rx)
                else:
                    _b0, _b1, _seq, ts, _ssrc = unhead(data)
                    arrivals[i].append((ts, rx))

    start = mono() + 0.05
    hard_stop = start + seconds + 5.0
    sent = 0
    errors = 0
    first_ns = 0
    last_ns = 0
    for k in range(ticks):
        tick_at = start + k * FRAME_S
        for s in range(slots):
            due = tick_at + s * slot_dt
            while True:
                left = due - mono()
                if left <= 0:
                    break
                receive(poller.poll(left))
            group = groups[s]
            if not group:
                continue
            lag.append((mono() - due) * 1000.0)
            for i in group:
                seq = (seq0[i] + k) & 0xFFFF
                ts = (ts0[i] + 160 * k) & 0xFFFFFFFF
                t_ns = now_ns()
                if mode == "stamped":
                    packet = stamped(0x80, 0x80 if k == 0 else 0, seq, ts, ssrcs[i], MAGIC, i,
                                     seq0[i] + k, t_ns)
                else:
                    packet = header(0x80, 0x80 if k == 0 else 0, seq, ts, ssrcs[i]) + frames[
                        (i + k) % n_frames]
                if srtp_out is not None:
                    packet = srtp_out[i].protect(packet)
                try:
                    socks[i].sendto(packet, dests[i])
                except OSError:
                    errors += 1
                    continue
                sent += 1
                if not first_ns:
                    first_ns = t_ns
                last_ns = t_ns
        if mono() > hard_stop:
            break
    drain_until = mono() + drain_s
    quiet_until = mono() + quiet_s
    while (left := min(drain_until, quiet_until) - mono()) > 0:
        events = poller.poll(min(left, 0.05))
        if events:
            receive(events)
            quiet_until = mono() + quiet_s
    poller.close()
    result.elapsed_s = mono() - start
    result.sent = sent
    result.send_errors = errors
    result.received = counts["received"]
    result.unique = counts["unique"]
    result.duplicates = counts["duplicates"]
    result.rtcp = counts["rtcp"]
    result.foreign = counts["foreign"] + counts["icmp"]
    result.first_send_ns = first_ns
    result.last_send_ns = last_ns
    result.send_lag_ms = [percentile(lag, 50), percentile(lag, 99), max(lag) if lag else 0.0]
    return result


def latency_summary(result: LoadResult) -> dict[str, float]:
    """p50, p99, p99.9 and max of (receive - send) in ms, and the p99 of each second of the
    run (by receive time): its median and worst (a noisy second shows in the run's p99)."""
    lat = np.frombuffer(result.latency_ns, dtype=np.int64).astype(np.float64) / 1e6
    nan = math.nan
    if len(lat) == 0:
        return {"p50": nan, "p99": nan, "p999": nan, "max": nan, "p99_sec_median": nan,
                "p99_sec_worst": nan}
    rx = np.frombuffer(result.rx_ns, dtype=np.int64)
    second = (rx - rx.min()) // 1_000_000_000
    per_second = [float(np.percentile(lat[second == s], 99)) for s in np.unique(second)
                  if (second == s).sum() >= 100]
    return {
        "p50": float(np.percentile(lat, 50)),
        "p99": float(np.percentile(lat, 99)),
        "p999": float(np.percentile(lat, 99.9)),
        "max": float(lat.max()),
        "p99_sec_median": float(np.median(per_second)) if per_second else nan,
        "p99_sec_worst": max(per_second) if per_second else nan,
    }


def frame_timing(
    arrivals: Sequence[Sequence[tuple[int, int]]], *, clock: int = 8000, late_ms: float = 30.0
) -> dict[str, float]:
    """Lateness of returned frames against their 20 ms schedule, per call.

    A call's frame with RTP timestamp ``ts`` is due ``(ts - ts_first) / clock`` seconds after
    the call's schedule origin, the origin chosen so its earliest frame is exactly on time
    (lateness = arrival - due - min over the call). Counts frames later than ``late_ms``.
    """
    late = 0
    frames = 0
    worst: list[float] = []
    all_late: list[np.ndarray] = []
    for calls in arrivals:
        if len(calls) < 2:
            continue
        ts = np.array([a[0] for a in calls], dtype=np.int64)
        rx = np.array([a[1] for a in calls], dtype=np.int64)
        order = np.argsort(rx, kind="stable")
        ts, rx = ts[order], rx[order]
        # unwrap the 32-bit timestamp (it may start anywhere)
        d = np.diff(ts)
        d = np.where(d < -(1 << 31), d + (1 << 32), np.where(d > (1 << 31), d - (1 << 32), d))
        rel = np.concatenate(([0], np.cumsum(d)))
        due_ns = rel * (1_000_000_000 // clock)
        lateness = (rx - due_ns).astype(np.float64)
        lateness -= lateness.min()
        lateness /= 1e6
        frames += len(lateness)
        late += int((lateness > late_ms).sum())
        worst.append(float(lateness.max()))
        all_late.append(lateness)
    merged = np.concatenate(all_late) if all_late else np.zeros(0)
    return {
        "frames": frames,
        "late": late,
        "p50_ms": percentile(merged, 50),
        "p99_ms": percentile(merged, 99),
        "max_ms": max(worst) if worst else math.nan,
    }


# --------------------------------------------------------------------------------------------
# one step of a load bench: N calls, the load without and through the gateway

#: the generator's own pacing; later than this (p99 of its 1 ms slots) a step is invalid
MAX_SEND_LAG_MS = 5.0


@dataclass
class LoadStep:
    """What one step (``calls`` calls, runs of ``seconds``) measured: the calls set up, the
    summaries of the run straight to SIPp's echo (``direct``) and of the run through the
    gateway (``gateway``), the gateway's CPU over that run and its status counters over the
    step. The benches add their own verdicts."""

    calls: int
    seconds: float
    placed: int = 0
    setup_failed: int = 0
    direct: dict[str, Any] = field(default_factory=dict)
    gateway: dict[str, Any] = field(default_factory=dict)
    cpu_s: float = 0.0
    gw_elapsed_s: float = 0.0
    cpu0: dict[str, float] = field(default_factory=dict)  # the gateway's core, whole
    status: dict[str, Any] = field(default_factory=dict)
    hung_up: int = 0
    note: str = ""

    @property
    def cpu_share(self) -> float:
        return self.cpu_s / self.gw_elapsed_s if self.gw_elapsed_s else math.nan

    @property
    def generator_ok(self) -> bool:
        lag = max(self.direct.get("send_lag_p99_ms", 0.0), self.gateway.get("send_lag_p99_ms", 0.0))
        return lag <= MAX_SEND_LAG_MS and not self.gateway.get("send_errors", 0)


StepT = TypeVar("StepT", bound=LoadStep)


def _srtp_sessions(calls: Sequence[Call], srtp: bool, *, direct: bool) -> tuple[
        list[Any] | None, list[Any] | None]:
    """Fresh SRTP sessions for one run (None, None for plain RTP): the callers' keys out; in,
    the callers' own keys (SIPp echoes them) or, through the gateway, the gateway's keys."""
    if not srtp:
        return None, None
    keys_in = [c.key if direct else c.gateway_key for c in calls]
    return ([srtp_session(c.key, True) for c in calls if c.key is not None],
            [srtp_session(k, False) for k in keys_in if k is not None])


def run_step(
    rig: Rig,
    step: StepT,
    summarize: Callable[[LoadResult], dict[str, Any]],
    *,
    caller: str = "caller",
    srtp: bool = False,
    load: Mapping[str, Any] | None = None,
    drops: bool = False,
    profiler_out: Path | None = None,
    profile_s: float = 0.0,
) -> tuple[StepT, Any]:
    """One step: ``step.calls`` calls placed from ``caller``'s socket (SDES-SRTP offers with
    ``srtp``), ``step.seconds`` of load (:func:`run_load`, with ``load``'s further arguments)
    straight to SIPp's echo, then through the gateway, each run's ``summarize``-d result in
    ``step.direct`` and ``step.gateway`` (with ``drops``: plus the kernel's UDP drops over the
    run, by socket owner), the gateway's CPU over its run, its status counters over the step;
    every call hung up. With ``profiler_out``, py-spy records the gateway for ``profile_s``
    during its run: (the step, :func:`profile_top` of it, or None)."""
    gw = rig.gw
    n = step.calls
    placer = rig.placer(caller)
    endpoints = Endpoints(n)
    more = dict(load or {})
    top: Any = None
    try:
        calls = placer.place(endpoints.ports, srtp=srtp)
        ok = [c for c in calls if c.status == 200 and c.media[1]]
        step.placed = len(ok)
        step.setup_failed = n - len(ok)
        if step.setup_failed:
            bad = sorted({c.status for c in calls if c not in ok})
            step.note = f"{step.setup_failed} calls not set up (statuses {bad})"
            step.hung_up = placer.hangup(calls)
            return step, None
        if srtp and any(c.gateway_key is None for c in calls):
            step.note = "the gateway's answer carried no usable a=crypto line"
            step.hung_up = placer.hangup(calls)
            return step, None
        before = fresh_status(gw)
        echo = [(LOOPBACK, rig.echo_port)] * n
        out, inn = _srtp_sessions(calls, srtp, direct=True)
        direct = run_load(endpoints, echo, seconds=step.seconds, srtp_out=out, srtp_in=inn,
                          **more)
        step.direct = summarize(direct)
        endpoints.drain()
        out, inn = _srtp_sessions(calls, srtp, direct=False)
        profiler = (
            Profiler(gw.pid, profile_s, profiler_out, cpu_plan()[1])
            if profiler_out is not None else None
        )
        udp0 = udp_counters() if drops else {}
        socks0 = udp_socket_drops() if drops else {}
        times0 = cpu_times()
        cpu0 = harness.proc_cpu_seconds(gw.pid)
        via = run_load(endpoints, [c.media for c in calls], seconds=step.seconds, srtp_out=out,
                       srtp_in=inn, **more)
        step.cpu_s = harness.proc_cpu_seconds(gw.pid) - cpu0
        step.cpu0 = cpu_breakdown(times0, cpu_times(), f"cpu{min(cpu_plan()[0])}")
        step.gw_elapsed_s = via.elapsed_s
        step.gateway = summarize(via)
        if drops:
            step.gateway |= {
                "kernel_udp_drops": udp_drops(udp0, udp_counters()),
                "socket_drops": drops_by_owner(socks0, udp_socket_drops(), {
                    "SIPp echo": [rig.echo_port],
                    "gateway": range(gw.media_port_range[0], gw.media_port_range[1] + 1),
                    "generator": endpoints.ports,
                }),
            }
        if profiler is not None and profiler_out is not None:
            if profiler.wait():
                top = profile_top(profiler_out)
            else:
                step.note = f"profile failed: {profiler.error}"
        step.status = status_delta(before, fresh_status(gw))
        step.hung_up = placer.hangup(calls)
    finally:
        endpoints.close()
    return step, top


# --------------------------------------------------------------------------------------------
# audio frames for the transcoder


def ulaw_frames(seconds: float = 1.0, seed: int = 1) -> list[bytes]:
    """μ-law 20 ms frames of a speech-like signal (a few harmonics with a syllable envelope,
    plus a little noise), for loads that the gateway decodes: not silence, which codecs
    treat specially."""
    from rtppeer import ulaw_encode

    rate = 8000
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    f0 = 140.0 + 30.0 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voiced = sum(np.sin(h * phase) / h for h in range(1, 12))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * t) ** 2
    pcm = 3000.0 * envelope * voiced + 200.0 * rng.standard_normal(len(t))
    pcm16 = np.clip(pcm, -32768, 32767).astype(np.int16)
    return [ulaw_encode(pcm16[i : i + PCMU_BYTES]) for i in range(0, len(pcm16) - 159, 160)]


# --------------------------------------------------------------------------------------------
# py-spy


def py_spy_path() -> str | None:
    candidate = Path(sys.executable).with_name("py-spy")
    if candidate.exists():
        return str(candidate)
    return shutil.which("py-spy")


class Profiler:
    """py-spy record (raw collapsed stacks, non-blocking: the target is not paused) of one
    process for a bounded time, in the background while the load runs."""

    def __init__(self, pid: int, seconds: float, out_raw: Path, cpus: Iterable[int] = ()) -> None:
        self.out_raw = out_raw
        self.seconds = seconds
        self.error = ""
        self.proc: subprocess.Popen[bytes] | None = None
        spy = py_spy_path()
        if spy is None:
            self.error = "py-spy not found"
            return
        out_raw.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            out_raw.unlink()
        cmd = [spy, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))),
               "--rate", "250", "--format", "raw", "--nonblocking", "--output", str(out_raw)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        cpu_list = list(cpus)
        if cpu_list:
            pin(self.proc.pid, cpu_list)

    def wait(self) -> bool:
        """Wait for py-spy (at most its duration + 30 s); True when a profile was written."""
        proc = self.proc
        if proc is None:
            return False
        try:
            _, err = proc.communicate(timeout=self.seconds + 30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, 15)
            proc.wait(timeout=10)
            self.error = "py-spy did not finish"
            return False
        if proc.returncode != 0:
            self.error = f"py-spy exit {proc.returncode}: {err.decode(errors='replace')[-300:]}"
        return self.out_raw.exists() and self.out_raw.stat().st_size > 0


_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def _frame_name(frame: str) -> str:
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    file = m.group("file")
    for marker in ("site-packages/", "lib/python3.11/", "/work/main/"):
        if marker in file:
            file = file.split(marker, 1)[1]
    return f"{m.group('func')} ({file})"


def profile_top(raw: Path, limit: int = 15) -> dict[str, list[tuple[str, float]]]:
    """Shares of samples (0..1): ``self`` (the leaf frame) and ``total`` (anywhere on the
    stack), by function and file, from py-spy's raw output (``stack count`` lines)."""
    self_counts: Counter[str] = Counter()
    total_counts: Counter[str] = Counter()
    samples = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame_name(f) for f in stack.split(";") if f.strip()]
        frames = [f for f in frames if not f.startswith("process ") and not f.startswith(
            "thread ")]
        if not frames:
            continue
        samples += count
        self_counts[frames[-1]] += count
        for name in set(frames):
            total_counts[name] += count
    if samples == 0:
        return {"self": [], "total": [], "by_file": [], "samples": []}
    by_file: Counter[str] = Counter()
    for name, count in self_counts.items():
        by_file[name.rsplit(" (", 1)[-1].rstrip(")")] += count
    return {
        "self": [(name, c / samples) for name, c in self_counts.most_common(limit)],
        "by_file": [(name, c / samples) for name, c in by_file.most_common(limit)],
        "total": [(name, c / samples) for name, c in total_counts.most_common(limit * 2)],
        "samples": [("samples", float(samples))],
    }


def render_profile(top: Mapping[str, list[tuple[str, float]]], limit: int = 12) -> list[str]:
    """Markdown tables of a profile_top result."""
    lines = ["| self, by file | file |", "|---:|---|"]
    lines += [f"| {share:.1%} | `{name}` |" for name, share in top.get("by_file", [])[:limit]]
    lines += ["", "| self | function (file) |", "|---:|---|"]
    lines += [f"| {share:.1%} | `{name}` |" for name, share in top.get("self", [])[:limit]]
    lines += ["", "| inclusive | function (file) |", "|---:|---|"]
    lines += [f"| {share:.1%} | `{name}` |" for name, share in top.get("total", [])[: limit * 2]]
    return lines


def shown(path: Path) -> str:
    """``path`` relative to the repository when inside it."""
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def fmt(value: float, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def write_json(path: Path, doc: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(harness.json_finite(doc), indent=2) + "\n")


def gateway_version() -> str:
    """The commit the gateway runs from, and whether gateway/ differs from it."""
    def git(*args: str) -> str:
        try:
            out = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                                 timeout=10, check=False)
        except OSError:
            return ""
        return out.stdout.strip()

    commit = git("log", "-1", "--format=%h %ci")
    if not commit:
        return "unknown (no git)"
    dirty = git("status", "--porcelain", "--", "gateway")
    return f"commit {commit}" + (" + uncommitted changes in gateway/" if dirty else "")


def machine_meta() -> dict[str, str]:
    import platform

    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "python": platform.python_version(),
        "SIPp": harness.sipp_version(),
        "gateway": gateway_version(),
    }



# --------------------------------------------------------------------------------------------
# the benches' command lines, sweeps and reports


def bench_parser(doc: str | None) -> argparse.ArgumentParser:
    """A parser described by the first paragraph of a bench's docstring."""
    return argparse.ArgumentParser(description=doc.split("\n\n", 1)[0] if doc else "")


def add_sweep_args(parser: argparse.ArgumentParser, calls: Sequence[int], *,
                   profile_help: str, quick_help: str) -> None:
    """A load sweep's options: --calls, --seconds, --profile-seconds, --quick."""
    parser.add_argument("--calls", default=",".join(map(str, calls)),
                        help="comma-separated call counts, increasing")
    parser.add_argument("--seconds", type=float, default=6.0, help="length of each run")
    parser.add_argument("--profile-seconds", type=float, default=8.0, help=profile_help)
    parser.add_argument("--quick", action="store_true", help=quick_help)


def add_output_args(parser: argparse.ArgumentParser, name: str) -> None:
    """--out (the report, ``bench/out/NAME.md`` by default; its JSON beside it) and --keep."""
    parser.add_argument("--out", type=Path, default=OUT_DIR / f"{name}.md")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")


@dataclass
class Sweep:
    """A load sweep as asked for (``--quick``: the smoke values): the call counts, the length
    of each run and of the profile, and the time budget (50 s quick, else 540 s)."""

    counts: list[int]
    seconds: float
    profile_s: float
    deadline: float

    @property
    def summary(self) -> str:
        return f"{self.seconds:g} s per run, calls {', '.join(map(str, self.counts))}"

    @classmethod
    def from_args(cls, args: argparse.Namespace, quick_calls: Sequence[int]) -> Sweep:
        return cls(
            counts=list(quick_calls) if args.quick else [int(c) for c in args.calls.split(",")
                                                         if c],
            seconds=3.0 if args.quick else args.seconds,
            profile_s=2.0 if args.quick else args.profile_seconds,
            deadline=time.monotonic() + (50 if args.quick else 540),
        )

    def overdue(self) -> bool:
        return time.monotonic() > self.deadline


def profile_section(
    rig: Rig,
    sweep: Sweep,
    chosen: StepT | None,
    out: Path,
    errors: list[str],
    *,
    run: Callable[[int, float, Path], tuple[StepT, Any]],
    line: Callable[[StepT], str],
    title: Callable[[StepT], str],
    aside: Callable[[StepT], str],
) -> list[str]:
    """The report's profile of the gateway: one more run of ``chosen.calls`` calls,
    ``run(calls, seconds, raw)`` with py-spy for ``sweep.profile_s`` writing its raw stacks to
    ``raw`` (beside ``out``). Its Markdown (a heading saying ``title(step)``, the gateway's CPU
    and ``aside(step)``, the tables); a note when py-spy is not installed; nothing when there
    is nothing to profile (an error noted when the profile failed)."""
    if py_spy_path() is None:
        return ["(no profile: py-spy is not installed)", ""]
    if sweep.profile_s <= 0 or chosen is None or not rig.running():
        return []
    raw = out.with_name(out.stem + "_profile.txt")
    step, top = run(chosen.calls, max(sweep.seconds, sweep.profile_s + 1.0), raw)
    print("profile run: " + line(step), flush=True)
    if not top:
        errors.append(f"no profile ({step.note})")
        return []
    return [
        f"## Profile: {title(step)}, py-spy {sweep.profile_s:g} s, "
        f"{int(top['samples'][0][1])} samples",
        "",
        f"Gateway CPU during the profiled run: {step.cpu_share:.0%} of one core "
        f"({aside(step)}). Raw stacks: `{shown(raw)}`.",
        "",
        *render_profile(top),
        "",
    ]


def publish(out: Path, report: str, doc: object, workdir: Path, keep: bool) -> None:
    """Print the Markdown ``report`` and write it to ``out``, ``doc`` as JSON beside it; then
    remove the work directory, unless ``keep``."""
    print()
    print(report)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report + "\n")
    write_json(out.with_suffix(".json"), doc)
    if keep:
        print(f"work directory kept: {workdir}", file=sys.stderr)
    else:
        shutil.rmtree(workdir, ignore_errors=True)


def counters_text(status: Mapping[str, Any], keys: Sequence[str],
                  always: Sequence[str] = ("rtp_packets_in", "rtp_packets_out")) -> str:
    """The gateway's status counters ``keys`` for a report's table cell (``rtp_`` dropped from
    the names): those that are in ``status`` and not 0, and those of ``always`` even when 0."""
    return ", ".join(
        f"{k.removeprefix('rtp_')} {status.get(k, 0)}"
        for k in keys
        if k in status and (status.get(k) or k in always)
    )
