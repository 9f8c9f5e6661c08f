"""Issue 5's Show: an app written against the public ACS Call Automation SDK
(``azure-communication-callautomation`` 1.6.0) drives the gateway, with only its connection
string (from ``acs-gateway connection-string``) and ``connection_verify`` changed.

SIPp plays the carrier: ``uac_app_dtmf.xml`` / ``uac_app_wait.xml`` call an app number (dial plan
action ``app``), ``uac_busy_expect.xml`` a number the app refuses, ``uas.xml`` /
``uas_busy.xml`` / ``uas_bye.xml`` answer the calls the app places. The app's webhook is
:class:`~.acs.EventReceiver` (IncomingCall with the Event Grid validation handshake first,
CloudEvents callbacks). Each test is one of the issue's list:

1. inbound: IncomingCall -> answer_call -> CallConnected -> play a WAV (file:// under
   [rest] media_dir) -> PlayStarted/PlayCompleted -> recognize 4 DTMF digits that SIPp sends as
   RFC 4733 -> RecognizeCompleted (one two three four) -> hang_up -> SIPp got its BYE ->
   CallDisconnected last;
2. reject_call busy / forbidden / none -> SIPp sees 486 / 403 / 603 (and an unanswered
   IncomingCall -> 480 after [rest] incoming_call_timeout);
3. outbound create_call answered, add_participant, remove_participant, hang_up for everyone;
4. create_call to a busy number -> CreateCallFailed, code 486, subCode 560486;
5. transfer_call_to_participant of an answered inbound call (bridged by the gateway: SIPp's
   carrier leg does not allow REFER) -> CallTransferAccepted, CallDisconnected, the target got
   the call;
6. recording of a call whose carrier plays 1000 Hz: the WAV under [rest] recordings_dir holds
   that tone;
7. a retried create_call (same Repeatability-Request-ID) dials once and returns the same call;
8. bad input through the SDK and raw (wrong key, stale date, tampered body, unknown
   api-version, unknown call, malformed JSON, missing field, out-of-range values): each gets
   its ACS error, and the call in progress is untouched.

The first tests below need no gateway: they check the test's own tools (the RFC 4733 captures
match the scenario's SDP, the tone capture is a tone, the raw signer signs as the SDK does).
"""

from __future__ import annotations

import base64
import datetime
import re
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

# the SDK is the client under test: a test dependency (setup.cfg [test]), never skipped
from azure.communication.callautomation import (
    CallAutomationClient,
    CallConnectionClient,
    CallRejectReason,
    FileSource,
    PhoneNumberIdentifier,
    RecognizeInputType,
)
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
)

from .acs import (
    API_VERSION,
    Event,
    EventReceiver,
    SignedRequest,
    content_sha256,
    hmac_signature,
    imf_date,
    sdk_client,
    signed_request,
    type_matches,
    wav_frequency,
    write_tone_wav,
)
from .audio import assert_tone, dominant_frequency
from .conftest import GatewayFactory, SippServerFactory
from .harness import (
    SCENARIO_DIR,
    GatewayProcess,
    SippServer,
    TrunkSpec,
    free_media_ports,
    free_port,
)
from .pcaptone import read_rtp_pcap, sipp_dtmf_pcap, write_tone_pcap
from .rtppeer import ulaw_decode
from .test_media_dtmf import RawUas, SipRequest, answer_sdp, free_media_range, wait_for
from .test_media_relay import wait_status

INBOUND = "+15550001234"  # an app number: [[inbound]] action = "app"
CALLER = "+15550001111"  # the SIPp scenarios' caller
CALLEE = "+15551230001"  # routed to the "callee" trunk
SECOND = "+15551230002"  # same trunk, another party
TRANSFER_TARGET = "+15551239999"  # same trunk
BUSY = "+15554860001"  # routed to the "busy" trunk
SOURCE = "+15550009999"  # the app's caller id (sourceCallerIdNumber)

DIALPLAN = """
[[inbound]]
match = '^\\+15550\\d{6}$'
from_trunk = "carrier"
action = "app"

[[outbound]]
name = "callees"
match = '^\\+1555123\\d{4}$'
trunks = ["callee"]

[[outbound]]
name = "busy"
match = '^\\+1555486\\d{4}$'
trunks = ["busy"]
"""

#: How long uac_app_dtmf.xml waits after its ACK before keying 1 2 3 4 (the app answers,
#: plays a 1 s prompt and starts recognizing meanwhile: about 2 s on a quiet machine).
DIGITS_AFTER_MS = 5000
PROMPT_SECONDS = 1.0
#: Events reach a loopback receiver within 1 s (DESIGN.md, REST fine print).
EVENT_LATENCY_S = 1.0


# --------------------------------------------------------------------------------------------
# the setting: a gateway with the REST surface, its app's webhook, SIPp carriers


class App:
    """One test's gateway, webhook receiver, SDK client and directories."""

    def __init__(self, gateway: GatewayProcess, receiver: EventReceiver, media_dir: Path,
                 recordings_dir: Path) -> None:
        self.gateway = gateway
        self.receiver = receiver
        self.media_dir = media_dir
        self.recordings_dir = recordings_dir
        self.client: CallAutomationClient = sdk_client(gateway)

    @property
    def callback(self) -> str:
        return self.receiver.url("/calls")

    def connection(self, call_connection_id: str) -> CallConnectionClient:
        return self.client.get_call_connection(call_connection_id)

    def close(self) -> None:
        self.client.close()


@pytest.fixture
def receiver() -> Iterator[EventReceiver]:
    with EventReceiver() as r:
        yield r
        print(r.describe())


@pytest.fixture
def make_app(
    gateway_factory: GatewayFactory, interop_dir: Path, sipp_available: str
) -> Iterator[Any]:
    """Factory: ``make_app(receiver, carrier_port=..., callee_port=..., busy_port=...,
    rest={...})`` -> a started gateway whose dial plan sends app numbers to the REST app and
    +1555123xxxx / +1555486xxxx to the SIPp callees, and an :class:`App` around it."""
    apps: list[App] = []

    def make(
        receiver: EventReceiver,
        *,
        carrier_port: int | None = None,
        callee_port: int | None = None,
        busy_port: int | None = None,
        rest: dict[str, Any] | None = None,
    ) -> App:
        index = len(apps)
        media_dir = interop_dir / f"media-{index}"
        recordings_dir = interop_dir / f"recordings-{index}"
        media_dir.mkdir(parents=True, exist_ok=True)
        rest_config: dict[str, Any] = {
            "incoming_call_webhooks": [receiver.url("/incoming")],
            "allow_insecure_callbacks": True,
            "incoming_call_timeout": 20,
            "media_dir": str(media_dir),
            "recordings_dir": str(recordings_dir),
        }
        rest_config.update(rest or {})
        gateway = gateway_factory(
            trunks=[
                TrunkSpec("carrier", carrier_port or free_port()),
                TrunkSpec("callee", callee_port or free_port(), inbound_from=()),
                TrunkSpec("busy", busy_port or free_port(), inbound_from=()),
            ],
            dialplan=DIALPLAN,
            extra_config={"rest": rest_config, "media": {"port_range": free_media_range()}},
        )
        receiver.context = lambda: f"--- gateway log tail ---\n{gateway.log_tail(3000)}"
        wait_rest_listening(gateway)
        app = App(gateway, receiver, media_dir, recordings_dir)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.close()


