"""Issue 5: the mixer of a REST-controlled call (gateway.media.bridge) on real UDP sockets.

A real ``MediaManager`` on the real reactor (driven here with ``reactor.iterate``, so no
thread runs it and nothing has to restart it) bridges three RTP test peers on 127.0.0.1:
alice and bob call in (``accept``), carol is called (``offer``/``answer``). Each peer sends
its own μ-law tone (440, 800, 1300 Hz) from its own thread, at a 20 ms pace; what each
receives is decoded by the peer's own G.711 tables (tests/interop/rtppeer.py) and measured by
FFT (tests/interop/audio.py): every leg hears the other two tones and not its own (N-1), a
muted leg's tone disappears, a 1 kHz ``play`` reaches only the leg it is addressed to, a held
leg contributes nothing and hears only its music on hold, ``send_dtmf`` puts RFC 4733
packets on the wire (RFC 4733 section 2.5.1: marker on the first, three end packets, one
timestamp per digit), a peer's RFC 4733 digit reaches ``on_dtmf`` once, and the recorded
WAVs hold the tones (mixed: all three; unmixed: one leg per channel).
"""

from __future__ import annotations

import itertools
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gateway.config import MediaConfig
from gateway.media.bridge import Bridge
from gateway.media.manager import MediaManager

from .audio import read_wav, rms_dbfs, tone_power_ratio
from .rtppeer import rtp_packet, sdp_offer, tone
from .test_media_dtmf import RecordingPeer, free_media_range, send_digits

RATE = 8000
TONES = {"alice": 440.0, "bob": 800.0, "carol": 1300.0}
pytestmark = pytest.mark.timeout(120)


def global_reactor() -> Any:
    """The process's reactor, imported (installed) only when a test runs, not when the
    module is collected."""
    from twisted.internet import reactor

    return reactor


def pump(seconds: float, until: Callable[[], bool] | None = None) -> None:
    """Run the reactor for ``seconds`` (or until ``until()``)."""
    reactor = global_reactor()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        reactor.iterate(0.002)
        if until is not None and until():
            return


def media_address(sdp: bytes) -> tuple[str, int]:
    text = sdp.decode()
    host = re.search(r"^c=IN IP4 (\S+)", text, re.M)
    port = re.search(r"^m=audio (\d+)", text, re.M)
    assert host and port, text
    return host.group(1), int(port.group(1))


def origin_version(sdp: bytes) -> int:
    found = re.search(r"^o=\S+ \S+ (\d+) ", sdp.decode(), re.M)
    assert found, sdp
    return int(found.group(1))


@dataclass
class Party:
    name: str
    peer: RecordingPeer
    gateway: tuple[str, int] = ("", 0)
    phase: int = 0

    def audio(self) -> np.ndarray:
        """The μ-law audio received so far, in arrival order, as floats in [-1, 1)."""
        return np.asarray(self.peer.audio(), dtype=np.float64) / 32768.0

    def clear(self) -> None:
        self.peer.packets.clear()
        self.peer.raw.clear()

    def send(self, seconds: float) -> threading.Thread:
        """Send this party's tone for ``seconds`` from a thread (sequence numbers and
        timestamps go on from the previous send)."""
        self.phase += 1
        seq, ts = 1000 * self.phase, 160_000 * self.phase

        def run() -> None:
            self.peer.send_tone(self.gateway, TONES[self.name], seconds, seq=seq, ts=ts)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread


@dataclass
class Env:
    manager: MediaManager
    bridge: Bridge
    parties: dict[str, Party]
    digits: list[tuple[str, str]] = field(default_factory=list)

    def talk(self, seconds: float, names: tuple[str, ...] = tuple(TONES)) -> None:
        """``names`` send their tones for ``seconds`` while the reactor runs."""
        threads = [self.parties[name].send(seconds) for name in names]
        pump(seconds + 0.3)
        for thread in threads:
            thread.join(5)


def ratios(samples: np.ndarray) -> dict[str, float]:
    """Each party's tone's share of the energy in ``samples`` (after 0.3 s of start-up)."""
    return {name: tone_power_ratio(samples, RATE, hz, skip_seconds=0.3)
            for name, hz in TONES.items()}


