"""Opus (RFC 6716) for the transcoder: an encoder and a decoder over libopus, the TOC byte, and
the SDP parameters of RFC 7587.

Invariants:
- PCM is a NumPy ``int16`` mono array at the object's sample rate (8000, 12000, 16000, 24000
  or 48000 Hz). The RTP clock of Opus is always 48000 Hz whatever that rate (RFC 7587 section
  4.1), so RTP timestamps advance by ``rtp_samples(payload)``, never by the PCM length.
- One encoder or decoder per direction of one leg; they keep codec state (prediction, PLC), so
  feed them frames in order and call ``reset()`` when the stream restarts (new SSRC).
- libopus is reached through opuslib's ctypes bindings (``opuslib.api``), with buffers
  allocated once per object; nothing here reads a clock or touches a socket. opuslib's own
  high-level ``Encoder``/``Decoder`` classes are not used: in opuslib 3.0.1 their
  ``inband_fec`` and ``dtx`` setters call the wrong CTL, and their ``decode`` cannot run the
  PLC (it takes ``len(None)``).
- A payload that libopus cannot decode raises exactly ``ValueError`` (it comes from a peer);
  a failing encoder call or CTL raises ``RuntimeError`` (it is a bug).
- ``parse_toc``, ``rtp_samples``, ``parse_fmtp`` and ``encoder_settings`` are pure Python (no
  libopus call on the packet path for RTP timing). When libopus cannot be loaded, importing
  this module raises ``ImportError`` naming the Debian package (libopus0).
"""

from __future__ import annotations

import ctypes
import weakref
from dataclasses import dataclass
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt

try:
    import opuslib
    import opuslib.api
    import opuslib.api.ctl
    import opuslib.api.decoder
    import opuslib.api.encoder
    import opuslib.api.info
except Exception as exc:  # opuslib raises a bare Exception when ctypes finds no libopus
    raise ImportError(
        "gateway.media.opus needs the Opus library: install the Debian package libopus0 "
        "(apt-get install libopus0) and the Python package opuslib "
        f"(loading it failed: {exc})"
    ) from exc

__all__ = [
    "OPUS_RATES",
    "RTP_CLOCK",
    "OpusDecoder",
    "OpusEncoder",
    "OpusEncoderSettings",
    "OpusParams",
    "OpusToc",
    "encoder_settings",
    "parse_fmtp",
    "parse_toc",
    "rtp_samples",
]

Pcm = npt.NDArray[np.int16]

RTP_CLOCK: Final = 48000  # RFC 7587 section 4.1: for every mode and sampling rate
OPUS_RATES: Final = (8000, 12000, 16000, 24000, 48000)
MAX_PACKET_TICKS: Final = 5760  # 120 ms at 48 kHz: the longest packet (RFC 6716 section 3.2.5)
_MAX_PACKET_BYTES = 1500  # a packet at most; libopus's own recommendation is 1275 per frame

# opus_defines.h
_APPLICATION_VOIP = 2048
_BANDWIDTHS: Final = {
    8000: 1101,  # OPUS_BANDWIDTH_NARROWBAND
    12000: 1102,  # MEDIUMBAND
    16000: 1103,  # WIDEBAND
    24000: 1104,  # SUPERWIDEBAND
    48000: 1105,  # FULLBAND
}

# --- the TOC byte (RFC 6716 section 3.1) ------------------------------------------------------

Mode = Literal["SILK", "Hybrid", "CELT"]
Bandwidth = Literal["NB", "MB", "WB", "SWB", "FB"]


