"""An adaptive jitter buffer for one received RTP stream (the transcoder's input).

Sans-I/O: ``push(..., now)`` for each packet, ``pop(now)`` on the media clock; every time is an
argument, in seconds on any one epoch. Nothing here reads a clock, decodes audio or logs.

Invariants:
- Playout runs on slots of ``frame_ticks`` RTP ticks (the packetisation, 20 ms usually; a
  packet is expected to hold one slot). Each slot is due ``frame_ticks / clock_rate`` seconds
  after the previous one. The first is due ``delay`` after the first packet arrived, and the
  slot clock then takes the caller's phase: the first ``pop`` at or after that time becomes
  the slot's time, and later slots are due within half a frame of the caller's ticks. ``pop``
  returns the slot's frame once it is due and None before, so a caller that woke late calls
  it again until None.
- A slot plays the packet whose timestamp falls in it ("audio"). A slot without one is
  "lost" when a packet is missing (a gap in sequence numbers), and "empty" when the sender
  paused: the next packet is already here and its sequence number follows on but its
  timestamp jumped (DTX or silence suppression: RFC 7587 section 3.1.3, RFC 3551 section
  4.1), or it has the marker bit of a talk spurt's first packet. When nothing at all is here
  the buffer cannot tell a loss from a pause: the first three slots (60 ms, the reach of
  concealment) of a talk spurt are "lost", the rest "empty"; if the expected packet then
  comes in time, those slots were a pause (or a wait, below), and ``lost`` is lowered again.
  So ``lost`` counts the frames concealed in place of packets that never came in time.
- The playout delay changes only between frames, and only where it cannot cut audio: at the
  start of a talk spurt (the silent slots before it are lengthened or shortened so that its
  first packet waits the target delay); by holding the slot cursor for a frame while a frame
  is concealed or silent anyway (a missing packet or an empty buffer while the delay is below
  the target: the packet gets one more frame to arrive); and by dropping the oldest packet
  when more than ``max_delay`` of them are queued (``overflow``). A stream that never pauses
  therefore keeps the delay it grew to; one with talk spurts comes back down.
- The target delay is the spread of recent transit times (arrival minus RTP time): their 97th
  percentile above their minimum, over the last 128 packets, plus half a frame, clamped into
  [min_delay, max_delay]. ``jitter`` is RFC 3550's interarrival jitter (appendix A.8).
- Sequence numbers are extended past 16 bits and timestamps past 32 (RFC 3550 appendix A.1);
  every comparison is on the extended values. Playout restarts (``resyncs``: the buffer is
  flushed, the next frame has ``restart`` set) on a new SSRC, on two packets in a row 3000
  ahead of or 100 behind the highest sequence number (A.1's MAX_DROPOUT and MAX_MISORDER; a
  lone one is dropped), on a transit time that moved by more than a second (five times
  ``max_delay`` if that is longer: the timestamps jumped), on ten late packets in a row that
  all took about as long, longer than ``max_delay`` can absorb (the path got longer), and
  when ``pop`` was not called for as long (the caller stalled). Packets of the SSRC just
  replaced are dropped (``late``) for a second.
- Memory is bounded: at most ``max_delay`` worth of packets (and never fewer than two) are
  buffered; the sets and windows kept for statistics are capped.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections import deque
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np

__all__ = ["Frame", "FrameKind", "JitterBuffer"]

FrameKind = Literal["audio", "lost", "empty"]

_SEQ_BITS = 16
_TS_BITS = 32
MAX_DROPOUT: Final = 3000  # RFC 3550 appendix A.1
MAX_MISORDER: Final = 100
_TRANSIT_WINDOW = 128  # packets whose transit times set the target delay
_QUANTILE = 0.97
_UNDERRUN_LOST = 3  # slots of a talk spurt reported lost when nothing at all has arrived
_RESYNC_SECONDS = 1.0  # a transit change this large is a timestamp jump; a stall, a restart
_RETIRED_SECONDS = 1.0  # packets of a replaced SSRC are dropped for this long
_SEEN_SPAN = 1024  # sequence numbers remembered for duplicate detection
_LATE_RESYNC = 10  # late packets in a row that restart playout


@dataclass(frozen=True, slots=True)
class Frame:
    """What to play in one slot.

    ``kind`` "audio": decode ``payload``. "lost": conceal one frame; ``next_payload`` is the
    payload of the packet after the missing one when it is already here and directly follows
    (Opus in-band FEC can rebuild the lost frame from it, RFC 7587 section 3.2). "empty": the
    sender is silent; play silence or comfort noise (an Opus decoder's concealment makes
    comfort noise after a DTX packet). ``ts`` is the slot's RTP timestamp,
    ``seq`` the packet's sequence number (for "lost", the missing one's; None for "empty").
    ``restart`` marks the first frame after playout (re)started: reset the decoder.
    """

    kind: FrameKind
    ts: int
    payload: bytes = b""
    seq: int | None = None
    ssrc: int | None = None
    marker: bool = False
    next_payload: bytes | None = None
    restart: bool = False


@dataclass(slots=True)
class _Packet:
    seq: int  # extended
    ts: int  # extended
    marker: bool
    payload: bytes


def _extend(value: int, reference: int, bits: int) -> int:
    """The extended value nearest to ``reference`` whose low ``bits`` are ``value``."""
    modulus = 1 << bits
    delta = (value - reference) % modulus
    if delta >= modulus >> 1:
        delta -= modulus
    return reference + delta


class JitterBuffer:
    """Reorders, times and paces one RTP stream; see the module docstring for the rules.

    Counters (attributes): ``received`` packets pushed, ``played`` audio frames, ``lost``
    frames to conceal, ``late`` packets that came after their slot, ``duplicates``,
    ``overflow`` packets dropped because the buffer held more than ``max_delay``, ``resyncs``
    playout restarts. ``delay`` is the current playout delay in seconds, ``target_delay`` the
    one the buffer steers to, ``jitter`` the RFC 3550 interarrival jitter in seconds.
    """

    def __init__(
        self,
        clock_rate: int,
        frame_ticks: int,
        *,
        min_delay: float = 0.02,
        max_delay: float = 0.2,
    ) -> None:
        if clock_rate <= 0 or frame_ticks <= 0:
            raise ValueError("clock rate and frame ticks must be positive")
        if not 0 <= min_delay <= max_delay:
            raise ValueError(f"need 0 <= min_delay <= max_delay, got {min_delay}, {max_delay}")
        self.clock_rate: Final = clock_rate
        self.frame_ticks: Final = frame_ticks
        self.min_delay: Final = min_delay
        self.max_delay: Final = max_delay
        self._frame_seconds = frame_ticks / clock_rate
        self._half = frame_ticks // 2
        self._max_packets = max(2, int(max_delay / self._frame_seconds + 1e-9) + 1)
        self._resync_seconds = max(_RESYNC_SECONDS, 5 * max_delay)
        self.received = 0
        self.played = 0
        self.lost = 0
        self.late = 0
        self.duplicates = 0
        self.overflow = 0
        self.resyncs = 0
        self._jitter = 0.0
        self._last_transit: float | None = None
        self._ssrc: int | None = None
        self._retired: tuple[int, float] | None = None  # (ssrc, until)
        self._carry_delay = min_delay  # the playout delay a (re)start begins with
        self._reset_stream()

    def _reset_stream(self) -> None:
        self._started = False
        self._playing = False  # a frame has been popped since the (re)start
        self._locked = False  # the slot clock has taken the caller's phase
        self._packets: dict[int, _Packet] = {}
        self._seen: set[int] = set()
        self._transits: deque[float] = deque(maxlen=_TRANSIT_WINDOW)
        # the window's minimum, kept as it slides (a monotonic queue of (index, transit)):
        # read for every packet, so not min() over the window each time
        self._lows: deque[tuple[int, float]] = deque()
        self._transit_index = 0
        self._target: float | None = None  # cache of target_delay
        self._max_seq = 0
        self._ts_ref = 0
        self._next_seq = 0
        self._next_ts = 0
        self._next_due = 0.0
        self._last_seq: int | None = None
        self._last_kind: FrameKind = "empty"
        self._underruns = 0
        self._provisional = 0
        self._restart = False
        self._probation: tuple[int, int, bool, bytes, float] | None = None
        self._late_run = 0  # late packets in a row

    # --- figures --------------------------------------------------------------------------

    @property
    def jitter(self) -> float:
        """RFC 3550 interarrival jitter (appendix A.8), in seconds."""
        return self._jitter

    @property
    def target_delay(self) -> float:
        """The playout delay the buffer steers to, in seconds."""
        if self._target is None:
            if len(self._transits) < 2:
                spread = 0.0
            else:
                transits = np.fromiter(self._transits, dtype=np.float64)
                spread = float(np.quantile(transits, _QUANTILE, method="higher") - transits.min())
            wanted = spread + self._frame_seconds / 2
            self._target = min(max(wanted, self.min_delay), self.max_delay)
        return self._target

    @property
    def delay(self) -> float:
        """The current playout delay, in seconds: how long after the earliest possible
        arrival of a packet (its RTP time plus the smallest recent transit) its slot plays."""
        if not self._started or not self._transits:
            return 0.0
        return self._next_due - (self._next_ts / self.clock_rate + self._lows[0][1])

    @property
    def buffered(self) -> int:
        """Packets waiting to be played."""
        return len(self._packets)

    # --- packets in -------------------------------------------------------------------------

    def push(self, seq: int, ts: int, ssrc: int, marker: bool, payload: bytes, now: float) -> None:
        """Take one received RTP packet (its header fields, its payload and arrival time)."""
        if not 0 <= seq <= 0xFFFF or not 0 <= ts <= 0xFFFFFFFF or not 0 <= ssrc <= 0xFFFFFFFF:
            raise ValueError("RTP sequence, timestamp or SSRC out of range")
        self.received += 1
        if self._ssrc is not None and ssrc != self._ssrc:
            retired = self._retired
            if retired is not None and retired[0] == ssrc and now < retired[1]:
                self.late += 1  # a straggler from before the SSRC change
                return
            self._retired = (self._ssrc, now + _RETIRED_SECONDS)
            self._resync()
        self._ssrc = ssrc
        if not self._started:
            self._begin(seq, ts, now)
        ext_seq = _extend(seq, self._max_seq, _SEQ_BITS)
        step = ext_seq - self._max_seq
        if step > MAX_DROPOUT or step < -MAX_MISORDER:
            # RFC 3550 appendix A.1: a packet far out of sequence is held back; only when the
            # next one follows it has the sender restarted its sequence.
            previous, self._probation = self._probation, (seq, ts, marker, bytes(payload), now)
            if previous is None or seq != (previous[0] + 1) & 0xFFFF:
                return
            self._resync()
            first_seq, first_ts, first_marker, first_payload, first_arrival = previous
            self._begin(first_seq, first_ts, first_arrival)
            self._accept(first_seq, first_ts, first_marker, first_payload, first_arrival)
            ext_seq = _extend(seq, self._max_seq, _SEQ_BITS)
        self._probation = None
        self._accept(ext_seq, ts, marker, bytes(payload), now)

    def _accept(self, ext_seq: int, ts: int, marker: bool, payload: bytes, now: float) -> None:
        if ext_seq in self._seen:
            self.duplicates += 1
            return
        ext_ts = _extend(ts, self._ts_ref, _TS_BITS)
        transit = now - ext_ts / self.clock_rate
        lows = self._lows
        if lows and abs(transit - lows[0][1]) > self._resync_seconds:
            self._resync()  # the timestamps jumped: a new timeline
            self._begin(ext_seq & 0xFFFF, ts, now)
            ext_seq, ext_ts = ext_seq & 0xFFFF, ts
            transit = now - ts / self.clock_rate
        self._note_transit(transit)
        self._seen.add(ext_seq)
        if ext_seq > self._max_seq:
            self._max_seq, self._ts_ref = ext_seq, ext_ts
            if len(self._seen) > 2 * _SEEN_SPAN:
                floor = ext_seq - _SEEN_SPAN
                self._seen = {s for s in self._seen if s >= floor}
        if self._file(_Packet(ext_seq, ext_ts, marker, payload)):
            self._late_run = 0
            return
        self._late_run += 1
        if self._late_run >= _LATE_RESYNC and self._path_got_longer():
            self._resync(keep_delay=False)  # the stream has moved on without us: start over
            self._begin(ext_seq & 0xFFFF, ts, now)
            self._accept(ext_seq & 0xFFFF, ts, marker, payload, now)

    def _path_got_longer(self) -> bool:
        """Whether the last late packets all took about the same time, longer than the buffer
        can wait: the path got longer. Jitter makes late packets too, but spread out."""
        recent = list(itertools.islice(reversed(self._transits), _LATE_RESYNC))
        quickest = min(recent)
        return (
            quickest - self._lows[0][1] > self.max_delay
            and max(recent) - quickest < self.max_delay
        )

    def _begin(self, seq: int, ts: int, now: float) -> None:
        self._started = True
        self._restart = True
        self._max_seq = self._next_seq = seq
        self._ts_ref = self._next_ts = ts
        self._next_due = now + self._carry_delay

    def _resync(self, keep_delay: bool = True) -> None:
        """Flush and wait for a packet to start over. The next start keeps the delay that
        worked (unless the target is lower now), but not after the arrival times shifted."""
        self.resyncs += 1
        if keep_delay and self._transits:
            wanted = min(self.delay, self.target_delay)
            self._carry_delay = min(max(wanted, self.min_delay), self.max_delay)
        else:
            self._carry_delay = self.min_delay
        self._last_transit = None
        self._reset_stream()

    def _note_transit(self, transit: float) -> None:
        if self._last_transit is not None:  # RFC 3550 appendix A.8
            self._jitter += (abs(transit - self._last_transit) - self._jitter) / 16
        self._last_transit = transit
        self._transits.append(transit)
        index = self._transit_index
        self._transit_index = index + 1
        lows = self._lows
        while lows and lows[-1][1] >= transit:
            lows.pop()
        lows.append((index, transit))
        if lows[0][0] <= index - _TRANSIT_WINDOW:  # slid out of the window
            lows.popleft()
        self._target = None

    def _file(self, packet: _Packet) -> bool:
        """Buffer a packet; False if it came after its slot (counted ``late``)."""
        if not self._playing and packet.seq < self._next_seq:
            # reordered before playout began: start from the earliest packet instead
            self._next_seq, self._next_ts = packet.seq, packet.ts
        elif packet.seq < self._next_seq or packet.ts < self._next_ts - self._half:
            self.late += 1  # its slot has played
            if packet.seq >= self._next_seq:  # and so have those of everything before it
                self._next_seq = packet.seq + 1
                self._provisional = 0
            return False
        if packet.seq == self._next_seq and self._provisional:
            # the packet those underrun slots waited for came in time: they were not losses
            self.lost -= self._provisional
            self._provisional = 0
        self._packets[packet.seq] = packet
        while len(self._packets) > self._max_packets:
            oldest = self._packets.pop(min(self._packets))
            self.overflow += 1
            if oldest.seq >= self._next_seq:
                self._next_seq = oldest.seq + 1
                self._next_ts = max(self._next_ts, oldest.ts + self.frame_ticks)
                self._provisional = 0
        return True

    # --- frames out ------------------------------------------------------------------------

    def pop(self, now: float) -> Frame | None:
        """The frame for the next playout slot once it is due, else None (also before the
        first packet). Call it every frame period; call it again until None after a stall."""
        if not self._started:
            return None
        if not self._locked:
            if now < self._next_due:
                return None
            self._locked = True  # the slot clock takes the caller's phase
            self._next_due = now
        elif now + self._frame_seconds / 2 < self._next_due:
            return None
        elif now - self._next_due > self._resync_seconds:
            self._resync()  # the caller stalled: start over with the next packet
            return None
        frame = self._next_frame()
        self._playing = True
        self._next_due += self._frame_seconds
        self._last_kind = frame.kind
        if self._restart:
            self._restart = False
            return dataclasses.replace(frame, restart=True)
        return frame

    def peek(self, seq_offset: int = 1) -> bytes | None:
        """The payload of the packet ``seq_offset`` after the last frame popped (audio or
        lost), if it is buffered: after a "lost" frame, ``peek()`` is the packet that carries
        its FEC."""
        if self._last_seq is None:
            return None
        packet = self._packets.get(self._last_seq + seq_offset)
        return None if packet is None else packet.payload

    def _next_frame(self) -> Frame:
        slot = self._next_ts
        head = self._packets.get(self._next_seq)
        if head is None:
            later = [seq for seq in self._packets if seq > self._next_seq]
            if not later:
                return self._underrun(slot)
            first = self._packets[min(later)]
            if first.ts < slot + self._half or first.marker:
                # the missing packets had no slot of their own, or ended the last talk spurt
                self._next_seq, head = first.seq, first
            else:
                return self._missing(slot)
        if head.ts >= slot + self._half:  # the sender paused: a talk spurt starts at head
            slot = self._align_spurt(head)
            if head.ts >= slot + self._half:
                self._underruns = 0
                self._next_ts = slot + self.frame_ticks
                return Frame("empty", slot & 0xFFFFFFFF, ssrc=self._ssrc)
        del self._packets[head.seq]
        self.played += 1
        self._underruns = 0
        self._provisional = 0
        self._next_seq = head.seq + 1
        self._next_ts = head.ts + self.frame_ticks
        self._last_seq = head.seq
        return Frame(
            "audio",
            head.ts & 0xFFFFFFFF,
            head.payload,
            head.seq & 0xFFFF,
            self._ssrc,
            head.marker,
        )

    def _missing(self, slot: int) -> Frame:
        """A packet is known missing (a later one is here): conceal its slot."""
        seq = self._next_seq
        self._underruns = 0
        if self._hold():
            return self._conceal(slot, seq, None)
        self.lost += 1
        self._provisional = 0
        self._next_seq = seq + 1
        self._next_ts = slot + self.frame_ticks
        self._last_seq = seq
        following = self._packets.get(seq + 1)
        fec = following.payload if following and following.ts == slot + self.frame_ticks else None
        return Frame("lost", slot & 0xFFFFFFFF, seq=seq & 0xFFFF, ssrc=self._ssrc, next_payload=fec)

    def _underrun(self, slot: int) -> Frame:
        """Nothing is buffered: a loss or a late packet mid-spurt, else silence."""
        talking = self._last_kind != "empty" or self._underruns > 0
        if not self._hold():
            self._next_ts = slot + self.frame_ticks
        # else hold the cursor: one frame more delay, taken in concealment or silence
        if talking and self._underruns < _UNDERRUN_LOST:
            self._underruns += 1
            return self._conceal(slot, self._next_seq, None)
        return Frame("empty", slot & 0xFFFFFFFF, ssrc=self._ssrc)

    def _hold(self) -> bool:
        """Whether to hold the slot cursor for one frame (one frame more delay) while a
        frame is concealed anyway: while the delay is below the target."""
        return self.delay + self._frame_seconds / 2 <= self.target_delay

    def _conceal(self, slot: int, seq: int, fec: bytes | None) -> Frame:
        """A "lost" frame for ``seq`` that does not give ``seq`` up: it may still come in
        time for a later slot, and then this frame was not a loss (``_file`` undoes it)."""
        self.lost += 1
        self._provisional += 1
        self._last_seq = seq
        return Frame("lost", slot & 0xFFFFFFFF, seq=seq & 0xFFFF, ssrc=self._ssrc, next_payload=fec)

    def _align_spurt(self, head: _Packet) -> int:
        """Place the first packet of a talk spurt so that it waits the target delay: return
        the RTP time of the current slot, moved within the silence before ``head``."""
        earliest = head.ts / self.clock_rate + self._lows[0][1]
        wait = (earliest + self.target_delay - self._next_due) / self._frame_seconds
        slots = math.ceil(wait - 1e-6)  # at least the target: min_delay is a floor
        return head.ts - max(slots, 0) * self.frame_ticks
