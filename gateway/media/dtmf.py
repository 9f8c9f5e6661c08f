"""DTMF: RFC 4733 telephone-events, SIP INFO bodies, and in-band (Goertzel) detection; sans-I/O.

Invariants:
- No sockets, no reactor, no clock: time is the `now` argument (seconds, any epoch), packet
  schedules are offsets the media session turns into timers.
- `Event` is the 4-byte telephone-event payload (RFC 4733 section 2.3), immutable and
  self-validating; `parse` never reads past the payload.
- `EventTracker` reports every digit exactly once. An event is keyed by its RTP timestamp
  and event code (RFC 4733 section 2.3: every packet of one event carries its start
  timestamp); a finished key is remembered, so the three end packets (section 2.5.1.4),
  retransmitted start packets and late updates never report it again. A lost end is
  covered by a timeout the caller fires through `poll(now)` (deadline: `get_timer()`).
- `GoertzelDetector` holds fewer than one block of samples between calls and reports a digit
  once, when it ends, with its measured duration.
- The per-packet paths (`Event.parse`, `EventTracker.feed`) log nothing and allocate no
  more than a key tuple and the values they return.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass
from typing import Final, NamedTuple

import numpy as np
import numpy.typing as npt

__all__ = [
    "COLUMN_FREQUENCIES",
    "DEFAULT_INFO_DURATION_MS",
    "DIGITS",
    "KEYPAD",
    "MAX_DURATION_MS",
    "ROW_FREQUENCIES",
    "Event",
    "EventPacket",
    "EventSender",
    "EventTracker",
    "GoertzelDetector",
    "digit_of",
    "event_of",
    "generate_dtmf",
    "info_body",
    "parse_info_body",
    "rescale_duration",
]

#: RFC 4733 section 3.2: telephone-event codes 0..15 are these DTMF digits, in this order.
DIGITS: Final = "0123456789*#ABCD"
_EVENT_OF_DIGIT: Final = {digit: code for code, digit in enumerate(DIGITS)}

#: Longest digit this module builds or accepts from SIP INFO (a held key, not a stream).
MAX_DURATION_MS: Final = 60_000
#: Duration given to a SIP INFO digit that states none (application/dtmf never does).
DEFAULT_INFO_DURATION_MS: Final = 100

_PAYLOAD: Final = struct.Struct("!BBH")
_END_BIT: Final = 0x80
_VOLUME_MASK: Final = 0x3F  # bit 0x40 is R, reserved: sent as 0, ignored on receipt
_MAX_SEGMENT: Final = 0xFFFF  # RFC 4733 section 2.5.1.3: a segment's duration saturates here


# ---------------------------------------------------------------------------------------------
# RFC 4733 telephone-event payload


@dataclass(frozen=True, slots=True)
class Event:
    """One telephone-event payload (RFC 4733 section 2.3).

    `event` is the event code (0..255; 0..15 are DTMF digits), `end` the E bit, `volume` the
    power level in -dBm0 (0..63), `duration` the length so far in RTP timestamp units
    (0..65535).
    """

    event: int
    end: bool
    volume: int
    duration: int

    def __post_init__(self) -> None:
        if not 0 <= self.event <= 255:
            raise ValueError(f"telephone-event code {self.event} is outside 0..255")
        if not 0 <= self.volume <= _VOLUME_MASK:
            raise ValueError(f"telephone-event volume {self.volume} is outside 0..63 (-dBm0)")
        if not 0 <= self.duration <= 0xFFFF:
            raise ValueError(f"telephone-event duration {self.duration} is outside 0..65535")

    @classmethod
    def parse(cls, payload: bytes) -> Event:
        """The event in an RTP payload; bytes after the first four are ignored.

        ValueError if the payload is shorter than the 4 bytes of section 2.3.
        """
        if len(payload) < _PAYLOAD.size:
            raise ValueError(f"telephone-event payload truncated: {len(payload)} bytes, need 4")
        event, flags, duration = _PAYLOAD.unpack_from(payload)
        return cls(event, bool(flags & _END_BIT), flags & _VOLUME_MASK, duration)

    def __bytes__(self) -> bytes:
        return _PAYLOAD.pack(self.event, (_END_BIT if self.end else 0) | self.volume, self.duration)


def digit_of(event: int) -> str | None:
    """The DTMF digit of a telephone-event code, or None for codes 16..255 (not digits)."""
    return DIGITS[event] if 0 <= event < len(DIGITS) else None


def event_of(digit: str) -> int:
    """The telephone-event code of a DTMF digit ("0".."9", "*", "#", "A".."D", any case)."""
    code = _EVENT_OF_DIGIT.get(digit.upper())
    if code is None:
        raise ValueError(f"{digit!r} is not a DTMF digit (one of {DIGITS})")
    return code


def rescale_duration(duration: int, from_clock: int, to_clock: int) -> int:
    """A telephone-event duration moved from one RTP clock to another (8000 <-> 48000 Hz),
    rounded to the nearest unit and clamped to the 16-bit field (RFC 4733 section 2.3)."""
    if from_clock <= 0 or to_clock <= 0:
        raise ValueError(f"RTP clock rates must be positive, got {from_clock} and {to_clock}")
    if duration < 0:
        raise ValueError(f"telephone-event duration {duration} is negative")
    return min((duration * to_clock + from_clock // 2) // from_clock, 0xFFFF)


def _units_to_ms(units: int, clock_rate: int) -> int:
    return (units * 1000 + clock_rate // 2) // clock_rate


# ---------------------------------------------------------------------------------------------
# Receiving telephone-events


class EventTracker:
    """Turns the received telephone-event packets of one RTP stream into digits, once each.

    Feed every packet of the negotiated telephone-event payload type with its RTP timestamp
    and marker bit. `feed` returns (digit, duration_ms) when a digit completes: on its first
    end packet, or when a packet of a different event shows the previous one's end was lost.
    A digit whose end never comes is completed by `poll(now)` once `timeout` seconds pass
    without a packet for it; `get_timer()` says when to call it. A long event sent as several
    segments (RFC 4733 section 2.5.1.3: same code, new timestamp, no marker, after a segment
    that reached 65535 units) is one digit whose duration sums the segments. Codes above 15
    (flash, tones) are ignored.
    """

    __slots__ = (
        "_clock_rate",
        "_code",
        "_done",
        "_duration",
        "_key",
        "_last_seen",
        "_pending",
        "_pending_at",
        "_previous_units",
        "timeout",
    )

    def __init__(self, clock_rate: int = 8000, *, timeout: float = 0.3) -> None:
        if clock_rate <= 0:
            raise ValueError(f"RTP clock rate must be positive, got {clock_rate}")
        if timeout <= 0:
            raise ValueError(f"telephone-event timeout must be positive, got {timeout}")
        self._clock_rate = clock_rate
        self.timeout = timeout
        self._key: tuple[int, int] | None = None  # (RTP timestamp, event code) in progress
        self._code = 0
        self._duration = 0  # of the current segment, in timestamp units
        self._previous_units = 0  # of the earlier segments of a long event
        self._last_seen = 0.0
        # Keys of finished events and superseded segments: their late packets are dropped.
        self._done: deque[tuple[int, int]] = deque(maxlen=16)
        self._pending: list[tuple[str, int]] = []
        self._pending_at = 0.0

    @property
    def active(self) -> str | None:
        """The digit in progress, if any."""
        return DIGITS[self._code] if self._key is not None else None

    def feed(
        self, ts: int, event: Event, now: float, *, marker: bool = False
    ) -> tuple[str, int] | None:
        """Take one telephone-event packet; a completed (digit, duration_ms) or None."""
        if event.event >= len(DIGITS):
            return None
        key = (ts, event.event)
        if key == self._key:
            if event.duration > self._duration:
                self._duration = event.duration
            self._last_seen = now
            return self._finish() if event.end else None
        if key in self._done:
            return None  # a retransmitted end, or a late packet of a finished event
        if (
            self._key is not None
            and event.event == self._code
            and not marker
            and self._duration >= _MAX_SEGMENT
        ):
            # The next segment of a long event (RFC 4733 section 2.5.1.3).
            self._done.append(self._key)
            self._previous_units += self._duration
            self._key, self._duration, self._last_seen = key, event.duration, now
            return self._finish() if event.end else None
        previous = self._finish() if self._key is not None else None  # its end was lost
        self._key, self._code, self._duration = key, event.event, event.duration
        self._previous_units, self._last_seen = 0, now
        if not event.end:
            return previous
        if previous is None:
            return self._finish()
        self._pending.append(self._finish())  # two digits in one call: the second waits
        self._pending_at = now
        return previous

    def poll(self, now: float) -> list[tuple[str, int]]:
        """Digits completed by the timeout (or held back by `feed`), oldest first."""
        completed, self._pending = self._pending, []
        if self._key is not None and now >= self._last_seen + self.timeout:
            completed.append(self._finish())
        return completed

    def get_timer(self) -> float | None:
        """When `poll` has something to do, or None."""
        if self._pending:
            return self._pending_at
        if self._key is not None:
            return self._last_seen + self.timeout
        return None

    def _finish(self) -> tuple[str, int]:
        assert self._key is not None
        self._done.append(self._key)
        self._key = None
        units = self._previous_units + self._duration
        return DIGITS[self._code], _units_to_ms(units, self._clock_rate)


# ---------------------------------------------------------------------------------------------
# Sending telephone-events


class EventPacket(NamedTuple):
    """One telephone-event packet of a digit, for the media session to schedule."""

    send_offset: float  # seconds after the first packet
    ts_offset: int  # added to the digit's RTP timestamp; non-zero only for later segments
    marker: bool
    payload: bytes


class EventSender:
    """Builds the RFC 4733 packet sequence for one digit at a given RTP clock.

    Section 2.5.1: the first packet has the marker bit and duration 0; an update follows every
    `interval` seconds with the duration so far; the end packet (E bit, full duration) goes
    out `end_repeats` times, `interval` apart (section 2.5.1.4). All packets carry the digit's
    start timestamp, except that a digit longer than 65535 units (8.19 s at 8 kHz, 1.37 s at
    48 kHz) is cut into segments (section 2.5.1.3): each segment's final packet (duration
    65535, no E bit) is also sent `end_repeats` times, and the next segment starts 65535
    units later without the marker. `payload_type` is what the session puts in the RTP header.
    """

    __slots__ = ("clock_rate", "end_repeats", "interval", "payload_type", "volume")

    def __init__(
        self,
        clock_rate: int = 8000,
        payload_type: int = 101,
        *,
        volume: int = 10,
        interval: float = 0.05,
        end_repeats: int = 3,
    ) -> None:
        if clock_rate <= 0:
            raise ValueError(f"RTP clock rate must be positive, got {clock_rate}")
        if not 0 <= payload_type <= 127:
            raise ValueError(f"RTP payload type {payload_type} is outside 0..127")
        if not 0 <= volume <= _VOLUME_MASK:
            raise ValueError(f"telephone-event volume {volume} is outside 0..63 (-dBm0)")
        if not 0 < interval * clock_rate < _MAX_SEGMENT:
            raise ValueError(f"update interval {interval} s does not fit one event segment")
        if end_repeats < 1:
            raise ValueError(f"end packets must be sent at least once, not {end_repeats}")
        self.clock_rate = clock_rate
        self.payload_type = payload_type
        self.volume = volume
        self.interval = interval
        self.end_repeats = end_repeats

    def packets(self, digit: str, duration_ms: int) -> list[EventPacket]:
        """The packets for `digit` held `duration_ms` milliseconds, in sending order."""
        code = event_of(digit)
        if not 0 < duration_ms <= MAX_DURATION_MS:
            raise ValueError(f"DTMF duration {duration_ms} ms is outside 1..{MAX_DURATION_MS}")
        clock = self.clock_rate
        total = max(1, (duration_ms * clock + 500) // 1000)
        step = round(self.interval * clock)
        volume = self.volume
        out = [EventPacket(0.0, 0, True, bytes(Event(code, False, volume, 0)))]
        segment = 0  # timestamp offset of the current segment

        def repeat(at: int, ts_offset: int, payload: bytes) -> None:
            for i in range(self.end_repeats):
                out.append(EventPacket((at + i * step) / clock, ts_offset, False, payload))

        at = step
        while True:
            now = min(at, total)
            if now - segment > _MAX_SEGMENT:  # close the segment, start the next
                repeat(now, segment, bytes(Event(code, False, volume, _MAX_SEGMENT)))
                segment += _MAX_SEGMENT
            if now == total:
                repeat(now, segment, bytes(Event(code, True, volume, now - segment)))
                break
            payload = bytes(Event(code, False, volume, now - segment))
            out.append(EventPacket(now / clock, segment, False, payload))
            at += step
        out.sort(key=lambda packet: packet.send_offset)  # stable: segment finals come first
        return out


# ---------------------------------------------------------------------------------------------
# SIP INFO (application/dtmf-relay, application/dtmf)

_MAX_INFO_BODY: Final = 512


def info_body(digit: str, duration_ms: int) -> bytes:
    """An application/dtmf-relay body: b"Signal=5\\r\\nDuration=160\\r\\n"."""
    code = event_of(digit)
    if not 0 < duration_ms <= MAX_DURATION_MS:
        raise ValueError(f"DTMF duration {duration_ms} ms is outside 1..{MAX_DURATION_MS}")
    return f"Signal={DIGITS[code]}\r\nDuration={duration_ms}\r\n".encode("ascii")


def parse_info_body(body: bytes, content_type: str | None = None) -> tuple[str, int]:
    """(digit, duration_ms) from a SIP INFO DTMF body.

    application/dtmf-relay: "Signal=" and optional "Duration=" lines (names in any case,
    CRLF or LF, other lines ignored). application/dtmf: the digit alone. Without
    `content_type` the form is told from the body (an "=" means dtmf-relay). A missing
    duration is DEFAULT_INFO_DURATION_MS. ValueError on anything else.
    """
    if len(body) > _MAX_INFO_BODY:
        raise ValueError(f"DTMF INFO body is {len(body)} bytes, more than {_MAX_INFO_BODY}")
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        raise ValueError("DTMF INFO body is not ASCII") from None
    kind = content_type.split(";", 1)[0].strip().lower() if content_type is not None else None
    if kind is None:
        kind = "application/dtmf-relay" if "=" in text else "application/dtmf"
    if kind == "application/dtmf":
        return _info_digit(text.strip(), "application/dtmf body"), DEFAULT_INFO_DURATION_MS
    if kind != "application/dtmf-relay":
        raise ValueError(f"{content_type!r} is not a DTMF INFO content type")
    signal: str | None = None
    duration: int | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        name, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f"dtmf-relay line has no '=': {line!r}")
        name, value = name.strip().lower(), value.strip()
        if name == "signal":
            if signal is not None:
                raise ValueError("dtmf-relay body has more than one Signal line")
            signal = _info_digit(value, "dtmf-relay Signal")
        elif name == "duration":
            if duration is not None:
                raise ValueError("dtmf-relay body has more than one Duration line")
            if not (value.isdigit() and len(value) <= 6):
                raise ValueError(f"dtmf-relay Duration {value!r} is not a number of ms")
            duration = int(value)
            if not 0 < duration <= MAX_DURATION_MS:
                raise ValueError(f"dtmf-relay Duration {duration} is outside 1..{MAX_DURATION_MS}")
    if signal is None:
        raise ValueError("dtmf-relay body has no Signal line")
    return signal, duration if duration is not None else DEFAULT_INFO_DURATION_MS


def _info_digit(value: str, where: str) -> str:
    digit = value.upper()
    if len(digit) != 1 or digit not in _EVENT_OF_DIGIT:
        raise ValueError(f"{where} {value!r} is not one DTMF digit")
    return digit


# ---------------------------------------------------------------------------------------------
# In-band detection (ITU-T Q.23 frequencies) with a block Goertzel

#: ITU-T Q.23 low group (rows) and high group (columns), Hz, and the keypad they index.
ROW_FREQUENCIES: Final = (697.0, 770.0, 852.0, 941.0)
COLUMN_FREQUENCIES: Final = (1209.0, 1336.0, 1477.0, 1633.0)
KEYPAD: Final = ("123A", "456B", "789C", "*0#D")
_DIGIT_AT: Final = "".join(KEYPAD)  # index row * 4 + column

# 0 dBm0 in 16-bit linear PCM: G.711 mu-law overloads at +3.17 dBm0 with peak 8159 << 2, so a
# 0 dBm0 sine has peak 32636 / 10 ** (3.17 / 20) ~= 22663 and mean power 22663 ** 2 / 2.
_DBM0_POWER: Final = 22663.0**2 / 2


def _ratio(db: float) -> float:
    return float(10.0 ** (db / 10.0))


class GoertzelDetector:
    """In-band DTMF detector for 16-bit PCM of one stream, fed any number of samples at a time.

    The signal is cut into blocks of 102 samples at 8 kHz (12.75 ms, scaled for other rates;
    the length spandsp uses, which puts the neighbouring row frequencies near the nulls of
    each other's bins). For each block the power at the eight Q.23 frequencies is the value a
    Goertzel filter computes, |X(f)|^2 of the block; here it is one matrix product of all
    blocks with a precomputed cosine/sine basis. A block holds a digit when:
    - the strongest row and strongest column tone are both above `threshold_dbm0`;
    - twist: the row tone is at most `normal_twist_db` above the column tone, the column
      tone at most `reverse_twist_db` above the row tone;
    - relative peak: each is `relative_peak_db` above the runner-up of its group;
    - frequency: each reads more power at its nominal frequency than at 2 x `max_deviation`
      above or below it, so a tone more than about `max_deviation` (2 %) off is refused
      (ITU-T Q.24 asks to accept 1.5 % and refuse 3.5 %); this also refuses most voiced
      speech, whose harmonics sit wherever the pitch puts them;
    - the two tones carry at least `min_tone_fraction` of the block's energy (speech and
      noise spread theirs); a tone's power here is the best of its nominal frequency and
      two probes 0.6 x `max_deviation` either side, so an off-frequency tone is not
      under-read.
    Measured on synthetic two-formant vowels with random pitch and formants (a harsh case),
    about 0.7 % of half-second vowels still give a false digit: there is no second-harmonic
    test, and the start debounce is the brief's two blocks (25.5 ms).
    A digit starts after `hits_to_start` consecutive blocks with it and ends after
    `misses_to_end` blocks without it; `feed` then reports (digit, duration_ms), the duration
    counted from its first to its last block, plus one block for the partial blocks at its
    two edges.
    """

    __slots__ = (
        "_basis",
        "_block",
        "_candidate",
        "_candidate_count",
        "_candidate_first",
        "_current",
        "_current_first",
        "_current_last",
        "_index",
        "_misses",
        "_tail",
        "hits_to_start",
        "min_tone_fraction",
        "misses_to_end",
        "normal_twist",
        "rate",
        "relative_peak",
        "reverse_twist",
        "threshold",
    )

    def __init__(
        self,
        rate: int = 8000,
        *,
        threshold_dbm0: float = -30.0,
        normal_twist_db: float = 8.0,
        reverse_twist_db: float = 4.0,
        relative_peak_db: float = 8.0,
        min_tone_fraction: float = 0.85,
        max_deviation: float = 0.02,
        hits_to_start: int = 2,
        misses_to_end: int = 2,
    ) -> None:
        if rate < 4000:
            raise ValueError(f"sample rate {rate} Hz cannot carry DTMF (at least 4000 Hz)")
        if hits_to_start < 1 or misses_to_end < 1:
            raise ValueError("hits_to_start and misses_to_end must be at least 1")
        self.rate = rate
        self.threshold = _DBM0_POWER * _ratio(threshold_dbm0)
        self.normal_twist = _ratio(normal_twist_db)
        self.reverse_twist = _ratio(reverse_twist_db)
        self.relative_peak = _ratio(relative_peak_db)
        self.min_tone_fraction = min_tone_fraction
        self.hits_to_start = hits_to_start
        self.misses_to_end = misses_to_end
        self._block = round(102 * rate / 8000)
        n = np.arange(self._block, dtype=np.float64)[:, np.newaxis]
        nominal = np.array(ROW_FREQUENCIES + COLUMN_FREQUENCIES)
        # Eight frequencies each: nominal, far below and above (2 x max_deviation off, for the
        # deviation test), near below and above (0.6 x max_deviation off, for the energy test).
        probes = np.concatenate(
            [nominal * (1 + offset * max_deviation) for offset in (0.0, -2.0, 2.0, -0.6, 0.6)]
        )
        omega = 2.0 * np.pi * probes / rate
        # Scaled so that a sine of peak A at one of the frequencies reads A**2 / 2, its power.
        scale = np.sqrt(2.0) / self._block
        self._basis = np.hstack([np.cos(n * omega), np.sin(n * omega)]) * scale
        self._tail = np.zeros(0, dtype=np.float64)
        self._index = 0  # of the next block
        self._current: str | None = None
        self._current_first = self._current_last = 0
        self._misses = 0
        self._candidate: str | None = None
        self._candidate_count = self._candidate_first = 0

    @property
    def block_size(self) -> int:
        """Samples per analysis block."""
        return self._block

    def feed(self, pcm: npt.NDArray[np.int16]) -> list[tuple[str, int]]:
        """Take the next samples; the digits that ended in them, as (digit, duration_ms)."""
        samples = np.concatenate([self._tail, np.asarray(pcm, dtype=np.float64).ravel()])
        count = len(samples) // self._block
        self._tail = samples[count * self._block :]
        if count == 0:
            return []
        blocks = samples[: count * self._block].reshape(count, self._block)
        completed: list[tuple[str, int]] = []
        for hit in self._classify(blocks):
            self._step(hit, completed)
        return completed

    def flush(self) -> list[tuple[str, int]]:
        """End of stream: the digit still sounding, if any, as completed. Resets the state."""
        completed: list[tuple[str, int]] = []
        if self._current is not None:
            completed.append(self._complete())
        self._tail = np.zeros(0, dtype=np.float64)
        self._candidate, self._candidate_count = None, 0
        return completed

    def tone_levels(self, block: npt.NDArray[np.int16]) -> npt.NDArray[np.float64]:
        """Levels in dBm0 of the eight frequencies (rows, then columns) in one block."""
        samples = np.asarray(block, dtype=np.float64)
        if samples.shape != (self._block,):
            raise ValueError(f"a block is {self._block} samples, got shape {samples.shape}")
        power = self._powers(samples[np.newaxis, :])[0, :8]
        levels: npt.NDArray[np.float64] = 10.0 * np.log10(np.maximum(power, 1e-12) / _DBM0_POWER)
        return levels

    def _powers(self, blocks: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        projections = blocks @ self._basis
        half = projections.shape[1] // 2
        power: npt.NDArray[np.float64] = projections[:, :half] ** 2 + projections[:, half:] ** 2
        return power

    def _classify(self, blocks: npt.NDArray[np.float64]) -> list[str | None]:
        power = self._powers(blocks)
        energy = np.mean(blocks * blocks, axis=1)
        rows, columns = power[:, :4], power[:, 4:8]
        best_row, best_column = rows.argmax(axis=1), columns.argmax(axis=1)
        picked = np.arange(len(blocks))
        row_power, column_power = rows[picked, best_row], columns[picked, best_column]
        column_at = best_column + 4
        row_off = np.maximum(power[picked, best_row + 8], power[picked, best_row + 16])
        column_off = np.maximum(power[picked, column_at + 8], power[picked, column_at + 16])
        # A tone a little off frequency reads low at its nominal frequency (a 1.5 % error is
        # 0.3 of a bin at 1633 Hz, -1.4 dB): its power for the energy test is the best of the
        # nominal and the two near probes.
        row_near = np.maximum(power[picked, best_row + 24], power[picked, best_row + 32])
        column_near = np.maximum(power[picked, column_at + 24], power[picked, column_at + 32])
        tones = np.maximum(row_power, row_near) + np.maximum(column_power, column_near)
        row_second = np.sort(rows, axis=1)[:, -2]
        column_second = np.sort(columns, axis=1)[:, -2]
        hits = (
            (row_power >= self.threshold)
            & (column_power >= self.threshold)
            & (row_power <= column_power * self.normal_twist)
            & (column_power <= row_power * self.reverse_twist)
            & (row_second * self.relative_peak <= row_power)
            & (column_second * self.relative_peak <= column_power)
            & (tones >= energy * self.min_tone_fraction)
            & (row_power >= row_off)
            & (column_power >= column_off)
        )
        positions = best_row * 4 + best_column
        return [_DIGIT_AT[p] if hit else None for hit, p in zip(hits.tolist(), positions.tolist())]

    def _step(self, hit: str | None, completed: list[tuple[str, int]]) -> None:
        index = self._index
        self._index += 1
        if self._current is not None:
            if hit == self._current:
                self._current_last, self._misses = index, 0
                self._candidate, self._candidate_count = None, 0
                return
            self._misses += 1
            if self._misses >= self.misses_to_end:
                completed.append(self._complete())
        if hit is None:
            self._candidate, self._candidate_count = None, 0
            return
        if hit == self._candidate:
            self._candidate_count += 1
        else:
            self._candidate, self._candidate_count, self._candidate_first = hit, 1, index
        if self._current is None and self._candidate_count >= self.hits_to_start:
            self._current, self._current_first, self._current_last = (
                hit,
                self._candidate_first,
                index,
            )
            self._misses = 0
            self._candidate, self._candidate_count = None, 0

    def _complete(self) -> tuple[str, int]:
        assert self._current is not None
        blocks = self._current_last - self._current_first + 2
        digit = self._current
        self._current = None
        return digit, (blocks * self._block * 1000 + self.rate // 2) // self.rate


def generate_dtmf(
    digit: str,
    duration_ms: int,
    rate: int = 8000,
    amplitude: float = 7000.0,
    *,
    twist_db: float = 0.0,
) -> npt.NDArray[np.int16]:
    """The two-tone signal of `digit` as int16 PCM (for tests and tone generation).

    `amplitude` is the peak of the row tone (7000 is about -10 dBm0); the column tone is
    `twist_db` louder (negative: quieter), so positive values are reverse twist.
    """
    position = _DIGIT_AT.find(digit.upper())
    if len(digit) != 1 or position < 0:
        raise ValueError(f"{digit!r} is not a DTMF digit (one of {DIGITS})")
    if duration_ms < 0:
        raise ValueError(f"tone duration {duration_ms} ms is negative")
    t = np.arange(duration_ms * rate // 1000, dtype=np.float64) / rate
    low, high = ROW_FREQUENCIES[position // 4], COLUMN_FREQUENCIES[position % 4]
    high_amplitude = amplitude * 10.0 ** (twist_db / 20.0)
    signal = amplitude * np.sin(2 * np.pi * low * t) + high_amplitude * np.sin(2 * np.pi * high * t)
    pcm: npt.NDArray[np.int16] = np.clip(np.round(signal), -32768, 32767).astype(np.int16)
    return pcm
