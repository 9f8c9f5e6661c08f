"""Opus over libopus (RFC 6716), its RTP timing and SDP parameters (RFC 7587).

Signals are synthetic tones; what is checked is what the transcoder relies on: the dominant
frequency survives (FFT, ±10 Hz), the waveform correlates once the codec delay (the encoder's
lookahead) is taken out, frame counts and lengths are right, a lost frame comes back from the
next packet's in-band FEC, and the 48 kHz RTP tick count of every frame duration.
"""

from __future__ import annotations

import ctypes
import subprocess
import sys
import textwrap

import numpy as np
import opuslib.api
import pytest

from gateway.media.opus import (
    MAX_PACKET_TICKS,
    RTP_CLOCK,
    OpusDecoder,
    OpusEncoder,
    OpusEncoderSettings,
    OpusParams,
    encoder_settings,
    parse_fmtp,
    parse_toc,
    rtp_samples,
)

NB, MB, WB, SWB, FB = 1101, 1102, 1103, 1104, 1105  # OPUS_BANDWIDTH_*


def tone(rate: int, seconds: float, freq: float = 1000.0, amplitude: float = 10000.0) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    # a slow 3 Hz tremolo keeps the encoder from treating the tone as stationary noise
    return (
        amplitude * np.sin(2 * np.pi * freq * t) * (1 + 0.3 * np.sin(2 * np.pi * 3 * t))
    ).astype(np.int16)


def frames(pcm: np.ndarray, size: int) -> list[np.ndarray]:
    return [pcm[i : i + size] for i in range(0, len(pcm) - size + 1, size)]


def dominant_frequency(pcm: np.ndarray, rate: int) -> float:
    """The strongest frequency, from a Hann-windowed FFT zero-padded to 1 Hz bins."""
    x = pcm.astype(np.float64) * np.hanning(len(pcm))
    spectrum = np.abs(np.fft.rfft(x, n=rate))
    return float(np.fft.rfftfreq(rate, 1 / rate)[int(np.argmax(spectrum))])


def rms(pcm: np.ndarray) -> float:
    return float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2)))


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.astype(np.float64), b.astype(np.float64))[0, 1])


def snr_db(decoded: np.ndarray, reference: np.ndarray) -> float:
    ref = reference.astype(np.float64)
    noise = decoded.astype(np.float64) - ref
    return float(10 * np.log10(np.sum(ref**2) / np.sum(noise**2)))


def libopus_nb_samples(packet: bytes) -> int:
    """libopus's own answer (``opus_packet_get_nb_samples`` at 48 kHz), for comparison."""
    function = opuslib.api.libopus.opus_packet_get_nb_samples
    return int(
        function(ctypes.c_char_p(packet), ctypes.c_int32(len(packet)), ctypes.c_int32(48000))
    )


def encode_all(encoder: OpusEncoder, pcm: np.ndarray, size: int) -> list[bytes]:
    return [encoder.encode(frame) for frame in frames(pcm, size)]


# --- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [8000, 16000, 48000], ids=["NB", "WB", "FB"])
def test_round_trip_keeps_a_1khz_tone(rate: int) -> None:
    size = rate // 50
    source = tone(rate, 1.0)
    encoder, decoder = OpusEncoder(rate), OpusDecoder(rate)
    packets = encode_all(encoder, source, size)
    assert len(packets) == 50
    decoded = np.concatenate([decoder.decode(packet) for packet in packets])
    assert decoded.dtype == np.int16
    assert len(decoded) == len(source)
    steady = decoded[10 * size :]
    assert abs(dominant_frequency(steady, rate) - 1000) <= 10
    delay = encoder.lookahead
    aligned = decoded[10 * size + delay : 45 * size + delay]
    reference = source[10 * size : 45 * size]
    assert correlation(aligned, reference) > 0.95
    assert snr_db(aligned, reference) > 10
    assert 0.7 < rms(aligned) / rms(reference) < 1.3


@pytest.mark.parametrize("freq", [300.0, 700.0, 2500.0])
def test_narrowband_round_trip_keeps_other_frequencies(freq: float) -> None:
    source = tone(8000, 0.6, freq=freq)
    encoder, decoder = OpusEncoder(8000), OpusDecoder(8000)
    decoded = np.concatenate([decoder.decode(p) for p in encode_all(encoder, source, 160)])
    assert abs(dominant_frequency(decoded[1600:], 8000) - freq) <= 10


