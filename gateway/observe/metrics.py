"""Prometheus metrics: the status document's figures, read at each scrape.

The gateway keeps its figures where the work is done (the B2BUA's call and SIP counters, each
trunk's state, the media manager's port pool and RTP counters, each room's bridge, the
registrar, the event delivery, the TURN core) and already gathers them into one status
document for trunks.json (``B2BUA.status``). ``StatusCollector`` turns that document into
metric families when Prometheus scrapes, so serving metrics costs nothing between scrapes and
adds nothing to the packet path; the process collectors of prometheus-client add CPU, memory,
open files and the Python runtime's figures.

``listen`` serves ``GET /metrics`` over plain HTTP on ``[observe] metrics_listen``, in the
reactor's thread (the figures are read where they live, never from another thread), in the
text format or OpenMetrics as the scraper's Accept header asks.

Names: ``acs_gateway_`` then the subject; counters end in ``_total``. Per-trunk, per-room
and per-user series carry ``trunk``, ``room`` and ``user`` labels; a room's series exist
while the room does (its counters start again at 0 when a room of that name is created
anew, which Prometheus reads as a counter reset).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from twisted.internet.interfaces import IListeningPort
from twisted.web import pages, resource, server

from gateway.config import HostPort

__all__ = ["StatusCollector", "listen", "make_registry", "make_site"]

log = logging.getLogger(__name__)

PREFIX = "acs_gateway_"
Status = Callable[[], Mapping[str, object]]

# "gateway" section: (key, metric, help). Gauges are levels now; counters only grow.
_GAUGES = (
    ("calls", "calls", "SIP calls in progress (B2BUA)"),
    ("dialogs", "sip_dialogs", "SIP dialogs in progress"),
    ("app_calls", "app_calls", "REST (Call Automation) calls in progress, rooms included"),
    ("app_incoming", "app_incoming_calls", "IncomingCall events waiting for an answer"),
    ("events_queued", "callback_events_queued", "callback events waiting to be delivered"),
    ("media_sessions", "media_sessions", "two-party media sessions (relayed or transcoded)"),
    ("media_streams", "media_streams", "anchored media streams (one per leg)"),
    ("media_ports_free", "media_ports_free", "RTP/RTCP port pairs free in [media] port_range"),
    ("media_ports_total", "media_ports", "RTP/RTCP port pairs in [media] port_range"),
    ("transcoders", "media_clocked", "transcoders and rooms on the 20 ms media clock"),
)
_COUNTERS = (
    ("calls_started", "calls_started", "SIP calls started"),
    ("calls_answered", "calls_answered", "SIP calls answered"),
    ("calls_failed", "calls_failed", "SIP calls that failed after routing"),
    ("calls_rejected", "calls_rejected", "SIP calls refused before routing"),
    ("parse_errors", "sip_parse_errors", "SIP messages that did not parse"),
    ("dropped", "sip_dropped", "SIP messages dropped (no answer possible)"),
    ("handler_errors", "sip_handler_errors", "bugs caught in the SIP handlers"),
    ("media_handler_errors", "media_handler_errors", "bugs caught in the media handlers"),
    ("media_send_errors", "media_send_errors", "RTP/RTCP packets the kernel refused to send"),
    ("media_late_ticks", "media_late_ticks", "20 ms media clock ticks run a frame or more late"),
    ("media_timeouts", "media_timeouts", "calls ended for lack of media ([media] timeout)"),
)
# per-stream RTP counters ("rtp_<name>" in the document): summed over every stream
_RTP_DIRECTIONAL = {
    "packets_in": ("rtp_packets", "in"), "packets_out": ("rtp_packets", "out"),
    "bytes_in": ("rtp_bytes", "in"), "bytes_out": ("rtp_bytes", "out"),
    "rtcp_in": ("rtcp_packets", "in"), "rtcp_out": ("rtcp_packets", "out"),
}
_TRANSACTIONS = ("client_transactions", "server_transactions")
_EVENTS = ("delivered", "failed", "dropped")
# "turn" section: levels; every other plain key is a counter (error_<code> and drop_<reason>
# become labels)
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
_TURN_RELAYED = {
    "packets_to_peer": ("turn_relayed_packets", "to_peer"),
    "packets_to_client": ("turn_relayed_packets", "to_client"),
    "bytes_to_peer": ("turn_relayed_bytes", "to_peer"),
    "bytes_to_client": ("turn_relayed_bytes", "to_client"),
}
_ROOM_GAUGES = (
    ("parties", "room_parties", "parties in the room"),
    ("mixed", "room_speakers", "parties selected to be heard (at most [media] max_mixed)"),
    ("rate", "room_rate_hz", "the rate the room mixes at"),
    ("waiting", "room_waiting", "parties still entering the room's PIN"),
)
_ROOM_COUNTERS = (
    ("dominant_changes", "room_dominant_speaker_changes", "dominant speaker changes"),
    ("shared_encodes", "room_shared_encodes", "encodes saved by listeners sharing a mix"),
    ("forwarded", "room_forwarded_packets", "packets forwarded undecoded (SFU)"),
)


def _number(value: object) -> float | None:
    """A figure of the document as a float (bools and non-numbers are not figures)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _section(doc: Mapping[str, object], name: str) -> Mapping[str, object]:
    value = doc.get(name)
    return value if isinstance(value, Mapping) else {}


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
        for key, name, text in _GAUGES:
            value = _number(gateway.get(key))
            if value is not None:
                yield GaugeMetricFamily(PREFIX + name, text, value=value)
        for key, name, text in _COUNTERS:
            value = _number(gateway.get(key))
            if value is not None:
                yield CounterMetricFamily(PREFIX + name, text, value=value)
        transactions = GaugeMetricFamily(PREFIX + "sip_transactions",
                                         "SIP transactions in progress", labels=["kind"])
        for key in _TRANSACTIONS:
            value = _number(gateway.get(key))
            if value is not None:
                transactions.add_metric([key.split("_")[0]], value)
        yield transactions
        events = CounterMetricFamily(PREFIX + "callback_events",
                                     "callback events by result (Event Grid and CloudEvents)",
                                     labels=["result"])
        for result in _EVENTS:
            value = _number(gateway.get(f"events_{result}"))
            if value is not None:
                events.add_metric([result], value)
        yield events
        retried = _number(gateway.get("events_retried"))
        if retried is not None:
            yield CounterMetricFamily(PREFIX + "callback_retries",
                                      "callback deliveries tried again", value=retried)
        yield from _rtp(gateway)

    @staticmethod
    def _trunks(trunks: object) -> Iterator[Metric]:
        up = GaugeMetricFamily(PREFIX + "trunk_up", "1 while the trunk is up (OPTIONS probes)",
                               labels=["trunk"])
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
        if not users:
            return
        registered = _number(users.get("registered_users"))
        if registered is not None:
            yield GaugeMetricFamily(PREFIX + "registered_users",
                                    "[sip] users with a live binding", value=registered)
        contacts = GaugeMetricFamily(PREFIX + "user_contacts",
                                     "a user's registered contacts", labels=["user"])
        bindings = users.get("bindings")
        for user, entries in bindings.items() if isinstance(bindings, Mapping) else ():
            contacts.add_metric([str(user)], float(len(entries) if isinstance(entries, list)
                                                   else 0))
        yield contacts
        for key, name, text in (("registers", "registrar_registers", "REGISTERs accepted"),
                                ("register_refused", "registrar_refused",
                                 "REGISTERs refused")):
            value = _number(users.get(key))
            if value is not None:
                yield CounterMetricFamily(PREFIX + name, text, value=value)

    @staticmethod
    def _turn(turn: Mapping[str, object]) -> Iterator[Metric]:
        relayed: dict[str, CounterMetricFamily] = {}
        errors = CounterMetricFamily(PREFIX + "turn_error_responses",
                                     "STUN/TURN error responses sent, by error code",
                                     labels=["code"])
        drops = CounterMetricFamily(PREFIX + "turn_dropped",
                                    "STUN/TURN/ChannelData messages dropped, by reason",
                                    labels=["reason"])
        for key, raw in sorted(turn.items()):
            value = _number(raw)
            if value is None:
                continue
            if key in _TURN_GAUGES:
                yield GaugeMetricFamily(PREFIX + "turn_" + key, _TURN_GAUGES[key], value=value)
            elif key in _TURN_RELAYED:
                name, direction = _TURN_RELAYED[key]
                family = relayed.get(name)
                if family is None:
                    family = relayed[name] = CounterMetricFamily(
                        PREFIX + name, f"TURN {name.rsplit('_', 1)[1]} relayed, by direction",
                        labels=["direction"])
                family.add_metric([direction], value)
            elif key.startswith("error_"):
                errors.add_metric([key[len("error_"):]], value)
            elif key.startswith("drop_"):
                drops.add_metric([key[len("drop_"):]], value)
            else:
                name = _TURN_RENAMED.get(key, key)
                yield CounterMetricFamily(PREFIX + "turn_" + name,
                                          f"STUN/TURN {name.replace('_', ' ')}", value=value)
        yield from relayed.values()
        yield errors
        yield drops


