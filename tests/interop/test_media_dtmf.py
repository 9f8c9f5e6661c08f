"""Issue 4: DTMF through the anchored media. RFC 4733 telephone-events are relayed with the
payload type each leg negotiated, rescaled between 8000 and 48000 Hz clocks when the call is
transcoded, and turned into SIP INFO (``application/dtmf-relay``) toward a leg that
negotiated no telephone-event.

The caller is :class:`~.test_media_relay.Caller` (RawUac + an RTP endpoint). The callee is
SIPp (``uas_event96.xml`` with ``-rtp_echo``, ``uas_info_digits.xml`` logging every INFO it
gets) or :class:`RawUas`, a scripted callee with its own RTP endpoint, where the test must
see the callee's side of the wire (payload numbers, rescaled durations) or the callee must
send on its own.

The RFC 4733 packets are built here (section 2.5.1: a start packet with the marker bit and
duration 0, updates every 50 ms, the end packet three times), not with the gateway's
``EventSender``, so a shared bug cannot hide.
"""

from __future__ import annotations

import random
import re
import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .audio import dominant_frequency
from .conftest import GatewayFactory, SippServerFactory
from .harness import (
    GatewayProcess,
    SippServer,
    TrunkSpec,
    free_media_ports,
    free_port,
    port_in_use,
    route_all_dialplan,
)
from .rawsip import RawUac
from .rtppeer import Received, RtpPeer, rtp_packet, sdp_offer
from .test_media_relay import Caller, wait_status

DIGITS = "0123456789*#ABCD"
EVENT_PT = 101  # the caller's telephone-event payload type
VOLUME = 10


# --------------------------------------------------------------------------------------------
# a media port range nobody holds


def free_media_range(width: int = 200, attempts: int = 200) -> list[int]:
    """[first, last] of ``width`` ports (first even) in 20000-32000 that are all free for UDP
    right now. The harness's random block may overlap a bench running on the same host
    (its gateway and SIPp hold thousands of ports there); a call then gets 503 "no bindable
    RTP port pair" and the test would fail for nothing."""
    for _ in range(attempts):
        first = random.randrange(20000, 32000 - width, 2)
        if not any(port_in_use(port) for port in range(first, first + width)):
            return [first, first + width - 1]
    raise AssertionError(f"no {width} free UDP ports in a row in 20000-32000")


def media_config(**values: object) -> dict[str, dict[str, object]]:
    """``extra_config`` with a free [media] port_range and ``values``."""
    return {"media": {"port_range": free_media_range(), **values}}


# --------------------------------------------------------------------------------------------
# RFC 4733 packets, built and read independently of gateway.media.dtmf


@dataclass(frozen=True)
class Ev:
    """One telephone-event packet as the test sees it."""

    code: int
    end: bool
    volume: int
    duration: int
    marker: bool = False
    ts: int = 0
    pt: int = 0


def event_payload(code: int, end: bool, volume: int, duration: int) -> bytes:
    return struct.pack("!BBH", code, (0x80 if end else 0) | volume, duration)


def digit_packets(digit: str, duration_ms: int, *, clock: int = 8000, lose_end: bool = False
                  ) -> list[tuple[bool, bytes, tuple[int, bool, int, int]]]:
    """(marker, payload, (code, end, volume, duration)) for one digit: the start packet,
    an update every 50 ms, the end packet three times (none with ``lose_end``)."""
    code = DIGITS.index(digit)
    total = duration_ms * clock // 1000
    step = clock // 20
    fields = [(code, False, VOLUME, 0)]
    fields += [(code, False, VOLUME, d) for d in range(step, total, step)]
    if not lose_end:
        fields += [(code, True, VOLUME, total)] * 3
    return [(i == 0, event_payload(*f), f) for i, f in enumerate(fields)]


@dataclass
class SentDigits:
    """What :func:`send_digits` sent: per digit, its RTP timestamp and its packets' fields."""

    digits: list[tuple[str, int, int, list[tuple[int, bool, int, int]]]] = field(
        default_factory=list)  # (digit, duration_ms, ts, fields)

    @property
    def fields(self) -> list[tuple[int, bool, int, int]]:
        return [f for _, _, _, fs in self.digits for f in fs]


