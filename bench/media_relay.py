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

import argparse
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import mediaload as ml
from mediaload import harness

DEFAULT_CALLS = (50, 100, 200, 300, 400, 500)
QUICK_CALLS = (20,)
#: the generator's own pacing; later than this (p99 of its 1 ms slots) the step is invalid
MAX_SEND_LAG_MS = 5.0
TARGET_P99_MS = 1.0


@dataclass
class Step:
    calls: int
    srtp: bool
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
    def relayed(self) -> int:
        return int(self.status.get("rtp_packets_out", 0))

    @property
    def cpu_per_1000(self) -> float:
        return self.cpu_s * 1000.0 / self.relayed if self.relayed else math.nan

    @property
    def cpu_share(self) -> float:
        return self.cpu_s / self.gw_elapsed_s if self.gw_elapsed_s else math.nan

    @property
    def added_p50(self) -> float:
        return float(self.gateway.get("p50", math.nan) - self.direct.get("p50", math.nan))

    @property
    def added_p99(self) -> float:
        return float(self.gateway.get("p99", math.nan) - self.direct.get("p99", math.nan))

    @property
    def generator_ok(self) -> bool:
        lag = max(self.direct.get("send_lag_p99_ms", 0.0), self.gateway.get("send_lag_p99_ms", 0.0))
        return lag <= MAX_SEND_LAG_MS and not self.gateway.get("send_errors", 0)

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
    gw = rig.gw
    step = Step(n, srtp, seconds)
    placer = rig.placer("caller_srtp" if srtp else "caller")
    endpoints = ml.Endpoints(n)
    top: Any = None
    try:
        calls = placer.place(endpoints.ports, srtp=srtp)
        ok = [c for c in calls if c.status == 200 and c.media[1]]
        step.placed = len(ok)
        step.setup_failed = n - len(ok)
        if step.setup_failed:
            bad = {c.status for c in calls if c not in ok}
            step.note = f"{step.setup_failed} calls not set up (statuses {sorted(bad)})"
            step.hung_up = placer.hangup(calls)
            return step, None
        if srtp and any(c.gateway_key is None for c in calls):
            step.note = "the gateway's answer carried no usable a=crypto line"
            step.hung_up = placer.hangup(calls)
            return step, None
        before = ml.fresh_status(gw)
        echo = [(ml.LOOPBACK, rig.echo_port)] * n

        def sessions(keys_out: Sequence[bytes | None], keys_in: Sequence[bytes | None]) -> tuple[
                list[Any] | None, list[Any] | None]:
            if not srtp:
                return None, None
            return ([ml.srtp_session(k, True) for k in keys_out if k is not None],
                    [ml.srtp_session(k, False) for k in keys_in if k is not None])

        out, inn = sessions([c.key for c in calls], [c.key for c in calls])
        direct = ml.run_load(endpoints, echo, seconds=seconds, srtp_out=out, srtp_in=inn)
        step.direct = summarize(direct)
        endpoints.drain()
        out, inn = sessions([c.key for c in calls], [c.gateway_key for c in calls])
        profiler = (
            ml.Profiler(gw.pid, profile_s, profiler_out, ml.cpu_plan()[1])
            if profiler_out is not None else None
        )
        udp0 = ml.udp_counters()
        socks0 = ml.udp_socket_drops()
        times0 = ml.cpu_times()
        cpu0 = harness.proc_cpu_seconds(gw.pid)
        via = ml.run_load(endpoints, [c.media for c in calls], seconds=seconds, srtp_out=out,
                          srtp_in=inn)
        step.cpu_s = harness.proc_cpu_seconds(gw.pid) - cpu0
        gw_cpu = min(ml.cpu_plan()[0])
        step.cpu0 = ml.cpu_breakdown(times0, ml.cpu_times(), f"cpu{gw_cpu}")
        step.gw_elapsed_s = via.elapsed_s
        step.gateway = summarize(via) | {
            "kernel_udp_drops": ml.udp_drops(udp0, ml.udp_counters()),
            "socket_drops": ml.drops_by_owner(socks0, ml.udp_socket_drops(), {
                "SIPp echo": [rig.echo_port],
                "gateway": range(gw.media_port_range[0], gw.media_port_range[1] + 1),
                "generator": endpoints.ports,
            }),
        }
        if profiler is not None and profiler_out is not None:
            if profiler.wait():
                top = ml.profile_top(profiler_out)
            else:
                step.note = f"profile failed: {profiler.error}"
        after = ml.fresh_status(gw)
        step.status = ml.status_delta(before, after)
        step.hung_up = placer.hangup(calls)
    finally:
        endpoints.close()
    return step, top


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
            counters = ", ".join(
                f"{k.removeprefix('rtp_')} {st.get(k, 0)}"
                for k in ("rtp_packets_in", "rtp_packets_out", "rtp_wrong_source",
                          "rtp_malformed", "rtp_srtp_auth", "rtp_replay", "rtp_unknown_pt",
                          "media_handler_errors")
                if k in st and (st.get(k) or k.startswith("rtp_packets"))
            )
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
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else "")
    parser.add_argument("--calls", default=",".join(map(str, DEFAULT_CALLS)),
                        help="comma-separated call counts, increasing")
    parser.add_argument("--seconds", type=float, default=6.0, help="length of each run")
    parser.add_argument("--no-srtp", action="store_true", help="plain RTP only")
    parser.add_argument("--profile-seconds", type=float, default=8.0,
                        help="py-spy at the largest passing N (0: no profile)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 20 calls for 3 s, plain and SRTP, 2 s profile")
    parser.add_argument("--out", type=Path, default=ml.OUT_DIR / "media_relay.md")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)

    counts = list(QUICK_CALLS) if args.quick else [int(c) for c in args.calls.split(",") if c]
    seconds = 3.0 if args.quick else args.seconds
    profile_s = 2.0 if args.quick else args.profile_seconds
    harness.require_sipp()
    workdir = Path(tempfile.mkdtemp(prefix="bench-media-relay-"))
    rig = ml.Rig(workdir, callers={"caller": "off", "caller_srtp": "mandatory"})
    steps: list[Step] = []
    profile_md: list[str] = []
    errors: list[str] = []
    deadline = time.monotonic() + (50 if args.quick else 540)
    try:
        rig.start()
        stopped = {False: False, True: args.no_srtp}
        for n in counts:
            for srtp in (False, True):
                if stopped[srtp]:
                    continue
                if time.monotonic() > deadline:
                    errors.append(f"time budget spent before {n} calls")
                    stopped[srtp] = True
                    continue
                if rig.gateway is None or not rig.gateway.running():
                    errors.append("the gateway exited")
                    stopped = {False: True, True: True}
                    break
                step, _ = run_step(rig, n, seconds, srtp)
                steps.append(step)
                print(step_line(step), flush=True)
                if not step.passed:
                    stopped[srtp] = True
        chosen = best(steps, False) or next((s for s in steps if not s.srtp), None)
        if ml.py_spy_path() is None:
            profile_md = ["(no profile: py-spy is not installed)", ""]
        elif profile_s > 0 and chosen is not None and rig.gateway is not None \
                and rig.gateway.running():
            raw = args.out.with_name(args.out.stem + "_profile.txt")
            step, top = run_step(rig, chosen.calls, max(seconds, profile_s + 1.0), False,
                                 profiler_out=raw, profile_s=profile_s)
            print("profile run: " + step_line(step), flush=True)
            if top:
                profile_md = [
                    f"## Profile: the gateway relaying {chosen.calls} calls "
                    f"({chosen.calls * 100} packets/s), py-spy {profile_s:g} s, "
                    f"{int(top['samples'][0][1])} samples",
                    "",
                    f"Gateway CPU during the profiled run: {step.cpu_share:.0%} of one core "
                    "(py-spy --nonblocking, its own CPU on the other core). "
                    f"Raw stacks: `{ml.shown(raw)}`.",
                    "",
                    *ml.render_profile(top),
                    "",
                ]
            else:
                errors.append(f"no profile ({step.note})")
    except harness.HarnessError as exc:
        errors.append(str(exc).splitlines()[0])
        print(exc, file=sys.stderr)
    finally:
        log_tail = rig.stop()

    meta = ml.machine_meta() | {
        "runs": f"{seconds:g} s per run, calls {', '.join(map(str, counts))}; plain then SRTP "
        "at each N, each after the same packets sent without the gateway (direct)",
        "pass": f"0 lost and the generator on time (slot lag p99 <= {MAX_SEND_LAG_MS:g} ms); "
        "a mode stops at its first step with loss",
        "cores": "gateway pinned to CPU 0; SIPp, generator and py-spy to CPU 1"
        if rig.pinned else "not pinned (fewer than 2 CPUs, or refused)",
    }
    if errors:
        meta["errors"] = "; ".join(errors)
    report = render(steps, meta, profile_md)
    print()
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report + "\n")
    ml.write_json(args.out.with_suffix(".json"), {
        "meta": meta,
        "steps": [asdict(s) | {"added_p50": s.added_p50, "added_p99": s.added_p99,
                               "cpu_per_1000": s.cpu_per_1000, "cpu_share": s.cpu_share,
                               "passed": s.passed} for s in steps],
        "gateway_log_tail": log_tail,
    })
    if args.keep:
        print(f"work directory kept: {workdir}", file=sys.stderr)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    bad_log = "Traceback" in log_tail
    return 1 if errors or not steps or bad_log else 0


if __name__ == "__main__":
    sys.exit(main())