def wait_rest_listening(gateway: GatewayProcess, timeout_s: float = 10.0) -> None:
    """The REST port accepts TCP connections, or AssertionError naming [rest] listen."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", gateway.rest_port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(
        f"the gateway does not listen for REST on 127.0.0.1:{gateway.rest_port} ([rest] listen)"
        f" within {timeout_s:g} s\n--- gateway log tail ---\n{gateway.log_tail(3000)}"
    )


def start_carrier(
    sipp_server: SippServerFactory,
    target: GatewayProcess | str,
    scenario: str,
    port: int,
    *,
    number: str = INBOUND,
    duration_ms: int | None = None,
    keys: dict[str, str] | None = None,
    variables: dict[str, str] | None = None,
    timeout_s: int = 60,
) -> SippServer:
    """One SIPp call from 127.0.0.1:``port`` (the "carrier" trunk) to ``number`` at the
    gateway (or another ``host:port``), running in the background (stopped by PID at teardown
    at the latest)."""
    args = ["-m", "1", "-s", number, "-mp", str(free_media_ports()), "-trace_msg",
            "-timeout", f"{timeout_s}s", "-timeout_error"]
    if duration_ms is not None:
        args += ["-d", str(duration_ms)]
    for key, value in (keys or {}).items():
        args += ["-key", key, value]
    args.append(target.sip_target if isinstance(target, GatewayProcess) else target)
    return sipp_server(scenario, port=port, variables=variables, extra_args=args)


def sipp_exit(sipp: SippServer, timeout_s: float = 20.0) -> int:
    """SIPp's exit code once its one call is over; AssertionError if it is still running."""
    deadline = time.monotonic() + timeout_s
    while sipp.running() and time.monotonic() < deadline:
        time.sleep(0.1)
    if sipp.running():
        sipp.stop()
        raise AssertionError(
            f"SIPp {sipp.scenario.name} still running after {timeout_s:g} s\n"
            f"{sipp.log_text()[-3000:]}\n{sipp_messages(sipp)[-3000:]}"
        )
    code = sipp.stop()
    assert code is not None
    return code


def sipp_messages(sipp: SippServer) -> str:
    """SIPp's -trace_msg log (every message sent and received)."""
    if sipp.rundir is None:
        return ""
    return "\n".join(p.read_text(errors="replace") for p in sipp.rundir.glob("*_messages.log"))


def app_cdr(gateway: Any, cid: str, timeout_s: float = 5.0) -> tuple[dict[str, Any], list[tuple]]:
    """The app call's cdr_calls row (as a dict) and its cdr_legs rows (leg_id, direction,
    status, codec, packets_in), once the row is final (ended set)."""
    deadline = time.monotonic() + timeout_s
    while True:
        with sqlite3.connect(gateway.cdr_path) as db:
            db.row_factory = sqlite3.Row
            row = db.execute("SELECT * FROM cdr_calls WHERE call_id = ?", (cid,)).fetchone()
            legs = db.execute("SELECT leg_id, direction, status, codec, packets_in FROM cdr_legs"
                              " WHERE call_id = ? ORDER BY leg_id", (cid,)).fetchall()
        if row is not None and row["ended"] is not None:
            return dict(row), [tuple(leg) for leg in legs]
        if time.monotonic() > deadline:
            raise AssertionError(f"no final CDR for app call {cid}: {row and dict(row)}")
        time.sleep(0.2)


def received_requests(sipp: SippServer, method: str) -> list[str]:
    """The ``method`` requests SIPp received (retransmissions included), as text."""
    blocks = re.split(r"\n-{20,} [^\n]*\n", "\n" + sipp_messages(sipp))
    out = []
    for block in blocks:
        head, _, message = block.partition("\n\n")
        if "message received" in head and message.lstrip().startswith(f"{method} "):
            out.append(message)
    return out


def call_ids(messages: list[str]) -> set[str]:
    found = (re.search(r"(?im)^(?:call-id|i)\s*:\s*(\S+)", m) for m in messages)
    return {m.group(1) for m in found if m}


def sipp_failure(sipp: SippServer) -> str:
    return f"{sipp.log_text()[-3000:]}\n--- messages ---\n{sipp_messages(sipp)[-4000:]}"


def tone_capture(directory: Path, hz: float = 1000.0, seconds: float = 12.0) -> Path:
    return write_tone_pcap(directory / f"tone-{hz:g}Hz-{seconds:g}s.pcap", hz, seconds)


# --------------------------------------------------------------------------------------------
# reading events


def data(event: Event) -> dict[str, Any]:
    value = event.get("data")
    assert isinstance(value, dict), event
    return value


def result(event: Event) -> tuple[Any, Any]:
    """(code, subCode) of the event's resultInformation."""
    info = data(event).get("resultInformation")
    assert isinstance(info, dict), event
    return info.get("code"), info.get("subCode")


def ctx(value: str) -> Any:
    """Predicate: the event echoes operationContext ``value``."""
    return lambda event: data(event).get("operationContext") == value


def phones(event: Event) -> set[str]:
    """Phone numbers in a ParticipantsUpdated event."""
    out = set()
    for participant in data(event).get("participants", []):
        identifier = participant.get("identifier", {})
        if "phoneNumber" in identifier:
            out.add(identifier["phoneNumber"]["value"])
    return out


def app_legs(event: Event) -> list[dict[str, Any]]:
    """communicationUser participants (the app's own leg) in a ParticipantsUpdated event."""
    return [
        p["identifier"]
        for p in data(event).get("participants", [])
        if "communicationUser" in p.get("identifier", {})
    ]


