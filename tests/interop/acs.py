"""The app side of the REST tests: an Event Grid / CloudEvents webhook receiver, the ACS SDK
client built from the real ``acs-gateway connection-string``, raw signed requests, WAV files.

- :class:`EventReceiver` is the app's webhook: an HTTP (or, with ``tls_dir``, HTTPS) server
  on 127.0.0.1 taking POSTed JSON arrays at any path. It answers the Event Grid subscription
  validation handshake (ACS_REST.md 8.3) with ``{"validationResponse": code}``, records every
  event with its monotonic arrival time, and lets a test wait for one
  (:meth:`EventReceiver.wait_for`), list a call's events in arrival order
  (:meth:`EventReceiver.events`) or take the next IncomingCall (:meth:`EventReceiver.incoming`).
  A wait that times out raises AssertionError listing what did arrive.
- :func:`sdk_client` runs ``acs-gateway connection-string -c CONF`` (the real CLI) and builds
  ``CallAutomationClient.from_connection_string(conn, connection_verify=<gateway cert>)``, as an
  unmodified app would.
- :func:`signed_request` sends one raw HTTPS request signed with the access-key HMAC rule of
  ACS_REST.md section 2 (or deliberately mis-signed), for the bad-input cases the SDK cannot
  produce (stale date, tampered body, unknown api-version, malformed JSON).
- :func:`write_tone_wav` writes a prompt (16-bit mono PCM, 16 kHz by default, what ACS plays);
  :func:`wav_frequency` measures a WAV's dominant frequency with :mod:`.audio`.

Loopback only; every server and thread here is stopped by :meth:`EventReceiver.stop`.
"""

from __future__ import annotations

import base64
import datetime
import email.utils
import hashlib
import hmac
import http.client
import ipaddress
import json
import ssl
import subprocess
import sys
import threading
import time
import wave
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import numpy as np

from .audio import dominant_frequency, read_wav
from .harness import LOOPBACK, GatewayProcess, repo_env

if TYPE_CHECKING:
    from azure.communication.callautomation import CallAutomationClient

API_VERSION = "2026-03-12"
EVENT_PREFIX = "Microsoft.Communication."
VALIDATION_TYPE = "Microsoft.EventGrid.SubscriptionValidationEvent"
#: x-ms-content-sha256 of an empty body.
EMPTY_SHA256 = base64.b64encode(hashlib.sha256(b"").digest()).decode("ascii")

Event = dict[str, Any]
Predicate = Callable[[Event], bool]


# --------------------------------------------------------------------------------------------
# the webhook receiver


@dataclass(frozen=True)
class Arrival:
    """One event as received: the envelope, when (monotonic), where, and how."""

    at: float
    path: str
    event: Event
    #: "validation" (Event Grid handshake), "eventgrid" (IncomingCall...), "cloud" (callbacks)
    schema: str
    headers: Mapping[str, str]

    @property
    def type(self) -> str:
        return str(self.event.get("type") or self.event.get("eventType") or "")

    @property
    def data(self) -> dict[str, Any]:
        data = self.event.get("data")
        return data if isinstance(data, dict) else {}

    @property
    def call_connection_id(self) -> str | None:
        value = self.data.get("callConnectionId")
        return value if isinstance(value, str) else None


@dataclass(frozen=True)
class RawRequest:
    """Any request the receiver got, before interpretation (for post-mortems and signers)."""

    at: float
    method: str
    target: str
    headers: Mapping[str, str]
    body: bytes


def type_matches(event_type: str, suffix: str) -> bool:
    """``Microsoft.Communication.CallConnected`` matches ``CallConnected`` (and itself)."""
    return event_type == suffix or event_type.endswith("." + suffix)


def short_type(event_type: str) -> str:
    return event_type.rsplit(".", 1)[-1]


