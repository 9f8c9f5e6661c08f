"""Issue 6's Show: conference rooms (dial plan action ``conference:NAME``), MCU and SFU.

Phone parties are :class:`~.confpeer.ConfParty` objects: each calls the gateway over SIP/UDP
from its own socket (From user = its E.164 number, the "carrier" trunk by source address),
sends its own tone at a 20 ms pace in PCMU, PCMA or Opus, and decodes what it gets per SSRC
(its own G.711 tables, libopus through opuslib). What a party hears is measured by FFT
(:func:`~.confpeer.tone_levels`: each tone's level within ±20 Hz, in dBFS): a tone counts as
heard above :data:`HEARD_DBFS` (the parties send about -19 dBFS) and as absent below
:data:`ABSENT_DBFS`; a party's own tone must also be :data:`OWN_MARGIN_DB` under the weakest
tone it hears. Five tones below 3 kHz with no harmonic (up to the 7th), sum or difference
relation among them, away from DTMF and common prompt frequencies.

Two gateways, one per mode, each started once for the module (the tests leave their rooms
empty, so a room is created afresh by each test): ``mcu`` (``[media] conference_mode =
"mcu"``; rooms ``room1``, ``pinroom`` with PIN 4321, ``evroom`` with a callback_uri) and ``sfu``
(``[conferences.room1] mode = "sfu"``). The list of the issue:

1. MCU, 5 parties (2 PCMU, 1 PCMA, 2 Opus): each hears the 4 other tones, not its own.
2. SFU, 5 Opus parties (2 with the RFC 6464 extmap and level extension): each gets 4 SSRCs,
   one other party's tone each, payloads as their sources sent them, PT = its own Opus PT, no
   header extension, seq +1 and ts increasing per SSRC; never its own stream. Also: PCMU and
   PCMA parties in an SFU room hear the others (a mix in their codec) and are heard by the
   Opus parties.
3. mute_participant through the SDK (unmute by a signed request: SDK 1.6.0 has no
   unmute_participant), MCU and SFU: the muted tone is gone from everyone, then back.
4. leave (BYE) and rejoin: gone from the others' audio and list_participants, then back.
5. PIN room: 3 wrong PINs -> BYE from the gateway; before its PIN a party hears no one and is
   not heard; after 4321# it hears and is heard.
6. Events: ParticipantsUpdated on joins and leaves, DominantSpeakersChanged naming the one
   party that sends a tone while the others send silence; CallDisconnected when the last
   party leaves, and events again when the room is created anew (same callConnectionId).
7. play_media_to_all reaches every party; a mixed recording holds the tones; hang_up for
   everyone sends BYE to every party.

The first tests need no gateway: they prove the party itself (codecs, RTP, RFC 4733,
RFC 6464, SIP UAC against a scripted UAS) on loopback sockets.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import socket
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from azure.communication.callautomation import (
    CallAutomationClient,
    CallConnectionClient,
    FileSource,
    PhoneNumberIdentifier,
)

from gateway.observe.metrics import IGNORED_GATEWAY_KEYS, exported_gateway_keys

from .acs import (
    Event,
    EventReceiver,
    SignedRequest,
    sdk_client,
    signed_request,
    type_matches,
    write_tone_wav,
)
from .audio import dominant_frequency, read_wav, tone_power_ratio
from .confpeer import (
    AUDIO_LEVEL_URN,
    NO_TONE_DBFS,
    ConfParty,
    MediaEndpoint,
    RtpIn,
    Sending,
    SipMessage,
    alaw_decode,
    alaw_encode,
    codec,
    continuity_problems,
    digits_of,
    dtmf_events,
    format_levels,
    parse_audio_level,
    tone_levels,
)
from .harness import LOOPBACK, GatewayProcess, TrunkSpec, free_port
from .test_media_dtmf import free_media_range
from .test_rest_sdk import find_recording, wait_rest_listening

pytestmark = pytest.mark.timeout(60)

TONES: dict[str, float] = {
    "alice": 541.0, "bob": 1151.0, "carol": 1523.0, "dave": 1847.0, "erin": 2437.0,
}
NUMBERS = {name: f"+1555000100{i}" for i, name in enumerate(TONES, start=1)}
PROMPT_HZ = 887.0  # play_media_to_all's prompt

ROOM1 = "+15557771000"  # conference:room1
PINROOM = "+15557772000"  # conference:pinroom (PIN 4321)
EVROOM = "+15557773000"  # conference:evroom (callback_uri)
PIN = "4321"

HEARD_DBFS = -40.0  # the parties send -19.3 dBFS; a mixer may scale a little
ABSENT_DBFS = -46.0  # seen: -58 (Opus coding noise) to -75
OWN_MARGIN_DB = 20.0
SETTLE_S = 0.6  # after a change, before measuring (jitter buffers, selection)
WINDOW_S = 2.0

DIALPLAN = """
[[inbound]]
name = "room1"
match = '^\\+15557771\\d{3}$'
from_trunk = "carrier"
action = "conference:room1"

[[inbound]]
name = "pinroom"
match = '^\\+15557772\\d{3}$'
from_trunk = "carrier"
action = "conference:pinroom"

