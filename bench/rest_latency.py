"""REST latency: create_call -> INVITE on the wire, and callback event delivery.

Two latencies of the Call Automation surface (ACS_REST.md), at 10, 50 and 100 calls/s:

1. **create_call -> INVITE**: from the moment the app writes ``POST
   /calling/callConnections?api-version=2026-03-12`` (HMAC-signed as ACS_REST.md section 2,
   over a keep-alive HTTPS connection) to the moment the callee's socket reads the INVITE the
   gateway sends for it. DESIGN.md's budget: p99 < 20 ms at 100 calls/s.
2. **event delivery**: from the moment the callee sends its 200 OK to the moment the app's
   callback receiver has read the ``CallConnected`` POST the gateway makes for it.

The rig, all on 127.0.0.1, started and stopped by this script (by PID / by handle):

- the gateway, ``python -m gateway.cli run`` through ``harness.GatewayProcess``: ``[media]
  anchor = true`` with a 4000-port range, ``[rest] allow_insecure_callbacks = true`` (the
  callback URL is http://127.0.0.1), one trunk ``uas`` at the callee, the dial plan
  ``[[outbound]] match = '^\\+1555\\d{7}$' trunks = ["uas"]``, ``[log] level = "warning"``;
- a second process (``multiprocessing``, spawn) holding the callee and the callback receiver,
  so that neither shares a GIL with the client's threads: the callee is a plain UDP socket
  that stamps every INVITE with ``time.monotonic()`` as it reads it, answers 100 and 200 (a
  PCMU SDP answer) at once, and 200 to BYE (and to any other request); the receiver is an
  HTTP/1.1 server (``ThreadingHTTPServer``, keep-alive) that stamps each POST when its body
  has been read. ``CLOCK_MONOTONIC`` is one clock for all processes of the machine;
- the client in this process: a scheduler thread queues one create per 1/rate s (absolute
  schedule, so a late send does not shift the next), ``--workers`` threads (32: enough that a
  250 ms stall of the gateway at 100 calls/s does not hold the offered rate back) each with its
  own keep-alive ``http.client.HTTPSConnection`` (trusting the gateway's certificate, opened
  before the first timed request) send them, stamping the send just before the request is
  written. Each call's target is unique,
  ``+1555`` + a 7-digit counter, and is also its ``operationContext``: the INVITE is matched
  by its Request-URI, the CallConnected by its operationContext. When a CallConnected arrives
  the receiver tells this process, which sends ``POST .../{id}:terminate`` (so every call
  ends and the gateway's call count returns to 0). ``--client sdk`` sends the same two
  requests through the ACS SDK (``create_call``, ``hang_up(is_for_everyone=True)``; one client
  per worker, retries off) instead, its send stamp taken before the SDK call.

Per rate, ``rate * seconds`` calls (10 s by default), then up to 15 s for the last events and
hang-ups, then a status file (``trunks.json``) showing no calls, dialogs or media sessions left.
Counted as failed: a create not answered 201, no INVITE at the callee, no CallConnected. Also
counted: terminates not answered 204, calls without CallDisconnected, gateway log lines at
warning or above. Gateway CPU is utime + stime (/proc/PID/stat) from just before the first
create to when the last call's CallDisconnected (or the deadline) is in, per 1000 calls.

Nothing is pinned by default (as call_setup, the signaling bench); ``--pin`` puts the gateway
on CPU 0 and the rest on CPU 1 (as the media benches do, mediaload.pin).

Usage: python bench/rest_latency.py [--rates 10,50,100] [--seconds 10] [--workers 32]
       [--client raw|sdk] [--pin] [--quick]
Report: stdout, bench/out/rest_latency.md and .json.
"""

from __future__ import annotations

import argparse
import base64
import email.utils
import hashlib
import hmac
import http.client
import json
import math
import multiprocessing
import os
import platform
import queue
import re
import select
import shutil
import socket
import sqlite3
import ssl
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
OUT_DIR = BENCH_DIR / "out"
sys.path.insert(0, str(REPO_ROOT / "tests" / "interop"))

import harness  # noqa: E402  (tests/interop/harness.py; see the sys.path line above)

LOOPBACK = harness.LOOPBACK
API_VERSION = "2026-03-12"
DEFAULT_RATES = (10, 50, 100)
SOURCE = "+14255550100"
PREFIX = "+1555"  # + 7-digit call counter
MEDIA_PORTS = 4000
SIP_BUFFER = 4 * 1024 * 1024
EVENT_WAIT_S = 15.0  # after the last create, for events and hang-ups
DRAIN_WAIT_S = 20.0
BUDGET_P99_MS = 20.0  # DESIGN.md: REST create_call -> INVITE on the wire, at 100 calls/s
BUDGET_RATE = 100
SLOW_MS = 10.0


# --------------------------------------------------------------------------------------------
# the peers process: the callee (UAS) and the app's callback receiver


_COMPACT = {
    "v": "via", "f": "from", "t": "to", "i": "call-id", "m": "contact", "l": "content-length",
}
_DIGITS = re.compile(r"\+?(\d+)")


def _index_of(uri: str) -> int | None:
    """The call counter in a request URI ``sip:+1555NNNNNNN@host`` (digits, '+' optional)."""
    user = uri.split(":", 1)[-1].split("@", 1)[0].split(";", 1)[0]
    match = _DIGITS.fullmatch(user)
    if match is None or len(match.group(1)) != 11 or not match.group(1).startswith("1555"):
        return None
    return int(match.group(1)[4:])


