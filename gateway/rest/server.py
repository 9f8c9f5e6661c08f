"""The HTTPS server of the REST surface: twisted.web in front of the Call Automation Api.

For every request :class:`RestResource` (a leaf resource) reads the raw body (capped), checks the
HMAC signature (gateway.rest.hmac) over the raw request-target and body, checks ``api-version``,
routes the percent-encoded path (:func:`route`, the table in rest-spec.md), parses the JSON body,
applies repeatability (gateway.rest.repeat) when the request carries its headers, calls
``Api.handle`` and writes the answer: JSON with ``Content-Type: application/json;
charset=utf-8``, nothing on 204, ``x-ms-client-request-id`` echoed. A RestError becomes its
status and error body; any other exception is logged and answered 500 "InternalError" (the SDK
retries POSTs on 500, which repeatability makes safe). ``GET /recordings/{id}`` (same HMAC, no
api-version) streams ``Api.recording_file(id)`` as audio/wav. ``POST
/networkTraversal/:issueRelayConfiguration`` (same HMAC, its own api-version) is answered by the
:class:`~gateway.rest.relayconfig.RelayIssuer` given as ``relay`` (404 without one), not by the
Api. :func:`listen` serves HTTPS only.
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final, Protocol
from urllib.parse import parse_qsl, unquote

from twisted.internet.interfaces import IListeningPort, IReactorTime
from twisted.internet.task import Cooperator
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.client import FileBodyProducer
from twisted.web.resource import Resource

from gateway.config import RestConfig
from gateway.rest import relayconfig
from gateway.rest.errors import RestError
from gateway.rest.hmac import DEFAULT_SKEW, origin_form, parse_http_date, verify
from gateway.rest.relayconfig import RelayIssuer
from gateway.rest.repeat import Answer, RepeatStore
from gateway.tlsutil import server_options

__all__ = ["API_VERSIONS", "Api", "Reply", "RestResource", "Route", "listen", "make_site", "route"]

log = logging.getLogger("gateway.rest")

#: api-version values the SDK knows (ACS_REST.md section 1, the SDK's _api_versions.py).
API_VERSIONS: Final = frozenset(
    {"2023-03-06", "2023-10-15", "2024-04-15", "2024-09-15", "2025-05-15", "2025-06-15",
     "2026-03-12"}
)  # fmt: skip
MAX_BODY: Final = 1024 * 1024
IDLE_TIMEOUT: Final = 120.0  # seconds before an idle keep-alive connection is closed
JSON_TYPE: Final = "application/json; charset=utf-8"
DOWNLOAD: Final = "download_recording"  # the op of GET /recordings/{id}, served here

_CALL = "/calling/callConnections/(?P<call>[^/:]+)"
_CALL_ACTIONS = (
    "terminate|transferToParticipant|play|recognize|cancelAllMediaOperations|"
    "startContinuousDtmfRecognition|stopContinuousDtmfRecognition|sendDtmfTones|hold|unhold|"
    "startMediaStreaming|stopMediaStreaming|startTranscription|stopTranscription|"
    "updateTranscription"
)
_PARTICIPANT_ACTIONS = "add|remove|mute|unmute|gain|cancelAddParticipant|moveHere"
_RECORDING = "/calling/recordings/(?P<recording>[^/:]+)"
#: (raw path pattern, method -> op) as in rest-spec.md; named groups other than `action` are
#: the ids. Ids never contain a literal ':' (the SDK percent-encodes them), actions follow one.
_ROUTES: Final = tuple((re.compile(pattern), methods) for pattern, methods in (
    ("/calling/callConnections", {"POST": "create"}),
    ("/calling/callConnections:(?P<action>answer|redirect|reject|connect)", {"POST": "{action}"}),
    (_CALL, {"GET": "get_call", "DELETE": "hang_up"}),
    (f"{_CALL}:(?P<action>{_CALL_ACTIONS})", {"POST": "{action}"}),
    (f"{_CALL}/participants", {"GET": "list_participants"}),
    (f"{_CALL}/participants/(?P<participant>[^/]+)", {"GET": "get_participant"}),
    (f"{_CALL}/participants:(?P<action>{_PARTICIPANT_ACTIONS})",
     {"POST": "participants:{action}"}),
    ("/calling/recordings", {"POST": "start_recording"}),
    (_RECORDING, {"GET": "get_recording", "DELETE": "stop_recording"}),
    (f"{_RECORDING}:pause", {"POST": "pause_recording"}),
    (f"{_RECORDING}:resume", {"POST": "resume_recording"}),
    ("/recordings/(?P<recording>[^/]+)", {"GET": DOWNLOAD}),
    ("/networkTraversal/(?::|%3[Aa])issueRelayConfiguration", {"POST": relayconfig.OP}),
))  # fmt: skip
#: Routes whose api-version differs from API_VERSIONS (op -> the versions it accepts).
_OP_API_VERSIONS: Final = {relayconfig.OP: relayconfig.API_VERSIONS}


@dataclass(frozen=True, slots=True)
class Reply:
    """A successful answer of the Api."""

    status: int  # exact success status per ACS_REST.md section 6
    body: Mapping[str, object] | None  # JSON object or None (204 / empty 202)


class Api(Protocol):
    """What the server calls; gateway.rest.api implements it."""

    def handle(self, op: str, ids: Mapping[str, str], body: Mapping[str, object] | None) -> Reply:
        """Raise RestError for any refusal. Synchronous."""
        ...

    def recording_file(self, recording_id: str) -> Path | None:
        """The finished recording's file for GET /recordings/{id}, or None (404)."""
        ...


