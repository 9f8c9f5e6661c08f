"""The bridge of a REST-controlled call: the pure mixing core (gateway.media.mixer: N-1 mixes,
mute, hold, playback, clipping, recording layout), one leg's media path (``LegMedia``: RTP
out with continuous sequence numbers and timestamps, RFC 4733 digits out and in), and the
``Bridge`` itself driven by hand with an in-memory stand-in for MediaManager (SDP per leg,
BridgeError statuses, hold, callbacks, close). Time is an argument everywhere; the real
sockets and reactor are in tests/interop/test_bridge_loopback.py."""

from __future__ import annotations

import itertools
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from gateway.config import MediaConfig
from gateway.media.bridge import Bridge, BridgeError
from gateway.media.g711 import G711Codec
from gateway.media.legmedia import LegMedia
from gateway.media.mixer import FRAME, Mix, Mixer, Recording
from gateway.media.opus import OpusDecoder
from gateway.media.ports import PortsExhausted
from gateway.media.rtp import build, parse_header
from gateway.media.sdp import Codec, Crypto, Media, SessionDescription
from gateway.media.session import MediaSession
from gateway.media.srtp import SrtpContext
from gateway.media.stream import LegStream

PCMU = Codec(0, "PCMU", 8000)
EVENT = Codec(101, "telephone-event", 8000, 1, "0-16")


def const(value: int) -> np.ndarray:
    return np.full(FRAME, value, dtype=np.int16)


def values(mix: Mix) -> dict[str, int]:
    """Each leg's output, for frames that are constant (asserted)."""
    out = {}
    for leg, frame in mix.out.items():
        assert frame.dtype == np.int16 and len(frame) == FRAME
        assert np.all(frame == frame[0]), f"{leg}: not constant"
        out[leg] = int(frame[0])
    return out


def three(*legs: str) -> Mixer:
    """A mixer without the noise gate: these tests check the sums with tiny values (the gate
    has its own tests in test_room.py)."""
    mixer = Mixer(gate=None)
    for leg in legs or ("a", "b", "c"):
        mixer.add(leg)
    return mixer


# ======================================================================================
# Mixer: N-1, mute, hold, clipping
# ======================================================================================
def test_each_leg_hears_every_other_leg_and_not_itself() -> None:
    mix = three().mix({"a": const(1), "b": const(10), "c": const(100)})
    assert values(mix) == {"a": 110, "b": 101, "c": 11}
    assert np.all(mix.mixed == 111)
    assert set(mix.heard) == {"a", "b", "c"}
    assert mix.finished == ()


def test_a_leg_without_a_frame_this_tick_hears_the_others_and_adds_nothing() -> None:
    mix = three().mix({"a": const(1), "c": const(100)})
    assert values(mix) == {"a": 100, "b": 101, "c": 1}
    assert "b" not in mix.heard


def test_frames_of_legs_that_are_not_members_are_ignored() -> None:
    mix = three("a", "b").mix({"a": const(1), "x": const(1000)})
    assert values(mix) == {"a": 0, "b": 1}


def test_a_muted_leg_is_not_heard_but_still_hears() -> None:
    mixer = three()
    mixer.set_muted("b", True)
    mix = mixer.mix({"a": const(1), "b": const(10), "c": const(100)})
    assert values(mix) == {"a": 100, "b": 101, "c": 1}
    assert np.all(mix.mixed == 101)
    assert "b" not in mix.heard
    mixer.set_muted("b", False)
    assert values(mixer.mix({"b": const(10)})) == {"a": 10, "b": 0, "c": 10}


def test_a_held_leg_contributes_nothing_and_hears_only_its_playback() -> None:
    mixer = three()
    mixer.set_held("b", True)
    mixer.play(const(7), to=["b"], loop=False)
    mixer.play(const(1000), to=None, loop=False)  # to everyone: the held leg too
    mix = mixer.mix({"a": const(1), "b": const(10), "c": const(100)})
    assert values(mix) == {"a": 1100, "b": 1007, "c": 1001}
    assert mixer.held("b")


def test_sums_saturate_instead_of_wrapping() -> None:
    mix = three().mix({"a": const(30000), "b": const(30000), "c": const(-30000)})
    assert values(mix) == {"a": 0, "b": 0, "c": 32767}  # N-1 exact before the one clip
    assert np.all(mix.mixed == 30000)
    mix = three().mix({"a": const(-30000), "b": const(-30000), "c": const(0)})
    assert values(mix)["c"] == -32768