class Uas:
    """The callee: one UDP socket, answers at once. Stamps INVITE arrival and 200 sending."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SIP_BUFFER)
        self.sock.bind((LOOPBACK, 0))
        self.sock.setblocking(False)
        self.port: int = self.sock.getsockname()[1]
        # where the answer points the gateway's media: read and thrown away
        self.sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sink.bind((LOOPBACK, 0))
        self.sink.setblocking(False)
        self.sink_port: int = self.sink.getsockname()[1]
        self.lock = threading.Lock()
        self.invites: dict[int, float] = {}  # call index -> first INVITE read (monotonic)
        self.oks: dict[int, float] = {}  # call index -> 200 sent
        self.dialogs: dict[str, tuple[str, bytes]] = {}  # Call-ID -> (to-tag, 200 bytes)
        self.requests: Counter[str] = Counter()
        self.retransmits = 0
        self.unmatched = 0
        self.sink_packets = 0
        self.first_invite = ""
        self.stop = threading.Event()

    def run(self) -> None:
        sockets = [self.sock, self.sink]
        while not self.stop.is_set():
            ready, _, _ = select.select(sockets, [], [], 0.1)
            if self.sink in ready:
                while True:
                    try:
                        self.sink.recv(2048)
                    except BlockingIOError:
                        break
                    self.sink_packets += 1
            if self.sock in ready:
                while True:
                    try:
                        data, addr = self.sock.recvfrom(65535)
                    except BlockingIOError:
                        break
                    self.handle(data, addr, time.monotonic())

    def handle(self, data: bytes, addr: tuple[str, int], now: float) -> None:
        head, _, _ = data.partition(b"\r\n\r\n")
        lines = head.decode("utf-8", "replace").split("\r\n")
        first = lines[0].split(" ")
        if len(first) < 3 or first[0] == "SIP/2.0":
            return  # a response: the callee sends no requests
        method, uri = first[0], first[1]
        vias: list[str] = []
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                continue
            key = name.strip().lower()
            key = _COMPACT.get(key, key)
            value = value.strip()
            if key == "via":
                vias.append(value)
            else:
                headers.setdefault(key, value)
        self.requests[method] += 1
        if method == "ACK":
            return
        call_id = headers.get("call-id", "")
        common = "".join(f"Via: {v}\r\n" for v in vias)
        common += f"From: {headers.get('from', '')}\r\nCall-ID: {call_id}\r\n"
        common += f"CSeq: {headers.get('cseq', '')}\r\n"
        if method == "INVITE":
            known = self.dialogs.get(call_id)
            if known is not None:  # a retransmission: the same answer again
                self.retransmits += 1
                self.sock.sendto(known[1], addr)
                return
            index = _index_of(uri)
            if index is None:
                self.unmatched += 1
            elif index not in self.invites:
                with self.lock:
                    self.invites[index] = now
            if not self.first_invite:
                self.first_invite = data.decode("utf-8", "replace")
            tag = uuid.uuid4().hex[:12]
            to = headers.get("to", "")
            trying = f"SIP/2.0 100 Trying\r\n{common}To: {to}\r\nContent-Length: 0\r\n\r\n"
            sdp = (
                "v=0\r\no=uas 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                f"m=audio {self.sink_port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
            )
            ok = (
                f"SIP/2.0 200 OK\r\n{common}To: {to};tag={tag}\r\n"
                f"Contact: <sip:uas@{LOOPBACK}:{self.port};transport=udp>\r\n"
                f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n{sdp}"
            ).encode()
            self.dialogs[call_id] = (tag, ok)
            self.sock.sendto(trying.encode(), addr)
            self.sock.sendto(ok, addr)
            sent = time.monotonic()
            if index is not None:
                with self.lock:
                    self.oks.setdefault(index, sent)
            return
        # BYE, CANCEL, UPDATE, INFO, OPTIONS...: 200 OK, the To (and its tag) as received
        to = headers.get("to", "")
        reply = f"SIP/2.0 200 OK\r\n{common}To: {to}\r\nContent-Length: 0\r\n\r\n"
        self.sock.sendto(reply.encode(), addr)
        if method == "BYE":
            self.dialogs.pop(call_id, None)


class Receiver:
    """The app's callback endpoint: stamps each POST once its body is read, answers 200."""

    def __init__(self, notify: Any) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[float, str, str, str]] = []  # (at, type, ctx, call id)
        self.disconnected: set[str] = set()  # call connection ids of CallDisconnected
        self.bad = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                now = time.monotonic()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
                receiver.record(body, now, notify)

        self.server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.server.daemon_threads = True
        self.port: int = self.server.server_address[1]

    def record(self, body: bytes, now: float, notify: Any) -> None:
        try:
            doc = json.loads(body)
        except ValueError:
            self.bad += 1
            return
        for item in doc if isinstance(doc, list) else [doc]:
            if not isinstance(item, dict):
                self.bad += 1
                continue
            data = item.get("data") if isinstance(item.get("data"), dict) else {}
            kind = str(item.get("type") or item.get("eventType") or "").rsplit(".", 1)[-1]
            ctx = str(data.get("operationContext") or "")
            cid = str(data.get("callConnectionId") or "")
            with self.lock:
                self.events.append((now, kind, ctx, cid))
                if kind == "CallDisconnected":
                    self.disconnected.add(cid)
            if kind == "CallConnected":
                notify.put((ctx, cid))


