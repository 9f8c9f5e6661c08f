"""Mid-call operations of the ACS Call Automation surface, driven by the public SDK
(``azure-communication-callautomation`` 1.6.0) against the real gateway process, with SIPp as
the carrier and :class:`~.acs.EventReceiver` as the app's webhook. Each test proves one
operation on the wire (what SIPp or a raw SIP/RTP peer got) and in the events:

1. ``cancel_add_participant_operation`` of a party that rings (``uas_ring.xml``): SIPp gets a
   CANCEL, the app CancelAddParticipantSucceeded (its invitationId) and AddParticipantFailed,
   the call goes on;
2. ``add_participant(invitation_timeout=2)`` to the same ringing party: AddParticipantFailed
   about 2 s later (SIPp got a CANCEL), the call goes on;
3. ``redirect_call`` of an inbound call: the SIPp caller (``uac_expect_302.xml``) gets a 302
   whose Contact names the target number, on the trunk the dial plan picks for it;
4. ``play_media_to_all`` of a TextSource (espeak-ng): PlayStarted, PlayCompleted, and the
   caller hears speech; a ``file://`` outside ``[rest] media_dir`` -> PlayFailed 8536; a file
   under media_dir that is no WAV -> PlayFailed 8535;
5. continuous DTMF recognition of the digits SIPp keys (``uac_app_dtmf.xml``): one
   ContinuousDtmfRecognitionToneReceived per key, in order, increasing sequenceId; stop ->
   ContinuousDtmfRecognitionStopped;
6. ``send_dtmf_tones(["one", "two"])`` toward a raw SIP caller: SendDtmfTonesCompleted, and
   the caller's RTP socket got RFC 4733 events 1 then 2 (with end bits) at the payload type
   it offered;
7. ``hold``/``unhold`` of the SIPp carrier (``uac_app_wait.xml``): re-INVITEs with
   ``a=sendonly`` then ``a=sendrecv``, ParticipantsUpdated isOnHold true then false;
   ``mute_participant`` -> ParticipantsUpdated isMuted true;
8. ``hang_up(is_for_everyone=False)`` with two phone parties: the app gets CallDisconnected,
   the parties stay joined (no BYE, audio still flows between them), and when one hangs up
   the gateway BYEs the other.

The first test needs no gateway: it proves ``uac_expect_302.xml`` passes on the right 302 and
fails on a wrong one, so a redirect failure below is never the scenario's fault.
"""

from __future__ import annotations

import concurrent.futures
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from azure.communication.callautomation import (
    FileSource,
    PhoneNumberIdentifier,
    TextSource,
    UnknownIdentifier,
)
from azure.core.exceptions import HttpResponseError

from .acs import EventReceiver, type_matches, write_tone_wav
from .audio import dominant_frequency
from .conftest import GatewayFactory, SippClient, SippServerFactory
from .harness import SippServer, TrunkSpec, free_media_ports, free_port
from .rtppeer import ulaw_decode
from .test_media_dtmf import RecordingPeer, free_media_range, parse_request, response_to
from .test_media_relay import Caller
from .test_rest_sdk import (  # the fixture and helpers of the REST interop suite
    App,
    ScriptedCallee,
    assert_ends_with_disconnected,
    assert_identifier,
    ctx,
    data,
    received_requests,
    receiver,
    result,
    sipp_exit,
    sipp_failure,
    sipp_messages,
    start_carrier,
    tone_capture,
    updated_with,
    wait_rest_listening,
)

__all__ = ["receiver"]  # a pytest fixture, imported to be used here

INBOUND = "+15550001234"  # an app number: [[inbound]] action = "app"
CALLER = "+15550001111"  # the SIPp scenarios' (and the raw caller's) number
CALLEE = "+15551230001"  # "callee" trunk (SIPp uas.xml)
REDIRECT_TARGET = "+15551230777"  # "callee" trunk too: where redirect_call sends a caller
RINGING = "+15557770001"  # "ring" trunk (SIPp uas_ring.xml: rings until cancelled)
OTHER = "+15558880001"  # "other" trunk (a scripted callee that can hang up on cue)
SOURCE = "+15550009999"  # the app's caller id

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
name = "ringing"
match = '^\\+1555777\\d{4}$'
trunks = ["ring"]

[[outbound]]
name = "other"
match = '^\\+1555888\\d{4}$'
trunks = ["other"]
"""

#: The telephone-event payload type the raw caller offers: not the usual 101, so a gateway
#: that sends its own default instead of the offered number is caught.
CALLER_EVENT_PT = 98
#: Events reach a loopback receiver within about a second; a bound for "promptly".
EVENT_LATENCY_S = 1.0


# --------------------------------------------------------------------------------------------
# the setting


@pytest.fixture
def make_midcall(
    gateway_factory: GatewayFactory, interop_dir: Path, sipp_available: str
) -> Iterator[Callable[..., App]]:
    """Factory: ``make_midcall(receiver, carrier_port=, callee_port=, ring_port=,
    other_port=, rest={})`` -> an :class:`App` around a started gateway whose dial plan sends
    app numbers to the REST app and +1555123/777/888xxxx to the callee/ring/other trunks."""
    apps: list[App] = []

    def make(
        receiver: EventReceiver,
        *,
        carrier_port: int | None = None,
        callee_port: int | None = None,
        ring_port: int | None = None,
        other_port: int | None = None,
        rest: dict[str, Any] | None = None,
        sip: dict[str, Any] | None = None,
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
                TrunkSpec("ring", ring_port or free_port(), inbound_from=()),
                TrunkSpec("other", other_port or free_port(), inbound_from=()),
            ],
            dialplan=DIALPLAN,
            extra_config={"rest": rest_config, "media": {"port_range": free_media_range()},
                          **({"sip": sip} if sip else {})},
        )
        receiver.context = lambda: f"--- gateway log tail ---\n{gateway.log_tail(4000)}"
        wait_rest_listening(gateway)
        app = App(gateway, receiver, media_dir, recordings_dir)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.close()


def until(check: Callable[[], Any], timeout_s: float, what: str | Callable[[], str],
          step: float = 0.05) -> Any:
    """The first truthy ``check()`` within ``timeout_s``; AssertionError naming ``what`` (a
    text, or a function giving it at the time of the failure)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            text = what() if callable(what) else what
            raise AssertionError(f"not within {timeout_s:g} s: {text}")
        time.sleep(step)