def send_digits(peer: RtpPeer, dest: tuple[str, int], digits: list[tuple[str, int]], *,
                pt: int = EVENT_PT, clock: int = 8000, seq: int = 3000, ts: int = 80000,
                ssrc: int = 0x0D7F0001, lose_end: bool = False, pace: float = 0.02
                ) -> SentDigits:
    """Send ``digits`` [(digit, duration_ms)] as RFC 4733 events, ``pace`` s apart, with a
    pause between digits; every packet of a digit carries the digit's start timestamp."""
    sent = SentDigits()
    for digit, duration_ms in digits:
        packets = digit_packets(digit, duration_ms, clock=clock, lose_end=lose_end)
        for marker, payload, _ in packets:
            peer.sock.sendto(rtp_packet(pt, seq, ts, ssrc, payload, marker=marker), dest)
            seq += 1
            time.sleep(pace)
        sent.digits.append((digit, duration_ms, ts, [f for _, _, f in packets]))
        ts += duration_ms * clock // 1000 + clock // 10  # the next digit 100 ms after the end
        time.sleep(0.1)
    return sent


# --------------------------------------------------------------------------------------------
# an RTP endpoint that keeps the raw packets (marker bit) and can echo them


@dataclass
class RecordingPeer(RtpPeer):
    """An :class:`RtpPeer` that also keeps every RTP datagram as received, and with
    ``echo`` sends each one back to where it came from (like SIPp's ``-rtp_echo``)."""

    echo: bool = False
    raw: list[tuple[tuple[str, int], bytes]] = field(default_factory=list)

    def _received(self, packet: Received, data: bytes) -> None:
        self.raw.append((packet.source, data))
        super()._received(packet, data)
        if self.echo:
            try:
                self.sock.sendto(data, packet.source)
            except OSError:
                pass

    def events(self, pt: int) -> list[Ev]:
        """The telephone-event packets received with payload type ``pt``, in arrival order."""
        out = []
        for _, data in list(self.raw):
            if data[1] & 0x7F != pt:
                continue
            cc = data[0] & 0x0F
            body = data[12 + 4 * cc:]
            code, flags, duration = struct.unpack_from("!BBH", body)
            ts = struct.unpack_from("!I", data, 4)[0]
            out.append(Ev(code, bool(flags & 0x80), flags & 0x3F, duration,
                          bool(data[1] & 0x80), ts, pt))
        return out

    def payload_types(self) -> set[int]:
        return {data[1] & 0x7F for _, data in list(self.raw)}


def recording_caller(gw: GatewayProcess) -> tuple[Caller, RecordingPeer]:
    """A :class:`Caller` whose RTP endpoint is a :class:`RecordingPeer`."""
    caller = Caller(gw)
    caller.rtp.close()
    peer = RecordingPeer()
    caller.rtp = peer
    return caller, peer


def wait_idle(gw: GatewayProcess, started: int = 1, timeout_s: float = 15.0
              ) -> dict[str, Any]:
    """The live status once ``started`` calls have begun and none is left, media included
    (the status file is rewritten periodically: a snapshot from before the first call also
    says 0 calls, hence ``calls_started``)."""
    return wait_status(gw, lambda s: (
        s.get("calls_started", 0) >= started and s.get("calls") == 0
        and s.get("media_sessions") == 0 and s.get("media_streams") == 0), timeout_s)


def wait_for(check: Callable[[], bool], timeout_s: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(step)
    return check()


# --------------------------------------------------------------------------------------------
# SIP requests on a raw socket (the gateway's INVITE, ACK, INFO and BYE)


_COMPACT = {"v": "via", "f": "from", "t": "to", "i": "call-id", "m": "contact",
            "c": "content-type", "l": "content-length"}


@dataclass
class SipRequest:
    method: str
    headers: list[tuple[str, str]]  # (lower-case name, value), in order
    body: bytes
    raw: bytes

    def header(self, name: str) -> str:
        name = name.lower()
        return next((v for n, v in self.headers if n == name), "")

    def all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for n, v in self.headers if n == name]