def uas_main(conn: Connection) -> None:
    """The callee's process: start it, report its port, answer commands until "stop"."""
    uas = Uas()
    thread = threading.Thread(target=uas.run, daemon=True)
    thread.start()
    conn.send(uas.port)

    def snapshot() -> dict[str, Any]:
        with uas.lock:
            return {
                "invites": dict(uas.invites),
                "oks": dict(uas.oks),
                "requests": dict(uas.requests),
                "retransmits": uas.retransmits,
                "unmatched": uas.unmatched,
                "sink_packets": uas.sink_packets,
                "first_invite": uas.first_invite,
            }

    _serve(conn, {"snapshot": snapshot})
    uas.stop.set()
    thread.join(2)
    conn.send("stopped")


def receiver_main(conn: Connection, notify: Any) -> None:
    """The receiver's process: as :func:`uas_main`, for the callback receiver."""
    receiver = Receiver(notify)
    thread = threading.Thread(
        target=receiver.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
    )
    thread.start()
    conn.send(receiver.port)

    def snapshot() -> dict[str, Any]:
        with receiver.lock:
            return {"events": list(receiver.events), "bad_posts": receiver.bad}

    def disconnected() -> list[str]:
        with receiver.lock:
            return sorted(receiver.disconnected)

    _serve(conn, {"snapshot": snapshot, "disconnected": disconnected})
    receiver.server.shutdown()
    receiver.server.server_close()
    thread.join(2)
    conn.send("stopped")


def _serve(conn: Connection, commands: dict[str, Any]) -> None:
    """Answer named commands on ``conn`` until "stop" (or the bench's end)."""
    while True:
        if not conn.poll(1.0):
            if os.getppid() == 1:  # the bench died: do not outlive it
                return
            continue
        try:
            command = conn.recv()
        except EOFError:
            return
        if command not in commands:
            return
        conn.send(commands[command]())


class Peer:
    """Handle on one peer process (spawned, stopped through its pipe, else by handle)."""

    def __init__(self, target: Any, *args: Any) -> None:
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.proc = context.Process(target=target, args=(child, *args), daemon=True)
        self.proc.start()
        if not self.conn.poll(30):
            self.stop()
            raise harness.HarnessError(f"the peer process {target.__name__} did not start")
        self.port: int = self.conn.recv()

    @property
    def pid(self) -> int:
        return self.proc.pid or 0

    def ask(self, command: str) -> Any:
        self.conn.send(command)
        if not self.conn.poll(30):
            raise harness.HarnessError(f"the peer process does not answer {command!r}")
        return self.conn.recv()

    def stop(self) -> None:
        if self.proc.is_alive():
            try:
                self.conn.send("stop")
                self.conn.poll(5)
            except (OSError, EOFError):
                pass
            self.proc.join(5)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5)


class Peers:
    """The callee and the receiver, each in its own process (no GIL shared with anything)."""

    def __init__(self) -> None:
        self.notify = multiprocessing.get_context("spawn").Queue()
        self.uas = Peer(uas_main)
        try:
            self.receiver = Peer(receiver_main, self.notify)
        except harness.HarnessError:
            self.uas.stop()
            raise

    @property
    def pids(self) -> list[int]:
        return [self.uas.pid, self.receiver.pid]

    def snapshot(self) -> dict[str, Any]:
        return {**self.uas.ask("snapshot"), **self.receiver.ask("snapshot")}

    def disconnected(self) -> set[str]:
        return set(self.receiver.ask("disconnected"))

    def stop(self) -> None:
        self.receiver.stop()
        self.uas.stop()


# --------------------------------------------------------------------------------------------
# the client


def number_of(index: int) -> str:
    return f"{PREFIX}{index:07d}"


@dataclass
class CallRecord:
    index: int
    scheduled: float = math.nan
    sent: float = math.nan
    answered: float = math.nan
    status: int = 0  # 0: no response (connection error, timeout)
    error: str = ""
    call_connection_id: str = ""
    terminate_sent: float = math.nan
    terminate_answered: float = math.nan
    terminate_status: int = -1  # -1: not sent


class Signer:
    """The access-key HMAC of ACS_REST.md section 2, as the SDK computes it."""

    def __init__(self, access_key: str, host: str) -> None:
        self.key = base64.b64decode(access_key)
        self.host = host

    def headers(self, method: str, target: str, body: bytes) -> dict[str, str]:
        date = email.utils.formatdate(usegmt=True)
        digest = base64.b64encode(hashlib.sha256(body).digest()).decode("ascii")
        to_sign = f"{method}\n{target}\n{date};{self.host};{digest}"
        signature = base64.b64encode(
            hmac.new(self.key, to_sign.encode(), hashlib.sha256).digest()
        ).decode("ascii")
        return {
            "Host": self.host,
            "Accept": "application/json",
            "x-ms-date": date,
            "x-ms-content-sha256": digest,
            "Authorization": "HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256"
            f"&Signature={signature}",
            "Repeatability-Request-ID": str(uuid.uuid4()),
            "Repeatability-First-Sent": date,
            "Content-Length": str(len(body)),
        }