def _rtp(gateway: Mapping[str, object]) -> Iterator[Metric]:
    """The summed stream counters: packets/bytes each way by direction, the drops by reason."""
    families: dict[str, CounterMetricFamily] = {}
    drops = CounterMetricFamily(PREFIX + "rtp_dropped",
                                "RTP/RTCP/STUN packets dropped at the media ports, by reason",
                                labels=["reason"])
    for key, raw in sorted(gateway.items()):
        value = _number(raw)
        if value is None or not key.startswith("rtp_"):
            continue
        name = key[len("rtp_"):]
        if name in _RTP_DIRECTIONAL:
            metric, direction = _RTP_DIRECTIONAL[name]
            family = families.get(metric)
            if family is None:
                family = families[metric] = CounterMetricFamily(
                    PREFIX + metric, f"{metric.replace('_', ' ')} at the media ports",
                    labels=["direction"])
            family.add_metric([direction], value)
        elif name == "stun_in":
            yield CounterMetricFamily(PREFIX + "media_stun_requests",
                                      "STUN (ICE) requests at the media ports", value=value)
        else:
            drops.add_metric([name], value)
    yield from families.values()
    yield drops


def make_registry(status: Status) -> CollectorRegistry:
    """A registry of the gateway's figures and this process's (CPU, memory, files, GC)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatusCollector(status))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
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
        return self.render_GET(request)

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
        return body


class _Site(server.Site):
    noisy = False
    displayTracebacks = False

    def log(self, request: Any) -> None:
        """No access log: a scrape every few seconds is not news."""


def make_site(status: Status, reactor: Any) -> server.Site:
    root = _Root()  # type: ignore[no-untyped-call]
    root.putChild(b"metrics", _MetricsResource(make_registry(status)))
    return _Site(root, reactor=reactor)  # type: ignore[no-untyped-call]


def listen(reactor: Any, address: HostPort, status: Status) -> IListeningPort:
    """Serve ``GET /metrics`` on ``address`` (plain HTTP)."""
    port: IListeningPort = reactor.listenTCP(address.port, make_site(status, reactor),
                                             interface=address.host)
    log.info("metrics (Prometheus, HTTP) on http://%s/metrics", _url_host(port.getHost()))
    return port


def _url_host(host: Any) -> str:
    address = str(host.host)
    return f"[{address}]:{host.port}" if ":" in address else f"{address}:{host.port}"