def parse_request(data: bytes) -> SipRequest | None:
    """A SIP request (None for a response or garbage)."""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    first = lines[0].split()
    if len(first) != 3 or first[2] != "SIP/2.0" or first[0].startswith("SIP/"):
        return None
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and headers:
            name, value = headers[-1]
            headers[-1] = (name, value + " " + line.strip())
            continue
        name, sep, value = line.partition(":")
        if not sep:
            continue
        key = name.strip().lower()
        headers.append((_COMPACT.get(key, key), value.strip()))
    return SipRequest(first[0], headers, body, data)


def response_to(req: SipRequest, status: int, reason: str, *, contact: str,
                to_tag: str | None = None, body: str = "") -> bytes:
    """A response to ``req`` (RFC 3261 8.2.6: Via, From, To, Call-ID, CSeq copied; the To tag
    added when the request has none)."""
    lines = [f"SIP/2.0 {status} {reason}"]
    lines += [f"Via: {v}" for v in req.all("via")]
    lines += [f"Record-Route: {v}" for v in req.all("record-route")]
    to = req.header("to")
    if to_tag and ";tag=" not in to.replace(" ", ""):
        to += f";tag={to_tag}"
    lines += [f"From: {req.header('from')}", f"To: {to}",
              f"Call-ID: {req.header('call-id')}", f"CSeq: {req.header('cseq')}",
              f"Contact: {contact}"]
    if body:
        lines += ["Content-Type: application/sdp"]
    lines += [f"Content-Length: {len(body.encode())}"]
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def serve_requests(sock: socket.socket, contact: str, seconds: float, *,
                   until: Callable[[list[SipRequest]], bool] | None = None
                   ) -> list[SipRequest]:
    """Read requests from ``sock`` for up to ``seconds`` (less once ``until`` is true of what
    came), answering each but an ACK with 200; responses are skipped."""
    got: list[SipRequest] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(min(left, 0.2))
        try:
            data, addr = sock.recvfrom(65536)
        except TimeoutError:
            continue
        req = parse_request(data)
        if req is None:
            continue
        got.append(req)
        if req.method != "ACK":
            sock.sendto(response_to(req, 200, "OK", contact=contact), addr)
        if until is not None and until(got):
            break
    return got


def caller_requests(caller: Caller, seconds: float, *,
                    until: Callable[[list[SipRequest]], bool] | None = None
                    ) -> list[SipRequest]:
    """Requests the gateway sent the caller (BYE, INFO), each answered 200."""
    uac = caller.uac
    return serve_requests(uac.sock, f"<sip:raw@{uac.host}:{uac.port}>", seconds, until=until)


def has(method: str, count: int = 1) -> Callable[[list[SipRequest]], bool]:
    return lambda got: len({r.header("cseq") for r in got if r.method == method}) >= count


class RawUas:
    """A scripted callee on one UDP socket, behind a trunk: it answers the gateway's INVITE
    with 200 and ``answer(offer, rtp_port)`` as SDP, answers every other request but ACK
    with 200, and keeps what it got. Its RTP endpoint (``rtp``, echoing with ``echo``)
    sends to the gateway's port from the offer (``gateway_media``)."""

    def __init__(self, answer: Callable[[str, int], str], *, echo: bool = False) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.rtp = RecordingPeer(echo=echo)
        self.answer = answer
        self.contact = f"<sip:uas@127.0.0.1:{self.port}>"
        self.requests: list[SipRequest] = []
        self.offer = ""
        self.gateway_media: tuple[str, int] = ("", 0)
        self._answers: dict[str, bytes] = {}  # Call-ID -> our 200 (for retransmissions)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(65536)
            except (TimeoutError, OSError):
                continue
            req = parse_request(data)
            if req is None:
                continue
            self.requests.append(req)
            if req.method == "ACK":
                continue
            if req.method == "INVITE":
                reply = self._answers.get(req.header("call-id"))
                if reply is None:
                    self.offer = req.body.decode()
                    host = re.search(r"^c=IN IP4 (\S+)", self.offer, re.M)
                    port = re.search(r"^m=audio (\d+)", self.offer, re.M)
                    assert host and port, self.offer
                    self.gateway_media = (host.group(1), int(port.group(1)))
                    reply = response_to(req, 200, "OK", contact=self.contact,
                                        to_tag="uas" + uuid.uuid4().hex[:8],
                                        body=self.answer(self.offer, self.rtp.port))
                    self._answers[req.header("call-id")] = reply
            else:
                reply = response_to(req, 200, "OK", contact=self.contact)
            self.sock.sendto(reply, addr)

    def got(self, method: str) -> list[SipRequest]:
        """Requests of ``method`` received, one per transaction (retransmissions dropped)."""
        seen: dict[tuple[str, str], SipRequest] = {}
        for req in list(self.requests):
            if req.method == method:
                seen.setdefault((req.header("call-id"), req.header("cseq")), req)
        return list(seen.values())

    def wait(self, method: str, count: int = 1, timeout_s: float = 10.0) -> list[SipRequest]:
        wait_for(lambda: len(self.got(method)) >= count, timeout_s)
        return self.got(method)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()
        self.rtp.close()