@dataclass(frozen=True, slots=True)
class OpusToc:
    """The table-of-contents byte that starts every Opus packet (RFC 6716 section 3.1)."""

    config: int  # 0..31: mode, audio bandwidth and frame duration (table 2)
    stereo: bool
    code: int  # 0..3: how many frames the packet holds (section 3.2)

    @property
    def mode(self) -> Mode:
        if self.config < 12:
            return "SILK"
        return "Hybrid" if self.config < 16 else "CELT"

    @property
    def bandwidth(self) -> Bandwidth:
        config = self.config
        if config < 12:
            return ("NB", "MB", "WB")[config >> 2]
        if config < 16:
            return "SWB" if config < 14 else "FB"
        return ("NB", "WB", "SWB", "FB")[(config - 16) >> 2]

    @property
    def frame_ticks(self) -> int:
        """Duration of one frame in 48 kHz ticks (RFC 6716 table 2)."""
        config = self.config
        if config < 12:  # SILK-only: 10, 20, 40, 60 ms
            return (480, 960, 1920, 2880)[config & 3]
        if config < 16:  # Hybrid: 10, 20 ms
            return (480, 960)[config & 1]
        return (120, 240, 480, 960)[config & 3]  # CELT-only: 2.5, 5, 10, 20 ms


def parse_toc(toc: int) -> OpusToc:
    """Split a TOC byte into configuration number, stereo flag and frame count code."""
    if not 0 <= toc <= 0xFF:
        raise ValueError(f"TOC byte out of range: {toc}")
    return OpusToc(config=toc >> 3, stereo=bool(toc & 0x04), code=toc & 0x03)


def rtp_samples(payload: bytes | bytearray | memoryview) -> int:
    """The duration of an Opus packet in 48 kHz ticks: what its RTP timestamp advances by.

    Read from the TOC byte (RFC 6716 section 3.1) and, for code 3 packets, the frame count
    byte (section 3.2.5); the same figure as libopus's ``opus_packet_get_nb_samples`` at
    48000 Hz. Raises ``ValueError`` for an empty packet [R1], a code 3 packet without its
    frame count byte or with zero frames, and a packet longer than 120 ms [R5].
    """
    if len(payload) < 1:
        raise ValueError("Opus packet is empty")
    toc = parse_toc(payload[0])
    if toc.code == 0:
        frames = 1
    elif toc.code in (1, 2):
        frames = 2
    else:
        if len(payload) < 2:
            raise ValueError("Opus code 3 packet has no frame count byte")
        frames = payload[1] & 0x3F
        if frames == 0:
            raise ValueError("Opus code 3 packet has zero frames")
    ticks = frames * toc.frame_ticks
    if ticks > MAX_PACKET_TICKS:
        raise ValueError(f"Opus packet lasts {ticks / 48:g} ms, more than 120 ms")
    return ticks


# --- SDP parameters (RFC 7587 sections 6.1 and 7) -----------------------------------------------


@dataclass(frozen=True, slots=True)
class OpusParams:
    """The media type parameters of an Opus payload format (RFC 7587 section 6.1).

    All are hints from the side that sent them; the defaults are the RFC's. ``ptime`` and
    ``maxptime`` normally come as ``a=ptime``/``a=maxptime`` (section 7) but some peers put
    them in the fmtp; ``minptime`` is not in RFC 7587, WebRTC peers send it (``minptime=10``).
    """

    maxplaybackrate: int = 48000  # the receiver renders up to this rate (8000..48000)
    sprop_maxcapturerate: int = 48000  # the sender captures up to this rate
    maxaveragebitrate: int | None = None  # b/s; None: not given or outside 6000..510000
    stereo: bool = False  # the receiver prefers stereo
    sprop_stereo: bool = False  # the sender is likely to send stereo
    cbr: bool = False  # the receiver prefers constant bitrate
    useinbandfec: bool = False  # the receiver can use in-band FEC
    usedtx: bool = False  # the receiver prefers DTX
    ptime: int | None = None  # ms; the RFC's default is 20
    maxptime: int | None = None  # ms; the RFC's default is 120
    minptime: int | None = None  # ms


