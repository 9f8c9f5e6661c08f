"""Issue 6: rooms. The mixer's speaker selection, gains, shared mixes and rates
(gateway.media.mixer), a room's rate following its parties' codecs and SFU forwarding on
the Bridge with an in-memory manager (gateway.media.bridge, gateway.media.sfuroom), and the
[conferences.NAME] configuration."""

from __future__ import annotations

import numpy as np
import pytest
from test_bridge import FakeManager, peer_sdp

from gateway.config import ConfigError, parse_config
from gateway.media.bridge import Bridge
from gateway.media.mixer import Mixer, Recording
from gateway.media.rtp import build, parse_header


def const(value: int, n: int = 160) -> np.ndarray:
    return np.full(n, value, dtype=np.int16)


def level(pcm: np.ndarray) -> int:
    return int(pcm[0])


# --------------------------------------------------------------------------- the mixer
def test_a_16_khz_room_mixes_n_minus_one_in_320_sample_frames() -> None:
    mixer = Mixer(16000, gate=None)
    for leg in "abc":
        mixer.add(leg)
    mix = mixer.mix({"a": const(1, 320), "b": const(10, 320), "c": const(100, 320)})
    assert {leg: (len(pcm), level(pcm)) for leg, pcm in mix.out.items()} == {
        "a": (320, 110), "b": (320, 101), "c": (320, 11)}


def test_large_rooms_mix_only_the_loudest_and_listeners_share_one_array() -> None:
    mixer = Mixer(8000, max_mixed=3)
    legs = [f"p{i}" for i in range(8)]
    for leg in legs:
        mixer.add(leg)
    loud = {"p1": 3000, "p4": 2000, "p6": 1000}
    frames = {leg: const(loud.get(leg, 5)) for leg in legs}
    for _ in range(50):
        mix = mixer.mix(frames)
    assert mixer.speakers.selected == frozenset(loud)
    # a listener hears the three loudest, not the quiet ones; a speaker hears the other two
    assert level(mix.out["p0"]) == 6000
    assert level(mix.out["p1"]) == 3000
    listeners = [leg for leg in legs if leg not in loud]
    assert all(mix.out[leg] is mix.common for leg in listeners)
    assert all(mix.out[leg] is not mix.common for leg in loud)


def test_gain_scales_a_contribution_and_mute_removes_it() -> None:
    mixer = Mixer(gate=None)
    for leg in "abc":
        mixer.add(leg)
    mixer.set_gain("a", 0.5)
    mix = mixer.mix({"a": const(1000), "b": const(10), "c": const(0)})
    assert level(mix.out["c"]) == 510
    mixer.set_muted("a", True)
    assert level(mixer.mix({"a": const(1000), "b": const(10)}).out["c"]) == 10
    with pytest.raises(ValueError):
        mixer.set_gain("a", -1)


def test_silent_parties_are_gated_and_share_the_common_mix() -> None:
    """A party under the gate (here -70 dBov, as idle line noise) adds nothing and hears
    the common mix; speech onset passes at once (the frame's own level counts), and a party
    that stops talking keeps being mixed while its smoothed level decays (hangover)."""
    mixer = Mixer(8000, max_mixed=8)
    for leg in "abcd":
        mixer.add(leg)
    quiet, loud = const(10), const(3000)
    mix = mixer.mix({"a": loud, "b": quiet, "c": quiet, "d": quiet})
    assert level(mix.out["b"]) == 3000 and mix.out["b"] is mix.common
    assert mix.out["c"] is mix.common and mix.out["d"] is mix.common
    assert level(mix.out["a"]) == 0  # the quiet ones are not summed
    assert set(mix.heard) == {"a"}
    for _ in range(25):  # a talks for half a second
        mixer.mix({"a": loud, "b": quiet, "c": quiet, "d": quiet})
    for _ in range(5):
        mix = mixer.mix({"a": quiet, "b": loud, "c": quiet, "d": quiet})
    assert level(mix.out["c"]) == 3010  # a is in its hangover: still mixed
    for _ in range(200):
        mix = mixer.mix({"a": quiet, "b": loud, "c": quiet, "d": quiet})
    assert mix.out["a"] is mix.common and level(mix.common) == 3000


def test_a_playback_keeps_its_duration_across_a_rate_change() -> None:
    mixer = Mixer(8000)
    mixer.add("a")
    mixer.play(const(1000, 800), to=None, loop=False)  # 100 ms at 8 kHz: 5 ticks
    ticks = 0
    finished: tuple[int, ...] = ()
    while not finished and ticks < 20:
        if ticks == 2:
            mixer.set_rate(48000)
        mix = mixer.mix({})
        finished = mix.finished
        ticks += 1
        assert len(mix.out["a"]) == mixer.frame
    assert ticks == 5
    assert len(mix.out["a"]) == 960