def answer_sdp(port: int, codecs: list[tuple[int, str, str | None]], direction: str = "sendrecv"
               ) -> str:
    """An SDP answer from 127.0.0.1:``port`` with ``codecs`` [(pt, rtpmap, fmtp)]."""
    lines = ["v=0", "o=rawuas 1 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0",
             f"m=audio {port} RTP/AVP {' '.join(str(pt) for pt, _, _ in codecs)}"]
    for pt, rtpmap, fmtp in codecs:
        lines.append(f"a=rtpmap:{pt} {rtpmap}")
        if fmtp:
            lines.append(f"a=fmtp:{pt} {fmtp}")
    lines += ["a=ptime:20", f"a={direction}"]
    return "\r\n".join(lines) + "\r\n"


def offered_pt(offer: str, rtpmap: str) -> int:
    """The payload number the gateway's offer gives ``rtpmap`` (e.g. "opus/48000")."""
    found = re.search(rf"^a=rtpmap:(\d+) {re.escape(rtpmap)}", offer, re.M | re.I)
    assert found, f"{rtpmap} not offered:\n{offer}"
    return int(found.group(1))


def raw_uas_gateway(gateway_factory: GatewayFactory, uas: RawUas, *,
                    caller_codecs: tuple[str, ...] = ("PCMU", "PCMA"),
                    callee_codecs: tuple[str, ...] = ("PCMU", "PCMA"),
                    media: dict[str, object] | None = None) -> GatewayProcess:
    trunks = [
        TrunkSpec("phones", free_port(), codecs=caller_codecs),
        TrunkSpec("callee", uas.port, inbound_from=(), codecs=callee_codecs),
    ]
    return gateway_factory(trunks=trunks, dialplan=route_all_dialplan(["callee"]),
                           extra_config=media_config(**(media or {})))


def fields_of(events: list[Ev]) -> list[tuple[int, bool, int, int]]:
    return [(e.code, e.end, e.volume, e.duration) for e in events]


def digits_of(events: list[Ev]) -> list[tuple[int, int, int]]:
    """(timestamp, code, final duration) per event in ``events`` (grouped by timestamp)."""
    out: dict[tuple[int, int], int] = {}
    for e in events:
        out[(e.ts, e.code)] = max(out.get((e.ts, e.code), 0), e.duration)
    return [(ts, code, d) for (ts, code), d in out.items()]


def assert_rfc4733_shape(events: list[Ev], sent: SentDigits, scale: int = 1) -> None:
    """``events`` carry the sent digits packet for packet: the same fields in order (the
    durations times ``scale``, for a clock ``scale`` times faster), the marker on each
    digit's first packet only, one timestamp per digit, a new one per digit."""
    want = [(c, e, v, d * scale) for c, e, v, d in sent.fields]
    assert fields_of(events) == want, (fields_of(events), want)
    at = 0
    stamps = []
    for _, _, _, fs in sent.digits:
        group = events[at:at + len(fs)]
        at += len(fs)
        assert [e.marker for e in group] == [True] + [False] * (len(fs) - 1), group
        assert len({e.ts for e in group}) == 1, group
        stamps.append(group[0].ts)
    assert len(set(stamps)) == len(stamps), stamps


# --------------------------------------------------------------------------------------------
# a. relay with payload type mapping