_RATE_PARAMS = {
    "maxplaybackrate": "maxplaybackrate",
    "sprop-maxcapturerate": "sprop_maxcapturerate",
}
_FLAG_PARAMS = {
    "stereo": "stereo",
    "sprop-stereo": "sprop_stereo",
    "cbr": "cbr",
    "useinbandfec": "useinbandfec",
    "usedtx": "usedtx",
}
_PTIME_PARAMS = ("ptime", "maxptime", "minptime")
_MAX_DIGITS = 9  # a peer's number longer than this is not a rate, bitrate or duration


def _number(value: str) -> int | None:
    if not value.isascii() or not value.isdigit() or len(value) > _MAX_DIGITS:
        return None
    return int(value)


def parse_fmtp(fmtp: str | None) -> OpusParams:
    """Parse the format parameters of an Opus ``a=fmtp`` line (the part after the payload
    type), e.g. ``"minptime=10;useinbandfec=1"``.

    Lenient, as RFC 7587 section 7.1 asks: unknown parameters are ignored, and so is a value
    that is not valid for its parameter (the default stays). Names are case-insensitive.
    Rates are clamped into 8000..48000 (section 6.1: "any value between 8000 and 48000"); a
    ``maxaveragebitrate`` outside 6000..510000 is ignored (section 6.1: "SHOULD be ignored");
    a ptime outside 3..120 ms is ignored.
    """
    fields: dict[str, Any] = {}
    for item in (fmtp or "").split(";"):
        name, _, raw = item.partition("=")
        name = name.strip().lower()
        number = _number(raw.strip())
        if number is None:
            continue
        if name in _RATE_PARAMS:
            fields[_RATE_PARAMS[name]] = min(max(number, 8000), 48000)
        elif name in _FLAG_PARAMS and number in (0, 1):
            fields[_FLAG_PARAMS[name]] = bool(number)
        elif name == "maxaveragebitrate" and 6000 <= number <= 510000:
            fields["maxaveragebitrate"] = number
        elif name in _PTIME_PARAMS and 3 <= number <= 120:
            fields[name] = number
    return OpusParams(**fields)


@dataclass(frozen=True, slots=True)
class OpusEncoderSettings:
    """How to encode toward a peer: the keyword arguments of ``OpusEncoder`` plus the packet
    duration to use. Build one with ``encoder_settings``."""

    sample_rate: int
    bitrate: int | None
    fec: bool
    dtx: bool
    packet_loss_percent: int
    complexity: int | None
    max_bandwidth: int | None
    cbr: bool
    frame_ms: int


# RFC 7587 section 3.1.1: bitrate "sweet spots" for 20 ms speech; the upper end of each range
# (MB and SWB interpolated), used when nothing else sets the bitrate (section 3.1.2).
_DEFAULT_BITRATE: Final = {8000: 12000, 12000: 16000, 16000: 20000, 24000: 28000, 48000: 40000}
# With in-band FEC on: libopus (1.3) only adds FEC data (SILK LBRR) above a bitrate that
# depends on the bandwidth and the expected loss; measured on a 1 kHz tone at 10 % loss, NB
# needs about 20 kb/s and WB 24 kb/s before a lost frame comes back from the next packet.
_FEC_BITRATE: Final = {8000: 24000, 12000: 24000, 16000: 28000, 24000: 36000, 48000: 48000}
_VOICE_FRAME_MS = (10, 20, 40, 60)  # SILK and Hybrid frame durations (RFC 7587 section 4.2)


def _opus_rate_for(rate: int) -> int:
    """The smallest Opus sampling rate that holds everything up to ``rate``."""
    return next((r for r in OPUS_RATES if r >= rate), 48000)


def _frame_ms_for(params: OpusParams) -> int:
    preferred = params.ptime if params.ptime is not None else 20
    longest = params.maxptime if params.maxptime is not None else 120
    shortest = params.minptime if params.minptime is not None else 0
    fitting = [ms for ms in _VOICE_FRAME_MS if shortest <= ms <= longest] or [10]
    return min(fitting, key=lambda ms: (abs(ms - preferred), ms))


