"""gateway.observe.metrics: the status document as Prometheus metric families, the config
key, and the HTTP resource on a real loopback socket."""

from __future__ import annotations

import gc
import http.client
import os
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping

import pytest
from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_parse,
)
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.epollreactor import EPollReactor
from twisted.internet.testing import MemoryReactorClock
from twisted.internet.threads import blockingCallFromThread

from gateway.config import HostPort, MediaConfig, TurnConfig, parse_config
from gateway.errors import ConfigError
from gateway.media.bridge import Bridge
from gateway.media.manager import MediaManager
from gateway.media.stream import Counters
from gateway.nat.service import TurnService
from gateway.observe.metrics import (
    IGNORED_GATEWAY_KEYS,
    GcPauses,
    exported_gateway_keys,
    listen,
    make_registry,
)

DOC: dict[str, object] = {
    "time": 1000.0,
    "trunks": [
        {"name": "carrier-a", "state": "up", "probing": True, "active_calls": 3, "refused": 2,
         "registration": None},
        {"name": "carrier-b", "state": "down", "probing": True, "active_calls": 0,
         "refused": 0, "registration": {"state": "registered"}},
        {"name": "carrier-c", "state": "up", "probing": False, "active_calls": 1,
         "refused": 0, "registration": None},
    ],
    "gateway": {
        "calls": 4, "dialogs": 6, "client_transactions": 2, "server_transactions": 5,
        "calls_started": 100, "calls_answered": 90, "calls_failed": 7, "calls_rejected": 3,
        "parse_errors": 1, "dropped": 2, "handler_errors": 0, "rss_bytes": 123456,
        "sip_received": 900, "sip_sent": 950, "answered_errors": 1, "calls_ended": 85,
        "refused_destinations": 0, "tcp_closed_overflow": 0,
        "app_calls": 2, "app_incoming": 0, "app_dialogs": 3,
        "events_delivered": 40, "events_failed": 1, "events_retried": 5, "events_dropped": 0,
        "events_queued": 2, "events_latency_ms_p50": 1.5, "events_latency_ms_max": None,
        "rooms": [
            {"name": "standup", "id": "conference-standup", "mode": "mcu", "rate": 16000,
             "parties": 5, "mixed": 4, "dominant": "leg-2", "dominant_changes": 7,
             "shared_encodes": 300, "forwarded": 0, "waiting": 1},
            {"name": "town", "id": "conference-town", "mode": "sfu", "rate": 48000,
             "parties": 10, "mixed": 8, "dominant": None, "dominant_changes": 2,
             "shared_encodes": 0, "forwarded": 12345, "waiting": 0},
        ],
        "users": {"registered_users": 1, "contacts": 2,
                  "bindings": {"alice": [{"contact": "sip:a@1", "via": "udp:1:2",
                                          "expires_in": 30},
                                         {"contact": "sip:a@2", "via": "udp:1:3",
                                          "expires_in": 40}]},
                  "registers": 9, "register_refused": 4},
        "media_sessions": 3, "media_streams": 16, "media_ports_free": 990,
        "media_ports_total": 1000, "transcoders": 2, "media_handler_errors": 0,
        "media_send_errors": 1, "media_late_ticks": 12, "media_timeouts": 1,
        "rtp_packets_in": 5000, "rtp_packets_out": 4900, "rtp_bytes_in": 860000,
        "rtp_bytes_out": 842800, "rtp_rtcp_in": 10, "rtp_rtcp_out": 11, "rtp_malformed": 3,
        "rtp_wrong_source": 2, "rtp_stun_in": 8,
    },
    "turn": {
        "allocations": 2, "permissions": 3, "channels": 1, "reservations": 0,
        "tcp_streams": 1, "tcp_connections": 1, "relay_sockets": 2, "relay_ports_free": 998,
        "packets_to_peer": 700, "bytes_to_peer": 70000, "packets_to_client": 650,
        "bytes_to_client": 65000, "allocations_total": 5, "auth_challenges": 6,
        "auth_failures": 1, "stale_nonces": 0, "error_401": 6, "error_403": 35,
        "drop_malformed": 2, "drop_tcp_backlog": 0, "tcp_idle_closed": 1,
    },
}