def updated_with(expected_phones: set[str]) -> Any:
    """Predicate: a ParticipantsUpdated listing exactly these phones plus the app's leg."""
    return lambda event: phones(event) == expected_phones and len(app_legs(event)) == 1 and len(
        data(event).get("participants", [])
    ) == len(expected_phones) + 1


def assert_identifier(identifier: Any, number: str) -> None:
    """kind + rawId + sub-object, as ACS_REST.md section 4 says responses and events carry."""
    assert isinstance(identifier, dict), identifier
    assert identifier.get("rawId") == f"4:{number}", identifier
    assert identifier.get("kind") == "phoneNumber", identifier
    assert identifier.get("phoneNumber", {}).get("value") == number, identifier


def assert_ends_with_disconnected(receiver: EventReceiver, call_connection_id: str) -> None:
    """CallDisconnected is the call's last event, and nothing follows it for a while."""
    receiver.wait_for("CallDisconnected", call_connection_id=call_connection_id, timeout=5)
    late = receiver.quiet(call_connection_id, 1.0)
    types = receiver.types(call_connection_id)
    assert not late and types[-1] == "CallDisconnected", (types, late, receiver.describe())
    assert types.count("CallDisconnected") == 1, types


def assert_before(types: list[str], *names: str) -> None:
    """Each of ``names`` occurs, in this order (first occurrences)."""
    positions = []
    for name in names:
        assert name in types, (name, types)
        positions.append(types.index(name))
    assert positions == sorted(positions), (names, types)


# --------------------------------------------------------------------------------------------
# the tools themselves (no gateway)


def test_sipp_dtmf_captures_match_the_scenarios_offer() -> None:
    """uac_app_dtmf.xml offers telephone-event at the payload type of Debian's captures, and
    they hold digits 1-4 as RFC 4733 events (a start with the marker bit, an end packet)."""
    offer = (SCENARIO_DIR / "uac_app_dtmf.xml").read_text()
    offered = {int(pt) for pt in re.findall(r"a=rtpmap:(\d+) telephone-event/8000", offer)}
    for digit in "1234":
        path = sipp_dtmf_pcap(digit)
        assert f'play_pcap_audio="{path}"' in offer, path
        packets = read_rtp_pcap(path)
        assert {p.payload_type for p in packets} == offered, (path, offered)
        assert packets[0].marker and packets[0].payload[0] == int(digit), packets[0]
        assert packets[-1].payload[1] & 0x80, "no end bit in the last packet"
        assert len({p.ssrc for p in packets}) == 1


def test_tone_capture_is_a_paced_pcmu_tone(tmp_path: Path) -> None:
    path = write_tone_pcap(tmp_path / "tone.pcap", 1000.0, 2.0)
    packets = read_rtp_pcap(path)
    assert len(packets) == 100 and {p.payload_type for p in packets} == {0}
    assert {len(p.payload) for p in packets} == {160}
    gaps = np.diff([p.time for p in packets])
    assert np.allclose(gaps, 0.02, atol=1e-5), gaps[:5]
    assert [p.seq for p in packets] == list(range(packets[0].seq, packets[0].seq + 100))
    pcm = np.concatenate([ulaw_decode(p.payload) for p in packets]).astype(np.float64) / 32768
    assert abs(dominant_frequency(pcm, 8000, 0.0) - 1000.0) < 2


def test_raw_signer_signs_as_the_sdk(tmp_path: Path) -> None:
    """The raw requests of the bad-input test are signed by acs.hmac_signature: it must give
    the SDK's own signature for the SDK's own request (captured by an HTTPS receiver)."""
    key = base64.b64encode(b"signer self-check key, 32 bytes!").decode()
    with EventReceiver(tls_dir=tmp_path / "tls") as fake:
        client = CallAutomationClient.from_connection_string(
            f"endpoint=https://127.0.0.1:{fake.port}/;accesskey={key}",
            connection_verify=str(fake.cert_path),
            retry_total=0,
        )
        with client, pytest.raises(HttpResponseError):  # 200 where 201 is expected
            client.create_call(PhoneNumberIdentifier(CALLEE), "https://127.0.0.1/cb",
                               operation_context="sign me")
        (request,) = fake.requests()
    headers = {k.lower(): v for k, v in request.headers.items()}
    assert request.target == f"/calling/callConnections?api-version={API_VERSION}"
    assert headers["x-ms-content-sha256"] == content_sha256(request.body)
    signature = hmac_signature(key, "POST", request.target, headers["x-ms-date"],
                               headers["host"], content_sha256(request.body))
    assert headers["authorization"] == (
        f"HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256&Signature={signature}"
    )


def test_receiver_answers_the_validation_handshake() -> None:
    import json
    import urllib.request

    with EventReceiver() as r:
        body = json.dumps([{
            "id": "1", "topic": "t", "subject": "", "eventTime": "2026-01-01T00:00:00Z",
            "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
            "dataVersion": "2", "metadataVersion": "1",
            "data": {"validationCode": "code-123", "validationUrl": "https://x"},
        }]).encode()
        request = urllib.request.Request(
            r.url("/incoming"), body, {"aeg-event-type": "SubscriptionValidation"})
        with urllib.request.urlopen(request, timeout=5) as answer:
            assert json.loads(answer.read()) == {"validationResponse": "code-123"}
        assert len(r.validations) == 1 and r.events() == []


class ScriptedCallee(RawUas):
    """Stands in for the gateway in the scenario self-checks: answers SIPp's INVITE with PCMU
    and telephone-event 101, records its RTP, and can send in-dialog requests (re-INVITE,
    BYE) built from SIPp's ACK (whose To carries our tag)."""

    def __init__(self) -> None:
        super().__init__(lambda offer, port: answer_sdp(
            port, [(0, "PCMU/8000", None), (101, "telephone-event/8000", "0-16")]))
        self.cseq = 10

    def send_in_dialog(self, method: str, body: str = "", *, cseq: int | None = None) -> None:
        (ack,) = self.wait("ACK", 1, 10.0)[:1]
        (invite,) = self.got("INVITE")[:1]
        contact = re.search(r"<([^>]+)>", invite.header("contact"))
        assert contact, invite.raw
        target = re.search(r"@([\d.]+):(\d+)", contact.group(1))
        assert target, contact.group(1)
        if cseq is None:
            self.cseq += 1
            cseq = self.cseq
        lines = [f"{method} {contact.group(1)} SIP/2.0",
                 f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK{uuid.uuid4().hex}",
                 f"From: {ack.header('to')}", f"To: {ack.header('from')}",
                 f"Call-ID: {ack.header('call-id')}", f"CSeq: {cseq} {method}",
                 f"Contact: {self.contact}", "Max-Forwards: 70"]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body)}")
        message = "\r\n".join(lines) + "\r\n\r\n" + body
        self.sock.sendto(message.encode(), (target.group(1), int(target.group(2))))

    def ack_reinvite(self) -> None:
        """The ACK for our re-INVITE's 200 (sent blind, after a moment)."""
        time.sleep(0.3)
        self.send_in_dialog("ACK", cseq=self.cseq)  # the re-INVITE's CSeq number