def connect_outbound(app: App, number: str = CALLEE) -> str:
    """create_call to ``number``; its callConnectionId once CallConnected and the first
    ParticipantsUpdated (``number`` + the app) arrived."""
    props = app.client.create_call(
        PhoneNumberIdentifier(number), app.callback,
        source_caller_id_number=PhoneNumberIdentifier(SOURCE), operation_context="create")
    cid = props.call_connection_id
    assert cid, props
    connected = app.receiver.wait_for(("CallConnected", "CreateCallFailed"),
                                      call_connection_id=cid, timeout=10)
    assert type_matches(connected["type"], "CallConnected"), connected
    app.receiver.wait_for("ParticipantsUpdated", updated_with({number}), call_connection_id=cid)
    return cid


def answer_inbound(app: App, operation_context: str = "answer") -> str:
    """answer_call on the next IncomingCall; the callConnectionId once CallConnected."""
    incoming = app.receiver.incoming(timeout=10)
    cid = app.client.answer_call(incoming["incomingCallContext"], app.callback,
                                 operation_context=operation_context).call_connection_id
    assert cid
    app.receiver.wait_for("CallConnected", call_connection_id=cid, timeout=5)
    return cid


def participant(event: dict[str, Any], number: str) -> dict[str, Any] | None:
    """The CallParticipant of phone ``number`` in a ParticipantsUpdated event."""
    for p in data(event).get("participants", []):
        if p.get("identifier", {}).get("phoneNumber", {}).get("value") == number:
            return dict(p)
    return None


def party_flag(number: str, flag: str, value: bool, after: int = 0) -> Any:
    """Predicate: a ParticipantsUpdated (sequenceNumber > ``after``) listing ``number`` with
    ``flag`` (isOnHold, isMuted) equal to ``value``."""

    def check(event: dict[str, Any]) -> bool:
        p = participant(event, number)
        return (p is not None and p.get(flag) is value
                and data(event).get("sequenceNumber", 0) > after)

    return check


def received_responses(sipp: SippServer, status: int) -> list[str]:
    """The ``status`` responses SIPp received (retransmissions included), as text."""
    blocks = re.split(r"\n-{20,} [^\n]*\n", "\n" + sipp_messages(sipp))
    out = []
    for block in blocks:
        head, _, message = block.partition("\n\n")
        if "message received" in head and message.lstrip().startswith(f"SIP/2.0 {status} "):
            out.append(message)
    return out


def sdp_directions(message: str) -> list[str]:
    return re.findall(r"(?m)^a=(sendrecv|sendonly|recvonly|inactive)\s*$", message)


def header(message: str, name: str) -> str:
    found = re.search(rf"(?im)^{re.escape(name)}\s*:\s*(.*?)\s*$", message)
    return found.group(1) if found else ""


def no_outcome(app: App, cid: str, *types: str) -> None:
    got = [t for t in app.receiver.types(cid) if t in types]
    assert not got, f"unexpected {got}\n{app.receiver.describe()}"


def assert_call_goes_on(app: App, cid: str, parties: set[str]) -> None:
    """The call is still connected, with exactly ``parties`` as phone participants."""
    conn = app.connection(cid)
    state = conn.get_call_properties().call_connection_state
    assert state == "connected", state
    raw_ids = [p.identifier.raw_id if p.identifier else None for p in conn.list_participants()]
    listed = {r for r in raw_ids if r and r.startswith("4:")}
    assert listed == {f"4:{n}" for n in parties}, listed
    no_outcome(app, cid, "CallDisconnected")


# --------------------------------------------------------------------------------------------
# the redirect scenario itself (no gateway)


class RedirectingPeer:
    """Answers every INVITE on a UDP socket with a 302 whose Contact is ``contact`` and keeps
    the requests it got (the scenario's ACK)."""

    def __init__(self, contact: str) -> None:
        self.contact = contact
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port: int = self.sock.getsockname()[1]
        self.methods: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                raw, addr = self.sock.recvfrom(65536)
            except (TimeoutError, OSError):
                continue
            req = parse_request(raw)
            if req is None:
                continue
            self.methods.append(req.method)
            if req.method == "INVITE":
                self.sock.sendto(response_to(req, 302, "Moved Temporarily", contact=self.contact,
                                             to_tag="redir" + uuid.uuid4().hex[:8]), addr)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.mark.parametrize(
    ("contact", "ok"),
    [("<sip:+15551230777@127.0.0.1:5999>", True),
     ('"Target" <sip:+15551230777@127.0.0.1;transport=tcp>;q=0.5', True),
     ("<sip:+15551230778@127.0.0.1:5999>", False),
     ("<tel:+15551230777>", False)],
    ids=["right", "display-name", "wrong-number", "no-sip-uri"],
)
def test_uac_expect_302_checks_the_contact(
    contact: str, ok: bool, sipp_client: SippClient
) -> None:
    peer = RedirectingPeer(contact)
    try:
        outcome = sipp_client("uac_expect_302", f"127.0.0.1:{peer.port}", service=INBOUND,
                              variables={"target": REDIRECT_TARGET}, timeout_s=20)
        # a failed check still ACKs the 302
        until(lambda: "ACK" in peer.methods, 2, lambda: f"the 302's ACK: {peer.methods}")
    finally:
        peer.close()
    if ok:
        assert outcome.ok, outcome.describe()
    else:
        assert outcome.failed == 1 and outcome.exit_code == 1, outcome.describe()
        assert set(outcome.failure_breakdown) & {
            "FailedStrcmpDoesntMatch", "FailedRegexpDoesntMatch"}, outcome.describe()