def samples(doc: Mapping[str, object]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition (text format, parsed back), by name and labels."""
    text = generate_latest(make_registry(lambda: doc)).decode()
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def types(doc: Mapping[str, object]) -> dict[str, str]:
    text = generate_latest(make_registry(lambda: doc)).decode()
    return {family.name: family.type for family in text_string_to_metric_families(text)}


def value(got: Mapping[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
          **labels: str) -> float:
    return got[(name, tuple(sorted(labels.items())))]


def test_gateway_figures_become_gauges_and_counters() -> None:
    got = samples(DOC)
    assert value(got, "acs_gateway_calls_active") == 4
    assert value(got, "acs_gateway_calls_started_total") == 100
    assert value(got, "acs_gateway_calls_answered_total") == 90
    assert value(got, "acs_gateway_sip_transactions", kind="client") == 2
    assert value(got, "acs_gateway_sip_transactions", kind="server") == 5
    assert value(got, "acs_gateway_sip_messages_total", direction="received") == 900
    assert value(got, "acs_gateway_sip_messages_total", direction="sent") == 950
    assert value(got, "acs_gateway_calls_ended_total") == 85
    assert value(got, "acs_gateway_sip_errors_answered_total") == 1
    # the full document's every figure is exported, or left out on purpose
    gateway = DOC["gateway"]
    assert isinstance(gateway, dict)
    numeric = {k for k, v in gateway.items() if isinstance(v, int | float)}
    assert numeric - exported_gateway_keys() == IGNORED_GATEWAY_KEYS - {"events_latency_ms_max"}
    assert value(got, "acs_gateway_callback_events_total", result="delivered") == 40
    assert value(got, "acs_gateway_callback_events_total", result="dropped") == 0
    # failed attempts are not events (one event may fail twice and then be delivered)
    assert ("acs_gateway_callback_events_total", (("result", "failed"),)) not in got
    assert value(got, "acs_gateway_callback_attempts_failed_total") == 1
    assert value(got, "acs_gateway_callback_retries_total") == 5
    assert value(got, "acs_gateway_app_dialogs") == 3
    assert value(got, "acs_gateway_media_late_ticks_total") == 12
    assert value(got, "acs_gateway_media_ports_free") == 990
    assert value(got, "acs_gateway_rtp_packets_total", direction="in") == 5000
    assert value(got, "acs_gateway_rtp_bytes_total", direction="out") == 842800
    assert value(got, "acs_gateway_rtcp_packets_total", direction="out") == 11
    assert value(got, "acs_gateway_rtp_dropped_total", reason="malformed") == 3
    assert value(got, "acs_gateway_rtp_dropped_total", reason="wrong_source") == 2
    assert value(got, "acs_gateway_media_stun_requests_total") == 8
    kinds = types(DOC)
    assert kinds["acs_gateway_calls_active"] == "gauge"
    assert kinds["acs_gateway_calls_started"] == "counter"
    assert kinds["acs_gateway_rtp_packets"] == "counter"


def test_trunks_rooms_and_users_are_labelled() -> None:
    got = samples(DOC)
    assert value(got, "acs_gateway_trunk_up", trunk="carrier-a") == 1
    assert value(got, "acs_gateway_trunk_up", trunk="carrier-b") == 0
    assert value(got, "acs_gateway_trunk_active_calls", trunk="carrier-a") == 3
    assert value(got, "acs_gateway_trunk_refused_calls_total", trunk="carrier-a") == 2
    assert value(got, "acs_gateway_trunk_registered", trunk="carrier-b") == 1
    assert ("acs_gateway_trunk_registered", (("trunk", "carrier-a"),)) not in got
    # a trunk nobody probes is not known to be up or down: no trunk_up for it
    assert ("acs_gateway_trunk_up", (("trunk", "carrier-c"),)) not in got
    assert value(got, "acs_gateway_trunk_active_calls", trunk="carrier-c") == 1
    assert value(got, "acs_gateway_rooms") == 2
    assert value(got, "acs_gateway_room_parties", room="standup", mode="mcu") == 5
    assert value(got, "acs_gateway_room_speakers", room="town", mode="sfu") == 8
    assert value(got, "acs_gateway_room_sample_rate_hertz", room="standup", mode="mcu") == 16000
    assert value(got, "acs_gateway_room_waiting", room="standup", mode="mcu") == 1
    assert value(got, "acs_gateway_room_dominant_speaker_changes_total", room="standup",
                 mode="mcu") == 7
    assert value(got, "acs_gateway_room_forwarded_packets_total", room="town",
                 mode="sfu") == 12345
    assert value(got, "acs_gateway_registered_users") == 1
    assert value(got, "acs_gateway_registered_contacts") == 2
    assert not [k for k in got if "alice" in str(k)], "user names stay off the endpoint"
    assert value(got, "acs_gateway_registrar_refused_total") == 4


def test_turn_levels_traffic_errors_and_drops() -> None:
    got = samples(DOC)
    assert value(got, "acs_gateway_turn_allocations") == 2
    assert value(got, "acs_gateway_turn_relay_ports_free") == 998
    assert value(got, "acs_gateway_turn_allocations_created_total") == 5
    assert value(got, "acs_gateway_turn_relayed_packets_total", direction="to_peer") == 700
    assert value(got, "acs_gateway_turn_relayed_bytes_total", direction="to_client") == 65000
    assert value(got, "acs_gateway_turn_error_responses_total", code="403") == 35
    assert value(got, "acs_gateway_turn_dropped_total", reason="malformed") == 2
    # the usual codes and reasons are there at 0 before the first one
    assert value(got, "acs_gateway_turn_error_responses_total", code="438") == 0
    assert value(got, "acs_gateway_turn_dropped_total", reason="amplification") == 0
    assert value(got, "acs_gateway_turn_auth_failures_total") == 1
    assert value(got, "acs_gateway_turn_tcp_idle_closed_total") == 1
    kinds = types(DOC)
    assert kinds["acs_gateway_turn_allocations"] == "gauge"
    assert kinds["acs_gateway_turn_allocations_created"] == "counter"


def test_openmetrics_exposition_is_valid() -> None:
    """The strict OpenMetrics parser accepts the whole exposition: one family per name (a
    gauge "x" beside a counter "x" is valid text format but not valid OpenMetrics)."""
    pauses = GcPauses()
    pauses.observe(2, 0.05)
    text = openmetrics_latest(make_registry(lambda: DOC, pauses)).decode()
    families = list(openmetrics_parse(text))
    names = [f.name for f in families]
    assert len(names) == len(set(names))
    assert "acs_gateway_turn_allocations_created" in names


def test_every_producer_key_is_exported() -> None:
    """The real producers' keys, not a hand-written document: each stream counter, each
    TURN core and service counter and each room figure comes out as a metric."""
    counters = Counters().as_dict()
    gateway = {f"rtp_{name}": 1 for name in counters}
    got = samples({"gateway": gateway})
    for family in ("rtp_packets", "rtp_bytes", "rtcp_packets"):
        for direction in ("in", "out"):
            assert value(got, f"acs_gateway_{family}_total", direction=direction) == 1
    assert value(got, "acs_gateway_media_stun_requests_total") == 1
    dropped = {dict(labels)["reason"] for name, labels in got
               if name == "acs_gateway_rtp_dropped_total"}
    directional = {"packets_in", "packets_out", "bytes_in", "bytes_out", "rtcp_in", "rtcp_out"}
    assert dropped == set(counters) - directional - {"stun_in"}

    service = TurnService(MemoryReactorClock(), TurnConfig())
    turn = {key: 7 for key in service.counters}
    turn_text = generate_latest(make_registry(lambda: {"turn": turn})).decode()
    for key in turn:
        if key.startswith(("error_", "drop_")):
            assert f'"{key.split("_", 1)[1]}"' in turn_text, key
        elif key in ("packets_to_peer", "packets_to_client", "bytes_to_peer",
                     "bytes_to_client"):
            assert f'direction="{key.rsplit("_", 2)[1]}_{key.rsplit("_", 1)[1]}"' \
                in turn_text, key
        else:
            name = "allocations_created" if key == "allocations_total" else key
            assert f"acs_gateway_turn_{name}" in turn_text, key

    bridge = Bridge(MediaManager(MemoryReactorClock(), MediaConfig(port_range=(30000, 30009))),
                    "call-1", on_dtmf=lambda leg, digit: None)
    room = {"name": "r", "waiting": 0, **bridge.status()}
    got = samples({"gateway": {"rooms": [room]}})
    labels = (("mode", "mcu"), ("room", "r"))
    for name in ("room_parties", "room_speakers", "room_sample_rate_hertz", "room_waiting",
                 "room_dominant_speaker_changes_total", "room_shared_encodes_total",
                 "room_forwarded_packets_total"):
        assert (f"acs_gateway_{name}", labels) in got, name
    bridge.close()


def test_a_sparse_document_gives_what_it_has() -> None:
    """No media anchored, no users, no rooms, TURN section absent: no error, no made-up
    figures."""
    got = samples({"time": 1.0, "trunks": [], "gateway": {"calls": 0, "calls_started": 0}})
    assert value(got, "acs_gateway_calls_active") == 0
    assert value(got, "acs_gateway_rooms") == 0
    assert not [k for k in got if k[0].startswith(("acs_gateway_turn", "acs_gateway_media",
                                                   "acs_gateway_registered"))]
    # odd values (bools, strings, None) are not figures
    odd = samples({"gateway": {"calls": True, "dialogs": "7", "media_late_ticks": None},
                   "trunks": "nope", "turn": {"allocations": "x"}})
    assert not [k for k in odd if k[0] in ("acs_gateway_calls_active", "acs_gateway_sip_dialogs",
                                            "acs_gateway_media_late_ticks_total",
                                            "acs_gateway_turn_allocations")]


def test_process_figures_come_along() -> None:
    got = samples(DOC)
    assert value(got, "process_resident_memory_bytes") > 0
    assert value(got, "process_cpu_seconds_total") >= 0
    assert any(name == "python_info" for name, _ in got)


def test_process_figures_match_the_librarys_and_count_open_files() -> None:
    """The same families as prometheus-client's ProcessCollector, with open files counted
    by the kernel (the library lists /proc/self/fd, which opens one more)."""
    library = CollectorRegistry()
    ProcessCollector(registry=library)

    def figures(registry: CollectorRegistry) -> dict[str, float]:
        text = generate_latest(registry).decode()
        return {sample.name: sample.value for family in text_string_to_metric_families(text)
                for sample in family.samples}

    ours_registry = make_registry(lambda: {})
    theirs, ours = figures(library), figures(ours_registry)
    for name in ("process_virtual_memory_bytes", "process_start_time_seconds",
                 "process_max_fds"):
        assert ours[name] == theirs[name], name
    assert abs(ours["process_resident_memory_bytes"] - theirs["process_resident_memory_bytes"]) \
        < 16 * 1024 * 1024
    assert abs(ours["process_cpu_seconds_total"] - theirs["process_cpu_seconds_total"]) < 1
    assert abs(ours["process_open_fds"] - len(os.listdir("/proc/self/fd"))) <= 1
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(50)]
    try:
        assert figures(ours_registry)["process_open_fds"] == ours["process_open_fds"] + 50
    finally:
        for sock in sockets:
            sock.close()


def test_gc_pauses_histogram_times_the_real_collector() -> None:
    pauses = GcPauses()
    pauses.observe(2, 0.165)
    pauses.observe(1, 0.0004)
    pauses.observe(0, 9.0)  # young passes are not timed
    got = samples_of(make_registry(lambda: {}, pauses))
    assert value(got, "acs_gateway_gc_pause_seconds_count", generation="2") == 1
    assert value(got, "acs_gateway_gc_pause_seconds_bucket", generation="2", le="0.1") == 0
    assert value(got, "acs_gateway_gc_pause_seconds_bucket", generation="2", le="0.25") == 1
    assert value(got, "acs_gateway_gc_pause_seconds_bucket", generation="1", le="0.001") == 1
    assert value(got, "acs_gateway_gc_pause_seconds_sum", generation="2") == pytest.approx(0.165)
    pauses._callback("stop", {"generation": 2, "collected": 0, "uncollectable": 0})
    assert value(samples_of(make_registry(lambda: {}, pauses)),
                 "acs_gateway_gc_pause_seconds_count", generation="2") == 1  # no start: untimed
    pauses.install()
    try:
        pauses.install()  # once only
        assert gc.callbacks.count(pauses._callback) == 1
        gc.collect()  # a real full pass, timed by the callback
        gc.collect(1)
    finally:
        pauses.uninstall()
    assert pauses._callback not in gc.callbacks
    got = samples_of(make_registry(lambda: {}, pauses))
    assert value(got, "acs_gateway_gc_pause_seconds_count", generation="2") >= 2  # + automatic
    assert value(got, "acs_gateway_gc_pause_seconds_count", generation="1") >= 2
    assert value(got, "acs_gateway_gc_pause_seconds_sum", generation="2") > 0.165


def samples_of(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]],
                                                       float]:
    text = generate_latest(registry).decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def test_config_key() -> None:
    config = parse_config({"observe": {"metrics_listen": "127.0.0.1:9464"}}, "gw.toml")
    assert config.observe.metrics_listen == HostPort("127.0.0.1", 9464)
    assert parse_config({}, "gw.toml").observe.metrics_listen is None
    assert parse_config({"observe": {"metrics_listen": ""}}, "gw.toml").observe.metrics_listen \
        is None
    v6 = parse_config({"observe": {"metrics_listen": "[::1]:9464"}}, "gw.toml")
    assert v6.observe.metrics_listen == HostPort("::1", 9464)
    for bad, reason in (("localhost", "expected HOST:PORT"), ("127.0.0.1:99999", "port"),
                        ("metrics.example:9464", "")):
        with pytest.raises(ConfigError) as err:
            parse_config({"observe": {"metrics_listen": bad}}, "gw.toml")
        assert "gw.toml" in str(err.value) and "observe.metrics_listen" in str(err.value)
        assert reason in str(err.value)
    with pytest.raises(ConfigError) as err:
        parse_config({"observe": {"metrics_listen": "127.0.0.1:8443"}}, "gw.toml")
    assert "observe.metrics_listen: same tcp socket as rest.listen" in str(err.value)
    with pytest.raises(ConfigError) as err:
        parse_config({"observe": {"metric_listen": "127.0.0.1:9"}}, "gw.toml")
    assert "observe.metric_listen: unknown key" in str(err.value)


# --- the HTTP endpoint, on a real socket (its own reactor in a thread) -----------------------


@pytest.fixture()
def served() -> Iterator[tuple[str, list[int], threading.Thread]]:
    """``listen`` on an ephemeral loopback port; the status callable records the thread it
    runs in and fails on its third call (a collector bug)."""
    own = EPollReactor()  # type: ignore[no-untyped-call]
    thread = threading.Thread(target=own.run, kwargs={"installSignalHandlers": False},
                              daemon=True)
    thread.start()
    threads_seen: list[int] = []

    def status() -> Mapping[str, object]:
        threads_seen.append(threading.get_ident())
        if len(threads_seen) == 3:
            raise RuntimeError("a collector bug")
        return DOC

    port = blockingCallFromThread(own, listen, own, HostPort("127.0.0.1", 0), status)
    try:
        yield f"http://127.0.0.1:{port.getHost().port}", threads_seen, thread
    finally:
        blockingCallFromThread(own, port.stopListening)
        own.callFromThread(own.stop)
        thread.join(10)


def _fetch(url: str, accept: str | None = None, method: str = "GET") -> tuple[int, str, bytes]:
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {},
                                     method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.headers.get("content-type", ""), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("content-type", ""), exc.read()


def test_endpoint_serves_text_and_openmetrics_in_the_reactor_thread(
    served: tuple[str, list[int], threading.Thread],
) -> None:
    base, threads_seen, reactor_thread = served
    status, content_type, body = _fetch(base + "/metrics")
    assert status == 200 and content_type.startswith("text/plain; version=0.0.4"), content_type
    names = {f.name for f in text_string_to_metric_families(body.decode())}
    assert {"acs_gateway_calls_active", "acs_gateway_room_parties", "acs_gateway_turn_allocations",
            "process_cpu_seconds"} <= names
    status, content_type, body = _fetch(base + "/metrics",
                                        accept="application/openmetrics-text; version=1.0.0")
    assert status == 200 and content_type.startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF")
    # the figures are read in the reactor's thread, where they live (never a thread pool)
    assert threads_seen == [reactor_thread.ident] * 2
    # a collector bug: 500 with a plain message, and the next scrape works again
    status, _, body = _fetch(base + "/metrics")
    assert status == 500 and b"collecting the metrics failed" in body
    assert _fetch(base + "/metrics")[0] == 200
    assert _fetch(base + "/")[0] == 404
    assert _fetch(base + "/metrics", method="POST")[0] == 405
    connection = http.client.HTTPConnection(base.removeprefix("http://"), timeout=5)
    try:
        connection.request("HEAD", "/metrics")
        response = connection.getresponse()
        assert response.status == 200 and response.read() == b""
        assert int(response.getheader("content-length") or 0) > 1000
    finally:
        connection.close()


def test_media_status_sums_every_stream_counter_and_the_closed_ones() -> None:
    """MediaManager.status: column sums over the live streams plus what closed streams left
    (the figures the rtp_* metrics come from)."""
    manager = MediaManager(MemoryReactorClock(), MediaConfig(port_range=(30000, 30009)))
    assert not [k for k in manager.status() if k.startswith("rtp_")]
    streams = []
    for i in range(3):
        counters = Counters()
        counters.packets_in, counters.bytes_out, counters.wrong_source = i + 1, 100 * i, i
        streams.append(_Stream(counters))
    manager.sockets.update({stream: None for stream in streams})  # type: ignore[misc]
    manager.closed_totals.update(packets_in=10, replay=4)
    status = manager.status()
    assert status["rtp_packets_in"] == 1 + 2 + 3 + 10
    assert status["rtp_bytes_out"] == 0 + 100 + 200
    assert status["rtp_wrong_source"] == 0 + 1 + 2
    assert status["rtp_replay"] == 4
    assert {f"rtp_{name}" for name in Counters.__slots__} <= set(status)


class _Stream:
    """What MediaManager.status reads of a stream: its counters (hashable, as streams are)."""

    def __init__(self, counters: object) -> None:
        self.counters = counters
