"""Real peers on loopback for interop tests and benches: SIPp runs, the gateway process, Sippy.

Everything here talks to 127.0.0.1 only, owns the processes it starts (plain ``Popen``, stopped
by PID: SIGTERM, then SIGKILL after a grace period) and bounds every wait:

- :func:`run_sipp` runs a SIPp client in the foreground (``-m CALLS -r RATE -timeout T
  -timeout_error``) and parses its final statistics from the ``-trace_stat`` CSV into a
  :class:`SippResult`;
- :class:`SippServer` runs a SIPp UAS scenario in the background (``uas.xml``,
  ``uas_busy.xml``...);
- :class:`GatewayProcess` writes a complete config (DESIGN.md's contract) into a work
  directory, starts ``python -m gateway.cli run -c CONF`` and waits until it answers OPTIONS;
- :class:`SippyB2bua` runs the Sippy B2BUA with a static route, the peer benches compare with;
- :func:`free_port`, :func:`send_raw_udp`, :func:`sip_options_ping`, :func:`proc_cpu_seconds`
  are the small tools around them.

SIPp facts this module relies on (Debian sip-tester 3.6.1, checked by
``test_sipp_scenarios_selfcheck.py``): exit code 0 when every call succeeded, 1 when some
failed, 97 on an internal stop, 99 when no call was processed, 255 (-1) on a fatal error
(a scenario that does not load) and when ``-timeout`` ends the run under ``-timeout_error``
(calls still running then count neither as successful nor as failed); the ``-stf`` CSV is
``;``-separated with a header row, one row per ``-fd`` period and a last row written at exit;
its ``SuccessfulCall(C)`` and ``FailedCall(C)`` columns are cumulative.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import importlib.util
import ipaddress
import json
import math
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Literal, Self

REPO_ROOT = Path(__file__).resolve().parents[2]
SCENARIO_DIR = REPO_ROOT / "sipp-scenarios"
LOOPBACK = "127.0.0.1"

#: The REST access key every test gateway gets (base64 of 32 bytes).
ACCESS_KEY = base64.b64encode(b"acs-gateway interop access key!!").decode("ascii")
#: The TURN REST API shared secret every test gateway gets.
TURN_SECRET = "interop-turn-secret"

PortKind = Literal["udp", "tcp"]
#: SIPp transport modes used here: one UDP socket, one TCP connection (-t).
SippTransport = Literal["u1", "t1", "un", "tn"]

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_TAIL_CHARS = 4000


class HarnessError(RuntimeError):
    """A peer could not be started, or misbehaved in a way the harness itself detects."""


class SippNotFoundError(HarnessError):
    """The ``sipp`` binary is not on PATH (Debian package ``sip-tester``)."""


class StartStop:
    """A peer used as a context manager: ``with peer:`` starts it (:meth:`start`) and stops it
    (:meth:`stop`, by PID) when the block ends, whatever happens."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> int | None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# --------------------------------------------------------------------------------------------
# small tools


def binary_path(name: str, variable: str) -> str | None:
    """Path of the ``name`` binary (``$VARIABLE`` overrides PATH), or None."""
    configured = os.environ.get(variable)
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    return shutil.which(name)


def require_binary(
    name: str, variable: str, install: str, error: type[HarnessError] = HarnessError
) -> str:
    """Path of the ``name`` binary, or ``error`` saying how to get it (``install``) or where
    to point ``$VARIABLE``."""
    path = binary_path(name, variable)
    if path is None:
        raise error(
            f"{name} not found on PATH: install {install} or set {variable}=/path/to/{name}"
        )
    return path


def sipp_path() -> str | None:
    """Path of the ``sipp`` binary (``$SIPP`` overrides PATH), or None."""
    return binary_path("sipp", "SIPP")


def require_sipp() -> str:
    """Path of ``sipp``, or :class:`SippNotFoundError` saying how to get it."""
    return require_binary(
        "sipp", "SIPP", "Debian's sip-tester (apt-get install sip-tester)", SippNotFoundError
    )


def scenario_path(scenario: str | Path) -> Path:
    """Resolve ``"uac"``, ``"uac.xml"`` or a path to an existing scenario file."""
    candidate = Path(scenario)
    if candidate.is_file():
        return candidate.resolve()
    name = str(scenario)
    if not name.endswith(".xml"):
        name += ".xml"
    resolved = SCENARIO_DIR / name
    if not resolved.is_file():
        raise FileNotFoundError(f"no SIPp scenario {scenario!r} (looked in {SCENARIO_DIR})")
    return resolved