def encoder_settings(
    params: OpusParams,
    *,
    input_rate: int = 48000,
    bitrate: int | None = None,
    loss_percent: int = 10,
    complexity: int | None = None,
) -> OpusEncoderSettings:
    """The encoder settings to use toward a peer, from the fmtp it sent (``parse_fmtp``).

    - ``sample_rate``: the rate to feed the encoder, the smaller of ``input_rate`` (what the
      transcoder has; must be an Opus rate) and the Opus rate that covers the peer's
      ``maxplaybackrate``: 8000 gives narrowband. ``max_bandwidth`` caps the coded audio
      bandwidth the same way (RFC 7587 section 7.1: a sender "MUST NOT use an audio bandwidth
      higher than necessary" for maxplaybackrate).
    - ``bitrate``: the one asked for, else the RFC 7587 section 3.1.1 figure for that rate
      (higher with FEC, which libopus only produces when it has the bits), never above the
      peer's ``maxaveragebitrate`` (section 7.1: "MUST NOT send with an average bitrate
      higher").
    - ``fec`` when the peer sent ``useinbandfec=1``, with ``loss_percent`` as the expected
      loss (libopus adds FEC data only when that is above zero); ``dtx`` when ``usedtx=1``;
      ``cbr`` when ``cbr=1``.
    - ``frame_ms``: 20 unless the peer's ptime, maxptime or minptime say otherwise.

    Mono always: a peer's ``stereo=1`` is a preference, and every decoder takes mono.
    """
    if input_rate not in OPUS_RATES:
        raise ValueError(f"input rate {input_rate} is not an Opus rate {OPUS_RATES}")
    playback_rate = _opus_rate_for(params.maxplaybackrate)
    sample_rate = min(input_rate, playback_rate)
    if bitrate is not None:
        chosen = bitrate
    else:
        table = _FEC_BITRATE if params.useinbandfec else _DEFAULT_BITRATE
        chosen = table[sample_rate]
    if params.maxaveragebitrate is not None:
        chosen = min(chosen, params.maxaveragebitrate)
    return OpusEncoderSettings(
        sample_rate=sample_rate,
        bitrate=chosen,
        fec=params.useinbandfec,
        dtx=params.usedtx,
        packet_loss_percent=loss_percent if params.useinbandfec else 0,
        complexity=complexity,
        max_bandwidth=_BANDWIDTHS[playback_rate] if playback_rate < 48000 else None,
        cbr=params.cbr,
        frame_ms=_frame_ms_for(params),
    )


# --- libopus -------------------------------------------------------------------------------

_INT16_P = ctypes.POINTER(ctypes.c_int16)


def _check_rate(sample_rate: int) -> None:
    if sample_rate not in OPUS_RATES:
        raise ValueError(f"sample rate {sample_rate} is not an Opus rate {OPUS_RATES}")


def _strerror(code: int) -> str:
    text = opuslib.api.info.strerror(code)
    return text.decode("ascii", "replace") if isinstance(text, bytes) else str(text)


def _ctl(function: Any, state: Any, request: Any, value: int) -> None:
    try:
        function(state, request, value)
    except opuslib.OpusError as exc:
        raise RuntimeError(f"libopus CTL failed: {_strerror(exc.code)}") from exc