def assert_hears(env: Env, listener: str, heard: set[str]) -> None:
    got = ratios(env.parties[listener].audio())
    for name in TONES:
        if name in heard:
            assert got[name] > 0.8 / len(heard) - 0.15, f"{listener} should hear {name}: {got}"
        else:
            assert got[name] < 0.02, f"{listener} should not hear {name}: {got}"


@pytest.fixture
def env() -> Iterator[Env]:
    reactor = global_reactor()
    if reactor.running:
        pytest.fail("the reactor is run by something else in this process")
    first, last = free_media_range()
    manager = MediaManager(reactor, MediaConfig(port_range=(first, last)))
    digits: list[tuple[str, str]] = []
    bridge = Bridge(manager, "bridge-loopback", on_dtmf=lambda leg, d: digits.append((leg, d)))
    parties = {name: Party(name, RecordingPeer()) for name in TONES}
    try:
        for name in ("alice", "bob"):  # they call in
            peer = parties[name].peer
            answer = bridge.accept(name, sdp_offer(peer.port).encode(), ["PCMU", "PCMA"], "off")
            parties[name].gateway = media_address(answer)
        carol = parties["carol"]  # the gateway calls her
        offer = bridge.offer("carol", ["PCMU", "PCMA"], "off")
        assert b"telephone-event/8000" in offer
        carol.gateway = media_address(offer)
        bridge.answer("carol", sdp_offer(carol.peer.port).encode())
        yield Env(manager, bridge, parties, digits)
    finally:
        bridge.close()
        manager.stop()
        pump(0.05)
        for party in parties.values():
            party.peer.close()
    assert manager.pool.free == manager.pool.size, "ports left in use after close()"
    assert manager.sockets == {}


