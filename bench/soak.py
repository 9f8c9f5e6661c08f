"""Soak (issue 3): long calls at a steady rate through acs-gateway; does anything grow?

SIPp's caller (``uac.xml``, ``-d 30000``: 30 s calls) places 50 calls/s through the gateway to
a SIPp callee (``uas.xml``) for ``--duration`` seconds (default 600), so about
``rate * call length`` = 1500 calls are up at once at steady state. The load runs in
``--phases`` identical phases (default 2, each ``duration / phases`` long); after each phase
the bench waits until the gateway has no calls and no dialogs left, then 40 s more (RFC 3261
timers D, J and L keep transactions up to 32 s after a call ends), and records the drained
state before the next phase starts.

Every 5 s it samples the gateway's status file (``trunks.json`` beside the CDR database,
rewritten by the gateway every 5 s: calls, dialogs, client and server transactions, call
counters, its RSS) and the gateway's process from outside (VmRSS and VmHWM of
``/proc/PID/status``, utime + stime of ``/proc/PID/stat``), plus the caller's open calls
(SIPp's statistics CSV). The time series goes to the JSON report. RSS is reported before the
load, at steady state (60 s after the calls and the transactions they leave behind, 32 s each
past their end, have reached their steady numbers: 122 s into a phase), when the last call is
placed, at its peak and after each drain.

Verdict, "no growth after the calls end", both of:

1. after every phase's drain, calls == dialogs == client transactions == server
   transactions == 0;
2. the RSS after the last phase's drain is within ``max(4 MiB, 5%)`` of the RSS after the
   first phase's drain. CPython keeps freed memory (pymalloc arenas, the C heap) rather than
   returning it to the OS, so an RSS that stays near its peak after the first phase is
   retention, not a leak; a second identical phase reuses that memory, and only what it
   adds on top is growth. The report also gives the growth per call of the later phases.

Session timers (RFC 4028) are on by default (``--session-expires``, 20 s): the gateway asks
the callee for that interval and the callee (``uas_timer_long.xml``) makes the gateway the
refresher, so every 30 s call gets an UPDATE refresh every 10 s (RFC 4028 forbids intervals
below 90 s in service; the short one makes refreshes happen within the calls).
``--session-expires 0`` runs without them (plain ``uas.xml``).

The report (markdown) goes to stdout and ``bench/out/soak.md``, the raw numbers and the time
series to ``bench/out/soak.json``. Exit code 0 when the verdict holds and every call
succeeded, 1 otherwise (or when a peer did not start). SIPp runs are bounded (``-m
rate*phase``, ``-timeout phase+120 s``), every wait is bounded, processes are stopped by PID,
traffic stays on 127.0.0.1. It is long: ``bench/run_all.py`` runs it only with ``--soak``.

Usage: python bench/soak.py [--duration 600] [--rate 50] [--call-seconds 30] [--phases 2]
                            [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
OUT_DIR = BENCH_DIR / "out"
sys.path.insert(0, str(REPO_ROOT / "tests" / "interop"))

import harness  # noqa: E402  (tests/interop/harness.py; see the sys.path line above)

CALLEE = "+15551234567"
SOCKET_BUFFER = 4 * 1024 * 1024
SAMPLE_EVERY_S = 5.0  # the gateway rewrites its status file every 5 s
TXN_LINGER_S = 32.0  # RFC 3261/6026 timers D, J, L, M: 64 x T1 over UDP
STEADY_FOR_S = 60.0  # steady-state RSS: read after this long at steady state
SETTLE_S = 40.0  # after calls == dialogs == 0: timers D/J/L are 32 s, plus one status period
DRAIN_TIMEOUT_S = 180.0  # longest wait for calls and dialogs to reach 0 after the caller ends
SIPP_SLACK_S = 120.0  # -timeout = phase length + this (the last calls last call_seconds)
GROWTH_ABS_BYTES = 4 * 1024 * 1024
GROWTH_REL = 0.05
MIB = 1024.0 * 1024.0
LIVE_KEYS = ("calls", "dialogs", "client_transactions", "server_transactions")
COUNTER_KEYS = (
    "calls_started", "calls_answered", "calls_failed", "calls_rejected",
    "parse_errors", "dropped", "handler_errors",
)  # fmt: skip


@dataclass
class Sample:
    """One look at the gateway, every SAMPLE_EVERY_S."""

    t: float  # seconds since the gateway was ready
    phase: int  # 0 before the first phase
    stage: str  # idle, load (caller running), drain (until calls == dialogs == 0), settle
    status_time: float | None  # when the gateway wrote the status file (epoch; None: not yet)
    calls: int
    dialogs: int
    client_transactions: int
    server_transactions: int
    counters: dict[str, int]
    status_rss_bytes: int  # as the gateway wrote it in the status file
    rss_bytes: int  # VmRSS now (/proc, from outside)
    hwm_bytes: int  # VmHWM now: the process's peak RSS so far
    cpu_s: float  # utime + stime so far
    cpu_pct: float  # over the interval since the previous sample, % of one core
    caller_open: int | None  # the SIPp caller's open calls (its statistics CSV)

    @property
    def live_total(self) -> int:
        return sum(getattr(self, key) for key in LIVE_KEYS)


@dataclass
class Phase:
    """One load phase and its drain."""

    index: int
    seconds: float
    calls: int
    successful: int = 0
    failed: int = 0
    unfinished: int = 0
    exit_code: int | None = None
    failures: dict[str, int] = field(default_factory=dict)
    callee_successful: int = 0
    callee_failed: int = 0
    setup_mean_ms: float = math.nan
    caller_elapsed_s: float = 0.0
    load_cpu_s: float = 0.0  # gateway CPU from the phase's start until the caller ended
    settle_cpu_pct: float = math.nan  # gateway CPU while idle in the settle window
    drain_s: float = math.nan  # caller ended -> calls == dialogs == 0 seen in the status
    counters: dict[str, int] = field(default_factory=dict)  # deltas over the phase
    steady: Sample | None = None  # steady_after_s into the load
    end_of_load: Sample | None = None  # when the last call was placed (calls still up)
    drained: Sample | None = None  # SETTLE_S after calls == dialogs == 0
    peak: dict[str, int] = field(default_factory=dict)  # max per live key, and rss_bytes
    workdir: str = ""
    steady_after_s: float = 0.0

    @property
    def drained_clean(self) -> bool:
        return self.drained is not None and self.drained.live_total == 0


class Sampler:
    """Reads the gateway's status file and /proc; keeps the time series."""

    def __init__(self, gateway: harness.GatewayProcess) -> None:
        self.gateway = gateway
        self.status_path = gateway.cdr_path.parent / "trunks.json"
        self.started = time.monotonic()
        self.samples: list[Sample] = []
        self._last_cpu: tuple[float, float] | None = None

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def status(self) -> dict[str, object] | None:
        """The status file's document, or None (not written yet, unreadable)."""
        try:
            doc = json.loads(self.status_path.read_text())
        except (OSError, ValueError):
            return None
        return doc if isinstance(doc, dict) else None

    def status_time(self) -> float | None:
        """The gateway's clock (epoch seconds) when it last wrote the status file."""
        doc = self.status()
        value = doc.get("time") if doc else None
        return float(value) if isinstance(value, int | float) else None

    def wait_status(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.status_time() is not None:
                return True
            time.sleep(0.5)
        return False

    def sample(self, phase: int, stage: str, caller_stat: Path | None = None) -> Sample:
        doc = self.status() or {}
        live = doc.get("gateway") if isinstance(doc.get("gateway"), dict) else {}
        assert isinstance(live, dict)
        written = doc.get("time")
        now = time.monotonic()
        pid = self.gateway.pid
        cpu = harness.proc_cpu_seconds(pid)
        cpu_pct = math.nan
        if self._last_cpu is not None and now > self._last_cpu[0]:
            cpu_pct = 100.0 * (cpu - self._last_cpu[1]) / (now - self._last_cpu[0])
        self._last_cpu = (now, cpu)
        caller_open: int | None = None
        if caller_stat is not None:
            stats = harness.parse_stat_csv(caller_stat)
            if stats and stats.get("CurrentCall", "").strip().isdigit():
                caller_open = int(stats["CurrentCall"])
        sample = Sample(
            t=round(now - self.started, 2),
            phase=phase,
            stage=stage,
            status_time=float(written) if isinstance(written, int | float) else None,
            calls=_as_int(live.get("calls")),
            dialogs=_as_int(live.get("dialogs")),
            client_transactions=_as_int(live.get("client_transactions")),
            server_transactions=_as_int(live.get("server_transactions")),
            counters={key: _as_int(live.get(key)) for key in COUNTER_KEYS},
            status_rss_bytes=_as_int(live.get("rss_bytes")),
            rss_bytes=harness.proc_rss_bytes(pid),
            hwm_bytes=harness.proc_rss_bytes(pid, "VmHWM"),
            cpu_s=round(cpu, 2),
            cpu_pct=round(cpu_pct, 1) if math.isfinite(cpu_pct) else math.nan,
            caller_open=caller_open,
        )
        self.samples.append(sample)
        return sample

    def sleep_until_next(self, deadline: float | None = None) -> None:
        """Sleep to the next SAMPLE_EVERY_S tick (not past ``deadline``, a monotonic time)."""
        elapsed = self.elapsed()
        tick = self.started + (math.floor(elapsed / SAMPLE_EVERY_S) + 1) * SAMPLE_EVERY_S
        if deadline is not None:
            tick = min(tick, deadline)
        time.sleep(max(0.0, tick - time.monotonic()))


def _as_int(value: object) -> int:
    return int(value) if isinstance(value, int | float) else 0



def start_gateway(
    workdir: Path, callee: harness.SippServer, session_expires: int
) -> harness.GatewayProcess:
    """acs-gateway routing every number to the trunk ``uas`` (the callee), logging warnings."""
    trunk = harness.TrunkSpec("uas", callee.port, inbound_from=("127.0.0.1/32",))
    sip: dict[str, harness.TomlValue] = {"session_expires": session_expires}
    if session_expires:
        sip["min_se"] = min(90, session_expires)
    gateway = harness.GatewayProcess(
        workdir,
        trunks=[trunk],
        dialplan=harness.route_all_dialplan(["uas"]),
        extra_config={"log": {"level": "warning"}, "sip": sip},
    )
    return gateway.start()


def run_phase(
    phase: Phase,
    sampler: Sampler,
    gateway: harness.GatewayProcess,
    callee: harness.SippServer,
    rate: float,
    call_s: float,
    workdir: Path,
) -> None:
    """Place the phase's calls while sampling; then drain and settle, sampling on."""
    phase_dir = workdir / f"phase{phase.index}"
    phase_dir.mkdir(parents=True, exist_ok=True)
    phase.workdir = str(phase_dir)
    timeout_s = phase.seconds + SIPP_SLACK_S
    callee_before = callee.counts()
    first = sampler.sample(phase.index, "load")
    outcome: dict[str, harness.SippResult | BaseException] = {}

    def caller() -> None:
        try:
            outcome["result"] = harness.run_sipp(
                "uac",
                gateway.sip_target,
                service=CALLEE,
                calls=phase.calls,
                rate=rate,
                timeout_s=timeout_s,
                workdir=phase_dir,
                duration_ms=int(call_s * 1000),
                buff_size=SOCKET_BUFFER,
                # -l: the open-call limit, explicit (SIPp's default, 3 x call length x rate);
                # -pause_msg_ign: a stray 1xx/200 retransmission during the 30 s pause is
                # ignored as a real UA would (the same flag as call_setup)
                extra_args=("-l", str(int(3 * call_s * rate) + 1), "-pause_msg_ign"),
            )
        except BaseException as exc:  # reported below
            outcome["result"] = exc

    thread = threading.Thread(target=caller, name=f"sipp-phase{phase.index}", daemon=True)
    load_started = time.monotonic()
    thread.start()
    stat_path: Path | None = None
    hard_deadline = load_started + timeout_s + 30.0  # run_sipp kills SIPp at timeout + 15 s
    samples = 0
    while thread.is_alive() and time.monotonic() < hard_deadline:
        sampler.sleep_until_next(hard_deadline)
        if stat_path is None:
            found = sorted(phase_dir.glob("uac-client*/uac_stat.csv"))
            stat_path = found[0] if found else None
        s = sampler.sample(phase.index, "load", stat_path)
        samples += 1
        into = time.monotonic() - load_started
        if phase.steady is None and into >= phase.steady_after_s:
            phase.steady = s
        if phase.end_of_load is None and into >= phase.seconds:
            phase.end_of_load = s
        if samples % 6 == 0:
            _progress(s)
    thread.join(timeout=20.0)
    caller_ended = time.monotonic()
    caller_ended_wall = time.time()
    result = outcome.get("result")
    if isinstance(result, harness.SippResult):
        phase.successful, phase.failed = result.successful, result.failed
        phase.unfinished = result.unfinished
        phase.exit_code = result.exit_code
        phase.failures = result.failure_breakdown
        phase.setup_mean_ms = result.response_time_ms(1)
        phase.caller_elapsed_s = result.elapsed_s
    else:
        phase.unfinished = phase.calls
        phase.failures = {"caller error": 1}
        print(f"phase {phase.index}: SIPp caller did not finish: {result!r}", file=sys.stderr)
    phase.load_cpu_s = harness.proc_cpu_seconds(gateway.pid) - first.cpu_s
    last = sampler.sample(phase.index, "drain")
    if phase.end_of_load is None:
        phase.end_of_load = last
    if phase.steady is None:
        phase.steady = last
    print(
        f"phase {phase.index}: caller done: {phase.successful}/{phase.calls} ok, "
        f"{phase.failed} failed, {phase.unfinished} unfinished, exit {phase.exit_code}",
        flush=True,
    )

    # drain: until a status written after the caller ended shows no calls and no dialogs
    drain_deadline = caller_ended + DRAIN_TIMEOUT_S
    zero_wall: float | None = None
    while time.monotonic() < drain_deadline:
        written = last.status_time
        fresh = written is not None and written >= caller_ended_wall
        if fresh and last.calls == 0 and last.dialogs == 0:
            zero_wall = written
            break
        sampler.sleep_until_next(drain_deadline)
        last = sampler.sample(phase.index, "drain")
    if zero_wall is None:
        print(f"phase {phase.index}: calls/dialogs not 0 after {DRAIN_TIMEOUT_S:g} s", flush=True)
        zero_wall = time.time()
    phase.drain_s = round(max(0.0, zero_wall - caller_ended_wall), 1)

    # settle: SETTLE_S more, then the first status written at or after that point
    settle_start = sampler.samples[-1]
    settle_deadline = time.monotonic() + (zero_wall + SETTLE_S - time.time()) + 3 * SAMPLE_EVERY_S
    while time.monotonic() < settle_deadline:
        sampler.sleep_until_next(settle_deadline)
        last = sampler.sample(phase.index, "settle")
        written = last.status_time
        if written is not None and written >= zero_wall + SETTLE_S:
            break
    phase.drained = last
    dt = last.t - settle_start.t
    if dt > 0:
        phase.settle_cpu_pct = round(100.0 * (last.cpu_s - settle_start.cpu_s) / dt, 2)
    callee_now = callee.wait_counts(callee_before[0] + phase.successful, 10.0)
    phase.callee_successful = callee_now[0] - callee_before[0]
    phase.callee_failed = callee_now[1] - callee_before[1]
    phase.counters = {k: last.counters[k] - first.counters.get(k, 0) for k in COUNTER_KEYS}
    mine = [s for s in sampler.samples if s.phase == phase.index]
    phase.peak = {key: max(getattr(s, key) for s in mine) for key in LIVE_KEYS}
    phase.peak["rss_bytes"] = max(s.rss_bytes for s in mine)
    _progress(last)


def _progress(s: Sample) -> None:
    print(
        f"t={s.t:7.1f} s phase {s.phase} {s.stage:<6} calls {s.calls:5d} dialogs {s.dialogs:5d} "
        f"txns {s.client_transactions:5d}/{s.server_transactions:<5d} "
        f"RSS {s.rss_bytes / MIB:7.1f} MiB CPU {s.cpu_pct:5.1f}%"
        + (f" caller open {s.caller_open}" if s.caller_open is not None else ""),
        flush=True,
    )


@dataclass
class Verdict:
    holds: bool
    clean_drains: bool
    growth_bytes: int
    allowed_bytes: int
    growth_per_call: float
    all_calls_ok: bool
    reasons: list[str]


def judge(phases: Sequence[Phase]) -> Verdict:
    reasons: list[str] = []
    clean = all(p.drained_clean for p in phases)
    for p in phases:
        if not p.drained_clean:
            d = p.drained
            reasons.append(
                f"phase {p.index} not drained: "
                + (
                    ", ".join(f"{k} {getattr(d, k)}" for k in LIVE_KEYS if getattr(d, k))
                    if d
                    else "no sample"
                )
            )
    first, last = phases[0].drained, phases[-1].drained
    growth = allowed = 0
    per_call = math.nan
    if first is not None and last is not None:
        growth = last.rss_bytes - first.rss_bytes
        allowed = max(GROWTH_ABS_BYTES, int(GROWTH_REL * first.rss_bytes))
        later_calls = sum(p.successful for p in phases[1:])
        per_call = growth / later_calls if later_calls else math.nan
        if growth > allowed:
            reasons.append(
                f"RSS after drain grew {growth / MIB:.1f} MiB from phase 1 to phase "
                f"{phases[-1].index} (allowed {allowed / MIB:.1f} MiB)"
            )
    else:
        reasons.append("no drained sample")
    all_ok = all(p.successful == p.calls and p.failed == 0 for p in phases)
    holds = clean and first is not None and last is not None and growth <= allowed
    return Verdict(holds, clean, growth, allowed, per_call, all_ok, reasons)


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / MIB:.1f}"