def offered_port(request: SipRequest) -> int:
    found = re.search(r"^m=audio (\d+)", request.body.decode(), re.M)
    assert found, request.raw
    return int(found.group(1))


def test_uac_app_dtmf_keys_1234_then_waits_for_the_bye(
    sipp_server: SippServerFactory,
) -> None:
    callee = ScriptedCallee()
    try:
        carrier = start_carrier(sipp_server, f"127.0.0.1:{callee.port}", "uac_app_dtmf",
                                free_port(), duration_ms=200, timeout_s=20)
        (invite,) = callee.wait("INVITE", 1, 10.0)[:1]

        def ends() -> list[Any]:
            return [e for e in callee.rtp.events(101) if e.end]

        assert wait_for(lambda: len({e.code for e in ends()}) >= 4, 8.0), callee.rtp.events(101)
        callee.send_in_dialog("BYE")
        assert sipp_exit(carrier) == 0, sipp_failure(carrier)
        events = callee.rtp.events(101)
        starts = [e.code for e in events if e.marker]
        assert starts == [1, 2, 3, 4], events
        assert [e.code for e in ends()][::3] == [1, 2, 3, 4], events  # end packet sent 3 times
        sources = {source for source, _ in callee.rtp.raw}
        assert sources == {("127.0.0.1", offered_port(invite))}, sources  # symmetric RTP
    finally:
        callee.close()


def test_uac_app_wait_plays_its_tone_and_takes_a_reinvite(
    sipp_server: SippServerFactory, tmp_path: Path
) -> None:
    callee = ScriptedCallee()
    try:
        carrier = start_carrier(sipp_server, f"127.0.0.1:{callee.port}", "uac_app_wait",
                                free_port(), keys={"tone": str(tone_capture(tmp_path, 1000, 2))},
                                timeout_s=20)
        (invite,) = callee.wait("INVITE", 1, 10.0)[:1]
        assert "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS\r\n" in invite.raw.decode()
        assert wait_for(lambda: len(callee.rtp.packets) >= 50, 5.0), len(callee.rtp.packets)
        callee.send_in_dialog("INVITE", answer_sdp(callee.rtp.port, [(0, "PCMU/8000", None)]))
        callee.ack_reinvite()
        time.sleep(0.3)
        callee.send_in_dialog("BYE")
        assert sipp_exit(carrier) == 0, sipp_failure(carrier)
        pcm = callee.rtp.audio(0).astype(np.float64) / 32768
        assert len(pcm) >= 8000 and abs(dominant_frequency(pcm, 8000, 0.0) - 1000) < 5
        assert {source for source, _ in callee.rtp.raw} == {("127.0.0.1", offered_port(invite))}
    finally:
        callee.close()


# --------------------------------------------------------------------------------------------
# 1. inbound: answer, play, recognize DTMF, hang up


def test_inbound_answer_play_recognize_dtmf_hang_up(
    make_app: Any, sipp_server: SippServerFactory, interop_dir: Path
) -> None:
    """Callbacks and the IncomingCall webhook go to an HTTPS receiver trusted through
    [rest] callback_ca."""
    with EventReceiver(tls_dir=interop_dir / "receiver-tls") as receiver:
        carrier_port = free_port()
        app = make_app(receiver, carrier_port=carrier_port,
                       rest={"callback_ca": str(receiver.cert_path)})
        prompt = write_tone_wav(app.media_dir / "prompt.wav", 440.0, PROMPT_SECONDS)
        assert abs(wav_frequency(prompt) - 440.0) < 2
        carrier = start_carrier(sipp_server, app.gateway, "uac_app_dtmf", carrier_port,
                                duration_ms=DIGITS_AFTER_MS)

        incoming = receiver.incoming(timeout=10)
        arrivals = receiver.arrivals()
        first_call = next(i for i, a in enumerate(arrivals) if type_matches(a.type, "IncomingCall"))
        handshakes = [i for i, a in enumerate(arrivals) if a.schema == "validation"]
        assert handshakes and handshakes[0] < first_call, receiver.describe()
        handshake = arrivals[handshakes[0]]
        assert handshake.path == "/incoming" and handshake.data.get("validationCode"), handshake
        assert handshake.headers.get("aeg-event-type") == "SubscriptionValidation", handshake
        envelope = arrivals[first_call].event
        for key in ("id", "subject", "eventType", "eventTime", "dataVersion", "data"):
            assert key in envelope, (key, envelope)
        assert envelope["eventType"] == "Microsoft.Communication.IncomingCall", envelope
        assert_identifier(incoming.get("from"), CALLER)
        assert_identifier(incoming.get("to"), INBOUND)
        for key in ("incomingCallContext", "serverCallId", "correlationId"):
            assert isinstance(incoming.get(key), str) and incoming[key], (key, incoming)

        props = app.client.answer_call(incoming["incomingCallContext"], app.callback,
                                       operation_context="answer")
        cid = props.call_connection_id
        assert cid, props
        connected = receiver.wait_for("CallConnected", call_connection_id=cid, timeout=5)
        assert data(connected)["operationContext"] == "answer", connected
        assert data(connected)["correlationId"] == incoming["correlationId"], connected
        assert receiver.arrival(connected).path == "/calls"
        receiver.wait_for("ParticipantsUpdated", updated_with({CALLER}), call_connection_id=cid)
        conn = app.connection(cid)
        assert conn.get_call_properties().call_connection_state == "connected"

        conn.play_media(FileSource(prompt.as_uri()), operation_context="prompt")
        started = receiver.wait_for("PlayStarted", ctx("prompt"), call_connection_id=cid)
        completed = receiver.wait_for(("PlayCompleted", "PlayFailed"), ctx("prompt"),
                                      timeout=PROMPT_SECONDS + 5, call_connection_id=cid)
        assert type_matches(completed["type"], "PlayCompleted"), completed
        assert result(completed) == (200, 0), completed
        played = receiver.arrival(completed).at - receiver.arrival(started).at
        assert played >= PROMPT_SECONDS - 0.3, f"a {PROMPT_SECONDS} s prompt ended in {played} s"

        asked = time.monotonic()
        conn.start_recognizing_media(
            RecognizeInputType.DTMF, PhoneNumberIdentifier(CALLER),
            dtmf_max_tones_to_collect=4, dtmf_inter_tone_timeout=5, initial_silence_timeout=15,
            interrupt_prompt=True, operation_context="pin")
        recognized = receiver.wait_for(("RecognizeCompleted", "RecognizeFailed"), ctx("pin"),
                                       timeout=DIGITS_AFTER_MS / 1000 + 10, call_connection_id=cid)
        connected_at = receiver.arrival(connected).at
        assert type_matches(recognized["type"], "RecognizeCompleted"), (
            f"{recognized}\nrecognize was asked {asked - connected_at:.1f} s after CallConnected;"
            f" SIPp keys 1 2 3 4 {DIGITS_AFTER_MS / 1000:g} s after its ACK")
        body = data(recognized)
        assert body.get("recognitionType") == "dtmf", recognized
        assert body.get("dtmfResult", {}).get("tones") == ["one", "two", "three", "four"], body
        assert result(recognized) == (200, 8531), recognized  # max tones received

        conn.hang_up(is_for_everyone=False)
        hung_up = time.monotonic()
        assert sipp_exit(carrier) == 0, sipp_failure(carrier)  # it got the BYE, answered 200
        disconnected = receiver.wait_for("CallDisconnected", call_connection_id=cid)
        latency = receiver.arrival(disconnected).at - hung_up
        assert latency < EVENT_LATENCY_S, f"CallDisconnected {latency:.2f} s after hang_up"
        assert_ends_with_disconnected(receiver, cid)
        assert_before(receiver.types(cid), "CallConnected", "PlayStarted", "PlayCompleted",
                      "RecognizeCompleted", "CallDisconnected")
        call, legs = app_cdr(app.gateway, cid)
        ops = [op.split("@")[0] for op in (call["operations"] or "").split()]
        assert ops == ["answer", "play", "recognize", "hang_up"], call
        assert call["caller"] and CALLER.lstrip("+") in call["caller"], call
        assert call["callee"] == INBOUND and call["answered"] is not None, call
        ((_, direction, status, codec, packets_in),) = legs
        assert (direction, status, codec) == ("in", 200, "PCMU") and packets_in > 0, legs
        assert {a.path for a in receiver.arrivals() if a.call_connection_id == cid} == {"/calls"}