[[inbound]]
name = "evroom"
match = '^\\+15557773\\d{3}$'
from_trunk = "carrier"
action = "conference:evroom"
"""


# --------------------------------------------------------------------------------------------
# measuring what parties hear


def heard_levels(media: MediaEndpoint, since: float, until: float) -> dict[str, float]:
    """Each tone's level in what a party received in [since, until): the loudest over its
    SSRCs (one in MCU, one per forwarded party in SFU)."""
    levels = dict.fromkeys(TONES, NO_TONE_DBFS)
    for stream in media.streams(since, until).values():
        for name, level in tone_levels(stream.samples, stream.rate, TONES).items():
            levels[name] = max(levels[name], level)
    return levels


def window(seconds: float = WINDOW_S, settle: float = SETTLE_S) -> tuple[float, float]:
    """Wait ``settle``, then a measuring window of ``seconds``; returns (since, until)."""
    time.sleep(settle)
    since = time.monotonic()
    time.sleep(seconds)
    return since, time.monotonic()


def hearing_problems(parties: Mapping[str, ConfParty], expected: Mapping[str, set[str]],
                     since: float, until: float) -> tuple[list[str], str]:
    """(problems, a table of levels) for each listener in ``expected``: the tones it must
    hear (>= HEARD_DBFS) and every other tone (<= ABSENT_DBFS), its own
    OWN_MARGIN_DB under the weakest heard."""
    problems: list[str] = []
    table: list[str] = []
    for listener, heard in expected.items():
        party = parties[listener]
        levels = heard_levels(party.media, since, until)
        streams = party.media.streams(since, until)
        table.append(f"  {listener} hears ({len(streams)} SSRC, "
                     f"{sum(s.seconds for s in streams.values()):.1f} s): {format_levels(levels)}")
        for name in TONES:
            if name in heard and levels[name] < HEARD_DBFS:
                problems.append(f"{listener} should hear {name} ({levels[name]:.1f} dBFS "
                                f"< {HEARD_DBFS})")
            if name not in heard and levels[name] > ABSENT_DBFS:
                what = "its own tone" if name == listener else name
                problems.append(f"{listener} should not hear {what} ({levels[name]:.1f} dBFS "
                                f"> {ABSENT_DBFS})")
        present = [levels[name] for name in heard if levels[name] >= HEARD_DBFS]
        if present:
            weakest = min(present)
            if levels[listener] > weakest - OWN_MARGIN_DB:
                problems.append(f"{listener}'s own tone {levels[listener]:.1f} dBFS is not "
                                f"{OWN_MARGIN_DB:g} dB under the weakest it hears "
                                f"({weakest:.1f})")
    return problems, "\n".join(table)


def assert_hearing(room: Room | None, parties: Mapping[str, ConfParty],
                   expected: Mapping[str, set[str]], since: float, until: float,
                   what: str) -> None:
    problems, table = hearing_problems(parties, expected, since, until)
    print(f"{what}: levels (dBFS)\n{table}")  # shown with -s, or when the test fails
    if problems:
        raise AssertionError(
            f"{what}:\n" + "\n".join(f"- {p}" for p in problems) + f"\nlevels (dBFS):\n{table}\n"
            + describe(parties, room))


def describe(parties: Mapping[str, ConfParty], room: Room | None) -> str:
    lines = ["parties:", *(f"  {p.describe()}" for p in parties.values())]
    if room is not None:
        lines.append(f"--- gateway log tail ({room.gateway.log_path}) ---")
        lines.append(room.gateway.log_tail(3000))
    return "\n".join(lines)


def n_minus_1(names: Sequence[str]) -> dict[str, set[str]]:
    return {name: set(names) - {name} for name in names}


# --------------------------------------------------------------------------------------------
# the rooms (one gateway per mode, started once for the module)


@dataclass
class Room:
    """A gateway with conference rooms, its SDK client and the rooms' event receiver."""

    mode: str
    gateway: GatewayProcess
    receiver: EventReceiver
    client: CallAutomationClient
    media_dir: Path
    recordings_dir: Path

    @property
    def sip(self) -> tuple[str, int]:
        return (LOOPBACK, self.gateway.sip_udp)

    def connection(self, name: str = "room1") -> CallConnectionClient:
        return self.client.get_call_connection(f"conference-{name}")

    def participants(self, name: str = "room1") -> dict[str, bool]:
        """{phone number: is_muted} from list_participants."""
        out: dict[str, bool] = {}
        for participant in self.connection(name).list_participants():
            assert participant.identifier is not None, participant
            raw = participant.identifier.raw_id
            out[raw[2:] if raw.startswith("4:") else raw] = bool(participant.is_muted)
        return out

    def unmute(self, number: str, name: str = "room1") -> None:
        """participants:unmute as a signed request (the 1.6.0 SDK has no unmute_participant);
        the body is what the SDK's mute_participant sends, to the unmute action."""
        body = json.dumps({"targetParticipants": [phone_identifier(number)],
                           "operationContext": "unmute"}).encode()
        reply = signed_request(self.gateway, SignedRequest(
            "POST", f"/calling/callConnections/conference-{name}/participants:unmute", body))
        assert reply.status == 200, reply.describe()


def phone_identifier(number: str) -> dict[str, Any]:
    return {"kind": "phoneNumber", "rawId": f"4:{number}", "phoneNumber": {"value": number}}


def start_room_gateway(base: Path, mode: str, receiver: EventReceiver) -> Room:
    media_dir, recordings_dir = base / "media", base / "recordings"
    media_dir.mkdir(parents=True, exist_ok=True)
    if mode == "mcu":
        conferences: dict[str, Any] = {
            "room1": {"callback_uri": receiver.url("/room1")},
            "pinroom": {"pin": PIN},
            "evroom": {"callback_uri": receiver.url("/evroom")},
        }
    else:
        conferences = {"room1": {"mode": "sfu", "callback_uri": receiver.url("/room1")}}
    gateway = GatewayProcess(
        base / "gateway",
        trunks=[TrunkSpec("carrier", free_port(), codecs=("PCMU", "PCMA", "opus"))],
        dialplan=DIALPLAN,
        extra_config={
            "media": {"port_range": free_media_range(), "conference_mode": "mcu",
                      "max_mixed": 8},
            "rest": {"allow_insecure_callbacks": True, "media_dir": str(media_dir),
                     "recordings_dir": str(recordings_dir)},
            "conferences": conferences,
        },
    )
    gateway.start()
    try:
        wait_rest_listening(gateway)
        client = sdk_client(gateway)
    except BaseException:
        gateway.stop()
        raise
    return Room(mode, gateway, receiver, client, media_dir, recordings_dir)


@pytest.fixture(scope="module")
def receiver() -> Iterator[EventReceiver]:
    with EventReceiver() as r:
        yield r


