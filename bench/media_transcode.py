"""Transcoded calls through the gateway: how many G.711 <-> Opus calls one core carries with
every 20 ms frame on time, against the same traffic without the gateway in the same run.

Topology (127.0.0.1; the gateway on one core, everything else on the other)::

    generator socket i --PCMU--> gateway a-leg i ==transcode==> b-leg i --Opus--> SIPp
          ^                                                                 uas_opus.xml
          +--------PCMU-- gateway a-leg i <==transcode== b-leg i <--Opus-- -rtp_echo :P

N calls are placed from one SIP socket, each offering PCMU only from its own RTP port; the
caller trunk allows PCMU, the callee trunk ``opus`` only, and SIPp ``uas_opus.xml`` answers
Opus with its echo port P. Every call is transcoded both ways: PCMU -> Opus toward SIPp (jitter
buffer, G.711 decode, Opus encode on the gateway's 20 ms media clock) and, for what SIPp echoes,
Opus -> PCMU back (jitter buffer, Opus decode with FEC/PLC, G.711 encode). The generator sends
a speech-like μ-law signal, 20 ms packets, calls spread over the 20 ms.

Counted per N: the gateway's ``media_late_ticks`` (media clock ticks that ran late because the
reactor was busy; from its status file, over the step), and at the caller's sockets the PCMU
frames that arrive more than 30 ms after their 20 ms schedule (by RTP timestamp; kernel receive
times), frames back / frames sent, gateway CPU (share of its core, ms per call-second). The
direct run (the same packets straight to SIPp's echo) is the rig's own floor. Then py-spy
profiles the gateway at the largest N with 0 late ticks.

Usage: python bench/media_transcode.py [--calls 25,50,...] [--seconds 6] [--quick]
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

DEFAULT_CALLS = (25, 35, 50, 75, 100, 150, 200, 250)
QUICK_CALLS = (10,)
LATE_MS = 30.0
MIN_BACK = 0.99  # frames back / frames sent for a step to count
MAX_SEND_LAG_MS = ml.MAX_SEND_LAG_MS


@dataclass
class Step(ml.LoadStep):
    @property
    def late_ticks(self) -> int:
        return int(self.status.get("media_late_ticks", -1))

    @property
    def back_ratio(self) -> float:
        sent = self.gateway.get("sent", 0)
        return self.gateway.get("frames", 0) / sent if sent else math.nan

    @property
    def cpu_ms_per_call_second(self) -> float:
        span = self.gateway.get("send_span_s", 0.0)
        return self.cpu_s * 1000.0 / (self.calls * span) if span else math.nan

    @property
    def passed(self) -> bool:
        return (
            self.setup_failed == 0
            and self.late_ticks == 0
            and self.back_ratio >= MIN_BACK
            and self.generator_ok
        )


def summarize(result: ml.LoadResult) -> dict[str, Any]:
    timing = ml.frame_timing(result.arrivals, late_ms=LATE_MS)
    return {
        "sent": result.sent,
        "send_errors": result.send_errors,
        "send_rate": result.send_rate,
        "send_span_s": (result.last_send_ns - result.first_send_ns) / 1e9,
        "send_lag_p99_ms": result.send_lag_ms[1],
        "send_lag_max_ms": result.send_lag_ms[2],
        "received": result.received,
        "foreign": result.foreign,
        "rtcp_seen": result.rtcp,
        "elapsed_s": result.elapsed_s,
        **timing,
    }


def run_step(rig: ml.Rig, n: int, seconds: float, frames: list[bytes],
             profiler_out: Path | None = None, profile_s: float = 0.0) -> tuple[Step, Any]:
    return ml.run_step(rig, Step(n, seconds), summarize, load={"mode": "audio", "audio": frames},
                       profiler_out=profiler_out, profile_s=profile_s)


def step_line(s: Step) -> str:
    g, d = s.gateway, s.direct
    return (
        f"{s.calls:>4} calls: late ticks {s.late_ticks}, frames back {g.get('frames', 0)}/"
        f"{g.get('sent', 0)}, late>{LATE_MS:g}ms {g.get('late', '-')} (direct "
        f"{d.get('late', '-')}), lateness p99 {ml.fmt(g.get('p99_ms', math.nan))} ms max "
        f"{ml.fmt(g.get('max_ms', math.nan))} ms, CPU {ml.fmt(s.cpu_share * 100, 0)}% "
        f"({ml.fmt(s.cpu_ms_per_call_second, 3)} ms per call-second), gen lag p99 "
        f"{ml.fmt(g.get('send_lag_p99_ms', math.nan))} ms"
        + (f" [{s.note}]" if s.note else "")
    )


def best(steps: Sequence[Step]) -> Step | None:
    found = None
    for s in steps:
        if not s.passed:
            break
        found = s
    return found


def render(steps: Sequence[Step], meta: dict[str, str], profile_md: list[str]) -> str:
    b = best(steps)
    lines = ["# Media transcode: PCMU <-> Opus, generator -> gateway -> SIPp echo -> gateway", ""]
    lines += [f"- {k}: {v}" for k, v in meta.items()]
    lines += [
        "",
        "Largest N with 0 late ticks (and >= 99% of frames back): "
        + (f"**{b.calls} calls** (gateway CPU {b.cpu_share:.0%} of its core, "
           f"{b.cpu_ms_per_call_second:.2f} ms CPU per call-second)" if b else "**none**"),
        "",
        "| calls | late ticks | frames back / sent | late > 30 ms gw (direct) "
        "| lateness p50 / p99 / max ms gw | direct p99 / max ms | gw CPU (its core busy) "
        "| CPU ms per call-second | gen pkt/s (lag p99 ms) | gw counters |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for s in steps:
        g, d, st = s.gateway, s.direct, s.status
        if not g:
            lines.append(f"| {s.calls} | - | - | - | - | - | - | - | - | {s.note} |")
            continue
        counters = ml.counters_text(
            st,
            ("transcoders", "rtp_packets_in", "rtp_packets_out", "rtp_malformed",
             "rtp_wrong_source", "rtp_unknown_pt", "media_handler_errors"),
            always=("transcoders", "rtp_packets_in", "rtp_packets_out"),
        )
        lines.append(
            f"| {s.calls} | {s.late_ticks} | {g['frames']} / {g['sent']} ({s.back_ratio:.1%}) "
            f"| {g['late']} ({d.get('late', '-')}) "
            f"| {g['p50_ms']:.2f} / {g['p99_ms']:.2f} / {g['max_ms']:.1f} "
            f"| {d.get('p99_ms', math.nan):.2f} / {d.get('max_ms', math.nan):.1f} "
            f"| {s.cpu_share:.0%} ({s.cpu0.get('busy', math.nan):.0%}) "
            f"| {s.cpu_ms_per_call_second:.3f} "
            f"| {g['send_rate']:.0f} ({g['send_lag_p99_ms']:.2f}) | {counters}"
            + (f"; {s.note}" if s.note else "") + " |"
        )
    lines.append("")
    lines += profile_md
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = ml.bench_parser(__doc__)
    ml.add_sweep_args(parser, DEFAULT_CALLS,
                      profile_help="py-spy at the largest N with 0 late ticks (0: no profile)",
                      quick_help="smoke run: 10 calls for 3 s, 2 s profile")
    ml.add_output_args(parser, "media_transcode")
    args = parser.parse_args(argv)

    sweep = ml.Sweep.from_args(args, QUICK_CALLS)
    harness.require_sipp()
    workdir = Path(tempfile.mkdtemp(prefix="bench-media-transcode-"))
    rig = ml.Rig(workdir, scenario="uas_opus", callee_codecs=("opus",))
    frames = ml.ulaw_frames(1.0)
    steps: list[Step] = []
    profile_md: list[str] = []
    errors: list[str] = []
    with rig.stopped_after(errors):
        rig.start()
        for n in sweep.counts:
            if sweep.overdue():
                errors.append(f"time budget spent before {n} calls")
                break
            if not rig.gw.running():
                errors.append("the gateway exited")
                break
            step, _ = run_step(rig, n, sweep.seconds, frames)
            steps.append(step)
            print(step_line(step), flush=True)
            late_share = step.gateway.get("late", 0) / max(1, step.gateway.get("frames", 0))
            if step.setup_failed or step.back_ratio < 0.9 or late_share > 0.5 \
                    or step.cpu_share > 0.98:
                break  # overloaded (or broken): larger N only costs time
        profile_md = ml.profile_section(
            rig, sweep, best(steps) or (steps[0] if steps else None), args.out, errors,
            run=lambda n, seconds, raw: run_step(rig, n, seconds, frames, profiler_out=raw,
                                                 profile_s=sweep.profile_s),
            line=step_line,
            title=lambda s: f"the gateway transcoding {s.calls} calls both ways",
            aside=lambda s: f"late ticks {s.late_ticks}; py-spy --nonblocking on the other core",
        )
    log_tail = rig.log_tail

    meta = ml.machine_meta() | {
        "runs": f"{sweep.summary}; at each N the same packets first straight to SIPp's echo "
        "(direct), then through the gateway",
        "pass": f"0 media_late_ticks over the step, >= {MIN_BACK:.0%} of frames back, the "
        f"generator on time (slot lag p99 <= {MAX_SEND_LAG_MS:g} ms)",
        "late frame": f"a PCMU frame back more than {LATE_MS:g} ms after its 20 ms schedule "
        "(RTP timestamp; the call's earliest frame sets the schedule)",
        "cores": rig.cores,
    }
    if errors:
        meta["errors"] = "; ".join(errors)
    ml.publish(args.out, render(steps, meta, profile_md), {
        "meta": meta,
        "steps": [asdict(s) | {"late_ticks": s.late_ticks, "back_ratio": s.back_ratio,
                               "cpu_share": s.cpu_share,
                               "cpu_ms_per_call_second": s.cpu_ms_per_call_second,
                               "passed": s.passed} for s in steps],
        "gateway_log_tail": log_tail,
    }, workdir, args.keep)
    return 1 if errors or not steps or "Traceback" in log_tail else 0


if __name__ == "__main__":
    sys.exit(main())