class RawWorker:
    """One keep-alive HTTPS connection; sends signed requests as the SDK would."""

    def __init__(self, gateway: harness.GatewayProcess, signer: Signer, callback: str) -> None:
        self.port = gateway.rest_port
        self.context = ssl.create_default_context(cafile=str(gateway.cert_path))
        self.signer = signer
        self.callback = callback
        self.conn: http.client.HTTPSConnection | None = None

    def warm(self) -> None:
        """Open the connection (TCP and TLS handshakes) before any timed request."""
        try:
            self._connection()
        except OSError:
            self.close()

    def _connection(self) -> http.client.HTTPSConnection:
        if self.conn is None:
            self.conn = http.client.HTTPSConnection(
                LOOPBACK, self.port, context=self.context, timeout=10
            )
            self.conn.connect()  # the TLS handshake outside the timed request
        return self.conn

    def _send(self, method: str, target: str, body: bytes) -> tuple[float, int, bytes]:
        """(send stamp, status, body); status 0 and the connection reset on an error."""
        headers = self.signer.headers(method, target, body)
        if body:
            headers["Content-Type"] = "application/json"
        sent = math.nan
        try:
            conn = self._connection()
            conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            for name, value in headers.items():
                conn.putheader(name, value)
            sent = time.monotonic()
            conn.endheaders(body or None)
            response = conn.getresponse()
            data = response.read()
            if response.will_close:
                self.close()
            return sent, response.status, data
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise RequestError(sent, f"{type(exc).__name__}: {exc}") from exc

    def create(self, record: CallRecord) -> None:
        number = number_of(record.index)
        body = json.dumps({
            "targets": [{"rawId": f"4:{number}", "phoneNumber": {"value": number}}],
            "sourceCallerIdNumber": {"value": SOURCE},
            "operationContext": str(record.index),
            "callbackUri": self.callback,
        }).encode()
        try:
            record.sent, record.status, data = self._send(
                "POST", f"/calling/callConnections?api-version={API_VERSION}", body
            )
        except RequestError as exc:
            record.sent, record.error = exc.sent, exc.reason
            return
        record.answered = time.monotonic()
        if record.status == 201:
            try:
                record.call_connection_id = str(json.loads(data)["callConnectionId"])
            except (ValueError, KeyError, TypeError):
                record.error = f"201 without callConnectionId: {data[:200]!r}"
        else:
            record.error = f"{record.status}: {data[:300]!r}"

    def terminate(self, record: CallRecord, call_connection_id: str) -> None:
        target = (
            f"/calling/callConnections/{call_connection_id}:terminate?api-version={API_VERSION}"
        )
        try:
            record.terminate_sent, record.terminate_status, _ = self._send("POST", target, b"")
        except RequestError as exc:
            record.terminate_sent, record.terminate_status = exc.sent, 0
            return
        record.terminate_answered = time.monotonic()

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class RequestError(Exception):
    def __init__(self, sent: float, reason: str) -> None:
        super().__init__(reason)
        self.sent = sent
        self.reason = reason


class SdkWorker:
    """The same two requests through the ACS SDK (one client, so one connection pool)."""

    def __init__(self, gateway: harness.GatewayProcess, callback: str) -> None:
        from azure.communication.callautomation import CallAutomationClient

        self.client = CallAutomationClient.from_connection_string(
            gateway.connection_string,
            connection_verify=str(gateway.cert_path),
            retry_total=0,
            connection_timeout=10,
            read_timeout=10,
        )
        self.callback = callback

    def warm(self) -> None:
        """Open the SDK's pooled connection with a GET of a call that does not exist (404)."""
        try:
            self.client.get_call_connection("warm-up").get_call_properties()
        except Exception:  # the expected 404, or anything else: the first create will tell
            pass

    def create(self, record: CallRecord) -> None:
        from azure.communication.callautomation import PhoneNumberIdentifier
        from azure.core.exceptions import HttpResponseError

        record.sent = time.monotonic()
        try:
            props = self.client.create_call(
                PhoneNumberIdentifier(number_of(record.index)),
                self.callback,
                source_caller_id_number=PhoneNumberIdentifier(SOURCE),
                operation_context=str(record.index),
            )
        except HttpResponseError as exc:
            record.status, record.error = exc.status_code or 0, str(exc)[:300]
            return
        except Exception as exc:  # a transport error of any kind: count it
            record.error = f"{type(exc).__name__}: {exc}"[:300]
            return
        record.answered = time.monotonic()
        record.status = 201
        record.call_connection_id = props.call_connection_id or ""

    def terminate(self, record: CallRecord, call_connection_id: str) -> None:
        from azure.core.exceptions import HttpResponseError

        record.terminate_sent = time.monotonic()
        try:
            self.client.get_call_connection(call_connection_id).hang_up(is_for_everyone=True)
        except HttpResponseError as exc:
            record.terminate_status = exc.status_code or 0
            return
        except Exception:  # as above
            record.terminate_status = 0
            return
        record.terminate_answered = time.monotonic()
        record.terminate_status = 204

    def close(self) -> None:
        self.client.close()


Worker = RawWorker | SdkWorker