@contextlib.contextmanager
def _room(tmp_path_factory: pytest.TempPathFactory, mode: str,
          receiver: EventReceiver) -> Iterator[Room]:
    room = start_room_gateway(tmp_path_factory.mktemp(f"conference-{mode}"), mode, receiver)
    try:
        yield room
    finally:
        room.client.close()
        code = room.gateway.stop()
        print(f"--- {mode} gateway (exit code {code}) ---\n{room.gateway.log_tail(4000)}")


@pytest.fixture(scope="module")
def mcu(tmp_path_factory: pytest.TempPathFactory, receiver: EventReceiver) -> Iterator[Room]:
    with _room(tmp_path_factory, "mcu", receiver) as room:
        yield room


@pytest.fixture(scope="module")
def sfu(tmp_path_factory: pytest.TempPathFactory, receiver: EventReceiver) -> Iterator[Room]:
    with _room(tmp_path_factory, "sfu", receiver) as room:
        yield room


PartyFactory = Callable[..., dict[str, ConfParty]]


@pytest.fixture
def make_parties() -> Iterator[PartyFactory]:
    """``make_parties(room, {"alice": "PCMU", ...}, **kw)`` -> {name: ConfParty} (not yet
    joined). At teardown every party still in a call hangs up (BYE), then all are closed, so
    the next test finds the room empty."""
    made: list[ConfParty] = []

    def make(room: Room, codecs: Mapping[str, str], *, pts: Mapping[str, int] | None = None,
             level_ext: Mapping[str, int] | None = None, mode: Any = "tone"
             ) -> dict[str, ConfParty]:
        out: dict[str, ConfParty] = {}
        for name, codec_name in codecs.items():
            party = ConfParty(name, NUMBERS[name], TONES[name], codec_name,  # type: ignore[arg-type]
                              room.sip, pt=(pts or {}).get(name),
                              level_ext=(level_ext or {}).get(name), mode=mode)
            made.append(party)
            out[name] = party
        return out

    yield make
    for party in made:
        if party.media.sending is not None and not party.ua.bye_received.is_set():
            with contextlib.suppress(Exception):
                party.leave(timeout=2.0)
    for party in made:
        party.close()


def join_all(room: Room, parties: Mapping[str, ConfParty], number: str = ROOM1) -> None:
    for party in parties.values():
        status = party.join(number)
        assert status == 200, (f"{party.name} joining {number}: status {status}\n"
                               + describe(parties, room))


def wait_participants(room: Room, expected: set[str], name: str = "room1",
                      timeout: float = 3.0) -> dict[str, bool]:
    """list_participants once it lists exactly the numbers ``expected``."""
    deadline = time.monotonic() + timeout
    listed: dict[str, bool] = {}
    while True:
        listed = room.participants(name)
        if set(listed) == expected or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert set(listed) == expected, f"list_participants of {name}: {sorted(listed)}, " \
                                    f"expected {sorted(expected)}"
    return listed


# --------------------------------------------------------------------------------------------
# 0. the party itself, without a gateway


