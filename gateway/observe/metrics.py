"""Prometheus metrics: the status document's figures, read at each scrape.

The gateway keeps its figures where the work is done (the B2BUA's call and SIP counters, each
trunk's state, the media manager's port pool and RTP counters, each room's bridge, the
registrar, the event delivery, the TURN core) and already gathers them into one status
document for trunks.json (``B2BUA.status``). ``StatusCollector`` turns that document into
metric families when Prometheus scrapes, so serving metrics costs nothing between scrapes and
adds nothing to the packet path. ``_ProcessCollector`` adds the ``process_*`` figures (CPU,
memory, open files), prometheus-client's platform and GC collectors the runtime's, and
``GcPauses`` how long the garbage collector's older passes held the process.

``listen`` serves ``GET /metrics`` over plain HTTP on ``[observe] metrics_listen``, in the
reactor's thread (the figures are read where they live, never from another thread), in the
text format or OpenMetrics as the scraper's Accept header asks.

Names: ``acs_gateway_`` then the subject; counters end in ``_total``. Per-trunk and per-room
series carry ``trunk`` and ``room`` (with ``mode``) labels; no user names (the endpoint has no
authentication: the registrar is counted, not listed). A room's series exist
while the room does (its counters start again at 0 when a room of that name is created
anew, which Prometheus reads as a counter reset).
"""

from __future__ import annotations

import bisect
import gc
import logging
import os
import resource as rlimits
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from twisted.internet.interfaces import IListeningPort
from twisted.web import pages, resource, server

from gateway.config import HostPort
from gateway.rest.server import QuietSite

__all__ = ["IGNORED_GATEWAY_KEYS", "GcPauses", "StatusCollector", "exported_gateway_keys",
           "listen", "make_registry", "make_site"]

log = logging.getLogger(__name__)

PREFIX = "acs_gateway_"
Status = Callable[[], Mapping[str, object]]

# "gateway" section: (key, metric, help). Gauges are levels now; counters only grow.
_GAUGES = (
    ("calls", "calls_active", "SIP calls in progress (B2BUA)"),
    ("dialogs", "sip_dialogs", "SIP dialogs in progress"),
    ("app_calls", "app_calls_active", "REST (Call Automation) calls in progress, rooms included"),
    ("app_incoming", "app_incoming_calls", "IncomingCall events waiting for an answer"),
    ("app_dialogs", "app_dialogs", "SIP dialogs of REST calls in progress"),
    ("events_queued", "callback_events_queued", "callback events waiting to be delivered"),
    ("media_sessions", "media_sessions", "two-party media sessions (relayed or transcoded)"),
    ("media_streams", "media_streams", "anchored media streams (one per leg)"),
    ("media_ports_free", "media_ports_free", "RTP/RTCP port pairs free in [media] port_range"),
    ("media_ports_total", "media_ports", "RTP/RTCP port pairs in [media] port_range"),
    ("transcoders", "media_clock_tasks", "transcoders and rooms on the 20 ms media clock"),
)
_COUNTERS = (
    ("calls_started", "calls_started", "SIP calls started"),
    ("calls_answered", "calls_answered", "SIP calls answered"),
    ("calls_failed", "calls_failed", "SIP calls that failed after routing"),
    ("calls_rejected", "calls_rejected", "SIP calls refused before routing"),
    ("calls_ended", "calls_ended", "SIP calls ended"),
    ("parse_errors", "sip_parse_errors", "SIP messages that did not parse"),
    ("answered_errors", "sip_errors_answered", "unparsable SIP requests answered with a 4xx"),
    ("dropped", "sip_dropped",
     "SIP messages dropped (no answer possible, or no socket of the destination's family)"),
    ("refused_destinations", "sip_refused_destinations",
     "SIP messages not sent to a destination the gateway refuses"),
    ("tcp_closed_overflow", "sip_tcp_closed_overflow",
     "SIP TCP/TLS connections closed for exceeding [sip] tcp_max_buffer"),
    ("handler_errors", "sip_handler_errors", "bugs caught in the SIP handlers"),
    ("media_handler_errors", "media_handler_errors", "bugs caught in the media handlers"),
    ("media_send_errors", "media_send_errors", "RTP/RTCP packets the kernel refused to send"),
    ("media_late_ticks", "media_late_ticks",
     "5 ms media clock slices run a whole 20 ms frame or more late (a 100 ms stall adds 16)"),
    ("media_timeouts", "media_timeouts", "calls ended for lack of media ([media] timeout)"),
    ("events_retried", "callback_retries", "callback deliveries tried again"),
    ("events_failed", "callback_attempts_failed",
     "callback delivery attempts that failed (each retry counts)"),
    ("rtp_stun_in", "media_stun_requests", "STUN (ICE) requests at the media ports"),
)
# Families with one label: (kind, metric, help, label, ((key, label value), ...)). The
# per-stream RTP counters are "rtp_<name>" in the document (gateway.media.stream.Counters).
_RTP_DROPS = ("bad_rtcp", "malformed", "replay", "srtp_auth", "stun_dropped", "unknown_pt",
              "wrong_source")
