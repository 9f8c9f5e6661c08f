"""TURN relay: the gateway's TURN server against coturn's turnserver, side by side in one run,
driven by coturn's own load client with the same load (DESIGN.md budget: >= 50% of coturn's
relayed packets per second on the same machine).

Topology (all 127.0.0.1, every process started here and stopped by its PID)::

    turnutils_uclient -m M --UDP--> server (gateway or turnserver) --relay UDP--> turnutils_peer
          ^ ChannelData                 |                                        (echo)
          +-----------------------------+<----------------------------------------+

Each uclient client holds one allocation (``-c``: no RTCP allocation), binds a channel to its
peer and sends messages of 172 octets every ``-z`` ms for about ``--seconds``; the peer echoes
each one, so every message crosses the relay twice (client -> peer, peer -> client).
uclient prints its running totals once a second (read line-buffered and stamped here): the
relayed rate is (sent + received) between the first progress line with messages sent and the
last one, over the time between them, and the server's CPU (utime + stime, all its threads,
sampled at the same lines) over the same window gives CPU per 1000 packets, the share of a
core and CPU per allocation. At the top loads uclient's own pacing slips (one process sending
for every client), so the rate measured, not the rate asked for, is what counts. A step passes
when every message came back (0 lost). Steps alternate servers (gateway, coturn) at each load
so machine noise hits both alike; each server has its own echo peer.

Then "allocations held": uclient holds H allocations at once on each server (a slow trickle of
traffic, one 100-octet message per second each) while their count and the server's RSS are
read; RSS per allocation is the growth over the idle server divided by H.

coturn runs with a temporary config: ``listening-ip``/``relay-ip`` 127.0.0.1, its own ports,
``lt-cred-mech`` with the same static user and realm as the gateway, ``allow-loopback-peers``,
no TLS/DTLS/CLI, an SQLite user database in the work directory, its default relay threads
(one per CPU: it may use both cores, where the gateway uses one).

Usage: python bench/turn_relay.py [--loads 50x10,100x5,...] [--seconds 8] [--held 500]
                                  [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
OUT_DIR = BENCH_DIR / "out"
sys.path.insert(0, str(REPO_ROOT / "tests" / "interop"))

import harness  # noqa: E402  (tests/interop/harness.py)

LOOPBACK = harness.LOOPBACK
USER, PASSWORD, REALM = "bench", "bench-password", "gateway.local"
SIZE = 172  # octets per message: an RTP packet of 20 ms G.711
# (clients, interval ms): offered load = clients x 1000/interval messages/s, twice relayed
# 200 x 3 ms (about 88,000 relayed packets/s) is where the gateway's single core runs out
# (coturn still relays it); past it uclient and the echo peer, sharing the 2 cores with the
# server, drop messages themselves whichever server relays: 200 x 2 ms is kept to show it.
DEFAULT_LOADS = ((50, 20), (100, 10), (100, 5), (200, 4), (200, 3), (200, 2))
QUICK_LOADS = ((20, 20),)
DEFAULT_SECONDS = 8  # nominal send phase per step (uclient prints progress once a second)
QUICK_SECONDS = 4
DEFAULT_HELD = 500
QUICK_HELD = 50
UCLIENT_TIMEOUT = 120.0
BUDGET = 0.5  # DESIGN.md: >= 50% of coturn's packets/s
# Relay port ranges. uclient leaves half its allocations behind (each client allocates twice
# and deletes one; the other lives out its 600 s lifetime on either server), so the ranges
# hold every step's allocations and the held ones at once.
GATEWAY_RELAY = (46000, 53999)
COTURN_RELAY = (54000, 61999)


@dataclass
class Step:
    server: str
    clients: int
    interval_ms: int
    packets: int
    sent: int = 0
    received: int = 0
    lost: int = -1
    errors: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    cpu_s: float = 0.0  # the server's, over the whole run (allocations included)
    exit_code: int = 0
    window_s: float = 0.0  # the send phase measured (progress lines' arrival times)
    window_packets: int = 0  # relayed packets in it (sent + received)
    window_cpu_s: float = 0.0  # the server's CPU in it

    @property
    def offered_pps(self) -> float:
        return 2 * self.clients * 1000.0 / self.interval_ms

    @property
    def relayed(self) -> int:
        return self.sent + self.received

    @property
    def relayed_pps(self) -> float:
        """Packets relayed per second in the send phase (each message counts twice)."""
        return self.window_packets / self.window_s if self.window_s > 0 else math.nan

    @property
    def cpu_per_1000(self) -> float:
        """Server CPU seconds per 1000 relayed packets in the send phase."""
        return self.window_cpu_s * 1000.0 / self.window_packets if self.window_packets else math.nan

    @property
    def cpu_share(self) -> float:
        """Share of one core the server used in the send phase."""
        return self.window_cpu_s / self.window_s if self.window_s > 0 else math.nan

    @property
    def cpu_per_allocation_ms(self) -> float:
        """Server CPU milliseconds per allocation per second of relaying."""
        return self.cpu_share * 1000.0 / self.clients

    @property
    def passed(self) -> bool:
        # errors uclient recovered from (coturn answers some Allocate retransmissions with
        # 437 under load) are reported, not failed: every message must still go and come back
        expected = self.clients * self.packets
        return (
            self.exit_code == 0
            and self.lost == 0
            and self.sent == expected
            and self.received == expected
        )


@dataclass
class Held:
    server: str
    wanted: int
    held: int = 0
    rss_idle: int = 0
    rss_held: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def rss_per_allocation(self) -> float:
        return (self.rss_held - self.rss_idle) / self.held if self.held else math.nan


# --- servers ---------------------------------------------------------------------------------


class Coturn(harness.StartStop):
    """turnserver with a temporary config on free ports of 127.0.0.1, stopped by its PID."""

    def __init__(self, workdir: Path, relay_ports: tuple[int, int]) -> None:
        self.workdir = workdir
        self.port = harness.free_port_pair()
        self.relay_ports = relay_ports
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "turnserver.log"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> Coturn:
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "turnserver.conf"
        conf.write_text(
            "\n".join(
                [
                    f"listening-ip={LOOPBACK}",
                    f"listening-port={self.port}",
                    f"relay-ip={LOOPBACK}",
                    f"min-port={self.relay_ports[0]}",
                    f"max-port={self.relay_ports[1]}",
                    "lt-cred-mech",
                    f"user={USER}:{PASSWORD}",
                    f"realm={REALM}",
                    "allow-loopback-peers",
                    "no-tls",
                    "no-dtls",
                    "no-cli",
                    "no-multicast-peers",
                    "fingerprint",
                    f"userdb={self.workdir / 'turndb.sqlite'}",
                    f"pidfile={self.workdir / 'turnserver.pid'}",
                    f"log-file={self.log_path}",
                    "simple-log",
                    "",
                ]
            )
        )
        log = (self.workdir / "turnserver.out").open("ab")
        self.proc = subprocess.Popen(
            [_tool("turnserver"), "-c", str(conf)],
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        if not harness.wait_port_bound(self.port, "udp", 10.0, self.proc):
            raise harness.HarnessError(f"turnserver did not bind udp:{self.port}")
        time.sleep(0.5)  # its relay threads
        return self

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        return harness._stop_process(self.proc, 5.0, 15)


class EchoPeer(harness.StartStop):
    def __init__(self) -> None:
        self.port = harness.free_port("udp")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> EchoPeer:
        self.proc = subprocess.Popen(
            [_tool("turnutils_peer"), "-L", LOOPBACK, "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.3)
        if self.proc.poll() is not None:
            raise harness.HarnessError("turnutils_peer exited at start")
        return self

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        return harness._stop_process(self.proc, 3.0, 15)


def pin(pid: int, cpus: set[int]) -> bool:
    """Put every thread of process ``pid`` on ``cpus`` (threads started later inherit it)."""
    ok = True
    try:
        tasks = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        tasks = [pid]
    for tid in tasks:
        try:
            os.sched_setaffinity(tid, cpus)
        except OSError:
            ok = False
    return ok


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise SystemExit(f"{name} not found: install Debian coturn (apt-get install coturn)")
    return path


# --- load ------------------------------------------------------------------------------------


_PROGRESS = re.compile(r"start_mclient: msz=\d+, tot_send_msgs=(\d+), tot_recv_msgs=(\d+)")


def uclient(
    port: int, peer: int, clients: int, interval_ms: int, packets: int, pid: int
) -> tuple[int, str, list[tuple[float, int, int, float]]]:
    """Run uclient, line-buffered; its output, and each once-a-second progress line as
    (arrival time, sent, received, server CPU seconds then)."""
    args = [
        "stdbuf", "-oL", "-eL", _tool("turnutils_uclient"), "-c", "-u", USER, "-w", PASSWORD,
        "-p", str(port), "-e", LOOPBACK, "-r", str(peer), "-m", str(clients),
        "-n", str(packets), "-l", str(SIZE), "-z", str(interval_ms), LOOPBACK,
    ]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    lines: list[str] = []
    samples: list[tuple[float, int, int, float]] = []
    deadline = time.monotonic() + UCLIENT_TIMEOUT
    try:
        for line in proc.stdout:
            lines.append(line)
            match = _PROGRESS.search(line)
            if match:
                samples.append(
                    (time.monotonic(), int(match[1]), int(match[2]), harness.proc_cpu_seconds(pid))
                )
            if time.monotonic() > deadline:
                break
    finally:
        if proc.poll() is None:
            proc.kill()
        code = proc.wait()
    return code, "".join(lines), samples


def run_step(
    server: str, port: int, pid: int, peer: int, clients: int, interval_ms: int, packets: int
) -> Step:
    """One uclient run. The relayed rate and the CPU per packet are taken over the send phase
    (from the first progress line with messages sent to the last one), so neither the
    allocations' setup nor a pacing that slips (uclient's own, at the top loads) skews them."""
    step = Step(server, clients, interval_ms, packets)
    cpu0 = harness.proc_cpu_seconds(pid)
    started = time.monotonic()
    step.exit_code, text, samples = uclient(port, peer, clients, interval_ms, packets, pid)
    step.wall_s = time.monotonic() - started
    step.cpu_s = harness.proc_cpu_seconds(pid) - cpu0
    totals = re.findall(r"start_mclient: tot_send_msgs=(\d+), tot_recv_msgs=(\d+)", text)
    if totals:
        step.sent, step.received = int(totals[-1][0]), int(totals[-1][1])
    lost = re.search(r"Total lost packets (\d+)", text)
    step.lost = int(lost.group(1)) if lost else -1
    step.errors = sorted(set(re.findall(r"error \d+ \([^)]*\)|ERROR: [^\n]*", text)))[:5]
    sending = [sample for sample in samples if sample[1] > 0]
    if len(sending) >= 2:
        first, last = sending[0], sending[-1]
        step.window_s = last[0] - first[0]
        step.window_packets = last[1] + last[2] - first[1] - first[2]
        step.window_cpu_s = last[3] - first[3]
    return step


def hold(server: str, port: int, pid: int, peer: int, count: int, allocations: Any) -> Held:
    """``-m count`` uclient clients at once for about 10 s (two allocations each, one of which
    uclient keeps without using it): the most relay sockets seen beyond those already open
    before, and the RSS then."""
    held = Held(server, count)
    held.rss_idle = harness.proc_rss_bytes(pid)
    baseline = allocations()
    args = [
        _tool("turnutils_uclient"), "-c", "-u", USER, "-w", PASSWORD, "-p", str(port),
        "-e", LOOPBACK, "-r", str(peer), "-m", str(count), "-n", "10", "-l", "100",
        "-z", "1000", LOOPBACK,
    ]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    best = 0
    deadline = time.monotonic() + 30
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
            now = allocations()
            if now > best:
                best = now
                held.rss_held = harness.proc_rss_bytes(pid)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    try:
        out, _ = proc.communicate(timeout=UCLIENT_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    held.held = max(0, best - baseline)
    held.errors = sorted(set(re.findall(r"error \d+ \([^)]*\)|ERROR: [^\n]*", out or "")))[:5]
    return held


def relay_sockets(pid: int, low: int, high: int) -> int:
    """UDP sockets of process ``pid`` bound in [low, high] (its relay ports): its allocations."""
    inodes: set[str] = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            target = fd.readlink().as_posix()
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            port = int(fields[1].rsplit(":", 1)[1], 16)
            if low <= port <= high and fields[9] in inodes:
                count += 1
    return count


# --- report ----------------------------------------------------------------------------------


def report(steps: list[Step], held: list[Held], args: argparse.Namespace) -> tuple[str, bool]:
    lines = [
        "# TURN relay: acs-gateway vs coturn turnserver",
        "",
        f"uclient -c, {SIZE}-octet messages for about {args.seconds} s per step, channels; "
        "relayed = sent + echoed back (each message crosses the relay twice). "
        + (
            "Both servers pinned to CPU 0, uclient and the echo peers to the other CPUs."
            if getattr(args, "pinned", False)
            else "Not pinned."
        ),
        "",
        "| server | clients | interval ms | offered pkt/s | relayed pkt/s | lost | CPU share | "
        "CPU ms / 1000 pkts | CPU ms / alloc / s | pass |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in steps:
        lines.append(
            f"| {s.server} | {s.clients} | {s.interval_ms} | {s.offered_pps:.0f} | "
            f"{s.relayed_pps:.0f} | {s.lost} | {s.cpu_share:.2f} | {s.cpu_per_1000 * 1000:.1f} | "
            f"{s.cpu_per_allocation_ms:.2f} | {'yes' if s.passed else 'NO'}"
            f"{' (' + ', '.join(s.errors) + ')' if s.errors else ''} |"
        )
    best: dict[str, float] = {}
    for name in ("acs-gateway", "coturn"):
        passed = [s.relayed_pps for s in steps if s.server == name and s.passed]
        best[name] = max(passed) if passed else 0.0
    ratio = best["acs-gateway"] / best["coturn"] if best["coturn"] else math.nan
    cpu_ratios = [
        g.cpu_per_1000 / c.cpu_per_1000
        for g, c in zip(steps[0::2], steps[1::2], strict=False)
        if g.passed and c.passed and c.cpu_per_1000 > 0
    ]
    lines += [
        "",
        f"Highest load relayed with no loss: acs-gateway {best['acs-gateway']:.0f} pkt/s, "
        f"coturn {best['coturn']:.0f} pkt/s: ratio {ratio:.2f} "
        f"(budget >= {BUDGET:.2f}: {'met' if ratio >= BUDGET else 'NOT met'}; coturn's "
        "ceiling is at least this: the load tops out at the steps' highest offered rate).",
    ]
    if cpu_ratios:
        lines.append(
            f"CPU per relayed packet, gateway / coturn, median over the steps both passed: "
            f"{statistics.median(cpu_ratios):.2f} (n={len(cpu_ratios)})."
        )
    per_core: dict[str, float] = {}
    for name in ("acs-gateway", "coturn"):
        heavy = [s for s in steps if s.server == name and s.passed and s.cpu_share >= 0.1]
        per_core[name] = (
            statistics.median(s.relayed_pps / s.cpu_share for s in heavy) if heavy else math.nan
        )
    lines.append(
        f"Packets/s per core of CPU (relayed rate / CPU share, median over passed steps using "
        f">= 0.1 core): acs-gateway {per_core['acs-gateway']:.0f}, coturn "
        f"{per_core['coturn']:.0f}: ratio {per_core['acs-gateway'] / per_core['coturn']:.2f} "
        "(the gateway relays on one core; coturn has a relay thread per CPU)."
    )
    lines += [
        "",
        "## Allocations held",
        "",
        "| server | asked | held at once | RSS / allocation |",
        "|---|---|---|---|",
    ]
    for h in held:
        lines.append(
            f"| {h.server} | {h.wanted} | {h.held} | {h.rss_per_allocation / 1024:.1f} KiB"
            f"{' ' + ', '.join(h.errors) if h.errors else ''} |"
        )
    ok = ratio >= BUDGET
    return "\n".join(lines) + "\n", ok


def parse_loads(text: str) -> tuple[tuple[int, int], ...]:
    loads = []
    for item in text.split(","):
        clients, _, interval = item.partition("x")
        loads.append((int(clients), int(interval)))
    return tuple(loads)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loads", type=parse_loads, help="CLIENTSxINTERVAL_MS,... steps")
    parser.add_argument("--seconds", type=int, help="nominal send phase per step")
    parser.add_argument("--held", type=int, help="allocations held at once")
    parser.add_argument("--quick", action="store_true", help="one small step (smoke run)")
    args = parser.parse_args(argv)
    loads = args.loads or (QUICK_LOADS if args.quick else DEFAULT_LOADS)
    args.seconds = args.seconds or (QUICK_SECONDS if args.quick else DEFAULT_SECONDS)
    held_count = args.held or (QUICK_HELD if args.quick else DEFAULT_HELD)
    OUT_DIR.mkdir(exist_ok=True)
    steps: list[Step] = []
    held: list[Held] = []
    with tempfile.TemporaryDirectory(prefix="turn-bench-") as tmp:
        work = Path(tmp)
        gw = harness.GatewayProcess(
            work / "gateway",
            tls=False,
            extra_config={
                "turn": {
                    "users": {USER: PASSWORD},
                    "allowed_peers": ["127.0.0.0/8"],
                    "relay_port_range": list(GATEWAY_RELAY),
                },
                "log": {"level": "warning"},
            },
        )
        coturn = Coturn(work / "coturn", COTURN_RELAY)
        peers = (EchoPeer(), EchoPeer())
        try:
            gw.start()
            coturn.start()
            # each server on CPU 0 (one at a time is loaded), the load (this process, uclient,
            # the echo peers) on the other CPUs, so that a busy server does not starve the
            # load generator and both servers get the same one core
            pinned = (os.cpu_count() or 1) >= 2
            if pinned:
                others = set(range(1, os.cpu_count() or 2))
                pinned = pin(gw.pid, {0}) and pin(coturn.pid, {0}) and pin(os.getpid(), others)
            args.pinned = pinned
            for peer in peers:
                peer.start()
            servers = (
                ("acs-gateway", gw.turn_port, gw.pid, peers[0].port, GATEWAY_RELAY),
                ("coturn", coturn.port, coturn.pid, peers[1].port, COTURN_RELAY),
            )
            for clients, interval in loads:
                for name, port, pid, peer, _ in servers:
                    packets = args.seconds * 1000 // interval
                    step = run_step(name, port, pid, peer, clients, interval, packets)
                    steps.append(step)
                    print(
                        f"{name:<12} {clients:4d} clients x {interval:3d} ms: "
                        f"{step.relayed_pps:8.0f} pkt/s relayed, lost {step.lost}, "
                        f"CPU {step.cpu_share:.2f} core, {'ok' if step.passed else 'FAIL'} "
                        f"{' '.join(step.errors)}",
                        flush=True,
                    )
                    time.sleep(1.0)
            for name, port, pid, peer, ports in servers:
                result = hold(
                    name,
                    port,
                    pid,
                    peer,
                    held_count,
                    lambda pid=pid, ports=ports: relay_sockets(pid, *ports),
                )
                held.append(result)
                print(
                    f"{name:<12} held {result.held}/{held_count} allocations, "
                    f"{result.rss_per_allocation / 1024:.1f} KiB each",
                    flush=True,
                )
        finally:
            for peer in peers:
                peer.stop()
            coturn.stop()
            gw.stop()
    text, ok = report(steps, held, args)
    (OUT_DIR / "turn_relay.md").write_text(text)
    (OUT_DIR / "turn_relay.json").write_text(
        json.dumps(
            {
                "steps": [
                    asdict(s)
                    | {
                        "relayed_pps": s.relayed_pps,
                        "passed": s.passed,
                        "cpu_per_1000": s.cpu_per_1000,
                    }
                    for s in steps
                ],
                "held": [asdict(h) | {"rss_per_allocation": h.rss_per_allocation} for h in held],
            },
            indent=1,
            default=str,
        )
    )
    print(text)
    return 0 if ok or args.quick else 1


if __name__ == "__main__":
    sys.exit(main())