def test_g711_alaw_tables_match_the_reference() -> None:
    """The party's own A-law encoder/decoder equal the standard library's (ITU-T G.711)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop  # deprecated since 3.11, removed in 3.13: a reference while it exists
    every = np.arange(-32768, 32768, dtype=np.int16)
    assert alaw_encode(every) == audioop.lin2alaw(every.tobytes(), 2)
    codes = bytes(range(256))
    reference = np.frombuffer(audioop.alaw2lin(codes, 2), dtype=np.int16)
    assert np.array_equal(alaw_decode(codes), reference)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("codec_name", ["PCMU", "PCMA", "opus"])
def test_parties_round_trip_tones_on_loopback(codec_name: str) -> None:
    """Two senders to one receiver (their own SSRCs, one with the RFC 6464 level extension),
    the receiver back to the first: each SSRC decodes to its sender's tone and nothing else;
    seq +1, ts +1 frame per packet; Opus payloads arrive as sent; the level extension parses
    back; digits keyed come out as RFC 4733 events."""
    pt = 96 if codec_name == "opus" else None
    x = MediaEndpoint(TONES["alice"], codec(codec_name, pt), name="x")  # type: ignore[arg-type]
    y = MediaEndpoint(TONES["bob"], codec(codec_name, pt), name="y")  # type: ignore[arg-type]
    z = MediaEndpoint(TONES["carol"], codec(codec_name, pt), name="z")  # type: ignore[arg-type]
    try:
        send_pt, clock = x.codec.pt, (48000 if codec_name == "opus" else 8000)
        x.start_sending(Sending((LOOPBACK, z.port), send_pt, 101, clock, level_ext=3))
        y.start_sending(Sending((LOOPBACK, z.port), send_pt, 101, clock))
        z.start_sending(Sending((LOOPBACK, x.port), send_pt, 101, clock))
        since, until = window(1.0, settle=0.3)
        streams = z.streams(since, until)
        by_tone: dict[str, int] = {}
        for ssrc, stream in streams.items():
            levels = tone_levels(stream.samples, stream.rate, TONES)
            loud = [n for n, v in levels.items() if v >= HEARD_DBFS]
            assert len(loud) == 1 and levels[loud[0]] > -22, format_levels(levels)
            assert all(v <= ABSENT_DBFS for n, v in levels.items() if n != loud[0]), levels
            by_tone[loud[0]] = ssrc
        assert set(by_tone) == {"alice", "bob"}, by_tone
        assert by_tone["alice"] == x.ssrc and by_tone["bob"] == y.ssrc
        back = heard_levels(x, since, until)
        assert back["carol"] >= -22 and back["alice"] <= ABSENT_DBFS, back

        packets = z.packets()
        assert continuity_problems(packets) == []
        frame = z.codec.frame_ticks
        for sender in (x, y):
            chain = [p for p in packets if p.ssrc == sender.ssrc]
            assert chain[0].marker and not any(p.marker for p in chain[1:])
            assert {(b.ts - a.ts) % 2**32 for a, b in itertools.pairwise(chain)} == {frame}
            if codec_name == "opus":
                assert {p.payload for p in chain} <= sender.sent_payloads
        ext_levels = [parse_audio_level(p.extension, 3) for p in packets if p.ssrc == x.ssrc]
        assert all(lv is not None and lv[0] and 17 <= lv[1] <= 21 for lv in ext_levels), \
            ext_levels[:5]
        assert all(p.extension is None for p in packets if p.ssrc == y.ssrc)

        # silence: the level says 127 (no voice); off: nothing at all
        x.mode = "silence"
        time.sleep(0.3)
        mark = time.monotonic()
        time.sleep(0.3)
        quiet = [parse_audio_level(p.extension, 3) for p in z.packets(mark, ssrc=x.ssrc)]
        assert quiet and all(lv == (False, 127) for lv in quiet), quiet
        x.mode = "off"
        time.sleep(0.1)
        mark = time.monotonic()
        time.sleep(0.3)
        assert z.packets(mark, ssrc=x.ssrc) == []

        # RFC 4733: marker on each digit's first packet, 3 end packets, one ts per digit
        mark = time.monotonic()
        y.key("4321#")
        time.sleep(0.1)
        events = dtmf_events(z.packets(mark, ssrc=y.ssrc), 101)
        assert digits_of(events) == "4321#", events
        for ts in {e.ts for e in events}:
            digit = [e for e in events if e.ts == ts]
            assert digit[0].marker and sum(e.marker for e in digit) == 1
            assert sum(e.end for e in digit) == 3
            assert {e.duration for e in digit if e.end} == {5 * frame}
    finally:
        for endpoint in (x, y, z):
            endpoint.close()


def test_the_checks_can_fail() -> None:
    """The measures the room tests rely on see what they must: a party's own tone leaking 15 dB
    under the others is reported, a missing tone too; a sequence gap, a repeated or backward
    timestamp break continuity."""
    rate, n = 16000, 32000
    t = np.arange(n) / rate
    amp = 5000 / 32768

    def mix(levels_db: Mapping[str, float]) -> np.ndarray:
        return sum((amp * 10 ** (db / 20) * np.sin(2 * np.pi * TONES[name] * t)
                    for name, db in levels_db.items()), np.zeros(n))

    leaky = mix({"bob": 0, "carol": 0, "dave": 0, "erin": 0, "alice": -15})
    levels = tone_levels(leaky, rate, TONES)
    assert all(abs(levels[name] + 19.3) < 0.5 for name in ("bob", "carol", "dave", "erin")), levels
    assert abs(levels["alice"] + 34.3) < 1.0, levels

    class Fake:
        def __init__(self, samples: np.ndarray) -> None:
            self.samples = samples

        def streams(self, since: float, until: float) -> dict[int, Any]:
            return {1: type("S", (), {"samples": self.samples, "rate": rate, "seconds": 2.0})}

    party: Any = type("P", (), {"media": Fake(leaky)})
    alice_hears = {"alice": set(TONES) - {"alice"}}
    problems, _ = hearing_problems({"alice": party}, alice_hears, 0, 1)
    assert len(problems) == 2 and all("own tone" in p for p in problems), problems
    party.media = Fake(mix({"bob": 0, "carol": 0, "dave": 0}))  # erin missing
    problems, _ = hearing_problems({"alice": party}, alice_hears, 0, 1)
    assert problems == [f"alice should hear erin ({NO_TONE_DBFS:.1f} dBFS < {HEARD_DBFS})"], \
        problems

    def packet(seq: int, ts: int) -> RtpIn:
        return RtpIn(0.0, 111, seq, ts, 7, False, None, 0, b"")

    assert continuity_problems([packet(65535, 2**32 - 960), packet(0, 0), packet(1, 960)]) == []
    assert len(continuity_problems([packet(1, 0), packet(3, 1920)])) == 1  # a gap
    assert len(continuity_problems([packet(1, 960), packet(2, 960)])) == 1  # ts repeated
    assert len(continuity_problems([packet(1, 1920), packet(2, 960)])) == 1  # ts backward


class ScriptedUas:
    """A tiny UAS on 127.0.0.1 for the party's SIP self-check: answers INVITE with 100 then
    ``status`` (200 with an SDP answer pointing at its own RTP socket, echoing the offer's
    first codec and the audio-level extmap), retransmits the 200 until the ACK, answers BYE,
    and can send its own BYE."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOOPBACK, 0))
        self.sock.settimeout(0.1)
        self.port: int = self.sock.getsockname()[1]
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp.bind((LOOPBACK, 0))
        self.rtp.settimeout(2.0)
        self.got: list[SipMessage] = []
        self.acked = threading.Event()
        self.invite: SipMessage | None = None
        self.peer: tuple[str, int] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        final: bytes | None = None
        while not self._stop.is_set():
            try:
                data, source = self.sock.recvfrom(65536)
            except (TimeoutError, OSError):
                if final is not None and not self.acked.is_set():
                    self.sock.sendto(final, self.peer or source)  # 200 retransmission
                continue
            msg = SipMessage.parse(data)
            self.got.append(msg)
            if msg.method == "INVITE":
                self.invite, self.peer = msg, source
                self.acked.clear()
                self.sock.sendto(self._response(msg, 100, "Trying"), source)
                final = self._response(msg, self.status, "OK" if self.status == 200 else "Busy",
                                       answer=self.status == 200)
                self.sock.sendto(final, source)
            elif msg.method == "ACK":
                self.acked.set()
                final = None
            elif msg.method == "BYE":
                self.sock.sendto(self._response(msg, 200, "OK"), source)

    def _response(self, req: SipMessage, status: int, reason: str, *,
                  answer: bool = False) -> bytes:
        body = b""
        if answer:
            offer = req.body.decode()
            m = re.search(r"^m=audio \d+ RTP/AVP (\d+)", offer, re.M)
            assert m, offer
            pt = m.group(1)
            rtpmap = re.findall(rf"^a=(?:rtpmap|fmtp):{pt} .*$", offer, re.M)
            extmap = re.findall(r"^a=extmap:.*$", offer, re.M)
            body = ("\r\n".join(["v=0", f"o=uas 1 1 IN IP4 {LOOPBACK}", "s=-",
                                 f"c=IN IP4 {LOOPBACK}", "t=0 0",
                                 f"m=audio {self.rtp.getsockname()[1]} RTP/AVP {pt} 101",
                                 *rtpmap, "a=rtpmap:101 telephone-event/8000", *extmap,
                                 "a=sendrecv"]) + "\r\n").encode()
        to = req.get("to") or ""
        if "tag=" not in to:
            to += ";tag=uas1"
        lines = [f"SIP/2.0 {status} {reason}", *(f"Via: {v}" for v in req.all("via")),
                 f"From: {req.get('from')}", f"To: {to}", f"Call-ID: {req.get('call-id')}",
                 f"CSeq: {req.get('cseq')}", f"Contact: <sip:uas@{LOOPBACK}:{self.port}>"]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    def send_bye(self) -> None:
        assert self.invite is not None and self.peer is not None
        inv = self.invite
        lines = [f"BYE {re.sub(r'^<|>.*$', '', inv.get('contact') or '')} SIP/2.0",
                 f"Via: SIP/2.0/UDP {LOOPBACK}:{self.port};branch=z9hG4bK{uuid.uuid4().hex}",
                 "Max-Forwards: 70", f"From: {inv.get('to')};tag=uas1", f"To: {inv.get('from')}",
                 f"Call-ID: {inv.get('call-id')}", "CSeq: 1 BYE", "Content-Length: 0"]
        self.sock.sendto(("\r\n".join(lines) + "\r\n\r\n").encode(), self.peer)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()
        self.rtp.close()