# --------------------------------------------------------------------------------------------
# 2. inbound refused: reject_call, and no decision in time


@pytest.mark.parametrize(
    ("reason", "status"),
    [(CallRejectReason.BUSY, "486"), (CallRejectReason.FORBIDDEN, "403"),
     (CallRejectReason.NONE, "603"), (None, "603")],
    ids=["busy", "forbidden", "none", "omitted"],
)
def test_inbound_reject(
    reason: CallRejectReason | None, status: str, make_app: Any, receiver: EventReceiver,
    sipp_server: SippServerFactory,
) -> None:
    carrier_port = free_port()
    app = make_app(receiver, carrier_port=carrier_port)
    carrier = start_carrier(sipp_server, app.gateway, "uac_busy_expect", carrier_port,
                            variables={"expect": status}, timeout_s=30)
    incoming = receiver.incoming(timeout=10)
    app.client.reject_call(incoming["incomingCallContext"], call_reject_reason=reason)
    assert sipp_exit(carrier) == 0, sipp_failure(carrier)
    # the context is spent: answering it now is refused, and no callback was ever sent
    with pytest.raises(HttpResponseError) as refused:
        app.client.answer_call(incoming["incomingCallContext"], app.callback)
    assert 400 <= (refused.value.status_code or 0) < 500, refused.value
    time.sleep(0.5)
    assert [a.schema for a in receiver.arrivals() if a.schema == "cloud"] == [], receiver.describe()


def test_inbound_unanswered_is_released_with_480(
    make_app: Any, receiver: EventReceiver, sipp_server: SippServerFactory
) -> None:
    carrier_port = free_port()
    app = make_app(receiver, carrier_port=carrier_port, rest={"incoming_call_timeout": 2})
    carrier = start_carrier(sipp_server, app.gateway, "uac_busy_expect", carrier_port,
                            variables={"expect": "480"}, timeout_s=30)
    incoming = receiver.incoming(timeout=10)
    started = time.monotonic()
    assert sipp_exit(carrier) == 0, sipp_failure(carrier)
    assert time.monotonic() - started < 6, "the 480 came long after incoming_call_timeout"
    with pytest.raises(HttpResponseError) as expired:
        app.client.answer_call(incoming["incomingCallContext"], app.callback)
    assert 400 <= (expired.value.status_code or 0) < 500, expired.value


# --------------------------------------------------------------------------------------------
# 3. outbound: create_call, add_participant, remove_participant, hang up for everyone