def test_events_relayed_with_payload_types_mapped_through_sipp_echo(
    gateway_factory: GatewayFactory, sipp_server: SippServerFactory
) -> None:
    """The caller's telephone-event is 101, SIPp's 96 (uas_event96.xml, -rtp_echo): the
    digits go out to SIPp and come back to the caller at 101, packet for packet."""
    echo = sipp_server("uas_event96", extra_args=["-rtp_echo", "-mp", str(free_media_ports())])
    gw = gateway_factory(trunks=[TrunkSpec("echo", echo.port)],
                         dialplan=route_all_dialplan(["echo"]), extra_config=media_config())
    caller, rtp = recording_caller(gw)
    try:
        reply = caller.invite(sdp_offer(caller.rtp.port))
        assert reply.status == 200, reply.raw
        assert "telephone-event/8000" in reply.raw.decode(errors="replace"), reply.raw
        caller.rtp.send_tone(caller.media, 500.0, 0.3)  # media first: latching both legs
        sent = send_digits(caller.rtp, caller.media, [("5", 160), ("#", 250), ("0", 100)])
        assert wait_for(lambda: len(rtp.events(EVENT_PT)) >= len(sent.fields), 5.0)
        time.sleep(0.3)  # nothing more may come
        back = rtp.events(EVENT_PT)
        assert_rfc4733_shape(back, sent)
        # the relay keeps the caller's timestamps (nothing is decoded or re-stamped)
        assert [ts for _, _, ts, _ in sent.digits] == sorted({e.ts for e in back}), back
        assert 96 not in rtp.payload_types(), rtp.payload_types()
        assert caller.bye() is not None
    finally:
        caller.close()
    live = wait_idle(gw)
    assert live["media_handler_errors"] == 0 and live["rtp_unknown_pt"] == 0, live


def test_event_payload_type_on_the_callee_wire(gateway_factory: GatewayFactory) -> None:
    """Same mapping, seen from the callee's side: the callee numbered telephone-event 96 in
    its answer, so the gateway must send it 96 (RFC 3264 6.1: each side sends with the
    numbers the receiver listed), and maps the echo back to the caller's 101."""
    uas = RawUas(lambda offer, port: answer_sdp(
        port, [(0, "PCMU/8000", None), (96, "telephone-event/8000", "0-16")]), echo=True)
    gw = raw_uas_gateway(gateway_factory, uas)
    caller, rtp = recording_caller(gw)
    try:
        assert caller.invite(sdp_offer(caller.rtp.port)).status == 200
        assert offered_pt(uas.offer, "telephone-event/8000") == EVENT_PT  # the caller's
        caller.rtp.send_tone(caller.media, 500.0, 0.3)
        sent = send_digits(caller.rtp, caller.media, [("9", 120), ("*", 200)])
        assert wait_for(lambda: len(rtp.events(EVENT_PT)) >= len(sent.fields), 5.0)
        time.sleep(0.3)
        on_callee = uas.rtp.events(96)
        assert_rfc4733_shape(on_callee, sent)
        assert EVENT_PT not in uas.rtp.payload_types(), uas.rtp.payload_types()
        assert_rfc4733_shape(rtp.events(EVENT_PT), sent)
        assert 96 not in rtp.payload_types()
        assert caller.bye() is not None
        assert uas.wait("BYE")
    finally:
        caller.close()
        uas.close()


# --------------------------------------------------------------------------------------------
# b. SIP INFO toward a leg without telephone-event