_Kind = type[GaugeMetricFamily] | type[CounterMetricFamily]
_Labelled = tuple[_Kind, str, str, str, tuple[tuple[str, str], ...]]
_LABELLED: tuple[_Labelled, ...] = (
    (GaugeMetricFamily, "sip_transactions", "SIP transactions in progress", "kind",
     (("client_transactions", "client"), ("server_transactions", "server"))),
    (CounterMetricFamily, "sip_messages", "SIP messages received and sent, every transport",
     "direction", (("sip_received", "received"), ("sip_sent", "sent"))),
    (CounterMetricFamily, "callback_events",
     "callback events by what became of them: delivered, or dropped (retries spent, refused "
     "destination, call gone, queue full, shutdown)", "result",
     (("events_delivered", "delivered"), ("events_dropped", "dropped"))),
    *((CounterMetricFamily, metric, f"{metric.replace('_', ' ')} at the media ports",
       "direction", ((f"rtp_{stem}_in", "in"), (f"rtp_{stem}_out", "out")))
      for metric, stem in (("rtp_packets", "packets"), ("rtp_bytes", "bytes"),
                           ("rtcp_packets", "rtcp"))),
    (CounterMetricFamily, "rtp_dropped",
     "RTP/RTCP/STUN packets dropped at the media ports, by reason", "reason",
     tuple((f"rtp_{reason}", reason) for reason in _RTP_DROPS)),
)
#: "gateway" keys deliberately not exported (the process collector has the memory; the
#: delivery latency is a bench figure of the last events, not a series)
IGNORED_GATEWAY_KEYS = frozenset({"rss_bytes", "events_latency_ms_p50", "events_latency_ms_max"})
# "turn" section (gateway.nat.server and gateway.nat.service counters): these are levels;
# every other plain key counts something (error_<code> and drop_<reason> become labels)
_TURN_GAUGES = {
    "allocations": "TURN allocations live",
    "permissions": "TURN permissions live",
    "channels": "TURN channel bindings live",
    "reservations": "TURN relay ports reserved (EVEN-PORT R)",
    "tcp_streams": "TURN clients over TCP known to the core",
    "tcp_connections": "TCP connections to the STUN/TURN listeners",
    "relay_sockets": "TURN relay sockets open",
    "relay_ports_free": "TURN relay ports free in [turn] relay_port_range",
}
_TURN_RENAMED = {"allocations_total": "allocations_created"}  # "allocations" is the gauge
_TURN_RELAYED: tuple[_Labelled, ...] = tuple(
    (CounterMetricFamily, f"turn_relayed_{unit}", f"TURN {unit} relayed, by direction",
     "direction", tuple((f"{unit}_{way}", way) for way in ("to_peer", "to_client")))
    for unit in ("packets", "bytes"))