def test_n_minus_one_of_real_audio_is_the_exact_sum_of_the_others() -> None:
    rng = np.random.default_rng(5)
    frames = {leg: rng.integers(-8000, 8000, FRAME).astype(np.int16) for leg in "abcd"}
    mix = three(*"abcd").mix(frames)
    for leg in "abcd":
        expected = sum(frames[o].astype(np.int32) for o in "abcd" if o != leg)
        assert np.array_equal(mix.out[leg], expected)


# ======================================================================================
# Mixer: playback
# ======================================================================================
def test_playback_to_one_leg_is_heard_by_it_only_and_finishes_once() -> None:
    mixer = three()
    ramp = np.arange(1, 401, dtype=np.int16)  # 2.5 frames
    play_id = mixer.play(ramp, to=["a"], loop=False)
    assert play_id > 0 and mixer.playing() == (play_id,)
    first = mixer.mix({})
    assert np.array_equal(first.out["a"], ramp[:160])
    assert not first.out["b"].any() and not first.out["c"].any()
    assert np.array_equal(first.mixed, ramp[:160])  # the recording has the prompt
    assert mixer.mix({}).finished == ()
    last = mixer.mix({})
    assert np.array_equal(last.out["a"][:80], ramp[320:]) and not last.out["a"][80:].any()
    assert last.finished == (play_id,)
    after = mixer.mix({})
    assert after.finished == () and not after.out["a"].any() and mixer.playing() == ()


def test_playback_adds_to_what_the_leg_hears() -> None:
    mixer = three()
    mixer.play(const(5), to=["a", "c"], loop=False)
    mix = mixer.mix({"b": const(100)})
    assert values(mix) == {"a": 105, "b": 0, "c": 105}
    assert np.all(mix.mixed == 105)  # every playback once


def test_looped_playback_wraps_and_runs_until_cancelled() -> None:
    mixer = three("a")
    pcm = np.arange(100, dtype=np.int16)
    play_id = mixer.play(pcm, to=None, loop=True)
    frames = [mixer.mix({}) for _ in range(5)]
    assert all(f.finished == () for f in frames)
    heard = np.concatenate([f.out["a"] for f in frames])
    assert np.array_equal(heard, np.tile(pcm, 8))
    assert mixer.cancel(play_id) == [play_id]
    assert mixer.cancel(play_id) == []
    assert not mixer.mix({}).out["a"].any()


def test_cancel_all_and_ids_are_not_reused() -> None:
    mixer = three()
    ids = [mixer.play(const(1), to=None, loop=True) for _ in range(3)]
    assert sorted(mixer.cancel()) == ids
    assert mixer.play(const(1), to=None, loop=False) == ids[-1] + 1


def test_empty_playback_finishes_on_the_next_tick_even_looped() -> None:
    mixer = three()
    one = mixer.play(np.zeros(0, dtype=np.int16), to=None, loop=True)
    assert mixer.mix({}).finished == (one,)


def test_playback_must_be_mono() -> None:
    with pytest.raises(ValueError, match="mono"):
        three().play(np.zeros((160, 2), dtype=np.int16), to=None, loop=False)


def test_a_leg_that_left_no_longer_gets_a_frame() -> None:
    mixer = three()
    mixer.discard("b")
    assert "b" not in mixer
    assert set(mixer.mix({"b": const(9)}).out) == {"a", "c"}


# ======================================================================================
# Recording layout
# ======================================================================================
def test_mixed_recording_is_the_mono_mix_little_endian() -> None:
    mix = three().mix({"a": const(1), "b": const(-2)})
    data = Recording(unmixed=False, channels=5).frame(mix)
    assert len(data) == FRAME * 2
    assert struct.unpack_from("<2h", data) == (-1, -1)


def test_unmixed_recording_gives_each_leg_its_channel_in_join_order() -> None:
    layout = Recording(unmixed=True, channels=2)
    for leg in ("b", "a", "c"):  # c finds every channel taken
        layout.join(leg)
    assert layout.slots == {"b": 0, "a": 1}
    mixer = three()
    mixer.set_muted("a", True)
    data = layout.frame(mixer.mix({"a": const(1), "b": const(2), "c": const(3)}))
    samples = np.frombuffer(data, dtype="<i2").reshape(FRAME, 2)
    assert np.all(samples[:, 0] == 2) and np.all(samples[:, 1] == 0)  # a is muted


