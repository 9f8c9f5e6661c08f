"""Speech quality (PESQ, ITU-T P.862 narrowband) through the real gateway: PCMU -> Opus -> PCMU,
clean and with 3% of the Opus packets lost, against the PCMU relay (no transcoding) as the
ceiling.

Topology (127.0.0.1), one call per case::

    caller (PCMU speech) --> gateway a-leg ==PCMU->Opus==> b-leg --Opus--> Python echo
        ^                                                                (drops p%, seeded)
        +------ PCMU <== gateway a-leg <==Opus->PCMU== b-leg <--Opus-----+

The callee is SIPp ``uas_opus.xml`` (callee trunk ``opus`` only) answering with its own media
port (no SIPp echo); a Python echo takes that port's place: it reads the gateway's b-leg port
from the INVITE SIPp received (``-trace_msg``), sends the gateway one Opus packet so the b-leg
latches to it (symmetric RTP), then returns every packet to where it came from, or drops it
(3%, ``random.Random(seed)``). So the loss hits the gateway's Opus decoder (in-band FEC, PLC)
and nothing else. The reference rig is the same with ``uas.xml`` and a PCMU-only callee trunk:
the gateway relays, nothing is decoded, and lost packets stay holes (the caller has no PLC).

Speech: espeak-ng (Debian ``espeak-ng``), a few Harvard sentences at 8 kHz, about 9 s,
normalised to -26 dBov (active level), cached in ``bench/out/media_quality_speech.wav``. The
caller sends it as 20 ms μ-law packets after 0.5 s of low noise and records what comes back by
RTP timestamp; the recording is aligned to the reference by cross-correlation before PESQ.

Usage: python bench/media_quality.py [--loss 3] [--seeds 1] [--quick]
"""

from __future__ import annotations

import contextlib
import math
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import wave
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import mediaload as ml
import numpy as np
from mediaload import harness
from rtppeer import Received, read_rtp, rtp_packet, ulaw_decode, ulaw_encode

RATE = 8000
SPEECH_PATH = ml.OUT_DIR / "media_quality_speech.wav"
SENTENCES = (
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
)
LEVEL_DBOV = -26.0
MAX_SPEECH_S = 10.0
PRE_S = 0.5  # low noise before the speech (the jitter buffers settle)
POST_S = 1.0  # after it (the last frames get through)


# --------------------------------------------------------------------------------------------
# the speech


def _read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: {8 * w.getsampwidth()}-bit audio, 16 expected")
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        if w.getnchannels() > 1:
            data = data.reshape(-1, w.getnchannels())[:, 0]
        return data.astype(np.float64), w.getframerate()


def _write_wav(path: Path, pcm: np.ndarray, rate: int = RATE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.clip(pcm, -32768, 32767).astype("<i2").tobytes())