# shown at 0 before the first one, so that increase() sees the first
_TURN_ERROR_CODES = ("400", "401", "403", "420", "437", "438", "440", "441", "442", "443",
                     "486", "508")
_TURN_EVENTS = ("binding_requests", "binding_indications", "allocate_retransmissions",
                "refused_peers")
_TURN_DROP_REASONS = ("malformed", "not_stun", "unexpected", "no_allocation", "no_channel",
                      "no_permission", "bandwidth", "too_big", "unknown_attribute",
                      "amplification", "stream_broken", "tcp_backlog")
_ROOM_GAUGES = (
    ("parties", "room_parties", "parties in the room"),
    ("mixed", "room_speakers", "parties selected to be heard (at most [media] max_mixed)"),
    ("rate", "room_sample_rate_hertz", "the sample rate the room mixes at"),
    ("waiting", "room_waiting", "parties still entering the room's PIN"),
)
_ROOM_COUNTERS = (
    ("dominant_changes", "room_dominant_speaker_changes", "dominant speaker changes"),
    ("shared_encodes", "room_shared_encodes", "encodes saved by listeners sharing a mix"),
    ("forwarded", "room_forwarded_packets", "packets forwarded undecoded (SFU)"),
)
_USER_GAUGES = (
    ("registered_users", "registered_users", "[sip] users with a live binding"),
    ("contacts", "registered_contacts", "live bindings (contacts) of all users"),
)
_USER_COUNTERS = (
    ("registers", "registrar_registers", "REGISTERs accepted"),
    ("register_refused", "registrar_refused", "REGISTERs refused"),
)


def exported_gateway_keys() -> frozenset[str]:
    """The keys of the status document's "gateway" section that become metrics."""
    return frozenset({
        *(key for key, _, _ in (*_GAUGES, *_COUNTERS)),
        *(key for *_, pairs in _LABELLED for key, _ in pairs),
    })


def _number(value: object) -> float | None:
    """A figure of the document as a float (bools and non-numbers are not figures)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _section(doc: Mapping[str, object], name: str) -> Mapping[str, object]:
    value = doc.get(name)
    return value if isinstance(value, Mapping) else {}


def _singles(section: Mapping[str, object], table: tuple[tuple[str, str, str], ...],
             kind: _Kind) -> Iterator[Metric]:
    """A family of one unlabelled sample per (key, metric, help) whose key is a figure."""
    for key, name, text in table:
        value = _number(section.get(key))
        if value is not None:
            yield kind(PREFIX + name, text, value=value)


def _labelled(section: Mapping[str, object], table: tuple[_Labelled, ...]) -> Iterator[Metric]:
    """A family per (kind, metric, help, label, pairs): one sample per pair whose key is a
    figure, labelled with the pair's value."""
    for kind, name, text, label, pairs in table:
        family = kind(PREFIX + name, text, labels=[label])
        for key, label_value in pairs:
            value = _number(section.get(key))
            if value is not None:
                family.add_metric([label_value], value)
        yield family