# --------------------------------------------------------------------------------------------
# 1. cancel_add_participant_operation


def test_cancel_add_participant_sends_cancel_and_the_call_goes_on(
    make_midcall: Callable[..., App], receiver: EventReceiver, sipp_server: SippServerFactory
) -> None:
    uas = sipp_server("uas", extra_args=["-trace_msg"])
    ring = sipp_server("uas_ring", extra_args=["-trace_msg"])
    app = make_midcall(receiver, callee_port=uas.port, ring_port=ring.port)
    cid = connect_outbound(app)
    conn = app.connection(cid)

    added = conn.add_participant(PhoneNumberIdentifier(RINGING), operation_context="add",
                                 source_caller_id_number=PhoneNumberIdentifier(SOURCE))
    invitation = added.invitation_id
    assert invitation and added.operation_context == "add", added
    until(lambda: received_requests(ring, "INVITE"), 10,
          lambda: f"the ringing party's INVITE\n{sipp_failure(ring)}")
    time.sleep(0.5)  # it has answered 180 and rings; nothing decided yet
    no_outcome(app, cid, "AddParticipantSucceeded", "AddParticipantFailed")

    cancelled = conn.cancel_add_participant_operation(invitation, operation_context="cancel")
    assert cancelled.invitation_id == invitation, cancelled
    assert cancelled.operation_context == "cancel", cancelled
    outcome = receiver.wait_for(("CancelAddParticipantSucceeded", "CancelAddParticipantFailed"),
                                call_connection_id=cid, timeout=10)
    assert type_matches(outcome["type"], "CancelAddParticipantSucceeded"), outcome
    assert data(outcome).get("invitationId") == invitation, outcome
    assert data(outcome).get("operationContext") == "cancel", outcome
    failed = receiver.wait_for(("AddParticipantFailed", "AddParticipantSucceeded"),
                               call_connection_id=cid, timeout=10)
    assert type_matches(failed["type"], "AddParticipantFailed"), failed
    assert_identifier(data(failed).get("participant"), RINGING)
    code, _ = result(failed)
    assert isinstance(code, int) and code >= 400, failed

    # on the wire: INVITE -> 180 -> CANCEL -> 200 -> 487 -> ACK, the scenario passed
    assert ring.wait_counts(1, 10.0) == (1, 0), sipp_failure(ring)
    (cancel,) = {header(m, "CSeq"): m for m in received_requests(ring, "CANCEL")}.values()
    (invite,) = {header(m, "CSeq"): m for m in received_requests(ring, "INVITE")}.values()
    assert header(cancel, "Call-ID") == header(invite, "Call-ID"), (cancel, invite)
    assert RINGING in invite.split("\n", 1)[0], invite

    # the call goes on: the first party was not touched
    assert_call_goes_on(app, cid, {CALLEE})
    assert uas.counts() == (0, 0) and not received_requests(uas, "BYE"), sipp_failure(uas)
    no_outcome(app, cid, "AddParticipantSucceeded")
    conn.hang_up(is_for_everyone=True)
    assert_ends_with_disconnected(receiver, cid)
    assert uas.wait_counts(1, 10.0) == (1, 0), sipp_failure(uas)


# --------------------------------------------------------------------------------------------
# 2. add_participant with invitation_timeout


def test_add_participant_invitation_timeout(
    make_midcall: Callable[..., App], receiver: EventReceiver, sipp_server: SippServerFactory
) -> None:
    uas = sipp_server("uas", extra_args=["-trace_msg"])
    ring = sipp_server("uas_ring", extra_args=["-trace_msg"])
    app = make_midcall(receiver, callee_port=uas.port, ring_port=ring.port)
    cid = connect_outbound(app)
    conn = app.connection(cid)

    asked = time.monotonic()
    added = conn.add_participant(PhoneNumberIdentifier(RINGING), invitation_timeout=2,
                                 operation_context="add-2s",
                                 source_caller_id_number=PhoneNumberIdentifier(SOURCE))
    assert added.invitation_id, added
    failed = receiver.wait_for(("AddParticipantFailed", "AddParticipantSucceeded"),
                               call_connection_id=cid, timeout=6)
    took = receiver.arrival(failed).at - asked
    assert type_matches(failed["type"], "AddParticipantFailed"), failed
    assert 1.5 <= took <= 4.0, f"AddParticipantFailed {took:.2f} s after a 2 s invitation"
    assert data(failed).get("operationContext") == "add-2s", failed
    assert_identifier(data(failed).get("participant"), RINGING)
    code, _ = result(failed)
    assert isinstance(code, int) and code >= 400, failed
    # the gateway gave up on its own: the ringing party got a CANCEL
    assert ring.wait_counts(1, 10.0) == (1, 0), sipp_failure(ring)
    assert received_requests(ring, "CANCEL"), sipp_failure(ring)
    time.sleep(0.5)
    report = receiver.describe()
    cancel_outcomes = [t for t in receiver.types(cid) if t.startswith("CancelAddParticipant")]

    assert_call_goes_on(app, cid, {CALLEE})
    assert uas.counts() == (0, 0) and not received_requests(uas, "BYE"), sipp_failure(uas)
    conn.hang_up(is_for_everyone=True)
    assert_ends_with_disconnected(receiver, cid)
    assert uas.wait_counts(1, 10.0) == (1, 0), sipp_failure(uas)
    # the app never asked for a cancel (cancel_add_participant_operation): no cancel outcome
    # may be reported for an invitation that timed out (checked last, after the clean-up)
    assert not cancel_outcomes, f"unexpected {cancel_outcomes} for a timeout\n{report}"