def free_port(kind: PortKind = "udp") -> int:
    """A port on 127.0.0.1 that was free a moment ago (bound to port 0, then released)."""
    sock_type = socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, sock_type) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def free_media_ports(count: int = 4, attempts: int = 200) -> int:
    """The first of ``count`` consecutive UDP ports free on 127.0.0.1: SIPp's ``-mp N`` binds
    N and N+2 (audio and video RTP) and their RTCP ports, not only N."""
    for _ in range(attempts):
        first = free_port()
        socks: list[socket.socket] = []
        try:
            for port in range(first, first + count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(sock)
                sock.bind((LOOPBACK, port))
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
        return first
    raise HarnessError(f"no {count} consecutive UDP ports free after {attempts} attempts")


def free_port_pair(attempts: int = 200) -> int:
    """A port number free on 127.0.0.1 for both UDP and TCP (SIP and TURN listen on both)."""
    for _ in range(attempts):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((LOOPBACK, 0))
            port: int = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((LOOPBACK, port))
                except OSError:
                    continue
                return port
    raise HarnessError(f"no port free for both UDP and TCP after {attempts} attempts")


def port_in_use(port: int, kind: PortKind = "udp") -> bool:
    """True when something holds ``port`` on 127.0.0.1 (a bind without SO_REUSE* fails)."""
    sock_type = socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, sock_type) as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return True
    return False


def wait_port_bound(
    port: int, kind: PortKind, timeout_s: float, proc: subprocess.Popen[bytes] | None = None
) -> bool:
    """Wait until ``port`` is bound (by ``proc``, if given, while it runs); False on timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if port_in_use(port, kind):
            return True
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(0.05)
    return port_in_use(port, kind)


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by process ``pid`` (from /proc/PID/stat)."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    # the command name (field 2) may hold spaces and parentheses: split after the last ')'
    fields = raw[raw.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / _CLK_TCK


def proc_rss_bytes(pid: int, field: str = "VmRSS") -> int:
    """A memory figure of process ``pid`` in bytes from /proc/PID/status: VmRSS (resident
    set size) by default, or another such as VmHWM (its peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    return 0


def sipp_version() -> str:
    """SIPp's own version line, for benchmark reports."""
    sipp = require_sipp()
    out = subprocess.run([sipp, "-v"], capture_output=True, text=True, timeout=10, check=False)
    for line in (out.stdout + out.stderr).splitlines():
        if "SIPp v" in line:
            return line.strip()
    return "unknown"


def json_finite(value: object) -> object:
    """``value`` with NaN and infinities as None, so the JSON written is standard."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_finite(v) for v in value]
    return value


def send_raw_udp(
    port: int,
    data: bytes,
    timeout: float,
    *,
    host: str = LOOPBACK,
    local_port: int = 0,
) -> bytes | None:
    """Send one datagram to ``host:port`` from ``local_port`` (0: any) and return the first
    datagram that comes back within ``timeout`` seconds, or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOOPBACK, local_port))
        sock.settimeout(timeout)
        sock.sendto(data, (host, port))
        try:
            reply, _ = sock.recvfrom(65535)
        except TimeoutError:
            return None
        return reply