class StatusCollector(Collector):
    """Metric families from the status document ``status()`` returns (``B2BUA.status``:
    "trunks", "gateway", "turn"); what the document lacks (no media anchored, no users, TURN
    off) is simply not there."""

    def __init__(self, status: Status) -> None:
        self._status = status

    def collect(self) -> Iterator[Metric]:
        doc = self._status()
        gateway = _section(doc, "gateway")
        yield from self._gateway(gateway)
        yield from self._trunks(doc.get("trunks"))
        yield from self._rooms(gateway.get("rooms"))
        yield from self._users(_section(gateway, "users"))
        turn = doc.get("turn")
        if isinstance(turn, Mapping):
            yield from self._turn(turn)

    @staticmethod
    def _gateway(gateway: Mapping[str, object]) -> Iterator[Metric]:
        yield from _singles(gateway, _GAUGES, GaugeMetricFamily)
        yield from _singles(gateway, _COUNTERS, CounterMetricFamily)
        yield from _labelled(gateway, _LABELLED)

    @staticmethod
    def _trunks(trunks: object) -> Iterator[Metric]:
        up = GaugeMetricFamily(PREFIX + "trunk_up",
                               "1 while the trunk answers its OPTIONS probes (probed trunks "
                               "only)", labels=["trunk"])
        active = GaugeMetricFamily(PREFIX + "trunk_active_calls", "calls on the trunk now",
                                   labels=["trunk"])
        refused = CounterMetricFamily(PREFIX + "trunk_refused_calls",
                                      "calls refused by the trunk's max_calls or max_cps",
                                      labels=["trunk"])
        registered = GaugeMetricFamily(PREFIX + "trunk_registered",
                                       "1 while the registration with the carrier holds",
                                       labels=["trunk"])
        for entry in trunks if isinstance(trunks, list) else ():
            if not isinstance(entry, Mapping):
                continue
            name = str(entry.get("name"))
            if entry.get("probing") is not False:
                up.add_metric([name], 1.0 if entry.get("state") == "up" else 0.0)
            active.add_metric([name], _number(entry.get("active_calls")) or 0.0)
            refused.add_metric([name], _number(entry.get("refused")) or 0.0)
            registration = entry.get("registration")
            if isinstance(registration, Mapping):
                registered.add_metric(
                    [name], 1.0 if registration.get("state") == "registered" else 0.0)
        yield from (up, active, refused, registered)

    @staticmethod
    def _rooms(rooms: object) -> Iterator[Metric]:
        entries = [r for r in rooms if isinstance(r, Mapping)] if isinstance(rooms, list) else []
        yield GaugeMetricFamily(PREFIX + "rooms", "conference rooms open",
                                value=float(len(entries)))
        gauges = [GaugeMetricFamily(PREFIX + name, text, labels=["room", "mode"])
                  for _, name, text in _ROOM_GAUGES]
        counters = [CounterMetricFamily(PREFIX + name, text, labels=["room", "mode"])
                    for _, name, text in _ROOM_COUNTERS]
        for entry in entries:
            labels = [str(entry.get("name")), str(entry.get("mode", ""))]
            for (key, _, _), family in zip(_ROOM_GAUGES, gauges, strict=True):
                value = _number(entry.get(key))
                if value is not None:
                    family.add_metric(labels, value)
            for (key, _, _), counter in zip(_ROOM_COUNTERS, counters, strict=True):
                value = _number(entry.get(key))
                if value is not None:
                    counter.add_metric(labels, value)
        yield from gauges
        yield from counters

    @staticmethod
    def _users(users: Mapping[str, object]) -> Iterator[Metric]:
        """Counts only: user names stay off the (unauthenticated) endpoint."""
        yield from _singles(users, _USER_GAUGES, GaugeMetricFamily)
        yield from _singles(users, _USER_COUNTERS, CounterMetricFamily)

    @staticmethod
    def _turn(turn: Mapping[str, object]) -> Iterator[Metric]:
        relayed = {key for *_, pairs in _TURN_RELAYED for key, _ in pairs}
        errors = CounterMetricFamily(PREFIX + "turn_error_responses",
                                     "STUN/TURN error responses sent, by error code",
                                     labels=["code"])
        drops = CounterMetricFamily(PREFIX + "turn_dropped",
                                    "STUN/TURN/ChannelData messages dropped, by reason",
                                    labels=["reason"])
        seeded = {**dict.fromkeys(_TURN_EVENTS, 0),
                  **{f"error_{code}": 0 for code in _TURN_ERROR_CODES},
                  **{f"drop_{reason}": 0 for reason in _TURN_DROP_REASONS}, **turn}
        for key, raw in sorted(seeded.items()):
            value = _number(raw)
            if value is None or key in relayed:
                continue
            if key in _TURN_GAUGES:
                yield GaugeMetricFamily(PREFIX + "turn_" + key, _TURN_GAUGES[key], value=value)
            elif key.startswith("error_"):
                errors.add_metric([key[len("error_"):]], value)
            elif key.startswith("drop_"):
                drops.add_metric([key[len("drop_"):]], value)
            else:
                name = _TURN_RENAMED.get(key, key)
                yield CounterMetricFamily(PREFIX + "turn_" + name,
                                          f"STUN/TURN {name.replace('_', ' ')}", value=value)
        yield from _labelled(turn, _TURN_RELAYED)
        yield errors
        yield drops


