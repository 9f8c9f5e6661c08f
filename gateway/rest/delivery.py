"""Delivers callback events and IncomingCall webhooks to apps over HTTP(S) (ACS_REST.md 7.1, 8).

The Twisted adapter around the pure builders of gateway.rest.events. Invariants:

- One ordered queue per call and one POST in flight per call, so events leave in the order they
  were queued (section 7.1: causal order, CallDisconnected last). A failed attempt (connection
  error, timeout, non-2xx) is retried after 0.5 s, doubling, 5 attempts in all; then the event is
  dropped and the next one goes. After ``call_closed`` the queued events still go out, then the
  queue is forgotten and later events for that call are dropped.
- Every body is a JSON array holding one event, ``Content-Type: application/json``.
- SSRF guard: https:// only, and no loopback, private, link-local (169.254.169.254 included),
  CGNAT, unspecified, multicast, broadcast or otherwise non-global address, whether written in
  the URL (IPv4-mapped and other IPv6 spellings included) or resolved from a name at connect
  time; ``insecure`` ([rest] allow_insecure_callbacks) lifts both rules for tests and labs. TLS
  always verifies the chain (system store plus [rest] callback_ca) and the host name.
- IncomingCall goes to every [rest] incoming_call_webhooks URL, each validated first by the Event
  Grid SubscriptionValidation handshake (section 8.3): 200 with {"validationResponse": code}.
  Until a URL has answered so, IncomingCall events to it are dropped; the handshake is repeated
  on the next incoming call.
- Everything a receiver sends back is capped (BODY_CAP) and every attempt has a deadline.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import socket
import ssl as stdlib_ssl
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from OpenSSL import crypto
from twisted.internet import ssl
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS
from twisted.internet.interfaces import (
    IConsumer,
    IProtocol,
    IProtocolFactory,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.web.client import URI, Agent, HTTPConnectionPool, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory, IBodyProducer, IResponse
from zope.interface import implementer

from gateway import __version__
from gateway.config import RestConfig
from gateway.rest.events import cloud_event, incoming_call_event, validation_event

__all__ = ["Delivery", "address_problem", "url_problem"]

MAX_ATTEMPTS: Final = 5
FIRST_BACKOFF: Final = 0.5  # seconds before the first retry; doubles each time
ATTEMPT_TIMEOUT: Final = 10.0  # connect + request + response body, per attempt
CONNECT_TIMEOUT: Final = 5.0
QUEUE_LIMIT: Final = 1000  # queued events per call or webhook URL
BODY_CAP: Final = 64 * 1024  # response bytes kept (the rest is read and discarded)
LATENCY_SAMPLES: Final = 1024
PERSISTENT_PER_HOST: Final = 64
_CLOSED_KEYS: Final = 4096  # recently closed calls remembered, to drop late events
_USER_AGENT: Final = f"acs-gateway/{__version__}"
_SUBSCRIPTION: Final = "ACS-GATEWAY-INCOMINGCALL"

log = logging.getLogger("gateway.callbacks")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_CGNAT: Final = ipaddress.IPv4Network("100.64.0.0/10")
_NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")
_METADATA: Final = ipaddress.IPv4Address("169.254.169.254")
_BROADCAST: Final = ipaddress.IPv4Address("255.255.255.255")
_HOSTNAME: Final = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)(?:\.(?!-)[a-z0-9_-]{1,63}(?<!-))*\.?")
#: Address classes refused as callback destinations, first match names the reason.
_CLASSES: Final[tuple[tuple[str, Callable[[IPAddress], bool]], ...]] = (
    ("unspecified", lambda ip: ip.is_unspecified),
    ("loopback", lambda ip: ip.is_loopback),
    ("cloud metadata (link-local)", lambda ip: ip == _METADATA),
    ("link-local", lambda ip: ip.is_link_local),
    ("carrier-grade NAT", lambda ip: ip in _CGNAT),
    ("broadcast", lambda ip: ip == _BROADCAST),
    ("multicast", lambda ip: ip.is_multicast),
    ("reserved", lambda ip: ip.is_reserved),
    ("private", lambda ip: ip.is_private),
    ("non-global", lambda ip: not ip.is_global),
)


def address_problem(ip: IPAddress) -> str | None:
    """The class of ``ip`` that may not receive callbacks (SSRF guard), or None if public."""
    if isinstance(ip, ipaddress.IPv6Address) and not (ip.is_loopback or ip.is_unspecified):
        inner = _embedded_v4(ip)
        if inner is not None:
            problem = address_problem(inner)
            return f"{problem} (IPv4 {inner} inside IPv6)" if problem else None
    return next((label for label, test in _CLASSES if test(ip)), None)


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 spelling leads to: mapped, 6to4, NAT64, IPv4-compatible."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64 or int(ip) >> 32 == 0:
        return ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF)
    return None


def url_problem(url: str, insecure: bool) -> str | None:
    """Why ``url`` may not receive callbacks, or None. Names are judged again when resolved."""
    if not url.isascii() or any(c <= " " or c == "\x7f" for c in url):
        return "the URL must be ASCII without spaces or control characters"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"bad URL: {exc}"
    if parts.scheme != "https" and not (insecure and parts.scheme == "http"):
        return "only https:// URLs are allowed" if not insecure else "expected http(s)://"
    host = parts.hostname
    if not host:
        return "the URL has no host"
    if parts.username is not None or parts.password is not None:
        return "user info in the URL is not allowed"
    if port == 0:
        return "port 0 is not allowed"
    if "%" in host:
        return "IPv6 zone ids are not allowed"
    ip = _ip_literal(host)
    if ip is None:
        if parts.netloc.rpartition("@")[2].startswith("["):
            return f"bad IPv6 literal {host!r}"
        if not _HOSTNAME.fullmatch(host):
            return f"bad host name {host!r}"
        if _is_inet_aton(host):
            return f"{host!r} is an IPv4 address in a non-standard spelling"
        return None
    problem = None if insecure else address_problem(ip)
    return f"{problem} address {ip} is not allowed" if problem else None


def _ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _is_inet_aton(host: str) -> bool:
    try:
        socket.inet_aton(host)
    except OSError:
        return False
    return True


def trust_root(ca: Path | None) -> Any:
    """The system trust store, plus every certificate in the PEM bundle ``ca`` if given."""
    if ca is None:
        return ssl.platformTrust()  # type: ignore[no-untyped-call]
    pems = [ca.read_bytes()]
    paths = stdlib_ssl.get_default_verify_paths()
    system = Path(paths.cafile or paths.openssl_cafile)
    if system.is_file():
        pems.insert(0, system.read_bytes())
    else:
        log.warning("no system CA bundle at %s: trusting only %s", system, ca)
    certs = []
    for pem in pems:
        for block in re.findall(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", pem,
                                re.DOTALL):
            try:
                x509 = crypto.load_certificate(crypto.FILETYPE_PEM, block)
                certs.append(ssl.Certificate(x509))  # type: ignore[no-untyped-call]
            except crypto.Error:
                log.debug("skipping an unreadable certificate in %s", ca)
    return ssl.trustRootFromCertificates(certs)  # type: ignore[no-untyped-call]


class _Refused(Exception):
    """The destination's resolved address is one the SSRF guard refuses (not retried)."""