def info_log(server: SippServer, path: Path) -> list[tuple[int, str, int]]:
    """(CSeq, digit, duration ms) of every INFO uas_info_digits.xml logged, retransmissions
    (same CSeq) once."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return []
    seen: dict[int, tuple[int, str, int]] = {}
    for m in re.finditer(r"INFO cseq=(\d+) signal=(\S) duration=(\d+)", text):
        seen.setdefault(int(m.group(1)), (int(m.group(1)), m.group(2), int(m.group(3))))
    return [seen[k] for k in sorted(seen)]


def info_gateway(gateway_factory: GatewayFactory, sipp_server: SippServerFactory,
                 log_path: Path) -> tuple[GatewayProcess, SippServer]:
    server = sipp_server("uas_info_digits",
                         extra_args=["-trace_logs", "-log_file", str(log_path)])
    gw = gateway_factory(trunks=[TrunkSpec("info", server.port)],
                         dialplan=route_all_dialplan(["info"]), extra_config=media_config())
    return gw, server


def with_body(request: bytes, content_type: str, body: str) -> bytes:
    return request.replace(
        b"Content-Length: 0\r\n\r\n",
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n{body}".encode())


def test_uas_info_digits_scenario_logs_good_info_and_fails_on_a_bad_one(
    sipp_server: SippServerFactory, tmp_path: Path
) -> None:
    """The scenario alone (no gateway), so that its checks are known to work: a good
    dtmf-relay INFO is logged; one without a valid Signal is not, and fails the call."""
    log_path = tmp_path / "info.log"
    server = sipp_server("uas_info_digits",
                         extra_args=["-trace_logs", "-log_file", str(log_path)])
    uac = RawUac(server.port)
    call_id = uuid.uuid4().hex
    try:
        invite = uac.request("INVITE", "+15551230000", call_id, "z9hG4bK" + uuid.uuid4().hex, 1)
        uac.send(with_body(invite, "application/sdp", sdp_offer(free_port())))
        reply = uac.final(10, call_id=call_id)
        assert reply is not None and reply.status == 200, reply
        assert b"telephone-event" not in reply.raw, reply.raw
        tag = reply.to_tag
        uac.send(uac.request("ACK", "+15551230000", call_id, "z9hG4bK" + uuid.uuid4().hex, 1,
                             tag))
        for cseq, body in ((2, "Signal=8\r\nDuration=250\r\n"),
                           (3, "Signal=X\r\nDuration=250\r\n")):
            info = uac.request("INFO", "+15551230000", call_id,
                               "z9hG4bK" + uuid.uuid4().hex, cseq, tag)
            uac.send(with_body(info, "application/dtmf-relay", body))
            answered = uac.final(5, method="INFO", call_id=call_id)
            assert answered is not None and answered.status == 200, (cseq, answered)
        # SIPp answers the bad one too, skips its remaining actions (no log line) and
        # counts the call as failed when it ends
        uac.send(uac.request("BYE", "+15551230000", call_id, "z9hG4bK" + uuid.uuid4().hex, 4,
                             tag))
        assert uac.final(5, method="BYE", call_id=call_id) is not None
    finally:
        uac.close()
    assert info_log(server, log_path) == [(2, "8", 250)], log_path.read_text()
    assert server.wait_counts(1, 10.0) == (0, 1), server.log_text()[-3000:]
    assert int(server.stats().get("FailedRegexpDoesntMatch(C)", "0")) == 1, server.stats()


def test_events_become_sip_info_once_per_digit(
    gateway_factory: GatewayFactory, sipp_server: SippServerFactory, tmp_path: Path
) -> None:
    """SIPp answers PCMU without telephone-event (uas_info_digits.xml): each RFC 4733 digit
    of the caller reaches it as one INFO, Signal and Duration right, despite the three end
    packets; no telephone-event packet reaches it."""
    log_path = tmp_path / "info.log"
    gw, server = info_gateway(gateway_factory, sipp_server, log_path)
    caller = Caller(gw)
    digits = [("5", 160), ("#", 200), ("9", 120), ("D", 100)]
    try:
        reply = caller.invite()
        assert reply.status == 200, reply.raw
        sent = send_digits(caller.rtp, caller.media, digits)
        assert len(sent.digits) == len(digits)
        assert wait_for(lambda: len(info_log(server, log_path)) >= len(digits), 8.0), (
            info_log(server, log_path))
        time.sleep(1.0)  # a duplicate would come now
        got = info_log(server, log_path)
        assert [(d, ms) for _, d, ms in got] == digits, got
        assert caller.bye() is not None
    finally:
        caller.close()
    assert server.wait_counts(1, 15.0) == (1, 0), server.log_text()[-3000:]
    live = wait_idle(gw)
    assert live["media_handler_errors"] == 0, live
    assert live["media_ports_free"] == live["media_ports_total"], live


def test_digit_with_lost_end_packets_still_becomes_info(
    gateway_factory: GatewayFactory, sipp_server: SippServerFactory, tmp_path: Path
) -> None:
    """A digit whose three end packets are all lost (start and updates only, and nothing
    after it) must still reach the INFO-only callee once the event goes quiet: the
    EventTracker's timeout (``poll``, after 0.3 s) is there for this."""
    log_path = tmp_path / "info.log"
    gw, server = info_gateway(gateway_factory, sipp_server, log_path)
    caller = Caller(gw)
    try:
        assert caller.invite().status == 200
        send_digits(caller.rtp, caller.media, [("3", 200)], lose_end=True)
        arrived = wait_for(lambda: len(info_log(server, log_path)) >= 1, 5.0)
        got = info_log(server, log_path)
        assert arrived, "no INFO for a digit whose end packets were lost"
        assert [d for _, d, _ in got] == ["3"], got
        assert got[0][2] >= 150, got  # at least the last update's 150 ms
        assert caller.bye() is not None
    finally:
        caller.close()