class _ProcessCollector(Collector):
    """The ``process_*`` families of prometheus-client's ProcessCollector (same names, same
    meaning), with the open files counted by the kernel: Linux (6.2 on) gives the count as
    the size of /proc/self/fd, where listing the directory (what the library does) took
    3.5 ms of the reactor per scrape at 1000 anchored calls (2 sockets each) and grows with
    them. Older kernels report 0 there: then it is listed. Not Linux: no process figures."""

    def __init__(self) -> None:
        self._boot = 0.0
        try:
            with open("/proc/stat", "rb") as stat:
                for line in stat:
                    if line.startswith(b"btime "):
                        self._boot = float(line.split()[1])
        except (OSError, ValueError, IndexError):
            pass

    def collect(self) -> Iterator[Metric]:
        try:
            with open("/proc/self/stat", "rb") as stat:
                parts = stat.read().rsplit(b")", 1)[-1].split()
            ticks, page = os.sysconf("SC_CLK_TCK"), os.sysconf("SC_PAGE_SIZE")
            yield GaugeMetricFamily("process_virtual_memory_bytes",
                                    "Virtual memory size in bytes.", value=float(parts[20]))
            yield GaugeMetricFamily("process_resident_memory_bytes",
                                    "Resident memory size in bytes.",
                                    value=float(parts[21]) * page)
            if self._boot:
                yield GaugeMetricFamily(
                    "process_start_time_seconds",
                    "Start time of the process since unix epoch in seconds.",
                    value=float(parts[19]) / ticks + self._boot)
            yield CounterMetricFamily("process_cpu_seconds",
                                      "Total user and system CPU time spent in seconds.",
                                      value=(float(parts[11]) + float(parts[12])) / ticks)
            yield GaugeMetricFamily("process_open_fds", "Number of open file descriptors.",
                                    value=float(_open_fds()))
            max_fds = rlimits.getrlimit(rlimits.RLIMIT_NOFILE)[0]
            if max_fds != rlimits.RLIM_INFINITY:
                yield GaugeMetricFamily("process_max_fds",
                                        "Maximum number of open file descriptors.",
                                        value=float(max_fds))
        except (OSError, ValueError, IndexError):
            return  # not Linux, or /proc unreadable: no process figures


def _open_fds() -> int:
    counted = os.stat("/proc/self/fd").st_size
    return counted if counted > 0 else len(os.listdir("/proc/self/fd"))