def resample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Band-limited resampling by FFT (the whole signal at once; it is short): the spectrum
    cut at the lower Nyquist frequency, with a short cosine taper below it."""
    n_out = round(len(x) * rate_out / rate_in)
    pad = len(x) // 8  # zeros around it, so the circular transform does not wrap speech
    padded = np.concatenate((np.zeros(pad), x, np.zeros(pad)))
    spectrum = np.fft.rfft(padded)
    n_pad_out = round(len(padded) * rate_out / rate_in)
    keep = n_pad_out // 2 + 1
    cut = spectrum[:keep].copy()
    if rate_out < rate_in:
        freqs = np.arange(keep) * rate_in / len(padded)
        edge = 0.95 * rate_out / 2
        taper = np.clip((rate_out / 2 - freqs) / (rate_out / 2 - edge), 0.0, 1.0)
        cut *= 0.5 - 0.5 * np.cos(np.pi * taper)
    y = np.fft.irfft(cut, n_pad_out) * (n_pad_out / len(padded))
    start = round(pad * rate_out / rate_in)
    return y[start : start + n_out]


def active_level_dbov(x: np.ndarray) -> float:
    """Speech level over its active 20 ms frames (those within 30 dB of the loudest), in dB
    relative to full scale (0 dBov = RMS 32768): an approximation of ITU-T P.56."""
    frames = x[: len(x) // 160 * 160].reshape(-1, 160)
    power = (frames**2).mean(axis=1)
    active = power > power.max() * 10 ** (-30 / 10)
    rms = math.sqrt(power[active].mean()) if active.any() else 0.0
    return 20 * math.log10(rms / 32768.0) if rms > 0 else -math.inf


def _espeak(espeak: str, text: str) -> np.ndarray:
    """``text`` spoken by espeak-ng, at 8 kHz, leading and trailing silence cut to 0.25 s."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "speech.wav"
        subprocess.run([espeak, "-v", "en-us", "-s", "160", "-g", "4", "-w", str(raw), text],
                       check=True, timeout=60, capture_output=True)
        x, rate = _read_wav(raw)
    y = resample(x, rate, RATE)
    loud = np.flatnonzero(np.abs(y) > np.abs(y).max() * 0.01)
    return y[max(0, loud[0] - RATE // 4) : loud[-1] + RATE // 4] if len(loud) else y


def make_speech(path: Path = SPEECH_PATH) -> np.ndarray:
    """The cached reference speech (int16 samples at 8 kHz), made on first use."""
    if path.exists():
        data, rate = _read_wav(path)
        if rate == RATE and len(data) > RATE:
            return data.astype(np.int16)
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise RuntimeError(
            "espeak-ng not found: install Debian's espeak-ng (apt-get install espeak-ng), or "
            f"put an 8 kHz 16-bit mono speech file at {path}"
        )
    y = np.zeros(0)
    for count in range(len(SENTENCES), 0, -1):  # as many sentences as fit in MAX_SPEECH_S
        y = _espeak(espeak, " ".join(SENTENCES[:count]))
        if len(y) <= MAX_SPEECH_S * RATE:
            break
    y *= 10 ** ((LEVEL_DBOV - active_level_dbov(y)) / 20)
    pcm = np.clip(np.round(y), -32768, 32767).astype(np.int16)
    _write_wav(path, pcm)
    return pcm


# --------------------------------------------------------------------------------------------
# the caller and the echo


@dataclass
class Packet:
    pt: int
    seq: int
    ts: int
    payload: bytes
    arrival: float


class Recorder:
    """The caller's RTP socket: sends paced μ-law, records what comes back (own thread)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((ml.LOOPBACK, 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.packets: list[Packet] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=read_rtp, args=(self.sock, self._stop, self._keep),
                                        daemon=True)
        self._thread.start()

    def _keep(self, packet: Received, _data: bytes) -> None:
        self.packets.append(Packet(packet.pt, packet.seq, packet.ts, packet.payload,
                                   time.monotonic()))

    def send(self, dest: tuple[str, int], pcm: np.ndarray) -> float:
        """Send ``pcm`` (8 kHz) as 20 ms μ-law packets; the monotonic time of the first."""
        start = time.monotonic()
        frames = len(pcm) // 160
        for i in range(frames):
            payload = ulaw_encode(pcm[i * 160 : (i + 1) * 160])
            self.sock.sendto(rtp_packet(0, 5000 + i, 80000 + 160 * i, 0x5EED0001, payload,
                                        marker=i == 0), dest)
            delay = start + (i + 1) * ml.FRAME_S - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        return start

    def audio(self, pt: int = 0) -> tuple[np.ndarray, float]:
        """What came back with payload type ``pt``, placed by RTP timestamp (holes are
        silence), and the arrival time of its first sample."""
        chosen = [p for p in self.packets if p.pt == pt]
        if not chosen:
            return np.zeros(0), math.nan
        ts0 = chosen[0].ts
        offsets = [((p.ts - ts0 + (1 << 31)) % (1 << 32)) - (1 << 31) for p in chosen]
        base = min(offsets)
        length = max(offsets) - base + 160
        out = np.zeros(length)
        for p, off in zip(chosen, offsets):
            samples = ulaw_decode(p.payload).astype(np.float64)
            out[off - base : off - base + len(samples)] = samples
        first = min(chosen, key=lambda p: p.arrival)
        first_off = offsets[chosen.index(first)] - base
        return out, first.arrival - first_off / RATE

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


class Echo:
    """The callee's media: latches the gateway's b-leg onto itself with one packet, then sends
    every packet back to its source, dropping a seeded random ``loss`` fraction."""

    def __init__(self, loss: float, seed: int, max_s: float) -> None:
        self.loss = loss
        self.rng = random.Random(seed)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((ml.LOOPBACK, 0))
        self.sock.settimeout(0.1)
        self.max_s = max_s
        self.received = 0
        self.dropped = 0
        self.echoed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self, gateway_port: int, prime: bytes) -> None:
        self.sock.sendto(prime, (ml.LOOPBACK, gateway_port))
        self._thread.start()

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_s
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                data, addr = self.sock.recvfrom(4096)
            except (TimeoutError, OSError):
                continue
            if len(data) < 2 or 192 <= data[1] <= 223:
                continue  # RTCP: not echoed
            self.received += 1
            if self.rng.random() < self.loss:
                self.dropped += 1
                continue
            self.sock.sendto(data, addr)
            self.echoed += 1

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2)
        self.sock.close()


def priming_packet(opus_pt: int | None) -> bytes:
    """One packet the gateway's b-leg accepts: 20 ms of μ-law silence, or of Opus silence
    (libopus through opuslib, as the gateway's own Opus is not what is measured)."""
    if opus_pt is None:
        return rtp_packet(0, 1, 160, 0x0EC40001, b"\xff" * 160, marker=True)
    import opuslib

    encoder = opuslib.Encoder(8000, 1, opuslib.APPLICATION_VOIP)
    payload = encoder.encode(bytes(320), 160)
    return rtp_packet(opus_pt, 1, 960, 0x0EC40001, payload, marker=True)


def gateway_offer(message_log: Path, timeout_s: float = 5.0) -> tuple[int, int | None]:
    """(the b-leg port, the opus payload type) of the last INVITE SIPp logged."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            text = message_log.read_text(errors="replace")
            invites = [m.start() for m in re.finditer(r"^INVITE sip:", text, re.M)]
            if invites:
                body = text[invites[-1] :]
                port = re.search(r"^m=audio (\d+)", body, re.M)
                opus = re.search(r"^a=rtpmap:(\d+) opus/48000", body, re.M | re.I)
                if port:
                    return int(port.group(1)), int(opus.group(1)) if opus else None
        time.sleep(0.05)
    raise harness.HarnessError(f"no INVITE with SDP in {message_log}")


# --------------------------------------------------------------------------------------------
# scoring


def align(received: np.ndarray, reference: np.ndarray, max_lag: int) -> tuple[np.ndarray, int]:
    """The stretch of ``received`` that best matches ``reference`` (cross-correlation over
    lags 0..max_lag), zero-padded to its length, and the lag in samples."""
    n = len(reference)
    size = 1 << math.ceil(math.log2(len(received) + n))
    corr = np.fft.irfft(np.fft.rfft(received, size) * np.conj(np.fft.rfft(reference, size)),
                        size)
    lag = int(np.argmax(corr[: max_lag + 1]))
    seg = received[lag : lag + n]
    if len(seg) < n:
        seg = np.concatenate((seg, np.zeros(n - len(seg))))
    return seg, lag


def opus_config(config: Any) -> dict[str, Any]:
    """The [media] Opus encoder settings the gateway's transcoder uses (its defaults, as the
    bench's gateway config sets none), where this gateway version has them."""
    out: dict[str, Any] = {}
    if hasattr(config, "opus_bitrate"):
        out["bitrate"] = config.opus_bitrate
    if hasattr(config, "opus_complexity"):
        out["complexity"] = config.opus_complexity
    return out


def codec_only(speech: np.ndarray, loss: float, seed: int) -> float:
    """PESQ of the same chain without the network: μ-law, decode, the gateway's own Opus
    encoder with the settings its transcoder uses toward ``useinbandfec=1`` (gateway.media.opus,
    the [media] defaults),
    packets dropped as the echo drops them (``random.Random(seed)``), a lost frame recovered
    from the next packet's FEC, decode, μ-law. The codec's share of the score."""
    from gateway.config import MediaConfig
    from gateway.media.opus import OpusDecoder, OpusEncoder, encoder_settings, parse_fmtp

    rng = random.Random(seed)
    settings = encoder_settings(parse_fmtp("useinbandfec=1"), input_rate=RATE,
                                **opus_config(MediaConfig()))
    encoder = OpusEncoder.from_settings(settings)
    decoder = OpusDecoder(RATE)
    x = ulaw_decode(ulaw_encode(speech))
    packets = [encoder.encode(x[i : i + 160]) for i in range(0, len(x) - 159, 160)]
    kept = [p if rng.random() >= loss else None for p in packets]
    out = []
    for i, packet in enumerate(kept):
        if packet is not None:
            out.append(decoder.decode(packet))
        elif i + 1 < len(kept) and kept[i + 1] is not None:
            out.append(decoder.decode_fec(kept[i + 1], 160))
        else:
            out.append(decoder.conceal(160))
    y = ulaw_decode(ulaw_encode(np.concatenate(out).astype(np.int16))).astype(np.float64)
    seg, _ = align(np.concatenate((y, np.zeros(RATE // 10))), speech.astype(np.float64),
                   RATE // 10)
    return pesq_nb(speech.astype(np.float64), seg)


def pesq_nb(reference: np.ndarray, degraded: np.ndarray) -> float:
    from pesq import pesq

    return float(pesq(RATE, reference.astype(np.float64) / 32768.0,
                      degraded.astype(np.float64) / 32768.0, "nb"))


@dataclass
class Case:
    path: str  # "relay" or "transcode"
    loss: float
    seed: int
    pesq: float = math.nan
    round_trip_ms: float = math.nan
    frames_sent: int = 0
    frames_back: int = 0
    echo_received: int = 0
    echo_dropped: int = 0
    status: dict[str, Any] = field(default_factory=dict)
    note: str = ""


def run_case(rig: ml.Rig, path: str, loss: float, seed: int, speech: np.ndarray,
             message_log: Path, out_wav: Path | None) -> Case:
    case = Case(path, loss, seed)
    rng = np.random.default_rng(seed)
    noise = rng.normal(0.0, 3.0, int(PRE_S * RATE))  # about -80 dBov: not digital silence
    signal = np.concatenate((noise, speech.astype(np.float64), np.zeros(int(POST_S * RATE))))
    pcm = np.clip(np.round(signal), -32768, 32767).astype(np.int16)
    recorder = Recorder()
    echo = Echo(loss, seed, max_s=len(pcm) / RATE + 10)
    placer = rig.placer()
    try:
        before = ml.read_status(rig.gw)
        calls = placer.place([recorder.port], timeout_s=10)
        call = calls[0]
        if call.status != 200:
            case.note = f"call not set up ({call.status})"
            return case
        port, opus_pt = gateway_offer(message_log)
        echo.start(port, priming_packet(opus_pt if path == "transcode" else None))
        time.sleep(0.1)
        recorder.packets.clear()  # the echoed priming packet is no speech
        sent_at = recorder.send(call.media, pcm)
        time.sleep(0.5)
        case.frames_sent = len(pcm) // 160
        case.frames_back = sum(1 for p in recorder.packets if p.pt == 0)
        case.echo_received, case.echo_dropped = echo.received, echo.dropped
        received, first_sample_at = recorder.audio()
        ref = speech.astype(np.float64)
        seg, lag = align(received, ref, max_lag=len(received) - 1)
        case.pesq = pesq_nb(ref, seg)
        # where the speech's first sample came back, against when it was sent
        speech_sent_at = sent_at + PRE_S
        case.round_trip_ms = (first_sample_at + lag / RATE - speech_sent_at) * 1000.0
        if out_wav is not None:
            _write_wav(out_wav, seg)
        placer.hangup(calls)
        case.status = ml.status_delta(before, ml.fresh_status(rig.gw))
    finally:
        echo.close()
        recorder.close()
    return case


def render(cases: Sequence[Case], meta: dict[str, str], ceiling: float,
           offline: dict[float, float]) -> str:
    lines = ["# Media quality: PESQ (P.862 narrowband) of speech through the gateway", ""]
    lines += [f"- {k}: {v}" for k, v in meta.items()]
    lines += [
        "",
        f"μ-law encode + decode alone (no network, no gateway): PESQ {ceiling:.2f}",
        "",
        "The codec chain alone, offline (the gateway's Opus encoder settings, no network, "
        "no jitter buffer): "
        + ", ".join(f"PESQ {v:.2f} at {loss:.0%} loss" for loss, v in offline.items()),
        "",
        "| path | Opus-leg loss | seed | PESQ nb | round trip ms | frames back / sent "
        "| echo dropped / received | gw counters |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for c in cases:
        st = c.status
        counters = ml.counters_text(st, ("rtp_packets_in", "rtp_packets_out", "rtp_malformed",
                                         "media_late_ticks", "media_handler_errors"))
        name = ("PCMU -> Opus -> PCMU (transcoded)" if c.path == "transcode"
                else "PCMU relay (reference)")
        lines.append(
            f"| {name} | {c.loss:.0%} | {c.seed} | **{ml.fmt(c.pesq)}** "
            f"| {ml.fmt(c.round_trip_ms, 0)} | {c.frames_back} / {c.frames_sent} "
            f"| {c.echo_dropped} / {c.echo_received} | {counters}"
            + (f"; {c.note}" if c.note else "") + " |"
        )
    lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = ml.bench_parser(__doc__)
    parser.add_argument("--loss", type=float, default=3.0, help="percent of Opus packets lost")
    parser.add_argument("--seeds", type=int, default=1, help="loss patterns per lossy case")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: the first 4 s of speech, clean cases only")
    ml.add_output_args(parser, "media_quality")
    args = parser.parse_args(argv)

    harness.require_sipp()
    speech = make_speech()
    if args.quick:
        speech = speech[: 4 * RATE]
    ceiling = pesq_nb(speech, ulaw_decode(ulaw_encode(speech)))
    losses = [0.0] if args.quick else [0.0, args.loss / 100.0]
    offline = {loss: codec_only(speech, loss, 1) for loss in losses}
    workdir = Path(tempfile.mkdtemp(prefix="bench-media-quality-"))
    cases: list[Case] = []
    errors: list[str] = []
    tails: dict[str, str] = {}
    for path, scenario, codecs in (("relay", "uas", ("PCMU",)),
                                   ("transcode", "uas_opus", ("opus",))):
        message_log = workdir / f"{path}-messages.log"
        rig = ml.Rig(workdir / path, scenario=scenario, callee_codecs=codecs, echo=False,
                     callee_args=("-trace_msg", "-message_file", str(message_log)))
        with rig.stopped_after(errors):
            rig.start()
            for loss in losses:
                for seed in range(1, (args.seeds if loss else 1) + 1):
                    wav = args.out.with_name(f"{args.out.stem}_{path}_loss{round(loss * 100)}.wav")
                    case = run_case(rig, path, loss, seed, speech, message_log,
                                    wav if seed == 1 else None)
                    cases.append(case)
                    print(f"{path:>9} loss {loss:.0%} seed {seed}: PESQ {ml.fmt(case.pesq)}, "
                          f"round trip {ml.fmt(case.round_trip_ms, 0)} ms, frames "
                          f"{case.frames_back}/{case.frames_sent}"
                          + (f" [{case.note}]" if case.note else ""), flush=True)
                    if case.note:
                        errors.append(f"{path} loss {loss:.0%}: {case.note}")
        tails[path] = rig.log_tail

    meta = ml.machine_meta() | {
        "speech": "espeak-ng en-us, Harvard sentences (list 1), "
        f"{len(speech) / RATE:.1f} s at 8 kHz, {active_level_dbov(speech.astype(float)):.1f} "
        f"dBov active level ({SPEECH_PATH.relative_to(ml.REPO_ROOT)})",
        "loss": "the Python echo on the Opus (or, for the reference, PCMU) leg drops each "
        "packet with the given probability (random.Random(seed)); the other direction is clean",
        "alignment": "recording placed by RTP timestamp, aligned to the reference by "
        "cross-correlation, cut to its length",
    }
    if errors:
        meta["errors"] = "; ".join(errors)
    ml.publish(args.out, render(cases, meta, ceiling, offline), {
        "meta": meta, "ulaw_only_pesq": ceiling,
        "codec_only_pesq": {f"{loss:.2f}": v for loss, v in offline.items()},
        "cases": [asdict(c) for c in cases],
        "gateway_log_tails": tails,
    }, workdir, args.keep)
    bad = any(math.isnan(c.pesq) for c in cases) or any("Traceback" in t for t in tails.values())
    return 1 if errors or not cases or bad else 0


if __name__ == "__main__":
    sys.exit(main())