def test_outbound_create_add_remove_hang_up(
    make_app: Any, receiver: EventReceiver, sipp_server: SippServerFactory
) -> None:
    uas = sipp_server("uas", extra_args=["-trace_msg"])
    app = make_app(receiver, callee_port=uas.port)
    props = app.client.create_call(
        PhoneNumberIdentifier(CALLEE), app.callback,
        source_caller_id_number=PhoneNumberIdentifier(SOURCE), operation_context="create")
    cid = props.call_connection_id
    assert cid and props.call_connection_state in ("connecting", "connected"), props
    connected = receiver.wait_for("CallConnected", call_connection_id=cid, timeout=10)
    assert data(connected)["operationContext"] == "create", connected
    first = receiver.wait_for("ParticipantsUpdated", updated_with({CALLEE}),
                              call_connection_id=cid)
    conn = app.connection(cid)
    assert conn.get_call_properties().call_connection_state == "connected"
    # the app's caller id reaches the carrier (From or P-Asserted-Identity; the contract
    # does not say whether the "+" is kept)
    (invite,) = {m.split("\n\n", 1)[0]: m for m in received_requests(uas, "INVITE")}.values()
    identities = "".join(re.findall(r"(?im)^(?:from|p-asserted-identity)\s*:.*$", invite))
    assert SOURCE.lstrip("+") in identities, invite

    added = conn.add_participant(PhoneNumberIdentifier(SECOND), operation_context="add",
                                 source_caller_id_number=PhoneNumberIdentifier(SOURCE))
    assert added.invitation_id and added.operation_context == "add", added
    succeeded = receiver.wait_for(("AddParticipantSucceeded", "AddParticipantFailed"),
                                  ctx("add"), timeout=10, call_connection_id=cid)
    assert type_matches(succeeded["type"], "AddParticipantSucceeded"), succeeded
    assert_identifier(data(succeeded).get("participant"), SECOND)
    three = receiver.wait_for("ParticipantsUpdated", updated_with({CALLEE, SECOND}),
                              call_connection_id=cid)
    assert three["data"]["sequenceNumber"] > first["data"]["sequenceNumber"]
    listed = {p.identifier.raw_id for p in conn.list_participants()}
    assert {f"4:{CALLEE}", f"4:{SECOND}"} <= listed, listed

    removed = conn.remove_participant(PhoneNumberIdentifier(SECOND), operation_context="remove")
    assert removed.operation_context == "remove", removed
    gone = receiver.wait_for(("RemoveParticipantSucceeded", "RemoveParticipantFailed"),
                             ctx("remove"), call_connection_id=cid)
    assert type_matches(gone["type"], "RemoveParticipantSucceeded"), gone
    assert_identifier(data(gone).get("participant"), SECOND)
    receiver.wait_for(
        "ParticipantsUpdated",
        lambda e: updated_with({CALLEE})(e)
        and e["data"]["sequenceNumber"] > three["data"]["sequenceNumber"],
        call_connection_id=cid)
    assert uas.wait_counts(1, 10.0) == (1, 0), sipp_failure(uas)  # SECOND got its BYE
    assert {p.identifier.raw_id for p in conn.list_participants()} >= {f"4:{CALLEE}"}

    conn.hang_up(is_for_everyone=True)
    assert_ends_with_disconnected(receiver, cid)
    assert uas.wait_counts(2, 10.0) == (2, 0), sipp_failure(uas)
    numbers = [e["data"]["sequenceNumber"] for e in receiver.events(cid)
               if type_matches(e["type"], "ParticipantsUpdated")]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers), numbers
    assert_before(receiver.types(cid), "CallConnected", "AddParticipantSucceeded",
                  "RemoveParticipantSucceeded", "CallDisconnected")
    # the call's CDR: one row, a leg per party, the app's operations in order
    call, legs = app_cdr(app.gateway, cid)
    assert call["app_call"] == cid and call["release_side"] == "app", call
    ops = [op.split("@")[0] for op in (call["operations"] or "").split()]
    assert ops == ["create", "participants:add", "participants:remove", "terminate"], call
    assert [(leg[1], leg[2], leg[3]) for leg in legs] == [
        ("out", 200, "PCMU"), ("out", 200, "PCMU")], legs
    # nothing left behind: no app call, dialog or media port; every event delivered
    live = wait_status(app.gateway, lambda st: st.get("app_calls") == 0
                       and st.get("app_dialogs") == 0 and st.get("media_streams") == 0
                       and st.get("events_queued") == 0)
    assert live["media_ports_free"] == live["media_ports_total"], live
    assert live["events_dropped"] == 0, live
    assert live["events_delivered"] == len(receiver.events(cid)), live


# --------------------------------------------------------------------------------------------
# 4. create_call to a busy number


def test_create_call_to_busy_number_fails_with_486(
    make_app: Any, receiver: EventReceiver, sipp_server: SippServerFactory
) -> None:
    busy = sipp_server("uas_busy")
    app = make_app(receiver, busy_port=busy.port)
    props = app.client.create_call(PhoneNumberIdentifier(BUSY), app.callback,
                                   source_caller_id_number=PhoneNumberIdentifier(SOURCE),
                                   operation_context="busy")
    cid = props.call_connection_id
    assert cid, props
    failed = receiver.wait_for(("CreateCallFailed", "CallConnected"), call_connection_id=cid,
                               timeout=10)
    assert type_matches(failed["type"], "CreateCallFailed"), failed
    assert data(failed).get("operationContext") == "busy", failed
    assert result(failed) == (486, 560486), failed
    sip = data(failed)["resultInformation"].get("sipDetails")
    assert sip is None or sip.get("code") == 486, failed
    assert busy.wait_counts(1, 10.0) == (1, 0), sipp_failure(busy)  # INVITE -> 486 -> ACK
    late = receiver.quiet(cid, 1.0)
    types = receiver.types(cid)
    assert "CallConnected" not in types, types
    # CallDisconnected may follow CreateCallFailed; nothing may follow it
    assert types[-1] in ("CreateCallFailed", "CallDisconnected") and not late, (types, late)


# --------------------------------------------------------------------------------------------
# 5. transfer


def test_transfer_inbound_call_to_a_phone_number(
    make_app: Any, receiver: EventReceiver, sipp_server: SippServerFactory, interop_dir: Path
) -> None:
    """SIPp's carrier leg allows no REFER, so the gateway places the new leg itself and bridges
    the caller to it; the target (uas_bye.xml) answers, then hangs up, which ends the caller's
    leg too."""
    target = sipp_server("uas_bye", extra_args=["-trace_msg"])
    carrier_port = free_port()
    app = make_app(receiver, carrier_port=carrier_port, callee_port=target.port)
    carrier = start_carrier(sipp_server, app.gateway, "uac_app_wait", carrier_port,
                            keys={"tone": str(tone_capture(interop_dir))})
    incoming = receiver.incoming(timeout=10)
    cid = app.client.answer_call(incoming["incomingCallContext"], app.callback,
                                 operation_context="answer").call_connection_id
    receiver.wait_for("CallConnected", call_connection_id=cid, timeout=5)
    conn = app.connection(cid)
    transfer = conn.transfer_call_to_participant(PhoneNumberIdentifier(TRANSFER_TARGET),
                                                 operation_context="transfer")
    assert transfer.operation_context == "transfer", transfer
    accepted = receiver.wait_for(("CallTransferAccepted", "CallTransferFailed"), ctx("transfer"),
                                 timeout=15, call_connection_id=cid)
    assert type_matches(accepted["type"], "CallTransferAccepted"), accepted
    assert_identifier(data(accepted).get("transferTarget"), TRANSFER_TARGET)
    if data(accepted).get("transferee") is not None:
        assert_identifier(data(accepted)["transferee"], CALLER)
    assert_ends_with_disconnected(receiver, cid)
    assert_before(receiver.types(cid), "CallConnected", "CallTransferAccepted", "CallDisconnected")
    assert target.wait_counts(1, 15.0) == (1, 0), sipp_failure(target)  # the target got the call
    (invite,) = {m.split("\n\n", 1)[0]: m for m in received_requests(target, "INVITE")}.values()
    assert TRANSFER_TARGET in invite.split("\n", 1)[0], invite
    assert sipp_exit(carrier) == 0, sipp_failure(carrier)  # BYE once the target hung up
    assert not received_requests(carrier, "REFER"), "REFER sent to a leg that does not allow it"