class GcPauses(Collector):
    """How long the cyclic garbage collector's older passes (generations 1 and 2) held the
    process: a histogram per generation, ``acs_gateway_gc_pause_seconds``. A full (gen 2)
    pass stops the reactor, relayed media included, for as long as it takes to scan every
    tracked object: 155-168 ms with 2000 anchored calls on the bench machine. The young
    passes (generation 0, hundreds per second under load) return at once, untimed.
    ``install`` adds the gc callback (the gateway does once start-up's own collection and
    freeze are done), ``uninstall`` takes it away."""

    BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)

    def __init__(self) -> None:
        self._started = 0.0
        self._counts = {generation: [0] * (len(self.BUCKETS) + 1) for generation in (1, 2)}
        self._sums = {1: 0.0, 2: 0.0}

    def install(self) -> None:
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)

    def uninstall(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: Mapping[str, int]) -> None:
        generation = info["generation"]
        if generation == 0:
            return
        if phase == "start":
            self._started = time.perf_counter()
            return
        started, self._started = self._started, 0.0
        if started:  # a stop with no start seen (installed mid-pass): nothing to time
            self.observe(generation, time.perf_counter() - started)

    def observe(self, generation: int, pause: float) -> None:
        counts = self._counts.get(generation)
        if counts is None:
            return
        counts[bisect.bisect_left(self.BUCKETS, pause)] += 1
        self._sums[generation] += pause

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(
            PREFIX + "gc_pause_seconds",
            "wall time the garbage collector's generation 1 and 2 passes took (the reactor "
            "waits that long)", labels=["generation"])
        for generation in (1, 2):
            total, counts = self._sums[generation], self._counts[generation][:]
            cumulative, buckets = 0, []
            for bound, count in zip((*map(str, self.BUCKETS), "+Inf"), counts, strict=True):
                cumulative += count
                buckets.append((bound, float(cumulative)))
            family.add_metric([str(generation)], buckets, total)
        yield family


def make_registry(status: Status, gc_pauses: GcPauses | None = None) -> CollectorRegistry:
    """A registry of the gateway's figures and this process's (CPU, memory, files, GC; the
    GC's pauses when ``gc_pauses`` is given)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatusCollector(status))
    registry.register(_ProcessCollector())
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    if gc_pauses is not None:
        registry.register(gc_pauses)
    return registry


class _Root(resource.Resource):
    """Only /metrics is here."""

    def getChild(self, path: bytes, request: server.Request) -> resource.IResource:
        return pages.notFound("No such resource", "Metrics are at /metrics.")


class _MetricsResource(resource.Resource):
    """GET /metrics: the registry in the format the Accept header asks for."""

    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._registry = registry

    def render(self, request: server.Request) -> bytes:
        if request.method not in (b"GET", b"HEAD"):
            request.setResponseCode(405)
            request.setHeader("allow", "GET, HEAD")  # type: ignore[no-untyped-call]
            request.setHeader(  # type: ignore[no-untyped-call]
                "content-type", "text/plain; charset=utf-8")
            return b"GET /metrics\n"
        return self.render_GET(request)  # HEAD: the headers of a GET

    def render_GET(self, request: server.Request) -> bytes:
        accept = request.getHeader("accept") or ""
        encoder, content_type = choose_encoder(accept)
        try:
            body: bytes = encoder(self._registry)
        except Exception:  # a bug in a collector: an answer, never a dead reactor
            log.exception("metrics: collecting failed")
            request.setResponseCode(500)
            request.setHeader(  # type: ignore[no-untyped-call]
                "content-type", "text/plain; charset=utf-8")
            return b"collecting the metrics failed (see the gateway's log)\n"
        request.setHeader("content-type", content_type)  # type: ignore[no-untyped-call]
        if request.method == b"HEAD":  # the headers of the GET, without the body
            request.setHeader(  # type: ignore[no-untyped-call]
                "content-length", str(len(body)))
            return b""
        return body


def make_site(status: Status, reactor: Any, gc_pauses: GcPauses | None = None) -> server.Site:
    root = _Root()  # type: ignore[no-untyped-call]
    root.putChild(b"metrics", _MetricsResource(make_registry(status, gc_pauses)))
    return QuietSite(root, reactor=reactor)  # type: ignore[no-untyped-call]


def listen(reactor: Any, address: HostPort, status: Status,
           gc_pauses: GcPauses | None = None) -> IListeningPort:
    """Serve ``GET /metrics`` on ``address`` (plain HTTP); ``gc_pauses`` is exposed too (its
    owner installs it)."""
    port: IListeningPort = reactor.listenTCP(address.port,
                                             make_site(status, reactor, gc_pauses),
                                             interface=address.host)
    bound = port.getHost()
    log.info("metrics (Prometheus, HTTP) on http://%s/metrics",
             HostPort(bound.host, bound.port))  # type: ignore[attr-defined]
    return port