# ======================================================================================
# LegMedia: one leg's RTP out and in
# ======================================================================================
@dataclass
class Wire:
    sent: list[bytes] = field(default_factory=list)

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append(data)

    def headers(self) -> list[tuple[int, int, int, int, bool, int]]:
        return [parse_header(p) for p in self.sent]


def leg_media(codec: Codec = PCMU, event: Codec | None = EVENT
              ) -> tuple[LegMedia, Wire, list[str]]:
    wire = Wire()
    stream = LegStream(30000, wire.send, wire.send)
    stream.remote = ("198.51.100.7", 4000)
    kinds = bytearray(128)
    kinds[codec.pt] = 1
    if event is not None:
        kinds[event.pt] = 2
    stream.pt_kind = kinds
    digits: list[str] = []
    media = LegMedia(stream, digits.append)
    media.use(codec, event, MediaConfig())
    return media, wire, digits


def test_audio_out_keeps_one_ssrc_and_continuous_sequence_and_timestamps() -> None:
    media, wire, _ = leg_media()
    for i in range(3):
        media.send(const(0), 10.0 + i * 0.02)
    media.stream.receives = False  # the peer went recvonly/inactive: nothing sent
    media.send(const(0), 10.06)
    media.stream.receives = True
    media.send(const(0), 10.08)
    heads = wire.headers()
    assert [h[0] for h in heads] == [0] * 4
    assert len({h[3] for h in heads}) == 1 and heads[0][3] == media.ssrc
    seqs = [h[1] for h in heads]
    assert all((b - a) % 65536 == 1 for a, b in itertools.pairwise(seqs))
    ts = [h[2] for h in heads]
    assert [(b - a) % 2**32 for a, b in itertools.pairwise(ts)] == [160, 160, 320]  # the gap shows
    assert [h[4] for h in heads] == [True, False, False, True]  # marker: a new talk spurt
    assert media.stream.sender.packets == 4


def test_send_dtmf_packets_follow_rfc_4733() -> None:
    media, wire, _ = leg_media()
    finished: list[bool] = []
    media.queue_dtmf("1#", EVENT, finished.append)
    done = None
    t = 20.0
    for _ in range(20):
        done = media.send(const(0), t) or done
        t += 0.02
    assert done is not None
    done(True)
    heads = wire.headers()
    events = [(h, wire.sent[i][h[5]:]) for i, h in enumerate(heads) if h[0] == 101]
    fields = [(p[0], bool(p[1] & 0x80), struct.unpack("!H", p[2:4])[0], h[4], h[2])
              for h, p in events]
    first_ts = fields[0][4]
    one = [f for f in fields if f[0] == 1]
    pound = [f for f in fields if f[0] == 11]
    assert [f[2] for f in one] == [0, 160, 320, 480, 640, 800, 800, 800]
    assert [f[1] for f in one] == [False] * 5 + [True] * 3
    assert [f[3] for f in one] == [True] + [False] * 7  # marker on the first only
    assert {f[4] for f in one} == {first_ts} and {f[4] for f in pound} == {first_ts + 1200}
    assert len(pound) == 8
    seqs = [h[1] for h in heads]
    assert all((b - a) % 65536 == 1 for a, b in itertools.pairwise(seqs))  # one sequence space
    # no audio while a tone is on: between a digit's start and its first end packet
    kinds = ["E" if h[0] == 101 else "A" for h in heads]
    start = kinds.index("E")
    assert "A" not in kinds[start:start + 6]
    assert finished == [True] and not media.dtmf


def test_digits_are_queued_and_dropped_digits_are_returned() -> None:
    media, _, _ = leg_media()
    calls: list[Callable[[bool], None]] = [lambda ok: None, lambda ok: None]
    media.queue_dtmf("1", EVENT, calls[0])
    media.queue_dtmf("2", EVENT, calls[1])
    assert media.drop_dtmf() == calls
    with pytest.raises(ValueError):
        media.queue_dtmf("1x", EVENT, calls[0])
    with pytest.raises(ValueError):
        media.queue_dtmf("", EVENT, calls[0])