def test_callee_events_become_info_to_a_caller_without_telephone_event(
    gateway_factory: GatewayFactory,
) -> None:
    """The other direction: the caller offered PCMU only, the callee sends RFC 4733 digits;
    the caller gets one INFO per digit (answered 200), and no telephone-event packet."""
    uas = RawUas(lambda offer, port: answer_sdp(
        port, [(0, "PCMU/8000", None), (101, "telephone-event/8000", "0-16")]))
    gw = raw_uas_gateway(gateway_factory, uas)
    caller, rtp = recording_caller(gw)
    try:
        reply = caller.invite(sdp_offer(caller.rtp.port, codecs="0"))
        assert reply.status == 200, reply.raw
        assert b"telephone-event" not in reply.raw, reply.raw
        uas.rtp.send_tone(uas.gateway_media, 700.0, 0.3)
        send_digits(uas.rtp, uas.gateway_media, [("7", 160), ("0", 240)], pt=101)
        infos = caller_requests(caller, 8.0, until=has("INFO", 2))
        bodies = [r.body.decode() for r in infos if r.method == "INFO"]
        by_cseq = {r.header("cseq"): r for r in infos if r.method == "INFO"}
        assert len(by_cseq) == 2, bodies
        for req in by_cseq.values():
            assert req.header("content-type").startswith("application/dtmf-relay"), req.raw
        signals = [re.findall(r"Signal=(\S)\r?\nDuration=(\d+)", r.body.decode())[0]
                   for r in by_cseq.values()]
        assert signals == [("7", "160"), ("0", "240")], bodies
        assert not [p for p in rtp.payload_types() if p != 0], rtp.payload_types()
        assert caller.bye() is not None
    finally:
        caller.close()
        uas.close()


# --------------------------------------------------------------------------------------------
# c. translation across transcoding (8000 Hz <-> 48000 Hz telephone-event)


def test_events_rescaled_across_a_transcoded_call(gateway_factory: GatewayFactory) -> None:
    """Caller PCMU + telephone-event/8000 (101), callee Opus + telephone-event/48000 only,
    echoing: the callee gets the digits at its own payload number with durations x6 (the
    48 kHz clock), and the echo comes back to the caller at 101 with the caller's
    durations, packet for packet, re-stamped by the gateway's transcoders (their own
    timestamps, one per digit, marker on each digit's first packet)."""

    def answer(offer: str, port: int) -> str:
        opus = offered_pt(offer, "opus/48000")
        event48 = offered_pt(offer, "telephone-event/48000")
        return answer_sdp(port, [(opus, "opus/48000/2", "useinbandfec=1"),
                                 (event48, "telephone-event/48000", "0-16")])

    uas = RawUas(answer, echo=True)
    gw = raw_uas_gateway(gateway_factory, uas, caller_codecs=("PCMU",), callee_codecs=("opus",))
    caller, rtp = recording_caller(gw)
    try:
        reply = caller.invite(sdp_offer(caller.rtp.port))
        assert reply.status == 200, reply.raw
        body = reply.raw.decode(errors="replace")
        assert "PCMU/8000" in body and "telephone-event/8000" in body, body
        event48 = offered_pt(uas.offer, "telephone-event/48000")
        caller.rtp.send_tone(caller.media, 500.0, 1.0)
        sent = send_digits(caller.rtp, caller.media, [("1", 160), ("#", 250)])
        assert wait_for(lambda: len(rtp.events(EVENT_PT)) >= len(sent.fields), 5.0)
        time.sleep(0.3)
        assert_rfc4733_shape(uas.rtp.events(event48), sent, scale=6)
        # 48000 / 8000 is exact: the durations come back as sent (not just within a unit)
        assert_rfc4733_shape(rtp.events(EVENT_PT), sent)
        # the audio made the same round trip (PCMU -> Opus -> echo -> PCMU)
        freq = dominant_frequency(caller.rtp.audio(), 8000, skip_seconds=0.2)
        assert abs(freq - 500.0) < 10, freq
        assert caller.bye() is not None
    finally:
        caller.close()
        uas.close()
    live = wait_idle(gw)
    assert live["transcoders"] == 0, live
    assert live["media_handler_errors"] == 0, live


