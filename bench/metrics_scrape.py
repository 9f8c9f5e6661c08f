"""What a Prometheus scrape costs the gateway, with calls up.

``[observe] metrics_listen`` builds the status document and renders it at each scrape, in the
reactor's thread, so a scrape is time the reactor is not moving packets. This bench holds N
anchored calls up (SIPp ``uac.xml`` -> gateway -> SIPp ``uas.xml``, each call with an SDP
offer, so each has two media streams on the gateway's ports; no RTP flows) and, at each N:

- an idle window: ``--scrapes`` x ``--every`` seconds with no scrape, the gateway's CPU
  (utime + stime of ``/proc/PID/stat``) over it;
- a scrape window of the same length: ``--scrapes`` scrapes of ``GET /metrics``, one every
  ``--every`` seconds, each timed at the client (request to last byte), its size and series
  counted, the gateway's CPU over the window.

CPU per scrape = (scrape window CPU - idle window CPU) / scrapes. The report (stdout and
``bench/out/metrics_scrape.md``, raw figures in ``.json``) gives per step the client's p50 /
max time, the CPU per scrape, the bytes and series of one scrape, and the full (generation 2)
garbage collections in each window with the time they held the gateway (its own
``acs_gateway_gc_pause_seconds``): a scrape's garbage is what makes them come more often.
Bounded: SIPp places exactly N calls (``-m``), each lasting just past both windows, and is
stopped by PID at the end; traffic stays on 127.0.0.1.

Usage: python bench/metrics_scrape.py [--calls 0,250,1000] [--scrapes 40] [--every 0.25]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
OUT_DIR = BENCH_DIR / "out"
sys.path.insert(0, str(REPO_ROOT / "tests" / "interop"))

import harness  # noqa: E402  (tests/interop/harness.py)

CALLEE = "+15551234567"
RATE = 200.0  # calls/s while placing a step's calls
TICKS = os.sysconf("SC_CLK_TCK")  # /proc/PID/stat clock ticks per second


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def scrape(url: str) -> tuple[float, int, int]:
    """(seconds to the last byte, bytes, samples)."""
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=10) as response:
        body = response.read()
    took = time.perf_counter() - started
    lines = [line for line in body.splitlines() if line and not line.startswith(b"#")]
    return took, len(body), len(lines)


def full_gc(gateway: harness.GatewayProcess) -> tuple[float, float]:
    """(full garbage collections so far, seconds they took), from the gateway's metrics."""
    metrics = gateway.metrics()
    labels = (("generation", "2"),)
    return (metrics.get(("acs_gateway_gc_pause_seconds_count", labels), 0.0),
            metrics.get(("acs_gateway_gc_pause_seconds_sum", labels), 0.0))


def place(gateway: harness.GatewayProcess, calls: int, hold_s: float, workdir: Path,
          done: dict[str, object]) -> None:
    try:
        done["result"] = harness.run_sipp(
            "uac", gateway.sip_target, service=CALLEE, calls=calls, rate=RATE,
            timeout_s=hold_s + calls / RATE + 60, workdir=workdir,
            duration_ms=int(hold_s * 1000), buff_size=4 * 1024 * 1024,
            extra_args=("-l", str(calls + 1), "-pause_msg_ign"))
    except BaseException as exc:  # reported by the caller
        done["result"] = exc


def wait_calls(gateway: harness.GatewayProcess, calls: int, timeout_s: float) -> float:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        up = gateway.metric("acs_gateway_calls_active") or 0.0
        if up >= calls:
            return up
        time.sleep(0.5)
    raise RuntimeError(f"only {gateway.metric('acs_gateway_calls_active')} of {calls} calls "
                       "came up")