def event_packet(seq: int, ts: int, code: int, end: bool, duration: int,
                 marker: bool = False) -> bytes:
    payload = struct.pack("!BBH", code, (0x80 if end else 0) | 10, duration)
    return build(101, seq, ts, 0xABC, marker, payload)


def test_a_received_digit_is_reported_once_despite_three_end_packets() -> None:
    media, _, digits = leg_media()
    addr = ("198.51.100.7", 4000)
    packets = [event_packet(1, 8000, 5, False, 0, marker=True),
               event_packet(2, 8000, 5, False, 400)]
    packets += [event_packet(3 + i, 8000, 5, True, 800) for i in range(3)]
    for i, packet in enumerate(packets):
        media.stream.on_rtp(packet, addr, 1.0 + i * 0.02)
    assert digits == ["5"]
    media.stream.on_rtp(build(101, 9, 9000, 0xABC, True, b"\x05"), addr, 2.0)  # truncated
    assert media.stream.counters.malformed == 1
    media.poll_digits(3.0)
    assert digits == ["5"]


def test_a_digit_whose_end_is_lost_is_reported_by_poll() -> None:
    media, _, digits = leg_media()
    media.stream.on_rtp(event_packet(1, 8000, 9, False, 0, True), ("198.51.100.7", 4000), 1.0)
    media.poll_digits(1.1)
    assert digits == []
    media.poll_digits(2.0)
    assert digits == ["9"]


def test_received_pcmu_is_decoded_through_the_jitter_buffer() -> None:
    media, _, _ = leg_media()
    codec = G711Codec("PCMU")
    pcm = (8000 * np.sin(2 * np.pi * 440 * np.arange(1600) / 8000)).astype(np.int16)
    addr = ("198.51.100.7", 4000)
    out = []
    for i in range(10):
        payload = codec.encode(pcm[i * FRAME:(i + 1) * FRAME])
        now = 5.0 + i * 0.02
        media.stream.on_rtp(build(0, 100 + i, 1000 + i * FRAME, 0x55, i == 0, payload),
                            addr, now)
        frame = media.pull(now)
        if frame is not None:
            out.append(frame)
    assert len(out) >= 8
    heard = np.concatenate(out)
    assert np.array_equal(heard, codec.decode(codec.encode(pcm[:len(heard)])))


def test_an_opus_leg_is_sent_opus_at_48_khz_timestamps() -> None:
    opus = Codec(111, "opus", 48000, 2, "useinbandfec=1")
    media, wire, _ = leg_media(opus, Codec(110, "telephone-event", 48000))
    pcm = (8000 * np.sin(2 * np.pi * 440 * np.arange(8000) / 8000)).astype(np.int16)
    for i in range(50):
        media.send(pcm[i * FRAME:(i + 1) * FRAME], 1.0 + i * 0.02)
    heads = wire.headers()
    assert {h[0] for h in heads} == {111}
    assert {(b[2] - a[2]) % 2**32 for a, b in itertools.pairwise(heads)} == {960}
    decoder = OpusDecoder(8000)
    heard = np.concatenate([decoder.decode(p[h[5]:]) for h, p in zip(heads, wire.sent)])
    spectrum = np.abs(np.fft.rfft(heard[2000:].astype(np.float64)))
    peak = np.argmax(spectrum) * 8000 / len(heard[2000:])
    assert abs(peak - 440) < 10


# ======================================================================================
# Bridge with an in-memory MediaManager
# ======================================================================================
class FakeManager:
    """What Bridge needs of MediaManager, with every datagram captured per port."""

    def __init__(self, config: MediaConfig | None = None, ports: int = 10) -> None:
        self.address = "192.0.2.1"
        self.config = config or MediaConfig()
        self.t = 1000.0
        self._next = 30000
        self._left = ports
        self.streams: dict[int, LegStream] = {}
        self.out: dict[int, Wire] = {}
        self.closed: list[int] = []
        self.tickers: list[object] = []
        self.bridges: set[object] = set()

    def now(self) -> float:
        return self.t

    def open_stream(self, owner: object = None) -> LegStream:
        if self._left == 0:
            raise PortsExhausted("test: no ports")
        self._left -= 1
        port, self._next = self._next, self._next + 2
        wire = self.out[port] = Wire()
        stream = self.streams[port] = LegStream(port, wire.send, wire.send)
        return stream

    def close_stream(self, stream: LegStream) -> None:
        self.closed.append(stream.port)
        self._left += 1

    def add_transcoder(self, ticker: object) -> None:
        self.tickers.append(ticker)

    def remove_transcoder(self, ticker: object) -> None:
        self.tickers.remove(ticker)