def test_transfer_by_refer_when_the_carrier_leg_allows_it(
    make_app: Any, receiver: EventReceiver, sipp_server: SippServerFactory
) -> None:
    """The carrier leg's Allow lists REFER: the gateway REFERs it to the target (the carrier
    places the new call), takes NOTIFY's sipfrag 200 as the transfer accepted, releases the
    leg with BYE, and the app gets CallTransferAccepted then CallDisconnected."""
    carrier_port = free_port()
    app = make_app(receiver, carrier_port=carrier_port)
    carrier = start_carrier(sipp_server, app.gateway, "uac_app_refer", carrier_port)
    incoming = receiver.incoming(timeout=10)
    cid = app.client.answer_call(incoming["incomingCallContext"], app.callback,
                                 operation_context="answer").call_connection_id
    receiver.wait_for("CallConnected", call_connection_id=cid, timeout=5)
    conn = app.connection(cid)
    conn.transfer_call_to_participant(PhoneNumberIdentifier(TRANSFER_TARGET),
                                      operation_context="refer")
    accepted = receiver.wait_for(("CallTransferAccepted", "CallTransferFailed"), ctx("refer"),
                                 timeout=15, call_connection_id=cid)
    assert type_matches(accepted["type"], "CallTransferAccepted"), accepted
    assert_identifier(data(accepted).get("transferTarget"), TRANSFER_TARGET)
    assert_identifier(data(accepted).get("transferee"), CALLER)
    assert sipp_exit(carrier) == 0, sipp_failure(carrier)  # REFER, 202, NOTIFY, then our BYE
    (refer,) = received_requests(carrier, "REFER")
    refer_to = re.search(r"(?im)^refer-to\s*:\s*(.*)$", refer)
    assert refer_to and f"sip:{TRANSFER_TARGET}@" in refer_to.group(1), refer
    assert_ends_with_disconnected(receiver, cid)
    assert_before(receiver.types(cid), "CallConnected", "CallTransferAccepted", "CallDisconnected")


# --------------------------------------------------------------------------------------------
# 6. recording


def find_recording(directory: Path, recording_id: str, timeout_s: float = 5.0) -> Path:
    """The recording's WAV under ``directory`` (the one whose name holds the id, else the only
    one), once its size has stopped changing."""
    deadline = time.monotonic() + timeout_s
    last: tuple[Path, int] | None = None
    while time.monotonic() < deadline:
        wavs = sorted(directory.rglob("*.wav")) if directory.exists() else []
        named = [p for p in wavs if recording_id in str(p.relative_to(directory))]
        chosen = named or (wavs if len(wavs) == 1 else [])
        if chosen:
            size = chosen[0].stat().st_size
            if last == (chosen[0], size) and size > 44:
                return chosen[0]
            last = (chosen[0], size)
        time.sleep(0.25)
    found = sorted(directory.rglob("*")) if directory.exists() else []
    raise AssertionError(f"no finished WAV for recording {recording_id} under {directory}: {found}")


def test_recording_holds_the_callers_tone(
    make_app: Any, receiver: EventReceiver, sipp_server: SippServerFactory, interop_dir: Path
) -> None:
    carrier_port = free_port()
    app = make_app(receiver, carrier_port=carrier_port)
    carrier = start_carrier(sipp_server, app.gateway, "uac_app_wait", carrier_port,
                            keys={"tone": str(tone_capture(interop_dir, 1000.0, 15.0))})
    incoming = receiver.incoming(timeout=10)
    cid = app.client.answer_call(incoming["incomingCallContext"], app.callback).call_connection_id
    receiver.wait_for("CallConnected", call_connection_id=cid, timeout=5)

    recording = app.client.start_recording(
        call_connection_id=cid, recording_state_callback_url=receiver.url("/recording"),
        recording_content_type="audio", recording_channel_type="mixed",
        recording_format_type="wav")
    rid = recording.recording_id
    assert rid, recording

    def state(value: str) -> Any:
        return lambda e: data(e).get("recordingId") == rid and data(e).get("state") == value

    active = receiver.wait_for("RecordingStateChanged", state("active"))
    assert receiver.arrival(active).path == "/recording", receiver.describe()
    time.sleep(2.5)
    app.client.stop_recording(rid)
    receiver.wait_for("RecordingStateChanged", state("inactive"))
    wav = find_recording(app.recordings_dir, rid)
    report = assert_tone(wav, 1000.0, min_seconds=1.5)
    assert report.duration_s < 6.0, f"recorded {report.duration_s:.1f} s of a 2.5 s recording"

    # served to the app from the gateway (the SDK's download_recording only takes Microsoft
    # hosts): GET /recordings/RECORDING_ID, signed like every request
    served = signed_request(app.gateway, SignedRequest("GET", f"/recordings/{rid}", query=""))
    assert served.status == 200 and served.body[:4] == b"RIFF", served.describe()[:300]
    copy = interop_dir / "downloaded.wav"
    copy.write_bytes(served.body)
    assert abs(wav_frequency(copy, 0.5) - 1000.0) < 5

    app.connection(cid).hang_up(is_for_everyone=True)
    assert sipp_exit(carrier) == 0, sipp_failure(carrier)
    assert_ends_with_disconnected(receiver, cid)


# --------------------------------------------------------------------------------------------
# 7. a retried create_call dials once