@dataclass(frozen=True, slots=True)
class Route:
    """Where a request goes: the Api op and the decoded ids taken from the path."""

    op: str
    ids: Mapping[str, str]


def route(method: str, raw_path: str) -> Route:
    """Route a percent-encoded path (no query); RestError 404 unknown path, 405 wrong method.

    The patterns match the raw path, so an action is split off at a literal ':' while an id the
    SDK percent-encoded (``4%3A%2B1555...``) keeps its ':'; ids are then decoded (pitfall 7).
    """
    for pattern, methods in _ROUTES:
        match = pattern.fullmatch(raw_path)
        if match is None:
            continue
        op = methods.get(method)
        if op is None:
            allowed = ", ".join(sorted(methods))
            raise RestError(405, "MethodNotAllowed", f"{method[:16]} not allowed; use {allowed}.")
        groups = match.groupdict()
        action = groups.pop("action", None)
        return Route(op.format(action=action), {k: unquote(v) for k, v in groups.items()})
    raise RestError(404, "NotFound", f"No such resource {raw_path[:200]!r}.")


class _Request(server.Request):
    """A request whose body is kept in memory up to MAX_BODY bytes, the rest discarded."""

    body_too_large = False
    _body: io.BytesIO  # set by gotLength, which Twisted calls before any chunk

    def gotLength(self, length: int | None) -> None:  # noqa: N802
        self.content = self._body = io.BytesIO()
        self.body_too_large = length is not None and length > MAX_BODY

    def handleContentChunk(self, data: bytes) -> None:  # noqa: N802
        if self.body_too_large or self._body.tell() + len(data) > MAX_BODY:
            self.body_too_large = True
        else:
            self._body.write(data)