def test_three_legs_mix_mute_play_hold_dtmf_and_record(env: Env, tmp_path: Path) -> None:
    bridge, parties = env.bridge, env.parties
    assert bridge.legs() == ("alice", "bob", "carol")

    # --- N-1: everyone hears the other two tones, never their own; the mixed WAV has all
    mixed = tmp_path / "mixed.wav"
    bridge.record_start(mixed, unmixed=False)
    env.talk(2.0)
    bridge.record_stop()
    for name in TONES:
        assert_hears(env, name, set(TONES) - {name})
    rate, recorded = read_wav(mixed)
    assert rate == RATE and len(recorded) > 1.5 * RATE
    shares = ratios(recorded)
    assert all(share > 0.2 for share in shares.values()), shares

    # --- RTP continuity: one SSRC per leg, sequence numbers without a gap, 160 ticks each
    for party in parties.values():
        packets = [p for p in party.peer.packets if p.pt == 0]
        assert len({p.ssrc for p in packets}) == 1
        seqs = [p.seq for p in packets]
        assert all((b - a) % 65536 == 1 for a, b in itertools.pairwise(seqs)), "sequence gap"
        steps = {(b.ts - a.ts) % 2**32 for a, b in itertools.pairwise(packets)}
        assert steps == {160}, steps

    # --- mute: bob is no longer heard, still hears; the unmixed WAV has him silent
    for party in parties.values():
        party.clear()
    bridge.mute("bob", True)
    unmixed = tmp_path / "unmixed.wav"
    bridge.record_start(unmixed, unmixed=True)
    env.talk(1.5)
    bridge.record_stop()
    assert_hears(env, "alice", {"carol"})
    assert_hears(env, "carol", {"alice"})
    assert_hears(env, "bob", {"alice", "carol"})
    rate, channels = read_wav(unmixed, mono=False)
    assert channels.shape[1] == 5  # ACS unmixed: channels 0-4, legs in join order
    assert tone_power_ratio(channels[:, 0], RATE, TONES["alice"], skip_seconds=0.3) > 0.9
    assert rms_dbfs(channels[:, 1]) == float("-inf")  # bob, muted
    assert tone_power_ratio(channels[:, 2], RATE, TONES["carol"], skip_seconds=0.3) > 0.9
    bridge.mute("bob", False)

    # --- play: a 1 kHz prompt reaches alice only; done(True) once it has played
    for party in parties.values():
        party.clear()
    finished: list[bool] = []
    bridge.play(tone(1000.0, 1.0), to=["alice"], loop=False, done=finished.append)
    pump(1.4, until=lambda: bool(finished))
    pump(0.2)
    assert finished == [True]
    prompt = parties["alice"].audio()
    assert tone_power_ratio(prompt, RATE, 1000.0, skip_seconds=0.0) > 0.9
    for name in ("bob", "carol"):
        assert rms_dbfs(parties[name].audio()) == float("-inf"), f"{name} heard the prompt"

    # --- hold: bob contributes nothing and hears only his music on hold
    hold = bridge.reoffer("bob", "sendonly")
    assert b"a=sendonly" in hold
    resumed_from = origin_version(hold)
    bob = parties["bob"]
    bridge.answer("bob", sdp_offer(bob.peer.port).replace("a=sendrecv", "a=recvonly").encode())
    for party in parties.values():
        party.clear()
    stopped: list[bool] = []
    moh = bridge.play(tone(600.0, 0.5), to=["bob"], loop=True, done=stopped.append)
    env.talk(1.5)  # bob keeps sending anyway: it must not be heard
    assert_hears(env, "alice", {"carol"})
    assert_hears(env, "carol", {"alice"})
    assert tone_power_ratio(bob.audio(), RATE, 600.0, skip_seconds=0.3) > 0.95
    bridge.cancel_play(moh)
    assert stopped == [False]
    resume = bridge.reoffer("bob", "sendrecv")
    assert b"a=sendrecv" in resume and origin_version(resume) == resumed_from + 1
    bridge.answer("bob", sdp_offer(bob.peer.port).encode())

    # --- send_dtmf: RFC 4733 toward carol, on her stream (same SSRC, sequence goes on)
    carol = parties["carol"]
    carol.clear()
    sent: list[bool] = []
    bridge.send_dtmf("carol", "1#", sent.append)
    pump(1.0, until=lambda: bool(sent))
    pump(0.1)
    assert sent == [True]
    events = carol.peer.events(101)
    assert [e.code for e in events if e.marker] == [1, 11]
    for code in (1, 11):
        digit = [e for e in events if e.code == code]
        assert len({e.ts for e in digit}) == 1, "one timestamp per digit"
        assert digit[0].marker and digit[0].duration == 0 and not digit[0].end
        ends = [e for e in digit if e.end]
        assert len(ends) == 3 and {e.duration for e in ends} == {800}  # 100 ms at 8 kHz
    assert events[-1].ts - events[0].ts == 1200  # the second digit 150 ms after the first
    ssrcs = {p.ssrc for p in carol.peer.packets}
    assert len(ssrcs) == 1

    # --- on_dtmf: a digit alice sends is reported once, though its end comes three times
    alice = parties["alice"]
    thread = threading.Thread(
        target=send_digits, args=(alice.peer, alice.gateway, [("5", 120)]), daemon=True)
    thread.start()
    pump(1.0, until=lambda: not thread.is_alive())
    thread.join(5)
    pump(0.5)
    assert env.digits == [("alice", "5")]

    # --- garbage on a leg's port is a counted drop, never an error in the handler
    stream = next(st for st in env.manager.sockets if st.port == alice.gateway[1])
    malformed = stream.counters.malformed
    alice.peer.sock.sendto(b"\x80", alice.gateway)  # not RTP
    alice.peer.sock.sendto(rtp_packet(101, 9000, 1, alice.peer.ssrc, b"\x05"), alice.gateway)
    pump(0.2, until=lambda: stream.counters.malformed >= malformed + 2)
    assert stream.counters.malformed == malformed + 2
    assert env.manager.handler_errors == 0 and bridge.callback_errors == 0

    # --- remove: ports back, the CDR figures of the leg
    free = env.manager.pool.free
    figures = bridge.remove("alice")
    assert figures["codec"] == "PCMU"
    assert isinstance(figures["packets_in"], int) and figures["packets_in"] > 100
    assert isinstance(figures["packets_out"], int) and figures["packets_out"] > 100
    assert set(figures) == {"codec", "packets_in", "packets_out", "bytes_in", "bytes_out",
                            "lost", "jitter_ms", "rtt_ms", "mos", "srtp"}
    assert env.manager.pool.free == free + 1
    assert bridge.legs() == ("bob", "carol")