class OpusEncoder:
    """A mono Opus encoder, application VOIP (libopus ``opus_encoder_create``).

    ``bitrate`` in b/s (None: libopus chooses), ``fec`` turns on in-band FEC (it is only
    produced when ``packet_loss_percent`` > 0), ``dtx`` lets silent frames shrink to 1-2 byte
    packets that need not be sent (RFC 7587 section 3.1.3), ``complexity`` 0..10,
    ``max_bandwidth`` an ``OPUS_BANDWIDTH_*`` value, ``cbr`` turns VBR off.
    """

    def __init__(
        self,
        sample_rate: int = 8000,
        *,
        bitrate: int | None = None,
        fec: bool = False,
        dtx: bool = False,
        packet_loss_percent: int = 0,
        complexity: int | None = None,
        max_bandwidth: int | None = None,
        cbr: bool = False,
    ) -> None:
        _check_rate(sample_rate)
        if bitrate is not None and not 500 <= bitrate <= 512000:
            raise ValueError(f"Opus bitrate {bitrate} is outside 500..512000 b/s")
        if not 0 <= packet_loss_percent <= 100:
            raise ValueError(f"packet loss {packet_loss_percent}% is outside 0..100")
        if complexity is not None and not 0 <= complexity <= 10:
            raise ValueError(f"Opus complexity {complexity} is outside 0..10")
        if max_bandwidth is not None and max_bandwidth not in _BANDWIDTHS.values():
            raise ValueError(f"not an OPUS_BANDWIDTH value: {max_bandwidth}")
        self.sample_rate: Final = sample_rate
        self.frame_samples: Final = sample_rate // 50  # 20 ms, the usual frame
        # 2.5, 5, 10, 20, 40 and 60 ms: the frame durations of RFC 6716 section 2.1.4
        self._frame_sizes = frozenset(sample_rate * n // 400 for n in (1, 2, 4, 8, 16, 24))
        try:
            state = opuslib.api.encoder.create_state(sample_rate, 1, _APPLICATION_VOIP)
        except opuslib.OpusError as exc:
            raise RuntimeError(f"opus_encoder_create failed: {_strerror(exc.code)}") from exc
        self._state = state
        weakref.finalize(self, opuslib.api.encoder.destroy, state)
        self._out = ctypes.create_string_buffer(_MAX_PACKET_BYTES)
        ctl, set_ctl = opuslib.api.ctl, opuslib.api.encoder.encoder_ctl
        if bitrate is not None:
            _ctl(set_ctl, state, ctl.set_bitrate, bitrate)
        _ctl(set_ctl, state, ctl.set_inband_fec, int(fec))
        _ctl(set_ctl, state, ctl.set_packet_loss_perc, packet_loss_percent)
        _ctl(set_ctl, state, ctl.set_dtx, int(dtx))
        if complexity is not None:
            _ctl(set_ctl, state, ctl.set_complexity, complexity)
        if max_bandwidth is not None:
            _ctl(set_ctl, state, ctl.set_max_bandwidth, max_bandwidth)
        if cbr:
            _ctl(set_ctl, state, ctl.set_vbr, 0)

    @classmethod
    def from_settings(cls, settings: OpusEncoderSettings) -> OpusEncoder:
        """An encoder configured as ``encoder_settings`` says."""
        return cls(
            settings.sample_rate,
            bitrate=settings.bitrate,
            fec=settings.fec,
            dtx=settings.dtx,
            packet_loss_percent=settings.packet_loss_percent,
            complexity=settings.complexity,
            max_bandwidth=settings.max_bandwidth,
            cbr=settings.cbr,
        )

    def _get(self, request: Any) -> int:
        return int(opuslib.api.encoder.encoder_ctl(self._state, request))

    @property
    def bitrate(self) -> int:
        """The bitrate libopus is configured for (b/s)."""
        return self._get(opuslib.api.ctl.get_bitrate)

    @property
    def fec(self) -> bool:
        return bool(self._get(opuslib.api.ctl.get_inband_fec))

    @property
    def dtx(self) -> bool:
        return bool(self._get(opuslib.api.ctl.get_dtx))

    @property
    def packet_loss_percent(self) -> int:
        return self._get(opuslib.api.ctl.get_packet_loss_perc)

    @property
    def lookahead(self) -> int:
        """The encoder's delay in samples at its sample rate."""
        return self._get(opuslib.api.ctl.get_lookahead)

    def encode(self, pcm: Pcm) -> bytes:
        """Encode one frame (20 ms at the sample rate; 2.5, 5, 10, 40 and 60 ms work too) into
        one Opus packet, the RTP payload. With DTX on, a packet of 1-2 bytes is silence that
        need not be sent."""
        if not isinstance(pcm, np.ndarray) or pcm.dtype != np.int16 or pcm.ndim != 1:
            raise TypeError("Opus encoder takes a one-dimensional NumPy int16 array")
        samples = pcm.shape[0]
        if samples not in self._frame_sizes:
            raise ValueError(
                f"{samples} samples is not an Opus frame at {self.sample_rate} Hz "
                "(2.5, 5, 10, 20, 40 or 60 ms)"
            )
        frame = np.ascontiguousarray(pcm)
        length = int(
            opuslib.api.encoder.libopus_encode(
                self._state, frame.ctypes.data_as(_INT16_P), samples, self._out, _MAX_PACKET_BYTES
            )
        )
        if length < 0:
            raise RuntimeError(f"opus_encode failed: {_strerror(length)}")
        return ctypes.string_at(self._out, length)

    def reset(self) -> None:
        """Forget the codec state, as a freshly created encoder (OPUS_RESET_STATE)."""
        opuslib.api.encoder.encoder_ctl(self._state, opuslib.api.ctl.reset_state)


class OpusDecoder:
    """A mono Opus decoder (libopus ``opus_decoder_create``) with loss concealment and
    in-band FEC recovery. A stereo packet is downmixed by libopus."""

    def __init__(self, sample_rate: int = 8000) -> None:
        _check_rate(sample_rate)
        self.sample_rate: Final = sample_rate
        self._granule = sample_rate // 400  # 2.5 ms: PLC and FEC lengths are multiples of it
        self._max_samples = sample_rate * 120 // 1000  # the longest packet, 120 ms
        try:
            state = opuslib.api.decoder.create_state(sample_rate, 1)
        except opuslib.OpusError as exc:
            raise RuntimeError(f"opus_decoder_create failed: {_strerror(exc.code)}") from exc
        self._state = state
        weakref.finalize(self, opuslib.api.decoder.destroy, state)
        self._pcm = np.zeros(self._max_samples, dtype=np.int16)
        self._pcm_p = self._pcm.ctypes.data_as(_INT16_P)

    def _run(self, data: bytes | None, samples: int, fec: bool) -> Pcm:
        length = 0 if data is None else len(data)
        decoded = int(
            opuslib.api.decoder.libopus_decode(
                self._state, data, length, self._pcm_p, samples, int(fec)
            )
        )
        if decoded < 0:
            raise ValueError(f"Opus packet cannot be decoded: {_strerror(decoded)}")
        return self._pcm[:decoded].copy()

    def _check_samples(self, samples: int) -> None:
        if not 0 < samples <= self._max_samples or samples % self._granule:
            raise ValueError(
                f"{samples} samples at {self.sample_rate} Hz is not a multiple of 2.5 ms "
                "up to 120 ms"
            )

    def decode(self, payload: bytes) -> Pcm:
        """Decode one Opus packet (an RTP payload); the packet says how many samples."""
        if not payload:
            raise ValueError("Opus packet is empty")
        return self._run(bytes(payload), self._max_samples, fec=False)

    def conceal(self, samples: int) -> Pcm:
        """Conceal ``samples`` lost samples (libopus PLC: decoding with no data). ``samples``
        is a multiple of 2.5 ms at the sample rate: 160 for a 20 ms frame at 8000 Hz."""
        self._check_samples(samples)
        return self._run(None, samples, fec=False)

    def decode_fec(self, next_payload: bytes, samples: int) -> Pcm:
        """Recover a lost frame of ``samples`` samples from the in-band FEC data of the packet
        that follows it (RFC 7587 section 3.2); libopus conceals instead when that packet
        carries none. Decode ``next_payload`` itself afterwards, as usual."""
        if not next_payload:
            raise ValueError("Opus packet is empty")
        self._check_samples(samples)
        return self._run(bytes(next_payload), samples, fec=True)

    def reset(self) -> None:
        """Forget the codec state, as a freshly created decoder (OPUS_RESET_STATE)."""
        opuslib.api.decoder.decoder_ctl(self._state, opuslib.api.ctl.reset_state)