def peer_sdp(port: int, fmts: str = "0 101", *attrs: str, proto: str = "RTP/AVP",
             version: int = 1) -> bytes:
    lines = ["v=0", f"o=- 42 {version} IN IP4 198.51.100.7", "s=-", "c=IN IP4 198.51.100.7",
             "t=0 0", f"m=audio {port} {proto} {fmts}", "a=rtpmap:0 PCMU/8000",
             "a=rtpmap:8 PCMA/8000", "a=rtpmap:101 telephone-event/8000", *attrs]
    return ("\r\n".join(lines) + "\r\n").encode()


def new_bridge(config: MediaConfig | None = None
               ) -> tuple[FakeManager, Bridge, list[tuple[str, str]]]:
    manager = FakeManager(config)
    digits: list[tuple[str, str]] = []
    bridge = Bridge(manager, "call-9",  # type: ignore[arg-type]
                    on_dtmf=lambda leg, digit: digits.append((leg, digit)))
    return manager, bridge, digits


def media_of(body: bytes) -> tuple[SessionDescription, Media]:
    desc = SessionDescription.parse(body)
    return desc, desc.media[0]


def test_offer_lists_the_codecs_in_order_then_telephone_event() -> None:
    manager, bridge, _ = new_bridge()
    assert bridge in manager.bridges and bridge in manager.tickers
    desc, m = media_of(bridge.offer("carol", ["PCMA", "PCMU"], "off"))
    assert m.port == 30000 and desc.connection == "192.0.2.1"
    assert [c.name for c in m.codecs] == ["PCMA", "PCMU", "telephone-event"]
    assert m.crypto == () and m.proto == "RTP/AVP"
    assert bridge.legs() == ("carol",)


@pytest.mark.parametrize(("mode", "proto"), [("optional", "RTP/AVP"), ("mandatory", "RTP/SAVP")])
def test_offer_carries_sdes_keys_per_srtp_mode(mode: str, proto: str) -> None:
    _, bridge, _ = new_bridge()
    _, m = media_of(bridge.offer("carol", ["PCMU"], mode))
    assert m.proto == proto
    assert [c.suite for c in m.crypto] == [
        "AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32"]


def test_an_unusable_offer_or_no_ports_is_a_bridge_error_holding_no_port() -> None:
    manager, bridge, _ = new_bridge()
    with pytest.raises(BridgeError) as refused:
        bridge.offer("x", ["G722"], "off")  # relay-only: the mixer cannot decode it
    assert refused.value.status == 488
    with pytest.raises(BridgeError) as refused:
        bridge.accept("y", peer_sdp(4000, "9", "a=rtpmap:9 G722/8000"), ["PCMU"], "off")
    assert refused.value.status == 488
    with pytest.raises(BridgeError) as refused:
        bridge.accept("z", peer_sdp(4000, "0", proto="RTP/SAVP"), ["PCMU"], "optional")
    assert refused.value.status == 488  # RTP/SAVP without a=crypto
    assert bridge.legs() == () and manager.streams == {}
    manager._left = 0
    with pytest.raises(BridgeError) as refused:
        bridge.offer("x", ["PCMU"], "off")
    assert refused.value.status == 503 and bridge.legs() == ()


def test_accept_answers_with_the_peer_numbers_and_latches_nothing_yet() -> None:
    manager, bridge, _ = new_bridge()
    offer = peer_sdp(4000, "8 0 101", "a=rtpmap:8 PCMA/8000")
    _, m = media_of(bridge.accept("alice", offer, ["PCMU", "PCMA"], "off"))
    assert [c.name for c in m.codecs] == ["PCMA", "telephone-event"]
    stream = manager.streams[30000]
    assert stream.remote == ("198.51.100.7", 4000) and stream.learning


def test_answer_to_an_offer_sets_the_leg_up_and_a_bad_one_is_488() -> None:
    manager, bridge, _ = new_bridge()
    bridge.offer("carol", ["PCMU"], "off")
    with pytest.raises(BridgeError) as refused:
        bridge.answer("carol", peer_sdp(4000, "8", "a=rtpmap:8 PCMA/8000"))
    assert refused.value.status == 488
    bridge.answer("carol", peer_sdp(4000))
    bridge.tick(manager.now())
    sent = manager.out[30000].sent
    assert len(sent) == 1 and parse_header(sent[0])[0] == 0  # silence, in PCMU
    with pytest.raises(KeyError):
        bridge.answer("nobody", peer_sdp(4000))