class Client:
    """Worker threads taking creates (paced by :meth:`run_step`) and terminates (sent when the
    CallConnected of a call reaches the receiver) from one queue."""

    def __init__(self, workers: list[Worker], peers: Peers) -> None:
        self.jobs: queue.Queue[tuple[str, CallRecord, str] | None] = queue.Queue()
        self.peers = peers
        self.records: dict[int, CallRecord] = {}
        self.lock = threading.Lock()
        self.connected: dict[int, str] = {}  # index -> call connection id (from the event)
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._work, args=(w,), daemon=True) for w in workers
        ]
        self.workers = workers
        self.listener = threading.Thread(target=self._listen, daemon=True)
        for thread in self.threads:
            thread.start()
        self.listener.start()

    def _work(self, worker: Worker) -> None:
        worker.warm()
        while True:
            job = self.jobs.get()
            if job is None:
                break
            kind, record, call_connection_id = job
            if kind == "create":
                worker.create(record)
            else:
                worker.terminate(record, call_connection_id)
        worker.close()

    def _listen(self) -> None:
        while not self.stop.is_set():
            try:
                ctx, call_connection_id = self.peers.notify.get(timeout=0.2)
            except queue.Empty:
                continue
            except (OSError, EOFError, ValueError):
                break
            try:
                index = int(ctx)
            except ValueError:
                continue
            with self.lock:
                record = self.records.get(index)
                if record is None or index in self.connected:
                    continue
                self.connected[index] = call_connection_id
            self.jobs.put(("terminate", record, call_connection_id))

    def run_step(self, first: int, count: int, rate: float) -> list[CallRecord]:
        """Queue ``count`` creates at ``rate`` per second on an absolute schedule."""
        records = [CallRecord(first + i) for i in range(count)]
        with self.lock:
            for record in records:
                self.records[record.index] = record
        start = time.monotonic() + 0.05
        for i, record in enumerate(records):
            due = start + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            record.scheduled = due
            self.jobs.put(("create", record, ""))
        return records

    def purge_creates(self) -> int:
        """Drop the creates still queued (the workers fell behind); keep the terminates.
        Returns how many were dropped; their records say so."""
        kept: list[tuple[str, CallRecord, str]] = []
        dropped = 0
        while True:
            try:
                job = self.jobs.get_nowait()
            except queue.Empty:
                break
            if job is None:
                continue
            if job[0] == "create":
                job[1].error = "not sent: the client's queue was behind at the deadline"
                dropped += 1
            else:
                kept.append(job)
        for job in kept:
            self.jobs.put(job)
        return dropped

    def idle(self) -> bool:
        return self.jobs.empty()

    def close(self) -> None:
        self.stop.set()
        for _ in self.threads:
            self.jobs.put(None)
        for thread in self.threads:
            thread.join(15)
        self.listener.join(2)