@implementer(IStreamClientEndpoint)
class _GuardedEndpoint:
    """TCP to ``host``: resolved now, every address checked, connected by address."""

    def __init__(self, reactor: Any, host: str, port: int, insecure: bool) -> None:
        self._reactor, self._host, self._port, self._insecure = reactor, host, port, insecure

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:  # noqa: N803
        literal = _ip_literal(self._host)
        found: Deferred[list[IPAddress]]
        if literal is not None:
            found = succeed([literal])
        else:
            pool = self._reactor.getThreadPool()
            found = deferToThreadPool(self._reactor, pool, _resolve, self._host, self._port)
        return found.addCallback(self._checked).addCallback(self._connect, protocolFactory)

    def _checked(self, addresses: list[IPAddress]) -> list[IPAddress]:
        for ip in addresses:
            problem = None if self._insecure else address_problem(ip)
            if problem:
                raise _Refused(f"{self._host} resolves to {problem} address {ip}")
        if not addresses:
            raise _Refused(f"{self._host} resolves to no address")
        return addresses

    def _connect(self, addresses: list[IPAddress], factory: IProtocolFactory) -> Deferred[Any]:
        ip, rest = addresses[0], addresses[1:]
        kind = TCP6ClientEndpoint if ip.version == 6 else TCP4ClientEndpoint
        attempt: Deferred[Any] = kind(self._reactor, str(ip), self._port, CONNECT_TIMEOUT).connect(
            factory
        )
        if rest:  # the next address, unless the attempt was cancelled
            attempt.addErrback(
                lambda f: f if isinstance(f.value, CancelledError) else self._connect(rest, factory)
            )
        return attempt