def test_hold_and_resume_bump_the_origin_version_and_mute_the_leg_both_ways() -> None:
    _, bridge, _ = new_bridge()
    bridge.accept("alice", peer_sdp(4000), ["PCMU"], "off")
    first = SessionDescription.parse(bridge.accept("bob", peer_sdp(5000), ["PCMU"], "off"))
    held = SessionDescription.parse(bridge.reoffer("bob", "sendonly"))
    assert held.origin.version == first.origin.version + 1
    assert held.media[0].direction == "sendonly"
    assert [c.name for c in held.media[0].codecs] == ["PCMU", "telephone-event"]
    same = SessionDescription.parse(bridge.reoffer("bob", "sendonly"))
    assert same.origin.version == held.origin.version  # nothing changed (RFC 3264 8)
    bridge.answer("bob", peer_sdp(5000, "0 101", "a=recvonly", version=2))
    assert bridge.mixer.held("bob")
    resumed = SessionDescription.parse(bridge.reoffer("bob", "sendrecv"))
    assert resumed.origin.version == held.origin.version + 1
    assert not bridge.mixer.held("bob")
    with pytest.raises(ValueError):
        bridge.reoffer("bob", "sideways")


def test_a_peer_reinvite_to_hold_is_answered_recvonly_on_the_same_port() -> None:
    _, bridge, _ = new_bridge()
    first = media_of(bridge.accept("alice", peer_sdp(4000), ["PCMU"], "off"))[1]
    again = media_of(bridge.accept("alice", peer_sdp(4000, "0 101", "a=sendonly", version=2),
                                   ["PCMU"], "off"))[1]
    assert again.port == first.port
    assert again.direction == "recvonly"
    assert bridge.legs() == ("alice",)


def test_remove_frees_the_ports_and_gives_the_figures_media_session_gives() -> None:
    manager, bridge, _ = new_bridge()
    bridge.accept("alice", peer_sdp(4000), ["PCMU"], "off")
    figures = bridge.remove("alice")
    assert manager.closed == [30000] and bridge.legs() == ()
    session = MediaSession(manager, "c")  # type: ignore[arg-type]
    session.offer("a", peer_sdp(4000))
    assert set(figures) == set(session.quality("a"))
    assert figures["codec"] == "PCMU" and figures["srtp"] is None
    assert bridge.remove("alice") == {}


def test_plays_and_digits_end_with_done_and_a_failing_callback_is_contained() -> None:
    manager, bridge, _ = new_bridge()
    bridge.accept("alice", peer_sdp(4000), ["PCMU"], "off")
    bridge.accept("bob", peer_sdp(5000, "0"), ["PCMU"], "off")  # no telephone-event
    results: list[tuple[str, bool]] = []

    def boom(ok: bool) -> None:
        raise RuntimeError("the owner's bug")

    bridge.play(const(1), to=["alice"], loop=False, done=boom)
    bridge.play(const(1), to=None, loop=False, done=lambda ok: results.append(("play", ok)))
    bridge.send_dtmf("bob", "1", lambda ok: results.append(("bob", ok)))
    assert results == [("bob", False)]
    bridge.tick(manager.now())
    assert results == [("bob", False), ("play", True)] and bridge.callback_errors == 1
    with pytest.raises(KeyError):
        bridge.play(const(1), to=["nobody"], loop=False, done=boom)
    looped = bridge.play(const(1), to=["bob"], loop=True, done=lambda ok: results.append(
        ("moh", ok)))
    bridge.send_dtmf("alice", "123", lambda ok: results.append(("alice", ok)))
    bridge.remove("bob")  # the playback addressed only to bob ends with him
    assert results[-1] == ("moh", False) and looped not in bridge.mixer.playing()
    bridge.close()
    assert results[-1] == ("alice", False)
    assert manager.tickers == [] and manager.bridges == set()
    assert sorted(manager.closed) == [30000, 30002]
    bridge.close()  # idempotent