# --------------------------------------------------------------------------------------------
# 3. redirect_call


def test_redirect_to_a_sip_uri_answers_302_naming_it(
    make_midcall: Callable[..., App], receiver: EventReceiver, sipp_server: SippServerFactory
) -> None:
    carrier_port = free_port()
    app = make_midcall(receiver, carrier_port=carrier_port)
    carrier = start_carrier(sipp_server, app.gateway, "uac_expect_302", carrier_port,
                            variables={"target": REDIRECT_TARGET}, timeout_s=30)
    incoming = receiver.incoming(timeout=10)
    target = f"sip:{REDIRECT_TARGET}@192.0.2.10:5060"
    app.client.redirect_call(incoming["incomingCallContext"], UnknownIdentifier(target))
    assert sipp_exit(carrier) == 0, sipp_failure(carrier)  # a 302 naming the target, ACKed
    (moved,) = {header(m, "CSeq"): m for m in received_responses(carrier, 302)}.values()
    assert target in header(moved, "Contact"), moved
    # redirect has no events, and the context is spent
    with pytest.raises(HttpResponseError) as spent:
        app.client.answer_call(incoming["incomingCallContext"], app.callback)
    assert 400 <= (spent.value.status_code or 0) < 500, spent.value
    time.sleep(0.5)
    assert [a for a in receiver.arrivals() if a.schema == "cloud"] == [], receiver.describe()


def test_redirect_to_a_phone_number_bridges_the_caller_to_it(
    make_midcall: Callable[..., App], receiver: EventReceiver, sipp_server: SippServerFactory,
    interop_dir: Path,
) -> None:
    """A phone number: the gateway places the held call to it through the dial plan (the
    caller is answered when the target answers) and the app is out of the call."""
    target = sipp_server("uas_bye", extra_args=["-trace_msg"])
    carrier_port = free_port()
    app = make_midcall(receiver, carrier_port=carrier_port, callee_port=target.port)
    carrier = start_carrier(sipp_server, app.gateway, "uac_app_wait", carrier_port,
                            keys={"tone": str(tone_capture(interop_dir))})
    incoming = receiver.incoming(timeout=10)
    app.client.redirect_call(incoming["incomingCallContext"],
                             PhoneNumberIdentifier(REDIRECT_TARGET))
    assert target.wait_counts(1, 15.0) == (1, 0), sipp_failure(target)  # answered, hung up
    invites = received_requests(target, "INVITE")
    assert invites and REDIRECT_TARGET in invites[0].split("\n", 1)[0], invites
    assert sipp_exit(carrier) == 0, sipp_failure(carrier)  # 200, then the target's BYE
    with pytest.raises(HttpResponseError) as spent:
        app.client.answer_call(incoming["incomingCallContext"], app.callback)
    assert 400 <= (spent.value.status_code or 0) < 500, spent.value
    assert [a for a in receiver.arrivals() if a.schema == "cloud"] == [], receiver.describe()


# --------------------------------------------------------------------------------------------
# 4. play: text to speech, and the two play failures


class RawCaller:
    """A raw SIP caller (:class:`~.test_media_relay.Caller`) with a recording RTP endpoint,
    offering PCMU and telephone-event at :data:`CALLER_EVENT_PT`, calling an app number: its
    INVITE is held until the app answers, so it is sent from a worker thread."""

    def __init__(self, app: App, number: str = INBOUND) -> None:
        self.caller = Caller(app.gateway, number)
        self.caller.rtp.close()
        self.rtp = RecordingPeer()
        self.caller.rtp = self.rtp
        self._pool = concurrent.futures.ThreadPoolExecutor(1)
        self._invite: concurrent.futures.Future[Any] | None = None

    def offer(self) -> str:
        lines = [
            "v=0", "o=rawcaller 1 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0",
            f"m=audio {self.rtp.port} RTP/AVP 0 {CALLER_EVENT_PT}", "a=rtpmap:0 PCMU/8000",
            f"a=rtpmap:{CALLER_EVENT_PT} telephone-event/8000", f"a=fmtp:{CALLER_EVENT_PT} 0-15",
            "a=ptime:20", "a=sendrecv",
        ]
        return "\r\n".join(lines) + "\r\n"

    def call(self) -> None:
        self._invite = self._pool.submit(self.caller.invite, self.offer())

    def answered(self, timeout_s: float = 15.0) -> None:
        assert self._invite is not None
        reply = self._invite.result(timeout=timeout_s)
        assert reply.status == 200, reply.raw

    def hang_up(self) -> None:
        reply = self.caller.bye()
        assert reply is not None and reply.status == 200, reply

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.caller.close()


@pytest.fixture
def raw_caller_factory() -> Iterator[Callable[[App], RawCaller]]:
    callers: list[RawCaller] = []

    def make(app: App) -> RawCaller:
        caller = RawCaller(app)
        callers.append(caller)
        return caller

    yield make
    for caller in callers:
        caller.close()


def pcmu(packets: list[Any]) -> np.ndarray:
    """The μ-law audio (payload type 0) of ``packets``, in sequence order, as int16."""
    chosen = sorted((p for p in packets if p.pt == 0), key=lambda p: p.seq)
    if not chosen:
        return np.zeros(0, dtype=np.int16)
    return np.concatenate([ulaw_decode(p.payload) for p in chosen])