def _ms(value: float) -> str:
    return "-" if not math.isfinite(value) else f"{value:g}"


def render(
    phases: Sequence[Phase],
    verdict: Verdict,
    idle: Sample | None,
    samples: Sequence[Sample],
    meta: dict[str, str],
    log_warnings: Sequence[str],
    call_s: float,
) -> str:
    lines = ["# Soak: SIPp uac -> acs-gateway -> SIPp uas, long calls at a steady rate", ""]
    lines += [f"- {key}: {value}" for key, value in meta.items()]
    lines += [
        "",
        "## Verdict",
        "",
        f"No growth after the calls end: **{'yes' if verdict.holds else 'NO'}**",
        "",
        f"- calls, dialogs and transactions 0 after every phase's drain: "
        f"{'yes' if verdict.clean_drains else 'no'}",
        f"- RSS after the last drain minus RSS after the first: "
        f"{verdict.growth_bytes / MIB:+.1f} MiB (allowed <= {verdict.allowed_bytes / MIB:.1f} "
        f"MiB: max(4 MiB, 5%)); {verdict.growth_per_call:+.0f} bytes per call of the later "
        "phases"
        if math.isfinite(verdict.growth_per_call)
        else "- RSS growth: not measured",
        f"- every call successful: {'yes' if verdict.all_calls_ok else 'no'}",
    ]
    lines += [f"- {reason}" for reason in verdict.reasons]
    lines += [
        "",
        "## Calls",
        "",
        "| phase | load (s) | calls | successful | failed | unfinished | callee done "
        "| setup mean (ms) | gw started | gw answered | gw failed | gw rejected "
        "| parse errors | dropped | handler errors |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in phases:
        failures = ", ".join(f"{k} {v}" for k, v in p.failures.items())
        c = p.counters
        lines.append(
            f"| {p.index} | {p.seconds:g} | {p.calls} | {p.successful} | {p.failed}"
            f"{' (' + failures + ')' if failures else ''} | {p.unfinished} "
            f"| {p.callee_successful} | {_ms(p.setup_mean_ms)} | {c.get('calls_started', 0)} "
            f"| {c.get('calls_answered', 0)} | {c.get('calls_failed', 0)} "
            f"| {c.get('calls_rejected', 0)} | {c.get('parse_errors', 0)} "
            f"| {c.get('dropped', 0)} | {c.get('handler_errors', 0)} |"
        )
    lines += [
        "",
        "## Live state and memory",
        "",
        "RSS in MiB (VmRSS from /proc). *steady*: "
        f"{phases[0].steady_after_s:g} s into the phase's load (calls up at their steady "
        f"number from {call_s:g} s, the transactions they leave behind from "
        f"{call_s + TXN_LINGER_S:g} s; then {STEADY_FOR_S:g} s at steady state, or the "
        "end of the phase if sooner); *end of load*: "
        "when the last call was placed (calls still up); *after drain*: calls == dialogs == 0 "
        f"then {SETTLE_S:g} s more. Live counts as calls / dialogs / client transactions / "
        "server transactions; *peak live* is each count's own maximum over the phase.",
        "",
        f"Before the first phase (gateway idle): RSS {_mib(idle.rss_bytes if idle else None)} MiB.",
        "",
        "| phase | peak live | RSS steady | live at steady | RSS end of load | RSS peak "
        "| drain (s) | live after drain | RSS after drain | VmHWM | CPU load (%) "
        "| CPU s / 1000 calls | CPU idle after drain (%) |",
        "|---:|---|---:|---|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for p in phases:
        load_s = p.caller_elapsed_s or math.nan
        lines.append(
            f"| {p.index} | {_live(p.peak)} | {_mib(p.steady.rss_bytes if p.steady else None)} "
            f"| {_live(asdict(p.steady)) if p.steady else '-'} "
            f"| {_mib(p.end_of_load.rss_bytes if p.end_of_load else None)} "
            f"| {_mib(p.peak.get('rss_bytes'))} | {_ms(p.drain_s)} "
            f"| {_live(asdict(p.drained)) if p.drained else '-'} "
            f"| {_mib(p.drained.rss_bytes if p.drained else None)} "
            f"| {_mib(p.drained.hwm_bytes if p.drained else None)} "
            f"| {100.0 * p.load_cpu_s / load_s:.1f} "
            f"| {1000.0 * p.load_cpu_s / max(1, p.successful):.2f} | {_ms(p.settle_cpu_pct)} |"
        )
    if len(phases) >= 2 and phases[0].steady and phases[-1].steady:
        a, b = phases[0].steady, phases[-1].steady
        lines += [
            "",
            f"Steady-state RSS at the same point of the load: phase 1 {_mib(a.rss_bytes)} MiB "
            f"({a.calls} calls up), phase {phases[-1].index} {_mib(b.rss_bytes)} MiB "
            f"({b.calls} calls up): {(b.rss_bytes - a.rss_bytes) / MIB:+.1f} MiB.",
        ]
    lines += [
        "",
        f"## Time series (every {6 * SAMPLE_EVERY_S:g} s; every {SAMPLE_EVERY_S:g} s in the JSON)",
        "",
        "| t (s) | phase | stage | caller open | calls | dialogs | client txns | server txns "
        "| RSS (MiB) | CPU (%) |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    shown = [s for i, s in enumerate(samples) if i % 6 == 0 or s is samples[-1]]
    marks = {id(p.drained) for p in phases}
    shown += [s for s in samples if id(s) in marks and s not in shown]
    for s in sorted(shown, key=lambda x: x.t):
        lines.append(
            f"| {s.t:.0f} | {s.phase} | {s.stage}{' (final)' if id(s) in marks else ''} "
            f"| {'-' if s.caller_open is None else s.caller_open} | {s.calls} | {s.dialogs} "
            f"| {s.client_transactions} | {s.server_transactions} | {_mib(s.rss_bytes)} "
            f"| {_ms(s.cpu_pct)} |"
        )
    lines += ["", f"## Gateway log: {len(log_warnings)} warning/error lines", ""]
    if log_warnings:
        lines += ["```", *log_warnings[:20], "```"]
    return "\n".join(lines)


def _live(d: Mapping[str, object]) -> str:
    return " / ".join(str(d.get(k, "-")) for k in LIVE_KEYS)




def _log_warnings(text: str) -> list[str]:
    keys = ("WARNING", "ERROR", "CRITICAL", "Traceback")
    return [line for line in text.splitlines() if any(k in line for k in keys)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else "")
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load, total")
    parser.add_argument("--rate", type=float, default=50.0, help="calls per second")
    parser.add_argument("--call-seconds", type=float, default=30.0, help="length of each call")
    parser.add_argument(
        "--phases", type=int, default=2, help="identical load phases (>= 2), each drained"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: --duration 60")
    parser.add_argument("--out", type=Path, default=OUT_DIR / "soak.md")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--session-expires", type=int, default=20,
        help="session interval the gateway asks for, seconds (0: no session timers)",
    )
    args = parser.parse_args(argv)
    duration = 60.0 if args.quick else args.duration
    if args.phases < 2 or duration <= 0 or args.rate <= 0 or args.call_seconds < 0:
        parser.error("need --phases >= 2 and a positive --duration and --rate")
    phase_s = duration / args.phases
    phase_calls = max(1, round(args.rate * phase_s))
    harness.require_sipp()

    workdir = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    phases: list[Phase] = []
    idle: Sample | None = None
    sampler: Sampler | None = None
    errors: list[str] = []
    gateway: harness.GatewayProcess | None = None
    log_text = ""
    callee_scenario = "uas_timer_long" if args.session_expires else "uas"
    callee = harness.SippServer(
        callee_scenario, workdir=workdir / "uas", buff_size=SOCKET_BUFFER
    ).start()
    try:
        try:
            gateway = start_gateway(workdir / "gateway", callee, args.session_expires)
        except harness.HarnessError as exc:
            errors.append(f"acs-gateway did not start: {str(exc).splitlines()[0]}")
            print(exc, file=sys.stderr)
        if gateway is not None:
            sampler = Sampler(gateway)
            if not sampler.wait_status(3 * SAMPLE_EVERY_S):
                errors.append(f"no status file at {sampler.status_path}")
            idle = sampler.sample(0, "idle")
            _progress(idle)
            for index in range(1, args.phases + 1):
                if not gateway.running():
                    errors.append(f"gateway exited before phase {index}")
                    break
                phase = Phase(index, phase_s, phase_calls)
                # the calls up reach their steady number after one call length, and the
                # transactions they leave behind TXN_LINGER_S later: RSS is steady from then
                phase.steady_after_s = min(phase_s, args.call_seconds + TXN_LINGER_S + STEADY_FOR_S)
                phases.append(phase)
                print(
                    f"phase {index}: {phase_calls} calls at {args.rate:g}/s, "
                    f"{args.call_seconds:g} s each",
                    flush=True,
                )
                run_phase(
                    phase, sampler, gateway, callee, args.rate, args.call_seconds, workdir / "runs"
                )
            if not gateway.running():
                errors.append(f"gateway exited (code {gateway.stop(1.0)})")
    finally:
        if gateway is not None:
            gateway.stop(10.0)
            log_text = gateway.log_text()
        callee.stop()

    verdict = judge(phases) if len(phases) == args.phases else None
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "python": platform.python_version(),
        "SIPp": harness.sipp_version(),
        "load": f"{args.rate:g} calls/s of {args.call_seconds:g} s calls (uac.xml -d "
        f"{int(args.call_seconds * 1000)}), {duration:g} s in total: {args.phases} phases of "
        f"{phase_s:g} s ({phase_calls} calls each, -m {phase_calls} -timeout "
        f"{phase_s + SIPP_SLACK_S:g}s)",
        "drain": f"after each phase, until calls == dialogs == 0 (at most "
        f"{DRAIN_TIMEOUT_S:g} s), then {SETTLE_S:g} s more",
        "sampling": f"status file and /proc every {SAMPLE_EVERY_S:g} s",
        "session timers": (
            f"on: the gateway asks {args.session_expires} s and refreshes by UPDATE every "
            f"{args.session_expires / 2:g} s (callee uas_timer_long.xml)"
            if args.session_expires else "off (--session-expires 0)"
        ),
        "logging": "warning (acs-gateway)",
    }
    if errors:
        meta["errors"] = "; ".join(errors)
    warnings = _log_warnings(log_text)
    if verdict is None:
        report = "\n".join(
            ["# Soak: did not complete", "", *[f"- {k}: {v}" for k, v in meta.items()]]
        )
    else:
        assert sampler is not None
        report = render(phases, verdict, idle, sampler.samples, meta, warnings, args.call_seconds)
    print()
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report + "\n")
    raw = {
        "meta": meta,
        "params": {
            "duration_s": duration,
            "rate": args.rate,
            "call_seconds": args.call_seconds,
            "phases": args.phases,
            "phase_calls": phase_calls,
            "steady_after_s": phases[0].steady_after_s if phases else None,
            "settle_s": SETTLE_S,
            "growth_allowed": f"max({GROWTH_ABS_BYTES} bytes, {GROWTH_REL:g} x phase 1 drained)",
        },
        "verdict": asdict(verdict) if verdict else None,
        "idle": asdict(idle) if idle else None,
        "phases": [asdict(p) for p in phases],
        "series": [asdict(s) for s in (sampler.samples if sampler else [])],
        "gateway_log_warnings": warnings[:200],
    }
    args.out.with_suffix(".json").write_text(json.dumps(harness.json_finite(raw), indent=1) + "\n")
    if args.keep:
        print(f"work directory kept: {workdir}", file=sys.stderr)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    if errors or verdict is None:
        return 1
    return 0 if verdict.holds and verdict.all_calls_ok else 1


if __name__ == "__main__":
    sys.exit(main())