@pytest.mark.timeout(30)
def test_party_sip_against_a_scripted_uas() -> None:
    """The party's UAC: INVITE -> 200 -> ACK, media to the answer's address with the answer's
    PT and the extmap id it echoed, BYE -> 200; a 486 is ACKed (same branch, RFC 3261
    17.1.1.3); a BYE from the far end is answered 200 and seen by the party."""
    uas = ScriptedUas()
    party = ConfParty("dave", NUMBERS["dave"], TONES["dave"], "opus", (LOOPBACK, uas.port),
                      pt=109, level_ext=5)
    try:
        assert party.join(ROOM1) == 200
        assert uas.acked.wait(2)
        assert party.answer is not None and party.answer.extmap == {AUDIO_LEVEL_URN: 5}
        invite = uas.invite
        assert invite is not None
        assert (invite.get("from") or "").startswith(f"<sip:{NUMBERS['dave']}@")
        assert "a=rtpmap:109 opus/48000/2" in invite.body.decode()
        data, _ = uas.rtp.recvfrom(2048)
        assert data[1] & 0x7F == 109 and data[0] & 0x10, data[:16].hex()
        assert party.leave() == 200
        assert [m.method for m in uas.got if m.method] == ["INVITE", "ACK", "BYE"]

        assert party.join(ROOM1) == 200  # a second call: new Call-ID, far end hangs up
        assert uas.acked.wait(2)
        uas.send_bye()
        assert party.ua.bye_received.wait(2)
        calls = {m.get("call-id") for m in uas.got if m.method == "INVITE"}
        assert len(calls) == 2

        uas.status = 486
        assert party.join(ROOM1) == 486
        time.sleep(0.3)
        requests = [m for m in uas.got if m.method in ("INVITE", "ACK")]
        invite, ack = requests[-2], requests[-1]
        assert invite.method == "INVITE" and ack.method == "ACK", [m.start for m in requests]
        assert ack.get("via") == invite.get("via"), ack.raw  # same branch: the INVITE's
        assert ack.start.startswith(f"ACK sip:{ROOM1}@"), ack.start  # its Request-URI too
    finally:
        party.close()
        uas.close()


# --------------------------------------------------------------------------------------------
# 1. MCU N-1 with mixed codecs

MIXED = {"alice": "PCMU", "bob": "PCMU", "carol": "PCMA", "dave": "opus", "erin": "opus"}
MIXED_PTS = {"dave": 111, "erin": 96}


def test_mcu_five_parties_mixed_codecs_hear_n_minus_1(
    mcu: Room, make_parties: PartyFactory
) -> None:
    parties = make_parties(mcu, MIXED, pts=MIXED_PTS)
    join_all(mcu, parties)
    for party in parties.values():
        assert party.answer is not None
        assert party.answer.pt_of(party.codec.name) is not None, party.answer.text
    listed = wait_participants(mcu, {p.number for p in parties.values()})
    assert not any(listed.values()), listed
    since, until = window()
    assert_hearing(mcu, parties, n_minus_1(list(parties)), since, until,
                   "MCU: each party hears the 4 others, never itself")
    for party in parties.values():  # the mix comes back in the party's own codec
        pts = {p.pt for p in party.media.packets(since, until)}
        assert pts == {party.codec.pt}, (party.name, pts)


# --------------------------------------------------------------------------------------------
# 2. SFU forwarding

SFU_CODECS = dict.fromkeys(TONES, "opus")
SFU_PTS = {"alice": 111, "bob": 96, "carol": 97, "dave": 109, "erin": 120}
SFU_LEVEL_EXT = {"alice": 1, "bob": 7}


