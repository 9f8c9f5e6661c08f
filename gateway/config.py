"""The gateway's configuration: one TOML file loaded into frozen, validated dataclasses.

Invariants:
- Every key of the file is checked: its type, its range, and that it exists at all (an unknown
  key is a problem, so a typo never passes silently). Every problem is collected before
  `ConfigError` is raised, each naming the file, the dotted key ("trunk[1].uri") and the reason.
- A section or key that is absent takes the default of the contract in DESIGN.md ("Contract:
  configuration"); the dataclass field defaults below are those defaults, and are the only copy.
- Relative paths ([tls] cert and key, [storage] cdr, [rest] callback_ca, [dialplan] files) are
  resolved against the current working directory when the file is loaded, so every `Path` in a
  loaded `Config` is absolute (the gateway is meant to run from its checkout, as `make run` does).
- Listen strings are "udp:HOST:PORT", "tcp:HOST:PORT" or "tls:HOST:PORT" with HOST an IP literal
  (IPv6 in brackets: "udp:[::1]:5060"); port 0 asks the OS for a free port (tests).

The keys beyond DESIGN.md's example, all optional:
- [sip] max_calls (concurrent calls; over it INVITEs get 503, default 10000), retry_after (the
  Retry-After of that 503, seconds, 5), t1/t2/t4 (RFC 3261 timers, seconds, 0.5/4.0/5.0),
  user_agent ("acs-gateway"), tcp_max_buffer (bytes buffered per TCP/TLS connection before it is
  closed, 65536), udp_buffer (socket buffer bytes asked for on SIP UDP sockets, 4194304),
  auth_algorithms (digest algorithms offered when challenging, ["SHA-256", "MD5"]),
  auth_fail_limit / auth_fail_window / auth_block (5 failed authentications from one address
  within 60 s make the gateway ignore it for 300 s),
  session_expires (RFC 4028 session interval asked on outbound legs, 1800 s, 0 = off), min_se
  (smallest interval accepted, 90 s),
  max_message_size (bytes, 65535), no_answer_timeout (seconds an outbound INVITE
  may ring, 120), users (name = "password" of registering SIP users, empty), user_codecs
  (codecs toward registered users, ["opus", "PCMU", "PCMA"]), user_srtp ("optional").
- [media] max_mixed (8) and conference_mode ("mcu" | "sfu").
- [conferences.NAME] settings of the room a dial plan's "conference:NAME" names: pin (digits
  keyed before joining, "" = none), mode ("mcu" | "sfu", default [media] conference_mode),
  callback_uri (where the room's events go, "" = nowhere; checked like callbacks).
- [rest] callback_ca (PEM bundle trusted for webhooks and callbacks, "" = none).
- [turn] advertise (TURN addresses put in iceServers instead of [turn] listen; hostnames allowed),
  user_quota (allocations at once per user, time-limited usernames counted by their user part,
  486 beyond; 0 = no limit, the default), total_quota (allocations at once in all, 0 = as many as
  relay_port_range holds), bandwidth (bytes/s per allocation and direction, excess dropped;
  0 = no cap, else at least 1500), max_lifetime (seconds an allocation may ask for, 600-86400,
  3600), nonce_lifetime (seconds before 438 Stale Nonce, 30-86400, 3600), max_permissions (peer
  addresses per allocation, 256), max_tcp_connections (TCP clients at once, 1024),
  tcp_max_buffer (unsent bytes per TCP client before what is relayed to it is dropped, 262144),
  tcp_idle_timeout (seconds a TCP client may stay connected without a live allocation, before
  its first one or after it ended, 5-3600, 60; checked every quarter of it, at most 5 s).
  [turn] listen takes udp: and tcp: addresses only.
- [[trunk]] options_timeout (seconds, 2.0), options_fail_after (2), options_ok_after (1),
  max_calls (concurrent calls to and from the trunk, 0 = no limit), max_cps (new calls per
  second to and from the trunk, 0 = no limit); over either, calls get 503 with Retry-After.
- [log] level ("debug" | "info" | "warning" | "error" | "critical", default "info").
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Literal, TypeAlias
from urllib.parse import urlsplit

from gateway.errors import ConfigError, Problem
from gateway.tomlread import MISSING, TomlReader, read_toml, type_name

__all__ = [
    "KNOWN_CODECS",
    "Config",
    "ConfigError",
    "DialplanConfig",
    "HostPort",
    "IPNetwork",
    "ListenAddr",
    "LogConfig",
    "MediaConfig",
    "Problem",
    "RestConfig",
    "SipConfig",
    "StorageConfig",
    "TlsConfig",
    "Trunk",
    "TurnConfig",
    "default_config",
    "load_config",
    "parse_config",
    "parse_listen",
    "trunk_for_source",
]

Transport: TypeAlias = Literal["udp", "tcp", "tls"]
SrtpMode: TypeAlias = Literal["off", "optional", "mandatory"]
ConferenceMode: TypeAlias = Literal["mcu", "sfu"]
IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network

_TRANSPORTS: Final[dict[str, Transport]] = {"udp": "udp", "tcp": "tcp", "tls": "tls"}
_SRTP_MODES: Final[dict[str, SrtpMode]] = {
    "off": "off",
    "optional": "optional",
    "mandatory": "mandatory",
}
_CONFERENCE_MODES: Final[dict[str, ConferenceMode]] = {"mcu": "mcu", "sfu": "sfu"}
LOG_LEVELS: Final = ("debug", "info", "warning", "error", "critical")

#: Codec names a trunk may list, keyed by their upper-case form (SDP names are matched
#: case-insensitively); the value is the spelling the gateway uses.
KNOWN_CODECS: Final[Mapping[str, str]] = MappingProxyType(
    {"PCMU": "PCMU", "PCMA": "PCMA", "OPUS": "opus", "G722": "G722"}
)

_TRUNK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_SIP_USER = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=-]+")  # RFC 3261 section 25.1 unreserved/user


# --- the configuration ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ListenAddr:
    """A socket to listen on: "udp:127.0.0.1:5060" is ListenAddr("udp", "127.0.0.1", 5060)."""

    transport: Transport
    host: str  # an IP literal (a hostname only in [turn] advertise); IPv6 without brackets
    port: int

    def __str__(self) -> str:
        return f"{self.transport}:{_bracket(self.host)}:{self.port}"


@dataclass(frozen=True, slots=True)
class HostPort:
    """An address without transport: [rest] listen, and "host:port" entries of inbound_from."""

    host: str  # an IP literal in its canonical form, IPv6 without brackets
    port: int

    def __str__(self) -> str:
        return f"{_bracket(self.host)}:{self.port}"


@dataclass(frozen=True, slots=True)
class SipConfig:
    """[sip]: listen sockets, domain, limits and RFC 3261 timers (seconds)."""

    listen: tuple[ListenAddr, ...] = (
        ListenAddr("udp", "127.0.0.1", 5060),
        ListenAddr("tcp", "127.0.0.1", 5060),
        ListenAddr("tls", "127.0.0.1", 5061),
    )
    domain: str = "gateway.local"
    max_calls: int = 10000
    retry_after: int = 5
    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    user_agent: str = "acs-gateway"
    tcp_max_buffer: int = 65536
    udp_buffer: int = 4194304  # SO_RCVBUF/SO_SNDBUF asked for on SIP UDP sockets
    auth_algorithms: tuple[str, ...] = ("SHA-256", "MD5")  # offered in challenges, in order
    session_expires: int = 1800  # RFC 4028 session interval asked on outbound legs; 0 = off
    min_se: int = 90  # the smallest session interval accepted (RFC 4028 says >= 90)
    auth_fail_limit: int = 5  # failed authentications from one address within the window...
    auth_fail_window: float = 60.0
    auth_block: float = 300.0  # ...make the gateway ignore that address for this long
    max_message_size: int = 65535
    no_answer_timeout: float = 120.0
    users: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    user_codecs: tuple[str, ...] = ("opus", "PCMU", "PCMA")  # toward registered users
    user_srtp: SrtpMode = "optional"


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """[tls]: certificate and key (PEM) for SIP TLS and HTTPS; created self-signed if missing."""

    cert: Path = Path("var/tls/gateway.crt")
    key: Path = Path("var/tls/gateway.key")


@dataclass(frozen=True, slots=True)
class MediaConfig:
    """[media]: the address put in SDP, the RTP port range, conference settings."""

    address: str = "127.0.0.1"
    port_range: tuple[int, int] = (20000, 29999)
    max_mixed: int = 8
    conference_mode: ConferenceMode = "mcu"
    anchor: bool = True  # false: SDP passes through untouched, media flows peer to peer
    timeout: float = 60.0  # seconds without RTP from a sending peer that end the call; 0 = off
    rtcp_interval: int = 5  # seconds between the gateway's RTCP reports on each leg
    jitter_min: float = 0.02  # transcoder jitter buffer playout delay bounds (seconds)
    jitter_max: float = 0.2
    opus_bitrate: int = 32000  # Opus encoder bitrate, b/s (a peer's maxaveragebitrate caps it)
    opus_complexity: int = 5  # Opus encoder complexity 0..10 (CPU against quality)


@dataclass(frozen=True, slots=True)
class RestConfig:
    """[rest]: the HTTPS Call Automation endpoint."""

    listen: HostPort = HostPort("127.0.0.1", 8443)
    access_key: str = ""  # base64; "" = generated into var/ on first need (gateway.rest.keys)
    incoming_call_webhooks: tuple[str, ...] = ("https://127.0.0.1:9443/incoming",)
    allow_insecure_callbacks: bool = False
    callback_ca: Path | None = None
    incoming_call_timeout: float = 30.0  # an unanswered IncomingCall releases the caller (480)
    media_dir: Path = Path("media")  # root of file:// play sources
    recordings_dir: Path = Path("var/recordings")  # where recordings are written
    max_app_calls: int = 1000  # REST-controlled calls at once (create/answer beyond: 503)


@dataclass(frozen=True, slots=True)
class TurnConfig:
    """[turn]: the STUN/TURN server."""

    enabled: bool = True
    listen: tuple[ListenAddr, ...] = (
        ListenAddr("udp", "127.0.0.1", 3478),
        ListenAddr("tcp", "127.0.0.1", 3478),
    )
    realm: str = "gateway.local"
    relay_address: str = "127.0.0.1"
    relay_port_range: tuple[int, int] = (40000, 49999)
    auth_secret: str = ""
    users: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    allowed_peers: tuple[IPNetwork, ...] = ()
    advertise: tuple[ListenAddr, ...] = ()
    user_quota: int = 0  # allocations at once per user (486 beyond); 0 = no limit
    total_quota: int = 0  # allocations at once in all (486 beyond); 0 = the relay ports
    bandwidth: int = 0  # bytes/s per allocation, each direction (excess dropped); 0 = no cap
    max_lifetime: int = 3600  # seconds an allocation may ask for (RFC 8656 section 7.2)
    nonce_lifetime: int = 3600  # seconds a nonce stays valid before 438 Stale Nonce
    max_permissions: int = 256  # peer addresses per allocation (508 beyond)
    max_tcp_connections: int = 1024  # TCP client connections at once (more are closed)
    tcp_max_buffer: int = 262144  # unsent bytes per TCP client before its data is dropped
    tcp_idle_timeout: int = 60  # seconds a TCP client may stay connected without an allocation


@dataclass(frozen=True, slots=True)
class ConferenceConfig:
    """[conferences.NAME]: one room's settings (rooms without a table take the defaults)."""

    name: str
    pin: str = ""
    mode: ConferenceMode | None = None  # None: [media] conference_mode
    callback_uri: str = ""