def test_the_dominant_speaker_changes_once_after_a_sustained_lead() -> None:
    mixer = Mixer(8000)
    for leg in "abc":
        mixer.add(leg)
    changes = []
    for tick in range(120):
        a, b = (8000, 500) if tick < 40 else (500, 8000)
        mix = mixer.mix({"a": const(a), "b": const(b), "c": const(0)})
        if mix.dominant_changed:
            changes.append((tick, mixer.speakers.dominant))
    assert [who for _, who in changes] == ["a", "b"]
    assert changes[1][0] >= 40 + 14  # 300 ms of lead before the change


def test_a_recording_keeps_its_rate_when_the_room_changes_rate() -> None:
    mixer = Mixer(8000)
    mixer.add("a")
    layout = Recording(unmixed=False, rate=8000)
    mixer.set_rate(16000)
    mix = mixer.mix({"a": const(100, 320)})
    assert len(layout.frame(mix, 16000)) == 160 * 2


# --------------------------------------------------------------------------- the bridge
OPUS_SDP = ("m=audio {port} RTP/AVP 111 0", "a=rtpmap:111 opus/48000/2")


def opus_sdp(port: int, *attrs: str) -> bytes:
    lines = ["v=0", "o=- 42 1 IN IP4 198.51.100.7", "s=-", "c=IN IP4 198.51.100.7", "t=0 0",
             f"m=audio {port} RTP/AVP 111", "a=rtpmap:111 opus/48000/2", *attrs]
    return ("\r\n".join(lines) + "\r\n").encode()


def bridge(mode: str = "mcu") -> tuple[FakeManager, Bridge]:
    manager = FakeManager()
    room = Bridge(manager, "room-1", on_dtmf=lambda leg, d: None,  # type: ignore[arg-type]
                  mode=mode)
    return manager, room


def test_the_room_rate_follows_the_codecs() -> None:
    _, room = bridge()
    room.accept("a", peer_sdp(4000), ["PCMU", "opus"], "off")
    assert room.rate == 8000
    room.accept("b", opus_sdp(4002), ["PCMU", "opus"], "off")
    assert room.rate == 16000
    room.remove("a")
    assert room.rate == 48000
    room.close()


def test_sfu_forwards_opus_undecoded_on_a_slot_ssrc_with_the_receivers_pt() -> None:
    manager, room = bridge("sfu")
    level_ext = "a=extmap:3 urn:ietf:params:rtp-hdrext:ssrc-audio-level"
    answer_a = room.accept("a", opus_sdp(4000, level_ext), ["opus"], "off")
    assert b"a=extmap:3 urn:ietf:params:rtp-hdrext:ssrc-audio-level" in answer_a
    room.accept("b", opus_sdp(4002).replace(b"111", b"96"), ["opus"], "off")
    room.accept("c", opus_sdp(4004), ["opus"], "off")
    ports = {name: port for name, port in zip("abc", sorted(manager.streams), strict=True)}
    room.tick(manager.now())  # selection: three parties, all forwarded
    payload = b"\x78" + bytes(40)  # an Opus 20 ms frame (TOC 0x78: CELT FB 20 ms)
    # one-byte extension: id 3, level 30 (-30 dBov), voice flag
    ext = bytes([0xBE, 0xDE, 0, 1, 0x30, 0x80 | 30, 0, 0])
    packet = bytearray(build(111, 500, 96000, 0xA1A1A1A1, False, payload))
    packet[0] |= 0x10
    packet = packet[:12] + ext + packet[12:]
    stream_a = manager.streams[ports["a"]]
    stream_a.on_rtp(bytes(packet), ("198.51.100.7", 4000), manager.now())
    for name, pt in (("b", 96), ("c", 111)):
        sent = manager.out[ports[name]].sent
        assert len(sent) == 1, name
        got_pt, _, _, ssrc, _, offset = parse_header(sent[0])
        assert got_pt == pt and ssrc != 0xA1A1A1A1
        assert sent[0][offset:] == payload  # untouched, no extension
    assert manager.out[ports["a"]].sent == []  # never its own stream
    room.close()


# --------------------------------------------------------------------------- config
def test_conference_tables_are_read_and_checked() -> None:
    config = parse_config({"conferences": {"room1": {"pin": "4321", "mode": "sfu"}}}, "t.toml")
    assert config.conference("room1").pin == "4321"
    assert config.conference("room1").mode == "sfu"
    assert config.conference("other").pin == "" and config.conference("other").mode is None
    with pytest.raises(ConfigError) as err:
        parse_config({"conferences": {"room1": {"pin": "12a", "mode": "x", "colour": 1},
                                      "bad name": {}}}, "t.toml")
    text = str(err.value)
    for key in ("conferences.room1.pin", "conferences.room1.mode", "conferences.room1.colour",
                "bad name"):
        assert key in text, key