class EventReceiver:
    """The app's webhook endpoint on 127.0.0.1 (a free port), HTTP or HTTPS.

    ``validate`` False makes it ignore the validation handshake (answer 400), to test a
    webhook that never proves ownership. ``status`` is what event POSTs get (200 by default;
    set :attr:`status` to e.g. 500 to make deliveries fail). Use as a context manager.
    """

    def __init__(self, *, tls_dir: Path | None = None, validate: bool = True) -> None:
        self.validate = validate
        self.status = 200
        self._cond = threading.Condition()
        self._arrivals: list[Arrival] = []
        self._requests: list[RawRequest] = []
        self._incoming_taken = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.cert_path: Path | None = None
        self.key_path: Path | None = None
        if tls_dir is not None:
            self.cert_path, self.key_path = self_signed_pair(tls_dir, "receiver")
        #: Called for the text of a failed wait (e.g. the gateway's log tail).
        self.context: Callable[[], str] | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> Self:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status, reply = receiver._handle(self.path, dict(self.headers.items()), body)
                raw = json.dumps(reply).encode() if reply is not None else b""
                self.send_response(status)
                if raw:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_GET(self) -> None:  # noqa: N802
                receiver._record_raw("GET", self.path, dict(self.headers.items()), b"")
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

        server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        server.daemon_threads = True
        if self.cert_path is not None and self.key_path is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(self.cert_path, self.key_path)
            # the handshake happens on the first read, in the request's own thread
            server.socket = context.wrap_socket(
                server.socket, server_side=True, do_handshake_on_connect=False
            )
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("receiver not started")
        port: int = self._server.server_address[1]
        return port

    @property
    def scheme(self) -> str:
        return "https" if self.cert_path is not None else "http"

    def url(self, path: str = "/events") -> str:
        """The receiver's URL for ``path`` (callbacks, webhooks; any path is accepted)."""
        return f"{self.scheme}://{LOOPBACK}:{self.port}{path}"

    # -- what arrives --------------------------------------------------------------------------

    def _record_raw(self, method: str, target: str, headers: dict[str, str], body: bytes) -> None:
        with self._cond:
            self._requests.append(RawRequest(time.monotonic(), method, target, headers, body))

    def _handle(
        self, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, Any]:
        now = time.monotonic()
        self._record_raw("POST", path, headers, body)
        try:
            doc = json.loads(body) if body else None
        except ValueError:
            return 400, {"error": "body is not JSON"}
        items = doc if isinstance(doc, list) else [doc] if isinstance(doc, dict) else []
        reply: Any = None
        status = self.status
        with self._cond:
            for item in items:
                if not isinstance(item, dict):
                    continue
                kind = str(item.get("type") or item.get("eventType") or "")
                if kind == VALIDATION_TYPE:
                    schema = "validation"
                    data = item.get("data") or {}
                    if self.validate:
                        reply, status = {"validationResponse": data.get("validationCode")}, 200
                    else:
                        reply, status = {"error": "validation refused by the test"}, 400
                elif "eventType" in item:
                    schema = "eventgrid"
                elif "type" in item:
                    schema = "cloud"
                else:
                    continue
                lowered = {k.lower(): v for k, v in headers.items()}
                self._arrivals.append(Arrival(now, path, item, schema, lowered))
            self._cond.notify_all()
        return status, reply

    def arrivals(self) -> list[Arrival]:
        """Everything received so far (validation handshakes included), in arrival order."""
        with self._cond:
            return list(self._arrivals)

    def requests(self) -> list[RawRequest]:
        """Every HTTP request received, uninterpreted."""
        with self._cond:
            return list(self._requests)

    @property
    def validations(self) -> list[Arrival]:
        return [a for a in self.arrivals() if a.schema == "validation"]

    def events(self, call_connection_id: str | None = None) -> list[Event]:
        """Events (envelopes; no validation handshakes) in arrival order, those of one call
        when ``call_connection_id`` is given."""
        return [a.event for a in self._matching(call_connection_id)]

    def types(self, call_connection_id: str | None = None) -> list[str]:
        """Short type names (``CallConnected``...) in arrival order."""
        return [short_type(a.type) for a in self._matching(call_connection_id)]

    def _matching(self, call_connection_id: str | None) -> list[Arrival]:
        return [
            a
            for a in self.arrivals()
            if a.schema != "validation"
            and (call_connection_id is None or a.call_connection_id == call_connection_id)
        ]

    def arrival(self, event: Event) -> Arrival:
        """The :class:`Arrival` of an event returned by this receiver (same object)."""
        for a in self.arrivals():
            if a.event is event:
                return a
        raise KeyError("event not received here")

    def wait_for(
        self,
        type_suffix: str | tuple[str, ...],
        predicate: Predicate | None = None,
        timeout: float = 5.0,
        *,
        call_connection_id: str | None = None,
    ) -> Event:
        """The first event (envelope) whose type ends with ``type_suffix`` (or one of several)
        and that satisfies ``predicate`` (and belongs to ``call_connection_id``), waiting up
        to ``timeout`` seconds; AssertionError listing what arrived otherwise."""
        suffixes = (type_suffix,) if isinstance(type_suffix, str) else type_suffix
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for a in self._arrivals:
                    if a.schema == "validation" or not any(
                        type_matches(a.type, suffix) for suffix in suffixes
                    ):
                        continue
                    if call_connection_id is not None and a.call_connection_id != (
                        call_connection_id
                    ):
                        continue
                    if predicate is None or predicate(a.event):
                        return a.event
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.2))
        raise AssertionError(
            f"no {' or '.join(suffixes)} event"
            + (f" for call {call_connection_id}" if call_connection_id else "")
            + (" matching the predicate" if predicate is not None else "")
            + f" within {timeout:g} s\n{self.describe()}"
        )

    def incoming(self, timeout: float = 10.0) -> dict[str, Any]:
        """The ``data`` of the next IncomingCall event not yet taken (in arrival order)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                calls = [
                    a for a in self._arrivals if type_matches(a.type, "IncomingCall")
                ]
                if len(calls) > self._incoming_taken:
                    chosen = calls[self._incoming_taken]
                    self._incoming_taken += 1
                    return chosen.data
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.2))
        raise AssertionError(f"no IncomingCall within {timeout:g} s\n{self.describe()}")

    def quiet(self, call_connection_id: str, seconds: float) -> list[str]:
        """Wait ``seconds``, then return the short types of that call's events that arrived
        during the wait (a test asserts it is empty after CallDisconnected)."""
        before = len(self._matching(call_connection_id))
        time.sleep(seconds)
        return [short_type(a.type) for a in self._matching(call_connection_id)[before:]]

    def describe(self) -> str:
        """What arrived, one line per event (time, path, type, call, resultInformation)."""
        arrivals = self.arrivals()
        start = arrivals[0].at if arrivals else 0.0
        lines = [f"receiver {self.scheme}://{LOOPBACK}:{self.port}: {len(arrivals)} events"]
        for a in arrivals:
            info = a.data.get("resultInformation")
            lines.append(
                f"  +{a.at - start:6.3f}s {a.path} {short_type(a.type)}"
                f" call={a.call_connection_id} ctx={a.data.get('operationContext')!r}"
                + (f" result={info}" if info else "")
            )
        if self.context is not None:
            lines.append(self.context())
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# certificates (an HTTPS receiver)


def self_signed_pair(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost (CA:true, so it can be its own
    trust anchor) and its key, as PEM files ``NAME.crt`` and ``NAME.key`` in ``directory``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"acs-gateway test {name}")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(LOOPBACK)), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


# --------------------------------------------------------------------------------------------
# the SDK client, from the real CLI


def cli_connection_string(gateway: GatewayProcess) -> str:
    """What ``acs-gateway connection-string -c CONF`` prints (the console script of this
    interpreter's environment when installed, else ``python -m gateway.cli``)."""
    script = Path(sys.executable).with_name("acs-gateway")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "gateway.cli"]
    command += ["connection-string", "-c", str(gateway.config_path)]
    out = subprocess.run(
        command,
        cwd=gateway.workdir,
        env=repo_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if out.returncode != 0:
        raise AssertionError(
            f"{' '.join(command)} exited {out.returncode}\n{out.stderr}{out.stdout}"
        )
    lines = [line.strip() for line in out.stdout.splitlines() if line.strip()]
    if not lines or not lines[-1].startswith("endpoint="):
        raise AssertionError(f"no connection string in the CLI's output: {out.stdout!r}")
    return lines[-1]


def sdk_client(
    gateway: GatewayProcess, *, access_key: str | None = None, **kwargs: Any
) -> CallAutomationClient:
    """``CallAutomationClient.from_connection_string(<the CLI's string>,
    connection_verify=<the gateway's certificate>)``; ``access_key`` replaces the key (the
    wrong-key case). ``kwargs`` go to the client (azure-core options, e.g. ``retry_total``)."""
    from azure.communication.callautomation import CallAutomationClient

    conn = cli_connection_string(gateway)
    if access_key is not None:
        endpoint = conn.split(";", 1)[0]
        conn = f"{endpoint};accesskey={access_key}"
    kwargs.setdefault("connection_timeout", 5)
    kwargs.setdefault("read_timeout", 15)
    return CallAutomationClient.from_connection_string(
        conn, connection_verify=str(gateway.cert_path), **kwargs
    )


# --------------------------------------------------------------------------------------------
# raw signed requests (ACS_REST.md section 2)


def imf_date(when: datetime.datetime | None = None) -> str:
    """``Mon, 23 Nov 2026 23:25:42 GMT`` (RFC 7231 IMF-fixdate) of ``when`` (default now)."""
    when = when or datetime.datetime.now(datetime.UTC)
    return email.utils.format_datetime(when.astimezone(datetime.UTC), usegmt=True)


def content_sha256(body: bytes) -> str:
    return base64.b64encode(hashlib.sha256(body).digest()).decode("ascii")


def hmac_signature(
    access_key: str, method: str, path_and_query: str, date: str, host: str, content_hash: str
) -> str:
    """base64(HMAC-SHA256(b64decode(key), "VERB\\nPATH?QUERY\\nDATE;HOST;HASH"))."""
    string_to_sign = f"{method.upper()}\n{path_and_query}\n{date};{host};{content_hash}"
    digest = hmac.new(
        base64.b64decode(access_key), string_to_sign.encode("utf-8"), hashlib.sha256
    ).digest()
    return base64.b64encode(digest).decode("ascii")


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    @property
    def error(self) -> dict[str, Any]:
        """The ACS error object (``{"code": str, "message": str}``); AssertionError if the
        body is not ``{"error": {...}}`` with a string code and message."""
        try:
            doc = self.json()
        except ValueError as exc:
            raise AssertionError(f"{self.status}: body is not JSON: {self.body[:300]!r}") from exc
        error = doc.get("error") if isinstance(doc, dict) else None
        if not (
            isinstance(error, dict)
            and isinstance(error.get("code"), str)
            and isinstance(error.get("message"), str)
        ):
            raise AssertionError(f"{self.status}: not an ACS error body: {self.body[:300]!r}")
        return error

    def describe(self) -> str:
        return f"HTTP {self.status} {dict(self.headers)} {self.body[:500]!r}"


@dataclass
class SignedRequest:
    """One request to the gateway's REST port, signed as the SDK signs (or not quite)."""

    method: str
    path: str  # path only, percent-encoded as sent
    body: bytes | None = None
    query: str = f"api-version={API_VERSION}"
    access_key: str | None = None  # default: the gateway's
    date: str | None = None  # default: now
    #: Sign this body instead of the one sent (a tampered body).
    signed_body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def target(self) -> str:
        return f"{self.path}?{self.query}" if self.query else self.path


def signed_request(
    gateway: GatewayProcess, request: SignedRequest, *, timeout: float = 15.0
) -> RawResponse:
    """Send ``request`` over HTTPS (trusting the gateway's certificate) and read the answer."""
    host = f"{LOOPBACK}:{gateway.rest_port}"
    body = request.body or b""
    date = request.date or imf_date()
    signed = request.signed_body if request.signed_body is not None else body
    content_hash = content_sha256(signed)
    signature = hmac_signature(
        request.access_key or gateway.access_key,
        request.method,
        request.target,
        date,
        host,
        content_hash,
    )
    headers = {
        "Host": host,
        "Accept": "application/json",
        "x-ms-date": date,
        "x-ms-content-sha256": content_hash,
        "Authorization": (
            "HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256"
            f"&Signature={signature}"
        ),
    }
    if request.body is not None or request.method.upper() not in ("GET", "DELETE"):
        headers["Content-Length"] = str(len(body))
    if request.body is not None:
        headers["Content-Type"] = "application/json"
    headers.update(request.headers)
    context = ssl.create_default_context(cafile=str(gateway.cert_path))
    connection = http.client.HTTPSConnection(
        LOOPBACK, gateway.rest_port, context=context, timeout=timeout
    )
    try:
        connection.putrequest(request.method, request.target, skip_host=True,
                              skip_accept_encoding=True)
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.endheaders(body if body else None)
        response = connection.getresponse()
        data = response.read()
        return RawResponse(response.status, dict(response.getheaders()), data)
    finally:
        connection.close()


# --------------------------------------------------------------------------------------------
# WAV files


def write_wav(path: Path, samples: np.ndarray, rate: int) -> Path:
    """16-bit mono PCM WAV of int16 ``samples``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(np.asarray(samples, dtype="<i2").tobytes())
    return path


def write_tone_wav(
    path: Path, hz: float = 440.0, seconds: float = 1.0, *, rate: int = 16000,
    amplitude: float = 0.3,
) -> Path:
    """A sine of ``hz`` for ``seconds`` as a 16-bit mono WAV at ``rate`` (default 16 kHz, what
    ACS plays), ``amplitude`` of full scale, with 10 ms fades (no clicks)."""
    n = round(seconds * rate)
    t = np.arange(n) / rate
    signal = amplitude * np.sin(2 * np.pi * hz * t)
    fade = min(n // 2, rate // 100)
    if fade:
        ramp = np.linspace(0.0, 1.0, fade)
        signal[:fade] *= ramp
        signal[n - fade:] *= ramp[::-1]
    return write_wav(path, np.round(signal * 32767).astype(np.int16), rate)


def wav_frequency(path: Path, skip_seconds: float = 0.0) -> float:
    """The dominant frequency (Hz) of a WAV file (see :func:`.audio.dominant_frequency`)."""
    rate, samples = read_wav(path)
    return dominant_frequency(samples, rate, skip_seconds)