@dataclass(frozen=True, slots=True)
class StorageConfig:
    """[storage]: where CDRs go (SQLite)."""

    cdr: Path = Path("var/cdr.sqlite3")


@dataclass(frozen=True, slots=True)
class DialplanConfig:
    """[dialplan]: dial plan files, merged in order (see gateway.dialplan)."""

    files: tuple[Path, ...] = (Path("dialplans/default.toml"),)


@dataclass(frozen=True, slots=True)
class ObserveConfig:
    """[observe]: the Prometheus metrics endpoint (gateway.observe.metrics)."""

    metrics_listen: HostPort | None = None  # plain HTTP GET /metrics here; None = off


@dataclass(frozen=True, slots=True)
class LogConfig:
    """[log]: level is one of LOG_LEVELS."""

    level: str = "info"


@dataclass(frozen=True, slots=True)
class Trunk:
    """One [[trunk]]: a carrier the gateway sends calls to and accepts calls from."""

    name: str
    uri: str  # as written, e.g. "sip:127.0.0.1:5070;transport=udp"
    host: str  # the uri's host (IPv6 without brackets)
    port: int  # the uri's port, else 5060 (5061 for tls)
    transport: Transport  # the uri's transport= parameter, else udp (tls for sips:)
    host_ip: IPAddress | None = None  # `host` when it is an IP literal
    inbound_from: tuple[IPNetwork | HostPort, ...] = ()  # empty: no inbound calls
    username: str = ""
    password: str = ""
    register: bool = False
    options_interval: float = 30.0  # seconds between OPTIONS probes; 0 = off
    options_timeout: float = 2.0
    options_fail_after: int = 2
    options_ok_after: int = 1
    codecs: tuple[str, ...] = ("PCMU", "PCMA")
    srtp: SrtpMode = "off"
    dtmf_inband: bool = False  # detect DTMF tones in this trunk's G.711 audio (Goertzel)
    max_calls: int = 0  # concurrent calls to and from this trunk; 0 = no limit
    max_cps: float = 0.0  # new calls per second to and from this trunk; 0 = no limit
    register_expires: int = 600  # seconds asked for in REGISTER (register = true)
    contact: str = ""  # a registered user's binding: the Request-URI of calls to it

    def accepts(self, ip: IPAddress, port: int) -> bool:
        """Whether a request from ip:port is accepted as coming from this trunk."""
        for entry in self.inbound_from:
            if isinstance(entry, HostPort):
                if entry.port == port and entry.host == str(ip):
                    return True
            elif ip in entry:
                return True
        return False


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration; `path` is the file it was loaded from (None for defaults)."""

    path: Path | None = None
    sip: SipConfig = SipConfig()
    tls: TlsConfig = TlsConfig()
    media: MediaConfig = MediaConfig()
    rest: RestConfig = RestConfig()
    turn: TurnConfig = TurnConfig()
    storage: StorageConfig = StorageConfig()
    dialplan: DialplanConfig = DialplanConfig()
    trunks: tuple[Trunk, ...] = ()
    log: LogConfig = LogConfig()
    observe: ObserveConfig = ObserveConfig()
    conferences: Mapping[str, ConferenceConfig] = field(
        default_factory=lambda: MappingProxyType({}))

    def conference(self, name: str) -> ConferenceConfig:
        """The settings of room ``name`` (the defaults when it has no table)."""
        return self.conferences.get(name) or ConferenceConfig(name)

    @property
    def trunk_names(self) -> frozenset[str]:
        return frozenset(trunk.name for trunk in self.trunks)

    def trunk(self, name: str) -> Trunk | None:
        """The trunk called `name`, or None."""
        for trunk in self.trunks:
            if trunk.name == name:
                return trunk
        return None


# --- public entry points ----------------------------------------------------------------------


def load_config(path: str | os.PathLike[str]) -> Config:
    """Load and validate a config file; raise ConfigError listing every problem found."""
    data, problems = read_toml(path)
    if data is None:
        raise ConfigError(problems)
    return parse_config(data, str(path), Path(os.path.abspath(path)))


def default_config() -> Config:
    """The configuration of an empty file (relative paths resolved against the cwd)."""
    return parse_config({}, "(defaults)")


def parse_config(data: Mapping[str, Any], file: str, path: Path | None = None) -> Config:
    """Validate already-parsed TOML; `file` names it in problems."""
    problems: list[Problem] = []
    top = TomlReader(problems, file, data)
    config = Config(
        path=path,
        sip=_read_sip(top.section("sip")),
        tls=_read_tls(top.section("tls")),
        media=_read_media(top.section("media")),
        rest=_read_rest(top.section("rest")),
        turn=_read_turn(top.section("turn")),
        storage=_read_storage(top.section("storage")),
        dialplan=_read_dialplan(top.section("dialplan")),
        trunks=_read_trunks(top),
        log=LogConfig(level=_read_log_level(top.section("log"))),
        observe=_read_observe(top.section("observe")),
        conferences=MappingProxyType({}),
    )
    rest = top.section("rest")  # already read: only its callback policy is needed here
    insecure = rest.data.get("allow_insecure_callbacks") is True
    config = dataclasses.replace(config, conferences=_read_conferences(
        top.section("conferences"), insecure))
    top.finish()
    _check_socket_clashes(config, problems, file)
    if problems:
        raise ConfigError(problems)
    return config


def trunk_for_source(config: Config, host: str, port: int) -> Trunk | None:
    """The trunk an inbound request from host:port belongs to, or None.

    DESIGN.md "Trunk of an inbound request": trunks whose inbound_from accepts the source
    match; of several, the one whose uri host:port is the source wins, else the first in file
    order. An IPv4-mapped IPv6 source (::ffff:a.b.c.d) counts as its IPv4 address.
    """
    try:
        ip = ipaddress.ip_address(host[1:-1] if host.startswith("[") else host)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    first: Trunk | None = None
    for trunk in config.trunks:
        if trunk.accepts(ip, port):
            if trunk.host_ip == ip and trunk.port == port:
                return trunk
            if first is None:
                first = trunk
    return first


def parse_listen(text: str, *, allow_hostname: bool = False) -> ListenAddr:
    """Parse "udp:HOST:PORT" (IPv6 "udp:[::1]:5060"); raise ValueError with the reason."""
    transport, sep, rest = text.partition(":")
    if not sep or transport.lower() not in _TRANSPORTS:
        raise ValueError(
            f"expected TRANSPORT:HOST:PORT with TRANSPORT udp, tcp or tls, got {text!r}"
        )
    host, port = _split_host_port(rest, allow_hostname=allow_hostname)
    return ListenAddr(_TRANSPORTS[transport.lower()], host, port)


def _port_range(r: TomlReader, key: str, default: tuple[int, int]) -> tuple[int, int]:
    value = r.raw(key)
    if value is MISSING:
        return default
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        r.problem(r.key(key), "expected [FIRST, LAST], two integer ports")
        return default
    first, last = value
    if not (1 <= first <= 65535 and 1 <= last <= 65535):
        r.problem(r.key(key), "ports must be 1..65535")
        return default
    if first > last:
        r.problem(r.key(key), "FIRST must not exceed LAST")
        return default
    return (first, last)


def _listens(
    r: TomlReader, key: str, default: tuple[ListenAddr, ...], *, allow_hostname: bool = False
) -> tuple[ListenAddr, ...]:
    items = r.array(key)
    if items is None:
        return default
    out: list[ListenAddr] = []
    for i, item in enumerate(items):
        where = f"{r.key(key)}[{i}]"
        if not isinstance(item, str):
            r.problem(where, f"expected a string, got {type_name(item)}")
            continue
        try:
            addr = parse_listen(item, allow_hostname=allow_hostname)
        except ValueError as exc:
            r.problem(where, str(exc))
            continue
        if addr in out:
            r.problem(where, f"duplicate of {r.key(key)}[{out.index(addr)}]")
            continue
        out.append(addr)
    return tuple(out)


def _ip_address(r: TomlReader, key: str, default: str) -> str:
    text = r.string(key, default)
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        r.problem(r.key(key), f"expected an IP address, got {text!r}")
        return default


# --- sections ---------------------------------------------------------------------------------


def _read_sip(r: TomlReader) -> SipConfig:
    d = SipConfig()
    listen = _listens(r, "listen", d.listen)
    domain = r.string("domain", d.domain)
    if not domain:
        r.problem(r.key("domain"), "must not be empty")
    max_calls = r.integer("max_calls", d.max_calls, minimum=1)
    retry_after = r.integer("retry_after", d.retry_after)
    t1 = r.number("t1", d.t1, positive=True)
    t2 = r.number("t2", d.t2, positive=True)
    if t2 < t1:
        r.problem(r.key("t2"), f"must be at least sip.t1 ({t1:g})")
    t4 = r.number("t4", d.t4, positive=True)
    user_agent = r.string("user_agent", d.user_agent)
    if any(ord(c) < 32 for c in user_agent):
        r.problem(r.key("user_agent"), "must not contain control characters")
    max_message_size = r.integer("max_message_size", d.max_message_size, minimum=1024)
    tcp_max_buffer = r.integer("tcp_max_buffer", d.tcp_max_buffer, minimum=1024)
    if tcp_max_buffer < max_message_size:
        r.problem(
            r.key("tcp_max_buffer"), f"must be at least sip.max_message_size ({max_message_size})"
        )
    no_answer_timeout = r.number("no_answer_timeout", d.no_answer_timeout, positive=True)
    udp_buffer = r.integer("udp_buffer", d.udp_buffer, minimum=65536)
    auth_algorithms: list[str] = []
    for i, text in enumerate(r.strings("auth_algorithms", d.auth_algorithms)):
        algorithm = {"SHA-256": "SHA-256", "MD5": "MD5"}.get(text.upper())
        if algorithm is None:
            r.problem(f"{r.key('auth_algorithms')}[{i}]", f"unknown algorithm {text!r} "
                      "(SHA-256 or MD5)")
        elif algorithm not in auth_algorithms:
            auth_algorithms.append(algorithm)
    if r.has("auth_algorithms") and not auth_algorithms:
        r.problem(r.key("auth_algorithms"), "must name at least one algorithm")
    auth_fail_limit = r.integer("auth_fail_limit", d.auth_fail_limit, minimum=1)
    session_expires = r.integer("session_expires", d.session_expires, minimum=0)
    min_se = r.integer("min_se", d.min_se, minimum=1)
    if session_expires and session_expires < min_se:
        r.problem(r.key("session_expires"), f"must be 0 (off) or at least sip.min_se ({min_se})")
    auth_fail_window = r.number("auth_fail_window", d.auth_fail_window, positive=True)
    auth_block = r.number("auth_block", d.auth_block)
    users = r.string_table("users", name_pattern=_SIP_USER)
    user_codecs = _codec_list(r, "user_codecs", d.user_codecs)
    user_srtp = r.choice("user_srtp", _SRTP_MODES, d.user_srtp)
    r.finish()
    return SipConfig(
        listen=listen,
        domain=domain,
        max_calls=max_calls,
        retry_after=retry_after,
        t1=t1,
        t2=t2,
        t4=t4,
        user_agent=user_agent,
        tcp_max_buffer=tcp_max_buffer,
        udp_buffer=udp_buffer,
        auth_algorithms=tuple(auth_algorithms) or d.auth_algorithms,
        auth_fail_limit=auth_fail_limit,
        session_expires=session_expires,
        min_se=min_se,
        auth_fail_window=auth_fail_window,
        auth_block=auth_block,
        max_message_size=max_message_size,
        no_answer_timeout=no_answer_timeout,
        users=MappingProxyType(users),
        user_codecs=tuple(user_codecs) or d.user_codecs,
        user_srtp=user_srtp,
    )


def _codec_list(r: TomlReader, key: str, default: tuple[str, ...]) -> list[str]:
    codecs: list[str] = []
    for i, text in enumerate(r.strings(key, default)):
        codec = KNOWN_CODECS.get(text.upper())
        where = f"{r.key(key)}[{i}]"
        if codec is None:
            r.problem(where, f"unknown codec {text!r} (known: {', '.join(KNOWN_CODECS.values())})")
        elif codec in codecs:
            r.problem(where, f"duplicate codec {text!r}")
        else:
            codecs.append(codec)
    if r.has(key) and not codecs and isinstance(r.data[key], list):
        r.problem(r.key(key), "must name at least one codec")
    return codecs


def _read_tls(r: TomlReader) -> TlsConfig:
    d = TlsConfig()
    config = TlsConfig(cert=r.path("cert", d.cert), key=r.path("key", d.key))
    r.finish()
    return config


def _read_media(r: TomlReader) -> MediaConfig:
    d = MediaConfig()
    config = MediaConfig(
        address=_ip_address(r, "address", d.address),
        port_range=_port_range(r, "port_range", d.port_range),
        max_mixed=r.integer("max_mixed", d.max_mixed, minimum=2),
        conference_mode=r.choice("conference_mode", _CONFERENCE_MODES, d.conference_mode),
        anchor=r.boolean("anchor", d.anchor),
        timeout=r.number("timeout", d.timeout, minimum=0),
        rtcp_interval=r.integer("rtcp_interval", d.rtcp_interval, minimum=1),
        jitter_min=r.number("jitter_min", d.jitter_min, minimum=0),
        jitter_max=r.number("jitter_max", d.jitter_max, minimum=0.02),
        opus_bitrate=r.integer("opus_bitrate", d.opus_bitrate, minimum=6000, maximum=510000),
        opus_complexity=r.integer("opus_complexity", d.opus_complexity, maximum=10),
    )
    if config.jitter_min > config.jitter_max:
        r.problem(r.key("jitter_min"), "must not be larger than jitter_max")
    r.finish()
    return config


def _host_port(r: TomlReader, key: str, text: str) -> HostPort | None:
    """``text`` (key ``key``) as a listen address; None, with the problem recorded, if not."""
    try:
        return HostPort(*_split_host_port(text, allow_hostname=False))
    except ValueError as exc:
        r.problem(r.key(key), str(exc))
        return None


def _read_observe(r: TomlReader) -> ObserveConfig:
    text = r.string("metrics_listen", "")
    listen = _host_port(r, "metrics_listen", text) if text else None
    r.finish()
    return ObserveConfig(metrics_listen=listen)


def _read_rest(r: TomlReader) -> RestConfig:
    d = RestConfig()
    listen = d.listen
    text = r.string("listen", str(d.listen))
    if r.has("listen") and isinstance(r.data["listen"], str):
        listen = _host_port(r, "listen", text) or d.listen
    access_key = r.string("access_key", d.access_key)
    if access_key and not _is_base64(access_key):
        r.problem(r.key("access_key"), "not valid base64")
    insecure = r.boolean("allow_insecure_callbacks", d.allow_insecure_callbacks)
    webhooks = r.strings("incoming_call_webhooks", d.incoming_call_webhooks)
    for i, url in enumerate(webhooks):
        reason = _url_problem(url, insecure)
        if reason:
            r.problem(f"{r.key('incoming_call_webhooks')}[{i}]", reason)
    ca_text = r.string("callback_ca", "")
    callback_ca = _absolute(ca_text) if ca_text else None
    if callback_ca is not None and not callback_ca.is_file():
        r.problem(r.key("callback_ca"), f"no such file: {callback_ca}")
    timeout = r.number("incoming_call_timeout", d.incoming_call_timeout, positive=True)
    media_dir = _absolute(r.string("media_dir", str(d.media_dir)) or str(d.media_dir))
    recordings_dir = _absolute(r.string("recordings_dir", str(d.recordings_dir))
                               or str(d.recordings_dir))
    max_app_calls = r.integer("max_app_calls", d.max_app_calls, minimum=1)
    r.finish()
    return RestConfig(
        listen=listen,
        access_key=access_key,
        incoming_call_webhooks=webhooks,
        allow_insecure_callbacks=insecure,
        callback_ca=callback_ca,
        incoming_call_timeout=timeout,
        media_dir=media_dir,
        recordings_dir=recordings_dir,
        max_app_calls=max_app_calls,
    )


def _read_turn(r: TomlReader) -> TurnConfig:
    d = TurnConfig()
    enabled = r.boolean("enabled", d.enabled)
    listen = _listens(r, "listen", d.listen)
    realm = r.string("realm", d.realm)
    if not realm:
        r.problem(r.key("realm"), "must not be empty")
    relay_address = _ip_address(r, "relay_address", d.relay_address)
    relay_port_range = _port_range(r, "relay_port_range", d.relay_port_range)
    auth_secret = r.string("auth_secret", d.auth_secret)
    users = r.string_table("users")
    peers: list[IPNetwork] = []
    for i, text in enumerate(r.strings("allowed_peers", ())):
        try:
            peers.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            r.problem(f"{r.key('allowed_peers')}[{i}]", f"expected a CIDR, got {text!r}")
    advertise = _listens(r, "advertise", d.advertise, allow_hostname=True)
    for i, addr in enumerate(listen):
        if addr.transport == "tls":
            r.problem(f"{r.key('listen')}[{i}]", "TURN listens on udp or tcp, not tls")
    user_quota = r.integer("user_quota", d.user_quota, maximum=1_000_000)
    total_quota = r.integer("total_quota", d.total_quota, maximum=1_000_000)
    bandwidth = r.integer("bandwidth", d.bandwidth, maximum=10**10)
    if 0 < bandwidth < 1500:
        r.problem(r.key("bandwidth"), "must be 0 (no cap) or at least 1500 (bytes/s)")
    max_lifetime = r.integer("max_lifetime", d.max_lifetime, minimum=600, maximum=86400)
    nonce_lifetime = r.integer("nonce_lifetime", d.nonce_lifetime, minimum=30, maximum=86400)
    max_permissions = r.integer("max_permissions", d.max_permissions, minimum=1, maximum=4096)
    max_tcp = r.integer("max_tcp_connections", d.max_tcp_connections, minimum=1,
                        maximum=1_000_000)
    tcp_max_buffer = r.integer("tcp_max_buffer", d.tcp_max_buffer, minimum=4096,
                               maximum=64 * 1024 * 1024)
    tcp_idle_timeout = r.integer("tcp_idle_timeout", d.tcp_idle_timeout, minimum=5, maximum=3600)
    r.finish()
    return TurnConfig(
        enabled=enabled,
        listen=listen,
        realm=realm,
        relay_address=relay_address,
        relay_port_range=relay_port_range,
        auth_secret=auth_secret,
        users=MappingProxyType(users),
        allowed_peers=tuple(peers),
        advertise=advertise,
        user_quota=user_quota,
        total_quota=total_quota,
        bandwidth=bandwidth,
        max_lifetime=max_lifetime,
        nonce_lifetime=nonce_lifetime,
        max_permissions=max_permissions,
        max_tcp_connections=max_tcp,
        tcp_max_buffer=tcp_max_buffer,
        tcp_idle_timeout=tcp_idle_timeout,
    )


ROOM_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")


def _read_conferences(r: TomlReader, insecure: bool) -> Mapping[str, ConferenceConfig]:
    rooms: dict[str, ConferenceConfig] = {}
    for name in list(r.data):
        room = r.section(name)
        if not ROOM_NAME.fullmatch(name):
            r.problem(r.key(name), "a room name is 1-64 of A-Z a-z 0-9 . _ -")
            continue
        pin = room.string("pin", "")
        if pin and not (pin.isdigit() and pin.isascii() and len(pin) <= 16):
            room.problem(room.key("pin"), "must be 1-16 digits 0-9")
        mode = room.choice("mode", _CONFERENCE_MODES, None)
        callback = room.string("callback_uri", "")
        if callback:
            reason = _url_problem(callback, insecure)
            if reason:
                room.problem(room.key("callback_uri"), reason)
        room.finish()
        rooms[name] = ConferenceConfig(name, pin, mode, callback)
    return MappingProxyType(rooms)


def _read_storage(r: TomlReader) -> StorageConfig:
    config = StorageConfig(cdr=r.path("cdr", StorageConfig().cdr))
    r.finish()
    return config


def _read_dialplan(r: TomlReader) -> DialplanConfig:
    d = DialplanConfig()
    texts = r.strings("files", tuple(str(p) for p in d.files))
    files: list[Path] = []
    for i, text in enumerate(texts):
        if text:
            files.append(_absolute(text))
        else:
            r.problem(f"{r.key('files')}[{i}]", "must not be empty")
    r.finish()
    return DialplanConfig(files=tuple(files))


def _read_log_level(r: TomlReader) -> str:
    level = r.choice("level", {name: name for name in LOG_LEVELS}, LogConfig().level)
    r.finish()
    return level


_TRUNK_DEFAULTS: Final[Mapping[str, Any]] = MappingProxyType(
    {f.name: f.default for f in dataclasses.fields(Trunk) if f.default is not dataclasses.MISSING}
)


def _read_trunks(top: TomlReader) -> tuple[Trunk, ...]:
    value = top.raw("trunk")
    if value is MISSING:
        return ()
    if not isinstance(value, list):
        top.problem("trunk", f"expected an array of tables ([[trunk]]), got {type_name(value)}")
        return ()
    trunks: list[Trunk] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            top.problem(f"trunk[{i}]", f"expected a table, got {type_name(item)}")
            continue
        trunk = _read_trunk(TomlReader(top.problems, top.file, item, f"trunk[{i}]"))
        name = item.get("name")
        if isinstance(name, str) and name:
            if name in seen:
                top.problem(f"trunk[{i}].name", f"duplicate trunk name (also trunk[{seen[name]}])")
                continue
            seen[name] = i
        if trunk is not None:
            trunks.append(trunk)
    return tuple(trunks)


def _read_trunk(r: TomlReader) -> Trunk | None:
    ok = True
    name = r.string("name", "", required=True)
    if r.has("name") and isinstance(r.data["name"], str) and not _TRUNK_NAME.fullmatch(name):
        r.problem(r.key("name"), "must be letters, digits, '.', '_' or '-'")
        ok = False
    uri = r.string("uri", "", required=True)
    host, port, transport = "", 0, _TRANSPORTS["udp"]
    if r.has("uri") and isinstance(r.data["uri"], str):
        try:
            host, port, transport = _parse_trunk_uri(uri)
        except ValueError as exc:
            r.problem(r.key("uri"), str(exc))
            ok = False
    inbound_from: list[IPNetwork | HostPort] = []
    for i, text in enumerate(r.strings("inbound_from", ())):
        try:
            inbound_from.append(_parse_source(text))
        except ValueError as exc:
            r.problem(f"{r.key('inbound_from')}[{i}]", str(exc))
    codecs = _codec_list(r, "codecs", _TRUNK_DEFAULTS["codecs"])
    trunk = Trunk(
        name=name,
        uri=uri,
        host=host,
        port=port,
        transport=transport,
        host_ip=_ip_or_none(host),
        inbound_from=tuple(inbound_from),
        username=r.string("username", _TRUNK_DEFAULTS["username"]),
        password=r.string("password", _TRUNK_DEFAULTS["password"]),
        register=r.boolean("register", _TRUNK_DEFAULTS["register"]),
        options_interval=r.number("options_interval", _TRUNK_DEFAULTS["options_interval"]),
        options_timeout=r.number(
            "options_timeout", _TRUNK_DEFAULTS["options_timeout"], positive=True
        ),
        options_fail_after=r.integer(
            "options_fail_after", _TRUNK_DEFAULTS["options_fail_after"], minimum=1
        ),
        options_ok_after=r.integer(
            "options_ok_after", _TRUNK_DEFAULTS["options_ok_after"], minimum=1
        ),
        codecs=tuple(codecs),
        srtp=r.choice("srtp", _SRTP_MODES, _TRUNK_DEFAULTS["srtp"]),
        dtmf_inband=r.boolean("dtmf_inband", _TRUNK_DEFAULTS["dtmf_inband"]),
        max_calls=r.integer("max_calls", _TRUNK_DEFAULTS["max_calls"], minimum=0),
        max_cps=r.number("max_cps", _TRUNK_DEFAULTS["max_cps"]),
        register_expires=r.integer(
            "register_expires", _TRUNK_DEFAULTS["register_expires"], minimum=1
        ),
    )

    if trunk.register and not trunk.username:
        r.problem(r.key("register"), "needs a username to register with")
    r.finish()
    return trunk if ok and name and uri else None


def _check_socket_clashes(config: Config, problems: list[Problem], file: str) -> None:
    """Two listeners on one socket, or overlapping port ranges on one address, are problems."""
    bound: dict[tuple[str, str, int], str] = {}
    sockets: list[tuple[str, ListenAddr | HostPort]] = [
        *((f"sip.listen[{i}]", a) for i, a in enumerate(config.sip.listen)),
        *((f"turn.listen[{i}]", a) for i, a in enumerate(config.turn.listen)),
        ("rest.listen", config.rest.listen),
        *((("observe.metrics_listen", config.observe.metrics_listen),)
          if config.observe.metrics_listen is not None else ()),
    ]
    for key, addr in sockets:
        kind = "udp" if isinstance(addr, ListenAddr) and addr.transport == "udp" else "tcp"
        if addr.port == 0:
            continue
        slot = (kind, addr.host, addr.port)
        clash = None
        for (k, host, port), other in bound.items():
            why = _overlap(host, addr.host) if (k, port) == (kind, addr.port) else None
            if why is not None:
                clash = f"same {kind} socket as {other}" + (f" ({why})" if why else "")
                break
        if clash is not None:
            problems.append(Problem(file, key, clash))
        else:
            bound[slot] = key
    media, turn = config.media, config.turn
    if (
        _overlap(media.address, turn.relay_address) is not None
        and media.port_range[0] <= turn.relay_port_range[1]
        and turn.relay_port_range[0] <= media.port_range[1]
    ):
        problems.append(
            Problem(file, "turn.relay_port_range", f"overlaps media.port_range on {media.address}")
        )


def _overlap(a: str, b: str) -> str | None:
    """Two listen hosts that one port cannot serve twice: the same address (an IPv4-mapped
    IPv6 spelling is its IPv4 address), or a wildcard (0.0.0.0 covers IPv4; :: covers IPv6
    and IPv4 too, as Linux binds it dual-stack unless net.ipv6.bindv6only = 1) and an
    address it covers. None when they do not overlap, else why (empty: the same text)."""
    if a == b:
        return ""
    try:
        first, second = (_unmapped(ipaddress.ip_address(host)) for host in (a, b))
    except ValueError:
        return None
    if first == second:
        return "the same address"
    for wild, other in ((first, second), (second, first)):
        if wild.is_unspecified and (wild.version == other.version or wild.version == 6):
            return "a wildcard address covers the other"
    return None


def _unmapped(address: ipaddress.IPv4Address | ipaddress.IPv6Address
              ) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    return mapped if mapped is not None else address


# --- small parsers ----------------------------------------------------------------------------


def _split_host_port(text: str, *, allow_hostname: bool) -> tuple[str, int]:
    """Split "HOST:PORT" or "[V6]:PORT" into (host, port); raise ValueError with the reason."""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"expected [IPV6]:PORT, got {text!r}")
        port_text = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"bad IPv6 address {host!r}") from None
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise ValueError(f"expected HOST:PORT, got {text!r}")
        if ":" in host:
            raise ValueError(f"an IPv6 host must be in brackets, as [::1]:5060, got {text!r}")
        if _ip_or_none(host) is None:
            if not allow_hostname:
                raise ValueError(f"expected an IP address as host, got {host!r}")
            if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?", host):
                raise ValueError(f"bad host name {host!r}")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"bad port {port_text!r} (expected 0..65535)")
    ip = _ip_or_none(host)
    return (str(ip) if ip is not None else host), int(port_text)


def _parse_trunk_uri(uri: str) -> tuple[str, int, Transport]:
    """Host, port and transport of a trunk's "sip:[user@]host[:port][;params]" URI."""
    scheme, sep, rest = uri.partition(":")
    scheme = scheme.lower()
    if not sep or scheme not in ("sip", "sips"):
        raise ValueError(f"expected a sip: or sips: URI, got {uri!r}")
    if "?" in rest:
        raise ValueError("URI headers ('?') are not allowed in a trunk uri")
    hostport, *params = rest.split(";")
    transport: Transport = "tls" if scheme == "sips" else "udp"
    for param in params:
        pname, _, pvalue = param.partition("=")
        if pname.lower() == "transport":
            if pvalue.lower() not in _TRANSPORTS:
                raise ValueError(f"unsupported transport {pvalue!r} (expected udp, tcp or tls)")
            transport = _TRANSPORTS[pvalue.lower()]
    if scheme == "sips" and transport != "tls":
        raise ValueError(f"a sips: URI needs transport tls, not {transport}")
    hostport = hostport.rpartition("@")[2]
    if not hostport:
        raise ValueError(f"no host in {uri!r}")
    default_port = 5061 if transport == "tls" else 5060
    if (hostport.startswith("[") and hostport.endswith("]")) or ":" not in hostport:
        hostport = f"{hostport}:{default_port}"
    host, port = _split_host_port(hostport, allow_hostname=True)
    if port == 0:
        raise ValueError("port 0 is not a destination")
    return host, port, transport


def _parse_source(text: str) -> IPNetwork | HostPort:
    """An inbound_from entry: a CIDR (or bare address) or "HOST:PORT" with HOST an IP."""
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        pass
    try:
        host, port = _split_host_port(text, allow_hostname=False)
    except ValueError:
        raise ValueError(f"expected a CIDR or IP:PORT, got {text!r}") from None
    if port == 0:
        raise ValueError(f"expected a CIDR or IP:PORT, got {text!r}")
    return HostPort(host, port)


def _url_problem(url: str, insecure: bool) -> str | None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        return f"bad URL: {exc}"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"expected an https:// URL, got {url!r}"
    if parts.scheme == "http" and not insecure:
        return "http:// needs rest.allow_insecure_callbacks = true"
    return None


def _is_base64(text: str) -> bool:
    try:
        return len(base64.b64decode(text, validate=True)) > 0
    except (binascii.Error, ValueError):
        return False


def _ip_or_none(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _absolute(text: str) -> Path:
    return Path(os.path.abspath(text))


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host