def loud_seconds(pcm: np.ndarray, threshold: float = 300.0) -> float:
    """Seconds of 20 ms frames of 8 kHz ``pcm`` whose RMS exceeds ``threshold``."""
    frames = len(pcm) // 160
    if not frames:
        return 0.0
    blocks = pcm[: frames * 160].astype(np.float64).reshape(frames, 160)
    rms = np.sqrt((blocks**2).mean(axis=1))
    return float((rms > threshold).sum()) * 0.02


@pytest.mark.filterwarnings(  # the brief's method; 1.6.0 prefers play_media (same request)
    "ignore:The method 'play_media_to_all' is deprecated:DeprecationWarning")
def test_play_text_to_speech_and_play_failures(
    make_midcall: Callable[..., App], receiver: EventReceiver,
    raw_caller_factory: Callable[[App], RawCaller], interop_dir: Path,
) -> None:
    app = make_midcall(receiver)
    caller = raw_caller_factory(app)
    caller.call()
    cid = answer_inbound(app)
    caller.answered()
    conn = app.connection(cid)

    # text spoken by espeak-ng, to everyone
    heard_before = len(caller.rtp.packets)
    conn.play_media_to_all(
        TextSource(text="Hello, this is the gateway speaking. Please hold the line.",
                   source_locale="en-US", voice_kind="female"),
        operation_context="speech")
    started = receiver.wait_for(("PlayStarted", "PlayFailed"), ctx("speech"),
                                call_connection_id=cid, timeout=10)
    assert type_matches(started["type"], "PlayStarted"), started
    completed = receiver.wait_for(("PlayCompleted", "PlayFailed", "PlayCanceled"),
                                  ctx("speech"), call_connection_id=cid, timeout=20)
    assert type_matches(completed["type"], "PlayCompleted"), completed
    assert result(completed) == (200, 0), completed
    spoken = receiver.arrival(completed).at - receiver.arrival(started).at
    assert spoken >= 1.5, f"a sentence of speech played in {spoken:.2f} s"
    time.sleep(0.3)
    pcm = pcmu(caller.rtp.packets[heard_before:])
    assert loud_seconds(pcm) >= 1.0, (
        f"the caller heard {loud_seconds(pcm):.2f} s of sound in {len(pcm) / 8000:.2f} s of"
        " PCMU while the speech played")

    # a file:// URI outside media_dir: a valid WAV, but refused (download failed, 8536)
    outside = write_tone_wav(interop_dir / "outside" / "tone.wav", 440.0, 0.5)
    assert not outside.resolve().is_relative_to(app.media_dir.resolve())
    conn.play_media_to_all(FileSource(outside.as_uri()), operation_context="outside")
    refused = receiver.wait_for(("PlayFailed", "PlayStarted"), ctx("outside"),
                                call_connection_id=cid, timeout=10)
    assert type_matches(refused["type"], "PlayFailed"), refused
    assert result(refused)[1] == 8536, refused
    assert data(refused).get("failedPlaySourceIndex") == 0, refused
    # ...also through a relative path that climbs out of media_dir
    conn.play_media_to_all(FileSource("file:///../outside/tone.wav"), operation_context="climb")
    climbed = receiver.wait_for(("PlayFailed", "PlayStarted"), ctx("climb"),
                                call_connection_id=cid, timeout=10)
    assert type_matches(climbed["type"], "PlayFailed") and result(climbed)[1] == 8536, climbed

    # a file under media_dir that is no WAV: invalid file format, 8535
    bogus = app.media_dir / "not-audio.wav"
    bogus.write_bytes(b"ID3\x03\x00\x00\x00\x00\x00\x00 this is an MP3 tag, not RIFF/WAVE" * 8)
    conn.play_media_to_all(FileSource(bogus.as_uri()), operation_context="bogus")
    invalid = receiver.wait_for(("PlayFailed", "PlayStarted"), ctx("bogus"),
                                call_connection_id=cid, timeout=10)
    assert type_matches(invalid["type"], "PlayFailed"), invalid
    assert result(invalid)[1] == 8535, invalid
    assert data(invalid).get("failedPlaySourceIndex") == 0, invalid
    for context in ("outside", "climb", "bogus"):
        assert not [e for e in receiver.events(cid) if type_matches(e["type"], "PlayStarted")
                    and data(e).get("operationContext") == context], receiver.describe()

    assert_call_goes_on(app, cid, {CALLER})
    caller.hang_up()
    assert_ends_with_disconnected(receiver, cid)


# --------------------------------------------------------------------------------------------
# 5. continuous DTMF recognition