def sfu_problems(parties: Mapping[str, ConfParty], senders: set[str], since: float,
                 until: float) -> list[str]:
    """What is wrong with what each receiver got in [since, until) from the SFU: one SSRC per
    sender in ``senders`` other than itself, each holding that sender's tone only and its
    payloads exactly as sent; PT = the receiver's; no extension, no CSRC; per SSRC seq +1 and
    ts increasing (over everything received so far)."""
    problems: list[str] = []
    for name, party in parties.items():
        expected = senders - {name}
        streams = {ssrc: s for ssrc, s in party.media.streams(since, until).items()
                   if s.seconds >= 0.5}
        everything = party.media.packets()
        pts = {p.pt for p in everything}
        if pts != {party.codec.pt}:
            problems.append(f"{name}: payload types {sorted(pts)}, not its own {party.codec.pt}")
        if any(p.extension is not None or p.csrc_count for p in everything):
            problems.append(f"{name}: forwarded packets carry a header extension or CSRCs")
        breaks = continuity_problems([p for p in everything if p.pt == party.codec.pt])
        if breaks:
            problems.append(f"{name}: {len(breaks)} continuity breaks, e.g. {breaks[:3]}")
        if len(streams) != len(expected):
            problems.append(f"{name}: {len(streams)} SSRCs with audio, expected "
                            f"{len(expected)} ({sorted(expected)})")
        sources: list[str] = []
        for ssrc, stream in streams.items():
            levels = tone_levels(stream.samples, stream.rate, TONES)
            loud = [n for n, v in levels.items() if v >= HEARD_DBFS]
            if len(loud) != 1 or any(v > ABSENT_DBFS for n, v in levels.items() if n not in loud):
                problems.append(f"{name}: SSRC {ssrc:#010x} is not one party's tone: "
                                f"{format_levels(levels)}")
                continue
            source = loud[0]
            sources.append(source)
            sent = parties[source].media.sent_payloads
            foreign = sum(p.payload not in sent for p in stream.packets)
            if foreign:
                problems.append(f"{name}: SSRC {ssrc:#010x} ({source}'s tone): {foreign} of "
                                f"{len(stream.packets)} payloads differ from what {source} sent")
        if sorted(sources) != sorted(expected):
            problems.append(f"{name}: SSRCs carry {sorted(sources)}, expected {sorted(expected)}")
        own = party.media.sent_payloads
        if any(p.payload in own for p in everything):
            problems.append(f"{name}: got its own packets back")
    return problems


def test_sfu_five_opus_parties_get_four_forwarded_streams(
    sfu: Room, make_parties: PartyFactory
) -> None:
    parties = make_parties(sfu, SFU_CODECS, pts=SFU_PTS, level_ext=SFU_LEVEL_EXT)
    join_all(sfu, parties)
    for name, party in parties.items():
        assert party.answer is not None
        answered = party.answer.extmap.get(AUDIO_LEVEL_URN)
        if name in SFU_LEVEL_EXT:
            assert answered is not None, f"{name} offered the audio level extmap; answer:\n" \
                                         f"{party.answer.text}"
        else:
            assert answered is None, f"{name} did not offer the extmap; answer:\n" \
                                     f"{party.answer.text}"
    wait_participants(sfu, {p.number for p in parties.values()})
    since, until = window()
    problems = sfu_problems(parties, set(parties), since, until)
    assert not problems, "SFU forwarding:\n" + "\n".join(f"- {p}" for p in problems) + "\n" + \
        describe(parties, sfu)
    # through the Prometheus endpoint: 5 parties, all heard, packets forwarded undecoded
    room = {"room": "room1", "mode": "sfu"}
    assert sfu.gateway.metric("acs_gateway_room_parties", **room) == 5
    assert sfu.gateway.metric("acs_gateway_room_speakers", **room) == 5
    forwarded = sfu.gateway.metric("acs_gateway_room_forwarded_packets_total", **room) or 0
    assert forwarded >= 5 * 4 * 50 * (until - since), (forwarded, until - since)


def test_sfu_g711_parties_get_a_mix_and_are_heard_by_opus_parties(
    sfu: Room, make_parties: PartyFactory
) -> None:
    """An SFU room with PCMU and PCMA parties beside Opus ones: the G.711 parties hear the
    others (a mix, in their own codec), the Opus parties hear the G.711 parties (forwarded to
    them as Opus); nobody hears itself."""
    codecs = {"alice": "PCMU", "bob": "PCMA", "carol": "opus", "dave": "opus", "erin": "opus"}
    parties = make_parties(sfu, codecs, pts=SFU_PTS)
    join_all(sfu, parties)
    wait_participants(sfu, {p.number for p in parties.values()})
    since, until = window()
    assert_hearing(sfu, parties, n_minus_1(list(parties)), since, until,
                   "SFU with G.711 parties: everyone hears the 4 others, never itself")
    for name in ("alice", "bob"):
        pts = {p.pt for p in parties[name].media.packets(since, until)}
        assert pts == {parties[name].codec.pt}, (name, pts)


# --------------------------------------------------------------------------------------------
# 3. mute / unmute through the REST API


@pytest.mark.parametrize("mode", ["mcu", "sfu"])
def test_mute_removes_the_party_from_everyones_audio(
    mode: str, request: pytest.FixtureRequest, make_parties: PartyFactory
) -> None:
    room: Room = request.getfixturevalue(mode)
    names = ["alice", "bob", "carol", "dave"]
    if mode == "mcu":
        codecs = {n: MIXED[n] for n in names}
    else:
        codecs = dict.fromkeys(names, "opus")
    parties = make_parties(room, codecs, pts={n: SFU_PTS[n] for n in names} if mode == "sfu"
                           else MIXED_PTS)
    join_all(room, parties)
    wait_participants(room, {p.number for p in parties.values()})
    conn = room.connection()

    conn.mute_participant(PhoneNumberIdentifier(NUMBERS["carol"]), operation_context="mute")
    listed = room.participants()
    assert listed[NUMBERS["carol"]] is True and not listed[NUMBERS["alice"]], listed
    since, until = window()
    expected = {n: set(names) - {n, "carol"} for n in names}
    assert_hearing(room, parties, expected, since, until,
                   f"{mode}: carol muted: nobody hears her, she still hears everyone")

    room.unmute(NUMBERS["carol"])
    assert room.participants()[NUMBERS["carol"]] is False
    since, until = window()
    assert_hearing(room, parties, n_minus_1(names), since, until,
                   f"{mode}: carol unmuted: heard again")


