"""Relayed RTP through the gateway: how many G.711 calls one core carries with no loss, and the
latency the relay adds, against the same traffic without the gateway in the same run.

Topology (127.0.0.1; the gateway on one core, everything else on the other)::

    generator socket i --RTP--> gateway a-leg i --> SIPp uas -rtp_echo :P (callee's SDP)
          ^                                               |
          +-------------- gateway a-leg i <-- b-leg i <---+

N calls are placed from one SIP socket (PCMU offers, each with its call's own RTP port); SIPp
``uas.xml`` answers every one with its echo port P. The generator then sends 20 ms PCMU
packets (172 bytes) on every call, calls spread over the 20 ms; each payload carries the call,
its sequence number and the send time. SIPp echoes each packet back to the gateway's b-leg
port, the gateway relays it to the caller's socket: every packet crosses the relay twice
(a->b and b->a), so the gateway relays N x 100 packets/s (N x 200 counting in and out, the
DESIGN figure). The direct run sends the same packets from the same sockets straight to
SIPp's echo port; ``added`` latency is the gateway run's percentile less the direct run's.

Per N (interleaved, plain RTP then SDES-SRTP on the caller leg): sent, back, lost, latency
p50/p99/p99.9 of both runs, gateway CPU seconds per 1000 relayed packets, its status counters,
kernel UDP drops, and the generator's own pacing (so a slow generator is not taken for a slow
gateway). Then py-spy profiles the gateway at the largest N that passed.

Usage: python bench/media_relay.py [--calls 50,100,...] [--seconds 6] [--no-srtp] [--quick]
"""

from __future__ import annotations

import math
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import mediaload as ml
from mediaload import harness

DEFAULT_CALLS = (50, 100, 200, 300, 400, 500)
QUICK_CALLS = (20,)
MAX_SEND_LAG_MS = ml.MAX_SEND_LAG_MS
TARGET_P99_MS = 1.0


@dataclass
class Step(ml.LoadStep):
    srtp: bool = False  # SDES-SRTP on the caller leg

    @property
    def relayed(self) -> int:
        return int(self.status.get("rtp_packets_out", 0))

    @property
    def cpu_per_1000(self) -> float:
        return self.cpu_s * 1000.0 / self.relayed if self.relayed else math.nan

    @property
    def added_p50(self) -> float:
        return float(self.gateway.get("p50", math.nan) - self.direct.get("p50", math.nan))

    @property
    def added_p99(self) -> float:
        return float(self.gateway.get("p99", math.nan) - self.direct.get("p99", math.nan))

    @property
    def zero_loss(self) -> bool:
        return (
            self.setup_failed == 0
            and self.gateway.get("sent", 0) > 0
            and self.gateway.get("lost", 1) == 0
        )

    @property
    def passed(self) -> bool:
        return self.zero_loss and self.generator_ok


def summarize(result: ml.LoadResult) -> dict[str, Any]:
    lat = ml.latency_summary(result)
    return {
        "sent": result.sent,
        "back": result.unique,
        "lost": result.lost,
        "duplicates": result.duplicates,
        "foreign": result.foreign,
        "rtcp_seen": result.rtcp,
        "send_errors": result.send_errors,
        "send_rate": result.send_rate,
        "send_lag_p50_ms": result.send_lag_ms[0],
        "send_lag_p99_ms": result.send_lag_ms[1],
        "send_lag_max_ms": result.send_lag_ms[2],
        "elapsed_s": result.elapsed_s,
        **lat,
    }


def run_step(rig: ml.Rig, n: int, seconds: float, srtp: bool,
             profiler_out: Path | None = None, profile_s: float = 0.0) -> tuple[Step, Any]:
    return ml.run_step(rig, Step(n, seconds, srtp=srtp), summarize,
                       caller="caller_srtp" if srtp else "caller", srtp=srtp, drops=True,
                       profiler_out=profiler_out, profile_s=profile_s)


def step_line(s: Step) -> str:
    g, d = s.gateway, s.direct
    return (
        f"{'SRTP' if s.srtp else 'RTP ':>4} {s.calls:>4} calls: sent {g.get('sent', 0)}, "
        f"lost {g.get('lost', '-')} (direct {d.get('lost', '-')}), "
        f"p50 {ml.fmt(g.get('p50', math.nan), 3)} ms p99 {ml.fmt(g.get('p99', math.nan), 3)} ms "
        f"(direct {ml.fmt(d.get('p50', math.nan), 3)}/{ml.fmt(d.get('p99', math.nan), 3)}), "
        f"added p99 {ml.fmt(s.added_p99, 3)} ms, CPU {ml.fmt(s.cpu_share * 100, 0)}% "
        f"{ml.fmt(s.cpu_per_1000, 3)} s/1000 pkts, gen lag p99 "
        f"{ml.fmt(g.get('send_lag_p99_ms', math.nan), 2)} ms"
        + (f" [{s.note}]" if s.note else "")
    )


def drops_text(g: dict[str, Any]) -> str:
    total = g.get("kernel_udp_drops", 0)
    where = ", ".join(f"{k} {v}" for k, v in g.get("socket_drops", {}).items() if v)
    return f"{total}" + (f" ({where})" if where else "")


def best(steps: Sequence[Step], srtp: bool, *, target: bool = False) -> Step | None:
    """The largest N of the unbroken run of passing steps (``target``: also p99 < 1 ms)."""
    found = None
    for s in steps:
        if s.srtp != srtp:
            continue
        ok = s.passed and (not target or s.added_p99 < TARGET_P99_MS)
        if not ok:
            break
        found = s
    return found