def build_options(
    target_port: int,
    local_port: int,
    *,
    transport: str = "UDP",
    target_host: str = LOOPBACK,
    call_id: str | None = None,
) -> bytes:
    """A minimal, valid OPTIONS request (RFC 3261 11) from ``127.0.0.1:local_port``."""
    token = secrets.token_hex(8)
    call_id = call_id or f"probe-{token}@{LOOPBACK}"
    lines = [
        f"OPTIONS sip:{target_host}:{target_port} SIP/2.0",
        f"Via: SIP/2.0/{transport} {LOOPBACK}:{local_port};branch=z9hG4bK-{token};rport",
        "Max-Forwards: 70",
        f"From: <sip:probe@{LOOPBACK}:{local_port}>;tag={token}",
        f"To: <sip:{target_host}:{target_port}>",
        f"Call-ID: {call_id}",
        "CSeq: 1 OPTIONS",
        f"Contact: <sip:probe@{LOOPBACK}:{local_port}>",
        "Accept: application/sdp",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


def sip_options_ping(port: int, timeout: float = 1.0, *, host: str = LOOPBACK) -> bytes | None:
    """Send OPTIONS over UDP to ``host:port``; return the final response (provisional ones are
    skipped), or None when none arrives within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOOPBACK, 0))
        local_port: int = sock.getsockname()[1]
        sock.sendto(build_options(port, local_port, target_host=host), (host, port))
        while (remaining := deadline - time.monotonic()) > 0:
            sock.settimeout(remaining)
            try:
                reply, _ = sock.recvfrom(65535)
            except TimeoutError:
                return None
            if reply.startswith(b"SIP/2.0 1"):
                continue
            if reply.startswith(b"SIP/2.0 "):
                return reply
    return None


def repo_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment with the repository first on PYTHONPATH (so ``python -m
    gateway.cli`` works from any working directory) and unbuffered output, plus ``extra``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def _tail(path: Path, chars: int = _TAIL_CHARS) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - chars))
            return f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


def _stop_process(proc: subprocess.Popen[bytes], grace_s: float, sig: int) -> int:
    """Send ``sig`` to ``proc`` (by its PID), wait ``grace_s``, then SIGKILL; its exit code."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    return proc.returncode


def _make_workdir(workdir: Path | None, prefix: str) -> Path:
    if workdir is None:
        return Path(tempfile.mkdtemp(prefix=prefix))
    workdir.mkdir(parents=True, exist_ok=True)
    return workdir.resolve()


def _unique_dir(parent: Path, stem: str) -> Path:
    for index in range(10_000):
        candidate = parent / (stem if index == 0 else f"{stem}-{index}")
        try:
            candidate.mkdir(parents=True)
        except FileExistsError:
            continue
        return candidate
    raise HarnessError(f"cannot create a fresh directory {stem!r} under {parent}")


# --------------------------------------------------------------------------------------------
# SIPp


def parse_stat_csv(path: Path) -> dict[str, str] | None:
    """The last row of a SIPp ``-trace_stat`` CSV as {column: value}, or None (no file / no
    data row yet). Columns are SIPp's, e.g. ``SuccessfulCall(C)``, ``FailedCall(C)``,
    ``FailedTimeoutOnRecv(C)``, ``ResponseTime1(C)`` (cumulative) and their ``(P)`` (period)
    twins."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return None
    rows = [row for row in csv.reader(text.splitlines(), delimiter=";") if row]
    if len(rows) < 2:
        return None
    header, last = rows[0], rows[-1]
    if len(last) < len(header) - 1:  # a row being written: take the one before
        if len(rows) < 3:
            return None
        last = rows[-2]
    return {name: value for name, value in zip(header, last, strict=False) if name}


_SCREEN_COUNT = re.compile(
    r"^\s*(Successful call|Failed call)\s*\|\s*(\d+)\s*\|\s*(\d+)", re.MULTILINE
)


def parse_screen_counts(text: str) -> tuple[int, int] | None:
    """(successful, failed) cumulative counts from the last statistics screen in ``text``."""
    found: dict[str, int] = {}
    for match in _SCREEN_COUNT.finditer(text):
        found[match.group(1)] = int(match.group(3))
    if "Successful call" not in found or "Failed call" not in found:
        return None
    return found["Successful call"], found["Failed call"]


def _int(stats: Mapping[str, str], column: str) -> int:
    try:
        return int(float(stats.get(column, "0") or "0"))
    except ValueError:
        return 0


def sipp_duration_ms(value: str) -> float:
    """SIPp's ``HH:MM:SS:USEC`` (response times, call lengths in the CSV) in milliseconds."""
    parts = value.strip().split(":")
    if len(parts) != 4:
        return float("nan")
    hours, minutes, seconds, micros = (int(p) for p in parts)
    return ((hours * 60 + minutes) * 60 + seconds) * 1000.0 + micros / 1000.0


@dataclass(frozen=True)
class SippResult:
    """Outcome of one :func:`run_sipp` (counts from the final ``-trace_stat`` row)."""

    successful: int
    failed: int
    exit_code: int
    stdout_tail: str
    stat_path: Path | None
    calls: int = 0
    command: tuple[str, ...] = ()
    elapsed_s: float = 0.0
    workdir: Path | None = None
    error_tail: str = ""
    stats: Mapping[str, str] = field(default_factory=dict)

    @property
    def unfinished(self) -> int:
        """Calls neither successful nor failed when SIPp ended (e.g. cut by -timeout)."""
        return max(0, self.calls - self.successful - self.failed)

    @property
    def ok(self) -> bool:
        """Every requested call completed successfully and SIPp agrees (exit code 0)."""
        return self.exit_code == 0 and self.failed == 0 and self.successful == self.calls

    @property
    def failure_breakdown(self) -> dict[str, int]:
        """Non-zero cumulative failure counters, e.g. {'FailedTimeoutOnRecv': 3}."""
        out: dict[str, int] = {}
        for column, value in self.stats.items():
            if column.startswith("Failed") and column.endswith("(C)") and column != "FailedCall(C)":
                count = _int({column: value}, column)
                if count:
                    out[column[:-3]] = count
        return out

    def response_time_ms(self, rtd: int | str = 1) -> float:
        """Mean of response-time timer ``rtd`` over the run (ms); NaN when absent."""
        return sipp_duration_ms(self.stats.get(f"ResponseTime{rtd}(C)", ""))

    def response_time_bound_ms(self, rtd: int | str = 1, quantile: float = 0.99) -> float:
        """Upper bound (ms) of the ``ResponseTimeRepartition`` bucket that holds the
        ``quantile`` of timer ``rtd`` (the scenario sets the bucket edges); ``inf`` when it
        falls in the last, open bucket; NaN without data."""
        prefix = f"ResponseTimeRepartition{rtd}_"
        buckets: list[tuple[float, int]] = []
        for column, value in self.stats.items():
            if not column.startswith(prefix):
                continue
            edge = column[len(prefix) :]
            bound = float("inf") if edge.startswith(">=") else float(edge.lstrip("<"))
            buckets.append((bound, _int({column: value}, column)))
        total = sum(count for _, count in buckets)
        if total == 0:
            return float("nan")
        seen = 0
        for bound, count in sorted(buckets):
            seen += count
            if seen >= quantile * total:
                return bound
        return float("inf")

    def describe(self) -> str:
        """A paragraph for assertion messages: counts, exit code, command, error log tail."""
        return (
            f"sipp: {self.successful}/{self.calls} successful, {self.failed} failed, "
            f"{self.unfinished} unfinished, exit code {self.exit_code}, {self.elapsed_s:.1f} s, "
            f"failures {self.failure_breakdown or '{}'}\n"
            f"command: {' '.join(self.command)}\n"
            f"workdir: {self.workdir}\n"
            f"--- error log tail ---\n{self.error_tail[-1500:]}\n"
            f"--- stdout tail ---\n{self.stdout_tail[-1500:]}"
        )


def _sipp_output_args(workdir: Path, stem: str) -> tuple[list[str], dict[str, Path]]:
    paths = {
        "stat": workdir / f"{stem}_stat.csv",
        "errors": workdir / f"{stem}_errors.log",
        "screen": workdir / f"{stem}_screen.log",
    }
    args = [
        "-trace_stat", "-stf", str(paths["stat"]), "-fd", "1",
        "-trace_err", "-error_file", str(paths["errors"]),
        "-trace_screen", "-screen_file", str(paths["screen"]),
    ]  # fmt: skip
    return args, paths


def run_sipp(
    scenario: str | Path,
    target: str,
    *,
    service: str | None = None,
    local_port: int | None = None,
    calls: int = 1,
    rate: float = 10.0,
    transport: SippTransport = "u1",
    timeout_s: float = 30.0,
    extra_args: Sequence[str] = (),
    workdir: Path | None = None,
    variables: Mapping[str, str] | None = None,
    duration_ms: int | None = None,
    buff_size: int | None = None,
) -> SippResult:
    """Run a SIPp client scenario in the foreground and parse its final statistics.

    ``target`` is ``host:port`` (``127.0.0.1:5060``); ``service`` the Request-URI user (the
    called number, ``-s``); ``variables`` become ``-set NAME VALUE`` (``caller``, ``expect``);
    ``duration_ms`` is ``-d`` (the scenarios' ``<pause/>``). SIPp stops itself after
    ``timeout_s`` (``-timeout``; with ``-timeout_error`` it then exits 255, and calls still
    running count in :attr:`SippResult.unfinished`); the harness kills it 15 s later if it is
    still running. Output files go into ``workdir`` (a fresh temporary directory when None)
    and stay there for post-mortems.
    """
    sipp = require_sipp()
    path = scenario_path(scenario)
    base = _make_workdir(workdir, "sipp-")
    rundir = _unique_dir(base, f"{path.stem}-client")
    output_args, paths = _sipp_output_args(rundir, path.stem)
    port = (
        local_port if local_port is not None else free_port("tcp" if transport[0] == "t" else "udp")
    )
    command = [
        sipp, "-sf", str(path),
        "-i", LOOPBACK, "-mi", LOOPBACK, "-bind_local",
        "-p", str(port), "-t", transport,
        "-cp", str(free_port("udp")),
        "-m", str(calls), "-r", f"{rate:g}",
        "-nostdin", "-timeout", f"{timeout_s:g}s", "-timeout_error",
        *output_args,
    ]  # fmt: skip
    if service is not None:
        command += ["-s", service]
    if duration_ms is not None:
        command += ["-d", str(duration_ms)]
    if buff_size is not None:
        command += ["-buff_size", str(buff_size)]
    for name, value in (variables or {}).items():
        command += ["-set", name, value]
    command += [*extra_args, target]

    stdout_path = rundir / "stdout.log"
    started = time.monotonic()
    with stdout_path.open("wb") as out:
        proc = subprocess.Popen(
            command, cwd=rundir, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
        try:
            exit_code = proc.wait(timeout=timeout_s + 15)
        except subprocess.TimeoutExpired:
            exit_code = _stop_process(proc, 3.0, signal.SIGTERM)
    elapsed = time.monotonic() - started

    stdout_tail = _tail(stdout_path)
    stats = parse_stat_csv(paths["stat"]) or {}
    if stats:
        successful = _int(stats, "SuccessfulCall(C)")
        failed = _int(stats, "FailedCall(C)")
    else:
        counts = parse_screen_counts(_tail(paths["screen"], 20_000) or stdout_tail)
        successful, failed = counts if counts is not None else (0, 0)
    return SippResult(
        successful=successful,
        failed=failed,
        exit_code=exit_code,
        stdout_tail=stdout_tail,
        stat_path=paths["stat"] if paths["stat"].exists() else None,
        calls=calls,
        command=tuple(command),
        elapsed_s=elapsed,
        workdir=rundir,
        error_tail=_tail(paths["errors"]),
        stats=stats,
    )


class SippServer(StartStop):
    """A SIPp UAS scenario (``uas.xml``, ``uas_busy.xml``...) running in the background on
    127.0.0.1:``port`` until :meth:`stop`. Use as a context manager."""

    def __init__(
        self,
        scenario: str | Path = "uas",
        *,
        port: int | None = None,
        transport: SippTransport = "u1",
        workdir: Path | None = None,
        extra_args: Sequence[str] = (),
        variables: Mapping[str, str] | None = None,
        buff_size: int | None = None,
        ready_timeout_s: float = 5.0,
    ) -> None:
        self.scenario = scenario_path(scenario)
        self.transport: SippTransport = transport
        self.kind: PortKind = "tcp" if transport[0] == "t" else "udp"
        self.port = port if port is not None else free_port(self.kind)
        self._workdir = workdir
        self._extra_args = tuple(extra_args)
        self._variables = dict(variables or {})
        self._buff_size = buff_size
        self._ready_timeout_s = ready_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._stdout: IO[bytes] | None = None
        self.rundir: Path | None = None
        self.stat_path: Path | None = None
        self.error_path: Path | None = None
        self.command: tuple[str, ...] = ()
        self.exit_code: int | None = None

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise HarnessError("SIPp server not started")
        return self._proc.pid

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT``."""
        return f"{LOOPBACK}:{self.port}"

    @property
    def uri(self) -> str:
        """A SIP URI for trunk configs: ``sip:127.0.0.1:PORT;transport=udp|tcp``."""
        return f"sip:{LOOPBACK}:{self.port};transport={self.kind}"

    def start(self) -> Self:
        """Start SIPp and wait until its port is bound; :class:`HarnessError` otherwise."""
        if self._proc is not None:
            raise HarnessError("SIPp server already started")
        sipp = require_sipp()
        base = _make_workdir(self._workdir, "sipp-")
        self.rundir = _unique_dir(base, f"{self.scenario.stem}-server-{self.port}")
        output_args, paths = _sipp_output_args(self.rundir, self.scenario.stem)
        self.stat_path, self.error_path = paths["stat"], paths["errors"]
        if port_in_use(self.port, self.kind):
            raise HarnessError(f"{self.kind} port {self.port} already in use")
        command = [
            sipp, "-sf", str(self.scenario),
            "-i", LOOPBACK, "-mi", LOOPBACK, "-bind_local",
            "-p", str(self.port), "-t", self.transport,
            "-cp", str(free_port("udp")),
            "-nostdin", *output_args,
        ]  # fmt: skip
        if self._buff_size is not None:
            command += ["-buff_size", str(self._buff_size)]
        for name, value in self._variables.items():
            command += ["-set", name, value]
        command += list(self._extra_args)
        self.command = tuple(command)
        self._stdout = (self.rundir / "stdout.log").open("wb")
        self._proc = subprocess.Popen(
            command,
            cwd=self.rundir,
            stdin=subprocess.DEVNULL,
            stdout=self._stdout,
            stderr=subprocess.STDOUT,
        )
        if not wait_port_bound(self.port, self.kind, self._ready_timeout_s, self._proc):
            self.stop()
            raise HarnessError(
                f"SIPp server {self.scenario.name} did not bind {self.kind}:{self.port} "
                f"(exit code {self.exit_code})\ncommand: {' '.join(command)}\n"
                f"{self.log_text()[-_TAIL_CHARS:]}"
            )
        return self

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, grace_s: float = 3.0) -> int | None:
        """SIGTERM by PID, SIGKILL after ``grace_s``; returns SIPp's exit code."""
        if self._proc is None:
            return None
        if self.exit_code is None:
            self.exit_code = _stop_process(self._proc, grace_s, signal.SIGTERM)
        if self._stdout is not None:
            self._stdout.close()
            self._stdout = None
        return self.exit_code

    def stats(self) -> dict[str, str]:
        """The latest ``-trace_stat`` row (written once a second while it runs)."""
        if self.stat_path is None:
            return {}
        return parse_stat_csv(self.stat_path) or {}

    def counts(self) -> tuple[int, int]:
        """(successful, failed) calls so far, as of the latest statistics row.

        The row is rewritten once a second, and a call counts only when its scenario ends:
        ``uas.xml`` waits 4 s after its last 200 (to answer a retransmitted BYE), so right
        after a client run use :meth:`wait_counts`."""
        stats = self.stats()
        return _int(stats, "SuccessfulCall(C)"), _int(stats, "FailedCall(C)")

    def wait_counts(self, total: int, timeout_s: float = 10.0) -> tuple[int, int]:
        """Poll :meth:`counts` until successful + failed >= ``total`` or ``timeout_s`` passes;
        returns the last (successful, failed)."""
        deadline = time.monotonic() + timeout_s
        while True:
            successful, failed = self.counts()
            if successful + failed >= total or time.monotonic() >= deadline:
                return successful, failed
            time.sleep(0.2)

    def log_text(self) -> str:
        """SIPp's stdout and error log."""
        if self.rundir is None:
            return ""
        out = _tail(self.rundir / "stdout.log", 20_000)
        errors = _tail(self.error_path, 20_000) if self.error_path else ""
        return out + ("\n--- errors ---\n" + errors if errors else "")


# --------------------------------------------------------------------------------------------
# TOML writing (the config contract only needs tables of scalars, arrays and inline tables)

TomlValue = str | int | float | bool | Sequence["TomlValue"] | Mapping[str, "TomlValue"]


def toml_value(value: TomlValue) -> str:
    """One TOML value: strings as basic strings (JSON escapes are valid TOML)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, Mapping):
        items = ", ".join(f"{_toml_key(k)} = {toml_value(v)}" for k, v in value.items())
        return "{ " + items + " }" if items else "{}"
    return "[" + ", ".join(toml_value(v) for v in value) + "]"


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def toml_table(name: str, values: Mapping[str, TomlValue], *, array: bool = False) -> str:
    """``[name]`` (or ``[[name]]``) followed by ``key = value`` lines."""
    head = f"[[{name}]]" if array else f"[{name}]"
    return "\n".join([head, *(f"{_toml_key(k)} = {toml_value(v)}" for k, v in values.items())])


def route_all_dialplan(trunks: Sequence[str], *, match: str = ".*") -> str:
    """A dial plan sending every called number out through ``trunks`` (in failover order)."""
    names = ", ".join(json.dumps(t) for t in trunks)
    return f"[[outbound]]\nname = \"all\"\nmatch = '{match}'\ntrunks = [{names}]\n"


# --------------------------------------------------------------------------------------------
# the gateway


@dataclass(frozen=True)
class TrunkSpec:
    """One ``[[trunk]]`` of the test config: a SIPp (or other) peer at 127.0.0.1:``port``."""

    name: str
    port: int
    transport: Literal["udp", "tcp", "tls"] = "udp"
    inbound_from: tuple[str, ...] = ("127.0.0.1/32",)
    options_interval: int = 0
    codecs: tuple[str, ...] = ("PCMU", "PCMA")
    srtp: Literal["off", "optional", "mandatory"] = "off"
    username: str = ""
    password: str = ""
    register: bool = False
    extra: Mapping[str, TomlValue] = field(default_factory=dict)

    @property
    def uri(self) -> str:
        return f"sip:{LOOPBACK}:{self.port};transport={self.transport}"

    def table(self) -> dict[str, TomlValue]:
        values: dict[str, TomlValue] = {
            "name": self.name,
            "uri": self.uri,
            "inbound_from": list(self.inbound_from),
            "username": self.username,
            "password": self.password,
            "register": self.register,
            "options_interval": self.options_interval,
            "codecs": list(self.codecs),
            "srtp": self.srtp,
        }
        values.update(self.extra)
        return values


def _port_block(low: int, high: int, width: int) -> list[int]:
    """A random [start, end] range of ``width`` ports inside [low, high) (below Linux's
    ephemeral range, so free_port() never hands out a port inside it)."""
    start = random.randrange(low, high - width, 2)
    return [start, start + width - 1]


class GatewayStartError(HarnessError):
    """The gateway exited or never answered OPTIONS; the message ends with its log tail."""


class GatewayProcess(StartStop):
    """``python -m gateway.cli run -c CONF`` on free loopback ports, with a generated config.

    The work directory holds ``gateway.toml`` (every path absolute), ``dialplans/test.toml``,
    ``var/`` (TLS pair, CDR database) and ``gateway.log`` (stdout and stderr). ``extra_config``
    merges keys into sections (``{"sip": {"users": {"alice": "secret"}}}``); a section that is
    not in the base config is added. Use as a context manager.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        trunks: Sequence[TrunkSpec] = (),
        dialplan: str = "",
        extra_config: Mapping[str, Mapping[str, TomlValue]] | None = None,
        tls: bool = True,
        turn: bool = True,
        python: str = sys.executable,
        command: Sequence[str] | None = None,
        env: Mapping[str, str] | None = None,
        ready_timeout_s: float = 15.0,
    ) -> None:
        self.workdir = workdir.resolve()
        self.trunks = tuple(trunks)
        self.dialplan = dialplan
        self.extra_config = {k: dict(v) for k, v in (extra_config or {}).items()}
        self.tls = tls
        self.turn = turn
        self.ready_timeout_s = ready_timeout_s
        self._python = python
        self._command_override = tuple(command) if command is not None else None
        self._env = dict(env or {})

        self.sip_udp = free_port_pair()
        self.sip_tcp = self.sip_udp
        self.sip_tls = free_port("tcp")
        self.rest_port = free_port("tcp")
        self.metrics_port = free_port("tcp")
        self.turn_port = free_port_pair()
        self.media_port_range = _port_block(20000, 32000, 1000)
        self.turn_relay_port_range = _port_block(10000, 20000, 1000)

        self.config_path = self.workdir / "gateway.toml"
        self.dialplan_path = self.workdir / "dialplans" / "test.toml"
        self.log_path = self.workdir / "gateway.log"
        self.cdr_path = self.workdir / "var" / "cdr.sqlite3"
        self.cert_path = self.workdir / "var" / "tls" / "gateway.crt"
        self.key_path = self.workdir / "var" / "tls" / "gateway.key"
        self.access_key = ACCESS_KEY
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.exit_code: int | None = None

    # -- configuration ---------------------------------------------------------------------

    @property
    def sip_target(self) -> str:
        """``127.0.0.1:PORT`` of the SIP UDP/TCP listener (what SIPp clients dial)."""
        return f"{LOOPBACK}:{self.sip_udp}"

    @property
    def connection_string(self) -> str:
        """What ``acs-gateway connection-string`` prints for this config."""
        return f"endpoint=https://{LOOPBACK}:{self.rest_port}/;accesskey={self.access_key}"

    @property
    def rest_base_url(self) -> str:
        return f"https://{LOOPBACK}:{self.rest_port}/"

    def config(self) -> dict[str, dict[str, TomlValue]]:
        """The config tables (without ``[[trunk]]``), extra_config merged in."""
        listen = [f"udp:{LOOPBACK}:{self.sip_udp}", f"tcp:{LOOPBACK}:{self.sip_tcp}"]
        if self.tls:
            listen.append(f"tls:{LOOPBACK}:{self.sip_tls}")
        tables: dict[str, dict[str, TomlValue]] = {
            "sip": {"listen": listen, "domain": "gateway.local"},
            "tls": {"cert": str(self.cert_path), "key": str(self.key_path)},
            "media": {"address": LOOPBACK, "port_range": list(self.media_port_range)},
            "rest": {
                "listen": f"{LOOPBACK}:{self.rest_port}",
                "access_key": self.access_key,
                "incoming_call_webhooks": [],
                "allow_insecure_callbacks": True,
            },
            "turn": {
                "enabled": self.turn,
                "listen": [f"udp:{LOOPBACK}:{self.turn_port}", f"tcp:{LOOPBACK}:{self.turn_port}"],
                "realm": "gateway.local",
                "relay_address": LOOPBACK,
                "relay_port_range": list(self.turn_relay_port_range),
                "auth_secret": TURN_SECRET,
                "users": {},
                "allowed_peers": [],
            },
            "storage": {"cdr": str(self.cdr_path)},
            "dialplan": {"files": [str(self.dialplan_path)]},
            "observe": {"metrics_listen": f"{LOOPBACK}:{self.metrics_port}"},
        }
        for section, values in self.extra_config.items():
            tables.setdefault(section, {}).update(values)
        return tables

    def config_text(self) -> str:
        parts = [toml_table(name, values) for name, values in self.config().items()]
        parts += [toml_table("trunk", t.table(), array=True) for t in self.trunks]
        return "\n\n".join(parts) + "\n"

    def write_files(self) -> None:
        """Write the config and the dial plan (both checked to parse as TOML)."""
        (self.workdir / "var" / "tls").mkdir(parents=True, exist_ok=True)
        self.dialplan_path.parent.mkdir(parents=True, exist_ok=True)
        text = self.config_text()
        tomllib.loads(text)
        self.config_path.write_text(text)
        self.write_dialplan(self.dialplan)

    def write_dialplan(self, text: str) -> None:
        """Replace the dial plan file (call :meth:`reload` to make a running gateway see it)."""
        try:
            tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise HarnessError(f"dial plan is not valid TOML: {exc}\n{text}") from exc
        self.dialplan = text
        self.dialplan_path.write_text(text)

    # -- process ---------------------------------------------------------------------------

    @property
    def command(self) -> tuple[str, ...]:
        if self._command_override is not None:
            return (*self._command_override, "-c", str(self.config_path))
        return (self._python, "-m", "gateway.cli", "run", "-c", str(self.config_path))

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise HarnessError("gateway not started")
        return self._proc.pid

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> Self:
        """Write the files, start the gateway, wait until it answers OPTIONS over UDP."""
        if self._proc is not None:
            raise HarnessError("gateway already started")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.write_files()
        env = repo_env(self._env)
        self._log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            self.command,
            cwd=self.workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        try:
            self.wait_ready(self.ready_timeout_s)
        except GatewayStartError:
            self.stop(grace_s=3.0)
            raise
        return self

    def wait_ready(self, timeout_s: float) -> None:
        """Poll with OPTIONS over UDP until a 200 comes back; :class:`GatewayStartError`."""
        deadline = time.monotonic() + timeout_s
        last: bytes | None = None
        while time.monotonic() < deadline:
            if not self.running():
                raise GatewayStartError(
                    f"gateway exited with code {self._proc.returncode if self._proc else None} "
                    f"before answering OPTIONS\ncommand: {' '.join(self.command)}\n"
                    f"--- {self.log_path} ---\n{self.log_tail()}"
                )
            last = sip_options_ping(self.sip_udp, timeout=0.5)
            if last is not None and last.startswith(b"SIP/2.0 200"):
                return
            time.sleep(0.1)
        status = last.split(b"\r\n", 1)[0].decode("ascii", "replace") if last else "no answer"
        raise GatewayStartError(
            f"gateway did not answer OPTIONS on udp:{self.sip_udp} with 200 within "
            f"{timeout_s:g} s (last: {status})\ncommand: {' '.join(self.command)}\n"
            f"--- {self.log_path} ---\n{self.log_tail()}"
        )

    def metrics(self, timeout_s: float = 5.0) -> dict[tuple[str, tuple[tuple[str, str], ...]],
                                                      float]:
        """Scrape ``GET /metrics`` ([observe] metrics_listen) and parse the Prometheus text
        format back: every sample's value by (name, sorted labels)."""
        from prometheus_client.parser import text_string_to_metric_families

        url = f"http://{LOOPBACK}:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            text = response.read().decode()
        return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
                for family in text_string_to_metric_families(text)
                for sample in family.samples}

    def metric(self, name: str, **labels: str) -> float | None:
        """One sample of a fresh scrape (``metrics``), or None when it is not exposed."""
        return self.metrics().get((name, tuple(sorted(labels.items()))))

    def reload(self) -> None:
        """SIGHUP: the gateway reloads its dial plans."""
        os.kill(self.pid, signal.SIGHUP)

    def stop(self, grace_s: float = 10.0) -> int | None:
        """SIGTERM (drain) by PID, SIGKILL after ``grace_s``; returns the exit code."""
        if self._proc is None:
            return None
        if self.exit_code is None:
            self.exit_code = _stop_process(self._proc, grace_s, signal.SIGTERM)
        if self._log is not None:
            self._log.close()
            self._log = None
        return self.exit_code

    def log_text(self) -> str:
        """Everything the gateway wrote to stdout and stderr so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, chars: int = _TAIL_CHARS) -> str:
        return _tail(self.log_path, chars)

    def wait_for_log(self, pattern: str, timeout_s: float = 5.0) -> re.Match[str]:
        """Wait until the log matches ``pattern`` (a regex); HarnessError with the tail."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout_s
        while True:
            match = regex.search(self.log_text())
            if match is not None:
                return match
            if time.monotonic() >= deadline:
                raise HarnessError(
                    f"gateway log never matched {pattern!r} within {timeout_s:g} s\n"
                    f"{self.log_tail()}"
                )
            time.sleep(0.05)


