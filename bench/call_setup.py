"""Call-setup throughput of B2BUAs, side by side: SIPp uac -> B2BUA -> SIPp uas, no media.

For each B2BUA (acs-gateway, Sippy B2BUA) a SIPp callee (``uas.xml``) runs on its own port and
the B2BUA routes every call to it. Then, rate by rate (100 ... 1500 calls/s), SIPp's caller
(``uac.xml``, 0 ms calls: INVITE, 200, ACK, BYE, 200) places ``rate * seconds`` calls through
each B2BUA in turn (A then B at each rate, so machine noise hits both), and records:

- successful / failed / unfinished calls, as SIPp's caller counts them;
- callee-side completions (the uas saw the call through to its BYE);
- achieved call rate (calls / wall time of the SIPp run);
- mean and p99 (bucket bound) call-setup time, INVITE -> 200 (SIPp's RTD 1);
- the B2BUA process's CPU seconds (utime + stime of /proc/PID/stat, all threads) from just
  before the run until the callee has finished, per 1000 calls.

A B2BUA stops climbing at its first rate with a failed or unfinished call, or one where it
no longer keeps up (achieved rate below 80% of the target: SIPp throttles new calls when too
many are open, which would otherwise hide overload). The report (markdown) goes to stdout and
``bench/out/call_setup.md``, the raw numbers to ``bench/out/call_setup.json``.

SIPp runs with ``-pause_msg_ign``: a provisional response that arrives after its 200 (Sippy's
sender threads reorder them under load) is ignored as a real UA would, not a failed call.
Every SIPp run is bounded (``-m``, ``-timeout``); every process is stopped by its PID.
Logging is at warning (acs-gateway) / ERR (Sippy) for both, so neither pays for per-message
logs; ``--verbose-logs`` keeps their defaults.

Usage: python bench/call_setup.py [--rates 100,200,...] [--seconds 5] [--only NAME] [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
OUT_DIR = BENCH_DIR / "out"
sys.path.insert(0, str(REPO_ROOT / "tests" / "interop"))

import harness  # noqa: E402  (tests/interop/harness.py; see the sys.path line above)

DEFAULT_RATES = (100, 200, 400, 600, 800, 1000, 1200, 1500)
CALLEE = "+15551234567"
SOCKET_BUFFER = 4 * 1024 * 1024
MIN_ACHIEVED = 0.8


class B2bua(Protocol):
    """What the bench needs of a running B2BUA."""

    @property
    def pid(self) -> int: ...

    @property
    def sip_target(self) -> str: ...

    def running(self) -> bool: ...

    def stop(self, grace_s: float = ...) -> int | None: ...

    def log_text(self) -> str: ...


@dataclass
class Step:
    """One rate step of one B2BUA."""

    rate: int
    calls: int
    successful: int
    failed: int
    unfinished: int
    callee_successful: int
    exit_code: int
    elapsed_s: float
    cpu_s: float
    setup_mean_ms: float
    setup_p99_ms: float
    failures: dict[str, int] = field(default_factory=dict)
    workdir: str = ""

    @property
    def achieved_cps(self) -> float:
        return self.successful / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def cpu_per_1000(self) -> float:
        return self.cpu_s * 1000.0 / self.calls if self.calls else math.nan

    @property
    def passed(self) -> bool:
        return (
            self.failed == 0
            and self.unfinished == 0
            and self.successful == self.calls
            and self.achieved_cps >= MIN_ACHIEVED * self.rate
        )


@dataclass
class Subject:
    """A B2BUA under test, its callee, and its results so far."""

    name: str
    b2bua: B2bua
    callee: harness.SippServer
    steps: list[Step] = field(default_factory=list)
    stopped_reason: str = ""

    @property
    def best_rate(self) -> int | None:
        """Highest rate of the unbroken run of passing steps from the lowest rate."""
        best: int | None = None
        for step in self.steps:
            if not step.passed:
                break
            best = step.rate
        return best


def start_gateway(
    workdir: Path, callee: harness.SippServer, verbose_logs: bool, anchor: bool = False
) -> harness.GatewayProcess:
    """acs-gateway routing every number to the trunk ``uas`` (the callee). Signaling only
    (``[media] anchor = false``, as Sippy) unless ``anchor``: then every call also gets two
    RTP/RTCP port pairs and its SDP rewritten."""
    trunk = harness.TrunkSpec("uas", callee.port, inbound_from=("127.0.0.1/32",))
    extra: dict[str, dict[str, harness.TomlValue]] = {"media": {"anchor": anchor}}
    if not verbose_logs:
        extra["log"] = {"level": "warning"}
    gateway = harness.GatewayProcess(
        workdir,
        trunks=[trunk],
        dialplan=harness.route_all_dialplan(["uas"]),
        extra_config=extra,
    )
    return gateway.start()


def start_sippy(
    workdir: Path, callee: harness.SippServer, python: str | None, verbose_logs: bool
) -> harness.SippyB2bua:
    """Sippy B2BUA with a static route to the callee, RADIUS off, in the foreground."""
    sippy = harness.SippyB2bua(
        callee.address, workdir, python=python, log_level="INFO" if verbose_logs else "ERR"
    )
    return sippy.start()


def run_step(subject: Subject, rate: int, seconds: float, workdir: Path) -> Step:
    """Place ``rate * seconds`` calls through ``subject`` at ``rate`` calls/s."""
    calls = max(1, int(rate * seconds))
    callee_before, _ = subject.callee.counts()
    cpu_before = harness.proc_cpu_seconds(subject.b2bua.pid)
    result = harness.run_sipp(
        "uac",
        subject.b2bua.sip_target,
        service=CALLEE,
        calls=calls,
        rate=rate,
        timeout_s=seconds * 2 + 30,
        workdir=workdir,
        buff_size=SOCKET_BUFFER,
        # a 1xx arriving after its 200 (Sippy's sender threads reorder under load) is not a
        # failed call; uac.xml ignores it while waiting for the BYE's 200, this flag during
        # the 0 ms pause
        extra_args=("-pause_msg_ign",),
    )
    # the callee counts a call when its scenario ends (4 s after the BYE's 200)
    callee_after, _ = subject.callee.wait_counts(callee_before + result.successful, 20.0)
    cpu_after = (
        harness.proc_cpu_seconds(subject.b2bua.pid) if subject.b2bua.running() else cpu_before
    )
    return Step(
        rate=rate,
        calls=calls,
        successful=result.successful,
        failed=result.failed,
        unfinished=result.unfinished,
        callee_successful=callee_after - callee_before,
        exit_code=result.exit_code,
        elapsed_s=result.elapsed_s,
        cpu_s=cpu_after - cpu_before,
        setup_mean_ms=result.response_time_ms(1),
        setup_p99_ms=result.response_time_bound_ms(1, 0.99),
        failures=result.failure_breakdown,
        workdir=str(result.workdir or ""),
    )


def _fmt_ms(value: float) -> str:
    if math.isnan(value):
        return "-"
    if math.isinf(value):
        return "> 5000"
    return f"{value:g}"


def render(subjects: Sequence[Subject], meta: dict[str, str]) -> str:
    lines = ["# Call setup: SIPp uac -> B2BUA -> SIPp uas (no media)", ""]
    lines += [f"- {key}: {value}" for key, value in meta.items()]
    lines.append("")
    for subject in subjects:
        best = subject.best_rate
        lines += [
            f"## {subject.name}",
            "",
            f"Highest rate with 0 failed calls: **{best if best is not None else 'none'}"
            f"{' calls/s' if best is not None else ''}**"
            + (f" ({subject.stopped_reason})" if subject.stopped_reason else ""),
            "",
            "| rate (calls/s) | calls | successful | failed | unfinished | callee done "
            "| achieved (calls/s) | setup mean (ms) | setup p99 (ms, <=) | CPU s / 1000 calls |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for s in subject.steps:
            failures = ", ".join(f"{k} {v}" for k, v in s.failures.items())
            lines.append(
                f"| {s.rate} | {s.calls} | {s.successful} | {s.failed}"
                f"{' (' + failures + ')' if failures else ''} | {s.unfinished} "
                f"| {s.callee_successful} | {s.achieved_cps:.0f} | {_fmt_ms(s.setup_mean_ms)} "
                f"| {_fmt_ms(s.setup_p99_ms)} | {s.cpu_per_1000:.2f} |"
            )
        lines.append("")
    return "\n".join(lines)



def _sippy_version(python: str | None) -> str:
    if python is None:
        return "not installed"
    code = "import importlib.metadata as m; print(m.version('sippy'))"
    out = subprocess.run(
        [python, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )
    return out.stdout.strip() or "unknown"



def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else "")
    parser.add_argument(
        "--rates",
        default=",".join(map(str, DEFAULT_RATES)),
        help="comma-separated call rates (calls/s), increasing",
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each step")
    parser.add_argument(
        "--only",
        choices=["acs-gateway", "sippy"],
        action="append",
        help="bench only this B2BUA (repeatable)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: rates 50,100 for 2 s (checks the bench itself)",
    )
    parser.add_argument(
        "--sippy-python", default=None, help="interpreter with sippy installed (default: this one)"
    )
    parser.add_argument(
        "--verbose-logs", action="store_true", help="keep both B2BUAs' default log levels"
    )
    parser.add_argument(
        "--anchor", action="store_true",
        help="the gateway anchors media (port pairs and SDP rewriting per call)",
    )
    parser.add_argument("--out", type=Path, default=OUT_DIR / "call_setup.md")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)

    rates = [50, 100] if args.quick else [int(r) for r in args.rates.split(",") if r.strip()]
    seconds = 2.0 if args.quick else args.seconds
    wanted = set(args.only or ["acs-gateway", "sippy"])
    sippy_python = args.sippy_python or harness.sippy_python()
    harness.require_sipp()

    workdir = Path(tempfile.mkdtemp(prefix="bench-call-setup-"))
    subjects: list[Subject] = []
    started: list[harness.SippServer] = []
    errors: list[str] = []
    try:
        if "acs-gateway" in wanted:
            callee = harness.SippServer(
                "uas", workdir=workdir / "gateway-uas", buff_size=SOCKET_BUFFER
            ).start()
            started.append(callee)
            try:
                gw = start_gateway(workdir / "gateway", callee, args.verbose_logs, args.anchor)
            except harness.HarnessError as exc:
                errors.append(f"acs-gateway did not start: {str(exc).splitlines()[0]}")
                print(exc, file=sys.stderr)
            else:
                subjects.append(Subject("acs-gateway", gw, callee))
        if "sippy" in wanted:
            callee = harness.SippServer(
                "uas", workdir=workdir / "sippy-uas", buff_size=SOCKET_BUFFER
            ).start()
            started.append(callee)
            try:
                sippy = start_sippy(workdir / "sippy", callee, sippy_python, args.verbose_logs)
            except harness.HarnessError as exc:
                errors.append(f"Sippy did not start: {str(exc).splitlines()[0]}")
                print(exc, file=sys.stderr)
            else:
                subjects.append(Subject("Sippy B2BUA", sippy, callee))

        for rate in rates:
            for subject in subjects:
                if subject.stopped_reason:
                    continue
                if not subject.b2bua.running():
                    subject.stopped_reason = "process exited"
                    continue
                step = run_step(subject, rate, seconds, workdir / "runs")
                subject.steps.append(step)
                print(
                    f"{subject.name:>12} {rate:>5}/s: {step.successful}/{step.calls} ok, "
                    f"{step.failed} failed, {step.unfinished} unfinished, "
                    f"{step.achieved_cps:.0f}/s achieved, setup {_fmt_ms(step.setup_mean_ms)} ms, "
                    f"CPU {step.cpu_per_1000:.2f} s/1000",
                    flush=True,
                )
                if not step.passed:
                    subject.stopped_reason = f"stopped at {rate} calls/s"
            if all(s.stopped_reason for s in subjects):
                break
    finally:
        for subject in subjects:
            subject.b2bua.stop(5.0)
        for server in started:
            server.stop()

    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "python": platform.python_version(),
        "SIPp": harness.sipp_version(),
        "sippy": _sippy_version(sippy_python),
        "steps": f"{seconds:g} s each at {', '.join(map(str, rates))} calls/s, "
        "each B2BUA in turn at each rate",
        "pass": "0 failed and 0 unfinished calls, achieved rate >= 80% of target",
        "logging": "default levels" if args.verbose_logs else "warning (acs-gateway), ERR (Sippy)",
    }
    if errors:
        meta["errors"] = "; ".join(errors)
    report = render(subjects, meta)
    print()
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report + "\n")
    raw = {
        "meta": meta,
        "subjects": {
            s.name: {
                "best_rate": s.best_rate,
                "stopped_reason": s.stopped_reason,
                "steps": [
                    asdict(step)
                    | {
                        "achieved_cps": step.achieved_cps,
                        "cpu_per_1000": step.cpu_per_1000,
                        "passed": step.passed,
                    }
                    for step in s.steps
                ],
            }
            for s in subjects
        },
    }
    args.out.with_suffix(".json").write_text(json.dumps(harness.json_finite(raw), indent=2) + "\n")
    if args.keep:
        print(f"work directory kept: {workdir}", file=sys.stderr)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if errors or not subjects else 0


if __name__ == "__main__":
    sys.exit(main())