def render(steps: Sequence[Step], meta: dict[str, str], profile_md: list[str]) -> str:
    lines = ["# Media relay: generator -> gateway -> SIPp echo -> gateway -> generator", ""]
    lines += [f"- {k}: {v}" for k, v in meta.items()]
    lines.append("")
    for srtp in (False, True):
        chosen = [s for s in steps if s.srtp == srtp]
        if not chosen:
            continue
        b = best(steps, srtp)
        t = best(steps, srtp, target=True)
        name = "SDES-SRTP on the caller leg" if srtp else "plain RTP"
        lines += [
            f"## {name}",
            "",
            "Largest N with 0 loss: "
            + (f"**{b.calls} calls** ({b.calls * 100} relayed packets/s, added p50 "
               f"{b.added_p50:.3f} ms, p99 {b.added_p99:.3f} ms)" if b else "**none**"),
            "",
            f"Largest N with 0 loss and added p99 < {TARGET_P99_MS:g} ms: "
            + (f"**{t.calls} calls**" if t else "**none**"),
            "",
            "| calls | relayed pkt/s | sent | lost (direct) | p50 ms gw / direct "
            "| p99 ms gw / direct | added p50 / p99 ms | gw p99 per second: median / worst ms "
            "| gw CPU (its core busy) | CPU s / 1000 pkts | gen pkt/s (lag p99 ms) "
            "| kernel drops | gw counters |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for s in chosen:
            g, d, st = s.gateway, s.direct, s.status
            counters = ml.counters_text(st, (
                "rtp_packets_in", "rtp_packets_out", "rtp_wrong_source", "rtp_malformed",
                "rtp_srtp_auth", "rtp_replay", "rtp_unknown_pt", "media_handler_errors"))
            if not g:
                lines.append(f"| {s.calls} | - | - | - | - | - | - | - | - | - | - | - | "
                             f"{s.note} |")
                continue
            lines.append(
                f"| {s.calls} | {s.calls * 100} | {g['sent']} | {g['lost']} ({d.get('lost')}) "
                f"| {g['p50']:.3f} / {d.get('p50', math.nan):.3f} "
                f"| {g['p99']:.3f} / {d.get('p99', math.nan):.3f} "
                f"| {s.added_p50:.3f} / {s.added_p99:.3f} "
                f"| {g['p99_sec_median']:.2f} / {g['p99_sec_worst']:.2f} "
                f"| {s.cpu_share:.0%} ({s.cpu0.get('busy', math.nan):.0%}) "
                f"| {s.cpu_per_1000:.3f} "
                f"| {g['send_rate']:.0f} ({g['send_lag_p99_ms']:.2f}) "
                f"| {drops_text(g)} | {counters}"
                + (f"; {s.note}" if s.note else "") + " |"
            )
        lines.append("")
    if profile_md:
        lines += profile_md
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = ml.bench_parser(__doc__)
    ml.add_sweep_args(parser, DEFAULT_CALLS,
                      profile_help="py-spy at the largest passing N (0: no profile)",
                      quick_help="smoke run: 20 calls for 3 s, plain and SRTP, 2 s profile")
    parser.add_argument("--no-srtp", action="store_true", help="plain RTP only")
    ml.add_output_args(parser, "media_relay")
    args = parser.parse_args(argv)

    sweep = ml.Sweep.from_args(args, QUICK_CALLS)
    harness.require_sipp()
    workdir = Path(tempfile.mkdtemp(prefix="bench-media-relay-"))
    rig = ml.Rig(workdir, callers={"caller": "off", "caller_srtp": "mandatory"})
    steps: list[Step] = []
    profile_md: list[str] = []
    errors: list[str] = []
    with rig.stopped_after(errors):
        rig.start()
        stopped = {False: False, True: args.no_srtp}
        for n in sweep.counts:
            for srtp in (False, True):
                if stopped[srtp]:
                    continue
                if sweep.overdue():
                    errors.append(f"time budget spent before {n} calls")
                    stopped[srtp] = True
                    continue
                if not rig.running():
                    errors.append("the gateway exited")
                    stopped = {False: True, True: True}
                    break
                step, _ = run_step(rig, n, sweep.seconds, srtp)
                steps.append(step)
                print(step_line(step), flush=True)
                if not step.passed:
                    stopped[srtp] = True
        chosen = best(steps, False) or next((s for s in steps if not s.srtp), None)
        profile_md = ml.profile_section(
            rig, sweep, chosen, args.out, errors,
            run=lambda n, seconds, raw: run_step(rig, n, seconds, False, profiler_out=raw,
                                                 profile_s=sweep.profile_s),
            line=step_line,
            title=lambda s: f"the gateway relaying {s.calls} calls ({s.calls * 100} packets/s)",
            aside=lambda s: "py-spy --nonblocking, its own CPU on the other core",
        )
    log_tail = rig.log_tail

    meta = ml.machine_meta() | {
        "runs": f"{sweep.summary}; plain then SRTP at each N, each after the same packets sent "
        "without the gateway (direct)",
        "pass": f"0 lost and the generator on time (slot lag p99 <= {MAX_SEND_LAG_MS:g} ms); "
        "a mode stops at its first step with loss",
        "cores": rig.cores,
    }
    if errors:
        meta["errors"] = "; ".join(errors)
    ml.publish(args.out, render(steps, meta, profile_md), {
        "meta": meta,
        "steps": [asdict(s) | {"added_p50": s.added_p50, "added_p99": s.added_p99,
                               "cpu_per_1000": s.cpu_per_1000, "cpu_share": s.cpu_share,
                               "passed": s.passed} for s in steps],
        "gateway_log_tail": log_tail,
    }, workdir, args.keep)
    bad_log = "Traceback" in log_tail
    return 1 if errors or not steps or bad_log else 0


if __name__ == "__main__":
    sys.exit(main())