class RestResource(Resource):
    """The whole REST surface as one leaf resource (`access_key` is the decoded key)."""

    isLeaf = True

    def __init__(self, api: Api, access_key: bytes, clock: IReactorTime, *,
                 repeat: RepeatStore | None = None, skew: float = DEFAULT_SKEW,
                 relay: RelayIssuer | None = None) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.api = api
        self.relay = relay
        self.access_key = access_key
        self.clock = clock
        self.repeat = RepeatStore() if repeat is None else repeat
        self.skew = skew
        # file downloads are read in slices scheduled on `clock`, not on the global reactor
        self._cooperator = Cooperator(scheduler=lambda work: clock.callLater(0, work))

    def render(self, request: server.Request) -> bytes | int:
        try:
            return self._render(request)
        except RestError as err:
            log.info("%s: refused: %s", _context(request), err)
            return _send(request, _error_answer(err))
        except Exception:
            log.exception("%s: REST request failed", _context(request))
            return _send(request, _internal_error())

    def _render(self, request: server.Request) -> bytes | int:
        method = (request.method or b"").decode("latin-1")
        target = (request.uri or b"").decode("latin-1")
        headers = _headers(request)
        body = _body(request)
        now = self.clock.seconds()
        verify(method, target, headers, body, self.access_key, now, self.skew)
        path, _, query = origin_form(target).partition("?")
        found = route(method, path)
        if found.op == DOWNLOAD:
            return self._download(request, found.ids["recording"])
        _check_api_version(query, _OP_API_VERSIONS.get(found.op, API_VERSIONS))
        parsed = _parse_json(body)
        ticket = self.repeat.begin(
            headers.get("repeatability-request-id"), headers.get("repeatability-first-sent"),
            method, path, body, now, client_now=parse_http_date(headers["x-ms-date"]))
        if ticket is not None and ticket.replay is not None:
            log.info("%s: replayed the answer to %s", _context(request), ticket.request_id)
            return _send(request, ticket.replay, repeatability=True)
        answer = self._execute(request, found, parsed)
        if ticket is not None:
            self.repeat.finish(ticket, answer)
        return _send(request, answer, repeatability=ticket is not None)

    def _execute(self, request: server.Request, found: Route,
                 body: Mapping[str, object] | None) -> Answer:
        try:
            if found.op == relayconfig.OP:
                return _reply_answer(self._relay(body))
            return _reply_answer(self.api.handle(found.op, found.ids, body))
        except RestError as err:
            log.info("%s: %s %s refused: %s", _context(request), found.op, dict(found.ids), err)
            return _error_answer(err)
        except Exception:
            log.exception("%s: %s %s failed", _context(request), found.op, dict(found.ids))
            return _internal_error()

    def _relay(self, body: Mapping[str, object] | None) -> Reply:
        if self.relay is None:
            raise RestError(404, "NotFound", "No TURN relay configuration is served here.")
        return Reply(200, self.relay.issue(body, self.clock.seconds()))

    def _download(self, request: server.Request, recording_id: str) -> bytes | int:
        path = self.api.recording_file(recording_id)
        if path is None:
            raise RestError(404, "8522", f"No recording file for {recording_id[:100]!r}.")
        try:
            file: IO[bytes] = path.open("rb")
        except OSError as exc:
            raise RestError(404, "8522", f"Recording file unavailable: {exc.strerror}.") from exc
        cooperator = self._cooperator
        producer = FileBodyProducer(file, cooperator=cooperator)  # type: ignore[no-untyped-call]
        request.setResponseCode(200)
        _set(request, "Content-Type", "audio/wav")
        _set(request, "Content-Length", str(producer.length))
        _echo_request_id(request)
        lost: list[Failure] = []

        def on_lost(reason: Failure) -> None:
            lost.append(reason)
            producer.stopProducing()  # type: ignore[no-untyped-call]  # closes the file

        def done(result: object) -> None:
            file.close()
            request.unregisterProducer()  # type: ignore[no-untyped-call]
            if isinstance(result, Failure):
                log.warning("%s: reading %s failed: %s", _context(request), path, result.value)
                request.loseConnection()  # type: ignore[no-untyped-call]  # short of Content-Length
            elif not lost:
                request.finish()  # type: ignore[no-untyped-call]

        request.notifyFinish().addErrback(on_lost)
        producer.startProducing(request).addBoth(done)  # type: ignore[no-untyped-call]
        request.registerProducer(producer, True)  # type: ignore[no-untyped-call]
        return server.NOT_DONE_YET


class QuietSite(server.Site):
    """twisted.web Site without tracebacks or Twisted's access log file (a request goes to
    the debug log); the REST surface's and the metrics endpoint's."""

    noisy = False
    displayTracebacks = False

    def log(self, request: Any) -> None:
        log.debug("%s -> %s", _context(request), request.code)


def make_site(api: Api, access_key: bytes, reactor: Any, *,
              relay: RelayIssuer | None = None) -> server.Site:
    """The twisted.web Site serving the REST surface (`access_key` is the decoded key;
    `relay` answers the TURN relay configuration route)."""
    return QuietSite(  # type: ignore[no-untyped-call]
        RestResource(api, access_key, reactor, relay=relay), requestFactory=_Request,
        parsePOSTFormSubmission=False, timeout=IDLE_TIMEOUT, reactor=reactor)


