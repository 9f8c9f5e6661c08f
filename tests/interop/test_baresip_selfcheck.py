"""The baresip harness against itself, without the gateway: two softphones on loopback, A
calls B directly, each sends its own tone (A 440 Hz, B 1000 Hz) and records what it receives;
each recording must hold the *other* side's tone, cleanly. Run for PCMU, opus and SDES-SRTP
(``mediaenc=srtp-mand``), so that a failure in a gateway test is never a harness failure.

The negative cases prove the checks can fail: the tone analysis rejects the wrong frequency,
noise and silence, and mandatory SRTP really refuses a plain offer.

baresip is required, not optional: ``make deps`` installs baresip-core, so a missing binary
fails these tests (it does not skip them).
"""

from __future__ import annotations

import time
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from .audio import (
    analyse_tone,
    assert_tone,
    dominant_frequency,
    read_wav,
    tone_power_ratio,
)
from .baresip import (
    Baresip,
    BaresipError,
    BaresipFleet,
    SrtpMode,
    parse_netstrings,
    split_sip_trace,
)

TONE_A = 440
TONE_B = 1000
CALL_SECONDS = 3.0


@dataclass(frozen=True)
class Case:
    codecs: tuple[str, ...]
    srtp: SrtpMode | None
    #: what the offer's m= line must say, and an rtpmap it must carry
    proto: str
    rtpmap: str
    rate: int


CASES = {
    "pcmu": Case(("PCMU",), None, "RTP/AVP", "a=rtpmap:0 PCMU/8000", 8000),
    "opus": Case(("opus",), None, "RTP/AVP", "opus/48000/2", 48000),
    "srtp-pcmu": Case(("PCMU",), "srtp-mand", "RTP/SAVP", "a=rtpmap:0 PCMU/8000", 8000),
}


def _call(a: Baresip, b: Baresip, seconds: float = CALL_SECONDS) -> None:
    a.dial(b.uri)
    a.wait_established(5.0)
    b.wait_established(5.0)
    a.wait_rtp(5.0)
    b.wait_rtp(5.0)
    time.sleep(seconds)
    a.hangup()
    a.wait_closed(5.0)
    b.wait_closed(5.0)


@pytest.mark.parametrize("case_id", list(CASES))
def test_direct_call_carries_both_tones(case_id: str, baresips: BaresipFleet) -> None:
    case = CASES[case_id]
    a = baresips.start("alice", codecs=case.codecs, srtp=case.srtp, tone_hz=TONE_A)
    b = baresips.start("bob", codecs=case.codecs, srtp=case.srtp, tone_hz=TONE_B, auto_answer=True)
    _call(a, b)

    offer = a.sent_invite_sdp()
    assert offer is not None, f"no INVITE in alice's SIP trace\n{a.describe()}"
    m_line = next((line for line in offer.splitlines() if line.startswith("m=audio ")), "")
    assert f" {case.proto} " in m_line, f"offer m= line {m_line!r}, want {case.proto}\n{offer}"
    assert case.rtpmap in offer, offer
    assert ("a=crypto:" in offer) == (case.srtp is not None), offer
    if case.srtp is not None:
        assert "CALL_MENC" in a.event_types(), a.describe()

    heard_by_b = b.received_wav()
    heard_by_a = a.received_wav()
    report_b = assert_tone(heard_by_b, TONE_A, min_seconds=1.5, min_ratio=0.95)
    report_a = assert_tone(heard_by_a, TONE_B, min_seconds=1.5, min_ratio=0.95)
    assert report_a.rate == report_b.rate == case.rate, (report_a.describe(), report_b.describe())
    # and what each sent (the ``enc`` dump) is its own tone
    assert_tone(a.recordings("enc")[-1], TONE_A, min_seconds=1.5)
    assert_tone(b.recordings("enc")[-1], TONE_B, min_seconds=1.5)


def test_manual_answer_and_record_path(baresips: BaresipFleet, interop_dir: Path) -> None:
    a = baresips.start("alice", tone_hz=TONE_A)
    target = interop_dir / "bob-heard.wav"
    b = baresips.start("bob", tone_hz=TONE_B, record_path=target)
    a.dial(b.uri)
    incoming = b.wait_incoming(5.0)
    assert incoming.peer == a.uri, incoming
    assert "CALL_ESTABLISHED" not in a.event_types(), a.describe()
    b.accept()
    a.wait_established(5.0)
    b.wait_established(5.0)
    time.sleep(2.0)
    b.hangup()
    a.wait_closed(5.0)
    assert b.received_wav() == target
    assert_tone(target, TONE_A, min_seconds=1.0)


def test_mandatory_srtp_refuses_plain_offer(baresips: BaresipFleet) -> None:
    a = baresips.start("alice", tone_hz=TONE_A)
    b = baresips.start("bob", tone_hz=TONE_B, srtp="srtp-mand", auto_answer=True)
    a.dial(b.uri)
    with pytest.raises(BaresipError, match="488"):
        a.wait_established(5.0)