def test_continuous_dtmf_recognition_reports_each_key(
    make_midcall: Callable[..., App], receiver: EventReceiver, sipp_server: SippServerFactory
) -> None:
    carrier_port = free_port()
    app = make_midcall(receiver, carrier_port=carrier_port)
    # SIPp keys 1 2 3 4 (600 ms apart) 3 s after its ACK
    carrier = start_carrier(sipp_server, app.gateway, "uac_app_dtmf", carrier_port,
                            duration_ms=3000)
    cid = answer_inbound(app)
    conn = app.connection(cid)
    conn.start_continuous_dtmf_recognition(PhoneNumberIdentifier(CALLER),
                                           operation_context="keys")

    def tones() -> list[dict[str, Any]]:
        return [data(e) for e in receiver.events(cid)
                if type_matches(e["type"], "ContinuousDtmfRecognitionToneReceived")]

    until(lambda: len(tones()) >= 4, 12,
          lambda: f"four key presses reported\n{receiver.describe()}")
    time.sleep(1.0)  # a duplicate (the end packet comes three times) would show by now
    got = tones()
    assert [t.get("tone") for t in got] == ["one", "two", "three", "four"], got
    sequence = [int(t["sequenceId"]) for t in got if isinstance(t.get("sequenceId"), int)]
    assert len(sequence) == 4, got
    assert sequence == sorted(sequence) and len(set(sequence)) == 4, sequence
    assert {t.get("operationContext") for t in got} == {"keys"}, got
    no_outcome(app, cid, "ContinuousDtmfRecognitionToneFailed")

    conn.stop_continuous_dtmf_recognition(PhoneNumberIdentifier(CALLER),
                                          operation_context="stop")
    stopped = receiver.wait_for("ContinuousDtmfRecognitionStopped", call_connection_id=cid,
                                timeout=5)
    assert data(stopped).get("operationContext") == "stop", stopped
    types = receiver.types(cid)
    assert types.index("ContinuousDtmfRecognitionStopped") > max(
        i for i, t in enumerate(types) if t == "ContinuousDtmfRecognitionToneReceived"), types

    conn.hang_up(is_for_everyone=False)
    assert sipp_exit(carrier) == 0, sipp_failure(carrier)  # got its BYE
    assert_ends_with_disconnected(receiver, cid)


# --------------------------------------------------------------------------------------------
# 6. send_dtmf_tones, heard on the caller's RTP socket


def test_send_dtmf_tones_reach_the_caller_as_rfc4733(
    make_midcall: Callable[..., App], receiver: EventReceiver,
    raw_caller_factory: Callable[[App], RawCaller],
) -> None:
    app = make_midcall(receiver)
    caller = raw_caller_factory(app)
    caller.call()
    cid = answer_inbound(app)
    caller.answered()
    conn = app.connection(cid)

    sent = conn.send_dtmf_tones(["one", "two"], PhoneNumberIdentifier(CALLER),
                                operation_context="dtmf")
    assert sent.operation_context == "dtmf", sent
    done = receiver.wait_for(("SendDtmfTonesCompleted", "SendDtmfTonesFailed"), ctx("dtmf"),
                             call_connection_id=cid, timeout=10)
    assert type_matches(done["type"], "SendDtmfTonesCompleted"), done
    assert result(done) == (200, 0), done
    time.sleep(0.5)

    events = caller.rtp.events(CALLER_EVENT_PT)
    assert events, (f"no RTP at payload type {CALLER_EVENT_PT} (offered as telephone-event);"
                    f" payload types seen: {caller.rtp.payload_types()}")
    codes = [e.code for e in events]
    assert set(codes) == {1, 2}, codes
    first_two = codes.index(2)
    assert set(codes[:first_two]) == {1} and set(codes[first_two:]) == {2}, codes  # 1 then 2
    for digit in (1, 2):
        mine = [e for e in events if e.code == digit]
        assert mine[0].marker, f"digit {digit}: no marker bit on its first packet: {mine}"
        assert mine[-1].end and mine[-1].duration > 0, f"digit {digit}: no end packet: {mine}"
        assert len({e.ts for e in mine}) == 1, f"digit {digit}: timestamps vary: {mine}"
    ts_one = next(e.ts for e in events if e.code == 1)
    ts_two = next(e.ts for e in events if e.code == 2)
    assert ts_two > ts_one, (ts_one, ts_two)
    # the events come from the gateway's media port the caller was given
    sources = {source for source, raw in caller.rtp.raw if raw[1] & 0x7F == CALLER_EVENT_PT}
    assert sources == {caller.caller.media}, (sources, caller.caller.media)

    assert_call_goes_on(app, cid, {CALLER})
    caller.hang_up()
    assert_ends_with_disconnected(receiver, cid)


# --------------------------------------------------------------------------------------------
# 7. hold, unhold, mute


def test_hold_unhold_and_mute_of_the_carrier_party(
    make_midcall: Callable[..., App], receiver: EventReceiver, sipp_server: SippServerFactory,
    interop_dir: Path,
) -> None:
    carrier_port = free_port()
    app = make_midcall(receiver, carrier_port=carrier_port)
    carrier = start_carrier(sipp_server, app.gateway, "uac_app_wait", carrier_port,
                            keys={"tone": str(tone_capture(interop_dir, 1000.0, 20.0))})
    cid = answer_inbound(app)
    conn = app.connection(cid)
    first = receiver.wait_for("ParticipantsUpdated", updated_with({CALLER}),
                              call_connection_id=cid)
    start = participant(first, CALLER)
    assert start and start.get("isMuted") is False and start.get("isOnHold") is False, first

    def reinvites() -> list[str]:
        return list({header(m, "CSeq"): m for m in received_requests(carrier, "INVITE")}.values())

    def acked(count: int) -> bool:  # the gateway ACKed the 200 of its count-th re-INVITE
        return len({header(m, "CSeq") for m in received_requests(carrier, "ACK")}) >= count

    conn.hold(PhoneNumberIdentifier(CALLER), operation_context="hold")
    held = receiver.wait_for("ParticipantsUpdated",
                             party_flag(CALLER, "isOnHold", True,
                                        data(first)["sequenceNumber"]),
                             call_connection_id=cid)
    (hold_invite,) = until(reinvites, 5,
                           lambda: f"a re-INVITE for hold\n{sipp_failure(carrier)}")
    assert sdp_directions(hold_invite) == ["sendonly"], hold_invite
    until(lambda: acked(1), 5,
          lambda: f"the hold re-INVITE completed\n{sipp_failure(carrier)}")
    assert conn.get_participant(PhoneNumberIdentifier(CALLER)).is_on_hold is True

    conn.unhold(PhoneNumberIdentifier(CALLER), operation_context="unhold")
    resumed = receiver.wait_for("ParticipantsUpdated",
                                party_flag(CALLER, "isOnHold", False,
                                           data(held)["sequenceNumber"]),
                                call_connection_id=cid)
    both = until(lambda: len(reinvites()) >= 2 and reinvites(), 5,
                 lambda: f"a re-INVITE for unhold\n{sipp_failure(carrier)}")
    hold_invite, unhold_invite = sorted(both, key=lambda m: int(header(m, "CSeq").split()[0]))
    assert sdp_directions(unhold_invite) == ["sendrecv"], unhold_invite
    assert header(unhold_invite, "Call-ID") == header(hold_invite, "Call-ID")
    until(lambda: acked(2), 5,
          lambda: f"the unhold re-INVITE completed\n{sipp_failure(carrier)}")
    assert conn.get_participant(PhoneNumberIdentifier(CALLER)).is_on_hold is False
    no_outcome(app, cid, "HoldFailed")

    muted = conn.mute_participant(PhoneNumberIdentifier(CALLER), operation_context="mute")
    assert muted.operation_context == "mute", muted
    update = receiver.wait_for("ParticipantsUpdated",
                               party_flag(CALLER, "isMuted", True,
                                          data(resumed)["sequenceNumber"]),
                               call_connection_id=cid)
    assert participant(update, CALLER)["isOnHold"] is False, update  # type: ignore[index]
    assert conn.get_participant(PhoneNumberIdentifier(CALLER)).is_muted is True
    assert len(reinvites()) == 2, "mute sent SIP to the party"

    assert_call_goes_on(app, cid, {CALLER})
    conn.hang_up(is_for_everyone=True)
    assert sipp_exit(carrier) == 0, sipp_failure(carrier)
    assert_ends_with_disconnected(receiver, cid)