def test_narrowband_encoder_codes_narrowband() -> None:
    encoder = OpusEncoder(8000)
    packets = encode_all(encoder, tone(8000, 0.2), 160)
    assert {parse_toc(p[0]).bandwidth for p in packets} == {"NB"}
    assert {rtp_samples(p) for p in packets} == {960}


def test_decoder_rate_differs_from_encoder_rate() -> None:
    # the packet does not say the encoder's rate: a WB decoder gets twice the samples
    packets = encode_all(OpusEncoder(8000), tone(8000, 0.4), 160)
    decoder = OpusDecoder(16000)
    decoded = np.concatenate([decoder.decode(p) for p in packets])
    assert len(decoded) == 2 * 8000 * 0.4
    assert abs(dominant_frequency(decoded[3200:], 16000) - 1000) <= 10


def test_max_bandwidth_caps_a_fullband_encoder() -> None:
    encoder = OpusEncoder(48000, max_bandwidth=NB)
    packets = encode_all(encoder, tone(48000, 0.3), 960)
    assert {parse_toc(p[0]).bandwidth for p in packets} == {"NB"}


# --- frame durations and the RTP clock (RFC 7587 section 4.2, RFC 6716 section 3.1) ----------


@pytest.mark.parametrize(("ms", "ticks"), [(10, 480), (20, 960), (40, 1920), (60, 2880)])
@pytest.mark.parametrize("rate", [8000, 16000, 48000])
def test_rtp_samples_of_voice_frames(ms: int, ticks: int, rate: int) -> None:
    size = rate * ms // 1000
    encoder, decoder = OpusEncoder(rate), OpusDecoder(rate)
    for packet in encode_all(encoder, tone(rate, 0.24), size):
        assert rtp_samples(packet) == ticks
        assert libopus_nb_samples(packet) == ticks
        assert len(decoder.decode(packet)) == size


@pytest.mark.parametrize(("tenths_ms", "ticks"), [(25, 120), (50, 240)])
def test_rtp_samples_of_short_celt_frames(tenths_ms: int, ticks: int) -> None:
    size = 48000 * tenths_ms // 10000
    encoder = OpusEncoder(48000)
    for packet in encode_all(encoder, tone(48000, 0.05), size):
        assert parse_toc(packet[0]).mode == "CELT"
        assert rtp_samples(packet) == ticks


def test_rtp_samples_counts_the_frames_of_codes_1_2_and_3() -> None:
    silk_nb_20ms = 1 << 3  # config 1
    assert rtp_samples(bytes([silk_nb_20ms | 0])) == 960
    assert rtp_samples(bytes([silk_nb_20ms | 1, 0, 0])) == 1920
    assert rtp_samples(bytes([silk_nb_20ms | 2, 1, 0])) == 1920
    assert rtp_samples(bytes([silk_nb_20ms | 3, 6])) == 5760  # six frames, 120 ms
    assert rtp_samples(bytes([silk_nb_20ms | 3, 0x80 | 0x40 | 3])) == 2880  # VBR, padding flags


def test_rtp_samples_agrees_with_libopus_on_every_toc_and_count() -> None:
    for toc in range(256):
        counts = range(64) if toc & 3 == 3 else [0]
        for count in counts:
            packet = bytes([toc, count, 0, 0])
            expected = libopus_nb_samples(packet)
            if expected <= 0:  # libopus says invalid, or 0 for a zero-frame code 3 packet
                with pytest.raises(ValueError):
                    rtp_samples(packet)
            else:
                assert rtp_samples(packet) == expected


