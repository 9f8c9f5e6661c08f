"""gateway.observe.metrics: the status document as Prometheus metric families, the config
key, and the HTTP resource on a real loopback socket."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.epollreactor import EPollReactor
from twisted.internet.threads import blockingCallFromThread

from gateway.config import HostPort, parse_config
from gateway.errors import ConfigError
from gateway.observe.metrics import listen, make_registry

DOC: dict[str, object] = {
    "time": 1000.0,
    "trunks": [
        {"name": "carrier-a", "state": "up", "active_calls": 3, "refused": 2,
         "registration": None},
        {"name": "carrier-b", "state": "down", "active_calls": 0, "refused": 0,
         "registration": {"state": "registered"}},
    ],
    "gateway": {
        "calls": 4, "dialogs": 6, "client_transactions": 2, "server_transactions": 5,
        "calls_started": 100, "calls_answered": 90, "calls_failed": 7, "calls_rejected": 3,
        "parse_errors": 1, "dropped": 2, "handler_errors": 0, "rss_bytes": 123456,
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
        "users": {"registered_users": 1,
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
    assert value(got, "acs_gateway_calls") == 4
    assert value(got, "acs_gateway_calls_started_total") == 100
    assert value(got, "acs_gateway_calls_answered_total") == 90
    assert value(got, "acs_gateway_sip_transactions", kind="client") == 2
    assert value(got, "acs_gateway_sip_transactions", kind="server") == 5
    assert value(got, "acs_gateway_callback_events_total", result="delivered") == 40
    assert value(got, "acs_gateway_callback_retries_total") == 5
    assert value(got, "acs_gateway_media_late_ticks_total") == 12
    assert value(got, "acs_gateway_media_ports_free") == 990
    assert value(got, "acs_gateway_rtp_packets_total", direction="in") == 5000
    assert value(got, "acs_gateway_rtp_bytes_total", direction="out") == 842800
    assert value(got, "acs_gateway_rtcp_packets_total", direction="out") == 11
    assert value(got, "acs_gateway_rtp_dropped_total", reason="malformed") == 3
    assert value(got, "acs_gateway_rtp_dropped_total", reason="wrong_source") == 2
    assert value(got, "acs_gateway_media_stun_requests_total") == 8
    kinds = types(DOC)
    assert kinds["acs_gateway_calls"] == "gauge"
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
    assert value(got, "acs_gateway_rooms") == 2
    assert value(got, "acs_gateway_room_parties", room="standup", mode="mcu") == 5
    assert value(got, "acs_gateway_room_speakers", room="town", mode="sfu") == 8
    assert value(got, "acs_gateway_room_rate_hz", room="standup", mode="mcu") == 16000
    assert value(got, "acs_gateway_room_waiting", room="standup", mode="mcu") == 1
    assert value(got, "acs_gateway_room_dominant_speaker_changes_total", room="standup",
                 mode="mcu") == 7
    assert value(got, "acs_gateway_room_forwarded_packets_total", room="town",
                 mode="sfu") == 12345
    assert value(got, "acs_gateway_registered_users") == 1
    assert value(got, "acs_gateway_user_contacts", user="alice") == 2
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
    assert value(got, "acs_gateway_turn_auth_failures_total") == 1
    assert value(got, "acs_gateway_turn_tcp_idle_closed_total") == 1
    kinds = types(DOC)
    assert kinds["acs_gateway_turn_allocations"] == "gauge"
    assert kinds["acs_gateway_turn_allocations_created"] == "counter"
    # one family per name (a gauge and a counter of one name would be an invalid exposition)
    text = generate_latest(make_registry(lambda: DOC)).decode()
    declared = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")]
    assert len(declared) == len(set(declared)), sorted(declared)


def test_a_sparse_document_gives_what_it_has() -> None:
    """No media anchored, no users, no rooms, TURN section absent: no error, no made-up
    figures."""
    got = samples({"time": 1.0, "trunks": [], "gateway": {"calls": 0, "calls_started": 0}})
    assert value(got, "acs_gateway_calls") == 0
    assert value(got, "acs_gateway_rooms") == 0
    assert not [k for k in got if k[0].startswith(("acs_gateway_turn", "acs_gateway_media",
                                                   "acs_gateway_registered"))]
    # odd values (bools, strings, None) are not figures
    odd = samples({"gateway": {"calls": True, "dialogs": "7", "media_late_ticks": None},
                   "trunks": "nope", "turn": {"allocations": "x"}})
    assert not [k for k in odd if k[0] in ("acs_gateway_calls", "acs_gateway_sip_dialogs",
                                            "acs_gateway_media_late_ticks_total",
                                            "acs_gateway_turn_allocations")]


def test_process_figures_come_along() -> None:
    got = samples(DOC)
    assert value(got, "process_resident_memory_bytes") > 0
    assert value(got, "process_cpu_seconds_total") >= 0
    assert any(name == "python_info" for name, _ in got)


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
    assert {"acs_gateway_calls", "acs_gateway_room_parties", "acs_gateway_turn_allocations",
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