# --------------------------------------------------------------------------------------------
# one rate step and its figures


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def spread(values: Sequence[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "max": max(values) if values else math.nan,
    }


@dataclass
class StepResult:
    rate: int
    calls: int
    failed: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    invite_ms: dict[str, float] = field(default_factory=dict)
    event_ms: dict[str, float] = field(default_factory=dict)
    create_rtt_ms: dict[str, float] = field(default_factory=dict)
    terminate_rtt_ms: dict[str, float] = field(default_factory=dict)
    send_lag_ms: dict[str, float] = field(default_factory=dict)
    achieved_rate: float = math.nan
    started_monotonic: float = math.nan  # the step's time origin (CLOCK_MONOTONIC, s)
    cpu_s: float = math.nan
    elapsed_s: float = math.nan
    terminate_failed: int = 0
    no_disconnected: int = 0
    left_after_drain: dict[str, Any] = field(default_factory=dict)
    retransmits: int = 0
    not_sent: int = 0
    event_types: dict[str, int] = field(default_factory=dict)
    #: calls slower than SLOW_MS: (seconds into the step, ms), for spotting periodic stalls
    slow_invites: list[tuple[float, float]] = field(default_factory=list)
    slow_events: list[tuple[float, float]] = field(default_factory=list)
    callee_requests: dict[str, int] = field(default_factory=dict)
    log_lines: list[str] = field(default_factory=list)
    log_count: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def cpu_per_1000(self) -> float:
        return self.cpu_s * 1000.0 / self.calls if self.calls else math.nan


def _done(records: Sequence[CallRecord], disconnected: set[str], client: Client) -> bool:
    """Every call's create is answered and, for each 201, its CallConnected, terminate answer
    and CallDisconnected are in."""
    for record in records:
        if record.status == 0 and not record.error:
            return False  # create still in flight
        if record.status != 201:
            continue
        if record.index not in client.connected:
            return False
        if record.terminate_status == -1:
            return False  # terminate not sent yet, or in flight
        if record.call_connection_id not in disconnected:
            return False
    return True


def gateway_live(gw: harness.GatewayProcess) -> dict[str, Any]:
    try:
        doc = json.loads((gw.cdr_path.parent / "trunks.json").read_text())
    except (OSError, ValueError):
        return {}
    live = doc.get("gateway", {})
    return live if isinstance(live, dict) else {}


LIVE_KEYS = ("calls", "dialogs", "media_sessions", "media_streams", "transcoders")


def cdr_open_calls(gw: harness.GatewayProcess) -> int | None:
    """Calls in the CDR database not ended (REST app calls are not in the status file's
    ``calls``: they are counted here; the gateway flushes its CDRs every 0.2 s)."""
    try:
        db = sqlite3.connect(f"file:{gw.cdr_path}?mode=ro", uri=True, timeout=2)
    except sqlite3.Error:
        return None
    try:
        row = db.execute("SELECT COUNT(*) FROM cdr_calls WHERE ended IS NULL").fetchone()
        return int(row[0])
    except sqlite3.Error:
        return None
    finally:
        db.close()


def wait_drained(gw: harness.GatewayProcess, timeout_s: float) -> dict[str, Any]:
    """The live counts of the first status file written after now that shows 0 calls,
    dialogs, media sessions and streams, with no open call in the CDR database (the gateway
    rewrites the status every 5 s), or the last ones read."""
    path = gw.cdr_path.parent / "trunks.json"
    deadline = time.monotonic() + timeout_s
    try:
        seen = path.stat().st_mtime_ns
    except OSError:
        seen = 0
    live: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            mtime = path.stat().st_mtime_ns
        except OSError:
            mtime = seen
        if mtime != seen:
            seen = mtime
            time.sleep(0.05)
            live = gateway_live(gw)
            if live and all(live.get(k, 0) == 0 for k in LIVE_KEYS) and not cdr_open_calls(gw):
                break
        time.sleep(0.1)
    left: dict[str, Any] = {"cdr_open_calls": cdr_open_calls(gw)}
    left.update({k: live.get(k) for k in LIVE_KEYS if k in live})
    if "media_ports_free" in live:
        left["media_ports_in_use"] = live["media_ports_total"] - live["media_ports_free"]
    return left


def run_step(
    rate: int, seconds: float, first: int, client: Client, peers: Peers,
    gw: harness.GatewayProcess,
) -> StepResult:
    calls = max(1, round(rate * seconds))
    result = StepResult(rate=rate, calls=calls)
    log_offset = len(gw.log_text())
    before = peers.snapshot()
    seen_events = len(before["events"])
    cpu_before = harness.proc_cpu_seconds(gw.pid)
    started = result.started_monotonic = time.monotonic()
    records = client.run_step(first, calls, rate)
    deadline = time.monotonic() + EVENT_WAIT_S
    while True:
        if _done(records, peers.disconnected(), client) or time.monotonic() >= deadline:
            break
        if not gw.running():
            result.errors.append("the gateway exited during the step")
            break
        time.sleep(0.1)
    if gw.running():
        result.cpu_s = harness.proc_cpu_seconds(gw.pid) - cpu_before
    result.elapsed_s = time.monotonic() - started
    snap = peers.snapshot()
    # past the deadline: no more creates; hang-ups already queued still go (bounded)
    result.not_sent = client.purge_creates()
    hangup_deadline = time.monotonic() + EVENT_WAIT_S
    while not client.idle() and time.monotonic() < hangup_deadline and gw.running():
        time.sleep(0.1)

    # CallConnected by operationContext (the call's index), CallDisconnected (whose context
    # would be the terminate's: none) by call connection id
    connected_at: dict[int, float] = {}
    disconnected_at: set[str] = set()
    result.event_types = dict(Counter(e[1] for e in snap["events"][seen_events:]))
    for at, kind, ctx, cid in snap["events"][seen_events:]:
        if kind == "CallConnected" and ctx.isdigit():
            connected_at.setdefault(int(ctx), at)
        elif kind == "CallDisconnected":
            disconnected_at.add(cid)
    invites: dict[int, float] = snap["invites"]
    oks: dict[int, float] = snap["oks"]

    failures: Counter[str] = Counter()
    invite_ms: list[float] = []
    event_ms: list[float] = []
    rtt_ms: list[float] = []
    term_ms: list[float] = []
    lag_ms: list[float] = []
    for record in records:
        if not math.isnan(record.sent):
            lag_ms.append((record.sent - record.scheduled) * 1000)
        if not math.isnan(record.answered):
            rtt_ms.append((record.answered - record.sent) * 1000)
        failed = False
        if record.status != 201:
            if math.isnan(record.sent):
                failures["create not sent"] += 1
            elif record.status == 0:
                failures["create no response"] += 1
            else:
                failures[f"create {record.status}"] += 1
            failed = True
        if record.index in invites:
            if not math.isnan(record.sent):
                invite_ms.append((invites[record.index] - record.sent) * 1000)
                if invite_ms[-1] > SLOW_MS:
                    result.slow_invites.append(
                        (round(record.sent - started, 3), round(invite_ms[-1], 1)))
        elif record.status == 201:
            failures["no INVITE"] += 1
            failed = True
        if record.index in connected_at and record.index in oks:
            event_ms.append((connected_at[record.index] - oks[record.index]) * 1000)
            if event_ms[-1] > SLOW_MS:
                result.slow_events.append(
                    (round(oks[record.index] - started, 3), round(event_ms[-1], 1)))
        elif record.status == 201 and record.index in invites:
            failures["no CallConnected"] += 1
            failed = True
        if record.terminate_status not in (-1, 204):
            result.terminate_failed += 1
        if record.terminate_status == 204 and not math.isnan(record.terminate_answered):
            term_ms.append((record.terminate_answered - record.terminate_sent) * 1000)
        if record.status == 201 and record.call_connection_id not in disconnected_at:
            result.no_disconnected += 1
        result.failed += failed
    for record in records:
        if record.error and len(result.errors) < 5:
            result.errors.append(f"call {record.index}: {record.error}")
    sent = [r.sent for r in records if not math.isnan(r.sent)]
    if len(sent) > 1:
        result.achieved_rate = (len(sent) - 1) / (max(sent) - min(sent))
    result.failures = dict(failures)
    result.invite_ms = spread(invite_ms)
    result.event_ms = spread(event_ms)
    result.create_rtt_ms = spread(rtt_ms)
    result.terminate_rtt_ms = spread(term_ms)
    result.send_lag_ms = spread(lag_ms)
    result.retransmits = snap["retransmits"] - before["retransmits"]
    result.callee_requests = {
        k: v - before["requests"].get(k, 0) for k, v in snap["requests"].items()
        if v - before["requests"].get(k, 0)
    }
    result.left_after_drain = wait_drained(gw, DRAIN_WAIT_S) if gw.running() else {}
    lines = [
        line for line in gw.log_text()[log_offset:].splitlines()
        if re.search(r"\b(WARNING|ERROR|CRITICAL|Traceback)\b", line)
    ]
    result.log_count = len(lines)
    result.log_lines = lines[:10]
    return result


# --------------------------------------------------------------------------------------------
# report


def _ms(value: float) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.1f}"