def test_received_digits_reach_on_dtmf_with_the_leg() -> None:
    manager, bridge, digits = new_bridge()
    bridge.accept("alice", peer_sdp(4000), ["PCMU"], "off")
    stream = manager.streams[30000]
    for i, packet in enumerate([event_packet(1, 100, 11, False, 0, True),
                                *[event_packet(2 + i, 100, 11, True, 800) for i in range(3)]]):
        stream.on_rtp(packet, ("198.51.100.7", 4000), 1.0 + i * 0.02)
    assert digits == [("alice", "#")]


def test_media_timeout_is_reported_once_per_silent_leg() -> None:
    manager, _, _ = new_bridge(MediaConfig(timeout=2.0))
    timeouts: list[tuple[str, str]] = []
    bridge = Bridge(manager, "call-t", on_dtmf=lambda leg, d: None,  # type: ignore[arg-type]
                    on_timeout=lambda leg, why: timeouts.append((leg, why)))
    bridge.accept("alice", peer_sdp(4000), ["PCMU"], "off")
    for i in range(1, 301):
        bridge.tick(manager.t + i * 0.02)
    assert timeouts == [("alice", "media timeout")]


def test_recording_writes_a_wav_and_pauses(tmp_path: Path) -> None:
    import wave

    manager, bridge, _ = new_bridge()
    bridge.accept("alice", peer_sdp(4000), ["PCMU"], "off")
    bridge.play(const(1000), to=None, loop=True, done=lambda ok: None)
    path = tmp_path / "r.wav"
    bridge.record_start(path, unmixed=False)
    with pytest.raises(ValueError):
        bridge.record_start(path, unmixed=True)
    for i in range(10):
        bridge.tick(manager.t + i * 0.02)
    bridge.record_pause()
    for i in range(10, 20):
        bridge.tick(manager.t + i * 0.02)
    bridge.record_resume()
    bridge.tick(manager.t + 0.4)
    bridge.record_stop()
    with wave.open(str(path), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 8000)
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    assert len(samples) == 11 * FRAME and np.all(samples == 1000)


def test_every_leg_gets_rtcp_reports_at_the_configured_interval() -> None:
    manager, bridge, _ = new_bridge(MediaConfig(rtcp_interval=1))
    bridge.accept("alice", peer_sdp(4000), ["PCMU"], "off")
    bridge.accept("bob", peer_sdp(5000, "0 101", "a=rtcp-mux"), ["PCMU"], "off")
    for i in range(1, 151):  # 3 s
        bridge.tick(manager.t + i * 0.02)
    for port in (30000, 30002):
        reports = [d for d in manager.out[port].sent if d[1] == 200]  # SR: we have sent
        assert 2 <= len(reports) <= 4, (port, len(reports))
        rtp_ssrcs = {parse_header(d)[3] for d in manager.out[port].sent if d[1] & 0x7F == 0}
        assert {struct.unpack_from("!I", r, 4)[0] for r in reports} == rtp_ssrcs


def test_an_sdes_offer_is_answered_with_a_key_and_srtp_flows_in() -> None:
    manager, bridge, _ = new_bridge()
    theirs = Crypto.make(1, "AES_CM_128_HMAC_SHA1_80", bytes(range(30)))
    offer = peer_sdp(4000, "0 101", f"a=crypto:{theirs}", proto="RTP/SAVP")
    _, m = media_of(bridge.accept("alice", offer, ["PCMU"], "optional"))
    assert m.proto == "RTP/SAVP" and [(c.tag, c.suite) for c in m.crypto] == [
        (1, "AES_CM_128_HMAC_SHA1_80")]
    protect = SrtpContext("AES_CM_128_HMAC_SHA1_80", bytes(range(30)), inbound=False)
    stream = manager.streams[30000]
    stream.on_rtp(protect.protect(build(0, 7, 160, 0x99, True, b"\xff" * 160)),
                  ("198.51.100.7", 4000), manager.t)
    assert stream.counters.packets_in == 1 and stream.counters.srtp_auth == 0
    assert bridge.remove("alice")["srtp"] == "AES_CM_128_HMAC_SHA1_80"


def test_an_empty_play_to_means_everyone() -> None:
    _, bridge, _ = new_bridge()
    bridge.accept("alice", peer_sdp(4000), ["PCMU"], "off")
    play_id = bridge.play(const(3), to=[], loop=True, done=lambda ok: None)
    assert bridge.mixer.targets(play_id) is None