# --------------------------------------------------------------------------------------------
# 8. the app leaves a call of two phone parties


class HangingUpCallee(ScriptedCallee):
    """:class:`~.test_rest_sdk.ScriptedCallee` (answers the gateway's INVITE, records RTP)
    that can hang up: a BYE in the dialog of the INVITE it answered, to the INVITE's Contact
    (with or without a user part) through its Record-Route set."""

    def hang_up(self) -> None:
        (ack,) = self.wait("ACK", 1, 10.0)[:1]
        (invite,) = self.got("INVITE")[:1]
        contact = re.search(r"<([^>]+)>", invite.header("contact")) or re.search(
            r"(sips?:[^;\s]+)", invite.header("contact"))
        assert contact, invite.raw
        target = re.search(r"sips?:(?:[^@]*@)?([\d.]+)(?::(\d+))?", contact.group(1))
        assert target, contact.group(1)
        self.cseq += 1
        lines = [f"BYE {contact.group(1)} SIP/2.0",
                 f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK{uuid.uuid4().hex}",
                 *(f"Route: {route}" for route in invite.all("record-route")),
                 f"From: {ack.header('to')}", f"To: {ack.header('from')}",
                 f"Call-ID: {ack.header('call-id')}", f"CSeq: {self.cseq} BYE",
                 "Max-Forwards: 70", "Content-Length: 0"]
        message = "\r\n".join(lines) + "\r\n\r\n"
        self.sock.sendto(message.encode(), (target.group(1), int(target.group(2) or 5060)))


def test_app_hang_up_leaves_two_parties_joined_until_one_hangs_up(
    make_midcall: Callable[..., App], receiver: EventReceiver, sipp_server: SippServerFactory
) -> None:
    """SIPp's uas.xml (echoing RTP) is the create_call target, a scripted callee the added
    party: it sends a tone after the app left and must hear it back through the echoing
    party, then it hangs up and the gateway must BYE the other."""
    uas = sipp_server("uas", extra_args=["-trace_msg", "-rtp_echo", "-mp", str(free_media_ports())])
    other = HangingUpCallee()
    try:
        app = make_midcall(receiver, callee_port=uas.port, other_port=other.port)
        cid = connect_outbound(app)
        conn = app.connection(cid)
        conn.add_participant(PhoneNumberIdentifier(OTHER), operation_context="add",
                             source_caller_id_number=PhoneNumberIdentifier(SOURCE))
        added = receiver.wait_for(("AddParticipantSucceeded", "AddParticipantFailed"),
                                  ctx("add"), call_connection_id=cid, timeout=10)
        assert type_matches(added["type"], "AddParticipantSucceeded"), added
        receiver.wait_for("ParticipantsUpdated", updated_with({CALLEE, OTHER}),
                          call_connection_id=cid)
        other.wait("ACK", 1, 5.0)

        conn.hang_up(is_for_everyone=False)
        left = time.monotonic()
        gone = receiver.wait_for("CallDisconnected", call_connection_id=cid, timeout=5)
        assert receiver.arrival(gone).at - left < EVENT_LATENCY_S + 1, receiver.describe()
        late = receiver.quiet(cid, 2.0)
        assert not late, f"events after CallDisconnected: {late}"
        assert receiver.types(cid)[-1] == "CallDisconnected", receiver.types(cid)
        # both parties are still in their calls: no BYE to either
        assert uas.counts() == (0, 0) and not received_requests(uas, "BYE"), sipp_failure(uas)
        assert not other.got("BYE"), [r.raw for r in other.got("BYE")]
        assert other.gateway_media[1], other.offer

        # ...and still joined: a tone from the scripted party comes back through SIPp's echo
        before = len(other.rtp.packets)
        other.rtp.send_tone(other.gateway_media, 1000.0, 1.5)
        time.sleep(0.5)
        back = pcmu(other.rtp.packets[before:])
        assert loud_seconds(back) >= 0.8, (
            f"{len(back) / 8000:.2f} s of PCMU back, {loud_seconds(back):.2f} s of it loud: the"
            " two parties are no longer joined after the app left")
        heard = dominant_frequency(back.astype(np.float64) / 32768, 8000, 0.2)
        assert abs(heard - 1000.0) < 10, f"heard {heard:.1f} Hz, sent 1000 Hz"

        # one party hangs up: the gateway ends the other's call leg
        other.hang_up()
        assert uas.wait_counts(1, 10.0) == (1, 0), sipp_failure(uas)  # got a BYE, said 200
        assert len({header(m, "CSeq") for m in received_requests(uas, "BYE")}) == 1
        assert not receiver.quiet(cid, 0.5), "events after CallDisconnected"
        assert receiver.types(cid).count("CallDisconnected") == 1, receiver.types(cid)
    finally:
        other.close()