def test_gain_turns_one_party_down_in_everyones_mix(
    mcu: Room, make_parties: PartyFactory
) -> None:
    """The gateway's participants:gain extension: carol at -20 dB is heard about 20 dB
    quieter by the others, the others' levels unchanged; a gain out of range is a 400."""
    names = ["alice", "bob", "carol"]
    parties = make_parties(mcu, {n: MIXED[n] for n in names}, pts=MIXED_PTS)
    join_all(mcu, parties)
    wait_participants(mcu, {p.number for p in parties.values()})

    def gain(number: str, value: object) -> int:
        body = json.dumps({"targetParticipant": phone_identifier(number),
                           "gainDb": value}).encode()
        return signed_request(mcu.gateway, SignedRequest(
            "POST", "/calling/callConnections/conference-room1/participants:gain", body)).status

    since, until = window()
    before = {n: heard_levels(parties[n].media, since, until) for n in ("alice", "bob")}
    assert gain(NUMBERS["carol"], -20) == 200
    assert gain(NUMBERS["carol"], 40) == 400
    since, until = window()
    after = {n: heard_levels(parties[n].media, since, until) for n in ("alice", "bob")}
    for listener in ("alice", "bob"):
        drop = before[listener]["carol"] - after[listener]["carol"]
        assert 17.0 <= drop <= 23.0, (listener, before[listener], after[listener])
        other = "bob" if listener == "alice" else "alice"
        assert abs(before[listener][other] - after[listener][other]) < 1.5, (
            listener, before[listener], after[listener])


# --------------------------------------------------------------------------------------------
# 4. leave and rejoin


def test_party_leaves_and_rejoins(mcu: Room, make_parties: PartyFactory) -> None:
    names = ["alice", "bob", "carol", "dave"]
    parties = make_parties(mcu, {n: MIXED[n] for n in names}, pts=MIXED_PTS)
    join_all(mcu, parties)
    wait_participants(mcu, {p.number for p in parties.values()})

    assert parties["bob"].leave() == 200
    wait_participants(mcu, {parties[n].number for n in names if n != "bob"})
    since, until = window()
    stay = [n for n in names if n != "bob"]
    assert_hearing(mcu, parties, n_minus_1(stay), since, until, "bob left: nobody hears him")

    assert parties["bob"].join(ROOM1) == 200
    wait_participants(mcu, {p.number for p in parties.values()})
    since, until = window()
    assert_hearing(mcu, parties, n_minus_1(names), since, until, "bob rejoined: heard again")


# --------------------------------------------------------------------------------------------
# 5. PIN


@pytest.mark.timeout(75)
def test_pin_room(mcu: Room, make_parties: PartyFactory) -> None:
    parties = make_parties(mcu, {"alice": "PCMU", "bob": "opus", "carol": "PCMA",
                                 "dave": "PCMU"})
    alice, bob, carol, dave = (parties[n] for n in ("alice", "bob", "carol", "dave"))
    for party in (alice, bob):
        assert party.join(PINROOM) == 200, describe(parties, mcu)
        party.key(PIN + "#")
    for party in (carol, dave):  # answered at once, but not in the room until the PIN
        assert party.join(PINROOM) == 200, describe(parties, mcu)
    since, until = window()
    assert_hearing(mcu, parties, {"alice": {"bob"}, "bob": {"alice"}, "carol": set(),
                                  "dave": set()}, since, until,
                   "before their PIN, carol and dave hear no one and are not heard")

    for _ in range(3):
        dave.key("1111#")
        time.sleep(0.5)
    assert dave.ua.bye_received.wait(8.0), "no BYE after 3 wrong PINs\n" + describe(parties, mcu)

    carol.key(PIN + "#")
    since, until = window()
    assert_hearing(mcu, parties, {"alice": {"bob", "carol"}, "bob": {"alice", "carol"},
                                  "carol": {"alice", "bob"}}, since, until,
                   "carol keyed the PIN: she hears and is heard")
    assert not carol.ua.bye_received.is_set()


# --------------------------------------------------------------------------------------------
# 6. events


def phones_of(event: Event) -> set[str]:
    out: set[str] = set()
    for participant in (event.get("data") or {}).get("participants", []):
        number = number_of(participant.get("identifier", {}))
        if number:
            out.add(number)
    return out


def number_of(identifier: Any) -> str | None:
    if not isinstance(identifier, dict):
        return None
    phone = identifier.get("phoneNumber")
    if isinstance(phone, dict) and isinstance(phone.get("value"), str):
        return str(phone["value"])
    raw = identifier.get("rawId")
    return raw[2:] if isinstance(raw, str) and raw.startswith("4:") else None