def _resolve(host: str, port: int) -> list[IPAddress]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(ipaddress.ip_address(str(i[4][0]).split("%")[0]) for i in infos))


@implementer(IAgentEndpointFactory)
class _Endpoints:
    """The Agent's way out: guarded TCP, wrapped in verified TLS for https."""

    def __init__(self, reactor: Any, trust: Any, insecure: bool) -> None:
        self._reactor, self._trust, self._insecure = reactor, trust, insecure
        self._creators: dict[str, Any] = {}

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:  # noqa: N802
        host = uri.host.decode("ascii")
        endpoint = _GuardedEndpoint(self._reactor, host, uri.port, self._insecure)
        if uri.scheme != b"https":
            return endpoint
        creator = self._creators.get(host)
        if creator is None:
            if len(self._creators) >= 256:
                self._creators.clear()
            creator = ssl.optionsForClientTLS(host, trustRoot=self._trust)
            self._creators[host] = creator
        return wrapClientTLS(creator, endpoint)


@implementer(IBodyProducer)
class _Body:
    """A request body given as bytes."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.length = len(data)

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:  # noqa: N802
        consumer.write(self._data)
        return succeed(None)

    def stopProducing(self) -> None:  # noqa: N802
        """Nothing to stop, pause or resume: the body is written at once."""

    pauseProducing = resumeProducing = stopProducing


class _Collect(Protocol):
    """Reads a response body, keeping at most BODY_CAP bytes."""

    def __init__(self) -> None:
        self.done: Deferred[bytes] = Deferred(lambda _: self._abort())
        self._chunks: list[bytes] = []
        self._room = BODY_CAP

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        if self._room > 0:
            self._chunks.append(data[: self._room])
            self._room -= len(self._chunks[-1])

    def connectionLost(self, reason: Failure = connectionDone) -> None:  # noqa: N802
        if self.done.called:
            return
        if isinstance(reason.value, ResponseDone | PotentialDataLoss):
            self.done.callback(b"".join(self._chunks))
        else:
            self.done.errback(reason)

    def _abort(self) -> None:
        close = getattr(self.transport, "loseConnection", None)
        if close is not None:
            close()


@dataclass(slots=True)
class _Job:
    url: str
    body: bytes
    kind: Literal["event", "incoming", "validate"]
    name: str  # event name, for logs
    queued_at: float
    code: str = ""  # what a "validate" job expects echoed back
    attempts: int = 0


@dataclass(slots=True)
class _Queue:
    key: str  # the call key, or the webhook URL
    webhook: bool = False
    jobs: deque[_Job] = field(default_factory=deque)
    busy: bool = False  # an attempt is in flight or a retry is scheduled
    pumping: bool = False
    overflowed: bool = False
    pending: Deferred[Any] | None = None
    timer: Any = None  # IDelayedCall of the scheduled retry
    validated: bool = False  # webhooks: answered the handshake
    validating: bool = False  # webhooks: a handshake is queued or in flight


class Delivery:
    """Ordered, retried, SSRF-guarded delivery of callback events and IncomingCall webhooks.

    Counters: ``delivered`` (events answered 2xx), ``failed`` (failed attempts, handshakes
    included), ``retried`` (retries scheduled), ``dropped`` (events given up: attempts exhausted,
    queue full, URL refused, webhook not validated, call already closed, gateway stopping).
    ``latency`` keeps the last LATENCY_SAMPLES enqueue-to-2xx times in seconds.
    """

    def __init__(
        self,
        reactor: Any,
        rest: RestConfig,
        *,
        ca: Path | None,
        insecure: bool,
        first_backoff: float = FIRST_BACKOFF,
        max_attempts: int = MAX_ATTEMPTS,
        queue_limit: int = QUEUE_LIMIT,
    ) -> None:
        self._reactor = reactor
        self._backoff, self._max_attempts = first_backoff, max_attempts
        self._queue_limit = queue_limit
        self._webhooks = rest.incoming_call_webhooks
        self._insecure = insecure
        self._pool = HTTPConnectionPool(reactor, persistent=True)  # type: ignore[no-untyped-call]
        self._pool.maxPersistentPerHost = PERSISTENT_PER_HOST
        endpoints = _Endpoints(reactor, trust_root(ca), insecure)
        self._agent = Agent.usingEndpointFactory(  # type: ignore[no-untyped-call]
            reactor, endpoints, pool=self._pool
        )
        self._calls: dict[str, _Queue] = {}
        self._hooks: dict[str, _Queue] = {}
        self._closed: OrderedDict[str, None] = OrderedDict()
        self._idle_waiters: list[Deferred[None]] = []
        self._stopping = False
        self._stopped = False
        self.delivered = self.failed = self.retried = self.dropped = 0
        self.latency: deque[float] = deque(maxlen=LATENCY_SAMPLES)

    def check_url(self, url: str) -> str | None:
        """Why ``url`` is refused as a callback or webhook destination (SSRF guard), or None."""
        return url_problem(url, self._insecure)

    def call_event(self, call_key: str, url: str, name: str, data: Mapping[str, object]) -> None:
        """Queue CloudEvent ``Microsoft.Communication.<name>`` for call ``call_key`` (its
        callConnectionId) to ``url``, behind the call's earlier events."""
        problem = "the gateway is stopping" if self._stopping else None
        if call_key in self._closed:
            problem = "the call is closed (CallDisconnected was its last event)"
        problem = problem or self.check_url(url)
        if problem:
            self.dropped += 1
            log.warning("call %s: %s to %s dropped: %s", call_key, name, url, problem)
            return
        queue = self._calls.get(call_key)
        if queue is None:
            queue = self._calls[call_key] = _Queue(call_key)
        now = self._reactor.seconds()
        body = _json(cloud_event(call_key, name, data, now))
        self._enqueue(queue, _Job(url, body, "event", name, now))

    def call_closed(self, call_key: str) -> None:
        """No more events for ``call_key``: queued ones still go out, later ones are dropped."""
        self._closed[call_key] = None
        while len(self._closed) > _CLOSED_KEYS:
            self._closed.popitem(last=False)

    def incoming_call(self, data: Mapping[str, object], subject: str) -> None:
        """Event Grid IncomingCall to every [rest] incoming_call_webhooks URL (section 8)."""
        now = self._reactor.seconds()
        body = _json(incoming_call_event(data, subject, now))
        for url in self._webhooks:
            problem = "the gateway is stopping" if self._stopping else self.check_url(url)
            if problem:
                self.dropped += 1
                log.warning("IncomingCall %s to webhook %s dropped: %s", subject, url, problem)
                continue
            hook = self._hooks.get(url)
            if hook is None:
                hook = self._hooks[url] = _Queue(url, webhook=True)
            if not hook.validated and not hook.validating:
                hook.validating = True
                code = str(uuid.uuid4())
                check = _json(validation_event(code, "", now))
                job = _Job(url, check, "validate", "SubscriptionValidation", now, code)
                hook.validating = self._enqueue(hook, job)
            self._enqueue(hook, _Job(url, body, "incoming", "IncomingCall", now))

    def stats(self) -> dict[str, object]:
        """Counters, queued events and delivery latency (ms) for status pages and the bench."""
        samples = sorted(self.latency)
        queued = sum(len(q.jobs) for q in (*self._calls.values(), *self._hooks.values()))
        return {
            "delivered": self.delivered, "failed": self.failed, "retried": self.retried,
            "dropped": self.dropped, "queued": queued,
            "latency_ms_p50": samples[len(samples) // 2] * 1000 if samples else None,
            "latency_ms_max": samples[-1] * 1000 if samples else None,
        }

    def stop(self, grace: float = 2.0) -> Deferred[None]:
        """Refuse new events, let queued ones go out for up to ``grace`` seconds, then cancel
        the rest (counted dropped) and close the kept-alive connections."""
        self._stopping = True
        idle: Deferred[None] = Deferred()
        if self._idle():
            idle.callback(None)
        else:
            self._idle_waiters.append(idle)
            idle.addTimeout(grace, self._reactor)
        idle.addErrback(lambda _: None)
        return idle.addCallback(self._halt)

    def _halt(self, _: object) -> Deferred[None]:
        self._stopped = True
        self._idle_waiters.clear()
        for queue in (*self._calls.values(), *self._hooks.values()):
            if queue.timer is not None and queue.timer.active():
                queue.timer.cancel()
            if queue.pending is not None:
                queue.pending.cancel()
            self.dropped += sum(job.kind != "validate" for job in queue.jobs)
            queue.jobs.clear()
            queue.busy = queue.validating = False
        self._calls.clear()
        done: Deferred[None] = self._pool.closeCachedConnections()  # type: ignore[no-untyped-call]
        return done

    def _enqueue(self, queue: _Queue, job: _Job) -> bool:
        """Append ``job`` and start it if the queue is idle; False if the queue was full."""
        if len(queue.jobs) >= self._queue_limit:
            self.dropped += 1
            if not queue.overflowed:
                queue.overflowed = True
                log.warning("%s: queue full (%d events), dropping %s and later overflow",
                            _who(queue), self._queue_limit, job.name)
            return False
        queue.jobs.append(job)
        self._pump(queue)
        return True

    def _pump(self, queue: _Queue) -> None:
        """Start the head job unless one is in flight; re-entrant calls are absorbed."""
        if queue.pumping:
            return
        queue.pumping = True
        try:
            while not queue.busy and queue.jobs and not self._stopped:
                job = queue.jobs[0]
                if job.kind == "incoming" and not queue.validated:
                    queue.jobs.popleft()
                    self.dropped += 1
                    log.warning("IncomingCall to webhook %s dropped: the URL has not answered "
                                "the validation handshake (retried on the next call)", queue.key)
                    continue
                queue.busy = True
                self._attempt(queue, job)
        finally:
            queue.pumping = False
        if not queue.busy and not queue.jobs:
            queue.overflowed = False
            if not queue.webhook and self._calls.get(queue.key) is queue:
                del self._calls[queue.key]
            if self._idle_waiters and self._idle():
                waiters, self._idle_waiters = self._idle_waiters, []
                for waiter in waiters:
                    waiter.callback(None)

    def _idle(self) -> bool:
        return not any(q.busy or q.jobs for q in (*self._calls.values(), *self._hooks.values()))

    def _attempt(self, queue: _Queue, job: _Job) -> None:
        queue.timer = None
        job.attempts += 1
        headers = Headers({"Content-Type": ["application/json"], "User-Agent": [_USER_AGENT]})
        if job.kind != "event":
            kind = "Notification" if job.kind == "incoming" else "SubscriptionValidation"
            headers.setRawHeaders("aeg-event-type", [kind])
            headers.setRawHeaders("aeg-subscription-name", [_SUBSCRIPTION])
            headers.setRawHeaders("aeg-delivery-count", [str(job.attempts - 1)])
            headers.setRawHeaders("aeg-data-version", ["1.0" if job.kind == "incoming" else "2"])
            headers.setRawHeaders("aeg-metadata-version", ["1"])
        sent = self._agent.request(b"POST", job.url.encode("ascii"), headers, _Body(job.body))
        answer = sent.addCallback(_read).addTimeout(ATTEMPT_TIMEOUT, self._reactor)
        queue.pending = answer
        answer.addCallbacks(self._answered, self._failed, (queue, job), None, (queue, job))

    def _answered(self, answer: tuple[int, bytes], queue: _Queue, job: _Job) -> None:
        queue.pending = None
        status, body = answer
        if job.kind == "validate":
            echoed = _validation_response(body) if status == 200 else None
            why = f"HTTP {status}, validationResponse {echoed!r}"
            self._handshake_done(queue, job, echoed == job.code, why)
        elif 200 <= status < 300:
            self.delivered += 1
            self.latency.append(self._reactor.seconds() - job.queued_at)
            log.debug("%s: %s delivered to %s", _who(queue), job.name, job.url)
            self._next(queue)
        else:
            self._retry_or_drop(queue, job, f"HTTP {status}")

    def _failed(self, failure: Failure, queue: _Queue, job: _Job) -> None:
        queue.pending = None
        if self._stopped:
            return
        why = f"{type(failure.value).__name__}: {failure.getErrorMessage()}"
        if job.kind == "validate":
            self.failed += 1
            self._handshake_done(queue, job, False, why)
        elif isinstance(failure.value, _Refused):
            self.failed += 1
            self.dropped += 1
            log.warning("%s: %s to %s dropped: %s", _who(queue), job.name, job.url, why)
            self._next(queue)
        else:
            self._retry_or_drop(queue, job, why)

    def _handshake_done(self, queue: _Queue, job: _Job, ok: bool, why: str) -> None:
        queue.validating = False
        queue.validated = ok
        if ok:
            log.info("webhook %s validated (Event Grid SubscriptionValidation)", job.url)
        else:
            log.warning("webhook %s did not validate (%s): IncomingCall events are not delivered "
                        "to it until it answers 200 {\"validationResponse\": code}", job.url, why)
        self._next(queue)

    def _retry_or_drop(self, queue: _Queue, job: _Job, why: str) -> None:
        self.failed += 1
        if job.attempts < self._max_attempts:
            self.retried += 1
            delay = self._backoff * 2 ** (job.attempts - 1)
            log.info("%s: %s to %s failed (%s), attempt %d/%d, retrying in %.1f s",
                     _who(queue), job.name, job.url, why, job.attempts, self._max_attempts, delay)
            queue.timer = self._reactor.callLater(delay, self._attempt, queue, job)
            return
        self.dropped += 1
        log.warning("%s: %s to %s dropped after %d attempts (%s)",
                    _who(queue), job.name, job.url, job.attempts, why)
        self._next(queue)

    def _next(self, queue: _Queue) -> None:
        queue.jobs.popleft()
        queue.busy = False
        self._pump(queue)


def _read(response: IResponse) -> Deferred[tuple[int, bytes]]:
    collect = _Collect()
    response.deliverBody(collect)  # type: ignore[no-untyped-call]
    code = response.code
    return collect.done.addCallback(lambda body: (code, body))


def _validation_response(body: bytes) -> str | None:
    try:
        answer = json.loads(body)
    except ValueError:
        return None
    if not isinstance(answer, dict):
        return None
    value = next((v for k, v in answer.items() if k.lower() == "validationresponse"), None)
    return value if isinstance(value, str) else None


def _json(event: dict[str, object]) -> bytes:
    """The POST body: a JSON array holding the one event (sections 7.1, 8.1)."""
    return json.dumps([event], separators=(",", ":")).encode()


def _who(queue: _Queue) -> str:
    return f"webhook {queue.key}" if queue.webhook else f"call {queue.key}"
