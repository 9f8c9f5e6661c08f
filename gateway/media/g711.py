"""G.711 μ-law (PCMU) and A-law (PCMA): ITU-T G.711, RTP static payload types 0 and 8.

Invariants:
- Sans-I/O and stateless: bytes in, NumPy ``int16`` mono arrays out, and back.
- No per-sample Python: decoding is one ``take`` from a 256-entry table, encoding one ``take``
  from a 65536-entry table indexed by the ``uint16`` view of the samples. Both tables are
  built once, at import, by vectorised formulas.
- The tables reproduce the Sun Microsystems ``g711.c`` algorithm (the one CPython's
  ``audioop`` ports), bit for bit: ``tests/vectors/g711_decode_table.tsv`` (all 256 codes of
  both laws) and ``g711_encode_spotchecks.tsv`` hold them to it.
- Encoding choices where G.711 encoders differ, pinned here: the 16-bit input is reduced to
  the law's magnitude domain by an arithmetic shift, so inputs -1 … -4 encode as the smallest
  negative step (μ-law 0x7E, A-law 0x55) rather than a negative zero; full-scale inputs
  (±32767, -32768) saturate at the largest code (μ-law 0x80/0x00, A-law 0xAA/0x2A).

The RTP clock of both is 8000 Hz (RFC 3551 section 4.5.14): one sample per octet, so a 20 ms
packet is 160 octets and advances the timestamp by 160.
"""

from __future__ import annotations

from typing import Final, Literal

import numpy as np
import numpy.typing as npt

__all__ = [
    "G711Codec",
    "alaw_decode",
    "alaw_encode",
    "ulaw_decode",
    "ulaw_encode",
]

Pcm = npt.NDArray[np.int16]

CLOCK_RATE: Final = 8000

# μ-law (G.711 table 2a): 14-bit magnitude, bias 33, eight segments whose upper ends are
# SEG_UEND; the code is inverted on the wire. A-law (table 1a): 13-bit magnitude, segment 0
# linear, even bits inverted (XOR 0x55).
_ULAW_BIAS = 0x84
_ULAW_CLIP = 8159
_SEG_UEND = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], dtype=np.int32)
_SEG_AEND = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF], dtype=np.int32)


def _ulaw_decode_table() -> Pcm:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    t = (((u & 0x0F) << 3) + _ULAW_BIAS) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, _ULAW_BIAS - t, t - _ULAW_BIAS).astype(np.int16)


def _alaw_decode_table() -> Pcm:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    t = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    t = np.where(seg == 0, t + 8, t + 0x108)
    t = np.where(seg > 1, t << np.maximum(seg - 1, 0), t)
    return np.where(a & 0x80, t, -t).astype(np.int16)


def _all_inputs() -> npt.NDArray[np.int32]:
    """Every int16 value, in the order of its uint16 view (0, 1, …, 32767, -32768, …, -1)."""
    return np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.int32)


def _ulaw_encode_table() -> npt.NDArray[np.uint8]:
    x = _all_inputs() >> 2  # arithmetic shift: -1 stays -1 (see the module invariants)
    mask = np.where(x < 0, 0x7F, 0xFF)
    magnitude = np.minimum(np.abs(x), _ULAW_CLIP) + (_ULAW_BIAS >> 2)
    seg = np.searchsorted(_SEG_UEND, magnitude)  # first segment whose end >= magnitude
    code = (seg << 4) | ((magnitude >> (seg + 1)) & 0x0F)
    return ((np.where(seg >= 8, 0x7F, code) ^ mask) & 0xFF).astype(np.uint8)


def _alaw_encode_table() -> npt.NDArray[np.uint8]:
    x = _all_inputs() >> 3
    mask = np.where(x >= 0, 0xD5, 0x55)
    magnitude = np.where(x >= 0, x, -x - 1)
    seg = np.searchsorted(_SEG_AEND, magnitude)
    shift = np.where(seg < 2, 1, seg)
    code = (np.minimum(seg, 7) << 4) | ((magnitude >> shift) & 0x0F)
    return ((np.where(seg >= 8, 0x7F, code) ^ mask) & 0xFF).astype(np.uint8)


_ULAW_DECODE: Final = _ulaw_decode_table()
_ALAW_DECODE: Final = _alaw_decode_table()
_ULAW_ENCODE: Final = _ulaw_encode_table()
_ALAW_ENCODE: Final = _alaw_encode_table()
for _table in (_ULAW_DECODE, _ALAW_DECODE, _ULAW_ENCODE, _ALAW_ENCODE):
    _table.flags.writeable = False


def _as_codes(payload: bytes | bytearray | memoryview) -> npt.NDArray[np.uint8]:
    return np.frombuffer(payload, dtype=np.uint8)


def _as_uint16(pcm: Pcm) -> npt.NDArray[np.uint16]:
    if not isinstance(pcm, np.ndarray) or pcm.dtype != np.int16:
        raise TypeError("G.711 encoders take a NumPy int16 array")
    return pcm.reshape(-1).view(np.uint16)


def ulaw_decode(payload: bytes | bytearray | memoryview) -> Pcm:
    """Decode μ-law octets (PCMU) to 16-bit linear samples, one sample per octet."""
    return _ULAW_DECODE.take(_as_codes(payload))


def alaw_decode(payload: bytes | bytearray | memoryview) -> Pcm:
    """Decode A-law octets (PCMA) to 16-bit linear samples, one sample per octet."""
    return _ALAW_DECODE.take(_as_codes(payload))


def ulaw_encode(pcm: Pcm) -> bytes:
    """Encode 16-bit linear samples (a NumPy ``int16`` array) as μ-law octets (PCMU)."""
    return _ULAW_ENCODE.take(_as_uint16(pcm)).tobytes()


def alaw_encode(pcm: Pcm) -> bytes:
    """Encode 16-bit linear samples (a NumPy ``int16`` array) as A-law octets (PCMA)."""
    return _ALAW_ENCODE.take(_as_uint16(pcm)).tobytes()


class G711Codec:
    """One G.711 law behind the transcoder's codec interface.

    ``name`` is the SDP encoding name ("PCMU" or "PCMA"), ``payload_type`` its static RTP
    payload type (RFC 3551 table 4), ``clock`` the RTP clock rate (8000).
    """

    __slots__ = ("_decode", "_encode", "name", "payload_type")

    clock: Final = CLOCK_RATE

    def __init__(self, name: Literal["PCMU", "PCMA"]) -> None:
        if name == "PCMU":
            self.payload_type = 0
            self._decode, self._encode = _ULAW_DECODE, _ULAW_ENCODE
        elif name == "PCMA":
            self.payload_type = 8
            self._decode, self._encode = _ALAW_DECODE, _ALAW_ENCODE
        else:
            raise ValueError(f"not a G.711 encoding name: {name!r} (PCMU or PCMA)")
        self.name: Final[str] = name

    def __repr__(self) -> str:
        return f"G711Codec({self.name!r})"

    def decode(self, payload: bytes | bytearray | memoryview) -> Pcm:
        """Decode one RTP payload to 16-bit linear samples at 8000 Hz."""
        return self._decode.take(_as_codes(payload))

    def encode(self, pcm: Pcm) -> bytes:
        """Encode 16-bit linear samples at 8000 Hz to one RTP payload."""
        return self._encode.take(_as_uint16(pcm)).tobytes()