# --------------------------------------------------------------------------------------------
# Sippy B2BUA (the peer benches compare with)


def sippy_python() -> str | None:
    """An interpreter that can import ``sippy``: ``$ACS_SIPPY_PYTHON``, else this one."""
    configured = os.environ.get("ACS_SIPPY_PYTHON")
    if configured:
        return configured
    return sys.executable if importlib.util.find_spec("sippy") is not None else None


class SippyB2bua(StartStop):
    """Sippy B2BUA listening on 127.0.0.1:``port`` (UDP), relaying every INVITE to
    ``route`` (``127.0.0.1:PORT``), with RADIUS auth and accounting off, in the foreground.

    The command line (Sippy 2.5, ``sippy/b2bua.py:main_func``)::

        python -m sippy.b2bua -f -l 127.0.0.1 -p PORT -s 127.0.0.1:ROUTE_PORT -u -A 0 \\
            -c WORKDIR/b2bua.sock

    (``b2bua`` is the same entry point; long forms ``--sip_address``, ``--sip_port``,
    ``--static_route``, ``--auth_enable=off``, ``--acct_enable=off``, ``--b2bua_socket``.)
    ``-c`` moves its command socket off /var/run. It logs to stderr (``SIPLOG_BEND``); every
    SIP message is logged at level INFO, so ``log_level="ERR"`` keeps benches fair. Sippy
    binds with SO_REUSEPORT: a stale instance on the same port silently shares the traffic,
    hence the port check in :meth:`start`.
    """

    def __init__(
        self,
        route: str,
        workdir: Path,
        *,
        port: int | None = None,
        log_level: Literal["DBUG", "INFO", "WARN", "ERR", "CRIT"] = "INFO",
        python: str | None = None,
        extra_args: Sequence[str] = (),
        ready_timeout_s: float = 10.0,
    ) -> None:
        self.route = route
        self.workdir = workdir.resolve()
        self.port = port if port is not None else free_port("udp")
        self.log_level = log_level
        self._python = python
        self._extra_args = tuple(extra_args)
        self.ready_timeout_s = ready_timeout_s
        self.log_path = self.workdir / "sippy.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.exit_code: int | None = None
        self.command: tuple[str, ...] = ()

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise HarnessError("Sippy not started")
        return self._proc.pid

    @property
    def sip_target(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> Self:
        python = self._python or sippy_python()
        if python is None:
            raise HarnessError(
                "no interpreter with sippy: pip install sippy or set ACS_SIPPY_PYTHON"
            )
        host = self.route.rsplit(":", 1)[0]
        if not ipaddress.ip_address(host).is_loopback:
            raise HarnessError(f"Sippy route {self.route!r}: loopback addresses only")
        self.workdir.mkdir(parents=True, exist_ok=True)
        if port_in_use(self.port, "udp"):
            raise HarnessError(f"udp port {self.port} already in use")
        self.command = (
            python, "-m", "sippy.b2bua", "-f",
            "-l", LOOPBACK, "-p", str(self.port), "-s", self.route,
            "-u", "-A", "0", "-c", str(self.workdir / "b2bua.sock"),
            *self._extra_args,
        )  # fmt: skip
        env = dict(os.environ, SIPLOG_BEND="stderr", SIPLOG_LVL=self.log_level)
        self._log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            self.command,
            cwd=self.workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        if not wait_port_bound(self.port, "udp", self.ready_timeout_s, self._proc):
            self.stop(grace_s=2.0)
            raise HarnessError(
                f"Sippy did not bind udp:{self.port} (exit code {self.exit_code})\n"
                f"command: {' '.join(self.command)}\n{_tail(self.log_path)}"
            )
        return self

    def stop(self, grace_s: float = 5.0) -> int | None:
        """SIGTERM (Sippy's safe stop: waits up to ~2.5 s for calls), then SIGKILL."""
        if self._proc is None:
            return None
        if self.exit_code is None:
            self.exit_code = _stop_process(self._proc, grace_s, signal.SIGTERM)
        if self._log is not None:
            self._log.close()
            self._log = None
        return self.exit_code

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


@contextlib.contextmanager
def sipp_servers(*servers: SippServer) -> Iterator[tuple[SippServer, ...]]:
    """Start several SIPp servers; stop all of them on exit, whatever happens."""
    with contextlib.ExitStack() as stack:
        for server in servers:
            stack.enter_context(server)
        yield servers
