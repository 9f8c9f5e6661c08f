"""Network namespaces for NAT interop tests: routed subnets, NATs and firewalls on one machine.

Everything this module builds lives in network namespaces it creates itself, named with a
per-run prefix ``anx<PID>x<N>-`` (the creating process's PID, a counter): the root namespace's
interfaces, routes, sysctls and firewall are never touched. Every command is either ``ip -n NS
...`` or ``ip netns exec NS ...``; veth pairs are created directly between two test namespaces
(``ip -n A link add ... peer ... netns B``), so their ends never appear in the root namespace.

- :func:`require_netns` checks the prerequisites (root or CAP_NET_ADMIN, ``ip``, ``iptables``,
  a namespace can be created, NAT and ``--random-fully`` accepted inside it) and raises
  :class:`NetnsUnavailable` with a clear message otherwise (tests turn it into a failure, never a
  skip).
- :class:`Topology` (a context manager) creates namespaces (:meth:`Topology.namespace`), links
  them with veth pairs (:meth:`Topology.link`), makes routers (:meth:`Topology.router`: IPv4
  forwarding on, by ``sysctl`` inside that namespace only), NATs (:meth:`Topology.nat`:
  ``MASQUERADE``, port-preserving, or ``MASQUERADE --random-fully``, symmetric) and UDP blocks
  (:meth:`Topology.block_udp`). :meth:`Topology.close` deletes every namespace it made (in a
  ``finally``, whatever happened); a namespace's veth ends go with it.
- :func:`remove_leftovers` deletes namespaces of earlier runs whose creating process is gone
  (same name pattern, dead PID): a run killed before its ``finally`` leaves nothing for long.
  Processes still inside such a namespace are reported, not killed (they are not ours).
- :class:`Netns` is one namespace: :meth:`Netns.run` runs a command in it (``ip netns exec``),
  :attr:`Netns.exec_prefix` is that prefix for ``Popen`` (the gateway, baresip), and
  :meth:`Netns.entered` switches the *calling thread* into the namespace (``setns(2)`` through
  ctypes) for the time of a ``with`` block, so that sockets the test itself opens there belong
  to the namespace (a socket keeps the namespace it was created in). The thread's own
  namespace is restored on exit, or the process is aborted: a test thread stranded in another
  namespace must not carry on.

NAT facts relied on (Linux conntrack, iptables-nft 1.8.9): ``MASQUERADE`` keeps the source port
when it is free (port-preserving, endpoint-independent mapping, address-and-port-dependent
filtering); ``--random-fully`` picks a random port per new flow (a different mapping per
destination: a symmetric NAT). A NAT here drops unsolicited UDP to its own outside address
(``INPUT ... ctstate NEW -j DROP``), as home routers do: otherwise the kernel answers an early
ICE check with ICMP port unreachable and, worse, keeps a conntrack entry for it that makes the
later outgoing flow of the same 5-tuple lose its port (the mapping changes, hole punching fails).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import ipaddress
import itertools
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

NETNS_DIR = Path("/run/netns")
#: Names this module gives namespaces: ``anx<pid>x<run>-<role>``.
NAME_PATTERN = re.compile(r"^anx(\d+)x(\d+)-[a-z0-9]+$")
CLONE_NEWNET = 0x40000000
COMMAND_TIMEOUT_S = 20.0

_runs = itertools.count(1)
_libc: ctypes.CDLL | None = None
_libc_lock = threading.Lock()


class NetnsUnavailable(RuntimeError):
    """A prerequisite of the namespace tests is missing (permission, ``ip``, ``iptables``)."""


class NetnsError(RuntimeError):
    """A command that builds the topology failed."""


def _run(argv: Sequence[str], *, check: bool = True, timeout: float = COMMAND_TIMEOUT_S
         ) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                              check=False, stdin=subprocess.DEVNULL)
    except FileNotFoundError as exc:
        raise NetnsUnavailable(f"{argv[0]} not found: {exc}") from exc
    except subprocess.TimeoutExpired as exc:
        raise NetnsError(f"{' '.join(argv)}: no exit within {timeout:g} s") from exc
    if check and done.returncode != 0:
        raise NetnsError(
            f"{' '.join(argv)} failed (exit {done.returncode}): "
            f"{(done.stderr or done.stdout).strip()}"
        )
    return done


def _setns_libc() -> ctypes.CDLL:
    global _libc
    with _libc_lock:
        if _libc is None:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return _libc


def _setns(fd: int) -> None:
    if _setns_libc().setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns(CLONE_NEWNET): {os.strerror(errno)}")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def list_namespaces() -> list[str]:
    """Names of the named network namespaces (``ip netns list``)."""
    out = _run(["ip", "netns", "list"]).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def remove_leftovers() -> list[str]:
    """Delete namespaces this module made in runs whose process is gone; what was removed
    (with a note for any that still held processes, which are left alone)."""
    removed: list[str] = []
    for name in list_namespaces():
        match = NAME_PATTERN.match(name)
        if match is None or pid_alive(int(match.group(1))):
            continue
        pids = _run(["ip", "netns", "pids", name], check=False).stdout.split()
        _run(["ip", "netns", "del", name], check=False)
        removed.append(f"{name} (processes still inside: {' '.join(pids)})" if pids else name)
    return removed


def require_netns() -> None:
    """Raise :class:`NetnsUnavailable` unless namespaces, veth pairs, forwarding and iptables
    NAT (with ``--random-fully``) all work here; leaves nothing behind."""
    missing = [tool for tool in ("ip", "iptables", "sysctl") if shutil.which(tool) is None]
    if missing:
        raise NetnsUnavailable(
            f"{', '.join(missing)} not on PATH: install iproute2 / iptables / procps "
            "(apt-get install -y iproute2 iptables procps)"
        )
    if os.geteuid() != 0:
        raise NetnsUnavailable(
            f"network namespace tests need root (CAP_NET_ADMIN, CAP_SYS_ADMIN); uid is "
            f"{os.geteuid()}"
        )
    try:
        with Topology("probe") as topo:
            a = topo.namespace("a")
            b = topo.namespace("b")
            outside, _ = topo.link(a, "10.71.250.1/30", b, "10.71.250.2/30")
            topo.nat(a, outside, symmetric=True)
            with a.entered():
                pass
    except NetnsError as exc:
        raise NetnsUnavailable(f"network namespaces or iptables NAT unusable here: {exc}") \
            from exc
    except OSError as exc:
        raise NetnsUnavailable(f"cannot enter a network namespace (setns): {exc}") from exc


@dataclass
class Netns:
    """One network namespace made by a :class:`Topology`."""

    name: str
    role: str
    interfaces: dict[str, str] = field(default_factory=dict)  # name -> "10.71.1.2/24"

    @property
    def exec_prefix(self) -> tuple[str, ...]:
        """``ip netns exec NAME``: prefix a command to run it in this namespace."""
        return ("ip", "netns", "exec", self.name)

    def run(self, argv: Sequence[str], *, check: bool = True,
            timeout: float = COMMAND_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside this namespace; NetnsError (with its stderr) when it fails."""
        return _run([*self.exec_prefix, *argv], check=check, timeout=timeout)

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``ip -n NAME ARGS``."""
        return _run(["ip", "-n", self.name, *args], check=check)

    def address(self, interface: str) -> str:
        """The IPv4 address (no prefix length) given to ``interface``."""
        return self.interfaces[interface].split("/")[0]

    @property
    def addresses(self) -> list[str]:
        return [value.split("/")[0] for value in self.interfaces.values()]

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        """Switch the calling thread into this namespace for the ``with`` block (sockets
        created meanwhile stay in it for their lifetime); the thread's namespace is restored
        afterwards, or the process aborts (a thread stranded elsewhere must not go on)."""
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            target = os.open(str(NETNS_DIR / self.name), os.O_RDONLY | os.O_CLOEXEC)
            try:
                _setns(target)
            finally:
                os.close(target)
            try:
                yield
            finally:
                try:
                    _setns(own)
                except OSError as exc:  # pragma: no cover - cannot happen as root
                    sys.stderr.write(f"netns: cannot return from {self.name}: {exc}\n")
                    os.abort()
        finally:
            os.close(own)

    def counters(self, table: str = "filter") -> str:
        """``iptables -L -v -n`` of ``table`` in this namespace (for failure messages)."""
        return self.run(["iptables", "-t", table, "-L", "-v", "-n", "-x"], check=False).stdout


class Topology:
    """Namespaces, veth links, routers and NATs of one test; removed by :meth:`close`.

    ``Topology("case2")`` names its namespaces ``anx<PID>x<N>-<role>``; ``tag`` goes into
    :meth:`describe` only (namespace names stay short)."""

    def __init__(self, tag: str = "") -> None:
        self.tag = tag
        self.prefix = f"anx{os.getpid()}x{next(_runs)}-"
        self.namespaces: dict[str, Netns] = {}
        self.links: list[tuple[str, str, str, str]] = []  # ns, if, peer ns, peer if
        self.notes: list[str] = []
        self._links = itertools.count()
        self.closed = False

    # -- building ------------------------------------------------------------------------

    def namespace(self, role: str) -> Netns:
        """A new namespace with ``lo`` up."""
        if not re.fullmatch(r"[a-z0-9]{1,12}", role):
            raise ValueError(f"role {role!r}: 1-12 of a-z 0-9")
        if role in self.namespaces:
            raise ValueError(f"namespace {role!r} exists already")
        ns = Netns(self.prefix + role, role)
        _run(["ip", "netns", "add", ns.name])
        self.namespaces[role] = ns  # registered before anything else can fail: close() sees it
        ns.ip("link", "set", "lo", "up")
        return ns

    def link(self, a: Netns, a_cidr: str, b: Netns, b_cidr: str) -> tuple[str, str]:
        """A veth pair between ``a`` and ``b`` with these addresses (``10.71.1.1/24``), both
        ends up; returns the interface names (``vN`` in both namespaces)."""
        name = f"v{next(self._links)}"
        _run(["ip", "-n", a.name, "link", "add", name, "type", "veth", "peer", "name", name,
              "netns", b.name])
        self.links.append((a.name, name, b.name, name))
        for ns, cidr in ((a, a_cidr), (b, b_cidr)):
            ipaddress.ip_interface(cidr)  # a typo fails here, not in ip's message
            ns.ip("addr", "add", cidr, "dev", name)
            ns.ip("link", "set", name, "up")
            ns.interfaces[name] = cidr
        return name, name

    def default_route(self, ns: Netns, via: str) -> None:
        ns.ip("route", "add", "default", "via", via)

    def route(self, ns: Netns, cidr: str, via: str) -> None:
        ns.ip("route", "add", cidr, "via", via)

    def router(self, ns: Netns) -> None:
        """IPv4 forwarding on in ``ns`` (its own sysctl; the root namespace's is untouched)."""
        ns.run(["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
        ns.run(["sysctl", "-q", "-w", "net.ipv4.conf.all.forwarding=1"])

    def nat(self, ns: Netns, outside: str, *, symmetric: bool) -> None:
        """``ns`` becomes a NAT toward interface ``outside``: forwarding on, MASQUERADE
        (port-preserving) or MASQUERADE --random-fully (symmetric), unsolicited UDP to the
        NAT's own outside address dropped (see the module docstring)."""
        self.router(ns)
        rule = ["iptables", "-t", "nat", "-A", "POSTROUTING", "-o", outside, "-j", "MASQUERADE"]
        if symmetric:
            rule.append("--random-fully")
        ns.run(rule)
        ns.run(["iptables", "-A", "INPUT", "-i", outside, "-p", "udp", "-m", "conntrack",
                "--ctstate", "NEW", "-j", "DROP"])

    def block_udp(self, ns: Netns) -> None:
        """Drop every UDP datagram in and out of ``ns`` except on ``lo`` (a client that can
        only use TCP)."""
        ns.run(["iptables", "-A", "OUTPUT", "-o", "lo", "-j", "ACCEPT"])
        ns.run(["iptables", "-A", "OUTPUT", "-p", "udp", "-j", "DROP"])
        ns.run(["iptables", "-A", "INPUT", "-i", "lo", "-j", "ACCEPT"])
        ns.run(["iptables", "-A", "INPUT", "-p", "udp", "-j", "DROP"])

    # -- inspecting ----------------------------------------------------------------------

    def conntrack(self, ns: Netns) -> str:
        """The NAT's connection table (``/proc/net/nf_conntrack`` when the kernel has it)."""
        return ns.run(["cat", "/proc/net/nf_conntrack"], check=False).stdout

    def describe(self) -> str:
        lines = [f"topology {self.tag} ({self.prefix}*):"]
        for ns in self.namespaces.values():
            addrs = ", ".join(f"{k} {v}" for k, v in ns.interfaces.items())
            lines.append(f"  {ns.name}: {addrs}")
        return "\n".join(lines + [f"  note: {n}" for n in self.notes])

    def pids(self) -> dict[str, list[int]]:
        """Processes still inside each namespace (should be none after the test's peers
        stopped)."""
        out: dict[str, list[int]] = {}
        for ns in self.namespaces.values():
            text = _run(["ip", "netns", "pids", ns.name], check=False).stdout
            pids = [int(p) for p in text.split() if p.isdigit()]
            if pids:
                out[ns.name] = pids
        return out

    # -- removing ------------------------------------------------------------------------

    def close(self) -> None:
        """Delete every namespace this topology made (veth pairs and iptables rules go with
        them). Processes still inside are reported in :attr:`notes`; they keep their
        namespace alive until they exit (stop them by PID first)."""
        if self.closed:
            return
        self.closed = True
        errors: list[str] = []
        for ns in reversed(list(self.namespaces.values())):
            left = _run(["ip", "netns", "pids", ns.name], check=False).stdout.split()
            if left:
                self.notes.append(f"{ns.name} still held processes {' '.join(left)}")
            done = _run(["ip", "netns", "del", ns.name], check=False)
            if done.returncode != 0 and (NETNS_DIR / ns.name).exists():
                errors.append(f"{ns.name}: {done.stderr.strip()}")
        if errors:
            raise NetnsError("could not delete namespaces: " + "; ".join(errors))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
