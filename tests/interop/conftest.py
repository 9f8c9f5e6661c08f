"""Fixtures for tests against real peers on loopback (SIPp, Sippy, the gateway process).

A missing peer skips its tests on a developer machine, but fails them under CI (``CI`` set to
true/1/yes): there, a skipped interop suite would pass while proving nothing.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .baresip import BaresipFleet, BaresipNotFoundError, require_baresip
from .harness import (
    GatewayProcess,
    SippResult,
    SippServer,
    run_sipp,
    sipp_path,
    sippy_python,
)

GatewayFactory = Callable[..., GatewayProcess]
SippServerFactory = Callable[..., SippServer]
SippClient = Callable[..., SippResult]


def running_under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def _missing_peer(message: str) -> None:
    if running_under_ci():
        pytest.fail(f"{message} (CI=true: interop peers are required, not skipped)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def sipp_available() -> str:
    """Path of a working ``sipp`` (Debian sip-tester); skip, or fail under CI, without it."""
    path = sipp_path()
    if path is None:
        _missing_peer("sipp not found: apt-get install sip-tester (or set SIPP=/path/to/sipp)")
        raise AssertionError("unreachable")
    probe = subprocess.run([path, "-v"], capture_output=True, text=True, timeout=10, check=False)
    if "SIPp" not in probe.stdout + probe.stderr:
        _missing_peer(f"{path} -v does not look like SIPp: {probe.stdout[:200]!r}")
    return path


@pytest.fixture(scope="session")
def sippy_available() -> str:
    """An interpreter that runs the Sippy B2BUA (``pip install sippy``); skip/fail without."""
    python = sippy_python()
    if python is None:
        _missing_peer("sippy not importable: pip install sippy (or set ACS_SIPPY_PYTHON)")
        raise AssertionError("unreachable")
    return python


@pytest.fixture
def interop_dir(tmp_path: Path) -> Path:
    """A per-test directory for peer logs, configs and SIPp statistics."""
    path = tmp_path / "interop"
    path.mkdir()
    return path


@pytest.fixture
def sipp_server(sipp_available: str, interop_dir: Path) -> Iterator[SippServerFactory]:
    """Factory: ``sipp_server("uas", transport="u1", **kw)`` -> a started :class:`SippServer`.
    Every server is stopped at teardown and its log tail printed (shown when a test fails)."""
    servers: list[SippServer] = []

    def start(scenario: str = "uas", **kwargs: Any) -> SippServer:
        kwargs.setdefault("workdir", interop_dir)
        server = SippServer(scenario, **kwargs)
        servers.append(server)
        return server.start()

    yield start
    for server in reversed(servers):
        server.stop()
        print(f"--- SIPp server {server.scenario.name} :{server.port} ---")
        print(server.log_text()[-3000:])


@pytest.fixture
def sipp_client(sipp_available: str, interop_dir: Path) -> SippClient:
    """``sipp_client(scenario, target, **kw)``: :func:`run_sipp` with output in the test dir."""

    def run(scenario: str, target: str, **kwargs: Any) -> SippResult:
        kwargs.setdefault("workdir", interop_dir)
        return run_sipp(scenario, target, **kwargs)

    return run


@pytest.fixture
def gateway_factory(interop_dir: Path) -> Iterator[GatewayFactory]:
    """Factory: ``gateway_factory(trunks=[...], dialplan=TOML, **kw)`` -> a started
    :class:`GatewayProcess` (ready: it answered OPTIONS). Stopped at teardown, log tail printed."""
    gateways: list[GatewayProcess] = []

    def start(**kwargs: Any) -> GatewayProcess:
        gateway = GatewayProcess(interop_dir / f"gateway-{len(gateways)}", **kwargs)
        gateways.append(gateway)
        return gateway.start()

    yield start
    for gateway in reversed(gateways):
        code = gateway.stop()
        print(f"--- gateway {gateway.workdir} (exit code {code}) ---")
        print(gateway.log_tail(6000))


@pytest.fixture
def baresips(interop_dir: Path) -> Iterator[BaresipFleet]:
    """A :class:`BaresipFleet` in the test's directory; fails (never skips) without baresip."""
    missing: str | None = None
    try:
        require_baresip()
    except BaresipNotFoundError as exc:
        missing = str(exc)
    if missing is not None:
        pytest.fail(missing, pytrace=False)
    with BaresipFleet(interop_dir) as fleet:
        yield fleet