@pytest.mark.parametrize(
    ("packet", "message"),
    [
        (b"", "empty"),
        (bytes([0x0B]), "no frame count byte"),
        (bytes([0x0B, 0x00]), "zero frames"),
        (bytes([(3 << 3) | 3, 3]), "more than 120 ms"),  # three 60 ms frames
    ],
)
def test_rtp_samples_rejects_malformed_packets(packet: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rtp_samples(packet)


def test_max_packet_is_120_ms_at_the_rtp_clock() -> None:
    assert RTP_CLOCK == 48000
    assert MAX_PACKET_TICKS == 120 * 48


@pytest.mark.parametrize(
    ("config", "mode", "bandwidth", "ticks"),
    [
        (0, "SILK", "NB", 480),
        (7, "SILK", "MB", 2880),
        (9, "SILK", "WB", 960),
        (12, "Hybrid", "SWB", 480),
        (15, "Hybrid", "FB", 960),
        (16, "CELT", "NB", 120),
        (21, "CELT", "WB", 240),
        (26, "CELT", "SWB", 480),
        (31, "CELT", "FB", 960),
    ],
)
def test_parse_toc_follows_rfc6716_table_2(
    config: int, mode: str, bandwidth: str, ticks: int
) -> None:
    toc = parse_toc((config << 3) | 0x04 | 2)
    assert (toc.config, toc.stereo, toc.code) == (config, True, 2)
    assert (toc.mode, toc.bandwidth, toc.frame_ticks) == (mode, bandwidth, ticks)


def test_parse_toc_rejects_non_bytes() -> None:
    with pytest.raises(ValueError):
        parse_toc(256)


# --- loss: PLC and in-band FEC -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "samples"),
    [(8000, 160), (8000, 80), (8000, 320), (16000, 320), (48000, 960), (8000, 960)],
)
def test_conceal_gives_the_number_of_samples_asked(rate: int, samples: int) -> None:
    decoder = OpusDecoder(rate)
    assert len(decoder.conceal(samples)) == samples  # even before any packet
    for packet in encode_all(OpusEncoder(rate), tone(rate, 0.1), rate // 50):
        decoder.decode(packet)
    out = decoder.conceal(samples)
    assert out.dtype == np.int16
    assert len(out) == samples


@pytest.mark.parametrize("samples", [0, -160, 150, 961, 1000])
def test_conceal_rejects_lengths_that_are_not_2_5_ms_multiples_up_to_120_ms(samples: int) -> None:
    with pytest.raises(ValueError, match=r"2\.5 ms"):
        OpusDecoder(8000).conceal(samples)


def test_conceal_continues_then_fades() -> None:
    decoder = OpusDecoder(8000)
    for packet in encode_all(OpusEncoder(8000), tone(8000, 0.4), 160):
        decoder.decode(packet)
    concealed = [decoder.conceal(160) for _ in range(10)]
    assert rms(concealed[0]) > 1000  # the first frame carries on the tone
    assert abs(dominant_frequency(concealed[0], 8000) - 1000) <= 25
    assert rms(concealed[-1]) < rms(concealed[0]) / 4  # and it dies away


@pytest.mark.parametrize(("rate", "bitrate"), [(8000, 24000), (16000, 28000)], ids=["NB", "WB"])
@pytest.mark.parametrize("lost", [20, 31, 40])
def test_fec_recovers_a_lost_frame_from_the_next_packet(rate: int, bitrate: int, lost: int) -> None:
    size = rate // 50
    source = tone(rate, 1.0)
    encoder = OpusEncoder(rate, bitrate=bitrate, fec=True, packet_loss_percent=10)
    packets = encode_all(encoder, source, size)
    delay = encoder.lookahead

    def receive(recover: bool) -> np.ndarray:
        decoder, out = OpusDecoder(rate), []
        for index, packet in enumerate(packets):
            if index == lost:
                continue  # lost on the way
            if index == lost + 1:
                if recover:
                    out.append(decoder.decode_fec(packet, size))
                else:
                    out.append(decoder.conceal(size))
            out.append(decoder.decode(packet))
        return np.concatenate(out)

    recovered, concealed = receive(recover=True), receive(recover=False)
    assert len(recovered) == len(source)
    window = slice(lost * size + delay, (lost + 1) * size + delay)
    reference = source[lost * size : (lost + 1) * size]
    assert correlation(recovered[window], reference) > 0.95
    assert 0.8 < rms(recovered[window]) / rms(reference) < 1.2
    assert abs(dominant_frequency(recovered[window], rate) - 1000) <= 10
    # the FEC data did the work: plain concealment of the same frame is further off
    assert correlation(recovered[window], reference) > correlation(concealed[window], reference)


def test_fec_without_fec_data_falls_back_to_concealment() -> None:
    packets = encode_all(OpusEncoder(8000), tone(8000, 0.4), 160)
    decoder = OpusDecoder(8000)
    for packet in packets[:10]:
        decoder.decode(packet)
    out = decoder.decode_fec(packets[11], 160)
    assert len(out) == 160


def test_encoder_settings_turn_fec_on_for_a_peer_that_uses_it() -> None:
    settings = encoder_settings(parse_fmtp("useinbandfec=1"), input_rate=8000)
    encoder = OpusEncoder.from_settings(settings)
    assert encoder.fec
    assert encoder.packet_loss_percent == settings.packet_loss_percent > 0
    source = tone(8000, 1.0)
    packets = encode_all(encoder, source, 160)
    decoder, out = OpusDecoder(8000), []
    for index, packet in enumerate(packets):
        if index == 30:
            continue
        if index == 31:
            out.append(decoder.decode_fec(packet, 160))
        out.append(decoder.decode(packet))
    window = slice(30 * 160 + encoder.lookahead, 31 * 160 + encoder.lookahead)
    assert correlation(np.concatenate(out)[window], source[30 * 160 : 31 * 160]) > 0.95


# --- encoder settings and input checks -----------------------------------------------------------


def test_encoder_ctl_settings_read_back() -> None:
    encoder = OpusEncoder(
        16000, bitrate=24000, fec=True, dtx=True, packet_loss_percent=15, complexity=5
    )
    assert (encoder.bitrate, encoder.fec, encoder.dtx, encoder.packet_loss_percent) == (
        24000,
        True,
        True,
        15,
    )
    plain = OpusEncoder(16000)
    assert (plain.fec, plain.dtx, plain.packet_loss_percent) == (False, False, 0)


def test_cbr_gives_packets_of_one_size() -> None:
    encoder = OpusEncoder(8000, bitrate=16000, cbr=True)
    sizes = {len(p) for p in encode_all(encoder, tone(8000, 0.4), 160)}
    assert sizes == {40}  # 16000 b/s * 20 ms / 8


def test_dtx_shrinks_silence_to_tiny_packets() -> None:
    encoder = OpusEncoder(8000, dtx=True)
    packets = encode_all(encoder, np.zeros(8000, dtype=np.int16), 160)
    assert sum(len(p) <= 2 for p in packets[-25:]) >= 20
    plain = encode_all(OpusEncoder(8000), np.zeros(8000, dtype=np.int16), 160)
    assert all(len(p) >= 1 for p in plain)


def test_encode_checks_its_input() -> None:
    encoder = OpusEncoder(8000)
    with pytest.raises(ValueError, match="not an Opus frame"):
        encoder.encode(np.zeros(150, dtype=np.int16))
    with pytest.raises(TypeError, match="int16"):
        encoder.encode(np.zeros(160, dtype=np.float32))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="int16"):
        encoder.encode(np.zeros((2, 160), dtype=np.int16))
    assert encoder.encode(np.zeros(320, dtype=np.int16)[::2])  # a strided view is fine