def render(results: Sequence[StepResult], meta: dict[str, str]) -> str:
    lines = ["# REST: create_call -> INVITE, event delivery", ""]
    lines += [f"- {key}: {value}" for key, value in meta.items()]
    lines += [
        "",
        "| rate (calls/s) | calls | failed | INVITE p50 / p99 ms | event p50 / p99 ms "
        "| gateway CPU s / 1000 calls | HTTPS create RTT p50 / p99 ms |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        failures = ", ".join(f"{k} {v}" for k, v in r.failures.items())
        lines.append(
            f"| {r.rate} | {r.calls} | {r.failed}{' (' + failures + ')' if failures else ''} "
            f"| {_ms(r.invite_ms['p50'])} / {_ms(r.invite_ms['p99'])} "
            f"| {_ms(r.event_ms['p50'])} / {_ms(r.event_ms['p99'])} "
            f"| {r.cpu_per_1000:.2f} "
            f"| {_ms(r.create_rtt_ms['p50'])} / {_ms(r.create_rtt_ms['p99'])} |"
        )
    lines += [
        "",
        "| rate | achieved send rate | send lag p99 / max ms | INVITE p90 / max ms "
        f"| INVITEs > {BUDGET_P99_MS:g} ms | event p90 / max ms | terminate RTT p50 / p99 ms "
        "| terminate not 204 "
        "| no CallDisconnected | left after drain | INVITE retransmits | gateway log lines "
        ">= warning |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in results:
        left = ", ".join(f"{k} {v}" for k, v in r.left_after_drain.items()) or "-"
        lines.append(
            f"| {r.rate} | {r.achieved_rate:.1f} | {_ms(r.send_lag_ms['p99'])} / "
            f"{_ms(r.send_lag_ms['max'])} | {_ms(r.invite_ms['p90'])} / {_ms(r.invite_ms['max'])} "
            f"| {sum(1 for _, ms in r.slow_invites if ms > BUDGET_P99_MS)} "
            f"| {_ms(r.event_ms['p90'])} / {_ms(r.event_ms['max'])} "
            f"| {_ms(r.terminate_rtt_ms['p50'])} / {_ms(r.terminate_rtt_ms['p99'])} "
            f"| {r.terminate_failed} | {r.no_disconnected} | {left} | {r.retransmits} "
            f"| {r.log_count} |"
        )
    at_budget = [r for r in results if r.rate == BUDGET_RATE]
    if at_budget:
        p99 = at_budget[0].invite_ms["p99"]
        met = not math.isnan(p99) and p99 < BUDGET_P99_MS and at_budget[0].failed == 0
        lines += [
            "",
            f"DESIGN budget, REST create_call -> INVITE on the wire p99 < {BUDGET_P99_MS:g} ms "
            f"at {BUDGET_RATE} calls/s: p99 {_ms(p99)} ms, **{'met' if met else 'not met'}**.",
        ]
    for r in results:
        extra = r.errors + r.log_lines
        if extra:
            lines += ["", f"{r.rate} calls/s:", *(f"    {line}" for line in extra)]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# main


def start_gateway(workdir: Path, uas_port: int, verbose_logs: bool) -> harness.GatewayProcess:
    start = 20000 + 2 * (os.getpid() % ((32000 - 20000 - MEDIA_PORTS) // 2))
    extra: dict[str, dict[str, harness.TomlValue]] = {
        "media": {"anchor": True, "port_range": [start, start + MEDIA_PORTS - 1]},
        "rest": {"allow_insecure_callbacks": True},
    }
    if not verbose_logs:
        extra["log"] = {"level": "warning"}
    gateway = harness.GatewayProcess(
        workdir,
        trunks=[harness.TrunkSpec("uas", uas_port, inbound_from=())],
        dialplan=harness.route_all_dialplan(["uas"], match=r"^\+1555\d{7}$"),
        extra_config=extra,
    )
    gateway.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((LOOPBACK, gateway.rest_port), timeout=0.5):
                return gateway
        except OSError:
            time.sleep(0.1)
    gateway.stop(5)
    raise harness.HarnessError(
        f"the gateway does not listen for REST on {LOOPBACK}:{gateway.rest_port}\n"
        f"{gateway.log_tail()}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else "")
    parser.add_argument("--rates", default=",".join(map(str, DEFAULT_RATES)),
                        help="comma-separated call rates (calls/s)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each step")
    parser.add_argument("--workers", type=int, default=32,
                        help="client threads, each with its own keep-alive connection")
    parser.add_argument("--client", choices=["raw", "sdk"], default="raw",
                        help="raw signed http.client requests, or the ACS SDK")
    parser.add_argument("--pin", action="store_true",
                        help="gateway on CPU 0, client and peers on CPU 1")
    parser.add_argument("--quick", action="store_true", help="smoke run: 10,50 calls/s for 2 s")
    parser.add_argument("--verbose-logs", action="store_true",
                        help="the gateway's default log level")
    parser.add_argument("--out", type=Path, default=OUT_DIR / "rest_latency.md")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    rates = [10, 50] if args.quick else [int(r) for r in args.rates.split(",") if r.strip()]
    seconds = 2.0 if args.quick else args.seconds

    load_before = os.getloadavg()
    workdir = Path(tempfile.mkdtemp(prefix="bench-rest-latency-"))
    errors: list[str] = []
    results: list[StepResult] = []
    peers: Peers | None = None
    gateway: harness.GatewayProcess | None = None
    client: Client | None = None
    pinned = "not pinned"
    first_invite = ""
    idle_cpu = math.nan
    try:
        peers = Peers()
        gateway = start_gateway(workdir / "gateway", peers.uas.port, args.verbose_logs)
        if args.pin:
            from mediaload import cpu_plan, pin  # bench/mediaload.py

            gw_cpus, other_cpus = cpu_plan()
            ok = pin(gateway.pid, gw_cpus) and all(
                pin(pid, other_cpus) for pid in (*peers.pids, os.getpid())
            )
            pinned = (
                f"gateway on CPU {sorted(gw_cpus)}, client and peers on CPU {sorted(other_cpus)}"
                if ok else "pinning refused"
            )
        callback = f"http://{LOOPBACK}:{peers.receiver.port}/calls"
        workers: list[Worker]
        if args.client == "sdk":
            workers = [SdkWorker(gateway, callback) for _ in range(args.workers)]
        else:
            signer = Signer(gateway.access_key, f"{LOOPBACK}:{gateway.rest_port}")
            workers = [RawWorker(gateway, signer, callback) for _ in range(args.workers)]
        client = Client(workers, peers)
        cpu0 = harness.proc_cpu_seconds(gateway.pid)
        time.sleep(2.0)
        idle_cpu = (harness.proc_cpu_seconds(gateway.pid) - cpu0) / 2.0
        # one warm-up call (connections, first-use imports), not counted
        warm = client.run_step(0, 1, 1.0)
        time.sleep(1.0)
        if warm[0].status != 201:
            raise harness.HarnessError(f"warm-up create_call failed: {warm[0].error}")
        wait_drained(gateway, DRAIN_WAIT_S)
        first = 1
        for rate in rates:
            if not gateway.running():
                errors.append("the gateway exited")
                break
            result = run_step(rate, seconds, first, client, peers, gateway)
            first += result.calls
            results.append(result)
            print(
                f"{rate:>4}/s: {result.calls} calls, {result.failed} failed, INVITE p50/p99 "
                f"{_ms(result.invite_ms['p50'])}/{_ms(result.invite_ms['p99'])} ms, event "
                f"{_ms(result.event_ms['p50'])}/{_ms(result.event_ms['p99'])} ms, RTT "
                f"{_ms(result.create_rtt_ms['p50'])}/{_ms(result.create_rtt_ms['p99'])} ms, "
                f"CPU {result.cpu_per_1000:.2f} s/1000, left {result.left_after_drain}",
                flush=True,
            )
        first_invite = peers.uas.ask("snapshot")["first_invite"]
    except harness.HarnessError as exc:
        errors.append(str(exc).splitlines()[0])
        print(exc, file=sys.stderr)
    finally:
        if client is not None:
            client.close()
        if gateway is not None:
            code = gateway.stop(10.0)
            if code not in (0, None):
                errors.append(f"the gateway exited with code {code}")
        if peers is not None:
            peers.stop()

    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "python": platform.python_version(),
        "client": (
            f"{args.workers} threads, "
            + ("raw signed http.client requests over keep-alive HTTPS" if args.client == "raw"
               else "ACS SDK azure-communication-callautomation (create_call, hang_up)")
        ),
        "steps": f"{seconds:g} s of calls at each of {', '.join(map(str, rates))} calls/s",
        "cores": pinned,
        "gateway idle CPU": f"{idle_cpu * 100:.1f}% of a core",
        "load average (1, 5, 15 min)": f"{', '.join(f'{x:.2f}' for x in load_before)} before, "
        f"{', '.join(f'{x:.2f}' for x in os.getloadavg())} after",
        "latencies": "INVITE: request written -> INVITE read by the callee; event: callee's "
        "200 sent -> CallConnected read by the receiver; RTT: request written -> response read",
    }
    if errors:
        meta["errors"] = "; ".join(errors)
    report = render(results, meta)
    print()
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report + "\n")
    raw = {
        "meta": meta,
        "steps": [
            {**r.__dict__, "cpu_per_1000": r.cpu_per_1000} for r in results
        ],
        "first_invite": first_invite,
    }
    args.out.with_suffix(".json").write_text(json.dumps(harness.json_finite(raw), indent=2) + "\n")
    if args.keep:
        print(f"work directory kept: {workdir}", file=sys.stderr)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    failed = sum(r.failed for r in results)
    return 1 if errors or not results or failed else 0


if __name__ == "__main__":
    sys.exit(main())
