"""Callback and webhook delivery (gateway.rest.delivery) against real receivers on loopback.

The SSRF guard is pure and tested as a table. Delivery itself is driven by the real reactor in
twisted.trial TestCases (pytest runs them): twisted.web receivers on 127.0.0.1 port 0, plain
HTTP with insecure=True, and HTTPS with a throwaway certificate from gateway.tlsutil.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import tempfile
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import pytest
from azure.core.messaging import CloudEvent
from twisted.internet import defer, reactor, task
from twisted.internet.defer import Deferred
from twisted.trial import unittest
from twisted.web import resource, server

from gateway.config import RestConfig
from gateway.rest.delivery import Delivery, address_problem, url_problem
from gateway.tlsutil import ensure_certificate, server_options

R: Any = reactor

# --- the SSRF guard, pure ----------------------------------------------------------------------

REFUSED = [
    ("http://example.com/cb", "only https"),
    ("ftp://example.com/cb", "only https"),
    ("https://127.0.0.1/cb", "loopback"),
    ("https://127.8.9.10:8443/cb", "loopback"),
    ("https://[::1]/cb", "loopback"),
    ("https://[::ffff:127.0.0.1]/cb", "loopback"),
    ("https://[::ffff:7f00:1]/cb", "loopback"),
    ("https://[::127.0.0.1]/cb", "loopback"),  # IPv4-compatible
    ("https://[2002:7f00:1::1]/cb", "loopback"),  # 6to4
    ("https://[64:ff9b::a00:1]/cb", "private"),  # NAT64 of 10.0.0.1
    ("https://10.1.2.3/cb", "private"),
    ("https://172.16.0.1/cb", "private"),
    ("https://172.31.255.254/cb", "private"),
    ("https://192.168.1.1/cb", "private"),
    ("https://[::ffff:192.168.1.1]/cb", "private"),
    ("https://[fc00::1]/cb", "private"),
    ("https://169.254.169.254/latest/meta-data/", "cloud metadata"),
    ("https://[::ffff:169.254.169.254]/", "cloud metadata"),
    ("https://169.254.1.1/cb", "link-local"),
    ("https://[fe80::1]/cb", "link-local"),
    ("https://100.64.0.1/cb", "carrier-grade NAT"),
    ("https://100.127.255.254/cb", "carrier-grade NAT"),
    ("https://0.0.0.0/cb", "unspecified"),
    ("https://[::]/cb", "unspecified"),
    ("https://224.0.0.1/cb", "multicast"),
    ("https://[ff02::1]/cb", "multicast"),
    ("https://255.255.255.255/cb", "broadcast"),
    ("https://240.0.0.1/cb", "reserved"),
    ("https://192.0.2.1/cb", "private"),  # documentation range
    ("https://2130706433/cb", "non-standard spelling"),
    ("https://0x7f.1/cb", "non-standard spelling"),
    ("https://127.1/cb", "non-standard spelling"),
    ("https://user:pw@example.com/cb", "user info"),
    ("https://[fe80::1%25eth0]/cb", "zone"),
    ("https://example.com:0/cb", "port 0"),
    ("https://example.com:99999/cb", "bad URL"),
    ("https:///cb", "no host"),
    ("https://exa mple.com/cb", "ASCII"),
    ("https://bücher.example/cb", "ASCII"),
    ("https://-bad-.example.com/cb", "bad host name"),
    ("https://[::1/cb", "bad URL"),
]
ACCEPTED = [
    "https://example.com/cb?secret=1",
    "https://callbacks.example.org:8443/acs/events",
    "https://8.8.8.8/cb",
    "https://[2001:4860:4860::8888]:443/cb",
    "https://[::ffff:8.8.8.8]/cb",
    "https://localhost/cb",  # a name: judged by the address it resolves to, at send time
]


@pytest.mark.parametrize(("url", "reason"), REFUSED)
def test_url_refused(url: str, reason: str) -> None:
    problem = url_problem(url, insecure=False)
    assert problem is not None and reason in problem


@pytest.mark.parametrize("url", ACCEPTED)
def test_url_accepted(url: str) -> None:
    assert url_problem(url, insecure=False) is None


def test_insecure_allows_http_and_internal_addresses_only() -> None:
    for url in ("http://127.0.0.1:9/cb", "https://[::1]/cb", "http://10.0.0.1/", "http://x/"):
        assert url_problem(url, insecure=True) is None
    for url in ("ftp://127.0.0.1/", "http://u@127.0.0.1/", "http://0x7f.1/", "http://a b/"):
        assert url_problem(url, insecure=True) is not None


def test_address_classes() -> None:
    def why(text: str) -> str | None:
        return address_problem(ipaddress.ip_address(text))

    assert why("8.8.8.8") is None and why("2001:4860:4860::8888") is None
    assert why("::ffff:127.0.0.1") == "loopback (IPv4 127.0.0.1 inside IPv6)"
    assert why("169.254.169.254") == "cloud metadata (link-local)"
    assert why("100.64.0.0") == "carrier-grade NAT"
    assert why("::1") == "loopback" and why("::") == "unspecified"


# --- receivers -------------------------------------------------------------------------------


class Receiver(resource.Resource):
    """Records every POST; answers per path: ``fail[path]`` more 503s, then 200 (or ``status``).

    SubscriptionValidation is answered per ``validation``: "echo" the code, "wrong" code, or
    "reject" with 400.
    """

    isLeaf = True

    def __init__(self, validation: str = "echo") -> None:
        super().__init__()
        self.validation = validation
        self.fail: dict[str, int] = {}
        self.status: dict[str, int] = {}
        self.hits: list[dict[str, Any]] = []  # every POST: path, headers, body, time, client port

    def render_POST(self, request: Any) -> bytes:  # noqa: N802
        path = request.path.decode()
        headers = {k.decode().lower(): v[0].decode()
                   for k, v in request.requestHeaders.getAllRawHeaders()}
        body = json.loads(request.content.read())
        hit = {"path": path, "headers": headers, "body": body, "at": R.seconds(),
               "port": request.getClientAddress().port, "status": 200}
        self.hits.append(hit)
        answer = b""
        if self.fail.get(path, 0) > 0:
            self.fail[path] -= 1
            hit["status"], answer = 503, b"try later"
        elif headers.get("aeg-event-type") == "SubscriptionValidation":
            if self.validation == "reject":
                hit["status"], answer = 400, b"no"
            else:
                code = body[0]["data"]["validationCode"] if self.validation == "echo" else "x"
                request.setHeader(b"content-type", b"application/json")
                answer = json.dumps({"validationResponse": code}).encode()
        else:
            hit["status"] = self.status.get(path, 200)
        request.setResponseCode(hit["status"])
        return answer

    def events(self, path: str | None = None) -> list[dict[str, Any]]:
        """The event of every POST to ``path`` answered 2xx, in arrival order (no handshakes)."""
        return [hit["body"][0] for hit in self.hits
                if (path is None or hit["path"] == path) and 200 <= hit["status"] < 300
                and hit["headers"].get("aeg-event-type") != "SubscriptionValidation"]


@defer.inlineCallbacks
def wait_for(check: Callable[[], bool], timeout: float = 10.0) -> Generator[Deferred[Any], Any,
                                                                              None]:
    deadline = R.seconds() + timeout
    while not check():
        if R.seconds() > deadline:
            raise AssertionError("timed out waiting")
        yield task.deferLater(R, 0.01, lambda: None)


def sleep(seconds: float) -> Deferred[None]:
    return task.deferLater(R, seconds, lambda: None)


class DeliveryCase(unittest.TestCase):
    """Starts receivers and Delivery objects, and tears all of them down cleanly."""

    def setUp(self) -> None:
        self.channels: list[Any] = []

    def listen(self, receiver: Receiver, tls: tuple[Path, Path] | None = None,
               interface: str = "127.0.0.1") -> int:
        site = server.Site(receiver)
        build = site.buildProtocol

        def tracked(addr: Any) -> Any:
            channel = build(addr)
            self.channels.append(channel)
            return channel

        site.buildProtocol = tracked  # type: ignore[method-assign]
        if tls is None:
            port = R.listenTCP(0, site, interface=interface)
        else:
            port = R.listenSSL(0, site, server_options(*tls), interface=interface)
        self.addCleanup(self._close_channels)
        self.addCleanup(port.stopListening)
        return int(port.getHost().port)

    def _close_channels(self) -> Deferred[None]:
        for channel in self.channels:
            transport = getattr(channel, "transport", None)
            if transport is not None:
                transport.abortConnection()
        return sleep(0.05)

    def delivery(self, webhooks: tuple[str, ...] = (), *, insecure: bool = True,
                 ca: Path | None = None, **kwargs: Any) -> Delivery:
        rest = RestConfig(incoming_call_webhooks=webhooks, allow_insecure_callbacks=insecure)
        delivery = Delivery(R, rest, ca=ca, insecure=insecure, **kwargs)
        self.addCleanup(delivery.stop, 0.0)
        return delivery

    def cert(self) -> tuple[Path, Path]:
        tmp = Path(tempfile.mkdtemp(prefix="rest-delivery-"))
        self.addCleanup(shutil.rmtree, tmp, True)
        ensure_certificate(tmp / "cert.pem", tmp / "key.pem", ["127.0.0.1"])
        return tmp / "cert.pem", tmp / "key.pem"


def data(i: int) -> dict[str, object]:
    return {"callConnectionId": "cc1", "serverCallId": "sc1", "correlationId": "c1", "i": i}


class CallEventTests(DeliveryCase):
    @defer.inlineCallbacks
    def test_events_arrive_as_cloudevent_arrays_on_one_kept_alive_connection(self) -> Any:
        receiver = Receiver()
        url = f"http://127.0.0.1:{self.listen(receiver)}/cb"
        delivery = self.delivery()
        for i in range(5):
            delivery.call_event("cc1", url, "PlayCompleted", data(i))
        yield wait_for(lambda: delivery.delivered == 5)
        assert [e["data"]["i"] for e in receiver.events()] == [0, 1, 2, 3, 4]
        for hit in receiver.hits:
            assert hit["headers"]["content-type"] == "application/json"
            assert isinstance(hit["body"], list) and len(hit["body"]) == 1
            event = CloudEvent.from_dict(hit["body"][0])
            assert event.type == "Microsoft.Communication.PlayCompleted"
            assert event.source == "calling/callConnections/cc1"
        assert len({hit["port"] for hit in receiver.hits}) == 1  # keep-alive: one connection
        assert (delivery.failed, delivery.retried, delivery.dropped) == (0, 0, 0)
        assert len(delivery.latency) == 5 and max(delivery.latency) < 1.0
        assert delivery.stats()["queued"] == 0

    @defer.inlineCallbacks
    def test_order_is_kept_per_call_through_retries_without_blocking_other_calls(self) -> Any:
        receiver = Receiver()
        receiver.fail["/a"] = 2  # the first two attempts to call A's URL get 503
        port = self.listen(receiver)
        delivery = self.delivery()
        for i in range(4):
            delivery.call_event("A", f"http://127.0.0.1:{port}/a", "PlayStarted", data(i))
            delivery.call_event("B", f"http://127.0.0.1:{port}/b", "PlayStarted", data(10 + i))
        yield wait_for(lambda: len(receiver.events("/b")) == 4)
        assert receiver.events("/a") == []  # A waits on its retries; B was not held up
        yield wait_for(lambda: delivery.delivered == 8)
        assert [e["data"]["i"] for e in receiver.events("/a")] == [0, 1, 2, 3]
        assert [e["data"]["i"] for e in receiver.events("/b")] == [10, 11, 12, 13]
        first = [h["at"] for h in receiver.hits if h["path"] == "/a"][:3]
        assert first[1] - first[0] >= 0.45 and first[2] - first[1] >= 0.95  # 0.5 s, doubling
        assert (delivery.failed, delivery.retried, delivery.dropped) == (2, 2, 0)

    @defer.inlineCallbacks
    def test_give_up_is_counted_and_the_next_event_proceeds(self) -> Any:
        receiver = Receiver()
        receiver.status["/down"] = 500
        port = self.listen(receiver)
        delivery = self.delivery(first_backoff=0.01, max_attempts=3)
        delivery.call_event("cc1", f"http://127.0.0.1:{port}/down", "PlayFailed", data(0))
        delivery.call_event("cc1", f"http://127.0.0.1:{port}/ok", "CallDisconnected", data(1))
        yield wait_for(lambda: delivery.delivered == 1)
        assert [h["path"] for h in receiver.hits] == ["/down"] * 3 + ["/ok"]
        assert (delivery.failed, delivery.retried, delivery.dropped) == (3, 2, 1)

    @defer.inlineCallbacks
    def test_connection_failures_are_retried_then_dropped(self) -> Any:
        closed = R.listenTCP(0, server.Site(Receiver()), interface="127.0.0.1")
        port = closed.getHost().port
        yield closed.stopListening()
        delivery = self.delivery(first_backoff=0.01, max_attempts=3)
        delivery.call_event("cc1", f"http://127.0.0.1:{port}/cb", "PlayStarted", data(0))
        yield wait_for(lambda: delivery.dropped == 1)
        assert (delivery.delivered, delivery.failed, delivery.retried) == (0, 3, 2)

    @defer.inlineCallbacks
    def test_after_call_closed_queued_events_go_out_and_later_ones_are_dropped(self) -> Any:
        receiver = Receiver()
        receiver.fail["/cb"] = 1
        url = f"http://127.0.0.1:{self.listen(receiver)}/cb"
        delivery = self.delivery(first_backoff=0.05)
        delivery.call_event("cc1", url, "PlayCompleted", data(0))
        delivery.call_event("cc1", url, "CallDisconnected", data(1))
        delivery.call_closed("cc1")
        delivery.call_event("cc1", url, "PlayCompleted", data(2))
        assert delivery.dropped == 1
        yield wait_for(lambda: delivery.delivered == 2)
        names = [e["type"] for e in receiver.events()]
        assert names[-1] == "Microsoft.Communication.CallDisconnected" and len(names) == 2
        assert delivery.stats()["queued"] == 0

    @defer.inlineCallbacks
    def test_queue_overflow_is_dropped_and_counted(self) -> Any:
        receiver = Receiver()
        url = f"http://127.0.0.1:{self.listen(receiver)}/cb"
        delivery = self.delivery(queue_limit=3)
        for i in range(5):
            delivery.call_event("cc1", url, "ParticipantsUpdated", data(i))
        assert delivery.dropped == 2
        yield wait_for(lambda: delivery.delivered == 3)
        assert [e["data"]["i"] for e in receiver.events()] == [0, 1, 2]

    @defer.inlineCallbacks
    def test_stop_cancels_pending_retries_and_refuses_new_events(self) -> Any:
        receiver = Receiver()
        receiver.status["/cb"] = 503
        url = f"http://127.0.0.1:{self.listen(receiver)}/cb"
        delivery = self.delivery()
        delivery.call_event("cc1", url, "PlayStarted", data(0))
        yield wait_for(lambda: delivery.retried == 1)
        yield delivery.stop(grace=0.05)
        assert delivery.dropped == 1
        delivery.call_event("cc1", url, "PlayStarted", data(1))
        assert delivery.dropped == 2 and len(receiver.hits) == 1


    @defer.inlineCallbacks
    def test_stop_lets_queued_events_go_out_within_the_grace_time(self) -> Any:
        receiver = Receiver()
        url = f"http://127.0.0.1:{self.listen(receiver)}/cb"
        delivery = self.delivery()
        delivery.call_event("cc1", url, "PlayCompleted", data(0))
        delivery.call_event("cc1", url, "CallDisconnected", data(1))
        yield delivery.stop(grace=5.0)
        assert (delivery.delivered, delivery.dropped) == (2, 0)
        assert [e["data"]["i"] for e in receiver.events()] == [0, 1]


class GuardTests(DeliveryCase):
    @defer.inlineCallbacks
    def test_refused_addresses_get_no_traffic(self) -> Any:
        receiver = Receiver()
        port = self.listen(receiver)
        delivery = self.delivery(insecure=False)
        for host in ("127.0.0.1", "[::ffff:127.0.0.1]", "169.254.169.254", "10.0.0.1",
                     "100.64.0.1", "[::1]"):
            url = f"https://{host}:{port}/cb"
            assert delivery.check_url(url) is not None
            delivery.call_event("cc1", url, "PlayStarted", data(0))
        delivery.call_event("cc1", f"http://127.0.0.1:{port}/cb", "PlayStarted", data(0))
        assert delivery.dropped == 7
        yield sleep(0.1)
        assert receiver.hits == [] and delivery.failed == 0

    @defer.inlineCallbacks
    def test_a_name_resolving_to_loopback_is_refused_at_send_time(self) -> Any:
        receiver = Receiver()
        cert, key = self.cert()
        port = self.listen(receiver, tls=(cert, key))
        delivery = self.delivery(insecure=False, ca=cert)
        url = f"https://localhost:{port}/cb"
        assert delivery.check_url(url) is None  # a name passes the static check...
        delivery.call_event("cc1", url, "PlayStarted", data(0))
        yield wait_for(lambda: delivery.dropped == 1)  # ...its resolved address does not
        assert receiver.hits == []
        assert (delivery.failed, delivery.retried) == (1, 0)  # refused for good, not retried


class TlsTests(DeliveryCase):
    @defer.inlineCallbacks
    def test_https_with_the_callback_ca_by_address_and_by_name(self) -> Any:
        receiver = Receiver()
        cert, key = self.cert()
        port = self.listen(receiver, tls=(cert, key))
        delivery = self.delivery(ca=cert)
        delivery.call_event("cc1", f"https://127.0.0.1:{port}/cb", "PlayStarted", data(0))
        delivery.call_event("cc1", f"https://localhost:{port}/cb", "PlayCompleted", data(1))
        yield wait_for(lambda: delivery.delivered == 2)
        assert [e["data"]["i"] for e in receiver.events()] == [0, 1]

    @defer.inlineCallbacks
    def test_unknown_ca_is_refused(self) -> Any:
        receiver = Receiver()
        port = self.listen(receiver, tls=self.cert())
        delivery = self.delivery(ca=None, max_attempts=1)
        with self.assertLogs("gateway.callbacks", "WARNING") as logs:
            delivery.call_event("cc1", f"https://127.0.0.1:{port}/cb", "PlayStarted", data(0))
            yield wait_for(lambda: delivery.dropped == 1)
        assert "certificate verify failed" in logs.output[-1]
        assert receiver.hits == [] and delivery.delivered == 0

    @defer.inlineCallbacks
    def test_host_name_is_verified(self) -> Any:
        receiver = Receiver()
        cert, key = self.cert()  # valid for localhost, 127.0.0.1, ::1 only
        try:
            port = self.listen(receiver, tls=(cert, key), interface="127.0.0.2")
        except Exception as exc:  # some sandboxes have only 127.0.0.1
            raise unittest.SkipTest(f"cannot listen on 127.0.0.2: {exc}") from exc
        delivery = self.delivery(ca=cert, max_attempts=1)
        with self.assertLogs("gateway.callbacks", "WARNING") as logs:
            delivery.call_event("cc1", f"https://127.0.0.2:{port}/cb", "PlayStarted", data(0))
            yield wait_for(lambda: delivery.dropped == 1)
        assert "VerificationError" in logs.output[-1]  # chain fine, name wrong
        assert receiver.hits == [] and delivery.delivered == 0


class IncomingCallTests(DeliveryCase):
    SUBJECT = "/caller/4:+15551230000/recipient/4:+15559870000"

    def call(self, n: int) -> dict[str, object]:
        return {"serverCallId": f"sc{n}", "incomingCallContext": f"ctx{n}", "correlationId": "c"}

    @defer.inlineCallbacks
    def test_validation_handshake_comes_first_and_only_once(self) -> Any:
        receiver = Receiver("echo")
        receiver.fail["/in"] = 0
        url = f"http://127.0.0.1:{self.listen(receiver)}/in"
        delivery = self.delivery((url,))
        delivery.incoming_call(self.call(1), self.SUBJECT)
        yield wait_for(lambda: delivery.delivered == 1)
        receiver.fail["/in"] = 1  # the second IncomingCall needs a retry
        delivery.incoming_call(self.call(2), self.SUBJECT)
        yield wait_for(lambda: delivery.delivered == 2)
        kinds = [h["headers"]["aeg-event-type"] for h in receiver.hits]
        assert kinds == ["SubscriptionValidation", "Notification", "Notification", "Notification"]
        check = receiver.hits[0]
        assert check["body"][0]["eventType"] == "Microsoft.EventGrid.SubscriptionValidationEvent"
        assert check["headers"]["aeg-data-version"] == "2"
        first = receiver.hits[1]
        assert first["body"][0]["eventType"] == "Microsoft.Communication.IncomingCall"
        assert first["body"][0]["subject"] == self.SUBJECT
        assert first["body"][0]["data"]["serverCallId"] == "sc1"
        assert first["headers"]["content-type"] == "application/json"
        assert first["headers"]["aeg-data-version"] == "1.0"
        assert first["headers"]["aeg-metadata-version"] == "1"
        counts = [h["headers"]["aeg-delivery-count"] for h in receiver.hits[1:]]
        assert counts == ["0", "0", "1"]

    @defer.inlineCallbacks
    def test_no_delivery_to_an_endpoint_that_does_not_echo_the_code(self) -> Any:
        wrong, reject = Receiver("wrong"), Receiver("reject")
        urls = (f"http://127.0.0.1:{self.listen(wrong)}/in",
                f"http://127.0.0.1:{self.listen(reject)}/in")
        delivery = self.delivery(urls)
        delivery.incoming_call(self.call(1), self.SUBJECT)
        yield wait_for(lambda: delivery.dropped == 2)
        delivery.incoming_call(self.call(2), self.SUBJECT)  # the handshake is tried again
        yield wait_for(lambda: delivery.dropped == 4)
        for receiver in (wrong, reject):
            kinds = [h["headers"]["aeg-event-type"] for h in receiver.hits]
            assert kinds == ["SubscriptionValidation", "SubscriptionValidation"]
            codes = {h["body"][0]["data"]["validationCode"] for h in receiver.hits}
            assert len(codes) == 2  # a fresh code per handshake
        assert delivery.delivered == 0

    @defer.inlineCallbacks
    def test_each_webhook_is_validated_on_its_own(self) -> Any:
        good, bad = Receiver("echo"), Receiver("wrong")
        good_url = f"http://127.0.0.1:{self.listen(good)}/in"
        bad_url = f"http://127.0.0.1:{self.listen(bad)}/in"
        delivery = self.delivery((bad_url, good_url))
        delivery.incoming_call(self.call(1), self.SUBJECT)
        yield wait_for(lambda: delivery.delivered == 1 and delivery.dropped == 1)
        assert [e["data"]["serverCallId"] for e in good.events()] == ["sc1"]
        assert bad.events() == []

    @defer.inlineCallbacks
    def test_refused_webhook_url_gets_nothing(self) -> Any:
        receiver = Receiver("echo")
        url = f"https://127.0.0.1:{self.listen(receiver)}/in"
        delivery = self.delivery((url,), insecure=False)
        delivery.incoming_call(self.call(1), self.SUBJECT)
        assert delivery.dropped == 1
        yield sleep(0.1)
        assert receiver.hits == []