@pytest.mark.parametrize(
    "kwargs",
    [
        {"sample_rate": 44100},
        {"bitrate": 100},
        {"packet_loss_percent": 101},
        {"complexity": 11},
        {"max_bandwidth": 42},
    ],
)
def test_encoder_rejects_bad_settings(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        OpusEncoder(**kwargs)  # type: ignore[arg-type]


def test_decoder_rejects_bad_rate_and_packets() -> None:
    with pytest.raises(ValueError, match="Opus rate"):
        OpusDecoder(22050)
    decoder = OpusDecoder(8000)
    with pytest.raises(ValueError, match="empty"):
        decoder.decode(b"")
    with pytest.raises(ValueError, match="cannot be decoded"):
        decoder.decode(b"\xff\xff\xff")  # code 3 with a bad frame count
    with pytest.raises(ValueError, match="empty"):
        decoder.decode_fec(b"", 160)
    # the decoder still works after refusing a packet
    packet = OpusEncoder(8000).encode(np.zeros(160, dtype=np.int16))
    assert len(decoder.decode(packet)) == 160


def test_reset_keeps_the_objects_usable() -> None:
    encoder, decoder = OpusEncoder(8000), OpusDecoder(8000)
    first = encode_all(encoder, tone(8000, 0.1), 160)
    encoder.reset()
    decoder.reset()
    again = encode_all(encoder, tone(8000, 0.1), 160)
    assert again == first  # same input from a fresh state gives the same bytes
    assert len(decoder.decode(again[0])) == 160


def test_many_objects_are_freed() -> None:
    for _ in range(200):
        OpusEncoder(48000).encode(np.zeros(960, dtype=np.int16))
        OpusDecoder(48000).conceal(960)


# --- fmtp (RFC 7587 section 6.1) -------------------------------------------------------------


def test_parse_fmtp_defaults() -> None:
    for fmtp in (None, "", "  ", ";;"):
        assert parse_fmtp(fmtp) == OpusParams()
    defaults = OpusParams()
    assert (defaults.maxplaybackrate, defaults.sprop_maxcapturerate) == (48000, 48000)
    assert not (defaults.useinbandfec or defaults.usedtx or defaults.stereo or defaults.cbr)
    assert defaults.maxaveragebitrate is None


def test_parse_fmtp_webrtc_line() -> None:
    params = parse_fmtp("minptime=10;useinbandfec=1")
    assert params == OpusParams(minptime=10, useinbandfec=True)


def test_parse_fmtp_rfc7587_example_2() -> None:
    # RFC 7587 section 7, example 2 (its fmtp line, with the spaces after the semicolons)
    params = parse_fmtp(
        "maxplaybackrate=16000; sprop-maxcapturerate=16000; maxaveragebitrate=20000; "
        "stereo=1; useinbandfec=1; usedtx=0"
    )
    assert params == OpusParams(
        maxplaybackrate=16000,
        sprop_maxcapturerate=16000,
        maxaveragebitrate=20000,
        stereo=True,
        useinbandfec=True,
        usedtx=False,
    )


def test_parse_fmtp_every_parameter() -> None:
    params = parse_fmtp(
        "maxplaybackrate=8000;sprop-maxcapturerate=12000;maxaveragebitrate=32000;stereo=0;"
        "sprop-stereo=1;cbr=1;useinbandfec=1;usedtx=1;ptime=40;maxptime=60;minptime=20"
    )
    assert params == OpusParams(8000, 12000, 32000, False, True, True, True, True, 40, 60, 20)


def test_parse_fmtp_is_case_insensitive_and_ignores_unknown_parameters() -> None:
    params = parse_fmtp(
        "UseInbandFEC=1; MaxPlaybackRate=16000; x-vendor=7; profile-level-id=42e01f"
    )
    assert params == OpusParams(maxplaybackrate=16000, useinbandfec=True)


@pytest.mark.parametrize(
    ("fmtp", "expected"),
    [
        ("useinbandfec=yes", OpusParams()),
        ("useinbandfec=2", OpusParams()),
        ("usedtx", OpusParams()),
        ("maxaveragebitrate=5999", OpusParams()),  # outside 6000..510000: ignored
        ("maxaveragebitrate=510001", OpusParams()),
        ("maxaveragebitrate=6000", OpusParams(maxaveragebitrate=6000)),
        ("maxaveragebitrate=-20000", OpusParams()),
        ("maxaveragebitrate=2e4", OpusParams()),
        ("maxaveragebitrate=99999999999999999999", OpusParams()),
        ("maxplaybackrate=4000", OpusParams(maxplaybackrate=8000)),  # clamped into 8000..48000
        ("maxplaybackrate=96000", OpusParams(maxplaybackrate=48000)),
        ("maxplaybackrate=١٦٠٠٠", OpusParams()),  # non-ASCII digits
        ("ptime=2", OpusParams()),
        ("maxptime=121", OpusParams()),
        ("useinbandfec = 1", OpusParams(useinbandfec=True)),
        ("usedtx=1;usedtx=0", OpusParams(usedtx=False)),  # the last one counts
    ],
)
def test_parse_fmtp_ignores_bad_values(fmtp: str, expected: OpusParams) -> None:
    assert parse_fmtp(fmtp) == expected


def test_params_are_immutable() -> None:
    params = parse_fmtp("useinbandfec=1")
    with pytest.raises(AttributeError):
        params.useinbandfec = False  # type: ignore[misc]


# --- encoder settings toward a peer ---------------------------------------------------------


def test_settings_for_a_default_peer_and_a_g711_leg() -> None:
    settings = encoder_settings(OpusParams(), input_rate=8000)
    assert settings == OpusEncoderSettings(
        sample_rate=8000,
        bitrate=12000,
        fec=False,
        dtx=False,
        packet_loss_percent=0,
        complexity=None,
        max_bandwidth=None,
        cbr=False,
        frame_ms=20,
    )


def test_settings_honour_maxplaybackrate() -> None:
    narrow = encoder_settings(parse_fmtp("maxplaybackrate=8000"))
    assert (narrow.sample_rate, narrow.max_bandwidth) == (8000, NB)
    wide = encoder_settings(parse_fmtp("maxplaybackrate=16000"))
    assert (wide.sample_rate, wide.max_bandwidth) == (16000, WB)
    odd = encoder_settings(parse_fmtp("maxplaybackrate=11025"))
    assert (odd.sample_rate, odd.max_bandwidth) == (12000, MB)
    full = encoder_settings(OpusParams())
    assert (full.sample_rate, full.max_bandwidth) == (48000, None)
    # the transcoder's own rate is a ceiling too
    assert (
        encoder_settings(parse_fmtp("maxplaybackrate=16000"), input_rate=8000).sample_rate == 8000
    )


def test_settings_cap_the_bitrate_at_maxaveragebitrate() -> None:
    assert encoder_settings(parse_fmtp("maxaveragebitrate=10000"), input_rate=8000).bitrate == 10000
    assert encoder_settings(parse_fmtp("maxaveragebitrate=64000"), input_rate=8000).bitrate == 12000
    capped = encoder_settings(parse_fmtp("maxaveragebitrate=20000"), bitrate=32000)
    assert capped.bitrate == 20000
    assert encoder_settings(OpusParams(), bitrate=32000).bitrate == 32000


def test_settings_for_fec_dtx_and_cbr() -> None:
    settings = encoder_settings(parse_fmtp("useinbandfec=1;usedtx=1;cbr=1"), input_rate=8000)
    assert (settings.fec, settings.dtx, settings.cbr) == (True, True, True)
    assert settings.packet_loss_percent == 10
    assert settings.bitrate is not None and settings.bitrate >= 20000  # room for the FEC data
    fec_capped = encoder_settings(
        parse_fmtp("useinbandfec=1;maxaveragebitrate=16000"), input_rate=8000, loss_percent=25
    )
    assert (fec_capped.bitrate, fec_capped.packet_loss_percent) == (16000, 25)


@pytest.mark.parametrize(
    ("fmtp", "frame_ms"),
    [
        ("", 20),
        ("minptime=10", 20),
        ("ptime=40", 40),
        ("ptime=60;maxptime=40", 40),
        ("maxptime=10", 10),
        ("minptime=40", 40),
        ("ptime=30", 20),
        ("maxptime=5", 10),  # nothing fits: the shortest voice frame
    ],
)
def test_settings_frame_duration(fmtp: str, frame_ms: int) -> None:
    assert encoder_settings(parse_fmtp(fmtp)).frame_ms == frame_ms


def test_settings_reject_a_rate_opus_does_not_have() -> None:
    with pytest.raises(ValueError, match="Opus rate"):
        encoder_settings(OpusParams(), input_rate=44100)


def test_encoder_from_settings_is_configured() -> None:
    settings = encoder_settings(
        parse_fmtp("useinbandfec=1;usedtx=1;maxaveragebitrate=30000;maxplaybackrate=16000")
    )
    encoder = OpusEncoder.from_settings(settings)
    assert encoder.sample_rate == 16000
    assert (encoder.fec, encoder.dtx, encoder.bitrate) == (True, True, 28000)
    packets = encode_all(encoder, tone(16000, 0.2), 320)
    assert {parse_toc(p[0]).bandwidth for p in packets} <= {"NB", "MB", "WB"}


# --- a missing libopus ---------------------------------------------------------------------


def test_missing_libopus_names_the_debian_package() -> None:
    script = textwrap.dedent(
        """
        import ctypes.util
        ctypes.util.find_library = lambda name: None
        try:
            import gateway.media.opus
        except ImportError as exc:
            print(exc)
        else:
            print("imported")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert "libopus0" in result.stdout
    assert "apt-get install libopus0" in result.stdout