def step(gateway: harness.GatewayProcess, calls: int, scrapes: int, every: float,
         workdir: Path) -> dict[str, object]:
    hold_s = calls / RATE + 2 * scrapes * every + 30
    done: dict[str, object] = {}
    thread = None
    if calls:
        thread = threading.Thread(target=place, args=(gateway, calls, hold_s, workdir, done),
                                  daemon=True)
        thread.start()
        try:
            wait_calls(gateway, calls, calls / RATE + 30)
        except RuntimeError:
            gateway.stop()  # its calls' BYEs end the caller too; SIPp's -timeout bounds it
            raise
        time.sleep(2.0)  # the last ACKs, the status file's first write with them
    url = f"http://127.0.0.1:{gateway.metrics_port}/metrics"
    pid = gateway.pid
    window = scrapes * every
    gc0 = full_gc(gateway)
    before = cpu_seconds(pid)
    time.sleep(window)
    idle_cpu = cpu_seconds(pid) - before
    gc1 = full_gc(gateway)
    times: list[float] = []
    size = series = 0
    before = cpu_seconds(pid)
    started = time.monotonic()
    for i in range(scrapes):
        took, size, series = scrape(url)
        times.append(took)
        time.sleep(max(0.0, started + (i + 1) * every - time.monotonic()))
    scrape_cpu = cpu_seconds(pid) - before
    gc2 = full_gc(gateway)
    streams = gateway.metric("acs_gateway_media_streams") or 0.0
    up = gateway.metric("acs_gateway_calls_active") or 0.0
    if thread is not None:
        thread.join(hold_s + 120)
        result = done.get("result")
        if isinstance(result, BaseException):
            raise result
    return {
        "calls": calls, "calls_up": up, "media_streams": streams, "scrapes": scrapes,
        "window_s": window, "idle_cpu_s": idle_cpu, "scrape_cpu_s": scrape_cpu,
        "cpu_ms_per_scrape": max(0.0, scrape_cpu - idle_cpu) / scrapes * 1000,
        "client_ms_p50": statistics.median(times) * 1000,
        "client_ms_max": max(times) * 1000, "bytes": size, "series": series,
        "full_gc_idle": gc1[0] - gc0[0], "full_gc_idle_ms": (gc1[1] - gc0[1]) * 1000,
        "full_gc_scraping": gc2[0] - gc1[0], "full_gc_scraping_ms": (gc2[1] - gc1[1]) * 1000,
    }


def render(rows: Sequence[dict[str, object]]) -> str:
    out = ["| calls up | media streams | series | bytes | client ms p50 / max | gateway CPU ms "
           "per scrape | full GCs (ms) idle window | full GCs (ms) scraping |",
           "|---:|---:|---:|---:|---|---:|---|---|"]
    for r in rows:
        out.append(f"| {r['calls_up']:.0f} | {r['media_streams']:.0f} | {r['series']} | "
                   f"{r['bytes']} | {r['client_ms_p50']:.2f} / {r['client_ms_max']:.2f} | "
                   f"{r['cpu_ms_per_scrape']:.2f} | {r['full_gc_idle']:.0f} "
                   f"({r['full_gc_idle_ms']:.0f}) | {r['full_gc_scraping']:.0f} "
                   f"({r['full_gc_scraping_ms']:.0f}) |")
    return "\n".join(out) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--calls", default="0,250,1000",
                        help="calls held up at each step, comma-separated")
    parser.add_argument("--scrapes", type=int, default=40)
    parser.add_argument("--every", type=float, default=0.25, help="seconds between scrapes")
    args = parser.parse_args(argv)
    if args.scrapes < 1 or args.every <= 0:
        parser.error("--scrapes must be at least 1 and --every above 0")
    steps = [int(n) for n in args.calls.split(",")]
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="metrics-scrape-") as tmp:
        work = Path(tmp)
        callee = harness.SippServer("uas", workdir=work / "uas", buff_size=4 * 1024 * 1024)
        with callee:
            trunk = harness.TrunkSpec("uas", callee.port, inbound_from=("127.0.0.1/32",))
            gateway = harness.GatewayProcess(
                work / "gateway", trunks=[trunk],
                dialplan=harness.route_all_dialplan(["uas"]),
                extra_config={"log": {"level": "warning"},
                              "media": {"port_range": [20000, 29999], "timeout": 0}})
            with gateway:
                for i, calls in enumerate(steps):
                    row = step(gateway, calls, args.scrapes, args.every, work / f"step{i}")
                    rows.append(row)
                    print(f"{calls} calls: {row}", flush=True)
    report = render(rows)
    print(report)
    OUT_DIR.mkdir(exist_ok=True)
    (OUT_DIR / "metrics_scrape.md").write_text(report)
    (OUT_DIR / "metrics_scrape.json").write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