def test_answered_call_whose_ack_never_comes_is_hung_up(
    make_midcall: Callable[..., App], receiver: EventReceiver,
    raw_caller_factory: Callable[[App], RawCaller],
) -> None:
    """The app answers, the caller never ACKs the 200: when the gateway stops retransmitting
    it (Timer H, 64 x T1; T1 = 50 ms here) the party is hung up with BYE, the call ends with
    CallDisconnected and nothing is left behind."""
    app = make_midcall(receiver, sip={"t1": 0.05})
    caller = raw_caller_factory(app)
    uac = caller.caller.uac
    body = caller.offer().encode()
    call_id = caller.caller.call_id
    invite = uac.request("INVITE", INBOUND, call_id, "z9hG4bK" + uuid.uuid4().hex, 1)
    invite = invite.replace(b"Content-Length: 0\r\n\r\n",
                            b"Content-Type: application/sdp\r\nContent-Length: %d\r\n\r\n"
                            % len(body) + body)
    uac.send(invite)
    incoming = receiver.incoming(timeout=10)
    cid = app.client.answer_call(incoming["incomingCallContext"],
                                 app.callback).call_connection_id
    seen: list[bytes] = []
    deadline = time.monotonic() + 15
    uac.sock.settimeout(0.2)
    while time.monotonic() < deadline and not any(d.startswith(b"BYE ") for d in seen):
        try:
            data, _ = uac.sock.recvfrom(65536)
        except TimeoutError:
            continue
        seen.append(data)
    oks = [d for d in seen if d.startswith(b"SIP/2.0 200") and b"INVITE" in d]
    assert len(oks) >= 2, seen  # the 200 was retransmitted while no ACK came
    assert any(d.startswith(b"BYE ") for d in seen), seen  # then the party was hung up
    receiver.wait_for("CallDisconnected", call_connection_id=cid, timeout=5)
    assert not [e for e in receiver.events(cid) if type_matches(e["type"], "CallConnected")]


class ForkingCallee:
    """A UDP callee that answers each INVITE twice, as two forks would: 200 with To tag
    forkA, then 200 with To tag forkB; it answers BYE with 200 and records every request."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.requests: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(65536)
            except (TimeoutError, OSError):
                continue
            text = data.decode("utf-8", "replace")
            if text.startswith("SIP/2.0"):
                continue
            self.requests.append(text)
            head = text.split("\r\n\r\n", 1)[0].split("\r\n")
            keep = [h for h in head[1:] if h.split(":", 1)[0].lower()
                    in ("via", "from", "to", "call-id", "cseq")]
            if text.startswith("INVITE "):
                body = ("v=0\r\no=fork 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
                        "t=0 0\r\nm=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
                for tag in ("forkA", "forkB"):
                    lines = ["SIP/2.0 200 OK"] + [
                        f"{h};tag={tag}" if h.lower().startswith("to:") else h for h in keep]
                    lines += [f"Contact: <sip:{tag}@127.0.0.1:{self.port}>",
                              "Content-Type: application/sdp", f"Content-Length: {len(body)}"]
                    self.sock.sendto(("\r\n".join(lines) + "\r\n\r\n" + body).encode(), addr)
            elif text.startswith("BYE "):
                lines = ["SIP/2.0 200 OK", *keep, "Content-Length: 0"]
                self.sock.sendto(("\r\n".join(lines) + "\r\n\r\n").encode(), addr)

    def got(self, method: str, tag: str) -> list[str]:
        out = []
        for text in list(self.requests):
            to = re.search(r"(?im)^to\s*:(.*)$", text)
            if text.startswith(method + " ") and to and f"tag={tag}" in to.group(1):
                out.append(text)
        return out

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def test_a_second_fork_answering_is_acked_and_hung_up(
    make_midcall: Callable[..., App], receiver: EventReceiver
) -> None:
    """create_call answered by two forks: the first 2xx is the call; the second fork's dialog
    is ACKed and ended with BYE (RFC 3261 section 13.2.2.4), the call goes on with the first."""
    callee = ForkingCallee()
    try:
        app = make_midcall(receiver, callee_port=callee.port)
        cid = app.client.create_call(PhoneNumberIdentifier(CALLEE), app.callback,
                                     operation_context="fork").call_connection_id
        receiver.wait_for("CallConnected", call_connection_id=cid, timeout=5)
        until(lambda: callee.got("BYE", "forkB"), 5, lambda: "\n".join(callee.requests))
        assert callee.got("ACK", "forkA") and callee.got("ACK", "forkB"), callee.requests
        assert not callee.got("BYE", "forkA"), callee.requests
        conn = app.connection(cid)
        assert conn.get_call_properties().call_connection_state == "connected"
        conn.hang_up(is_for_everyone=True)
        until(lambda: callee.got("BYE", "forkA"), 5, lambda: "\n".join(callee.requests))
        assert_ends_with_disconnected(receiver, cid)
    finally:
        callee.close()