# --------------------------------------------------------------------------------------------
# d. in-band DTMF (tones in the G.711 audio) detected on a trunk with dtmf_inband = true

_ROWS = {"1": 697, "2": 697, "3": 697, "A": 697, "4": 770, "5": 770, "6": 770, "B": 770,
         "7": 852, "8": 852, "9": 852, "C": 852, "*": 941, "0": 941, "#": 941, "D": 941}
_COLUMNS = {"1": 1209, "4": 1209, "7": 1209, "*": 1209, "2": 1336, "5": 1336, "8": 1336,
            "0": 1336, "3": 1477, "6": 1477, "9": 1477, "#": 1477, "A": 1633, "B": 1633,
            "C": 1633, "D": 1633}


def dtmf_audio(digits: str, tone_ms: int = 120, gap_ms: int = 120) -> Any:
    """The digits as dual tones (-10 dBm0-ish each), with silence between, 8 kHz int16."""
    import numpy as np

    parts = [np.zeros(1600, dtype=np.int16)]
    for digit in digits:
        t = np.arange(8 * tone_ms) / 8000
        pair = 4000 * (np.sin(2 * np.pi * _ROWS[digit] * t)
                       + np.sin(2 * np.pi * _COLUMNS[digit] * t))
        parts += [pair.astype(np.int16), np.zeros(8 * gap_ms, dtype=np.int16)]
    parts.append(np.zeros(1600, dtype=np.int16))
    return np.concatenate(parts)


def test_inband_tones_become_sip_info_on_a_dtmf_inband_trunk(
    gateway_factory: GatewayFactory, sipp_server: SippServerFactory, tmp_path: Path
) -> None:
    """The caller's trunk has dtmf_inband = true and the caller sends its digits as tones in
    its PCMU audio, no telephone-event: the gateway detects them (Goertzel) and the callee,
    which negotiated no telephone-event, gets one INFO per digit, in order."""
    from .rtppeer import ulaw_encode

    log_path = tmp_path / "info.log"
    server = sipp_server("uas_info_digits",
                         extra_args=["-trace_logs", "-log_file", str(log_path)])
    gw = gateway_factory(
        trunks=[TrunkSpec("carrier", free_port(), extra={"dtmf_inband": True}),
                TrunkSpec("info", server.port, inbound_from=())],
        dialplan=route_all_dialplan(["info"]), extra_config=media_config())
    caller = Caller(gw)
    digits = "159#"
    try:
        reply = caller.invite(sdp_offer(caller.rtp.port, codecs="0"))
        assert reply.status == 200, reply.raw
        pcm = dtmf_audio(digits)
        start = time.monotonic()
        for i in range(len(pcm) // 160):
            caller.rtp.sock.sendto(rtp_packet(0, 500 + i, 80000 + 160 * i, 0xD7F,
                                              ulaw_encode(pcm[i * 160:(i + 1) * 160])),
                                   caller.media)
            delay = start + (i + 1) * 0.02 - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        assert wait_for(lambda: len(info_log(server, log_path)) >= len(digits), 8.0), (
            info_log(server, log_path))
        time.sleep(0.5)
        got = info_log(server, log_path)
        assert "".join(d for _, d, _ in got) == digits, got
        assert all(80 <= ms <= 200 for _, _, ms in got), got  # 120 ms tones
        assert caller.bye() is not None
    finally:
        caller.close()
    assert server.wait_counts(1, 15.0) == (1, 0), server.log_text()[-3000:]
    gw.stop()
    assert "handler bugs 0" in gw.log_text()