def test_request_uri_user_must_match_account(baresips: BaresipFleet) -> None:
    """baresip 1.0.0 answers 404 to an INVITE whose Request-URI user is not its account's:
    gateway tests must dial ``Baresip(user=NUMBER)``'s number."""
    a = baresips.start("alice", tone_hz=TONE_A)
    b = baresips.start("bob", user="15551234567", tone_hz=TONE_B, auto_answer=True)
    a.dial(f"sip:15550000000@127.0.0.1:{b.sip_port}")
    with pytest.raises(BaresipError, match="404"):
        a.wait_established(5.0)
    a.dial(b.uri)
    a.wait_established(5.0)
    a.hangup()
    a.wait_closed(5.0)
    assert b.wait_closed(5.0).call_id == a.wait_closed(5.0).call_id
    # a second call: mark() makes the callee's waits ignore the first one
    b.mark()
    a.dial(b.uri)
    b.wait_established(5.0)
    b.hangup()
    assert "Connection reset by peer" in a.wait_closed(5.0).param
    assert len(b.recordings("dec")) == 2, b.describe()


# --------------------------------------------------------------------------------------------
# the analysis itself (no baresip)


def _write_wav(path: Path, samples: np.ndarray, rate: int, channels: int = 1) -> Path:
    data = np.clip(samples, -1.0, 1.0 - 1 / 32768)
    ints = (data * 32768).astype("<i2")
    if channels > 1:
        ints = np.repeat(ints[:, None], channels, axis=1)
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(ints.tobytes())
    return path


def test_analysis_accepts_tone_and_rejects_wrong_tone_noise_silence(tmp_path: Path) -> None:
    rate = 8000
    t = np.arange(3 * rate) / rate
    tone = 0.3 * np.sin(2 * np.pi * 1000.0 * t)
    rng = np.random.default_rng(7)

    good = _write_wav(tmp_path / "good.wav", tone + rng.normal(0, 0.003, t.size), rate)
    report = assert_tone(good, 1000)
    assert abs(report.dominant_hz - 1000) < 0.5 and report.ratio > 0.99, report.describe()

    stereo = _write_wav(tmp_path / "stereo.wav", 0.3 * np.sin(2 * np.pi * 440 * t), rate, 2)
    r, samples = read_wav(stereo)
    assert r == rate and samples.ndim == 1
    assert abs(dominant_frequency(samples, r) - 440) < 0.5

    with pytest.raises(AssertionError, match="dominant frequency"):
        assert_tone(good, 440)
    noise = _write_wav(tmp_path / "noise.wav", rng.normal(0, 0.2, t.size), rate)
    with pytest.raises(AssertionError, match="energy"):
        assert_tone(noise, 1000)
    assert tone_power_ratio(read_wav(noise)[1], rate, 1000) < 0.05
    silence = _write_wav(tmp_path / "silence.wav", np.zeros(t.size), rate)
    with pytest.raises(AssertionError, match="silence"):
        assert_tone(silence, 1000)
    short = _write_wav(tmp_path / "short.wav", tone[: rate // 2], rate)
    with pytest.raises(AssertionError, match="recorded"):
        assert_tone(short, 1000)
    # the tone for only the first half: too little of it for min_seconds=2
    half = tone.copy()
    half[t.size // 2 :] = 0.0
    gappy = _write_wav(tmp_path / "gappy.wav", half, rate)
    with pytest.raises(AssertionError, match="tone present"):
        assert_tone(gappy, 1000, min_seconds=2.0, min_ratio=0.5)
    assert analyse_tone(gappy, 1000).tone_seconds == pytest.approx(1.0)


def test_read_wav_with_unfinished_header(tmp_path: Path) -> None:
    """A WAV whose writer died before closing it: RIFF and data sizes still 0."""
    rate = 8000
    t = np.arange(rate) / rate
    path = _write_wav(tmp_path / "t.wav", 0.5 * np.sin(2 * np.pi * 700 * t), rate)
    blob = bytearray(path.read_bytes())
    data_at = blob.index(b"data")
    blob[4:8] = bytes(4)
    blob[data_at + 4 : data_at + 8] = bytes(4)
    broken = tmp_path / "broken.wav"
    broken.write_bytes(bytes(blob))
    r, samples = read_wav(broken)
    assert r == rate and samples.size == rate
    assert abs(dominant_frequency(samples, r, 0.0) - 700) < 0.5


def test_trace_and_netstring_parsers() -> None:
    buffer = bytearray(b'11:{"a":"b:c"},5:hello,3:ab')
    assert parse_netstrings(buffer) == [b'{"a":"b:c"}', b"hello"]
    assert bytes(buffer) == b"3:ab"
    with pytest.raises(ValueError):
        parse_netstrings(bytearray(b"x:abc,"))
    body = "v=0\r\nm=audio 4000 RTP/AVP 0\r\n"
    log = (
        "call: connecting..\n\x1b[36;1m#\nUDP 127.0.0.1:5000 -> 127.0.0.1:6000\n"
        "INVITE sip:bob@127.0.0.1:6000 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5000\r\n"
        f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n{body}"
        "\n\x1b[;m\n\x1b[36;1m#\nUDP 127.0.0.1:6000 -> 127.0.0.1:5000\n"
        "SIP/2.0 100 Trying\r\nContent-Length: 0\r\n\r\n\n\x1b[;m\n"
    )
    traces = split_sip_trace(log)
    assert [(m.src, m.dst, m.method) for m in traces] == [
        ("127.0.0.1:5000", "127.0.0.1:6000", "INVITE"),
        ("127.0.0.1:6000", "127.0.0.1:5000", None),
    ]
    assert traces[0].body == body
    assert traces[1].first_line == "SIP/2.0 100 Trying"