def test_room_events(mcu: Room, make_parties: PartyFactory) -> None:
    receiver = mcu.receiver
    cid = "conference-evroom"
    before = len(receiver.events(cid))
    parties = make_parties(mcu, {"alice": "PCMU", "bob": "opus", "carol": "PCMA"},
                           mode="silence")
    alice, bob, carol = parties["alice"], parties["bob"], parties["carol"]

    def updated(numbers: set[str]) -> Callable[[Event], bool]:
        return lambda e: e in receiver.events(cid)[before:] and phones_of(e) == numbers

    joined: set[str] = set()
    for party in (alice, bob, carol):
        assert party.join(EVROOM) == 200, describe(parties, mcu)
        joined.add(party.number)
        receiver.wait_for("ParticipantsUpdated", updated(set(joined)), timeout=3,
                          call_connection_id=cid)

    def dominant(number: str) -> Callable[[Event], bool]:
        def check(e: Event) -> bool:
            speakers = (e.get("data") or {}).get("speakers") or []
            return e in receiver.events(cid)[before:] and bool(speakers) and number_of(
                speakers[0]) == number
        return check

    bob.set_mode("tone")
    first = receiver.wait_for("DominantSpeakersChanged", dominant(bob.number), timeout=4,
                              call_connection_id=cid)
    data = first["data"]
    assert isinstance(data.get("sequenceNumber"), int), data
    assert data.get("callConnectionId") == cid and data.get("serverCallId"), data
    bob.set_mode("silence")
    carol.set_mode("tone")
    second = receiver.wait_for("DominantSpeakersChanged", dominant(carol.number), timeout=4,
                               call_connection_id=cid)
    assert second["data"]["sequenceNumber"] > data["sequenceNumber"], (first, second)
    named = [number_of((e.get("data") or {}).get("speakers", [None])[0])
             for e in receiver.events(cid)[before:]
             if type_matches(str(e.get("type")), "DominantSpeakersChanged")]
    assert alice.number not in named, f"alice never spoke, yet was dominant: {named}"
    # the room through the Prometheus endpoint: its parties and the dominant speaker changes
    room = {"room": "evroom", "mode": "mcu"}
    metrics = mcu.gateway.metrics()
    def sample(name: str) -> float | None:
        return metrics.get((name, tuple(sorted(room.items()))))
    assert sample("acs_gateway_room_parties") == 3, describe(parties, mcu)
    assert (sample("acs_gateway_room_dominant_speaker_changes_total") or 0) >= 2
    # PCMU, PCMA and Opus: mixed at 16 kHz
    assert sample("acs_gateway_room_sample_rate_hertz") == 16000
    # every figure of the status document's "gateway" section is a metric, or left out on
    # purpose (the real producers' keys, here with rooms, app calls and media in use)
    status = json.loads((mcu.gateway.cdr_path.parent / "trunks.json").read_text())
    numeric = {key for key, v in status["gateway"].items()
               if isinstance(v, int | float) and not isinstance(v, bool)}
    assert numeric - exported_gateway_keys() - IGNORED_GATEWAY_KEYS == set(), numeric

    assert bob.leave() == 200
    receiver.wait_for("ParticipantsUpdated", updated({alice.number, carol.number}), timeout=3,
                      call_connection_id=cid)

    # the last party leaves: the room ends (CallDisconnected); the next join creates it again,
    # under the same callConnectionId, and its events flow as before
    assert alice.leave() == 200 and carol.leave() == 200
    receiver.wait_for("CallDisconnected", lambda e: e in receiver.events(cid)[before:],
                      timeout=3, call_connection_id=cid)
    assert mcu.gateway.metric("acs_gateway_room_parties", **room) is None  # the room is gone
    again = len(receiver.events(cid))
    assert bob.join(EVROOM) == 200, describe(parties, mcu)
    receiver.wait_for(
        "ParticipantsUpdated",
        lambda e: e in receiver.events(cid)[again:] and phones_of(e) == {bob.number},
        timeout=3, call_connection_id=cid)


# --------------------------------------------------------------------------------------------
# 7. play to all, recording, terminate


@pytest.mark.filterwarnings(  # the brief's method; 1.6.0 prefers play_media (same request)
    "ignore:The method 'play_media_to_all' is deprecated:DeprecationWarning")
@pytest.mark.timeout(75)
def test_play_to_all_recording_and_terminate(mcu: Room, make_parties: PartyFactory) -> None:
    receiver = mcu.receiver
    cid = "conference-room1"
    parties = make_parties(mcu, {"alice": "PCMU", "carol": "PCMA", "dave": "opus"})
    join_all(mcu, parties)
    wait_participants(mcu, {p.number for p in parties.values()})
    client = mcu.client

    recording = client.start_recording(
        call_connection_id=cid, recording_state_callback_url=receiver.url("/recording"),
        recording_content_type="audio", recording_channel_type="mixed",
        recording_format_type="wav")
    rid = recording.recording_id
    assert rid, recording

    def state(value: str) -> Callable[[Event], bool]:
        return lambda e: (e.get("data") or {}).get("recordingId") == rid and (
            e.get("data") or {}).get("state") == value

    receiver.wait_for("RecordingStateChanged", state("active"), timeout=5)
    time.sleep(2.5)
    client.stop_recording(rid)
    receiver.wait_for("RecordingStateChanged", state("inactive"), timeout=5)
    wav = find_recording(mcu.recordings_dir, rid)
    rate, samples = read_wav(wav)
    levels = tone_levels(samples[round(0.3 * rate):], rate, TONES)
    for name in parties:
        assert levels[name] >= HEARD_DBFS - 6, f"recording {wav}: {format_levels(levels)}"
    for name in set(TONES) - set(parties):
        assert levels[name] <= ABSENT_DBFS, f"recording {wav}: {format_levels(levels)}"

    # the prompt, while everyone is silent: every party hears it
    for party in parties.values():
        party.set_mode("silence")
    prompt = write_tone_wav(mcu.media_dir / "prompt.wav", PROMPT_HZ, 1.5)
    time.sleep(0.3)
    since = time.monotonic()
    mcu.connection().play_media_to_all(FileSource(prompt.as_uri()), operation_context="prompt")
    done = receiver.wait_for(("PlayCompleted", "PlayFailed"),
                             lambda e: (e.get("data") or {}).get("operationContext") == "prompt",
                             timeout=8, call_connection_id=cid)
    assert type_matches(str(done["type"]), "PlayCompleted"), done
    time.sleep(0.3)
    until = time.monotonic()
    for party in parties.values():
        streams = party.media.streams(since, until)
        assert streams, f"{party.name} received nothing during the play"
        stream = max(streams.values(), key=lambda s: s.seconds)
        found = dominant_frequency(stream.samples, stream.rate, 0.0)
        share = tone_power_ratio(stream.samples, stream.rate, PROMPT_HZ, skip_seconds=0.0)
        assert abs(found - PROMPT_HZ) < 5 and share > 0.5, (
            f"{party.name}: dominant {found:.1f} Hz, {share:.0%} of the energy at {PROMPT_HZ:g}")

    mcu.connection().hang_up(is_for_everyone=True)
    for party in parties.values():
        assert party.ua.bye_received.wait(5), f"{party.name} got no BYE after terminate\n" + \
            describe(parties, mcu)