def listen(reactor: Any, rest: RestConfig, cert: Path, tls_key: Path, api: Api,
           access_key: bytes, *, relay: RelayIssuer | None = None) -> IListeningPort:
    """Serve the REST surface over HTTPS (only) on [rest] listen with the [tls] pair.

    TLS is layered by hand rather than with listenSSL so that its write buffering runs on
    `reactor` too (listenSSL's uses the global reactor), keeping the adapter reactor-agnostic.
    """
    site = make_site(api, access_key, reactor, relay=relay)
    options: Any = server_options(cert, tls_key)  # typed `object` by gateway.tlsutil
    tls = TLSMemoryBIOFactory(options, False, site, clock=reactor)
    port: IListeningPort = reactor.listenTCP(rest.listen.port, tls, interface=rest.listen.host)
    log.info("REST (HTTPS) listening on %s", port.getHost())
    return port


def _headers(request: server.Request) -> dict[str, str]:
    """Lower-case name -> value; repeated headers joined with ', ' (RFC 9110 section 5.3)."""
    return {
        name.decode("latin-1").lower(): ", ".join(value.decode("latin-1") for value in values)
        for name, values in request.requestHeaders.getAllRawHeaders()
    }


def _body(request: server.Request) -> bytes:
    if getattr(request, "body_too_large", False):
        raise RestError(413, "RequestEntityTooLarge", f"The body exceeds {MAX_BODY} bytes.")
    if request.content is None:
        return b""
    request.content.seek(0)
    data: bytes = request.content.read(MAX_BODY + 1)
    if len(data) > MAX_BODY:
        raise RestError(413, "RequestEntityTooLarge", f"The body exceeds {MAX_BODY} bytes.")
    return data


def _check_api_version(query: str, accepted: frozenset[str]) -> None:
    pairs = parse_qsl(query, keep_blank_values=True)
    versions = [value for name, value in pairs if name == "api-version"]
    if len(versions) != 1 or versions[0] not in accepted:
        given = ", ".join(v[:32] for v in versions) or "(missing)"
        known = ", ".join(sorted(accepted))
        raise RestError(400, "UnsupportedApiVersion",
                        f"api-version {given} is not supported; supported: {known}.")


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _parse_json(body: bytes) -> Mapping[str, object] | None:
    """The request's JSON object, None for an empty body (body-less POSTs, GET, DELETE)."""
    if not body:
        return None
    try:
        value = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise RestError(400, "8523", f"Malformed JSON body: {str(exc)[:200]}") from None
    if not isinstance(value, dict):
        raise RestError(400, "8523", "The request body must be a JSON object.")
    return value


def _jsonable(value: object) -> object:
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _json_answer(status: int, body: Mapping[str, object]) -> Answer:
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False,
                      default=_jsonable)
    return Answer(status, (("Content-Type", JSON_TYPE),), text.encode("utf-8"))


def _reply_answer(reply: Reply) -> Answer:
    if not 200 <= reply.status < 300:
        raise ValueError(f"Reply status {reply.status} is not a success (raise RestError)")
    if reply.body is None:
        return Answer(reply.status, (), b"")
    if reply.status == 204:
        raise ValueError("a 204 Reply cannot carry a body")
    return _json_answer(reply.status, reply.body)


def _error_answer(err: RestError) -> Answer:
    return _json_answer(err.status, err.body())


def _internal_error() -> Answer:
    return _error_answer(RestError(500, "InternalError", "The gateway failed on this request."))


def _send(request: server.Request, answer: Answer, *, repeatability: bool = False) -> bytes:
    request.setResponseCode(answer.status)
    for name, value in answer.headers:
        _set(request, name, value)
    if repeatability:
        _set(request, "Repeatability-Result", "accepted")
    _echo_request_id(request)
    if answer.status == 204:
        return b""
    _set(request, "Content-Length", str(len(answer.body)))
    return answer.body


def _set(request: server.Request, name: str, value: str) -> None:
    request.responseHeaders.setRawHeaders(name, [value])


def _echo_request_id(request: server.Request) -> None:
    values = request.requestHeaders.getRawHeaders("x-ms-client-request-id")
    if values and len(values[0]) <= 256:
        _set(request, "x-ms-client-request-id", values[0])


def _context(request: Any) -> str:
    """'METHOD /path (client request id)' for log lines."""
    method = (getattr(request, "method", None) or b"?").decode("latin-1")
    path = (getattr(request, "path", None) or b"?").decode("latin-1")[:200]
    ids = request.requestHeaders.getRawHeaders(b"x-ms-client-request-id") or [b"-"]
    return f"{method} {path} ({ids[0][:64].decode('latin-1')})"