def test_retried_create_call_dials_once(
    make_app: Any, receiver: EventReceiver, sipp_server: SippServerFactory
) -> None:
    uas = sipp_server("uas", extra_args=["-trace_msg"])
    app = make_app(receiver, callee_port=uas.port)
    repeat = {"Repeatability-Request-ID": str(uuid.uuid4()), "Repeatability-First-Sent": imf_date()}

    def create(number: str = CALLEE) -> Any:
        return app.client.create_call(
            PhoneNumberIdentifier(number), app.callback,
            source_caller_id_number=PhoneNumberIdentifier(SOURCE), operation_context="once",
            headers=dict(repeat))

    first = create()
    again = create()
    assert first.call_connection_id and again.call_connection_id == first.call_connection_id
    cid = first.call_connection_id
    receiver.wait_for("CallConnected", call_connection_id=cid, timeout=10)
    replayed = create()  # after the call connected: still the stored 201
    assert replayed.call_connection_id == cid
    with pytest.raises(HttpResponseError) as different:  # same id, another request
        create(SECOND)
    assert different.value.status_code == 400, different.value
    time.sleep(1.5)
    invites = received_requests(uas, "INVITE")
    assert len(call_ids(invites)) == 1, f"{len(call_ids(invites))} calls dialled: {invites}"
    assert int(uas.stats().get("IncomingCall(C)", "0") or 0) <= 1, uas.stats()
    assert receiver.types(cid).count("CallConnected") == 1, receiver.describe()
    assert len({e["data"]["callConnectionId"] for e in receiver.events()
                if type_matches(e["type"], "CallConnected")}) == 1, receiver.describe()
    app.connection(cid).hang_up(is_for_everyone=True)
    assert_ends_with_disconnected(receiver, cid)
    assert uas.wait_counts(1, 10.0) == (1, 0), sipp_failure(uas)


# --------------------------------------------------------------------------------------------
# 8. bad input leaves the call alone


def test_bad_input_gets_acs_errors_and_the_call_goes_on(
    make_app: Any, receiver: EventReceiver, sipp_server: SippServerFactory
) -> None:
    uas = sipp_server("uas", extra_args=["-trace_msg"])
    app = make_app(receiver, callee_port=uas.port)
    cid = app.client.create_call(PhoneNumberIdentifier(CALLEE), app.callback,
                                 source_caller_id_number=PhoneNumberIdentifier(SOURCE)
                                 ).call_connection_id
    receiver.wait_for("CallConnected", call_connection_id=cid, timeout=10)
    conn = app.connection(cid)
    call_path = f"/calling/callConnections/{cid}"

    def intact(after: str) -> None:
        state = conn.get_call_properties().call_connection_state
        assert state == "connected", f"after {after}: {state}"
        listed = {p.identifier.raw_id for p in conn.list_participants()}
        assert f"4:{CALLEE}" in listed, (after, listed)
        assert uas.counts() == (0, 0) and not received_requests(uas, "BYE"), (
            after, sipp_failure(uas))
        types = receiver.types(cid)
        assert not {"CallDisconnected", "AddParticipantSucceeded", "AddParticipantFailed",
                    "RemoveParticipantSucceeded"} & set(types), (after, types)

    def assert_error(response: Any, status: int, what: str) -> dict[str, Any]:
        assert response.status == status, f"{what}: {response.describe()}"
        error: dict[str, Any] = response.error
        intact(what)
        return error

    # the raw signer works against the gateway (control for the raw cases below)
    ok = signed_request(app.gateway, SignedRequest("GET", call_path))
    assert ok.status == 200, ok.describe()
    assert ok.json().get("callConnectionState") == "connected", ok.describe()
    assert ok.headers.get("Content-Type", "").startswith("application/json"), ok.describe()

    # wrong access key
    wrong = sdk_client(app.gateway, access_key=base64.b64encode(b"x" * 32).decode())
    with wrong:
        with pytest.raises(ClientAuthenticationError):
            wrong.get_call_connection(cid).get_call_properties()
        with pytest.raises(ClientAuthenticationError):
            wrong.get_call_connection(cid).hang_up(is_for_everyone=True)
    intact("a wrong access key")

    # unknown call id
    unknown = app.connection("no-such-call-" + uuid.uuid4().hex)
    with pytest.raises(ResourceNotFoundError):
        unknown.get_call_properties()
    with pytest.raises(ResourceNotFoundError):
        unknown.hang_up(is_for_everyone=True)
    with pytest.raises(ResourceNotFoundError):
        unknown.add_participant(PhoneNumberIdentifier(SECOND))
    intact("an unknown call id")

    # values out of range (ACS_REST.md pitfall 13), through the SDK
    with pytest.raises(HttpResponseError) as too_long:
        conn.add_participant(PhoneNumberIdentifier(SECOND), invitation_timeout=500)
    assert too_long.value.status_code == 400 and "8523" in str(too_long.value), too_long.value
    intact("invitation_timeout 500")
    with pytest.raises(HttpResponseError) as silence:
        conn.start_recognizing_media(RecognizeInputType.DTMF, PhoneNumberIdentifier(CALLEE),
                                     initial_silence_timeout=301, dtmf_max_tones_to_collect=1)
    assert silence.value.status_code == 400, silence.value
    intact("initial_silence_timeout 301")
    with pytest.raises(HttpResponseError) as inter_tone:
        conn.start_recognizing_media(RecognizeInputType.DTMF, PhoneNumberIdentifier(CALLEE),
                                     dtmf_inter_tone_timeout=61, dtmf_max_tones_to_collect=1)
    assert inter_tone.value.status_code == 400, inter_tone.value
    intact("dtmf_inter_tone_timeout 61")

    # raw: stale date, tampered body, unknown api-version, malformed JSON, missing field
    add_path = f"{call_path}/participants:add"
    add_body = (b'{"participantToAdd": {"rawId": "4:' + SECOND.encode()
                + b'", "phoneNumber": {"value": "' + SECOND.encode() + b'"}}}')
    stale = imf_date(datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=20))
    assert_error(signed_request(app.gateway, SignedRequest("DELETE", call_path, date=stale)),
                 401, "a stale x-ms-date")
    assert_error(signed_request(app.gateway, SignedRequest(
        "POST", add_path, body=add_body,
        signed_body=add_body.replace(SECOND.encode(), CALLEE.encode()))),
        401, "a tampered body")
    assert_error(signed_request(app.gateway, SignedRequest(
        "GET", call_path, query="api-version=1999-01-01")), 400, "an unknown api-version")
    assert_error(signed_request(app.gateway, SignedRequest(
        "POST", add_path, body=b'{"participantToAdd": {"rawId": ')), 400, "malformed JSON")
    assert_error(signed_request(app.gateway, SignedRequest("POST", add_path, body=b"{}")),
                 400, "a missing participantToAdd")
    assert_error(signed_request(app.gateway, SignedRequest("POST", add_path, body=b"[]")),
                 400, "a JSON array body")
    assert_error(signed_request(app.gateway, SignedRequest(
        "POST", f"{call_path}:terminate", headers={"Authorization": "HMAC-SHA256 nonsense"})),
        401, "a malformed Authorization header")

    # every refusal above left the call as it was: it still ends normally
    conn.hang_up(is_for_everyone=True)
    assert_ends_with_disconnected(receiver, cid)
    assert uas.wait_counts(1, 10.0) == (1, 0), sipp_failure(uas)

